// npm run bench:launch — the launch floor: a chain of N tiny kernels (N = 10, 100, 1000), run eagerly
// from JS and replayed as a graph (peers/launch_chain.mjs), and the same chain in raw CUDA C through
// the runtime (launch_chain.cu) and through the driver API with NVRTC as cudagraph does
// (launch_chain_driver.cu), both built with nvcc here, and in PyTorch (launch_chain.py), all in one run
// on one GPU. Every peer runs in a fresh process per round; rounds interleave.
// Timing: host clock around each enqueue (graph launch) less the clock's own cost (an empty timed region,
// measured in each language), and 8 enqueues back to back per region; launch + synchronize for replay
// and eager time; median and p99 over many repeats after warm-up. Prints a table; writes launch.json and
// launch.svg to $BENCH_OUT (default bench/out).
import { spawnSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cPeer, oursChain, peerPath } from '../dist/cli/peers.js'
import { Device } from '../dist/index.js'

const here = dirname(fileURLToPath(import.meta.url))
const outDir = process.env.BENCH_OUT ?? join(here, 'out')
const CHAINS = (process.env.BENCH_CHAINS ?? '10,100,1000').split(',').map(Number)
const REPS = Number(process.env.BENCH_REPS ?? 300)
/** Interleaved rounds per chain length; each figure is the median over rounds. */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5)
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

const ours = (n) => oursChain(n, REPS)
const chainReps = (n) => (n >= 1000 ? Math.max(20, REPS / 5) : REPS)
const rawC = (n) => cPeer('launch_chain', [], [n, chainReps(n)])
const rawDriver = (n) => cPeer('launch_chain_driver', ['-lcuda', '-lnvrtc'], [n, chainReps(n)])

function torch(n) {
  const r = spawnSync('python3', [peerPath('launch_chain.py'), String(n), String(chainReps(n))], { encoding: 'utf8' })
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
    if (typeof out[k] === 'number')
      out[k] = pct(
        ok.map((r) => r[k]),
        0.5,
      )
  }
  return out
}

const rows = []
for (const n of CHAINS) {
  const runs = { ours: [], c: [], drv: [], torch: [] }
  for (let round = 1; round <= ROUNDS; round++) {
    progress(`chain ${n}, round ${round}/${ROUNDS}: ours, raw CUDA C (runtime), raw C (driver + NVRTC), PyTorch`)
    runs.ours.push(ours(n))
    runs.c.push(rawC(n))
    runs.drv.push(rawDriver(n))
    runs.torch.push(torch(n))
  }
  // Paired per-round differences: each round's ours and C ran back to back, so drift cancels.
  const paired = (key, peer) => runs.ours.map((o, i) => (peer[i].skipped ? Number.NaN : key(o) - key(peer[i]))).filter((x) => !Number.isNaN(x))
  const enqNet = (v) => v.enqueueP50Us - v.timerUs
  const enqueueDiffC = paired(enqNet, runs.c)
  rows.push({
    n,
    ours: medianOver(runs.ours),
    c: medianOver(runs.c),
    drv: medianOver(runs.drv),
    torch: medianOver(runs.torch),
    enqueueDiffC: enqueueDiffC.length ? { median: pct(enqueueDiffC, 0.5), min: Math.min(...enqueueDiffC), max: Math.max(...enqueueDiffC) } : undefined,
  })
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
console.log(
  `\nLaunch floor on ${dev.name} (µs; medians over ${REPS} repeats, then the median of ${ROUNDS} interleaved rounds; enqueue net = p50 less the timer's own cost)`,
)
console.log(line(['chain', 'who', 'eager', 'enqueue p50', 'enq. net', 'enq. p99', 'enq. x8 avg', 'replay', 'rep. p99', 'cap+inst'], W))
for (const r of rows) {
  for (const [who, v] of [
    ['cudagraph (JS)', r.ours],
    ['raw CUDA C', r.c],
    ['raw C drv+NVRTC', r.drv],
    ['PyTorch', r.torch],
  ]) {
    if (v.skipped) {
      console.log(`${line([r.n, who], W)}  skipped: ${v.skipped}`)
      continue
    }
    console.log(
      line(
        [
          r.n,
          who,
          f(v.eagerUs, 1),
          f(v.enqueueP50Us, 3),
          f(net(v), 3),
          f(v.enqueueP99Us, 3),
          f(v.enqueueBatchedUs, 3),
          f(v.replayUs, 1),
          f(v.replayP99Us, 1),
          f(v.captureInstantiateUs, 1),
        ],
        W,
      ),
    )
  }
}
console.log('\nSpeedups and ratios')
const W2 = [6, 15, 11, 19, 21, 12, 14, 16]
console.log(line(['chain', 'graph vs eager', 'eager / C', 'enq. net - C (µs)', 'enq. net - C drv (µs)', 'replay / C', 'cap+inst / C', 'replay / PyTorch'], W2))
for (const r of rows) {
  const o = r.ours
  const hasC = typeof r.c.enqueueP50Us === 'number'
  console.log(
    line(
      [
        r.n,
        `${(o.eagerUs / o.replayUs).toFixed(1)}x`,
        ratio(o.eagerUs, r.c.eagerUs),
        hasC ? (net(o) - net(r.c)).toFixed(3) : '-',
        typeof r.drv.enqueueP50Us === 'number' ? (net(o) - net(r.drv)).toFixed(3) : '-',
        ratio(o.replayUs, r.c.replayUs),
        ratio(o.captureInstantiateUs, r.c.captureInstantiateUs),
        ratio(o.replayUs, r.torch.replayUs),
      ],
      W2,
    ),
  )
}
const r100 = rows.find((r) => r.n === 100)
if (r100 && typeof r100.c.replayUs === 'number') {
  const o = r100.ours
  const d = r100.enqueueDiffC
  console.log('\nTargets (chain 100)')
  console.log(
    `  replay enqueue p50 within 0.3 µs of raw C: ${d.median.toFixed(3)} µs net, median of the ${ROUNDS} paired rounds (range ${d.min.toFixed(3)} .. ${d.max.toFixed(3)}) -> ${d.median <= 0.3 ? 'met' : 'MISSED'}`,
  )
  console.log(
    `  chain-100 replay within 3% of raw C: ${((o.replayUs / r100.c.replayUs - 1) * 100).toFixed(1)}% -> ${o.replayUs <= 1.03 * r100.c.replayUs ? 'met' : 'MISSED'}`,
  )
  console.log(
    `  capture+instantiate no slower than raw C: ${ratio(o.captureInstantiateRawUs, r100.c.captureInstantiateUs)}x without memory accounting (as C), ${ratio(o.captureInstantiateUs, r100.c.captureInstantiateUs)}x with it -> ${o.captureInstantiateRawUs <= r100.c.captureInstantiateUs ? 'met' : 'MISSED'}`,
  )
}

console.log('\nWhere our capture+instantiate goes (µs, medians; no memory accounting)')
for (const r of rows) {
  const o = r.ours
  console.log(
    `  chain ${String(r.n).padStart(4)}: begin..end capture ${f(o.captureUs, 1)}, cuGraphInstantiate ${f(o.instantiateUs, 1)}, total ${f(o.captureInstantiateRawUs, 1)} (raw C ${f(r.c.captureInstantiateUs, 1)}, driver+NVRTC C ${f(r.drv.captureInstantiateUs, 1)})`,
  )
}
console.log(
  `\nDriver queries behind a capture's memory accounting: memoryInfo ${memInfoUs.toFixed(1)} µs, graphMemory ${poolUs.toFixed(1)} µs (graphMemory only for captures with memory nodes)`,
)

mkdirSync(outDir, { recursive: true })
writeFileSync(
  join(outDir, 'launch.json'),
  JSON.stringify({ device: dev.name, driver: Device.driverVersion(), reps: REPS, rounds: ROUNDS, memInfoUs, poolUs, rows }, null, 2),
)
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
  return `${svg}</svg>\n`
}
