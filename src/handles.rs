//! Numeric handles for the replay hot path: `graphLaunch(graph, stream)` is a free function taking two
//! numbers, several times cheaper through napi than a class method. Handles carry a generation, so a
//! handle of a disposed object never reaches another object that reuses its slot.

use cudarc::driver::sys;
use std::cell::RefCell;

/// A raw handle and the context it belongs to.
#[derive(Clone, Copy)]
pub struct Entry<T: Copy> {
    pub raw: T,
    pub ctx: sys::CUcontext,
}

/// Slots with generations; `id = generation << 20 | index`.
pub struct Table<T: Copy> {
    slots: Vec<(u32, Option<Entry<T>>)>,
    free: Vec<u32>,
}

const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

impl<T: Copy> Table<T> {
    const fn new() -> Self {
        Table { slots: Vec::new(), free: Vec::new() }
    }

    pub fn insert(&mut self, e: Entry<T>) -> u32 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.0 = (slot.0 + 1) & ((1 << (32 - INDEX_BITS)) - 1);
        slot.1 = Some(e);
        slot.0 << INDEX_BITS | index
    }

    pub fn set(&mut self, id: u32, e: Entry<T>) {
        if let Some(slot) = self.slots.get_mut((id & INDEX_MASK) as usize) {
            if slot.0 == id >> INDEX_BITS {
                slot.1 = Some(e);
            }
        }
    }

    pub fn remove(&mut self, id: u32) {
        let index = id & INDEX_MASK;
        if let Some(slot) = self.slots.get_mut(index as usize) {
            if slot.0 == id >> INDEX_BITS && slot.1.take().is_some() {
                self.free.push(index);
            }
        }
    }

    #[inline]
    pub fn get(&self, id: u32) -> Option<Entry<T>> {
        match self.slots.get((id & INDEX_MASK) as usize) {
            Some((generation, Some(e))) if *generation == id >> INDEX_BITS => Some(*e),
            _ => None,
        }
    }
}

thread_local! {
    pub static STREAMS: RefCell<Table<sys::CUstream>> = const { RefCell::new(Table::new()) };
    pub static GRAPHS: RefCell<Table<sys::CUgraphExec>> = const { RefCell::new(Table::new()) };
}
