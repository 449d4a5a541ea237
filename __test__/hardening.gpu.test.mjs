// The engine's lifetime holes (issue 17), each on a real device: aborted captures, stream-ordered memory
// used on another stream, pinned memory and events that outlive the JS objects, background downloads
// during a capture, exec update on a disposed target, 32-bit arguments, and the handle table's limit.
import { spawnSync } from 'node:child_process'
import { ArgumentError, CaptureError, Device, DisposedError, InUseError } from '../dist/index.js'
import { gpuTest } from './helpers.mjs'

const test = gpuTest()
const N = 1 << 16
const cfg = { grid: N / 256, block: 256 }
const SOURCE = `
extern "C" __global__ void spin_then_write(float* p, int n, long long cycles, float v) {
  long long t0 = clock64();
  while (clock64() - t0 < cycles) {}
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = v;
}
extern "C" __global__ void add1(float* p, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] += 1.f;
}`
/** About 50 ms of spinning at H100/H200 clocks. */
const SPIN = 100_000_000

let ctx
function setup() {
  if (ctx) return ctx
  const dev = Device.open(0)
  const mod = dev.compile(SOURCE, { name: 'hardening' })
  ctx = { dev, spin: mod.kernel('spin_then_write', ['ptr', 'i32', 'i64', 'f32']), add1: mod.kernel('add1', ['ptr', 'i32']) }
  return ctx
}

/** Runs `script` (ESM) in a fresh Node with --expose-gc; its stdout, stderr and exit code. */
function child(script) {
  const r = spawnSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: new URL('..', import.meta.url).pathname,
  })
  return { code: r.status, signal: r.signal, out: r.stdout.trim(), err: r.stderr }
}

test('a buffer allocated in an aborted capture is disposed: using it is a DisposedError, not a stale address', (t) => {
  const { dev } = setup()
  const s = dev.createStream()
  let b
  t.throws(
    () =>
      s.capture(() => {
        b = s.allocAsync('f32', 1024)
        throw new Error('stop here')
      }),
    { instanceOf: CaptureError },
  )
  t.true(b.disposed)
  t.throws(() => s.fill(b, 1), { instanceOf: DisposedError })
  t.throws(() => b.download(), { instanceOf: DisposedError })
  // The stream and the context are fine.
  const ok = dev.alloc('f32', 16)
  s.fill(ok, 3)
  s.synchronize()
  t.deepEqual([...ok.download()], new Array(16).fill(3))
})

test('stream-ordered memory used on another stream is freed only after that work: the next allocation is not overwritten', (t) => {
  const { dev, spin } = setup()
  const s1 = dev.createStream()
  const s2 = dev.createStream()
  for (const via of ['eager launch', 'graph replay']) {
    const buf = s1.allocAsync('f32', N)
    s1.synchronize()
    const address = buf.address
    if (via === 'eager launch') s2.launch(spin, cfg, [buf, N, SPIN, 7])
    else {
      const g = s1.capture(() => s1.launch(spin, cfg, [buf, N, SPIN, 7]))
      g.launch(s2)
      g.dispose()
    }
    buf.dispose()
    // Freed memory returns to the stream's pool: the next allocation of the same size takes it at once.
    const fresh = s1.allocAsync('f32', N)
    s1.fill(fresh, 1)
    s1.synchronize()
    s2.synchronize()
    const got = fresh.download()
    t.true(
      got.every((v) => v === 1),
      `${via}: the spinning kernel on the other stream wrote into the next allocation (${fresh.address === address ? 'same' : 'another'} address)`,
    )
    t.log(`${via}: next allocation at ${fresh.address === address ? 'the same' : 'another'} address; intact`)
    fresh.dispose()
  }
})

test('pinned staging views keep their memory (and its context) alive after every other object is gone', (t) => {
  const r = child(`
import { Device, GraphManager } from './dist/index.js'
function make() {
  const dev = Device.open(0)
  const mgr = new GraphManager(dev, { config: { mode: 'NONE' } })
  const step = mgr.wrap({ inputs: { x: ['f32', 4096] }, outputs: { y: { dtype: 'f32', rows: 4096, readBack: true } }, forward(ctx, b) { ctx.stream.copy(ctx.outputs.y.view(0, b.numTokens), ctx.inputs.x.view(0, b.numTokens)) } })
  step.run({ x: new Float32Array(4096).fill(2) }, { numTokens: 4096 })
  return [step.staging('x'), step.hostOutput('y')]
}
const [staging, back] = make()
for (let i = 0; i < 20; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)) }
staging.fill(5)
let s = 0
for (const v of back) s += v
console.log(staging[4095], s)
`)
  t.is(r.signal, null, r.err)
  t.is(r.code, 0, r.err)
  t.is(r.out, '5 8192')
})

test('a download in flight keeps its context: it completes after the device objects are collected', (t) => {
  const r = child(`
import { Device } from './dist/index.js'
const SRC = 'extern "C" __global__ void spin(float* p, long long c) { long long t = clock64(); while (clock64() - t < c) {} p[threadIdx.x] = 4.f; }'
function start() {
  const dev = Device.open(0)
  const s = dev.createStream()
  const b = dev.alloc('f32', 32)
  s.launch(dev.compile(SRC, { name: 'spin' }).kernel('spin', ['ptr', 'i64']), { grid: 1, block: 32 }, [b, 200000000])
  return s.downloadAsync(b)
}
const p = start()
for (let i = 0; i < 10; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)) }
const got = await p
console.log(got[0], got[31])
`)
  t.is(r.signal, null, r.err)
  t.is(r.code, 0, r.err)
  t.is(r.out, '4 4')
})

test('a background download finishing during a capture does not invalidate it (pinned memory is freed on the JS thread)', async (t) => {
  const { dev, add1 } = setup()
  const s = dev.createStream()
  const other = dev.createStream()
  const big = dev.alloc('f32', 16 << 20)
  other.fill(big, 2)
  const x = dev.alloc('f32', N)
  let captures = 0
  for (let round = 0; round < 12; round++) {
    const p = other.downloadAsync(big)
    // A capture long enough (about 20 ms of host time) that the 64 MiB copy finishes inside it.
    const g = s.capture(() => {
      const until = performance.now() + 20
      while (performance.now() < until) s.launch(add1, cfg, [x, N])
    })
    captures++
    g.dispose()
    const host = await p
    t.is(host[host.length - 1], 2)
  }
  t.is(captures, 12)
})

test('updating a disposed graph is a DisposedError and leaves the source graph intact', (t) => {
  const { dev, add1 } = setup()
  const s = dev.createStream()
  const x = dev.alloc('f32', N)
  const g = s.capture(() => s.launch(add1, cfg, [x, N]))
  const h = s.capture(() => s.launch(add1, cfg, [x, N]))
  g.dispose()
  t.throws(() => g.update(h), { instanceOf: DisposedError })
  t.false(h.disposed)
  s.memset(x, 0)
  h.launch(s)
  s.synchronize()
  t.is(x.download()[0], 1)
})

test('32-bit arguments are range-checked, never truncated: view offsets, leading dimensions, ordinals', (t) => {
  const { dev } = setup()
  const s = dev.createStream()
  const b = dev.alloc('f32', 64)
  t.is(t.throws(() => b.view(2 ** 32, 4), { instanceOf: ArgumentError }).argument, 'offset')
  t.is(t.throws(() => b.view(60, 8), { instanceOf: ArgumentError }).argument, 'length')
  t.is(t.throws(() => Device.open(2 ** 32), { instanceOf: ArgumentError }).argument, 'ordinal')
  const a = dev.alloc('f32', 64)
  t.is(t.throws(() => s.gemm({ a, b, c: dev.alloc('f32', 64), m: 8, n: 8, k: 8, lda: 2 ** 32 + 8 }), { instanceOf: ArgumentError }).argument, 'lda')
})

test('past 2^20 live handles of one kind the binding refuses with a typed error instead of aliasing another object', (t) => {
  const { dev } = setup()
  const b = dev.alloc('f32', 4)
  const s = dev.createStream()
  s.fill(b, 9)
  const views = []
  let error
  for (let i = 0; i <= 1 << 20; i++) {
    try {
      views.push(b.view(0, 1))
    } catch (e) {
      error = e
      break
    }
  }
  t.true(error instanceof InUseError, String(error))
  t.regex(error.message, /more than 1048576 live objects/)
  t.true(views.length < 1 << 20)
  // The first view and the buffer itself still reach their own memory.
  t.is(views[0].download()[0], 9)
  t.is(b.download()[3], 9)
  views.length = 0
})
