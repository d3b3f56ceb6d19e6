//! A small decoder-only transformer on candle: token and position
//! embeddings, pre-norm blocks (causal multi-head self-attention, GELU MLP — smooth, so finite-difference checks never straddle a kink),
//! a final layer norm and an output head.
//!
//!   x₀ = E[tokens] + P[positions]   (or E[tokens] alone: [`Positions`])
//!   xₗ₊₁ = yₗ + MLP(LN₂(yₗ)),   yₗ = xₗ + Attn(LN₁(xₗ))
//!   logits = LN_f(x_L) W_out
//!
//! Every norm, softmax and GELU is differentiable: candle 0.11's fused
//! `layer_norm`, `rms_norm` and `softmax_last_dim` record no backward pass,
//! so the CPU path uses our fused kernels with hand-written backward passes
//! ([`kernels`]) and other devices the same formulas from primitives. Weights come from a flat f64 vector in the
//! order of [`Config::shapes`]; the graph runs in f32 or f64. A key/value
//! cache ([`KvCache`]) lets many continuations share one prompt pass and
//! lets decoding feed one new token per step instead of the whole sequence.

use candle_core::{D, DType, Device, Tensor, Var};

use super::kernels;
use rand_distr::{Distribution, Normal};

/// How a token's position enters the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Positions {
    /// A learned vector per absolute position (`pos_emb`, [max_len, d]):
    /// positions that training never reached keep their random start.
    #[default]
    Learned,
    /// None ("NoPE"): x₀ = E[tokens]. The causal mask alone tells the
    /// model where it is, so no position is untrained; Lee et al. (ICML
    /// 2025) extrapolate length with it.
    None,
}

/// Architecture. `max_len` bounds prompt + completion.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    pub vocab: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub d_ff: usize,
    pub max_len: usize,
    /// Run the graph in f64 (verification) instead of f32 (speed).
    pub f64: bool,
    /// Checkpoints written before this field existed had learned positions.
    #[serde(default)]
    pub positions: Positions,
}

pub(crate) const LN_EPS: f64 = 1e-5;

impl Config {
    /// Parameter tensors, in flat order, with their names (the safetensors
    /// keys) and shapes.
    pub fn shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, d, f, t) = (self.vocab, self.d_model, self.d_ff, self.max_len);
        let mut s = vec![("tok_emb".to_string(), vec![v, d])];
        if self.positions == Positions::Learned {
            s.push(("pos_emb".to_string(), vec![t, d]));
        }
        for l in 0..self.layers {
            for (name, shape) in [
                ("ln1.g", vec![d]),
                ("ln1.b", vec![d]),
                ("wq", vec![d, d]),
                ("wk", vec![d, d]),
                ("wv", vec![d, d]),
                ("wo", vec![d, d]),
                ("ln2.g", vec![d]),
                ("ln2.b", vec![d]),
                ("w1", vec![d, f]),
                ("b1", vec![f]),
                ("w2", vec![f, d]),
                ("b2", vec![d]),
            ] {
                s.push((format!("layer{l}.{name}"), shape));
            }
        }
        s.push(("ln_f.g".into(), vec![d]));
        s.push(("ln_f.b".into(), vec![d]));
        s.push(("head".into(), vec![d, v]));
        s
    }

    /// The flat index of block `l`'s first tensor (after the embeddings).
    pub fn block_start(&self, l: usize) -> usize {
        let embeddings = 1 + usize::from(self.positions == Positions::Learned);
        embeddings + 12 * l
    }

    pub fn num_params(&self) -> usize {
        self.shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    pub fn dtype(&self) -> DType {
        if self.f64 { DType::F64 } else { DType::F32 }
    }
}

/// Initial weights from our seeded generator (candle's CPU generator
/// cannot be seeded): N(0, 0.02²) for embeddings, projections and head,
/// the residual output projections (`wo`, `w2`) scaled by 1/√(2·layers) as
/// in GPT-2; layer-norm gains 1, biases 0. Flat, in [`Config::shapes`] order.
pub fn initial_params(cfg: &Config, rng: &mut crate::rng::Rng) -> Vec<f64> {
    let normal = Normal::new(0.0, 0.02).expect("finite");
    let residual = 1.0 / (2.0 * cfg.layers.max(1) as f64).sqrt();
    let mut theta = Vec::with_capacity(cfg.num_params());
    for (name, shape) in cfg.shapes() {
        let n: usize = shape.iter().product();
        let gain = name.ends_with(".g");
        let bias = name.ends_with(".b") || name.ends_with("b1") || name.ends_with("b2");
        let scale = if name.ends_with("wo") || name.ends_with("w2") {
            residual
        } else {
            1.0
        };
        for _ in 0..n {
            theta.push(if gain {
                1.0
            } else if bias {
                0.0
            } else {
                normal.sample(rng) * scale
            });
        }
    }
    theta
}

/// The weights as candle variables (tracked for autograd).
pub struct Weights {
    pub cfg: Config,
    pub vars: Vec<Var>,
    pub device: Device,
}

/// Keys and values of the positions seen so far, per layer:
/// [B, heads, len, d_head], where B is 1 (a prompt shared by a batch of
/// continuations: it broadcasts) or the batch size.
#[derive(Clone)]
pub struct KvCache {
    pub keys: Vec<Tensor>,
    pub values: Vec<Tensor>,
    pub len: usize,
}

type R<T> = candle_core::Result<T>;

/// x W for x of shape [B, T, k] and W [k, n], as one [B·T, k] × [k, n]
/// product (`broadcast_matmul` would copy W per batch row and sum the
/// copies' gradients back).
fn linear(x: &Tensor, w: &Tensor) -> R<Tensor> {
    let (b, t, k) = x.dims3()?;
    x.reshape((b * t, k))?.matmul(w)?.reshape((b, t, w.dim(1)?))
}

/// log softmax over the last dimension.
pub fn log_softmax_last(x: &Tensor) -> R<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

impl Weights {
    pub fn from_flat(cfg: Config, theta: &[f64], device: &Device) -> R<Self> {
        let mut vars = Vec::new();
        let mut at = 0;
        for (_, shape) in cfg.shapes() {
            let n: usize = shape.iter().product();
            let t = Tensor::from_vec(theta[at..at + n].to_vec(), shape.as_slice(), device)?
                .to_dtype(cfg.dtype())?;
            vars.push(Var::from_tensor(&t)?);
            at += n;
        }
        assert_eq!(at, theta.len(), "flat parameters match the config");
        Ok(Weights {
            cfg,
            vars,
            device: device.clone(),
        })
    }

    /// Gradients of every variable in flat order (zeros where a variable
    /// got none), added into `out`.
    pub fn add_flat_grads(
        &self,
        grads: &candle_core::backprop::GradStore,
        out: &mut [f64],
    ) -> R<()> {
        let mut at = 0;
        for v in &self.vars {
            let n = v.elem_count();
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = g.flatten_all()?;
                let dst = &mut out[at..at + n];
                // Read in the graph's own precision (no converted copy).
                if self.cfg.f64 {
                    dst.iter_mut()
                        .zip(g.to_vec1::<f64>()?)
                        .for_each(|(o, x)| *o += x);
                } else {
                    dst.iter_mut()
                        .zip(g.to_vec1::<f32>()?)
                        .for_each(|(o, x)| *o += f64::from(x));
                }
            }
            at += n;
        }
        Ok(())
    }

    fn w(&self, i: usize) -> &Tensor {
        self.vars[i].as_tensor()
    }

    /// Runs `tokens` ([B, T]) at positions `start..start+T`, attending to
    /// `prefix` (keys/values of the earlier positions, batch 1 or B) and
    /// causally to themselves. Returns logits [B, T, V] and the keys/values
    /// of prefix and new positions per layer ([B, heads, prefix + T,
    /// d_head]) — the cache for the next call.
    pub fn forward(
        &self,
        tokens: &Tensor,
        start: usize,
        prefix: Option<&KvCache>,
    ) -> R<(Tensor, Vec<Tensor>, Vec<Tensor>)> {
        let c = self.cfg;
        let (b, t) = tokens.dims2()?;
        let dh = c.d_model / c.heads;
        let p = prefix.map_or(0, |pc| pc.len);
        if start + t > c.max_len {
            candle_core::bail!(
                "sequence of {} tokens exceeds the model's max_len {}",
                start + t,
                c.max_len
            );
        }
        let mut x = self
            .w(0)
            .embedding(&tokens.flatten_all()?)?
            .reshape((b, t, c.d_model))?;
        if c.positions == Positions::Learned {
            x = x.broadcast_add(&self.w(1).narrow(0, start, t)?)?;
        }
        let scale = 1.0 / (dh as f64).sqrt();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for l in 0..c.layers {
            let base = c.block_start(l);
            let w = |k: usize| self.w(base + k);
            let h = kernels::layer_norm(&x, w(0), w(1), LN_EPS)?;
            let split = |m: &Tensor| -> R<Tensor> {
                linear(&h, m)?
                    .reshape((b, t, c.heads, dh))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, mut k, mut v) = (split(w(2))?, split(w(3))?, split(w(4))?);
            if let Some(pc) = prefix {
                let shape = (b, c.heads, p, dh);
                // Broadcasting copies a shared prompt's cache to the batch;
                // a cache of batch B is taken as is.
                k = Tensor::cat(&[&pc.keys[l].broadcast_as(shape)?.contiguous()?, &k], 2)?;
                v = Tensor::cat(&[&pc.values[l].broadcast_as(shape)?.contiguous()?, &v], 2)?;
            }
            let att = kernels::attention(&q, &k, &v, scale)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b, t, c.d_model))?;
            x = (x + linear(&att, w(5))?)?;
            let h2 = kernels::layer_norm(&x, w(6), w(7), LN_EPS)?;
            let hidden = kernels::bias_gelu(&linear(&h2, w(8))?, w(9))?;
            let m = kernels::bias(&linear(&hidden, w(10))?, w(11))?;
            x = (x + m)?;
            keys.push(k);
            values.push(v);
        }
        let n = self.vars.len();
        let out = kernels::layer_norm(&x, self.w(n - 3), self.w(n - 2), LN_EPS)?;
        Ok((linear(&out, self.w(n - 1))?, keys, values))
    }

    /// One prompt ([P] tokens): log-probabilities of the next token [V] and
    /// the prompt's cache.
    pub fn prompt(&self, tokens: &[u32]) -> R<(Tensor, KvCache)> {
        let t = Tensor::from_vec(tokens.to_vec(), (1, tokens.len()), &self.device)?;
        let (logits, keys, values) = self.forward(&t, 0, None)?;
        let last = logits.narrow(1, tokens.len() - 1, 1)?.flatten_all()?;
        Ok((
            log_softmax_last(&last)?,
            KvCache {
                keys,
                values,
                len: tokens.len(),
            },
        ))
    }

    /// log P(completion | prompt) for each completion (token sequences of
    /// length ≥ 1), as a [K] tensor on the graph: the prompt runs once, the
    /// completions as one batch against its cache (teacher forcing).
    pub fn completion_log_probs(&self, prompt: &[u32], completions: &[Vec<u32>]) -> R<Tensor> {
        let (first, cache) = self.prompt(prompt)?;
        let k = completions.len();
        let first_ids: Vec<u32> = completions.iter().map(|c| c[0]).collect();
        let mut total = first.gather(&Tensor::from_vec(first_ids, k, &self.device)?, 0)?;
        let longest = completions.iter().map(Vec::len).max().unwrap_or(1);
        if longest > 1 {
            // Inputs: tokens 0..m−1 of each completion (padded with 0);
            // targets: tokens 1..m; padding masked out.
            let w = longest - 1;
            let mut inputs = Vec::with_capacity(k * w);
            let mut targets = Vec::with_capacity(k * w);
            let mut keep = Vec::with_capacity(k * w);
            for c in completions {
                for i in 0..w {
                    inputs.push(if i < c.len() { c[i] } else { 0 });
                    targets.push(if i + 1 < c.len() { c[i + 1] } else { 0 });
                    keep.push(if i + 1 < c.len() { 1.0 } else { 0.0 });
                }
            }
            let inputs = Tensor::from_vec(inputs, (k, w), &self.device)?;
            let (logits, _, _) = self.forward(&inputs, cache.len, Some(&cache))?;
            let targets = Tensor::from_vec(targets, (k, w), &self.device)?;
            let keep = Tensor::from_vec(keep, (k, w), &self.device)?.to_dtype(self.cfg.dtype())?;
            let picked = kernels::token_log_probs(&logits, &targets)?;
            total = (total + (picked * keep)?.sum(1)?)?;
        }
        Ok(total)
    }

    /// Language-model loss of a batch of sequences ([B, T] token ids):
    /// the mean over the B·(T−1) positions of −log P(token t+1 | tokens ≤ t)
    /// (teacher forcing). This is the training step the throughput
    /// benchmark times beside PyTorch.
    pub fn lm_loss(&self, tokens: &Tensor) -> R<Tensor> {
        let t = tokens.dim(1)?;
        let inputs = tokens.narrow(1, 0, t - 1)?;
        let targets = tokens.narrow(1, 1, t - 1)?;
        let (logits, _, _) = self.forward(&inputs, 0, None)?;
        kernels::token_log_probs(&logits, &targets)?
            .mean_all()?
            .neg()
    }

    /// Per row of `tokens` ([B, T] ids), the sum over marked positions of
    /// log p_τ(token t+1 | tokens ≤ t), p_τ = softmax(logits/τ): `marked`
    /// ([B, T−1], the graph's dtype) is 1 where the next token counts (a
    /// completion's tokens) and 0 elsewhere (prompt, padding). Returns [B]
    /// on the graph, so its backward pass gives ∇θ log π(completion).
    pub fn marked_log_probs(&self, tokens: &Tensor, marked: &Tensor, tau: f64) -> R<Tensor> {
        let t = tokens.dim(1)?;
        let inputs = tokens.narrow(1, 0, t - 1)?;
        let targets = tokens.narrow(1, 1, t - 1)?;
        let (logits, _, _) = self.forward(&inputs, 0, None)?;
        let logits = if tau == 1.0 { logits } else { (logits / tau)? };
        (kernels::token_log_probs(&logits, &targets)? * marked)?.sum(1)
    }

    /// Overwrites every variable from a flat f64 vector (the layout of
    /// [`Config::shapes`]), e.g. after an optimiser step.
    pub fn set_flat(&self, theta: &[f64]) -> R<()> {
        let mut at = 0;
        for v in &self.vars {
            let n = v.elem_count();
            let src = &theta[at..at + n];
            // Built in the graph's precision directly (one copy, not two).
            let t = if self.cfg.f64 {
                Tensor::from_slice(src, v.shape(), &self.device)?
            } else {
                let f: Vec<f32> = src.iter().map(|&x| x as f32).collect();
                Tensor::from_vec(f, v.shape(), &self.device)?
            };
            v.set(&t)?;
            at += n;
        }
        Ok(())
    }
}
