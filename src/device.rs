//! `Device`: an open GPU, and the factory for streams, events, buffers and modules.

use crate::buffer::{typed_lengths, DeviceBuffer};
use crate::error::{IntoJs, Result};
use crate::event::Event;
use crate::module::Module;
use crate::stream::Stream;
use cudagraph_core as core;
use napi_derive::napi;
use std::rc::Rc;

/// Free and total device memory, bytes.
#[napi(object)]
pub struct MemoryInfo {
    pub free: f64,
    pub total: f64,
}

/// The device's graph-memory pool, bytes.
#[napi(object)]
pub struct GraphMemoryStats {
    pub used_current: f64,
    pub used_high: f64,
    pub reserved_current: f64,
    pub reserved_high: f64,
}

/// An open CUDA device (its primary context).
#[napi]
pub struct Device {
    pub(crate) inner: Rc<core::Device>,
}

#[napi]
impl Device {
    /// Number of CUDA devices. Throws CUDA_UNAVAILABLE without a driver.
    #[napi(catch_unwind)]
    pub fn count() -> Result<i32> {
        core::Device::count().js()
    }

    /// CUDA driver version, e.g. 13000.
    #[napi(catch_unwind)]
    pub fn driver_version() -> Result<i32> {
        core::Device::driver_version().js()
    }

    /// Opens device `ordinal`.
    #[napi(factory, catch_unwind)]
    pub fn open(ordinal: i32) -> Result<Device> {
        Ok(Device { inner: core::Device::open(ordinal).js()? })
    }

    #[napi(getter, catch_unwind)]
    pub fn ordinal(&self) -> i32 {
        self.inner.ordinal()
    }

    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> Result<String> {
        self.inner.name().js()
    }

    /// [major, minor].
    #[napi(getter, catch_unwind)]
    pub fn compute_capability(&self) -> Result<Vec<i32>> {
        let (a, b) = self.inner.compute_capability().js()?;
        Ok(vec![a, b])
    }

    /// Number of streaming multiprocessors.
    #[napi(getter, catch_unwind)]
    pub fn multiprocessors(&self) -> Result<i32> {
        self.inner.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).js()
    }

    /// Most shared memory one block may use when its kernel opts in, bytes.
    #[napi(getter, catch_unwind)]
    pub fn max_shared_memory_per_block(&self) -> Result<i32> {
        self.inner.attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN).js()
    }

    #[napi(catch_unwind)]
    pub fn memory_info(&self) -> Result<MemoryInfo> {
        let (free, total) = self.inner.memory_info().js()?;
        Ok(MemoryInfo { free: free as f64, total: total as f64 })
    }

    #[napi(catch_unwind)]
    pub fn graph_memory(&self) -> Result<GraphMemoryStats> {
        let g = self.inner.graph_memory().js()?;
        Ok(GraphMemoryStats {
            used_current: g.used_current as f64,
            used_high: g.used_high as f64,
            reserved_current: g.reserved_current as f64,
            reserved_high: g.reserved_high as f64,
        })
    }

    #[napi(catch_unwind)]
    pub fn trim_graph_memory(&self) -> Result<()> {
        self.inner.trim_graph_memory().js()
    }

    #[napi(catch_unwind)]
    pub fn reset_graph_memory_high(&self) -> Result<()> {
        self.inner.reset_graph_memory_high().js()
    }

    #[napi(catch_unwind)]
    pub fn synchronize(&self) -> Result<()> {
        self.inner.synchronize().js()
    }

    #[napi(catch_unwind)]
    pub fn create_stream(&self) -> Result<Stream> {
        Stream::new(core::Stream::new(&self.inner).js()?)
    }

    #[napi(catch_unwind)]
    pub fn create_event(&self, timing: bool) -> Result<Event> {
        Ok(Event { inner: core::Event::new(&self.inner, timing).js()? })
    }

    #[napi(catch_unwind)]
    pub fn alloc(&self, dtype: String, length: u32) -> Result<DeviceBuffer> {
        let dtype = core::DType::parse("dtype", &dtype).js()?;
        DeviceBuffer::new(core::Buffer::alloc(&self.inner, dtype, length as usize).js()?)
    }

    /// One allocation holding `lengths[i]` elements of `dtypes[i]` for each i, each part aligned to
    /// `align` bytes, in order: one view a part.
    #[napi(catch_unwind)]
    pub fn alloc_packed(&self, dtypes: Vec<String>, lengths: Vec<u32>, align: u32) -> Result<Vec<DeviceBuffer>> {
        let parts = typed_lengths("parts", &dtypes, &lengths)?;
        core::Buffer::alloc_packed(&self.inner, &parts, align as usize).js()?.into_iter().map(DeviceBuffer::new).collect()
    }

    #[napi(catch_unwind)]
    pub fn compile(&self, source: String, name: String, options: Vec<String>, cache: bool) -> Result<Module> {
        Ok(Module { inner: core::Module::compile(&self.inner, &source, &name, &options, cache).js()? })
    }
}
