/**
 * The package's errors: every error it throws is one of these, with a stable `code` and the fields that
 * say what went wrong. Engine errors arrive with their fields from the native binding (lib/cuda/native.ts
 * maps them in one place); the generator's client and server errors are in lib/serve/errors.ts.
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

/**
 * The native addon for this platform is missing or could not load (no prebuilt binary was installed and
 * none was built from source). Everything that needs no GPU (the policy layer, the wire protocol, the
 * client) works without it.
 */
export class NativeBindingError extends CudaGraphError {
  /** `process.platform-process.arch` with the libc, e.g. `linux-x64-gnu`. */
  readonly platform: string
  /** The npm package that carries the binary for this platform, e.g. `cudagraph-linux-x64-gnu`. */
  readonly package: string
  constructor(message: string, fields: { platform: string; package: string; cause?: unknown }) {
    super('NATIVE_UNAVAILABLE', message, { cause: fields.cause })
    this.platform = fields.platform
    this.package = fields.package
  }
}

/** A CUDA driver call failed. */
export class CudaError extends CudaGraphError {
  /** The driver's error name, e.g. `CUDA_ERROR_INVALID_VALUE`. */
  readonly cudaName: string
  /** The driver's numeric error code (`CUresult`), e.g. 1. */
  readonly cudaCode: number
  /** The driver call that failed, e.g. `cuLaunchKernel`. */
  readonly call: string
  constructor(message: string, fields: { call: string; cudaName: string; cudaCode: number; cause?: unknown }) {
    super('CUDA_ERROR', message, { cause: fields.cause })
    this.call = fields.call
    this.cudaName = fields.cudaName
    this.cudaCode = fields.cudaCode
  }
}

/** A cuBLAS or cuBLASLt call failed. */
export class CublasError extends CudaGraphError {
  /** The call that failed, e.g. `cublasLtMatmul`. */
  readonly call: string
  /** cuBLAS's status name, e.g. `CUBLAS_STATUS_ALLOC_FAILED`. */
  readonly status: string
  constructor(message: string, fields: { call: string; status: string; cause?: unknown }) {
    super('CUBLAS_ERROR', message, { cause: fields.cause })
    this.call = fields.call
    this.status = fields.status
  }
}

/** An NCCL call failed (the communicator was aborted, so no rank waits on it). */
export class NcclError extends CudaGraphError {
  /** The call that failed, e.g. `ncclAllReduce`. */
  readonly call: string
  /** NCCL's name for the status, e.g. `ncclInvalidArgument`. */
  readonly ncclName: string
  constructor(message: string, fields: { call: string; ncclName: string; cause?: unknown }) {
    super('NCCL_ERROR', message, { cause: fields.cause })
    this.call = fields.call
    this.ncclName = fields.ncclName
  }
}

/** NVRTC could not compile the source; `log` holds the compiler's log. */
export class CompileError extends CudaGraphError {
  /** The module name given to `Device.compile`. */
  readonly module: string
  /** NVRTC's compile log (errors with line numbers). */
  readonly log: string
  constructor(message: string, fields: { module: string; log: string; cause?: unknown }) {
    super('COMPILE_ERROR', message, { cause: fields.cause })
    this.module = fields.module
    this.log = fields.log
  }
}

/** An argument was missing, out of range or of the wrong kind; `argument` names it. Nothing was changed. */
export class ArgumentError extends CudaGraphError {
  /** The offending argument, e.g. `args[1]`, `dtype`, `inputs.tokens`. */
  readonly argument: string
  /** What would have been accepted. */
  readonly expected: string
  /**
   * `argument '<argument>': expected <expected>, got <got>` unless `options.message` says otherwise (errors
   * from the engine, whose `got` is already text).
   */
  constructor(argument: string, expected: string, got: unknown, options?: { cause?: unknown; message?: string }) {
    super('ARGUMENT_ERROR', options?.message ?? `argument '${argument}': expected ${expected}, got ${describe(got)}`, options)
    this.argument = argument
    this.expected = expected
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

/**
 * A model file is not what it must be: a truncated or malformed safetensors file, a tensor out of range,
 * missing or of the wrong shape, a config field missing, out of range or asking for what the kernels do
 * not implement. `file` names the file; `tensor` or `field` what in it is at fault.
 */
export class CheckpointError extends CudaGraphError {
  /** The file at fault. */
  readonly file: string
  /** The tensor at fault, if one is. */
  readonly tensor: string | undefined
  /** The config field at fault, if one is (e.g. `num_key_value_heads`). */
  readonly field: string | undefined
  constructor(file: string, message: string, options?: { tensor?: string; field?: string; cause?: unknown }) {
    const where = options?.tensor !== undefined ? `, tensor '${options.tensor}'` : options?.field !== undefined ? `, field '${options.field}'` : ''
    super('CHECKPOINT_ERROR', `${file}${where}: ${message}`, options)
    this.file = file
    this.tensor = options?.tensor
    this.field = options?.field
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
    super(
      'INPUT_ADDRESS',
      `static input '${input}' is at 0x${current.toString(16)} but the graph was captured with 0x${captured.toString(16)}; call recapture() after rebinding inputs`,
    )
    this.input = input
    this.captured = captured
    this.current = current
  }
}

/** Throws an {@link ArgumentError} naming `argument` unless `ok`. */
export function check(ok: boolean, argument: string, expected: string, got: unknown): asserts ok {
  if (!ok) throw new ArgumentError(argument, expected, got)
}

/** Short description of a value for error messages. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`
  if (typeof v === 'bigint') return `${v}n`
  if (Array.isArray(v)) return `[${v.map(describe).join(', ')}]`
  if (v === null || typeof v !== 'object') return String(v)
  if (ArrayBuffer.isView(v) && 'length' in v) return `${v.constructor.name}(${String(v.length)})`
  return v.constructor?.name ?? 'an object'
}
