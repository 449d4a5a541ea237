/**
 * The built-in workload: a Llama-style decoder (token embedding, RMSNorm, rotary positions, attention over
 * a contiguous per-slot KV cache, SwiGLU MLP, residual adds, final norm, LM head, sampling on the device).
 * Kernels are CUDA C (kernels/decoder.cu) compiled by NVRTC; GEMMs go through cuBLAS, except decode steps,
 * whose projections are fused GEMVs where the model allows ({@link DecodeGemv}). f16 or bf16 weights,
 * activations and KV cache; f32 accumulation. Weights are random from a seed ({@link DecoderModel.create})
 * or a Hugging Face checkpoint's (`loadDecoder` in checkpoint.ts), laid out as transformers lays them out.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { DeviceBuffer } from '../cuda/buffer.js'
import type { Communicator } from '../cuda/communicator.js'
import type { Device } from '../cuda/device.js'
import type { Kernel } from '../cuda/kernel.js'
import type { Module } from '../cuda/module.js'
import type { LaunchConfig, Stream } from '../cuda/stream.js'
import { CompileError, check } from '../errors.js'
import { DECODER_KERNELS_PATH, decoderCompileOptions, KERNEL_CONSTANTS } from './decoder-kernels.js'
import { type ModelConfig, type ModelName, type ModelOverrides, modelConfig, ropeInvFreq } from './model-config.js'
import { writeSafetensors } from './safetensors.js'
import { type LocalDims, localDims, type Shard, type WeightSpec, WHOLE, weightLayout } from './weight-layout.js'

/** Storage type of a model's weights, activations and KV cache. */
export type ModelDType = 'f16' | 'bf16'

/** Options of {@link DecoderModel.create}. */
export interface DecoderOptions {
  /** A preset name or a partial config over a preset (default `'small'`). */
  model?: ModelName | ModelOverrides
  /** Seed of the random weights (default 1): the same seed gives the same model on every GPU. */
  seed?: number
  /** KV-cache slots: requests that can be in flight at once (default 64, at most 256). */
  slots?: number
  /** Longest sequence (prompt plus generated tokens) a slot holds (default 1024, at most 4096). */
  maxSeqLen?: number
  /** Storage type (default `'f16'`). */
  dtype?: ModelDType
  /** Decode steps' projections ({@link DecodeGemv}); default {@link defaultDecodeGemv}'s. */
  decodeGemv?: DecodeGemv | undefined
  /** Whether decode steps may run each layer as one {@link DecoderModel.decodeChain} kernel; default true where it fits. */
  decodeChain?: boolean | undefined
  /** Prefill attention's kernel ({@link PrefillAttention}); default {@link defaultPrefillAttention}'s. */
  prefillAttention?: PrefillAttention | undefined
  /**
   * Whether each layer's norm weights are folded into the projections after them (default true): on an
   * H200, 1b's 512-token prefill and batch-64 decode step then take 0.974-0.981x the time, and a
   * checkpoint's logits are within rounding of transformers'; false keeps transformers' roundings of each
   * norm (on an H200 a bf16 checkpoint's prefill logits then equal transformers' bit for bit where
   * cuBLAS runs the same GEMM kernels for both), at the cost of a launch a norm.
   */
  foldNorms?: boolean | undefined
}

/**
 * Prefill attention's kernel: `'flash'` on tensor cores (compute capability 8.0+; key tiles with an
 * online softmax, the default there; on compute capability 9.0, Hopper's warpgroup MMAs at head sizes 64
 * and 128: {@link flashPrefill}), or `'rows'`, the decode step's kernel a token row a block (f32
 * throughout). Each gives a row the same bits alone or beside other requests, whole or in chunks.
 */
export type PrefillAttention = 'flash' | 'rows'

/**
 * How decode steps run their projections and LM head: `'cuda-cores'`, fused GEMVs a warp an output
 * column, for every decode step (a launch-bound model: {@link decodeGemvFits}); `'tensor-cores'`, fused
 * GEMVs on MMAs that stream the weights once, for decode steps of at most {@link TENSOR_GEMV_MAX_ROWS}
 * token rows, with cuBLAS past that (a bandwidth-bound model: {@link tensorGemvFits}); `'off'`, cuBLAS and
 * the separate norm, SiLU and residual kernels, as prefill always runs. Either GEMV gives a row the same
 * bits in any batch it serves; cuBLAS does not promise that.
 */
export type DecodeGemv = 'cuda-cores' | 'tensor-cores' | 'off'

/** Where decode attention's chunks run (the model's choice: {@link decodeAttentionMma}). */
export type DecodeAttention = 'tensor-cores' | 'cuda-cores'

/** Token rows a `'tensor-cores'` decode GEMV takes: a decode step of more runs cuBLAS. */
export const TENSOR_GEMV_MAX_ROWS = 16

/** What the decode path's rule reads of a device: its compute capability and shared memory a block (bytes, opted in). */
export type DeviceLimits = Pick<Device, 'computeCapability' | 'maxSharedMemoryPerBlock'>

/**
 * The most token rows a layer chain ({@link DecoderModel.decodeChain}) takes, the 8-row GEMVs' most (a
 * model's own most, {@link chainRows}, may be fewer): a decode step of more runs separate GEMVs. On an
 * H200 (1b, graph replays, the same run) the chain took 0.895x the separate GEMVs' time at batch 1, 0.910x
 * at 2, 0.952x at 4, and at 8 1.051x when its rows were staged by loads in registers, 0.971-0.974x since
 * they are copied (cp.async) and its 5 stages keep 4 in flight (docs/measured.md).
 */
export const CHAIN_MAX_ROWS = 8
/**
 * The fewest rows a model's layer chains must take for it to chain at all ({@link chainRows}): chains of
 * fewer rows beside so few ring stages are not measured, and every model that chained when chains took 4
 * rows at most still does.
 */
const CHAIN_MIN_ROWS = 4

/** Whether `device` has the m16n8k16 MMAs the tensor-core kernels use (compute capability 8.0+). */
function hasMma(device: Pick<Device, 'computeCapability'>): boolean {
  return device.computeCapability[0] >= 8
}

/** What {@link DecoderModel.build} makes: the shape, where the weights come from, and the cache size. */
export interface ModelBuild {
  config: ModelConfig
  dtype: ModelDType
  slots?: number | undefined
  maxSeqLen?: number | undefined
  /** The seed of random weights, or the checkpoint directory they were loaded from. */
  source: { seed: number } | { dir: string }
  /**
   * Tensor parallelism: this rank's communicator. The model then holds rank `rank` of `size`'s share
   * ({@link weightLayout}), all-reduces the partial sums of o and down, and all-gathers the logits.
   */
  communicator?: Communicator | undefined
  /** Decode steps' projections ({@link DecodeGemv}); default {@link defaultDecodeGemv}'s. */
  decodeGemv?: DecodeGemv | undefined
  /** Whether decode steps may run each layer as one {@link DecoderModel.decodeChain} kernel; default true where it fits. */
  decodeChain?: boolean | undefined
  /** Prefill attention's kernel ({@link PrefillAttention}); default {@link defaultPrefillAttention}'s. */
  prefillAttention?: PrefillAttention | undefined
  /** Whether each layer's norm weights are folded into the projections after them ({@link DecoderOptions.foldNorms}); default true. */
  foldNorms?: boolean | undefined
  /**
   * Fills weight `spec`'s freshly allocated `buffer` (enqueued on the stream, or synchronously). A throw
   * ends the build and frees everything it allocated.
   */
  fill: (spec: WeightSpec, buffer: DeviceBuffer<ModelDType>) => void
}

/** One step's device tensors, as the forward reads and writes them. */
export interface ForwardTensors {
  /** i32 [tokens]: token ids. */
  tokens: DeviceBuffer<'i32'>
  /** i32 [tokens]: each token's position in its sequence. */
  positions: DeviceBuffer<'i32'>
  /** i32 [tokens]: each token's KV-cache slot. */
  slots: DeviceBuffer<'i32'>
  /** i32 [requests]: each request's last token row (its logits are computed). */
  last: DeviceBuffer<'i32'>
  /** f32 [requests x 3]: each request's temperature (0: greedy), top-p (1: off) and top-k (0: off). */
  sampling: DeviceBuffer<'f32'>
  /** u32 [requests]: each request's sampling seed. */
  seeds: DeviceBuffer<'u32'>
  /** i32 [requests]: the next token of each request. */
  next: DeviceBuffer<'i32'>
  /** f32 [requests, vocab]: the logits of each request's last token (values of the model's dtype). */
  logits: DeviceBuffer<'f32'>
  /**
   * i32 [1], the step's ready flag (`StepContext.readyFlag`): a chained decode step whose rows are all
   * greedy sets it once `next` holds its tokens, as its LM head ends and before `sample` runs.
   */
  ready?: DeviceBuffer<'i32'> | undefined
}

/**
 * What a forward computes: prompts' tokens (any number a request), or one new token a request (`'decode'`:
 * request r's token in row r, so `last[r]` is r, and every row a different slot).
 */
export type StepKind = 'prefill' | 'decode'

/** The kernels and GEMMs of a forward, as {@link ForwardContext.trace} names them. */
export type ForwardPart =
  | 'norm'
  | 'qkv'
  | 'rope'
  | 'attention'
  | 'o'
  | 'gate_up'
  | 'silu_mul'
  | 'down'
  | 'layer_chain'
  | 'all_reduce'
  | 'final_norm'
  | 'lm_head'
  | 'all_gather'
  | 'sample'

/** Where a forward enqueues and gets temporaries (a step context, or any stream with an allocator). */
export interface ForwardContext {
  readonly stream: Stream
  scratch<D extends 'f32' | ModelDType>(dtype: D, length: number): DeviceBuffer<D>
  /**
   * Called before each kernel or GEMM is enqueued, with its part's name: a diagnostic pass records an
   * event there to time each part (steps run without it).
   */
  readonly trace?: ((part: ForwardPart) => void) | undefined
}

/** A weight: its device buffer and its shape ([out, in] row-major for projections, as transformers stores them). */
export interface Weight {
  readonly buffer: DeviceBuffer<ModelDType>
  readonly shape: readonly [number] | readonly [number, number]
}

type Buf = DeviceBuffer<ModelDType>

interface LayerWeights {
  attnNorm: Buf
  qkv: Buf
  qkvBias: Buf | undefined
  o: Buf
  mlpNorm: Buf
  gateUp: Buf
  down: Buf
  kCache: Buf
  vCache: Buf
}

const ceilDiv = (a: number, b: number) => Math.ceil(a / b)
const threadsFor = (n: number) => Math.min(1024, Math.max(32, ceilDiv(n, 32) * 32))
/** Elements of a row an add_rmsnorm thread takes: one 16-byte piece (kernels/decoder.cu). */
const NORM_CHUNK = 8

/** The share a communicator's rank holds: rank `rank` of `size`, or the whole model without one. */
const shardOf = (comm: Communicator | undefined): Shard => (comm === undefined ? WHOLE : { rank: comm.rank, size: comm.size })

/**
 * Folds each layer's RMSNorm weights into the projection that reads the norm's output (kernels/decoder.cu's
 * fold_norm: qkv's columns times the attention norm's, gate/up's times the MLP norm's), then sets those norm
 * weights to ones, on `stream`: the same model, whose projections can read the raw residual rows while the
 * kernel after them scales each row by its 1/rms ({@link DecoderModel.forward}). The final norm stays.
 */
function foldNormWeights(module: Module, stream: Stream, c: ModelConfig, d: LocalDims, w: (name: string) => Buf): void {
  const fold = module.kernel('fold_norm', ['ptr', 'ptr', 'i64', 'i32'])
  const fill = module.kernel('init_uniform', ['ptr', 'i64', 'u64', 'f32', 'f32'])
  const H = c.hidden
  for (let l = 0; l < c.layers; l++) {
    for (const [norm, proj, rows] of [
      ['attn_norm', 'qkv', (d.heads + 2 * d.kvHeads) * c.headDim],
      ['mlp_norm', 'gate_up', 2 * d.ffn],
    ] as const) {
      const g = w(`layers.${l}.${norm}`)
      stream.launch(fold, { grid: Math.min(4096, ceilDiv(rows * H, 256)), block: 256 }, [w(`layers.${l}.${proj}`), g, rows * H, H])
      // Scale 0 and offset 1: ones.
      stream.launch(fill, { grid: ceilDiv(H, 256), block: 256 }, [g, H, 0, 0, 1])
    }
  }
}

/** Weights, KV cache and compiled kernels of one decoder on one device. */
export class DecoderModel {
  readonly device: Device
  readonly config: ModelConfig
  readonly dtype: ModelDType
  /** The seed of random weights, or the checkpoint directory they were loaded from. */
  readonly source: { seed: number } | { dir: string }
  /** KV-cache slots; slot `slots` (one more) takes the writes of padding rows. */
  readonly slots: number
  readonly maxSeqLen: number
  /** The share of the model this one holds (rank 0 of 1 without tensor parallelism). */
  readonly shard: Shard
  /** This rank's heads, key/value heads, MLP width and vocabulary (the config's, divided by the shard count). */
  readonly local: LocalDims
  /** Tensor parallelism's communicator, or undefined. */
  readonly communicator: Communicator | undefined
  /**
   * Weights by name (`embed`, `layers.0.qkv`, ..., `norm`, `lm_head`), in creation order, as the model runs
   * them: each layer's norm weights folded into its `qkv` and `gate_up` and set to ones (foldNormWeights), the
   * same model as the one loaded.
   */
  readonly weights: ReadonlyMap<string, Weight>
  readonly #k: Record<
    | 'addNorm'
    | 'finalNorm'
    | 'rope'
    | 'siluMul'
    | 'gemv'
    | 'gemvSilu'
    | 'gemvMma8'
    | 'gemvMma16'
    | 'gemvMmaSilu8'
    | 'gemvMmaSilu16'
    | 'gemvChain'
    | 'gemvChainStreamed'
    | 'addResidual'
    | 'sample',
    Kernel
  >
  /**
   * Decode (and row-by-row prefill) attention's kernels for this head size, by query heads a block (1, 2, 4:
   * {@link attentionHeads}): on tensor cores or the CUDA cores ({@link decodeAttentionMma}).
   */
  readonly #attention: ReadonlyMap<number, Kernel>
  /** Their dynamic shared memory (bytes): the tensor-core kernels' key and value buffers, else 0. */
  readonly #attentionShared: number
  /** Prefill attention's kernel. */
  readonly prefillAttention: PrefillAttention
  /** The flash kernel for this head size and how it launches (`'flash'` only). */
  readonly #flash: FlashPrefill | undefined
  /**
   * Whether kernels launch with programmatic dependent launch (compute capability 9.0+): each waits for
   * the previous kernel with `griddepcontrol.wait` and lets the next launch, inside graphs too.
   */
  readonly #pdl: boolean
  /** Sampling a block a row: the kernel, its threads and shared memory ({@link sampleShape}). */
  readonly #sample: SampleLaunch
  /** Sampling a row over a cluster, for launches of at most `maxRows` rows; undefined where rows never split ({@link sampleSplitRows}). */
  readonly #sampleSplit: (SampleLaunch & { maxRows: number }) | undefined
  /** How decode steps run their projections ({@link DecodeGemv}). */
  readonly decodeGemv: DecodeGemv
  /** Whether each layer's norm weights are folded into the projections after them ({@link DecoderOptions.foldNorms}). */
  readonly foldNorms: boolean
  /** The most token rows this model's layer chains take ({@link chainRows}; 0 where it does not chain). */
  readonly chainRows: number
  /**
   * The layer chain's scratch: GC_COUNTERS words (its grid barriers' counters and the LM head's publishing
   * ones, zero between steps), then the LM head's argmax keys, 8 bytes a row, which `sample` takes a greedy
   * row's token from.
   */
  readonly #chainCounters: DeviceBuffer<'i32'>
  /** Where decode (and row-by-row prefill) attention runs ({@link DecodeAttention}). */
  readonly decodeAttention: DecodeAttention
  /** The device's multiprocessors, which attention blocks are sized by ({@link attentionHeads}). */
  readonly #multiprocessors: number
  /** Each layer's weights, looked up once (the eager forward does no string work per launch). */
  readonly #layers: LayerWeights[]
  readonly #top: { embed: Buf; norm: Buf; lmHead: Buf; invFreq: DeviceBuffer<'f32'> }
  #disposed = false

  private constructor(
    device: Device,
    b: ModelBuild & { slots: number; maxSeqLen: number },
    module: Module,
    weights: Map<string, Weight>,
    invFreq: DeviceBuffer<'f32'>,
    caches: [Buf[], Buf[]],
    chainCounters: DeviceBuffer<'i32'>,
  ) {
    this.device = device
    this.config = b.config
    this.dtype = b.dtype
    this.source = b.source
    this.slots = b.slots
    this.maxSeqLen = b.maxSeqLen
    this.communicator = b.communicator
    this.shard = shardOf(b.communicator)
    this.local = localDims(b.config, this.shard)
    this.weights = weights
    this.#k = {
      addNorm: module.kernel('add_rmsnorm', ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32', 'ptr', 'i32', 'i32']),
      finalNorm: module.kernel('final_norm', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32']),
      rope: module.kernel('rope_store', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'ptr', 'i32', 'f32', 'i32']),
      siluMul: module.kernel('silu_mul', ['ptr', 'ptr', 'i32', 'i32', 'ptr', 'i32', 'f32', 'i32']),
      gemv: module.kernel('gemv', GEMV_SIGNATURE),
      gemvSilu: module.kernel('gemv_silu', GEMV_SIGNATURE),
      gemvMma8: module.kernel('gemv_mma_8', GEMV_SIGNATURE),
      gemvMma16: module.kernel('gemv_mma_16', GEMV_SIGNATURE),
      gemvMmaSilu8: module.kernel('gemv_mma_silu_8', GEMV_SIGNATURE),
      gemvMmaSilu16: module.kernel('gemv_mma_silu_16', GEMV_SIGNATURE),
      gemvChain: module.kernel('gemv_chain', CHAIN_SIGNATURE),
      gemvChainStreamed: module.kernel('gemv_chain_streamed', CHAIN_SIGNATURE),
      addResidual: module.kernel('add_residual', ['ptr', 'ptr', 'i32']),
      sample: module.kernel('sample', SAMPLE_SIGNATURE),
    }
    // Registers (and the flash kernel's shared memory) are sized for head sizes up to 64 or 128.
    const bound = b.config.headDim <= 64 ? 64 : 128
    const mma = decodeAttentionMma(device, b.config)
    this.decodeAttention = mma ? 'tensor-cores' : 'cuda-cores'
    this.#attention = new Map(ATTENTION_HEADS.map((h) => [h, module.kernel(`attention_${mma ? 'mma_' : ''}${bound}x${h}`, ATTENTION_SIGNATURE)]))
    this.#attentionShared = mma ? attentionMmaSharedBytes(bound) : 0
    this.#pdl = device.computeCapability[0] >= 9
    this.#sample = { kernel: this.#k.sample, blocksPerRow: 1, ...sampleShape(device, this.#k.sample, b.config.vocab, 1) }
    const maxRows = sampleSplitRows(device, b.config.vocab)
    const split = maxRows > 0 ? module.kernel('sample_split', SAMPLE_SIGNATURE) : undefined
    this.#sampleSplit = split && { kernel: split, blocksPerRow: SAMPLE_SPLIT, maxRows, ...sampleShape(device, split, b.config.vocab, SAMPLE_SPLIT) }
    this.prefillAttention = b.prefillAttention ?? defaultPrefillAttention(device)
    this.#flash = this.prefillAttention === 'flash' ? flashPrefill(module, b.config.headDim) : undefined
    this.decodeGemv = b.decodeGemv ?? defaultDecodeGemv(device, b.config, this.local, b.slots)
    this.foldNorms = b.foldNorms !== false
    const chainable = b.decodeChain !== false && this.decodeGemv === 'tensor-cores' && this.communicator === undefined
    this.chainRows = chainable ? chainRows(device, b.config) : 0
    this.#chainCounters = chainCounters
    this.#multiprocessors = device.multiprocessors
    const w = (name: string) => weights.get(name)!.buffer
    this.#layers = Array.from({ length: b.config.layers }, (_, l) => ({
      attnNorm: w(`layers.${l}.attn_norm`),
      qkv: w(`layers.${l}.qkv`),
      qkvBias: weights.get(`layers.${l}.qkv_bias`)?.buffer,
      o: w(`layers.${l}.o`),
      mlpNorm: w(`layers.${l}.mlp_norm`),
      gateUp: w(`layers.${l}.gate_up`),
      down: w(`layers.${l}.down`),
      kCache: caches[0][l]!,
      vCache: caches[1][l]!,
    }))
    // A tied LM head is this rank's rows of the embedding.
    const Vl = this.local.vocab
    const lmHead = b.config.tieEmbeddings ? w('embed').view(this.shard.rank * Vl * b.config.hidden, Vl * b.config.hidden) : w('lm_head')
    this.#top = { embed: w('embed'), norm: w('norm'), lmHead, invFreq }
  }

  /**
   * A model of random weights from `seed`: compiles the kernels, allocates the weights and the KV cache,
   * and fills the weights on `stream` (waits until they are written). Throws ArgumentError for a bad
   * option, before allocating.
   */
  static create(device: Device, stream: Stream, options: DecoderOptions = {}): DecoderModel {
    const config = modelConfig(options.model ?? 'small')
    const seed = options.seed ?? 1
    check(Number.isSafeInteger(seed) && seed >= 0, 'seed', 'a non-negative integer', seed)
    const dtype = options.dtype ?? 'f16'
    check(dtype === 'f16' || dtype === 'bf16', 'dtype', "'f16' or 'bf16'", dtype)
    const init = DecoderModel.module(device, dtype).kernel('init_uniform', ['ptr', 'i64', 'u64', 'f32', 'f32'])
    let n = 0
    return DecoderModel.build(device, stream, {
      config,
      dtype,
      slots: options.slots,
      maxSeqLen: options.maxSeqLen,
      decodeGemv: options.decodeGemv,
      decodeChain: options.decodeChain,
      prefillAttention: options.prefillAttention,
      foldNorms: options.foldNorms,
      source: { seed },
      fill: (spec, buffer) => {
        const len = buffer.length
        stream.launch(init, { grid: Math.min(4096, ceilDiv(len, 256)), block: 256 }, [
          buffer,
          len,
          BigInt(seed) * 1000003n + BigInt(n++),
          spec.init.scale,
          spec.init.offset,
        ])
      },
    })
  }

  static #modules = new WeakMap<Device, Partial<Record<ModelDType, Module>>>()
  /** The modules compiled for sm_90a, whose Hopper kernels ({@link flashPrefill}) are not empty. */
  static #hopper = new WeakSet<Module>()

  /**
   * The decoder's kernels for `dtype` on `device`, compiled once per device and dtype (and kept in the
   * on-disk kernel cache, so a later process loads them instead of running NVRTC again). On compute
   * capability 9.0 they compile for sm_90a, whose warpgroup MMAs the Hopper flash prefill kernel uses; an
   * NVRTC that does not know sm_90a (before CUDA 12.0) gets the device's own target and leaves that kernel
   * out.
   */
  static module(device: Device, dtype: ModelDType): Module {
    const compiled = DecoderModel.#modules.get(device) ?? {}
    DecoderModel.#modules.set(device, compiled)
    const hit = compiled[dtype]
    if (hit !== undefined) return hit
    const source = readFileSync(DECODER_KERNELS_PATH, 'utf8')
    const [major, minor] = device.computeCapability
    let module: Module | undefined
    if (major === 9 && minor === 0) {
      try {
        module = device.compile(source, { name: `decoder-${dtype}-sm_90a`, options: decoderCompileOptions(dtype, 'sm_90a') })
        DecoderModel.#hopper.add(module)
      } catch (e) {
        // NVRTC before CUDA 12.0 knows no sm_90a. (An error in the source fails the compile below too.)
        if (!(e instanceof CompileError)) throw e
      }
    }
    module ??= device.compile(source, { name: `decoder-${dtype}`, options: decoderCompileOptions(dtype) })
    compiled[dtype] = module
    return module
  }

  /** Whether `module` was compiled for sm_90a ({@link DecoderModel.module}): its Hopper kernels run. */
  static compiledForHopper(module: Module): boolean {
    return DecoderModel.#hopper.has(module)
  }

  /**
   * Allocates a model of `b.config` and fills its weights with `b.fill`, in {@link weightLayout} order;
   * on any error frees all it allocated and rethrows. For model sources (random, checkpoints).
   */
  static build(device: Device, stream: Stream, b: ModelBuild): DecoderModel {
    check(b.dtype === 'f16' || b.dtype === 'bf16', 'dtype', "'f16' or 'bf16'", b.dtype)
    const slots = b.slots ?? 64
    check(Number.isInteger(slots) && slots >= 1 && slots <= 256, 'slots', 'an integer in 1..256', slots)
    const maxSeqLen = b.maxSeqLen ?? 1024
    check(Number.isInteger(maxSeqLen) && maxSeqLen >= 1 && maxSeqLen <= 4096, 'maxSeqLen', 'an integer in 1..4096', maxSeqLen)
    const { config } = b
    const shard = shardOf(b.communicator)
    const local = localDims(config, shard)
    if (b.decodeGemv !== undefined) {
      check(
        b.decodeGemv === 'cuda-cores' || b.decodeGemv === 'tensor-cores' || b.decodeGemv === 'off',
        'decodeGemv',
        "'cuda-cores', 'tensor-cores' or 'off'",
        b.decodeGemv,
      )
      if (b.decodeGemv === 'cuda-cores') check(gemvShapesFit(config, local), 'decodeGemv', `not 'cuda-cores' for this model (${gemvShapeRule})`, b.decodeGemv)
      if (b.decodeGemv === 'tensor-cores')
        check(tensorGemvFits(device, config, local), 'decodeGemv', `not 'tensor-cores' for this model on this device (${tensorGemvRule})`, b.decodeGemv)
    }
    if (b.decodeChain !== undefined) check(typeof b.decodeChain === 'boolean', 'decodeChain', 'a boolean', b.decodeChain)
    if (b.foldNorms !== undefined) check(typeof b.foldNorms === 'boolean', 'foldNorms', 'a boolean', b.foldNorms)
    if (b.prefillAttention !== undefined) {
      check(b.prefillAttention === 'flash' || b.prefillAttention === 'rows', 'prefillAttention', "'flash' or 'rows'", b.prefillAttention)
      const [major] = device.computeCapability
      if (b.prefillAttention === 'flash') check(major >= 8, 'prefillAttention', `'rows' on compute capability ${major}.x (flash needs 8.0+)`, 'flash')
    }
    const module = DecoderModel.module(device, b.dtype)
    const weights = new Map<string, Weight>()
    const made: DeviceBuffer[] = []
    const alloc = <D extends ModelDType | 'f32' | 'i32'>(dtype: D, length: number) => {
      const buffer = device.alloc(dtype, length)
      made.push(buffer)
      return buffer
    }
    try {
      for (const spec of weightLayout(config, shard)) {
        const buffer = alloc(
          b.dtype,
          spec.shape.reduce((a, c) => a * c, 1),
        )
        weights.set(spec.name, { buffer, shape: spec.shape })
        b.fill(spec, buffer)
      }
      if (b.foldNorms !== false) foldNormWeights(module, stream, config, local, (name) => weights.get(name)!.buffer)
      const invFreq = alloc('f32', config.headDim / 2)
      invFreq.upload(ropeInvFreq(config))
      const cacheLen = (slots + 1) * maxSeqLen * local.kvHeads * config.headDim
      const caches: [Buf[], Buf[]] = [[], []]
      for (let l = 0; l < config.layers; l++) for (const c of caches) c.push(alloc(b.dtype, cacheLen))
      // The counters, then an 8-byte argmax key a row.
      const chainCounters = alloc('i32', GC_COUNTERS + 2 * CHAIN_MAX_ROWS)
      chainCounters.upload(new Int32Array(chainCounters.length))
      stream.synchronize()
      return new DecoderModel(device, { ...b, slots, maxSeqLen }, module, weights, invFreq, caches, chainCounters)
    } catch (e) {
      stream.synchronize()
      for (const buffer of made) buffer.dispose()
      throw e
    }
  }

  /** The weight `name` (see {@link DecoderModel.weights}). */
  weight(name: string): Weight {
    const w = this.weights.get(name)
    check(w !== undefined, 'name', `a weight of this model (${[...this.weights.keys()].slice(0, 8).join(', ')}, ...)`, name)
    return w
  }

  /** Each weight's raw bits (f16 or bf16) by name, copied from the device (for a reference or a file). */
  downloadWeights(): Map<string, Uint16Array> {
    return new Map([...this.weights].map(([name, w]) => [name, w.buffer.download()]))
  }

  /**
   * Writes the model as a Hugging Face model directory (its weights as it runs them: the norms folded, see
   * {@link DecoderModel.weights}): `config.json` (LlamaForCausalLM) and
   * `model.safetensors` with transformers' tensor names, one tensor at a time; transformers and
   * {@link loadDecoder} both load it.
   */
  save(dir: string): void {
    check(this.communicator === undefined, 'model', 'a whole model (a tensor-parallel rank holds a share)', `rank ${this.shard.rank} of ${this.shard.size}`)
    const c = this.config
    mkdirSync(dir, { recursive: true })
    const hfDType = this.dtype === 'bf16' ? 'bfloat16' : 'float16'
    const rope =
      c.ropeScaling.type === 'none'
        ? null
        : c.ropeScaling.type === 'linear'
          ? { rope_type: 'linear', factor: c.ropeScaling.factor }
          : {
              rope_type: 'llama3',
              factor: c.ropeScaling.factor,
              low_freq_factor: c.ropeScaling.lowFreqFactor,
              high_freq_factor: c.ropeScaling.highFreqFactor,
              original_max_position_embeddings: c.ropeScaling.originalMaxPositions,
            }
    const hf = {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: c.hidden,
      intermediate_size: c.ffn,
      num_hidden_layers: c.layers,
      num_attention_heads: c.heads,
      num_key_value_heads: c.kvHeads,
      head_dim: c.headDim,
      vocab_size: c.vocab,
      rms_norm_eps: c.eps,
      rope_theta: c.ropeTheta,
      rope_scaling: rope,
      max_position_embeddings: this.maxSeqLen,
      tie_word_embeddings: c.tieEmbeddings,
      attention_bias: c.qkvBias,
      hidden_act: 'silu',
      torch_dtype: hfDType,
      bos_token_id: null,
      eos_token_id: null,
    }
    writeFileSync(join(dir, 'config.json'), `${JSON.stringify(hf, null, 2)}\n`)
    const entries = weightLayout(c).flatMap((spec) => {
      const buffer = this.weights.get(spec.name)!.buffer
      const cols = spec.shape.length === 2 ? spec.shape[1] : 1
      let row = 0
      return spec.parts.map((part) => {
        const rows = part.shape[0]!
        const at = row
        row += rows
        return {
          name: part.name,
          dtype: this.dtype === 'bf16' ? ('BF16' as const) : ('F16' as const),
          shape: part.shape,
          data: () => buffer.view(at * cols, rows * cols).download(),
        }
      })
    })
    const source = 'seed' in this.source ? { seed: String(this.source.seed) } : { source: this.source.dir }
    writeSafetensors(join(dir, 'model.safetensors'), entries, { format: 'pt', ...source })
  }

  /** Device memory of the weights and of the KV cache, bytes. */
  get bytes(): { weights: number; kvCache: number } {
    let weights = 0
    for (const w of this.weights.values()) weights += w.buffer.byteLength
    const kvCache = this.#layers.reduce((n, L) => n + L.kCache.byteLength + L.vCache.byteLength, 0)
    return { weights, kvCache }
  }

  /**
   * Enqueues one forward pass for `numTokens` token rows and `numReqs` request rows: writes each token's
   * keys and values into its slot at its position, and each request's logits and next token (greedy or
   * sampled, as its row of `t.sampling` says). A tensor-parallel rank computes its heads and its share of
   * the MLP and of the vocabulary; its collectives (on the same stream, so inside a capture too) give
   * every rank the whole logits and the same next tokens. A `'decode'` step ({@link StepKind}) rotates
   * and stores its new keys inside attention, one launch fewer a layer; on a model that
   * {@link decodeGemvFits} it runs its projections and LM head as fused GEMVs: one summation order for
   * any batch size, so a request's decode tokens do not depend on its batch.
   */
  forward(ctx: ForwardContext, t: ForwardTensors, numTokens: number, numReqs: number, kind: StepKind = 'prefill'): void {
    const c = this.config
    const s = ctx.stream
    const k = this.#k
    const T = numTokens
    const R = numReqs
    const H = c.hidden
    const hd = c.headDim
    const dt = this.dtype
    // This rank's heads, key/value heads, MLP width and vocabulary (the whole model's without parallelism).
    const { heads, kvHeads, ffn, vocab } = this.local
    const comm = this.communicator
    const qkvWidth = (heads + 2 * kvHeads) * hd
    const x = ctx.scratch(dt, T * H)
    const qkv = ctx.scratch(dt, T * qkvWidth)
    const attn = ctx.scratch(dt, T * heads * hd)
    const delta = ctx.scratch(dt, T * H)
    const act = ctx.scratch(dt, T * ffn)
    // The residual stream. Every add rounds it to the dtype (as transformers' does), so either storage holds
    // the same values: f32 for the GEMVs and the chain (on an H200, the chain's one warp normalizing a
    // batch-1 row took 0.4-2.1% longer converting from the dtype), the dtype for add_rmsnorm and final_norm
    // (half their bytes: 1b's batch-64 step 0.992x in f16 and 0.975x in bf16, same run; prefill within noise).
    // It is f32 exactly where the projections are the fused GEMVs, so `gemv` (and `chain`) narrow residF32.
    const residF32 =
      kind === 'decode' && (this.decodeGemv === 'cuda-cores' || (this.decodeGemv === 'tensor-cores' && T <= TENSOR_GEMV_MAX_ROWS))
        ? ctx.scratch('f32', T * H)
        : undefined
    const resid = residF32 ?? ctx.scratch(dt, T * H)
    const gemv = residF32 !== undefined
    // The layer chain computes each layer's o to the next layer's q/k/v (the last one's LM head) in one kernel
    // (only on the tensor-core GEMVs' path: chainRows is 0 elsewhere); every layer's takes this shared-memory
    // layout. `chain` repeats `gemv` so that its branches, too, know residF32 is there.
    const chainShape = gemv && this.chainsDecode(T) ? chainLayout(this.device.maxSharedMemoryPerBlock, c, this.local, T) : undefined
    const chain = gemv && chainShape !== undefined
    // gate/up's output; the fused GEMV writes SiLU's product straight into act.
    const gu = gemv ? undefined : ctx.scratch(dt, T * 2 * ffn)
    // Tensor parallelism: each rank's logits of its vocabulary, gathered rank after rank ([ranks][R][vocab]).
    const localLogits = comm ? ctx.scratch('f32', R * vocab) : t.logits
    const gathered = comm ? ctx.scratch('f32', R * c.vocab) : t.logits
    const normBlock = threadsFor(H)
    // add_rmsnorm: a 16-byte piece of the row a thread, in registers.
    const addNormBlock = threadsFor(H / NORM_CHUNK)
    const top = this.#top
    const S = this.maxSeqLen
    const trace = ctx.trace
    const pdl = this.#pdl
    const gh = attentionHeads(T, kvHeads, heads / kvHeads, this.#multiprocessors)
    const attention = this.#attention.get(gh)!
    const attentionGrid: [number, number, number] = [T, kvHeads, heads / kvHeads / gh]
    const attentionFlags = attentionFlagsFor(kind, this.decodeAttention === 'tensor-cores', (T * heads) / gh, this.#multiprocessors, chain)
    const attentionShared = this.#attentionShared * (attentionFlags & ATT_DOUBLE ? 2 : 1)
    // Both attention kernels' trailing arguments: heads, key/value heads, head size, maxSeqLen, the scale.
    const shape = [heads, kvHeads, hd, S, 1 / Math.sqrt(hd)] as const
    // Row-parallel o and down leave partial sums of the residual update on each rank.
    const reduce = (sums: DeviceBuffer = delta) => {
      if (comm === undefined) return
      trace?.('all_reduce')
      comm.allReduce(s, sums, 'sum')
    }
    // Where the norms' weights are folded into qkv's and gate/up's (foldNormWeights), on cuBLAS's path o and down
    // (but the last layer's) add into the residual stream as their epilogue (beta 1), the next projection
    // reads the raw residual rows, and the kernel after it scales each row by its 1/rms (silu_mul;
    // rope_store, or a decode step's attention with ATT_NORM), in place of an add_rmsnorm launch. With
    // tensor parallelism rank 0 adds its partial sums to the stream and the other ranks write theirs over
    // it, so the all-reduce of the stream adds them all. The attention norm stays a launch before a qkv
    // bias, which the scale would reach, and the first layer's takes the embedding rows.
    const foldMlp = this.foldNorms && !gemv
    const foldAttn = this.foldsAttentionNorm && !gemv
    const beta = this.shard.rank === 0 ? 1 : 0
    // A tensor-parallel decode GEMV's partial sums, all-reduced, then added to the residual stream (f32).
    const addPartial = (into: DeviceBuffer<'f32'>) => {
      if (comm === undefined) return
      reduce()
      s.launch(k.addResidual, { grid: ceilDiv(T * H, 256), block: 256, programmaticDependentLaunch: pdl }, [into, delta, T * H])
    }

    // The first layer's norm (or its qkv GEMV's) takes the residual stream's rows from the embedding.
    for (let l = 0; l < c.layers; l++) {
      const L = this.#layers[l]!
      const embed = l === 0
      // This layer's q/k/v read the raw residual rows; rope_store or attention scales them.
      const scaled = foldAttn && !embed
      if (chain && !embed) {
        // The previous layer's chain computed this layer's q/k/v.
      } else if (gemv) {
        trace?.('qkv')
        this.#gemv(s, T, residF32, { out: qkv, w: L.qkv, n: qkvWidth, k: H, norm: L.attnNorm, bias: L.qkvBias, tokens: embed ? t.tokens : undefined })
      } else if (scaled) {
        // The previous layer's down added into resid; rope_store scales by its rows' 1/rms.
        trace?.('qkv')
        s.gemm({ a: resid, b: L.qkv, c: qkv, m: T, n: qkvWidth, k: H, transB: true })
      } else {
        trace?.('norm')
        s.launch(k.addNorm, { grid: T, block: addNormBlock, programmaticDependentLaunch: pdl }, [
          resid,
          embed ? top.embed : delta,
          L.attnNorm,
          x,
          H,
          c.eps,
          t.tokens,
          c.vocab,
          embed ? 1 : 0,
        ])
        trace?.('qkv')
        s.gemm({ a: x, b: L.qkv, c: qkv, m: T, n: qkvWidth, k: H, transB: true, bias: L.qkvBias })
      }
      // A decode step's attention rotates its rows' new queries and keys and stores the keys and values
      // itself (each row is its own request's one token); a prefill's rows read each other's keys.
      if (kind === 'prefill') {
        trace?.('rope')
        s.launch(k.rope, { grid: T, block: 256, programmaticDependentLaunch: pdl }, [
          qkv,
          L.kCache,
          L.vCache,
          t.positions,
          t.slots,
          top.invFreq,
          heads,
          kvHeads,
          hd,
          S,
          resid,
          H,
          c.eps,
          scaled ? 1 : 0,
        ])
      }
      trace?.('attention')
      // Both attention kernels: out, qkv, the caches, positions and slots first; `shape` last.
      const rows = [attn, qkv, L.kCache, L.vCache, t.positions, t.slots] as const
      const flash = this.#flash
      if (kind === 'prefill' && flash !== undefined) {
        const grid: [number, number] = [heads, ceilDiv(T, flash.rows)]
        s.launch(flash.kernel, { grid, block: flash.threads, sharedMemBytes: flash.sharedMemBytes, programmaticDependentLaunch: pdl }, [...rows, T, ...shape])
      } else {
        s.launch(attention, { grid: attentionGrid, block: 32 * ATT_WARPS, sharedMemBytes: attentionShared, programmaticDependentLaunch: pdl }, [
          ...rows,
          top.invFreq,
          attentionFlags | (scaled && kind === 'decode' ? ATT_NORM : 0),
          ...shape,
          resid,
          H,
          c.eps,
        ])
      }
      if (chain) {
        trace?.('layer_chain')
        const next = this.#layers[l + 1]
        this.#chain(
          s,
          T,
          chainShape,
          { resid: residF32, attn, act, L },
          next
            ? { out: qkv, w: next.qkv, n: qkvWidth, norm: next.attnNorm, bias: next.qkvBias }
            : {
                out: localLogits,
                w: top.lmHead,
                n: vocab,
                norm: top.norm,
                argmax: true,
                publish: t.ready && { sampling: t.sampling, next: t.next, ready: t.ready },
              },
        )
        continue
      }
      trace?.('o')
      if (gemv) {
        // The residual adds are the o and down GEMVs' epilogues (a tensor-parallel rank's come after the
        // all-reduce); the norm and SiLU are in gate/up's.
        this.#gemv(s, T, residF32, { out: comm ? delta : undefined, x: attn, w: L.o, n: H, k: heads * hd })
        addPartial(residF32)
        trace?.('gate_up')
        this.#gemv(s, T, residF32, { out: act, w: L.gateUp, n: ffn, k: H, norm: L.mlpNorm, silu: true })
        trace?.('down')
        this.#gemv(s, T, residF32, { out: comm ? delta : undefined, x: act, w: L.down, n: H, k: ffn })
        addPartial(residF32)
        continue
      }
      if (foldMlp) {
        s.gemm({ a: attn, b: L.o, c: resid, beta, m: T, n: H, k: heads * hd, transB: true })
        reduce(resid)
      } else {
        s.gemm({ a: attn, b: L.o, c: delta, m: T, n: H, k: heads * hd, transB: true })
        reduce()
        trace?.('norm')
        s.launch(k.addNorm, { grid: T, block: addNormBlock, programmaticDependentLaunch: pdl }, [resid, delta, L.mlpNorm, x, H, c.eps, t.tokens, c.vocab, 0])
      }
      trace?.('gate_up')
      s.gemm({ a: foldMlp ? resid : x, b: L.gateUp, c: gu!, m: T, n: 2 * ffn, k: H, transB: true })
      trace?.('silu_mul')
      s.launch(k.siluMul, { grid: [ceilDiv(ffn, 8 * 256), T], block: 256, programmaticDependentLaunch: pdl }, [
        act,
        gu!,
        ffn,
        T,
        resid,
        H,
        c.eps,
        foldMlp ? 1 : 0,
      ])
      trace?.('down')
      // The next layer's qkv reads resid when its norm is folded; the last layer's final_norm adds delta.
      const intoResid = foldAttn && l < c.layers - 1
      s.gemm({ a: act, b: L.down, c: intoResid ? resid : delta, beta: intoResid ? beta : 0, m: T, n: H, k: ffn, transB: true })
      reduce(intoResid ? resid : delta)
    }
    if (chain) {
      // The last layer's chain computed the logits.
    } else if (gemv) {
      // A decode step's request r is token row r: the final norm is the LM-head GEMV's prologue.
      trace?.('lm_head')
      this.#gemv(s, T, residF32, { out: localLogits, w: top.lmHead, n: vocab, k: H, norm: top.norm })
    } else {
      // The last rows' norm goes into x, free by now: request r's row at r.
      trace?.('final_norm')
      s.launch(k.finalNorm, { grid: R, block: normBlock, programmaticDependentLaunch: pdl }, [x, resid, delta, t.last, top.norm, H, c.eps])
      trace?.('lm_head')
      s.gemm({ a: x, b: top.lmHead, c: localLogits, m: R, n: vocab, k: H, transB: true })
    }
    if (comm !== undefined) {
      trace?.('all_gather')
      comm.allGather(s, localLogits, gathered)
    }
    trace?.('sample')
    const split = this.#sampleSplit
    const { kernel, blocksPerRow, block, sharedMemBytes } = split !== undefined && R <= split.maxRows ? split : this.#sample
    s.launch(kernel, { grid: R * blocksPerRow, block, sharedMemBytes, programmaticDependentLaunch: pdl }, [
      t.next,
      t.logits,
      gathered,
      t.last,
      t.positions,
      t.sampling,
      t.seeds,
      c.vocab,
      vocab,
      R,
      // A chained step's LM head left each row's greedy token (chains run without tensor parallelism, so
      // gathered is the logits themselves), in the chain's scratch.
      this.#chainCounters,
      chain ? 1 : 0,
    ])
  }

  /**
   * One decode GEMV of `rows` token rows (kernels/decoder.cu): `out = x W^T` (plus the bias); with `norm`,
   * x is the residual stream's RMSNorm; with `silu`, W is gate rows then up rows and out their SiLU
   * product; without `out`, the result is added to the residual stream.
   */
  #gemv(s: Stream, rows: number, resid: DeviceBuffer<'f32'>, g: GemvCall): void {
    const flags = gemvFlags(g)
    // Pointer parameters a call does not use get a buffer it never reads.
    const unused = g.w
    const k = this.#k
    const programmaticDependentLaunch = this.#pdl
    let kernel: Kernel
    let launch: LaunchConfig
    if (this.decodeGemv === 'cuda-cores') {
      kernel = g.silu ? k.gemvSilu : k.gemv
      launch = { grid: [ceilDiv(g.n, GEMV_WARPS), ceilDiv(rows, GEMV_ROWS)], block: 32 * GEMV_WARPS, programmaticDependentLaunch }
    } else {
      // The 8-row kernels up to 8 token rows, else the 16-row ones.
      const width = rows <= 8 ? 8 : 16
      kernel = width === 8 ? (g.silu ? k.gemvMmaSilu8 : k.gemvMma8) : g.silu ? k.gemvMmaSilu16 : k.gemvMma16
      // Tiles of 16 columns, a block a multiprocessor: as few blocks as take them in the same number of rounds
      // (1b's q/k/v, 192 tiles: 96 blocks of two, not 132 of one or two), so the multiprocessors left free take
      // the next kernel's blocks early (on an H200, 1b's batch-1 step at context 1024: 915 against 967 µs).
      const tiles = ceilDiv(g.n, 16)
      launch = {
        grid: ceilDiv(tiles, ceilDiv(tiles, this.#multiprocessors)),
        block: 32 * GM_WARPS,
        sharedMemBytes: tensorGemvSharedBytes(width, g.k, g.norm !== undefined, g.silu === true).dynamic,
        programmaticDependentLaunch,
      }
    }
    s.launch(kernel, launch, [
      g.out ?? unused,
      resid,
      g.tokens ? this.#top.embed : (g.x ?? unused),
      g.w,
      g.norm ?? unused,
      g.bias ?? unused,
      g.tokens ?? unused,
      this.config.vocab,
      g.n,
      g.k,
      rows,
      this.config.eps,
      flags,
    ])
  }

  /** The flash prefill kernel's name ({@link flashPrefill}), with `'flash'`. */
  get flashKernel(): string | undefined {
    return this.#flash?.name
  }

  /**
   * Whether, on cuBLAS's path, the attention norms after the first layer's are folded into q/k/v and
   * launch no kernel ({@link DecoderOptions.foldNorms}): not before a q/k/v bias, which their scale would
   * reach. (The MLP norms are folded wherever `foldNorms` is.)
   */
  get foldsAttentionNorm(): boolean {
    return this.foldNorms && !this.config.qkvBias
  }

  /**
   * Whether decode steps of at most {@link DecoderModel.chainRows} rows run each layer's o, gate/up, down
   * and the next layer's q/k/v (the last layer's: the LM head) as one kernel (`gemv_chain`,
   * kernels/decoder.cu): the `'tensor-cores'` GEMVs' math and bits, with two warps a block streaming every
   * op's weights while the others compute, so the weights keep moving across the ops' grid barriers. Where
   * it fits ({@link chainFits}) and the options do not turn it off.
   */
  get decodeChain(): boolean {
    return this.chainRows > 0
  }

  /** Whether a decode step of `rows` token rows runs layer chains ({@link DecoderModel.decodeChain}). */
  chainsDecode(rows: number): boolean {
    return rows <= this.chainRows
  }

  /**
   * Whether a decode step of `rows` rows, sampled as `params` says ([temperature, top-p, top-k] a row), sets
   * its ready flag (`ForwardTensors.ready`): the kernels' rule, kernels/decoder.cu's chain_publish, for the
   * host to know which steps to wait for by the flag. Its rows chain and are all greedy (a row with no logit
   * above -inf, which the kernels also leave to `sample`, the host cannot see: that step's wait falls back to
   * its replay's end).
   */
  publishesDecode(rows: number, params: Float32Array): boolean {
    if (!this.chainsDecode(rows)) return false
    for (let i = 0; i < rows; i++) if (params[3 * i]! > 0) return false
    return true
  }

  /**
   * One layer chain of `rows` token rows (kernels/decoder.cu's gemv_chain): o (adding to the residual
   * stream), gate/up with the MLP norm and SiLU into `act`, down (adding), then `next`, a normalized GEMV
   * (the next layer's q/k/v, or the LM head's f32 logits); a block a multiprocessor, its shared memory as
   * `layout` says ({@link chainLayout} for `rows`).
   */
  #chain(s: Stream, rows: number, layout: ChainLayout, b: { resid: DeviceBuffer<'f32'>; attn: Buf; act: Buf; L: LayerWeights }, next: ChainNext): void {
    const c = this.config
    const { streamed, width, stages } = layout
    const flags = gemvFlags(next)
    s.launch(
      streamed ? this.#k.gemvChainStreamed : this.#k.gemvChain,
      {
        grid: this.#multiprocessors,
        block: 32 * (GM_WARPS + GC_PRODUCERS),
        sharedMemBytes: chainSharedBytes(stages, rows, width, streamed),
        programmaticDependentLaunch: this.#pdl,
      },
      [
        b.resid,
        b.attn,
        b.L.o,
        b.act,
        b.L.gateUp,
        b.L.mlpNorm,
        b.L.down,
        next.out,
        next.w,
        next.norm,
        next.bias ?? next.w,
        this.#chainCounters,
        next.publish?.sampling ?? next.w,
        next.publish?.next ?? next.w,
        next.publish?.ready ?? next.w,
        this.local.heads * c.headDim,
        c.hidden,
        this.local.ffn,
        next.n,
        rows,
        c.eps,
        flags,
        stages,
        width,
      ],
    )
  }

  /** Frees the weights and the KV cache (after the device is idle). */
  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.device.synchronize()
    for (const w of this.weights.values()) w.buffer.dispose()
    this.#top.invFreq.dispose()
    this.#chainCounters.dispose()
    for (const L of this.#layers) {
      L.kCache.dispose()
      L.vCache.dispose()
    }
  }
}

// out, resid, x, W, norm_w, bias, tokens, vocab, N, K, M, eps, flags
const GEMV_SIGNATURE = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32', 'i32'] as const
const {
  GEMV_WARPS,
  GEMV_ROWS,
  GEMV_CHUNKS,
  GEMV_NORM,
  GEMV_BIAS,
  GEMV_RESID,
  GEMV_F32,
  GEMV_EMBED,
  GEMV_ARGMAX,
  GEMV_PUBLISH,
  GM_WARPS,
  GM_SLOTS,
  GC_STAGES,
  GC_PRODUCERS,
  GC_COUNTERS,
  GC_XSTEPS,
  GC_RED_PITCH,
  GC_NORM_SLICES,
  ATT_WARPS,
  ATT_KEYS,
  ATT_ROPE,
  ATT_PREFETCH,
  ATT_EARLY,
  ATT_DOUBLE,
  ATT_NORM,
  FA_WARPS,
  FA_SPLIT,
  FA_WG_ROWS,
  FA_WG_KEYS,
  FA_WG_STAGES,
  SAMPLE_SPLIT,
} = KERNEL_CONSTANTS
/** The widest input a CUDA-core decode GEMV takes, elements: 8 a 16-byte chunk, GEMV_CHUNKS chunks a lane, 32 lanes. */
const GEMV_MAX_WIDTH = 8 * GEMV_CHUNKS * 32
/**
 * Multiply-adds of a full decode batch past which cuBLAS's tensor cores win: on an H200, `small`'s decode
 * step in a graph took 118 µs with the GEMVs against 172 with cuBLAS at batch 1, 176 against 178 at 16, 208
 * against 192 at 24 and 313 against 219 at 64; 16 rows of `small` are 1.1e8 multiply-adds.
 */
const GEMV_MAX_FMA = 2 ** 27

/**
 * Logits in a row past which a sampling launch splits each row over a cluster of SAMPLE_SPLIT blocks: 128 KiB
 * of f32, what stays in one multiprocessor's L1 across the sweeps. On an H200 (1b, bf16, same runs), a
 * cluster a row took 0.90x the time of a step at batch 1 sampled at top-p (0.97x greedy) and 0.88x at batch 8
 * with 128256 logits; with 32000, 0.98-1.00x at batch 1 and 1.01-1.03x at 8.
 */
export const SAMPLE_SPLIT_VOCAB = 32768

/**
 * The most rows of `vocab` logits a sampling launch on `device` splits, each over SAMPLE_SPLIT blocks
 * (`sample_split`, a thread-block cluster, compute capability 9.0+): as many as leave every row's cluster on the
 * multiprocessors at once, where a row is wider than {@link SAMPLE_SPLIT_VOCAB}; else 0, and every launch takes
 * a block a row (`sample`). At batch 64 (512 blocks) a cluster a row took 1.05-1.11x the time of one block.
 */
export function sampleSplitRows(device: Pick<Device, 'computeCapability' | 'multiprocessors'>, vocab: number): number {
  return device.computeCapability[0] >= 9 && vocab > SAMPLE_SPLIT_VOCAB ? Math.floor(device.multiprocessors / SAMPLE_SPLIT) : 0
}

/** A sampling kernel with its launch's blocks a row, threads a block and dynamic shared memory a block (bytes). */
interface SampleLaunch {
  kernel: Kernel
  blocksPerRow: number
  block: number
  sharedMemBytes: number
}

/**
 * A sampling launch's threads a block and dynamic shared memory a block (bytes) at `blocksPerRow` blocks a row
 * of `vocab` logits: a block's part is ceil(vocab / 4 / blocksPerRow) x 4 elements, a thread for each 8 of them
 * (32 to 1024); split rows keep their part in shared memory where it fits beside `sample_split`'s static
 * arrays (`kernel`), else (and for a block a row) the kernel sweeps it in global memory.
 */
export function sampleShape(
  device: Pick<Device, 'maxSharedMemoryPerBlock'>,
  kernel: Pick<Kernel, 'staticSharedBytes'>,
  vocab: number,
  blocksPerRow: number,
): { block: number; sharedMemBytes: number } {
  const part = 4 * ceilDiv(vocab, 4 * blocksPerRow)
  const fits = blocksPerRow > 1 && 4 * part + kernel.staticSharedBytes <= device.maxSharedMemoryPerBlock
  return { block: threadsFor(ceilDiv(part, 8)), sharedMemBytes: fits ? 4 * part : 0 }
}

// next, logits, gathered, last, positions, params, seeds, vocab, Vs, R, the layer chain's scratch, fused (its LM head's keys are there)
const SAMPLE_SIGNATURE = [...Array<'ptr'>(7).fill('ptr'), 'i32', 'i32', 'i32', 'ptr', 'i32'] as const

// resid, attn, Wo, act, Wgu, mlp_norm, Wd, next_out, Wn, next_norm, next_bias, ctr, params, next, ready, Ko, H, F, Nn, M, eps, next_flags, R, W
const CHAIN_SIGNATURE = [...Array<'ptr'>(15).fill('ptr'), 'i32', 'i32', 'i32', 'i32', 'i32', 'f32', 'i32', 'i32', 'i32'] as const
/**
 * A layer chain's static shared memory, bytes: two mbarriers a stage, as gemv_chain declares them (a GPU
 * test holds the two figures together), so {@link chainRows} can budget stages before any kernel is compiled.
 */
export const CHAIN_STATIC_SHARED = 2 * GC_STAGES * 8
/** A layer chain's ring stage, bytes: a 16 x 64-element unit (2 KiB) for each consumer warp. */
const CHAIN_STAGE_BYTES = GM_WARPS * 2048
/**
 * The fewest ring stages a layer chain runs with: a floor by estimate, not measured (4 stages are 64 KiB, about
 * 2 µs of a multiprocessor's share of an H200's stream, shorter than a grid barrier and the next op's norm).
 */
const CHAIN_MIN_STAGES = 4

/** How a layer chain lays out a block's shared memory ({@link chainLayout}). */
export interface ChainLayout {
  /** Whether down's input rows stream through each consumer warp's own ring (`gemv_chain_streamed`) rather than being staged whole. */
  streamed: boolean
  /** The staged rows' width, elements (the kernel's W): at least o's input and what a norm stages ({@link normStagedWidth}). */
  width: number
  /** The weights' ring stages ({@link chainStages}). */
  stages: number
}

/**
 * Ring stages that streaming down's input must add to a layer chain for {@link chainLayout} to stream it.
 * On an H200, 1b's decode step at 8 rows (7 stages instead of 5) took 0.982-0.986x the time in four runs (f16
 * and bf16); at 4 rows (10 instead of 9) 0.982x and 0.994x, at 2 (12 instead of 11) 0.999x and 1.012x, and
 * at 1 row, 12 stages either way, 1.010x: one stage more is within the noise (at 2 rows, 13 instead of 12
 * since the norms hold their rows in registers: 1.005x in f16, 1.009x in bf16).
 */
const CHAIN_STREAM_MARGIN = 2

/**
 * A layer chain's layout for `rows` token rows: every op's input staged whole, unless that leaves under
 * {@link CHAIN_MIN_STAGES} or streaming down's input leaves {@link CHAIN_STREAM_MARGIN} more ring stages;
 * then the staged rows hold o's input and what the norms stage. A deeper ring absorbs more of the grid
 * barriers and the norms, where the producers would otherwise wait on a full ring: on an H200, 1b's decode
 * step took 1.072x the time at batch 1 with 7 stages instead of 12, and 1.032x at 4 with 7 instead of 9.
 */
export function chainLayout(maxShared: number, c: ModelConfig, local: Pick<LocalDims, 'heads' | 'ffn'>, rows: number): ChainLayout {
  const narrow = Math.max(local.heads * c.headDim, normStagedWidth(c.hidden, rows))
  const whole = Math.max(narrow, local.ffn)
  const staged = { streamed: false, width: whole, stages: chainStages(maxShared, rows, whole) }
  if (whole === narrow) return staged
  const streamed = { streamed: true, width: narrow, stages: chainStages(maxShared, rows, narrow, true) }
  const better = staged.stages < CHAIN_MIN_STAGES ? streamed.stages > staged.stages : streamed.stages >= staged.stages + CHAIN_STREAM_MARGIN
  return better ? streamed : staged
}

/**
 * The staged rows' width, elements, that a layer chain's norm of `hidden` needs: past its `rows` normalized
 * rows it stages the f32 elements a lane's registers do not hold (those past 128 GC_NORM_SLICES a row) and
 * its weights (kernels/decoder.cu: rows W >= rows K + 2 rows (K - 128 GC_NORM_SLICES) + K); a multiple of 8.
 */
function normStagedWidth(hidden: number, rows: number): number {
  return hidden + 2 * Math.max(0, hidden - 128 * GC_NORM_SLICES) + 8 * Math.ceil(hidden / rows / 8)
}

/**
 * A layer chain's dynamic shared memory, bytes: `stages` ring stages, the warps' partial sums (gate and up,
 * `rows` rows of GC_RED_PITCH floats a warp), then `rows` staged input rows of `width` + 32 elements, or,
 * `streamed`, the consumer warps' rings of streamed rows where those are larger.
 */
export function chainSharedBytes(stages: number, rows: number, width: number, streamed = false): number {
  const rowBytes = Math.max(rows * (width + 32), streamed ? GM_WARPS * GC_XSTEPS * rows * 64 : 0) * 2
  return stages * CHAIN_STAGE_BYTES + GM_WARPS * 2 * rows * GC_RED_PITCH * 4 + rowBytes
}

/** The ring stages a layer chain of `rows` token rows takes (as many as a block's `maxShared` bytes hold, at most GC_STAGES). */
export function chainStages(maxShared: number, rows: number, width: number, streamed = false): number {
  return Math.min(GC_STAGES, Math.floor((maxShared - CHAIN_STATIC_SHARED - chainSharedBytes(0, rows, width, streamed)) / CHAIN_STAGE_BYTES))
}

/**
 * The most token rows a model's layer chains take on `device`, 0 where it does not chain: the kernel's
 * mbarrier waits and programmatic dependent launch need compute capability 9.0+, and a block's shared
 * memory must hold {@link CHAIN_MIN_STAGES} stages beside the rows {@link chainLayout} stages, for at most
 * {@link CHAIN_MAX_ROWS} rows and at least CHAIN_MIN_ROWS (an H200's 227 KiB hold 11 stages beside 8 rows of
 * 1b, its MLP's streamed; 88 KiB hold 3 at 4 rows, too few). A whole model only (a tensor-parallel rank's o
 * and down are partial sums).
 */
export function chainRows(device: DeviceLimits, c: ModelConfig): number {
  if (device.computeCapability[0] < 9) return 0
  for (let rows = CHAIN_MAX_ROWS; rows >= CHAIN_MIN_ROWS; rows--)
    if (chainLayout(device.maxSharedMemoryPerBlock, c, c, rows).stages >= CHAIN_MIN_STAGES) return rows
  return 0
}

/** Whether a model's decode steps can run layer chains on `device` ({@link chainRows}). */
export function chainFits(device: DeviceLimits, c: ModelConfig): boolean {
  return chainRows(device, c) > 0
}

/** A layer chain's last op (see `DecoderModel.#chain`): `out = rmsnorm(resid) W^T` (+ bias), W [n][hidden]; f32 `out` unrounded. */
interface ChainNext {
  out: Buf | DeviceBuffer<'f32'>
  w: Buf
  n: number
  norm: Buf
  bias?: Buf | undefined
  /** The LM head's: each row's greedy token as an argmax key for `sample` (GEMV_ARGMAX). */
  argmax?: boolean
  /** With `argmax`: an all-greedy step's tokens into `next`, then its `ready` flag set (GEMV_PUBLISH). */
  publish?: (Pick<ForwardTensors, 'sampling' | 'next'> & { ready: DeviceBuffer<'i32'> }) | undefined
}

/** One decode GEMV (see `DecoderModel.#gemv`): W is [n][k] ([2n][k] with `silu`). */
interface GemvCall {
  /**
   * Where the result goes (f32: unrounded, the LM head's logits); none for o and down, which add it to the
   * residual stream (a tensor-parallel rank's partial sums go to `delta`).
   */
  out?: Buf | DeviceBuffer<'f32'> | undefined
  x?: Buf
  w: Buf
  n: number
  k: number
  norm?: Buf
  bias?: Buf | undefined
  silu?: boolean
  /** The first layer's (with `norm`): the residual rows are these tokens' embedding rows. */
  tokens?: DeviceBuffer<'i32'> | undefined
}

/** The GEMV kernels' flags for a call (kernels/decoder.cu's GEMV_*: the prologue's norm, the epilogue's bias, residual add and f32 store). */
function gemvFlags(g: Pick<GemvCall, 'out' | 'norm' | 'bias' | 'tokens'> & Pick<ChainNext, 'argmax' | 'publish'>): number {
  const { norm, bias, out, tokens, argmax, publish } = g
  return (
    (norm ? GEMV_NORM : 0) |
    (bias ? GEMV_BIAS : 0) |
    (out ? 0 : GEMV_RESID) |
    (out?.dtype === 'f32' ? GEMV_F32 : 0) |
    (tokens ? GEMV_EMBED : 0) |
    (argmax ? GEMV_ARGMAX : 0) |
    (publish ? GEMV_PUBLISH : 0)
  )
}

const gemvShapeRule = `every projection's input width a multiple of 8 and at most ${GEMV_MAX_WIDTH}`

/**
 * A `'tensor-cores'` GEMV's shared memory for `rows` (8 or 16) token rows of width `k`, bytes: each
 * warp's ring (16-byte pieces a lane a step: 4 a weight tile, and 2 a group of 8 token rows unless the
 * rows are normalized in the prologue), the normalized rows (`k + 32` elements each), and the warps'
 * partial sums (static).
 */
export function tensorGemvSharedBytes(rows: number, k: number, norm: boolean, silu: boolean): { dynamic: number; total: number } {
  const tiles = silu ? 2 : 1
  const ring = GM_WARPS * (GM_SLOTS / tiles) * (4 * tiles + (norm ? 0 : rows / 4)) * 32 * 16
  const dynamic = ring + (norm ? rows * (k + 32) * 2 : 0)
  return { dynamic, total: dynamic + GM_WARPS * tiles * (rows / 2) * 32 * 4 }
}

const tensorGemvRule = "every projection's input width a multiple of 64, compute capability 8.0+, and a block's rings and 16 normalized rows in shared memory"

/**
 * Whether `'tensor-cores'` decode GEMVs take a model's shapes on `device` (`local`: a tensor-parallel
 * rank's): every projection's input width a multiple of 64 (a lane's 16-byte copies of 64-wide chunks),
 * MMAs (compute capability 8.0+), and each of its GEMVs' shared memory at {@link TENSOR_GEMV_MAX_ROWS}
 * rows within a block's (an H200's 227 KiB take a hidden width up to 3648; an A100's 163 KiB none: o's
 * and down's rings alone are 192 KiB).
 */
export function tensorGemvFits(device: DeviceLimits, c: ModelConfig, local: LocalDims): boolean {
  const rows = TENSOR_GEMV_MAX_ROWS
  const calls = [
    tensorGemvSharedBytes(rows, c.hidden, true, false),
    tensorGemvSharedBytes(rows, c.hidden, true, true),
    tensorGemvSharedBytes(rows, c.hidden, false, false),
  ]
  return (
    [c.hidden, local.heads * c.headDim, local.ffn].every((w) => w % 64 === 0) && hasMma(device) && calls.every((b) => b.total <= device.maxSharedMemoryPerBlock)
  )
}

/**
 * A model's default {@link DecodeGemv}: `'cuda-cores'` where {@link decodeGemvFits} (decode is
 * launch-bound), else `'tensor-cores'` where {@link tensorGemvFits}, else `'off'`.
 */
export function defaultDecodeGemv(device: DeviceLimits, c: ModelConfig, local: LocalDims, slots: number): DecodeGemv {
  if (decodeGemvFits(c, local, slots)) return 'cuda-cores'
  return tensorGemvFits(device, c, local) ? 'tensor-cores' : 'off'
}

/** Whether the decode GEMVs take a model's shapes (`local`: a tensor-parallel rank's). */
function gemvShapesFit(c: ModelConfig, local: LocalDims): boolean {
  return [c.hidden, local.heads * c.headDim, local.ffn].every((w) => w % 8 === 0 && w <= GEMV_MAX_WIDTH)
}

/**
 * Whether a model's decode steps run as fused GEMVs (kernels/decoder.cu) rather than cuBLAS and separate
 * norm, SiLU, residual and final-norm kernels (unless its options say): when decode is launch-bound, not
 * bandwidth-bound. That is: every projection's input width (`local`: a tensor-parallel rank's) a multiple
 * of 8 and at most 2048 (a lane holds its weights in registers), and a full batch's (`slots` rows)
 * multiply-adds in the projections at most 2^27, where the GEMVs' CUDA cores stop keeping up with cuBLAS's
 * tensor cores. The rule depends on the model alone, never on the batch: every decode step of a model
 * takes the same path, so a request's tokens do not depend on its batch.
 */
export function decodeGemvFits(c: ModelConfig, local: LocalDims, slots: number): boolean {
  // Multiply-adds of one row through q/k/v, o, gate/up and down of every layer.
  const perRow = c.layers * c.hidden * ((2 * local.heads + 2 * local.kvHeads) * c.headDim + 3 * local.ffn)
  return gemvShapesFit(c, local) && slots * perRow <= GEMV_MAX_FMA
}

// out, qkv, k cache, v cache, positions, slots, T, heads, kv heads, head size, maxSeqLen, scale
const PREFILL_ATTENTION_SIGNATURE = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32'] as const

/** A flash prefill attention kernel and its launch: grid [query heads, ceil(T / rows)]. */
export interface FlashPrefill {
  /** The kernel (kernels/decoder.cu's `attention_prefill_*`). */
  kernel: Kernel
  /** Its name. */
  name: string
  /** Token rows a block takes. */
  rows: number
  /** Threads a block. */
  threads: number
  /** Dynamic shared memory a block, bytes. */
  sharedMemBytes: number
}

/**
 * The flash prefill kernel for `headDim` in `module`: with `hopper` (by default where the module was
 * compiled for sm_90a) and a head size of 64 or 128, on Hopper's warpgroup MMAs (`attention_prefill_wg_*`:
 * FA_WG_ROWS rows a block, one warpgroup, q and FA_WG_STAGES tiles each of keys and values in dynamic shared
 * memory, and 1 KiB to align them); else on m16n8k16 MMAs (`attention_prefill_64` or `_128`, bounds on the
 * head size: FA_WARPS groups of 16 rows a block, FA_SPLIT warps each, static shared memory).
 */
export function flashPrefill(module: Module, headDim: number, hopper = DecoderModel.compiledForHopper(module)): FlashPrefill {
  if (hopper && (headDim === 64 || headDim === 128)) {
    const name = `attention_prefill_wg_${headDim}`
    // Rows of 128 bytes (64 dims) a column block: q's FA_WG_ROWS, FA_WG_STAGES tiles each of keys and values.
    const rowBytes = (headDim / 64) * 128
    const keys = headDim === 128 ? 64 : FA_WG_KEYS
    const sharedMemBytes = (FA_WG_ROWS + 2 * FA_WG_STAGES * keys) * rowBytes + 1024
    return { kernel: module.kernel(name, PREFILL_ATTENTION_SIGNATURE), name, rows: FA_WG_ROWS, threads: 128, sharedMemBytes }
  }
  const name = `attention_prefill_${headDim <= 64 ? 64 : 128}`
  return { kernel: module.kernel(name, PREFILL_ATTENTION_SIGNATURE), name, rows: 16 * FA_WARPS, threads: 32 * FA_WARPS * FA_SPLIT, sharedMemBytes: 0 }
}

// out, qkv, k cache, v cache, positions, slots, rotary frequencies, flags, heads, kv heads, head size, maxSeqLen,
// scale, and ATT_NORM's residual rows, their width and the norm's eps
const ATTENTION_SIGNATURE = ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'i32', 'f32', 'ptr', 'i32', 'f32'] as const

/**
 * Decode attention's flags for a step of `kind` whose grid has `blocks` blocks, on the tensor-core kernels
 * (`mma`) or not, followed by a layer chain (`chained`) or not: a decode step rotates and stores its rows'
 * new keys (ATT_ROPE); a layer chain launches before attention waits for the kernel before it (ATT_EARLY),
 * so its producers stream on the multiprocessors attention leaves free. On a grid of at most half
 * the multiprocessors, where a warp's chunks otherwise wait one load latency each, the CUDA-core kernels
 * pull each row's cached keys and values into L2 before griddepcontrol.wait (ATT_PREFETCH) and the
 * tensor-core kernels copy a warp's next chunk while it works on this one (ATT_DOUBLE: twice the shared
 * memory, the same bits). On fuller grids both cost more than they save, and the L2 prefetch cost more on
 * the tensor-core kernels at every size measured (kernels/decoder.cu has the figures).
 */
export function attentionFlagsFor(kind: StepKind, mma: boolean, blocks: number, multiprocessors: number, chained: boolean): number {
  const few = 2 * blocks <= multiprocessors
  return (kind === 'decode' ? ATT_ROPE : 0) | (few ? (mma ? ATT_DOUBLE : ATT_PREFETCH) : 0) | (chained ? ATT_EARLY : 0)
}

/**
 * Whether `config`'s decode attention runs on tensor cores on `device`: compute capability 8.0+ (the MMAs)
 * and grouped-query attention (at least 2 query heads a key/value head). A model's choice, never a
 * batch's, so a request's bits do not depend on its batch. On an H200, 1b (groups of 4) took 1140 against
 * 1196 µs a batch-64 step (context 128) on tensor cores, 801 against 810 at batch 8, 1626 against 1831 at
 * batch 64 and context 1024, and 1012 against 980 at batch 1 and 1024; small (one query head a key/value
 * head, so one of the MMA's 16 rows used) took 147 against 134 µs at batch 8 and 272 against 233 at 1000.
 */
export function decodeAttentionMma(device: DeviceLimits, config: ModelConfig): boolean {
  return hasMma(device) && config.heads / config.kvHeads >= 2
}

/**
 * Dynamic shared memory of the tensor-core attention kernels of head-size bound `bound` (64 or 128), in
 * bytes: each of the ATT_WARPS warps' key and value buffers, ATT_KEYS rows of `bound` + 8 elements
 * (twice that with ATT_DOUBLE).
 */
export function attentionMmaSharedBytes(bound: number): number {
  return ATT_WARPS * 2 * ATT_KEYS * (bound + 8) * 2
}

/** Query heads an attention block may take (the kernels `attention_<D>x<heads>` in kernels/decoder.cu). */
const ATTENTION_HEADS = [4, 2, 1] as const

/**
 * Query heads per attention block for a step of `rows` token rows: the most of 4, 2 or 1 that divides
 * the group (query heads per key/value head) and still makes two blocks a multiprocessor; the most that
 * divides it when the step has too few rows for any (a block reads its keys and values once for its
 * heads, and with fewer blocks than that more heads a block do not lengthen the step: on an H200, 1b's
 * decode step at context 128 took 0.971x the time at batch 8 with four heads a block against one, 0.985x
 * at 4, 0.997x at 1; at context 1024 0.874x at 8). A row's result does not depend on the choice
 * (kernels/decoder.cu).
 */
export function attentionHeads(rows: number, kvHeads: number, group: number, multiprocessors: number): number {
  for (const h of ATTENTION_HEADS) if (group % h === 0 && rows * kvHeads * (group / h) >= 2 * multiprocessors) return h
  return ATTENTION_HEADS.find((h) => group % h === 0) ?? 1
}

/** Prefill attention's default on `device`: `'flash'` from compute capability 8.0 (its MMAs), else `'rows'`. */
export function defaultPrefillAttention(device: Device): PrefillAttention {
  return hasMma(device) ? 'flash' : 'rows'
}
