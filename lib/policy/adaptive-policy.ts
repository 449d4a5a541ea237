import { type BatchDescriptor, descriptorKey } from './descriptor.js'
import type { RuntimeMode } from './graph-mode.js'
import type { DispatchPolicy } from './policy.js'

/** Options of {@link AdaptivePolicy}. */
export interface AdaptivePolicyOptions {
  /** Latencies kept per (descriptor, mode): a moving window (default 32). */
  historySize?: number
  /** Samples a mode needs before it is compared (default 3). */
  minSamples?: number
  /** How much faster (fraction) eager must be to win over a graph (default 0.05). */
  margin?: number
}

/** A moving window of latencies, µs. */
class Window {
  readonly values: Float64Array
  count = 0
  sum = 0
  #next = 0
  constructor(size: number) {
    this.values = new Float64Array(size)
  }
  add(v: number): void {
    if (this.count === this.values.length) this.sum -= this.values[this.#next]!
    else this.count++
    this.values[this.#next] = v
    this.sum += v
    this.#next = (this.#next + 1) % this.values.length
  }
  get mean(): number {
    return this.count ? this.sum / this.count : Number.NaN
  }
}

/**
 * Learns from recorded latencies. Per descriptor, each runtime mode (NONE included) keeps a moving window;
 * `selectMode` first explores modes with too few samples, then picks the fastest; `shouldUseGraph`
 * declines a graph where eager has measured faster. Across descriptors it adapts a token threshold:
 * once eager wins at n tokens, descriptors at or above n with no data of their own run eagerly, until a
 * graph wins at or above it (which lifts the threshold past that size).
 */
export class AdaptivePolicy implements DispatchPolicy {
  readonly historySize: number
  readonly minSamples: number
  readonly margin: number
  /** Batches at or above this many tokens, with no data of their own, run eagerly. */
  maxTokensForGraph = Number.POSITIVE_INFINITY
  readonly #windows = new Map<number, Partial<Record<RuntimeMode, Window>>>()

  constructor(o: AdaptivePolicyOptions = {}) {
    this.historySize = o.historySize ?? 32
    this.minSamples = o.minSamples ?? 3
    this.margin = o.margin ?? 0.05
  }

  record(key: BatchDescriptor, mode: RuntimeMode, latencyUs: number): void {
    if (!(latencyUs >= 0) || !Number.isFinite(latencyUs)) return
    const k = descriptorKey(key)
    let w = this.#windows.get(k)
    if (!w) {
      w = {}
      this.#windows.set(k, w)
    }
    w[mode] ??= new Window(this.historySize)
    w[mode].add(latencyUs)
    const eager = this.#mean(w, 'NONE')
    const graph = this.#bestGraph(w)
    if (Number.isNaN(eager) || graph === undefined) return
    if (eager < graph.mean * (1 - this.margin)) this.maxTokensForGraph = Math.min(this.maxTokensForGraph, key.numTokens)
    else if (key.numTokens >= this.maxTokensForGraph) this.maxTokensForGraph = key.numTokens + 1
  }

  /** Mean latency (µs) recorded for `key` in `mode`, NaN before `minSamples` samples. */
  meanLatency(key: BatchDescriptor, mode: RuntimeMode): number {
    const w = this.#windows.get(descriptorKey(key))
    return w ? this.#mean(w, mode) : Number.NaN
  }

  #mean(w: Partial<Record<RuntimeMode, Window>>, mode: RuntimeMode): number {
    const m = w[mode]
    return m && m.count >= this.minSamples ? m.mean : Number.NaN
  }

  #bestGraph(w: Partial<Record<RuntimeMode, Window>>): { mode: RuntimeMode; mean: number } | undefined {
    let best: { mode: RuntimeMode; mean: number } | undefined
    for (const mode of ['FULL', 'PIECEWISE'] as const) {
      const m = this.#mean(w, mode)
      if (!Number.isNaN(m) && (best === undefined || m < best.mean)) best = { mode, mean: m }
    }
    return best
  }

  shouldUseGraph(key: BatchDescriptor, graphAvailable: boolean): boolean {
    if (!graphAvailable) return false
    const w = this.#windows.get(descriptorKey(key))
    const eager = w ? this.#mean(w, 'NONE') : Number.NaN
    const graph = w ? this.#bestGraph(w) : undefined
    if (!Number.isNaN(eager) && graph !== undefined) return !(eager < graph.mean * (1 - this.margin))
    if (graph !== undefined) return true
    return key.numTokens < this.maxTokensForGraph
  }

  selectMode(key: BatchDescriptor, modes: readonly RuntimeMode[]): RuntimeMode {
    const w = this.#windows.get(descriptorKey(key))
    if (!w) return modes[0]!
    let best: RuntimeMode | undefined
    let bestMean = Number.POSITIVE_INFINITY
    for (const mode of modes) {
      const m = this.#mean(w, mode)
      if (Number.isNaN(m)) return mode // explore what has too few samples
      if (m < bestMean) {
        bestMean = m
        best = mode
      }
    }
    return best ?? modes[0]!
  }
}
