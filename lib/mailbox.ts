/**
 * The launch mailbox: one Float64Array shared with the native binding (src/mailbox.rs, same layout), where
 * the hot paths write their operands before an argument-free native call. A napi call costs ~35 ns bare but
 * ~100 ns more per number argument, so this is where most of the binding's per-launch cost goes away.
 * JS is single-threaded and each call is synchronous, so one array serves every stream and graph.
 * @internal
 */
import * as N from './native.js'

/** Slot of the graph handle for `graphLaunch`; the stream handle follows. */
export const GRAPH = 0
/** First slot of `stageLaunch`: the host stage handle, the token and request row counts, the copy mask, read-back. */
export const STAGE = 2
/** First slot of `launchKernel`: stream, kernel, grid x/y/z, block x/y/z, shared memory bytes, arguments. */
export const KERNEL = 7
/** Slots from KERNEL before the kernel arguments. */
export const KERNEL_HEADER = 9
/** Most kernel parameters a launch takes. */
export const MAX_ARGS = 256

/** The mailbox. Its own ArrayBuffer, so the memory is off the JS heap and never moves. */
export const MAILBOX = new Float64Array(new ArrayBuffer(8 * (KERNEL + KERNEL_HEADER + MAX_ARGS)))
N.setLaunchMailbox(MAILBOX)
