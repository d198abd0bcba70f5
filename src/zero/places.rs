//! Where the units' full weights or gradients live: one buffer for the whole model (stages 0-2
//! weights, stages 0-1 gradients and any stage's under accumulation), or two slots that
//! consecutive units take turns in (unit u in slot u % 2: ZeRO 2-3, where a unit's full copy
//! exists only while it is used), and which unit each place holds. Generic over the buffer: the
//! GPU's device buffers (backend/cuda/unit_buffers.rs adds their events) and the CPU rank's vectors.

use crate::model::layout::Layout;
use std::cell::Cell;
use std::ops::Range;

pub struct Places {
    /// Per place, the unit whose current contents it holds (None: nothing current).
    held: Vec<Cell<Option<usize>>>,
    slots: bool,
}

impl Places {
    /// A place per unit, every unit current (`current`) or none.
    pub fn whole(units: usize, current: bool) -> Places {
        Places { held: (0..units).map(|u| Cell::new(current.then_some(u))).collect(), slots: false }
    }

    /// Two slots, both empty.
    pub fn slots() -> Places {
        Places { held: vec![Cell::new(None), Cell::new(None)], slots: true }
    }

    pub fn is_slots(&self) -> bool {
        self.slots
    }

    /// The place of `unit`: its own, or slot unit % 2.
    pub fn place(&self, unit: usize) -> usize {
        if self.slots {
            unit % 2
        } else {
            unit
        }
    }

    /// Whether `unit`'s current contents are in its place.
    pub fn holds(&self, unit: usize) -> bool {
        self.held[self.place(unit)].get() == Some(unit)
    }

    /// `unit` takes its place; returns the other unit it pushed out of a slot, if any.
    pub fn claim(&self, unit: usize) -> Option<usize> {
        self.held[self.place(unit)].replace(Some(unit)).filter(|&old| old != unit)
    }

    /// Every place's contents are stale (the weights changed).
    pub fn forget(&self) {
        self.held.iter().for_each(|h| h.set(None));
    }

    /// The number of places (one per unit, or two).
    pub fn count(&self) -> usize {
        self.held.len()
    }
}

enum Storage<B> {
    /// One holding per unit.
    Whole(B),
    /// Unit u goes to slot u % 2.
    Slots([B; 2]),
}

/// The buffers that hold the units, and which unit each place holds.
pub struct UnitStore<B> {
    storage: Storage<B>,
    pub places: Places,
    units: Vec<Range<usize>>,
}

impl<B> UnitStore<B> {
    /// `buffer` holds the whole flat buffer; every unit current.
    pub fn whole(buffer: B, layout: &Layout) -> UnitStore<B> {
        UnitStore { storage: Storage::Whole(buffer), places: Places::whole(layout.units.len(), true), units: layout.units.clone() }
    }

    /// Two slots, each holding any one unit; both empty.
    pub fn slots(slots: [B; 2], layout: &Layout) -> UnitStore<B> {
        UnitStore { storage: Storage::Slots(slots), places: Places::slots(), units: layout.units.clone() }
    }

    /// The buffer that holds flat-buffer element `index` of `unit`, and the element's index in
    /// it. The unit must be current there: a schedule that forgot to gather or to claim it stops
    /// here rather than compute on stale or another unit's data.
    pub fn locate(&self, unit: usize, index: usize) -> (&B, usize) {
        let u = &self.units[unit];
        debug_assert!(u.contains(&index) || index == u.end);
        assert!(self.places.holds(unit), "unit {unit} used while its place holds another or nothing current");
        match &self.storage {
            Storage::Whole(b) => (b, index),
            Storage::Slots(slots) => (&slots[unit % 2], index - u.start),
        }
    }

    /// Like `locate`, for the unit's first element: where the whole unit starts.
    pub fn unit_start(&self, unit: usize) -> (&B, usize) {
        self.locate(unit, self.units[unit].start)
    }

    pub fn unit_len(&self, unit: usize) -> usize {
        self.units[unit].len()
    }

    /// The whole buffer (stage 0-2 weights and whole gradients), or None for slots.
    pub fn whole_buffer(&self) -> Option<&B> {
        match &self.storage {
            Storage::Whole(b) => Some(b),
            Storage::Slots(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    #[test]
    fn slots_take_turns_and_push_out_the_unit_before() {
        let p = Places::slots();
        assert_eq!(p.claim(0), None);
        assert_eq!(p.claim(1), None);
        assert!(p.holds(0) && p.holds(1) && !p.holds(2));
        assert_eq!(p.claim(2), Some(0));
        assert!(!p.holds(0) && p.holds(2));
        assert_eq!(p.claim(2), None, "claiming again pushes nothing out");
        p.forget();
        assert!(!p.holds(1) && !p.holds(2));
        let w = Places::whole(4, true);
        assert!((0..4).all(|u| w.holds(u)) && !w.is_slots() && w.count() == 4);
        assert_eq!(w.claim(3), None);
        assert!(!Places::whole(2, false).holds(1));
    }

    #[test]
    fn a_slot_addresses_its_unit_from_zero() {
        let layout = Layout::new(&LlamaConfig::load("tiny").unwrap());
        let u = layout.units[3].clone();
        let slots = UnitStore::slots(["even", "odd"], &layout);
        slots.places.claim(3);
        assert_eq!(slots.locate(3, u.start + 5), (&"odd", 5));
        let whole = UnitStore::whole("all", &layout);
        assert_eq!(whole.locate(3, u.start + 5), (&"all", u.start + 5));
        assert_eq!(whole.unit_start(3), (&"all", u.start));
    }

    #[test]
    #[should_panic(expected = "unit 2 used while its place holds another")]
    fn a_unit_out_of_its_slot_cannot_be_read() {
        let layout = Layout::new(&LlamaConfig::load("tiny").unwrap());
        let slots = UnitStore::slots([0u8, 1], &layout);
        slots.places.claim(0);
        slots.locate(2, layout.units[2].start);
    }
}
