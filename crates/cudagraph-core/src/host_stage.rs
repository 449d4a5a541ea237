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

use crate::buffer::Buffer;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Check, Error, Result};
use crate::event::Event;
use crate::stream::{Pinned, Stream};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Alignment of each input inside an area, bytes (a step's static inputs are allocated packed at the same
/// alignment, so their device layout is the area's).
const ALIGN: usize = 256;

/// How often [`HostStage::wait_ready`] asks whether the stream has drained while it watches the flag.
const QUERY_INTERVAL: Duration = Duration::from_micros(1);

/// Most unused bytes between two inputs that one copy still spans.
const MERGE_GAP: usize = 64 << 10;

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
    input: [Pinned; 2],
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
    current: usize,
}

impl HostStage {
    /// Staging on `device` for `inputs` (their buffers on it) and read-back `outputs` (dtype, elements),
    /// whose buffers the stage makes in its read-back area ([`HostStage::output_buffer`]); with `ready`, a
    /// ready flag after them (the module's doc).
    pub fn new(device: &Rc<Device>, inputs: Vec<StageTensor>, outputs: &[(DType, usize)], ready: bool) -> Result<HostStage> {
        if inputs.len() > 64 {
            return Err(Error::arg("inputs", "at most 64 inputs", inputs.len()));
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
        // cuMemHostAlloc refuses 0 bytes; an empty area is never copied from or written.
        let pinned = |bytes: usize| Pinned::new(bytes.max(ALIGN));
        device.bind()?;
        let output = Pinned::new_mapped(output_bytes.max(ALIGN))?;
        let output_dev = output.device_ptr()?;
        Ok(HostStage {
            inputs,
            outputs: outs,
            device: device.clone(),
            output_dev,
            areas: Rc::new(Areas { input: [pinned(area_bytes)?, pinned(area_bytes)?], output, _device: device.clone() }),
            done: [Event::new(device, false)?, Event::new(device, false)?],
            area_bytes,
            output_bytes,
            ready,
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
        self.areas.input[which & 1].as_ptr()
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

    /// Enqueues on `stream`, for every input in `mask` (bit i: input i), a copy of its first `tokens` or
    /// `reqs` rows from the current area into its static buffer, and records when the area is free again.
    /// Consecutive inputs whose buffers lie as they do in the area (allocated packed, as a step's are) go in
    /// one copy, with the unused rows between them: each copy costs the stream a few µs of latency, a
    /// few KiB more on the bus far less. What reads the inputs (a graph launch) goes on the same stream
    /// after it; then [`HostStage::flip`].
    pub fn submit(&self, stream: &Stream, mask: u64, tokens: usize, reqs: usize) -> Result<usize> {
        let area = self.current;
        let base = self.area_ptr(area);
        // Every size is checked before anything is enqueued.
        for (i, s) in self.inputs.iter().enumerate() {
            s.rows(i, tokens, reqs)?;
        }
        // No kernel that sets the flag is in flight: the last step returned once it was set or the stream drained.
        if let Some(flag) = self.ready_flag() {
            flag.store(0, Ordering::Relaxed);
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
        let mut queried = Instant::now();
        loop {
            // Acquire: the outputs' stores came before the flag's (the kernels fence between them).
            if flag.load(Ordering::Acquire) != 0 {
                return Ok(());
            }
            // The flag every spin, the stream (a driver call) once a microsecond: a flag set while a query
            // runs is seen that much later.
            if queried.elapsed() >= QUERY_INTERVAL {
                if stream.query()? {
                    return Ok(());
                }
                queried = Instant::now();
            }
            std::hint::spin_loop();
        }
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

impl Drop for HostStage {
    fn drop(&mut self) {
        // The pinned areas must outlive the copies out of them.
        for e in &self.done {
            let _ = e.synchronize();
        }
    }
}
