/**
 * The launch mailbox: one Float64Array shared with the native binding, where the hot paths write their
 * operands before an argument-free native call. A napi call costs ~35 ns bare but ~100 ns more per number
 * argument, so this is where most of the binding's per-launch cost goes away. JS is single-threaded and
 * each call is synchronous, so one array serves every stream and graph. The slot layout is the binding's
 * (src/mailbox.rs), read once when the binding loads.
 * @internal
 */
import { CudaGraphError } from '../errors.js'
import type { Native } from './native.js'

/** Slot indices (the binding's `launchMailboxLayout()`), set when the binding loads. */
export const LAYOUT = { graph: 0, stage: 0, kernel: 0, kernelHeader: 0, maxArgs: 0, slots: 0 }

/** The mailbox: a view of memory the binding owns (off the JS heap; it never moves). Empty until the binding loads. */
export let MAILBOX: Float64Array = new Float64Array(0)

function unloaded(): never {
  throw new CudaGraphError('NATIVE_UNAVAILABLE', 'the native binding is not loaded')
}

/** The argument-free hot calls, bound when the binding loads. */
export const CALLS: Pick<Native, 'graphLaunch' | 'stageLaunch' | 'launchKernel' | 'launchKernelWide'> = {
  graphLaunch: unloaded,
  stageLaunch: unloaded,
  launchKernel: unloaded,
  launchKernelWide: unloaded,
}

/** Reads the layout, takes the binding's mailbox and binds the hot calls (once, by lib/cuda/native.ts). */
export function attachMailbox(b: Native): void {
  Object.assign(LAYOUT, b.launchMailboxLayout())
  MAILBOX = b.launchMailbox()
  CALLS.graphLaunch = b.graphLaunch
  CALLS.stageLaunch = b.stageLaunch
  CALLS.launchKernel = b.launchKernel
  CALLS.launchKernelWide = b.launchKernelWide
}
