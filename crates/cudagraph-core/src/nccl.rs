//! NCCL collectives on the engine's streams: a communicator per device, all-reduce, all-gather and
//! broadcast of device buffers, enqueued like any other stream work and so captured into graphs. libnccl
//! is loaded at run time; without it every entry point is [`Error::Unavailable`].

use crate::buffer::Buffer;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::libs;
use crate::stream::Stream;
use cudarc::nccl::sys;
use std::cell::Cell;
use std::rc::Rc;

/// Bytes of an NCCL unique id: what rank 0 makes and every rank is given.
pub const UNIQUE_ID_BYTES: usize = 128;

/// An NCCL status as an engine error (NCCL's name for it and its description).
fn check(r: sys::ncclResult_t, call: &'static str) -> Result<()> {
    if r == sys::ncclResult_t::ncclSuccess {
        return Ok(());
    }
    // SAFETY: ncclGetErrorString returns a static C string for every status.
    let message = unsafe { std::ffi::CStr::from_ptr(sys::ncclGetErrorString(r)) }.to_string_lossy().into_owned();
    Err(Error::Nccl { call, name: format!("{r:?}"), message })
}

/// A fresh unique id for a new communicator (rank 0 makes it and hands it to the others).
pub fn unique_id() -> Result<[u8; UNIQUE_ID_BYTES]> {
    libs::nccl()?;
    let mut id = sys::ncclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
    // SAFETY: writes one unique id.
    check(unsafe { sys::ncclGetUniqueId(&mut id) }, "ncclGetUniqueId")?;
    Ok(id.internal.map(|c| c as u8))
}

/// The loaded NCCL's version (e.g. 22807 for 2.28.7).
pub fn version() -> Result<i32> {
    libs::nccl()?;
    let mut v = 0;
    // SAFETY: writes one int.
    check(unsafe { sys::ncclGetVersion(&mut v) }, "ncclGetVersion")?;
    Ok(v)
}

/// How all-reduce combines the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
    Avg,
}

impl ReduceOp {
    /// Parses `sum`, `prod`, `max`, `min` or `avg`.
    pub fn parse(s: &str) -> Result<ReduceOp> {
        Ok(match s {
            "sum" => ReduceOp::Sum,
            "prod" => ReduceOp::Prod,
            "max" => ReduceOp::Max,
            "min" => ReduceOp::Min,
            "avg" => ReduceOp::Avg,
            _ => return Err(Error::arg("op", "one of sum, prod, max, min, avg", format!("'{s}'"))),
        })
    }

    fn raw(self) -> sys::ncclRedOp_t {
        match self {
            ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
            ReduceOp::Prod => sys::ncclRedOp_t::ncclProd,
            ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
            ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
            ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
        }
    }
}

fn nccl_type(d: DType) -> sys::ncclDataType_t {
    match d {
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::I32 => sys::ncclDataType_t::ncclInt32,
        DType::U32 => sys::ncclDataType_t::ncclUint32,
        DType::I64 => sys::ncclDataType_t::ncclInt64,
        DType::U8 => sys::ncclDataType_t::ncclUint8,
    }
}

/// One rank's NCCL communicator on one device, destroyed on drop (aborted instead after a failure).
#[derive(Debug)]
pub struct Communicator {
    raw: sys::ncclComm_t,
    device: Rc<Device>,
    rank: usize,
    size: usize,
    aborted: Cell<bool>,
}

impl Communicator {
    /// Joins the communicator `id` names as `rank` of `size` on `device`. Blocks until every rank has
    /// joined (each rank in its own process or thread).
    pub fn new(device: &Rc<Device>, id: &[u8], rank: usize, size: usize) -> Result<Communicator> {
        libs::nccl()?;
        if id.len() != UNIQUE_ID_BYTES {
            return Err(Error::arg("id", format!("{UNIQUE_ID_BYTES} bytes (a uniqueId)"), format!("{} bytes", id.len())));
        }
        if !(1..=i32::MAX as usize).contains(&size) || rank >= size {
            return Err(Error::arg("rank/size", "a rank in 0..size-1 and a size of at least 1", format!("rank {rank}, size {size}")));
        }
        device.bind()?;
        let mut uid = sys::ncclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
        for (d, s) in uid.internal.iter_mut().zip(id) {
            *d = *s as ::core::ffi::c_char;
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one communicator handle; the id is passed by value.
        check(unsafe { sys::ncclCommInitRank(&mut raw, size as i32, uid, rank as i32) }, "ncclCommInitRank")?;
        Ok(Communicator { raw, device: device.clone(), rank, size, aborted: Cell::new(false) })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    fn live(&self) -> Result<()> {
        if self.aborted.get() {
            return Err(Error::Disposed("communicator (aborted)"));
        }
        Ok(())
    }

    /// Whether a failed call leaves the communicator unusable: it is aborted so no rank waits on it.
    fn guard(&self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            let _ = self.abort();
        }
        r
    }

    /// Reduces `buf` across the ranks in place with `op`, on `stream` (a graph node while it captures).
    pub fn all_reduce(&self, stream: &Stream, buf: &Buffer, op: ReduceOp) -> Result<()> {
        self.live()?;
        stream.same_device(&self.device, "communicator")?;
        let p = stream.use_buffer(buf, "buffer")?;
        // SAFETY: the range lies inside a live allocation on the communicator's device; NCCL orders the
        // work on the stream.
        let r = unsafe {
            sys::ncclAllReduce(
                p as *const _,
                p as *mut _,
                buf.len(),
                nccl_type(buf.dtype()),
                op.raw(),
                self.raw,
                stream.raw() as sys::cudaStream_t,
            )
        };
        self.guard(check(r, "ncclAllReduce"))
    }

    /// Gathers every rank's `send` into `recv` (rank r's at r * send.len), on `stream`.
    pub fn all_gather(&self, stream: &Stream, send: &Buffer, recv: &Buffer) -> Result<()> {
        self.live()?;
        stream.same_device(&self.device, "communicator")?;
        if recv.dtype() != send.dtype() || recv.len() != send.len() * self.size {
            return Err(Error::arg(
                "recv",
                format!("{} elements of {} (send's length times the size)", send.len() * self.size, send.dtype().name()),
                format!("{} elements of {}", recv.len(), recv.dtype().name()),
            ));
        }
        let s = stream.use_buffer(send, "send")?;
        let d = stream.use_buffer(recv, "recv")?;
        // SAFETY: both ranges lie inside live allocations (recv holds size * send.len elements).
        let r = unsafe {
            sys::ncclAllGather(s as *const _, d as *mut _, send.len(), nccl_type(send.dtype()), self.raw, stream.raw() as sys::cudaStream_t)
        };
        self.guard(check(r, "ncclAllGather"))
    }

    /// Copies rank `root`'s `buf` into every rank's `buf`, on `stream`.
    pub fn broadcast(&self, stream: &Stream, buf: &Buffer, root: usize) -> Result<()> {
        self.live()?;
        stream.same_device(&self.device, "communicator")?;
        if root >= self.size {
            return Err(Error::arg("root", format!("a rank in 0..{}", self.size - 1), root));
        }
        let p = stream.use_buffer(buf, "buffer")?;
        // SAFETY: the range lies inside a live allocation.
        let r = unsafe {
            sys::ncclBroadcast(
                p as *const _,
                p as *mut _,
                buf.len(),
                nccl_type(buf.dtype()),
                root as i32,
                self.raw,
                stream.raw() as sys::cudaStream_t,
            )
        };
        self.guard(check(r, "ncclBroadcast"))
    }

    /// Aborts the communicator: pending collectives end and no rank waits on this one any more.
    pub fn abort(&self) -> Result<()> {
        if self.aborted.replace(true) {
            return Ok(());
        }
        // SAFETY: aborts and frees the live handle once.
        check(unsafe { sys::ncclCommAbort(self.raw) }, "ncclCommAbort")
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        if !self.aborted.get() {
            let _ = self.device.bind();
            // SAFETY: destroyed once, after its work (callers synchronise the streams first).
            let _ = unsafe { sys::ncclCommDestroy(self.raw) };
        }
    }
}
