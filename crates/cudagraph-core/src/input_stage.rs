//! Input staging for replays: host inputs written straight into pinned memory, then copied into a step's
//! static device buffers by one call that also launches the graph.
//!
//! Two pinned areas alternate, each holding every input back to back (256-byte aligned). While the copies
//! out of one area run, the caller writes the next step's inputs into the other; [`InputStage::submit`]
//! returns only once the area the caller writes next is free again, so a write never races a copy.

use crate::buffer::Buffer;
use crate::error::{Check, Error, Result};
use crate::event::Event;
use crate::stream::{Pinned, Stream};
use cudarc::driver::sys;
use std::ffi::c_void;
use std::rc::Rc;

/// Alignment of each input inside an area, bytes.
const ALIGN: usize = 256;

/// One static input: its device buffer and how many bytes one row takes.
#[derive(Debug)]
pub struct StageInput {
    /// The static device buffer the input is copied into (kept alive by the stage).
    pub buffer: Buffer,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Rows count requests (true) or tokens (false).
    pub per_request: bool,
}

#[derive(Debug)]
struct Slot {
    input: StageInput,
    offset: usize,
    max_rows: usize,
}

/// Double-buffered pinned staging for a set of static inputs.
#[derive(Debug)]
pub struct InputStage {
    slots: Vec<Slot>,
    /// Shared with whoever exposes the areas to JS, so the memory outlives every view of it.
    areas: Rc<[Pinned; 2]>,
    done: [Event; 2],
    area_bytes: usize,
    current: usize,
}

impl InputStage {
    /// Staging for `inputs`, on the device of their buffers (all must share one).
    pub fn new(inputs: Vec<StageInput>) -> Result<InputStage> {
        if inputs.len() > 64 {
            return Err(Error::arg("inputs", "at most 64 inputs", inputs.len()));
        }
        let device = match inputs.first() {
            Some(i) => i.buffer.device().clone(),
            None => return Err(Error::arg("inputs", "at least one input", "none")),
        };
        let mut slots = Vec::with_capacity(inputs.len());
        let mut offset = 0;
        for (i, input) in inputs.into_iter().enumerate() {
            if input.buffer.device().ordinal() != device.ordinal() {
                return Err(Error::arg(format!("inputs[{i}]"), format!("a buffer on device {}", device.ordinal()), "a buffer on another device"));
            }
            if input.row_bytes == 0 || input.buffer.byte_len() % input.row_bytes != 0 {
                return Err(Error::arg(format!("rowBytes[{i}]"), format!("a positive divisor of the buffer's {} bytes", input.buffer.byte_len()), input.row_bytes));
            }
            let max_rows = input.buffer.byte_len() / input.row_bytes;
            let bytes = input.buffer.byte_len();
            slots.push(Slot { input, offset, max_rows });
            offset += bytes.div_ceil(ALIGN) * ALIGN;
        }
        let area_bytes = offset;
        Ok(InputStage {
            slots,
            areas: Rc::new([Pinned::new(area_bytes)?, Pinned::new(area_bytes)?]),
            done: [Event::new(&device, false)?, Event::new(&device, false)?],
            area_bytes,
            current: 0,
        })
    }

    /// Bytes of one area.
    pub fn area_bytes(&self) -> usize {
        self.area_bytes
    }

    /// Byte offset of input `i` inside an area.
    pub fn offset(&self, i: usize) -> Option<usize> {
        self.slots.get(i).map(|s| s.offset)
    }

    /// Start of area `which` (0 or 1): host memory the caller writes inputs into.
    pub fn area_ptr(&self, which: usize) -> *mut u8 {
        self.areas[which & 1].as_ptr()
    }

    /// Keeps both areas alive while held (for views of them handed out elsewhere).
    pub fn keep_alive(&self) -> Rc<dyn std::any::Any> {
        self.areas.clone()
    }

    /// The area the caller writes next.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Enqueues on `stream`, for every input in `mask` (bit i: input i), a copy of its first `tokens` or `reqs` rows from the current
    /// area into its static buffer; then `then` (typically a graph launch) on the same stream. Flips to
    /// the other area and waits until the copies last made from it are done.
    pub fn submit(&self, stream: &Stream, mask: u64, tokens: usize, reqs: usize, then: impl FnOnce() -> Result<()>) -> Result<usize> {
        let area = self.current;
        let base = self.areas[area].as_ptr();
        for (i, s) in self.slots.iter().enumerate() {
            let rows = if s.input.per_request { reqs } else { tokens };
            if rows > s.max_rows {
                let what = if s.input.per_request { "requests" } else { "tokens" };
                return Err(Error::arg(format!("inputs[{i}]"), format!("at most {} {what}", s.max_rows), rows));
            }
            if rows == 0 || mask & (1 << i) == 0 {
                continue;
            }
            let dst = s.input.buffer.ptr()?;
            // SAFETY: the source lies inside the pinned area (offset + rows * row_bytes <= area size by
            // construction) and the destination inside the static buffer, which this stage keeps alive.
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, base.add(s.offset) as *const c_void, rows * s.input.row_bytes, stream.raw()) }
                .check("cuMemcpyHtoDAsync")?;
        }
        self.done[area].record(stream)?;
        then()?;
        Ok(area)
    }

    /// Makes the other area current, waiting for the copies last made out of it.
    pub fn flip(&mut self) -> Result<usize> {
        self.current ^= 1;
        self.done[self.current].synchronize()?;
        Ok(self.current)
    }

    /// The static buffer of input `i`.
    pub fn buffer(&self, i: usize) -> Option<&Buffer> {
        self.slots.get(i).map(|s| &s.input.buffer)
    }

    /// Replaces the static buffer of input `i` (same byte length).
    pub fn rebind(&mut self, i: usize, buffer: Buffer) -> Result<()> {
        let n = self.slots.len();
        let s = self.slots.get_mut(i).ok_or_else(|| Error::arg("index", format!("an input index below {n}"), i))?;
        if buffer.byte_len() != s.input.buffer.byte_len() || buffer.device().ordinal() != s.input.buffer.device().ordinal() {
            return Err(Error::arg("buffer", format!("a buffer of {} bytes on device {}", s.input.buffer.byte_len(), s.input.buffer.device().ordinal()), format!("{} bytes", buffer.byte_len())));
        }
        buffer.ptr()?;
        s.input.buffer = buffer;
        Ok(())
    }
}

impl Drop for InputStage {
    fn drop(&mut self) {
        // The pinned areas must outlive the copies out of them.
        for e in &self.done {
            let _ = e.synchronize();
        }
    }
}
