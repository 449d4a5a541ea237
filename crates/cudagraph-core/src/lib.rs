//! cudagraph-core: CUDA graph capture, instantiate, replay and exec-update on `cudarc`.
//!
//! A safe layer over `cudarc::driver::{result, sys}`, NVRTC and cuBLAS, one module per concern, with RAII
//! for every handle. Single-threaded by design (`Rc`): every object is created and used on the thread that
//! opened its device, which for the Node binding is the JS main thread.
//!
//! The engine owns stream ordering itself: it never records per-buffer events (cudarc's default tracking
//! makes capture fail with `CUDA_ERROR_STREAM_CAPTURE_ISOLATION`), so capture always works. Synchronous
//! buffer operations synchronise the context; stream operations are ordered on their stream.

#![deny(clippy::all, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod blas;
pub mod blas_lt;
pub mod buffer;
pub mod device;
pub mod dtype;
pub mod error;
pub mod event;
pub mod graph;
pub mod host_stage;
pub mod kernel_cache;
pub mod libs;
pub mod module;
pub mod nccl;
pub mod stream;

pub use blas::{Gemm, Op};
pub use blas_lt::Activation;
pub use buffer::Buffer;
pub use device::{Device, GraphMemStats};
pub use dtype::DType;
pub use error::{Error, Result};
pub use event::Event;
pub use graph::{ExecHandle, Graph, GraphMemory, GraphTimings, UpdateOutcome};
pub use host_stage::{HostStage, StageTensor};
pub use kernel_cache::KernelCache;
pub use module::{ArgKind, Kernel, Module};
pub use nccl::{Communicator, ReduceOp};
pub use stream::{CaptureMode, Completion, EndCapture, KernelArg, LaunchConfig, PendingDownload, Stream};

#[cfg(test)]
mod tests;
