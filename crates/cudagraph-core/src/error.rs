//! The one error type of the engine. The binding maps each variant to a JS error code in one place.

use cudarc::cublas::sys::cublasStatus_t;
use cudarc::driver::result::DriverError;
use cudarc::driver::sys::CUresult;

/// Everything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable CUDA driver or library (libcuda, NVRTC, cuBLAS) on this machine, or no device.
    #[error("CUDA is not available: {0}")]
    Unavailable(String),
    /// A driver call returned an error. `name` is the driver's name for it (`CUDA_ERROR_...`).
    #[error("{call} failed: {name}: {message}")]
    Cuda { call: &'static str, code: u32, name: String, message: String },
    /// NVRTC rejected the source; `log` is the compiler's log.
    #[error("NVRTC could not compile '{name}' ({status})\n{log}")]
    Compile { name: String, status: String, log: String },
    /// A cuBLAS call failed.
    #[error("{call} failed: {status}")]
    Cublas { call: &'static str, status: String },
    /// An NCCL call failed. `name` is NCCL's name for the status (`ncclInvalidArgument`, ...).
    #[error("{call} failed: {name}: {message}")]
    Nccl { call: &'static str, name: String, message: String },
    /// An argument was out of range or of the wrong kind. Nothing was enqueued.
    #[error("argument '{arg}': expected {expected}, got {got}")]
    Argument { arg: String, expected: String, got: String },
    /// A stream capture could not produce a graph; the stream is usable again.
    #[error("capture failed: {0}")]
    Capture(String),
    /// The object is still used by a live graph (or similar) and cannot be released.
    #[error("{0}")]
    InUse(String),
    /// The object was disposed before this call.
    #[error("{0} was disposed")]
    Disposed(&'static str),
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Argument`] naming the argument, what was expected and what was given.
    pub fn arg(arg: impl Into<String>, expected: impl Into<String>, got: impl std::fmt::Display) -> Self {
        Error::Argument { arg: arg.into(), expected: expected.into(), got: got.to_string() }
    }

    /// The driver's error name (`CUDA_ERROR_...`) if this is a driver error.
    pub fn cuda_name(&self) -> Option<&str> {
        match self {
            Error::Cuda { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// Turns a raw status into a [`Result`], naming the call that produced it.
pub(crate) trait Check {
    fn check(self, call: &'static str) -> Result<()>;
}

impl Check for CUresult {
    fn check(self, call: &'static str) -> Result<()> {
        self.result().map_err(|e| driver_error(call, e))
    }
}

impl Check for std::result::Result<(), DriverError> {
    fn check(self, call: &'static str) -> Result<()> {
        self.map_err(|e| driver_error(call, e))
    }
}

impl Check for cublasStatus_t {
    fn check(self, call: &'static str) -> Result<()> {
        self.result().map_err(|e| Error::Cublas { call, status: format!("{:?}", e.0) })
    }
}

/// Builds an [`Error::Cuda`] from a driver status, with the driver's own name and description.
pub(crate) fn driver_error(call: &'static str, e: DriverError) -> Error {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    let message = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Error::Cuda { call, code: e.0 as u32, name, message }
}
