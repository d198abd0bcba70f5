//! CPU reference ops: plain row-major slices, rayon over rows, f64 accumulation. Generic over
//! the element type so gradient checks run in f64 and training runs in f32.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;

#[cfg(test)]
pub mod gradcheck;

/// The element types the CPU ops run on (f32 for training, f64 for gradient checks).
pub trait Real: num_traits::Float + num_traits::FromPrimitive + Send + Sync + std::fmt::Debug + 'static {
    fn f64(self) -> f64 {
        self.to_f64().unwrap_or(f64::NAN)
    }
    fn of(x: f64) -> Self {
        Self::from_f64(x).unwrap_or_else(Self::nan)
    }
}

impl Real for f32 {}
impl Real for f64 {}

/// Σ a·b with f64 accumulation.
pub fn dot<T: Real>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.f64() * y.f64()).sum()
}
