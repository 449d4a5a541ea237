//! cuBLAS GEMM on a stream, capturable. A GEMM with a bias or an activation goes through cuBLASLt
//! ([`crate::blas_lt`]), which fuses them into the GEMM kernel.

use crate::blas_lt::{Activation, BlasLt, LtCall, PlanKey, Workspace};
use crate::buffer::Buffer;
use crate::dtype::DType;
use crate::error::{Check, Error, Result};
use crate::libs;
use crate::stream::Stream;
use cudarc::cublas::sys as bl;
use std::ffi::c_void;

/// Workspace given to cuBLAS so it never allocates (allocation is not capturable); 32 MiB is what
/// NVIDIA recommends for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

/// A cuBLAS handle bound to one stream, a cuBLASLt handle, and the workspace both use (their calls are
/// ordered on the one stream, so they never use it at the same time). Destroyed on drop.
#[derive(Debug)]
pub struct Blas {
    handle: bl::cublasHandle_t,
    lt: BlasLt,
    pub(crate) workspace: Buffer,
}

impl Blas {
    pub(crate) fn new(stream: &Stream) -> Result<Blas> {
        libs::cublas()?;
        stream.device().bind()?;
        let workspace = Buffer::alloc(stream.device(), DType::U8, WORKSPACE_BYTES)?;
        let handle =
            cudarc::cublas::result::create_handle().map_err(|e| Error::Cublas { call: "cublasCreate", status: format!("{:?}", e.0) })?;
        let lt = match BlasLt::new() {
            Ok(lt) => lt,
            Err(e) => {
                // SAFETY: created just above and not yet owned by a Blas.
                let _ = unsafe { bl::cublasDestroy_v2(handle) };
                return Err(e);
            }
        };
        let blas = Blas { handle, lt, workspace };
        // SAFETY: live handle; the stream outlives the handle (the stream owns it).
        unsafe { bl::cublasSetStream_v2(blas.handle, stream.raw() as bl::cudaStream_t) }.check("cublasSetStream")?;
        // SAFETY: the workspace lives as long as the handle (same struct) and any graph that captured it.
        unsafe { bl::cublasSetWorkspace_v2(blas.handle, blas.workspace.ptr()? as *mut c_void, WORKSPACE_BYTES) }
            .check("cublasSetWorkspace")?;
        Ok(blas)
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { bl::cublasDestroy_v2(self.handle) };
    }
}

/// Transpose flag of a GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// `C = act(alpha * op(A) * op(B) + beta * C + bias)`, column-major as in BLAS: op(A) is m x k, op(B) is
/// k x n, C is m x n, bias (optional) has m elements, one per row of C. A and B share a dtype (f32, f16 or
/// bf16); C and the bias are that dtype or f32; accumulation is f32.
#[derive(Debug)]
pub struct Gemm<'a> {
    pub trans_a: Op,
    pub trans_b: Op,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub a: &'a Buffer,
    pub lda: usize,
    pub b: &'a Buffer,
    pub ldb: usize,
    pub beta: f32,
    pub c: &'a Buffer,
    pub ldc: usize,
    pub bias: Option<&'a Buffer>,
    pub activation: Activation,
}

fn data_type(d: DType) -> bl::cudaDataType {
    match d {
        DType::F16 => bl::cudaDataType::CUDA_R_16F,
        DType::BF16 => bl::cudaDataType::CUDA_R_16BF,
        _ => bl::cudaDataType::CUDA_R_32F,
    }
}

/// Checks that a column-major `rows x cols` matrix with leading dimension `ld` fits in `buf`.
fn check_matrix(name: &str, buf: &Buffer, rows: usize, cols: usize, ld: usize) -> Result<()> {
    if ld < rows.max(1) {
        return Err(Error::arg(format!("ld{name}"), format!("at least {} (rows of {name})", rows.max(1)), ld));
    }
    let need = ld * (cols - 1) + rows;
    if buf.len() < need {
        return Err(Error::arg(
            name,
            format!("at least {need} elements for a {rows}x{cols} matrix with ld {ld}"),
            format!("{} elements", buf.len()),
        ));
    }
    Ok(())
}

impl Stream {
    /// Enqueues a GEMM on this stream (a graph node inside capture). See [`Gemm`].
    pub fn gemm(&self, g: &Gemm) -> Result<()> {
        for (name, v) in [("m", g.m), ("n", g.n), ("k", g.k)] {
            if v == 0 || v > i32::MAX as usize {
                return Err(Error::arg(name, "a positive 32-bit size", v));
            }
        }
        let (ta, tb) = (g.a.dtype(), g.b.dtype());
        if !matches!(ta, DType::F32 | DType::F16 | DType::BF16) || ta != tb {
            return Err(Error::arg("b", format!("the same dtype as a, one of f32, f16, bf16 (a is {})", ta.name()), tb.name()));
        }
        if g.c.dtype() != ta && g.c.dtype() != DType::F32 {
            return Err(Error::arg("c", format!("{} or f32", ta.name()), g.c.dtype().name()));
        }
        let (ar, ac) = if g.trans_a == Op::N { (g.m, g.k) } else { (g.k, g.m) };
        let (br, bc) = if g.trans_b == Op::N { (g.k, g.n) } else { (g.n, g.k) };
        check_matrix("a", g.a, ar, ac, g.lda)?;
        check_matrix("b", g.b, br, bc, g.ldb)?;
        check_matrix("c", g.c, g.m, g.n, g.ldc)?;
        if let Some(bias) = g.bias {
            if bias.dtype() != g.c.dtype() {
                return Err(Error::arg("bias", format!("the dtype of c ({})", g.c.dtype().name()), bias.dtype().name()));
            }
            if bias.len() < g.m {
                return Err(Error::arg(
                    "bias",
                    format!("at least {} elements (one per row of c, column-major)", g.m),
                    format!("{} elements", bias.len()),
                ));
            }
            self.same_device(bias.device(), "bias")?;
        }
        let pa = g.a.ptr()?;
        let pb = g.b.ptr()?;
        let pc = g.c.ptr()?;
        for (arg, b) in [("a", g.a), ("b", g.b), ("c", g.c)] {
            self.same_device(b.device(), arg)?;
        }
        if g.bias.is_some() || g.activation != Activation::None {
            let pbias = g.bias.map(Buffer::ptr).transpose()?.unwrap_or(0);
            let call = LtCall {
                key: PlanKey {
                    trans_a: g.trans_a == Op::T,
                    trans_b: g.trans_b == Op::T,
                    m: g.m as u64,
                    n: g.n as u64,
                    k: g.k as u64,
                    lda: g.lda as i64,
                    ldb: g.ldb as i64,
                    ldc: g.ldc as i64,
                    ab: ta,
                    c: g.c.dtype(),
                    bias: g.bias.is_some(),
                    activation: g.activation,
                    align: BlasLt::alignments(pa, pb, pc, pbias),
                },
                alpha: g.alpha,
                beta: g.beta,
                a: pa,
                b: pb,
                c: pc,
                bias: pbias,
            };
            self.with_blas(|blas| blas.lt.matmul(&call, self, Workspace { ptr: blas.workspace.ptr()?, bytes: WORKSPACE_BYTES }))?;
        } else {
            self.gemm_ex(g, pa, pb, pc)?;
        }
        self.track_all(&[g.a, g.b, g.c]);
        if let Some(bias) = g.bias {
            self.track_all(&[bias]);
        }
        Ok(())
    }

    /// A plain GEMM through cublasGemmEx (checked by [`Stream::gemm`]).
    fn gemm_ex(&self, g: &Gemm, pa: u64, pb: u64, pc: u64) -> Result<()> {
        let op = |o| if o == Op::N { bl::cublasOperation_t::CUBLAS_OP_N } else { bl::cublasOperation_t::CUBLAS_OP_T };
        self.with_blas(|blas| {
            // SAFETY: sizes and leading dimensions were checked against the buffers above; alpha/beta are
            // host f32 scalars read at enqueue time (captured by value).
            unsafe {
                bl::cublasGemmEx(
                    blas.handle,
                    op(g.trans_a),
                    op(g.trans_b),
                    g.m as i32,
                    g.n as i32,
                    g.k as i32,
                    &g.alpha as *const f32 as *const c_void,
                    pa as *const c_void,
                    data_type(g.a.dtype()),
                    g.lda as i32,
                    pb as *const c_void,
                    data_type(g.b.dtype()),
                    g.ldb as i32,
                    &g.beta as *const f32 as *const c_void,
                    pc as *mut c_void,
                    data_type(g.c.dtype()),
                    g.ldc as i32,
                    bl::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    bl::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .check("cublasGemmEx")
        })
    }
}
