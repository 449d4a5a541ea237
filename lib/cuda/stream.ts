import { ArgumentError, CaptureError, check, describe } from '../errors.js'
import { DeviceBuffer } from './buffer.js'
import { bytesOf, type DType, fitsDType, type HostArray, type HostArrayOf, hostArray, isDType } from './dtype.js'
import type { Event } from './event.js'
import { Graph } from './graph.js'
import type { ArgKind, ArgsOf, Kernel } from './kernel.js'
import { CALLS, LAYOUT, MAILBOX } from './mailbox.js'
import type * as N from './native.js'
import { mapError, native } from './native.js'

/** Grid or block dimensions: a number or 1 to 3 numbers. */
export type Dim3 = number | readonly [number] | readonly [number, number] | readonly [number, number, number]

/** Launch geometry and options. */
export interface LaunchConfig {
  /** Blocks per grid. */
  grid: Dim3
  /** Threads per block. */
  block: Dim3
  /** Dynamic shared memory per block, bytes (default 0; past 48 KiB the kernel is opted in, up to the device's per-block limit). */
  sharedMemBytes?: number
  /**
   * Programmatic dependent launch (compute capability 9.0+; default false): the kernel may start while
   * the previous kernel on the stream is still running, so its prologue overlaps that kernel's tail, in
   * eager launches and inside captured graphs alike. The kernel-side contract: before it reads anything the
   * previous kernel writes, the kernel executes `asm volatile("griddepcontrol.wait;" ::: "memory")`
   * (`cudaGridDependencySynchronize()`), which returns once the previous grid has finished and its writes
   * are visible; the previous kernel may execute `griddepcontrol.launch_dependents` to let this one start
   * even earlier. A kernel that never waits must not depend on the previous one at all.
   */
  programmaticDependentLaunch?: boolean
  /**
   * A cooperative launch (default false): every block of the grid is resident at once, so the kernel's
   * blocks may wait for each other (a grid-wide barrier), in eager launches and inside captured graphs
   * alike. The launch fails (`CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`) when the device cannot hold the
   * whole grid at once: at most the kernel's resident blocks a multiprocessor times the multiprocessors.
   */
  cooperative?: boolean
}

/** How a capture treats potentially unsafe CUDA calls made meanwhile (`cudaStreamCaptureMode`). */
export type CaptureMode = 'global' | 'thread_local' | 'relaxed'

/** Options of {@link Stream.capture}. */
export interface CaptureOptions {
  /** Default `'global'`: any unsafe call during the capture, from any thread, invalidates it. */
  mode?: CaptureMode
  /** Instantiate the graph (default true). A graph used only as an update source needs no executable. */
  instantiate?: boolean
  /** Upload it to the device so the first launch costs no more than later ones (default true). */
  upload?: boolean
  /**
   * Measure the device memory the graph adds, for `Graph.memory()` (default true). Costs two driver
   * memory queries (a few µs each); turn off for many tiny captures.
   */
  measureMemory?: boolean
}

/**
 * A GEMM: `c = activation(alpha * op(a) * op(b) + beta * c + bias)` where op(a) is m x k, op(b) is k x n
 * and c is m x n. a and b are f32, f16 or bf16 (the same); c is that dtype or f32; accumulation is always
 * f32. A bias or an activation runs inside the GEMM kernel (cuBLASLt epilogue), not as another pass.
 */
export interface GemmOptions {
  a: DeviceBuffer
  b: DeviceBuffer
  c: DeviceBuffer
  m: number
  n: number
  k: number
  /** Use a transposed (default false). */
  transA?: boolean
  /** Use b transposed (default false). */
  transB?: boolean
  /** Default 1. */
  alpha?: number
  /** Default 0. */
  beta?: number
  /** Storage order of all three matrices (default `'row'`, as in JS and PyTorch; `'col'` is BLAS's). */
  layout?: 'row' | 'col'
  /** Leading dimensions, elements; default: the stored matrix's row length ('row') or column length ('col'). */
  lda?: number
  ldb?: number
  ldc?: number
  /**
   * Added to every row of the result, one value per output column: n elements for `'row'` layout
   * (m for `'col'`), of c's dtype. Default none.
   */
  bias?: DeviceBuffer | undefined
  /** Applied after the bias (default `'none'`); `'gelu'` is the tanh approximation. */
  activation?: GemmActivation
}

/** An activation fused into a GEMM. */
export type GemmActivation = 'none' | 'relu' | 'gelu'
const ACTIVATIONS: readonly GemmActivation[] = ['none', 'relu', 'gelu']

const MODES: readonly CaptureMode[] = ['global', 'thread_local', 'relaxed']

/** Reused by every launch with bigint arguments (single-threaded; sized when the first one comes). */
let wideArgs: BigInt64Array | undefined

function packDim(p: Float64Array, at: number, name: string, d: Dim3): void {
  if (typeof d === 'number') {
    p[at] = d
    p[at + 1] = 1
    p[at + 2] = 1
    return
  }
  check(Array.isArray(d) && d.length >= 1 && d.length <= 3, name, '1 to 3 positive integers', d)
  p[at] = d[0]
  p[at + 1] = d[1] ?? 1
  p[at + 2] = d[2] ?? 1
}

function argKind(i: number, expected: string, got: unknown): ArgumentError {
  return new ArgumentError(`args[${i}]`, expected, got)
}

function posInt(name: string, v: unknown): number {
  check(typeof v === 'number' && Number.isInteger(v) && v > 0 && v <= 0x7fffffff, name, 'a positive integer', v)
  return v
}

/**
 * A CUDA stream (non-blocking). Work on it runs in order; {@link Stream.capture} records it into a graph.
 */
export class Stream {
  /** @internal */
  readonly native: N.Stream
  /** Numeric handle used by `Graph.launch`. */
  readonly id: number

  /** @internal */
  static wrap(n: N.Stream): Stream {
    return new Stream(n)
  }

  private constructor(n: N.Stream) {
    this.native = n
    this.id = n.id
  }

  /** Blocks until all enqueued work is done. */
  synchronize(): void {
    native(() => this.native.synchronize())
  }

  /** Resolves when all work enqueued so far is done; the JS thread stays free meanwhile. */
  async synchronizeAsync(): Promise<void> {
    const task = native(() => this.native.synchronizeAsync())
    try {
      await task
    } catch (e) {
      throw mapError(e)
    }
  }

  /** Whether all enqueued work is done. */
  query(): boolean {
    return native(() => this.native.query())
  }

  /** Makes later work on this stream wait for `event`. */
  waitEvent(event: Event): void {
    native(() => this.native.waitEvent(event.native))
  }

  /** Whether a capture is in progress on this stream. */
  get capturing(): boolean {
    return this.native.capturing
  }

  /**
   * Launches `kernel`. `args` must match its declared signature (count and kinds); a mismatch is an
   * ArgumentError naming the argument, and nothing is enqueued. One native call (operands in the launch
   * mailbox), no allocation.
   */
  launch<S extends readonly ArgKind[]>(kernel: Kernel<S>, config: LaunchConfig, args: ArgsOf<S>): void {
    const sig = kernel.signature
    const a = args as readonly unknown[]
    if (!Array.isArray(a) || a.length !== sig.length) {
      check(false, 'args', `${sig.length} arguments for ${kernel.name}(${sig.join(', ')})`, Array.isArray(a) ? `${a.length} arguments` : a)
    }
    const p = MAILBOX
    const k = LAYOUT.kernel
    const at = k + LAYOUT.kernelHeader
    p[k] = this.id
    p[k + 1] = kernel.id
    packDim(p, k + 2, 'grid', config.grid)
    packDim(p, k + 5, 'block', config.block)
    p[k + 8] = config.sharedMemBytes ?? 0
    p[k + 9] = (config.programmaticDependentLaunch === true ? 1 : 0) | (config.cooperative === true ? 2 : 0)
    let wide: BigInt64Array | undefined
    for (let i = 0; i < sig.length; i++) {
      const v = a[i]
      const kind = sig[i]
      if (kind === 'ptr') {
        if (!(v instanceof DeviceBuffer)) throw argKind(i, 'a DeviceBuffer (ptr)', v)
        p[at + i] = v.id
      } else if (typeof v === 'number') {
        p[at + i] = v
      } else if (typeof v === 'bigint' && (kind === 'i64' || kind === 'u64')) {
        wide ??= wideArgs ??= new BigInt64Array(LAYOUT.maxArgs)
        wide[i] = BigInt.asIntN(64, v)
        check(
          kind === 'i64' ? BigInt.asIntN(64, v) === v : BigInt.asUintN(64, v) === v,
          `args[${i}]`,
          `a 64-bit ${kind === 'i64' ? 'signed' : 'unsigned'} integer`,
          v,
        )
        p[at + i] = Number.NaN
      } else {
        throw argKind(i, `a number (${kind})`, v)
      }
    }
    try {
      if (wide === undefined) CALLS.launchKernel()
      else CALLS.launchKernelWide(wide)
    } catch (e) {
      throw mapError(e)
    }
  }

  /** Copies `src` into `dst` on the stream (equal byte lengths). */
  copy(dst: DeviceBuffer, src: DeviceBuffer): void {
    native(() => this.native.copy(dst.native, src.native))
  }

  /** Sets every byte of `buffer` to `byte` on the stream. */
  memset(buffer: DeviceBuffer, byte: number): void {
    check(Number.isInteger(byte) && byte >= 0 && byte <= 255, 'byte', 'an integer 0..255', byte)
    native(() => this.native.memset(buffer.native, byte))
  }

  /** Sets every element of `buffer` to `value` (rounded to f16/bf16 for those dtypes). */
  fill(buffer: DeviceBuffer, value: number): void {
    check(typeof value === 'number', 'value', 'a number', value)
    native(() => this.native.fill(buffer.native, value))
  }

  /**
   * Copies `data` to `dst` on the stream without blocking; `data` may be reused at once (it is staged in
   * pinned memory). Inside a capture the staged copy belongs to the graph and is replayed as captured.
   */
  uploadAsync<D extends DType>(dst: DeviceBuffer<D>, data: HostArrayOf[D]): void {
    check(fitsDType(data as HostArray, dst.dtype), 'data', `a host array for ${dst.dtype}`, data)
    native(() => this.native.uploadAsync(dst.native, bytesOf(data)))
  }

  /**
   * Copies `dst.byteLength` bytes of the file at `path`, from byte `offset`, into `dst`, through pinned
   * chunks of 8 MiB (a disk read overlapping the previous chunk's copy): the data never passes through the
   * JS heap. Returns when it is on the device. Not capturable.
   */
  uploadFile(dst: DeviceBuffer, path: string, offset = 0): void {
    check(typeof path === 'string' && path.length > 0, 'path', 'a file path', path)
    check(Number.isSafeInteger(offset) && offset >= 0, 'offset', 'a non-negative integer (bytes)', offset)
    native(() => this.native.uploadFile(dst.native, path, offset))
  }

  /** Copies `src` to the host after the work enqueued before it; resolves with a new host array. */
  async downloadAsync<D extends DType>(src: DeviceBuffer<D>): Promise<HostArrayOf[D]> {
    const task = native(() => this.native.downloadAsync(src.native))
    let bytes: Uint8Array
    try {
      bytes = await task
    } catch (e) {
      throw mapError(e)
    }
    const out = hostArray(src.dtype, src.length)
    bytesOf(out).set(bytes)
    return out
  }

  /**
   * Allocates stream-ordered memory (`cuMemAllocAsync`). Inside a capture it becomes a graph memory node
   * served from the device's graph pool, and must be freed with {@link Stream.freeAsync} in the same
   * capture.
   */
  allocAsync<D extends DType>(dtype: D, length: number): DeviceBuffer<D> {
    check(isDType(dtype), 'dtype', 'one of f32, f16, bf16, i32, u32, i64, u8', dtype)
    posInt('length', length)
    return DeviceBuffer.wrap<D>(native(() => this.native.allocAsync(dtype, length)))
  }

  /** Frees a buffer from {@link Stream.allocAsync}, ordered on this stream. */
  freeAsync(buffer: DeviceBuffer): void {
    native(() => this.native.freeAsync(buffer.native))
  }

  /** Creates this stream's cuBLAS handle and 32 MiB workspace now (needed before GEMMs are captured). */
  prepareBlas(): void {
    native(() => this.native.prepareBlas())
  }

  /** Enqueues a cuBLAS GEMM (a graph node inside capture). See {@link GemmOptions}. */
  gemm(o: GemmOptions): void {
    const m = posInt('m', o.m)
    const n = posInt('n', o.n)
    const k = posInt('k', o.k)
    const ta = o.transA ?? false
    const tb = o.transB ?? false
    const alpha = o.alpha ?? 1
    const beta = o.beta ?? 0
    check(typeof alpha === 'number' && typeof beta === 'number', 'alpha/beta', 'numbers', [alpha, beta])
    for (const key of ['a', 'b', 'c'] as const) {
      check(o[key] instanceof DeviceBuffer, key, 'a DeviceBuffer', o[key])
    }
    const layout = o.layout ?? 'row'
    check(layout === 'row' || layout === 'col', 'layout', "'row' or 'col'", layout)
    check(o.bias === undefined || o.bias instanceof DeviceBuffer, 'bias', 'a DeviceBuffer or undefined', o.bias)
    const act = ACTIVATIONS.indexOf(o.activation ?? 'none')
    check(act >= 0, 'activation', ACTIVATIONS.join(' | '), o.activation)
    const bias = o.bias?.native
    // Leading dimensions travel as 32-bit integers: a larger one is an error here, never a wrapped value.
    const ld = (name: 'lda' | 'ldb' | 'ldc', dflt: number) => (o[name] === undefined ? dflt : posInt(name, o[name]))
    if (layout === 'col') {
      const lda = ld('lda', ta ? k : m)
      const ldb = ld('ldb', tb ? n : k)
      const ldc = ld('ldc', m)
      native(() => this.native.gemm(ta, tb, m, n, k, alpha, o.a.native, lda, o.b.native, ldb, beta, o.c.native, ldc, bias, act))
    } else {
      // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands. The bias, one
      // per row-major column, is one per column-major row of C^T, as cuBLASLt wants it.
      const lda = ld('lda', ta ? m : k)
      const ldb = ld('ldb', tb ? k : n)
      const ldc = ld('ldc', n)
      native(() => this.native.gemm(tb, ta, n, m, k, alpha, o.b.native, ldb, o.a.native, lda, beta, o.c.native, ldc, bias, act))
    }
  }

  /**
   * Captures the work `fn` enqueues on this stream into a {@link Graph}. Launches, copies, memsets,
   * GEMMs and stream-ordered allocations become graph nodes; nothing runs on the device meanwhile.
   * If `fn` throws, returns a promise, or does something that cannot be captured, the capture ends, the
   * stream is usable again and a CaptureError carries the cause.
   */
  capture(fn: (stream: this) => void, options: CaptureOptions = {}): Graph {
    const mode = options.mode ?? 'global'
    check(MODES.includes(mode), 'mode', MODES.join(' | '), mode)
    check(typeof fn === 'function', 'fn', 'a function', fn)
    native(() => this.native.beginCapture(mode))
    try {
      const r: unknown = fn(this)
      if (r !== null && typeof r === 'object' && typeof (r as { then?: unknown }).then === 'function') {
        throw new CaptureError('the capture callback returned a promise: capture must be synchronous')
      }
    } catch (e) {
      this.native.abortCapture()
      const cause = mapError(e)
      if (cause instanceof CaptureError) throw cause
      throw new CaptureError(`the capture callback threw: ${cause instanceof Error ? cause.message : describe(cause)}`, { cause })
    }
    try {
      return Graph.wrap(this.native.endCapture(options.instantiate ?? true, options.upload ?? true, options.measureMemory ?? true))
    } catch (e) {
      this.native.abortCapture()
      throw mapError(e)
    }
  }
}
