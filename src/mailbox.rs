//! The launch mailbox: one Float64Array, registered once per thread by the TypeScript layer, through which
//! the hot calls get their operands. A napi call costs about 35 ns bare but about 100 ns more per number
//! argument; reading the operands from memory JS just wrote makes `graphLaunch()` and `launchKernel()`
//! argument-free. The slot layout is defined here only: TypeScript reads it from `launchMailboxLayout()`,
//! and the memory is the binding's: TypeScript gets a view of it from `launchMailbox()`.

use crate::error::{arg_error, Result};
use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use std::cell::Cell;

/// Slot of the graph handle for `graphLaunch`; the stream handle follows.
pub const GRAPH: usize = 0;
/// First slot of `stageLaunch`: the host stage handle, the token and request row counts, the copy mask and
/// the read-back flag (the graph and stream handles are at `GRAPH`); then the one slot the binding writes:
/// the staging area JS fills next, after every call, failed ones too; then the doorbell's flags.
pub const STAGE: usize = GRAPH + 2;
/// Slots from `STAGE`.
pub const STAGE_SLOTS: usize = 7;
/// First slot of `launchKernel`: stream handle, kernel handle, then the geometry, then the arguments.
pub const KERNEL: usize = STAGE + STAGE_SLOTS;
/// Slots after the two handles: grid x/y/z, block x/y/z, dynamic shared memory bytes, launch flags (bit 0:
/// programmatic dependent launch).
pub const GEOMETRY: usize = 8;
/// Slots before the kernel arguments, from `KERNEL`.
pub const KERNEL_HEADER: usize = 2 + GEOMETRY;
/// Most kernel parameters a launch takes.
pub const MAX_ARGS: usize = 256;
/// Slots of the whole mailbox.
pub const SLOTS: usize = KERNEL + KERNEL_HEADER + MAX_ARGS;

/// The mailbox's slot layout (slot indices of a Float64Array).
#[napi(object)]
pub struct MailboxLayout {
    pub graph: u32,
    pub stage: u32,
    pub kernel: u32,
    pub kernel_header: u32,
    pub max_args: u32,
    pub slots: u32,
}

/// The layout the TypeScript layer writes by.
#[napi(catch_unwind)]
pub fn launch_mailbox_layout() -> MailboxLayout {
    MailboxLayout {
        graph: GRAPH as u32,
        stage: STAGE as u32,
        kernel: KERNEL as u32,
        kernel_header: KERNEL_HEADER as u32,
        max_args: MAX_ARGS as u32,
        slots: SLOTS as u32,
    }
}

thread_local! {
    /// The mailbox's memory, owned here for the thread's lifetime (leaked once, 2 KiB): JS only ever holds
    /// an external view of it, so nothing JS does (detaching its array) can leave a dangling pointer here.
    static SLOTS_MEMORY: Cell<*mut f64> = const { Cell::new(std::ptr::null_mut()) };
}

/// This thread's mailbox, as a Float64Array over memory the binding owns (called once when the SDK loads
/// the binding; later calls view the same memory).
#[napi(catch_unwind)]
pub fn launch_mailbox() -> Float64Array {
    let ptr = SLOTS_MEMORY.with(|m| {
        if m.get().is_null() {
            m.set(Box::leak(vec![0f64; SLOTS].into_boxed_slice()).as_mut_ptr());
        }
        m.get()
    });
    // SAFETY: `ptr` covers SLOTS f64s that are never freed; the finalizer has nothing to release.
    unsafe { Float64Array::with_external_data(ptr, SLOTS, |_, _| {}) }
}

/// The mailbox's slots, or an error when JS has not asked for it yet.
#[inline]
pub fn with<T>(f: impl FnOnce(&mut [f64]) -> Result<T>) -> Result<T> {
    let ptr = SLOTS_MEMORY.with(Cell::get);
    if ptr.is_null() {
        return Err(arg_error("mailbox", "the launch mailbox (launchMailbox())", "none"));
    }
    // SAFETY: SLOTS f64s owned by this thread for its lifetime; JS, the only other writer, is not running
    // during this call.
    f(unsafe { std::slice::from_raw_parts_mut(ptr, SLOTS) })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_follow_each_other_without_overlap() {
        assert_eq!(STAGE, GRAPH + 2);
        assert_eq!(KERNEL, STAGE + STAGE_SLOTS, "stageLaunch uses 6 slots from STAGE");
        assert_eq!(SLOTS, KERNEL + KERNEL_HEADER + MAX_ARGS);
    }
}
