//! `Module`: NVRTC-compiled code loaded on a device.

use crate::error::{IntoJs, Result};
use crate::kernel::Kernel;
use cudagraph_core as core;
use napi_derive::napi;
use std::rc::Rc;

/// The on-disk kernel cache's directory (`CUDAGRAPH_KERNEL_CACHE`, ...), or null when it is off.
#[napi(catch_unwind)]
pub fn kernel_cache_dir() -> Option<String> {
    core::KernelCache::from_env().map(|c| c.dir().to_string_lossy().into_owned())
}

/// A loaded module.
#[napi]
pub struct Module {
    pub(crate) inner: Rc<core::Module>,
}

#[napi]
impl Module {
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> String {
        self.inner.name().to_string()
    }

    /// NVRTC's warnings from the compile.
    #[napi(getter, catch_unwind)]
    pub fn log(&self) -> String {
        self.inner.log().to_string()
    }

    /// `sm_XY` (cubin) or `compute_XY` (PTX).
    #[napi(getter, catch_unwind)]
    pub fn target(&self) -> String {
        self.inner.target().to_string()
    }

    /// Whether the image came from the on-disk kernel cache (no NVRTC run).
    #[napi(getter, catch_unwind)]
    pub fn cached(&self) -> bool {
        self.inner.cached()
    }

    /// Kernel `name` with its parameter kinds.
    #[napi(catch_unwind)]
    pub fn kernel(&self, name: String, signature: Vec<String>) -> Result<Kernel> {
        let sig = signature
            .iter()
            .enumerate()
            .map(|(i, s)| core::ArgKind::parse(&format!("signature[{i}]"), s))
            .collect::<core::Result<Vec<_>>>()
            .js()?;
        Kernel::new(self.inner.kernel(&name, sig).js()?)
    }
}
