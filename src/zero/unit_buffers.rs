//! Where the units' full weights or gradients live on a GPU: one buffer for the whole model
//! (stages 0-2 weights, stages 0-1 gradients and any stage's under accumulation), or two slots
//! that consecutive units take turns in (ZeRO 2-3: a unit's full copy exists only while it is
//! used). Which unit each place holds is zero/places.rs's bookkeeping; here each place also
//! keeps the event after which its contents are ready (a gather) or free (a reduction).

use super::places::Places;
use crate::backend::cuda::DeviceBuffer;
use crate::model::layout::Layout;
use anyhow::{ensure, Result};
use cudarc::driver::CudaEvent;
use std::cell::RefCell;
use std::ops::Range;

enum Storage {
    /// One holding per unit.
    Whole(DeviceBuffer),
    /// Unit u goes to slot u % 2.
    Slots([DeviceBuffer; 2]),
}

pub struct UnitBuffers {
    storage: Storage,
    places: Places,
    /// Per place, its pending event.
    events: Vec<RefCell<Option<CudaEvent>>>,
    units: Vec<Range<usize>>,
    elem_bytes: usize,
}

impl UnitBuffers {
    /// `buffer` holds the whole flat buffer; every unit current.
    pub fn whole(buffer: DeviceBuffer, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        ensure!(buffer.bytes >= elem_bytes * layout.total, "the whole buffer holds {} B, not {}", buffer.bytes, elem_bytes * layout.total);
        Ok(UnitBuffers::over(Storage::Whole(buffer), Places::whole(layout.units.len(), true), layout, elem_bytes))
    }

    /// Two slots, each holding any one unit; both empty.
    pub fn slots(slots: [DeviceBuffer; 2], layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        ensure!(slots.iter().all(|s| s.bytes >= elem_bytes * layout.largest_unit()), "a slot is smaller than the largest unit");
        Ok(UnitBuffers::over(Storage::Slots(slots), Places::slots(), layout, elem_bytes))
    }

    fn over(storage: Storage, places: Places, layout: &Layout, elem_bytes: usize) -> UnitBuffers {
        let events = (0..places.count()).map(|_| RefCell::new(None)).collect();
        UnitBuffers { storage, places, events, units: layout.units.clone(), elem_bytes }
    }

    pub fn is_slots(&self) -> bool {
        self.places.is_slots()
    }

    fn event(&self, unit: usize) -> &RefCell<Option<CudaEvent>> {
        &self.events[self.places.place(unit)]
    }

    /// Device address of flat-buffer element `index` of `unit`, which must be current there: a
    /// schedule that forgot to gather or to claim it stops here rather than compute on stale
    /// or another unit's data.
    pub fn at(&self, unit: usize, index: usize) -> u64 {
        let u = &self.units[unit];
        debug_assert!(u.contains(&index) || index == u.end);
        assert!(self.places.holds(unit), "unit {unit} used while its place holds another or nothing current");
        match &self.storage {
            Storage::Whole(b) => b.ptr + (self.elem_bytes * index) as u64,
            Storage::Slots(slots) => slots[unit % 2].ptr + (self.elem_bytes * (index - u.start)) as u64,
        }
    }

    /// Whether `unit`'s current contents are in place.
    pub fn holds(&self, unit: usize) -> bool {
        self.places.holds(unit)
    }

    /// `unit` takes its place, with no event pending yet.
    pub fn claim(&self, unit: usize) {
        self.places.claim(unit);
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
        self.places.forget();
    }

    /// The whole buffer (for stage 0-2 weights and whole gradients).
    pub fn whole_buffer(&self) -> Option<&DeviceBuffer> {
        match &self.storage {
            Storage::Whole(b) => Some(b),
            Storage::Slots(_) => None,
        }
    }

    /// The unit's bytes in its slot, or in the whole buffer.
    pub fn unit_bytes(&self, unit: usize) -> usize {
        self.elem_bytes * self.units[unit].len()
    }
}
