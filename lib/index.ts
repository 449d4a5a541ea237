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
export { Device, type Availability, type CompileOptions, type GraphMemoryStats, type MemoryInfo } from './cuda/device.js'
export { Stream, type CaptureMode, type CaptureOptions, type Dim3, type GemmActivation, type GemmOptions, type LaunchConfig } from './cuda/stream.js'
export { DeviceBuffer } from './cuda/buffer.js'
export { Event } from './cuda/event.js'
export { Module } from './cuda/module.js'
export { Kernel, ARG_KINDS, type ArgKind, type ArgValueOf, type ArgsOf } from './cuda/kernel.js'
export { Graph, type GraphMemoryDelta, type GraphTimings, type UpdateResult } from './cuda/graph.js'
export { DTYPES, DTYPE_SIZE, type DType, type HostArray, type HostArrayOf } from './cuda/dtype.js'
export {
  ArgumentError,
  CapacityError,
  CaptureError,
  CompileError,
  ConfigError,
  CublasError,
  CudaError,
  CudaGraphError,
  CudaUnavailableError,
  DisposedError,
  InUseError,
  InputAddressError,
  NativeBindingError,
} from './errors.js'
export {
  describeBatch,
  descriptorFromKey,
  descriptorKey,
  relaxForMixed,
  MAX_KEY_LORAS,
  MAX_KEY_REQS,
  MAX_KEY_TOKENS,
  type BatchDescriptor,
  type BatchDescriptorInit,
} from './policy/descriptor.js'
export {
  GraphMode,
  GRAPH_MODES,
  decodeMode,
  graphModeName,
  hasFullGraphs,
  hasMode,
  hasPiecewiseGraphs,
  maxMode,
  mixedMode,
  parseGraphMode,
  separateRoutine,
  type RuntimeMode,
} from './policy/graph-mode.js'
export {
  DEFAULT_MAX_CAPTURE_SIZE,
  defaultCaptureSizes,
  findClosestSize,
  padForGraph,
  paddingTable,
  roundSizesTo,
  warmupSizes,
  type WarmupSize,
} from './policy/capture-sizes.js'
export { GraphConfig, type GraphConfigInit, type GraphConfigJSON } from './policy/config.js'
export type { DispatchPolicy } from './policy/policy.js'
export { DefaultPolicy, type DefaultPolicyOptions } from './policy/default-policy.js'
export { AdaptivePolicy, type AdaptivePolicyOptions } from './policy/adaptive-policy.js'
export { StableShapePolicy, type StableShapePolicyOptions } from './policy/stable-shape-policy.js'
export { DispatchStats, type DispatchStatsJSON } from './policy/dispatch-stats.js'
export {
  Dispatcher,
  type CaptureGroup,
  type DispatchOptions,
  type DispatchResult,
  type DispatcherLike,
  type DispatcherOptions,
} from './policy/dispatcher.js'
export { CompositeDispatcher, type CompositeResult } from './policy/composite-dispatcher.js'
export { StreamDispatcher, type StreamDispatchResult } from './policy/stream-dispatcher.js'
export { GraphRegistry, type EvictReason, type Evicted, type RegistryOptions, type Releasable } from './policy/registry.js'
export {
  GraphManager,
  isOutOfMemory,
  type EntryMemory,
  type GraphManagerOptions,
  type ManagerMemory,
  type ManagerSnapshot,
  type WarmupOptions,
  type WarmupResult,
} from './manager/graph-manager.js'
export { Step, type GraphUse, type RunInputs, type RunOptions } from './manager/step.js'
export {
  parseTensorSpec,
  parseTensorSpecs,
  type BuffersOf,
  type InputValue,
  type Piece,
  type RowsOf,
  type StepBatch,
  type StepContext,
  type StepSpec,
  type TensorSpec,
  type TensorSpecObject,
} from './manager/step-spec.js'
export { ManagerStats, type LatencySummary, type ManagerStatsJSON } from './manager/manager-stats.js'
export { fromHalf, roundHalf, toHalf } from './cuda/half.js'
