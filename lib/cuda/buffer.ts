import { check } from '../errors.js'
import { bytesOf, type DType, fitsDType, type HostArray, type HostArrayOf, hostArray } from './dtype.js'
import type * as N from './native.js'
import { native } from './native.js'

/**
 * Typed device memory, or a view on it. Freed by {@link DeviceBuffer.dispose} or when garbage collected;
 * while a live graph uses it, `dispose` throws an InUseError and the buffer stays intact.
 */
export class DeviceBuffer<D extends DType = DType> {
  /** @internal */
  readonly native: N.DeviceBuffer
  /** @internal numeric handle for launches through the mailbox */
  readonly id: number

  /** @internal */
  static wrap<D extends DType>(n: N.DeviceBuffer): DeviceBuffer<D> {
    return new DeviceBuffer<D>(n)
  }

  private constructor(n: N.DeviceBuffer) {
    this.native = n
    this.id = n.id
  }

  /** Element type. */
  get dtype(): D {
    return this.native.dtype as D
  }

  /** Length in elements. */
  get length(): number {
    return this.native.length
  }

  /** Length in bytes. */
  get byteLength(): number {
    return this.native.byteLength
  }

  /** Offset of this view from the start of its allocation, in elements. */
  get offset(): number {
    return this.native.offset
  }

  /** Number of live graphs that use this buffer's memory. */
  get graphUses(): number {
    return this.native.graphUses
  }

  /** Whether the memory was freed (by dispose, or a stream-ordered free). */
  get disposed(): boolean {
    return this.native.disposed
  }

  /** Device address of the first element (for address checks and logs). */
  get address(): number {
    return native(() => this.native.address)
  }

  /** A view of `length` elements starting at element `offset`, sharing this memory. */
  view(offset: number, length: number): DeviceBuffer<D> {
    // The binding takes 32-bit counts: check the range here, where nothing can wrap.
    const n = this.length
    check(Number.isInteger(offset) && offset >= 0 && offset < n, 'offset', `an integer in 0..${n - 1}`, offset)
    check(
      Number.isInteger(length) && length > 0 && offset + length <= n,
      'length',
      `an integer in 1..${n - offset} (the view must end inside the buffer)`,
      length,
    )
    return DeviceBuffer.wrap<D>(native(() => this.native.view(offset, length)))
  }

  /**
   * Copies `data` (exactly `length` elements of this dtype) to the device. Synchronous: waits for
   * enqueued work first and for the copy to land. Use `Stream.uploadAsync` on the hot path.
   */
  upload(data: HostArrayOf[D]): void {
    check(fitsDType(data as HostArray, this.dtype), 'data', `a host array for ${this.dtype}`, data)
    native(() => this.native.upload(bytesOf(data)))
  }

  /** Copies the buffer to a new host array after all enqueued work is done. */
  download(): HostArrayOf[D] {
    const out = hostArray(this.dtype, this.length)
    native(() => this.native.downloadInto(bytesOf(out)))
    return out
  }

  /**
   * Copies the buffer into `out` (a host array of this dtype with at least `length` elements) after all
   * enqueued work is done, with no new host array (for a step's outputs every step, a read-back output
   * of the step costs less: see `readBack` in the step's spec).
   */
  downloadInto(out: HostArrayOf[D]): HostArrayOf[D] {
    if (!(fitsDType(out as HostArray, this.dtype) && (out as HostArray).length >= this.length)) {
      check(false, 'out', `a host array for ${this.dtype} of at least ${this.length} elements`, out)
    }
    native(() => this.native.downloadInto(bytesOf((out as HostArray).length === this.length ? out : (out as HostArray).subarray(0, this.length))))
    return out
  }

  /** Frees the memory now (all views of it become disposed). Throws InUseError while a live graph uses it. */
  dispose(): void {
    native(() => this.native.dispose())
  }
}
