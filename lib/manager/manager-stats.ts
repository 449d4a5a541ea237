/** Counters and latency percentiles of a {@link GraphManager}. */
import { percentile } from '../util/percentile.js'

/** Latencies kept for percentiles (the most recent ones). */
const WINDOW = 8192

/** Percentiles over the most recent samples, µs. */
export interface LatencySummary {
  /** Samples in the window (a count). */
  count: number
  /** Median, µs. */
  p50: number
  /** 99th percentile (lib/util/percentile.ts), µs. */
  p99: number
  /** Largest sample, µs. */
  max: number
}

/** The plain form of {@link ManagerStats}. */
export interface ManagerStatsJSON {
  /** Graph entries captured, a count (a PIECEWISE entry counts once). */
  captures: number
  /** Runs served by a graph, a count. */
  replays: number
  /** Runs served eagerly (no graph for the size, NONE mode, policy, or a failed capture), a count. */
  eagerRuns: number
  /** Runs whose graph was held, a count. */
  hits: number
  /** Runs that wanted a graph that was not held, a count. */
  misses: number
  /** Padding replayed (padded minus real tokens, summed over runs), tokens. */
  paddingTokens: number
  /** Entries evicted, a count. */
  evictions: number
  /** What the evicted entries declared, bytes. */
  evictedBytes: number
  /** Graph-pool memory that came back after evictions (the driver's pool attributes), bytes. */
  freedBytes: number
  /** Recaptures applied by in-place exec update, a count. */
  updates: number
  /** Recaptures that had to re-instantiate (topology changed), a count. */
  reinstantiations: number
  /** Captures that failed (out of memory or over budget) and fell back to eager, a count. */
  captureFailures: number
  /** Time spent capturing, instantiating and uploading, ms. */
  captureMs: number
  /** Host time of `run` (dispatch, input copy-in, replay enqueue), µs; graph runs only. */
  replayUs: LatencySummary
  /** Host time of eager runs, µs. */
  eagerUs: LatencySummary
}

/** A ring of recent latencies. */
class LatencyWindow {
  readonly #samples = new Float64Array(WINDOW)
  #n = 0

  add(us: number): void {
    this.#samples[this.#n++ % WINDOW] = us
  }

  summary(): LatencySummary {
    const count = Math.min(this.#n, WINDOW)
    if (count === 0) return { count: 0, p50: 0, p99: 0, max: 0 }
    const s = this.#samples.subarray(0, count)
    return { count, p50: percentile(s, 0.5), p99: percentile(s, 0.99), max: percentile(s, 1) }
  }
}

/** Mutable counters, updated by the manager; read with {@link ManagerStats.toJSON}. */
export class ManagerStats {
  captures = 0
  replays = 0
  eagerRuns = 0
  hits = 0
  misses = 0
  paddingTokens = 0
  evictions = 0
  evictedBytes = 0
  freedBytes = 0
  updates = 0
  reinstantiations = 0
  captureFailures = 0
  captureMs = 0
  /** @internal */
  readonly replayWindow = new LatencyWindow()
  /** @internal */
  readonly eagerWindow = new LatencyWindow()

  /** A snapshot as a plain object (for logs and metrics). */
  toJSON(): ManagerStatsJSON {
    return {
      captures: this.captures,
      replays: this.replays,
      eagerRuns: this.eagerRuns,
      hits: this.hits,
      misses: this.misses,
      paddingTokens: this.paddingTokens,
      evictions: this.evictions,
      evictedBytes: this.evictedBytes,
      freedBytes: this.freedBytes,
      updates: this.updates,
      reinstantiations: this.reinstantiations,
      captureFailures: this.captureFailures,
      captureMs: this.captureMs,
      replayUs: this.replayWindow.summary(),
      eagerUs: this.eagerWindow.summary(),
    }
  }
}
