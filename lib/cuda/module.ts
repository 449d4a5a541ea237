import { check } from '../errors.js'
import { ARG_KINDS, type ArgKind, Kernel } from './kernel.js'
import { LAYOUT } from './mailbox.js'
import type * as N from './native.js'
import { binding, native } from './native.js'

/**
 * The directory of the on-disk cache of NVRTC's output ({@link Module.cached}): `CUDAGRAPH_KERNEL_CACHE`,
 * else `$XDG_CACHE_HOME/cudagraph/kernels`, else `~/.cache/cudagraph/kernels`; undefined when it is `off`
 * or no home is known. Deleting it clears the cache.
 */
export function kernelCacheDir(): string | undefined {
  return native(() => binding().kernelCacheDir()) ?? undefined
}

/** Code compiled by NVRTC and loaded on a device. Kernels keep it loaded. */
export class Module {
  /** @internal */
  readonly native: N.Module

  /** @internal */
  static wrap(n: N.Module): Module {
    return new Module(n)
  }

  private constructor(n: N.Module) {
    this.native = n
  }

  /** The name given at compile time. */
  get name(): string {
    return this.native.name
  }

  /** NVRTC's warnings, empty when it had none. */
  get log(): string {
    return this.native.log
  }

  /** What was compiled for: `sm_XY` (machine code) or `compute_XY` (PTX, compiled by the driver). */
  get target(): string {
    return this.native.target
  }

  /**
   * Whether NVRTC's output came from the on-disk kernel cache, not a compile: a compile's output is kept
   * under `CUDAGRAPH_KERNEL_CACHE` (a directory, or `off`; default `$XDG_CACHE_HOME/cudagraph/kernels`,
   * else `~/.cache/cudagraph/kernels`), keyed by the source, options, target and NVRTC version.
   */
  get cached(): boolean {
    return this.native.cached
  }

  /**
   * Looks up `extern "C"` kernel `name` and declares its parameters, e.g. `['ptr', 'i32', 'f32']`.
   * Launches check their arguments against it.
   */
  kernel<const S extends readonly ArgKind[]>(name: string, signature: S): Kernel<S> {
    check(typeof name === 'string' && name.length > 0, 'name', 'a kernel name', name)
    check(
      Array.isArray(signature) && signature.length <= LAYOUT.maxArgs,
      'signature',
      `an array of at most ${LAYOUT.maxArgs} of ${ARG_KINDS.join(' | ')}`,
      signature,
    )
    return Kernel.wrap(
      native(() => this.native.kernel(name, [...signature])),
      signature,
    )
  }
}
