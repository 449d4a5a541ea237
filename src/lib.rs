//! Node.js binding of cudagraph-core (napi-rs). Thin: argument types, error codes, ownership.
//! One file per exported class; `handles` holds the numeric handle tables and `mailbox` the shared
//! operand array of the hot paths.
#![deny(clippy::all, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
// The exports are only reached from JS: a unit-test build registers none of them, so it sees them unused.
#![cfg_attr(test, allow(dead_code))]

mod buffer;
mod communicator;
mod device;
mod error;
mod event;
mod graph;
mod handles;
mod host_stage;
mod kernel;
mod launch;
mod mailbox;
mod module;
mod stream;

/// Panics with `message`: the regression test that a Rust panic becomes a JS error instead of aborting
/// the process (every export is `catch_unwind`). Not part of the SDK.
#[napi_derive::napi(catch_unwind)]
pub fn debug_panic(message: String) -> error::Result<()> {
    panic!("{message}")
}
