//! A step's host side in pinned memory: inputs written straight into pinned staging, then copied into the
//! step's static device buffers by one call that also launches the graph; and read-back outputs, which
//! live in pinned memory the kernels write directly (mapped into the device's address space), so that
//! call only waits for them.
//!
//! Two pinned input areas alternate, each holding every input back to back (256-byte aligned). While the
//! copies out of one area run, the caller writes the next step's inputs into the other;
//! [`HostStage::submit`] returns only once the area the caller writes next is free again, so a write never
//! races a copy. The read-back area is single: [`HostStage::read_back`] waits for the stream, and the
//! caller reads it before the next step. A copy out of device memory would cost a step several µs more
//! (the copy engine waits for the kernels, then signals); a kernel's few stores over the bus, far less.
//!
//! A stage made with a ready flag (one i32 in the read-back area, [`HostStage::ready_buffer`]) lets a step
//! return before its graph ends: [`HostStage::submit`] zeroes the flag, the step's kernels set it nonzero
//! once every read-back output holds its final value (stores, then a system-scope fence, then the flag),
//! and [`HostStage::wait_ready`] returns as soon as it is set, or once the stream drains where the kernels
//! leave it zero. Kernels after the flag must not write the read-back outputs.
//!
//! A stage made with a doorbell (one u32 of the read-back area's, which the device reads) lets a replay be
//! launched before its inputs are staged. Each graph of its step begins with the stage's gate kernel
//! ([`HostStage::capture_gate`], kernels/stage_gate.cu), which waits for the doorbell and then copies the
//! inputs it names from the staging area (mapped for the device) into their static buffers, so
//! [`HostStage::gated_launch`] rings instead of copying. With `arm_next` it also launches the same graph once
//! more behind this one, waiting at its gate: the next gated launch of that graph only rings it, and the
//! host's launch is off the path between one step's outputs and the next step's start. Anything else
//! enqueued on the stream first rings an armed replay to run with the inputs its buffers hold
//! ([`Stream::raw`]), and the stage waits that run out before its next launch.

use crate::buffer::Buffer;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Check, Error, Result};
use crate::event::Event;
use crate::module::{Kernel, Module};
use crate::stream::{Armed, LaunchConfig, Pinned, Stream, BELL_GO};
use cudarc::driver::sys;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Alignment of each input inside an area, bytes (a step's static inputs are allocated packed at the same
/// alignment, so their device layout is the area's).
const ALIGN: usize = 256;

/// How often [`HostStage::wait_ready`] and [`HostStage::wait_end`] ask whether the work has ended while they watch
/// the flag.
const QUERY_INTERVAL: Duration = Duration::from_micros(1);

/// Most unused bytes between two inputs that one copy still spans.
const MERGE_GAP: usize = 64 << 10;

/// Most inputs a stage with a doorbell takes: the doorbell word's mask (kernels/stage_gate.cu's GATE_INPUTS).
pub const GATE_INPUTS: usize = 24;

/// One input as the gate copies it (kernels/stage_gate.cu's GateInput).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct GateInput {
    dst: u64,
    offset: u32,
    /// 16-byte words, then bytes.
    words: u32,
    tail: u32,
    pad: u32,
}

/// The gate's one parameter (kernels/stage_gate.cu's GateParams).
#[repr(C)]
struct GateParams {
    bell: u64,
    area: u64,
    area_bytes: u32,
    n: u32,
    inputs: [GateInput; GATE_INPUTS],
}

thread_local! {
    /// The gate kernel, compiled once per device (by ordinal).
    static GATES: RefCell<HashMap<i32, Kernel>> = RefCell::new(HashMap::new());
}

/// The gate kernel of `device`, compiled (or loaded from the kernel cache) on first use.
fn gate_kernel(device: &Rc<Device>) -> Result<Kernel> {
    if let Some(k) = GATES.with(|g| g.borrow().get(&device.ordinal()).cloned()) {
        return Ok(k);
    }
    let module = Module::compile(device, include_str!("../../../kernels/stage_gate.cu"), "stage_gate", &[], true)?;
    let k = module.kernel("stage_gate", Vec::new())?;
    GATES.with(|g| g.borrow_mut().insert(device.ordinal(), k.clone()));
    Ok(k)
}

/// This stage's replay launched ahead and waiting at its gate, or rung by another use of the stream (then no
/// longer in the stream's slot).
#[derive(Debug)]
struct Pending {
    /// The caller's key of its graph.
    graph: usize,
    /// The end event recorded after it.
    end: usize,
}

/// One static tensor of a step: its device buffer and how many bytes one row takes.
#[derive(Debug)]
pub struct StageTensor {
    /// The static device buffer (kept alive by the stage): an input is copied into it, a read-back output
    /// out of it.
    pub buffer: Buffer,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Rows count requests (true) or tokens (false).
    pub per_request: bool,
}

#[derive(Debug)]
struct Slot {
    tensor: StageTensor,
    offset: usize,
    max_rows: usize,
}

impl Slot {
    /// Rows of input `i` in a step of `tokens` token rows and `reqs` request rows, checked against its
    /// buffer.
    fn rows(&self, i: usize, tokens: usize, reqs: usize) -> Result<usize> {
        let rows = if self.tensor.per_request { reqs } else { tokens };
        if rows > self.max_rows {
            let unit = if self.tensor.per_request { "requests" } else { "tokens" };
            return Err(Error::arg(format!("inputs[{i}]"), format!("at most {} {unit}", self.max_rows), rows));
        }
        Ok(rows)
    }
}

/// One read-back output: its element type and length, and where it lies in the read-back area.
#[derive(Debug)]
struct Output {
    dtype: DType,
    len: usize,
    offset: usize,
}

/// The pinned memory of a stage: two input areas and the read-back area (mapped for the device).
#[derive(Debug)]
struct Areas {
    /// Both input areas, back to back (mapped for the device where the stage has a doorbell).
    input: Pinned,
    output: Pinned,
    /// Keeps the device's primary context, which owns the pinned memory, alive as long as any view of the
    /// areas (dropped after the memory, being declared last).
    _device: Rc<Device>,
}

/// Lays the inputs out back to back (ALIGN-aligned) on `device`; returns the slots and the bytes they span.
fn layout(tensors: Vec<StageTensor>, device: &Device) -> Result<(Vec<Slot>, usize)> {
    let mut slots = Vec::with_capacity(tensors.len());
    let mut offset = 0;
    for (i, tensor) in tensors.into_iter().enumerate() {
        if tensor.buffer.device().ordinal() != device.ordinal() {
            return Err(Error::arg(
                format!("inputs[{i}]"),
                format!("a buffer on device {}", device.ordinal()),
                "a buffer on another device",
            ));
        }
        if tensor.row_bytes == 0 || tensor.buffer.byte_len() % tensor.row_bytes != 0 {
            return Err(Error::arg(
                format!("inputs[{i}].rowBytes"),
                format!("a positive divisor of the buffer's {} bytes", tensor.buffer.byte_len()),
                tensor.row_bytes,
            ));
        }
        let max_rows = tensor.buffer.byte_len() / tensor.row_bytes;
        let bytes = tensor.buffer.byte_len();
        slots.push(Slot { tensor, offset, max_rows });
        offset += bytes.div_ceil(ALIGN) * ALIGN;
    }
    Ok((slots, offset))
}

/// Pinned staging for a step's static inputs (double-buffered) and read-back outputs.
#[derive(Debug)]
pub struct HostStage {
    inputs: Vec<Slot>,
    outputs: Vec<Output>,
    device: Rc<Device>,
    /// The read-back area's device address.
    output_dev: sys::CUdeviceptr,
    /// Shared with whoever exposes the areas to JS, so the memory outlives every view of it.
    areas: Rc<Areas>,
    done: [Event; 2],
    area_bytes: usize,
    output_bytes: usize,
    /// The ready flag's byte offset in the read-back area (after the outputs), if the stage has one.
    ready: Option<usize>,
    /// The doorbell's byte offset in the read-back area (after the flag), if the stage has one.
    bell: Option<usize>,
    /// Events recorded after each gated replay, in turn: what a wait without the flag waits for.
    ends: [Event; 2],
    /// The next of `ends` to record.
    next_end: usize,
    /// This stage's replay armed on a stream, if any.
    pending: Option<Pending>,
    /// Tells this stage's armed replays from others' on a stream.
    id: usize,
    current: usize,
}

thread_local! {
    static NEXT_ID: Cell<usize> = const { Cell::new(1) };
}

impl HostStage {
    /// Staging on `device` for `inputs` (their buffers on it) and read-back `outputs` (dtype, elements),
    /// whose buffers the stage makes in its read-back area ([`HostStage::output_buffer`]); with `ready`, a
    /// ready flag after them, and with `bell` a doorbell (the module's doc).
    pub fn new(device: &Rc<Device>, inputs: Vec<StageTensor>, outputs: &[(DType, usize)], ready: bool, bell: bool) -> Result<HostStage> {
        if inputs.len() > 64 {
            return Err(Error::arg("inputs", "at most 64 inputs", inputs.len()));
        }
        if bell && inputs.len() > GATE_INPUTS {
            return Err(Error::arg("inputs", format!("at most {GATE_INPUTS} inputs for a stage with a doorbell"), inputs.len()));
        }
        let (inputs, area_bytes) = layout(inputs, device)?;
        let mut output_bytes = 0;
        let mut outs = Vec::with_capacity(outputs.len());
        for (i, &(dtype, len)) in outputs.iter().enumerate() {
            if len == 0 {
                return Err(Error::arg(format!("outputs[{i}].length"), "a positive number of elements", 0));
            }
            outs.push(Output { dtype, len, offset: output_bytes });
            output_bytes += (len * dtype.size()).div_ceil(ALIGN) * ALIGN;
        }
        let ready = ready.then_some(output_bytes);
        if ready.is_some() {
            output_bytes += ALIGN;
        }
        // Its own ALIGN bytes: the host writes the doorbell while the device writes the flag's line.
        let bell = bell.then_some(output_bytes);
        if bell.is_some() {
            output_bytes += ALIGN;
        }
        device.bind()?;
        // cuMemHostAlloc refuses 0 bytes; an empty area is never copied from or written. The gate reads the
        // areas over the bus, so a stage with a doorbell maps them.
        let both = (2 * area_bytes).max(ALIGN);
        let input = if bell.is_some() { Pinned::new_mapped(both)? } else { Pinned::new(both)? };
        let output = Pinned::new_mapped(output_bytes.max(ALIGN))?;
        let output_dev = output.device_ptr()?;
        let event = || Event::new(device, false);
        Ok(HostStage {
            inputs,
            outputs: outs,
            device: device.clone(),
            output_dev,
            areas: Rc::new(Areas { input, output, _device: device.clone() }),
            done: [event()?, event()?],
            area_bytes,
            output_bytes,
            ready,
            bell,
            ends: [event()?, event()?],
            next_end: 0,
            pending: None,
            id: NEXT_ID.with(|n| n.replace(n.get() + 1)),
            current: 0,
        })
    }

    /// Bytes of one input area.
    pub fn area_bytes(&self) -> usize {
        self.area_bytes
    }

    /// Byte offset of input `i` inside an input area.
    pub fn offset(&self, i: usize) -> Option<usize> {
        self.inputs.get(i).map(|s| s.offset)
    }

    /// Start of input area `which` (0 or 1): host memory the caller writes inputs into.
    pub fn area_ptr(&self, which: usize) -> *mut u8 {
        // SAFETY: both areas lie in the one allocation of 2 * area_bytes (at least ALIGN).
        unsafe { self.areas.input.as_ptr().add((which & 1) * self.area_bytes) }
    }

    /// Bytes of the read-back area.
    pub fn output_bytes(&self) -> usize {
        self.output_bytes
    }

    /// Byte offset of output `i` inside the read-back area.
    pub fn output_offset(&self, i: usize) -> Option<usize> {
        self.outputs.get(i).map(|s| s.offset)
    }

    /// The static buffer of read-back output `i`: its part of the read-back area, as the device sees it.
    /// Kernels write it; after [`HostStage::read_back`] the host reads the same memory.
    pub fn output_buffer(&self, i: usize) -> Option<Buffer> {
        let o = self.outputs.get(i)?;
        Some(Buffer::borrowed(&self.device, self.output_dev + o.offset as u64, self.areas.clone(), o.dtype, o.len))
    }

    /// The ready flag as the device sees it (one i32; none without one): the step's kernels set it.
    pub fn ready_buffer(&self) -> Option<Buffer> {
        let at = self.ready?;
        Some(Buffer::borrowed(&self.device, self.output_dev + at as u64, self.areas.clone(), DType::I32, 1))
    }

    /// The ready flag as the host sees it.
    fn ready_flag(&self) -> Option<&AtomicI32> {
        // SAFETY: the flag is an aligned i32 inside the read-back area (ALIGN bytes reserved for it), pinned
        // memory that lives as long as self; the device writes it, so the host reads it atomically.
        self.ready.map(|at| unsafe { AtomicI32::from_ptr(self.output_ptr().add(at) as *mut i32) })
    }

    /// Start of the read-back area: host memory the caller reads outputs from after a step.
    pub fn output_ptr(&self) -> *mut u8 {
        self.areas.output.as_ptr()
    }

    /// Keeps both areas alive while held (for views of them handed out elsewhere).
    pub fn keep_alive(&self) -> Rc<dyn std::any::Any> {
        self.areas.clone()
    }

    /// The area the caller writes next.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Whether the stage has a doorbell.
    pub fn has_bell(&self) -> bool {
        self.bell.is_some()
    }

    /// The doorbell's byte offset in the read-back area.
    fn bell_at(&self) -> Result<usize> {
        self.bell.ok_or_else(|| Error::arg("stage", "a stage with a doorbell", "one without"))
    }

    /// The doorbell as the host sees it.
    fn bell_word(&self) -> Result<&AtomicU32> {
        let at = self.bell_at()?;
        // SAFETY: the word is an aligned u32 inside the read-back area (ALIGN bytes reserved for it), pinned
        // memory that lives as long as self; the device reads and clears it, so the host writes it atomically.
        Ok(unsafe { AtomicU32::from_ptr(self.output_ptr().add(at) as *mut u32) })
    }

    /// Writes `word` to the doorbell, zeroing the ready flag first: no kernel that sets it is in flight (the
    /// last step returned once it was set or its work ended).
    fn ring(&self, word: u32) -> Result<()> {
        let bell = self.bell_word()?;
        self.clear_ready();
        // Release: the inputs the host wrote come before the word the gate reads first.
        bell.store(word, Ordering::Release);
        Ok(())
    }

    /// Zeroes the ready flag (if the stage has one) before a step whose kernels may set it.
    fn clear_ready(&self) {
        if let Some(flag) = self.ready_flag() {
            flag.store(0, Ordering::Relaxed);
        }
    }

    /// Launches the gate on `stream`, which is being captured, as the first node of a graph of `tokens` and
    /// `reqs` rows: every graph of a stage with a doorbell begins with it, and runs only once it is rung.
    pub fn capture_gate(&self, stream: &Stream, tokens: usize, reqs: usize) -> Result<()> {
        let at = self.bell_at()?;
        let kernel = gate_kernel(&self.device)?;
        let area = self.areas.input.device_ptr()?;
        let mut p = GateParams {
            bell: self.output_dev + at as u64,
            area,
            area_bytes: self.area_bytes as u32,
            n: self.inputs.len() as u32,
            inputs: [GateInput::default(); GATE_INPUTS],
        };
        for (i, s) in self.inputs.iter().enumerate() {
            let bytes = s.rows(i, tokens, reqs)? * s.tensor.row_bytes;
            let dst = s.tensor.buffer.ptr()?;
            // Whole 16-byte words where both ends are aligned (allocations and staging offsets are), rounded up
            // where the buffer (and so its staging slot) holds the rest; bytes elsewhere.
            let (words, tail) = if dst % 16 != 0 || s.offset % 16 != 0 {
                (0, bytes)
            } else if bytes.div_ceil(16) * 16 <= s.tensor.buffer.byte_len() {
                (bytes.div_ceil(16), 0)
            } else {
                (bytes / 16, bytes % 16)
            };
            p.inputs[i] = GateInput { dst, offset: s.offset as u32, words: words as u32, tail: tail as u32, pad: 0 };
        }
        // The graph reads both areas and the doorbell, and writes the inputs' buffers: it keeps them alive.
        let areas = Buffer::borrowed(&self.device, area, self.areas.clone(), DType::U8, (2 * self.area_bytes).max(ALIGN));
        let bell = Buffer::borrowed(&self.device, p.bell, self.areas.clone(), DType::U32, 1);
        let mut kept: Vec<&Buffer> = vec![&areas, &bell];
        kept.extend(self.inputs.iter().map(|s| &s.tensor.buffer));
        stream.track_all(&kept);
        let cfg = LaunchConfig { grid: [1, 1, 1], block: [128, 1, 1], shared_mem_bytes: 0, programmatic: false, cooperative: false };
        stream.launch_params(&kernel, &cfg, &mut [&mut p as *mut GateParams as *mut c_void])
    }

    /// Before a launch: this stage's armed replay, if it is `key`'s and still waits at its gate, stays for
    /// the ring that follows (its end event's index is returned); any other is rung to run as it is, if
    /// nobody has yet, and waited out, so that it cannot set the ready flag after the next launch zeroes it.
    fn settle(&mut self, stream: &Stream, key: Option<usize>) -> Result<Option<usize>> {
        let Some(p) = self.pending.take() else { return Ok(None) };
        // Still in the stream's slot: nobody has rung it.
        match stream.take_armed(self.id) {
            Some(_) if key == Some(p.graph) => return Ok(Some(p.end)),
            Some(armed) => armed.release(),
            None => {}
        }
        self.ends[p.end].synchronize()?;
        Ok(None)
    }

    /// Records the next end event on `stream`; returns its index.
    fn record_end(&mut self, stream: &Stream) -> Result<usize> {
        let e = self.next_end;
        self.ends[e].record(stream)?;
        self.next_end ^= 1;
        Ok(e)
    }

    /// One step of a stage with a doorbell whose graph, `key`, begins with the gate: rings for the inputs in
    /// `mask` (bit i: input i; `tokens` and `reqs` rows, the graph's, staged in the current area) and,
    /// unless this stage armed a replay of `key` that still waits, launches it (`launch`). With `arm_next`,
    /// launches it once more, to wait at its gate for the next ring. The caller says whether it `waits` for
    /// this step ([`HostStage::wait_end`]) before it stages again, as it must to arm; if not, the area's copy
    /// is tracked as [`HostStage::submit`]'s is. Returns this step's end event index and makes the other area
    /// current (waiting, as [`HostStage::flip`] does, for a replay still to read it).
    #[allow(clippy::too_many_arguments)]
    pub fn gated_launch(
        &mut self,
        stream: &Stream,
        key: usize,
        mask: u64,
        tokens: usize,
        reqs: usize,
        waits: bool,
        arm_next: bool,
        launch: &mut dyn FnMut() -> Result<()>,
    ) -> Result<usize> {
        if arm_next && !waits {
            return Err(Error::arg("armNext", "a launch that waits for its outputs", "one that does not"));
        }
        for (i, s) in self.inputs.iter().enumerate() {
            s.rows(i, tokens, reqs)?;
        }
        let armed = self.settle(stream, Some(key))?;
        // The gate copies every input in `mask` from the current area (code 1 or 2).
        self.ring((1 + self.current as u32) | (((mask & ((1 << GATE_INPUTS) - 1)) as u32) << 8))?;
        let end = match armed {
            Some(end) => end,
            None => {
                launch()?;
                self.record_end(stream)?
            }
        };
        if !waits {
            self.done[self.current].record(stream)?;
        }
        if arm_next {
            launch()?;
            let e = self.record_end(stream)?;
            stream.arm(Armed { owner: self.id, bell: self.bell_word()?.as_ptr(), _keep: self.areas.clone() });
            self.pending = Some(Pending { graph: key, end: e });
        }
        self.flip()?;
        Ok(end)
    }

    /// Waits until the step whose end event is `end` ([`HostStage::gated_launch`]) has its read-back outputs:
    /// with `ready`, its ready flag set or its replay ended; else its replay ended. Never waits for the
    /// stream, which may hold the next replay, armed.
    pub fn wait_end(&self, end: usize, ready: bool) -> Result<()> {
        let event = &self.ends[end];
        let Some(flag) = self.ready_flag().filter(|_| ready) else { return event.synchronize() };
        spin_on(flag, || event.query())
    }

    /// Enqueues on `stream`, for every input in `mask` (bit i: input i), a copy of its first `tokens` or
    /// `reqs` rows from the current area into its static buffer, and records when the area is free again.
    /// Consecutive inputs whose buffers lie as they do in the area (allocated packed, as a step's are) go in
    /// one copy, with the unused rows between them: each copy costs the stream a few µs of latency, a
    /// few KiB more on the bus far less. What reads the inputs (a graph launch) goes on the same stream
    /// after it; then [`HostStage::flip`].
    ///
    /// With `gate` (a stage with a doorbell, before graphs the caller launches itself: with events between,
    /// or in pieces), it also rings for their gate to run without copying, the copies having done so.
    pub fn submit(&mut self, stream: &Stream, mask: u64, tokens: usize, reqs: usize, gate: bool) -> Result<usize> {
        let area = self.current;
        let base = self.area_ptr(area);
        // Every size is checked before anything is enqueued.
        for (i, s) in self.inputs.iter().enumerate() {
            s.rows(i, tokens, reqs)?;
        }
        self.settle(stream, None)?;
        if gate {
            self.ring(BELL_GO)?;
        } else {
            self.clear_ready();
        }
        // Input i's bytes to copy (0: none).
        let bytes = |i: usize| {
            let s = &self.inputs[i];
            if mask & (1 << i) == 0 {
                0
            } else {
                (if s.tensor.per_request { reqs } else { tokens }) * s.tensor.row_bytes
            }
        };
        let mut i = 0;
        while i < self.inputs.len() {
            if bytes(i) == 0 {
                i += 1;
                continue;
            }
            let (first, dst) = (&self.inputs[i], self.inputs[i].tensor.buffer.ptr()?);
            let mut end = first.offset + bytes(i);
            let mut j = i + 1;
            while let Some(s) = self.inputs.get(j) {
                let gap = s.offset - end;
                if bytes(j) == 0 || gap > MERGE_GAP || s.tensor.buffer.ptr()?.wrapping_sub(dst) != (s.offset - first.offset) as u64 {
                    break;
                }
                end = s.offset + bytes(j);
                j += 1;
            }
            // SAFETY: the source lies inside the pinned area (every offset + rows * row_bytes <= area size
            // by construction) and the destination inside the static buffers, which lie back to back as
            // in the area (checked above) and which this stage keeps alive.
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, base.add(first.offset) as *const c_void, end - first.offset, stream.raw()) }
                .check("cuMemcpyHtoDAsync")?;
            i = j;
        }
        self.done[area].record(stream)?;
        Ok(area)
    }

    /// Waits for `stream`: what its kernels wrote into the read-back outputs is then on the host.
    pub fn read_back(&self, stream: &Stream) -> Result<()> {
        stream.synchronize()
    }

    /// Waits until the read-back outputs hold the last submitted step's values: its ready flag set (the
    /// rest of its work may still run on `stream`), or `stream` drained. Without a flag, [`HostStage::read_back`].
    /// An error of work after the flag surfaces at the stream's next wait.
    pub fn wait_ready(&self, stream: &Stream) -> Result<()> {
        let Some(flag) = self.ready_flag() else { return stream.synchronize() };
        spin_on(flag, || stream.query())
    }

    /// Makes the other area current, waiting for the copies last made out of it.
    pub fn flip(&mut self) -> Result<usize> {
        self.current ^= 1;
        self.done[self.current].synchronize()?;
        Ok(self.current)
    }

    /// The static buffer of input `i`.
    pub fn buffer(&self, i: usize) -> Option<&Buffer> {
        self.inputs.get(i).map(|s| &s.tensor.buffer)
    }

    /// Replaces the static buffer of input `i` (same byte length).
    pub fn rebind(&mut self, i: usize, buffer: Buffer) -> Result<()> {
        let n = self.inputs.len();
        let s = self.inputs.get_mut(i).ok_or_else(|| Error::arg("index", format!("an input index below {n}"), i))?;
        let old = &s.tensor.buffer;
        if buffer.byte_len() != old.byte_len() || buffer.device().ordinal() != old.device().ordinal() {
            return Err(Error::arg(
                "buffer",
                format!("a buffer of {} bytes on device {}", old.byte_len(), old.device().ordinal()),
                format!("{} bytes", buffer.byte_len()),
            ));
        }
        buffer.ptr()?;
        s.tensor.buffer = buffer;
        Ok(())
    }
}

/// Spins until `flag` is set or `ended` (a driver call: whether the work that would set it has ended) says so.
fn spin_on(flag: &AtomicI32, mut ended: impl FnMut() -> Result<bool>) -> Result<()> {
    let mut queried = Instant::now();
    loop {
        // Acquire: the outputs' stores came before the flag's (the kernels fence between them).
        if flag.load(Ordering::Acquire) != 0 {
            return Ok(());
        }
        // The flag every spin, `ended` once a microsecond: a flag set while it runs is seen that much later.
        if queried.elapsed() >= QUERY_INTERVAL {
            if ended()? {
                return Ok(());
            }
            queried = Instant::now();
        }
        std::hint::spin_loop();
    }
}

impl Drop for HostStage {
    fn drop(&mut self) {
        // An armed replay nobody rang would never end: it runs with the inputs its buffers hold (ringing one
        // already rung leaves a word no gate of this stage reads again).
        if self.pending.take().is_some() {
            let _ = self.ring(BELL_GO);
        }
        // The pinned areas must outlive the copies out of them and the gates reading them.
        for e in self.done.iter().chain(&self.ends) {
            let _ = e.synchronize();
        }
    }
}
