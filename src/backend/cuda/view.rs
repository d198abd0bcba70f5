//! Typed windows of device memory, what the launchers take: each knows its element type and
//! length, so a launcher checks its buffers against the op's shape before a kernel could read
//! or write past one.

use super::DeviceBuffer;
use anyhow::{ensure, Result};
use std::marker::PhantomData;
use std::ops::Range;

/// `len` elements of `T` at `ptr`, inside a buffer that outlives the view.
pub struct View<'a, T> {
    ptr: u64,
    len: usize,
    _of: PhantomData<&'a [T]>,
}

impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

impl<'a, T> View<'a, T> {
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `range` of this view (a bug if out of it).
    pub fn slice(self, range: Range<usize>) -> View<'a, T> {
        assert!(range.start <= range.end && range.end <= self.len, "elements {range:?} of a view of {}", self.len);
        View { ptr: self.ptr + (range.start * std::mem::size_of::<T>()) as u64, len: range.len(), _of: PhantomData }
    }
}

impl DeviceBuffer {
    /// The whole buffer as elements of `T`.
    pub fn view<T>(&self) -> View<'_, T> {
        View { ptr: self.ptr, len: self.bytes / std::mem::size_of::<T>(), _of: PhantomData }
    }
}

/// Each (length, wanted, name) matches, or the op's one-line error names the first that does not.
pub fn lengths(op: &str, checks: &[(usize, usize, &str)]) -> Result<()> {
    for &(len, want, name) in checks {
        ensure!(len == want, "{op}: {name} holds {len} elements, the shape needs {want}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_moves_by_whole_elements_and_stays_inside() {
        let v: View<f32> = View { ptr: 0x1000, len: 10, _of: PhantomData };
        let s = v.slice(2..6);
        assert_eq!((s.ptr(), s.len()), (0x1008, 4));
        assert!(lengths("op", &[(4, 4, "x")]).is_ok());
        let e = lengths("rmsnorm", &[(4, 4, "x"), (3, 8, "w")]).unwrap_err().to_string();
        assert_eq!(e, "rmsnorm: w holds 3 elements, the shape needs 8");
        assert!(std::panic::catch_unwind(|| v.slice(8..11)).is_err());
    }
}
