/**
 * The `p` quantile (0..1) of `values`: the sample at rank round(p·(n−1)) of the sorted values (nearest rank,
 * so p = 0 is the minimum, p = 1 the maximum, and over 100 samples p = 0.99 is the 99th smallest, not the
 * maximum). NaN when empty. Every percentile this package reports (benchmarks, manager stats) is this one.
 */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (values.length === 0) return Number.NaN
  const s = Float64Array.from(values).sort()
  return s[Math.min(s.length - 1, Math.round(p * (s.length - 1)))]!
}
