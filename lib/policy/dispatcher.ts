/**
 * The dispatcher: given a batch, which graph (if any) runs it. Semantics follow vLLM's
 * `CudagraphDispatcher`: keys are built once per runtime mode; a batch is padded to a capture size and
 * looked up in the FULL keys, then (relaxed for mixed batches) in the FULL and PIECEWISE keys.
 */
import { ArgumentError } from '../errors.js'
import { GraphConfig } from './config.js'
import {
  type BatchDescriptor,
  describeBatch,
  descriptorFromKey,
  descriptorKey,
  MAX_KEY_LORAS,
  MAX_KEY_TOKENS,
  packKeyUnchecked,
  relaxForMixed,
} from './descriptor.js'
import { DispatchStats } from './dispatch-stats.js'
import { decodeMode, GRAPH_MODES, type GraphMode, hasMode, mixedMode, type RuntimeMode, separateRoutine } from './graph-mode.js'
import type { DispatchPolicy } from './policy.js'

/** What a batch looks like beyond its token count. */
export interface DispatchOptions {
  /** Every request has the uniform decode query length (default false). */
  uniformDecode?: boolean
  /** LoRA adapters are active (default false). */
  hasLora?: boolean
  /** Distinct active adapters (default 0). */
  numActiveLoras?: number
  /** Runtime modes allowed for this batch (default FULL and PIECEWISE). */
  validModes?: readonly RuntimeMode[]
  /** Runtime modes excluded for this batch, e.g. `['FULL']` for cascade attention (default none). */
  invalidModes?: readonly RuntimeMode[]
}

/** The decision: the runtime mode and the descriptor of the graph to run (the unpadded batch for NONE). */
export interface DispatchResult {
  readonly mode: RuntimeMode
  readonly descriptor: BatchDescriptor
}

/** Anything that dispatches like a {@link Dispatcher} (see CompositeDispatcher, StreamDispatcher). */
export interface DispatcherLike {
  dispatch(numTokens: number, options?: DispatchOptions): DispatchResult
}

/** Descriptors to capture for one runtime mode, largest first. */
export interface CaptureGroup {
  mode: 'FULL' | 'PIECEWISE'
  descriptors: BatchDescriptor[]
}

/** Options of {@link Dispatcher}. */
export interface DispatcherOptions {
  /** Decides whether and how to use an available graph (default: always, FULL first, as vLLM). */
  policy?: DispatchPolicy
  /**
   * When true, a key counts as available to the policy only after {@link Dispatcher.markCaptured}
   * (the graph manager reports captures and evictions); when false, every key is (default false).
   */
  trackCaptures?: boolean
}

const NO_OPTIONS: DispatchOptions = Object.freeze({})
/** Eager results are cached for batches below this many tokens. */
const EAGER_CACHE = 1 << 16

/** Powers of two up to maxLoras + 1, and maxLoras + 1 itself (vLLM's captured active-LoRA counts). */
function capturedLoraCounts(maxLoras: number): number[] {
  const out: number[] = []
  for (let n = 1; n <= maxLoras + 1; n++) if ((n & (n - 1)) === 0 || n === maxLoras + 1) out.push(n)
  return out
}

/** Decides, per batch, the runtime mode and graph descriptor. Not thread-safe (JS has one thread). */
export class Dispatcher implements DispatcherLike {
  readonly config: GraphConfig
  readonly policy: DispatchPolicy | undefined
  readonly stats = new DispatchStats()
  readonly #trackCaptures: boolean
  #mode: GraphMode = 'NONE'
  #initialized = false
  #uniformLen = 1
  #loraCounts: number[] = []
  /** key -> the result to return, one map per runtime mode (no allocation on a hit). */
  readonly #full = new Map<number, DispatchResult>()
  readonly #piecewise = new Map<number, DispatchResult>()
  readonly #captured = new Set<number>()
  readonly #modes: RuntimeMode[] = []
  readonly #batches = new Map<number, BatchDescriptor>()
  /** Eager results by token count, made on first use: eager dispatches allocate nothing either. */
  readonly #eagerResults: (DispatchResult | undefined)[] = []
  #hasFull = false
  /** False inside peek. */
  #recording = true
  #padded_ = 0
  #loras_ = 0

  constructor(config: GraphConfig, options: DispatcherOptions = {}) {
    if (!(config instanceof GraphConfig)) throw new ArgumentError('config', 'a GraphConfig (GraphConfig.from({ ... }))', config)
    if (options === null || typeof options !== 'object') throw new ArgumentError('options', 'an object of dispatcher options', options)
    this.config = config
    this.policy = options.policy
    this.#trackCaptures = options.trackCaptures ?? false
  }

  /** Whether {@link Dispatcher.initializeKeys} ran. */
  get keysInitialized(): boolean {
    return this.#initialized
  }

  /** The graph mode keys were built for. */
  get mode(): GraphMode {
    return this.#mode
  }

  /** The active-LoRA cases graphs are captured for (0 = without LoRA). */
  get loraCases(): readonly number[] {
    const c = this.config
    if (c.maxLoras === 0) return [0]
    return c.specializeLora ? [0, ...capturedLoraCounts(c.maxLoras)] : [c.maxLoras + 1]
  }

  /**
   * Builds the capturable descriptors for `mode` (default the config's), where a uniform decode batch
   * has `uniformDecodeQueryLen` tokens per request (default 1 + numSpecTokens). Call again to rebuild.
   */
  initializeKeys(mode: GraphMode = this.config.mode, uniformDecodeQueryLen = 1 + this.config.numSpecTokens): void {
    if (!GRAPH_MODES.includes(mode)) throw new ArgumentError('mode', `one of ${GRAPH_MODES.join(', ')}`, mode)
    if (!Number.isInteger(uniformDecodeQueryLen) || uniformDecodeQueryLen < 1) {
      throw new ArgumentError('uniformDecodeQueryLen', 'a positive integer', uniformDecodeQueryLen)
    }
    this.#full.clear()
    this.#piecewise.clear()
    this.#captured.clear()
    this.#mode = mode
    this.#hasFull = hasMode(mode, 'FULL')
    this.#uniformLen = uniformDecodeQueryLen
    this.#loraCounts = this.loraCases.filter((n) => n > 0)
    const sizes = this.config.captureSizes
    if (mode !== 'NONE' && sizes.length > 0) {
      const mixed = mixedMode(mode)
      if (mixed !== 'NONE') {
        for (const bs of sizes) {
          for (const loras of this.loraCases) this.#addKey(mixed, relaxForMixed(this.#padded(bs, false, loras > 0, loras)))
        }
      }
      if (decodeMode(mode) === 'FULL' && separateRoutine(mode)) {
        const maxTokens = uniformDecodeQueryLen * this.config.maxNumSeqs
        for (const bs of sizes) {
          if (bs < uniformDecodeQueryLen || bs > maxTokens) continue
          for (const loras of this.loraCases) this.#addKey('FULL', this.#padded(bs, true, loras > 0, loras))
        }
      }
    }
    this.#initialized = true
  }

  #addKey(mode: RuntimeMode, d: BatchDescriptor): void {
    const map = mode === 'FULL' ? this.#full : this.#piecewise
    const k = descriptorKey(d)
    if (!map.has(k)) map.set(k, Object.freeze({ mode, descriptor: d }))
  }

  /** The padded descriptor of a batch (vLLM's `_create_padded_batch_descriptor`). */
  #padded(numTokens: number, uniformDecode: boolean, hasLora: boolean, loras: number): BatchDescriptor {
    const padded = this.config.paddedSize(numTokens)
    const u = this.#uniformLen
    if (uniformDecode && hasMode(this.#mode, 'FULL') && padded % u === 0) {
      return describeBatch({ numTokens: padded, numReqs: padded / u, uniform: true, hasLora, numActiveLoras: loras })
    }
    return describeBatch({ numTokens: padded, numReqs: Math.min(padded, this.config.maxNumSeqs), uniform: false, hasLora, numActiveLoras: loras })
  }

  /** Marks the graph for a dispatched descriptor as captured (with `trackCaptures`). */
  markCaptured(descriptor: BatchDescriptor): void {
    this.#captured.add(descriptorKey(descriptor))
  }

  /** Marks it as no longer captured (evicted). */
  markEvicted(descriptor: BatchDescriptor): void {
    this.#captured.delete(descriptorKey(descriptor))
  }

  /**
   * The runtime mode and graph descriptor for a batch of `numTokens`. NONE with the unpadded descriptor
   * when keys are not initialised, the mode is NONE, `numTokens` exceeds the largest capture size, no
   * allowed mode has a key, or the policy declines. Allocates nothing (results are shared, frozen objects;
   * eager ones for batches of 2^16 tokens and more excepted).
   */
  dispatch(numTokens: number, options: DispatchOptions = NO_OPTIONS): DispatchResult {
    // Every argument is checked before anything is counted: a refused call leaves the stats as they were.
    if (!(numTokens >= 0 && numTokens <= MAX_KEY_TOKENS && Number.isInteger(numTokens))) {
      throw new ArgumentError('numTokens', `an integer in 0..${MAX_KEY_TOKENS}`, numTokens)
    }
    if (options === null || typeof options !== 'object') throw new ArgumentError('options', 'an object of dispatch options', options)
    const valid = options.validModes
    const invalid = options.invalidModes
    if (valid !== undefined && !Array.isArray(valid))
      throw new ArgumentError('options.validModes', "an array of 'FULL' | 'PIECEWISE' | 'NONE', or undefined", valid)
    if (invalid !== undefined && !Array.isArray(invalid))
      throw new ArgumentError('options.invalidModes', "an array of 'FULL' | 'PIECEWISE' | 'NONE', or undefined", invalid)
    if (!this.#initialized || this.#mode === 'NONE' || numTokens > this.config.maxCaptureSize || numTokens === 0) return this.#eager(numTokens)

    const key = this.#batchKey(numTokens, options)
    const padded = this.#padded_
    const relaxed = packKeyUnchecked(padded, undefined, false, options.hasLora === true, this.#loras_, false)

    const allowFull = (valid === undefined || valid.includes('FULL')) && (invalid === undefined || !invalid.includes('FULL'))
    const allowPiecewise = (valid === undefined || valid.includes('PIECEWISE')) && (invalid === undefined || !invalid.includes('PIECEWISE'))
    const full = allowFull ? (this.#full.get(key) ?? this.#full.get(relaxed)) : undefined
    const piecewise = allowPiecewise ? this.#piecewise.get(relaxed) : undefined

    let result = full ?? piecewise
    const policy = this.policy
    if (result !== undefined && policy !== undefined) {
      const batch = this.#batchDescriptor(key)
      const modes = this.#modes
      modes.length = 0
      if (full) modes.push('FULL')
      if (piecewise) modes.push('PIECEWISE')
      const chosen = modes.length > 1 ? policy.selectMode(batch, modes) : modes[0]!
      result = chosen === 'PIECEWISE' ? piecewise! : full!
      const d = result.descriptor
      const available = !this.#trackCaptures || this.#captured.has(descriptorKey(d))
      if (!policy.shouldUseGraph(batch, available)) result = undefined
    }
    if (result === undefined) return this.#eager(numTokens)
    if (this.#recording) this.stats.record(result.mode, numTokens, padded)
    return result
  }

  /** What {@link Dispatcher.dispatch} would return, without counting it in the stats. */
  peek(numTokens: number, options: DispatchOptions = NO_OPTIONS): DispatchResult {
    this.#recording = false
    try {
      return this.dispatch(numTokens, options)
    } finally {
      this.#recording = true
    }
  }

  /**
   * The key of the padded batch (FULL-style: uniform with its request count for a uniform decode batch);
   * leaves the padded token count and effective LoRA count in #padded_ / #loras_.
   */
  #batchKey(numTokens: number, options: DispatchOptions): number {
    const c = this.config
    const hasLora = options.hasLora === true
    let loras = options.numActiveLoras ?? 0
    if (!(loras >= 0 && loras <= MAX_KEY_LORAS && Number.isInteger(loras))) {
      throw new ArgumentError('numActiveLoras', `an integer in 0..${MAX_KEY_LORAS}`, loras)
    }
    if (hasLora && loras > 0) {
      if (c.specializeLora) {
        const counts = this.#loraCounts
        let i = 0
        while (i < counts.length && counts[i]! < loras) i++
        if (i < counts.length) loras = counts[i]!
      } else loras = c.maxLoras + 1
    }
    const padded = c.paddedSize(numTokens)
    const u = this.#uniformLen
    const uniform = options.uniformDecode === true && this.#hasFull && padded % u === 0
    this.#padded_ = padded
    this.#loras_ = loras
    return packKeyUnchecked(padded, uniform ? padded / u : Math.min(padded, c.maxNumSeqs), uniform, hasLora, loras, false)
  }

  /** The (cached) descriptor of a batch key: what policies see. */
  #batchDescriptor(key: number): BatchDescriptor {
    let d = this.#batches.get(key)
    if (d === undefined) {
      d = descriptorFromKey(key)
      this.#batches.set(key, d)
    }
    return d
  }

  /**
   * Reports that a batch of `numTokens` (described by `options`, as at dispatch) ran in `mode` in
   * `latencyUs` µs, to the policy (when it learns). Batches above the largest capture size are ignored.
   */
  record(numTokens: number, mode: RuntimeMode, latencyUs: number, options: DispatchOptions = NO_OPTIONS): void {
    const policy = this.policy
    if (policy?.record === undefined || !this.#initialized || numTokens < 1 || numTokens > this.config.maxCaptureSize) return
    policy.record(this.#batchDescriptor(this.#batchKey(numTokens, options)), mode, latencyUs)
  }

  #eager(numTokens: number): DispatchResult {
    if (this.#recording) this.stats.record('NONE', numTokens, numTokens)
    if (numTokens >= EAGER_CACHE) return { mode: 'NONE', descriptor: describeBatch({ numTokens }) }
    let r = this.#eagerResults[numTokens]
    if (r === undefined) this.#eagerResults[numTokens] = r = Object.freeze({ mode: 'NONE', descriptor: describeBatch({ numTokens }) })
    return r
  }

  /** Whether a graph key exists for `descriptor` in runtime mode `mode`. */
  hasKey(mode: 'FULL' | 'PIECEWISE', d: BatchDescriptor): boolean {
    return (mode === 'FULL' ? this.#full : this.#piecewise).has(descriptorKey(d))
  }

  /** What to capture: PIECEWISE then FULL, each largest first (so smaller graphs reuse the larger's pool). */
  captureDescriptors(): CaptureGroup[] {
    const out: CaptureGroup[] = []
    for (const mode of ['PIECEWISE', 'FULL'] as const) {
      const descriptors = this.captureTargets()
        .filter((r) => r.mode === mode)
        .map((r) => r.descriptor)
      if (descriptors.length > 0) out.push({ mode, descriptors })
    }
    return out
  }

  /**
   * Every key as the result `dispatch` returns for it (the same object), largest batch first across modes,
   * so that a capture in this order lets each graph reuse the pool memory of the larger ones before it.
   */
  captureTargets(): DispatchResult[] {
    const order = (a: DispatchResult, b: DispatchResult) => {
      const x = a.descriptor
      const y = b.descriptor
      return y.numTokens - x.numTokens || (y.numReqs ?? 0) - (x.numReqs ?? 0) || y.numActiveLoras - x.numActiveLoras || (a.mode === 'PIECEWISE' ? -1 : 1)
    }
    return [...this.#piecewise.values(), ...this.#full.values()].sort(order)
  }
}
