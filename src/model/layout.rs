//! Where every parameter tensor lives in the one flat parameter buffer (and, with the same
//! offsets, in the gradient and optimizer buffers): sharding later is a partition of it.

use super::config::LlamaConfig;
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The token embedding table (looked up, not multiplied).
    Embedding,
    /// A weight matrix [rows, cols] used as y = x·Wᵀ.
    Matrix,
    /// A norm gain vector.
    Gain,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub kind: Kind,
}

impl Tensor {
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.rows * self.cols
    }
}

/// The tensors of one transformer layer, by role.
#[derive(Clone, Debug)]
pub struct LayerTensors {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub mlp_norm: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub embedding: Tensor,
    pub layers: Vec<LayerTensors>,
    pub final_norm: Tensor,
    pub lm_head: Tensor,
    pub total: usize,
}

impl Layout {
    pub fn new(c: &LlamaConfig) -> Layout {
        let mut offset = 0;
        let mut take = |name: String, rows: usize, cols: usize, kind: Kind| {
            let t = Tensor { name, offset, rows, cols, kind };
            offset += rows * cols;
            t
        };
        let embedding = take("embedding".into(), c.vocab_size, c.dim, Kind::Embedding);
        let layers = (0..c.n_layers)
            .map(|l| LayerTensors {
                attn_norm: take(format!("layers.{l}.attn_norm"), 1, c.dim, Kind::Gain),
                wq: take(format!("layers.{l}.wq"), c.dim, c.dim, Kind::Matrix),
                wk: take(format!("layers.{l}.wk"), c.kv_dim(), c.dim, Kind::Matrix),
                wv: take(format!("layers.{l}.wv"), c.kv_dim(), c.dim, Kind::Matrix),
                wo: take(format!("layers.{l}.wo"), c.dim, c.dim, Kind::Matrix),
                mlp_norm: take(format!("layers.{l}.mlp_norm"), 1, c.dim, Kind::Gain),
                w_gate: take(format!("layers.{l}.w_gate"), c.ffn_dim, c.dim, Kind::Matrix),
                w_up: take(format!("layers.{l}.w_up"), c.ffn_dim, c.dim, Kind::Matrix),
                w_down: take(format!("layers.{l}.w_down"), c.dim, c.ffn_dim, Kind::Matrix),
            })
            .collect();
        let final_norm = take("final_norm".into(), 1, c.dim, Kind::Gain);
        let lm_head = take("lm_head".into(), c.vocab_size, c.dim, Kind::Matrix);
        Layout { embedding, layers, final_norm, lm_head, total: offset }
    }

    /// Every tensor in buffer order.
    pub fn tensors(&self) -> Vec<&Tensor> {
        let mut all = vec![&self.embedding];
        for l in &self.layers {
            all.extend([&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm, &l.w_gate, &l.w_up, &l.w_down]);
        }
        all.extend([&self.final_norm, &self.lm_head]);
        all
    }

    /// Per element: does AdamW's weight decay apply (matrices and the embedding, not gains)?
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.total];
        for t in self.tensors() {
            if t.kind != Kind::Gain {
                mask[t.range()].iter_mut().for_each(|m| *m = true);
            }
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_tile_the_buffer_and_count_llama2_7b() {
        let c = LlamaConfig::load("7b").unwrap();
        let layout = Layout::new(&c);
        assert_eq!(layout.total, 6_738_415_616);
        let mut end = 0;
        for t in layout.tensors() {
            assert_eq!(t.offset, end, "{}", t.name);
            end = t.range().end;
        }
        assert_eq!(end, layout.total);
        let matmul: usize = layout.tensors().iter().filter(|t| t.kind == Kind::Matrix).map(|t| t.rows * t.cols).sum();
        assert_eq!(matmul, c.matmul_params());
    }
}
