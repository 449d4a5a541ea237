/**
 * Graph configuration: the mode, which sizes get graphs, and the budgets of the graph cache.
 * `GraphConfig.from` validates a plain object and fills defaults; `toJSON` gives a plain object back.
 */
import { ConfigError } from '../errors.js'
import { DEFAULT_MAX_CAPTURE_SIZE, defaultCaptureSizes, MAX_CAPTURE_SIZE, paddingTable, roundSizesTo } from './capture-sizes.js'
import { MAX_KEY_LORAS, MAX_KEY_REQS, MAX_KEY_TOKENS } from './descriptor.js'
import { decodeMode, type GraphMode, parseGraphMode } from './graph-mode.js'

/**
 * The JSON form of a {@link GraphConfig}; every field optional in {@link GraphConfig.from}. Each field has
 * a range (below); a value outside it is a ConfigError naming the field, never a later failure.
 */
export interface GraphConfigInit {
  /** Graph mode (default FULL_AND_PIECEWISE). */
  mode?: GraphMode
  /** Batch sizes to capture, tokens, each 1..65536; default: the ladder up to maxCaptureSize. */
  captureSizes?: readonly number[]
  /** Largest size to capture, tokens, 1..65536; default min(maxNumSeqs × (1 + numSpecTokens) × 2, 512), capped by maxNumBatchedTokens. */
  maxCaptureSize?: number
  /** Most requests in a batch, 1..65534 (default 256). */
  maxNumSeqs?: number
  /** Speculative tokens per request and step, 0..64 (default 0). */
  numSpecTokens?: number
  /** Most tokens in a batch, 1..16777215 (default 8192). */
  maxNumBatchedTokens?: number
  /** Eager runs before each capture, 0..100 (default 1). */
  numWarmups?: number
  /** Capture separate graphs per active-LoRA count (default true). */
  specializeLora?: boolean
  /** LoRA adapters served at once, 0..255; 0 = no LoRA (default 0). */
  maxLoras?: number
  /** Most graphs kept, 1..1000000; null = no limit (default null). */
  maxGraphs?: number | null
  /** Most graph memory kept, bytes, 1..2^53−1; null = no limit (default null). */
  maxMemoryBytes?: number | null
  /** Evict graphs unused this long, ms, 1..2147483647; null = never (default null). */
  idleEvictMs?: number | null
}

/** The plain, fully specified form of a config (what {@link GraphConfig.toJSON} returns). */
export interface GraphConfigJSON {
  mode: GraphMode
  captureSizes: number[]
  maxCaptureSize: number
  maxNumSeqs: number
  numSpecTokens: number
  maxNumBatchedTokens: number
  numWarmups: number
  specializeLora: boolean
  maxLoras: number
  maxGraphs: number | null
  maxMemoryBytes: number | null
  idleEvictMs: number | null
}

const FIELDS: readonly (keyof GraphConfigJSON)[] = [
  'mode',
  'captureSizes',
  'maxCaptureSize',
  'maxNumSeqs',
  'numSpecTokens',
  'maxNumBatchedTokens',
  'numWarmups',
  'specializeLora',
  'maxLoras',
  'maxGraphs',
  'maxMemoryBytes',
  'idleEvictMs',
]

function int(path: string, v: unknown, min: number, max: number, fallback: number): number {
  if (v === undefined) return fallback
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw new ConfigError(path, v, `an integer in ${min}..${max}`)
  return v
}

function optInt(path: string, v: unknown, min: number, max: number): number | null {
  if (v === undefined || v === null) return null
  return int(path, v, min, max, 0)
}

function bool(path: string, v: unknown, fallback: boolean): boolean {
  if (v === undefined) return fallback
  if (typeof v !== 'boolean') throw new ConfigError(path, v, 'a boolean')
  return v
}

/** A validated, immutable graph configuration with its padding table. */
export class GraphConfig {
  readonly mode: GraphMode
  /** Sorted ascending; its last element is maxCaptureSize. Empty when mode is NONE. */
  readonly captureSizes: readonly number[]
  readonly maxCaptureSize: number
  readonly maxNumSeqs: number
  readonly numSpecTokens: number
  readonly maxNumBatchedTokens: number
  readonly numWarmups: number
  readonly specializeLora: boolean
  readonly maxLoras: number
  readonly maxGraphs: number | null
  readonly maxMemoryBytes: number | null
  readonly idleEvictMs: number | null
  readonly #padding: Int32Array

  private constructor(c: GraphConfigJSON) {
    this.mode = c.mode
    this.captureSizes = Object.freeze([...c.captureSizes])
    this.maxCaptureSize = c.maxCaptureSize
    this.maxNumSeqs = c.maxNumSeqs
    this.numSpecTokens = c.numSpecTokens
    this.maxNumBatchedTokens = c.maxNumBatchedTokens
    this.numWarmups = c.numWarmups
    this.specializeLora = c.specializeLora
    this.maxLoras = c.maxLoras
    this.maxGraphs = c.maxGraphs
    this.maxMemoryBytes = c.maxMemoryBytes
    this.idleEvictMs = c.idleEvictMs
    this.#padding = paddingTable(this.captureSizes)
    Object.freeze(this)
  }

  /**
   * Validates `init` and fills defaults. Any invalid or unknown field is a ConfigError naming it, with
   * the value and what was expected.
   */
  static from(init: GraphConfigInit = {}): GraphConfig {
    if (init === null || typeof init !== 'object' || Array.isArray(init)) throw new ConfigError('(config)', init, 'an object')
    for (const k of Object.keys(init)) {
      if (!(FIELDS as readonly string[]).includes(k)) throw new ConfigError(k, (init as Record<string, unknown>)[k], `a known field (${FIELDS.join(', ')})`)
    }
    const mode = init.mode === undefined ? 'FULL_AND_PIECEWISE' : parseGraphMode(init.mode)
    const maxNumSeqs = int('maxNumSeqs', init.maxNumSeqs, 1, MAX_KEY_REQS, 256)
    const numSpecTokens = int('numSpecTokens', init.numSpecTokens, 0, 64, 0)
    const maxNumBatchedTokens = int('maxNumBatchedTokens', init.maxNumBatchedTokens, 1, MAX_KEY_TOKENS, 8192)
    const base = {
      mode,
      maxNumSeqs,
      numSpecTokens,
      maxNumBatchedTokens,
      numWarmups: int('numWarmups', init.numWarmups, 0, 100, 1),
      specializeLora: bool('specializeLora', init.specializeLora, true),
      maxLoras: int('maxLoras', init.maxLoras, 0, MAX_KEY_LORAS, 0),
      maxGraphs: optInt('maxGraphs', init.maxGraphs, 1, 1_000_000),
      maxMemoryBytes: optInt('maxMemoryBytes', init.maxMemoryBytes, 1, Number.MAX_SAFE_INTEGER),
      idleEvictMs: optInt('idleEvictMs', init.idleEvictMs, 1, 0x7fffffff),
    }
    if (mode === 'NONE') return new GraphConfig({ ...base, captureSizes: [], maxCaptureSize: 0 })

    let sizes: number[]
    let max: number
    const userMax = init.maxCaptureSize === undefined ? undefined : int('maxCaptureSize', init.maxCaptureSize, 1, MAX_CAPTURE_SIZE, 0)
    if (init.captureSizes !== undefined) {
      if (!Array.isArray(init.captureSizes)) throw new ConfigError('captureSizes', init.captureSizes, 'an array of positive integers')
      for (const [i, s] of init.captureSizes.entries()) int(`captureSizes[${i}]`, s, 1, MAX_CAPTURE_SIZE, 0)
      sizes = [...new Set(init.captureSizes)].filter((s) => s <= maxNumBatchedTokens).sort((a, b) => a - b)
      if (sizes.length === 0) throw new ConfigError('captureSizes', init.captureSizes, `at least one size <= maxNumBatchedTokens (${maxNumBatchedTokens})`)
      max = sizes[sizes.length - 1]!
      if (userMax !== undefined && userMax !== max) {
        throw new ConfigError('maxCaptureSize', userMax, `the largest capture size (${max}) or no value when captureSizes is given`)
      }
    } else {
      max = Math.min(userMax ?? Math.min(maxNumSeqs * (1 + numSpecTokens) * 2, DEFAULT_MAX_CAPTURE_SIZE), maxNumBatchedTokens)
      sizes = defaultCaptureSizes(max)
    }
    if (numSpecTokens > 0 && decodeMode(mode) === 'FULL') {
      // A uniform decode batch has (1 + numSpecTokens) tokens per request: only multiples can match.
      sizes = roundSizesTo(sizes, 1 + numSpecTokens, max)
      if (sizes.length === 0) throw new ConfigError('maxCaptureSize', max, `at least ${1 + numSpecTokens} (1 + numSpecTokens) with FULL decode graphs`)
    }
    return new GraphConfig({ ...base, captureSizes: sizes, maxCaptureSize: sizes[sizes.length - 1]! })
  }

  /**
   * This config for a step of at most `maxTokens` token rows: capture sizes above it dropped (a batch
   * must never pad past the step's buffers); NONE when no size is left. Itself when nothing changes.
   */
  cappedTo(maxTokens: number): GraphConfig {
    if (this.maxCaptureSize <= maxTokens) return this
    const sizes = this.captureSizes.filter((s) => s <= maxTokens)
    const { maxCaptureSize: _max, captureSizes: _sizes, ...rest } = this.toJSON()
    return GraphConfig.from(sizes.length === 0 ? { ...rest, mode: 'NONE' } : { ...rest, captureSizes: sizes })
  }

  /** A config that never uses graphs. */
  static disabled(): GraphConfig {
    return GraphConfig.from({ mode: 'NONE' })
  }

  /** Whether a batch of `numTokens` can run as a graph (1..maxCaptureSize, mode not NONE). */
  shouldUseGraph(numTokens: number): boolean {
    return numTokens >= 1 && numTokens <= this.maxCaptureSize
  }

  /**
   * The capture size a batch of `numTokens` runs as: itself when it is one, else the next one up; 0 for
   * 0; `numTokens` unchanged above maxCaptureSize (such batches run eagerly).
   */
  paddedSize(numTokens: number): number {
    return numTokens <= this.maxCaptureSize ? this.#padding[numTokens]! : numTokens
  }

  /** The plain form; `GraphConfig.from(c.toJSON())` gives an equal config. */
  toJSON(): GraphConfigJSON {
    return {
      mode: this.mode,
      captureSizes: [...this.captureSizes],
      maxCaptureSize: this.maxCaptureSize,
      maxNumSeqs: this.maxNumSeqs,
      numSpecTokens: this.numSpecTokens,
      maxNumBatchedTokens: this.maxNumBatchedTokens,
      numWarmups: this.numWarmups,
      specializeLora: this.specializeLora,
      maxLoras: this.maxLoras,
      maxGraphs: this.maxGraphs,
      maxMemoryBytes: this.maxMemoryBytes,
      idleEvictMs: this.idleEvictMs,
    }
  }
}
