//! Device memory: allocations (RAII) and typed buffers, which are views on an allocation.

use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Check, Error, Result};
use crate::stream::StreamInner;
use cudarc::driver::sys;
use std::cell::Cell;
use std::rc::Rc;

/// How an allocation was made, which decides how it is freed.
#[derive(Debug)]
pub(crate) enum AllocKind {
    /// `cuMemAlloc`: freed with `cuMemFree`.
    Plain,
    /// `cuMemAllocAsync` outside capture: freed stream-ordered on the stream that made it.
    StreamOrdered(Rc<StreamInner>),
    /// `cuMemAllocAsync` inside capture: a graph memory node; the graph owns the memory.
    Graph,
    /// Memory another owner allocated and frees (a stage's mapped pinned read-back area), kept alive as
    /// long as any buffer over it.
    Borrowed { _keep: Keep },
}

/// Whatever keeps borrowed memory alive (held, never read).
pub(crate) struct Keep {
    _owner: Rc<dyn std::any::Any>,
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep")
    }
}

/// One device allocation. Buffers share it through `Rc`; graphs that captured it count themselves in
/// `graph_uses`, so it cannot be disposed under them.
#[derive(Debug)]
pub struct Allocation {
    pub(crate) device: Rc<Device>,
    ptr: sys::CUdeviceptr,
    bytes: usize,
    pub(crate) kind: AllocKind,
    freed: Cell<bool>,
    graph_uses: Cell<u32>,
}

impl Allocation {
    pub(crate) fn new(device: Rc<Device>, ptr: sys::CUdeviceptr, bytes: usize, kind: AllocKind) -> Rc<Self> {
        Rc::new(Allocation { device, ptr, bytes, kind, freed: Cell::new(false), graph_uses: Cell::new(0) })
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The device pointer, or [`Error::Disposed`].
    #[inline]
    pub fn ptr(&self) -> Result<sys::CUdeviceptr> {
        if self.freed.get() {
            return Err(Error::Disposed("buffer"));
        }
        Ok(self.ptr)
    }

    /// Number of live graphs that captured this allocation.
    pub fn graph_uses(&self) -> u32 {
        self.graph_uses.get()
    }

    pub(crate) fn add_graph_use(&self) {
        self.graph_uses.set(self.graph_uses.get() + 1);
    }

    pub(crate) fn remove_graph_use(&self) {
        self.graph_uses.set(self.graph_uses.get().saturating_sub(1));
    }

    pub(crate) fn is_graph_owned(&self) -> bool {
        matches!(self.kind, AllocKind::Graph)
    }

    /// Marks the memory released without freeing it (the caller freed it, or a graph owns it).
    pub(crate) fn mark_freed(&self) {
        self.freed.set(true);
    }

    pub(crate) fn is_stream_ordered(&self) -> bool {
        matches!(self.kind, AllocKind::StreamOrdered(_))
    }

    pub(crate) fn is_freed(&self) -> bool {
        self.freed.get()
    }

    /// Frees the memory now. [`Error::InUse`] while a live graph uses it; a second call is a no-op.
    pub fn release(&self) -> Result<()> {
        if self.freed.get() {
            return Ok(());
        }
        if self.graph_uses.get() > 0 {
            return Err(Error::InUse(format!(
                "buffer of {} bytes is used by {} live graph(s); dispose them first",
                self.bytes,
                self.graph_uses.get()
            )));
        }
        self.free_memory()
    }

    fn free_memory(&self) -> Result<()> {
        self.device.bind()?;
        self.freed.set(true);
        match &self.kind {
            AllocKind::Plain => {
                // cuMemFree waits for the device: armed replays are rung first.
                crate::stream::release_all_armed();
                // SAFETY: `ptr` came from cuMemAlloc and is freed once (guarded by `freed`). cuMemFree waits
                // for work using it to finish.
                unsafe { sys::cuMemFree_v2(self.ptr) }.check("cuMemFree")
            }
            AllocKind::StreamOrdered(s) => {
                // Work on other streams (a graph replayed elsewhere) may still use it, and freed memory goes
                // back to the pool for the next allocation at once: wait for the device first. Dispose and
                // drop are not the hot path (a step's scratch is freed with Stream::free_async).
                self.device.synchronize()?;
                // SAFETY: allocated by cuMemAllocAsync on this stream, freed once (guarded by `freed`).
                unsafe { sys::cuMemFreeAsync(self.ptr, s.raw) }.check("cuMemFreeAsync")
            }
            AllocKind::Graph | AllocKind::Borrowed { .. } => Ok(()),
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // Graphs hold an Rc, so graph_uses is 0 here; errors cannot be reported from drop.
        let _ = self.free_memory_on_drop();
    }
}

impl Allocation {
    fn free_memory_on_drop(&self) -> Result<()> {
        if self.freed.get() {
            return Ok(());
        }
        self.free_memory()
    }
}

/// A typed view on an allocation: `len` elements of `dtype` starting `offset` elements in.
#[derive(Clone, Debug)]
pub struct Buffer {
    pub(crate) alloc: Rc<Allocation>,
    dtype: DType,
    offset: usize,
    len: usize,
}

impl Buffer {
    /// Allocates `len` elements of `dtype` with `cuMemAlloc`. Contents are undefined.
    pub fn alloc(device: &Rc<Device>, dtype: DType, len: usize) -> Result<Buffer> {
        check_len(len)?;
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| Error::arg("length", "a length whose byte size fits", len))?;
        device.bind()?;
        let mut ptr = 0;
        // SAFETY: writes one device pointer.
        unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) }.check("cuMemAlloc")?;
        Ok(Buffer::whole(Allocation::new(device.clone(), ptr, bytes, AllocKind::Plain), dtype, len))
    }

    /// Allocates one block for `parts` (dtype, elements), each starting at a multiple of `align` bytes
    /// after the one before, in order: typed views sharing the block, which a single copy can fill from a
    /// host area of the same layout. Contents are undefined.
    pub fn alloc_packed(device: &Rc<Device>, parts: &[(DType, usize)], align: usize) -> Result<Vec<Buffer>> {
        if parts.is_empty() {
            return Err(Error::arg("parts", "at least one part", "none"));
        }
        if !align.is_power_of_two() || align < 16 {
            return Err(Error::arg("align", "a power of two of at least 16 bytes", align));
        }
        let mut offsets = Vec::with_capacity(parts.len());
        let mut bytes = 0usize;
        for (i, &(dtype, len)) in parts.iter().enumerate() {
            check_len(len).map_err(|_| Error::arg(format!("parts[{i}].length"), "a positive number of elements", len))?;
            offsets.push(bytes);
            let part = len.checked_mul(dtype.size()).and_then(|b| b.checked_next_multiple_of(align));
            bytes = part
                .and_then(|b| bytes.checked_add(b))
                .ok_or_else(|| Error::arg(format!("parts[{i}].length"), "a length whose byte size fits", len))?;
        }
        let block = Buffer::alloc(device, DType::U8, bytes)?;
        Ok(parts
            .iter()
            .zip(offsets)
            // Every offset is a multiple of align (>= 16), so of every element size.
            .map(|(&(dtype, len), off)| Buffer { alloc: block.alloc.clone(), dtype, offset: off / dtype.size(), len })
            .collect())
    }

    /// `len` elements of `dtype` at device address `ptr` of memory that `keep` owns (never freed here).
    pub(crate) fn borrowed(device: &Rc<Device>, ptr: sys::CUdeviceptr, keep: Rc<dyn std::any::Any>, dtype: DType, len: usize) -> Buffer {
        Buffer::whole(
            Allocation::new(device.clone(), ptr, len * dtype.size(), AllocKind::Borrowed { _keep: Keep { _owner: keep } }),
            dtype,
            len,
        )
    }

    pub(crate) fn whole(alloc: Rc<Allocation>, dtype: DType, len: usize) -> Buffer {
        Buffer { alloc, dtype, offset: 0, len }
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements (never true: zero-length buffers are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Length in bytes.
    pub fn byte_len(&self) -> usize {
        self.len * self.dtype.size()
    }

    /// Offset of this view in elements from the start of its allocation.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The device this buffer lives on.
    pub fn device(&self) -> &Rc<Device> {
        &self.alloc.device
    }

    /// The shared allocation.
    pub fn allocation(&self) -> &Rc<Allocation> {
        &self.alloc
    }

    /// Device address of the first element, or [`Error::Disposed`].
    #[inline]
    pub fn ptr(&self) -> Result<sys::CUdeviceptr> {
        Ok(self.alloc.ptr()? + (self.offset * self.dtype.size()) as u64)
    }

    /// A view of `len` elements starting at element `offset` of this buffer, sharing its memory.
    pub fn view(&self, offset: usize, len: usize) -> Result<Buffer> {
        check_len(len)?;
        if offset.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(Error::arg(
                "offset/length",
                format!("a range inside 0..{}", self.len),
                format!("{offset}..{}", offset.saturating_add(len)),
            ));
        }
        self.alloc.ptr()?;
        Ok(Buffer { alloc: self.alloc.clone(), dtype: self.dtype, offset: self.offset + offset, len })
    }

    /// Copies `src` (exactly `byte_len()` bytes) to the device. Synchronises the context before (no
    /// enqueued kernel still reads the old contents) and after (the data has landed) the copy.
    pub fn upload(&self, src: &[u8]) -> Result<()> {
        self.check_host_len("source", src.len())?;
        let dst = self.ptr()?;
        self.device().synchronize()?;
        // SAFETY: `src` holds byte_len bytes, the destination range lies inside the allocation.
        unsafe { sys::cuMemcpyHtoD_v2(dst, src.as_ptr() as *const _, src.len()) }.check("cuMemcpyHtoD")?;
        self.device().synchronize()
    }

    /// Copies the buffer into `dst` (exactly `byte_len()` bytes) after all enqueued work is done.
    pub fn download(&self, dst: &mut [u8]) -> Result<()> {
        self.check_host_len("destination", dst.len())?;
        let src = self.ptr()?;
        self.device().synchronize()?;
        // SAFETY: `dst` holds byte_len bytes, the source range lies inside the allocation.
        unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut _, src, dst.len()) }.check("cuMemcpyDtoH")
    }

    /// Frees the allocation now (all views of it become disposed). [`Error::InUse`] while a live graph
    /// uses it; the buffer is then left intact.
    pub fn dispose(&self) -> Result<()> {
        self.alloc.release()
    }

    pub(crate) fn check_host_len(&self, arg: &str, bytes: usize) -> Result<()> {
        if bytes != self.byte_len() {
            return Err(Error::arg(
                arg,
                format!("{} bytes ({} x {})", self.byte_len(), self.len, self.dtype.name()),
                format!("{bytes} bytes"),
            ));
        }
        Ok(())
    }
}

pub(crate) fn check_len(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::arg("length", "a positive number of elements", 0));
    }
    Ok(())
}
