import { CALLS, LAYOUT, MAILBOX } from './mailbox.js'
import type * as N from './native.js'
import { mapError, native } from './native.js'
import type { Stream } from './stream.js'

/** How long a graph took to make, in µs. */
export interface GraphTimings {
  /** Begin to end of capture (includes the callback's own JS time). */
  captureUs: number
  /** `cuGraphInstantiate`. */
  instantiateUs: number
  /** `cuGraphUpload` to completion; 0 when not uploaded. */
  uploadUs: number
}

/** Device memory a graph added when it was made, in bytes. */
export interface GraphMemoryDelta {
  /** Drop in the device's free memory (driver's `cuMemGetInfo`) across capture, instantiate and upload. */
  freeBytesDelta: number
  /** Growth of the device's graph-pool reserved memory. */
  graphReservedDelta: number
  /** Growth of the device's graph-pool used memory. */
  graphUsedDelta: number
}

/** Result of {@link Graph.update}. */
export interface UpdateResult {
  /** True when the executable was updated in place (`cuGraphExecUpdate`); false when it was re-instantiated. */
  updatedInPlace: boolean
  /** The driver's reason for refusing the in-place update (e.g. a topology change). */
  reason?: string
}

/**
 * A captured, instantiated CUDA graph. Keeps alive every buffer, module and kernel it captured; those
 * buffers cannot be disposed while it lives.
 */
export class Graph {
  /** @internal */
  readonly native: N.Graph
  /** @internal numeric handle for the replay paths */
  readonly id: number

  /** @internal */
  static wrap(n: N.Graph): Graph {
    return new Graph(n)
  }

  private constructor(n: N.Graph) {
    this.native = n
    this.id = n.id
  }

  /**
   * Enqueues one replay on `stream`: one native call without arguments (the handles go through the launch
   * mailbox), no allocation. The hot path.
   */
  launch(stream: Stream): void {
    const m = MAILBOX
    const g = LAYOUT.graph
    m[g] = this.id
    m[g + 1] = stream.id
    try {
      CALLS.graphLaunch()
    } catch (e) {
      throw mapError(e)
    }
  }

  /** Prepares the graph's device resources so the next launch is as fast as the rest (waits for it). */
  upload(stream: Stream): void {
    native(() => this.native.upload(stream.native))
  }

  /** Instantiates a graph captured with `instantiate: false`. */
  instantiate(): void {
    native(() => this.native.instantiate())
  }

  /**
   * Takes over `source`, a new capture of the same work (other buffers or scalars): updated in place
   * when the driver allows it, else re-instantiated. `source` is disposed either way.
   */
  update(source: Graph): UpdateResult {
    const r = native(() => this.native.update(source.native))
    return r.reason == null ? { updatedInPlace: r.updatedInPlace } : { updatedInPlace: r.updatedInPlace, reason: r.reason }
  }

  /** Number of nodes (kernels, copies, memsets, memory nodes...). */
  get nodeCount(): number {
    return native(() => this.native.nodeCount)
  }

  /** Whether the graph was disposed (or consumed by an update). */
  get disposed(): boolean {
    return this.native.disposed
  }

  /** Whether the executable exists. */
  get instantiated(): boolean {
    return native(() => this.native.instantiated)
  }

  /** Capture, instantiate and upload times. */
  timings(): GraphTimings {
    return native(() => this.native.timings())
  }

  /** Device memory the graph added when made; undefined when captured with `measureMemory: false` or not instantiated. */
  memory(): GraphMemoryDelta | undefined {
    return native(() => this.native.memory()) ?? undefined
  }

  /** Destroys the graph now; the buffers it used can then be disposed. */
  dispose(): void {
    this.native.dispose()
  }
}
