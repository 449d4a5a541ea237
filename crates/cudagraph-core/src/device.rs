//! A CUDA device and its primary context.

use crate::error::{driver_error, Check, Error, Result};
use crate::libs;
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use std::cell::Cell;
use std::rc::Rc;

thread_local! {
    /// The context this thread last made current: binding is skipped when it is already current.
    static CURRENT: Cell<sys::CUcontext> = const { Cell::new(std::ptr::null_mut()) };
}

/// Graph-memory pool attributes of a device, in bytes (`cuDeviceGetGraphMemAttribute`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphMemStats {
    /// Bytes of graph allocations currently mapped for live graphs.
    pub used_current: u64,
    /// High-water mark of `used_current` since the last reset.
    pub used_high: u64,
    /// Bytes reserved by the graph pool (mapped or cached for reuse).
    pub reserved_current: u64,
    /// High-water mark of `reserved_current` since the last reset.
    pub reserved_high: u64,
}

/// Makes `ctx` current on the calling thread unless it already is (one thread-local compare).
///
/// # Safety
/// `ctx` must be a context retained by a live [`Device`].
#[inline]
pub unsafe fn bind_context(ctx: sys::CUcontext) -> Result<()> {
    if CURRENT.with(|c| c.get()) == ctx {
        return Ok(());
    }
    // SAFETY: the caller guarantees `ctx` is retained by a live Device.
    unsafe { cu::ctx::set_current(ctx) }.check("cuCtxSetCurrent")?;
    CURRENT.with(|c| c.set(ctx));
    Ok(())
}

/// An open device: its ordinal and a retained primary context, released on drop.
#[derive(Debug)]
pub struct Device {
    ordinal: i32,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
}

impl Device {
    /// Number of CUDA devices; [`Error::Unavailable`] when there is no driver.
    pub fn count() -> Result<i32> {
        libs::driver()?;
        cu::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))
    }

    /// Opens device `ordinal`, retains its primary context and makes it current on this thread.
    pub fn open(ordinal: i32) -> Result<Rc<Device>> {
        let count = Device::count()?;
        if count == 0 {
            return Err(Error::Unavailable("the driver reports no CUDA device".into()));
        }
        if ordinal < 0 || ordinal >= count {
            return Err(Error::arg("ordinal", format!("a device ordinal in 0..{}", count - 1), ordinal));
        }
        let dev = cu::device::get(ordinal).map_err(|e| driver_error("cuDeviceGet", e))?;
        // SAFETY: `dev` is a valid device handle; the retain is balanced by the release in Drop.
        let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))?;
        let device = Rc::new(Device { ordinal, dev, ctx });
        device.bind()?;
        Ok(device)
    }

    /// Makes this device's context current on the calling thread (a no-op when it already is).
    #[inline]
    pub fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is retained by this Device until Drop.
        unsafe { bind_context(self.ctx) }
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> i32 {
        self.ordinal
    }

    /// The raw device handle.
    pub fn raw(&self) -> sys::CUdevice {
        self.dev
    }

    /// The raw primary context.
    pub fn context(&self) -> sys::CUcontext {
        self.ctx
    }

    /// The device's marketing name.
    pub fn name(&self) -> Result<String> {
        cu::device::get_name(self.dev).map_err(|e| driver_error("cuDeviceGetName", e))
    }

    /// A device attribute.
    pub fn attribute(&self, attr: sys::CUdevice_attribute) -> Result<i32> {
        // SAFETY: `dev` is valid; the attribute enum comes from the bindings.
        unsafe { cu::device::get_attribute(self.dev, attr) }.map_err(|e| driver_error("cuDeviceGetAttribute", e))
    }

    /// Compute capability as (major, minor).
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        use sys::CUdevice_attribute::*;
        Ok((self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?, self.attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?))
    }

    /// Driver version as the driver reports it (for example 13000 for CUDA 13.0).
    pub fn driver_version() -> Result<i32> {
        libs::driver()?;
        let mut v = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut v) }.check("cuDriverGetVersion")?;
        Ok(v)
    }

    /// Total device memory in bytes.
    pub fn total_memory(&self) -> Result<u64> {
        // SAFETY: `dev` is valid.
        unsafe { cu::device::total_mem(self.dev) }.map(|b| b as u64).map_err(|e| driver_error("cuDeviceTotalMem", e))
    }

    /// (free, total) device memory in bytes, from `cuMemGetInfo`.
    pub fn memory_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        cu::mem_get_info().map(|(f, t)| (f as u64, t as u64)).map_err(|e| driver_error("cuMemGetInfo", e))
    }

    /// Blocks until all work on this device's context is done.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        crate::stream::release_all_armed();
        cu::ctx::synchronize().check("cuCtxSynchronize")
    }

    /// The graph-memory pool's attributes.
    pub fn graph_memory(&self) -> Result<GraphMemStats> {
        use sys::CUgraphMem_attribute::*;
        let get = |attr| -> Result<u64> {
            let mut v: u64 = 0;
            // SAFETY: these attributes are documented as cuuint64_t.
            unsafe { sys::cuDeviceGetGraphMemAttribute(self.dev, attr, &mut v as *mut u64 as *mut _) }
                .check("cuDeviceGetGraphMemAttribute")?;
            Ok(v)
        };
        Ok(GraphMemStats {
            used_current: get(CU_GRAPH_MEM_ATTR_USED_MEM_CURRENT)?,
            used_high: get(CU_GRAPH_MEM_ATTR_USED_MEM_HIGH)?,
            reserved_current: get(CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT)?,
            reserved_high: get(CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH)?,
        })
    }

    /// Returns unused graph-pool memory to the OS (`cuDeviceGraphMemTrim`). Synchronises first, as memory
    /// still in use by a running graph is not released.
    pub fn trim_graph_memory(&self) -> Result<()> {
        self.synchronize()?;
        // SAFETY: `dev` is valid.
        unsafe { sys::cuDeviceGraphMemTrim(self.dev) }.check("cuDeviceGraphMemTrim")
    }

    /// Resets the two high-water marks to the current values.
    pub fn reset_graph_memory_high(&self) -> Result<()> {
        use sys::CUgraphMem_attribute::*;
        for attr in [CU_GRAPH_MEM_ATTR_USED_MEM_HIGH, CU_GRAPH_MEM_ATTR_RESERVED_MEM_HIGH] {
            let mut zero: u64 = 0;
            // SAFETY: the high attributes accept a cuuint64_t 0 to reset.
            unsafe { sys::cuDeviceSetGraphMemAttribute(self.dev, attr, &mut zero as *mut u64 as *mut _) }
                .check("cuDeviceSetGraphMemAttribute")?;
        }
        Ok(())
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        CURRENT.with(|c| {
            if c.get() == self.ctx {
                c.set(std::ptr::null_mut());
            }
        });
        // SAFETY: balances the retain in `open`; nothing of this device outlives it (all hold an Rc).
        let _ = unsafe { cu::primary_ctx::release(self.dev) };
    }
}
