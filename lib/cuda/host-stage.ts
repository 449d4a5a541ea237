/**
 * A step's pinned host side: two input staging areas that alternate, a read-back area for outputs, and
 * `launch`, the one native call that copies staged inputs in, replays a graph and reads outputs back.
 */

import type { DeviceBuffer } from './buffer.js'
import { type DType, type HostArray, hostView } from './dtype.js'
import type { Graph } from './graph.js'
import { CALLS, LAYOUT, MAILBOX } from './mailbox.js'
import type * as N from './native.js'
import { binding, mapError, native } from './native.js'
import type { Stream } from './stream.js'

/** One static tensor a stage copies: its device buffer, its elements and how many bytes one row takes. */
export interface StagedTensor {
  buffer: DeviceBuffer
  /** Element type of the host view. */
  dtype: DType
  /** Bytes per row. */
  rowBytes: number
  /** Rows count requests (true) or tokens (false). */
  perRequest: boolean
}

/**
 * Pinned staging for a step's inputs (copied in) and read-back outputs (copied out). The binding keeps
 * which input area is current and reports it in the mailbox after every launch; this class only reads it.
 */
export class HostStage {
  readonly #n: N.HostStage
  readonly #id: number
  /** Host views of each input, in area 0 and area 1. */
  readonly #inputs: readonly [readonly HostArray[], readonly HostArray[]]
  /** Host views of each read-back output. */
  readonly outputs: readonly HostArray[]
  #area: number

  private constructor(n: N.HostStage, inputs: readonly StagedTensor[], outputs: readonly StagedTensor[]) {
    this.#n = n
    this.#id = n.id
    const views = (bytes: Uint8Array, offset: (i: number) => number, ts: readonly StagedTensor[]) =>
      ts.map((t, i) => hostView(t.dtype, bytes.buffer as ArrayBuffer, bytes.byteOffset + offset(i), t.buffer.length))
    const area = (k: number) =>
      views(
        native(() => n.area(k)),
        (i) => n.offset(i),
        inputs,
      )
    this.#inputs = [area(0), area(1)]
    this.outputs = views(
      native(() => n.outputArea()),
      (i) => n.outputOffset(i),
      outputs,
    )
    this.#area = n.current
  }

  /** Stages `inputs` (copied in, in order) and `outputs` (read back, in order). @internal */
  static create(inputs: readonly StagedTensor[], outputs: readonly StagedTensor[]): HostStage {
    const all = [...inputs, ...outputs]
    const n = native(
      () =>
        new (binding().HostStage)(
          all.map((t) => t.buffer.native),
          all.map((t) => t.rowBytes),
          all.map((t) => t.perRequest),
          all.map((_, i) => i >= inputs.length),
        ),
    )
    return new HostStage(n, inputs, outputs)
  }

  /** Input `i`'s host view in the area the next launch copies from. */
  input(i: number): HostArray {
    return this.#inputs[this.#area]![i]!
  }

  /**
   * One native call: copies the first `tokens` or `reqs` rows of every input in `mask` (bit i: input i)
   * to its static buffer, replays `graph` (none: copy only), and with `readBack` copies the outputs' rows
   * to {@link HostStage.outputs} and waits for them. The next launch copies from the other area.
   */
  launch(stream: Stream, graph: Graph | undefined, tokens: number, reqs: number, mask: number, readBack: boolean): void {
    const m = MAILBOX
    const g = LAYOUT.graph
    const s = LAYOUT.stage
    m[g] = graph === undefined ? 0 : graph.id
    m[g + 1] = stream.id
    m[s] = this.#id
    m[s + 1] = tokens
    m[s + 2] = reqs
    m[s + 3] = mask
    m[s + 4] = readBack && this.outputs.length > 0 ? 1 : 0
    // The binding overwrites this with the area to fill next; a call refused before that leaves ours.
    m[s + 5] = this.#area
    try {
      CALLS.stageLaunch()
    } catch (e) {
      throw mapError(e)
    } finally {
      this.#area = m[s + 5]!
    }
  }

  /** Copies the outputs' first rows to the host after the work enqueued on `stream`, and waits (none: nothing). */
  readBack(stream: Stream, tokens: number, reqs: number): void {
    if (this.outputs.length > 0) native(() => this.#n.readBack(stream.native, tokens, reqs))
  }

  /** Makes `buffer` the static buffer input `i` is copied into (same byte length). */
  rebind(i: number, buffer: DeviceBuffer): void {
    native(() => this.#n.rebind(i, buffer.native))
  }
}
