//! cuBLASLt GEMMs with a fused epilogue (bias, ReLU, GELU), capturable.
//!
//! `relu(x W + b)` as one kernel instead of a GEMM and an element-wise pass over the output. Descriptors,
//! layouts and the heuristic's algorithm are made once per shape and kept: a heuristic query costs tens
//! of µs, too much for an eager step that runs dozens of GEMMs. One algorithm per shape also means graphs
//! and eager runs of a shape give the same bits.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::stream::Stream;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;

/// Element-wise function applied to the GEMM's result (after the bias), inside the GEMM kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// The tanh approximation, as cuBLASLt computes it.
    Gelu,
}

impl Activation {
    /// Parses the binding's code: 0 none, 1 relu, 2 gelu.
    pub fn from_code(code: u32) -> Result<Activation> {
        match code {
            0 => Ok(Activation::None),
            1 => Ok(Activation::Relu),
            2 => Ok(Activation::Gelu),
            _ => Err(Error::arg("activation", "none, relu or gelu", code)),
        }
    }
}

fn lt_err(call: &'static str) -> impl Fn(lt::CublasError) -> Error {
    move |e| Error::Cublas { call, status: format!("{:?}", e.0) }
}

fn lt_check(r: std::result::Result<(), lt::CublasError>, call: &'static str) -> Result<()> {
    r.map_err(lt_err(call))
}

/// The same mapping as `blas::data_type`, in cuBLASLt's own copy of the enum.
fn data_type(d: DType) -> sys::cudaDataType {
    match d {
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        _ => sys::cudaDataType::CUDA_R_32F,
    }
}

/// The largest power of two up to 256 that divides `ptr` (what the heuristic must assume of a pointer).
fn alignment(ptr: u64) -> u32 {
    if ptr == 0 {
        256
    } else {
        (1u32 << ptr.trailing_zeros().min(8)).min(256)
    }
}

/// Everything the chosen algorithm depends on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct PlanKey {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub lda: i64,
    pub ldb: i64,
    pub ldc: i64,
    pub ab: DType,
    pub c: DType,
    pub bias: bool,
    pub activation: Activation,
    /// Alignments (bytes) of a, b, c and the bias.
    pub align: [u32; 4],
}

struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(d: DType, rows: u64, cols: u64, ld: i64) -> Result<Layout> {
        lt::create_matrix_layout(data_type(d), rows, cols, ld).map(Layout).map_err(lt_err("cublasLtMatrixLayoutCreate"))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created once in Layout::new, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);

impl Desc {
    fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T, call: &'static str) -> Result<()> {
        // SAFETY: `value` is the attribute's documented type and is read during the call only.
        lt_check(unsafe { lt::set_matmul_desc_attribute(self.0, attr, value as *const T as *const c_void, size_of::<T>()) }, call)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once in Plan::new, destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);

impl Pref {
    fn set<T>(&self, attr: sys::cublasLtMatmulPreferenceAttributes_t, value: &T) -> Result<()> {
        // SAFETY: `value` is the attribute's documented type and is read during the call only.
        lt_check(
            unsafe { lt::set_matmul_pref_attribute(self.0, attr, value as *const T as *const c_void, size_of::<T>()) },
            "cublasLtMatmulPreferenceSetAttribute",
        )
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// A GEMM shape made ready: descriptor, the three layouts (C doubles as D) and the algorithm.
struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    c: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
}

impl Plan {
    fn new(handle: sys::cublasLtHandle_t, key: &PlanKey, workspace_bytes: usize) -> Result<Plan> {
        use sys::cublasLtMatmulDescAttributes_t as D;
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let desc = lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F)
            .map(Desc)
            .map_err(lt_err("cublasLtMatmulDescCreate"))?;
        // cublasOperation_t as an int: 0 N, 1 T (cudarc's cublasLt bindings leave the enum out).
        let op = |t: bool| t as i32;
        desc.set(D::CUBLASLT_MATMUL_DESC_TRANSA, &op(key.trans_a), "cublasLtMatmulDescSetAttribute(TRANSA)")?;
        desc.set(D::CUBLASLT_MATMUL_DESC_TRANSB, &op(key.trans_b), "cublasLtMatmulDescSetAttribute(TRANSB)")?;
        let epilogue = match (key.bias, key.activation) {
            (false, Activation::None) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT,
            (false, Activation::Relu) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU,
            (false, Activation::Gelu) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU,
            (true, Activation::None) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            (true, Activation::Relu) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_RELU_BIAS,
            (true, Activation::Gelu) => sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_BIAS,
        };
        desc.set(D::CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, "cublasLtMatmulDescSetAttribute(EPILOGUE)")?;
        let (ar, ac) = if key.trans_a { (key.k, key.m) } else { (key.m, key.k) };
        let (br, bc) = if key.trans_b { (key.n, key.k) } else { (key.k, key.n) };
        let a = Layout::new(key.ab, ar, ac, key.lda)?;
        let b = Layout::new(key.ab, br, bc, key.ldb)?;
        let c = Layout::new(key.c, key.m, key.n, key.ldc)?;

        let pref = lt::create_matmul_pref().map(Pref).map_err(lt_err("cublasLtMatmulPreferenceCreate"))?;
        pref.set(P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes)?;
        let [aa, ab, ac_, abias] = key.align;
        pref.set(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa)?;
        pref.set(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab)?;
        pref.set(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac_)?;
        pref.set(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac_)?;
        // The bias pointer is set per call; give the heuristic a pointer of the alignment it will have.
        if key.bias {
            desc.set(D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &(abias as u64), "cublasLtMatmulDescSetAttribute(BIAS_POINTER)")?;
        }
        // SAFETY: all descriptors are live (owned above) and describe the key's shapes.
        let found = unsafe { lt::get_matmul_algo_heuristic(handle, desc.0, a.0, b.0, c.0, c.0, pref.0) };
        let heuristic = found.map_err(|e| Error::Cublas {
            call: "cublasLtMatmulAlgoGetHeuristic",
            status: format!("{:?} (no algorithm for this GEMM and epilogue)", e.0),
        })?;
        Ok(Plan { desc, a, b, c, algo: heuristic.algo })
    }
}

/// Most plans kept per stream; past it the cache starts over (shapes of a model are a few dozen).
const MAX_PLANS: usize = 1024;

/// A cuBLASLt handle and its plans. Destroyed on drop (plans first).
pub(crate) struct BlasLt {
    plans: RefCell<HashMap<PlanKey, Plan>>,
    handle: sys::cublasLtHandle_t,
}

impl std::fmt::Debug for BlasLt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlasLt {{ plans: {} }}", self.plans.borrow().len())
    }
}

/// The raw pointers and scalars of one cuBLASLt GEMM; shapes are in its [`PlanKey`].
pub(crate) struct LtCall {
    pub key: PlanKey,
    pub alpha: f32,
    pub beta: f32,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub bias: u64,
}

impl BlasLt {
    pub(crate) fn new() -> Result<BlasLt> {
        let handle = lt::create_handle().map_err(lt_err("cublasLtCreate"))?;
        Ok(BlasLt { plans: RefCell::new(HashMap::new()), handle })
    }

    /// Alignments to put in a [`PlanKey`] for these pointers.
    pub(crate) fn alignments(a: u64, b: u64, c: u64, bias: u64) -> [u32; 4] {
        [alignment(a), alignment(b), alignment(c), alignment(bias)]
    }

    /// Enqueues `c = epilogue(alpha * op(a) op(b) + beta * c [+ bias])` on `stream`, making the shape's
    /// plan first if it is new.
    pub(crate) fn matmul(&self, call: &LtCall, stream: &Stream, workspace: Workspace) -> Result<()> {
        let mut plans = self.plans.borrow_mut();
        if plans.len() >= MAX_PLANS && !plans.contains_key(&call.key) {
            plans.clear();
        }
        // One hash lookup per GEMM in the common case (the plan exists).
        let plan = match plans.entry(call.key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Plan::new(self.handle, &call.key, workspace.bytes)?),
        };
        if call.key.bias {
            plan.desc.set(
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &call.bias,
                "cublasLtMatmulDescSetAttribute(BIAS_POINTER)",
            )?;
        }
        // SAFETY: the caller checked shapes and leading dimensions against the buffers; alpha and beta are
        // host f32 scalars read at enqueue time (captured by value); the workspace outlives the call.
        let r = unsafe {
            lt::matmul(
                self.handle,
                plan.desc.0,
                &call.alpha as *const f32 as *const c_void,
                &call.beta as *const f32 as *const c_void,
                call.a as *const c_void,
                plan.a.0,
                call.b as *const c_void,
                plan.b.0,
                call.c as *const c_void,
                plan.c.0,
                call.c as *mut c_void,
                plan.c.0,
                &plan.algo,
                workspace.ptr as *mut c_void,
                workspace.bytes,
                stream.raw() as sys::cudaStream_t,
            )
        };
        lt_check(r, "cublasLtMatmul")
    }
}

/// The device workspace a GEMM may use.
#[derive(Clone, Copy)]
pub(crate) struct Workspace {
    pub ptr: u64,
    pub bytes: usize,
}

impl Drop for BlasLt {
    fn drop(&mut self) {
        self.plans.get_mut().clear();
        // SAFETY: created once in BlasLt::new, destroyed once, after its plans.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}
