//! LoRA: low-rank adapters on every linear layer of the frozen decoder.
//!
//! Each linear map x ↦ x Wᵀ (W: [out, in], frozen) becomes
//!
//!   y = x Wᵀ + (α/r) · (drop(x) Aᵀ) Bᵀ,   A: [r, in],  B: [out, r],
//!
//! with A drawn as peft draws it (kaiming-uniform with a = √5, i.e.
//! U(−1/√in, 1/√in)) and B = 0, so an untrained adapter is the base model
//! exactly. drop is inverted dropout with probability p on the adapter's
//! input (training only; p = 0 makes the score the exact gradient of the
//! log-likelihood).
//!
//! θ, the policy's flat parameter vector, is every adapter's A then B
//! (row-major), layer by layer, in the order of [`TARGETS`].
//!
//! The base term x Wᵀ is [`frozen_linear`], whose backward computes no
//! gradient for the frozen W.

use candle_core::{DType, Device, Tensor, Var};

use super::config::Config;
use super::frozen::frozen_linear;
use crate::rng::Rng;
use crate::{Error, Result};

/// The linear layers of one block that carry an adapter, in θ's order.
pub const TARGETS: [Target; 7] = [
    Target::Q,
    Target::K,
    Target::V,
    Target::O,
    Target::Gate,
    Target::Up,
    Target::Down,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    /// (in, out) of this layer in a model of shape `c`.
    pub fn dims(self, c: &Config) -> (usize, usize) {
        match self {
            Target::Q => (c.d_model, c.q_width()),
            Target::O => (c.q_width(), c.d_model),
            Target::K | Target::V => (c.d_model, c.kv_width()),
            Target::Gate | Target::Up => (c.d_model, c.d_ff),
            Target::Down => (c.d_ff, c.d_model),
        }
    }

    fn index(self) -> usize {
        TARGETS.iter().position(|&t| t == self).unwrap_or(0)
    }
}

/// The largest LoRA scale α/r a spec may set. The adapters' output is
/// (α/r)·B·A·x in f32; published settings use α/r between 0.5 and 4
/// (rsLoRA's α/√r stays below 64 for r ≥ 1 at α ≤ 64). A thousand times
/// more still leaves f32 range to spare for activations of order 10³,
/// while α = 1e39 is infinite in f32 and made every log-probability NaN.
pub const MAX_SCALE: f64 = 1024.0;
pub const MAX_SCALE_WHY: &str = "the adapters' output is scaled by α/r in f32; published settings use 0.5–4, and far above that the scale overflows f32 (α = 1e39 gave NaN log-probabilities)";

/// Rank r, scale numerator α and dropout p (the paper's: 16, 32, 0.05).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
}

impl LoraConfig {
    /// Length of θ for a model of shape `c`.
    pub fn num_params(&self, c: &Config) -> usize {
        c.layers
            * TARGETS
                .iter()
                .map(|t| {
                    let (i, o) = t.dims(c);
                    self.rank * (i + o)
                })
                .sum::<usize>()
    }

    /// Initial θ: every A uniform on ±1/√in from `rng`, every B zero.
    pub fn init(&self, c: &Config, rng: &mut Rng) -> Vec<f64> {
        use rand::RngExt;
        let mut theta = Vec::with_capacity(self.num_params(c));
        for _ in 0..c.layers {
            for t in TARGETS {
                let (i, o) = t.dims(c);
                let bound = 1.0 / (i as f64).sqrt();
                theta.extend((0..self.rank * i).map(|_| rng.random_range(-bound..bound)));
                theta.extend(std::iter::repeat_n(0.0, o * self.rank));
            }
        }
        theta
    }

    fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// The adapters of θ (A, B per target per layer): candle variables for
/// training, or plain tensors for sampling and scoring, which then record
/// no graph (a key/value cache built from variables would keep every
/// earlier step's activations alive through its graph).
pub struct Adapters {
    pub config: LoraConfig,
    /// [layer][target] → (A, B): variables' tensors in [`Mode::Train`].
    layers: Vec<Vec<(Tensor, Tensor)>>,
}

/// Whether adapters are built for gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Infer,
}

/// How a forward pass uses the adapters: with dropout masks drawn from
/// `dropout` (training), or none (scoring and sampling).
pub struct Adapted<'a> {
    pub adapters: &'a Adapters,
    pub dropout: Option<&'a mut Rng>,
}

impl Adapters {
    /// The adapters of `theta` (laid out as in the module docs) in `dtype`
    /// on `device`.
    pub fn from_flat(
        c: &Config,
        lora: LoraConfig,
        theta: &[f64],
        (dtype, device, mode): (DType, &Device, Mode),
    ) -> Result<Adapters> {
        let want = lora.num_params(c);
        if theta.len() != want {
            return Err(Error::Invalid(format!(
                "LoRA parameters: {} values given, rank {} on this model needs {want}",
                theta.len(),
                lora.rank
            )));
        }
        let mut rest = theta;
        let mut take = |rows: usize, cols: usize| -> candle_core::Result<Tensor> {
            let (head, tail) = rest.split_at(rows * cols);
            rest = tail;
            let t = Tensor::from_slice(head, (rows, cols), device)?.to_dtype(dtype)?;
            match mode {
                Mode::Train => Ok(Var::from_tensor(&t)?.as_tensor().clone()),
                Mode::Infer => Ok(t),
            }
        };
        let layers = (0..c.layers)
            .map(|_| {
                TARGETS
                    .iter()
                    .map(|t| {
                        let (i, o) = t.dims(c);
                        Ok((take(lora.rank, i)?, take(o, lora.rank)?))
                    })
                    .collect::<candle_core::Result<Vec<_>>>()
            })
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(super::llama::ce)?;
        Ok(Adapters {
            config: lora,
            layers,
        })
    }

    /// These adapters applied without dropout (sampling and scoring, or
    /// training with p = 0).
    pub fn without_dropout(&self) -> Adapted<'_> {
        Adapted {
            adapters: self,
            dropout: None,
        }
    }

    /// Every variable's gradient in θ's order, added to `out` (a variable
    /// the loss did not reach adds nothing; [`Adapters::missing_grads`]
    /// tells which).
    pub fn add_flat_grads(
        &self,
        grads: &candle_core::backprop::GradStore,
        out: &mut [f64],
    ) -> Result<()> {
        let mut at = 0;
        for var in self.vars() {
            let n = var.elem_count();
            if let Some(g) = grads.get(var) {
                let g = g
                    .to_dtype(DType::F64)
                    .and_then(|g| g.flatten_all())
                    .and_then(|g| g.to_vec1::<f64>())
                    .map_err(super::llama::ce)?;
                out[at..at + n].iter_mut().zip(g).for_each(|(o, v)| *o += v);
            }
            at += n;
        }
        Ok(())
    }

    /// Names of the variables without a gradient in `grads` (a broken
    /// backward pass shows here before it shows as slow learning).
    pub fn missing_grads(&self, grads: &candle_core::backprop::GradStore) -> Vec<String> {
        let mut missing = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (t, (a, b)) in TARGETS.iter().zip(layer) {
                for (name, v) in [("A", a), ("B", b)] {
                    if grads.get(v).is_none() {
                        missing.push(format!("layer {l} {t:?}.{name}"));
                    }
                }
            }
        }
        missing
    }

    fn vars(&self) -> impl Iterator<Item = &Tensor> {
        self.layers
            .iter()
            .flat_map(|l| l.iter().flat_map(|(a, b)| [a, b]))
    }
}

impl Adapted<'_> {
    /// x Wᵀ plus this layer's adapter term (module docs).
    pub(super) fn linear(
        &mut self,
        layer: usize,
        target: Target,
        x: &Tensor,
        w: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let base = frozen_linear(x, w)?;
        let (a, b) = &self.adapters.layers[layer][target.index()];
        let p = self.adapters.config.dropout;
        let input = match self.dropout.as_deref_mut() {
            Some(rng) if p > 0.0 => x.broadcast_mul(&dropout_mask(x, p, rng)?)?,
            _ => x.clone(),
        };
        let low = input.broadcast_matmul(&a.t()?)?;
        // The scale on B ([out, r]) rather than on the [rows, out] product.
        let delta = low.broadcast_matmul(&(b * self.adapters.config.scale())?.t()?)?;
        base + delta
    }
}

/// An inverted-dropout mask of x's shape: 0 with probability p, else
/// 1/(1 − p). Each element uses 16 bits of one draw (four per u64), so p is
/// applied as its nearest multiple of 2⁻¹⁶ (0.05 → 0.050003).
fn dropout_mask(x: &Tensor, p: f64, rng: &mut Rng) -> candle_core::Result<Tensor> {
    use rand::Rng as _;
    let n = x.elem_count();
    let cut = (p * 65536.0).round() as u32;
    let keep = (1.0 / (1.0 - f64::from(cut) / 65536.0)) as f32;
    let mut mask = Vec::with_capacity(n);
    while mask.len() < n {
        let bits = rng.next_u64();
        for k in 0..4 {
            if mask.len() == n {
                break;
            }
            let u = ((bits >> (16 * k)) & 0xFFFF) as u32;
            mask.push(if u < cut { 0.0 } else { keep });
        }
    }
    Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())
}
