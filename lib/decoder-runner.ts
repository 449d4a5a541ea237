/**
 * A {@link DecoderModel} run through a {@link GraphManager}: a prefill step (the tokens of one request,
 * graphs keyed by padded token count) and a decode step (one token for each of many requests, graphs
 * keyed by padded request count). Both steps write the same KV cache.
 */
import type { DecoderModel } from './decoder-model.js'
import { check } from './errors.js'
import type { GraphManager, WarmupOptions, WarmupResult } from './graph-manager.js'
import type { GraphUse, Step } from './step.js'

/** Options of {@link DecoderRunner}. */
export interface DecoderRunnerOptions {
  /** Most prompt tokens one prefill step takes (default min(512, maxSeqLen)). */
  maxPrefillTokens?: number
  /** Most requests one decode step takes (default the model's slots). */
  maxBatch?: number
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
    },
    outputs: {
      next: { dtype: 'i32', rows: reqs, per: 'request' },
      logits: { dtype: 'f32', rows: reqs, width: model.config.vocab, per: 'request' },
    },
  } as const
}
type DecoderStep = Step<ReturnType<typeof stepSpec>['inputs'], ReturnType<typeof stepSpec>['outputs']>

/** Prefill and decode of one model on one manager (graphs when its config has them, else eager). */
export class DecoderRunner {
  readonly model: DecoderModel
  readonly manager: GraphManager
  readonly prefillStep: DecoderStep
  readonly decodeStep: DecoderStep
  readonly maxPrefillTokens: number
  readonly maxBatch: number
  /** 0, 1, 2, ...: each decode request's logits row is its own token row. */
  readonly #iota: Int32Array
  readonly #one = new Int32Array(1)
  readonly #next: Int32Array
  /** Run options reused by every step (a step allocates nothing). */
  readonly #prefillOptions = { numTokens: 1, numReqs: 1 }
  readonly #decodeOptions = { numTokens: 1, numReqs: 1, uniformDecode: true }
  /** #next's first n elements, by n: decode returns one without allocating. */
  readonly #nextViews: Int32Array[]

  constructor(model: DecoderModel, manager: GraphManager, options: DecoderRunnerOptions = {}) {
    this.model = model
    this.manager = manager
    const maxPrefill = options.maxPrefillTokens ?? Math.min(512, model.maxSeqLen)
    check(Number.isInteger(maxPrefill) && maxPrefill >= 1 && maxPrefill <= model.maxSeqLen, 'maxPrefillTokens', `an integer in 1..${model.maxSeqLen} (maxSeqLen)`, maxPrefill)
    const maxBatch = options.maxBatch ?? model.slots
    check(Number.isInteger(maxBatch) && maxBatch >= 1 && maxBatch <= model.slots, 'maxBatch', `an integer in 1..${model.slots} (slots)`, maxBatch)
    this.maxPrefillTokens = maxPrefill
    this.maxBatch = maxBatch
    const wrap = (name: string, tokens: number, reqs: number) =>
      manager.wrap({ ...stepSpec(model, name, tokens, reqs), forward: (ctx, b) => model.forward(ctx, { ...ctx.inputs, ...ctx.outputs }, b.numTokens, b.numReqs) })
    this.prefillStep = wrap('prefill', maxPrefill, 1)
    this.decodeStep = wrap('decode', maxBatch, maxBatch)
    this.#iota = Int32Array.from({ length: maxBatch }, (_, i) => i)
    this.#next = new Int32Array(maxBatch)
    this.#nextViews = Array.from({ length: maxBatch + 1 }, (_, n) => this.#next.subarray(0, n))
  }

  /** Captures the prefill ladder, then the decode ladder (largest first, so decode reuses the pool). */
  async warmup(options: WarmupOptions = {}): Promise<WarmupResult> {
    const a = await this.manager.warmup(this.prefillStep, options)
    const b = await this.manager.warmup(this.decodeStep, options)
    return { captured: a.captured + b.captured, failed: a.failed + b.failed, seconds: a.seconds + b.seconds, bytes: a.bytes + b.bytes }
  }

  /** How a prefill of `numTokens` tokens runs now (no side effects). */
  prefillUse(numTokens: number): GraphUse {
    return this.prefillStep.graphUse(numTokens)
  }

  /** How a decode step of `numReqs` requests runs now (no side effects). */
  decodeUse(numReqs: number): GraphUse {
    return this.decodeStep.graphUse(numReqs, { uniformDecode: true })
  }

  /**
   * Runs `tokens` (ids in 0..vocab-1) of the request in `slot` at positions `start`, `start + 1`, ...,
   * writing their keys and values, and returns the greedy next token. Waits for the result.
   */
  prefill(slot: number, tokens: Int32Array, start = 0): number {
    this.#checkTokens(tokens, tokens instanceof Int32Array ? tokens.length : 1)
    const n = tokens.length
    this.#checkSlot(slot, start, n, this.maxPrefillTokens, 'tokens')
    const s = this.prefillStep
    const positions = s.staging('positions') as Int32Array
    const slots = s.staging('slots') as Int32Array
    for (let i = 0; i < n; i++) positions[i] = start + i
    slots.fill(slot, 0, n)
    this.#one[0] = n - 1
    const o = this.#prefillOptions
    o.numTokens = n
    const out = s.run({ tokens, positions, slots, last: this.#one }, o)
    return out.next.downloadInto(this.#one)[0]!
  }

  /**
   * One decode step for the first `n` entries of `slots`, `tokens` and `positions` (each request's new
   * token and its position); returns the greedy next tokens (a reused array: copy what you keep).
   */
  decode(n: number, slots: Int32Array, tokens: Int32Array, positions: Int32Array): Int32Array {
    // Checked first, messages built only on failure: a step allocates nothing.
    if (!(Number.isInteger(n) && n >= 1 && n <= this.maxBatch)) check(false, 'n', `an integer in 1..${this.maxBatch} (maxBatch)`, n)
    if (!(slots instanceof Int32Array && slots.length >= n && positions instanceof Int32Array && positions.length >= n)) {
      check(false, 'slots/positions', `Int32Arrays of at least ${n} elements`, [slots, positions])
    }
    this.#checkTokens(tokens, n)
    for (let i = 0; i < n; i++) {
      const s = slots[i]!
      const p = positions[i]!
      if (!(s >= 0 && s < this.model.slots && p >= 0 && p < this.model.maxSeqLen)) {
        check(false, `slots[${i}] / positions[${i}]`, `a slot in 0..${this.model.slots - 1} and a position in 0..${this.model.maxSeqLen - 1}`, [s, p])
      }
    }
    const o = this.#decodeOptions
    o.numTokens = n
    o.numReqs = n
    const out = this.decodeStep.run({ tokens, positions, slots, last: this.#iota }, o)
    out.next.downloadInto(this.#next)
    return this.#nextViews[n]!
  }

  /**
   * Greedy generation for one request in `slot`: the prompt's prefill, then `maxNewTokens - 1` decode
   * steps. Calls `onToken` with each token as it is made; returns them all.
   */
  generate(slot: number, prompt: Int32Array, maxNewTokens: number, onToken?: (token: number, index: number) => void): Int32Array {
    check(Number.isInteger(maxNewTokens) && maxNewTokens >= 1, 'maxNewTokens', 'a positive integer', maxNewTokens)
    check(prompt instanceof Int32Array && prompt.length >= 1, 'prompt', 'a non-empty Int32Array of token ids', prompt)
    this.#checkSlot(slot, 0, prompt.length + maxNewTokens - 1, this.model.maxSeqLen, 'prompt + maxNewTokens')
    const out = new Int32Array(maxNewTokens)
    const one = { slot: Int32Array.of(slot), token: new Int32Array(1), pos: new Int32Array(1) }
    out[0] = this.prefill(slot, prompt)
    onToken?.(out[0], 0)
    for (let i = 1; i < maxNewTokens; i++) {
      one.token[0] = out[i - 1]!
      one.pos[0] = prompt.length + i - 1
      out[i] = this.decode(1, one.slot, one.token, one.pos)[0]!
      onToken?.(out[i]!, i)
    }
    return out
  }

  /** Disposes both steps (their graphs and static buffers); the model stays. */
  dispose(): void {
    this.prefillStep.dispose()
    this.decodeStep.dispose()
  }

  #checkSlot(slot: number, start: number, n: number, most: number, what: string): void {
    check(Number.isInteger(slot) && slot >= 0 && slot < this.model.slots, 'slot', `an integer in 0..${this.model.slots - 1}`, slot)
    check(Number.isInteger(start) && start >= 0, 'start', 'a non-negative integer', start)
    check(n >= 1 && n <= most, what, `1..${most} tokens`, n)
    check(start + n <= this.model.maxSeqLen, what, `to end within maxSeqLen (${this.model.maxSeqLen})`, start + n)
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
