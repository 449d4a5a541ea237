/** A checkpoint load's progress as the package's progress bar (manager/progress.ts), on stderr. */
import { Progress } from '../manager/progress.js'
import type { LoadProgress, LoadStats } from '../model/checkpoint.js'

/**
 * `onProgress` for the loader (a bar, one tick per tensor, on a TTY) and `finish(summary)`, which clears
 * the bar and writes the summary line. Nothing is written when `enabled` is false.
 */
export function loadProgress(enabled: boolean): { onProgress: (p: LoadProgress) => void; finish: (summary: string) => void } {
  let bar: Progress | undefined
  return {
    onProgress: (p) => {
      bar ??= new Progress('loading', p.totalTensors, { enabled })
      bar.tick(`${p.tensor} (${(p.bytes / 1e9).toFixed(2)}/${(p.totalBytes / 1e9).toFixed(2)} GB)`)
    },
    finish: (summary) => {
      if (enabled) (bar ?? new Progress('loading', 0)).finish(summary)
    },
  }
}

/** `loaded DIR: N GB in S s (R GB/s)`. */
export function loadSummary(dir: string, stats: LoadStats): string {
  return `loaded ${dir}: ${(stats.bytes / 1e9).toFixed(2)} GB in ${stats.seconds.toFixed(2)} s (${stats.gbPerSecond.toFixed(2)} GB/s)`
}
