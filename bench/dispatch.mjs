// npm run bench:dispatch — CPU cost of the policy layer over a realistic mix of batches: median ns per
// Dispatcher.dispatch, descriptorKey and GraphRegistry.get. 21 timed repeats of 1M calls each after
// warm-up; the median and p99 of the repeats are printed with an empty-loop baseline.
import { Dispatcher, describeBatch, descriptorKey, GraphConfig, GraphRegistry } from '../dist/index.js'

const CALLS = Number(process.env.BENCH_CALLS ?? 1_000_000)
const REPEATS = Number(process.env.BENCH_REPEATS ?? 21)
const progress = (m) => process.stderr.write(`[bench:dispatch] ${m}\n`)

// A serving mix: 70% uniform decode steps of 1..256 requests (small batches most common), 25% mixed
// prefill batches of 16..1024 tokens (some above the largest capture size run eagerly), 5% LoRA decode.
let seed = 12345
const rand = () => {
  seed = (seed * 1103515245 + 12345) >>> 0
  return seed / 2 ** 32
}
const N = 4096
const tokens = new Int32Array(N)
const opts = []
const decode = Object.freeze({ uniformDecode: true })
const mixed = Object.freeze({})
const lora = [1, 2, 3, 4].map((n) => Object.freeze({ uniformDecode: true, hasLora: true, numActiveLoras: n }))
for (let i = 0; i < N; i++) {
  const r = rand()
  if (r < 0.7) {
    tokens[i] = 1 + Math.floor(256 * rand() ** 2)
    opts.push(decode)
  } else if (r < 0.95) {
    tokens[i] = 16 + Math.floor(1008 * rand())
    opts.push(mixed)
  } else {
    tokens[i] = 1 + Math.floor(64 * rand())
    opts.push(lora[i % 4])
  }
}

const config = GraphConfig.from({ mode: 'FULL_AND_PIECEWISE', maxNumSeqs: 256, maxLoras: 4 })
const dispatcher = new Dispatcher(config)
dispatcher.initializeKeys()
const descs = Array.from({ length: N }, (_, i) => dispatcher.dispatch(tokens[i], opts[i]).descriptor)
const registry = new GraphRegistry({ maxGraphs: 10_000 })
for (const g of dispatcher.captureDescriptors()) for (const d of g.descriptors) registry.put(descriptorKey(d), d, 1)
const keys = new Float64Array(N)
for (let i = 0; i < N; i++) keys[i] = descriptorKey(descs[i])
const unpadded = Array.from({ length: N }, (_, i) => describeBatch({ numTokens: tokens[i], numReqs: Math.min(tokens[i], 256), uniform: opts[i] === decode }))

const cases = {
  'empty loop (baseline)': () => {
    let s = 0
    for (let i = 0; i < CALLS; i++) s += tokens[i & (N - 1)]
    return s
  },
  'Dispatcher.dispatch': () => {
    let s = 0
    for (let i = 0; i < CALLS; i++) {
      const j = i & (N - 1)
      s += dispatcher.dispatch(tokens[j], opts[j]).descriptor.numTokens
    }
    return s
  },
  descriptorKey: () => {
    let s = 0
    for (let i = 0; i < CALLS; i++) s += descriptorKey(unpadded[i & (N - 1)])
    return s
  },
  'GraphRegistry.get': () => {
    let s = 0
    for (let i = 0; i < CALLS; i++) s += registry.get(keys[i & (N - 1)]) === undefined ? 0 : 1
    return s
  },
}

const pct = (v, p) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.round(p * (v.length - 1)))]
const results = {}
let sink = 0
for (const [name, fn] of Object.entries(cases)) {
  progress(`${name}: warm-up, then ${REPEATS} x ${CALLS} calls`)
  for (let w = 0; w < 3; w++) sink += fn()
  const ns = []
  for (let r = 0; r < REPEATS; r++) {
    const t0 = process.hrtime.bigint()
    sink += fn()
    ns.push(Number(process.hrtime.bigint() - t0) / CALLS)
  }
  results[name] = { median: pct(ns, 0.5), p99: pct(ns, 0.99) }
}

const targets = { 'Dispatcher.dispatch': 200, descriptorKey: 50, 'GraphRegistry.get': 100 }
console.log(`\nPolicy layer on ${process.version}, ${CALLS} calls x ${REPEATS} repeats (ns per call, loop included)`)
console.log(`${'operation'.padEnd(24)}${'median'.padStart(10)}${'p99'.padStart(10)}${'target'.padStart(10)}  verdict`)
for (const [name, r] of Object.entries(results)) {
  const target = targets[name]
  const verdict = target === undefined ? '' : r.median <= target ? 'met' : 'MISSED'
  console.log(`${name.padEnd(24)}${r.median.toFixed(1).padStart(10)}${r.p99.toFixed(1).padStart(10)}${(target ?? '-').toString().padStart(10)}  ${verdict}`)
}
const s = dispatcher.stats.toJSON()
console.log(
  `\nmix: ${((s.byMode.FULL / s.total) * 100).toFixed(1)}% FULL, ${((s.byMode.PIECEWISE / s.total) * 100).toFixed(1)}% PIECEWISE, ${((s.byMode.NONE / s.total) * 100).toFixed(1)}% eager; padding waste ${(s.paddingWaste * 100).toFixed(2)}% (checksum ${sink % 997})`,
)
