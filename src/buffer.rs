//! `DeviceBuffer`: typed device memory and its views.

use crate::error::{arg_error, IntoJs, Result};
use crate::handles::{Registered, BUFFERS};
use cudagraph_core as core;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;

/// A typed range of device memory.
#[napi]
pub struct DeviceBuffer {
    pub(crate) inner: core::Buffer,
    reg: Registered<core::Buffer>,
}

impl DeviceBuffer {
    /// Wraps an engine buffer and gives it a handle for `launchKernel`.
    pub(crate) fn new(inner: core::Buffer) -> Result<DeviceBuffer> {
        Ok(DeviceBuffer { reg: Registered::new(&BUFFERS, inner.clone())?, inner })
    }
}

#[napi]
impl DeviceBuffer {
    /// Numeric handle used by `launchKernel`.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.reg.id()
    }

    #[napi(getter, catch_unwind)]
    pub fn dtype(&self) -> &'static str {
        self.inner.dtype().name()
    }

    /// Elements.
    #[napi(getter, catch_unwind)]
    pub fn length(&self) -> u32 {
        self.inner.len() as u32
    }

    /// Bytes.
    #[napi(getter, catch_unwind)]
    pub fn byte_length(&self) -> f64 {
        self.inner.byte_len() as f64
    }

    /// Offset in elements from the start of the allocation.
    #[napi(getter, catch_unwind)]
    pub fn offset(&self) -> u32 {
        self.inner.offset() as u32
    }

    /// Live graphs that use this buffer's allocation.
    #[napi(getter, catch_unwind)]
    pub fn graph_uses(&self) -> u32 {
        self.inner.allocation().graph_uses()
    }

    #[napi(getter, catch_unwind)]
    pub fn disposed(&self) -> bool {
        self.inner.ptr().is_err()
    }

    /// Device address (for debugging and address checks).
    #[napi(getter, catch_unwind)]
    pub fn address(&self) -> Result<f64> {
        Ok(self.inner.ptr().js()? as f64)
    }

    #[napi(catch_unwind)]
    pub fn view(&self, offset: u32, length: u32) -> Result<DeviceBuffer> {
        DeviceBuffer::new(self.inner.view(offset as usize, length as usize).js()?)
    }

    /// Synchronous copy from host bytes (exactly byteLength).
    #[napi(catch_unwind)]
    pub fn upload(&self, bytes: &[u8]) -> Result<()> {
        self.inner.upload(bytes).js()
    }

    /// Synchronous copy into host bytes (exactly byteLength).
    #[napi(catch_unwind)]
    pub fn download_into(&self, mut out: Uint8Array) -> Result<()> {
        // SAFETY: the view is only written by this call, on the JS thread, while the array is alive.
        self.inner.download(unsafe { out.as_mut() }).js()
    }

    #[napi(catch_unwind)]
    pub fn dispose(&self) -> Result<()> {
        self.inner.dispose().js()
    }
}

/// `(dtype, elements)` pairs from parallel lists, `what[i]` naming entry i in errors.
pub(crate) fn typed_lengths(what: &str, dtypes: &[String], lengths: &[u32]) -> Result<Vec<(core::DType, usize)>> {
    if dtypes.len() != lengths.len() {
        return Err(arg_error(&format!("{what} lengths"), &format!("{} entries, one per dtype", dtypes.len()), lengths.len()));
    }
    dtypes
        .iter()
        .zip(lengths)
        .enumerate()
        .map(|(i, (d, &n))| Ok((core::DType::parse(&format!("{what}[{i}].dtype"), d)?, n as usize)))
        .collect::<core::Result<Vec<_>>>()
        .js()
}
