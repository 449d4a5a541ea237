/**
 * Continuous batching (no GPU here: the engine does the math). Each {@link BatchScheduler.step} runs one
 * prefill step for newly arrived requests (and the next chunk of prompts split over steps), then one
 * decode step with a token for every running request. Requests join and leave between steps; those that
 * find every slot taken wait in a bounded queue, and a full queue refuses at once.
 */
import { check } from '../errors.js'
import type { SamplingSettings } from '../util/text-request.js'
import type { FinishReason } from './wire-protocol.js'

/**
 * How each request of a step picks its next token, in device-ready rows: `params` holds [temperature,
 * top-p, top-k] per request (temperature 0: greedy), `seeds` one seed each (the model's SamplingRows).
 */
export interface SamplingBatch {
  readonly params: Float32Array
  readonly seeds: Uint32Array
}

/** One request's sampling settings (checked by whoever accepted the request: util/text-request.ts). */
export type RequestSampling = SamplingSettings

/** What the scheduler needs of a model (DecoderRunner is one). */
export interface GenerationEngine {
  /** Token ids are 0..vocab-1. */
  readonly vocab: number
  /** Longest sequence (prompt and generated tokens). */
  readonly maxSeqLen: number
  /** KV-cache slots, numbered 0..slots-1. */
  readonly slots: number
  /** Most requests one decode step takes. */
  readonly maxBatch: number
  /** Most tokens one prefill step takes. */
  readonly maxPrefillTokens: number
  /** Most requests one prefill step takes. */
  readonly maxPrefillReqs: number
  /**
   * Request i's `lengths[i]` tokens (back to back in `tokens`) at positions `starts[i]`.. of `slots[i]`;
   * each request's next token, picked as row i of `sampling` says.
   */
  prefillBatch(n: number, slots: Int32Array, starts: Int32Array, lengths: Int32Array, tokens: Int32Array, sampling: SamplingBatch): Int32Array
  /** One token per request (its slot, token and position); each request's next token, picked as `sampling` says. */
  decode(n: number, slots: Int32Array, tokens: Int32Array, positions: Int32Array, sampling: SamplingBatch): Int32Array
}

/** A request as the scheduler sees it; callers extend it with their own fields. */
export interface GenerationRequest {
  readonly prompt: Int32Array
  readonly maxNewTokens: number
  /** How it picks tokens (default greedy). */
  readonly sampling?: RequestSampling | undefined
  /** Token ids that end it (finish reason `stop`; the token is still handed to the sink). */
  readonly stopTokens?: ReadonlySet<number> | undefined
}

/** Where results go. Called inside {@link BatchScheduler.step} (and `cancel`), in order per request. */
export interface SchedulerSink<R extends GenerationRequest> {
  /** Token `index` (0 = the first, from prefill) of `req`. */
  token(req: R, token: number, index: number): void
  /** `req` ended; its slot is free. */
  done(req: R, reason: FinishReason, generated: number): void
  /** The engine failed on a step `req` was in; `req` ended and its slot is free. */
  failed(req: R, error: unknown): void
}

/** Options of {@link BatchScheduler}. */
export interface SchedulerOptions {
  /** Most requests waiting for a slot; one more is refused (default 1024). */
  maxQueue?: number
  /** Most requests holding slots at once (default the engine's min(slots, maxBatch)). */
  maxRunning?: number
}

/** What one step did (a reused object: read it before the next step). */
export interface StepReport {
  /** Requests and tokens in the prefill step (0 when none ran). */
  prefillReqs: number
  prefillTokens: number
  /** Requests in the decode step (0 when none ran). */
  decodeReqs: number
  /** Tokens sent to the sink (first tokens and decode tokens). */
  tokens: number
  /** Time inside the engine's prefill and decode calls (GPU work and their host side), ms. */
  engineMs: number
}

interface Seq<R> {
  readonly req: R
  slot: number
  /** Prompt tokens already in the cache. */
  prefilled: number
  /** Tokens made so far; the last one is `last`. */
  generated: number
  last: number
  ended: boolean
}

/** Continuous batching over one engine. Single-threaded: call `step` from one loop. */
export class BatchScheduler<R extends GenerationRequest> {
  readonly engine: GenerationEngine
  readonly maxQueue: number
  readonly maxRunning: number
  readonly #sink: SchedulerSink<R>
  readonly #queue: Seq<R>[] = []
  /** Requests holding a slot: prefilling, or decoding. */
  readonly #running: Seq<R>[] = []
  /** Inside step: ended requests leave #running at its end, not while it is walked. */
  #stepping = false
  readonly #byReq = new Map<R, Seq<R>>()
  readonly #freeSlots: number[]
  readonly #report: StepReport = { prefillReqs: 0, prefillTokens: 0, decodeReqs: 0, tokens: 0, engineMs: 0 }
  // Step arguments, reused: a step allocates nothing here.
  readonly #pSlots: Int32Array
  readonly #pStarts: Int32Array
  readonly #pLens: Int32Array
  readonly #pTokens: Int32Array
  readonly #pSeqs: Seq<R>[]
  readonly #pSampling: SamplingBatch
  readonly #dSlots: Int32Array
  readonly #dTokens: Int32Array
  readonly #dPos: Int32Array
  readonly #dSeqs: Seq<R>[]
  readonly #dSampling: SamplingBatch

  constructor(engine: GenerationEngine, sink: SchedulerSink<R>, options: SchedulerOptions = {}) {
    this.engine = engine
    this.#sink = sink
    const most = Math.min(engine.slots, engine.maxBatch)
    this.maxQueue = options.maxQueue ?? 1024
    this.maxRunning = options.maxRunning ?? most
    check(Number.isInteger(this.maxQueue) && this.maxQueue >= 0, 'maxQueue', 'a non-negative integer', this.maxQueue)
    check(
      Number.isInteger(this.maxRunning) && this.maxRunning >= 1 && this.maxRunning <= most,
      'maxRunning',
      `an integer in 1..${most} (the engine's slots and maxBatch)`,
      this.maxRunning,
    )
    this.#freeSlots = Array.from({ length: this.maxRunning }, (_, i) => this.maxRunning - 1 - i)
    const P = engine.maxPrefillReqs
    this.#pSlots = new Int32Array(P)
    this.#pStarts = new Int32Array(P)
    this.#pLens = new Int32Array(P)
    this.#pTokens = new Int32Array(engine.maxPrefillTokens)
    this.#pSeqs = new Array<Seq<R>>(P)
    this.#pSampling = { params: new Float32Array(3 * P), seeds: new Uint32Array(P) }
    this.#dSlots = new Int32Array(this.maxRunning)
    this.#dTokens = new Int32Array(this.maxRunning)
    this.#dPos = new Int32Array(this.maxRunning)
    this.#dSeqs = new Array<Seq<R>>(this.maxRunning)
    this.#dSampling = { params: new Float32Array(3 * this.maxRunning), seeds: new Uint32Array(this.maxRunning) }
  }

  /** Requests waiting for a slot. */
  get queued(): number {
    return this.#queue.length
  }

  /** Requests holding a slot (prefilling or decoding). */
  get running(): number {
    return this.#running.length
  }

  /** Whether a step would do anything. */
  get hasWork(): boolean {
    return this.#running.length > 0 || this.#queue.length > 0
  }

  /** Why the engine cannot take `prompt` and `maxNewTokens`, or undefined when it can. */
  invalid(prompt: Int32Array, maxNewTokens: number): string | undefined {
    const e = this.engine
    if (!(prompt instanceof Int32Array) || prompt.length === 0) return 'the prompt must have at least one token'
    if (prompt.length > e.maxSeqLen) return `a prompt of ${prompt.length} tokens is longer than the model's ${e.maxSeqLen}-token context`
    for (let i = 0; i < prompt.length; i++) {
      const t = prompt[i]!
      if (!(t >= 0 && t < e.vocab)) return `token ${i} of the prompt is ${t}, outside the vocabulary 0..${e.vocab - 1}`
    }
    if (!(Number.isInteger(maxNewTokens) && maxNewTokens >= 1)) return `maxNewTokens must be a positive integer, got ${maxNewTokens}`
    return undefined
  }

  /**
   * Queues `req` for the next step (checked with {@link BatchScheduler.invalid} first: throws
   * ArgumentError). Returns false, changing nothing, when it would have to wait and `maxQueue` requests
   * already do.
   */
  submit(req: R): boolean {
    const why = this.invalid(req.prompt, req.maxNewTokens)
    check(why === undefined, 'req', why ?? '', req)
    check(!this.#byReq.has(req), 'req', 'a request not already submitted', req)
    // Requests that a free slot takes at the next step do not wait: only the rest count against maxQueue.
    if (this.#queue.length >= this.maxQueue + this.#freeSlots.length) return false
    const s: Seq<R> = { req, slot: -1, prefilled: 0, generated: 0, last: 0, ended: false }
    this.#queue.push(s)
    this.#byReq.set(req, s)
    return true
  }

  /** Ends `req` now with `reason` (queued or running; its slot is free at once). False if it is not here. */
  cancel(req: R, reason: FinishReason = 'cancelled'): boolean {
    const s = this.#byReq.get(req)
    if (s === undefined) return false
    if (s.slot < 0) this.#queue.splice(this.#queue.indexOf(s), 1)
    this.#end(s)
    this.#sink.done(req, reason, s.generated)
    return true
  }

  /** Ends every waiting request with `reason`; returns how many. */
  cancelQueued(reason: FinishReason): number {
    const q = [...this.#queue]
    for (const s of q) this.cancel(s.req, reason)
    return q.length
  }

  /** Ends every request (queued and running) with `reason`; returns how many. */
  cancelAll(reason: FinishReason): number {
    const all = [...this.#queue, ...this.#running].filter((s) => !s.ended)
    for (const s of all) this.cancel(s.req, reason)
    return all.length
  }

  /**
   * One step: admits waiting requests into free slots, runs one prefill step (prompts that do not fit
   * its token budget continue next step) and one decode step for every request that has a token.
   */
  step(): StepReport {
    const rep = this.#report
    rep.prefillReqs = rep.prefillTokens = rep.decodeReqs = rep.tokens = rep.engineMs = 0
    while (this.#queue.length > 0 && this.#freeSlots.length > 0) {
      const s = this.#queue.shift()!
      s.slot = this.#freeSlots.pop()!
      this.#running.push(s)
    }
    this.#stepping = true
    try {
      this.#prefill(rep)
      this.#decode(rep)
    } finally {
      this.#stepping = false
      this.#compact()
    }
    return rep
  }

  /** Drops ended requests from #running, in place. */
  #compact(): void {
    const r = this.#running
    let k = 0
    for (let i = 0; i < r.length; i++) if (!r[i]!.ended) r[k++] = r[i]!
    r.length = k
  }

  #prefill(rep: StepReport): void {
    const e = this.engine
    let n = 0
    let t = 0
    for (const s of this.#running) {
      if (n === e.maxPrefillReqs || t === e.maxPrefillTokens) break
      const left = s.req.prompt.length - s.prefilled
      if (left === 0) continue
      const take = Math.min(left, e.maxPrefillTokens - t)
      this.#pTokens.set(s.req.prompt.subarray(s.prefilled, s.prefilled + take), t)
      this.#pSlots[n] = s.slot
      this.#pStarts[n] = s.prefilled
      this.#pLens[n] = take
      setRow(this.#pSampling, n, s.req.sampling)
      this.#pSeqs[n++] = s
      t += take
    }
    if (n === 0) return
    rep.prefillReqs = n
    rep.prefillTokens = t
    let next: Int32Array
    const t0 = performance.now()
    try {
      next = e.prefillBatch(n, this.#pSlots, this.#pStarts, this.#pLens, this.#pTokens, this.#pSampling)
    } catch (err) {
      this.#fail(this.#pSeqs, n, err)
      return
    } finally {
      rep.engineMs += performance.now() - t0
    }
    for (let i = 0; i < n; i++) {
      const s = this.#pSeqs[i]!
      s.prefilled += this.#pLens[i]!
      if (s.ended || s.prefilled < s.req.prompt.length) continue
      this.#emit(s, next[i]!, rep)
    }
  }

  #decode(rep: StepReport): void {
    let n = 0
    for (const s of this.#running) {
      if (s.ended || s.generated === 0) continue
      this.#dSlots[n] = s.slot
      this.#dTokens[n] = s.last
      this.#dPos[n] = s.req.prompt.length + s.generated - 1
      setRow(this.#dSampling, n, s.req.sampling)
      this.#dSeqs[n++] = s
    }
    if (n === 0) return
    rep.decodeReqs = n
    let next: Int32Array
    const t0 = performance.now()
    try {
      next = this.engine.decode(n, this.#dSlots, this.#dTokens, this.#dPos, this.#dSampling)
    } catch (err) {
      this.#fail(this.#dSeqs, n, err)
      return
    } finally {
      rep.engineMs += performance.now() - t0
    }
    for (let i = 0; i < n; i++) {
      const s = this.#dSeqs[i]!
      if (!s.ended) this.#emit(s, next[i]!, rep)
    }
  }

  /** Hands token `tok` of `s` to the sink; ends `s` at a stop token, when it has all its tokens or the context is full. */
  #emit(s: Seq<R>, tok: number, rep: StepReport): void {
    s.last = tok
    s.generated++
    rep.tokens++
    this.#sink.token(s.req, tok, s.generated - 1)
    if (s.ended) return // the sink cancelled it
    // The new token goes in at position prompt + generated - 1: it must be inside the context.
    const reason =
      s.req.stopTokens?.has(tok) === true
        ? 'stop'
        : s.generated >= s.req.maxNewTokens
          ? 'length'
          : s.req.prompt.length + s.generated - 1 >= this.engine.maxSeqLen
            ? 'context'
            : undefined
    if (reason === undefined) return
    this.#end(s)
    this.#sink.done(s.req, reason, s.generated)
  }

  #fail(seqs: Seq<R>[], n: number, err: unknown): void {
    for (let i = 0; i < n; i++) {
      const s = seqs[i]!
      if (s.ended) continue
      this.#end(s)
      this.#sink.failed(s.req, err)
    }
  }

  /** Frees the slot and forgets `s` (it leaves #running at the end of the step, or now outside one). */
  #end(s: Seq<R>): void {
    s.ended = true
    this.#byReq.delete(s.req)
    if (s.slot >= 0) {
      this.#freeSlots.push(s.slot)
      const i = this.#running.indexOf(s)
      if (i >= 0 && !this.#stepping) this.#running.splice(i, 1)
    }
  }
}

/** Writes `p` (greedy when undefined) into row `i` of `b`. */
function setRow(b: SamplingBatch, i: number, p: RequestSampling | undefined): void {
  b.params[3 * i] = p?.temperature ?? 0
  b.params[3 * i + 1] = p?.topP ?? 1
  b.params[3 * i + 2] = p?.topK ?? 0
  b.seeds[i] = p?.seed ?? 0
}
