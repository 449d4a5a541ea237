//! `Kernel`: a function of a module with a declared signature.

use crate::error::{IntoJs, Result};
use crate::handles::{Registered, KERNELS};
use cudagraph_core as core;
use napi_derive::napi;

/// A kernel; launched with `launchKernel`.
#[napi]
pub struct Kernel {
    pub(crate) inner: core::Kernel,
    reg: Registered<core::Kernel>,
}

impl Kernel {
    pub(crate) fn new(inner: core::Kernel) -> Result<Kernel> {
        Ok(Kernel { reg: Registered::new(&KERNELS, inner.clone())?, inner })
    }
}

#[napi]
impl Kernel {
    /// Numeric handle used by `launchKernel`.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.reg.id()
    }

    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// Shared memory the kernel declares statically, bytes.
    #[napi(getter, catch_unwind)]
    pub fn static_shared_bytes(&self) -> Result<i32> {
        self.inner.static_shared_bytes().js()
    }

    #[napi(getter, catch_unwind)]
    pub fn signature(&self) -> Vec<&'static str> {
        self.inner.signature().iter().map(|k| k.name()).collect()
    }
}
