/** Stop strings in streamed text (no GPU needed): the model's generate and the server's text requests share it. */
import { checkStops } from './text-request.js'

/**
 * Watches streamed text for stop strings. `push` returns the text that is safe to emit: everything up to
 * a stop string (which is not emitted), holding back a tail that could still be the start of one.
 */
export class StopMatcher {
  readonly #stops: readonly string[]
  readonly #hold: number
  #pending = ''
  #stopped: string | undefined

  /** `stops`: the strings that end generation (each non-empty; at most 16 of up to 256 characters). */
  constructor(stops: readonly string[]) {
    this.#stops = [...checkStops(stops)]
    this.#hold = Math.max(0, ...stops.map((s) => s.length - 1))
  }

  /** The stop string that matched, once one has. */
  get stopped(): string | undefined {
    return this.#stopped
  }

  /** Adds `chunk`; returns what can be emitted now ('' after a stop). */
  push(chunk: string): string {
    if (this.#stopped !== undefined) return ''
    const text = this.#pending + chunk
    let at = -1
    for (const s of this.#stops) {
      const i = text.indexOf(s)
      if (i >= 0 && (at < 0 || i < at)) {
        at = i
        this.#stopped = s
      }
    }
    if (at >= 0) {
      this.#pending = ''
      return text.slice(0, at)
    }
    // A tail shorter than the longest stop string may be its start: hold it, never splitting a surrogate pair.
    let keep = Math.min(this.#hold, text.length)
    if (keep > 0 && keep < text.length && isLowSurrogate(text.charCodeAt(text.length - keep))) keep++
    this.#pending = text.slice(text.length - keep)
    return text.slice(0, text.length - keep)
  }

  /** What is still held back, when generation ends for another reason. */
  flush(): string {
    const p = this.#stopped === undefined ? this.#pending : ''
    this.#pending = ''
    return p
  }
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff
}
