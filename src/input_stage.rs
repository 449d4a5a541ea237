//! `InputStage`: pinned double-buffered staging of a step's host inputs, and `stageLaunch`, the one napi
//! call that copies them into the static buffers and replays a graph.

use crate::buffer::DeviceBuffer;
use crate::error::{arg_error, disposed, IntoJs, Result};
use crate::graph;
use crate::handles::{Handle, STAGES, STREAMS};
use crate::mailbox::{self, GRAPH, STAGE};
use cudagraph_core as core;
use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;
use std::cell::RefCell;
use std::rc::Rc;

/// Staging areas for a step's static inputs.
#[napi]
pub struct InputStage {
    inner: Rc<RefCell<core::InputStage>>,
    id: Handle,
}

impl Drop for InputStage {
    fn drop(&mut self) {
        STAGES.with(|t| t.borrow_mut().remove(self.id));
    }
}

#[napi]
impl InputStage {
    /// Staging for `buffers` (the static inputs), with `row_bytes[i]` bytes per row of input i, whose rows
    /// count requests where `per_request[i]` and tokens elsewhere.
    #[napi(constructor)]
    pub fn new(buffers: Vec<&DeviceBuffer>, row_bytes: Vec<u32>, per_request: Vec<bool>) -> Result<InputStage> {
        if row_bytes.len() != buffers.len() || per_request.len() != buffers.len() {
            return Err(arg_error("rowBytes/perRequest", &format!("{} entries each, one per buffer", buffers.len()), format!("{} and {}", row_bytes.len(), per_request.len())));
        }
        let inputs = buffers
            .iter()
            .zip(row_bytes)
            .zip(per_request)
            .map(|((b, r), p)| core::StageInput { buffer: b.inner.clone(), row_bytes: r as usize, per_request: p })
            .collect();
        let inner = Rc::new(RefCell::new(core::InputStage::new(inputs).js()?));
        let id = STAGES.with(|t| t.borrow_mut().insert(inner.clone()));
        Ok(InputStage { inner, id })
    }

    /// Numeric handle for `stageLaunch`.
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }

    /// Byte offset of input `i` in an area.
    #[napi]
    pub fn offset(&self, i: u32) -> Result<u32> {
        self.inner.borrow().offset(i as usize).map(|o| o as u32).ok_or_else(|| arg_error("index", "an input index", i))
    }

    /// Area `which` (0 or 1) as bytes over the pinned memory itself: what JS writes there is what gets
    /// copied. The memory lives until the stage and every such view are gone.
    #[napi]
    pub fn area(&self, which: u32) -> Result<Uint8Array> {
        if which > 1 {
            return Err(arg_error("which", "0 or 1", which));
        }
        let stage = self.inner.borrow();
        let keep = stage.keep_alive();
        // SAFETY: the pointer covers area_bytes of pinned memory that `keep` holds until the finalizer
        // runs; JS is the only writer and the engine reads it only for copies it orders after the writes.
        Ok(unsafe { Uint8Array::with_external_data(stage.area_ptr(which as usize), stage.area_bytes(), move |_, _| drop(keep)) })
    }

    /// The area JS writes next (0 or 1).
    #[napi(getter)]
    pub fn current(&self) -> u32 {
        self.inner.borrow().current() as u32
    }

    /// Replaces the static buffer of input `i` (same byte length).
    #[napi]
    pub fn rebind(&self, i: u32, buffer: &DeviceBuffer) -> Result<()> {
        self.inner.borrow_mut().rebind(i as usize, buffer.inner.clone()).js()
    }
}

/// Copies the staged inputs into the static buffers and replays a graph, in one napi call without
/// arguments. Mailbox: slot `STAGE` the stage handle, then the token and request row counts and the mask of
/// inputs to copy (bit i: input i); slot
/// `GRAPH` the graph handle (0: copy only) and the stream handle. Then flips the stage to its other area.
#[napi]
pub fn stage_launch() -> Result<()> {
    mailbox::with(|slots| {
        let (stage, tokens, reqs, mask) = (slots[STAGE] as Handle, slots[STAGE + 1], slots[STAGE + 2], slots[STAGE + 3] as u64);
        let (graph_id, stream_id) = (slots[GRAPH] as Handle, slots[GRAPH + 1] as Handle);
        if !(tokens >= 0.0 && reqs >= 0.0 && tokens.fract() == 0.0 && reqs.fract() == 0.0) {
            return Err(arg_error("rows", "non-negative integer token and request counts", format!("{tokens} and {reqs}")));
        }
        let stage = STAGES.with(|t| t.borrow().get(stage).cloned()).ok_or_else(|| disposed("input stage"))?;
        let stream = STREAMS.with(|t| t.borrow().get(stream_id).cloned()).ok_or_else(|| disposed("stream"))?;
        let exec = if graph_id == 0 { None } else { Some(graph::exec_for(graph_id, stream.device().context())?) };
        let mut stage = stage.borrow_mut();
        stage.submit(&stream, mask, tokens as usize, reqs as usize, || exec.map_or(Ok(()), |g| graph::launch_exec(g, stream.raw()))).js()?;
        stage.flip().js()?;
        Ok(())
    })
}
