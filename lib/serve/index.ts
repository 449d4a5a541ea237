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
export { Client, type ConnectOptions, type GenerateOptions, Generation, type ServerInfo } from './client.js'
export { AddressInUseError, BusyError, ConnectionClosedError, ProtocolError, RefusedError, ServerError } from './errors.js'
export { type CloseOptions, GeneratorServer, type GeneratorServerOptions, type RollingGraphs } from './generator-server.js'
export { type Health, type RequestOutcome, ServerMetrics } from './server-metrics.js'
export {
  type CancelMessage,
  type ClientMessage,
  DEFAULT_MAX_FRAME_BYTES,
  type DoneMessage,
  ErrorCode,
  type ErrorCodeName,
  type ErrorMessage,
  encode,
  encodeTokens,
  errorCodeName,
  FINISH_REASONS,
  type FinishReason,
  FrameDecoder,
  FrameError,
  type GenerateMessage,
  type HelloMessage,
  type Message,
  MessageType,
  type PingMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
  type TokensMessage,
} from './wire-protocol.js'
