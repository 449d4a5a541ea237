/**
 * The built-in workload: a Llama-style decoder (token embedding, RMSNorm, rotary positions, attention over
 * a contiguous per-slot KV cache, SwiGLU MLP, residual adds, final norm, LM head, greedy argmax on the
 * device). Kernels are CUDA C (kernels/decoder.cu) compiled by NVRTC; GEMMs go through cuBLAS. f16 weights
 * and activations, f32 residual stream and accumulation. Weights are random from a seed.
 */
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { DeviceBuffer } from '../cuda/buffer.js'
import type { Device } from '../cuda/device.js'
import type { Kernel } from '../cuda/kernel.js'
import type { Module } from '../cuda/module.js'
import type { Stream } from '../cuda/stream.js'
import { check } from '../errors.js'
import { PACKAGE_ROOT } from '../util/package-root.js'
import { headDim, type ModelConfig, type ModelName, modelConfig } from './model-config.js'
import { writeSafetensors } from './safetensors.js'

/** Options of {@link DecoderModel.create}. */
export interface DecoderOptions {
  /** A preset name or a partial config over a preset (default `'small'`). */
  model?: ModelName | (Partial<ModelConfig> & { preset?: ModelName })
  /** Seed of the random weights (default 1): the same seed gives the same model on every GPU. */
  seed?: number
  /** KV-cache slots: requests that can be in flight at once (default 64, at most 256). */
  slots?: number
  /** Longest sequence (prompt plus generated tokens) a slot holds (default 1024, at most 4096). */
  maxSeqLen?: number
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
  /** i32 [requests]: the greedy next token of each request. */
  next: DeviceBuffer<'i32'>
  /** f32 [requests, vocab]: the logits of each request's last token. */
  logits: DeviceBuffer<'f32'>
}

/** Where a forward enqueues and gets temporaries (a step context, or any stream with an allocator). */
export interface ForwardContext {
  readonly stream: Stream
  scratch<D extends 'f32' | 'f16'>(dtype: D, length: number): DeviceBuffer<D>
}

/** A weight: its device buffer and its [rows, cols] shape (row-major, x @ W for projections). */
export interface Weight {
  readonly buffer: DeviceBuffer<'f16'>
  readonly shape: readonly [number] | readonly [number, number]
}

/** Where the kernels' source ships in the package. */
export const DECODER_KERNELS_PATH = join(PACKAGE_ROOT, 'kernels', 'decoder.cu')

interface LayerWeights {
  attnNorm: DeviceBuffer<'f16'>
  qkv: DeviceBuffer<'f16'>
  o: DeviceBuffer<'f16'>
  mlpNorm: DeviceBuffer<'f16'>
  gateUp: DeviceBuffer<'f16'>
  down: DeviceBuffer<'f16'>
  kCache: DeviceBuffer<'f16'>
  vCache: DeviceBuffer<'f16'>
}

const ceilDiv = (a: number, b: number) => Math.ceil(a / b)
const threadsFor = (n: number) => Math.min(1024, Math.max(32, ceilDiv(n, 32) * 32))

/** Weights, KV cache and compiled kernels of one decoder on one device. */
export class DecoderModel {
  readonly device: Device
  readonly config: ModelConfig
  readonly seed: number
  /** KV-cache slots; slot `slots` (one more) takes the writes of padding rows. */
  readonly slots: number
  readonly maxSeqLen: number
  /** Weights by name (`embed`, `layers.0.qkv`, ..., `norm`, `lm_head`), in creation order. */
  readonly weights: ReadonlyMap<string, Weight>
  readonly #k: Record<'embed' | 'addNorm' | 'finalNorm' | 'rope' | 'attention' | 'siluMul' | 'argmax', Kernel>
  /** Each layer's weights, looked up once (the eager forward does no string work per launch). */
  readonly #layers: LayerWeights[]
  readonly #top: { embed: DeviceBuffer<'f16'>; norm: DeviceBuffer<'f16'>; lmHead: DeviceBuffer<'f16'> }
  #disposed = false

  private constructor(
    device: Device,
    config: ModelConfig,
    seed: number,
    slots: number,
    maxSeqLen: number,
    module: Module,
    weights: Map<string, Weight>,
    caches: [DeviceBuffer<'f16'>[], DeviceBuffer<'f16'>[]],
  ) {
    this.device = device
    this.config = config
    this.seed = seed
    this.slots = slots
    this.maxSeqLen = maxSeqLen
    this.weights = weights
    this.#k = {
      embed: module.kernel('embed', ['ptr', 'ptr', 'ptr', 'i32', 'i32']),
      addNorm: module.kernel('add_rmsnorm', ['ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32', 'i32']),
      finalNorm: module.kernel('final_norm', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'f32']),
      rope: module.kernel('rope_store', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32']),
      attention: module.kernel('attention', ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'i32', 'i32', 'i32', 'i32', 'f32']),
      siluMul: module.kernel('silu_mul', ['ptr', 'ptr', 'i32', 'i32']),
      argmax: module.kernel('argmax', ['ptr', 'ptr', 'i32']),
    }
    const w = (name: string) => weights.get(name)!.buffer
    this.#layers = Array.from({ length: config.layers }, (_, l) => ({
      attnNorm: w(`layers.${l}.attn_norm`),
      qkv: w(`layers.${l}.qkv`),
      o: w(`layers.${l}.o`),
      mlpNorm: w(`layers.${l}.mlp_norm`),
      gateUp: w(`layers.${l}.gate_up`),
      down: w(`layers.${l}.down`),
      kCache: caches[0][l]!,
      vCache: caches[1][l]!,
    }))
    this.#top = { embed: w('embed'), norm: w('norm'), lmHead: w('lm_head') }
  }

  /**
   * Compiles the kernels, allocates the weights and the KV cache, and fills the weights from `seed` on
   * `stream` (waits until they are written). Throws ArgumentError for a bad option, before allocating.
   */
  static create(device: Device, stream: Stream, options: DecoderOptions = {}): DecoderModel {
    const config = modelConfig(options.model ?? 'small')
    const seed = options.seed ?? 1
    check(Number.isSafeInteger(seed) && seed >= 0, 'seed', 'a non-negative integer', seed)
    const slots = options.slots ?? 64
    check(Number.isInteger(slots) && slots >= 1 && slots <= 256, 'slots', 'an integer in 1..256', slots)
    const maxSeqLen = options.maxSeqLen ?? 1024
    check(Number.isInteger(maxSeqLen) && maxSeqLen >= 1 && maxSeqLen <= 4096, 'maxSeqLen', 'an integer in 1..4096', maxSeqLen)

    const module = device.compile(readFileSync(DECODER_KERNELS_PATH, 'utf8'), { name: 'decoder' })
    const init = module.kernel('init_uniform', ['ptr', 'i64', 'u64', 'f32', 'f32'])
    const { hidden: H, ffn: F, vocab: V, heads, kvHeads } = config
    const hd = headDim(config)
    const weights = new Map<string, Weight>()
    const made: DeviceBuffer[] = []
    let n = 0
    // Uniform in offset +- scale; projections keep activations near unit scale. The LM head spreads the
    // logits (standard deviation about 4) so greedy choices are rarely near-ties.
    const add = (name: string, shape: Weight['shape'], scale: number, offset = 0) => {
      const len = shape.reduce((a, b) => a * b, 1)
      const buffer = device.alloc('f16', len)
      made.push(buffer)
      stream.launch(init, { grid: Math.min(4096, ceilDiv(len, 256)), block: 256 }, [buffer, len, BigInt(seed) * 1000003n + BigInt(n++), scale, offset])
      weights.set(name, { buffer, shape })
    }
    const unit = (fanIn: number) => Math.sqrt(3 / fanIn)
    try {
      add('embed', [V, H], 1)
      for (let l = 0; l < config.layers; l++) {
        add(`layers.${l}.attn_norm`, [H], 0.1, 1)
        add(`layers.${l}.qkv`, [H, (heads + 2 * kvHeads) * hd], unit(H))
        add(`layers.${l}.o`, [heads * hd, H], unit(heads * hd) / Math.sqrt(config.layers))
        add(`layers.${l}.mlp_norm`, [H], 0.1, 1)
        add(`layers.${l}.gate_up`, [H, 2 * F], unit(H))
        add(`layers.${l}.down`, [F, H], unit(F) / Math.sqrt(config.layers))
      }
      add('norm', [H], 0.1, 1)
      add('lm_head', [H, V], 4 * unit(H))
      const cacheLen = (slots + 1) * maxSeqLen * kvHeads * hd
      const caches: [DeviceBuffer<'f16'>[], DeviceBuffer<'f16'>[]] = [[], []]
      for (let l = 0; l < config.layers; l++) {
        for (const c of caches) {
          const b = device.alloc('f16', cacheLen)
          made.push(b)
          c.push(b)
        }
      }
      stream.synchronize()
      return new DecoderModel(device, config, seed, slots, maxSeqLen, module, weights, caches)
    } catch (e) {
      stream.synchronize()
      for (const b of made) b.dispose()
      throw e
    }
  }

  /** The weight `name` (see {@link DecoderModel.weights}). */
  weight(name: string): Weight {
    const w = this.weights.get(name)
    check(w !== undefined, 'name', 'a weight of this model (embed, layers.<i>.<attn_norm|qkv|o|mlp_norm|gate_up|down>, norm, lm_head)', name)
    return w
  }

  /** Each weight's raw f16 bits by name, copied from the device (for a reference or a file). */
  downloadWeights(): Map<string, Uint16Array> {
    return new Map([...this.weights].map(([name, w]) => [name, w.buffer.download()]))
  }

  /**
   * Writes the weights to a safetensors file (f16, the shapes of {@link DecoderModel.weights}; the config
   * and seed in its metadata), one weight at a time: how peers get the very same model.
   */
  save(path: string): void {
    const entries = [...this.weights].map(([name, w]) => ({ name, dtype: 'F16' as const, shape: w.shape, data: () => w.buffer.download() }))
    writeSafetensors(path, entries, { format: 'cudagraph-decoder', config: JSON.stringify(this.config), seed: String(this.seed) })
  }

  /** Device memory of the weights and of the KV cache, bytes. */
  get bytes(): { weights: number; kvCache: number } {
    let weights = 0
    for (const w of this.weights.values()) weights += w.buffer.byteLength
    const kvCache = this.#layers.reduce((s, L) => s + L.kCache.byteLength + L.vCache.byteLength, 0)
    return { weights, kvCache }
  }

  /**
   * Enqueues one forward pass for `numTokens` token rows and `numReqs` request rows: writes each token's
   * keys and values into its slot at its position, and each request's logits and greedy next token.
   */
  forward(ctx: ForwardContext, t: ForwardTensors, numTokens: number, numReqs: number): void {
    const c = this.config
    const s = ctx.stream
    const k = this.#k
    const T = numTokens
    const H = c.hidden
    const hd = headDim(c)
    const qkvWidth = (c.heads + 2 * c.kvHeads) * hd
    const resid = ctx.scratch('f32', T * H)
    const x = ctx.scratch('f16', T * H)
    const qkv = ctx.scratch('f16', T * qkvWidth)
    const attn = ctx.scratch('f16', T * c.heads * hd)
    const delta = ctx.scratch('f16', T * H)
    const gu = ctx.scratch('f16', T * 2 * c.ffn)
    const act = ctx.scratch('f16', T * c.ffn)
    const normBlock = threadsFor(H)
    const top = this.#top
    const S = this.maxSeqLen

    s.launch(k.embed, { grid: T, block: normBlock }, [resid, t.tokens, top.embed, H, c.vocab])
    for (let l = 0; l < c.layers; l++) {
      const L = this.#layers[l]!
      s.launch(k.addNorm, { grid: T, block: normBlock }, [resid, delta, L.attnNorm, x, H, c.eps, l === 0 ? 0 : 1])
      s.gemm({ a: x, b: L.qkv, c: qkv, m: T, n: qkvWidth, k: H })
      s.launch(k.rope, { grid: T, block: 128 }, [qkv, L.kCache, L.vCache, t.positions, t.slots, c.heads, c.kvHeads, hd, S, c.ropeTheta])
      s.launch(k.attention, { grid: [T, c.heads], block: 128 }, [
        attn,
        qkv,
        L.kCache,
        L.vCache,
        t.positions,
        t.slots,
        c.heads,
        c.kvHeads,
        hd,
        S,
        1 / Math.sqrt(hd),
      ])
      s.gemm({ a: attn, b: L.o, c: delta, m: T, n: H, k: c.heads * hd })
      s.launch(k.addNorm, { grid: T, block: normBlock }, [resid, delta, L.mlpNorm, x, H, c.eps, 1])
      s.gemm({ a: x, b: L.gateUp, c: gu, m: T, n: 2 * c.ffn, k: H })
      s.launch(k.siluMul, { grid: Math.min(4096, ceilDiv(T * c.ffn, 256)), block: 256 }, [act, gu, c.ffn, T])
      s.gemm({ a: act, b: L.down, c: delta, m: T, n: H, k: c.ffn })
    }
    // The last rows' norm goes into x, free by now: request r's row at r.
    s.launch(k.finalNorm, { grid: numReqs, block: normBlock }, [x, resid, delta, t.last, top.norm, H, c.eps])
    s.gemm({ a: x, b: top.lmHead, c: t.logits, m: numReqs, n: c.vocab, k: H })
    s.launch(k.argmax, { grid: numReqs, block: threadsFor(Math.min(c.vocab, 1024)) }, [t.next, t.logits, c.vocab])
  }

  /** Frees the weights, the KV cache and the module (after the device is idle). */
  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.device.synchronize()
    for (const w of this.weights.values()) w.buffer.dispose()
    for (const L of this.#layers) {
      L.kCache.dispose()
      L.vCache.dispose()
    }
  }
}
