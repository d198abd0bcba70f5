//! `h200-mpibench op`: one GPU op timed alone at a shape the user gives, so that our kernels
//! and the anchors (../shared/anchors/attn_bench.py, ceilings.py) can be compared in one call.

use crate::backend::cpu::attention::Shape;
use clap::{Args, ValueEnum};

/// The ops `op` can time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OpName {
    /// Causal attention, forward and backward (delta, dQ, dK/dV) timed apart.
    Attention,
    /// One AdamW step over --elements fp32 master weights with their bf16 copy.
    Adamw,
    /// A device-to-device copy of --elements fp32: the ceiling AdamW is judged against.
    Copy,
}

#[derive(Args, Clone, Debug, PartialEq)]
pub struct OpArgs {
    /// What to time: attention, adamw, copy, or a comma list of them.
    #[arg(value_enum, value_delimiter = ',', required = true)]
    pub ops: Vec<OpName>,
    /// Attention: sequences per batch.
    #[arg(long = "batch", id = "op_batch", value_name = "N", default_value_t = 4)]
    pub batch: usize,
    /// Attention: query heads.
    #[arg(long = "heads", id = "op_heads", value_name = "N", default_value_t = 32)]
    pub heads: usize,
    /// Attention: key/value heads (GQA); default: as many as --heads.
    #[arg(long = "kv-heads", id = "op_kv_heads", value_name = "N")]
    pub kv_heads: Option<usize>,
    /// Attention: positions per sequence.
    #[arg(long = "seq", id = "op_seq", value_name = "N", default_value_t = 2048)]
    pub seq: usize,
    /// Attention: dimension of one head.
    #[arg(long = "head-dim", id = "op_head_dim", value_name = "N", default_value_t = 128)]
    pub head_dim: usize,
    /// AdamW and copy: fp32 elements (default 2^28, 8 GiB of AdamW traffic a step).
    #[arg(long = "elements", id = "op_elements", value_name = "N", default_value_t = 1 << 28)]
    pub elements: u64,
    /// Timed repetitions of each op (each between its own pair of CUDA events).
    #[arg(long = "repetitions", id = "op_repetitions", value_name = "N", default_value_t = 20)]
    pub repetitions: usize,
    /// Untimed runs of each op first.
    #[arg(long = "warmup", id = "op_warmup", value_name = "N", default_value_t = 5)]
    pub warmup: usize,
}

/// The largest --batch × --heads × --seq: the attention buffers stay far from u32 grid limits.
const MAX_ATTENTION_ROWS: usize = 1 << 28;
/// 2^34 fp32 elements: AdamW's 18 B each is 288 GiB, beyond any GPU: the memory check refuses.
const MAX_ELEMENTS: u64 = 1 << 34;

/// What `op` runs, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct OpPlan {
    pub ops: Vec<OpName>,
    pub attention: Shape,
    pub elements: u64,
    pub repetitions: usize,
    pub warmup: usize,
}

impl OpArgs {
    /// Every flag in range and read by an op asked for, before any GPU work; `given`: the
    /// flags on the command line (clap ids), `head_dims`: those the attention kernels take.
    pub fn plan(&self, given: &[String], head_dims: &[usize]) -> Result<OpPlan, String> {
        let unread = |ids: &[&str], ops: &[OpName]| given.iter().find(|g| ids.contains(&g.as_str()) && !self.ops.iter().any(|o| ops.contains(o)));
        if let Some(id) = unread(&["op_batch", "op_heads", "op_kv_heads", "op_seq", "op_head_dim"], &[OpName::Attention]) {
            return Err(format!("--{} is a flag of op attention", id.trim_start_matches("op_").replace('_', "-")));
        }
        if unread(&["op_elements"], &[OpName::Adamw, OpName::Copy]).is_some() {
            return Err("--elements is a flag of op adamw and op copy".into());
        }
        let kv_heads = self.kv_heads.unwrap_or(self.heads);
        let s = Shape { batch: self.batch, seq: self.seq, heads: self.heads, kv_heads, head_dim: self.head_dim };
        if self.ops.contains(&OpName::Attention) {
            for (flag, value, max) in [("--batch", s.batch, 65_535), ("--heads", s.heads, 1024), ("--seq", s.seq, 1 << 20)] {
                if !(1..=max).contains(&value) {
                    return Err(format!("{flag} {value}: must be 1 to {max}"));
                }
            }
            if kv_heads == 0 || s.heads % kv_heads != 0 {
                return Err(format!("--kv-heads {kv_heads}: must divide --heads {}", s.heads));
            }
            if !head_dims.contains(&s.head_dim) {
                return Err(format!("--head-dim {}: the attention kernels take {head_dims:?}", s.head_dim));
            }
            if s.rows() > MAX_ATTENTION_ROWS {
                return Err(format!("--batch × --heads × --seq = {}: at most {MAX_ATTENTION_ROWS}", s.rows()));
            }
        }
        if !(1..=MAX_ELEMENTS).contains(&self.elements) {
            return Err(format!("--elements {}: must be 1 to {MAX_ELEMENTS}", self.elements));
        }
        if !(1..=10_000).contains(&self.repetitions) {
            return Err(format!("--repetitions {}: must be 1 to 10000", self.repetitions));
        }
        if self.warmup > 10_000 {
            return Err(format!("--warmup {}: at most 10000", self.warmup));
        }
        let mut ops = self.ops.clone();
        ops.dedup();
        Ok(OpPlan { ops, attention: s, elements: self.elements, repetitions: self.repetitions, warmup: self.warmup })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn plan(args: &[&str]) -> Result<OpPlan, String> {
        let mut argv = vec!["h200-mpibench", "op"];
        argv.extend_from_slice(args);
        let cli = Cli::from_args(argv).map_err(|e| e.to_string())?;
        let Some(Command::Op(op)) = &cli.command else { panic!("not op") };
        op.plan(&cli.given, &[64, 128])
    }

    #[test]
    fn defaults_are_the_7b_attention_layer_and_a_quarter_billion_elements() {
        let p = plan(&["attention,adamw,copy"]).unwrap();
        assert_eq!(p.ops, [OpName::Attention, OpName::Adamw, OpName::Copy]);
        assert_eq!((p.attention.batch, p.attention.heads, p.attention.kv_heads, p.attention.seq, p.attention.head_dim), (4, 32, 32, 2048, 128));
        assert_eq!(p.elements, 1 << 28);
        let gqa = plan(&["attention", "--batch", "1", "--heads", "64", "--kv-heads", "8"]).unwrap();
        assert_eq!((gqa.attention.heads, gqa.attention.kv_heads), (64, 8));
    }

    #[test]
    fn refuses_shapes_the_kernels_cannot_take() {
        assert!(plan(&["attention", "--kv-heads", "5"]).unwrap_err().contains("must divide"));
        assert!(plan(&["attention", "--head-dim", "96"]).unwrap_err().contains("[64, 128]"));
        assert!(plan(&["attention", "--seq", "0"]).unwrap_err().starts_with("--seq 0"));
        assert!(plan(&["attention", "--batch", "65535", "--heads", "1024", "--seq", "65536"]).unwrap_err().contains("at most"));
        assert!(plan(&["adamw", "--elements", "0"]).is_err());
        assert!(plan(&["copy", "--repetitions", "0"]).is_err());
        assert!(plan(&["fft"]).is_err());
        // A flag no op asked for reads is refused, not ignored.
        assert_eq!(plan(&["adamw", "--head-dim", "128"]).unwrap_err(), "--head-dim is a flag of op attention");
        assert!(plan(&["attention", "--elements", "8"]).unwrap_err().starts_with("--elements"));
    }
}
