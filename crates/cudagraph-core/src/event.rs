//! CUDA events: recording, waiting, timing.

use crate::device::Device;
use crate::error::{Check, Error, Result};
use crate::stream::Stream;
use cudarc::driver::sys;
use std::rc::Rc;

/// A CUDA event, destroyed on drop.
#[derive(Debug)]
pub struct Event {
    device: Rc<Device>,
    pub(crate) raw: sys::CUevent,
    timing: bool,
}

impl Event {
    /// Creates an event; `timing` enables `elapsed_ms` (slightly costlier to record).
    pub fn new(device: &Rc<Device>, timing: bool) -> Result<Event> {
        device.bind()?;
        let flags = if timing { sys::CUevent_flags::CU_EVENT_DEFAULT } else { sys::CUevent_flags::CU_EVENT_DISABLE_TIMING };
        let mut raw = std::ptr::null_mut();
        // SAFETY: writes one event handle.
        unsafe { sys::cuEventCreate(&mut raw, flags as u32) }.check("cuEventCreate")?;
        Ok(Event { device: device.clone(), raw, timing })
    }

    /// Records the event on `stream` (captured as an event-record node inside capture).
    pub fn record(&self, stream: &Stream) -> Result<()> {
        stream.same_device(&self.device, "event")?;
        // SAFETY: both handles are live.
        unsafe { sys::cuEventRecord(self.raw, stream.raw()) }.check("cuEventRecord")
    }

    /// Blocks until the work before the last record is done.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: live handle.
        unsafe { sys::cuEventSynchronize(self.raw) }.check("cuEventSynchronize")
    }

    /// Whether the work before the last record is done.
    pub fn query(&self) -> Result<bool> {
        // SAFETY: live handle.
        match unsafe { sys::cuEventQuery(self.raw) } {
            sys::CUresult::CUDA_SUCCESS => Ok(true),
            sys::CUresult::CUDA_ERROR_NOT_READY => Ok(false),
            e => e.check("cuEventQuery").map(|()| false),
        }
    }

    /// Milliseconds between `start` and this event (both recorded, both with timing).
    pub fn elapsed_since(&self, start: &Event) -> Result<f32> {
        if !self.timing || !start.timing {
            return Err(Error::arg("event", "events created with timing enabled", "an event without timing"));
        }
        let mut ms = 0f32;
        // SAFETY: both handles are live.
        unsafe { sys::cuEventElapsedTime_v2(&mut ms, start.raw, self.raw) }.check("cuEventElapsedTime")?;
        Ok(ms)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let _ = self.device.bind();
        // SAFETY: destroyed once; CUDA defers the release if a record is pending.
        let _ = unsafe { sys::cuEventDestroy_v2(self.raw) };
    }
}
