/**
 * Where a decode step's GPU time goes, part by part (an eager diagnostic pass with an event before each
 * kernel and GEMM, queued behind a gate kernel so no host gap is timed), and the floor it is measured
 * against: the bytes a step must read (weights once, the KV cache of its context) over the copy bandwidth
 * measured in the same run (a device-to-device copy on a stream, outside any graph).
 */
import type { DeviceBuffer } from '../cuda/buffer.js'
import type { Device } from '../cuda/device.js'
import type { DType } from '../cuda/dtype.js'
import type { Event } from '../cuda/event.js'
import type { Stream } from '../cuda/stream.js'
import type { StepTiming } from '../manager/step.js'
import { DecoderModel, type ForwardPart, type ModelDType, type StepKind } from '../model/decoder-model.js'
import type { DecoderRunner } from '../model/decoder-runner.js'
import type { ModelConfig } from '../model/model-config.js'
import { samplingRows } from '../model/sampling.js'
import { percentile } from '../util/percentile.js'

/** One part of the step: its calls, its GPU time (median over repeats) and the bytes it must read. */
export interface PartRow {
  part: ForwardPart
  calls: number
  us: number
  /** Of the step's GPU time. */
  share: number
  /** Weights and KV cache it reads, bytes (0 for parts that read only activations). */
  bytes: number
  /** bytes / time, GB/s (parts that read weights or the cache). */
  gbPerSecond: number | undefined
}

/**
 * The median GPU time of `runner`'s decode step of `batch` requests, µs: events around its forward (the
 * graph's replay: {@link StepTiming}), each step queued behind a gate kernel of 2 ms, far longer than a
 * step takes to enqueue, so neither host time nor the input copies and read-back are in it. `reps` steps
 * timed after 10 untimed.
 */
export function decodeGpuTime(runner: DecoderRunner, batch: number, slots: Int32Array, tokens: Int32Array, positions: Int32Array, reps: number): number {
  return gatedGpuTime(runner, 10, reps, (timing) => runner.decode(batch, slots, tokens, positions, undefined, timing))
}

/**
 * The median GPU time of `runner`'s prefill of `prompt` into slot 0, µs: events around its forward, each
 * prefill queued behind a gate kernel, as {@link decodeGpuTime} times a decode step. `reps` prefills timed
 * after 2 untimed.
 */
export function prefillGpuTime(runner: DecoderRunner, prompt: Int32Array, reps: number): number {
  const greedy = samplingRows(1)
  return gatedGpuTime(runner, 2, reps, (timing) => runner.prefill(0, prompt, 0, greedy, timing))
}

/** The median of `reps` timed `step`s, µs, after `warm` untimed, each queued behind a 2 ms gate kernel and timed by the events it is given. */
function gatedGpuTime(runner: DecoderRunner, warm: number, reps: number, step: (timing: StepTiming) => void): number {
  const { model, manager } = runner
  const hold = gate(model)
  const timing: StepTiming = { start: model.device.createEvent({ timing: true }), end: model.device.createEvent({ timing: true }) }
  const us: number[] = []
  for (let r = -warm; r < reps; r++) {
    hold(manager.stream, 2e6)
    step(timing)
    if (r >= 0) us.push(timing.end.elapsedSince(timing.start) * 1000)
  }
  return percentile(us, 0.5)
}

/** Holds a stream for `ns` nanoseconds (the decoder module's `gate` kernel): the work queued behind it runs back to back, with no host time between. */
function gate(model: DecoderModel): (stream: Stream, ns: number) => void {
  const kernel = DecoderModel.module(model.device, model.dtype).kernel('gate', ['i64'])
  return (stream, ns) => stream.launch(kernel, { grid: 1, block: 32 }, [Math.ceil(ns)])
}

/** The copy bandwidth: bytes read plus bytes written per second by a device-to-device copy, B/s. */
export function copyBandwidth(device: Device, stream: Stream): number {
  const n = 512 << 20
  const src = device.alloc('f32', n)
  const dst = device.alloc('f32', n)
  const [a, b] = [device.createEvent({ timing: true }), device.createEvent({ timing: true })]
  try {
    stream.fill(src, 1)
    const ms: number[] = []
    for (let i = 0; i < 12; i++) {
      a.record(stream)
      stream.copy(dst, src)
      b.record(stream)
      b.synchronize()
      if (i >= 2) ms.push(b.elapsedSince(a))
    }
    return (2 * src.byteLength) / (percentile(ms, 0.5) / 1000)
  } finally {
    src.dispose()
    dst.dispose()
  }
}

/**
 * The GEMM rate: FLOP/s of one large cuBLAS GEMM in `dtype` (8192 x 8192 x 8192, B transposed as the
 * model's weights are), median of 10 after 2 warm-ups. What a prefill's GEMMs can reach at best here.
 */
export function gemmRate(device: Device, stream: Stream, dtype: ModelDType): number {
  const n = 8192
  const [a, b, c] = [device.alloc(dtype, n * n), device.alloc(dtype, n * n), device.alloc(dtype, n * n)]
  const [e0, e1] = [device.createEvent({ timing: true }), device.createEvent({ timing: true })]
  try {
    // Random operands, as weights are: the tensor cores' power (so their clocks) depends on the data.
    const init = DecoderModel.module(device, dtype).kernel('init_uniform', ['ptr', 'i64', 'u64', 'f32', 'f32'])
    for (const [i, x] of [a, b].entries()) stream.launch(init, { grid: 4096, block: 256 }, [x, x.length, BigInt(i + 1), 0.05, 0])
    const ms: number[] = []
    for (let i = 0; i < 12; i++) {
      e0.record(stream)
      stream.gemm({ a, b, c, m: n, n, k: n, transB: true })
      e1.record(stream)
      e1.synchronize()
      if (i >= 2) ms.push(e1.elapsedSince(e0))
    }
    return (2 * n * n * n) / (percentile(ms, 0.5) / 1000)
  } finally {
    for (const x of [a, b, c]) x.dispose()
  }
}

/** The projections' GEMMs of a prefill on their own: what the prefill's time would be without its other kernels. */
export interface PrefillGemms {
  /** GPU time of every layer's q/k/v, o, gate/up and down GEMMs back to back, µs (median). */
  us: number
  /** Their FLOPs (2 per weight a token row). */
  flops: number
}

/**
 * Times `model`'s projection GEMMs of a `tokens`-row prefill alone: every layer's q/k/v, o, gate/up and
 * down on its own weights, with the prefill's shapes and beta (o and down add into their output), through
 * cuBLAS as the forward calls them, back to back behind a gate kernel, onto random rows in scratch buffers;
 * median of `reps` after one untimed. The prefill's time less this is what its attention, element-wise
 * kernels, LM head and sampling cost.
 */
export function prefillGemms(model: DecoderModel, stream: Stream, tokens: number, reps: number): PrefillGemms {
  const dev = model.device
  const H = model.config.hidden
  // Weights are [n x k]: q/k/v and gate/up read the hidden rows (k = H); o and down add into them (n = H, beta 1).
  const reads = (w: DeviceBuffer) => ({ w, k: H, n: w.length / H, beta: 0 })
  const adds = (w: DeviceBuffer) => ({ w, n: H, k: w.length / H, beta: 1 })
  const gemms = Array.from({ length: model.config.layers }, (_, l) => {
    const w = (name: string) => model.weights.get(`layers.${l}.${name}`)!.buffer
    return [reads(w('qkv')), adds(w('o')), reads(w('gate_up')), adds(w('down'))]
  }).flat()
  const widest = Math.max(...gemms.map((g) => Math.max(g.k, g.n)))
  const [x, y] = [dev.alloc(model.dtype, tokens * widest), dev.alloc(model.dtype, tokens * widest)]
  const [e0, e1] = [dev.createEvent({ timing: true }), dev.createEvent({ timing: true })]
  try {
    const init = DecoderModel.module(dev, model.dtype).kernel('init_uniform', ['ptr', 'i64', 'u64', 'f32', 'f32'])
    for (const [i, b] of [x, y].entries()) stream.launch(init, { grid: 4096, block: 256 }, [b, b.length, BigInt(i + 7), 0.5, 0])
    const hold = gate(model)
    const us: number[] = []
    for (let r = -1; r < reps; r++) {
      // Longer than enqueueing the GEMMs takes (a few µs each).
      hold(stream, 2e6 + 20e3 * gemms.length)
      e0.record(stream)
      for (const g of gemms) stream.gemm({ a: x, b: g.w, c: y, m: tokens, n: g.n, k: g.k, beta: g.beta, transB: true })
      e1.record(stream)
      e1.synchronize()
      if (r >= 0) us.push(e1.elapsedSince(e0) * 1000)
    }
    return { us: percentile(us, 0.5), flops: gemms.reduce((a, g) => a + 2 * tokens * g.n * g.k, 0) }
  } finally {
    x.dispose()
    y.dispose()
  }
}

/**
 * FLOPs of a prefill of `tokens` tokens of one request: the projections of every token (2 per weight),
 * causal attention (q.k and p.v over the positions up to each token) and the LM head of its last token.
 */
export function prefillFlops(c: ModelConfig, tokens: number): number {
  const qkv = (c.heads + 2 * c.kvHeads) * c.headDim
  const projections = c.hidden * qkv + c.heads * c.headDim * c.hidden + 3 * c.hidden * c.ffn
  const attended = (tokens * (tokens + 1)) / 2
  return c.layers * (2 * tokens * projections + 4 * c.heads * c.headDim * attended) + 2 * c.hidden * c.vocab
}

/** Bytes of weights and KV cache each part reads in a decode step of `batch` requests at `context` tokens. */
export function partBytes(model: DecoderModel, batch: number, context: number): Partial<Record<ForwardPart, number>> {
  const c = model.config
  const size = (name: string) => model.weights.get(name)?.buffer.byteLength ?? 0
  const sum = (f: (l: number) => number) => Array.from({ length: c.layers }, (_, l) => f(l)).reduce((a, b) => a + b, 0)
  const elem = 2
  const qkv = (l: number) => size(`layers.${l}.qkv`) + size(`layers.${l}.qkv_bias`)
  const lmHead = c.tieEmbeddings ? size('embed') : size('lm_head')
  const attention = batch * context * c.layers * 2 * c.kvHeads * c.headDim * elem
  if (model.chainsDecode(batch)) {
    // Layer 0's q/k/v is its own GEMV; each layer's chain reads the rest through the next q/k/v (the last: the LM head).
    const rest = sum(
      (l) => size(`layers.${l}.o`) + size(`layers.${l}.gate_up`) + size(`layers.${l}.down`) + size(`layers.${l}.attn_norm`) + size(`layers.${l}.mlp_norm`),
    )
    return { qkv: qkv(0), layer_chain: rest + sum(qkv) - qkv(0) + size('norm') + lmHead, attention }
  }
  return {
    qkv: sum(qkv),
    o: sum((l) => size(`layers.${l}.o`)),
    gate_up: sum((l) => size(`layers.${l}.gate_up`)),
    down: sum((l) => size(`layers.${l}.down`)),
    // The norms that launch: the first layer's, and those not folded into the projections after them.
    norm: sum((l) => (l > 0 && model.foldsAttentionNorm ? 0 : size(`layers.${l}.attn_norm`)) + (model.foldNorms ? 0 : size(`layers.${l}.mlp_norm`))),
    final_norm: size('norm'),
    lm_head: lmHead,
    attention,
  }
}

/**
 * Times each part of `reps` eager decode forwards of `batch` requests with `context` tokens of cache
 * each (slots 0..batch-1, which the caller has prefilled). Returns the rows, largest first.
 */
export function profileDecode(model: DecoderModel, stream: Stream, batch: number, context: number, reps: number): PartRow[] {
  const iota = Int32Array.from({ length: batch }, (_, i) => i)
  const rows = { tokens: iota, positions: new Int32Array(batch).fill(context - 1), slots: iota, last: iota, kind: 'decode' as const }
  return profileForward(model, stream, rows, partBytes(model, batch, context), reps)
}

/** Times each part of `reps` eager prefills of one request of `tokens` tokens into slot 0. Returns the rows, largest first. */
export function profilePrefill(model: DecoderModel, stream: Stream, tokens: number, reps: number): PartRow[] {
  const iota = Int32Array.from({ length: tokens }, (_, i) => i)
  return profileForward(
    model,
    stream,
    { tokens: iota, positions: iota, slots: new Int32Array(tokens), last: Int32Array.of(tokens - 1), kind: 'prefill' },
    {},
    reps,
  )
}

/**
 * The rows of a forward: per token its id (made from `tokens`), position and slot; per request its last
 * row; and the kind of step (a decode step may take the decode GEMVs).
 */
interface ForwardRows {
  tokens: Int32Array
  positions: Int32Array
  slots: Int32Array
  last: Int32Array
  kind: StepKind
}

function profileForward(model: DecoderModel, stream: Stream, rows: ForwardRows, bytes: Partial<Record<ForwardPart, number>>, reps: number): PartRow[] {
  const dev = model.device
  const made: DeviceBuffer[] = []
  const keep = <D extends DType>(b: DeviceBuffer<D>): DeviceBuffer<D> => {
    made.push(b)
    return b
  }
  const events: Event[] = []
  const T = rows.tokens.length
  const R = rows.last.length
  try {
    const sampling = samplingRows(R)
    const t = {
      tokens: keep(
        dev.upload(
          Int32Array.from(rows.tokens, (i) => (i * 7919 + 1) % model.config.vocab),
          'i32',
        ),
      ),
      positions: keep(dev.upload(rows.positions, 'i32')),
      slots: keep(dev.upload(rows.slots, 'i32')),
      last: keep(dev.upload(rows.last, 'i32')),
      sampling: keep(dev.upload(sampling.params, 'f32')),
      seeds: keep(dev.upload(sampling.seeds, 'u32')),
      next: keep(dev.alloc('i32', R)),
      logits: keep(dev.alloc('f32', R * model.config.vocab)),
    }
    const marks: { part: ForwardPart; at: number }[] = []
    let used = 0
    const event = () => {
      if (used === events.length) events.push(dev.createEvent({ timing: true }))
      return events[used++]!
    }
    const ctx = {
      stream,
      scratch: <D extends 'f32' | ModelDType>(dtype: D, length: number) => keep(dev.alloc(dtype, length)),
      trace: (part: ForwardPart) => {
        marks.push({ part, at: used })
        event().record(stream)
      },
    }
    const perRep = new Map<ForwardPart, number[]>()
    const calls = new Map<ForwardPart, number>()
    // Each forward queues behind a gate kernel that outlasts its enqueueing (twice the last one's host time),
    // so its parts run back to back: timed as it is queued, an eager part's small kernels had the host's
    // launch gaps in them (on an H200, 1b's gate/up at batch 64: 38 µs a call, 23.8 behind the gate, 20 in a
    // graph). No kernel launches early across an event, so each part still pays a kernel boundary.
    const hold = gate(model)
    let enqueueMs = 1
    for (let r = -2; r < reps; r++) {
      marks.length = 0
      used = 0
      hold(stream, 2 * enqueueMs * 1e6)
      const t0 = performance.now()
      model.forward(ctx, t, T, R, rows.kind)
      enqueueMs = performance.now() - t0
      const end = event()
      end.record(stream)
      end.synchronize()
      if (r < 0) continue
      const total = new Map<ForwardPart, number>()
      for (const [i, m] of marks.entries()) {
        const next = events[i + 1 < marks.length ? marks[i + 1]!.at : used - 1]!
        total.set(m.part, (total.get(m.part) ?? 0) + next.elapsedSince(events[m.at]!) * 1000)
        if (r === 0) calls.set(m.part, (calls.get(m.part) ?? 0) + 1)
      }
      for (const [part, us] of total) perRep.set(part, [...(perRep.get(part) ?? []), us])
    }
    const parts = [...perRep].map(([part, us]) => ({ part, us: percentile(us, 0.5) }))
    const step = parts.reduce((a, p) => a + p.us, 0)
    return parts
      .map(({ part, us }) => {
        const b = bytes[part] ?? 0
        return { part, calls: calls.get(part) ?? 0, us, share: us / step, bytes: b, gbPerSecond: b > 0 ? b / us / 1000 : undefined }
      })
      .sort((a, b) => b.us - a.us)
  } finally {
    stream.synchronize()
    for (const b of made) b.dispose()
  }
}
