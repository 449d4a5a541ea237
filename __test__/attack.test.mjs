// The standing attack test (issue 17): against one generator process on the fake engine, at once, a PING
// flood that never reads, 100 clients that never read, 200 slow-loris connections, 1000 idle connections
// and bad frames, while one well-behaved client generates. Every loop here is bounded in count and time;
// only Unix sockets are used. The server's limits are options; this test sets short timeouts.
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { createInterface } from 'node:readline'
import test from 'ava'
import { Client, encode, MessageType } from '../dist/serve/index.js'
import { percentile } from '../dist/util/percentile.js'
import { sleep, socketPath } from './helpers.mjs'

const LIMITS = { maxUnreadBytes: 256 << 10, maxConnections: 4096, idleTimeoutMs: 1000, frameTimeoutMs: 1000, maxFrameBytes: 1 << 20 }
/** Most resident memory the server may reach under the attack, bytes. */
const RSS_BOUND = 300 << 20

/** Open files this process may have (the attackers' sockets count here too). */
function fileLimit() {
  const m = /Max open files\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))
  return m ? Number(m[1]) : 1024
}

async function startServer(path) {
  const child = spawn(process.execPath, ['--expose-gc', new URL('./fixtures/attack-server.mjs', import.meta.url).pathname, path, JSON.stringify(LIMITS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const lines = createInterface({ input: child.stdout })
  const next = () => new Promise((resolve) => lines.once('line', (l) => resolve(JSON.parse(l))))
  const ready = await next()
  const report = async () => {
    const p = next()
    child.kill('SIGUSR2')
    return p
  }
  const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)))
  return { child, ready, report, rss, exited }
}

/**
 * An attacker's connection. `reads: false` never reads (so it cannot see the server close it either: the
 * server's counters say when it did); otherwise it reads and discards, and `closed` resolves when the
 * server closes it.
 */
function attacker(path, reads) {
  const s = createConnection(path)
  s.on('error', () => {})
  if (reads) s.resume()
  else s.pause()
  const closed = new Promise((resolve) => s.once('close', resolve))
  const connected = new Promise((resolve) => s.once('connect', resolve))
  return { s, closed, connected, reads }
}

/** Whether `cond` (async) became true within `ms`, asking every 100 ms. */
async function waitFor(cond, ms) {
  const t0 = performance.now()
  while (performance.now() - t0 < ms) {
    if (await cond()) return true
    await sleep(100)
  }
  return false
}

/** Opens `n` connections in bursts, so the listen queue is not what refuses them. */
async function many(n, make) {
  const out = []
  for (let i = 0; i < n; i++) {
    out.push(make(i))
    if (i % 100 === 99) await sleep(5)
  }
  return out
}

test('under a mixed attack the good client is served, memory stays bounded, attackers are dropped, and everything returns', async (t) => {
  const scale = fileLimit() >= 4000 ? 1 : 0.25
  const counts = { idle: Math.round(1000 * scale), loris: Math.round(200 * scale), nonReaders: 100, bad: 20 }
  const path = socketPath('attack')
  const server = await startServer(path)
  t.teardown(() => server.child.kill('SIGKILL'))
  const base = await server.report()

  // The good client: one request after another, 64 tokens each, gaps between tokens measured.
  const good = await Client.connect(path)
  const gaps = []
  let goodTokens = 0
  let stopGood = false
  const goodLoop = (async () => {
    while (!stopGood) {
      let last = performance.now()
      for await (const _ of good.generate([1, 2, 3, goodTokens % 90], { maxNewTokens: 64 })) {
        const now = performance.now()
        gaps.push(now - last)
        last = now
        goodTokens++
      }
    }
  })()

  let peakRss = 0
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, server.rss())
  }, 50)

  const attackers = []
  // A PING flood that never reads its PONGs.
  const flood = attacker(path, false)
  attackers.push(flood)
  const ping = Buffer.concat(Array.from({ length: 2000 }, () => encode({ type: MessageType.PING, nonce: 7n })))
  const floodLoop = (async () => {
    await flood.connected
    const t0 = performance.now()
    while (!flood.s.destroyed && performance.now() - t0 < 10_000) {
      if (!flood.s.write(ping)) await Promise.race([new Promise((r) => flood.s.once('drain', r)), flood.closed, sleep(20)])
    }
  })()
  // Clients that ask for many tokens and never read them.
  const nonReaders = await many(counts.nonReaders, (i) => {
    const c = attacker(path, false)
    c.s.write(encode({ type: MessageType.GENERATE, requestId: 1, maxNewTokens: 40_000, tokens: Int32Array.of(i % 90, 5) }))
    return c
  })
  attackers.push(...nonReaders)
  // Slow loris: the start of a 512 KiB frame, then a byte every 200 ms.
  const loris = await many(counts.loris, () => {
    const c = attacker(path, true)
    const head = Buffer.alloc(10)
    head.writeUInt32LE(512 << 10, 0)
    c.s.write(head)
    return c
  })
  attackers.push(...loris)
  const trickle = setInterval(() => {
    for (const c of loris) if (!c.s.destroyed) c.s.write(Buffer.of(1))
  }, 200)
  // Idle connections.
  attackers.push(...(await many(counts.idle, () => attacker(path, true))))
  // Bad frames.
  attackers.push(
    ...(await many(counts.bad, () => {
      const c = attacker(path, true)
      c.s.write(Buffer.from([6, 0, 0, 0, 9, 0xee, 1, 2, 3, 4]))
      return c
    })),
  )

  // Every attacker is dropped by a limit, within bounded time: the readers see their connection close,
  // the server's count of open connections falls to the good client alone.
  const readersClosed = Promise.all(attackers.filter((a) => a.reads).map((a) => a.closed))
  const closedInTime = await Promise.race([readersClosed.then(() => true), sleep(20_000).then(() => false)])
  clearInterval(trickle)
  t.true(closedInTime, `reading attackers closed (${attackers.filter((a) => a.reads && !a.s.destroyed).length} still open)`)
  t.true(await waitFor(async () => (await server.report()).connections === 1, 20_000), 'only the good client is left')
  await floodLoop
  for (const a of attackers) a.s.destroy()
  // The good client kept going throughout (and a little after).
  await sleep(300)
  stopGood = true
  await goodLoop
  good.close()
  clearInterval(sampler)

  const p99 = percentile(gaps, 0.99)
  t.log(`good client: ${goodTokens} tokens, inter-token p50 ${percentile(gaps, 0.5).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`)
  t.log(
    `server: RSS ${(base.rss / 2 ** 20).toFixed(0)} MiB before, peak ${(peakRss / 2 ** 20).toFixed(0)} MiB (bound ${RSS_BOUND / 2 ** 20}); ${attackers.length} attacker connections`,
  )
  t.true(goodTokens > 500, `${goodTokens} tokens`)
  t.true(p99 < 50, `inter-token p99 ${p99.toFixed(2)} ms`)
  t.true(peakRss < RSS_BOUND, `peak RSS ${peakRss}`)

  const res = await fetch(`http://127.0.0.1:${server.ready.metricsPort}/metrics`)
  const text = await res.text()
  const dropped_ = (reason) => Number(new RegExp(`cudagraph_connections_dropped_total\\{reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ?? 0)
  t.log(
    `dropped: slow_reader ${dropped_('slow_reader')}, idle ${dropped_('idle')}, frame_timeout ${dropped_('frame_timeout')}, protocol ${dropped_('protocol')}`,
  )
  t.true(dropped_('slow_reader') >= counts.nonReaders + 1, 'non-readers and the flood: slow readers')
  t.true(dropped_('idle') >= counts.idle, 'idle connections')
  t.true(dropped_('frame_timeout') >= counts.loris, 'slow loris')
  t.true(dropped_('protocol') >= counts.bad, 'bad frames')

  // After they leave: descriptors and heap back to where they were.
  await waitFor(async () => (await server.report()).connections === 0, 3000)
  await sleep(200)
  const after = await server.report()
  t.log(`before: ${base.fds} fds, heap ${(base.heapUsed / 2 ** 20).toFixed(1)} MiB; after: ${after.fds} fds, heap ${(after.heapUsed / 2 ** 20).toFixed(1)} MiB`)
  t.true(after.fds <= base.fds + 4, `fds ${base.fds} -> ${after.fds}`)
  t.true(after.heapUsed < base.heapUsed + (16 << 20), `heap ${base.heapUsed} -> ${after.heapUsed}`)

  // close() (SIGTERM) finishes within its drain time.
  const t0 = performance.now()
  server.child.kill('SIGTERM')
  const code = await Promise.race([server.exited, sleep(5000).then(() => 'timeout')])
  t.is(code, 0)
  t.log(`SIGTERM to exit: ${(performance.now() - t0).toFixed(0)} ms`)
})
