/** The interface every dispatch policy implements. */
import type { BatchDescriptor } from './descriptor.js'
import type { RuntimeMode } from './graph-mode.js'

/**
 * Decides, for a batch the dispatcher could run as a graph, whether to and in which mode. Policies see
 * the padded batch descriptor (for a uniform decode batch: uniform, with its request count), the same for
 * every mode, so what they learn per descriptor compares modes; `graphAvailable` says a graph exists for
 * the chosen mode (captured, when the dispatcher tracks captures; else capturable). Latencies reach
 * `record` through `Dispatcher.record`.
 */
export interface DispatchPolicy {
  /** Whether to run this batch as a graph at all. */
  shouldUseGraph(key: BatchDescriptor, graphAvailable: boolean): boolean
  /** Which of the available runtime modes (non-empty, in the dispatcher's preference order) to use. */
  selectMode(key: BatchDescriptor, modes: readonly RuntimeMode[]): RuntimeMode
  /** Optional feedback: a batch with this descriptor ran in `mode` in `latencyUs` µs. */
  record?(key: BatchDescriptor, mode: RuntimeMode, latencyUs: number): void
}
