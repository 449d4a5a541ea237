// GPU behaviour on a real device: capture/replay, GEMM, failure paths, exec update, memory accounting.
// Skips with a printed reason when no driver is found (CI); on the device machine every test must run.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ArgumentError, CaptureError, CompileError, CudaError, Device, DisposedError, InUseError } from '../dist/index.js'
import { DECODER_KERNELS_PATH, decoderCompileOptions } from '../dist/model/index.js'
import { axpbRef, bf16ToNumber, gemmRef, gpuTest, halfToNumber, KERNELS, numberToBf16, numberToHalf, randomF32, relError } from './helpers.mjs'

const test = gpuTest()
const MiB = 1 << 20
let ctx
function setup() {
  if (!ctx) {
    const dev = Device.open(0)
    const mod = dev.compile(KERNELS, { name: 'test_kernels' })
    ctx = {
      dev,
      mod,
      axpb: mod.kernel('axpb', ['ptr', 'i32', 'f32', 'f32']),
      addInto: mod.kernel('add_into', ['ptr', 'ptr', 'i32']),
      scaleI64: mod.kernel('scale_i64', ['ptr', 'i64', 'i32']),
    }
  }
  return ctx
}
const N = 4096
const cfg = { grid: N / 256, block: 256 }

test('device info comes from the driver', (t) => {
  const { dev } = setup()
  t.true(Device.count() >= 1)
  t.true(Device.driverVersion() >= 12000)
  t.regex(dev.name, /\w/)
  const [major] = dev.computeCapability
  t.true(major >= 7)
  t.true(dev.multiprocessors > 0)
  const m = dev.memoryInfo()
  t.true(m.total > m.free && m.free > 0)
  t.log(
    `${dev.name}, sm_${dev.computeCapability.join('')}, ${dev.multiprocessors} SMs, ${(m.total / 2 ** 30).toFixed(1)} GiB, driver ${Device.driverVersion()}, module target ${setup().mod.target}`,
  )
})

test('every dtype round-trips through upload/download, views share memory', (t) => {
  const { dev } = setup()
  const cases = [
    ['f32', randomF32(1000, 1)],
    ['i32', Int32Array.from({ length: 1000 }, (_, i) => i * 7919 - 3_000_000)],
    ['u32', Uint32Array.from({ length: 1000 }, (_, i) => (i * 2654435761) >>> 0)],
    ['i64', BigInt64Array.from({ length: 1000 }, (_, i) => BigInt(i) * -12345678901n)],
    ['u8', Uint8Array.from({ length: 1000 }, (_, i) => (i * 31) & 255)],
    ['f16', Uint16Array.from({ length: 1000 }, (_, i) => numberToHalf((i - 500) / 64))],
    ['bf16', Uint16Array.from({ length: 1000 }, (_, i) => numberToBf16((i - 500) / 3))],
  ]
  for (const [dtype, data] of cases) {
    const buf = dev.upload(data, dtype)
    t.is(buf.dtype, dtype)
    t.is(buf.byteLength, data.byteLength)
    t.deepEqual(buf.download(), data, dtype)
    const v = buf.view(100, 10)
    t.deepEqual(v.download(), data.slice(100, 110), `${dtype} view`)
  }
  const s = dev.createStream()
  const x = dev.upload(randomF32(64, 2))
  const v = x.view(8, 8)
  s.fill(v, 2.5)
  s.synchronize()
  const host = x.download()
  t.deepEqual([...host.slice(8, 16)], Array(8).fill(2.5))
  t.not(host[7], 2.5)
  const h = dev.alloc('f16', 16)
  s.fill(h, 1.5)
  const bf = dev.alloc('bf16', 16)
  s.fill(bf, -3.25)
  s.synchronize()
  t.true([...h.download()].every((b) => halfToNumber(b) === 1.5))
  t.true([...bf.download()].every((b) => bf16ToNumber(b) === -3.25))
})

test('async upload/download through pinned staging, events time work', async (t) => {
  const { dev, axpb } = setup()
  const s = dev.createStream()
  const x = dev.alloc('f32', N)
  const data = randomF32(N, 3)
  s.uploadAsync(x, data)
  data.fill(0) // staged: reusing the source at once must not change what lands
  const start = dev.createEvent()
  const end = dev.createEvent()
  start.record(s)
  s.launch(axpb, cfg, [x, N, 2, 1])
  end.record(s)
  const out = await s.downloadAsync(x)
  await s.synchronizeAsync()
  t.deepEqual(out, axpbRef(randomF32(N, 3), 1, 2, 1))
  t.true(end.elapsedSince(start) >= 0)
})

test('a 100-kernel chain replays to the same bits as eager and matches the CPU reference', (t) => {
  const { dev, axpb } = setup()
  const s = dev.createStream()
  const init = randomF32(N, 4)
  const eager = dev.upload(init)
  for (let i = 0; i < 100; i++) s.launch(axpb, cfg, [eager, N, 0.99, 0.01])
  const viaGraph = dev.upload(init)
  const g = s.capture(() => {
    for (let i = 0; i < 100; i++) s.launch(axpb, cfg, [viaGraph, N, 0.99, 0.01])
  })
  t.is(g.nodeCount, 100)
  t.deepEqual(viaGraph.download(), init, 'capture itself runs nothing')
  g.launch(s)
  s.synchronize()
  const ref = axpbRef(init, 100, 0.99, 0.01)
  t.deepEqual(viaGraph.download(), eager.download())
  t.deepEqual(viaGraph.download(), ref)
  g.launch(s)
  g.launch(s)
  s.synchronize()
  t.deepEqual(viaGraph.download(), axpbRef(ref, 200, 0.99, 0.01))
  const tm = g.timings()
  t.true(tm.captureUs > 0 && tm.instantiateUs > 0)
  g.dispose()
})

test('GEMM matches a float64 CPU reference (f32 < 1e-5, f16/bf16 < 1e-2), with transposes, alpha, beta, and captured', (t) => {
  const { dev } = setup()
  const s = dev.createStream()
  const [m, n, k] = [96, 80, 112]
  const a = randomF32(m * k, 10)
  const b = randomF32(k * n, 11)
  const c0 = randomF32(m * n, 12)
  for (const [transA, transB] of [
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ]) {
    const C = dev.upload(c0)
    s.gemm({ a: dev.upload(a), b: dev.upload(b), c: C, m, n, k, transA, transB, alpha: 0.75, beta: 0.5 })
    const ref = gemmRef({ a, b, c: c0, m, n, k, transA, transB, alpha: 0.75, beta: 0.5 })
    const err = relError(C.download(), ref)
    t.true(err < 1e-5, `f32 trans ${transA}/${transB}: ${err}`)
  }
  // column-major storage: C(m x n) = A(m x k) B(k x n) read column-major is, read row-major, the n x m
  // product of b (as n x k) and a (as k x m)
  {
    const C = dev.alloc('f32', m * n)
    s.gemm({ a: dev.upload(a), b: dev.upload(b), c: C, m, n, k, layout: 'col' })
    t.true(relError(C.download(), gemmRef({ a: b, b: a, m: n, n: m, k })) < 1e-5)
  }
  for (const [dtype, enc, dec] of [
    ['f16', numberToHalf, halfToNumber],
    ['bf16', numberToBf16, bf16ToNumber],
  ]) {
    const ah = Uint16Array.from(a, enc)
    const bh = Uint16Array.from(b, enc)
    const aq = Float64Array.from(ah, dec)
    const bq = Float64Array.from(bh, dec)
    const C16 = dev.alloc(dtype, m * n)
    const C32 = dev.alloc('f32', m * n)
    const A = dev.upload(ah, dtype)
    const B = dev.upload(bh, dtype)
    s.gemm({ a: A, b: B, c: C16, m, n, k })
    s.gemm({ a: A, b: B, c: C32, m, n, k })
    const ref = gemmRef({ a: aq, b: bq, m, n, k })
    const e16 = relError(Float64Array.from(C16.download(), dec), ref)
    const e32 = relError(C32.download(), ref)
    t.true(e16 < 1e-2, `${dtype} out ${e16}`)
    t.true(e32 < 1e-5, `${dtype} in, f32 out (f32 accumulation) ${e32}`)
  }
  // captured GEMM replays to the same result
  const A = dev.upload(a)
  const B = dev.upload(b)
  const C = dev.alloc('f32', m * n)
  s.prepareBlas()
  const g = s.capture(() => s.gemm({ a: A, b: B, c: C, m, n, k }))
  s.fill(C, Number.NaN)
  g.launch(s)
  s.synchronize()
  t.true(relError(C.download(), gemmRef({ a, b, m, n, k })) < 1e-5)
  t.throws(() => s.gemm({ a: A, b: B, c: C, m, n, k: k + 1 }), { instanceOf: ArgumentError, message: /'a'|'b'/ })
})

test('GEMM with a fused bias and relu/gelu (cuBLASLt epilogue) matches a float64 reference, eagerly and captured; bad bias is a typed error', (t) => {
  const { dev } = setup()
  const s = dev.createStream()
  s.prepareBlas()
  const [m, n, k] = [64, 72, 96]
  const a = randomF32(m * k, 30)
  const b = randomF32(k * n, 31, -0.3, 0.3)
  const bias = randomF32(n, 32, -0.5, 0.5)
  const c0 = randomF32(m * n, 33)
  const gelu = (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)))
  const acts = { none: (x) => x, relu: (x) => Math.max(0, x), gelu }
  const A = dev.upload(a)
  const B = dev.upload(b)
  const Bias = dev.upload(bias)
  for (const [act, f] of Object.entries(acts)) {
    for (const withBias of [true, false]) {
      if (act === 'none' && !withBias) continue
      const ref = gemmRef({ a, b, c: c0, m, n, k, alpha: 0.9, beta: 0.5 }).map((v, i) => f(v + (withBias ? bias[i % n] : 0)))
      const C = dev.upload(c0)
      s.gemm({ a: A, b: B, c: C, m, n, k, alpha: 0.9, beta: 0.5, bias: withBias ? Bias : undefined, activation: act })
      const out = C.download()
      const err = relError(out, ref)
      t.true(err < 1e-5, `${act}${withBias ? '+bias' : ''}: rel err ${err}`)
      if (act === 'relu') {
        const zeros = out.filter((v) => v === 0).length
        t.true(zeros > m * n * 0.2 && zeros < m * n * 0.8, `relu clipped ${zeros} of ${m * n}`)
      }
    }
  }
  // f16 in and out with an f16 bias (the MLP's case)
  {
    const ah = Uint16Array.from(a, numberToHalf)
    const bh = Uint16Array.from(b, numberToHalf)
    const biasH = Uint16Array.from(bias, numberToHalf)
    const ref = gemmRef({ a: Float64Array.from(ah, halfToNumber), b: Float64Array.from(bh, halfToNumber), m, n, k }).map((v, i) =>
      Math.max(0, v + halfToNumber(biasH[i % n])),
    )
    const C = dev.alloc('f16', m * n)
    s.gemm({ a: dev.upload(ah, 'f16'), b: dev.upload(bh, 'f16'), c: C, m, n, k, bias: dev.upload(biasH, 'f16'), activation: 'relu' })
    const err = relError(Float64Array.from(C.download(), halfToNumber), ref)
    t.true(err < 1e-2, `f16 relu+bias: ${err}`)
    // layout 'col': b then a, read column-major, give (a b)^T as n x m, the same memory as row-major a b;
    // the bias has one value per column-major row, n of them
    const Ccol = dev.alloc('f32', m * n)
    const biasCol = randomF32(n, 34)
    s.gemm({ a: B, b: A, c: Ccol, m: n, n: m, k, layout: 'col', bias: dev.upload(biasCol), activation: 'relu' })
    const refCol = gemmRef({ a, b, m, n, k }).map((v, i) => Math.max(0, v + biasCol[i % n]))
    t.true(relError(Ccol.download(), refCol) < 1e-5)
  }
  // captured: the replay equals the eager call bit for bit, whether the shape was first seen eagerly or
  // inside the capture (its plan is made there and kept for later eager calls)
  for (const rows of [m, m - 8]) {
    const C1 = dev.upload(c0)
    const C2 = dev.upload(c0)
    const o = { a: A, b: B, m: rows, n, k, beta: 1, bias: Bias, activation: 'gelu' }
    if (rows === m) s.gemm({ ...o, c: C1 })
    const g = s.capture(() => s.gemm({ ...o, c: C2 }))
    if (rows !== m) s.gemm({ ...o, c: C1 })
    g.launch(s)
    s.synchronize()
    t.deepEqual(C2.download(), C1.download(), `${rows} rows`)
    g.dispose()
  }
  const Cg = dev.alloc('f32', m * n)
  const g = s.capture(() => s.gemm({ a: A, b: B, c: Cg, m, n, k, bias: Bias, activation: 'relu' }))
  t.throws(() => Bias.dispose(), { instanceOf: InUseError }, 'the bias is held by the graph that captured it')
  g.dispose()
  // bad input: typed errors naming the argument; the stream works after
  const C = dev.alloc('f32', m * n)
  t.throws(() => s.gemm({ a: A, b: B, c: C, m, n, k, bias: dev.alloc('f32', n - 1) }), { instanceOf: ArgumentError, message: /'bias'.*at least 72/ })
  t.throws(() => s.gemm({ a: A, b: B, c: C, m, n, k, bias: dev.alloc('f16', n) }), { instanceOf: ArgumentError, message: /'bias'.*f32/ })
  t.throws(() => s.gemm({ a: A, b: B, c: C, m, n, k, activation: 'tanh' }), { instanceOf: ArgumentError, message: /'activation'/ })
  t.throws(() => s.gemm({ a: A, b: B, c: C, m, n, k, bias: bias }), { instanceOf: ArgumentError, message: /'bias'/ })
  s.gemm({ a: A, b: B, c: C, m, n, k, bias: Bias, activation: 'relu' })
  t.true(
    relError(
      C.download(),
      gemmRef({ a, b, m, n, k }).map((v, i) => Math.max(0, v + bias[i % n])),
    ) < 1e-5,
  )
})

test('a failed capture leaves the stream usable and reports the cause', (t) => {
  const { dev, axpb } = setup()
  const s = dev.createStream()
  const x = dev.upload(randomF32(N, 20))
  const free0 = dev.memoryInfo().free
  // 1. the callback throws
  const e1 = t.throws(
    () =>
      s.capture(() => {
        s.launch(axpb, cfg, [x, N, 1, 1])
        throw new RangeError('boom')
      }),
    { instanceOf: CaptureError },
  )
  t.true(e1.cause instanceof RangeError)
  t.false(s.capturing)
  // 2. an operation not allowed in capture (a synchronous download synchronises the context)
  const e2 = t.throws(
    () =>
      s.capture(() => {
        s.launch(axpb, cfg, [x, N, 1, 1])
        x.download()
      }),
    { instanceOf: CaptureError },
  )
  t.true(e2.cause instanceof CudaError, String(e2.cause))
  t.log(`cause: ${e2.cause.message}`)
  // 3. stream synchronize inside capture
  t.throws(() => s.capture(() => s.synchronize()), { instanceOf: CaptureError })
  // 4. a bad launch argument inside capture
  const e4 = t.throws(() => s.capture(() => s.launch(axpb, cfg, [x, N, 1])), { instanceOf: CaptureError })
  t.true(e4.cause instanceof ArgumentError)
  // 5. async callback
  t.throws(() => s.capture(async () => {}), { instanceOf: CaptureError, message: /synchronous/ })
  // the stream works eagerly and captures again
  const before = x.download()
  s.launch(axpb, cfg, [x, N, 2, 0])
  s.synchronize()
  t.deepEqual(x.download(), axpbRef(before, 1, 2, 0))
  const g = s.capture(() => s.launch(axpb, cfg, [x, N, 0.5, 0]))
  g.launch(s)
  s.synchronize()
  t.deepEqual(x.download(), before)
  g.dispose()
  t.true(Math.abs(dev.memoryInfo().free - free0) <= 2 * MiB)
})

test('exec update works for changed pointers and scalars, and reports a changed topology', (t) => {
  const { dev, axpb, addInto } = setup()
  const s = dev.createStream()
  const x = dev.upload(randomF32(N, 30))
  const y = dev.upload(randomF32(N, 31))
  const chain = (buf, a) => () => {
    for (let i = 0; i < 10; i++) s.launch(axpb, cfg, [buf, N, a, 0.25])
  }
  const g = s.capture(chain(x, 0.5))
  const yBefore = y.download()
  const xBefore = x.download()
  const r1 = g.update(s.capture(chain(y, 1.5), { instantiate: false }))
  t.deepEqual(r1, { updatedInPlace: true })
  t.is(x.graphUses, 0, 'the old buffer is released by the update')
  t.is(y.graphUses, 1)
  g.launch(s)
  s.synchronize()
  t.deepEqual(y.download(), axpbRef(yBefore, 10, 1.5, 0.25))
  t.deepEqual(x.download(), xBefore, 'the old pointer is no longer written')
  // topology change: another kernel, and more nodes
  const src = s.capture(
    () => {
      s.launch(addInto, cfg, [x, y, N])
      chain(x, 0.5)()
    },
    { instantiate: false },
  )
  const r2 = g.update(src)
  t.false(r2.updatedInPlace)
  t.regex(r2.reason ?? '', /TOPOLOGY|NODE_TYPE|FAILURE|CHANGED/)
  t.true(src.disposed)
  t.is(g.nodeCount, 11)
  const yNow = y.download()
  g.launch(s)
  s.synchronize()
  const ref = Float32Array.from(xBefore, (v, i) => Math.fround(v + yNow[i]))
  t.deepEqual(x.download(), axpbRef(ref, 10, 0.5, 0.25))
  g.dispose()
})

test('a buffer a live graph uses cannot be freed under it; graphs keep buffers alive', (t) => {
  const { dev, axpb } = setup()
  const s = dev.createStream()
  const x = dev.upload(randomF32(N, 40))
  const g = s.capture(() => s.launch(axpb, cfg, [x, N, 1, 1]))
  t.is(x.graphUses, 1)
  t.throws(() => x.dispose(), { instanceOf: InUseError })
  t.false(x.disposed)
  g.launch(s)
  s.synchronize()
  g.dispose()
  t.throws(() => g.launch(s), { instanceOf: DisposedError })
  t.is(x.graphUses, 0)
  x.dispose()
  t.true(x.disposed)
  t.throws(() => x.download(), { instanceOf: DisposedError })
  t.throws(() => s.launch(axpb, cfg, [x, N, 1, 1]), { instanceOf: DisposedError })
})

test('launch arguments are checked against the declared signature', (t) => {
  const { dev, axpb, scaleI64 } = setup()
  const s = dev.createStream()
  const x = dev.upload(randomF32(N, 50))
  t.throws(() => s.launch(axpb, cfg, [x, N, 1]), { instanceOf: ArgumentError, message: /4 arguments/ })
  t.throws(() => s.launch(axpb, cfg, [N, N, 1, 1]), { instanceOf: ArgumentError, message: /args\[0\]/ })
  t.throws(() => s.launch(axpb, cfg, [x, 1.5, 1, 1]), { instanceOf: ArgumentError, message: /args\[1\]/ })
  t.throws(() => s.launch(axpb, cfg, [x, 2 ** 31, 1, 1]), { instanceOf: ArgumentError, message: /args\[1\]/ })
  t.throws(() => s.launch(axpb, cfg, [x, x, 1, 1]), { instanceOf: ArgumentError, message: /args\[1\]/ })
  t.throws(() => s.launch(axpb, { grid: 0, block: 256 }, [x, N, 1, 1]), { instanceOf: ArgumentError, message: /grid/ })
  t.throws(() => s.launch(axpb, { grid: 1, block: 4096 }, [x, N, 1, 1]), { instanceOf: CudaError })
  const v = BigInt64Array.from({ length: 256 }, (_, i) => BigInt(i) - 100n)
  const big = dev.upload(v)
  s.launch(scaleI64, { grid: 1, block: 256 }, [big, 3_000_000_000n, 256])
  s.synchronize()
  t.deepEqual(
    big.download(),
    v.map((e) => e * 3_000_000_000n),
  )
  t.throws(() => dev.compile('extern "C" __global__ void k() { undefined_thing; }', { name: 'broken' }), {
    instanceOf: CompileError,
    message: /broken/,
  })
  const e = t.throws(() => dev.compile('extern "C" __global__ void k() { undefined_thing; }'))
  t.regex(e.log, /undefined_thing/)
  t.throws(() => setup().mod.kernel('nope', []), { instanceOf: ArgumentError, message: /extern "C"/ })
})

test('1000 capture/dispose cycles return free device memory to within 2 MiB', (t) => {
  const { dev, axpb } = setup()
  const s = dev.createStream()
  const x = dev.upload(randomF32(N, 60))
  const warm = s.capture(() => s.launch(axpb, cfg, [x, N, 1, 0]))
  warm.launch(s)
  warm.dispose()
  s.synchronize()
  const free0 = dev.memoryInfo().free
  for (let i = 0; i < 1000; i++) {
    const g = s.capture(() => {
      for (let j = 0; j < 10; j++) s.launch(axpb, cfg, [x, N, 1, 0])
      const tmp = s.allocAsync('f32', N)
      s.copy(tmp, x)
      s.freeAsync(tmp)
    })
    g.launch(s)
    g.dispose()
  }
  s.synchronize()
  dev.trimGraphMemory()
  const free1 = dev.memoryInfo().free
  t.log(`free before ${free0}, after ${free1}: delta ${((free0 - free1) / MiB).toFixed(2)} MiB`)
  t.true(Math.abs(free0 - free1) <= 2 * MiB)
})

test('graph-memory attributes rise with a graph that allocates inside capture and fall after trim', (t) => {
  const { dev, addInto } = setup()
  const s = dev.createStream()
  dev.trimGraphMemory()
  const base = dev.graphMemory()
  const n = 16 * MiB // 64 MiB of f32 temporaries
  const x = dev.alloc('f32', n)
  s.fill(x, 1)
  const g = s.capture(() => {
    const tmp = s.allocAsync('f32', n)
    s.fill(tmp, 2)
    s.launch(addInto, { grid: n / 256, block: 256 }, [x, tmp, n])
    s.freeAsync(tmp)
  })
  t.throws(() => s.freeAsync(x), { instanceOf: ArgumentError })
  g.launch(s)
  s.synchronize()
  const up = dev.graphMemory()
  t.log(`reserved ${base.reservedCurrent} -> ${up.reservedCurrent}, used ${base.usedCurrent} -> ${up.usedCurrent}; graph says ${JSON.stringify(g.memory())}`)
  t.true(up.reservedCurrent >= base.reservedCurrent + 4 * n)
  t.true(up.usedCurrent >= base.usedCurrent + 4 * n)
  t.true(g.memory().graphReservedDelta >= 4 * n)
  t.true(
    x
      .download()
      .subarray(0, 1000)
      .every((v) => v === 3),
  )
  g.dispose()
  dev.trimGraphMemory()
  const down = dev.graphMemory()
  t.true(down.reservedCurrent <= base.reservedCurrent)
  t.true(down.usedCurrent <= base.usedCurrent)
  const unmeasured = s.capture(() => s.fill(x, 1), { measureMemory: false })
  t.is(unmeasured.memory(), undefined)
  unmeasured.dispose()
  // an allocation not freed inside its capture is refused, and the stream stays usable
  t.throws(
    () =>
      s.capture(() => {
        s.allocAsync('f32', 1024)
      }),
    { instanceOf: CaptureError, message: /not freed/ },
  )
  s.fill(x, 0)
  s.synchronize()
})

test('programmatic dependent launch: a chain of kernels that wait on griddepcontrol runs eagerly and captured, to the same bits as a plain chain', (t) => {
  const { dev } = setup()
  const [major] = dev.computeCapability
  if (major < 9) {
    t.log(`compute capability ${major}.x: programmatic dependent launch needs 9.0`)
    t.pass()
    return
  }
  const mod = dev.compile(
    `extern "C" __global__ void axpb_pdl(float* x, int n, float a, float b) {
      asm volatile("griddepcontrol.wait;" ::: "memory");
      int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) x[i] = __fadd_rn(__fmul_rn(x[i], a), b);
      asm volatile("griddepcontrol.launch_dependents;");
    }`,
    { name: 'pdl' },
  )
  const k = mod.kernel('axpb_pdl', ['ptr', 'i32', 'f32', 'f32'])
  const s = dev.createStream()
  const host = randomF32(N, 77)
  const ref = axpbRef(host, 100, 0.75, 0.25)
  const chain = (x, pdl) => {
    for (let i = 0; i < 100; i++) s.launch(k, { ...cfg, programmaticDependentLaunch: pdl }, [x, N, 0.75, 0.25])
  }
  const eager = dev.upload(host)
  chain(eager, true)
  s.synchronize()
  t.deepEqual(eager.download(), ref, 'eager chain with PDL equals the CPU reference bit for bit')
  const times = {}
  for (const pdl of [false, true]) {
    const x = dev.upload(host)
    const g = s.capture(() => chain(x, pdl))
    g.launch(s)
    s.synchronize()
    t.deepEqual(x.download(), ref, `graph ${pdl ? 'with' : 'without'} PDL equals the CPU reference bit for bit`)
    const start = dev.createEvent()
    const end = dev.createEvent()
    const samples = []
    for (let r = 0; r < 60; r++) {
      start.record(s)
      g.launch(s)
      end.record(s)
      end.synchronize()
      if (r >= 10) samples.push(end.elapsedSince(start) * 1000)
    }
    samples.sort((a, b) => a - b)
    times[pdl ? 'pdl' : 'plain'] = samples[samples.length >> 1]
    g.dispose()
  }
  t.log(`100-kernel chain replay, median of 50 (device time): plain ${times.plain.toFixed(1)} µs, with PDL ${times.pdl.toFixed(1)} µs`)
})

// A grid barrier: the counter's top bit flips once every block has arrived (block 0 adds 2^31 - (blocks - 1),
// the others 1), so one counter serves any number of barriers and launches.
const GRID_BARRIER_KERNEL = `
__device__ void grid_barrier(unsigned* count) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned add = blockIdx.x == 0 ? 0x80000000u - (gridDim.x - 1) : 1u;
    __threadfence();
    const unsigned old = atomicAdd(count, add);
    unsigned now;
    do asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(now) : "l"(count) : "memory");
    while (((old ^ now) & 0x80000000u) == 0);
    __threadfence();
  }
  __syncthreads();
}
// Each round every block writes its value, then (after a barrier) sums every block's, in block order, with
// plain loads that may hit lines its multiprocessor cached the round before.
extern "C" __global__ void rounds(float* x, float* y, unsigned* count, int n) {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  for (int r = 0; r < n; r++) {
    if (threadIdx.x == 0) x[blockIdx.x] = (float)(3 * blockIdx.x + r);
    grid_barrier(count);
    if (threadIdx.x == 0) {
      float s = 0.f;
      for (int b = 0; b < gridDim.x; b++) s += x[b];
      y[r * gridDim.x + blockIdx.x] = s;
    }
    grid_barrier(count);
  }
}`

test('a cooperative launch keeps every block resident: a grid barrier holds eagerly and in graph replays, with PDL too; a grid past the device is a CudaError', (t) => {
  const { dev } = setup()
  const [major] = dev.computeCapability
  const pdl = major >= 9
  const mod = dev.compile(GRID_BARRIER_KERNEL, { name: 'grid-barrier' })
  const k = mod.kernel('rounds', ['ptr', 'ptr', 'ptr', 'i32'])
  const s = dev.createStream()
  // Two blocks of 256 threads a multiprocessor fit anywhere; the counter is zero once, then kept.
  const G = 2 * dev.multiprocessors
  const R = 40
  const x = dev.alloc('f32', G)
  const y = dev.alloc('f32', R * G)
  const count = dev.upload(Uint32Array.of(0), 'u32')
  const expected = Float32Array.from({ length: R * G }, (_, i) => (3 * G * (G - 1)) / 2 + Math.floor(i / G) * G)
  const run = () => s.launch(k, { grid: G, block: 256, cooperative: true, programmaticDependentLaunch: pdl }, [x, y, count, R])
  s.fill(y, -1)
  run()
  s.synchronize()
  t.deepEqual(y.download(), expected, 'eager: every block saw every block of its round')
  const g = s.capture(() => {
    run()
    run()
  })
  for (let i = 0; i < 5; i++) {
    s.fill(y, -1)
    g.launch(s)
    s.synchronize()
    t.deepEqual(y.download(), expected, `replay ${i}: every block saw every block of its round`)
  }
  g.dispose()
  t.is(count.download()[0], 0, `the counter is back at zero after ${2 * R * 11} barriers`)
  const tooMany = dev.multiprocessors * 64
  t.throws(() => s.launch(k, { grid: tooMany, block: 256, cooperative: true }, [x, y, count, 0]), { instanceOf: CudaError, message: /COOPERATIVE/ })
  s.fill(y, -1)
  run()
  s.synchronize()
  t.deepEqual(y.download(), expected, 'the stream works after the refused launch')
  for (const b of [x, y, count]) b.dispose()
})

test('a launch past 48 KiB of dynamic shared memory opts its kernel in, up to the device limit; past the limit is a CudaError and the kernel still runs', (t) => {
  const { dev } = setup()
  const max = dev.maxSharedMemoryPerBlock
  t.true(Number.isInteger(max) && max >= 48 << 10, `maxSharedMemoryPerBlock ${max}`)
  const mod = dev.compile(
    `extern "C" __global__ void reverse_in_shared(float* x, int n) {
      extern __shared__ float s[];
      for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = x[i];
      __syncthreads();
      for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = s[n - 1 - i];
    }`,
    { name: 'shared' },
  )
  const k = mod.kernel('reverse_in_shared', ['ptr', 'i32'])
  const s = dev.createStream()
  const run = (n) => {
    const host = randomF32(n, n)
    const x = dev.upload(host)
    s.launch(k, { grid: 1, block: 256, sharedMemBytes: n * 4 }, [x, n])
    s.synchronize()
    t.deepEqual(x.download(), host.slice().reverse(), `${n * 4} bytes of shared memory`)
    x.dispose()
  }
  run(1024)
  run(Math.floor(max / 4))
  const x = dev.alloc('f32', 16)
  t.throws(() => s.launch(k, { grid: 1, block: 256, sharedMemBytes: max + 1024 }, [x, 16]), { instanceOf: CudaError })
  run(2048)
  t.log(`device limit ${max} bytes per block`)
})

test("NVRTC's output is cached on disk: the same compile loads from the cache and runs; another option, a damaged entry or 'off' compiles anew", (t) => {
  const { dev } = setup()
  const dir = mkdtempSync(join(tmpdir(), 'cudagraph-kcache-'))
  const before = process.env.CUDAGRAPH_KERNEL_CACHE
  process.env.CUDAGRAPH_KERNEL_CACHE = dir
  t.teardown(() => {
    if (before === undefined) delete process.env.CUDAGRAPH_KERNEL_CACHE
    else process.env.CUDAGRAPH_KERNEL_CACHE = before
    rmSync(dir, { recursive: true, force: true })
  })
  const s = dev.createStream()
  // A source no other run compiled (the nonce), so the first compile cannot hit.
  const source = `// ${process.pid} ${Date.now()}
    extern "C" __global__ void scale_by(float* x, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] *= SCALE; }`
  const compile = (scale) => {
    const t0 = performance.now()
    const mod = dev.compile(source, { name: 'cached', options: [`-DSCALE=${scale}.f`] })
    const ms = performance.now() - t0
    const host = randomF32(1000, scale)
    const x = dev.upload(host)
    s.launch(mod.kernel('scale_by', ['ptr', 'i32']), { grid: 4, block: 256 }, [x, 1000])
    s.synchronize()
    t.deepEqual(
      x.download(),
      host.map((v) => Math.fround(v * scale)),
      `scale ${scale} (${mod.cached ? 'cached' : 'compiled'})`,
    )
    x.dispose()
    return { cached: mod.cached, ms }
  }
  const first = compile(3)
  t.false(first.cached)
  const files = readdirSync(dir)
  t.is(files.length, 1, `one entry: ${files}`)
  const second = compile(3)
  t.true(second.cached)
  t.false(compile(5).cached, 'another option is another key')
  // A damaged image under the right key: the driver refuses it, so it is compiled again and rewritten.
  const path = join(dir, files[0])
  const bytes = readFileSync(path)
  // Past the magic, the key and the log (each length-prefixed): the image's first bytes, its ELF header.
  let at = 8
  for (let i = 0; i < 2; i++) at += 8 + Number(bytes.readBigUInt64LE(at))
  bytes.fill(0xff, at + 8, at + 8 + 16)
  writeFileSync(path, bytes)
  t.false(compile(3).cached, 'a damaged entry')
  t.true(compile(3).cached, 'rewritten')
  t.false(dev.compile(source, { name: 'cached', options: ['-DSCALE=3.f'], cache: false }).cached, 'cache: false')
  process.env.CUDAGRAPH_KERNEL_CACHE = 'off'
  t.false(compile(3).cached, 'off')
  // The decoder's module, compiled and then from the cache.
  process.env.CUDAGRAPH_KERNEL_CACHE = dir
  const decoder = readFileSync(DECODER_KERNELS_PATH, 'utf8')
  const time = () => {
    const t0 = performance.now()
    const m = dev.compile(decoder, { name: 'decoder-f16', options: decoderCompileOptions('f16') })
    return { cached: m.cached, ms: performance.now() - t0 }
  }
  const a = time()
  const b = time()
  t.deepEqual([a.cached, b.cached], [false, true])
  t.log(
    `a small module: ${first.ms.toFixed(1)} ms compiled, ${second.ms.toFixed(1)} ms from the cache; the decoder's: ${a.ms.toFixed(0)} ms, ${b.ms.toFixed(1)} ms`,
  )
})
