//! LoRA: low-rank adapters on every linear layer of the frozen decoder,
//! and the frozen matmul that makes training them cheap.
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
//! candle's matmul backward computes the gradient of *both* operands, so a
//! frozen W would cost a second matmul of the forward's size per layer and
//! a weight-sized buffer. [`frozen_linear`] is a custom op whose backward
//! returns only the input's gradient, dy·W.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor, Var};

use super::config::Config;
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
        let delta = low.broadcast_matmul(&b.t()?)?;
        base + (delta * self.adapters.config.scale())?
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

/// x Wᵀ for x [.., in] and a frozen W [out, in], whose backward computes
/// only the input's gradient (module docs).
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() || x.device().is_cuda() {
        x.contiguous()?
            .apply_op1(FrozenLinear { w: w.contiguous()? })
    } else {
        x.broadcast_matmul(&w.t()?)
    }
}

struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// (M, out, in) and the layout of Wᵀ as a [in, out] view of W.
    fn geometry(&self, x: &Layout) -> candle_core::Result<(usize, usize, usize, Layout)> {
        let (out, inn) = self.w.dims2()?;
        let dims = x.dims();
        if dims.last() != Some(&inn) || !x.is_contiguous() {
            candle_core::bail!(
                "frozen linear: input {:?} (contiguous: {}) does not end in {inn}",
                dims,
                x.is_contiguous()
            );
        }
        let m = x.shape().elem_count() / inn;
        let (_, wl) = self.w.storage_and_layout();
        let wt = Layout::new(Shape::from((inn, out)), vec![1, inn], wl.start_offset());
        Ok((m, out, inn, wt))
    }

    fn out_shape(x: &Layout, out: usize) -> Shape {
        let mut dims = x.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out;
        }
        Shape::from(dims)
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, out, inn, wt) = self.geometry(l)?;
        let (ws, _) = self.w.storage_and_layout();
        let Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("frozen linear: input on the CPU, weight elsewhere");
        };
        if let (CpuStorage::F32(xs), CpuStorage::F32(w)) = (x, ws)
            && m <= FEW_ROWS
        {
            let xs = &xs[l.start_offset()..l.start_offset() + m * inn];
            let w = &w[wt.start_offset()..wt.start_offset() + out * inn];
            return Ok((
                CpuStorage::F32(few_rows(xs, w, inn)),
                Self::out_shape(l, out),
            ));
        }
        let xl = Layout::new(Shape::from((m, inn)), vec![inn, 1], l.start_offset());
        let y = x.matmul(ws, (1, m, out, inn), &xl, &wt)?;
        Ok((y, Self::out_shape(l, out)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let (m, out, inn, wt) = self.geometry(l)?;
        let (ws, _) = self.w.storage_and_layout();
        let Storage::Cuda(ws) = &*ws else {
            candle_core::bail!("frozen linear: input on the GPU, weight elsewhere");
        };
        let xl = Layout::new(Shape::from((m, inn)), vec![inn, 1], l.start_offset());
        let y = x.matmul(ws, (1, m, out, inn), &xl, &wt)?;
        Ok((y, Self::out_shape(l, out)))
    }

    /// dx = dy · W; W gets no gradient.
    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(dy.broadcast_matmul(&self.w)?))
    }
}

/// Up to this many rows, [`few_rows`] beats gemm: decoding multiplies a
/// handful of rows by every weight, and gemm would repack the whole weight
/// matrix for them at every step.
const FEW_ROWS: usize = 32;

/// y = x Wᵀ for x [m, k] and W [n, k], both row-major: each weight row is
/// read once, for all m rows (the step is bound by reading the weights).
fn few_rows(x: &[f32], w: &[f32], k: usize) -> Vec<f32> {
    let mut y = vec![0f32; (x.len() / k) * (w.len() / k)];
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F, checked just above.
        unsafe { few_rows_avx512(x, w, k, &mut y) };
        return y;
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { few_rows_avx2(x, w, k, &mut y) };
        return y;
    }
    few_rows_into(x, w, k, &mut y);
    y
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn few_rows_avx512(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    few_rows_into(x, w, k, y);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn few_rows_avx2(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    few_rows_into(x, w, k, y);
}

/// The loop the compiler vectorises at the width of the enclosing
/// function's target features: 16 partial sums per dot product, added in a
/// fixed order (so a result does not depend on m).
#[inline(always)]
fn few_rows_into(x: &[f32], w: &[f32], k: usize, y: &mut [f32]) {
    let n = w.len() / k;
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for (i, xr) in x.chunks_exact(k).enumerate() {
            let mut acc = [0f32; 16];
            let (wc, wt) = wr.split_at(k - k % 16);
            let (xc, xt) = xr.split_at(k - k % 16);
            for (a, b) in wc.chunks_exact(16).zip(xc.chunks_exact(16)) {
                for l in 0..16 {
                    acc[l] = a[l].mul_add(b[l], acc[l]);
                }
            }
            let mut s: f32 = acc.iter().sum();
            for (a, b) in wt.iter().zip(xt) {
                s = a.mul_add(*b, s);
            }
            y[i * n + j] = s;
        }
    }
}
