//! Streams: kernel launches, copies, memsets, stream-ordered allocation, and capture into graphs.

use crate::blas::Blas;
use crate::buffer::{check_len, AllocKind, Allocation, Buffer};
use crate::device::{Device, GraphMemStats};
use crate::dtype::DType;
use crate::error::{Check, Error, Result};
use crate::event::Event;
use crate::graph::{Graph, GraphMemory};
use crate::module::{ArgKind, Kernel, Module};
use cudarc::driver::sys;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::ffi::c_void;
use std::rc::Rc;
use std::time::Instant;

/// How a capture interacts with unsafe API calls on other threads (`CUstreamCaptureMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureMode {
    Global,
    ThreadLocal,
    Relaxed,
}

impl CaptureMode {
    /// Parses `'global' | 'thread_local' | 'relaxed'`.
    pub fn parse(s: &str) -> Result<CaptureMode> {
        match s {
            "global" => Ok(CaptureMode::Global),
            "thread_local" => Ok(CaptureMode::ThreadLocal),
            "relaxed" => Ok(CaptureMode::Relaxed),
            _ => Err(Error::arg("mode", "one of global, thread_local, relaxed", format!("'{s}'"))),
        }
    }

    fn raw(self) -> sys::CUstreamCaptureMode {
        match self {
            CaptureMode::Global => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL,
            CaptureMode::ThreadLocal => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
            CaptureMode::Relaxed => sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
        }
    }
}

/// Grid and block dimensions and dynamic shared memory (bytes; past 48 KiB the kernel is opted in, up to
/// the device's per-block limit) of a launch.
#[derive(Clone, Copy, Debug, Default)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    /// Programmatic dependent launch (compute capability 9.0+): the kernel may start while the previous
    /// kernel on the stream is still running, overlapping its prologue with that kernel's tail, inside a
    /// graph too. The kernel must execute `griddepcontrol.wait` before it touches what the previous kernel
    /// writes; the previous one may let it start early with `griddepcontrol.launch_dependents`.
    pub programmatic: bool,
    /// A cooperative launch: every block of the grid is resident at once, so blocks may wait for each
    /// other (a grid-wide barrier), inside a graph too. The launch fails with
    /// `CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE` when the grid exceeds what the device holds at once.
    pub cooperative: bool,
}

/// One kernel argument as given by the caller; checked against the kernel's declared [`ArgKind`].
#[derive(Debug)]
pub enum KernelArg<'a> {
    Buffer(&'a Buffer),
    Number(f64),
    BigInt(i128),
}

/// Page-locked host memory, freed on drop.
#[derive(Debug)]
pub(crate) struct Pinned {
    ptr: *mut u8,
    cap: usize,
}

impl Pinned {
    pub(crate) fn new(cap: usize) -> Result<Pinned> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one host pointer; PORTABLE so any context may use it.
        unsafe { sys::cuMemHostAlloc(&mut ptr, cap, sys::CU_MEMHOSTALLOC_PORTABLE) }.check("cuMemHostAlloc")?;
        Ok(Pinned { ptr: ptr as *mut u8, cap })
    }

    /// Pinned memory that kernels can also read and write, through [`Pinned::device_ptr`].
    pub(crate) fn new_mapped(cap: usize) -> Result<Pinned> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: writes one host pointer; PORTABLE so any context may use it, DEVICEMAP so kernels can.
        unsafe { sys::cuMemHostAlloc(&mut ptr, cap, sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP) }
            .check("cuMemHostAlloc")?;
        Ok(Pinned { ptr: ptr as *mut u8, cap })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// The device address of memory made by [`Pinned::new_mapped`] (in the current context).
    pub(crate) fn device_ptr(&self) -> Result<sys::CUdeviceptr> {
        let mut d = 0;
        // SAFETY: the pointer came from cuMemHostAlloc with DEVICEMAP; writes one device pointer.
        unsafe { sys::cuMemHostGetDevicePointer_v2(&mut d, self.ptr as *mut c_void, 0) }.check("cuMemHostGetDevicePointer")?;
        Ok(d)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // Freeing pinned memory may wait for the device.
        release_all_armed();
        // SAFETY: allocated by cuMemHostAlloc, freed once, after the copies using it completed (owners
        // synchronise first).
        let _ = unsafe { sys::cuMemFreeHost(self.ptr as *mut c_void) };
    }
}

// SAFETY: pinned host memory is plain process memory; ownership moves with the value.
unsafe impl Send for Pinned {}

/// A pinned upload staging area and the event that says the copy out of it is done.
#[derive(Debug)]
struct Staging {
    pinned: Pinned,
    done: Event,
}

/// What a graph keeps alive: the allocations, modules and pinned sources its nodes point at.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub(crate) allocs: Vec<Rc<Allocation>>,
    pub(crate) modules: Vec<Rc<Module>>,
    pub(crate) pinned: Vec<Pinned>,
    seen: HashSet<*const Allocation>,
}

impl Resources {
    fn add_alloc(&mut self, a: &Rc<Allocation>) {
        if self.seen.insert(Rc::as_ptr(a)) {
            self.allocs.push(a.clone());
        }
    }

    fn add_module(&mut self, m: &Rc<Module>) {
        if !self.modules.iter().any(|x| Rc::ptr_eq(x, m)) {
            self.modules.push(m.clone());
        }
    }
}

/// State of a capture in progress.
#[derive(Debug)]
pub(crate) struct CaptureState {
    resources: Resources,
    started: Instant,
}

impl CaptureState {
    /// Marks the memory nodes' allocations released: their memory only exists inside the graph (or, for an
    /// aborted capture, nowhere), so a buffer from them must be a DisposedError, never an address.
    fn release_graph_allocations(&self) {
        for a in self.resources.allocs.iter().filter(|a| a.is_graph_owned()) {
            a.mark_freed();
        }
    }
}

/// Options for ending a capture.
#[derive(Clone, Copy, Debug)]
pub struct EndCapture {
    /// Instantiate the graph (default true); without it the graph can only serve as an update source.
    pub instantiate: bool,
    /// Upload the instantiated graph to the device now, so its first launch is not slower (default true).
    pub upload: bool,
    /// Measure the memory the graph adds (two `cuMemGetInfo` calls, a few µs each, plus the graph-pool
    /// attributes when it has memory nodes); default true.
    pub measure_memory: bool,
}

impl Default for EndCapture {
    fn default() -> Self {
        EndCapture { instantiate: true, upload: true, measure_memory: true }
    }
}

/// A replay launched ahead of its inputs and waiting at its doorbell (a [`crate::HostStage`] with one):
/// whatever else is enqueued on the stream would queue behind it, so any other use of the stream first rings
/// it to run as it is (the inputs its device buffers hold).
#[derive(Debug)]
pub(crate) struct Armed {
    /// The stage that armed it.
    pub(crate) owner: usize,
    /// The doorbell word, in pinned host memory `_keep` holds alive.
    pub(crate) bell: *mut u32,
    pub(crate) _keep: Rc<dyn std::any::Any>,
}

/// What a doorbell word says to a replay's gate: run without copying inputs.
pub(crate) const BELL_GO: u32 = 3;

impl Armed {
    /// Rings the doorbell to run the replay with its device inputs as they are (it leaves the stream's slot
    /// first: a stage whose replay is no longer there knows it was rung).
    pub(crate) fn release(self) {
        // SAFETY: the word is an aligned u32 in live pinned memory (`_keep`) that the device reads, so the host
        // writes it atomically, as its stage does.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.bell) }.store(BELL_GO, std::sync::atomic::Ordering::Release);
    }
}

/// The shared part of a stream; allocations made stream-ordered on it hold it alive.
#[derive(Debug)]
pub struct StreamInner {
    pub(crate) device: Rc<Device>,
    pub(crate) raw: sys::CUstream,
    capture: RefCell<Option<CaptureState>>,
    blas: RefCell<Option<Blas>>,
    staging: RefCell<Vec<Staging>>,
    /// A replay waiting at its doorbell ([`Armed`]); `is_armed` mirrors it for the hot path.
    armed: RefCell<Option<Armed>>,
    is_armed: Cell<bool>,
    /// Whether the stream is in `ARMED_STREAMS`.
    listed: Cell<bool>,
}

thread_local! {
    /// Streams that have had a replay armed: a wait for the whole device, or a call that makes one (freeing
    /// memory, unloading a module), rings theirs first ([`release_all_armed`]).
    static ARMED_STREAMS: RefCell<Vec<std::rc::Weak<StreamInner>>> = const { RefCell::new(Vec::new()) };
}

/// Rings every armed replay of this thread's streams to run as it is: a wait for the whole device would
/// never end while one waits at its gate.
pub(crate) fn release_all_armed() {
    let streams = ARMED_STREAMS.with(|a| std::mem::take(&mut *a.borrow_mut()));
    for s in streams.iter().filter_map(std::rc::Weak::upgrade) {
        s.listed.set(false);
        s.release_armed();
    }
}

impl StreamInner {
    /// Rings the replay armed on this stream, if any.
    #[cold]
    fn release_armed(&self) {
        self.is_armed.set(false);
        let armed = self.armed.borrow_mut().take();
        if let Some(a) = armed {
            a.release();
        }
    }
}

impl Drop for StreamInner {
    fn drop(&mut self) {
        let _ = self.device.bind();
        self.release_armed();
        if let Some(st) = self.capture.get_mut().take() {
            st.release_graph_allocations();
            let mut g = std::ptr::null_mut();
            // SAFETY: ends the capture left open; the partial graph (if any) is destroyed.
            unsafe {
                let _ = sys::cuStreamEndCapture(self.raw, &mut g);
                if !g.is_null() {
                    let _ = sys::cuGraphDestroy(g);
                }
            }
        }
        self.blas.get_mut().take();
        // SAFETY: waits for the stream's work so staging memory is unused, then destroys it once.
        unsafe {
            let _ = sys::cuStreamSynchronize(self.raw);
        }
        self.staging.get_mut().clear();
        // SAFETY: destroyed once.
        let _ = unsafe { sys::cuStreamDestroy_v2(self.raw) };
    }
}

/// A non-blocking CUDA stream (it never synchronises implicitly with the legacy default stream).
#[derive(Debug, Clone)]
pub struct Stream {
    inner: Rc<StreamInner>,
}

/// Kernel parameters packed on the stack; kernels with more take a heap allocation per launch.
const INLINE_ARGS: usize = 24;
/// At most this many pinned upload staging areas are kept per stream.
const MAX_STAGING: usize = 8;
/// Smallest pinned staging area, bytes.
const MIN_STAGING: usize = 64 << 10;
/// Bytes of a file read into one pinned staging area by `upload_file`.
const FILE_CHUNK: usize = 8 << 20;

impl Stream {
    /// Creates a non-blocking stream on `device`.
    pub fn new(device: &Rc<Device>) -> Result<Stream> {
        device.bind()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one stream handle.
        unsafe { sys::cuStreamCreate(&mut raw, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32) }.check("cuStreamCreate")?;
        Ok(Stream {
            inner: Rc::new(StreamInner {
                device: device.clone(),
                raw,
                capture: RefCell::new(None),
                blas: RefCell::new(None),
                staging: RefCell::new(Vec::new()),
                armed: RefCell::new(None),
                is_armed: Cell::new(false),
                listed: Cell::new(false),
            }),
        })
    }

    /// The raw stream handle, for enqueueing work or waiting: a replay armed on the stream is rung first
    /// (it runs with the inputs its buffers hold), since the work would queue behind it.
    #[inline]
    pub fn raw(&self) -> sys::CUstream {
        if self.inner.is_armed.get() {
            self.inner.release_armed();
        }
        self.inner.raw
    }

    /// Leaves `armed` on the stream: the next use of the stream other than its stage's rings it (and one
    /// armed there before it).
    pub(crate) fn arm(&self, armed: Armed) {
        self.inner.release_armed();
        *self.inner.armed.borrow_mut() = Some(armed);
        self.inner.is_armed.set(true);
        if !self.inner.listed.replace(true) {
            ARMED_STREAMS.with(|a| a.borrow_mut().push(Rc::downgrade(&self.inner)));
        }
    }

    /// Takes the armed replay back if `owner` armed it (its stage rings it itself); else leaves it.
    pub(crate) fn take_armed(&self, owner: usize) -> Option<Armed> {
        let mut slot = self.inner.armed.borrow_mut();
        if slot.as_ref().is_some_and(|a| a.owner == owner) {
            self.inner.is_armed.set(false);
            return slot.take();
        }
        None
    }

    /// The stream's device.
    pub fn device(&self) -> &Rc<Device> {
        &self.inner.device
    }

    pub(crate) fn same_device(&self, other: &Rc<Device>, what: &str) -> Result<()> {
        if other.ordinal() != self.inner.device.ordinal() {
            return Err(Error::arg(
                what,
                format!("an object on device {}", self.inner.device.ordinal()),
                format!("one on device {}", other.ordinal()),
            ));
        }
        Ok(())
    }

    fn track(&self, b: &Buffer) {
        if let Some(st) = self.inner.capture.borrow_mut().as_mut() {
            st.resources.add_alloc(b.allocation());
        }
    }

    pub(crate) fn track_all(&self, bufs: &[&Buffer]) {
        for b in bufs {
            self.track(b);
        }
    }

    /// `b`'s address after checking it is on this stream's device; a capture keeps its allocation alive.
    pub(crate) fn use_buffer(&self, b: &Buffer, arg: &str) -> Result<sys::CUdeviceptr> {
        let p = self.check_buffer(b, arg)?;
        self.track(b);
        Ok(p)
    }

    fn check_buffer(&self, b: &Buffer, arg: &str) -> Result<sys::CUdeviceptr> {
        self.same_device(b.device(), arg)?;
        b.ptr()
    }

    /// Blocks until all work on the stream is done.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live handle.
        unsafe { sys::cuStreamSynchronize(self.raw()) }.check("cuStreamSynchronize")
    }

    /// Whether all work on the stream is done.
    pub fn query(&self) -> Result<bool> {
        // SAFETY: live handle.
        match unsafe { sys::cuStreamQuery(self.raw()) } {
            sys::CUresult::CUDA_SUCCESS => Ok(true),
            sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            e => e.check("cuStreamQuery").map(|()| false),
        }
    }

    /// Makes later work on this stream wait for `event`'s last record.
    pub fn wait_event(&self, event: &Event) -> Result<()> {
        // SAFETY: live handles.
        unsafe { sys::cuStreamWaitEvent(self.raw(), event.raw, 0) }.check("cuStreamWaitEvent")
    }

    /// Launches `kernel` with `cfg`; `args` are checked against its declared signature first, so a bad
    /// argument enqueues nothing.
    pub fn launch(&self, kernel: &Kernel, cfg: &LaunchConfig, args: &[KernelArg]) -> Result<()> {
        self.same_device(kernel.module.device(), "kernel")?;
        let sig = &kernel.signature;
        if args.len() != sig.len() {
            return Err(Error::arg(
                "args",
                format!("{} arguments for {}({})", sig.len(), kernel.name(), sig.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")),
                format!("{} arguments", args.len()),
            ));
        }
        for (i, d) in cfg.grid.iter().chain(cfg.block.iter()).enumerate() {
            if *d == 0 {
                return Err(Error::arg(if i < 3 { "grid" } else { "block" }, "dimensions of at least 1", 0));
            }
        }
        // Parameters live on the stack for the common case: no allocation per launch.
        let mut inline_slots = [0u64; INLINE_ARGS];
        let mut inline_params = [std::ptr::null_mut::<c_void>(); INLINE_ARGS];
        let (mut heap_slots, mut heap_params);
        let (slots, params): (&mut [u64], &mut [*mut c_void]) = if args.len() <= INLINE_ARGS {
            (&mut inline_slots[..args.len()], &mut inline_params[..args.len()])
        } else {
            heap_slots = vec![0u64; args.len()];
            heap_params = vec![std::ptr::null_mut::<c_void>(); args.len()];
            (&mut heap_slots, &mut heap_params)
        };
        for (i, (arg, kind)) in args.iter().zip(sig).enumerate() {
            slots[i] = pack_arg(self, i, arg, *kind)?;
        }
        for (p, s) in params.iter_mut().zip(slots.iter_mut()) {
            *p = s as *mut u64 as *mut c_void;
        }
        self.launch_params(kernel, cfg, params)?;
        if let Some(st) = self.inner.capture.borrow_mut().as_mut() {
            for a in args {
                if let KernelArg::Buffer(b) = a {
                    st.resources.add_alloc(b.allocation());
                }
            }
        }
        Ok(())
    }

    /// Launches `kernel` with `params` as `cuLaunchKernel` takes them (each points at one parameter's
    /// bytes); a capture keeps the kernel's module. The caller vouches for the parameters.
    pub(crate) fn launch_params(&self, kernel: &Kernel, cfg: &LaunchConfig, params: &mut [*mut c_void]) -> Result<()> {
        self.inner.device.bind()?;
        kernel.allow_shared(cfg.shared_mem_bytes)?;
        if cfg.programmatic || cfg.cooperative {
            self.launch_ex(kernel, cfg, params)?;
        } else {
            // SAFETY: each param points at its value in the kernel parameter's layout (the callers build them
            // so); the values outlive the call, which copies them.
            unsafe {
                sys::cuLaunchKernel(
                    kernel.func,
                    cfg.grid[0],
                    cfg.grid[1],
                    cfg.grid[2],
                    cfg.block[0],
                    cfg.block[1],
                    cfg.block[2],
                    cfg.shared_mem_bytes,
                    self.raw(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            }
            .check("cuLaunchKernel")?;
        }
        if let Some(st) = self.inner.capture.borrow_mut().as_mut() {
            st.resources.add_module(&kernel.module);
        }
        Ok(())
    }

    /// `cuLaunchKernelEx` with the attributes `cfg` asks for (see [`LaunchConfig::programmatic`] and
    /// [`LaunchConfig::cooperative`]).
    fn launch_ex(&self, kernel: &Kernel, cfg: &LaunchConfig, params: &mut [*mut c_void]) -> Result<()> {
        let attr = |id| sys::CUlaunchAttribute {
            id,
            pad: [0; 4],
            // SAFETY: an all-zero value is a valid (empty) attribute value; the one field it uses is set next.
            value: unsafe { std::mem::zeroed() },
        };
        // The attributes set go first; an array, not a Vec, so an eager launch allocates nothing.
        let mut attrs =
            [attr(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_IGNORE), attr(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_IGNORE)];
        let mut n = 0;
        if cfg.programmatic {
            attrs[n] = attr(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION);
            attrs[n].value.programmaticStreamSerializationAllowed = 1;
            n += 1;
        }
        if cfg.cooperative {
            attrs[n] = attr(sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_COOPERATIVE);
            attrs[n].value.cooperative = 1;
            n += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid[0],
            gridDimY: cfg.grid[1],
            gridDimZ: cfg.grid[2],
            blockDimX: cfg.block[0],
            blockDimY: cfg.block[1],
            blockDimZ: cfg.block[2],
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.raw(),
            attrs: attrs.as_mut_ptr(),
            numAttrs: n as u32,
        };
        // SAFETY: the config and its attributes outlive the call; params as in `launch`.
        unsafe { sys::cuLaunchKernelEx(&config, kernel.func, params.as_mut_ptr(), std::ptr::null_mut()) }.check("cuLaunchKernelEx")
    }

    /// Copies `src` to `dst` on the stream (same byte length).
    pub fn copy(&self, dst: &Buffer, src: &Buffer) -> Result<()> {
        let d = self.check_buffer(dst, "dst")?;
        let s = self.check_buffer(src, "src")?;
        if dst.byte_len() != src.byte_len() {
            return Err(Error::arg("src", format!("{} bytes like dst", dst.byte_len()), format!("{} bytes", src.byte_len())));
        }
        // SAFETY: both ranges lie inside live allocations.
        unsafe { sys::cuMemcpyDtoDAsync_v2(d, s, dst.byte_len(), self.raw()) }.check("cuMemcpyDtoDAsync")?;
        self.track(dst);
        self.track(src);
        Ok(())
    }

    /// Sets every byte of `buf` to `byte` on the stream.
    pub fn memset(&self, buf: &Buffer, byte: u8) -> Result<()> {
        let p = self.check_buffer(buf, "buffer")?;
        // SAFETY: the range lies inside a live allocation.
        unsafe { sys::cuMemsetD8Async(p, byte, buf.byte_len(), self.raw()) }.check("cuMemsetD8Async")?;
        self.track(buf);
        Ok(())
    }

    /// Sets every element of `buf` to `value`, converted to the buffer's dtype (rounded for f16/bf16).
    pub fn fill(&self, buf: &Buffer, value: f64) -> Result<()> {
        let p = self.check_buffer(buf, "buffer")?;
        let n = buf.len();
        let int_in = |lo: f64, hi: f64| -> Result<f64> {
            if value.fract() != 0.0 || value < lo || value > hi {
                return Err(Error::arg("value", format!("an integer in {lo}..={hi} for a {} buffer", buf.dtype().name()), value));
            }
            Ok(value)
        };
        // The element's bit pattern and the memset word it takes: 32, 16 or 8 bits.
        let (word, bits, count) = match buf.dtype() {
            DType::F32 => (4, (value as f32).to_bits(), n),
            DType::I32 => (4, int_in(i32::MIN as f64, i32::MAX as f64)? as i32 as u32, n),
            DType::U32 => (4, int_in(0.0, u32::MAX as f64)? as u32, n),
            DType::F16 => (2, half::f16::from_f64(value).to_bits() as u32, n),
            DType::BF16 => (2, half::bf16::from_f64(value).to_bits() as u32, n),
            DType::U8 => (1, int_in(0.0, 255.0)? as u32, n),
            DType::I64 => {
                // A 64-bit pattern is two equal 32-bit words only for 0 and -1.
                let v = int_in(-1.0, 0.0)
                    .map_err(|_| Error::arg("value", "0 or -1 for an i64 buffer (use a kernel for other values)", value))?;
                (4, v as i32 as u32, n * 2)
            }
        };
        match word {
            // SAFETY: `count` words of this size cover exactly the buffer's range, inside a live allocation.
            4 => unsafe { sys::cuMemsetD32Async(p, bits, count, self.raw()) }.check("cuMemsetD32Async"),
            // SAFETY: as above.
            2 => unsafe { sys::cuMemsetD16Async(p, bits as u16, count, self.raw()) }.check("cuMemsetD16Async"),
            // SAFETY: as above.
            _ => unsafe { sys::cuMemsetD8Async(p, bits as u8, count, self.raw()) }.check("cuMemsetD8Async"),
        }?;
        self.track(buf);
        Ok(())
    }

    /// Copies `src` (exactly the buffer's byte length) to `dst` without blocking: the bytes are staged in
    /// pinned memory first, so `src` may be reused at once. Inside capture, the staged bytes belong to
    /// the graph and every replay copies them again.
    pub fn upload_async(&self, dst: &Buffer, src: &[u8]) -> Result<()> {
        dst.check_host_len("source", src.len())?;
        let d = self.check_buffer(dst, "dst")?;
        let capturing = self.inner.capture.borrow().is_some();
        let pinned = if capturing { Pinned::new(src.len())? } else { self.take_staging(src.len())? };
        // SAFETY: `pinned` holds at least src.len() bytes and is not in use by any pending copy.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), pinned.as_ptr(), src.len()) };
        // SAFETY: pinned source and device range are both live for the copy's duration (the pinned area is
        // kept by the graph, or by the staging list until its event completes).
        let r = unsafe { sys::cuMemcpyHtoDAsync_v2(d, pinned.as_ptr() as *const c_void, src.len(), self.raw()) }.check("cuMemcpyHtoDAsync");
        if capturing {
            if let Some(st) = self.inner.capture.borrow_mut().as_mut() {
                st.resources.pinned.push(pinned);
                st.resources.add_alloc(dst.allocation());
            }
            return r;
        }
        let done = Event::new(&self.inner.device, false)?;
        let staged = Staging { pinned, done };
        staged.done.record(self)?;
        self.inner.staging.borrow_mut().push(staged);
        r
    }

    /// Copies `dst.byte_len()` bytes of the file at `path`, from byte `offset`, into `dst`: read chunk by
    /// chunk into pinned staging areas (FILE_CHUNK bytes each, the next read overlapping the last copy), so
    /// no file passes through other host memory whole. Waits until the data is on the device. Not
    /// capturable.
    pub fn upload_file(&self, dst: &Buffer, path: &std::path::Path, offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let d = self.check_buffer(dst, "dst")?;
        if self.inner.capture.borrow().is_some() {
            return Err(Error::Capture("uploadFile cannot be captured: upload before capturing".into()));
        }
        let io = |e: std::io::Error| {
            Error::arg(
                "path",
                format!("a readable file with {} bytes at offset {offset}", dst.byte_len()),
                format!("'{}' ({e})", path.display()),
            )
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let total = dst.byte_len();
        let mut done = 0usize;
        while done < total {
            let n = (total - done).min(FILE_CHUNK);
            let pinned = self.take_staging(n)?;
            // SAFETY: the area holds at least n bytes and no pending copy reads it (take_staging).
            let chunk = unsafe { std::slice::from_raw_parts_mut(pinned.as_ptr(), n) };
            file.read_exact_at(chunk, offset + done as u64).map_err(io)?;
            let event = Event::new(&self.inner.device, false)?;
            // SAFETY: the pinned source holds n bytes and stays in the staging list until the event after the
            // copy completes; the device range lies inside dst.
            unsafe { sys::cuMemcpyHtoDAsync_v2(d + done as u64, pinned.as_ptr() as *const c_void, n, self.raw()) }
                .check("cuMemcpyHtoDAsync")?;
            event.record(self)?;
            self.inner.staging.borrow_mut().push(Staging { pinned, done: event });
            done += n;
        }
        self.synchronize()
    }

    /// A staging area of at least `bytes` whose last copy has finished (waiting for the oldest one if
    /// all are busy).
    fn take_staging(&self, bytes: usize) -> Result<Pinned> {
        let mut list = self.inner.staging.borrow_mut();
        let mut i = 0;
        while i < list.len() {
            if list[i].pinned.cap >= bytes && list[i].done.query()? {
                return Ok(list.swap_remove(i).pinned);
            }
            i += 1;
        }
        if list.len() >= MAX_STAGING {
            let oldest = list.remove(0);
            oldest.done.synchronize()?;
        }
        Pinned::new(bytes.next_power_of_two().max(MIN_STAGING))
    }

    /// Enqueues a copy of `src` into pinned memory and returns a handle that can wait for it on any
    /// thread. Not capturable.
    pub fn download_async(&self, src: &Buffer) -> Result<PendingDownload> {
        let s = self.check_buffer(src, "src")?;
        if self.inner.capture.borrow().is_some() {
            return Err(Error::Capture(
                "downloadAsync cannot be captured: copy into a device buffer inside the graph and download it after replay".into(),
            ));
        }
        let pinned = Pinned::new(src.byte_len())?;
        // SAFETY: pinned destination holds byte_len bytes; it lives in the returned handle until waited on.
        unsafe { sys::cuMemcpyDtoHAsync_v2(pinned.as_ptr() as *mut c_void, s, src.byte_len(), self.raw()) }.check("cuMemcpyDtoHAsync")?;
        Ok(PendingDownload { pinned, len: src.byte_len(), done: Completion::record(self)? })
    }

    /// Records a [`Completion`] for everything enqueued so far. Not capturable.
    pub fn completion(&self) -> Result<Completion> {
        if self.is_capturing() {
            return Err(Error::Capture("an async wait cannot be captured".into()));
        }
        Completion::record(self)
    }

    /// Allocates `len` elements stream-ordered (`cuMemAllocAsync`). Inside capture this becomes a graph
    /// memory node, and the buffer must be freed with [`Stream::free_async`] before the capture ends.
    pub fn alloc_async(&self, dtype: DType, len: usize) -> Result<Buffer> {
        check_len(len)?;
        let bytes = len.checked_mul(dtype.size()).ok_or_else(|| Error::arg("length", "a length whose byte size fits", len))?;
        self.inner.device.bind()?;
        let mut ptr = 0;
        // SAFETY: writes one device pointer.
        unsafe { sys::cuMemAllocAsync(&mut ptr, bytes, self.raw()) }.check("cuMemAllocAsync")?;
        let mut cap = self.inner.capture.borrow_mut();
        let kind = if cap.is_some() { AllocKind::Graph } else { AllocKind::StreamOrdered(self.inner.clone()) };
        let alloc = Allocation::new(self.inner.device.clone(), ptr, bytes, kind);
        if let Some(st) = cap.as_mut() {
            st.resources.add_alloc(&alloc);
        }
        Ok(Buffer::whole(alloc, dtype, len))
    }

    /// Frees a stream-ordered buffer on this stream (inside capture: a graph free node).
    pub fn free_async(&self, buf: &Buffer) -> Result<()> {
        let a = buf.allocation();
        let p = a.ptr()?;
        match &a.kind {
            AllocKind::Plain | AllocKind::Borrowed { .. } => {
                return Err(Error::arg("buffer", "a buffer from allocAsync (use dispose() for others)", "a buffer from alloc"))
            }
            AllocKind::Graph if self.inner.capture.borrow().is_none() => {
                return Err(Error::arg(
                    "buffer",
                    "a buffer allocated in this capture, freed before it ends",
                    "a graph allocation outside its capture",
                ))
            }
            _ => {}
        }
        if a.graph_uses() > 0 {
            return Err(Error::InUse(format!("buffer of {} bytes is used by {} live graph(s)", a.bytes(), a.graph_uses())));
        }
        // SAFETY: the pointer came from cuMemAllocAsync and is freed once (marked below).
        unsafe { sys::cuMemFreeAsync(p, self.raw()) }.check("cuMemFreeAsync")?;
        a.mark_freed();
        Ok(())
    }

    /// Runs a cuBLAS call on this stream's handle, creating the handle (and its workspace) on first use.
    pub(crate) fn with_blas<T>(&self, f: impl FnOnce(&Blas) -> Result<T>) -> Result<T> {
        if self.inner.blas.borrow().is_none() {
            if self.inner.capture.borrow().is_some() {
                return Err(Error::Capture(
                    "cuBLAS is not set up on this stream yet and cannot be inside capture: call stream.prepareBlas() (or run one gemm) before capturing".into(),
                ));
            }
            self.prepare_blas()?;
        }
        let blas = self.inner.blas.borrow();
        let blas = blas.as_ref().expect("prepared above");
        if let Some(st) = self.inner.capture.borrow_mut().as_mut() {
            st.resources.add_alloc(blas.workspace.allocation());
        }
        f(blas)
    }

    /// Creates this stream's cuBLAS handle and workspace now (they cannot be created inside capture).
    pub fn prepare_blas(&self) -> Result<()> {
        if self.inner.blas.borrow().is_none() {
            let b = Blas::new(self)?;
            *self.inner.blas.borrow_mut() = Some(b);
        }
        Ok(())
    }

    /// Whether a capture started by [`Stream::begin_capture`] is in progress.
    pub fn is_capturing(&self) -> bool {
        self.inner.capture.borrow().is_some()
    }

    /// Starts capturing the stream's work into a graph.
    pub fn begin_capture(&self, mode: CaptureMode) -> Result<()> {
        if self.is_capturing() {
            return Err(Error::Capture("this stream is already capturing".into()));
        }
        self.inner.device.bind()?;
        let started = Instant::now();
        // SAFETY: live stream, not capturing.
        unsafe { sys::cuStreamBeginCapture_v2(self.raw(), mode.raw()) }.check("cuStreamBeginCapture")?;
        *self.inner.capture.borrow_mut() = Some(CaptureState { resources: Resources::default(), started });
        Ok(())
    }

    /// Ends the capture and returns the graph. On any failure the capture is over, the partial graph is
    /// destroyed, the stream is usable again and the cause is in the [`Error::Capture`].
    pub fn end_capture(&self, opts: EndCapture) -> Result<Graph> {
        let st = self.inner.capture.borrow_mut().take().ok_or_else(|| Error::Capture("this stream is not capturing".into()))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: live stream in capture; on success writes the captured graph.
        let ended = unsafe { sys::cuStreamEndCapture(self.raw(), &mut raw) }.check("cuStreamEndCapture");
        let capture_us = st.started.elapsed().as_secs_f64() * 1e6;
        let unfreed = st.resources.allocs.iter().filter(|a| a.is_graph_owned() && !a.is_freed()).count();
        st.release_graph_allocations();
        if let Err(e) = ended {
            if !raw.is_null() {
                // SAFETY: a graph returned alongside an error is ours to destroy.
                unsafe { sys::cuGraphDestroy(raw) };
            }
            return Err(Error::Capture(format!("the capture was invalidated by an operation inside it ({e})")));
        }
        let memory_nodes = st.resources.allocs.iter().any(|a| a.is_graph_owned());
        let mut graph = Graph::from_capture(self.inner.device.clone(), raw, st.resources, capture_us)?;
        if unfreed > 0 {
            return Err(Error::Capture(format!(
                "{unfreed} stream-ordered allocation(s) made inside the capture were not freed inside it; free them with freeAsync before the capture ends"
            )));
        }
        if !opts.instantiate {
            return Ok(graph);
        }
        // Capture runs nothing and allocates nothing, so memory measured now is memory before the graph.
        // The graph pool only changes through memory nodes: without them its deltas are 0 and the four
        // attribute queries are skipped.
        let device = &self.inner.device;
        let snapshot = || -> Result<(u64, GraphMemStats)> {
            let (free, _) = device.memory_info()?;
            Ok((free, if memory_nodes { device.graph_memory()? } else { GraphMemStats::default() }))
        };
        let before = if opts.measure_memory { Some(snapshot()?) } else { None };
        graph.instantiate()?;
        if opts.upload {
            graph.upload(self)?;
        }
        if let Some((free_before, pool_before)) = before {
            let (free_after, pool_after) = snapshot()?;
            graph.set_memory(GraphMemory {
                free_bytes_delta: free_before as i64 - free_after as i64,
                graph_reserved_delta: pool_after.reserved_current as i64 - pool_before.reserved_current as i64,
                graph_used_delta: pool_after.used_current as i64 - pool_before.used_current as i64,
            });
        }
        Ok(graph)
    }

    /// Ends a capture without producing a graph (the capture callback threw). Always leaves the stream
    /// out of capture mode; returns whether a capture was open.
    pub fn abort_capture(&self) -> bool {
        let st = self.inner.capture.borrow_mut().take();
        if let Some(st) = &st {
            st.release_graph_allocations();
        }
        let was = st.is_some();
        let mut status = sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        // SAFETY: live stream; ending a capture (active or invalidated) returns it to normal mode.
        unsafe {
            if sys::cuStreamIsCapturing(self.raw(), &mut status) == sys::CUresult::CUDA_SUCCESS
                && status != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE
            {
                let mut g = std::ptr::null_mut();
                let _ = sys::cuStreamEndCapture(self.raw(), &mut g);
                if !g.is_null() {
                    let _ = sys::cuGraphDestroy(g);
                }
            }
        }
        was
    }
}

/// Packs one launch argument into an 8-byte slot after checking it against its declared kind.
fn pack_arg(stream: &Stream, i: usize, arg: &KernelArg, kind: ArgKind) -> Result<u64> {
    let name = || format!("args[{i}]");
    let int = |lo: f64, hi: f64| -> Result<f64> {
        match arg {
            KernelArg::Number(v) if v.fract() == 0.0 && *v >= lo && *v <= hi => Ok(*v),
            KernelArg::BigInt(v) if (*v as f64) >= lo && (*v as f64) <= hi => Ok(*v as f64),
            KernelArg::Buffer(_) => Err(Error::arg(name(), format!("a number ({})", kind.name()), "a buffer")),
            KernelArg::Number(v) => Err(Error::arg(name(), format!("an integer in {lo}..={hi} ({})", kind.name()), v)),
            KernelArg::BigInt(v) => Err(Error::arg(name(), format!("an integer in {lo}..={hi} ({})", kind.name()), v)),
        }
    };
    Ok(match kind {
        ArgKind::Ptr => match arg {
            KernelArg::Buffer(b) => {
                if b.device().ordinal() != stream.device().ordinal() {
                    stream.same_device(b.device(), &name())?;
                }
                b.ptr()?
            }
            _ => return Err(Error::arg(name(), "a buffer (ptr)", "a number")),
        },
        ArgKind::I32 => int(i32::MIN as f64, i32::MAX as f64)? as i32 as u32 as u64,
        ArgKind::U32 => int(0.0, u32::MAX as f64)? as u32 as u64,
        ArgKind::I64 => match arg {
            KernelArg::BigInt(v) if *v >= i64::MIN as i128 && *v <= i64::MAX as i128 => *v as i64 as u64,
            _ => int(-9007199254740991.0, 9007199254740991.0)? as i64 as u64,
        },
        ArgKind::U64 => match arg {
            KernelArg::BigInt(v) if *v >= 0 && *v <= u64::MAX as i128 => *v as u64,
            _ => int(0.0, 9007199254740991.0)? as u64,
        },
        ArgKind::F32 | ArgKind::F64 => {
            let v = match arg {
                KernelArg::Number(v) => *v,
                _ => return Err(Error::arg(name(), format!("a number ({})", kind.name()), "a buffer or bigint")),
            };
            if kind == ArgKind::F32 {
                (v as f32).to_bits() as u64
            } else {
                v.to_bits()
            }
        }
    })
}

/// An event recorded on a stream, waitable from any thread (for async waits off the JS thread).
#[derive(Debug)]
pub struct Completion {
    event: sys::CUevent,
    ctx: sys::CUcontext,
    /// The device whose primary context this holds retained (a count the driver keeps, usable from any
    /// thread), so the context outlives the event even when every Device object is gone.
    dev: sys::CUdevice,
}

// SAFETY: event, context and device handles are process-wide driver objects usable from any thread.
unsafe impl Send for Completion {}

impl Completion {
    fn record(stream: &Stream) -> Result<Completion> {
        let dev = stream.device().raw();
        // SAFETY: retains the primary context of a live device; released once in Drop.
        unsafe { cudarc::driver::result::primary_ctx::retain(dev) }
            .map_err(|e| crate::error::driver_error("cuDevicePrimaryCtxRetain", e))?;
        let mut c = Completion { event: std::ptr::null_mut(), ctx: stream.device().context(), dev };
        // SAFETY: writes one event handle (destroyed in Drop), then records it on the live stream.
        unsafe {
            sys::cuEventCreate(&mut c.event, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32).check("cuEventCreate")?;
            sys::cuEventRecord(c.event, stream.raw()).check("cuEventRecord")?;
        }
        Ok(c)
    }

    /// Blocks the calling thread until the stream's work up to the record is done. Makes the device's
    /// context current on this thread. Meant for a worker thread while the JS thread may be capturing:
    /// the wait runs in relaxed capture mode, so it neither fails nor invalidates a global-mode capture
    /// on another thread (waiting on an event recorded outside any capture cannot disturb one).
    pub fn wait(&self) -> Result<()> {
        let mut mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
        // SAFETY: this value holds the context retained; the event is live; the thread's capture mode is
        // exchanged for the wait and restored after it.
        unsafe {
            cudarc::driver::result::ctx::set_current(self.ctx).check("cuCtxSetCurrent")?;
            sys::cuThreadExchangeStreamCaptureMode(&mut mode).check("cuThreadExchangeStreamCaptureMode")?;
            let waited = sys::cuEventSynchronize(self.event).check("cuEventSynchronize");
            let _ = sys::cuThreadExchangeStreamCaptureMode(&mut mode);
            waited
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // SAFETY: destroyed once (if made); the driver defers the release while a record is pending. Then
        // the context retained in `record` is released.
        unsafe {
            if !self.event.is_null() {
                let _ = sys::cuEventDestroy_v2(self.event);
            }
            let _ = cudarc::driver::result::primary_ctx::release(self.dev);
        }
    }
}

/// A device-to-host copy in flight. [`PendingDownload::wait`] may run on any thread, but the value must be
/// dropped on the thread that made it: freeing pinned memory (`cuMemFreeHost`) on another thread while
/// that one captures a graph in the default global mode would invalidate the capture.
#[derive(Debug)]
pub struct PendingDownload {
    pinned: Pinned,
    len: usize,
    done: Completion,
}

impl PendingDownload {
    /// Waits for the copy and returns the bytes (the pinned memory stays with `self`).
    pub fn wait(&self) -> Result<Vec<u8>> {
        self.done.wait()?;
        let mut out = vec![0u8; self.len];
        // SAFETY: the copy into `pinned` is complete; it holds `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.pinned.as_ptr(), out.as_mut_ptr(), self.len) };
        Ok(out)
    }
}

impl Drop for PendingDownload {
    fn drop(&mut self) {
        // The pinned memory must not be freed while the copy may still write it.
        let _ = self.done.wait();
    }
}
