//! Numeric handles for the hot paths: `graphLaunch`, `stageLaunch` and `launchKernel` find their graph,
//! stream, stage, kernel and buffers by number (read from the launch mailbox), far cheaper than unwrapping
//! class objects through napi. Handles carry a generation, so the handle of a disposed object never reaches
//! another object that reuses its slot. [`Registered`] is the one way a class takes a handle and gives it back.

use crate::error::{to_js, Result};
use cudagraph_core as core;
use std::cell::RefCell;
use std::rc::Rc;
use std::thread::LocalKey;

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

    /// Stores `value` and returns its handle; past `2^20` live objects of one kind there is no slot left,
    /// and the value is handed back rather than aliasing another slot's handle.
    pub fn insert(&mut self, value: T) -> std::result::Result<Handle, T> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() as u64 > INDEX_MASK => return Err(value),
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        // Generation 0 is never issued, so handle 0 stays free to mean "none".
        slot.0 = slot.0.wrapping_add(1).max(1);
        slot.1 = Some(value);
        Ok((slot.0 as u64) << INDEX_BITS | index as u64)
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

thread_local! {
    pub static STREAMS: RefCell<Table<core::Stream>> = const { RefCell::new(Table::new()) };
    pub static GRAPHS: RefCell<Table<core::ExecHandle>> = const { RefCell::new(Table::new()) };
    pub static BUFFERS: RefCell<Table<core::Buffer>> = const { RefCell::new(Table::new()) };
    pub static KERNELS: RefCell<Table<core::Kernel>> = const { RefCell::new(Table::new()) };
    pub static STAGES: RefCell<Table<Rc<RefCell<core::HostStage>>>> = const { RefCell::new(Table::new()) };
}

/// A table of one kind of object.
pub type Tables<T> = LocalKey<RefCell<Table<T>>>;

/// A class's entry in a handle table: taken when the class object is made, given back when it is dropped.
pub struct Registered<T: 'static> {
    table: &'static Tables<T>,
    id: Handle,
}

impl<T: 'static> Registered<T> {
    /// Enters `value` in `table`; a typed error when the table is full.
    pub fn new(table: &'static Tables<T>, value: T) -> Result<Registered<T>> {
        let id = table
            .with(|t| t.borrow_mut().insert(value))
            .map_err(|_| to_js(core::Error::InUse(format!("more than {} live objects of one kind: dispose some first", INDEX_MASK + 1))))?;
        Ok(Registered { table, id })
    }

    /// The handle, as JS holds it (exact below 2^52).
    pub fn id(&self) -> f64 {
        self.id as f64
    }

    /// The raw handle.
    pub fn handle(&self) -> Handle {
        self.id
    }

    /// Replaces the value (after an executable changed).
    pub fn set(&self, value: T) {
        self.table.with(|t| t.borrow_mut().set(self.id, value));
    }

    /// Forgets the entry before the object goes (dispose); dropping does it otherwise.
    pub fn remove(&self) {
        self.table.with(|t| t.borrow_mut().remove(self.id));
    }
}

impl<T: 'static> Drop for Registered<T> {
    fn drop(&mut self) {
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn stale_handles_miss_after_slot_reuse() {
        let mut t = Table::new();
        let a = t.insert("a").unwrap();
        t.remove(a);
        let b = t.insert("b").unwrap();
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
        let first = t.insert(0).unwrap();
        t.remove(first);
        for i in 1..10_000 {
            let h = t.insert(i).unwrap();
            assert_ne!(h, first, "a handle came back after {i} reuses");
            assert!(h < 1 << 52 && h != 0);
            t.remove(h);
        }
        let live = t.insert(-1).unwrap();
        t.remove(first);
        assert_eq!(t.get(live), Some(&-1), "a stale handle removed a live entry");
    }

    #[test]
    fn a_full_table_refuses_instead_of_aliasing() {
        let mut t = Table::new();
        let first = t.insert(0u32).unwrap();
        for i in 1..(1u32 << 20) {
            t.insert(i).unwrap();
        }
        assert_eq!(t.insert(7), Err(7), "the (2^20+1)-th live handle must be refused");
        assert_eq!(t.get(first), Some(&0));
        t.remove(first);
        let again = t.insert(9).unwrap();
        assert_eq!(again & 0xfffff, first & 0xfffff, "a freed slot is reused");
        assert_eq!(t.get(again), Some(&9));
    }
}
