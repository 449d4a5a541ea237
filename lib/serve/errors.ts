/** Errors of the generator's client and server: the wire protocol and the connection. */
import { CudaGraphError } from '../errors.js'

/** No generator server listens on the socket path (nothing there, or nobody accepting). */
export class RefusedError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('REFUSED', message, options)
  }
}

/** The generator's wait queue is full: the request was not taken; try again later. */
export class BusyError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BUSY', message, options)
  }
}

/** The peer broke the wire protocol (a bad frame, version or message type); the connection is closed. */
export class ProtocolError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('PROTOCOL', message, options)
  }
}

/**
 * The generator answered with an error: `serverCode` is the protocol's name for it (`INVALID_REQUEST`,
 * `SHUTTING_DOWN`, `INTERNAL`, `SLOW_READER`, ...).
 */
export class ServerError extends CudaGraphError {
  /** The ERROR frame's code name (see docs/protocol.md). */
  readonly serverCode: string
  constructor(serverCode: string, message: string, options?: { cause?: unknown }) {
    super('SERVER_ERROR', message, options)
    this.serverCode = serverCode
  }
}

/** The connection ended (the server died, or the client closed it) while this was waiting on it. */
export class ConnectionClosedError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONNECTION_CLOSED', message, options)
  }
}

/** A server could not listen: another one already serves the socket path (or port). */
export class AddressInUseError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ADDRESS_IN_USE', message, options)
  }
}
