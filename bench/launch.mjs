// npm run bench:launch — the launch floor: a chain of N tiny kernels (N = 10, 100, 1000), run eagerly
// from JS, replayed as a graph, and the same chain in raw CUDA C (bench/peers/launch_chain.cu, built
// with nvcc here) and PyTorch (bench/peers/launch_chain.py), all in one run on one GPU.
// Timing: host clock around each enqueue (graph launch) less the clock's own cost (an empty timed region,
// measured in each language), and 8 enqueues back to back per region; launch + synchronize for replay
// and eager time; median and p99 over many repeats after warm-up. Prints a table; writes launch.json and
// launch.svg to $BENCH_OUT (default bench/out).
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync, existsSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Device } from '../dist/index.js'
import { KERNELS } from '../__test__/kernels.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = process.env.BENCH_OUT ?? join(here, 'out')
const CHAINS = (process.env.BENCH_CHAINS ?? '10,100,1000').split(',').map(Number)
const REPS = Number(process.env.BENCH_REPS ?? 300)
/** Replays enqueued back to back per timed region in the batched enqueue measure. */
const BATCH = 8
/** Interleaved rounds per chain length; each figure is the median over rounds. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const progress = (msg) => process.stderr.write(`[bench:launch] ${msg}\n`)

const avail = Device.availability()
if (!avail.available) {
  console.log(`bench:launch needs a CUDA GPU: ${avail.reason}`)
  process.exit(2)
}

const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))]
}
const us = () => Number(process.hrtime.bigint()) / 1e3

function ours(dev, n) {
  const s = dev.createStream()
  const mod = dev.compile(KERNELS, { name: 'bench' })
  const axpb = mod.kernel('axpb', ['ptr', 'i32', 'f32', 'f32'])
  const x = dev.alloc('f32', 256)
  s.fill(x, 0.5)
  const cfg = { grid: 1, block: 256 }
  const args = [x, 256, 0.999, 0.001]
  const chain = () => {
    for (let i = 0; i < n; i++) s.launch(axpb, cfg, args)
  }
  chain()
  s.synchronize()
  const reps = n >= 1000 ? Math.max(20, REPS / 5) : REPS
  const eager = []
  const eagerEnq = []
  for (let r = 0; r < reps; r++) {
    const t0 = us()
    chain()
    const t1 = us()
    s.synchronize()
    eagerEnq.push(t1 - t0)
    eager.push(us() - t0)
  }
  const capInst = []
  let g
  for (let r = 0; r < 20; r++) {
    const t0 = us()
    const g2 = s.capture(chain, { upload: false })
    capInst.push(us() - t0)
    g?.dispose()
    g = g2
  }
  g.upload(s)
  for (let r = 0; r < 20; r++) {
    g.launch(s)
    s.synchronize()
  }
  const timer = []
  for (let r = 0; r < reps * 10; r++) {
    const t0 = us()
    timer.push(us() - t0)
  }
  const enq = []
  for (let r = 0; r < reps * 10; r++) {
    const t0 = us()
    g.launch(s)
    enq.push(us() - t0)
    s.synchronize()
  }
  const batched = []
  for (let r = 0; r < reps; r++) {
    const t0 = us()
    for (let j = 0; j < BATCH; j++) g.launch(s)
    batched.push((us() - t0) / BATCH)
    s.synchronize()
  }
  const replay = []
  for (let r = 0; r < reps; r++) {
    const t0 = us()
    g.launch(s)
    s.synchronize()
    replay.push(us() - t0)
  }
  const gpuMs = []
  const e0 = dev.createEvent()
  const e1 = dev.createEvent()
  for (let r = 0; r < reps; r++) {
    e0.record(s)
    g.launch(s)
    e1.record(s)
    s.synchronize()
    gpuMs.push(e1.elapsedSince(e0))
  }
  const nodes = g.nodeCount
  g.dispose()
  return {
    n,
    nodes,
    eagerUs: pct(eager, 0.5),
    eagerP99Us: pct(eager, 0.99),
    eagerEnqueueUs: pct(eagerEnq, 0.5),
    captureInstantiateUs: pct(capInst, 0.5),
    timerUs: pct(timer, 0.5),
    enqueueP50Us: pct(enq, 0.5),
    enqueueP99Us: pct(enq, 0.99),
    enqueueBatchedUs: pct(batched, 0.5),
    replayUs: pct(replay, 0.5),
    replayP99Us: pct(replay, 0.99),
    replayGpuUs: pct(gpuMs, 0.5) * 1e3,
  }
}

/** Builds a peer with nvcc once (into /tmp), then runs it; a missing compiler is a printed skip. */
function cPeer(name, extra, n) {
  const bin = `/tmp/cudagraph_${name}`
  if (!existsSync(bin)) {
    const cc = spawnSync('nvcc', ['-O2', '-arch=sm_90', '-o', bin, join(here, 'peers', `${name}.cu`), ...extra], { encoding: 'utf8' })
    if (cc.status !== 0) {
      process.stderr.write(cc.stderr ?? '')
      return { skipped: `nvcc: ${cc.error?.message ?? cc.stderr.split('\n').find((l) => l.includes('error')) ?? 'failed'}` }
    }
  }
  const reps = n >= 1000 ? Math.max(20, REPS / 5) : REPS
  return JSON.parse(execFileSync(bin, [String(n), String(reps)], { encoding: 'utf8' }).trim())
}
const rawC = (n) => cPeer('launch_chain', [], n)
const rawDriver = (n) => cPeer('launch_chain_driver', ['-lcuda', '-lnvrtc'], n)

function torch(n) {
  const reps = n >= 1000 ? Math.max(20, REPS / 5) : REPS
  const r = spawnSync('python3', [join(here, 'peers', 'launch_chain.py'), String(n), String(reps)], { encoding: 'utf8' })
  if (r.status !== 0) return { skipped: `python3/torch: ${r.error?.message ?? r.stderr.trim().split('\n').pop()}` }
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

const dev = Device.open(0)
progress(`${dev.name}, driver ${Device.driverVersion()}, chains ${CHAINS.join('/')}, ${REPS} repeats, ${ROUNDS} rounds`)
/** Per-metric median over rounds (the rounds of ours, C and PyTorch interleave, so drift hits all alike). */
function medianOver(results) {
  const ok = results.filter((r) => !r.skipped)
  if (ok.length === 0) return results[0]
  const out = { ...ok[0] }
  for (const k of Object.keys(out)) {
    if (typeof out[k] === 'number') out[k] = pct(ok.map((r) => r[k]), 0.5)
  }
  return out
}

const rows = []
for (const n of CHAINS) {
  const runs = { ours: [], c: [], drv: [], torch: [] }
  for (let round = 1; round <= ROUNDS; round++) {
    progress(`chain ${n}, round ${round}/${ROUNDS}: ours, raw CUDA C (runtime), raw C (driver + NVRTC), PyTorch`)
    runs.ours.push(ours(dev, n))
    runs.c.push(rawC(n))
    runs.drv.push(rawDriver(n))
    runs.torch.push(torch(n))
  }
  rows.push({ n, ours: medianOver(runs.ours), c: medianOver(runs.c), drv: medianOver(runs.drv), torch: medianOver(runs.torch) })
}
const query = (fn) => {
  const t = []
  for (let i = 0; i < 200; i++) {
    const t0 = us()
    fn()
    t.push(us() - t0)
  }
  return pct(t, 0.5)
}
const memInfoUs = query(() => dev.memoryInfo())
const poolUs = query(() => dev.graphMemory())

const f = (v, d = 2) => (typeof v === 'number' ? v.toFixed(d) : '-')
const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' ? (a / b).toFixed(3) : '-')
const line = (cells, widths) => cells.map((c, i) => String(c).padStart(widths[i])).join('  ')
const net = (v) => v.enqueueP50Us - (v.timerUs ?? 0)
const W = [6, 16, 10, 12, 12, 12, 12, 10, 10, 10]
console.log(`\nLaunch floor on ${dev.name} (µs; medians over ${REPS} repeats, then the median of ${ROUNDS} interleaved rounds; enqueue net = p50 less the timer's own cost)`)
console.log(line(['chain', 'who', 'eager', 'enqueue p50', 'enq. net', 'enq. p99', 'enq. x8 avg', 'replay', 'rep. p99', 'cap+inst'], W))
for (const r of rows) {
  for (const [who, v] of [['cudagraph (JS)', r.ours], ['raw CUDA C', r.c], ['raw C drv+NVRTC', r.drv], ['PyTorch', r.torch]]) {
    if (v.skipped) {
      console.log(`${line([r.n, who], W)}  skipped: ${v.skipped}`)
      continue
    }
    console.log(line([r.n, who, f(v.eagerUs, 1), f(v.enqueueP50Us, 3), f(net(v), 3), f(v.enqueueP99Us, 3), f(v.enqueueBatchedUs, 3), f(v.replayUs, 1), f(v.replayP99Us, 1), f(v.captureInstantiateUs, 1)], W))
  }
}
console.log('\nSpeedups and ratios')
const W2 = [6, 15, 11, 19, 21, 12, 14, 16]
console.log(line(['chain', 'graph vs eager', 'eager / C', 'enq. net - C (µs)', 'enq. net - C drv (µs)', 'replay / C', 'cap+inst / C', 'replay / PyTorch'], W2))
for (const r of rows) {
  const o = r.ours
  const hasC = typeof r.c.enqueueP50Us === 'number'
  console.log(
    line([
      r.n,
      `${(o.eagerUs / o.replayUs).toFixed(1)}x`,
      ratio(o.eagerUs, r.c.eagerUs),
      hasC ? (net(o) - net(r.c)).toFixed(3) : '-',
      typeof r.drv.enqueueP50Us === 'number' ? (net(o) - net(r.drv)).toFixed(3) : '-',
      ratio(o.replayUs, r.c.replayUs),
      ratio(o.captureInstantiateUs, r.c.captureInstantiateUs),
      ratio(o.replayUs, r.torch.replayUs),
    ], W2),
  )
}
const r100 = rows.find((r) => r.n === 100)
if (r100 && typeof r100.c.replayUs === 'number') {
  const o = r100.ours
  const d = net(o) - net(r100.c)
  console.log('\nTargets (chain 100)')
  console.log(`  replay enqueue p50 within 0.3 µs of raw C: ${d.toFixed(3)} µs net (${(o.enqueueP50Us - r100.c.enqueueP50Us).toFixed(3)} µs before timer correction) -> ${d <= 0.3 ? 'met' : 'MISSED'}`)
  console.log(`  chain-100 replay within 3% of raw C: ${((o.replayUs / r100.c.replayUs - 1) * 100).toFixed(1)}% -> ${o.replayUs <= 1.03 * r100.c.replayUs ? 'met' : 'MISSED'}`)
  console.log(`  capture+instantiate no slower than raw C: ${ratio(o.captureInstantiateUs, r100.c.captureInstantiateUs)}x -> ${o.captureInstantiateUs <= r100.c.captureInstantiateUs ? 'met' : 'MISSED'}`)
}

console.log(`\nDriver queries behind a capture's memory accounting: memoryInfo ${memInfoUs.toFixed(1)} µs, graphMemory ${poolUs.toFixed(1)} µs (graphMemory only for captures with memory nodes)`)

mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, 'launch.json'), JSON.stringify({ device: dev.name, driver: Device.driverVersion(), reps: REPS, rounds: ROUNDS, memInfoUs, poolUs, rows }, null, 2))
writeFileSync(join(outDir, 'launch.svg'), chart(rows))
console.log(`\nwrote ${join(outDir, 'launch.json')} and ${join(outDir, 'launch.svg')}`)

/** Grouped bars (log scale): eager vs graph replay per chain length, ours / raw C / PyTorch. */
function chart(rows) {
  const series = [
    ['cudagraph eager', '#f4a261', (r) => r.ours.eagerUs],
    ['cudagraph graph', '#2a9d8f', (r) => r.ours.replayUs],
    ['raw C eager', '#e9c46a', (r) => r.c.eagerUs],
    ['raw C graph', '#264653', (r) => r.c.replayUs],
    ['PyTorch eager', '#e76f51', (r) => r.torch.eagerUs],
    ['PyTorch graph', '#8ab17d', (r) => r.torch.replayUs],
  ]
  const W = 760
  const H = 380
  const left = 60
  const top = 40
  const plotH = 260
  const groupW = (W - left - 20) / rows.length
  const vals = rows.flatMap((r) => series.map(([, , get]) => get(r)).filter((v) => typeof v === 'number' && v > 0))
  const lo = Math.floor(Math.log10(Math.min(...vals)))
  const hi = Math.ceil(Math.log10(Math.max(...vals)))
  const y = (v) => top + plotH - ((Math.log10(v) - lo) / (hi - lo)) * plotH
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`
  svg += `<rect width="${W}" height="${H}" fill="white"/><text x="${W / 2}" y="20" text-anchor="middle" font-size="14">Chain of N tiny kernels: time per chain (µs, log scale), lower is better</text>`
  for (let e = lo; e <= hi; e++) {
    svg += `<line x1="${left}" x2="${W - 20}" y1="${y(10 ** e)}" y2="${y(10 ** e)}" stroke="#ddd"/><text x="${left - 6}" y="${y(10 ** e) + 4}" text-anchor="end">${10 ** e}</text>`
  }
  const bw = (groupW - 20) / series.length
  rows.forEach((r, gi) => {
    const x0 = left + gi * groupW + 10
    series.forEach(([, color, get], si) => {
      const v = get(r)
      if (typeof v !== 'number') return
      svg += `<rect x="${x0 + si * bw}" y="${y(v)}" width="${bw - 2}" height="${top + plotH - y(v)}" fill="${color}"><title>${v.toFixed(1)} µs</title></rect>`
    })
    svg += `<text x="${x0 + (groupW - 20) / 2}" y="${top + plotH + 18}" text-anchor="middle">N = ${r.n}</text>`
  })
  series.forEach(([name, color], i) => {
    const lx = left + (i % 3) * 220
    const ly = top + plotH + 40 + Math.floor(i / 3) * 18
    svg += `<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color}"/><text x="${lx + 18}" y="${ly}">${name}</text>`
  })
  return svg + '</svg>\n'
}
