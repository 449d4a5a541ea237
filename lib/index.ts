/**
 * cudagraph: CUDA graph capture and replay for Node.js.
 *
 * ```ts
 * import { Device } from 'cudagraph'
 * const dev = Device.open(0)
 * const s = dev.createStream()
 * const g = s.capture(() => { ... launches ... })
 * g.launch(s)
 * ```
 */
export { Device, type Availability, type CompileOptions, type GraphMemoryStats, type MemoryInfo } from './device.js'
export { Stream, type CaptureMode, type CaptureOptions, type Dim3, type GemmOptions, type LaunchConfig } from './stream.js'
export { DeviceBuffer } from './buffer.js'
export { Event } from './event.js'
export { Module } from './module.js'
export { Kernel, ARG_KINDS, type ArgKind, type ArgValueOf, type ArgsOf } from './kernel.js'
export { Graph, type GraphMemoryDelta, type GraphTimings, type UpdateResult } from './graph.js'
export { DTYPES, DTYPE_SIZE, type DType, type HostArray, type HostArrayOf } from './dtype.js'
export {
  ArgumentError,
  CaptureError,
  CompileError,
  CublasError,
  CudaError,
  CudaGraphError,
  CudaUnavailableError,
  DisposedError,
  InUseError,
} from './errors.js'
