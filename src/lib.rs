//! Node.js binding of cudagraph-core (napi-rs). Thin: argument types, error codes, ownership.
//! One file per exported class; `handles` holds the numeric handle tables of the replay hot path.
#![deny(clippy::all)]

mod buffer;
mod device;
mod error;
mod event;
mod graph;
mod handles;
mod kernel;
mod launch;
mod module;
mod stream;
