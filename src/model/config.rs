//! Llama-2 model shapes: the presets in configs/models (embedded in the binary) or a JSON file.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LlamaConfig {
    pub name: String,
    pub dim: usize,
    pub ffn_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
}

const PRESETS: [(&str, &str); 4] = [
    ("7b", include_str!("../../configs/models/llama2-7b.json")),
    ("13b", include_str!("../../configs/models/llama2-13b.json")),
    ("70b", include_str!("../../configs/models/llama2-70b.json")),
    ("tiny", include_str!("../../configs/models/tiny.json")),
];

/// The largest dim, ffn_dim, n_layers, n_heads, n_kv_heads and vocab_size accepted: far above
/// any Llama, and small enough that every size product of a run (with run_config.rs's bounds
/// on tokens per micro-batch and planner.rs's on ranks) stays below 2^60 in u64 and usize.
const SIZE_LIMITS: [usize; 6] = [1 << 16, 1 << 18, 1 << 10, 1 << 10, 1 << 10, 1 << 22];

impl LlamaConfig {
    /// `7b`, `13b`, `70b`, `tiny` (also `llama2-7b` ...) or the path of a JSON config.
    pub fn load(name_or_path: &str) -> Result<LlamaConfig, String> {
        let short = name_or_path.trim_start_matches("llama2-");
        let text = match PRESETS.iter().find(|(n, _)| *n == short) {
            Some((_, json)) => json.to_string(),
            None => std::fs::read_to_string(name_or_path)
                .map_err(|e| format!("--model {name_or_path}: not a preset (7b, 13b, 70b, tiny) and not a readable file: {e}"))?,
        };
        let config: LlamaConfig = serde_json::from_str(&text).map_err(|e| format!("--model {name_or_path}: invalid model JSON: {e}"))?;
        config.validate().map_err(|e| format!("--model {name_or_path}: {e}"))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("dim", self.dim),
            ("ffn_dim", self.ffn_dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("vocab_size", self.vocab_size),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        for ((name, value), limit) in sizes.iter().zip(SIZE_LIMITS) {
            if *value > limit {
                return Err(format!("{name} {value} is larger than {limit}, the most this program sizes for"));
            }
        }
        if self.dim % self.n_heads != 0 {
            return Err(format!("n_heads {} does not divide dim {}", self.n_heads, self.dim));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(format!("n_kv_heads {} does not divide n_heads {}", self.n_kv_heads, self.n_heads));
        }
        if self.head_dim() % 2 != 0 {
            return Err(format!("head dimension {} must be even for RoPE", self.head_dim()));
        }
        if !(self.norm_eps > 0.0 && self.rope_theta > 1.0) {
            return Err("norm_eps must be positive and rope_theta above 1".into());
        }
        Ok(())
    }

    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim()
    }

    /// A copy with `layers` layers (a 70B-shaped layer on one GPU, say).
    pub fn with_layers(&self, layers: usize) -> Result<LlamaConfig, String> {
        let limit = SIZE_LIMITS[2];
        if !(1..=limit).contains(&layers) {
            return Err(format!("--layers {layers}: must be 1 to {limit}"));
        }
        Ok(LlamaConfig { n_layers: layers, ..self.clone() })
    }

    /// Parameters that take part in matrix multiplications (the N of MFU): every projection
    /// and the LM head; not the embedding lookup nor the norm gains.
    pub fn matmul_params(&self) -> usize {
        let per_layer = 2 * self.dim * self.dim + 2 * self.dim * self.kv_dim() + 3 * self.dim * self.ffn_dim;
        self.n_layers * per_layer + self.vocab_size * self.dim
    }

    /// Model FLOPs per token for forward + backward (DESIGN.md): 6·N + 12·L·d·T.
    pub fn flops_per_token(&self, seq: usize) -> f64 {
        6.0 * self.matmul_params() as f64 + 12.0 * (self.n_layers * self.dim * seq) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_llama2_shapes() {
        let m = LlamaConfig::load("7b").unwrap();
        assert_eq!((m.dim, m.ffn_dim, m.n_layers, m.n_heads, m.vocab_size), (4096, 11008, 32, 32, 32000));
        // 7B: 6.74e9 parameters, of which 6.61e9 take part in matmuls (the embedding does not)
        assert_eq!(m.matmul_params() + 32000 * 4096 + (2 * 32 + 1) * 4096, 6_738_415_616);
        let m = LlamaConfig::load("llama2-70b").unwrap();
        assert_eq!((m.n_heads, m.n_kv_heads, m.kv_dim()), (64, 8, 1024));
        assert_eq!(LlamaConfig::load("13b").unwrap().dim, 5120);
        assert!(LlamaConfig::load("tiny").unwrap().n_kv_heads < LlamaConfig::load("tiny").unwrap().n_heads);
    }

    #[test]
    fn bad_configs_are_one_line_errors() {
        let base = LlamaConfig::load("tiny").unwrap();
        let bad = [
            LlamaConfig { n_heads: 5, ..base.clone() },
            LlamaConfig { n_kv_heads: 3, ..base.clone() },
            LlamaConfig { dim: 0, ..base.clone() },
            LlamaConfig { vocab_size: 0, ..base.clone() },
            LlamaConfig { vocab_size: 1 << 60, ..base.clone() },
            LlamaConfig { n_layers: 1_000_000_000, ..base.clone() },
            LlamaConfig { dim: 1 << 40, n_heads: 1 << 20, ..base.clone() },
        ];
        for c in bad {
            let e = c.validate().unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty());
        }
        // Removed when the test ends, passed or failed.
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let broken = dir.join("broken.json");
        std::fs::write(&broken, "{ \"dim\": 64, ").unwrap();
        assert!(LlamaConfig::load(broken.to_str().unwrap()).unwrap_err().contains("invalid model JSON"));
        assert!(LlamaConfig::load("/no/such/model.json").unwrap_err().contains("not a readable file"));
        assert!(base.with_layers(0).is_err());
        assert!(base.with_layers(1_000_000_000).unwrap_err().contains("1 to 1024"));
        assert_eq!(base.with_layers(5).unwrap().n_layers, 5);
    }
}
