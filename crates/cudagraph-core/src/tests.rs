//! Unit tests that need no GPU, plus the no-driver path (on a GPU machine it checks the device instead).

use crate::*;

#[test]
fn dtypes_parse_and_size() {
    for d in DType::ALL {
        assert_eq!(DType::parse("dtype", d.name()).unwrap(), d);
    }
    assert_eq!(DType::F16.size(), 2);
    assert_eq!(DType::I64.size(), 8);
    let e = DType::parse("dtype", "f8").unwrap_err();
    assert!(matches!(e, Error::Argument { ref arg, .. } if arg == "dtype"), "{e}");
    assert!(e.to_string().contains("'f8'"));
}

#[test]
fn arg_kinds_and_capture_modes_parse() {
    for k in ["ptr", "i32", "u32", "i64", "u64", "f32", "f64"] {
        assert_eq!(ArgKind::parse("k", k).unwrap().name(), k);
    }
    assert!(ArgKind::parse("signature[2]", "float").unwrap_err().to_string().contains("signature[2]"));
    assert_eq!(CaptureMode::parse("relaxed").unwrap(), CaptureMode::Relaxed);
    assert!(CaptureMode::parse("loose").is_err());
}

#[test]
fn gemm_activations_parse_and_pointer_alignments_are_powers_of_two() {
    assert_eq!(crate::Activation::from_code(1).unwrap(), crate::Activation::Relu);
    assert!(crate::Activation::from_code(3).unwrap_err().to_string().contains("'activation'"));
    assert_eq!(crate::blas_lt::BlasLt::alignments(0x7f00_0000_0000, 0x1002, 0x1010, 0), [256, 2, 16, 256]);
}

#[test]
fn errors_name_the_argument_and_the_driver_error() {
    let e = Error::arg("args[1]", "an integer", 1.5);
    assert_eq!(e.to_string(), "argument 'args[1]': expected an integer, got 1.5");
    let c = Error::Cuda { call: "cuLaunchKernel", code: 1, name: "CUDA_ERROR_INVALID_VALUE".into(), message: "invalid argument".into() };
    assert_eq!(c.cuda_name(), Some("CUDA_ERROR_INVALID_VALUE"));
    assert!(c.to_string().starts_with("cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE"));
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    match Device::count() {
        Ok(n) => assert!(n >= 0),
        Err(e) => assert!(matches!(e, Error::Unavailable(_)), "{e}"),
    }
    match Device::open(0) {
        Ok(d) => assert_eq!(d.ordinal(), 0),
        Err(e) => assert!(matches!(e, Error::Unavailable(_) | Error::Argument { .. }), "{e}"),
    }
}
