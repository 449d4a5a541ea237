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
export { Stream, type CaptureMode, type CaptureOptions, type Dim3, type GemmActivation, type GemmOptions, type LaunchConfig } from './stream.js'
export { DeviceBuffer } from './buffer.js'
export { Event } from './event.js'
export { Module } from './module.js'
export { Kernel, ARG_KINDS, type ArgKind, type ArgValueOf, type ArgsOf } from './kernel.js'
export { Graph, type GraphMemoryDelta, type GraphTimings, type UpdateResult } from './graph.js'
export { DTYPES, DTYPE_SIZE, type DType, type HostArray, type HostArrayOf } from './dtype.js'
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
  RefusedError,
  BusyError,
  ProtocolError,
  ServerError,
  ConnectionClosedError,
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
} from './descriptor.js'
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
} from './graph-mode.js'
export {
  DEFAULT_MAX_CAPTURE_SIZE,
  defaultCaptureSizes,
  findClosestSize,
  padForGraph,
  paddingTable,
  roundSizesTo,
  warmupSizes,
  type WarmupSize,
} from './capture-sizes.js'
export { GraphConfig, type GraphConfigInit, type GraphConfigJSON } from './config.js'
export type { DispatchPolicy } from './policy.js'
export { DefaultPolicy, type DefaultPolicyOptions } from './default-policy.js'
export { AdaptivePolicy, type AdaptivePolicyOptions } from './adaptive-policy.js'
export { StableShapePolicy, type StableShapePolicyOptions } from './stable-shape-policy.js'
export { DispatchStats, type DispatchStatsJSON } from './dispatch-stats.js'
export {
  Dispatcher,
  type CaptureGroup,
  type DispatchOptions,
  type DispatchResult,
  type DispatcherLike,
  type DispatcherOptions,
} from './dispatcher.js'
export { CompositeDispatcher, type CompositeResult } from './composite-dispatcher.js'
export { StreamDispatcher, type StreamDispatchResult } from './stream-dispatcher.js'
export { GraphRegistry, type EvictReason, type Evicted, type RegistryOptions } from './registry.js'
export {
  GraphManager,
  isOutOfMemory,
  type EntryMemory,
  type GraphManagerOptions,
  type ManagerMemory,
  type ManagerSnapshot,
  type WarmupOptions,
  type WarmupResult,
} from './graph-manager.js'
export { Step, type GraphUse, type RunInputs, type RunOptions } from './step.js'
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
} from './step-spec.js'
export { ManagerStats, type LatencySummary, type ManagerStatsJSON } from './manager-stats.js'
export { Progress, progressLine, type ProgressSink } from './progress.js'
export { fromHalf, roundHalf, toHalf } from './half.js'
export { MODEL_PRESETS, headDim, modelConfig, parameterCount, type ModelConfig, type ModelName } from './model-config.js'
export { DecoderModel, DECODER_KERNELS_PATH, type DecoderOptions, type ForwardContext, type ForwardTensors, type Weight } from './decoder-model.js'
export { DecoderRunner, type DecoderRunnerOptions } from './decoder-runner.js'
export { DecoderReference, type ReferenceOutput } from './decoder-reference.js'
export { writeSafetensors, type SafetensorsEntry } from './safetensors.js'
export { lineChartSvg, seriesOf, type ChartSeries, type ChartSpec } from './svg-chart.js'
export {
  BatchScheduler,
  type GenerationEngine,
  type GenerationRequest,
  type SchedulerOptions,
  type SchedulerSink,
  type StepReport,
} from './batch-scheduler.js'
export { GeneratorServer, type CloseOptions, type GeneratorServerOptions, type RollingGraphs } from './generator-server.js'
export { Client, Generation, type ConnectOptions, type GenerateOptions, type ServerInfo } from './client.js'
export { ServerMetrics, type Health, type RequestOutcome } from './server-metrics.js'
export {
  DEFAULT_MAX_FRAME_BYTES,
  ErrorCode,
  FINISH_REASONS,
  FrameDecoder,
  FrameError,
  MessageType,
  PROTOCOL_VERSION,
  encode,
  encodeTokens,
  errorCodeName,
  type CancelMessage,
  type ClientMessage,
  type DoneMessage,
  type ErrorCodeName,
  type ErrorMessage,
  type FinishReason,
  type GenerateMessage,
  type HelloMessage,
  type Message,
  type PingMessage,
  type ServerMessage,
  type TokensMessage,
} from './wire-protocol.js'
