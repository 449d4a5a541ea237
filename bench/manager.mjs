// npm run bench:manager — an MLP stack (LAYERS x relu(x W + b), hidden HIDDEN, f16 with f32 accumulation,
// one cuBLASLt GEMM per layer with the bias and relu fused into its epilogue) at batch 1..512: eager from JS,
// the GraphManager's replay (dispatch, padding, host-input copy-in and replay, one native call) and PyTorch
// eager and CUDA graph on the same weights (peers/mlp.py: idiomatic addmm + relu_, and the fused
// _addmm_activation, PyTorch's private op with the same cuBLASLt epilogue), in one run on one GPU.
// Timing, the same on both sides: host clock around one step (input DMA from pinned host memory, the step,
// stream synchronize); median and p99 over BENCH_REPS steps after warm-up.
// Correctness first: graph == eager bit for bit at every size, the batch-1 output against a float64 CPU
// reference, and PyTorch's output for the same input against ours.
// Prints a table; writes manager.json and manager.svg to $BENCH_OUT (default bench/out).
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { peerPath } from '../dist/cli/peers.js'
import { lineChartSvg, seriesOf } from '../dist/cli/svg-chart.js'
import { Device, fromHalf, GraphManager, toHalf } from '../dist/index.js'
import { percentile } from '../dist/util/percentile.js'
import { seededRandom } from '../dist/util/random.js'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = process.env.BENCH_OUT ?? join(here, 'out')
const LAYERS = Number(process.env.BENCH_LAYERS ?? 16)
const HIDDEN = Number(process.env.BENCH_HIDDEN ?? 2048)
const REPS = Number(process.env.BENCH_REPS ?? 300)
const SIZES = (process.env.BENCH_SIZES ?? '1,2,4,8,16,32,64,100,128,256,512').split(',').map(Number)
const MAX = 512
const progress = (msg) => process.stderr.write(`[bench:manager] ${msg}\n`)

const avail = Device.availability()
if (!avail.available) {
  console.log(`bench:manager needs a CUDA GPU: ${avail.reason}`)
  process.exit(2)
}

const randomHalf = (n, seed, scale) => {
  const r = seededRandom(seed)
  return Uint16Array.from({ length: n }, () => toHalf((r() * 2 - 1) * scale))
}

const relErr = (a, b) => Math.sqrt(a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / b.reduce((s, v) => s + v * v, 0))

const dev = Device.open(0)
progress(`${dev.name}: MLP ${LAYERS} x ${HIDDEN}, f16, sizes ${SIZES.join(',')}, ${REPS} reps`)
const scale = Math.sqrt(6 / HIDDEN)
const hostW = Array.from({ length: LAYERS }, (_, l) => randomHalf(HIDDEN * HIDDEN, 100 + l, scale))
const hostB = Array.from({ length: LAYERS }, (_, l) => randomHalf(HIDDEN, 200 + l, 0.05))
const W = hostW.map((w) => dev.upload(w, 'f16'))
const B = hostB.map((b) => dev.upload(b, 'f16'))

/** The MLP as a manager step: two pool scratch buffers ping-pong between layers. */
const spec = () => ({
  name: 'mlp',
  inputs: { x: ['f16', MAX, HIDDEN] },
  outputs: { y: ['f16', MAX, HIDDEN] },
  forward(c, b) {
    const n = b.numTokens
    const s = c.stream
    const bufs = [c.scratch('f16', n * HIDDEN), c.scratch('f16', n * HIDDEN)]
    let x = c.inputs.x
    for (let l = 0; l < LAYERS; l++) {
      const y = l === LAYERS - 1 ? c.outputs.y : bufs[l % 2]
      s.gemm({ a: x, b: W[l], c: y, m: n, n: HIDDEN, k: HIDDEN, bias: B[l], activation: 'relu' })
      x = y
    }
  },
})

const stream = dev.createStream()
stream.prepareBlas()
const mgr = new GraphManager(dev, { stream, config: { mode: 'FULL', maxNumSeqs: 256, maxCaptureSize: MAX } })
const eagerMgr = new GraphManager(dev, { stream, config: { mode: 'NONE' } })
const step = mgr.wrap(spec())
const eager = eagerMgr.wrap(spec())
const warm = await mgr.warmup(step, { progress: true })

// Correctness: the batch-1 probe against float64 (layer outputs rounded to f16 as stored), and graph ==
// eager bit for bit at every size.
const probe = randomHalf(HIDDEN, 7, 1)
let ref = Array.from(probe, fromHalf)
for (let l = 0; l < LAYERS; l++) {
  const w = Float64Array.from(hostW[l], fromHalf)
  const next = new Float64Array(HIDDEN)
  for (let k = 0; k < HIDDEN; k++) {
    const xk = ref[k]
    if (xk === 0) continue
    const row = k * HIDDEN
    for (let j = 0; j < HIDDEN; j++) next[j] += xk * w[row + j]
  }
  // the epilogue adds the bias and clips in f32, then rounds once to f16
  ref = Array.from(next, (v, j) => fromHalf(toHalf(Math.max(0, v + fromHalf(hostB[l][j])))))
}
const ours1 = Array.from(step.run({ x: probe }, { numTokens: 1 }).y.download(), fromHalf)
const cpuErr = relErr(ours1, ref)
const nonzero = ref.filter((v) => v !== 0).length
// Capture sizes replay the same GEMM shapes as eager: bit for bit. A padded size (a graph for more rows)
// may get another cuBLAS kernel, so it is held to f16 tolerance instead.
let bitExact = 0
let exactSizes = 0
let paddedErr = 0
for (const n of SIZES) {
  const x = randomHalf(n * HIDDEN, 1000 + n, 1)
  const g = Array.from(step.run({ x }, { numTokens: n }).y.download(), fromHalf)
  const e = Array.from(eager.run({ x }, { numTokens: n }).y.download(), fromHalf)
  if (mgr.config.paddedSize(n) === n) {
    exactSizes++
    if (g.every((v, i) => Object.is(v, e[i]))) bitExact++
    else progress(`graph and eager differ at batch ${n}`)
  } else paddedErr = Math.max(paddedErr, relErr(g, e))
}
progress(
  `batch 1 vs float64 CPU: rel err ${cpuErr.toExponential(2)} (${nonzero}/${HIDDEN} non-zero); graph == eager bit for bit at ${bitExact}/${exactSizes} capture sizes; padded sizes within ${paddedErr.toExponential(2)}`,
)
if (cpuErr > 2e-2 || nonzero < HIDDEN / 8 || bitExact !== exactSizes || paddedErr > 1e-2) {
  console.log('bench:manager: correctness check failed; not timing')
  process.exit(1)
}

// PyTorch on the same weights (and the probe input, to compare outputs).
const weightsFile = join(tmpdir(), `cudagraph_mlp_${process.pid}.f16`)
{
  const parts = []
  for (let l = 0; l < LAYERS; l++) parts.push(hostW[l], hostB[l])
  parts.push(probe)
  const all = new Uint16Array(parts.reduce((s, p) => s + p.length, 0))
  let o = 0
  for (const p of parts) {
    all.set(p, o)
    o += p.length
  }
  writeFileSync(weightsFile, all)
}

/**
 * Times `s` at batch `n`. The input is written once into each of the step's two pinned staging areas
 * (Step.staging) and passed as is, so a step copies it host-to-device by DMA only, like the PyTorch peer's
 * pinned host tensor.
 */
function timeSteps(s, x, n) {
  const filled = new Set()
  const input = () => {
    const v = s.staging('x')
    if (!filled.has(v)) {
      v.set(x)
      filled.add(v)
    }
    return v
  }
  for (let i = 0; i < 20; i++) s.run({ x: input() }, { numTokens: n })
  stream.synchronize()
  const t = new Float64Array(REPS)
  for (let i = 0; i < REPS; i++) {
    const v = input()
    const t0 = performance.now()
    s.run({ x: v }, { numTokens: n })
    stream.synchronize()
    t[i] = (performance.now() - t0) * 1000
  }
  return { p50: percentile(t, 0.5), p99: percentile(t, 0.99) }
}

const rows = []
for (const n of SIZES) {
  const x = randomHalf(n * HIDDEN, 2000 + n, 1)
  const e = timeSteps(eager, x, n)
  const g = timeSteps(step, x, n)
  rows.push({ n, eagerUs: e.p50, eagerP99Us: e.p99, graphUs: g.p50, graphP99Us: g.p99 })
  progress(`batch ${n}: eager ${e.p50.toFixed(1)} µs, manager replay ${g.p50.toFixed(1)} µs`)
}
const st = mgr.stats()

progress('PyTorch peer...')
const py = spawnSync('python3', [peerPath('mlp.py'), weightsFile, String(LAYERS), String(HIDDEN), String(REPS), SIZES.join(',')], { encoding: 'utf8' })
let torch
if (py.status === 0) {
  torch = JSON.parse(py.stdout.trim().split('\n').pop())
  for (const r of rows) r.torch = torch.rows.find((t) => t.n === r.n)
} else {
  torch = { skipped: (py.error?.message ?? py.stderr.trim().split('\n').pop()) || 'python3 failed' }
  progress(`PyTorch peer skipped: ${torch.skipped}`)
}
const torchErr = torch.probe ? Math.max(relErr(ours1, torch.probe), relErr(ours1, torch.fusedProbe)) : undefined

const f = (v, d = 1) => (typeof v === 'number' ? v.toFixed(d) : '-')
const cols = [
  'batch',
  'eager p50',
  'eager p99',
  'graph p50',
  'graph p99',
  'speedup',
  'torch eager',
  'torch graph',
  'torch fused g',
  'ours/torch graph',
  'ours/torch fused',
]
const widths = [5, 10, 10, 10, 10, 8, 12, 12, 13, 16, 16]
const line = (cells) => cells.map((c, i) => String(c).padStart(widths[i])).join('  ')
console.log(`\nMLP ${LAYERS} x ${HIDDEN} f16 on ${dev.name}: step time per batch, µs (pinned host input -> device + step + sync; median / p99 of ${REPS})`)
console.log(line(cols))
for (const r of rows) {
  console.log(
    line([
      r.n,
      f(r.eagerUs),
      f(r.eagerP99Us),
      f(r.graphUs),
      f(r.graphP99Us),
      `${f(r.eagerUs / r.graphUs, 2)}x`,
      f(r.torch?.eagerUs),
      f(r.torch?.graphUs),
      f(r.torch?.fusedGraphUs),
      r.torch ? f(r.graphUs / r.torch.graphUs, 3) : '-',
      r.torch ? f(r.graphUs / r.torch.fusedGraphUs, 3) : '-',
    ]),
  )
}
console.log(
  `\nwarm-up: ${warm.captured} graphs in ${warm.seconds.toFixed(2)} s, ${(warm.bytes / 2 ** 20).toFixed(1)} MiB added; stats: ${st.replays} replays, p50 host ${st.replayUs.p50.toFixed(1)} µs, p99 ${st.replayUs.p99.toFixed(1)} µs (dispatch + copy-in + enqueue)`,
)
console.log(
  `correctness: batch-1 rel err vs float64 ${cpuErr.toExponential(2)}; vs PyTorch ${torchErr === undefined ? '-' : torchErr.toExponential(2)}; graph == eager bit for bit at ${bitExact}/${exactSizes} capture sizes, padded sizes within ${paddedErr.toExponential(2)}`,
)
const b1 = rows.find((r) => r.n === 1)
const worst = (key) => rows.filter((r) => r.torch).reduce((m, r) => Math.max(m, r.graphUs / r.torch[key]), 0)
console.log(
  `targets: batch 1 graph vs eager ${f(b1.eagerUs / b1.graphUs, 2)}x (target >= 3x); worst ours/PyTorch graph ${f(worst('graphUs'), 3)} (target <= 1); against the fused private op ${f(worst('fusedGraphUs'), 3)}`,
)

mkdirSync(outDir, { recursive: true })
writeFileSync(
  join(outDir, 'manager.json'),
  JSON.stringify(
    {
      device: dev.name,
      layers: LAYERS,
      hidden: HIDDEN,
      reps: REPS,
      warmup: warm,
      cpuErr,
      torchErr,
      bitExact,
      torch: torch.torch ?? torch.skipped,
      stats: st,
      rows,
    },
    null,
    2,
  ),
)
writeFileSync(join(outDir, 'manager.svg'), chart(rows))
console.log(`wrote ${join(outDir, 'manager.json')} and ${join(outDir, 'manager.svg')}`)
mgr.dispose()
eagerMgr.dispose()

/** Step time vs batch (log-log): eager, manager replay, PyTorch eager and graph. */
function chart(rows) {
  const line = (name, color, get) => seriesOf(name, color, rows, (r) => r.n, get)
  return lineChartSvg({
    title: `MLP ${LAYERS} x ${HIDDEN} f16: step time vs batch (µs, log-log), lower is better`,
    xLabel: 'batch (rows)',
    yUnit: 'µs',
    series: [
      line('cudagraph eager', '#f4a261', (r) => r.eagerUs),
      line('cudagraph manager replay', '#2a9d8f', (r) => r.graphUs),
      line('PyTorch eager', '#e76f51', (r) => r.torch?.eagerUs),
      line('PyTorch CUDA graph', '#264653', (r) => r.torch?.graphUs),
      line('PyTorch CUDA graph, fused relu', '#8d99ae', (r) => r.torch?.fusedGraphUs),
    ],
  })
}
