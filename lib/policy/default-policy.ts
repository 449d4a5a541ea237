import type { BatchDescriptor } from './descriptor.js'
import type { RuntimeMode } from './graph-mode.js'
import type { DispatchPolicy } from './policy.js'

/** Options of {@link DefaultPolicy}. */
export interface DefaultPolicyOptions {
  /** Smallest batch (tokens) run as a graph (default 1). */
  minTokensForGraph?: number
  /** Largest batch (tokens) run as a graph (default: no limit). */
  maxTokensForGraph?: number
  /** Prefer PIECEWISE over FULL when both are available (default false). */
  preferPiecewise?: boolean
}

/** Graphs for batches within a token range, FULL before PIECEWISE unless told otherwise. */
export class DefaultPolicy implements DispatchPolicy {
  readonly minTokensForGraph: number
  readonly maxTokensForGraph: number
  readonly preferPiecewise: boolean

  constructor(o: DefaultPolicyOptions = {}) {
    this.minTokensForGraph = o.minTokensForGraph ?? 1
    this.maxTokensForGraph = o.maxTokensForGraph ?? Number.POSITIVE_INFINITY
    this.preferPiecewise = o.preferPiecewise ?? false
  }

  shouldUseGraph(key: BatchDescriptor, graphAvailable: boolean): boolean {
    return graphAvailable && key.numTokens >= this.minTokensForGraph && key.numTokens <= this.maxTokensForGraph
  }

  selectMode(_key: BatchDescriptor, modes: readonly RuntimeMode[]): RuntimeMode {
    return this.preferPiecewise && modes.includes('PIECEWISE') ? 'PIECEWISE' : modes[0]!
  }
}
