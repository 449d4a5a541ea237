/**
 * A step's pinned host side: two input staging areas that alternate, a read-back area the kernels write
 * outputs into (and optionally a ready flag they set once those hold their values, and a doorbell that
 * graphs beginning with the stage's gate wait for), and `launch`, the one native call that copies staged
 * inputs in (or rings), replays a graph and waits for the outputs.
 */

import { DeviceBuffer } from './buffer.js'
import type { Device } from './device.js'
import { type DType, type HostArray, hostView } from './dtype.js'
import type { Graph } from './graph.js'
import { CALLS, LAYOUT, MAILBOX } from './mailbox.js'
import type * as N from './native.js'
import { binding, mapError, native } from './native.js'
import type { Stream } from './stream.js'

/** One static input a stage copies: its device buffer, its elements and how many bytes one row takes. */
export interface StagedTensor {
  buffer: DeviceBuffer
  /** Element type of the host view. */
  dtype: DType
  /** Bytes per row. */
  rowBytes: number
  /** Rows count requests (true) or tokens (false). */
  perRequest: boolean
}

/** A read-back output: its elements. */
export interface ReadBackTensor {
  dtype: DType
  /** Elements. */
  length: number
}

/**
 * Pinned staging for a step's inputs (copied in) and read-back outputs (written by the kernels into
 * pinned memory mapped for the device: no copy out). The binding keeps which input area is current and
 * reports it in the mailbox after every launch; this class only reads it.
 */
export class HostStage {
  readonly #n: N.HostStage
  readonly #id: number
  /** Host views of each input, in area 0 and area 1. */
  readonly #inputs: readonly [readonly HostArray[], readonly HostArray[]]
  /** Host views of each read-back output. */
  readonly outputs: readonly HostArray[]
  /** The device buffers of each read-back output: the same memory as {@link HostStage.outputs}. */
  readonly outputBuffers: readonly DeviceBuffer[]
  /**
   * The ready flag, one i32 in the read-back area (a stage made with `ready`): zeroed before each launch;
   * the step's kernels set it nonzero once every read-back output holds its value, and a launch that reads
   * back returns then, while the rest of the graph may still run.
   */
  readonly readyFlag: DeviceBuffer<'i32'> | undefined
  /** Whether the stage has a doorbell ({@link HostStage.captureGate}). */
  readonly bell: boolean
  #area: number

  private constructor(n: N.HostStage, inputs: readonly StagedTensor[], outputs: readonly ReadBackTensor[], bell: boolean) {
    this.#n = n
    this.#id = n.id
    const views = (bytes: Uint8Array, offset: (i: number) => number, ts: readonly { dtype: DType; length: number }[]) =>
      ts.map((t, i) => hostView(t.dtype, bytes.buffer as ArrayBuffer, bytes.byteOffset + offset(i), t.length))
    const area = (k: number) =>
      views(
        native(() => n.area(k)),
        (i) => n.offset(i),
        inputs.map((t) => ({ dtype: t.dtype, length: t.buffer.length })),
      )
    this.#inputs = [area(0), area(1)]
    this.outputs = views(
      native(() => n.outputArea()),
      (i) => n.outputOffset(i),
      outputs,
    )
    this.outputBuffers = outputs.map((_, i) => DeviceBuffer.wrap(native(() => n.outputBuffer(i))))
    const ready = native(() => n.readyBuffer())
    this.readyFlag = ready === null ? undefined : DeviceBuffer.wrap<'i32'>(ready)
    this.bell = bell
    this.#area = n.current
  }

  /**
   * Stages `inputs` (copied in, in order) and makes the read-back `outputs` (in order) on `device`, with a
   * ready flag where `ready` ({@link HostStage.readyFlag}) and a doorbell where `bell` (at most 24 inputs;
   * {@link HostStage.captureGate}). @internal
   */
  static create(device: Device, inputs: readonly StagedTensor[], outputs: readonly ReadBackTensor[], ready = false, bell = false): HostStage {
    const n = native(
      () =>
        new (binding().HostStage)(
          device.native,
          inputs.map((t) => t.buffer.native),
          inputs.map((t) => t.rowBytes),
          inputs.map((t) => t.perRequest),
          outputs.map((t) => t.dtype),
          outputs.map((t) => t.length),
          ready,
          bell,
        ),
    )
    return new HostStage(n, inputs, outputs, bell)
  }

  /**
   * Launches the stage's gate on `stream`, which is being captured, as the first node of a graph of `tokens`
   * and `reqs` rows (a stage with a doorbell): the graph then waits at it until a launch rings.
   */
  captureGate(stream: Stream, tokens: number, reqs: number): void {
    native(() => this.#n.captureGate(stream.native, tokens, reqs))
  }

  /** Input `i`'s host view in the area the next launch copies from. */
  input(i: number): HostArray {
    return this.#inputs[this.#area]![i]!
  }

  /**
   * One native call: copies the first `tokens` or `reqs` rows of every input in `mask` (bit i: input i)
   * to its static buffer, replays `graph` (none: copy only), and with `readBack` waits, so
   * {@link HostStage.outputs} hold what it wrote: for the ready flag (or the replay's end) where `ready`
   * and the stage has one, else for the replay's end. The next launch copies from the other area.
   *
   * `replays`: the step's graphs, which begin with the gate where the stage has a doorbell, are launched by
   * or after this call (false: an eager run). The call then rings: for `graph`'s gate to copy, or, without
   * `graph`, to copy nothing, the call having copied. `armNext` (with `graph` and `readBack`, else ignored):
   * launch `graph` once more behind this replay, armed, for the next launch of the same graph to ring.
   */
  launch(
    stream: Stream,
    graph: Graph | undefined,
    tokens: number,
    reqs: number,
    mask: number,
    readBack: boolean,
    ready = false,
    replays = false,
    armNext = false,
  ): void {
    const m = MAILBOX
    const g = LAYOUT.graph
    const s = LAYOUT.stage
    m[g] = graph === undefined ? 0 : graph.id
    m[g + 1] = stream.id
    m[s] = this.#id
    m[s + 1] = tokens
    m[s + 2] = reqs
    m[s + 3] = mask
    // 0: no wait; 1: the replay's end; 2: the ready flag or that end.
    const wait = !readBack || this.outputs.length === 0 ? 0 : ready && this.readyFlag !== undefined ? 2 : 1
    m[s + 4] = wait
    // The binding overwrites this with the area to fill next; a call refused before that leaves ours.
    m[s + 5] = this.#area
    // The gate's flags: bit 0 the graphs begin with it, bit 1 arm (only where this call waits for the outputs).
    m[s + 6] = !this.bell || !replays ? 0 : armNext && graph !== undefined && wait !== 0 ? 3 : 1
    try {
      CALLS.stageLaunch()
    } catch (e) {
      throw mapError(e)
    } finally {
      this.#area = m[s + 5]!
    }
  }

  /** Waits for `stream`, so {@link HostStage.outputs} hold what its work wrote (no read-back outputs: nothing). */
  readBack(stream: Stream): void {
    if (this.outputs.length > 0) native(() => this.#n.readBack(stream.native))
  }

  /** Makes `buffer` the static buffer input `i` is copied into (same byte length). */
  rebind(i: number, buffer: DeviceBuffer): void {
    native(() => this.#n.rebind(i, buffer.native))
  }
}
