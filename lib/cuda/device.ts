import { check } from '../errors.js'
import { DeviceBuffer } from './buffer.js'
import { type DType, dtypeOf, fitsDType, type HostArray, type HostArrayOf, isDType } from './dtype.js'
import { Event } from './event.js'
import { Module } from './module.js'
import type * as N from './native.js'
import { binding, native } from './native.js'
import { Stream } from './stream.js'

/** Free and total device memory, bytes (from the driver). */
export interface MemoryInfo {
  /** Free device memory, bytes. */
  free: number
  /** Total device memory, bytes. */
  total: number
}

/** The device's graph-memory pool (`cuDeviceGetGraphMemAttribute`), bytes. */
export interface GraphMemoryStats {
  /** Memory mapped for the allocations of live graphs. */
  usedCurrent: number
  /** High-water mark of usedCurrent since the last reset. */
  usedHigh: number
  /** Memory the pool holds, in use or cached. Falls after {@link Device.trimGraphMemory}. */
  reservedCurrent: number
  /** High-water mark of reservedCurrent since the last reset. */
  reservedHigh: number
}

/** Options of {@link Device.compile}. */
export interface CompileOptions {
  /** Module name, used in errors and logs (default `'module'`). */
  name?: string
  /** NVRTC options, e.g. `['-DN=4', '--use_fast_math']`. The architecture is picked from the device unless given. */
  options?: readonly string[]
  /**
   * Whether NVRTC's output may come from, and goes into, the on-disk kernel cache ({@link Module.cached});
   * default true. False runs NVRTC whatever the cache holds.
   */
  cache?: boolean
}

/** Whether CUDA is usable here and, when not, why. */
export type Availability = { available: true; devices: number } | { available: false; reason: string }

/** A CUDA device. Open with {@link Device.open}; everything else is created from it. */
export class Device {
  /** @internal */
  readonly native: N.Device

  private constructor(n: N.Device) {
    this.native = n
  }

  /** Number of CUDA devices; throws CudaUnavailableError when there is no driver. */
  static count(): number {
    return native(() => binding().Device.count())
  }

  /** Whether CUDA is usable here, without throwing. */
  static availability(): Availability {
    try {
      const devices = Device.count()
      return devices > 0 ? { available: true, devices } : { available: false, reason: 'the driver reports no CUDA device' }
    } catch (e) {
      return { available: false, reason: e instanceof Error ? e.message : String(e) }
    }
  }

  /** The CUDA driver's version, e.g. 13000 for 13.0. */
  static driverVersion(): number {
    return native(() => binding().Device.driverVersion())
  }

  /** Opens device `ordinal` (default 0). Throws CudaUnavailableError without a driver, ArgumentError for a bad ordinal. */
  static open(ordinal = 0): Device {
    check(Number.isInteger(ordinal) && ordinal >= 0 && ordinal <= 0x7fffffff, 'ordinal', 'an integer in 0..2147483647', ordinal)
    return new Device(native(() => binding().Device.open(ordinal)))
  }

  /** The device's ordinal. */
  get ordinal(): number {
    return this.native.ordinal
  }

  /** The device's name, e.g. `NVIDIA H100 80GB HBM3`. */
  get name(): string {
    return native(() => this.native.name)
  }

  /** Compute capability `[major, minor]`. */
  get computeCapability(): [number, number] {
    const [a, b] = native(() => this.native.computeCapability)
    return [a!, b!]
  }

  /** Number of streaming multiprocessors. */
  get multiprocessors(): number {
    return native(() => this.native.multiprocessors)
  }

  /** Most shared memory one block may use (a launch's `sharedMemBytes` past 48 KiB opts its kernel in), bytes. */
  get maxSharedMemoryPerBlock(): number {
    return native(() => this.native.maxSharedMemoryPerBlock)
  }

  /** Total device memory, bytes. */
  get totalMemory(): number {
    return this.memoryInfo().total
  }

  /** Free and total device memory, bytes. */
  memoryInfo(): MemoryInfo {
    return native(() => this.native.memoryInfo())
  }

  /** The graph-memory pool's usage. */
  graphMemory(): GraphMemoryStats {
    return native(() => this.native.graphMemory())
  }

  /** Returns cached graph-pool memory to the device (waits for running work first). */
  trimGraphMemory(): void {
    native(() => this.native.trimGraphMemory())
  }

  /** Resets the graph pool's high-water marks. */
  resetGraphMemoryHigh(): void {
    native(() => this.native.resetGraphMemoryHigh())
  }

  /** Blocks until all work on the device is done. */
  synchronize(): void {
    native(() => this.native.synchronize())
  }

  /** A new non-blocking stream. */
  createStream(): Stream {
    return Stream.wrap(native(() => this.native.createStream()))
  }

  /** A new event; `timing` (default true) enables `elapsedSince`. */
  createEvent(options: { timing?: boolean } = {}): Event {
    return Event.wrap(native(() => this.native.createEvent(options.timing ?? true)))
  }

  /** Allocates `length` elements of `dtype` (contents undefined). */
  alloc<D extends DType>(dtype: D, length: number): DeviceBuffer<D> {
    check(isDType(dtype), 'dtype', 'one of f32, f16, bf16, i32, u32, i64, u8', dtype)
    check(Number.isInteger(length) && length > 0 && length <= 0xffffffff, 'length', 'a positive integer', length)
    return DeviceBuffer.wrap<D>(native(() => this.native.alloc(dtype, length)))
  }

  /**
   * One allocation for `parts`, each starting `align` bytes aligned (default 256) after the one before,
   * in order: one buffer a part, sharing the memory (a step's static inputs, which one copy fills from a
   * host area of the same layout). Disposing any of them frees them all.
   */
  allocPacked(parts: readonly { dtype: DType; length: number }[], align = 256): DeviceBuffer[] {
    check(Array.isArray(parts) && parts.length > 0, 'parts', 'a non-empty array of { dtype, length }', parts)
    parts.forEach((p, i) => {
      check(p !== null && typeof p === 'object' && isDType(p.dtype), `parts[${i}].dtype`, 'one of f32, f16, bf16, i32, u32, i64, u8', p?.dtype)
      check(Number.isInteger(p.length) && p.length > 0 && p.length <= 0xffffffff, `parts[${i}].length`, 'a positive integer', p.length)
    })
    check(Number.isInteger(align) && align >= 16 && (align & (align - 1)) === 0, 'align', 'a power of two of at least 16 bytes', align)
    const bufs = native(() =>
      this.native.allocPacked(
        parts.map((p) => p.dtype),
        parts.map((p) => p.length),
        align,
      ),
    )
    return bufs.map((b) => DeviceBuffer.wrap(b))
  }

  /**
   * Allocates a buffer holding `data`. The dtype follows the array type; a Uint16Array needs `dtype`
   * `'f16'` or `'bf16'`.
   */
  upload<D extends DType>(data: HostArrayOf[D], dtype?: D): DeviceBuffer<D> {
    const d = (dtype ?? dtypeOf(data as HostArray)) as D | undefined
    check(d !== undefined, 'dtype', "'f16' or 'bf16' for a Uint16Array", dtype)
    check(fitsDType(data as HostArray, d), 'data', `a host array for ${d}`, data)
    const buf = this.alloc(d, data.length)
    buf.upload(data)
    return buf
  }

  /** Compiles CUDA C++ with NVRTC and loads it. A compile error is a CompileError with NVRTC's log. */
  compile(source: string, options: CompileOptions = {}): Module {
    check(typeof source === 'string' && source.length > 0, 'source', 'CUDA C++ source text', source)
    const opts = options.options ?? []
    check(Array.isArray(opts) && opts.every((o) => typeof o === 'string'), 'options', 'an array of strings', opts)
    const cache = options.cache ?? true
    check(typeof cache === 'boolean', 'cache', 'a boolean', cache)
    return Module.wrap(native(() => this.native.compile(source, options.name ?? 'module', [...opts], cache)))
  }
}
