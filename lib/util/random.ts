/**
 * The one seeded generator of the package (mulberry32): the benchmarks' prompts, the decoder's random
 * weights and the tests' inputs all come from it, so every run, process and peer sees the same numbers.
 */

/** A generator of uniform floats in [0, 1) from `seed` (any integer; taken mod 2^32). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = Math.imul(s ^ (s >>> 15), s | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** A seeded stream of token ids below `vocab`: each call returns the next `n`. */
export function tokenSource(seed: number, vocab: number): (n: number) => Int32Array {
  const next = seededRandom(seed)
  return (n) => Int32Array.from({ length: n }, () => Math.floor(next() * vocab))
}
