/**
 * The decoder's math in float64 on the CPU, rounding to f16 exactly where the GPU (and transformers)
 * rounds: GEMM outputs, the residual adds, both steps of each norm, rotary cos/sin and products, the
 * attention output, the activation and its product, the logits. For checking an f16 {@link DecoderModel}
 * on small models.
 */

import { fromHalf, roundHalf } from '../cuda/half.js'
import { ArgumentError, check } from '../errors.js'
import { type ModelConfig, ropeInvFreq } from './model-config.js'

/** One forward's result: logits [requests x vocab] and the greedy tokens. */
export interface ReferenceOutput {
  logits: Float64Array
  next: Int32Array
}

/** A float64 decoder over given f16 weights, with its own KV cache per slot. */
export class DecoderReference {
  readonly config: ModelConfig
  readonly #w: Map<string, Float64Array>
  /** slot -> layer -> position -> [k | v] rows of kvHeads * hd. */
  readonly #cache = new Map<number, Float64Array[][]>()
  readonly #invFreq: Float32Array

  /** `weights`: each weight's raw f16 bits by name, as {@link DecoderModel.weights} names them. */
  constructor(config: ModelConfig, weights: ReadonlyMap<string, Uint16Array>) {
    this.config = config
    this.#w = new Map([...weights].map(([k, v]) => [k, Float64Array.from(v, fromHalf)]))
    for (const name of ['embed', 'norm', config.tieEmbeddings ? 'embed' : 'lm_head'])
      check(this.#w.has(name), 'weights', `a map with '${name}'`, [...weights.keys()].join(', '))
    this.#invFreq = ropeInvFreq(config)
  }

  /** Runs token rows (each with its position and slot) and returns the logits of the `last` rows. */
  forward(tokens: ArrayLike<number>, positions: ArrayLike<number>, slots: ArrayLike<number>, last: ArrayLike<number>): ReferenceOutput {
    const c = this.config
    const H = c.hidden
    const hd = c.headDim
    const T = tokens.length
    const w = (n: string) => this.#w.get(n)!
    const resid = Array.from({ length: T }, (_, t) => w('embed').slice(tokens[t]! * H, (tokens[t]! + 1) * H))
    let delta: Float64Array[] | undefined
    for (let l = 0; l < c.layers; l++) {
      const x = resid.map((r, t) => this.#addNorm(r, delta?.[t], w(`layers.${l}.attn_norm`)))
      const bias = this.#w.get(`layers.${l}.qkv_bias`)
      const qkv = x.map((r) => matvec(r, w(`layers.${l}.qkv`), (c.heads + 2 * c.kvHeads) * hd, bias))
      for (let t = 0; t < T; t++) this.#ropeStore(qkv[t]!, l, positions[t]!, slots[t]!)
      const attn = qkv.map((r, t) => this.#attend(r, l, positions[t]!, slots[t]!))
      delta = attn.map((r) => matvec(r, w(`layers.${l}.o`), H))
      const x2 = resid.map((r, t) => this.#addNorm(r, delta![t], w(`layers.${l}.mlp_norm`)))
      const act = x2.map((r) => {
        const gu = matvec(r, w(`layers.${l}.gate_up`), 2 * c.ffn)
        return Float64Array.from({ length: c.ffn }, (_, i) => roundHalf(roundHalf(gu[i]! / (1 + Math.exp(-gu[i]!))) * gu[c.ffn + i]!))
      })
      delta = act.map((r) => matvec(r, w(`layers.${l}.down`), H))
    }
    const R = last.length
    const logits = new Float64Array(R * c.vocab)
    const next = new Int32Array(R)
    for (let r = 0; r < R; r++) {
      const row = last[r]!
      const x = this.#addNorm(resid[row]!.slice(), delta![row], w('norm'))
      const lg = matvec(x, w(c.tieEmbeddings ? 'embed' : 'lm_head'), c.vocab)
      logits.set(lg, r * c.vocab)
      let best = 0
      for (let i = 1; i < c.vocab; i++) if (lg[i]! > lg[best]!) best = i
      next[r] = best
    }
    return { logits, next }
  }

  /** resid = round(resid + delta) (when given), in place; returns round(round(norm) * w). */
  #addNorm(resid: Float64Array, delta: Float64Array | undefined, w: Float64Array): Float64Array {
    if (delta !== undefined) for (let i = 0; i < resid.length; i++) resid[i] = roundHalf(resid[i]! + delta[i]!)
    let ss = 0
    for (const v of resid) ss += v * v
    const inv = 1 / Math.sqrt(ss / resid.length + this.config.eps)
    return Float64Array.from(resid, (v, i) => roundHalf(roundHalf(v * inv) * w[i]!))
  }

  #ropeStore(qkv: Float64Array, layer: number, pos: number, slot: number): void {
    const c = this.config
    const hd = c.headDim
    const half = hd / 2
    const r = roundHalf
    for (let head = 0; head < c.heads + c.kvHeads; head++) {
      for (let i = 0; i < half; i++) {
        // The angle as the GPU computes it, in f32.
        const ang = Math.fround(pos * this.#invFreq[i]!)
        const cos = r(Math.cos(ang))
        const sin = r(Math.sin(ang))
        const a = qkv[head * hd + i]!
        const b = qkv[head * hd + i + half]!
        qkv[head * hd + i] = r(r(a * cos) - r(b * sin))
        qkv[head * hd + i + half] = r(r(b * cos) + r(a * sin))
      }
    }
    let layers = this.#cache.get(slot)
    if (layers === undefined) {
      layers = Array.from({ length: c.layers }, () => [])
      this.#cache.set(slot, layers)
    }
    layers[layer]![pos] = qkv.slice(c.heads * hd)
  }

  #attend(qkv: Float64Array, layer: number, pos: number, slot: number): Float64Array {
    const c = this.config
    const hd = c.headDim
    const kv = this.#cache.get(slot)![layer]!
    for (let j = 0; j <= pos; j++)
      if (kv[j] === undefined) throw new ArgumentError('pos', `a position of slot ${slot} whose earlier positions were all run (position ${j} never was)`, pos)
    const out = new Float64Array(c.heads * hd)
    const group = c.heads / c.kvHeads
    for (let h = 0; h < c.heads; h++) {
      const k0 = Math.floor(h / group) * hd
      const v0 = c.kvHeads * hd + k0
      const scores = new Float64Array(pos + 1)
      for (let j = 0; j <= pos; j++) {
        let dot = 0
        for (let d = 0; d < hd; d++) dot += qkv[h * hd + d]! * kv[j]![k0 + d]!
        scores[j] = dot / Math.sqrt(hd)
      }
      const mx = Math.max(...scores)
      let sum = 0
      for (let j = 0; j <= pos; j++) sum += scores[j] = Math.exp(scores[j]! - mx)
      for (let d = 0; d < hd; d++) {
        let a = 0
        for (let j = 0; j <= pos; j++) a += scores[j]! * kv[j]![v0 + d]!
        out[h * hd + d] = roundHalf(a / sum)
      }
    }
    return out
  }
}

/** W [n x k] (row-major, as transformers stores it) times x [k], plus `bias`; each output rounded to f16. */
function matvec(x: Float64Array, W: Float64Array, n: number, bias?: Float64Array): Float64Array {
  const k = x.length
  const out = new Float64Array(n)
  for (let j = 0; j < n; j++) {
    let acc = bias?.[j] ?? 0
    const row = j * k
    for (let i = 0; i < k; i++) acc += x[i]! * W[row + i]!
    out[j] = roundHalf(acc)
  }
  return out
}
