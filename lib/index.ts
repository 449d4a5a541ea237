/**
 * cudagraph: CUDA graph capture and replay for Node.js. The root export is the core API: the CUDA
 * wrappers, the policy layer and the graph manager. The decoder model is `cudagraph/model`; the generator
 * server, its client and wire protocol are `cudagraph/serve`.
 *
 * ```ts
 * import { Device } from 'cudagraph'
 * const dev = Device.open(0)
 * const s = dev.createStream()
 * const g = s.capture(() => { ... launches ... })
 * g.launch(s)
 * ```
 */

export { DeviceBuffer } from './cuda/buffer.js'
export { Communicator, type CommunicatorOptions, type ReduceOp } from './cuda/communicator.js'
export { type Availability, type CompileOptions, Device, type GraphMemoryStats, type MemoryInfo } from './cuda/device.js'
export { DTYPE_SIZE, DTYPES, type DType, type HostArray, type HostArrayOf } from './cuda/dtype.js'
export { Event } from './cuda/event.js'
export { Graph, type GraphMemoryDelta, type GraphTimings, type UpdateResult } from './cuda/graph.js'
export { fromHalf, roundHalf, toHalf } from './cuda/half.js'
export { ARG_KINDS, type ArgKind, type ArgsOf, type ArgValueOf, Kernel } from './cuda/kernel.js'
export { kernelCacheDir, Module } from './cuda/module.js'
export { type CaptureMode, type CaptureOptions, type Dim3, type GemmActivation, type GemmOptions, type LaunchConfig, Stream } from './cuda/stream.js'
export {
  ArgumentError,
  CapacityError,
  CaptureError,
  CheckpointError,
  CompileError,
  ConfigError,
  CublasError,
  CudaError,
  CudaGraphError,
  CudaUnavailableError,
  DisposedError,
  InputAddressError,
  InUseError,
  NativeBindingError,
  NcclError,
} from './errors.js'
export {
  type EntryMemory,
  GraphManager,
  type GraphManagerOptions,
  isOutOfMemory,
  type ManagerMemory,
  type ManagerSnapshot,
  type WarmupOptions,
  type WarmupResult,
} from './manager/graph-manager.js'
export { type LatencySummary, ManagerStats, type ManagerStatsJSON } from './manager/manager-stats.js'
export { type GraphUse, type RunInputs, type RunOptions, Step, type StepTiming } from './manager/step.js'
export {
  type BuffersOf,
  type InputValue,
  type Piece,
  parseTensorSpec,
  parseTensorSpecs,
  type RowsOf,
  type StepBatch,
  type StepContext,
  type StepSpec,
  type TensorSpec,
  type TensorSpecObject,
} from './manager/step-spec.js'
export { AdaptivePolicy, type AdaptivePolicyOptions } from './policy/adaptive-policy.js'
export {
  DEFAULT_MAX_CAPTURE_SIZE,
  defaultCaptureSizes,
  findClosestSize,
  MAX_CAPTURE_SIZE,
  paddingTable,
  padForGraph,
  roundSizesTo,
  type WarmupSize,
  warmupSizes,
} from './policy/capture-sizes.js'
export { CompositeDispatcher, type CompositeResult } from './policy/composite-dispatcher.js'
export { GraphConfig, type GraphConfigInit, type GraphConfigJSON } from './policy/config.js'
export { DefaultPolicy, type DefaultPolicyOptions } from './policy/default-policy.js'
export {
  type BatchDescriptor,
  type BatchDescriptorInit,
  describeBatch,
  descriptorFromKey,
  descriptorKey,
  MAX_KEY_LORAS,
  MAX_KEY_REQS,
  MAX_KEY_TOKENS,
  relaxForMixed,
} from './policy/descriptor.js'
export { DispatchStats, type DispatchStatsJSON } from './policy/dispatch-stats.js'
export {
  type CaptureGroup,
  Dispatcher,
  type DispatcherLike,
  type DispatcherOptions,
  type DispatchOptions,
  type DispatchResult,
} from './policy/dispatcher.js'
export {
  decodeMode,
  GRAPH_MODES,
  GraphMode,
  graphModeName,
  hasFullGraphs,
  hasMode,
  hasPiecewiseGraphs,
  maxMode,
  mixedMode,
  parseGraphMode,
  type RuntimeMode,
  separateRoutine,
} from './policy/graph-mode.js'
export type { DispatchPolicy } from './policy/policy.js'
export { type Evicted, type EvictReason, GraphRegistry, type RegistryOptions, type Releasable } from './policy/registry.js'
export { StableShapePolicy, type StableShapePolicyOptions } from './policy/stable-shape-policy.js'
export { StreamDispatcher, type StreamDispatchResult } from './policy/stream-dispatcher.js'
