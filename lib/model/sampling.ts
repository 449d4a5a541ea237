/**
 * How requests pick their next token, as the decoder's step reads it from device memory: one row of
 * [temperature, top-p, top-k] and one seed per request, so one captured graph serves greedy and sampled
 * requests of any settings side by side. No GPU needed.
 */
import { check } from '../errors.js'
import { checkSampling, type SamplingSettings } from '../util/text-request.js'

/** One request's sampling settings. */
export interface SamplingParams {
  /** Softmax temperature; 0 (default) is greedy. */
  temperature?: number | undefined
  /** Nucleus cut: keep the fewest most likely tokens whose probability reaches it, in (0, 1] (default 1: off). */
  topP?: number | undefined
  /** Keep only the k most likely tokens (default 0: off). */
  topK?: number | undefined
  /** Seed of the draws, 0..2^32-1 (default 0): the same seed, prompt and settings give the same tokens. */
  seed?: number | undefined
}

/** A step's sampling rows: `params` holds [temperature, topP, topK] per request, `seeds` one seed each. */
export interface SamplingRows {
  readonly params: Float32Array
  readonly seeds: Uint32Array
}

/** Rows for `n` requests, all greedy. */
export function samplingRows(n: number): SamplingRows {
  const params = new Float32Array(3 * n)
  for (let i = 0; i < n; i++) params[3 * i + 1] = 1
  return { params, seeds: new Uint32Array(n) }
}

/** Checks `p` (each field named in the error) and returns it with every default filled in. */
export function samplingParams(p: SamplingParams = {}): SamplingSettings {
  check(p !== null && typeof p === 'object', 'sampling', 'an object of temperature, topP, topK, seed', p)
  return checkSampling({ temperature: p.temperature ?? 0, topP: p.topP ?? 1, topK: p.topK ?? 0, seed: p.seed ?? 0 })
}

/** Writes request `i`'s settings (checked) into `rows`. */
export function setSampling(rows: SamplingRows, i: number, p: SamplingParams): void {
  const s = samplingParams(p)
  rows.params[3 * i] = s.temperature
  rows.params[3 * i + 1] = s.topP
  rows.params[3 * i + 2] = s.topK
  rows.seeds[i] = s.seed
}
