//! GPU time by CUDA events: where a step's time goes (when enabled, an event pair around every
//! kernel launch and cuBLASLt call, named by the op, read back after the step as a per-op
//! table), and `timed`, the repetitions of one piece of work that the probes and `op` time.

use super::Gpu;
use anyhow::Result;
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaStream};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

pub struct OpTimer {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    enabled: Cell<bool>,
    marks: RefCell<Vec<(String, CudaEvent, CudaEvent)>>,
}

/// Total time of one op name over a profiled step.
#[derive(Clone, Debug)]
pub struct OpTime {
    pub name: String,
    pub calls: usize,
    pub ms: f64,
}

/// One profiled step: its wall time and where the GPU time went.
#[derive(Clone, Debug)]
pub struct StepProfile {
    pub step_ms: f64,
    pub ops: Vec<OpTime>,
}

impl StepProfile {
    /// The table the sft suite prints: ops by time, then cuBLASLt vs our kernels vs copies vs
    /// the rest of the step (GPU idle: launch gaps, host work, synchronisation).
    pub fn table(&self) -> String {
        let share = |ms: f64| 100.0 * ms / self.step_ms;
        let mut out = format!("# {:<44} {:>6} {:>10} {:>7}\n", "op", "calls", "ms", "% step");
        for o in &self.ops {
            out += &format!("  {:<44} {:>6} {:>10.3} {:>6.1}%\n", o.name, o.calls, o.ms, share(o.ms));
        }
        let sum = |pred: &dyn Fn(&OpTime) -> bool| self.ops.iter().filter(|o| pred(o)).map(|o| o.ms).sum::<f64>();
        let gemm = sum(&|o| o.name.starts_with("cuBLASLt"));
        let copies = sum(&|o| o.name.starts_with("copy"));
        let kernels = sum(&|o| !o.name.starts_with("cuBLASLt") && !o.name.starts_with("copy"));
        let gaps = self.step_ms - gemm - kernels - copies;
        out += &format!(
            "# step {:.3} ms: cuBLASLt {:.1}%, our kernels {:.1}%, copies {:.1}%, gaps {:.1}%\n",
            self.step_ms,
            share(gemm),
            share(kernels),
            share(copies),
            share(gaps)
        );
        out
    }
}

impl OpTimer {
    pub fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> OpTimer {
        OpTimer { ctx, stream, enabled: Cell::new(false), marks: RefCell::new(Vec::new()) }
    }

    pub fn enable(&self, on: bool) {
        self.enabled.set(on);
        self.marks.borrow_mut().clear();
    }

    /// Runs `f` (which queues GPU work on the stream), between two events named `name()` when
    /// enabled; the name is only made then.
    pub fn time<T>(&self, name: impl FnOnce() -> String, f: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.enabled.get() {
            return f();
        }
        let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (start, end) = (self.ctx.new_event(timing)?, self.ctx.new_event(timing)?);
        start.record(&self.stream)?;
        let out = f()?;
        end.record(&self.stream)?;
        self.marks.borrow_mut().push((name(), start, end));
        Ok(out)
    }

    /// Per-op totals of what was recorded since `enable(true)`, largest first.
    pub fn totals(&self) -> Result<Vec<OpTime>> {
        let mut out: Vec<OpTime> = Vec::new();
        for (name, start, end) in self.marks.borrow().iter() {
            let ms = start.elapsed_ms(end)? as f64;
            match out.iter_mut().find(|o| &o.name == name) {
                Some(o) => {
                    o.calls += 1;
                    o.ms += ms;
                }
                None => out.push(OpTime { name: name.clone(), calls: 1, ms }),
            }
        }
        out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        Ok(out)
    }
}

/// The seconds of each of `repetitions` repetitions of `work` run `repeat` times between two
/// CUDA events, after `warmup` untimed runs.
pub fn timed(gpu: &Gpu, warmup: usize, repetitions: usize, repeat: usize, work: &mut dyn FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        work()?;
    }
    let event = || gpu.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT));
    let mut marks = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        let (start, end) = (event()?, event()?);
        start.record(&gpu.stream)?;
        for _ in 0..repeat {
            work()?;
        }
        end.record(&gpu.stream)?;
        marks.push((start, end));
    }
    gpu.synchronize()?;
    marks.iter().map(|(s, e)| Ok(s.elapsed_ms(e)? as f64 / 1e3)).collect()
}
