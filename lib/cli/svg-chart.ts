/** A log-log line chart as a standalone SVG (opens in a browser): benchmark results people would rather see. */

/** One line: a name for the legend, a colour and its points (x, y), both positive. */
export interface ChartSeries {
  name: string
  color: string
  points: readonly (readonly [number, number])[]
}

/** A series from table rows: `y(row)` at `x(row)`; rows without a number (undefined, or null from JSON) are left out. */
export function seriesOf<R>(name: string, color: string, rows: readonly R[], x: (r: R) => number, y: (r: R) => number | undefined): ChartSeries {
  const points: (readonly [number, number])[] = []
  for (const r of rows) {
    const v = y(r)
    if (typeof v === 'number') points.push([x(r), v])
  }
  return { name, color, points }
}

/** What to draw; x is spaced by log2 (batch sizes), y by log10 (times). */
export interface ChartSpec {
  title: string
  xLabel: string
  /** Unit of y for tooltips, e.g. `µs`. */
  yUnit: string
  series: readonly ChartSeries[]
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')

/** The SVG text of `spec`. Series without points get a legend entry only. */
export function lineChartSvg(spec: ChartSpec): string {
  const W = 760
  const left = 70
  const top = 40
  const plotW = W - left - 30
  const plotH = 300
  const H = top + plotH + 60 + Math.ceil(spec.series.length / 2) * 18
  const pts = spec.series.flatMap((s) => s.points).filter(([x, y]) => x > 0 && y > 0)
  const ys = pts.map((p) => p[1])
  const xs = [...new Set(pts.map((p) => p[0]))].sort((a, b) => a - b)
  // The decades the data spans (µs figures sit in 100..10000: no empty decades below them).
  const lo = ys.length > 0 ? Math.floor(Math.log10(Math.min(...ys))) : 0
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(ys.length > 0 ? Math.max(...ys) : 10)))
  const xl = Math.log2(Math.min(...xs, 1))
  const xh = Math.log2(Math.max(...xs, 2))
  const x = (v: number) => left + ((Math.log2(v) - xl) / (xh - xl || 1)) * plotW
  const y = (v: number) => top + plotH - ((Math.log10(v) - lo) / (hi - lo)) * plotH
  let svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`
  svg += `<rect width="${W}" height="${H}" fill="white"/><text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(spec.title)}</text>`
  for (let e = lo; e <= hi; e++) {
    svg += `<line x1="${left}" x2="${left + plotW}" y1="${y(10 ** e)}" y2="${y(10 ** e)}" stroke="#ddd"/><text x="${left - 6}" y="${y(10 ** e) + 4}" text-anchor="end">${10 ** e}</text>`
  }
  for (const v of xs) svg += `<text x="${x(v)}" y="${top + plotH + 16}" text-anchor="middle">${v}</text>`
  svg += `<text x="${left + plotW / 2}" y="${top + plotH + 34}" text-anchor="middle">${esc(spec.xLabel)}</text>`
  spec.series.forEach((s, i) => {
    const ok = s.points.filter(([a, b]) => a > 0 && b > 0)
    if (ok.length > 0)
      svg += `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${ok.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(' ')}"/>`
    for (const [a, b] of ok)
      svg += `<circle cx="${x(a).toFixed(1)}" cy="${y(b).toFixed(1)}" r="3" fill="${s.color}"><title>${esc(s.name)} ${a}: ${b.toFixed(1)} ${esc(spec.yUnit)}</title></circle>`
    const ly = top + plotH + 50 + Math.floor(i / 2) * 18
    svg += `<rect x="${left + (i % 2) * 300}" y="${ly - 10}" width="12" height="12" fill="${s.color}"/><text x="${left + (i % 2) * 300 + 18}" y="${ly}">${esc(s.name)}</text>`
  })
  return `${svg}</svg>\n`
}
