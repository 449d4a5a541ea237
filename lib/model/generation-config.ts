/**
 * The generation defaults of a model directory's `generation_config.json` (end-of-sequence ids, which may
 * be a list, and sampling settings). No GPU needed.
 */
import { join } from 'node:path'
import { CheckpointError } from '../errors.js'
import { optionalTokenId, readJsonObject, tokenIdList } from './json-file.js'

/** The generation defaults of a model directory. */
export interface GenerationDefaults {
  /** Token ids that end generation. */
  eosTokenIds: number[]
  /** The begin-of-sequence token, if named. */
  bosTokenId: number | undefined
  /** Sampling defaults the model ships (undefined: greedy). */
  temperature: number | undefined
  topP: number | undefined
  topK: number | undefined
  /** Whether the model samples by default (`do_sample`). */
  doSample: boolean
}

/**
 * The token ids that end generation: config.json's and generation_config.json's together, else the
 * tokenizer's end-of-sequence token.
 */
export function endOfSequenceIds(configIds: readonly number[], defaults: GenerationDefaults, tokenizerEos: number | undefined): Set<number> {
  const eos = new Set([...configIds, ...defaults.eosTokenIds])
  if (eos.size === 0 && tokenizerEos !== undefined) eos.add(tokenizerEos)
  return eos
}

/** Reads `generation_config.json` in `dir` (absent: no defaults); each bad field a CheckpointError naming it. */
export function readGenerationConfig(dir: string): GenerationDefaults {
  const file = join(dir, 'generation_config.json')
  const c = readJsonObject(file, { optional: true })
  if (c === undefined) return { eosTokenIds: [], bosTokenId: undefined, temperature: undefined, topP: undefined, topK: undefined, doSample: false }
  const num = (field: string, ok: (v: number) => boolean, what: string): number | undefined => {
    const v = c[field]
    if (v === undefined || v === null) return undefined
    if (typeof v !== 'number' || !ok(v)) throw new CheckpointError(file, `expected ${what}, got ${JSON.stringify(v)}`, { field })
    return v
  }
  return {
    eosTokenIds: tokenIdList(file, 'eos_token_id', c.eos_token_id),
    bosTokenId: optionalTokenId(file, 'bos_token_id', c.bos_token_id),
    temperature: num('temperature', (v) => v >= 0 && Number.isFinite(v), 'a non-negative number'),
    topP: num('top_p', (v) => v > 0 && v <= 1, 'a number in (0, 1]'),
    topK: num('top_k', (v) => Number.isSafeInteger(v) && v >= 0, 'a non-negative integer'),
    doSample: c.do_sample === true,
  }
}
