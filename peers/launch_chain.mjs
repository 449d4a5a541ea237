// Our side of the launch benchmark (bench/launch.mjs runs it in a fresh process per round, like the raw C
// and PyTorch peers): the chain of N tiny kernels eagerly from JS, then captured and replayed as a graph,
// timed exactly as peers/launch_chain.cu times its own. Prints one JSON line.
// Usage: node peers/launch_chain.mjs N REPS
import { Device } from '../dist/index.js'
import { KERNELS } from './kernels.mjs'

const n = Number(process.argv[2] ?? 100)
const REPS = Number(process.argv[3] ?? 300)
/** Replays enqueued back to back per timed region in the batched enqueue measure. */
const BATCH = 8
const pct = (v, p) => {
  const s = [...v].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))]
}
const us = () => Number(process.hrtime.bigint()) / 1e3

function run(dev) {
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
  const capInstRaw = []
  const captureOnly = []
  const instantiateOnly = []
  let g
  for (let r = 0; r < 20; r++) {
    const t0 = us()
    const g2 = s.capture(chain, { upload: false })
    capInst.push(us() - t0)
    g2.dispose()
    const t1 = us()
    const g3 = s.capture(chain, { upload: false, measureMemory: false })
    capInstRaw.push(us() - t1)
    const tm = g3.timings()
    captureOnly.push(tm.captureUs)
    instantiateOnly.push(tm.instantiateUs)
    g?.dispose()
    g = g3
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
    captureInstantiateRawUs: pct(capInstRaw, 0.5),
    captureUs: pct(captureOnly, 0.5),
    instantiateUs: pct(instantiateOnly, 0.5),
    timerUs: pct(timer, 0.5),
    enqueueP50Us: pct(enq, 0.5),
    enqueueP99Us: pct(enq, 0.99),
    enqueueBatchedUs: pct(batched, 0.5),
    replayUs: pct(replay, 0.5),
    replayP99Us: pct(replay, 0.99),
    replayGpuUs: pct(gpuMs, 0.5) * 1e3,
  }
}

console.log(JSON.stringify(run(Device.open(0))))
