/**
 * Typed errors. The native binding throws plain Errors with a `code`; {@link mapError} turns each into
 * one of these classes in this one place.
 */

/** Base class of every error this package throws. `code` is stable and machine-readable. */
export class CudaGraphError extends Error {
  /** Machine-readable code, e.g. `CUDA_ERROR`, `ARGUMENT_ERROR`. */
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
  }
}

/** No CUDA driver, library (NVRTC, cuBLAS) or device on this machine. */
export class CudaUnavailableError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CUDA_UNAVAILABLE', message, options)
  }
}

/** A CUDA driver call failed. `cudaName` is the driver's name for the error (`CUDA_ERROR_OUT_OF_MEMORY`). */
export class CudaError extends CudaGraphError {
  /** The driver's error name, e.g. `CUDA_ERROR_INVALID_VALUE`; empty if unknown. */
  readonly cudaName: string
  /** The driver call that failed, e.g. `cuLaunchKernel`. */
  readonly call: string
  constructor(message: string, options?: { cause?: unknown }) {
    super('CUDA_ERROR', message, options)
    this.cudaName = /CUDA_ERROR_[A-Z0-9_]+/.exec(message)?.[0] ?? ''
    this.call = /^(\w+) failed/.exec(message)?.[1] ?? ''
  }
}

/** A cuBLAS call failed. */
export class CublasError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CUBLAS_ERROR', message, options)
  }
}

/** NVRTC could not compile the source; `log` holds the compiler's log. */
export class CompileError extends CudaGraphError {
  /** NVRTC's compile log (errors with line numbers). */
  readonly log: string
  constructor(message: string, options?: { cause?: unknown }) {
    super('COMPILE_ERROR', message, options)
    const nl = message.indexOf('\n')
    this.log = nl >= 0 ? message.slice(nl + 1) : ''
  }
}

/** An argument was missing, out of range or of the wrong kind; `argument` names it. Nothing was changed. */
export class ArgumentError extends CudaGraphError {
  /** The offending argument, e.g. `args[1]`, `dtype`. */
  readonly argument: string
  constructor(message: string, options?: { cause?: unknown; argument?: string }) {
    super('ARGUMENT_ERROR', message, options)
    this.argument = options?.argument ?? /^argument '([^']+)'/.exec(message)?.[1] ?? ''
  }
}

/** A capture produced no graph. The capture is over and the stream usable; `cause` says why. */
export class CaptureError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CAPTURE_ERROR', message, options)
  }
}

/** The object is still used (a buffer by a live graph) and was left as it was. */
export class InUseError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('IN_USE', message, options)
  }
}

/** The object was disposed before this call. */
export class DisposedError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('DISPOSED', message, options)
  }
}

/**
 * A configuration field is invalid. `path` names it (`captureSizes[3]`), `value` is what was given and
 * `expected` what would have been accepted.
 */
export class ConfigError extends CudaGraphError {
  /** Dotted path of the offending field. */
  readonly path: string
  /** The value given. */
  readonly value: unknown
  /** What was expected. */
  readonly expected: string
  constructor(path: string, value: unknown, expected: string) {
    super('CONFIG_ERROR', `config '${path}': expected ${expected}, got ${describe(value)}`)
    this.path = path
    this.value = value
    this.expected = expected
  }
}

/** An entry is larger than a budget can ever hold (a registry's byte budget); nothing was evicted for it. */
export class CapacityError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CAPACITY_ERROR', message, options)
  }
}

/**
 * A graph was about to replay with static buffers other than the ones it captured (vLLM's input-address
 * check); nothing was enqueued. `input` names the buffer. Recapture the step's graphs
 * (`GraphManager.recapture`) after rebinding its buffers.
 */
export class InputAddressError extends CudaGraphError {
  /** The static input whose address changed. */
  readonly input: string
  /** Device address the graph captured. */
  readonly captured: number
  /** Device address the step holds now. */
  readonly current: number
  constructor(input: string, captured: number, current: number) {
    super('INPUT_ADDRESS', `static input '${input}' is at 0x${current.toString(16)} but the graph was captured with 0x${captured.toString(16)}; call recapture() after rebinding inputs`)
    this.input = input
    this.captured = captured
    this.current = current
  }
}

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

type ErrorClass = new (message: string, options?: { cause?: unknown }) => CudaGraphError

const byCode: Record<string, ErrorClass> = {
  CUDA_UNAVAILABLE: CudaUnavailableError,
  CUDA_ERROR: CudaError,
  CUBLAS_ERROR: CublasError,
  COMPILE_ERROR: CompileError,
  ARGUMENT_ERROR: ArgumentError,
  CAPTURE_ERROR: CaptureError,
  IN_USE: InUseError,
  DISPOSED: DisposedError,
  // napi-rs's own codes for a JS value of the wrong type
  InvalidArg: ArgumentError,
  NumberExpected: ArgumentError,
  StringExpected: ArgumentError,
  ObjectExpected: ArgumentError,
  BooleanExpected: ArgumentError,
  ArrayExpected: ArgumentError,
  BigintExpected: ArgumentError,
}

/**
 * Converts anything the native binding threw into a typed error (errors of this package pass through).
 * Async tasks carry their code as a `[CODE] ` message prefix.
 */
export function mapError(e: unknown): unknown {
  if (e instanceof CudaGraphError || !(e instanceof Error)) return e
  let code = (e as { code?: unknown }).code
  let message = e.message
  const prefixed = /^\[([A-Z_]+)\] ([\s\S]*)$/.exec(message)
  if (prefixed) {
    code = prefixed[1]
    message = prefixed[2]!
  }
  const Cls = typeof code === 'string' ? byCode[code] : undefined
  return Cls ? new Cls(message, { cause: e }) : e
}

/** Runs `fn`, rethrowing native errors as typed ones. */
export function native<T>(fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw mapError(e)
  }
}

/** Throws an {@link ArgumentError} naming `argument` unless `ok`. */
export function check(ok: boolean, argument: string, expected: string, got: unknown): asserts ok {
  if (!ok) {
    throw new ArgumentError(`argument '${argument}': expected ${expected}, got ${describe(got)}`, { argument })
  }
}

/** Short description of a value for error messages. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`
  if (typeof v === 'bigint') return `${v}n`
  if (Array.isArray(v)) return `[${v.map(describe).join(', ')}]`
  if (v === null || typeof v !== 'object') return String(v)
  return v.constructor?.name ?? 'an object'
}
