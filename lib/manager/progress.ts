/** A one-line progress bar for long work (graph warm-up, benchmarks): redrawn in place on a TTY only. */

/** Where progress goes: a writable with an optional `isTTY` (process.stderr by default). */
export interface ProgressSink {
  write(s: string): unknown
  isTTY?: boolean
  columns?: number
}

/** Renders `[#####.....] done/total label`. */
export function progressLine(done: number, total: number, label: string, width = 24): string {
  const filled = total > 0 ? Math.round((width * done) / total) : width
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${label}`
}

/** A progress bar; `enabled: false` or a sink that is not a TTY draws nothing. */
export class Progress {
  readonly #sink: ProgressSink
  readonly #total: number
  readonly #title: string
  readonly #draw: boolean
  #done = 0

  constructor(title: string, total: number, options: { enabled?: boolean; sink?: ProgressSink } = {}) {
    this.#sink = options.sink ?? process.stderr
    this.#total = total
    this.#title = title
    this.#draw = (options.enabled ?? true) && this.#sink.isTTY === true
  }

  /** Advances by one, showing `label` (what was just done). */
  tick(label: string): void {
    this.#done++
    if (!this.#draw) return
    const line = `${this.#title} ${progressLine(this.#done, this.#total, label)}`
    const cols = this.#sink.columns ?? 100
    this.#sink.write(`\r${line.slice(0, cols - 1).padEnd(cols - 1)}`)
  }

  /** Clears the bar and writes `summary` on its own line (also when not a TTY). */
  finish(summary: string): void {
    if (this.#draw) this.#sink.write('\r\x1b[2K')
    this.#sink.write(`${summary}\n`)
  }
}
