/**
 * A Hugging Face model directory's config.json, read into the decoder's terms (no GPU needed): Llama
 * (2 and 3.x, with `rope_scaling` of type `llama3` or `linear`, an explicit `head_dim`, tied embeddings),
 * Mistral and Qwen2 (q/k/v biases). Anything else, or a feature the kernels do not implement, is a
 * CheckpointError naming the field and what is supported.
 */
import { CheckpointError } from '../errors.js'
import { optionalTokenId, tokenIdList } from './json-file.js'
import type { ModelConfig, RopeScaling } from './model-config.js'

/** Architectures the decoder runs. */
export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM'] as const

/** One of {@link SUPPORTED_ARCHITECTURES}. */
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number]

/** A checkpoint's shape and options in the decoder's terms. */
export interface CheckpointConfig extends ModelConfig {
  architecture: Architecture
  /** Positions the model was trained for, tokens. */
  maxPositions: number
  /** The dtype the weights are stored in. */
  dtype: 'bf16' | 'f16' | 'f32'
  /** Sliding-window attention span, tokens; null: full attention. */
  slidingWindow: number | null
  /** Token ids that end generation (config.json's; generation_config.json may add more). */
  eosTokenIds: number[]
  /** The begin-of-sequence token, if the config names one. */
  bosTokenId: number | undefined
}

const DTYPES: Record<string, CheckpointConfig['dtype']> = { bfloat16: 'bf16', float16: 'f16', float32: 'f32' }

/** The context a checkpoint's model gets unless asked otherwise, tokens: min(2048, max_position_embeddings). */
export function defaultMaxSeqLen(maxPositions: number): number {
  return Math.min(2048, maxPositions)
}

/**
 * Reads `json` (the parsed config.json of `file`) for a context of at most `maxSeqLen` tokens (default
 * {@link defaultMaxSeqLen}). Every field is checked: missing, out of range or unsupported is a
 * CheckpointError naming it.
 */
export function parseHfConfig(file: string, json: unknown, maxSeqLen?: number): CheckpointConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new CheckpointError(file, 'config.json is not a JSON object')
  const c = json as Record<string, unknown>
  const fail = (field: string, message: string) => new CheckpointError(file, message, { field })
  const arch = Array.isArray(c.architectures) ? c.architectures : undefined
  const architecture = arch?.length === 1 ? (arch[0] as unknown) : undefined
  if (typeof architecture !== 'string' || !(SUPPORTED_ARCHITECTURES as readonly string[]).includes(architecture)) {
    throw fail('architectures', `${JSON.stringify(c.architectures)} is not supported (supported: ${SUPPORTED_ARCHITECTURES.join(', ')})`)
  }
  const int = (field: string, lo: number, hi: number, dflt?: number): number => {
    const v = c[field] ?? dflt
    if (v === undefined) throw fail(field, 'missing')
    if (!(typeof v === 'number' && Number.isSafeInteger(v) && v >= lo && v <= hi))
      throw fail(field, `expected an integer in ${lo}..${hi}, got ${JSON.stringify(v)}`)
    return v
  }
  const num = (field: string, dflt: number, positive = true): number => {
    const v = c[field] ?? dflt
    if (!(typeof v === 'number' && Number.isFinite(v) && (!positive || v > 0))) throw fail(field, `expected a positive number, got ${JSON.stringify(v)}`)
    return v
  }
  const bool = (field: string, dflt: boolean): boolean => {
    const v = c[field] ?? dflt
    if (typeof v !== 'boolean') throw fail(field, `expected a boolean, got ${JSON.stringify(v)}`)
    return v
  }
  const hidden = int('hidden_size', 1, 1 << 16)
  const heads = int('num_attention_heads', 1, 1024)
  const kvHeads = int('num_key_value_heads', 1, heads, heads)
  if (heads % kvHeads !== 0) throw fail('num_key_value_heads', `${kvHeads} does not divide num_attention_heads (${heads})`)
  const headDim = int('head_dim', 1, 1024, Math.floor(hidden / heads))
  if (headDim % 8 !== 0 || headDim > 128) throw fail('head_dim', `${headDim}: the kernels take a head size that is a multiple of 8, at most 128`)
  if (hidden % 8 !== 0) throw fail('hidden_size', `${hidden}: the kernels take a multiple of 8`)
  const act = c.hidden_act ?? 'silu'
  if (act !== 'silu') throw fail('hidden_act', `${JSON.stringify(act)} is not supported (the MLP is SwiGLU: silu)`)
  if (c.mlp_bias === true) throw fail('mlp_bias', 'MLP biases are not supported')
  const maxPositions = int('max_position_embeddings', 1, 1 << 24, 4096)
  const dtypeName = c.torch_dtype ?? c.dtype ?? 'float32'
  const dtype = typeof dtypeName === 'string' ? DTYPES[dtypeName] : undefined
  if (dtype === undefined)
    throw fail(c.torch_dtype === undefined ? 'dtype' : 'torch_dtype', `${JSON.stringify(dtypeName)} is not supported (${Object.keys(DTYPES).join(', ')})`)
  // Mistral and Qwen2 may attend within a window; with a context no longer than it, that is full attention.
  let slidingWindow: number | null = null
  const window = c.sliding_window
  const usesWindow = architecture === 'Qwen2ForCausalLM' ? c.use_sliding_window === true : window !== null && window !== undefined
  if (usesWindow) {
    slidingWindow = int('sliding_window', 1, 1 << 24)
    const context = maxSeqLen ?? defaultMaxSeqLen(maxPositions)
    if (slidingWindow < context) {
      throw fail(
        'sliding_window',
        `a window of ${slidingWindow} tokens is shorter than maxSeqLen (${context}); sliding-window attention is not implemented (use maxSeqLen <= ${slidingWindow})`,
      )
    }
  }
  // transformers 5 writes the rotary settings as `rope_parameters` (theta included); older files as
  // `rope_theta` and `rope_scaling`.
  const params = c.rope_parameters
  const rope = params !== undefined && params !== null && typeof params === 'object' && !Array.isArray(params) ? (params as Record<string, unknown>) : undefined
  const ropeTheta = rope === undefined ? num('rope_theta', 10000) : ropeNumber(file, 'rope_parameters', rope, 'rope_theta', 10000)
  return {
    architecture: architecture as Architecture,
    layers: int('num_hidden_layers', 1, 1024),
    hidden,
    heads,
    kvHeads,
    headDim,
    ffn: int('intermediate_size', 1, 1 << 20),
    vocab: int('vocab_size', 1, 0x7fffffff),
    eps: num('rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling: rope === undefined ? ropeScaling(file, 'rope_scaling', c.rope_scaling) : ropeScaling(file, 'rope_parameters', rope),
    maxPositions,
    tieEmbeddings: bool('tie_word_embeddings', false),
    qkvBias: architecture === 'Qwen2ForCausalLM' ? true : bool('attention_bias', false),
    dtype,
    slidingWindow,
    eosTokenIds: tokenIdList(file, 'eos_token_id', c.eos_token_id),
    bosTokenId: optionalTokenId(file, 'bos_token_id', c.bos_token_id),
  }
}

/** `r[k]` (or `dflt`), a positive number, or a CheckpointError naming `field`. */
function ropeNumber(file: string, field: string, r: Record<string, unknown>, k: string, dflt?: number): number {
  const x = r[k] ?? dflt
  if (!(typeof x === 'number' && Number.isFinite(x) && x > 0))
    throw new CheckpointError(file, `${k}: expected a positive number, got ${JSON.stringify(x)}`, { field })
  return x
}

function ropeScaling(file: string, field: string, v: unknown): RopeScaling {
  if (v === undefined || v === null) return { type: 'none' }
  const fail = (message: string) => new CheckpointError(file, message, { field })
  if (typeof v !== 'object' || Array.isArray(v)) throw fail(`expected an object, got ${JSON.stringify(v)}`)
  const r = v as Record<string, unknown>
  const type = r.rope_type ?? r.type
  const pos = (k: string) => ropeNumber(file, field, r, k)
  if (type === 'default' || (type === undefined && field === 'rope_parameters')) return { type: 'none' }
  if (type === 'linear') return { type: 'linear', factor: pos('factor') }
  if (type === 'llama3') {
    return {
      type: 'llama3',
      factor: pos('factor'),
      lowFreqFactor: pos('low_freq_factor'),
      highFreqFactor: pos('high_freq_factor'),
      originalMaxPositions: pos('original_max_position_embeddings'),
    }
  }
  throw fail(`rope type ${JSON.stringify(type)} is not supported (supported: default, linear, llama3)`)
}
