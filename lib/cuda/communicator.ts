/**
 * NCCL from Node: one rank of a communicator on one device, and its collectives on a stream (captured
 * into a graph like any other stream work, so a tensor-parallel step stays one replay per GPU). libnccl is
 * loaded on first use (the `nvidia-nccl` wheel's `nvidia/nccl/lib` on LD_LIBRARY_PATH or
 * CUDAGRAPH_LIBRARY_PATH); without it every call is a CudaUnavailableError that says so. A failed
 * collective aborts the communicator (NcclError), so no rank waits forever on it.
 */
import { check } from '../errors.js'
import { DeviceBuffer } from './buffer.js'
import type { Device } from './device.js'
import type * as N from './native.js'
import { binding, native } from './native.js'
import type { Stream } from './stream.js'

/** How all-reduce combines the ranks' values. */
export type ReduceOp = 'sum' | 'prod' | 'max' | 'min' | 'avg'

/** Options of {@link Communicator.create}. */
export interface CommunicatorOptions {
  /** The communicator's id: {@link Communicator.uniqueId} on rank 0, handed to every rank (128 bytes). */
  id: Uint8Array
  /** This rank, 0..size-1. */
  rank: number
  /** Ranks in all (one per GPU). */
  size: number
}

/** One rank of an NCCL communicator. Dispose it after its streams' work. */
export class Communicator {
  readonly #n: N.Communicator

  private constructor(n: N.Communicator) {
    this.#n = n
  }

  /** A fresh id for a new communicator (128 bytes): make it on rank 0 and hand it to every rank. */
  static uniqueId(): Uint8Array {
    return native(() => binding().Communicator.uniqueId())
  }

  /** The loaded NCCL's version (major * 10000 + minor * 100 + patch, e.g. 22807). */
  static version(): number {
    return native(() => binding().Communicator.version())
  }

  /** Joins the communicator `options.id` as `options.rank` of `options.size` on `device`; blocks until every rank joined. */
  static create(device: Device, options: CommunicatorOptions): Communicator {
    check(options !== null && typeof options === 'object', 'options', '{ id, rank, size }', options)
    const { id, rank, size } = options
    check(id instanceof Uint8Array && id.length === 128, 'id', 'a 128-byte Uint8Array from Communicator.uniqueId()', id)
    check(Number.isInteger(size) && size >= 1 && size <= 0x7fffffff, 'size', 'a positive integer', size)
    check(Number.isInteger(rank) && rank >= 0 && rank < size, 'rank', `an integer in 0..${size - 1}`, rank)
    return new Communicator(native(() => new (binding().Communicator)(device.native, id, rank, size)))
  }

  get rank(): number {
    return native(() => this.#n.rank)
  }

  get size(): number {
    return native(() => this.#n.size)
  }

  /** Reduces `buffer` across the ranks in place with `op` (default sum), enqueued on `stream`. */
  allReduce(stream: Stream, buffer: DeviceBuffer, op: ReduceOp = 'sum'): void {
    check(buffer instanceof DeviceBuffer, 'buffer', 'a DeviceBuffer', buffer)
    native(() => this.#n.allReduce(stream.native, buffer.native, op))
  }

  /** Gathers every rank's `send` into `recv` (rank r's at r * send.length), enqueued on `stream`. */
  allGather(stream: Stream, send: DeviceBuffer, recv: DeviceBuffer): void {
    check(send instanceof DeviceBuffer && recv instanceof DeviceBuffer, 'send/recv', 'DeviceBuffers', [send, recv])
    native(() => this.#n.allGather(stream.native, send.native, recv.native))
  }

  /** Copies rank `root`'s `buffer` into every rank's, enqueued on `stream`. */
  broadcast(stream: Stream, buffer: DeviceBuffer, root = 0): void {
    check(buffer instanceof DeviceBuffer, 'buffer', 'a DeviceBuffer', buffer)
    check(Number.isInteger(root) && root >= 0, 'root', 'a rank', root)
    native(() => this.#n.broadcast(stream.native, buffer.native, root))
  }

  /** Aborts: pending collectives end and no rank waits on this one (what a failing rank does). */
  abort(): void {
    native(() => this.#n.abort())
  }

  /** Destroys the communicator. */
  dispose(): void {
    this.#n.dispose()
  }
}
