//! Captured graphs: instantiate, upload, launch, in-place exec update, node counts and memory deltas.

use crate::device::Device;
use crate::error::{Check, Error, Result};
use crate::stream::{Resources, Stream};
use cudarc::driver::sys;
use std::rc::Rc;
use std::time::Instant;

/// What a graph added to device memory when it was captured, instantiated and uploaded, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphMemory {
    /// Drop in the device's free memory (`cuMemGetInfo`) from capture start to after upload.
    pub free_bytes_delta: i64,
    /// Growth of the graph pool's reserved memory over the same span.
    pub graph_reserved_delta: i64,
    /// Growth of the graph pool's used memory over the same span.
    pub graph_used_delta: i64,
}

/// How long the graph took to make, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GraphTimings {
    /// From begin-capture to end-capture.
    pub capture_us: f64,
    /// `cuGraphInstantiate`.
    pub instantiate_us: f64,
    /// `cuGraphUpload` to completion (0 when not uploaded).
    pub upload_us: f64,
}

/// The result of [`Graph::update`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// True when the executable graph was updated in place (`cuGraphExecUpdate`).
    pub updated_in_place: bool,
    /// Why the in-place update was refused (the driver's `CUgraphExecUpdateResult`), when it was.
    pub reason: Option<String>,
}

/// A captured graph and (once instantiated) its executable. Keeps alive every allocation, module and
/// pinned source its nodes refer to; those allocations cannot be disposed while it lives.
#[derive(Debug)]
pub struct Graph {
    device: Rc<Device>,
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    resources: Resources,
    nodes: usize,
    timings: GraphTimings,
    memory: Option<GraphMemory>,
}

fn count_nodes(graph: sys::CUgraph) -> Result<usize> {
    let mut n = 0usize;
    // SAFETY: a null node array asks only for the count.
    unsafe { sys::cuGraphGetNodes(graph, std::ptr::null_mut(), &mut n) }.check("cuGraphGetNodes")?;
    Ok(n)
}

impl Graph {
    pub(crate) fn from_capture(device: Rc<Device>, graph: sys::CUgraph, resources: Resources, capture_us: f64) -> Result<Graph> {
        for a in &resources.allocs {
            a.add_graph_use();
        }
        let mut g = Graph {
            device,
            graph,
            exec: std::ptr::null_mut(),
            resources,
            nodes: 0,
            timings: GraphTimings { capture_us, ..Default::default() },
            memory: None,
        };
        g.nodes = count_nodes(graph)?;
        Ok(g)
    }

    pub(crate) fn set_memory(&mut self, m: GraphMemory) {
        self.memory = Some(m);
    }

    /// Instantiates the executable graph (idempotent).
    pub fn instantiate(&mut self) -> Result<()> {
        if !self.exec.is_null() {
            return Ok(());
        }
        self.device.bind()?;
        let t = Instant::now();
        let mut exec = std::ptr::null_mut();
        // SAFETY: `graph` is live; writes one exec handle.
        unsafe { sys::cuGraphInstantiateWithFlags(&mut exec, self.graph, 0) }.check("cuGraphInstantiateWithFlags")?;
        self.exec = exec;
        self.timings.instantiate_us = t.elapsed().as_secs_f64() * 1e6;
        Ok(())
    }

    fn exec(&self) -> Result<sys::CUgraphExec> {
        if self.exec.is_null() {
            return Err(Error::arg("graph", "an instantiated graph", "a graph captured with instantiate: false"));
        }
        Ok(self.exec)
    }

    /// A copyable reference to the executable for a handle table on the replay path (see [`ExecHandle`]).
    /// It changes when the graph is instantiated or updated by re-instantiation.
    pub fn exec_handle(&self) -> ExecHandle {
        ExecHandle { exec: self.exec, ctx: self.device.context() }
    }

    /// Whether the executable exists.
    pub fn is_instantiated(&self) -> bool {
        !self.exec.is_null()
    }

    /// Prepares the graph's device resources on `stream` so the first launch is as fast as the rest, and
    /// waits for it.
    pub fn upload(&mut self, stream: &Stream) -> Result<()> {
        stream.same_device(&self.device, "stream")?;
        let t = Instant::now();
        // SAFETY: live exec and stream.
        unsafe { sys::cuGraphUpload(self.exec()?, stream.raw()) }.check("cuGraphUpload")?;
        stream.synchronize()?;
        self.timings.upload_us = t.elapsed().as_secs_f64() * 1e6;
        Ok(())
    }

    /// Enqueues one replay on `stream`.
    #[inline]
    pub fn launch(&self, stream: &Stream) -> Result<()> {
        stream.same_device(&self.device, "stream")?;
        // SAFETY: live exec and stream; the graph keeps every resource it uses alive.
        unsafe { sys::cuGraphLaunch(self.exec()?, stream.raw()) }.check("cuGraphLaunch")
    }

    /// Number of nodes in the graph.
    pub fn node_count(&self) -> usize {
        self.nodes
    }

    /// Capture, instantiate and upload times.
    pub fn timings(&self) -> GraphTimings {
        self.timings
    }

    /// Memory the graph added when it was made; None when it was not measured (or not instantiated).
    pub fn memory(&self) -> Option<GraphMemory> {
        self.memory
    }

    /// The graph's device.
    pub fn device(&self) -> &Rc<Device> {
        &self.device
    }

    /// Takes over `source`'s topology and parameters (a new capture of the same work with other buffers
    /// or scalars). Tries `cuGraphExecUpdate` first, which keeps this executable and is cheap; when the
    /// driver refuses (the topology changed), re-instantiates. Either way this graph then runs `source`'s
    /// work and holds its resources; `source` is consumed.
    pub fn update(&mut self, mut source: Graph) -> Result<UpdateOutcome> {
        if source.device.ordinal() != self.device.ordinal() {
            return Err(Error::arg(
                "source",
                format!("a graph on device {}", self.device.ordinal()),
                format!("one on device {}", source.device.ordinal()),
            ));
        }
        let exec = self.exec()?;
        self.device.bind()?;
        let mut info = sys::CUgraphExecUpdateResultInfo {
            result: sys::CUgraphExecUpdateResult::CU_GRAPH_EXEC_UPDATE_SUCCESS,
            errorNode: std::ptr::null_mut(),
            errorFromNode: std::ptr::null_mut(),
        };
        // SAFETY: live exec and graph; `info` is written by the call.
        let r = unsafe { sys::cuGraphExecUpdate_v2(exec, source.graph, &mut info) };
        let outcome = match r {
            sys::CUresult::CUDA_SUCCESS => UpdateOutcome { updated_in_place: true, reason: None },
            sys::CUresult::CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE => {
                source.instantiate()?;
                // SAFETY: our exec is replaced below by source's; destroyed once.
                unsafe { sys::cuGraphExecDestroy(self.exec) }.check("cuGraphExecDestroy")?;
                self.exec = std::mem::replace(&mut source.exec, std::ptr::null_mut());
                self.timings.instantiate_us = source.timings.instantiate_us;
                UpdateOutcome { updated_in_place: false, reason: Some(format!("{:?}", info.result)) }
            }
            e => {
                e.check("cuGraphExecUpdate")?;
                unreachable!()
            }
        };
        // This graph now describes source's work: swap topology, resources and bookkeeping.
        std::mem::swap(&mut self.graph, &mut source.graph);
        std::mem::swap(&mut self.resources, &mut source.resources);
        self.nodes = source.nodes;
        self.timings.capture_us = source.timings.capture_us;
        self.memory = source.memory;
        Ok(outcome) // `source` drops here with our old graph and resources
    }
}

/// A graph's executable and context, copied into a handle table so that a replay needs no borrow of the
/// graph. It is only valid while the graph lives and keeps this executable: whoever holds it must forget it
/// before the graph is dropped, instantiated again or updated (the binding's handle tables do).
#[derive(Clone, Copy, Debug)]
pub struct ExecHandle {
    exec: sys::CUgraphExec,
    ctx: sys::CUcontext,
}

impl ExecHandle {
    /// Enqueues one replay on `stream`: the replay path's only driver call.
    ///
    /// # Safety
    /// The graph this came from must still live and hold this executable (see the type's documentation).
    #[inline]
    pub unsafe fn launch(&self, stream: &Stream) -> Result<()> {
        if self.ctx != stream.device().context() {
            return Err(Error::arg("stream", "a stream on the graph's device", "a stream of another device"));
        }
        if self.exec.is_null() {
            return Err(Error::arg("graph", "an instantiated graph", "a graph captured with instantiate: false"));
        }
        // SAFETY: the caller guarantees the graph, which keeps its device's context retained, is alive.
        unsafe { crate::device::bind_context(self.ctx) }?;
        // SAFETY: the executable is live (caller's contract) and the stream is live (borrowed).
        unsafe { sys::cuGraphLaunch(self.exec, stream.raw()) }.check("cuGraphLaunch")
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let _ = self.device.bind();
        if !self.resources.pinned.is_empty() || self.resources.allocs.iter().any(|a| a.is_stream_ordered()) {
            // Pinned sources may still be read by a replay in flight, on any stream; and stream-ordered
            // memory whose last reference this graph holds is freed below, back to a pool that serves
            // the next allocation at once.
            let _ = self.device.synchronize();
        }
        // SAFETY: each handle destroyed once; CUDA defers the exec's release until running replays finish.
        unsafe {
            if !self.exec.is_null() {
                let _ = sys::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                let _ = sys::cuGraphDestroy(self.graph);
            }
        }
        for a in &self.resources.allocs {
            a.remove_graph_use();
        }
    }
}
