//! `HostStage`: a step's pinned host side (double-buffered input staging, a read-back area the kernels
//! write outputs into), and `stageLaunch`, the one napi call that copies the inputs into the static
//! buffers, replays a graph and, when asked, waits for the outputs.

use crate::buffer::{typed_lengths, DeviceBuffer};
use crate::device::Device;
use crate::error::{arg_error, disposed, IntoJs, Result};
use crate::graph;
use crate::handles::{Handle, Registered, STAGES, STREAMS};
use crate::mailbox::{self, GRAPH, STAGE};
use crate::stream::Stream;
use cudagraph_core as core;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;
use std::cell::RefCell;
use std::rc::Rc;

/// Pinned staging for a step's static inputs and read-back outputs.
#[napi]
pub struct HostStage {
    inner: Rc<RefCell<core::HostStage>>,
    reg: Registered<Rc<RefCell<core::HostStage>>>,
}

#[napi]
impl HostStage {
    /// Staging on `device` for the input `buffers` (`row_bytes[i]` bytes a row of buffer i, whose rows count
    /// requests where `per_request[i]` and tokens elsewhere), and for read-back outputs of
    /// `output_lengths[j]` elements of `output_dtypes[j]`, whose buffers the stage makes (`outputBuffer`);
    /// with `ready`, a ready flag (`readyBuffer`) that lets `stageLaunch` return before the graph ends; with
    /// `bell`, a doorbell: graphs that begin with `captureGate` run once `stageLaunch` rings it, and may be
    /// launched ahead (at most 24 inputs).
    #[napi(constructor, catch_unwind)]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        device: &Device,
        buffers: Vec<&DeviceBuffer>,
        row_bytes: Vec<u32>,
        per_request: Vec<bool>,
        output_dtypes: Vec<String>,
        output_lengths: Vec<u32>,
        ready: bool,
        bell: bool,
    ) -> Result<HostStage> {
        let n = buffers.len();
        if row_bytes.len() != n || per_request.len() != n {
            return Err(arg_error(
                "rowBytes/perRequest",
                &format!("{n} entries each, one per buffer"),
                format!("{} and {}", row_bytes.len(), per_request.len()),
            ));
        }
        let inputs = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| core::StageTensor { buffer: b.inner.clone(), row_bytes: row_bytes[i] as usize, per_request: per_request[i] })
            .collect();
        let outputs = typed_lengths("outputs", &output_dtypes, &output_lengths)?;
        let inner = Rc::new(RefCell::new(core::HostStage::new(&device.inner, inputs, &outputs, ready, bell).js()?));
        Ok(HostStage { reg: Registered::new(&STAGES, inner.clone())?, inner })
    }

    /// The static buffer of read-back output `i`, in the read-back area: kernels write it, and once a
    /// launch with read-back (or `readBack`) returns, `outputArea` holds what they wrote.
    #[napi(catch_unwind)]
    pub fn output_buffer(&self, i: u32) -> Result<DeviceBuffer> {
        let b = self.inner.borrow().output_buffer(i as usize).ok_or_else(|| arg_error("index", "a read-back output index", i))?;
        DeviceBuffer::new(b)
    }

    /// The ready flag (one i32 in the read-back area, as the device sees it), or null without one: the
    /// step's kernels set it nonzero once every read-back output holds its value.
    #[napi(catch_unwind)]
    pub fn ready_buffer(&self) -> Result<Option<DeviceBuffer>> {
        self.inner.borrow().ready_buffer().map(DeviceBuffer::new).transpose()
    }

    /// Launches the stage's gate on `stream`, which is being captured, as the first node of a graph of
    /// `tokens` and `reqs` rows (a stage with a doorbell).
    #[napi(catch_unwind)]
    pub fn capture_gate(&self, stream: &Stream, tokens: u32, reqs: u32) -> Result<()> {
        self.inner.borrow().capture_gate(&stream.inner, tokens as usize, reqs as usize).js()
    }

    /// Numeric handle for `stageLaunch`.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.reg.id()
    }

    /// Byte offset of input `i` in an area.
    #[napi(catch_unwind)]
    pub fn offset(&self, i: u32) -> Result<u32> {
        self.inner.borrow().offset(i as usize).map(|o| o as u32).ok_or_else(|| arg_error("index", "an input index", i))
    }

    /// Input area `which` (0 or 1) as bytes over the pinned memory itself: what JS writes there is what
    /// gets copied. The memory lives until the stage and every such view are gone.
    #[napi(catch_unwind)]
    pub fn area(&self, which: u32) -> Result<Uint8Array> {
        if which > 1 {
            return Err(arg_error("which", "0 or 1", which));
        }
        let stage = self.inner.borrow();
        Ok(external(&stage, stage.area_ptr(which as usize), stage.area_bytes()))
    }

    /// Byte offset of read-back output `i` in the read-back area.
    #[napi(catch_unwind)]
    pub fn output_offset(&self, i: u32) -> Result<u32> {
        self.inner.borrow().output_offset(i as usize).map(|o| o as u32).ok_or_else(|| arg_error("index", "a read-back output index", i))
    }

    /// The read-back area as bytes over the pinned memory itself: a step's outputs are there once the call
    /// that waited for them returns, until the next step. Lives as long as `area`'s views.
    #[napi(catch_unwind)]
    pub fn output_area(&self) -> Uint8Array {
        let stage = self.inner.borrow();
        external(&stage, stage.output_ptr(), stage.output_bytes())
    }

    /// Waits for `stream`, after which the read-back outputs hold what its work wrote (for steps that did
    /// not run through `stageLaunch`'s read-back: eager and piecewise ones).
    #[napi(catch_unwind)]
    pub fn read_back(&self, stream: &Stream) -> Result<()> {
        self.inner.borrow().read_back(&stream.inner).js()
    }

    /// The area JS writes next (0 or 1).
    #[napi(getter, catch_unwind)]
    pub fn current(&self) -> u32 {
        self.inner.borrow().current() as u32
    }

    /// Replaces the static buffer of input `i` (same byte length).
    #[napi(catch_unwind)]
    pub fn rebind(&self, i: u32, buffer: &DeviceBuffer) -> Result<()> {
        self.inner.borrow_mut().rebind(i as usize, buffer.inner.clone()).js()
    }
}

/// A Uint8Array over `len` bytes of the stage's pinned memory at `ptr`, keeping that memory alive.
fn external(stage: &core::HostStage, ptr: *mut u8, len: usize) -> Uint8Array {
    let keep = stage.keep_alive();
    // SAFETY: the pointer covers `len` bytes of pinned memory that `keep` holds until the finalizer runs;
    // the device writes the read-back area only in steps that are waited for (until their ready flag, past
    // which no kernel writes it, or the stream's end) before returning to JS.
    unsafe { Uint8Array::with_external_data(ptr, len, move |_, _| drop(keep)) }
}

/// Copies the staged inputs into the static buffers and replays a graph, in one napi call without
/// arguments. Mailbox: slot `STAGE` the stage handle, then the token and request row counts, the mask of
/// inputs to copy (bit i: input i) and the read-back wait (after the replay, so what the kernels wrote into
/// the read-back outputs is on the host: 1 for the replay's end, 2 for the stage's ready flag or that end;
/// 0 none); slot `GRAPH` the graph handle (0: copy only) and the stream handle; slot `STAGE + 6` the
/// doorbell's flags (a stage with one): bit 0, the graphs launched by or after this call begin with the
/// gate; bit 1, launch the graph once more behind this one, armed (with a wait). With bit 0 and a graph,
/// the call rings the doorbell instead of copying (and launches only what is not armed already); with
/// bit 0 and no graph, it copies and rings for the gate to copy nothing. Then flips the stage to its other
/// area, and writes the area JS fills next to slot `STAGE + 5`, whether the call succeeded or not: that
/// slot is the one record of it.
#[napi(catch_unwind)]
pub fn stage_launch() -> Result<()> {
    mailbox::with(|slots| {
        let stage = STAGES.with(|t| t.borrow().get(slots[STAGE] as Handle).cloned()).ok_or_else(|| disposed("input stage"))?;
        let r = stage_launch_with(&stage, slots);
        slots[STAGE + 5] = stage.borrow().current() as f64;
        r
    })
}

fn stage_launch_with(stage: &RefCell<core::HostStage>, slots: &[f64]) -> Result<()> {
    let (tokens, reqs, mask) = (slots[STAGE + 1], slots[STAGE + 2], slots[STAGE + 3] as u64);
    let wait = slots[STAGE + 4];
    let (graph_id, stream_id) = (slots[GRAPH] as Handle, slots[GRAPH + 1] as Handle);
    if !(tokens >= 0.0 && reqs >= 0.0 && tokens.fract() == 0.0 && reqs.fract() == 0.0) {
        return Err(arg_error("rows", "non-negative integer token and request counts", format!("{tokens} and {reqs}")));
    }
    let stream = STREAMS.with(|t| t.borrow().get(stream_id).cloned()).ok_or_else(|| disposed("stream"))?;
    let mut stage = stage.borrow_mut();
    let gate = slots[STAGE + 6] as u32;
    if gate & 1 != 0 && graph_id != 0 {
        let exec = graph::exec(graph_id)?;
        // SAFETY: the handle is in the table for this whole call (JS runs nothing meanwhile).
        let mut launch = || unsafe { exec.launch(&stream) };
        let waits = wait != 0.0;
        let end =
            stage.gated_launch(&stream, graph_id as usize, mask, tokens as usize, reqs as usize, waits, gate & 2 != 0, &mut launch).js()?;
        if waits {
            stage.wait_end(end, wait == 2.0).js()?;
        }
        return Ok(());
    }
    stage.submit(&stream, mask, tokens as usize, reqs as usize, gate & 1 != 0).js()?;
    if graph_id != 0 {
        graph::launch(graph_id, &stream)?;
    }
    stage.flip().js()?;
    if wait == 2.0 {
        stage.wait_ready(&stream).js()?;
    } else if wait != 0.0 {
        stage.read_back(&stream).js()?;
    }
    Ok(())
}
