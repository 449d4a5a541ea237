//! Numeric handles for the hot paths: `graphLaunch`, `stageLaunch` and `launchKernel` find their graph,
//! stream, stage, kernel and buffers by number (read from the launch mailbox), far cheaper than unwrapping class objects through
//! napi. Handles carry a generation, so the handle of a disposed object never reaches another object that
//! reuses its slot.

use cudagraph_core as core;
use cudarc::driver::sys;
use std::cell::RefCell;
use std::rc::Rc;

/// A handle: `generation << 20 | index`, below 2^52 so that JS numbers (and the f64 mailbox) hold it
/// exactly. 32-bit generations: a slot must be reused 2^32 times before an old handle could match again
/// (12 bits wrapped within a 10,000-cycle capture loop, and a late finalizer then removed a live entry).
pub type Handle = u64;

/// Slots with generations.
pub struct Table<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
}

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

impl<T> Table<T> {
    const fn new() -> Self {
        Table { slots: Vec::new(), free: Vec::new() }
    }

    /// Stores `value` and returns its handle.
    pub fn insert(&mut self, value: T) -> Handle {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        // Generation 0 is never issued, so handle 0 stays free to mean "none".
        slot.0 = slot.0.wrapping_add(1).max(1);
        slot.1 = Some(value);
        (slot.0 as u64) << INDEX_BITS | index as u64
    }

    /// Replaces the value of a live handle.
    pub fn set(&mut self, id: Handle, value: T) {
        if let Some(slot) = self.slots.get_mut((id & INDEX_MASK) as usize) {
            if slot.0 as u64 == id >> INDEX_BITS && slot.1.is_some() {
                slot.1 = Some(value);
            }
        }
    }

    /// Forgets a handle (the value is dropped).
    pub fn remove(&mut self, id: Handle) {
        let index = id & INDEX_MASK;
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if slot.0 as u64 == id >> INDEX_BITS && slot.1.take().is_some() {
                self.free.push(index as u32);
            }
        }
    }

    /// The value of a live handle.
    #[inline]
    pub fn get(&self, id: Handle) -> Option<&T> {
        match self.slots.get((id & INDEX_MASK) as usize) {
            Some((generation, Some(v))) if *generation as u64 == id >> INDEX_BITS => Some(v),
            _ => None,
        }
    }
}

/// An executable graph's raw handle and context (null until instantiated).
#[derive(Clone, Copy)]
pub struct ExecEntry {
    pub exec: sys::CUgraphExec,
    pub ctx: sys::CUcontext,
}

thread_local! {
    pub static STREAMS: RefCell<Table<core::Stream>> = const { RefCell::new(Table::new()) };
    pub static GRAPHS: RefCell<Table<ExecEntry>> = const { RefCell::new(Table::new()) };
    pub static BUFFERS: RefCell<Table<core::Buffer>> = const { RefCell::new(Table::new()) };
    pub static KERNELS: RefCell<Table<core::Kernel>> = const { RefCell::new(Table::new()) };
    pub static STAGES: RefCell<Table<Rc<RefCell<core::HostStage>>>> = const { RefCell::new(Table::new()) };
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn stale_handles_miss_after_slot_reuse() {
        let mut t = Table::new();
        let a = t.insert("a");
        t.remove(a);
        let b = t.insert("b");
        assert_eq!(a & 0xfffff, b & 0xfffff, "the slot is reused");
        assert_eq!(t.get(a), None);
        assert_eq!(t.get(b), Some(&"b"));
        t.set(a, "stale");
        assert_eq!(t.get(b), Some(&"b"));
        t.remove(a);
        assert_eq!(t.get(b), Some(&"b"));
    }

    #[test]
    fn handles_survive_many_reuses_of_one_slot() {
        let mut t = Table::new();
        let first = t.insert(0);
        t.remove(first);
        for i in 1..10_000 {
            let h = t.insert(i);
            assert_ne!(h, first, "a handle came back after {i} reuses");
            assert!(h < 1 << 52 && h != 0);
            t.remove(h);
        }
        let live = t.insert(-1);
        t.remove(first);
        assert_eq!(t.get(live), Some(&-1), "a stale handle removed a live entry");
    }
}
