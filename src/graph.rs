//! `Graph` and the hot-path free function `graphLaunch`.

use crate::error::{arg_error, disposed, IntoJs, Result};
use crate::handles::{ExecEntry, Handle, GRAPHS, STREAMS};
use crate::mailbox::{self, GRAPH};
use crate::stream::Stream;
use cudagraph_core as core;
use cudarc::driver::sys;
use napi_derive::napi;

/// Capture / instantiate / upload durations, µs.
#[napi(object)]
pub struct GraphTimings {
    pub capture_us: f64,
    pub instantiate_us: f64,
    pub upload_us: f64,
}

/// Bytes the graph added when made.
#[napi(object)]
pub struct GraphMemoryDelta {
    pub free_bytes_delta: f64,
    pub graph_reserved_delta: f64,
    pub graph_used_delta: f64,
}

/// Result of `Graph.update`.
#[napi(object)]
pub struct UpdateResult {
    pub updated_in_place: bool,
    pub reason: Option<String>,
}

/// A captured CUDA graph.
#[napi]
pub struct Graph {
    inner: Option<core::Graph>,
    id: Handle,
}

impl Graph {
    pub(crate) fn new(g: core::Graph) -> Result<Graph> {
        let id = GRAPHS.with(|t| t.borrow_mut().insert(ExecEntry { exec: g.raw_exec(), ctx: g.device().context() }));
        Ok(Graph { inner: Some(g), id })
    }

    fn get(&self) -> Result<&core::Graph> {
        self.inner.as_ref().ok_or_else(|| disposed("graph"))
    }

    fn get_mut(&mut self) -> Result<&mut core::Graph> {
        self.inner.as_mut().ok_or_else(|| disposed("graph"))
    }

    /// Re-publishes the executable handle after it changed (instantiate, update).
    fn refresh(&self) {
        if let Some(g) = &self.inner {
            GRAPHS.with(|t| t.borrow_mut().set(self.id, ExecEntry { exec: g.raw_exec(), ctx: g.device().context() }));
        }
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        GRAPHS.with(|t| t.borrow_mut().remove(self.id));
    }
}

#[napi]
impl Graph {
    /// Numeric handle for `graphLaunch`.
    #[napi(getter)]
    pub fn id(&self) -> f64 {
        self.id as f64
    }

    #[napi(getter)]
    pub fn disposed(&self) -> bool {
        self.inner.is_none()
    }

    #[napi(getter)]
    pub fn node_count(&self) -> Result<u32> {
        Ok(self.get()?.node_count() as u32)
    }

    #[napi(getter)]
    pub fn instantiated(&self) -> Result<bool> {
        Ok(!self.get()?.raw_exec().is_null())
    }

    #[napi]
    pub fn timings(&self) -> Result<GraphTimings> {
        let t = self.get()?.timings();
        Ok(GraphTimings { capture_us: t.capture_us, instantiate_us: t.instantiate_us, upload_us: t.upload_us })
    }

    /// Undefined when the capture did not measure memory.
    #[napi]
    pub fn memory(&self) -> Result<Option<GraphMemoryDelta>> {
        Ok(self.get()?.memory().map(|m| GraphMemoryDelta {
            free_bytes_delta: m.free_bytes_delta as f64,
            graph_reserved_delta: m.graph_reserved_delta as f64,
            graph_used_delta: m.graph_used_delta as f64,
        }))
    }

    #[napi]
    pub fn instantiate(&mut self) -> Result<()> {
        self.get_mut()?.instantiate().js()?;
        self.refresh();
        Ok(())
    }

    #[napi]
    pub fn upload(&mut self, stream: &Stream) -> Result<()> {
        self.get_mut()?.upload(&stream.inner).js()
    }

    #[napi]
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        self.get()?.launch(&stream.inner).js()
    }

    /// Takes over `source` (a fresh capture of the same work): in place when the driver allows it, else
    /// by re-instantiating. `source` is disposed.
    #[napi]
    pub fn update(&mut self, source: &mut Graph) -> Result<UpdateResult> {
        if source.id == self.id {
            return Err(arg_error("source", "another graph", "the graph itself"));
        }
        let src = source.inner.take().ok_or_else(|| disposed("source graph"))?;
        GRAPHS.with(|t| t.borrow_mut().remove(source.id));
        let out = self.get_mut()?.update(src).js()?;
        self.refresh();
        Ok(UpdateResult { updated_in_place: out.updated_in_place, reason: out.reason })
    }

    /// Destroys the graph now; its buffers become free to dispose.
    #[napi]
    pub fn dispose(&mut self) {
        GRAPHS.with(|t| t.borrow_mut().remove(self.id));
        self.inner = None;
    }
}

/// Replays a graph: the one napi call of the replay path, without arguments. The mailbox holds the graph
/// handle at slot `GRAPH` and the stream handle after it.
#[napi]
pub fn graph_launch() -> Result<()> {
    mailbox::with(|slots| launch(slots[GRAPH] as Handle, slots[GRAPH + 1] as Handle))
}

#[inline]
fn launch(graph: Handle, stream: Handle) -> Result<()> {
    let s = STREAMS.with(|t| t.borrow().get(stream).map(|s| (s.raw(), s.device().context()))).ok_or_else(|| disposed("stream"))?;
    launch_exec(exec_for(graph, s.1)?, s.0).js()
}

/// The executable of a live, instantiated graph handle whose context is `ctx` (the stream's).
#[inline]
pub(crate) fn exec_for(graph: Handle, ctx: sys::CUcontext) -> Result<ExecEntry> {
    let g = GRAPHS.with(|t| t.borrow().get(graph).copied()).ok_or_else(|| disposed("graph"))?;
    if g.ctx != ctx {
        return Err(arg_error("stream", "a stream on the graph's device", "a stream of another device"));
    }
    if g.exec.is_null() {
        return Err(arg_error("graph", "an instantiated graph", "a graph captured with instantiate: false"));
    }
    Ok(g)
}

/// Launches an executable found by [`exec_for`] on `stream`.
#[inline]
pub(crate) fn launch_exec(g: ExecEntry, stream: sys::CUstream) -> core::Result<()> {
    // SAFETY: the context belongs to the graph's device, which the live graph keeps open.
    unsafe { core::device::bind_context(g.ctx) }?;
    // SAFETY: both handles are live (their objects remove them from the tables before destroying them).
    unsafe { sys::cuGraphLaunch(g.exec, stream) }.result().map_err(|e| core::Error::Cuda {
        call: "cuGraphLaunch",
        code: e.0 as u32,
        name: e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        message: e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    })
}
