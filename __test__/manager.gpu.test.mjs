// The graph manager on a real device: graph vs eager bit for bit over the ladder and padded sizes,
// piecewise, the ladder-memory bound, eviction under a budget, 10,000 capture/evict cycles, the
// input-address check and out-of-memory fallback. Skips with a printed reason without a driver.
import { ArgumentError, Device, GraphManager, InputAddressError } from '../dist/index.js'
import { gpuTest, randomF32, rng } from './helpers.mjs'

const test = gpuTest()
const MiB = 2 ** 20
const H = 128
const VOCAB = 1000
const MAX_T = 600

// Row-independent kernels (each output row depends on its own input row only, with a fixed summation
// order), plus a causal running mean standing in for attention: real rows never see padding rows.
const SOURCE = `
extern "C" __global__ void embed(const int* tok, const int* pos, const float* table, float* h, int n, int H) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n * H) return;
  int t = i / H, j = i % H;
  h[i] = table[tok[t] * H + j] + 0.001f * (float)pos[t];
}
extern "C" __global__ void dense_tanh(const float* x, const float* W, float* y, int n, int H) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n * H) return;
  int t = i / H, j = i % H;
  float acc = 0.f;
  for (int k = 0; k < H; k++) acc = fmaf(x[t * H + k], W[k * H + j], acc);
  y[i] = tanhf(acc);
}
extern "C" __global__ void tanh_inplace(float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = tanhf(y[i]);
}
extern "C" __global__ void causal_mean(const float* x, float* y, int n, int H) {
  int j = blockIdx.x * blockDim.x + threadIdx.x; if (j >= H) return;
  float s = 0.f;
  for (int t = 0; t < n; t++) { s += x[t * H + j]; y[t * H + j] = s / (float)(t + 1); }
}
extern "C" __global__ void argmax_rows(const float* y, int* out, int n, int H) {
  int t = blockIdx.x * blockDim.x + threadIdx.x; if (t >= n) return;
  int best = 0; float v = y[t * H];
  for (int j = 1; j < H; j++) if (y[t * H + j] > v) { v = y[t * H + j]; best = j; }
  out[t] = best;
}
extern "C" __global__ void touch(float* w, long long n) {
  long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; if (i < n) w[i] = 1.0f;
}
extern "C" __global__ void bump(int* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] += 1;
}
`

let ctx
function setup() {
  if (ctx) return ctx
  const dev = Device.open(0)
  const mod = dev.compile(SOURCE, { name: 'manager_test' })
  const k = {
    embed: mod.kernel('embed', ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32']),
    dense: mod.kernel('dense_tanh', ['ptr', 'ptr', 'ptr', 'i32', 'i32']),
    tanh: mod.kernel('tanh_inplace', ['ptr', 'i32']),
    mean: mod.kernel('causal_mean', ['ptr', 'ptr', 'i32', 'i32']),
    argmax: mod.kernel('argmax_rows', ['ptr', 'ptr', 'i32', 'i32']),
    touch: mod.kernel('touch', ['ptr', 'i64']),
    bump: mod.kernel('bump', ['ptr', 'i32']),
  }
  const table = dev.upload(randomF32(VOCAB * H, 11))
  const W = dev.upload(randomF32(H * H, 12, -0.15, 0.15))
  const stream = dev.createStream()
  stream.prepareBlas()
  ctx = { dev, k, table, W, stream }
  return ctx
}

const grid = (n) => ({ grid: Math.max(1, Math.ceil(n / 128)), block: 128 })

/** The toy decoder step: embed, dense (own kernel or cuBLAS), optional causal mean, argmax. */
function toySpec({ gemm = false, attention = false, maxT = MAX_T } = {}) {
  const { k, table, W } = setup()
  return {
    inputs: { tokens: { dtype: 'i32', rows: maxT, pad: 0 }, positions: ['i32', maxT] },
    outputs: { hidden: ['f32', maxT, H], next: { dtype: 'i32', rows: maxT, readBack: true } },
    forward(c, b) {
      const s = c.stream
      const n = b.numTokens
      const h = c.scratch('f32', n * H)
      s.launch(k.embed, grid(n * H), [c.inputs.tokens, c.inputs.positions, table, h, n, H])
      const y = attention ? c.scratch('f32', n * H) : c.outputs.hidden
      if (gemm) {
        s.gemm({ a: h, b: W, c: y, m: n, n: H, k: H })
        s.launch(k.tanh, grid(n * H), [y, n * H])
      } else s.launch(k.dense, grid(n * H), [h, W, y, n, H])
      if (attention) s.launch(k.mean, grid(H), [y, c.outputs.hidden, n, H])
      s.launch(k.argmax, grid(n), [c.outputs.hidden, c.outputs.next, n, H])
    },
  }
}

/** The same step in pieces: [embed + dense] graphable, [causal mean over the real tokens] eager, [argmax] graphable. */
function piecewiseSpec(maxT = MAX_T) {
  const { dev, k, table, W } = setup()
  const mid = dev.alloc('f32', maxT * H)
  return {
    inputs: { tokens: ['i32', maxT], positions: ['i32', maxT] },
    outputs: { hidden: ['f32', maxT, H], next: { dtype: 'i32', rows: maxT, readBack: true } },
    pieces: [
      {
        name: 'embed+dense',
        graphable: true,
        run(c, b) {
          const h = c.scratch('f32', b.numTokens * H)
          c.stream.launch(k.embed, grid(b.numTokens * H), [c.inputs.tokens, c.inputs.positions, table, h, b.numTokens, H])
          c.stream.launch(k.dense, grid(b.numTokens * H), [h, W, mid, b.numTokens, H])
        },
      },
      { name: 'attention', graphable: false, run: (c, b) => c.stream.launch(k.mean, grid(H), [mid, c.outputs.hidden, b.realTokens, H]) },
      { name: 'argmax', graphable: true, run: (c, b) => c.stream.launch(k.argmax, grid(b.numTokens), [c.outputs.hidden, c.outputs.next, b.numTokens, H]) },
    ],
  }
}

function batchInputs(n, seed) {
  const r = rng(seed)
  return {
    tokens: Int32Array.from({ length: n }, () => Math.floor(r() * VOCAB)),
    positions: Int32Array.from({ length: n }, (_, i) => i + Math.floor(r() * 50)),
  }
}

/** Index of the first differing bit pattern, -1 when identical. */
function firstDiff(a, b) {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length)
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length)
  if (x.length !== y.length) return -2
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i
  return -1
}

/** float64 CPU reference of the toy step without attention (dense = tanh(embed W)). */
function toyRef({ tokens, positions }, n, table, W) {
  const hidden = new Float64Array(n * H)
  for (let t = 0; t < n; t++) {
    const h = new Float64Array(H)
    for (let j = 0; j < H; j++) h[j] = table[tokens[t] * H + j] + 0.001 * positions[t]
    for (let j = 0; j < H; j++) {
      let acc = 0
      for (let q = 0; q < H; q++) acc += h[q] * W[q * H + j]
      hidden[t * H + j] = Math.tanh(acc)
    }
  }
  return hidden
}

/**
 * Runs both steps on the same inputs; `next` is a read-back output, so each run's host copy must already
 * equal what a download of the device buffer gives (FULL graphs read back in the replay's native call,
 * eager and piecewise runs after their last launch). Returns `readBackOk` false on any difference.
 */
function runBoth(graphStep, eagerStep, n, opts, seed) {
  const inp = batchInputs(n, seed)
  const g = graphStep.run(inp, { numTokens: n, ...opts })
  const gBack = graphStep.hostOutput('next').slice(0, n)
  const gh = g.hidden.download()
  const gn = g.next.download()
  const e = eagerStep.run(inp, { numTokens: n, ...opts })
  const eBack = eagerStep.hostOutput('next').slice(0, n)
  const en = e.next.download()
  const readBackOk = firstDiff(gBack, gn) === -1 && firstDiff(eBack, en) === -1
  return { inp, gh, gn, eh: e.hidden.download(), en, readBackOk }
}

test('graph output equals eager bit for bit over the ladder and padded sizes, and the CPU reference', async (t) => {
  const { dev, stream, table, W } = setup()
  for (const gemm of [false, true]) {
    const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', maxCaptureSize: 64, maxNumSeqs: 64 } })
    const eager = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
    const step = mgr.wrap(toySpec({ gemm }))
    const ref = eager.wrap(toySpec({ gemm }))
    const w = await mgr.warmup(step)
    const sizes = mgr.config.captureSizes
    t.is(w.captured, step.dispatcher.captureTargets().length)
    t.is(w.failed, 0)
    t.is(t.throws(() => step.hostOutput('hidden'), { instanceOf: ArgumentError }).argument, 'name', 'hidden is not read back')
    let checked = 0
    for (const s of sizes) {
      for (const n of new Set([s, Math.max(1, s - 1), Math.max(1, s - 5)])) {
        const r = runBoth(step, ref, n, { uniformDecode: true }, 1000 + n)
        t.is(firstDiff(r.gh, r.eh), -1, `hidden differs at n=${n} (gemm ${gemm})`)
        t.is(firstDiff(r.gn, r.en), -1, `next differs at n=${n}`)
        t.true(r.readBackOk, `read-back next differs from the device's at n=${n}`)
        t.is(r.gh.length, n * H)
        checked++
      }
    }
    const st = mgr.stats()
    t.is(st.replays, checked, 'every size in 1..64 replayed a graph')
    t.is(st.eagerRuns, 0)
    t.true(st.paddingTokens > 0)
    t.true(st.replayUs.p50 > 0 && st.replayUs.p99 >= st.replayUs.p50)
    // Against float64 on the CPU, at a padded size, with distinct non-zero data.
    const n = 37
    const r = runBoth(step, ref, n, {}, 77)
    const want = toyRef(r.inp, n, table.download(), W.download())
    let maxErr = 0
    for (let i = 0; i < want.length; i++) maxErr = Math.max(maxErr, Math.abs(r.gh[i] - want[i]))
    t.true(maxErr < 2e-4, `max |graph - CPU| ${maxErr}`)
    t.true(new Set(r.gn).size > 3, 'argmax is not constant')
    t.log(
      `gemm=${gemm}: ${w.captured} graphs in ${(w.seconds * 1000).toFixed(0)} ms, ${checked} sizes equal bit for bit, max err vs CPU ${maxErr.toExponential(2)}, replay p50 ${st.replayUs.p50.toFixed(1)} µs p99 ${st.replayUs.p99.toFixed(1)} µs`,
    )
    mgr.dispose()
    eager.dispose()
  }
})

test('piecewise equals eager; FULL_AND_PIECEWISE uses full graphs for uniform decode and pieces for mixed batches', async (t) => {
  const { dev, stream } = setup()
  for (const mode of ['PIECEWISE', 'FULL_AND_PIECEWISE']) {
    const mgr = new GraphManager(dev, { stream, config: { mode, captureSizes: [8, 16, 32, 64], maxNumSeqs: 64 } })
    const eager = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
    const step = mgr.wrap(piecewiseSpec())
    const ref = eager.wrap(piecewiseSpec())
    const w = await mgr.warmup(step)
    const modes = new Set(mgr.memory().entries.map((e) => e.mode))
    t.deepEqual([...modes].sort(), mode === 'PIECEWISE' ? ['PIECEWISE'] : ['FULL', 'PIECEWISE'])
    for (const n of [3, 8, 13, 40, 64, 100]) {
      for (const uniformDecode of [false, true]) {
        const r = runBoth(step, ref, n, { uniformDecode }, 500 + n)
        t.is(firstDiff(r.gh, r.eh), -1, `${mode}: hidden differs at n=${n} uniform=${uniformDecode}`)
        t.is(firstDiff(r.gn, r.en), -1, `${mode}: next differs at n=${n}`)
        t.true(r.readBackOk, `${mode}: read-back next differs from the device's at n=${n}`)
      }
    }
    const st = mgr.stats()
    t.is(st.replays, 10, '5 sizes x 2 within the ladder replayed')
    t.is(st.eagerRuns, 2, 'n=100 is above the ladder: eager')
    t.log(`${mode}: ${w.captured} entries (${[...modes].join(', ')}), graph == eager for 6 sizes x 2 batch kinds`)
    mgr.dispose()
    eager.dispose()
  }
})

/** A step whose graphs allocate `width` floats per token from the pool (none for 0) and run `kernels` launches. */
function scratchSpec(width, kernels = 1) {
  const { k } = setup()
  return {
    inputs: { x: ['i32', 512] },
    outputs: { y: ['i32', 512] },
    forward(c, b) {
      const n = b.numTokens
      if (width > 0) {
        const w = c.scratch('f32', n * width)
        c.stream.launch(k.touch, grid(n * width), [w, n * width])
      }
      c.stream.copy(c.outputs.y.view(0, n), c.inputs.x.view(0, n))
      for (let i = 0; i < kernels; i++) c.stream.launch(k.bump, grid(n), [c.outputs.y, n])
    },
  }
}

test('the whole ladder adds at most 1.2x the device memory of its largest graph captured alone', async (t) => {
  const { dev, stream } = setup()
  // 64 MiB of scratch at 512 tokens, a few kernels: the pool dominates, as in a real model step.
  const spec = () => scratchSpec(32768, 4)
  dev.synchronize()
  dev.trimGraphMemory()
  const alone = new GraphManager(dev, { stream, config: { mode: 'FULL', captureSizes: [512] } })
  const a = await alone.warmup(alone.wrap(spec()))
  alone.dispose()
  dev.trimGraphMemory()
  const ladder = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: 256 } })
  const step = ladder.wrap(spec())
  const l = await ladder.warmup(step)
  t.is(l.captured, ladder.config.captureSizes.length)
  t.true(a.bytes >= 48 * MiB, `the largest graph alone added ${a.bytes / MiB} MiB`)
  t.true(l.bytes <= 1.2 * a.bytes, `ladder ${l.bytes / MiB} MiB vs alone ${a.bytes / MiB} MiB`)
  const out = step.run({ x: Int32Array.from({ length: 300 }, (_, i) => i * 3) }, { numTokens: 300 }).y.download()
  t.deepEqual(Array.from(out.slice(0, 4)), [4, 7, 10, 13])
  t.log(
    `largest (512 tokens, 64 MiB scratch) alone: ${(a.bytes / MiB).toFixed(1)} MiB; ladder of ${l.captured}: ${(l.bytes / MiB).toFixed(1)} MiB (${(l.bytes / a.bytes).toFixed(3)}x) in ${l.seconds.toFixed(2)} s`,
  )
  ladder.dispose()
  dev.trimGraphMemory()
})

test("eviction under a budget frees the pool memory it says; the accounting equals the driver's pool", (t) => {
  const { dev, stream } = setup()
  dev.synchronize()
  dev.trimGraphMemory()
  const pool = () => dev.graphMemory().reservedCurrent
  const pool0 = pool()
  const budget = 192 * MiB
  const mgr = new GraphManager(dev, {
    stream,
    captureOnMiss: true,
    config: { mode: 'FULL', captureSizes: [64, 128, 256, 512], maxGraphs: 2, maxMemoryBytes: budget, numWarmups: 0 },
  })
  // 64 Ki floats of scratch per token: 16, 32, 64 and 128 MiB for the four sizes.
  const step = mgr.wrap(scratchSpec(65536))
  const trace = []
  for (const n of [512, 64, 128, 256, 64, 512, 128, 64]) {
    const y = step.run({ x: Int32Array.from({ length: n }, (_, i) => 2 * i) }, { numTokens: n }).y.download()
    t.is(y[n - 1], 2 * (n - 1) + 1)
    const m = mgr.memory()
    const accounted = m.entries.reduce((s, e) => s + e.poolBytes, 0)
    t.is(accounted, pool() - pool0, `after ${n}: entries account ${accounted / MiB} MiB of pool, the driver says ${(pool() - pool0) / MiB}`)
    t.true(m.graphBytes <= budget)
    t.true(m.entries.length <= 2)
    trace.push(`${n}: pool ${(pool() - pool0) / MiB} MiB [${m.entries.map((e) => `${e.numTokens}:${e.poolBytes / MiB}`).join(' ')}]`)
  }
  const st = mgr.stats()
  t.true(st.evictions >= 4, `evictions ${st.evictions}`)
  t.true(st.freedBytes >= 64 * MiB, `evicting the 512-token graph gave back ${st.freedBytes / MiB} MiB of pool`)
  const before = pool() - pool0
  mgr.evictAll()
  t.is(pool(), pool0, 'evictAll trims the pool back to where it was')
  t.is(mgr.stats().freedBytes - st.freedBytes, before, 'the last evictions freed what they accounted for')
  t.log(
    `maxGraphs 2, budget 192 MiB: ${st.captures} captures, ${st.evictions} evictions, pool freed ${(st.freedBytes / MiB).toFixed(0)} MiB; ${trace.join('; ')}`,
  )
  mgr.dispose()
})

test('10,000 capture/evict cycles end within 2 MiB of the starting free memory', (t) => {
  const { dev, stream } = setup()
  dev.synchronize()
  dev.trimGraphMemory()
  const mgr = new GraphManager(dev, { stream, captureOnMiss: true, config: { mode: 'FULL', captureSizes: [8, 16], maxGraphs: 1, numWarmups: 0 } })
  const step = mgr.wrap(scratchSpec(256, 2))
  dev.synchronize()
  const free0 = dev.memoryInfo().free
  const x = Int32Array.from({ length: 16 }, (_, i) => 5 * i)
  const t0 = performance.now()
  for (let i = 0; i < 10_000; i++) step.run({ x }, { numTokens: i % 2 ? 16 : 8 })
  const y = step.run({ x }, { numTokens: 16 }).y.download()
  t.deepEqual(Array.from(y.slice(0, 3)), [2, 7, 12])
  const st = mgr.stats()
  t.is(st.captures, 10_000)
  t.is(st.evictions, 9_999)
  mgr.evictAll()
  const delta = free0 - dev.memoryInfo().free
  t.true(Math.abs(delta) <= 2 * MiB, `free memory moved by ${delta / MiB} MiB`)
  t.log(`10,000 captures + evictions in ${((performance.now() - t0) / 1000).toFixed(1)} s; free memory delta ${(delta / MiB).toFixed(2)} MiB`)
  mgr.dispose()
})

test('the input-address check fires after a rebind; recapture updates the executables in place', async (t) => {
  const { dev, stream } = setup()
  const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', captureSizes: [8, 16] } })
  const eager = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
  const step = mgr.wrap(toySpec())
  const ref = eager.wrap(toySpec())
  await mgr.warmup(step)
  const before = runBoth(step, ref, 12, {}, 5)
  t.is(firstDiff(before.gh, before.eh), -1)
  const fresh = dev.alloc('i32', MAX_T)
  step.bindInput('tokens', fresh)
  const err = t.throws(() => step.run(batchInputs(12, 6), { numTokens: 12 }), { instanceOf: InputAddressError })
  t.is(err.input, 'tokens')
  t.is(err.current, fresh.address)
  t.not(err.captured, fresh.address)
  const r = mgr.recapture(step)
  const held = mgr.memory().entries.length
  t.true(held >= 2)
  t.deepEqual(r, { updated: held, reinstantiated: 0 })
  t.is(mgr.stats().updates, held)
  const after = runBoth(step, ref, 12, {}, 7)
  t.is(firstDiff(after.gh, after.eh), -1, 'after recapture the graph reads the new buffer')
  t.deepEqual(Array.from(fresh.download().slice(0, 12)), Array.from(after.inp.tokens))
  t.log(`InputAddressError: ${err.message}`)
  mgr.dispose()
  eager.dispose()
  fresh.dispose()
})

test('out of memory during capture evicts, retries once, then runs eagerly; a budget too small falls back too', (t) => {
  const { dev, stream } = setup()
  dev.synchronize()
  dev.trimGraphMemory()
  // 1. A budget smaller than the graph: eager with a logged reason, nothing held.
  const logs = []
  const small = new GraphManager(dev, {
    stream,
    captureOnMiss: true,
    log: (m) => logs.push(m),
    config: { mode: 'FULL', captureSizes: [512], maxMemoryBytes: 16 * MiB },
  })
  const s1 = small.wrap(scratchSpec(16384))
  const x = Int32Array.from({ length: 512 }, (_, i) => i)
  dev.synchronize()
  const free0 = dev.memoryInfo().free
  t.deepEqual(Array.from(s1.run({ x }, { numTokens: 300 }).y.download().slice(0, 3)), [1, 2, 3])
  t.deepEqual(Array.from(s1.run({ x }, { numTokens: 300 }).y.download().slice(0, 3)), [1, 2, 3])
  let st = small.stats()
  t.is(st.captureFailures, 1, 'one failed capture, then the size stays eager')
  t.is(st.eagerRuns, 2)
  t.is(st.graphs, 0)
  t.is(logs.length, 1)
  t.regex(logs[0], /more than the whole budget/)
  t.true(Math.abs(free0 - dev.memoryInfo().free) <= 2 * MiB, 'nothing half-captured holds memory')
  small.dispose()

  // 2. Real out-of-memory: fill the device so the 512-token graph cannot get its 1 GiB of scratch.
  logs.length = 0
  const mem = () => `free ${(dev.memoryInfo().free / MiB).toFixed(0)} MiB, pool ${(dev.graphMemory().reservedCurrent / MiB).toFixed(0)} MiB`
  const mgr = new GraphManager(dev, {
    stream,
    captureOnMiss: true,
    log: (m) => logs.push(`${m} (${mem()})`),
    config: { mode: 'FULL', captureSizes: [512], numWarmups: 0 },
  })
  const step = mgr.wrap(scratchSpec(524288))
  const ballast = []
  try {
    for (let f = dev.memoryInfo().free; f > 1400 * MiB; f = dev.memoryInfo().free) ballast.push(dev.alloc('u8', Math.min(1024 * MiB, f - 1300 * MiB)))
    for (let f = dev.memoryInfo().free; f > 640 * MiB; f = dev.memoryInfo().free) ballast.push(dev.alloc('u8', 16 * MiB))
    const freeBefore = dev.memoryInfo().free
    // 100 real tokens need 200 MiB eagerly; the graph (padded to 512) needs 1 GiB.
    let y
    try {
      y = step.run({ x }, { numTokens: 100 }).y.download()
    } catch (e) {
      t.log(`before: free ${(freeBefore / MiB).toFixed(0)} MiB; at the error: ${mem()}; logged: ${logs.join(' | ')}`)
      throw e
    }
    t.deepEqual(Array.from(y.slice(0, 3)), [1, 2, 3])
    st = mgr.stats()
    t.is(st.captureFailures, 1)
    t.is(st.eagerRuns, 1)
    t.is(st.graphs, 0)
    t.is(logs.length, 2, logs.join('\n'))
    t.regex(logs[0], /out of memory capturing .* retrying once/)
    t.regex(logs[1], /out of memory again/)
    t.false(stream.capturing)
    t.true(Math.abs(freeBefore - dev.memoryInfo().free) <= 2 * MiB, 'the failed captures left nothing behind')
    t.log(`free with ballast ${(freeBefore / MiB).toFixed(0)} MiB; logged: ${logs.join(' | ')}`)
  } finally {
    for (const b of ballast) b.dispose()
    mgr.dispose()
  }
})

test("a step's inputs go in one copy, and an input not passed keeps what was written into its buffer", async (t) => {
  const { dev, stream } = setup()
  const mod = dev.compile(
    `extern "C" __global__ void add3(const int* a, const int* b, const int* c, int* y, int n) {
      int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = a[i] + 1000 * b[i] + 1000000 * c[i];
    }`,
    { name: 'packed_inputs' },
  )
  const add3 = mod.kernel('add3', ['ptr', 'ptr', 'ptr', 'ptr', 'i32'])
  const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: 16, maxCaptureSize: 16 } })
  t.teardown(() => mgr.dispose())
  const step = mgr.wrap({
    name: 'add3',
    inputs: { a: ['i32', 16], b: ['i32', 16], c: { dtype: 'i32', rows: 16, pad: 7 } },
    outputs: { y: { dtype: 'i32', rows: 16, readBack: true } },
    forward: (c, b) => c.stream.launch(add3, grid(b.numTokens), [c.inputs.a, c.inputs.b, c.inputs.c, c.outputs.y, b.numTokens]),
  })
  await mgr.warmup(step)
  // One allocation, each input 256-byte aligned after the one before.
  const at = ['a', 'b', 'c'].map((n) => step.inputs[n].address)
  t.deepEqual([at[1] - at[0], at[2] - at[1]], [256, 256])
  const expect = (a, b, c) => Int32Array.from(a, (v, i) => v + 1000 * b[i] + 1000000 * c[i])
  const a = Int32Array.from({ length: 5 }, (_, i) => i + 1)
  const b = Int32Array.from({ length: 5 }, (_, i) => 10 + i)
  const c = Int32Array.from({ length: 5 }, (_, i) => 20 + i)
  step.run({ a, b, c }, { numTokens: 5 })
  t.deepEqual(step.hostOutput('y').slice(0, 5), expect(a, b, c))
  // b written straight into its static buffer and not passed: the copy of a and c must not span it.
  const b2 = Int32Array.from({ length: 16 }, (_, i) => 40 + i)
  step.inputs.b.upload(b2)
  const a2 = Int32Array.from({ length: 3 }, (_, i) => 100 + i)
  const c2 = Int32Array.from({ length: 3 }, (_, i) => 60 + i)
  step.run({ a: a2, c: c2 }, { numTokens: 3 })
  t.deepEqual(step.hostOutput('y').slice(0, 3), expect(a2, b2, c2))
  t.deepEqual(step.inputs.b.download(), b2, 'b is as written')
  // Padded to a captured size: c's pad rows take its pad value.
  step.run({ a: a2, b: b2.subarray(0, 3), c: c2 }, { numTokens: 3 })
  t.deepEqual(step.inputs.c.download().subarray(3, 4), Int32Array.of(7))
  // allocPacked on its own: a bad part names itself; disposing one buffer frees them all.
  t.throws(
    () =>
      dev.allocPacked([
        { dtype: 'f32', length: 4 },
        { dtype: 'f8', length: 4 },
      ]),
    { instanceOf: ArgumentError, message: /parts\[1\]\.dtype/ },
  )
  const parts = dev.allocPacked([
    { dtype: 'u8', length: 3 },
    { dtype: 'f16', length: 300 },
    { dtype: 'f32', length: 2 },
  ])
  t.deepEqual(
    parts.map((p) => p.address - parts[0].address),
    [0, 256, 1024],
  )
  parts[1].dispose()
  t.true(parts.every((p) => p.disposed))
})

test('timing events bracket the forward alone: graph, piecewise and eager runs, behind held work; a bad timing is refused and the step still runs', async (t) => {
  const { dev, stream } = setup()
  const mod = dev.compile(
    `__device__ unsigned long long now() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
    extern "C" __global__ void spin(long long ns) { const unsigned long long t0 = now(); while (now() - t0 < (unsigned long long)ns) {} }
    extern "C" __global__ void twice(const int* a, int* y, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] = 2 * a[i]; }`,
    { name: 'timed_step' },
  )
  const spin = mod.kernel('spin', ['i64'])
  const twice = mod.kernel('twice', ['ptr', 'ptr', 'i32'])
  const FORWARD_NS = 300_000
  // PIECEWISE: a graphed piece, then an eager one; FULL and NONE: both in one forward.
  const spec = (mode) => ({
    name: `timed_${mode}`,
    inputs: { a: ['i32', 16] },
    outputs: { y: { dtype: 'i32', rows: 16, readBack: true } },
    pieces: [
      { name: 'spin', graphable: true, run: (c) => c.stream.launch(spin, { grid: 1, block: 32 }, [FORWARD_NS]) },
      { name: 'twice', graphable: mode !== 'PIECEWISE', run: (c, b) => c.stream.launch(twice, grid(b.numTokens), [c.inputs.a, c.outputs.y, b.numTokens]) },
    ],
  })
  const timing = { start: dev.createEvent({ timing: true }), end: dev.createEvent({ timing: true }) }
  for (const mode of ['FULL', 'PIECEWISE', 'NONE']) {
    const mgr = new GraphManager(dev, { stream, config: { mode, maxNumSeqs: 16, maxCaptureSize: 16 } })
    const step = mgr.wrap(spec(mode))
    if (mode !== 'NONE') await mgr.warmup(step)
    const a = Int32Array.from({ length: 5 }, (_, i) => 3 * i + 1)
    // Work queued ahead (2 ms) and the host's time are outside the events: only the forward is between them.
    stream.launch(spin, { grid: 1, block: 32 }, [2_000_000])
    step.run({ a }, { numTokens: 5, timing })
    t.deepEqual(
      step.hostOutput('y').slice(0, 5),
      a.map((v) => 2 * v),
      `${mode}: read back with the events`,
    )
    const ms = timing.end.elapsedSince(timing.start)
    t.true(ms >= FORWARD_NS / 1e6 && ms < FORWARD_NS / 1e6 + 0.25, `${mode}: ${ms} ms between the events, the forward's 0.3 ms`)
    t.throws(() => step.run({ a }, { numTokens: 5, timing: { start: timing.start } }), { instanceOf: ArgumentError, message: /options\.timing/ })
    const b = Int32Array.of(7, 8)
    step.run({ a: b }, { numTokens: 2 })
    t.deepEqual(step.hostOutput('y').slice(0, 2), Int32Array.of(14, 16), `${mode}: runs after the refusal`)
    mgr.dispose()
  }
})

test('ready flag: a FULL replay returns once the kernels set it, while the graph still runs; unset, refused by the run, on eager and timed runs the step waits for the stream; a flag without a read-back output is refused', async (t) => {
  const { dev, stream } = setup()
  const mod = dev.compile(
    `__device__ unsigned long long now() { unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
    extern "C" __global__ void spin(long long ns) { const unsigned long long t0 = now(); while (now() - t0 < (unsigned long long)ns) {} }
    // One block: every thread's output stored, then (a block barrier, a system-scope fence) the flag.
    extern "C" __global__ void twice_ready(const int* a, int* y, int n, int* ready, int set) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = 2 * a[i];
      __syncthreads();
      if (threadIdx.x == 0 && set) { __threadfence_system(); *(volatile int*)ready = 1; }
    }`,
    { name: 'ready_step' },
  )
  const spin = mod.kernel('spin', ['i64'])
  const twice = mod.kernel('twice_ready', ['ptr', 'ptr', 'i32', 'ptr', 'i32'])
  const TAIL_NS = 60_000_000
  // The outputs and the flag, then 60 ms of work the host need not wait for.
  const spec = (set) => ({
    name: `ready_${set}`,
    inputs: { a: ['i32', 16] },
    outputs: { y: { dtype: 'i32', rows: 16, readBack: true } },
    readyFlag: true,
    forward(c, b) {
      t.truthy(c.readyFlag, 'the context has the flag')
      c.stream.launch(twice, { grid: 1, block: 32 }, [c.inputs.a, c.outputs.y, b.numTokens, c.readyFlag, set ? 1 : 0])
      c.stream.launch(spin, { grid: 1, block: 32 }, [TAIL_NS])
    },
  })
  const timed = (f) => {
    const t0 = performance.now()
    f()
    return performance.now() - t0
  }
  const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: 16, maxCaptureSize: 16 } })
  const early = mgr.wrap(spec(true))
  const late = mgr.wrap(spec(false))
  await mgr.warmup(early)
  await mgr.warmup(late)
  stream.synchronize()
  for (let k = 0; k < 3; k++) {
    const a = Int32Array.from({ length: 7 }, (_, i) => 5 * i + k + 1)
    const ms = timed(() => early.run({ a }, { numTokens: 7 }))
    t.deepEqual(
      early.hostOutput('y').slice(0, 7),
      a.map((v) => 2 * v),
      `run ${k}: the outputs are there when it returns`,
    )
    // The first run waits for nothing queued before it; each later one starts behind the last one's tail.
    t.true(ms < (k === 0 ? 30 : 90), `run ${k}: returned after ${ms.toFixed(1)} ms, before its 60 ms tail`)
    t.false(stream.query(), `run ${k}: the graph still runs`)
  }
  stream.synchronize()
  t.is(mgr.stats().replays, 3)
  // Unset by the kernels: the replay waits for the stream.
  const b = Int32Array.of(4, 9)
  const ms = timed(() => late.run({ a: b }, { numTokens: 2 }))
  t.true(ms >= TAIL_NS / 1e6, `unset: ${ms.toFixed(1)} ms, the whole tail`)
  t.true(stream.query())
  t.deepEqual(late.hostOutput('y').slice(0, 2), Int32Array.of(8, 18))
  // Set, but the run says its kernels do not set it: the whole step.
  const msOff = timed(() => early.run({ a: b }, { numTokens: 2, readyFlag: false }))
  t.true(msOff >= TAIL_NS / 1e6 && stream.query(), `readyFlag false: ${msOff.toFixed(1)} ms`)
  t.deepEqual(early.hostOutput('y').slice(0, 2), Int32Array.of(8, 18))
  // Set, but run with timing events (two calls, then a wait for the stream): the whole step.
  const timing = { start: dev.createEvent({ timing: true }), end: dev.createEvent({ timing: true }) }
  const msTimed = timed(() => early.run({ a: b }, { numTokens: 2, timing }))
  t.true(msTimed >= TAIL_NS / 1e6 && stream.query(), `timed: ${msTimed.toFixed(1)} ms`)
  // Eager: the same.
  const eagerMgr = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
  const eager = eagerMgr.wrap(spec(true))
  const msEager = timed(() => eager.run({ a: b }, { numTokens: 2 }))
  t.true(msEager >= TAIL_NS / 1e6 && stream.query(), `eager: ${msEager.toFixed(1)} ms`)
  t.deepEqual(eager.hostOutput('y').slice(0, 2), Int32Array.of(8, 18))
  for (const [readyFlag, outputs] of [
    [1, { y: { dtype: 'i32', rows: 16, readBack: true } }],
    [true, { y: ['i32', 16] }],
  ]) {
    const e = t.throws(() => eagerMgr.wrap({ inputs: { a: ['i32', 16] }, outputs, readyFlag, forward() {} }), { instanceOf: ArgumentError })
    t.is(e.argument, 'spec.readyFlag')
  }
  mgr.dispose()
  eagerMgr.dispose()
})

test('armed replays: a loop whose steps arm the next and feed back their outputs gets every output; the gate copies only the inputs a run gives; another size, a timed run, an eager run on the stream, a wait for the stream and disposal each ring the armed replay to run once as it is', async (t) => {
  const { dev, stream } = setup()
  const pdl = dev.computeCapability[0] >= 9
  const mod = dev.compile(
    `// Waits for the gate before reading an input (programmatic dependent launch), counts its runs.
    extern "C" __global__ void armed_step(const int* a, const int* bias, int* y, int n, int* ready, unsigned* runs) {
    #if __CUDA_ARCH__ >= 900
      asm volatile("griddepcontrol.wait;" ::: "memory");
    #endif
      for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = 2 * a[i] + bias[i];
      __syncthreads();
      if (threadIdx.x == 0) { atomicAdd(runs, 1u); __threadfence_system(); *(volatile int*)ready = 1; }
    }`,
    { name: 'armed_step' },
  )
  const kernel = mod.kernel('armed_step', ['ptr', 'ptr', 'ptr', 'i32', 'ptr', 'ptr'])
  const spec = {
    name: 'armed',
    inputs: { a: ['i32', 16], bias: ['i32', 16] },
    outputs: { y: { dtype: 'i32', rows: 16, readBack: true }, runs: { dtype: 'u32', rows: 16, per: 'request' } },
    readyFlag: true,
    armable: true,
    forward(c, b) {
      c.stream.launch(kernel, { grid: 1, block: 32, programmaticDependentLaunch: pdl }, [
        c.inputs.a,
        c.inputs.bias,
        c.outputs.y,
        b.numTokens,
        c.readyFlag,
        c.outputs.runs,
      ])
    },
  }
  const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: 16, maxCaptureSize: 16 } })
  const step = mgr.wrap(spec)
  await mgr.warmup(step)
  stream.synchronize()
  const runs = () => step.outputs.runs.download()[0]
  let counted = runs()
  const bias = Int32Array.from({ length: 16 }, (_, i) => 100 * i)
  const expect = (a) => a.map((v, i) => 2 * v + bias[i])
  // Eight runs of 7 rows, each fed the last one's outputs, each but the last arming the next. Only the
  // first gives `bias`: the gate must leave it in its buffer (the other staging area holds zeros there).
  let a = Int32Array.from({ length: 7 }, (_, i) => i + 1)
  for (let k = 0; k < 8; k++) {
    step.run(k === 0 ? { a, bias } : { a }, { numTokens: 7, armNext: k < 7 })
    const want = expect(a)
    t.deepEqual(step.hostOutput('y').slice(0, 7), want, `run ${k}`)
    a = want.map((v) => v % 1000)
  }
  stream.synchronize()
  t.is(runs() - counted, 8, 'eight replays, none left armed after the last')
  counted = runs()
  t.true(mgr.stats().replays >= 8)
  // Armed, then a wait for the stream: the armed replay runs once with the inputs its buffers hold.
  step.run({ a }, { numTokens: 7, armNext: true })
  const last = step.hostOutput('y').slice(0, 7)
  t.deepEqual(last, expect(a))
  stream.synchronize()
  t.is(runs() - counted, 2, 'the run and its armed replay, rung by the wait')
  t.deepEqual(step.hostOutput('y').slice(0, 7), last, 'the released replay wrote the same outputs')
  counted = runs()
  // Armed at 7 rows (a graph of 8), then a run of 3 (a graph of 4): released, then the run.
  step.run({ a }, { numTokens: 7, armNext: true })
  const three = Int32Array.of(-5, 6, 70)
  step.run({ a: three }, { numTokens: 3 })
  t.deepEqual(step.hostOutput('y').slice(0, 3), expect(three), 'another size after an armed replay')
  stream.synchronize()
  t.is(runs() - counted, 3)
  // Armed, then a timed run (the copies, then its events and the replay apart).
  step.run({ a }, { numTokens: 7, armNext: true })
  const timing = { start: dev.createEvent({ timing: true }), end: dev.createEvent({ timing: true }) }
  step.run({ a: three }, { numTokens: 3, timing })
  t.deepEqual(step.hostOutput('y').slice(0, 3), expect(three), 'a timed run after an armed replay')
  // Armed, then an eager step of another manager on the same stream.
  step.run({ a }, { numTokens: 7, armNext: true })
  const eagerMgr = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
  const eager = eagerMgr.wrap({ ...spec, name: 'eager' })
  eager.run({ a: three, bias }, { numTokens: 3 })
  t.deepEqual(eager.hostOutput('y').slice(0, 3), expect(three), 'an eager run on the stream after an armed replay')
  t.deepEqual(step.hostOutput('y').slice(0, 7), expect(a), 'the released replay ran with the last inputs')
  // Armed, then disposal: the armed replay is rung, nothing waits forever.
  step.run({ a }, { numTokens: 7, armNext: true })
  mgr.dispose()
  eagerMgr.dispose()
  stream.synchronize()
  for (const [armable, inputs] of [
    ['yes', { a: ['i32', 16] }],
    [true, Object.fromEntries(Array.from({ length: 25 }, (_, i) => [`x${i}`, ['i32', 16]]))],
  ]) {
    const m = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
    const e = t.throws(() => m.wrap({ inputs, outputs: { y: ['i32', 16] }, armable, forward() {} }), { instanceOf: ArgumentError })
    t.is(e.argument, 'spec.armable')
    m.dispose()
  }
})
