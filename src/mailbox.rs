//! The launch mailbox: one Float64Array, registered once per thread by the TypeScript layer, through which
//! the hot calls get their operands. A napi call costs about 35 ns bare but about 100 ns more per number
//! argument; reading the operands from memory JS just wrote makes `graphLaunch()` and `launchKernel()`
//! argument-free. Layout (slots): see `GRAPH`, `STAGE`, `KERNEL` below and lib/mailbox.ts, which must agree.

use crate::error::{arg_error, Result};
use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use std::cell::RefCell;

/// Slot of the graph handle for `graphLaunch`; the stream handle follows.
pub const GRAPH: usize = 0;
/// First slot of `stageLaunch`: the host stage handle, the token and request row counts, the copy mask and
/// the read-back flag (the graph and stream handles are at `GRAPH`).
pub const STAGE: usize = 2;
/// First slot of `launchKernel`: stream handle, kernel handle, grid x/y/z, block x/y/z, shared memory
/// bytes, then one slot per kernel argument.
pub const KERNEL: usize = 7;
/// Slots before the kernel arguments, from `KERNEL`.
pub const KERNEL_HEADER: usize = 9;

thread_local! {
    /// The registered array (kept referenced, so its memory stays put) and its data.
    static MAILBOX: RefCell<Option<(Float64Array, *const f64, usize)>> = const { RefCell::new(None) };
}

/// Registers `buffer` as this thread's mailbox (called once when the SDK loads).
#[napi]
pub fn set_launch_mailbox(buffer: Float64Array) -> Result<()> {
    if buffer.len() < KERNEL + KERNEL_HEADER {
        return Err(arg_error("buffer", &format!("at least {} slots", KERNEL + KERNEL_HEADER), buffer.len()));
    }
    let (ptr, len) = (buffer.as_ptr(), buffer.len());
    MAILBOX.with(|m| *m.borrow_mut() = Some((buffer, ptr, len)));
    Ok(())
}

/// The mailbox's slots, or an error when none was registered.
#[inline]
pub fn with<T>(f: impl FnOnce(&[f64]) -> Result<T>) -> Result<T> {
    MAILBOX.with(|m| {
        let m = m.borrow();
        let (_, ptr, len) = m.as_ref().ok_or_else(|| arg_error("mailbox", "a registered launch mailbox", "none"))?;
        // SAFETY: the array is kept referenced in MAILBOX, its data was externalized by napi when it was
        // registered (it does not move), and JS, which writes it, is not running during this call.
        f(unsafe { std::slice::from_raw_parts(*ptr, *len) })
    })
}
