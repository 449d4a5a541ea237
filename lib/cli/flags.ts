/**
 * Flag parsing for the `cudagraph` command: node:util's parseArgs with what it lacks, strict numbers
 * (`''`, `' '`, `1.5` and `1,,2` are refused, never read as 0) and "did you mean" for a misspelt flag.
 * Every mistake is a {@link UsageError} whose message names the flag, what it got and what is allowed.
 */
import { accessSync, constants, existsSync, mkdirSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { UsageError } from './errors.js'

/** The flags of one command: each a string or a boolean. */
export type FlagSpec = Record<string, { type: 'string' | 'boolean' }>

/** Edit distance of `a` and `b` (insertions, deletions, substitutions). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    prev = row
  }
  return prev[b.length]!
}

/** `, did you mean 'x'?` for the closest of `known` to `got` (within a third of its length), else ''. */
export function suggest(got: string, known: readonly string[]): string {
  let best: string | undefined
  let bestD = Math.max(2, Math.floor(got.length / 3)) + 1
  for (const k of known) {
    const d = distance(got, k)
    if (d < bestD) {
      best = k
      bestD = d
    }
  }
  return best === undefined ? '' : `; did you mean '${best}'?`
}

/** Parses `args` against `spec` (no positionals); unknown flags get a suggestion. */
export function parseFlags(args: readonly string[], spec: FlagSpec): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: [...args], strict: true, allowPositionals: false, options: spec }).values
  } catch (e) {
    const code = (e as { code?: string }).code
    const flag = args.find((a) => a.startsWith('-') && !Object.hasOwn(spec, a.replace(/^--?/, '').split('=')[0]!))
    const known = Object.keys(spec).map((k) => `--${k}`)
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && flag !== undefined) {
      throw new UsageError(`unknown flag '${flag}'${suggest(flag.split('=')[0]!, known)} (flags: ${known.join(' ')})`)
    }
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
      const extra = args.find((a) => !a.startsWith('-'))
      throw new UsageError(`unexpected argument '${extra}': every value follows its flag (flags: ${known.join(' ')})`)
    }
    throw new UsageError(e instanceof Error ? e.message.split('\n')[0]! : String(e))
  }
}

const INTEGER = /^-?\d+$/

/** Flag `--flag`'s integer value in lo..hi, or `dflt` when it was not given. */
export function int(flag: string, v: string | undefined, dflt: number, lo: number, hi: number): number {
  if (v === undefined) return dflt
  const n = INTEGER.test(v) ? Number(v) : Number.NaN
  if (!(Number.isSafeInteger(n) && n >= lo && n <= hi)) throw new UsageError(`--${flag}: expected an integer in ${lo}..${hi}, got '${v}'`)
  return n
}

/** Flag `--flag`'s comma-separated integers, each in lo..hi, sorted and without repeats. */
export function intList(flag: string, v: string, lo: number, hi: number): number[] {
  const parts = v.split(',').map((s) => s.trim())
  const out = parts.map((s) => (INTEGER.test(s) ? Number(s) : Number.NaN))
  if (out.some((n) => !(Number.isSafeInteger(n) && n >= lo && n <= hi)))
    throw new UsageError(`--${flag}: expected comma-separated integers in ${lo}..${hi}, got '${v}'`)
  return [...new Set(out)].sort((a, b) => a - b)
}

/** Flag `--flag`'s value, one of `allowed`, or `dflt`. */
export function oneOf<T extends string>(flag: string, v: string | boolean | undefined, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v))
    throw new UsageError(`--${flag}: expected one of ${allowed.join(', ')}, got '${String(v)}'${suggest(String(v), allowed)}`)
  return v as T
}

/**
 * Makes `--flag`'s directory (and its parents) and checks it can be written, before any work starts: a
 * benchmark must not run for minutes and then fail to save its results.
 */
export function writableDir(flag: string, dir: string): void {
  try {
    // One level at a time from the nearest existing folder (a recursive mkdir can spin on /proc).
    const missing: string[] = []
    for (let d = resolve(dir); !existsSync(d); d = dirname(d)) missing.unshift(d)
    for (const d of missing) mkdirSync(d)
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error(), { code: 'ENOTDIR' })
    accessSync(dir, constants.W_OK)
  } catch (e) {
    throw new UsageError(`--${flag}: cannot write to '${dir}' (${(e as NodeJS.ErrnoException).code ?? String(e)})`)
  }
}

/** Checks that a Unix socket can be made at `--flag`'s path: its folder exists and can be written. */
export function socketPathUsable(flag: string, path: string): void {
  const dir = dirname(resolve(path))
  try {
    if (!statSync(dir).isDirectory()) throw Object.assign(new Error(), { code: 'ENOTDIR' })
    accessSync(dir, constants.W_OK)
  } catch (e) {
    throw new UsageError(`--${flag}: cannot create a socket in '${dir}' (${(e as NodeJS.ErrnoException).code ?? String(e)})`)
  }
  // Unix socket paths are limited to 107 bytes on Linux.
  if (Buffer.byteLength(path) > 107) throw new UsageError(`--${flag}: a Unix socket path of at most 107 bytes, got ${Buffer.byteLength(path)}`)
}

/** A required non-empty string flag. */
export function required(flag: string, v: string | boolean | undefined, what: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`--${flag}: ${what} is required`)
  return v
}

/** Flag `--flag`'s number in lo..hi, or `dflt` when it was not given. */
export function num(flag: string, v: string | undefined, dflt: number, lo: number, hi: number): number {
  if (v === undefined) return dflt
  const n = /^-?(\d+\.?\d*|\.\d+)(e-?\d+)?$/i.test(v.trim()) ? Number(v) : Number.NaN
  if (!(n >= lo && n <= hi)) throw new UsageError(`--${flag}: expected a number in ${lo}..${hi}, got '${v}'`)
  return n
}

/** `--flag`'s model: a preset name, or a Hugging Face model directory (one with a config.json). */
export function modelFlag<T extends string>(flag: string, v: string | boolean | undefined, presets: readonly T[], dflt: T): T | { dir: string } {
  if (v === undefined) return dflt
  if (typeof v === 'string' && (presets as readonly string[]).includes(v)) return v as T
  if (typeof v === 'string' && existsSync(join(v, 'config.json'))) return { dir: v }
  throw new UsageError(
    `--${flag}: expected ${presets.join(', ')} or a Hugging Face model directory (with config.json), got '${String(v)}'${suggest(String(v), presets)}`,
  )
}

/** `--flag`'s Hugging Face model directory (required). */
export function modelDir(flag: string, v: string | boolean | undefined): string {
  const dir = required(flag, v, 'a Hugging Face model directory')
  if (!existsSync(join(dir, 'config.json'))) throw new UsageError(`--${flag}: '${dir}' is not a Hugging Face model directory (no config.json)`)
  return dir
}
