//! The GPU's unit store (zero/places.rs) of device buffers of `T`, each place with the event
//! after which its contents are ready (a gather into it) or free (a reduction out of it).

use super::view::View;
use super::DeviceBuffer;
use crate::model::layout::{Layout, Tensor};
use crate::zero::places::UnitStore;
use anyhow::{ensure, Result};
use cudarc::driver::CudaEvent;
use std::cell::RefCell;
use std::marker::PhantomData;

pub struct UnitBuffers<T> {
    store: UnitStore<DeviceBuffer>,
    /// Per place, its pending event.
    events: Vec<RefCell<Option<CudaEvent>>>,
    _of: PhantomData<T>,
}

impl<T> UnitBuffers<T> {
    /// `buffer` holds the whole flat buffer; every unit current.
    pub fn whole(buffer: DeviceBuffer, layout: &Layout) -> Result<UnitBuffers<T>> {
        ensure!(buffer.view::<T>().len() >= layout.total, "the whole buffer holds {} B, not {} elements", buffer.bytes, layout.total);
        Ok(UnitBuffers::over(UnitStore::whole(buffer, layout)))
    }

    /// Two slots, each holding any one unit; both empty.
    pub fn slots(slots: [DeviceBuffer; 2], layout: &Layout) -> Result<UnitBuffers<T>> {
        ensure!(slots.iter().all(|s| s.view::<T>().len() >= layout.largest_unit()), "a slot is smaller than the largest unit");
        Ok(UnitBuffers::over(UnitStore::slots(slots, layout)))
    }

    fn over(store: UnitStore<DeviceBuffer>) -> UnitBuffers<T> {
        let events = (0..store.places.count()).map(|_| RefCell::new(None)).collect();
        UnitBuffers { store, events, _of: PhantomData }
    }

    pub fn is_slots(&self) -> bool {
        self.store.places.is_slots()
    }

    fn event(&self, unit: usize) -> &RefCell<Option<CudaEvent>> {
        &self.events[self.store.places.place(unit)]
    }

    /// Tensor `t`, whose unit must be current in its place.
    pub fn tensor(&self, t: &Tensor) -> View<'_, T> {
        let (buffer, i) = self.store.locate(t.unit, t.offset);
        buffer.view().slice(i..i + t.rows * t.cols)
    }

    /// The whole of `unit` (padding included), which must be current in its place.
    pub fn unit(&self, unit: usize) -> View<'_, T> {
        let (buffer, i) = self.store.unit_start(unit);
        buffer.view().slice(i..i + self.store.unit_len(unit))
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
}
