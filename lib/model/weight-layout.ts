/**
 * The decoder's weights and how each is made of Hugging Face tensors. Every matrix is [out, in] row-major
 * as transformers stores `nn.Linear` weights (the forward multiplies by its transpose), so a fused weight
 * is its parts' rows back to back: qkv = q_proj; k_proj; v_proj and gate_up = gate_proj; up_proj. Loading
 * uploads each part into its rows; saving writes each part from them.
 */
import type { ModelConfig } from './model-config.js'

/** One Hugging Face tensor of a weight: its name and shape (its rows follow the previous part's). */
export interface WeightPart {
  readonly name: string
  readonly shape: readonly number[]
}

/** One decoder weight: our name, its shape, and the Hugging Face tensors it is made of, in row order. */
export interface WeightSpec {
  readonly name: string
  readonly shape: readonly [number] | readonly [number, number]
  readonly parts: readonly WeightPart[]
  /** Scale and offset of the random preset weights (uniform in offset ± scale). */
  readonly init: { readonly scale: number; readonly offset: number }
}

/** The weights of `c` in creation order (the LM head only when not tied to the embedding). */
export function weightLayout(c: ModelConfig): WeightSpec[] {
  const { hidden: H, ffn: F, vocab: V, heads, kvHeads, headDim: hd, layers } = c
  const unit = (fanIn: number) => Math.sqrt(3 / fanIn)
  const specs: WeightSpec[] = []
  const add = (name: string, shape: WeightSpec['shape'], parts: [string, number][], scale: number, offset = 0) => {
    const cols = shape.length === 2 ? [shape[1]] : []
    specs.push({ name, shape, parts: parts.map(([n, rows]) => ({ name: n, shape: [rows, ...cols] })), init: { scale, offset } })
  }
  // Uniform in offset ± scale; projections keep activations near unit scale. The LM head spreads the
  // logits (standard deviation about 4) so greedy choices are rarely near-ties.
  add('embed', [V, H], [['model.embed_tokens.weight', V]], 1)
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`
    const qkvRows: [string, number][] = [
      [`${p}self_attn.q_proj`, heads * hd],
      [`${p}self_attn.k_proj`, kvHeads * hd],
      [`${p}self_attn.v_proj`, kvHeads * hd],
    ]
    add(`layers.${l}.attn_norm`, [H], [[`${p}input_layernorm.weight`, H]], 0.1, 1)
    add(
      `layers.${l}.qkv`,
      [(heads + 2 * kvHeads) * hd, H],
      qkvRows.map(([n, r]) => [`${n}.weight`, r]),
      unit(H),
    )
    if (c.qkvBias)
      add(
        `layers.${l}.qkv_bias`,
        [(heads + 2 * kvHeads) * hd],
        qkvRows.map(([n, r]) => [`${n}.bias`, r]),
        0.5,
      )
    add(`layers.${l}.o`, [H, heads * hd], [[`${p}self_attn.o_proj.weight`, H]], unit(heads * hd) / Math.sqrt(layers))
    add(`layers.${l}.mlp_norm`, [H], [[`${p}post_attention_layernorm.weight`, H]], 0.1, 1)
    add(
      `layers.${l}.gate_up`,
      [2 * F, H],
      [
        [`${p}mlp.gate_proj.weight`, F],
        [`${p}mlp.up_proj.weight`, F],
      ],
      unit(H),
    )
    add(`layers.${l}.down`, [H, F], [[`${p}mlp.down_proj.weight`, H]], unit(F) / Math.sqrt(layers))
  }
  add('norm', [H], [['model.norm.weight', H]], 0.1, 1)
  if (!c.tieEmbeddings) add('lm_head', [V, H], [['lm_head.weight', V]], 4 * unit(H))
  return specs
}
