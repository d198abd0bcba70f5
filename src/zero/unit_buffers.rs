//! Where the units' full weights or gradients live on a GPU: one buffer for the whole model
//! (stages 0-1, and gradients under accumulation), or two slots that consecutive units take
//! turns in (ZeRO 2-3: a unit's full copy exists only while it is used). A slot remembers its
//! unit and the event after which its contents are ready (a gather) or free (a reduction).

use crate::backend::cuda::{DeviceBuffer, Gpu};
use crate::model::layout::Layout;
use anyhow::Result;
use cudarc::driver::CudaEvent;
use std::cell::{Cell, RefCell};
use std::ops::Range;

struct Slot {
    buffer: DeviceBuffer,
    unit: Cell<Option<usize>>,
    event: RefCell<Option<CudaEvent>>,
}

enum Storage {
    Whole(DeviceBuffer),
    Slots([Slot; 2]),
}

pub struct UnitBuffers {
    storage: Storage,
    units: Vec<Range<usize>>,
    elem_bytes: usize,
}

impl UnitBuffers {
    /// Room for the whole flat buffer.
    pub fn whole(gpu: &Gpu, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        let storage = Storage::Whole(gpu.alloc(elem_bytes * layout.total)?);
        Ok(UnitBuffers { storage, units: layout.units.clone(), elem_bytes })
    }

    /// Room for two units at a time.
    pub fn slots(gpu: &Gpu, layout: &Layout, elem_bytes: usize) -> Result<UnitBuffers> {
        let slot = || -> Result<Slot> {
            Ok(Slot { buffer: gpu.alloc(elem_bytes * layout.largest_unit())?, unit: Cell::new(None), event: RefCell::new(None) })
        };
        Ok(UnitBuffers { storage: Storage::Slots([slot()?, slot()?]), units: layout.units.clone(), elem_bytes })
    }

    pub fn is_slots(&self) -> bool {
        matches!(self.storage, Storage::Slots(_))
    }

    fn slot(&self, unit: usize) -> Option<&Slot> {
        match &self.storage {
            Storage::Whole(_) => None,
            Storage::Slots(slots) => Some(&slots[unit % 2]),
        }
    }

    /// Device address of flat-buffer element `index` of `unit`. A slot must hold the unit: a
    /// schedule that forgot to gather or to claim it stops here rather than compute on another
    /// unit's data.
    pub fn at(&self, unit: usize, index: usize) -> u64 {
        let u = &self.units[unit];
        debug_assert!(u.contains(&index) || index == u.end);
        match &self.storage {
            Storage::Whole(b) => b.ptr + (self.elem_bytes * index) as u64,
            Storage::Slots(slots) => {
                let slot = &slots[unit % 2];
                assert_eq!(slot.unit.get(), Some(unit), "unit {unit} used while its slot holds {:?}", slot.unit.get());
                slot.buffer.ptr + (self.elem_bytes * (index - u.start)) as u64
            }
        }
    }

    /// Whether `unit`'s full copy is present (always, for the whole buffer).
    pub fn holds(&self, unit: usize) -> bool {
        self.slot(unit).is_none_or(|s| s.unit.get() == Some(unit))
    }

    /// `unit` moves into its slot; `event` marks when its contents will be ready.
    pub fn claim(&self, unit: usize, event: Option<CudaEvent>) {
        if let Some(s) = self.slot(unit) {
            s.unit.set(Some(unit));
            *s.event.borrow_mut() = event;
        }
    }

    /// The event pending on `unit`'s slot (a gather into it, or a reduction out of it), once.
    pub fn take_event(&self, unit: usize) -> Option<CudaEvent> {
        self.slot(unit).and_then(|s| s.event.borrow_mut().take())
    }

    pub fn set_event(&self, unit: usize, event: CudaEvent) {
        if let Some(s) = self.slot(unit) {
            *s.event.borrow_mut() = Some(event);
        }
    }

    /// The slots' contents are stale (the weights changed): the next use gathers again.
    pub fn forget(&self) {
        if let Storage::Slots(slots) = &self.storage {
            slots.iter().for_each(|s| s.unit.set(None));
        }
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
