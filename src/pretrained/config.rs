//! The decoder's shape and variant, whichever file it came from: a GGUF
//! file's `llama.*` metadata or a Hugging Face `config.json`.
//!
//! Three families share one decoder (`llama.rs`); they differ in three
//! switches:
//!
//! | family | q/k/v bias | RMSNorm on each head's q and k | head size |
//! |---|---|---|---|
//! | llama (SmolLM2) | no | no | d_model / heads |
//! | qwen2 | yes | no | d_model / heads |
//! | qwen3 | no | yes | its own (`head_dim`, 128 in Qwen3 0.6B–4B) |
//!
//! and in how RoPE pairs a head's coordinates, which is a property of
//! the file, not of the family: Hugging Face checkpoints rotate the pairs
//! (i, i + d_h/2) ("halves"), while llama.cpp's converter permutes the q
//! and k rows of llama models so that pairs (2i, 2i + 1) rotate
//! ("interleaved"). Both describe the same model.

/// Which coordinates of a head RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePairs {
    /// (x₂ᵢ, x₂ᵢ₊₁): GGUF files of the llama architecture.
    Interleaved,
    /// (xᵢ, xᵢ₊d_h/2): Hugging Face checkpoints.
    Halves,
}

/// The decoder's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub vocab: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Size of one attention head (heads · head_dim need not be d_model).
    pub head_dim: usize,
    pub d_ff: usize,
    pub rms_eps: f64,
    pub rope_base: f64,
    pub rope_pairs: RopePairs,
    pub context: usize,
    /// q, k and v projections have a bias (qwen2).
    pub qkv_bias: bool,
    /// q and k are RMS-normalised per head before RoPE (qwen3).
    pub qk_norm: bool,
}

impl Config {
    /// A llama-family shape with head size d_model / heads and the GGUF
    /// RoPE pairing (what SmolLM2's file holds).
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        vocab: usize,
        d_model: usize,
        layers: usize,
        heads: usize,
        kv_heads: usize,
        d_ff: usize,
        rms_eps: f64,
        rope_base: f64,
        context: usize,
    ) -> Config {
        Config {
            vocab,
            d_model,
            layers,
            heads,
            kv_heads,
            head_dim: d_model.checked_div(heads).unwrap_or(0),
            d_ff,
            rms_eps,
            rope_base,
            rope_pairs: RopePairs::Interleaved,
            context,
            qkv_bias: false,
            qk_norm: false,
        }
    }

    /// Width of all query heads together (the q projection's output).
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Weights of the linear layers and the embedding (the norms' and
    /// biases' few vectors left out): what the decoder holds in memory.
    pub fn num_weights(&self) -> usize {
        let per_layer: usize = super::lora::TARGETS
            .iter()
            .map(|t| {
                let (i, o) = t.dims(self);
                i * o
            })
            .sum();
        self.layers * per_layer + self.vocab * self.d_model
    }

    /// Why this shape cannot be a decoder, if it cannot: every size ≥ 1,
    /// whole groups of query heads per key/value head, an even head size
    /// (RoPE rotates pairs), a positive ε and base.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocabulary", self.vocab),
            ("d_model", self.d_model),
            ("layers", self.layers),
            ("heads", self.heads),
            ("key/value heads", self.kv_heads),
            ("head size", self.head_dim),
            ("feed-forward width", self.d_ff),
            ("context", self.context),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return Err(format!("the {what} is 0"));
        }
        // Bounds far above any released model of this family (the widest
        // vocabularies are ~2.6·10⁵, the deepest ~128 layers), so every
        // product of sizes below is exact in usize and no allocation is
        // asked for a size a file merely claims.
        let bounds = [
            ("vocabulary", self.vocab, 1usize << 22),
            ("d_model", self.d_model, 1 << 16),
            ("layers", self.layers, 1 << 10),
            ("heads", self.heads, 1 << 10),
            ("key/value heads", self.kv_heads, 1 << 10),
            ("head size", self.head_dim, 1 << 12),
            ("feed-forward width", self.d_ff, 1 << 18),
            ("context", self.context, 1 << 24),
        ];
        if let Some((what, n, max)) = bounds.iter().find(|(_, n, max)| n > max) {
            return Err(format!(
                "{what} = {n} is more than the {max} this reader allows"
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!(
                "{} heads do not split into groups over {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head size {} is odd; RoPE rotates pairs",
                self.head_dim
            ));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite()) {
            return Err(format!("RMSNorm ε = {} is not positive", self.rms_eps));
        }
        if !(self.rope_base > 1.0 && self.rope_base.is_finite()) {
            return Err(format!("RoPE base = {} is not above 1", self.rope_base));
        }
        Ok(())
    }
}
