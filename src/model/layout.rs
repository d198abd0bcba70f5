//! Where every parameter tensor lives in the one flat parameter buffer (and, with the same
//! offsets, in the gradient and optimizer buffers). The buffer is a row of units (the embedding,
//! each bucket of layers, the final norm with the head): the grain at which ZeRO gathers and
//! reduces. Each
//! unit is padded with zeros to a multiple of 8 × ranks elements so that every rank's equal
//! chunk of it starts 16-byte aligned (zero/partition.rs).

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
    /// Where the tensor starts in the unpadded buffer: independent of the rank count.
    pub index: usize,
    /// The unit that holds it.
    pub unit: usize,
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
    /// Each unit's elements, padding included; they tile 0..total.
    pub units: Vec<Range<usize>>,
    pub total: usize,
}

impl Layout {
    /// The layout for one rank, one layer per unit.
    pub fn new(c: &LlamaConfig) -> Layout {
        Layout::sharded(c, 1, 1)
    }

    /// The layout whose units (of `bucket_layers` layers each) split evenly over `ranks`.
    pub fn sharded(c: &LlamaConfig, ranks: usize, bucket_layers: usize) -> Layout {
        assert!(bucket_layers >= 1, "a bucket holds at least one layer");
        let mut b = Builder { grain: 8 * ranks, offset: 0, index: 0, units: Vec::new() };
        let embedding = b.take("embedding".into(), c.vocab_size, c.dim, Kind::Embedding);
        b.close_unit();
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            layers.push(LayerTensors {
                attn_norm: b.take(format!("layers.{l}.attn_norm"), 1, c.dim, Kind::Gain),
                wq: b.take(format!("layers.{l}.wq"), c.dim, c.dim, Kind::Matrix),
                wk: b.take(format!("layers.{l}.wk"), c.kv_dim(), c.dim, Kind::Matrix),
                wv: b.take(format!("layers.{l}.wv"), c.kv_dim(), c.dim, Kind::Matrix),
                wo: b.take(format!("layers.{l}.wo"), c.dim, c.dim, Kind::Matrix),
                mlp_norm: b.take(format!("layers.{l}.mlp_norm"), 1, c.dim, Kind::Gain),
                w_gate: b.take(format!("layers.{l}.w_gate"), c.ffn_dim, c.dim, Kind::Matrix),
                w_up: b.take(format!("layers.{l}.w_up"), c.ffn_dim, c.dim, Kind::Matrix),
                w_down: b.take(format!("layers.{l}.w_down"), c.dim, c.ffn_dim, Kind::Matrix),
            });
            if (l + 1) % bucket_layers == 0 || l + 1 == c.n_layers {
                b.close_unit();
            }
        }
        let final_norm = b.take("final_norm".into(), 1, c.dim, Kind::Gain);
        let lm_head = b.take("lm_head".into(), c.vocab_size, c.dim, Kind::Matrix);
        b.close_unit();
        Layout { embedding, layers, final_norm, lm_head, total: b.offset, units: b.units }
    }

    /// Parameters without the padding.
    pub fn parameters(&self) -> usize {
        self.tensors().iter().map(|t| t.rows * t.cols).sum()
    }

    /// The largest unit (the buffers that hold one gathered unit at a time).
    pub fn largest_unit(&self) -> usize {
        self.units.iter().map(|u| u.len()).max().unwrap_or(0)
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

/// Lays tensors end to end and closes units at padded boundaries.
struct Builder {
    grain: usize,
    offset: usize,
    index: usize,
    units: Vec<Range<usize>>,
}

impl Builder {
    fn take(&mut self, name: String, rows: usize, cols: usize, kind: Kind) -> Tensor {
        let t = Tensor { name, offset: self.offset, index: self.index, unit: self.units.len(), rows, cols, kind };
        self.offset += rows * cols;
        self.index += rows * cols;
        t
    }

    fn close_unit(&mut self) {
        let start = self.units.last().map_or(0, |u| u.end);
        self.offset = start + (self.offset - start).next_multiple_of(self.grain);
        self.units.push(start..self.offset);
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
        assert_eq!(layout.units.len(), c.n_layers + 2);
        let matmul: usize = layout.tensors().iter().filter(|t| t.kind == Kind::Matrix).map(|t| t.rows * t.cols).sum();
        assert_eq!(matmul, c.matmul_params());
    }

    #[test]
    fn sharded_units_are_padded_and_hold_their_tensors() {
        let c = LlamaConfig::load("tiny").unwrap();
        let one = Layout::new(&c);
        let three = Layout::sharded(&c, 3, 1);
        assert_eq!(one.parameters(), three.parameters());
        assert_eq!(three.units.last().unwrap().end, three.total);
        for (i, u) in three.units.iter().enumerate() {
            assert_eq!(u.len() % 24, 0, "unit {i}");
            assert_eq!(u.start, if i == 0 { 0 } else { three.units[i - 1].end });
        }
        for (a, b) in one.tensors().iter().zip(three.tensors()) {
            assert_eq!((a.index, a.unit), (b.index, b.unit), "{}", a.name);
            let unit = &three.units[b.unit];
            assert!(unit.start <= b.offset && b.range().end <= unit.end, "{}", b.name);
        }
        // Buckets of two layers: the embedding, layers 0-1, layer 2 (the rest), the head.
        let c3 = c.with_layers(3).unwrap();
        let bucketed = Layout::sharded(&c3, 2, 2);
        let units: Vec<usize> = bucketed.layers.iter().map(|l| l.wq.unit).collect();
        assert_eq!((units, bucketed.lm_head.unit, bucketed.units.len()), (vec![1, 1, 2], 3, 4));
        assert_eq!(bucketed.parameters(), Layout::new(&c3).parameters());
    }
}
