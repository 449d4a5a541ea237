/** The decoder's shape: named presets, validation and the rotary frequency table (no GPU needed). */
import { ArgumentError, check } from '../errors.js'

/** Rotary position scaling (a checkpoint's `rope_scaling`). */
export type RopeScaling =
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }

/** A Llama-style decoder's dimensions and options. */
export interface ModelConfig {
  /** Transformer blocks. */
  layers: number
  /** Residual width, elements. */
  hidden: number
  /** Query heads. */
  heads: number
  /** Key/value heads (grouped-query attention when fewer than `heads`). */
  kvHeads: number
  /** Elements per head (a multiple of 8, at most 128; default hidden / heads). */
  headDim: number
  /** SwiGLU inner width, elements. */
  ffn: number
  /** Vocabulary size (token ids 0..vocab-1). */
  vocab: number
  /** RMSNorm epsilon. */
  eps: number
  /** Rotary base. */
  ropeTheta: number
  /** Rotary scaling (default none). */
  ropeScaling: RopeScaling
  /** The LM head is the embedding matrix (default false). */
  tieEmbeddings: boolean
  /** q/k/v projections have biases (default false). */
  qkvBias: boolean
}

/** What a preset or an override gives; the rest have defaults. */
type Dimensions = Pick<ModelConfig, 'layers' | 'hidden' | 'heads' | 'kvHeads' | 'ffn' | 'vocab' | 'eps' | 'ropeTheta'>

/** Named sizes: `tiny` for correctness, `small` launch-bound (where graphs matter most), `1b` about 1.1e9 parameters. */
export const MODEL_PRESETS = Object.freeze({
  tiny: Object.freeze({ layers: 2, hidden: 64, heads: 4, kvHeads: 2, ffn: 128, vocab: 256, eps: 1e-5, ropeTheta: 10000 }),
  small: Object.freeze({ layers: 8, hidden: 256, heads: 4, kvHeads: 4, ffn: 768, vocab: 4096, eps: 1e-5, ropeTheta: 10000 }),
  '1b': Object.freeze({ layers: 16, hidden: 2048, heads: 32, kvHeads: 8, ffn: 8192, vocab: 32000, eps: 1e-5, ropeTheta: 10000 }),
} satisfies Record<string, Dimensions>)

/** A preset's name. */
export type ModelName = keyof typeof MODEL_PRESETS

/** Parameters (elements of all weights). */
export function parameterCount(c: ModelConfig): number {
  const q = c.heads * c.headDim
  const qkv = (c.heads + 2 * c.kvHeads) * c.headDim
  const perLayer = c.hidden * qkv + (c.qkvBias ? qkv : 0) + q * c.hidden + 3 * c.hidden * c.ffn + 2 * c.hidden
  return c.layers * perLayer + (c.tieEmbeddings ? 1 : 2) * c.vocab * c.hidden + c.hidden
}

const FIELDS = ['layers', 'hidden', 'heads', 'kvHeads', 'headDim', 'ffn', 'vocab', 'eps', 'ropeTheta'] as const

/** A partial config over a preset (default `small`). */
export type ModelOverrides = Partial<Pick<ModelConfig, (typeof FIELDS)[number]>> & { preset?: ModelName }

/**
 * A preset by name, or a preset (default `small`) with fields overridden. Checks what the kernels need:
 * head size a multiple of 8 and at most 128, hidden size a multiple of 8, heads a multiple of kvHeads.
 */
export function modelConfig(model: ModelName | ModelOverrides = 'small'): ModelConfig {
  const names = Object.keys(MODEL_PRESETS)
  if (typeof model === 'string') {
    if (!Object.hasOwn(MODEL_PRESETS, model)) throw new ArgumentError('model', `one of ${names.join(', ')}`, model)
    return withDefaults(MODEL_PRESETS[model])
  }
  check(model !== null && typeof model === 'object', 'model', `a preset name (${names.join(', ')}) or a partial config`, model)
  const preset = model.preset ?? 'small'
  check(Object.hasOwn(MODEL_PRESETS, preset), 'model.preset', names.join(', '), preset)
  for (const k of Object.keys(model))
    check(k === 'preset' || (FIELDS as readonly string[]).includes(k), `model.${k}`, `a known field (${FIELDS.join(', ')})`, k)
  const dims: Dimensions & { headDim?: number } = { ...MODEL_PRESETS[preset] }
  for (const k of FIELDS) {
    const v = model[k]
    if (v === undefined) continue
    if (k === 'eps' || k === 'ropeTheta') check(typeof v === 'number' && v > 0 && Number.isFinite(v), `model.${k}`, 'a positive number', v)
    else check(Number.isSafeInteger(v) && v > 0, `model.${k}`, 'a positive integer', v)
    dims[k] = v
  }
  if (dims.headDim === undefined) check(dims.hidden % dims.heads === 0, 'model.hidden', `a multiple of heads (${dims.heads})`, dims.hidden)
  const c = withDefaults(dims)
  check(c.headDim % 8 === 0 && c.headDim <= 128, 'model.headDim', 'a head size that is a multiple of 8 and at most 128', c.headDim)
  check(c.hidden % 8 === 0, 'model.hidden', 'a multiple of 8 (the norms take a row in 16-byte pieces)', c.hidden)
  check(c.heads % c.kvHeads === 0, 'model.kvHeads', `a divisor of heads (${c.heads})`, c.kvHeads)
  check(c.vocab < 2 ** 31, 'model.vocab', 'below 2^31', c.vocab)
  return c
}

function withDefaults(d: Dimensions & { headDim?: number }): ModelConfig {
  return { ...d, headDim: d.headDim ?? d.hidden / d.heads, ropeScaling: { type: 'none' }, tieEmbeddings: false, qkvBias: false }
}

/**
 * The rotary inverse frequencies, [headDim / 2] f32, with the config's scaling applied: the table
 * transformers computes (in f32, step by step, so the angles agree bit for bit where they can).
 */
export function ropeInvFreq(c: ModelConfig): Float32Array {
  const f = Math.fround
  const half = c.headDim / 2
  const inv = Float32Array.from({ length: half }, (_, i) => f(1 / f(c.ropeTheta ** f((2 * i) / c.headDim))))
  const s = c.ropeScaling
  if (s.type === 'linear') return inv.map((x) => f(x / s.factor))
  if (s.type === 'llama3') {
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor
    const highWavelen = s.originalMaxPositions / s.highFreqFactor
    return inv.map((x) => {
      const wavelen = f((2 * Math.PI) / x)
      const scaled = wavelen > lowWavelen ? f(x / s.factor) : x
      if (wavelen < highWavelen || wavelen > lowWavelen) return scaled
      const smooth = f(f(s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor))
      return f(f(f(f(1 - smooth) * scaled) / s.factor) + f(smooth * scaled))
    })
  }
  return inv
}
