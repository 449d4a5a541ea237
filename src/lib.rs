//! Node.js binding of cudagraph-core (napi-rs). Thin: argument types, error codes, ownership.
//! One file per exported class; `handles` holds the numeric handle tables and `mailbox` the shared
//! operand array of the hot paths.
#![deny(clippy::all)]

mod buffer;
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
