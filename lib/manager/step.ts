/**
 * A wrapped model step: static input and output buffers sized for the most rows (read-back outputs in
 * pinned host memory the kernels write), pinned staging for host inputs, and `run`, which dispatches,
 * pads, copies in, replays and waits for the read-back outputs in one native call (see GraphManager).
 */

import { DeviceBuffer } from '../cuda/buffer.js'
import type { Device } from '../cuda/device.js'
import { type DType, fitsDType, type HostArray, type HostArrayOf } from '../cuda/dtype.js'
import { Event } from '../cuda/event.js'
import type { Graph } from '../cuda/graph.js'
import { HostStage } from '../cuda/host-stage.js'
import type { Stream } from '../cuda/stream.js'
import { ArgumentError, check } from '../errors.js'
import type { Dispatcher, DispatchOptions, DispatchResult } from '../policy/dispatcher.js'
import type { ManagerStats } from './manager-stats.js'
import {
  type BuffersOf,
  type DTypeOfSpec,
  type InputValue,
  type ParsedTensor,
  type Piece,
  parseTensorSpecs,
  type StepBatch,
  type StepContext,
  type StepSpec,
  type TensorSpec,
} from './step-spec.js'

/** How a run goes: a graph captured for its size, a graph for a larger size (padded), or eagerly. */
export type GraphUse = 'captured' | 'padded' | 'eager'

/** Options of {@link Step.run}: the batch's shape, as the dispatcher reads it. */
export interface RunOptions extends DispatchOptions {
  /** Tokens of real data in the inputs (rows of token inputs). */
  numTokens: number
  /** Requests of real data (rows of request inputs and outputs); default numTokens. */
  numReqs?: number
  /** Events to record around the forward on the GPU; see {@link StepTiming}. */
  timing?: StepTiming | undefined
  /**
   * Whether this run's kernels set the step's ready flag ({@link StepContext.readyFlag}; default: whenever
   * the step has one). A run that says false waits for its replay's end, as a step without a flag does; one
   * that says true but whose kernels leave the flag unset returns once the replay ends, up to a few µs later
   * than that wait would have.
   */
  readyFlag?: boolean | undefined
  /**
   * Launch this run's graph once more behind it, armed: it waits at its gate (an armable step,
   * `StepSpec.armable`) for the step's next run, which then stages its inputs and rings instead of
   * launching, so the host's launch is off the path from one step's outputs to the next step's start (a
   * decode loop). A FULL replay of a step with a read-back output only; elsewhere ignored. A run of another
   * size, or anything else put on the stream (or a wait for the whole device), first rings the armed replay
   * to run with the inputs the static buffers hold (the last run's): one more replay's time. Default false.
   */
  armNext?: boolean | undefined
}

/**
 * Events a run records on its stream just before and just after its forward (the graph's replay, its pieces,
 * or the eager forward): after the input copies, before the read-back. `end.elapsedSince(start)` is then
 * the forward's GPU time, in milliseconds (both created with `timing: true`); queued behind other work, it
 * holds no host time. A run with them takes four more native calls (the copies, each event, the replay and
 * the wait apart).
 */
export interface StepTiming {
  readonly start: Event
  readonly end: Event
}

/** Inputs of {@link Step.run}: host arrays, device buffers, or nothing (the static buffer is used as it is). */
export type RunInputs<I extends Record<string, TensorSpec>> = { readonly [K in keyof I]?: InputValue<I[K]> }

/** A captured graph (or, for PIECEWISE, one graph per graphable piece) for one dispatch result. @internal */
export interface GraphEntry {
  readonly step: ManagedStep
  readonly result: DispatchResult
  /** The (padded) batch it was captured for. */
  readonly batch: StepBatch
  /** FULL: one graph; PIECEWISE: one per graphable piece, in order. */
  readonly graphs: readonly Graph[]
  /** Scratch bytes its largest graph allocates from the pool (which graph holds the shared pool memory). */
  readonly scratchBytes: number
  /** Graph-pool memory accounted to it (what it added, plus what it inherited from evicted graphs), bytes. */
  poolBytes: number
  /** Device memory its executables added (the driver keeps it for later graphs after eviction), bytes. */
  readonly execBytes: number
  /** Static input addresses at capture (or at the last recapture), in input order. */
  addresses: readonly number[]
  /** Whether a replay checked them since the last capture, recapture or rebind (the manager's record). */
  checked: boolean
}

/**
 * What the graph manager uses of a step: not generic, so every `Step<I, O>` is one. The step never sees
 * its graph entries; the manager never touches the step's buffers. @internal
 */
export interface ManagedStep {
  readonly name: string
  readonly dispatcher: Dispatcher
  /** Most request rows a run can have. */
  readonly maxReqs: number
  /** Bytes of the static input and output buffers. */
  readonly staticBytes: number
  /** Whether each piece is graphable; undefined for a step without pieces. */
  readonly pieceGraphable: readonly boolean[] | undefined
  /** Scratch bytes the last forward or piece allocated. */
  readonly scratchBytes: number
  /** Static input names, in input order. */
  readonly inputNames: readonly string[]
  /** Current static input addresses, in input order. */
  inputAddresses(): readonly number[]
  /** Launches the gate an armable step's graphs begin with, in a capture of `batch` (others: nothing). */
  captureGate(batch: StepBatch): void
  /** The forward (or all pieces) at `batch`, eagerly or inside a capture; frees its scratch after. */
  callForward(batch: StepBatch): void
  /** Piece `index` at `batch`; frees its scratch after. */
  runPiece(index: number, batch: StepBatch): void
  /** Frees the step's graphs (through its owner) and its static buffers. */
  dispose(): void
}

/** What a step asks of its manager. @internal */
export interface StepOwner {
  readonly device: Device
  readonly stream: Stream
  readonly stats: ManagerStats
  /** The graph for `result`, address-checked (held, or captured now with captureOnMiss); undefined: run eagerly. */
  graphFor(step: ManagedStep, result: DispatchResult): GraphEntry | undefined
  /** Whether a graph for `result` is held, without using it. */
  hasGraph(step: ManagedStep, result: DispatchResult): boolean
  /** The step's static inputs changed: its graphs must be address-checked again before they replay. */
  inputsRebound(step: ManagedStep): void
  /** Drops every graph of `step`. */
  release(step: ManagedStep): void
}

/** Most inputs a step takes (the copy mask is one number). */
const MAX_INPUTS = 52
/** Most inputs of an armable step (the gate's doorbell names the inputs it copies in 24 bits). */
const GATE_INPUTS = 24

/** A batch descriptor a forward sees, mutable inside this module only. */
interface MutableBatch {
  numTokens: number
  numReqs: number
  realTokens: number
  realReqs: number
  uniformDecode: boolean
  mode: StepBatch['mode']
}

/**
 * A step wrapped by a {@link GraphManager}. Its static buffers live as long as it does; graphs captured
 * for it read and write them.
 */
export class Step<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>> {
  /** For logs and stats. */
  readonly name: string
  /** The static input buffers the graphs read (replaced by {@link Step.bindInput}). */
  readonly inputs: BuffersOf<I>
  /** The static output buffers the graphs write. */
  readonly outputs: BuffersOf<O>
  /** Decides per batch which graph runs; owned by this step. */
  readonly dispatcher: Dispatcher
  /** @internal whether each piece is graphable (undefined: no pieces) */
  readonly pieceGraphable: readonly boolean[] | undefined
  readonly #owner: StepOwner
  readonly #spec: StepSpec<I, O>
  readonly #pieces: readonly Piece<I, O>[] | undefined
  readonly #in: readonly ParsedTensor[]
  readonly #out: readonly ParsedTensor[]
  readonly #stage: HostStage
  /** Pinned host views of the read-back outputs, by name (empty: the step reads nothing back). */
  readonly #hostOut = new Map<string, HostArray>()
  /** Current static input addresses, in input order. */
  readonly #addresses: number[]
  readonly #ctx: StepContext<I, O>
  readonly #scratch: DeviceBuffer[] = []
  #scratchBytes = 0
  readonly #outViews = new Map<number, BuffersOf<O>>()
  readonly #pieceBatch: MutableBatch = { numTokens: 0, numReqs: 0, realTokens: 0, realReqs: 0, uniformDecode: false, mode: 'PIECEWISE' }
  readonly #maxTokens: number
  readonly #maxReqs: number
  #disposed = false

  /** @internal use {@link GraphManager.wrap} */
  constructor(owner: StepOwner, spec: StepSpec<I, O>, name: string, dispatcher: Dispatcher) {
    check(spec !== null && typeof spec === 'object', 'spec', 'a step spec', spec)
    check(spec.forward === undefined || typeof spec.forward === 'function', 'spec.forward', 'a function', spec.forward)
    check(spec.forward !== undefined || spec.pieces !== undefined, 'spec.forward', 'a forward function or pieces', undefined)
    if (spec.pieces !== undefined) {
      check(Array.isArray(spec.pieces) && spec.pieces.length > 0, 'spec.pieces', 'a non-empty array of pieces', spec.pieces)
      spec.pieces.forEach((p, i) => {
        check(
          p !== null && typeof p === 'object' && typeof p.run === 'function' && typeof p.graphable === 'boolean',
          `spec.pieces[${i}]`,
          '{ name, graphable, run }',
          p,
        )
      })
    }
    const ins = parseTensorSpecs('inputs', spec.inputs)
    const outs = parseTensorSpecs('outputs', spec.outputs)
    check(spec.readyFlag === undefined || typeof spec.readyFlag === 'boolean', 'spec.readyFlag', 'a boolean', spec.readyFlag)
    // The flag says when the read-back outputs hold their values: a step without one has nothing to say it of.
    if (spec.readyFlag === true)
      check(
        outs.some((t) => t.readBack),
        'spec.readyFlag',
        'true only beside a read-back output',
        spec.readyFlag,
      )
    check(ins.length <= MAX_INPUTS, 'spec.inputs', `at most ${MAX_INPUTS} inputs`, `${ins.length}`)
    check(spec.armable === undefined || typeof spec.armable === 'boolean', 'spec.armable', 'a boolean', spec.armable)
    // The gate's doorbell word names the inputs it copies in 24 bits.
    if (spec.armable === true) check(ins.length <= GATE_INPUTS, 'spec.armable', `true only for a step of at most ${GATE_INPUTS} inputs`, `${ins.length} inputs`)
    // Token buffers must hold the largest size this step's dispatcher captures; request rows may be fewer
    // (a prefill step of one request): its graphs compute at most that many (GraphManager caps them).
    const needTokens = dispatcher.config.maxCaptureSize
    for (const t of [...ins, ...outs]) {
      if (t.per !== 'token') continue
      check(
        t.rows >= needTokens,
        `${ins.includes(t) ? 'inputs' : 'outputs'}.${t.name}.rows`,
        `at least ${needTokens} token rows (the config captures batches that large)`,
        t.rows,
      )
    }
    this.#maxTokens = Math.min(...[...ins, ...outs].filter((t) => t.per === 'token').map((t) => t.rows))
    this.#maxReqs = Math.min(...[...ins, ...outs].filter((t) => t.per === 'request').map((t) => t.rows))
    this.#owner = owner
    this.#spec = spec
    this.#in = ins
    this.#out = outs
    this.#pieces = spec.pieces
    this.pieceGraphable = spec.pieces?.map((p) => p.graphable)
    this.name = name
    this.dispatcher = dispatcher

    const dev = owner.device
    const made: DeviceBuffer[] = []
    try {
      const zeroed = (b: DeviceBuffer) => {
        owner.stream.memset(b, 0)
        return b
      }
      const length = (t: ParsedTensor) => t.rows * t.width
      // The inputs in one allocation, laid out as the pinned staging area is: one copy fills them all.
      const packed = ins.length > 0 ? dev.allocPacked(ins.map((t) => ({ dtype: t.dtype, length: length(t) }))) : []
      made.push(...packed)
      this.inputs = Object.fromEntries(ins.map((t, i) => [t.name, zeroed(packed[i]!)])) as BuffersOf<I>
      // Read-back outputs live in the stage's pinned area, which the kernels write directly.
      const backs = outs.filter((t) => t.readBack)
      const stage = HostStage.create(
        dev,
        ins.map((t) => ({ buffer: this.inputs[t.name]!, dtype: t.dtype, rowBytes: t.rowBytes, perRequest: t.per === 'request' })),
        backs.map((t) => ({ dtype: t.dtype, length: length(t) })),
        spec.readyFlag === true,
        spec.armable === true,
      )
      this.#stage = stage
      for (const [j, t] of backs.entries()) this.#hostOut.set(t.name, stage.outputs[j]!)
      const alloc = (t: ParsedTensor) => {
        if (t.readBack) return stage.outputBuffers[backs.indexOf(t)]!
        const b = dev.alloc(t.dtype, length(t))
        made.push(b)
        return b
      }
      this.outputs = Object.freeze(Object.fromEntries(outs.map((t) => [t.name, zeroed(alloc(t))]))) as BuffersOf<O>
      this.#addresses = ins.map((t) => this.inputs[t.name]!.address)
    } catch (e) {
      for (const b of made) b.dispose()
      throw e
    }
    const scratch = this.#scratch
    const stream = owner.stream
    this.#ctx = Object.freeze({
      device: dev,
      stream,
      inputs: this.inputs,
      outputs: this.outputs,
      readyFlag: this.#stage.readyFlag,
      scratch: <D extends DType>(dtype: D, length: number): DeviceBuffer<D> => {
        const b = stream.allocAsync(dtype, length)
        scratch.push(b)
        this.#scratchBytes += b.byteLength
        return b
      },
    })
  }

  /** The step's ready flag ({@link StepContext.readyFlag}; a spec without `readyFlag` has none). */
  get readyFlag(): DeviceBuffer<'i32'> | undefined {
    return this.#stage.readyFlag
  }

  /** Most token rows a run can have. */
  get maxTokens(): number {
    return this.#maxTokens
  }

  /** Most request rows a run can have (Infinity when no tensor counts requests). */
  get maxReqs(): number {
    return this.#maxReqs
  }

  /** Whether {@link Step.dispose} ran. */
  get disposed(): boolean {
    return this.#disposed
  }

  /** Bytes of the static input and output buffers. */
  get staticBytes(): number {
    let n = 0
    for (const b of [...Object.values(this.inputs), ...Object.values(this.outputs)] as DeviceBuffer[]) n += b.byteLength
    return n
  }

  /**
   * Runs the step for a batch of `options.numTokens` tokens and returns views of the outputs' real rows
   * (device buffers; shared between runs of the same size: read them before the next run).
   *
   * Dispatches (the config's sizes and the policy), pads to the chosen capture size, copies `inputs` into
   * the static buffers (pad rows take each input's `pad` value), and replays: host-array inputs and the
   * replay go in one native call. Sizes above the largest capture size, NONE mode, a policy's no, or a
   * missing graph (without `captureOnMiss`) run the same forward eagerly at the real size.
   *
   * A step with read-back outputs returns once their rows are in {@link Step.hostOutput} (a FULL graph
   * waits for them in the replay's native call); its recorded latency then includes that wait.
   */
  run(inputs: RunInputs<I>, options: RunOptions): BuffersOf<O> {
    const t0 = performance.now()
    if (this.#disposed) throw new ArgumentError('step', 'a live step', undefined, { message: "argument 'step': expected a live step, got a disposed one" })
    check(options !== null && typeof options === 'object', 'options', '{ numTokens, ... }', options)
    const numTokens = options.numTokens
    // Checked first, messages built only on failure: a replay allocates nothing.
    if (!(Number.isInteger(numTokens) && numTokens >= 1 && numTokens <= this.#maxTokens))
      check(false, 'options.numTokens', `an integer in 1..${this.#maxTokens}`, numTokens)
    const numReqs = options.numReqs ?? numTokens
    if (!(Number.isInteger(numReqs) && numReqs >= 1 && numReqs <= numTokens && numReqs <= this.#maxReqs)) {
      check(false, 'options.numReqs', `an integer in 1..${Math.min(numTokens, this.#maxReqs)}`, numReqs)
    }
    check(inputs !== null && typeof inputs === 'object', 'inputs', 'a record of input values', inputs)
    const timing = options.timing
    if (timing !== undefined && !(timing !== null && typeof timing === 'object' && timing.start instanceof Event && timing.end instanceof Event)) {
      check(false, 'options.timing', '{ start, end }: two Events', timing)
    }
    const owner = this.#owner
    const d = this.dispatcher.dispatch(numTokens, options)
    const entry = d.mode === 'NONE' ? undefined : owner.graphFor(this, d)
    const stats = owner.stats
    let mode = d.mode
    if (entry !== undefined) {
      const b = entry.batch
      const mask = this.#stageInputs(inputs, numTokens, numReqs, b.numTokens, b.numReqs)
      const graphable = this.pieceGraphable
      const piecewise = d.mode === 'PIECEWISE' && graphable !== undefined
      const first = !piecewise || graphable[0] ? entry.graphs[0] : undefined
      // One native call copies, replays and waits, unless events go between (timing) or pieces follow.
      const whole = !piecewise && timing === undefined
      this.#stage.launch(
        owner.stream,
        timing === undefined ? first : undefined,
        b.numTokens,
        b.numReqs,
        mask,
        whole,
        options.readyFlag !== false,
        true,
        options.armNext === true,
      )
      if (timing !== undefined) {
        timing.start.record(owner.stream)
        first?.launch(owner.stream)
      }
      if (piecewise) this.#runPieces(entry, numTokens, numReqs)
      timing?.end.record(owner.stream)
      if (!whole) this.#stage.readBack(owner.stream)
      stats.replays++
      stats.paddingTokens += b.numTokens - numTokens
    } else {
      mode = 'NONE'
      const mask = this.#stageInputs(inputs, numTokens, numReqs, numTokens, numReqs)
      this.#stage.launch(owner.stream, undefined, numTokens, numReqs, mask, false)
      timing?.start.record(owner.stream)
      this.callForward({ numTokens, numReqs, realTokens: numTokens, realReqs: numReqs, uniformDecode: options.uniformDecode === true, mode })
      timing?.end.record(owner.stream)
      this.#stage.readBack(owner.stream)
      stats.eagerRuns++
    }
    const us = (performance.now() - t0) * 1000
    ;(entry !== undefined ? stats.replayWindow : stats.eagerWindow).add(us)
    if (this.dispatcher.policy?.record !== undefined) this.dispatcher.record(numTokens, mode, us, options)
    return this.#outputsFor(numTokens, numReqs)
  }

  /**
   * How a run of `numTokens` tokens would go now, without running or counting it: `'captured'` (a graph
   * of that size), `'padded'` (a graph of a larger size) or `'eager'`.
   */
  graphUse(numTokens: number, options: DispatchOptions = {}): GraphUse {
    const d = this.dispatcher.peek(numTokens, options)
    if (d.mode === 'NONE' || !this.#owner.hasGraph(this, d)) return 'eager'
    return d.descriptor.numTokens === numTokens ? 'captured' : 'padded'
  }

  /**
   * The pinned host memory the next {@link Step.run} copies input `name` from (as many elements as the
   * static buffer). Write an input here and pass this same array to `run`, and nothing is copied on the
   * host: only the DMA to the device remains, as with a pinned tensor in PyTorch. Two areas alternate
   * between runs, so ask again before each run.
   */
  staging<K extends keyof I & string>(name: K): InputValue<I[K]> & HostArray {
    const i = this.#in.findIndex((t) => t.name === name)
    check(i >= 0, 'name', `an input of this step (${this.#in.map((t) => t.name).join(', ')})`, name)
    return this.#stage.input(i) as InputValue<I[K]> & HostArray
  }

  /**
   * The pinned host memory of read-back output `name` (an output whose spec has `readBack: true`; its
   * static buffer is this memory, mapped for the device), as many elements as the buffer: after each
   * {@link Step.run}, its first rows (the run's real rows) hold what the run wrote, until the next run.
   * The same array every time: keep it, copy what you keep.
   */
  hostOutput<K extends keyof O & string>(name: K): HostArrayOf[DTypeOfSpec<O[K]> & DType] {
    const v = this.#hostOut.get(name)
    if (v === undefined) check(false, 'name', `a read-back output of this step (${[...this.#hostOut.keys()].join(', ') || 'none'})`, name)
    return v as HostArrayOf[DTypeOfSpec<O[K]> & DType]
  }

  /**
   * Makes `buffer` the static buffer of input `name` (same dtype and length): for chaining steps without
   * copies. Graphs captured before read the old buffer, so their next replay fails the input-address check
   * until {@link GraphManager.recapture} re-captures them.
   */
  bindInput<K extends keyof I & string>(name: K, buffer: BuffersOf<I>[K]): void {
    const i = this.#in.findIndex((t) => t.name === name)
    check(i >= 0, 'name', `an input of this step (${this.#in.map((t) => t.name).join(', ')})`, name)
    const t = this.#in[i]!
    check(
      buffer instanceof DeviceBuffer && buffer.dtype === t.dtype && buffer.length === t.rows * t.width,
      'buffer',
      `a ${t.dtype} DeviceBuffer of ${t.rows * t.width} elements`,
      buffer,
    )
    this.#stage.rebind(i, buffer)
    ;(this.inputs as Record<string, DeviceBuffer>)[name] = buffer
    this.#addresses[i] = buffer.address
    this.#owner.inputsRebound(this)
  }

  /** Frees the step's graphs and static buffers (buffers bound with bindInput stay the caller's). */
  dispose(): void {
    if (this.#disposed) return
    this.#owner.release(this)
    this.#disposed = true
    for (const b of [...Object.values(this.inputs), ...Object.values(this.outputs)] as DeviceBuffer[]) {
      if (!b.disposed && b.graphUses === 0) b.dispose()
    }
  }

  /** @internal current static input addresses, in input order */
  inputAddresses(): readonly number[] {
    return this.#addresses
  }

  /** @internal the static input names, in input order */
  get inputNames(): readonly string[] {
    return this.#in.map((t) => t.name)
  }

  /** @internal the forward (or all pieces) at `batch`, eagerly or inside a capture; frees scratch after. */
  callForward(batch: StepBatch): void {
    const spec = this.#spec
    this.#withScratch(() => {
      if (spec.forward !== undefined) spec.forward(this.#ctx, batch)
      else for (const p of this.#pieces!) p.run(this.#ctx, batch)
    })
  }

  /** @internal the gate, first in a graph of this step at `batch` being captured (an armable step); else nothing */
  captureGate(batch: StepBatch): void {
    if (this.#stage.bell) this.#stage.captureGate(this.#owner.stream, batch.numTokens, batch.numReqs)
  }

  /** @internal piece `index` at `batch`; frees its scratch after. */
  runPiece(index: number, batch: StepBatch): void {
    const piece = this.#pieces![index]!
    this.#withScratch(() => piece.run(this.#ctx, batch))
  }

  /** @internal scratch bytes the last forward or piece allocated */
  get scratchBytes(): number {
    return this.#scratchBytes
  }

  #withScratch(fn: () => void): void {
    this.#scratchBytes = 0
    let failed = false
    let failure: unknown
    try {
      fn()
    } catch (e) {
      failed = true
      failure = e
    }
    // Every scratch buffer is freed, newest first. After a failure (a capture may be invalidated) freeing
    // can fail too: the first error is the one thrown.
    const s = this.#scratch
    const stream = this.#owner.stream
    for (let i = s.length - 1; i >= 0; i--) {
      try {
        stream.freeAsync(s[i]!)
      } catch (e) {
        if (!failed) {
          failed = true
          failure = e
        }
      }
    }
    s.length = 0
    if (failed) throw failure
  }

  /** Writes host inputs into the current staging area with pad rows; copies device inputs. Returns the copy mask. */
  #stageInputs(inputs: RunInputs<I>, realTokens: number, realReqs: number, tokens: number, reqs: number): number {
    let mask = 0
    const ins = this.#in
    for (let i = 0; i < ins.length; i++) {
      const t = ins[i]!
      const v = (inputs as Record<string, unknown>)[t.name]
      if (v === undefined) continue
      const real = (t.per === 'token' ? realTokens : realReqs) * t.width
      const padded = (t.per === 'token' ? tokens : reqs) * t.width
      if (v instanceof DeviceBuffer) {
        this.#copyDevice(t, v, real, padded)
        continue
      }
      if (!ArrayBuffer.isView(v) || !fitsDType(v as HostArray, t.dtype) || (v as HostArray).length < real) {
        throw new ArgumentError(`inputs.${t.name}`, `a host array for ${t.dtype} with at least ${real} elements or a DeviceBuffer`, v)
      }
      const view = this.#stage.input(i) as Float32Array
      const src = v as Float32Array
      // An input written straight into staging (Step.staging) is already in place. One that fits is copied
      // whole (rows past `real` are padding, overwritten below, or never copied to the device): a subarray
      // would be an allocation every run.
      if (src !== view) view.set(src.length <= view.length ? src : src.subarray(0, real))
      if (padded > real) view.fill(t.pad as number, real, padded)
      mask += 2 ** i
    }
    return mask
  }

  /** Copies `real` elements of a device input into the static buffer and pads up to `padded` (not the hot path). */
  #copyDevice(t: ParsedTensor, v: DeviceBuffer, real: number, padded: number): void {
    const dst = this.inputs[t.name]!
    if (v.address === dst.address) return
    check(v.dtype === t.dtype && v.length >= real, `inputs.${t.name}`, `a ${t.dtype} DeviceBuffer of at least ${real} elements`, v)
    const s = this.#owner.stream
    s.copy(dst.view(0, real), v.length === real ? v : v.view(0, real))
    if (padded > real) {
      const pad = dst.view(real, padded - real)
      if (t.pad === 0 || t.pad === 0n) s.memset(pad, 0)
      else if (t.dtype === 'f32' || t.dtype === 'i32' || t.dtype === 'u32' || t.dtype === 'u8') s.fill(pad, t.pad as number)
      else check(false, `inputs.${t.name}`, `a host array (a DeviceBuffer input pads only with 0 for ${t.dtype})`, v)
    }
  }

  /** The pieces after the first: graphable ones replay, the others run eagerly at the real size. */
  #runPieces(entry: GraphEntry, realTokens: number, realReqs: number): void {
    const graphable = this.pieceGraphable!
    const stream = this.#owner.stream
    const b = this.#pieceBatch
    b.numTokens = entry.batch.numTokens
    b.numReqs = entry.batch.numReqs
    b.realTokens = realTokens
    b.realReqs = realReqs
    b.uniformDecode = entry.batch.uniformDecode
    let g = graphable[0] ? 1 : 0
    if (!graphable[0]) this.runPiece(0, b)
    for (let i = 1; i < graphable.length; i++) {
      if (graphable[i]) entry.graphs[g++]!.launch(stream)
      else this.runPiece(i, b)
    }
  }

  /** Views of the outputs' real rows, made once per size. */
  #outputsFor(tokens: number, reqs: number): BuffersOf<O> {
    const key = tokens * 0x200000 + reqs
    let o = this.#outViews.get(key)
    if (o === undefined) {
      o = Object.freeze(
        Object.fromEntries(
          this.#out.map((t) => {
            const b = this.outputs[t.name]!
            const n = (t.per === 'token' ? tokens : reqs) * t.width
            return [t.name, n === b.length ? b : b.view(0, n)]
          }),
        ),
      ) as BuffersOf<O>
      this.#outViews.set(key, o)
    }
    return o
  }
}
