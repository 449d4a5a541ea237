/**
 * The decoder's weights and how each is made of Hugging Face tensors. Every matrix is [out, in] row-major
 * as transformers stores `nn.Linear` weights (the forward multiplies by its transpose), so a fused weight
 * is its parts' rows back to back: qkv = q_proj; k_proj; v_proj and gate_up = gate_proj; up_proj. Loading
 * uploads each part into its rows; saving writes each part from them.
 *
 * Under tensor parallelism rank r of n holds a slice of each projection (Megatron's split): q/k/v and
 * gate/up by output rows (its heads, its share of the MLP), o and down by input columns (their partial
 * sums are all-reduced), the LM head by vocabulary rows; embedding and norms whole.
 */
import { ArgumentError } from '../errors.js'
import type { ModelConfig } from './model-config.js'

/** Which share of the model a rank holds: rank `rank` of `size` (size 1: all of it). */
export interface Shard {
  readonly rank: number
  readonly size: number
}

/** The whole model (no tensor parallelism). */
export const WHOLE: Shard = Object.freeze({ rank: 0, size: 1 })

/** One Hugging Face tensor of a weight: its name and shape, and the slice of it this rank holds. */
export interface WeightPart {
  readonly name: string
  /** The tensor's shape in the checkpoint. */
  readonly shape: readonly number[]
  /** Rows held, [first, count] (a 1-D tensor's elements are its rows). Follow the previous part's in the weight. */
  readonly rows: readonly [number, number]
  /** Columns held of each row, [first, count]; all of them except where a matrix is split by input. */
  readonly cols: readonly [number, number]
}

/** One decoder weight: our name, its shape on this rank, and the Hugging Face tensors it is made of, in row order. */
export interface WeightSpec {
  readonly name: string
  readonly shape: readonly [number] | readonly [number, number]
  readonly parts: readonly WeightPart[]
  /** Scale and offset of the random preset weights (uniform in offset ± scale). */
  readonly init: { readonly scale: number; readonly offset: number }
}

/** A rank's dimensions: heads, key/value heads, MLP width and vocabulary divided by the shard count. */
export interface LocalDims {
  heads: number
  kvHeads: number
  ffn: number
  vocab: number
}

/**
 * The dimensions rank `shard.rank` holds. Throws ArgumentError (argument `tensorParallel`) when the
 * shard count does not divide heads, key/value heads, the MLP width or the vocabulary.
 */
export function localDims(c: ModelConfig, shard: Shard = WHOLE): LocalDims {
  const n = shard.size
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(shard.rank) || shard.rank < 0 || shard.rank >= n)
    throw new ArgumentError('tensorParallel', 'a rank in 0..size-1 of a positive size', `rank ${shard.rank} of ${n}`)
  for (const [field, v] of [
    ['heads', c.heads],
    ['kvHeads', c.kvHeads],
    ['ffn', c.ffn],
    ['vocab', c.vocab],
  ] as const) {
    if (v % n !== 0) throw new ArgumentError('tensorParallel', `a size that divides the model's ${field} (${v})`, n)
  }
  return { heads: c.heads / n, kvHeads: c.kvHeads / n, ffn: c.ffn / n, vocab: c.vocab / n }
}

/** The weights of `c` that `shard` holds, in creation order (the LM head only when not tied to the embedding). */
export function weightLayout(c: ModelConfig, shard: Shard = WHOLE): WeightSpec[] {
  const { hidden: H, headDim: hd, layers } = c
  const d = localDims(c, shard)
  const r = shard.rank
  const unit = (fanIn: number) => Math.sqrt(3 / fanIn)
  const specs: WeightSpec[] = []
  // A part: the tensor's shape, and the rows and columns held (default all).
  type Part = { name: string; shape: number[]; rows?: [number, number]; cols?: [number, number] }
  const add = (name: string, shape: WeightSpec['shape'], parts: Part[], scale: number, offset = 0) => {
    specs.push({
      name,
      shape,
      parts: parts.map((p) => ({ name: p.name, shape: p.shape, rows: p.rows ?? [0, p.shape[0]!], cols: p.cols ?? [0, p.shape[1] ?? 1] })),
      init: { scale, offset },
    })
  }
  // Rows `local` of `total` split by rank: this rank's block.
  const split = (local: number): [number, number] => [r * local, local]
  // Uniform in offset ± scale; projections keep activations near unit scale. The LM head spreads the
  // logits (standard deviation about 4) so greedy choices are rarely near-ties.
  add('embed', [c.vocab, H], [{ name: 'model.embed_tokens.weight', shape: [c.vocab, H] }], 1)
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`
    const qkvParts = (suffix: string, cols: number[]): Part[] => [
      { name: `${p}self_attn.q_proj.${suffix}`, shape: [c.heads * hd, ...cols], rows: split(d.heads * hd) },
      { name: `${p}self_attn.k_proj.${suffix}`, shape: [c.kvHeads * hd, ...cols], rows: split(d.kvHeads * hd) },
      { name: `${p}self_attn.v_proj.${suffix}`, shape: [c.kvHeads * hd, ...cols], rows: split(d.kvHeads * hd) },
    ]
    const qkvRows = (d.heads + 2 * d.kvHeads) * hd
    add(`layers.${l}.attn_norm`, [H], [{ name: `${p}input_layernorm.weight`, shape: [H] }], 0.1, 1)
    add(`layers.${l}.qkv`, [qkvRows, H], qkvParts('weight', [H]), unit(H))
    if (c.qkvBias) add(`layers.${l}.qkv_bias`, [qkvRows], qkvParts('bias', []), 0.5)
    add(
      `layers.${l}.o`,
      [H, d.heads * hd],
      [{ name: `${p}self_attn.o_proj.weight`, shape: [H, c.heads * hd], cols: split(d.heads * hd) }],
      unit(c.heads * hd) / Math.sqrt(layers),
    )
    add(`layers.${l}.mlp_norm`, [H], [{ name: `${p}post_attention_layernorm.weight`, shape: [H] }], 0.1, 1)
    add(
      `layers.${l}.gate_up`,
      [2 * d.ffn, H],
      [
        { name: `${p}mlp.gate_proj.weight`, shape: [c.ffn, H], rows: split(d.ffn) },
        { name: `${p}mlp.up_proj.weight`, shape: [c.ffn, H], rows: split(d.ffn) },
      ],
      unit(H),
    )
    add(`layers.${l}.down`, [H, d.ffn], [{ name: `${p}mlp.down_proj.weight`, shape: [H, c.ffn], cols: split(d.ffn) }], unit(c.ffn) / Math.sqrt(layers))
  }
  add('norm', [H], [{ name: 'model.norm.weight', shape: [H] }], 0.1, 1)
  if (!c.tieEmbeddings) add('lm_head', [d.vocab, H], [{ name: 'lm_head.weight', shape: [c.vocab, H], rows: split(d.vocab) }], 4 * unit(H))
  return specs
}
