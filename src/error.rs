//! The one place engine errors become JS errors. Each error's `code` property carries its structured
//! fields as JSON (`{"code":"CUDA_ERROR","call":"cuLaunchKernel","cudaName":...}`), which the TypeScript
//! layer (lib/cuda/native.ts) turns into an error class with those fields: nothing is read back out of the
//! message text.

use cudagraph_core::Error;

/// An error's structured fields as a JSON object; napi-rs sets it as the JS error's `code`.
pub struct Details(String);

impl AsRef<str> for Details {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A JS error with [`Details`].
pub type JsError = napi::Error<Details>;
/// Result of every exported function.
pub type Result<T> = std::result::Result<T, JsError>;

/// A JSON string literal of `s`.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The JSON object `{"code": code, key: value, ...}` (string values).
fn object(code: &str, fields: &[(&str, &str)]) -> String {
    let mut s = format!("{{\"code\":{}", json_str(code));
    for (k, v) in fields {
        s.push_str(&format!(",{}:{}", json_str(k), json_str(v)));
    }
    s.push('}');
    s
}

/// The structured fields of an engine error.
fn details(e: &Error) -> String {
    match e {
        Error::Unavailable(_) => object("CUDA_UNAVAILABLE", &[]),
        Error::Cuda { call, code, name, .. } => {
            object("CUDA_ERROR", &[("call", call), ("cudaName", name), ("cudaCode", &code.to_string())])
        }
        Error::Compile { name, log, .. } => object("COMPILE_ERROR", &[("module", name), ("log", log)]),
        Error::Cublas { call, status } => object("CUBLAS_ERROR", &[("call", call), ("status", status)]),
        Error::Nccl { call, name, .. } => object("NCCL_ERROR", &[("call", call), ("ncclName", name)]),
        Error::Argument { arg, expected, got } => object("ARGUMENT_ERROR", &[("argument", arg), ("expected", expected), ("got", got)]),
        Error::Capture(_) => object("CAPTURE_ERROR", &[]),
        Error::InUse(_) => object("IN_USE", &[]),
        Error::Disposed(what) => object("DISPOSED", &[("object", what)]),
    }
}

/// Converts an engine error into a JS error.
pub fn to_js(e: Error) -> JsError {
    napi::Error::new(Details(details(&e)), e.to_string())
}

/// Converts an engine result into a JS result.
pub trait IntoJs<T> {
    fn js(self) -> Result<T>;
}

impl<T> IntoJs<T> for cudagraph_core::Result<T> {
    #[inline]
    fn js(self) -> Result<T> {
        self.map_err(to_js)
    }
}

/// An argument error raised by the binding itself.
pub fn arg_error(arg: &str, expected: &str, got: impl std::fmt::Display) -> JsError {
    to_js(Error::arg(arg, expected, got))
}

/// The error for a handle whose object was disposed.
pub fn disposed(what: &'static str) -> JsError {
    to_js(Error::Disposed(what))
}

/// Converts an engine error raised on a worker thread (async tasks need `napi::Error<Status>`): the same
/// fields travel as a `[{json}] ` prefix of the message.
pub fn to_status_error(e: Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{}] {}", details(&e), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_json_objects_with_escaped_strings() {
        let d = details(&Error::arg("args[1]", "a \"ptr\"", "x\ny"));
        assert_eq!(d, r#"{"code":"ARGUMENT_ERROR","argument":"args[1]","expected":"a \"ptr\"","got":"x\ny"}"#);
        let c = details(&Error::Cuda { call: "cuLaunchKernel", code: 700, name: "CUDA_ERROR_ILLEGAL_ADDRESS".into(), message: "m".into() });
        assert_eq!(c, r#"{"code":"CUDA_ERROR","call":"cuLaunchKernel","cudaName":"CUDA_ERROR_ILLEGAL_ADDRESS","cudaCode":"700"}"#);
        assert_eq!(json_str("\u{1}"), "\"\\u0001\"");
    }
}
