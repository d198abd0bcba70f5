//! The token embedding: a lookup forward, an fp32 scatter-add backward (kernels/embedding.cu).

use super::super::check::{bf16s, compare, f32s, Check, Inputs, BF16_TOLERANCE, F32_TOLERANCE};
use super::super::kernels::{launch, ModelOps, OpSource};
use super::super::view::{lengths, View};
use crate::backend::cpu::embedding;
use crate::sweep::pattern::mix;
use anyhow::{ensure, Result};
use cudarc::driver::PushKernelArg;
use half::bf16;

pub fn source() -> OpSource {
    OpSource::plain(include_str!("../../../../kernels/embedding.cu"), &["embedding_forward", "embedding_backward"])
}

/// The row width of `x` for one row per token, and that the table has whole rows of it.
fn width(op: &str, x: usize, tokens: usize, table: usize) -> Result<usize> {
    ensure!(tokens > 0 && x % tokens == 0, "{op}: {x} elements are not {tokens} rows");
    let d = x / tokens;
    ensure!(table % d == 0, "{op}: a table of {table} elements has no rows of {d}");
    Ok(d)
}

impl ModelOps<'_> {
    /// x[t] = table[tokens[t]]; the caller keeps every token below the table's rows.
    pub fn embedding_forward(&self, x: View<bf16>, table: View<bf16>, tokens: View<u32>) -> Result<()> {
        let d = width("embedding", x.len(), tokens.len(), table.len())?;
        let (rows, d, x, table, tokens) = (tokens.len() as u64, d as i32, x.ptr(), table.ptr(), tokens.ptr());
        launch!(self, "embedding_forward", self.elementwise(rows * d as u64), x, table, tokens, rows, d)
    }

    /// dtable[tokens[t]] += dx[t] (fp32, accumulated).
    pub fn embedding_backward(&self, dtable: View<f32>, dx: View<bf16>, tokens: View<u32>) -> Result<()> {
        let d = width("embedding backward", dx.len(), tokens.len(), dtable.len())?;
        lengths("embedding backward", &[(dx.len(), tokens.len() * d, "dx")])?;
        let (rows, d, dtable, dx, tokens) = (tokens.len() as u64, d as i32, dtable.ptr(), dx.ptr(), tokens.ptr());
        launch!(self, "embedding_backward", self.elementwise(rows * d as u64), dtable, dx, tokens, rows, d)
    }
}

pub fn checks(ops: &ModelOps, r: &mut Inputs) -> Result<Vec<Check>> {
    let gpu = ops.gpu();
    let (vocab, d, rows) = (1000, 256, 512);
    let shape = format!("vocab {vocab} d {d} rows {rows}");
    let table = r.take(vocab * d, 1.0);
    let tokens: Vec<u32> = (0..rows as u64).map(|i| (mix(r.seed, 99, i) % vocab as u64) as u32).collect();
    let dx = r.take(rows * d, 1.0);
    let (gt, gtok, gdx) = (gpu.upload(&table.bits)?, gpu.upload(&tokens)?, gpu.upload(&dx.bits)?);
    let gx = gpu.alloc(rows * d * 2)?;
    let gdt = gpu.upload(&vec![0f32; vocab * d])?;
    ops.embedding_forward(gx.view(), gt.view(), gtok.view())?;
    ops.embedding_backward(gdt.view(), gdx.view(), gtok.view())?;
    let (mut x, mut dt) = (vec![0.0; rows * d], vec![0.0; vocab * d]);
    embedding::forward(&mut x, &table.values, &tokens, d);
    embedding::backward(&mut dt, &dx.values, &tokens, d);
    Ok(vec![
        compare("embedding forward (bf16)", &shape, &bf16s(gpu, &gx)?, &x, BF16_TOLERANCE),
        compare("embedding backward (fp32)", &shape, &f32s(gpu, &gdt)?, &dt, F32_TOLERANCE),
    ])
}
