//! `Stream`: launches, copies, stream-ordered memory, GEMM and capture.

use crate::buffer::DeviceBuffer;
use crate::error::{to_status_error, IntoJs, Result};
use crate::event::Event;
use crate::graph::Graph;
use crate::handles::{Registered, STREAMS};
use cudagraph_core as core;
use napi::bindgen_prelude::{AsyncTask, Uint8Array};
use napi::{Env, Task};
use napi_derive::napi;

/// A non-blocking CUDA stream.
#[napi]
pub struct Stream {
    pub(crate) inner: core::Stream,
    reg: Registered<core::Stream>,
}

impl Stream {
    pub(crate) fn new(inner: core::Stream) -> Result<Stream> {
        Ok(Stream { reg: Registered::new(&STREAMS, inner.clone())?, inner })
    }
}

/// Waits for a [`core::Completion`] on a libuv worker thread.
pub struct WaitTask(Option<core::Completion>);

impl Task for WaitTask {
    type Output = ();
    type JsValue = ();
    fn compute(&mut self) -> napi::Result<()> {
        // Borrowed, not taken: the event is destroyed when the task is, on the JS thread.
        self.0.as_ref().map(|c| c.wait()).transpose().map_err(to_status_error)?;
        Ok(())
    }
    fn resolve(&mut self, _: Env, _: ()) -> napi::Result<()> {
        Ok(())
    }
}

/// Waits for a [`core::PendingDownload`] on a libuv worker thread and returns its bytes.
pub struct DownloadTask(Option<core::PendingDownload>);

impl Task for DownloadTask {
    type Output = Vec<u8>;
    type JsValue = Uint8Array;
    fn compute(&mut self) -> napi::Result<Vec<u8>> {
        // Borrowed, not taken: the pinned memory is freed when the task is dropped, on the JS thread,
        // never on this worker thread, where cuMemFreeHost would invalidate a capture running on the JS
        // thread.
        let p = self.0.as_ref().ok_or_else(|| napi::Error::from_reason("download already collected"))?;
        p.wait().map_err(to_status_error)
    }
    fn resolve(&mut self, _: Env, out: Vec<u8>) -> napi::Result<Uint8Array> {
        Ok(Uint8Array::new(out))
    }
}

#[napi]
impl Stream {
    /// Numeric handle for `graphLaunch`.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.reg.id()
    }

    #[napi(catch_unwind)]
    pub fn synchronize(&self) -> Result<()> {
        self.inner.synchronize().js()
    }

    /// Resolves when all work enqueued so far is done, without blocking the JS thread.
    #[napi(ts_return_type = "Promise<void>", catch_unwind)]
    pub fn synchronize_async(&self) -> Result<AsyncTask<WaitTask>> {
        Ok(AsyncTask::new(WaitTask(Some(self.inner.completion().js()?))))
    }

    #[napi(catch_unwind)]
    pub fn query(&self) -> Result<bool> {
        self.inner.query().js()
    }

    #[napi(catch_unwind)]
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        self.inner.wait_event(&event.inner).js()
    }

    /// Copies `src` into `dst` (same byte length).
    #[napi(catch_unwind)]
    pub fn copy(&self, dst: &DeviceBuffer, src: &DeviceBuffer) -> Result<()> {
        self.inner.copy(&dst.inner, &src.inner).js()
    }

    #[napi(catch_unwind)]
    pub fn memset(&self, buffer: &DeviceBuffer, byte: u8) -> Result<()> {
        self.inner.memset(&buffer.inner, byte).js()
    }

    #[napi(catch_unwind)]
    pub fn fill(&self, buffer: &DeviceBuffer, value: f64) -> Result<()> {
        self.inner.fill(&buffer.inner, value).js()
    }

    /// Stages `bytes` in pinned memory and copies them to `dst` on the stream.
    #[napi(catch_unwind)]
    pub fn upload_async(&self, dst: &DeviceBuffer, bytes: &[u8]) -> Result<()> {
        self.inner.upload_async(&dst.inner, bytes).js()
    }

    /// Copies `dst.byteLength` bytes of the file at `path` from byte `offset` into `dst` through pinned
    /// chunks; returns when they are on the device.
    #[napi(catch_unwind)]
    pub fn upload_file(&self, dst: &DeviceBuffer, path: String, offset: f64) -> Result<()> {
        if !(offset >= 0.0 && offset.fract() == 0.0 && offset <= 2f64.powi(53)) {
            return Err(core::Error::arg("offset", "a non-negative integer", offset)).js();
        }
        self.inner.upload_file(&dst.inner, std::path::Path::new(&path), offset as u64).js()
    }

    /// Copies `src` to pinned memory on the stream; resolves with the bytes.
    #[napi(ts_return_type = "Promise<Uint8Array>", catch_unwind)]
    pub fn download_async(&self, src: &DeviceBuffer) -> Result<AsyncTask<DownloadTask>> {
        Ok(AsyncTask::new(DownloadTask(Some(self.inner.download_async(&src.inner).js()?))))
    }

    #[napi(catch_unwind)]
    pub fn alloc_async(&self, dtype: String, length: u32) -> Result<DeviceBuffer> {
        let dtype = core::DType::parse("dtype", &dtype).js()?;
        DeviceBuffer::new(self.inner.alloc_async(dtype, length as usize).js()?)
    }

    #[napi(catch_unwind)]
    pub fn free_async(&self, buffer: &DeviceBuffer) -> Result<()> {
        self.inner.free_async(&buffer.inner).js()
    }

    /// Creates this stream's cuBLAS handle and workspace (not possible inside capture).
    #[napi(catch_unwind)]
    pub fn prepare_blas(&self) -> Result<()> {
        self.inner.prepare_blas().js()
    }

    /// Column-major `c = act(alpha * op(a) * op(b) + beta * c + bias)`; `activation`: 0 none, 1 relu,
    /// 2 gelu (a number: this runs once per GEMM in eager steps).
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: u32,
        n: u32,
        k: u32,
        alpha: f64,
        a: &DeviceBuffer,
        lda: u32,
        b: &DeviceBuffer,
        ldb: u32,
        beta: f64,
        c: &DeviceBuffer,
        ldc: u32,
        bias: Option<&DeviceBuffer>,
        activation: u32,
    ) -> Result<()> {
        let op = |t| if t { core::Op::T } else { core::Op::N };
        let activation = core::Activation::from_code(activation).js()?;
        self.inner
            .gemm(&core::Gemm {
                trans_a: op(trans_a),
                trans_b: op(trans_b),
                m: m as usize,
                n: n as usize,
                k: k as usize,
                alpha: alpha as f32,
                a: &a.inner,
                lda: lda as usize,
                b: &b.inner,
                ldb: ldb as usize,
                beta: beta as f32,
                c: &c.inner,
                ldc: ldc as usize,
                bias: bias.map(|b| &b.inner),
                activation,
            })
            .js()
    }

    #[napi(getter, catch_unwind)]
    pub fn capturing(&self) -> bool {
        self.inner.is_capturing()
    }

    /// `mode`: 'global' | 'thread_local' | 'relaxed'.
    #[napi(catch_unwind)]
    pub fn begin_capture(&self, mode: String) -> Result<()> {
        let mode = core::CaptureMode::parse(&mode).js()?;
        self.inner.begin_capture(mode).js()
    }

    #[napi(catch_unwind)]
    pub fn end_capture(&self, instantiate: bool, upload: bool, measure_memory: bool) -> Result<Graph> {
        Graph::new(self.inner.end_capture(core::EndCapture { instantiate, upload, measure_memory }).js()?)
    }

    /// Ends a capture without a graph; returns whether one was open.
    #[napi(catch_unwind)]
    pub fn abort_capture(&self) -> bool {
        self.inner.abort_capture()
    }
}
