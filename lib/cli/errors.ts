/** Errors of the `cudagraph` command: its exit code follows from the class (lib/cli/main.ts). */
import { CudaGraphError } from '../errors.js'

/** A flag's value was wrong, or a command was misspelled: exit code 2. The message names the flag and what is allowed. */
export class UsageError extends CudaGraphError {
  constructor(message: string) {
    super('USAGE_ERROR', message)
  }
}

/** A benchmark or its peer failed at run time: exit code 1. */
export class BenchmarkError extends CudaGraphError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('BENCHMARK_ERROR', message, options)
  }
}
