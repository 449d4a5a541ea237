//! `Event`: record, wait, time.

use crate::error::{IntoJs, Result};
use crate::stream::Stream;
use cudagraph_core as core;
use napi_derive::napi;

/// A CUDA event.
#[napi]
pub struct Event {
    pub(crate) inner: core::Event,
}

#[napi]
impl Event {
    #[napi(catch_unwind)]
    pub fn record(&self, stream: &Stream) -> Result<()> {
        self.inner.record(&stream.inner).js()
    }

    #[napi(catch_unwind)]
    pub fn synchronize(&self) -> Result<()> {
        self.inner.synchronize().js()
    }

    #[napi(catch_unwind)]
    pub fn query(&self) -> Result<bool> {
        self.inner.query().js()
    }

    /// Milliseconds from `start` to this event.
    #[napi(catch_unwind)]
    pub fn elapsed_since(&self, start: &Event) -> Result<f64> {
        Ok(self.inner.elapsed_since(&start.inner).js()? as f64)
    }
}
