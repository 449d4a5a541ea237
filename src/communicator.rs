//! `Communicator`: one rank of an NCCL communicator, collectives on streams.

use crate::buffer::DeviceBuffer;
use crate::device::Device;
use crate::error::{IntoJs, Result};
use crate::stream::Stream;
use cudagraph_core as core;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

/// One rank of an NCCL communicator on one device.
#[napi]
pub struct Communicator {
    inner: Option<core::Communicator>,
}

impl Communicator {
    fn comm(&self) -> Result<&core::Communicator> {
        self.inner.as_ref().ok_or(core::Error::Disposed("communicator")).js()
    }
}

#[napi]
impl Communicator {
    /// A fresh 128-byte unique id (rank 0 makes it and hands it to the other ranks).
    #[napi(catch_unwind)]
    pub fn unique_id() -> Result<Uint8Array> {
        Ok(Uint8Array::new(core::nccl::unique_id().js()?.to_vec()))
    }

    /// The loaded NCCL's version number (major * 10000 + minor * 100 + patch).
    #[napi(catch_unwind)]
    pub fn version() -> Result<i32> {
        core::nccl::version().js()
    }

    /// Joins communicator `id` as `rank` of `size` on `device` (blocks until every rank joined).
    #[napi(constructor, catch_unwind)]
    pub fn new(device: &Device, id: &[u8], rank: u32, size: u32) -> Result<Communicator> {
        Ok(Communicator { inner: Some(core::Communicator::new(&device.inner, id, rank as usize, size as usize).js()?) })
    }

    #[napi(getter, catch_unwind)]
    pub fn rank(&self) -> Result<u32> {
        Ok(self.comm()?.rank() as u32)
    }

    #[napi(getter, catch_unwind)]
    pub fn size(&self) -> Result<u32> {
        Ok(self.comm()?.size() as u32)
    }

    /// Reduces `buffer` across the ranks in place (`op`: sum, prod, max, min, avg), on `stream`.
    #[napi(catch_unwind)]
    pub fn all_reduce(&self, stream: &Stream, buffer: &DeviceBuffer, op: String) -> Result<()> {
        let op = core::ReduceOp::parse(&op).js()?;
        self.comm()?.all_reduce(&stream.inner, &buffer.inner, op).js()
    }

    /// Gathers every rank's `send` into `recv`, on `stream`.
    #[napi(catch_unwind)]
    pub fn all_gather(&self, stream: &Stream, send: &DeviceBuffer, recv: &DeviceBuffer) -> Result<()> {
        self.comm()?.all_gather(&stream.inner, &send.inner, &recv.inner).js()
    }

    /// Copies rank `root`'s `buffer` to every rank's, on `stream`.
    #[napi(catch_unwind)]
    pub fn broadcast(&self, stream: &Stream, buffer: &DeviceBuffer, root: u32) -> Result<()> {
        self.comm()?.broadcast(&stream.inner, &buffer.inner, root as usize).js()
    }

    /// Aborts: pending collectives end, no rank waits on this one.
    #[napi(catch_unwind)]
    pub fn abort(&self) -> Result<()> {
        self.comm()?.abort().js()
    }

    /// Destroys the communicator (after its streams' work).
    #[napi(catch_unwind)]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}
