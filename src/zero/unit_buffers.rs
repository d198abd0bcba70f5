//! Where the units' full weights or gradients live on a GPU: one buffer for the whole model
//! (stages 0-2 weights, stages 0-1 gradients and any stage's under accumulation), or two slots
//! that consecutive units take turns in (ZeRO 2-3: a unit's full copy exists only while it is
//! used). Each place (a unit of the whole buffer, or a slot) remembers whether it holds its
//! unit's current contents and the event after which they are ready (a gather) or free (a
//! reduction).

use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::model::layout::Layout;
use anyhow::Result;
use cudarc::driver::CudaEvent;
use std::cell::{Cell, RefCell};
use std::ops::Range;

/// What one place holds: which unit (None: nothing current), and its pending event.
#[derive(Default)]
struct Holding {
    unit: Cell<Option<usize>>,
    event: RefCell<Option<CudaEvent>>,
}

enum Storage {
    /// One holding per unit.
    Whole(DeviceBuffer),
    /// Unit u goes to slot u % 2.
    Slots([DeviceBuffer; 2]),
}

pub struct UnitBuffers {
    storage: Storage,
    holdings: Vec<Holding>,
    units: Vec<Range<usize>>,
    elem_bytes: usize,
}

impl UnitBuffers {
    /// Room for the whole flat buffer; every unit current.
    pub fn whole(gpu: &Gpu, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        let storage = Storage::Whole(gpu.alloc(elem_bytes * layout.total)?);
        let holdings = (0..layout.units.len()).map(|u| Holding { unit: Cell::new(Some(u)), ..Default::default() }).collect();
        Ok(UnitBuffers { storage, holdings, units: layout.units.clone(), elem_bytes })
    }

    /// Room for two units at a time; both slots empty.
    pub fn slots(gpu: &Gpu, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        let slot = || gpu.alloc(elem_bytes * layout.largest_unit());
        let holdings = (0..2).map(|_| Holding::default()).collect();
        Ok(UnitBuffers { storage: Storage::Slots([slot()?, slot()?]), holdings, units: layout.units.clone(), elem_bytes })
    }

    pub fn is_slots(&self) -> bool {
        matches!(self.storage, Storage::Slots(_))
    }

    fn holding(&self, unit: usize) -> &Holding {
        match &self.storage {
            Storage::Whole(_) => &self.holdings[unit],
            Storage::Slots(_) => &self.holdings[unit % 2],
        }
    }

    /// Device address of flat-buffer element `index` of `unit`, which must be current there: a
    /// schedule that forgot to gather or to claim it stops here rather than compute on stale
    /// or another unit's data.
    pub fn at(&self, unit: usize, index: usize) -> u64 {
        let u = &self.units[unit];
        debug_assert!(u.contains(&index) || index == u.end);
        let held = self.holding(unit).unit.get();
        assert_eq!(held, Some(unit), "unit {unit} used while its place holds {held:?}");
        match &self.storage {
            Storage::Whole(b) => b.ptr + (self.elem_bytes * index) as u64,
            Storage::Slots(slots) => slots[unit % 2].ptr + (self.elem_bytes * (index - u.start)) as u64,
        }
    }

    /// Whether `unit`'s current contents are in place.
    pub fn holds(&self, unit: usize) -> bool {
        self.holding(unit).unit.get() == Some(unit)
    }

    /// `unit` takes its place, with no event pending yet.
    pub fn claim(&self, unit: usize) {
        let h = self.holding(unit);
        h.unit.set(Some(unit));
        *h.event.borrow_mut() = None;
    }

    /// The event pending on `unit`'s place (a gather into it, or a reduction out of it), once.
    pub fn take_event(&self, unit: usize) -> Option<CudaEvent> {
        self.holding(unit).event.borrow_mut().take()
    }

    pub fn set_event(&self, unit: usize, event: CudaEvent) {
        *self.holding(unit).event.borrow_mut() = Some(event);
    }

    /// Every place's contents are stale (the weights changed): each unit's next use gathers.
    pub fn forget(&self) {
        self.holdings.iter().for_each(|h| h.unit.set(None));
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
