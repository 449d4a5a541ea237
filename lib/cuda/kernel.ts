import type { DeviceBuffer } from './buffer.js'
import type * as N from './native.js'
import { native } from './native.js'

/** Kind of one kernel parameter: a device pointer or a scalar. */
export type ArgKind = 'ptr' | 'i32' | 'u32' | 'i64' | 'u64' | 'f32' | 'f64'

/** Every parameter kind. */
export const ARG_KINDS: readonly ArgKind[] = ['ptr', 'i32', 'u32', 'i64', 'u64', 'f32', 'f64']

/** The JS value each parameter kind takes. */
export interface ArgValueOf {
  ptr: DeviceBuffer
  i32: number
  u32: number
  i64: number | bigint
  u64: number | bigint
  f32: number
  f64: number
}

/** The argument tuple of a kernel with signature `S`. */
export type ArgsOf<S extends readonly ArgKind[]> = { [I in keyof S]: ArgValueOf[S[I]] }

/** A compiled kernel and its declared signature, checked at every launch. */
export class Kernel<S extends readonly ArgKind[] = readonly ArgKind[]> {
  /** @internal */
  readonly native: N.Kernel
  /** Parameter kinds, as declared. */
  readonly signature: S
  /** @internal numeric handle for launches through the mailbox */
  readonly id: number

  /** @internal */
  static wrap<S extends readonly ArgKind[]>(n: N.Kernel, signature: S): Kernel<S> {
    return new Kernel<S>(n, signature)
  }

  private constructor(n: N.Kernel, signature: S) {
    this.native = n
    this.signature = Object.freeze([...signature]) as unknown as S
    this.id = n.id
  }

  /** The kernel's name. */
  get name(): string {
    return this.native.name
  }

  /** Shared memory the kernel declares statically (its `__shared__` arrays), bytes; a launch's `sharedMemBytes` come on top. */
  get staticSharedBytes(): number {
    return native(() => this.native.staticSharedBytes)
  }
}
