//! `Kernel`: a function of a module with a declared signature.

use crate::handles::{Handle, KERNELS};
use cudagraph_core as core;
use napi_derive::napi;

/// A kernel; launched with `launchKernel`.
#[napi]
pub struct Kernel {
    pub(crate) inner: core::Kernel,
    id: Handle,
}

impl Kernel {
    pub(crate) fn new(inner: core::Kernel) -> Kernel {
        let id = KERNELS.with(|t| t.borrow_mut().insert(inner.clone()));
        Kernel { inner, id }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        KERNELS.with(|t| t.borrow_mut().remove(self.id));
    }
}

#[napi]
impl Kernel {
    /// Numeric handle used by `launchKernel`.
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }

    #[napi(getter)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[napi(getter)]
    pub fn signature(&self) -> Vec<&'static str> {
        self.inner.signature().iter().map(|k| k.name()).collect()
    }
}
