import type * as N from './native.js'
import { native } from './native.js'
import type { Stream } from './stream.js'

/** A CUDA event, for ordering streams and timing device work. */
export class Event {
  /** @internal */
  readonly native: N.Event

  /** @internal */
  static wrap(n: N.Event): Event {
    return new Event(n)
  }

  private constructor(n: N.Event) {
    this.native = n
  }

  /** Records the event after the work enqueued so far on `stream`. */
  record(stream: Stream): void {
    native(() => this.native.record(stream.native))
  }

  /** Blocks until the recorded work is done. */
  synchronize(): void {
    native(() => this.native.synchronize())
  }

  /** Whether the recorded work is done. */
  query(): boolean {
    return native(() => this.native.query())
  }

  /** Device time from `start` to this event, in milliseconds (both created with `timing: true`). */
  elapsedSince(start: Event): number {
    return native(() => this.native.elapsedSince(start.native))
  }
}
