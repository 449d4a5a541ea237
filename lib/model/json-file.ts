/** Reading the JSON files of a model directory, with errors that name the file and field. */
import { readFileSync } from 'node:fs'
import { CheckpointError } from '../errors.js'

/**
 * The JSON object in `file`; a CheckpointError when it cannot be read, does not parse or is not an object.
 * With `optional`, a missing file is undefined.
 */
export function readJsonObject(file: string, options: { optional: true }): Record<string, unknown> | undefined
export function readJsonObject(file: string, options?: { optional?: false }): Record<string, unknown>
export function readJsonObject(file: string, options: { optional?: boolean } = {}): Record<string, unknown> | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (options.optional === true && code === 'ENOENT') return undefined
    throw new CheckpointError(file, `cannot read it (${code ?? String(e)})`, { cause: e })
  }
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch (e) {
    throw new CheckpointError(file, `not valid JSON (${e instanceof Error ? e.message : String(e)})`, { cause: e })
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new CheckpointError(file, 'not a JSON object')
  return v as Record<string, unknown>
}

/** `eos_token_id`-style field `field` of `file`: a token id or a list of them (absent: none). */
export function tokenIdList(file: string, field: string, v: unknown): number[] {
  const ids = v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]
  if (!ids.every((t) => Number.isSafeInteger(t) && t >= 0))
    throw new CheckpointError(file, `expected a token id or a list of them, got ${JSON.stringify(v)}`, { field })
  return ids as number[]
}

/** A single optional token id, e.g. `bos_token_id`. */
export function optionalTokenId(file: string, field: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined
  if (!(Number.isSafeInteger(v) && (v as number) >= 0)) throw new CheckpointError(file, `expected a token id, got ${JSON.stringify(v)}`, { field })
  return v as number
}
