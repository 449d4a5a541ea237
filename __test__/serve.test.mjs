// The generator and its client over a real Unix socket, on the CPU engine (protocol, batching, faults,
// shutdown; the GPU runs of the same server are in serve.gpu.test.mjs).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createConnection } from 'node:net'
import test from 'ava'
import {
  BusyError,
  Client,
  ConnectionClosedError,
  ErrorCode,
  encode,
  FrameDecoder,
  GeneratorServer,
  MessageType,
  ProtocolError,
  RefusedError,
  ServerError,
} from '../dist/serve/index.js'
import { FakeEngine } from './fake-engine.mjs'
import { sleep, socketPath, until } from './helpers.mjs'

const sockPath = () => socketPath('test')
async function start(t, engineOptions = {}, serverOptions = {}) {
  const engine = new FakeEngine({ maxSeqLen: 256, ...engineOptions })
  const server = await GeneratorServer.listen({ socketPath: sockPath(), engine, log: () => {}, ...serverOptions })
  t.teardown(() => server.close())
  return { engine, server }
}
/** A raw socket speaking frames, for what the Client would never send. */
async function raw(path) {
  const s = createConnection(path)
  const d = FrameDecoder.forClient()
  const got = []
  s.on('data', (c) => got.push(...d.push(c)))
  const closed = new Promise((r) => s.on('close', r))
  await until(() => got.length > 0) // HELLO
  return { s, got, closed }
}

test('concurrent clients on many connections get exactly what each prompt gets alone, batched', async (t) => {
  const { engine, server } = await start(t, { slots: 16, maxBatch: 16 }, { metricsPort: 0 })
  const clients = await Promise.all(Array.from({ length: 6 }, () => Client.connect(server.socketPath)))
  t.is(clients[0].server.vocab, 97)
  const jobs = []
  for (let i = 0; i < 24; i++) {
    const prompt = Array.from({ length: 1 + ((i * 11) % 40) }, (_, k) => (i * 7 + k * 3) % 97)
    const max = 5 + (i % 13)
    jobs.push(
      clients[i % 6]
        .generate(prompt, { maxNewTokens: max })
        .toArray()
        .then((got) => t.deepEqual(got, engine.reference(prompt, max), `request ${i}`)),
    )
  }
  await Promise.all(jobs)
  t.true(Math.max(...engine.decodeSizes) >= 8, `decode batches up to ${Math.max(...engine.decodeSizes)}`)
  t.true((await clients[0].ping()) > 0)
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text()
  t.regex(metrics, /cudagraph_requests_total\{outcome="length"\} 24/)
  const total = jobs.length && [...Array(24).keys()].reduce((a, i) => a + 5 + (i % 13), 0)
  t.regex(metrics, new RegExp(`cudagraph_generated_tokens_total ${total}\\b`))
  t.regex(metrics, /cudagraph_time_to_first_token_seconds_count 24/)
  t.regex(metrics, /cudagraph_decode_batch_size_bucket\{le="16"\}/)
  const health = await (await fetch(`http://127.0.0.1:${server.metricsPort}/healthz`)).json()
  t.deepEqual(health, { status: 'ok', connections: 6, running: 0, queued: 0 })
  for (const c of clients) c.close()
})

test("metrics part each step's time: the engine's calls (GPU work) apart from the server's own", async (t) => {
  const { engine, server } = await start(t, { stepDelayMs: 2 }, { metricsPort: 0 })
  const c = await Client.connect(server.socketPath)
  await c.generate([1, 2, 3], { maxNewTokens: 6 }).toArray()
  c.close()
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text()
  const num = (name) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1])
  const decodes = engine.decodeSizes.length
  t.is(decodes, 5)
  t.is(num('cudagraph_engine_seconds_count'), num('cudagraph_step_seconds_count'))
  // The fake engine's decode busy-waits 2 ms: the engine's sum holds every one, and the steps' sum holds the engine's.
  t.true(num('cudagraph_engine_seconds_sum') >= decodes * 0.002, `engine ${num('cudagraph_engine_seconds_sum')} s`)
  t.true(num('cudagraph_step_seconds_sum') >= num('cudagraph_engine_seconds_sum'))
})

test('bad frames close only their connection, with an error frame; bad requests and BUSY keep it open', async (t) => {
  const { engine, server } = await start(t, { slots: 1, maxBatch: 1 }, { maxQueue: 1, maxFrameBytes: 256 })
  const good = await Client.connect(server.socketPath)
  const long = good.generate([1, 2, 3], { maxNewTokens: 200 })

  for (const [bytes, code, re] of [
    [Buffer.from([2, 0, 0, 0, 7, MessageType.PING]), ErrorCode.PROTOCOL, /protocol version 7/],
    [Buffer.from([2, 0, 0, 0, 1, 0x42]), ErrorCode.UNKNOWN_TYPE, /unknown message type 0x42/],
    [Buffer.from([0, 1, 0, 0]), ErrorCode.FRAME_TOO_LARGE, /more than the 256-byte limit/],
    [Buffer.from([3, 0, 0, 0, 1, MessageType.CANCEL, 9]), ErrorCode.PROTOCOL, /1-byte payload/],
  ]) {
    const r = await raw(server.socketPath)
    r.s.write(bytes)
    await r.closed
    const err = r.got.find((m) => m.type === MessageType.ERROR)
    t.is(err?.code, code)
    t.regex(err.message, re)
  }

  // Out of the vocabulary, empty, or a reused id: INVALID_REQUEST for that request only.
  const c = await Client.connect(server.socketPath)
  await t.throwsAsync(c.generate([5, 97], { maxNewTokens: 3 }).toArray(), {
    instanceOf: ServerError,
    message: /token 1 of the prompt is 97, outside the vocabulary 0\.\.96/,
  })
  const r = await raw(server.socketPath)
  r.s.write(encode({ type: MessageType.GENERATE, requestId: 1, maxNewTokens: 2, tokens: new Int32Array(0) }))
  r.s.write(encode({ type: MessageType.GENERATE, requestId: 0, maxNewTokens: 2, tokens: Int32Array.of(1) }))
  await until(() => r.got.length >= 3)
  t.deepEqual(
    r.got.slice(1).map((m) => [m.type, m.code, m.requestId]),
    [
      [MessageType.ERROR, ErrorCode.INVALID_REQUEST, 1],
      [MessageType.ERROR, ErrorCode.INVALID_REQUEST, 0],
    ],
  )
  r.s.destroy()
  // The one slot is busy with `long`, one request may wait; the next is BUSY.
  const waiting = c.generate([7], { maxNewTokens: 2 })
  await sleep(5)
  await t.throwsAsync(c.generate([8], { maxNewTokens: 2 }).toArray(), { instanceOf: BusyError, message: /queue is full \(1 waiting\)/ })
  t.is((await long.toArray()).length, 200)
  t.deepEqual(await waiting.toArray(), engine.reference([7], 2))
  t.false(c.closed)
  c.close()
  good.close()
})

test('a client that disconnects mid-stream or stops reading loses its requests; their slots are freed and others go on', async (t) => {
  const logs = []
  const { engine, server } = await start(t, { slots: 4, maxBatch: 4, maxSeqLen: 1 << 16 }, { maxUnreadBytes: 64 * 1024, log: (m) => logs.push(m) })
  const other = await Client.connect(server.socketPath)
  const steady = other.generate([4, 5, 6], { maxNewTokens: 300 }).toArray()

  const quitter = await Client.connect(server.socketPath)
  const g = quitter.generate([1], { maxNewTokens: 1e6 })
  for await (const _ of g) if (g.received > 5) break // ending the loop cancels the request
  const quitter2 = await Client.connect(server.socketPath)
  const g2 = quitter2.generate([2], { maxNewTokens: 1e6 })
  await until(() => g2.received > 5)
  quitter2.close() // the socket goes away with the request running
  await t.throwsAsync(g2.toArray(), { instanceOf: ConnectionClosedError })

  // Never reads: the kernel buffers fill, then the server's limit drops it.
  const r = await raw(server.socketPath)
  r.s.pause()
  r.s.write(encode({ type: MessageType.GENERATE, requestId: 1, maxNewTokens: 1e7, tokens: Int32Array.of(3) }))
  await until(() => logs.length > 0, 20000)
  t.regex(logs[0], /dropping a client that left \d+ bytes unread \(limit 65536\)/)
  r.s.resume() // reads what was sent, then the end
  await r.closed
  t.is(r.got.at(-1).code, ErrorCode.SLOW_READER)
  t.deepEqual(await steady, engine.reference([4, 5, 6], 300))
  await until(() => server.running === 0)
  t.is(server.connections, 2) // other, quitter
  const after = await other.generate([9, 9], { maxNewTokens: 8 }).toArray()
  t.deepEqual(after, engine.reference([9, 9], 8))
  other.close()
  quitter.close()
})

test('an AbortSignal cancels a generation: it rejects with the reason and the server frees the slot', async (t) => {
  const { server } = await start(t, { maxSeqLen: 1 << 16 })
  const c = await Client.connect(server.socketPath)
  const ac = new AbortController()
  const g = c.generate([1, 2], { maxNewTokens: 1e6, signal: ac.signal })
  const seen = []
  const done = (async () => {
    for await (const tok of g) {
      seen.push(tok)
      if (seen.length === 10) ac.abort()
    }
  })()
  // The abort reason is a DOMException, which ava's throwsAsync does not take for an Error.
  await done.then(
    () => t.fail('no rejection'),
    (e) => t.is(e.name, 'AbortError'),
  )
  await until(() => server.running === 0)
  t.is(c.inFlight, 0)
  c.close()
})

// serial: it counts the process's pending immediates, which concurrent tests would add to
test.serial('a busy-polling client keeps its event loop turning only while it generates, and gets the same tokens', async (t) => {
  // The server runs in its own process: its scheduler's immediates must not count as the client's.
  const path = sockPath()
  const p = spawn(process.execPath, [new URL('./fixtures/fake-server.mjs', import.meta.url).pathname, path], { stdio: ['ignore', 'pipe', 'inherit'] })
  const exited = new Promise((r) => p.once('exit', r))
  t.teardown(() => p.kill('SIGKILL'))
  await new Promise((r) => p.stdout.once('data', r))
  const engine = new FakeEngine({ maxSeqLen: 1 << 20 }) // the fixture's, for the reference tokens
  const c = await Client.connect(path, { busyPoll: true })
  const immediates = () => process.getActiveResourcesInfo().filter((r) => r === 'Immediate').length
  t.is(immediates(), 0, 'no polling before a generation')
  const g = c.generate([5, 6, 7], { maxNewTokens: 40 })
  t.is(immediates(), 1, 'polling while generating')
  const got = await g.toArray()
  t.deepEqual(got, engine.reference([5, 6, 7], 40))
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  t.is(immediates(), 0, 'polling stopped with the last generation')
  const two = [c.generate([1], { maxNewTokens: 5 }), c.generate([2], { maxNewTokens: 9 })]
  t.deepEqual(await Promise.all(two.map((x) => x.toArray())), [engine.reference([1], 5), engine.reference([2], 9)])
  c.close()
  p.kill('SIGTERM')
  await exited
})

test('close drains running requests, ends waiting ones with shutdown, removes the socket; then connecting is refused', async (t) => {
  const { engine, server } = await start(t, { slots: 1, maxBatch: 1, maxSeqLen: 1 << 16 })
  const c = await Client.connect(server.socketPath)
  const g = c.generate([1], { maxNewTokens: 50 })
  const running = g.toArray()
  await until(() => g.received > 0)
  const waiting = c.generate([2], { maxNewTokens: 5 }).toArray()
  await until(() => server.queued === 1)
  await server.close({ drainMs: 2000 })
  t.deepEqual(await running, engine.reference([1], 50))
  await t.throwsAsync(waiting, { instanceOf: ServerError, message: /shut down after 0 tokens/ })
  t.false(existsSync(server.socketPath))
  await t.throwsAsync(Client.connect(server.socketPath), { instanceOf: RefusedError, message: /no generator is listening/ })
})

test('a server process that dies mid-stream gives its client a typed error, not a hang; SIGTERM exits 0 and removes the socket', async (t) => {
  const fixture = new URL('./fixtures/fake-server.mjs', import.meta.url).pathname
  const run = async () => {
    const path = sockPath()
    const p = spawn(process.execPath, [fixture, path], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise((r) => p.stdout.once('data', r))
    return { p, path, exit: new Promise((r) => p.once('exit', (code, signal) => r(code ?? signal))) }
  }
  const a = await run()
  const c = await Client.connect(a.path)
  const g = c.generate([1, 2, 3], { maxNewTokens: 1e6 })
  await until(() => g.received > 3)
  a.p.kill('SIGKILL')
  await t.throwsAsync(g.toArray(), { instanceOf: ConnectionClosedError })
  t.is(await a.exit, 'SIGKILL')
  // The dead server's socket file is stale: a new server replaces it.
  const again = await GeneratorServer.listen({ socketPath: a.path, engine: new FakeEngine(), log: () => {} })
  await again.close()

  const b = await run()
  const c2 = await Client.connect(b.path)
  const g2 = c2.generate([1], { maxNewTokens: 1e6 })
  await until(() => g2.received > 3)
  b.p.kill('SIGTERM')
  await t.throwsAsync(g2.toArray(), { instanceOf: ServerError, message: /shut down/ })
  t.is(await b.exit, 0)
  t.false(existsSync(b.path))
})

test('a second server on a live socket is refused; bad client arguments are typed errors', async (t) => {
  const { server } = await start(t)
  await t.throwsAsync(GeneratorServer.listen({ socketPath: server.socketPath, engine: new FakeEngine() }), { message: /already listening/ })
  const c = await Client.connect(server.socketPath)
  t.throws(() => c.generate([], { maxNewTokens: 2 }), { message: /prompt/ })
  t.throws(() => c.generate([1], { maxNewTokens: 0 }), { message: /maxNewTokens/ })
  c.close()
  await t.throwsAsync(c.ping(), { instanceOf: ConnectionClosedError })
  t.true(ProtocolError.prototype instanceof Error)
})

test('serve, client and bench --serve flags: each bad one exits 2 naming itself; the client command streams, or says who refused', async (t) => {
  const cli = new URL('../bin/cudagraph.js', import.meta.url).pathname
  const run = (...args) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' })
  const cases = [
    [['serve'], /--socket: the Unix socket path to listen on is required/],
    [['serve', '--socket', '/tmp/x', '--max-batch', '0'], /--max-batch: expected an integer in 1\.\.256, got '0'/],
    [
      ['serve', '--socket', '/tmp/x', '--model', 'huge'],
      /--model: expected tiny, small, 1b or a Hugging Face model directory \(with config.json\), got 'huge'/,
    ],
    [['serve', '--socket', '/tmp/x', '--bogus'], /unknown flag '--bogus'/],
    [['client', '--socket', '/tmp/x'], /--prompt-tokens: a comma-separated list of token ids \(e.g. 1,2,3\), or --prompt TEXT, is required/],
    [['client', '--socket', '/tmp/x', '--prompt-tokens', '1,a'], /--prompt-tokens: expected comma-separated token ids \(integers 0\.\.2147483647\), got '1,a'/],
    [['bench', '--serve', '--clients', '0,8'], /--clients: expected comma-separated integers in 1\.\.256, got '0,8'/],
  ]
  for (const [args, re] of cases) {
    const r = run(...args)
    t.is(r.status, 2, args.join(' '))
    t.regex(r.stderr, re)
  }
  const none = run('client', '--socket', sockPath(), '--prompt-tokens', '1,2')
  t.is(none.status, 1)
  t.regex(none.stderr, /RefusedError: no generator is listening on/)
  const { engine, server } = await start(t)
  const out = await new Promise((resolve) => {
    const c = spawn(process.execPath, [cli, 'client', '--socket', server.socketPath, '--prompt-tokens', '3,4', '--max-new-tokens', '9'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let o = ''
    let e = ''
    c.stdout.on('data', (d) => (o += d))
    c.stderr.on('data', (d) => (e += d))
    c.once('exit', (code) => resolve({ code, o, e }))
  })
  t.is(out.code, 0, out.e)
  t.is(out.o.trim(), engine.reference([3, 4], 9).join(' '))
  t.regex(out.e, /9 tokens \(length\), first after [\d.]+ ms/)
})
