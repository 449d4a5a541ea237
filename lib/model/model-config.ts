/** The built-in decoder's shape: named presets and validation (no GPU needed). */
import { ArgumentError, check } from '../errors.js'

/** A Llama-style decoder's dimensions. */
export interface ModelConfig {
  /** Transformer blocks. */
  layers: number
  /** Residual width (elements). */
  hidden: number
  /** Query heads. */
  heads: number
  /** Key/value heads (grouped-query attention when fewer than `heads`). */
  kvHeads: number
  /** SwiGLU inner width (elements). */
  ffn: number
  /** Vocabulary size (token ids 0..vocab-1). */
  vocab: number
  /** RMSNorm epsilon. */
  eps: number
  /** Rotary base. */
  ropeTheta: number
}

/** Named sizes: `tiny` for correctness, `small` launch-bound (where graphs matter most), `1b` about 1.1e9 parameters. */
export const MODEL_PRESETS = Object.freeze({
  tiny: Object.freeze({ layers: 2, hidden: 64, heads: 4, kvHeads: 2, ffn: 128, vocab: 256, eps: 1e-5, ropeTheta: 10000 }),
  small: Object.freeze({ layers: 8, hidden: 256, heads: 4, kvHeads: 4, ffn: 768, vocab: 4096, eps: 1e-5, ropeTheta: 10000 }),
  '1b': Object.freeze({ layers: 16, hidden: 2048, heads: 32, kvHeads: 8, ffn: 8192, vocab: 32000, eps: 1e-5, ropeTheta: 10000 }),
} satisfies Record<string, ModelConfig>)

/** A preset's name. */
export type ModelName = keyof typeof MODEL_PRESETS

/** Elements per head. */
export function headDim(c: ModelConfig): number {
  return c.hidden / c.heads
}

/** Parameters (elements of all weights). */
export function parameterCount(c: ModelConfig): number {
  const hd = headDim(c)
  const perLayer = c.hidden * (c.heads + 2 * c.kvHeads) * hd + c.heads * hd * c.hidden + 3 * c.hidden * c.ffn + 2 * c.hidden
  return c.layers * perLayer + 2 * c.vocab * c.hidden + c.hidden
}

const FIELDS = ['layers', 'hidden', 'heads', 'kvHeads', 'ffn', 'vocab', 'eps', 'ropeTheta'] as const

/**
 * A preset by name, or a preset (default `small`) with fields overridden. Checks what the kernels need:
 * head size a multiple of 8 and at most 128, heads a multiple of kvHeads.
 */
export function modelConfig(model: ModelName | (Partial<ModelConfig> & { preset?: ModelName }) = 'small'): ModelConfig {
  const names = Object.keys(MODEL_PRESETS)
  if (typeof model === 'string') {
    if (!Object.hasOwn(MODEL_PRESETS, model)) throw new ArgumentError('model', `one of ${names.join(', ')}`, model)
    return { ...MODEL_PRESETS[model] }
  }
  check(model !== null && typeof model === 'object', 'model', `a preset name (${names.join(', ')}) or a partial config`, model)
  const preset = model.preset ?? 'small'
  check(Object.hasOwn(MODEL_PRESETS, preset), 'model.preset', names.join(', '), preset)
  for (const k of Object.keys(model))
    check(k === 'preset' || (FIELDS as readonly string[]).includes(k), `model.${k}`, `a known field (${FIELDS.join(', ')})`, k)
  const c: ModelConfig = { ...MODEL_PRESETS[preset] }
  for (const k of FIELDS) {
    const v = model[k]
    if (v === undefined) continue
    if (k === 'eps' || k === 'ropeTheta') check(typeof v === 'number' && v > 0 && Number.isFinite(v), `model.${k}`, 'a positive number', v)
    else check(Number.isSafeInteger(v) && v > 0, `model.${k}`, 'a positive integer', v)
    c[k] = v
  }
  check(c.hidden % c.heads === 0, 'model.hidden', `a multiple of heads (${c.heads})`, c.hidden)
  const hd = headDim(c)
  check(hd % 8 === 0 && hd <= 128, 'model.hidden / model.heads', 'a head size that is a multiple of 8 and at most 128', hd)
  check(c.heads % c.kvHeads === 0, 'model.kvHeads', `a divisor of heads (${c.heads})`, c.kvHeads)
  check(c.vocab < 2 ** 31, 'model.vocab', 'below 2^31', c.vocab)
  return c
}
