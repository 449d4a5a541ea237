/** IEEE half-precision (f16) on the host: the raw 16 bits a `Uint16Array` holds for an f16 buffer. */

function roundEven(x: number): number {
  const f = Math.floor(x)
  const d = x - f
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f
}

/** The f16 bits nearest to `v` (round to nearest even; overflow to infinity, NaN to a quiet NaN). */
export function toHalf(v: number): number {
  if (Number.isNaN(v)) return 0x7e00
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0
  const a = Math.abs(v)
  if (a >= 65520) return sign | 0x7c00
  if (a < 2 ** -14) return sign | roundEven(a / 2 ** -24)
  let e = Math.floor(Math.log2(a))
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  // A mantissa that rounds up to 1024 carries into the exponent, as it should.
  return sign | (((e + 15) << 10) + roundEven((a / 2 ** e - 1) * 1024))
}

/** The number f16 bits `h` stand for. */
export function fromHalf(h: number): number {
  const s = h & 0x8000 ? -1 : 1
  const e = (h >>> 10) & 0x1f
  const m = h & 0x3ff
  if (e === 0) return s * m * 2 ** -24
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY
  return s * (1 + m / 1024) * 2 ** (e - 15)
}

/** `v` rounded to the nearest f16 value. */
export function roundHalf(v: number): number {
  return fromHalf(toHalf(v))
}
