// Bad input and hostile clients (issue 17), CPU only: every bad value a typed error naming it, and a
// server whose memory, connections and time a client cannot hold (fake engine, Unix sockets).
import { spawnSync } from 'node:child_process'
import { createConnection, Socket } from 'node:net'
import test from 'ava'
import { binding, mapError } from '../dist/cuda/native.js'
import { ArgumentError, CapacityError, ConfigError, CudaGraphError, Device, Dispatcher, descriptorKey, GraphConfig, GraphRegistry } from '../dist/index.js'
import { Client, encode, FrameDecoder, GeneratorServer, MessageType } from '../dist/serve/index.js'
import { FakeEngine } from './fake-engine.mjs'
import { sleep, socketPath, until } from './helpers.mjs'

test('every config field has a range: out-of-range values are ConfigErrors naming the field, never a fatal allocation', (t) => {
  const cases = [
    [{ maxCaptureSize: 3e9, maxNumBatchedTokens: 3e9 }, 'maxNumBatchedTokens'],
    [{ maxCaptureSize: 3e9 }, 'maxCaptureSize'],
    [{ captureSizes: [2 ** 40] }, 'captureSizes[0]'],
    [{ captureSizes: [8, 3e7] }, 'captureSizes[1]'],
    [{ maxLoras: 1e6 }, 'maxLoras'],
    [{ maxNumSeqs: 2 ** 20 }, 'maxNumSeqs'],
    [{ numSpecTokens: 1000 }, 'numSpecTokens'],
    [{ numWarmups: 1e9 }, 'numWarmups'],
    [{ maxGraphs: 1e12 }, 'maxGraphs'],
    [{ maxMemoryBytes: 2 ** 60 }, 'maxMemoryBytes'],
    [{ idleEvictMs: 2 ** 40 }, 'idleEvictMs'],
  ]
  for (const [init, path] of cases) {
    const e = t.throws(() => GraphConfig.from(init), { instanceOf: ConfigError }, JSON.stringify(init))
    t.is(e.path, path)
    t.regex(e.expected, /an integer in \d+\.\.\d+/)
  }
  // The largest values allowed work, and quickly.
  const big = GraphConfig.from({ maxCaptureSize: 65536, maxNumBatchedTokens: 65536, maxNumSeqs: 65534, maxLoras: 255 })
  t.is(big.maxCaptureSize, 65536)
})

test('the dispatcher checks every argument before it counts anything', (t) => {
  const d = new Dispatcher(GraphConfig.from({ maxNumSeqs: 8 }))
  d.initializeKeys()
  const before = JSON.stringify(d.stats.toJSON())
  const bad = [
    [() => d.dispatch(2 ** 24), 'numTokens'],
    [() => d.dispatch(3, { validModes: null }), 'options.validModes'],
    [() => d.dispatch(3, { invalidModes: 5 }), 'options.invalidModes'],
    [() => d.dispatch(3, null), 'options'],
    [() => d.initializeKeys('BOGUS'), 'mode'],
    [() => descriptorKey(null), 'descriptor'],
    [() => new Dispatcher(null), 'config'],
  ]
  for (const [f, argument] of bad) t.is(t.throws(f, { instanceOf: ArgumentError }).argument, argument)
  t.is(JSON.stringify(d.stats.toJSON()), before, 'refused calls left the stats as they were')
})

test('registry bytes stay exact: a total past 2^53-1 is refused, and deleting everything returns to 0', (t) => {
  const r = new GraphRegistry({})
  r.put('a', 1, 2 ** 53 - 1)
  t.throws(() => r.put('b', 1, 1), { instanceOf: CapacityError })
  t.throws(() => r.resize('a', 2 ** 53), { instanceOf: ArgumentError })
  t.is(r.bytes, 2 ** 53 - 1)
  r.delete('a')
  r.put('c', 1, 5)
  r.delete('c')
  t.is(r.bytes, 0)
})

test('the client refuses token ids it would have coerced (NaN, null, fractions, 2^32+5, strings)', async (t) => {
  const path = socketPath('hard')
  const server = await GeneratorServer.listen({ socketPath: path, engine: new FakeEngine(), log: () => {} })
  t.teardown(() => server.close())
  const c = await Client.connect(path)
  t.teardown(() => c.close())
  for (const [bad, argument] of [
    [[Number.NaN], 'prompt[0]'],
    [[1, null], 'prompt[1]'],
    [[{}], 'prompt[0]'],
    [[Number.POSITIVE_INFINITY], 'prompt[0]'],
    [[1.7], 'prompt[0]'],
    [[2 ** 32 + 5], 'prompt[0]'],
    [[-1], 'prompt[0]'],
    ['abc', 'prompt'],
    [[], 'prompt'],
    [Int32Array.of(3, -2), 'prompt[1]'],
  ]) {
    t.is(t.throws(() => c.generate(bad, { maxNewTokens: 2 }), { instanceOf: ArgumentError }).argument, argument, JSON.stringify(bad))
  }
  t.is(c.inFlight, 0)
  const toks = []
  for await (const tok of c.generate([1, 2, 3], { maxNewTokens: 3 })) toks.push(tok)
  t.is(toks.length, 3)
})

test('server options are checked at listen, before the socket is made', async (t) => {
  const engine = new FakeEngine()
  const bad = [
    [{ maxFrameBytes: 2 ** 32 }, 'options.maxFrameBytes'],
    [{ maxFrameBytes: -1 }, 'options.maxFrameBytes'],
    [{ maxFrameBytes: Number.NaN }, 'options.maxFrameBytes'],
    [{ maxUnreadBytes: Number.NaN }, 'options.maxUnreadBytes'],
    [{ maxConnections: 0 }, 'options.maxConnections'],
    [{ model: 'm'.repeat(2e6) }, 'options.model'],
    [{ engine: Object.assign(new FakeEngine(), { vocab: 2 ** 32 }) }, 'options.engine.vocab'],
  ]
  for (const [o, argument] of bad) {
    const path = socketPath('opts')
    const e = await t.throwsAsync(GeneratorServer.listen({ socketPath: path, engine, log: () => {}, ...o }), { instanceOf: ArgumentError })
    t.is(e.argument, argument)
  }
})

test('a frame trickled one byte at a time costs linear time', (t) => {
  const d = FrameDecoder.forServer(1 << 20)
  const frame = encode({ type: MessageType.GENERATE, requestId: 1, maxNewTokens: 1, tokens: new Int32Array(200_000).fill(7) })
  const t0 = performance.now()
  let got = []
  for (let i = 0; i < frame.length; i++) got = d.push(frame.subarray(i, i + 1))
  const ms = performance.now() - t0
  t.is(got.length, 1)
  t.is(got[0].tokens.length, 200_000)
  t.true(ms < 3000, `${frame.length} one-byte chunks took ${ms.toFixed(0)} ms`)
  t.log(`${frame.length} one-byte chunks: ${ms.toFixed(0)} ms`)
})

/** A raw client: sends what it is told and reads only when asked (`paused`). */
function rawClient(path, { paused = false } = {}) {
  const s = createConnection(path)
  const d = FrameDecoder.forClient()
  const got = []
  if (paused) s.pause()
  else s.on('data', (c) => got.push(...d.push(c)))
  const closed = new Promise((r) => s.on('close', r))
  s.on('error', () => {})
  return { s, got, closed }
}

test('a client that floods PINGs or invalid requests and never reads is dropped at its output budget', async (t) => {
  const path = socketPath('flood')
  const logs = []
  const server = await GeneratorServer.listen({ socketPath: path, engine: new FakeEngine(), log: (m) => logs.push(m), maxUnreadBytes: 64 << 10 })
  t.teardown(() => server.close())
  for (const kind of ['ping', 'invalid']) {
    const c = rawClient(path, { paused: true })
    await new Promise((r) => c.s.once('connect', r))
    const frame =
      kind === 'ping'
        ? encode({ type: MessageType.PING, nonce: 1n })
        : encode({ type: MessageType.GENERATE, requestId: 0, maxNewTokens: 1, tokens: Int32Array.of(1) })
    const burst = Buffer.concat(Array.from({ length: 1000 }, () => frame))
    const t0 = performance.now()
    while (!c.s.destroyed && performance.now() - t0 < 5000) {
      if (!c.s.write(burst)) await Promise.race([new Promise((r) => c.s.once('drain', r)), c.closed, sleep(50)])
      if (server.connections === 0) break
    }
    await until(() => server.connections === 0, 5000)
    t.is(server.connections, 0, `${kind} flood: dropped`)
    c.s.destroy()
  }
  t.true(logs.filter((m) => /bytes unread/.test(m)).length >= 2)
  const metrics = await server.metrics.registry.getSingleMetricAsString('cudagraph_connections_dropped_total')
  t.regex(metrics, /reason="slow_reader"} 2/)
})

test.serial('the frames of one scheduler step reach a client in one write', async (t) => {
  const path = socketPath('coalesce')
  const engine = new FakeEngine({ maxSeqLen: 1 << 16, slots: 8, maxBatch: 8 })
  const server = await GeneratorServer.listen({ socketPath: path, engine, log: () => {} })
  t.teardown(() => server.close())
  // Count the writes the server makes to its client sockets (they have `server` set).
  const write = Socket.prototype.write
  let writes = 0
  Socket.prototype.write = function (...args) {
    if (this.server) writes++
    return write.apply(this, args)
  }
  t.teardown(() => {
    Socket.prototype.write = write
  })
  const c = rawClient(path)
  await until(() => c.got.length > 0) // HELLO
  const before = writes
  for (let id = 1; id <= 8; id++) c.s.write(encode({ type: MessageType.GENERATE, requestId: id, maxNewTokens: 50, tokens: Int32Array.of(id) }))
  await until(() => c.got.filter((m) => m.type === MessageType.DONE).length === 8, 5000)
  const frames = c.got.length - 1
  const n = writes - before
  t.is(frames, 8 * 50 + 8)
  // About one write per step (51 steps: prefill, then a decode step per token), never one per frame.
  t.true(n <= 60, `${n} writes for ${frames} frames`)
  t.log(`${frames} frames in ${n} writes`)
  c.s.destroy()
})

test('close() resolves even when a client filled its output, sent a bad frame and never reads or leaves', async (t) => {
  const path = socketPath('stuck')
  const engine = new FakeEngine({ maxSeqLen: 1 << 16 })
  const server = await GeneratorServer.listen({ socketPath: path, engine, log: () => {}, maxUnreadBytes: 1 << 20 })
  const c = rawClient(path, { paused: true })
  await new Promise((r) => c.s.once('connect', r))
  c.s.write(encode({ type: MessageType.GENERATE, requestId: 1, maxNewTokens: 30_000, tokens: Int32Array.of(1) }))
  await sleep(300)
  c.s.write(Buffer.from([2, 0, 0, 0, 9, 9])) // bad version: a protocol error
  await sleep(50)
  const t0 = performance.now()
  await server.close()
  const ms = performance.now() - t0
  t.true(ms < 3000, `close took ${ms.toFixed(0)} ms`)
  c.s.destroy()
})

test('connections past the cap are refused; idle ones and half-sent frames are closed after their timeouts', async (t) => {
  const path = socketPath('limits')
  const server = await GeneratorServer.listen({
    socketPath: path,
    engine: new FakeEngine(),
    log: () => {},
    maxConnections: 4,
    idleTimeoutMs: 300,
    frameTimeoutMs: 300,
  })
  t.teardown(() => server.close())
  const conns = Array.from({ length: 4 }, () => rawClient(path))
  await until(() => conns.every((c) => c.got.length > 0))
  const extra = rawClient(path)
  await extra.closed
  t.is(extra.got.length, 0, 'the fifth connection was refused')
  // A half-sent frame: the length field and part of the body, then nothing.
  conns[0].s.write(Buffer.from([100, 0, 0, 0, 1, 1, 0]))
  await Promise.all(conns.map((c) => c.closed))
  t.is(server.connections, 0)
  const text = await server.metrics.registry.metrics()
  t.regex(text, /cudagraph_connections_refused_total 1/)
  t.regex(text, /reason="idle"} 3/)
  t.regex(text, /reason="frame_timeout"} 1/)
})

test('bench --out and serve --socket are checked before anything runs (exit 2, one line)', (t) => {
  const bin = new URL('../bin/cudagraph.js', import.meta.url).pathname
  for (const args of [
    ['bench', '--out', '/etc/passwd/results'],
    ['bench', '--serve', '--out', '/etc/passwd/results'],
    ['serve', '--socket', '/nonexistent-dir/gen.sock'],
  ]) {
    const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 10_000 })
    t.is(r.status, 2, args.join(' '))
    t.regex(r.stderr, /^cudagraph [a-z -]+: --(out|socket): cannot /)
  }
})

test('a panic in the native addon is a typed error and the process goes on', (t) => {
  let e
  try {
    binding().debugPanic('injected panic')
  } catch (x) {
    e = mapError(x)
  }
  t.true(e instanceof CudaGraphError)
  t.is(e.code, 'INTERNAL')
  t.regex(e.message, /injected panic/)
  t.is(t.throws(() => Device.open(2 ** 32), { instanceOf: ArgumentError }).argument, 'ordinal')
})
