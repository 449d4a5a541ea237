/**
 * Capture sizes and padding: which batch sizes get a graph, and which graph a batch of any size pads to.
 * Defaults follow vLLM's `cudagraph_capture_sizes`.
 */
import { ArgumentError } from '../errors.js'

/** Largest default capture size, tokens. */
export const DEFAULT_MAX_CAPTURE_SIZE = 512

/**
 * Largest capture size a config accepts, tokens: every size up to it gets a padding-table entry, and a
 * graph for more tokens than this is a prefill far past what graphs are for.
 */
export const MAX_CAPTURE_SIZE = 1 << 16

/**
 * The default ladder up to `max`: 1, 2, 4, then every 8 below 256, then every 16 from 256 up to `max`.
 */
export function defaultCaptureSizes(max: number): number[] {
  const sizes = [1, 2, 4].filter((s) => s <= max)
  for (let s = 8; s < Math.min(max + 1, 256); s += 8) sizes.push(s)
  for (let s = 256; s <= max; s += 16) sizes.push(s)
  return sizes
}

/**
 * Sizes rounded up to multiples of `multiple` (a uniform decode batch of k-token queries has a multiple
 * of k tokens), de-duplicated, sorted, and kept at or below `max` rounded down to a multiple.
 */
export function roundSizesTo(sizes: readonly number[], multiple: number, max: number): number[] {
  const cap = Math.floor(max / multiple) * multiple
  const out = new Set<number>()
  for (const s of sizes) {
    const r = Math.ceil(s / multiple) * multiple
    if (r <= cap) out.add(r)
  }
  return [...out].sort((a, b) => a - b)
}

/**
 * Maps every batch size 0..max to the capture size it runs as: a capture size maps to itself, any other
 * size to the next capture size up, 0 to 0. `sizes` must be sorted ascending with its last element `max`.
 */
export function paddingTable(sizes: readonly number[]): Int32Array {
  const max = sizes.length ? sizes[sizes.length - 1]! : 0
  const table = new Int32Array(max + 1)
  let next = 0
  for (let n = 1; n <= max; n++) {
    while (sizes[next]! < n) next++
    table[n] = sizes[next]!
  }
  return table
}

/** The smallest capture size at or above `n`, or undefined when `n` exceeds them all. `sizes` sorted ascending. */
export function findClosestSize(sizes: readonly number[], n: number): number | undefined {
  let lo = 0
  let hi = sizes.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (sizes[mid]! < n) lo = mid + 1
    else hi = mid
  }
  return sizes[lo]
}

function positiveInt(name: string, v: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(v) || v < 1 || v > max) throw new ArgumentError(name, `an integer in 1..${max}`, v)
}

/**
 * Pads `size` the way the default ladder does, without a table: sizes below `granularity` to the next
 * power of two, others up to a multiple of `granularity`. 0 stays 0.
 */
export function padForGraph(size: number, granularity = 8): number {
  positiveInt('granularity', granularity)
  if (!Number.isSafeInteger(size) || size < 0) throw new ArgumentError('size', 'a non-negative integer', size)
  if (size === 0) return 0
  if (size < granularity) {
    const p = 2 ** Math.ceil(Math.log2(size))
    return Math.min(p, granularity)
  }
  return Math.ceil(size / granularity) * granularity
}

/** A (tokens, requests) pair to capture. */
export interface WarmupSize {
  numTokens: number
  numReqs: number
}

/**
 * Sizes to warm up, largest first: every power of two up to `maxTokens`, every multiple of `granularity`
 * up to it, and `maxTokens` itself; each with `min(numTokens, maxReqs)` requests.
 */
export function warmupSizes(maxTokens: number, maxReqs: number, granularity = 8): WarmupSize[] {
  positiveInt('maxTokens', maxTokens, MAX_CAPTURE_SIZE)
  positiveInt('maxReqs', maxReqs)
  positiveInt('granularity', granularity)
  const tokens = new Set<number>([maxTokens])
  for (let p = 1; p <= maxTokens; p *= 2) tokens.add(p)
  for (let g = granularity; g <= maxTokens; g += granularity) tokens.add(g)
  return [...tokens].sort((a, b) => b - a).map((numTokens) => ({ numTokens, numReqs: Math.min(numTokens, maxReqs) }))
}
