import { ArgumentError } from '../errors.js'
import { type BatchDescriptor, descriptorKey } from './descriptor.js'
import type { DispatcherLike, DispatchOptions, DispatchResult } from './dispatcher.js'

/** A decision and the stream (index) to run it on. */
export interface StreamDispatchResult extends DispatchResult {
  readonly stream: number
}

/**
 * Spreads descriptors over `numStreams` streams: each descriptor sticks to the stream it was first given
 * (the least loaded one then), so its graphs live in that stream's own cache and batches of one shape never
 * contend across streams.
 */
export class StreamDispatcher<T = unknown> implements DispatcherLike {
  readonly inner: DispatcherLike
  readonly numStreams: number
  readonly #assigned = new Map<number, number>()
  readonly #load: number[]
  readonly #caches: Map<number, T>[]

  constructor(inner: DispatcherLike, numStreams: number) {
    if (!Number.isInteger(numStreams) || numStreams < 1) {
      throw new ArgumentError('numStreams', 'a positive integer', numStreams)
    }
    this.inner = inner
    this.numStreams = numStreams
    this.#load = new Array<number>(numStreams).fill(0)
    this.#caches = Array.from({ length: numStreams }, () => new Map<number, T>())
  }

  /** The stream `descriptor` runs on (assigned on first sight, to the stream with the fewest descriptors). */
  streamFor(descriptor: BatchDescriptor): number {
    const k = descriptorKey(descriptor)
    let s = this.#assigned.get(k)
    if (s === undefined) {
      s = 0
      for (let i = 1; i < this.numStreams; i++) if (this.#load[i]! < this.#load[s]!) s = i
      this.#assigned.set(k, s)
      this.#load[s]!++
    }
    return s
  }

  /** Stream `stream`'s own cache, keyed by descriptor key. */
  cache(stream: number): Map<number, T> {
    const c = this.#caches[stream]
    if (!c) throw new ArgumentError('stream', `0..${this.numStreams - 1}`, stream)
    return c
  }

  /** Descriptors assigned to each stream. */
  get load(): readonly number[] {
    return this.#load
  }

  dispatch(numTokens: number, options?: DispatchOptions): StreamDispatchResult {
    const r = this.inner.dispatch(numTokens, options)
    return { mode: r.mode, descriptor: r.descriptor, stream: this.streamFor(r.descriptor) }
  }
}
