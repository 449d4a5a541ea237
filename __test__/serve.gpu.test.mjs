// The generator on the GPU: the built-in decoder behind a GeneratorServer, real clients on its socket.
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { Device, GraphManager } from '../dist/index.js'
import { DecoderModel, DecoderRunner } from '../dist/model/index.js'
import { Client, GeneratorServer } from '../dist/serve/index.js'
import { gpuTest, rng, socketPath, until as untilDefault } from './helpers.mjs'

const test = gpuTest()
const CLI = new URL('../bin/cudagraph.js', import.meta.url).pathname
const sockPath = () => socketPath('gpu')
const until = (cond, ms = 10000) => untilDefault(cond, ms)

/** The tiny decoder with 64 KV slots, graphs captured, behind a server. */
async function tinyServer(t, { slots = 64, maxSeqLen = 256, config = {} } = {}) {
  const dev = Device.open(0)
  const stream = dev.createStream()
  const model = DecoderModel.create(dev, stream, { model: 'tiny', seed: 11, slots, maxSeqLen })
  const manager = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: slots, maxCaptureSize: 64, ...config }, log: () => {} })
  const runner = new DecoderRunner(model, manager, { maxBatch: slots, maxPrefillTokens: 64 })
  await runner.warmup()
  const server = await GeneratorServer.listen({ socketPath: sockPath(), engine: runner, model: 'tiny', metricsPort: 0, log: (m) => t.log(m) })
  t.teardown(async () => {
    await server.close()
    runner.dispose()
    manager.dispose()
    model.dispose()
  })
  return { dev, model, manager, runner, server }
}

const prompts = (count, seed, vocab) => {
  const r = rng(seed)
  return Array.from({ length: count }, () => Array.from({ length: 3 + Math.floor(r() * 38) }, () => Math.floor(r() * vocab)))
}

test('64 concurrent clients each get exactly the tokens their prompt gets alone; no capture and no eager step while serving', async (t) => {
  const { manager, server } = await tinyServer(t)
  const ps = prompts(64, 5, 256)
  const solo = await Client.connect(server.socketPath)
  const alone = []
  for (const p of ps) alone.push(await solo.generate(p, { maxNewTokens: 24 }).toArray())
  solo.close()
  t.true(new Set(alone.map(String)).size > 60, 'different prompts give different streams')
  const before = manager.stats()
  const clients = await Promise.all(ps.map(() => Client.connect(server.socketPath)))
  const together = await Promise.all(clients.map((c, i) => c.generate(ps[i], { maxNewTokens: 24 }).toArray()))
  for (let i = 0; i < 64; i++) t.deepEqual(together[i], alone[i], `client ${i}`)
  const after = manager.stats()
  t.is(after.captures, before.captures, 'no capture while serving')
  t.is(after.eagerRuns, before.eagerRuns, 'every step replayed a graph')
  const text = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text()
  const num = (re) => Number(re.exec(text)?.[1])
  const count = num(/^cudagraph_decode_batch_size_count (\d+)/m)
  const upTo16 = num(/^cudagraph_decode_batch_size_bucket\{le="16"\} (\d+)/m)
  t.true(count - upTo16 > 0, 'decode steps of more than 16 requests ran')
  t.true(num(/^cudagraph_graph_hits_total (\d+)/m) > 0)
  t.true(num(/^cudagraph_graph_memory_bytes\{kind="held"\} (\d+)/m) > 0)
  t.log(
    `${after.replays - before.replays} replays for 64 x 24 tokens; mean decode batch ${(num(/^cudagraph_decode_batch_size_sum (\d+)/m) / count).toFixed(1)} over both phases`,
  )
  for (const c of clients) c.close()
})

test('killing clients mid-stream leaves the server healthy, its slots free and device memory where it was', async (t) => {
  // Long requests (up to 4000 tokens), so that every victim is still generating when it is killed.
  const { dev, server } = await tinyServer(t, { slots: 32, maxSeqLen: 4096 })
  const steadyPrompt = [5, 6, 7, 8]
  const c = await Client.connect(server.socketPath)
  const alone = await c.generate(steadyPrompt, { maxNewTokens: 1500 }).toArray()
  const free0 = dev.memoryInfo().free
  const steady = c.generate(steadyPrompt, { maxNewTokens: 1500 }).toArray()
  // 8 client processes killed with SIGKILL once they print tokens, and 8 connections dropped in-process.
  const procs = Array.from({ length: 8 }, (_, i) => {
    const p = spawn(process.execPath, [CLI, 'client', '--socket', server.socketPath, '--prompt-tokens', `${i + 1},2,3`, '--max-new-tokens', '4000'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    const started = new Promise((r) => p.stdout.once('data', r))
    const exit = new Promise((r) => p.once('exit', (code, sig) => r(sig ?? code)))
    return { p, started, exit }
  })
  const drops = await Promise.all(Array.from({ length: 8 }, () => Client.connect(server.socketPath)))
  const gens = drops.map((d, i) => d.generate([i + 9, 1], { maxNewTokens: 4000 }))
  await Promise.all(procs.map((x) => x.started))
  await until(() => gens.every((g) => g.received > 2))
  for (const x of procs) x.p.kill('SIGKILL')
  for (const d of drops) d.close()
  t.deepEqual(await Promise.all(procs.map((x) => x.exit)), Array(8).fill('SIGKILL'))
  t.deepEqual(await steady, alone, 'the client that stayed got its tokens')
  await until(() => server.running === 0 && server.connections === 1)
  const health = await (await fetch(`http://127.0.0.1:${server.metricsPort}/healthz`)).json()
  t.deepEqual(health, { status: 'ok', connections: 1, running: 0, queued: 0 })
  t.deepEqual(await c.generate(steadyPrompt, { maxNewTokens: 1500 }).toArray(), alone)
  const delta = free0 - dev.memoryInfo().free
  t.log(`device memory free before ${(free0 / 2 ** 20).toFixed(1)} MiB, change after the kills ${delta} bytes`)
  t.true(Math.abs(delta) <= 2 * 2 ** 20, `device memory moved by ${delta} bytes`)
  c.close()
})

test('rolling graphs: after evictions, missing sizes run eagerly and are captured in idle time, not in a serving step', async (t) => {
  const { manager, runner, server } = await tinyServer(t, { slots: 16 })
  const c = await Client.connect(server.socketPath)
  const ps = prompts(8, 9, 256)
  const alone = []
  for (const p of ps) alone.push(await c.generate(p, { maxNewTokens: 12 }).toArray())
  manager.evictAll()
  const s0 = manager.stats()
  // Served while graphs are missing: same tokens, eager steps, nothing captured inside them.
  const got = await Promise.all(ps.map((p) => c.generate(p, { maxNewTokens: 12 }).toArray()))
  t.deepEqual(got, alone)
  const s1 = manager.stats()
  t.true(s1.eagerRuns > s0.eagerRuns)
  t.true(runner.missedGraphs > 0)
  // Idle now: the server captures what was missed, one graph per turn of the event loop.
  await until(() => runner.missedGraphs === 0)
  const s2 = manager.stats()
  t.true(s2.captures > s1.captures, 'captured in idle time')
  const again = await Promise.all(ps.map((p) => c.generate(p, { maxNewTokens: 12 }).toArray()))
  t.deepEqual(again, alone)
  const s3 = manager.stats()
  t.true(s3.replays > s2.replays)
  t.log(
    `${s1.eagerRuns - s0.eagerRuns} eager steps while graphs were missing, ${s2.captures - s1.captures} captured when idle, then ${s3.replays - s2.replays} replays and ${s3.eagerRuns - s2.eagerRuns} eager steps`,
  )
  c.close()
})

test('cudagraph serve: ready line, the client command, /metrics, and SIGTERM mid-stream: the client is told, exit 0, socket gone', async (t) => {
  const path = sockPath()
  const p = spawn(
    process.execPath,
    [
      CLI,
      'serve',
      '--socket',
      path,
      '--model',
      'tiny',
      '--max-batch',
      '8',
      '--max-seq-len',
      '4096',
      '--max-prefill',
      '64',
      '--metrics-port',
      '0',
      '--drain-ms',
      '0',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let err = ''
  p.stderr.on('data', (d) => (err += d))
  const exit = new Promise((r) => p.once('exit', (code, sig) => r(sig ?? code)))
  const port = await new Promise((resolve, reject) => {
    let out = ''
    p.stdout.on('data', (d) => {
      out += d
      const m = /ready on .* metrics http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(out)
      if (m) resolve(Number(m[1]))
    })
    exit.then((code) => reject(new Error(`serve exited ${code}: ${err}`)))
  })
  const cli = await new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, 'client', '--socket', path, '--prompt-tokens', '1,2,3', '--max-new-tokens', '16'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let e = ''
    c.stdout.on('data', (d) => (out += d))
    c.stderr.on('data', (d) => (e += d))
    c.once('exit', (code) => resolve({ code, out, e }))
  })
  t.is(cli.code, 0, cli.e)
  t.is(cli.out.trim().split(' ').length, 16)
  t.regex(cli.e, /16 tokens \(length\)/)
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.regex(metrics, /cudagraph_requests_total\{outcome="length"\} 1/)
  t.regex(metrics, /cudagraph_graph_captures_total [1-9]/)
  const c = await Client.connect(path)
  const g = c.generate([4, 5], { maxNewTokens: 4000 })
  await until(() => g.received > 10)
  p.kill('SIGTERM')
  const e = await g.toArray().then(
    () => undefined,
    (x) => x,
  )
  t.is(e?.serverCode, 'SHUTTING_DOWN', String(e))
  t.is(await exit, 0, err)
  t.false(existsSync(path))
  t.regex(err, /SIGTERM: no new connections/)
})
