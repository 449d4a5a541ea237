//! Finding the CUDA libraries at run time without panicking.
//!
//! cudarc loads libcuda, NVRTC and cuBLAS lazily by soname and panics when one is missing. We check
//! first and report [`Error::Unavailable`] instead. Toolkit libraries are often outside the loader's path
//! (`/usr/local/cuda/lib64`, a Python wheel); we preload them by full path, after which cudarc's load by
//! soname finds the already-loaded copy.

use crate::error::{Check, Error, Result};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Directories searched for NVRTC and cuBLAS besides the loader's own path, in order.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(list) = std::env::var("CUDAGRAPH_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&list));
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Ok(root) = std::env::var(var) {
            dirs.push(PathBuf::from(&root).join("lib64"));
            dirs.push(PathBuf::from(&root).join("lib"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/sbsa-linux/lib"));
    dirs
}

/// Loads the first `names` found in [`library_dirs`] and keeps it loaded for the life of the process.
fn preload(names: &[&str]) {
    for dir in library_dirs() {
        for name in names {
            let path = dir.join(name);
            if path.exists() {
                // SAFETY: loading a CUDA toolkit library runs only its own initialisers.
                if let Ok(lib) = unsafe { libloading::Library::new(&path) } {
                    std::mem::forget(lib);
                    return;
                }
            }
        }
    }
}

/// Ensures libcuda is loadable and `cuInit` succeeded. Cached: the answer is the same for the process.
pub fn driver() -> Result<()> {
    static STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            // SAFETY: only probes whether the shared library can be opened.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err("libcuda.so (the NVIDIA driver) was not found".into());
            }
            cudarc::driver::result::init().check("cuInit").map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Unavailable)
}

/// Ensures NVRTC can be loaded.
pub fn nvrtc() -> Result<()> {
    static STATE: OnceLock<bool> = OnceLock::new();
    let ok = *STATE.get_or_init(|| {
        preload(&["libnvrtc.so.13", "libnvrtc.so"]);
        // SAFETY: only probes whether the shared library can be opened.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }
    });
    ok.then_some(())
        .ok_or_else(|| Error::Unavailable("NVRTC (libnvrtc.so.13) was not found; set CUDA_HOME or CUDAGRAPH_LIBRARY_PATH".into()))
}

/// Ensures cuBLAS can be loaded.
pub fn cublas() -> Result<()> {
    static STATE: OnceLock<bool> = OnceLock::new();
    let ok = *STATE.get_or_init(|| {
        preload(&["libcublasLt.so.13"]);
        preload(&["libcublas.so.13", "libcublas.so"]);
        // SAFETY: only probes whether the shared libraries can be opened.
        unsafe { cudarc::cublas::sys::is_culib_present() && cudarc::cublaslt::sys::is_culib_present() }
    });
    ok.then_some(()).ok_or_else(|| {
        Error::Unavailable("cuBLAS (libcublas.so.13 and libcublasLt.so.13) was not found; set CUDA_HOME or CUDAGRAPH_LIBRARY_PATH".into())
    })
}

/// Ensures NCCL can be loaded (the `nvidia-nccl` Python wheel's `nvidia/nccl/lib`, or a system copy).
pub fn nccl() -> Result<()> {
    static STATE: OnceLock<bool> = OnceLock::new();
    let ok = *STATE.get_or_init(|| {
        preload(&["libnccl.so.2", "libnccl.so"]);
        // SAFETY: only probes whether the shared library can be opened.
        unsafe { cudarc::nccl::sys::is_culib_present() }
    });
    ok.then_some(()).ok_or_else(|| {
        Error::Unavailable("NCCL (libnccl.so.2) was not found; put its folder on LD_LIBRARY_PATH or CUDAGRAPH_LIBRARY_PATH".into())
    })
}
