/**
 * The decoder kernels' source and the constants it shares with the host. kernels/decoder.cu reads them as
 * macros, and this is the one place they are written: every compile passes them as -D options
 * ({@link decoderCompileOptions}), and the source stops with #error without them.
 */

import { join } from 'node:path'
import { PACKAGE_ROOT } from '../util/package-root.js'
import type { ModelDType } from './decoder-model.js'

/** Where the kernels' source ships in the package. */
export const DECODER_KERNELS_PATH = join(PACKAGE_ROOT, 'kernels', 'decoder.cu')

/** The kernels' compile-time constants, by their macro names in kernels/decoder.cu. */
export const KERNEL_CONSTANTS = {
  /** CUDA-core decode GEMV: output columns a block takes, a warp each. */
  GEMV_WARPS: 8,
  /** CUDA-core decode GEMV: token rows a block takes. */
  GEMV_ROWS: 4,
  /** CUDA-core decode GEMV: 16-byte chunks of a weight row a lane holds in registers (so its widest input is 8 x 32 x this, elements). */
  GEMV_CHUNKS: 8,
  /** Decode GEMV flag: x is the residual stream's RMSNorm, computed in the prologue. */
  GEMV_NORM: 1,
  /** Decode GEMV flag: a bias added before rounding. */
  GEMV_BIAS: 2,
  /** Decode GEMV flag: the result is added to the residual stream instead of stored. */
  GEMV_RESID: 4,
  /** Decode GEMV flag: the output is f32, unrounded (the LM head's logits). */
  GEMV_F32: 8,
  /** Decode GEMV flag: with GEMV_NORM, the residual rows are the tokens' embedding rows (the first layer). */
  GEMV_EMBED: 16,
  /** Decode GEMV flag, the layer chain's LM head: logits stored rounded, each row's greedy token left for `sample` as an argmax key. */
  GEMV_ARGMAX: 32,
  /** Decode GEMV flag, with GEMV_ARGMAX: an all-greedy step's tokens stored into `next` and the step's ready flag set as the LM head ends. */
  GEMV_PUBLISH: 64,
  /** Tensor-core decode GEMV: warps a block. */
  GM_WARPS: 8,
  /** Tensor-core decode GEMV: steps of a warp's ring of weight tiles in flight (gate/up's two tiles a step take two). */
  GM_SLOTS: 6,
  /** Layer chain (`gemv_chain`): the most stages of a block's ring of weights (a stage: a 2 KiB unit a consumer warp). */
  GC_STAGES: 16,
  /** Layer chain: producer warps a block, which copy the weights (the other GM_WARPS compute). */
  GC_PRODUCERS: 2,
  /** Layer chain: 32-bit words at the start of its scratch (its four grid barriers' counters, then the LM head's blocks done and its published mark; the argmax keys follow: even, so they are 8-byte aligned). */
  GC_COUNTERS: 6,
  /** Layer chain: ring stages a block's producers keep in flight at most (issued, not yet landed; 3 measured 1-2% faster than the whole ring). */
  GC_INFLIGHT: 3,
  /** Layer chain: a ring of at most this many stages keeps GC_INFLIGHT + 1 in flight (1b's rings, 11 to 13 stages at 8 to 1 rows, all do: 0.990x / 0.994x / 0.991x a step at batches 1 / 2 / 4 against 3, f16; bf16 0.991x / 1.001x / 0.994x). */
  GC_SHORT_RING: 13,
  /** Layer chain: while the stage this many before the next to fill is still unread (the consumers at a barrier or staging rows, the ring filling), the producers keep only GC_LOW stages in flight. 5 (with GC_LOW 2) took 0.978-0.988x 1b's step at batch 1 in bf16 and 0.965-0.990x in f16, 0.958-0.996x at 2 to 8 (three runs); 6 0.985-0.990x, 4 0.999x. */
  GC_BEHIND: 5,
  /** Layer chain: stages in flight while the consumers are GC_BEHIND behind (1 took 1.06-1.09x). */
  GC_LOW: 2,
  /** Layer chain: steps ahead a consumer warp copies the input rows of an op wider than the staged rows (down's, `gemv_chain_streamed`; 4 measured 1.6% faster than 8 at 8 rows of 1b). */
  GC_XSTEPS: 4,
  /** Layer chain: 4-element slices of a norm's row a lane holds in registers (a row's first 128 x this elements; the rest is staged in shared memory). 16 hold 1b's rows whole: 0.98-0.99x its step at batches 1 to 8 against 12 (same run), in all 168 registers a thread of the streamed chain. */
  GC_NORM_SLICES: 16,
  /** Layer chain: floats between a tile's token rows in the warps' partial sums (16 columns and 4 of padding: a quarter-warp's stores and loads hit distinct banks). */
  GC_RED_PITCH: 20,
  /** Layer chain: polls of a barrier before the kernel traps rather than hang (a bug's bound, never reached in a working step). */
  GC_POLLS: 1 << 24,
  /** Decode attention: warps a block. */
  ATT_WARPS: 4,
  /** Decode attention: key positions of a warp's chunk. */
  ATT_KEYS: 32,
  /** Decode attention flag: rotate and store the rows' new queries and keys (a decode step). */
  ATT_ROPE: 1,
  /** Decode attention flag (CUDA-core kernels): pull each row's cached keys and values into L2 first. */
  ATT_PREFETCH: 2,
  /** Decode attention flag (tensor-core kernels): two buffers a warp, the next chunk in flight. */
  ATT_DOUBLE: 4,
  /** Decode attention flag: the next kernel (a layer chain) launches before attention waits for the previous one. */
  ATT_EARLY: 8,
  /** Decode attention flag (with ATT_ROPE): q, k and v came from the raw residual rows; scale each by its row's 1/rms first. */
  ATT_NORM: 16,
  /** Sampling: blocks a request's row is split over (a thread-block cluster, compute capability 9.0+), each keeping its part in shared memory. */
  SAMPLE_SPLIT: 8,
  /** Flash prefill attention: groups of 16 token rows a block. */
  FA_WARPS: 2,
  /** Flash prefill attention: warps splitting each group's key tiles. */
  FA_SPLIT: 2,
  /** Flash prefill attention on Hopper's warpgroup MMAs: token rows a block (one warpgroup; wgmma's 64). */
  FA_WG_ROWS: 64,
  /** Flash prefill attention on Hopper's warpgroup MMAs: keys a tile at head size 64 (64 or 128; 64 at 128). */
  FA_WG_KEYS: 128,
  /** Flash prefill attention on Hopper's warpgroup MMAs: key and value tiles a block holds, all but one in flight. */
  FA_WG_STAGES: 3,
} as const

/**
 * NVRTC's options for the kernels in `dtype`: each constant as -DNAME=value, and -DCG_BF16 for bf16; with
 * `arch`, the target (`'sm_90a'`: Hopper's warpgroup MMAs, which no other target has), else the device's own.
 */
export function decoderCompileOptions(dtype: ModelDType, arch?: string): string[] {
  const defines = Object.entries(KERNEL_CONSTANTS).map(([name, value]) => `-D${name}=${value}`)
  return [...defines, ...(dtype === 'bf16' ? ['-DCG_BF16'] : []), ...(arch === undefined ? [] : [`--gpu-architecture=${arch}`])]
}
