import type { RuntimeMode } from './graph-mode.js'

/** The plain form of {@link DispatchStats}. */
export interface DispatchStatsJSON {
  total: number
  byMode: Record<RuntimeMode, number>
  hits: number
  misses: number
  tokensRun: number
  tokensPadded: number
  paddingWaste: number
  graphRatio: number
}

/** Counts of dispatch decisions. */
export class DispatchStats {
  /** Dispatches per runtime mode. */
  readonly byMode: Record<RuntimeMode, number> = { NONE: 0, PIECEWISE: 0, FULL: 0 }
  /** Real tokens dispatched. */
  tokensRun = 0
  /** Pad tokens added to reach a capture size (graph runs only). */
  tokensPadded = 0

  /** Counts one dispatch of `numTokens` real tokens run as `mode` at `paddedTokens`. */
  record(mode: RuntimeMode, numTokens: number, paddedTokens: number): void {
    this.byMode[mode]++
    this.tokensRun += numTokens
    if (mode !== 'NONE') this.tokensPadded += paddedTokens - numTokens
  }

  /** All dispatches. */
  get total(): number {
    return this.byMode.NONE + this.byMode.PIECEWISE + this.byMode.FULL
  }

  /** Dispatches that ran as a graph. */
  get hits(): number {
    return this.byMode.PIECEWISE + this.byMode.FULL
  }

  /** Dispatches that ran eagerly. */
  get misses(): number {
    return this.byMode.NONE
  }

  /** Pad tokens per real token (0 when nothing ran). */
  get paddingWaste(): number {
    return this.tokensRun ? this.tokensPadded / this.tokensRun : 0
  }

  /** Fraction of dispatches that ran as a graph. */
  get graphRatio(): number {
    return this.total ? this.hits / this.total : 0
  }

  reset(): void {
    this.byMode.NONE = this.byMode.PIECEWISE = this.byMode.FULL = 0
    this.tokensRun = this.tokensPadded = 0
  }

  toJSON(): DispatchStatsJSON {
    return {
      total: this.total,
      byMode: { ...this.byMode },
      hits: this.hits,
      misses: this.misses,
      tokensRun: this.tokensRun,
      tokensPadded: this.tokensPadded,
      paddingWaste: this.paddingWaste,
      graphRatio: this.graphRatio,
    }
  }
}
