/**
 * A generation's output as text (no GPU needed): token ids in, whole characters out, cut at the first
 * stop string; end-of-sequence ids end it without text. The model's generate and the server's text
 * requests share it.
 */
import { StopMatcher } from './stop-matcher.js'

/** A streaming decoder of token ids: `push` returns the text an id completes, `flush` what is held at the end. */
export interface StreamDecoder {
  push(id: number): string
  flush(): string
}

/** Text out of token ids (see the module comment). */
export class TextOutput {
  readonly #detok: StreamDecoder
  readonly #stops: StopMatcher
  readonly #eos: ReadonlySet<number>
  /** Tokens taken since text last came out. */
  #pendingTokens = 0
  #endOfSequence = false

  /** `stop`: at most 16 stop strings of 1..256 characters; `eos`: the ids that end generation. */
  constructor(detok: StreamDecoder, stop: readonly string[], eos: ReadonlySet<number>) {
    this.#detok = detok
    this.#stops = new StopMatcher(stop)
    this.#eos = eos
  }

  /** The stop string that matched, once one has. */
  get stopped(): string | undefined {
    return this.#stops.stopped
  }

  /** Whether an end-of-sequence id came. */
  get endOfSequence(): boolean {
    return this.#endOfSequence
  }

  /** Whether the output has ended (a stop string or an end-of-sequence id). */
  get ended(): boolean {
    return this.#endOfSequence || this.#stops.stopped !== undefined
  }

  /** Takes token `id`: the text it makes emittable ('' for none, and for an end-of-sequence id) and the tokens that text covers. */
  push(id: number): { text: string; tokens: number } {
    this.#pendingTokens++
    if (this.#eos.has(id)) {
      this.#endOfSequence = true
      return { text: '', tokens: 0 }
    }
    const text = this.#stops.push(this.#detok.push(id))
    if (text === '') return { text, tokens: 0 }
    const tokens = this.#pendingTokens
    this.#pendingTokens = 0
    return { text, tokens }
  }

  /** What is still held back when generation ends (nothing after a stop string), and the tokens not yet counted. */
  flush(): { text: string; tokens: number } {
    const tokens = this.#pendingTokens
    this.#pendingTokens = 0
    if (this.#stops.stopped !== undefined) return { text: '', tokens }
    return { text: this.#stops.push(this.#detok.flush()) + this.#stops.flush(), tokens }
  }
}
