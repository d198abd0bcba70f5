//! Which unit each place holds: one place per unit (the whole flat buffer), or two slots that
//! consecutive units take turns in (unit u in slot u % 2: ZeRO 2-3, where a unit's full copy
//! exists only while it is used). The bookkeeping of both trainers: the GPU's unit buffers
//! (zero/unit_buffers.rs, with their events) and the CPU rank's weights (train/cpu_rank.rs).

use std::cell::Cell;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
