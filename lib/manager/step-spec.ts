/**
 * What a user hands the graph manager: a step's static inputs and outputs, its forward, and optionally its
 * pieces. {@link parseTensorSpec} validates a tensor spec without touching the GPU.
 */

import type { DeviceBuffer } from '../cuda/buffer.js'
import type { Device } from '../cuda/device.js'
import { DTYPE_SIZE, type DType, type HostArrayOf, isDType } from '../cuda/dtype.js'
import type { Stream } from '../cuda/stream.js'
import { check, describe } from '../errors.js'
import type { RuntimeMode } from '../policy/graph-mode.js'

/** Whether a tensor's rows are the batch's tokens or its requests. */
export type RowsOf = 'token' | 'request'

/** A static tensor: `rows` rows of `width` elements of `dtype`. */
export interface TensorSpecObject<D extends DType = DType> {
  dtype: D
  /** Most rows (tokens or requests) a batch can have. */
  rows: number
  /** Elements per row (default 1). */
  width?: number
  /** What a row is (default `'token'`). */
  per?: RowsOf
  /**
   * Value written into padding rows of an input, as the host array holds it (for f16/bf16, the raw 16 bits;
   * default 0). A neutral value: a pad token id, a position, an index the forward ignores.
   */
  pad?: number | bigint
  /**
   * Outputs only: the static buffer is pinned host memory mapped for the device, which the kernels write
   * directly (no copy out, which would cost a step several µs), and every run waits for it in the same
   * native call as the replay; read it with {@link Step.hostOutput}. For what the host needs after each
   * step (sampled token ids), the way `.cpu()` is in PyTorch; the device reaches it over the bus, so keep
   * large tensors the device reads again off it. Default false.
   */
  readBack?: boolean
}

/** A tensor spec: `[dtype, rows]`, `[dtype, rows, width]` or the object form. */
export type TensorSpec<D extends DType = DType> = readonly [D, number] | readonly [D, number, number] | TensorSpecObject<D>

/** A validated tensor spec. */
export interface ParsedTensor {
  readonly name: string
  readonly dtype: DType
  readonly rows: number
  readonly width: number
  readonly per: RowsOf
  readonly pad: number | bigint
  /** Copied to the host after every run (outputs only). */
  readonly readBack: boolean
  /** Bytes per row. */
  readonly rowBytes: number
}

/** The dtype of a spec. */
export type DTypeOfSpec<S> = S extends readonly [infer D, ...number[]] ? D : S extends TensorSpecObject<infer D> ? D : DType

/** Device buffers for a record of specs. */
export type BuffersOf<T extends Record<string, TensorSpec>> = { readonly [K in keyof T]: DeviceBuffer<DTypeOfSpec<T[K]> & DType> }

/** What `run` accepts for an input: a host array (copied through pinned staging) or a device buffer. */
export type InputValue<S> = HostArrayOf[DTypeOfSpec<S> & DType] | DeviceBuffer<DTypeOfSpec<S> & DType>

/** The shape of the batch a forward or piece computes. */
export interface StepBatch {
  /** Token rows to compute (the padded count inside graphs). */
  readonly numTokens: number
  /** Request rows to compute (the padded count inside graphs). */
  readonly numReqs: number
  /** Tokens of real data (equals numTokens inside a captured graph, which serves every real size). */
  readonly realTokens: number
  /** Requests of real data (equals numReqs inside a captured graph). */
  readonly realReqs: number
  /** Every request is a uniform decode step. */
  readonly uniformDecode: boolean
  /** How this call runs: `'FULL'` or `'PIECEWISE'` while captured, `'NONE'` eagerly. */
  readonly mode: RuntimeMode
}

/** What a forward or piece works with. */
export interface StepContext<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>> {
  readonly device: Device
  /** The stream to enqueue on (the manager's). */
  readonly stream: Stream
  /** Static input buffers, sized for the most rows. */
  readonly inputs: BuffersOf<I>
  /** Static output buffers, sized for the most rows. */
  readonly outputs: BuffersOf<O>
  /**
   * The step's ready flag (a step whose spec asks for one, {@link StepSpec.readyFlag}): one i32 of pinned
   * host memory mapped for the device, zeroed before each run. A kernel sets it nonzero once every
   * read-back output holds its final value: it stores the outputs, then `__threadfence_system()`, then the
   * flag. A FULL replay (without `timing`) then returns as soon as the flag is set, while the rest of the
   * step still runs on the stream (work after it stays stream-ordered; an error in it surfaces at the
   * stream's next wait); one whose kernels leave it zero returns when its replay ends. Eager, piecewise
   * and timed runs, and runs that say their kernels do not set it (`RunOptions.readyFlag` false), wait for
   * the stream. Nothing after the flag may write a read-back output.
   */
  readonly readyFlag: DeviceBuffer<'i32'> | undefined
  /**
   * A temporary buffer, stream-ordered: inside capture it comes from the graph pool that every graph of
   * the manager shares, so smaller graphs reuse the larger's memory. Freed when the forward or piece returns.
   */
  scratch<D extends DType>(dtype: D, length: number): DeviceBuffer<D>
}

/** Part of a step for PIECEWISE mode: graphable pieces are captured per size, others run eagerly between. */
export interface Piece<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>> {
  /** For logs and errors. */
  readonly name: string
  /** Whether the piece can be captured on its own (false: e.g. attention over a varying length). */
  readonly graphable: boolean
  run(ctx: StepContext<I, O>, batch: StepBatch): void
}

/** A model step for {@link GraphManager.wrap}. */
export interface StepSpec<I extends Record<string, TensorSpec>, O extends Record<string, TensorSpec>> {
  /** For logs and stats (default `step<N>`). */
  name?: string
  inputs: I
  outputs: O
  /** Enqueues the whole step on `ctx.stream`. Default: the pieces in order. */
  forward?(ctx: StepContext<I, O>, batch: StepBatch): void
  /** The step in pieces, for PIECEWISE graphs (default: the forward as one graphable piece). */
  pieces?: readonly Piece<I, O>[]
  /**
   * Whether the step has a ready flag ({@link StepContext.readyFlag}), so that a replay can return before
   * its graph ends (a decoder's tokens are read back before the kernels after them finish). Default false.
   */
  readyFlag?: boolean
  /**
   * Whether a replay of this step can be launched before its inputs are staged (`RunOptions.armNext`).
   * Each of its graphs then begins with a gate kernel that waits for a doorbell in pinned host memory and
   * copies the run's staged inputs into the static buffers (at most 24 inputs). The gate lets the step's
   * first kernel launch at once (programmatic dependent launch, compute capability 9.0+): a kernel
   * launched that way may start on what does not depend on the inputs, and must execute
   * `griddepcontrol.wait` before it reads one. Default false.
   */
  armable?: boolean
}

const ROWS_OF: readonly RowsOf[] = ['token', 'request']

/** Validates one tensor spec; `path` names it in errors and becomes its name. */
export function parseTensorSpec(path: string, spec: unknown): ParsedTensor {
  let o: TensorSpecObject
  if (Array.isArray(spec)) {
    check(spec.length === 2 || spec.length === 3, path, '[dtype, rows] or [dtype, rows, width]', spec)
    o =
      spec.length === 3 ? { dtype: spec[0] as DType, rows: spec[1] as number, width: spec[2] as number } : { dtype: spec[0] as DType, rows: spec[1] as number }
  } else {
    check(spec !== null && typeof spec === 'object', path, 'a tensor spec ([dtype, rows, width?] or { dtype, rows, width?, per?, pad?, readBack? })', spec)
    o = spec as TensorSpecObject
  }
  check(isDType(o.dtype), `${path}.dtype`, 'one of f32, f16, bf16, i32, u32, i64, u8', o.dtype)
  check(Number.isSafeInteger(o.rows) && o.rows > 0, `${path}.rows`, 'a positive integer', o.rows)
  const width = o.width ?? 1
  check(Number.isSafeInteger(width) && width > 0, `${path}.width`, 'a positive integer', width)
  const per = o.per ?? 'token'
  check(ROWS_OF.includes(per), `${path}.per`, "'token' or 'request'", per)
  const pad = o.pad ?? (o.dtype === 'i64' ? 0n : 0)
  check(o.dtype === 'i64' ? typeof pad === 'bigint' : typeof pad === 'number', `${path}.pad`, o.dtype === 'i64' ? 'a bigint' : 'a number', pad)
  const readBack = o.readBack ?? false
  check(typeof readBack === 'boolean', `${path}.readBack`, 'a boolean', readBack)
  const rowBytes = width * DTYPE_SIZE[o.dtype]
  check(o.rows * rowBytes <= 0xffffffff, path, 'at most 4 GiB', `${o.rows} x ${rowBytes} bytes`)
  return Object.freeze({ name: path, dtype: o.dtype, rows: o.rows, width, per, pad, readBack, rowBytes })
}

/** Validates a record of at least one tensor spec; each is named by its key. */
export function parseTensorSpecs(what: 'inputs' | 'outputs', specs: unknown): ParsedTensor[] {
  check(specs !== null && typeof specs === 'object' && !Array.isArray(specs), what, 'a record of tensor specs', specs)
  const out = Object.entries(specs as Record<string, unknown>).map(([k, v]) => Object.freeze({ ...parseTensorSpec(`${what}.${k}`, v), name: k }))
  check(out.length > 0, what, 'at least one tensor', describe(specs))
  for (const t of out) check(what === 'outputs' || !t.readBack, `inputs.${t.name}.readBack`, 'false or absent (only outputs are read back)', t.readBack)
  return out
}
