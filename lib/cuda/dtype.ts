/** Element types of device buffers and their host typed-array counterparts. */

/** Element type of a device buffer. f16 and bf16 travel to and from the host as raw bits in a Uint16Array. */
export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u32' | 'i64' | 'u8'

/** Every dtype. */
export const DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'u32', 'i64', 'u8']

/** Host array type of each dtype. */
export interface HostArrayOf {
  f32: Float32Array
  f16: Uint16Array
  bf16: Uint16Array
  i32: Int32Array
  u32: Uint32Array
  i64: BigInt64Array
  u8: Uint8Array
}

/** Any host array a buffer can be uploaded from. */
export type HostArray = HostArrayOf[DType]

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<DType, number>> = { f32: 4, f16: 2, bf16: 2, i32: 4, u32: 4, i64: 8, u8: 1 }

const ctor = {
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  u32: Uint32Array,
  i64: BigInt64Array,
  u8: Uint8Array,
} as const

/** Allocates a host array of `length` elements for `dtype`. */
export function hostArray<D extends DType>(dtype: D, length: number): HostArrayOf[D] {
  return new ctor[dtype](length) as HostArrayOf[D]
}

/** A host array of `length` elements of `dtype` over `buffer` from `byteOffset` (no copy). */
export function hostView<D extends DType>(dtype: D, buffer: ArrayBuffer, byteOffset: number, length: number): HostArrayOf[D] {
  return new ctor[dtype](buffer, byteOffset, length) as HostArrayOf[D]
}

/** The dtype a host array maps to (Uint16Array is ambiguous between f16 and bf16: undefined). */
export function dtypeOf(a: HostArray): DType | undefined {
  if (a instanceof Float32Array) return 'f32'
  if (a instanceof Int32Array) return 'i32'
  if (a instanceof Uint32Array) return 'u32'
  if (a instanceof BigInt64Array) return 'i64'
  if (a instanceof Uint8Array) return 'u8'
  return undefined
}

/** Whether `a` is a valid host array for `dtype`. */
export function fitsDType(a: HostArray, dtype: DType): boolean {
  return a instanceof ctor[dtype]
}

/** The bytes of a typed array, without copying. */
export function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength)
}

/** Whether `s` names a dtype. */
export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && (DTYPES as readonly string[]).includes(s)
}
