//! `Graph` and the hot-path free function `graphLaunch`.

use crate::error::{arg_error, disposed, IntoJs, Result};
use crate::handles::{Handle, Registered, GRAPHS, STREAMS};
use crate::mailbox::{self, GRAPH};
use crate::stream::Stream;
use cudagraph_core as core;
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
    reg: Registered<core::ExecHandle>,
}

impl Graph {
    pub(crate) fn new(g: core::Graph) -> Result<Graph> {
        let reg = Registered::new(&GRAPHS, g.exec_handle())?;
        Ok(Graph { inner: Some(g), reg })
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
            self.reg.set(g.exec_handle());
        }
    }
}

#[napi]
impl Graph {
    /// Numeric handle for `graphLaunch`.
    #[napi(getter, catch_unwind)]
    pub fn id(&self) -> f64 {
        self.reg.id()
    }

    #[napi(getter, catch_unwind)]
    pub fn disposed(&self) -> bool {
        self.inner.is_none()
    }

    #[napi(getter, catch_unwind)]
    pub fn node_count(&self) -> Result<u32> {
        Ok(self.get()?.node_count() as u32)
    }

    #[napi(getter, catch_unwind)]
    pub fn instantiated(&self) -> Result<bool> {
        Ok(self.get()?.is_instantiated())
    }

    #[napi(catch_unwind)]
    pub fn timings(&self) -> Result<GraphTimings> {
        let t = self.get()?.timings();
        Ok(GraphTimings { capture_us: t.capture_us, instantiate_us: t.instantiate_us, upload_us: t.upload_us })
    }

    /// Undefined when the capture did not measure memory.
    #[napi(catch_unwind)]
    pub fn memory(&self) -> Result<Option<GraphMemoryDelta>> {
        Ok(self.get()?.memory().map(|m| GraphMemoryDelta {
            free_bytes_delta: m.free_bytes_delta as f64,
            graph_reserved_delta: m.graph_reserved_delta as f64,
            graph_used_delta: m.graph_used_delta as f64,
        }))
    }

    #[napi(catch_unwind)]
    pub fn instantiate(&mut self) -> Result<()> {
        self.get_mut()?.instantiate().js()?;
        self.refresh();
        Ok(())
    }

    #[napi(catch_unwind)]
    pub fn upload(&mut self, stream: &Stream) -> Result<()> {
        self.get_mut()?.upload(&stream.inner).js()
    }

    #[napi(catch_unwind)]
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        self.get()?.launch(&stream.inner).js()
    }

    /// Takes over `source` (a fresh capture of the same work): in place when the driver allows it, else
    /// by re-instantiating. `source` is disposed. A disposed target leaves `source` as it was.
    #[napi(catch_unwind)]
    pub fn update(&mut self, source: &mut Graph) -> Result<UpdateResult> {
        if source.reg.handle() == self.reg.handle() {
            return Err(arg_error("source", "another graph", "the graph itself"));
        }
        self.get()?;
        let src = source.inner.take().ok_or_else(|| disposed("source graph"))?;
        source.reg.remove();
        let out = self.get_mut()?.update(src).js()?;
        self.refresh();
        Ok(UpdateResult { updated_in_place: out.updated_in_place, reason: out.reason })
    }

    /// Destroys the graph now; its buffers become free to dispose.
    #[napi(catch_unwind)]
    pub fn dispose(&mut self) {
        self.reg.remove();
        self.inner = None;
    }
}

/// Replays a graph: the one napi call of the replay path, without arguments. The mailbox holds the graph
/// handle at slot `GRAPH` and the stream handle after it.
#[napi(catch_unwind)]
pub fn graph_launch() -> Result<()> {
    mailbox::with(|slots| {
        let stream = STREAMS.with(|t| t.borrow().get(slots[GRAPH + 1] as Handle).cloned()).ok_or_else(|| disposed("stream"))?;
        launch(slots[GRAPH] as Handle, &stream)
    })
}

/// Replays the live graph behind `graph` on `stream`.
#[inline]
pub(crate) fn launch(graph: Handle, stream: &core::Stream) -> Result<()> {
    let exec = exec(graph)?;
    // SAFETY: a graph's handle leaves the table before its executable changes or is destroyed.
    unsafe { exec.launch(stream) }.js()
}

/// The executable behind `graph`: valid while its handle is in the table (launch it only then).
#[inline]
pub(crate) fn exec(graph: Handle) -> Result<core::ExecHandle> {
    GRAPHS.with(|t| t.borrow().get(graph).copied()).ok_or_else(|| disposed("graph"))
}
