/**
 * `cudagraph/serve`: the generator server (continuous batching on a Unix socket, Prometheus metrics), its
 * client, the wire protocol and their errors. The client and the protocol need no GPU and no native addon.
 */
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
export { AddressInUseError, BusyError, ConnectionClosedError, ProtocolError, RefusedError, ServerError } from './errors.js'
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
