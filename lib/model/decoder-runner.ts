/**
 * A {@link DecoderModel} run through a {@link GraphManager}: a prefill step (the tokens of one request,
 * graphs keyed by padded token count) and a decode step (one token for each of many requests, graphs
 * keyed by padded request count). Both steps write the same KV cache.
 */

import { check } from '../errors.js'
import type { GraphManager, WarmupOptions, WarmupResult } from '../manager/graph-manager.js'
import type { GraphUse, Step, StepTiming } from '../manager/step.js'
import type { DecoderModel, StepKind } from './decoder-model.js'
import { type SamplingParams, type SamplingRows, samplingRows, setSampling } from './sampling.js'

/** Options of {@link DecoderRunner}. */
export interface DecoderRunnerOptions {
  /** Most prompt tokens one prefill step takes (default min(512, maxSeqLen)). */
  maxPrefillTokens?: number
  /** Most requests one decode step takes (default the model's slots). */
  maxBatch?: number
  /** Most requests one prefill step takes (default min(16, maxBatch, maxPrefillTokens)). */
  maxPrefillReqs?: number
  /**
   * Whether the decode step's graphs begin with the doorbell gate (`StepSpec.armable`), so that
   * `decode(..., armNext)` launches the next step's replay ahead (default true). A runner whose caller never
   * arms (a server, which does not know its next batch) saves the gate's reads over the bus: an unarmed
   * step took 1.002-1.006x the time of one without the gate on an H200.
   */
  armable?: boolean
}

const stepSpec = (model: DecoderModel, name: string, tokens: number, reqs: number) => {
  const dummy = model.slots
  return {
    name,
    inputs: {
      tokens: { dtype: 'i32', rows: tokens },
      positions: { dtype: 'i32', rows: tokens },
      // Padding rows write their keys and values into the spare slot, never into a live request's.
      slots: { dtype: 'i32', rows: tokens, pad: dummy },
      last: { dtype: 'i32', rows: reqs, per: 'request' },
      // Padding rows are greedy (temperature 0).
      sampling: { dtype: 'f32', rows: reqs, width: 3, per: 'request' },
      seeds: { dtype: 'u32', rows: reqs, per: 'request' },
    },
    outputs: {
      // Read back by the replay's own native call: one call per step, tokens on the host when it returns.
      next: { dtype: 'i32', rows: reqs, per: 'request', readBack: true },
      logits: { dtype: 'f32', rows: reqs, width: model.config.vocab, per: 'request' },
    },
  } as const
}
type DecoderStep = Step<ReturnType<typeof stepSpec>['inputs'], ReturnType<typeof stepSpec>['outputs']>

/**
 * What one step's runs reuse, so a run allocates nothing: its options, its inputs record, and views of the
 * first n next tokens of its pinned read-back, by n.
 */
interface StepCall {
  readonly step: DecoderStep
  readonly options: { numTokens: number; numReqs: number; uniformDecode: boolean; timing: StepTiming | undefined; readyFlag: boolean; armNext: boolean }
  readonly inputs: { tokens: Int32Array; positions: Int32Array; slots: Int32Array; last: Int32Array; sampling: Float32Array; seeds: Uint32Array }
  readonly next: readonly Int32Array[]
}

function stepCall(step: DecoderStep, maxReqs: number, last: Int32Array, uniformDecode: boolean, greedy: SamplingRows): StepCall {
  const empty = new Int32Array(0)
  const next = step.hostOutput('next')
  return {
    step,
    options: { numTokens: 1, numReqs: 1, uniformDecode, timing: undefined, readyFlag: false, armNext: false },
    inputs: { tokens: empty, positions: empty, slots: empty, last, sampling: greedy.params, seeds: greedy.seeds },
    next: Array.from({ length: maxReqs + 1 }, (_, k) => next.subarray(0, k)),
  }
}

/** Runs `c` for `n` requests over `numTokens` token rows; returns their next tokens (pinned, reused). */
function runCall(
  c: StepCall,
  numTokens: number,
  n: number,
  tokens: Int32Array,
  positions: Int32Array,
  slots: Int32Array,
  sampling: SamplingRows,
  timing?: StepTiming,
  readyFlag = false,
  armNext = false,
): Int32Array {
  c.options.numTokens = numTokens
  c.options.numReqs = n
  c.options.timing = timing
  c.options.readyFlag = readyFlag
  c.options.armNext = armNext
  c.inputs.tokens = tokens
  c.inputs.positions = positions
  c.inputs.slots = slots
  c.inputs.sampling = sampling.params
  c.inputs.seeds = sampling.seeds
  c.step.run(c.inputs, c.options)
  return c.next[n]!
}

/** Prefill and decode of one model on one manager (graphs when its config has them, else eager). */
export class DecoderRunner {
  readonly model: DecoderModel
  readonly manager: GraphManager
  readonly prefillStep: DecoderStep
  readonly decodeStep: DecoderStep
  readonly maxPrefillTokens: number
  readonly maxPrefillReqs: number
  readonly maxBatch: number
  /** 0, 1, 2, ...: each decode request's logits row is its own token row. */
  readonly #iota: Int32Array
  /** One-request prefill arguments: slot, start, length. */
  readonly #one = { slot: new Int32Array(1), start: new Int32Array(1), length: new Int32Array(1) }
  /** Each prefill request's last token row. */
  readonly #last: Int32Array
  readonly #prefill: StepCall
  readonly #decode: StepCall
  /** All-greedy sampling rows, for steps given none. */
  readonly #greedy: SamplingRows

  constructor(model: DecoderModel, manager: GraphManager, options: DecoderRunnerOptions = {}) {
    this.model = model
    this.manager = manager
    const maxPrefill = options.maxPrefillTokens ?? Math.min(512, model.maxSeqLen)
    check(
      Number.isInteger(maxPrefill) && maxPrefill >= 1 && maxPrefill <= model.maxSeqLen,
      'maxPrefillTokens',
      `an integer in 1..${model.maxSeqLen} (maxSeqLen)`,
      maxPrefill,
    )
    check(options.armable === undefined || typeof options.armable === 'boolean', 'armable', 'a boolean', options.armable)
    const maxBatch = options.maxBatch ?? model.slots
    check(Number.isInteger(maxBatch) && maxBatch >= 1 && maxBatch <= model.slots, 'maxBatch', `an integer in 1..${model.slots} (slots)`, maxBatch)
    const maxPrefillReqs = options.maxPrefillReqs ?? Math.min(16, maxBatch, maxPrefill)
    check(
      Number.isInteger(maxPrefillReqs) && maxPrefillReqs >= 1 && maxPrefillReqs <= Math.min(maxBatch, maxPrefill),
      'maxPrefillReqs',
      `an integer in 1..${Math.min(maxBatch, maxPrefill)} (maxBatch and maxPrefillTokens)`,
      maxPrefillReqs,
    )
    this.maxPrefillTokens = maxPrefill
    this.maxPrefillReqs = maxPrefillReqs
    this.maxBatch = maxBatch
    const wrap = (kind: StepKind, tokens: number, reqs: number) =>
      manager.wrap({
        ...stepSpec(model, kind, tokens, reqs),
        // A decode step's LM head may publish its tokens before sampling's launch ends the graph (ForwardTensors.ready).
        readyFlag: kind === 'decode',
        // A decode loop launches each step's replay before the last step's tokens are back (RunOptions.armNext).
        armable: kind === 'decode' && options.armable !== false,
        forward: (ctx, b) => model.forward(ctx, { ...ctx.inputs, ...ctx.outputs, ready: ctx.readyFlag }, b.numTokens, b.numReqs, kind),
      })
    this.prefillStep = wrap('prefill', maxPrefill, maxPrefillReqs)
    this.decodeStep = wrap('decode', maxBatch, maxBatch)
    this.#iota = Int32Array.from({ length: maxBatch }, (_, i) => i)
    this.#last = new Int32Array(maxPrefillReqs)
    this.#greedy = samplingRows(maxBatch)
    this.#prefill = stepCall(this.prefillStep, maxPrefillReqs, this.#last, false, this.#greedy)
    this.#decode = stepCall(this.decodeStep, maxBatch, this.#iota, true, this.#greedy)
  }

  /** Captures the prefill ladder, then the decode ladder (largest first, so decode reuses the pool). */
  async warmup(options: WarmupOptions = {}): Promise<WarmupResult> {
    const a = await this.manager.warmup(this.prefillStep, options)
    const b = await this.manager.warmup(this.decodeStep, options)
    return { captured: a.captured + b.captured, failed: a.failed + b.failed, seconds: a.seconds + b.seconds, bytes: a.bytes + b.bytes }
  }

  /** Graphs steps found missing (evicted, or never captured) and so ran eagerly; see captureMissed. */
  get missedGraphs(): number {
    return this.manager.missedGraphs(this.decodeStep) + this.manager.missedGraphs(this.prefillStep)
  }

  /**
   * Captures up to `max` graphs steps found missing, decode first (rolling graphs: a server calls this
   * in idle time, with no request in flight, since the warm-up runs write the KV cache of whatever slots
   * the static inputs hold). Returns how many were captured.
   */
  captureMissed(max = 1): number {
    const n = this.manager.captureMissed(this.decodeStep, max)
    return n < max ? n + this.manager.captureMissed(this.prefillStep, max - n) : n
  }

  /** How a prefill of `numTokens` tokens runs now (no side effects). */
  prefillUse(numTokens: number): GraphUse {
    return this.prefillStep.graphUse(numTokens)
  }

  /** How a decode step of `numReqs` requests runs now (no side effects). */
  decodeUse(numReqs: number): GraphUse {
    return this.decodeStep.graphUse(numReqs, { uniformDecode: true })
  }

  /** The vocabulary size: token ids are 0..vocab-1. */
  get vocab(): number {
    return this.model.config.vocab
  }

  /** Longest sequence (prompt and generated tokens) a request can have. */
  get maxSeqLen(): number {
    return this.model.maxSeqLen
  }

  /** KV-cache slots: requests that can be in flight at once. */
  get slots(): number {
    return this.model.slots
  }

  /**
   * Runs `tokens` (ids in 0..vocab-1) of the request in `slot` at positions `start`, `start + 1`, ...,
   * writing their keys and values, and returns the next token (greedy unless `sampling` says otherwise:
   * its row 0). `timing`: events recorded around the step's forward on the GPU ({@link StepTiming}). Waits
   * for the result.
   */
  prefill(slot: number, tokens: Int32Array, start = 0, sampling: SamplingRows = this.#greedy, timing?: StepTiming): number {
    const one = this.#one
    one.slot[0] = slot
    one.start[0] = start
    one.length[0] = tokens instanceof Int32Array ? tokens.length : 0
    return this.prefillBatch(1, one.slot, one.start, one.length, tokens, sampling, timing)[0]!
  }

  /**
   * A prompt of any length into `slot` from position 0: prefill steps of at most maxPrefillTokens each
   * (a start above 0 continues the prompt); returns the next token after the whole prompt. Waits.
   */
  prefillPrompt(slot: number, tokens: Int32Array, sampling: SamplingRows = this.#greedy): number {
    if (!(tokens instanceof Int32Array && tokens.length >= 1)) check(false, 'tokens', 'a non-empty Int32Array of token ids', tokens)
    let next = 0
    for (let at = 0; at < tokens.length; at += this.maxPrefillTokens) next = this.prefill(slot, tokens.subarray(at, at + this.maxPrefillTokens), at, sampling)
    return next
  }

  /**
   * One prefill step for `n` requests: request i's `lengths[i]` tokens (the next ones of `tokens`, which
   * holds them back to back) go into `slots[i]` at positions `starts[i]`, `starts[i] + 1`, ... (a start
   * above 0 continues a prompt split over steps). Returns each request's next token (a reused array: copy
   * what you keep), picked as row i of `sampling` says (default greedy). `timing`: as {@link prefill}'s.
   * Waits for the result.
   */
  prefillBatch(
    n: number,
    slots: Int32Array,
    starts: Int32Array,
    lengths: Int32Array,
    tokens: Int32Array,
    sampling: SamplingRows = this.#greedy,
    timing?: StepTiming,
  ): Int32Array {
    // Checked first, messages built only on failure: a step allocates nothing.
    if (!(Number.isInteger(n) && n >= 1 && n <= this.maxPrefillReqs)) check(false, 'n', `an integer in 1..${this.maxPrefillReqs} (maxPrefillReqs)`, n)
    if (
      !(
        slots instanceof Int32Array &&
        slots.length >= n &&
        starts instanceof Int32Array &&
        starts.length >= n &&
        lengths instanceof Int32Array &&
        lengths.length >= n
      )
    ) {
      check(false, 'slots/starts/lengths', `Int32Arrays of at least ${n} elements`, [slots, starts, lengths])
    }
    let total = 0
    for (let r = 0; r < n; r++) {
      const len = lengths[r]!
      this.#checkSlot(slots[r]!, starts[r]!, len)
      total += len
    }
    if (total > this.maxPrefillTokens) check(false, 'lengths', `at most ${this.maxPrefillTokens} tokens in all (maxPrefillTokens)`, total)
    this.#checkTokens(tokens, total)
    this.#checkSampling(sampling, n)
    const s = this.prefillStep
    const positions = s.staging('positions') as Int32Array
    const slotRows = s.staging('slots') as Int32Array
    const last = this.#last
    for (let r = 0, t = 0; r < n; r++) {
      const len = lengths[r]!
      const start = starts[r]!
      for (let i = 0; i < len; i++) positions[t + i] = start + i
      slotRows.fill(slots[r]!, t, t + len)
      t += len
      last[r] = t - 1
    }
    return runCall(this.#prefill, total, n, tokens, positions, slotRows, sampling, timing)
  }

  /**
   * One decode step for the first `n` entries of `slots`, `tokens` and `positions` (each request's new
   * token and its position); returns the next tokens (a reused array: copy what you keep), picked as
   * the rows of `sampling` say (default greedy). `timing`: events recorded around the step's forward on the
   * GPU ({@link StepTiming}). `armNext`: the caller's next call is a decode step of the same `n` (a loop),
   * so this step's replay is launched once more behind it, armed, and that call only stages and rings
   * (`RunOptions.armNext`); anything else the stream runs first costs one more step's replay.
   */
  decode(
    n: number,
    slots: Int32Array,
    tokens: Int32Array,
    positions: Int32Array,
    sampling: SamplingRows = this.#greedy,
    timing?: StepTiming,
    armNext = false,
  ): Int32Array {
    // Checked first, messages built only on failure: a step allocates nothing.
    if (!(Number.isInteger(n) && n >= 1 && n <= this.maxBatch)) check(false, 'n', `an integer in 1..${this.maxBatch} (maxBatch)`, n)
    if (!(slots instanceof Int32Array && slots.length >= n && positions instanceof Int32Array && positions.length >= n)) {
      check(false, 'slots/positions', `Int32Arrays of at least ${n} elements`, [slots, positions])
    }
    this.#checkTokens(tokens, n)
    this.#checkSampling(sampling, n)
    for (let i = 0; i < n; i++) {
      const s = slots[i]!
      const p = positions[i]!
      if (!(s >= 0 && s < this.model.slots && p >= 0 && p < this.model.maxSeqLen)) {
        check(false, `slots[${i}] / positions[${i}]`, `a slot in 0..${this.model.slots - 1} and a position in 0..${this.model.maxSeqLen - 1}`, [s, p])
      }
    }
    return runCall(this.#decode, n, n, tokens, positions, slots, sampling, timing, this.model.publishesDecode(n, sampling.params), armNext)
  }

  /**
   * Generation for one request in `slot` (greedy unless `sampling` says otherwise): the prompt's prefill,
   * then `maxNewTokens - 1` decode steps. Calls `onToken` with each token as it is made; returns them all.
   */
  generate(slot: number, prompt: Int32Array, maxNewTokens: number, onToken?: (token: number, index: number) => void, sampling?: SamplingParams): Int32Array {
    check(Number.isInteger(maxNewTokens) && maxNewTokens >= 1, 'maxNewTokens', 'a positive integer', maxNewTokens)
    check(prompt instanceof Int32Array && prompt.length >= 1, 'prompt', 'a non-empty Int32Array of token ids', prompt)
    this.#checkSlot(slot, 0, prompt.length + maxNewTokens - 1)
    const out = new Int32Array(maxNewTokens)
    const one = { slot: Int32Array.of(slot), token: new Int32Array(1), pos: new Int32Array(1) }
    const rows = samplingRows(1)
    if (sampling !== undefined) setSampling(rows, 0, sampling)
    out[0] = this.prefill(slot, prompt, 0, rows)
    onToken?.(out[0], 0)
    for (let i = 1; i < maxNewTokens; i++) {
      one.token[0] = out[i - 1]!
      one.pos[0] = prompt.length + i - 1
      // Every step but the last is followed by another of one row.
      out[i] = this.decode(1, one.slot, one.token, one.pos, rows, undefined, i < maxNewTokens - 1)[0]!
      onToken?.(out[i]!, i)
    }
    return out
  }

  /** Disposes both steps (their graphs and static buffers); the model stays. */
  dispose(): void {
    this.prefillStep.dispose()
    this.decodeStep.dispose()
  }

  /** `n` tokens of `slot` from position `start` fit the cache (messages built only on failure). */
  #checkSlot(slot: number, start: number, n: number): void {
    const S = this.model.slots
    const L = this.model.maxSeqLen
    if (!(Number.isInteger(slot) && slot >= 0 && slot < S)) check(false, 'slot', `an integer in 0..${S - 1}`, slot)
    if (!(Number.isInteger(start) && start >= 0)) check(false, 'start', 'a non-negative integer', start)
    if (!(Number.isInteger(n) && n >= 1 && start + n <= L)) check(false, 'tokens', `1 or more tokens ending within maxSeqLen (${L}) from position ${start}`, n)
  }

  /** `sampling` has rows for `n` requests (messages built only on failure; {@link setSampling} checks values). */
  #checkSampling(sampling: SamplingRows, n: number): void {
    if (!(sampling.params instanceof Float32Array && sampling.params.length >= 3 * n && sampling.seeds instanceof Uint32Array && sampling.seeds.length >= n)) {
      check(false, 'sampling', `rows for at least ${n} requests (samplingRows)`, sampling)
    }
  }

  /** The first `n` ids of `tokens` are in the vocabulary (messages built only on failure). */
  #checkTokens(tokens: Int32Array, n: number): void {
    if (!(tokens instanceof Int32Array && tokens.length >= n)) check(false, 'tokens', `an Int32Array of at least ${n} token ids`, tokens)
    const V = this.model.config.vocab
    for (let i = 0; i < n; i++) {
      const t = tokens[i]!
      if (!(t >= 0 && t < V)) check(false, `tokens[${i}]`, `a token id in 0..${V - 1}`, t)
    }
  }
}
