//! The one place engine errors become JS errors: each variant maps to a `code` string, which the
//! TypeScript layer (lib/errors.ts) turns into an Error subclass.

use cudagraph_core::Error;

/// The `code` of every error this binding throws.
pub enum Code {
    Unavailable,
    Cuda,
    Compile,
    Cublas,
    Argument,
    Capture,
    InUse,
    Disposed,
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Code::Unavailable => "CUDA_UNAVAILABLE",
            Code::Cuda => "CUDA_ERROR",
            Code::Compile => "COMPILE_ERROR",
            Code::Cublas => "CUBLAS_ERROR",
            Code::Argument => "ARGUMENT_ERROR",
            Code::Capture => "CAPTURE_ERROR",
            Code::InUse => "IN_USE",
            Code::Disposed => "DISPOSED",
        }
    }
}

/// A JS error with one of the codes above.
pub type JsError = napi::Error<Code>;
/// Result of every exported function.
pub type Result<T> = std::result::Result<T, JsError>;

fn code_of(e: &Error) -> Code {
    match e {
        Error::Unavailable(_) => Code::Unavailable,
        Error::Cuda { .. } => Code::Cuda,
        Error::Compile { .. } => Code::Compile,
        Error::Cublas { .. } => Code::Cublas,
        Error::Argument { .. } => Code::Argument,
        Error::Capture(_) => Code::Capture,
        Error::InUse(_) => Code::InUse,
        Error::Disposed(_) => Code::Disposed,
    }
}

/// Converts an engine result into a JS result.
pub trait IntoJs<T> {
    fn js(self) -> Result<T>;
}

impl<T> IntoJs<T> for cudagraph_core::Result<T> {
    #[inline]
    fn js(self) -> Result<T> {
        self.map_err(|e| napi::Error::new(code_of(&e), e.to_string()))
    }
}

/// An argument error raised by the binding itself.
pub fn arg_error(arg: &str, expected: &str, got: impl std::fmt::Display) -> JsError {
    napi::Error::new(Code::Argument, Error::arg(arg, expected, got).to_string())
}

/// The error for a handle whose object was disposed.
pub fn disposed(what: &'static str) -> JsError {
    napi::Error::new(Code::Disposed, Error::Disposed(what).to_string())
}

/// Converts an engine error raised on a worker thread (async tasks need `napi::Error<Status>`), keeping
/// the code in the message prefix for lib/errors.ts to recover.
pub fn to_status_error(e: Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{}] {}", code_of(&e).as_ref(), e))
}
