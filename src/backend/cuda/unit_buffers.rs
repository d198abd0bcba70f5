//! The GPU's unit store (zero/places.rs) of device buffers, each place with the event after
//! which its contents are ready (a gather into it) or free (a reduction out of it).

use crate::zero::places::UnitStore;
use crate::backend::cuda::DeviceBuffer;
use crate::model::layout::Layout;
use anyhow::{ensure, Result};
use cudarc::driver::CudaEvent;
use std::cell::RefCell;

pub struct UnitBuffers {
    store: UnitStore<DeviceBuffer>,
    /// Per place, its pending event.
    events: Vec<RefCell<Option<CudaEvent>>>,
    elem_bytes: usize,
}

impl UnitBuffers {
    /// `buffer` holds the whole flat buffer; every unit current.
    pub fn whole(buffer: DeviceBuffer, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        ensure!(buffer.bytes >= elem_bytes * layout.total, "the whole buffer holds {} B, not {}", buffer.bytes, elem_bytes * layout.total);
        Ok(UnitBuffers::over(UnitStore::whole(buffer, layout), elem_bytes))
    }

    /// Two slots, each holding any one unit; both empty.
    pub fn slots(slots: [DeviceBuffer; 2], layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        ensure!(slots.iter().all(|s| s.bytes >= elem_bytes * layout.largest_unit()), "a slot is smaller than the largest unit");
        Ok(UnitBuffers::over(UnitStore::slots(slots, layout), elem_bytes))
    }

    fn over(store: UnitStore<DeviceBuffer>, elem_bytes: usize) -> UnitBuffers {
        let events = (0..store.places.count()).map(|_| RefCell::new(None)).collect();
        UnitBuffers { store, events, elem_bytes }
    }

    pub fn is_slots(&self) -> bool {
        self.store.places.is_slots()
    }

    fn event(&self, unit: usize) -> &RefCell<Option<CudaEvent>> {
        &self.events[self.store.places.place(unit)]
    }

    /// Device address of flat-buffer element `index` of `unit`, which must be current there.
    pub fn at(&self, unit: usize, index: usize) -> u64 {
        let (buffer, i) = self.store.locate(unit, index);
        buffer.ptr + (self.elem_bytes * i) as u64
    }

    /// Whether `unit`'s current contents are in place.
    pub fn holds(&self, unit: usize) -> bool {
        self.store.places.holds(unit)
    }

    /// `unit` takes its place, with no event pending yet.
    pub fn claim(&self, unit: usize) {
        self.store.places.claim(unit);
        *self.event(unit).borrow_mut() = None;
    }

    /// The event pending on `unit`'s place (a gather into it, or a reduction out of it), once.
    pub fn take_event(&self, unit: usize) -> Option<CudaEvent> {
        self.event(unit).borrow_mut().take()
    }

    pub fn set_event(&self, unit: usize, event: CudaEvent) {
        *self.event(unit).borrow_mut() = Some(event);
    }

    /// Every place's contents are stale (the weights changed): each unit's next use gathers.
    pub fn forget(&self) {
        self.store.places.forget();
    }

    /// The whole buffer (for stage 0-2 weights and whole gradients).
    pub fn whole_buffer(&self) -> Option<&DeviceBuffer> {
        self.store.whole_buffer()
    }

    /// The unit's bytes in its slot, or in the whole buffer.
    pub fn unit_bytes(&self, unit: usize) -> usize {
        self.elem_bytes * self.store.unit_len(unit)
    }
}
