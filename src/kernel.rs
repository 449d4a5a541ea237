//! `Kernel`: a function of a module with a declared signature.

use cudagraph_core as core;
use napi_derive::napi;

/// A kernel; launched with `Stream.launch`.
#[napi]
pub struct Kernel {
    pub(crate) inner: core::Kernel,
}

#[napi]
impl Kernel {
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[napi(getter)]
    pub fn signature(&self) -> Vec<&'static str> {
        self.inner.signature().iter().map(|k| k.name()).collect()
    }
}
