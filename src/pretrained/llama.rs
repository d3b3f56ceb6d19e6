//! The llama decoder on f32 weights, written with candle ops that all have
//! a backward pass. candle 0.11's fused `rms_norm`, `rope`/`rope_i` and
//! `softmax_last_dim` record none, so gradients would silently stop there;
//! they are composed here from elementwise ops, reductions and matmuls.
//!
//! Per layer, for the residual stream h of shape [B, T, d]:
//!
//!   a = RMSNorm(h)·w_attn;  q, k, v = a W_qᵀ (+ b_q), a W_kᵀ (+ b_k), a W_vᵀ (+ b_v)
//!   q, k ← RMSNorm per head (qwen3 only)
//!   q, k ← RoPE(q), RoPE(k)   (pairs (2i, 2i+1) in GGUF llama files, whose
//!                               q/k rows are permuted for it; (i, i+d_h/2)
//!                               in Hugging Face checkpoints: `RopePairs`)
//!   h ← h + softmax(q kᵀ/√d_h + causal mask) v · W_oᵀ   (each key/value
//!                               head serves heads/kv_heads query heads)
//!   f = RMSNorm(h)·w_ffn;  h ← h + (silu(f W_gᵀ) ⊙ f W_uᵀ) W_dᵀ
//!
//! (biases: qwen2 only; see `config.rs`)
//! then logits = RMSNorm(h)·w_out · Eᵀ with E the token embedding (tied),
//! or the file's own output matrix.

use candle_core::{D, Device, Tensor};

use super::config::{Config, RopePairs};
use super::frozen::frozen_linear;
use super::fused::RopeTables;
use super::gguf::Gguf;
use super::hf::HfDir;
use super::lora::{Adapted, Target};
use crate::{Error, Result};

/// A candle error as ours.
pub(crate) fn ce(e: candle_core::Error) -> Error {
    Error::Invalid(format!("pretrained model: {e}"))
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    /// q, k, v biases (qwen2).
    qkv_bias: Option<[Tensor; 3]>,
    /// Per-head RMSNorm weights of q and k (qwen3).
    qk_norm: Option<[Tensor; 2]>,
    wo: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
}

/// The decoder's weights (frozen) and shape.
pub struct Llama {
    pub config: Config,
    embedding: Tensor,
    layers: Vec<Layer>,
    out_norm: Tensor,
    /// The output projection: the embedding itself unless the file has
    /// its own `output.weight`.
    output: Tensor,
    device: Device,
}

impl Llama {
    /// Loads every weight of `g`, dequantized to f32, on `device`.
    pub fn load(g: &Gguf, device: &Device) -> Result<Llama> {
        let origin = g.path().display().to_string();
        Llama::from_weights(g.config()?, g.weights(device)?, &origin, device)
    }

    /// Loads a Hugging Face directory's weights, in f32, on `device`.
    pub fn load_hf(d: &HfDir, device: &Device) -> Result<Llama> {
        let origin = d
            .tokenizer_path()
            .with_file_name("*.safetensors")
            .display()
            .to_string();
        Llama::from_weights(d.config.clone(), d.weights(device)?, &origin, device)
    }

    /// A decoder of shape `config` from weights named as in GGUF files
    /// (`token_embd.weight`, `blk.N.attn_q.weight`, …), in any float dtype;
    /// `origin` names their source in errors.
    pub fn from_weights(
        config: Config,
        mut w: std::collections::HashMap<String, Tensor>,
        origin: &str,
        device: &Device,
    ) -> Result<Llama> {
        let own_output = w.contains_key("output.weight");
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = w
                .remove(name)
                .ok_or_else(|| Error::Invalid(format!("{origin}: tensor `{name}` is missing")))?;
            if t.dims() != shape {
                return Err(Error::Invalid(format!(
                    "{origin}: tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            Ok(t)
        };
        let (d, q, kv) = (config.d_model, config.q_width(), config.kv_width());
        let embedding = take("token_embd.weight", &[config.vocab, d])?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let bias = |s: &str| format!("blk.{i}.{s}.bias");
            layers.push(Layer {
                attn_norm: take(&n("attn_norm"), &[d])?,
                wq: take(&n("attn_q"), &[q, d])?,
                wk: take(&n("attn_k"), &[kv, d])?,
                wv: take(&n("attn_v"), &[kv, d])?,
                qkv_bias: match config.qkv_bias {
                    true => Some([
                        take(&bias("attn_q"), &[q])?,
                        take(&bias("attn_k"), &[kv])?,
                        take(&bias("attn_v"), &[kv])?,
                    ]),
                    false => None,
                },
                qk_norm: match config.qk_norm {
                    true => Some([
                        take(&n("attn_q_norm"), &[config.head_dim])?,
                        take(&n("attn_k_norm"), &[config.head_dim])?,
                    ]),
                    false => None,
                },
                wo: take(&n("attn_output"), &[d, q])?,
                ffn_norm: take(&n("ffn_norm"), &[d])?,
                w_gate: take(&n("ffn_gate"), &[config.d_ff, d])?,
                w_up: take(&n("ffn_up"), &[config.d_ff, d])?,
                w_down: take(&n("ffn_down"), &[d, config.d_ff])?,
            });
        }
        let out_norm = take("output_norm.weight", &[d])?;
        let output = match take("output.weight", &[config.vocab, d]) {
            Ok(t) => t,
            // Absent: tied to the embedding. Present with a wrong shape: an
            // error (a 1-D or short output once panicked in the matmul).
            Err(_) if !own_output => embedding.clone(),
            Err(e) => return Err(e),
        };
        // A weight left over belongs to a variant this decoder would run
        // wrongly (a bias or norm the config does not declare).
        let mut left: Vec<&String> = w.keys().collect();
        left.sort();
        if let Some(name) = left.first() {
            return Err(Error::Invalid(format!(
                "{origin}: tensor `{name}` is not used by a {} decoder with this config ({} unused in all)",
                if config.qk_norm {
                    "qwen3"
                } else if config.qkv_bias {
                    "qwen2"
                } else {
                    "llama"
                },
                left.len()
            )));
        }
        Ok(Llama {
            config,
            embedding,
            layers,
            out_norm,
            output,
            device: device.clone(),
        })
    }

    /// Logits [B, T, vocab] of `tokens` (B rows of T ids, positions 0..T).
    pub fn forward(&self, tokens: &[Vec<u32>]) -> Result<Tensor> {
        self.forward_t(tokens, None, None).map_err(ce)
    }

    /// Logits [B, 1, vocab] of the last position of `tokens` continuing
    /// the rows in `cache` (positions cache.len()..), appending the keys
    /// and values of every position to it. An empty cache is a prefill;
    /// only the last position's logits are computed (what sampling reads;
    /// the output projection of a 150-token prompt would otherwise be a
    /// fifth of the prefill). `lora`: the adapters to apply, if any.
    pub fn forward_cached(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut Cache,
        lora: Option<&mut Adapted>,
    ) -> Result<Tensor> {
        (|| {
            let h = self.hidden(tokens, Some(cache), lora)?;
            let t = h.dim(1)?;
            frozen_linear(&h.narrow(1, t - 1, 1)?.contiguous()?, &self.output)
        })()
        .map_err(ce)
    }

    /// Logits [B, T, vocab], with the adapters of `lora` if given.
    pub fn forward_adapted(
        &self,
        tokens: &[Vec<u32>],
        lora: Option<&mut Adapted>,
    ) -> Result<Tensor> {
        self.forward_t(tokens, None, lora).map_err(ce)
    }

    fn forward_t(
        &self,
        tokens: &[Vec<u32>],
        cache: Option<&mut Cache>,
        lora: Option<&mut Adapted>,
    ) -> candle_core::Result<Tensor> {
        let h = self.hidden(tokens, cache, lora)?;
        frozen_linear(&h, &self.output)
    }

    /// The last hidden state RMSNorm(h)·w_out [B, T, d] (what the output
    /// projection reads).
    fn hidden(
        &self,
        tokens: &[Vec<u32>],
        mut cache: Option<&mut Cache>,
        mut lora: Option<&mut Adapted>,
    ) -> candle_core::Result<Tensor> {
        let b = tokens.len();
        let t = tokens.first().map_or(0, Vec::len);
        if b == 0 || t == 0 || tokens.iter().any(|r| r.len() != t) {
            candle_core::bail!("forward needs B ≥ 1 rows of one length T ≥ 1");
        }
        let c = &self.config;
        let start = cache.as_ref().map_or(0, |k| k.len);
        if start + t > c.context {
            candle_core::bail!("{} tokens exceed the context of {}", start + t, c.context);
        }
        let flat: Vec<u32> = tokens.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (b * t,), &self.device)?;
        let mut h = self
            .embedding
            .index_select(&ids, 0)?
            .reshape((b, t, c.d_model))?;
        let dtype = self.embedding.dtype();
        let rotation = Rotation::new(
            RopeTables::new(c.rope_base, c.head_dim, start, t),
            dtype,
            &self.device,
        )?;
        let pads = cache.as_ref().map_or(&[][..], |k| &k.pads[..]);
        let mask = causal_mask(start, t, pads, b, &self.device)?.to_dtype(dtype)?;
        for (i, l) in self.layers.iter().enumerate() {
            let mut proj = |target: Target, x: &Tensor, w: &Tensor| match lora.as_deref_mut() {
                Some(ad) => ad.linear(i, target, x, w),
                None => frozen_linear(x, w),
            };
            let a = rms_norm(&h, &l.attn_norm, c.rms_eps)?;
            let kv = cache.as_deref_mut().map(|k| &mut k.layers[i]);
            let att = self.attention(l, &a, (&rotation, &mask), kv, &mut proj)?;
            h = (h + att)?;
            let f = rms_norm(&h, &l.ffn_norm, c.rms_eps)?;
            let gate = proj(Target::Gate, &f, &l.w_gate)?.silu()?;
            let up = proj(Target::Up, &f, &l.w_up)?;
            h = (h + proj(Target::Down, &(gate * up)?, &l.w_down)?)?;
        }
        if let Some(k) = cache {
            k.len += t;
        }
        rms_norm(&h, &self.out_norm, c.rms_eps)
    }

    /// log π(completion | prompt) of each row at temperature `tau`, as a
    /// [B] tensor on the graph: rows are (prompt ++ completion, prompt
    /// length), teacher-forced in one right-padded pass (causal attention
    /// never lets a real position read the padding after it). Only the
    /// positions that predict a completion token go through the output
    /// projection.
    pub fn completion_log_probs(
        &self,
        rows: &[(Vec<u32>, usize)],
        tau: f64,
        lora: Option<&mut Adapted>,
    ) -> Result<Tensor> {
        (|| -> candle_core::Result<Tensor> {
            let width = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
            if rows.is_empty() || rows.iter().any(|(s, p)| *p == 0 || *p >= s.len()) {
                candle_core::bail!("every row needs a prompt and at least one completion token");
            }
            let padded: Vec<Vec<u32>> = rows
                .iter()
                .map(|(s, _)| {
                    let mut r = s.clone();
                    r.resize(width, 0);
                    r
                })
                .collect();
            let h = self.hidden(&padded, None, lora)?;
            let d = self.config.d_model;
            let h = h.reshape((rows.len() * width, d))?;
            // Position j of row r predicts token j + 1.
            let (mut at, mut targets, mut owner) = (Vec::new(), Vec::new(), Vec::new());
            for (r, (s, p)) in rows.iter().enumerate() {
                for j in p - 1..s.len() - 1 {
                    at.push((r * width + j) as u32);
                    targets.push(s[j + 1]);
                    owner.push(r);
                }
            }
            let n = at.len();
            let at = Tensor::from_vec(at, n, &self.device)?;
            let picked = h.index_select(&at, 0)?;
            let logits = (frozen_linear(&picked, &self.output)? / tau)?;
            let targets = Tensor::from_vec(targets, n, &self.device)?;
            let lp = crate::policy::transformer::kernels::token_log_probs(&logits, &targets)?;
            // Row sums: S [B, n] with S[r, k] = 1 where position k is row r's.
            let mut s = vec![0f32; rows.len() * n];
            for (k, &r) in owner.iter().enumerate() {
                s[r * n + k] = 1.0;
            }
            let s = Tensor::from_vec(s, (rows.len(), n), &self.device)?.to_dtype(lp.dtype())?;
            s.matmul(&lp.unsqueeze(1)?)?.squeeze(1)
        })()
        .map_err(ce)
    }

    /// `rotation`: RoPE's angles, and the causal mask; `proj`: each
    /// linear map of the block, by target (with its adapter, if any).
    fn attention(
        &self,
        l: &Layer,
        a: &Tensor,
        (rotation, mask): (&Rotation, &Tensor),
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        proj: &mut impl FnMut(Target, &Tensor, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = a.dims3()?;
        let dh = c.head_dim;
        let mut qkv = [
            proj(Target::Q, a, &l.wq)?,
            proj(Target::K, a, &l.wk)?,
            proj(Target::V, a, &l.wv)?,
        ];
        if let Some(bias) = &l.qkv_bias {
            for (x, b) in qkv.iter_mut().zip(bias) {
                *x = x.broadcast_add(b)?;
            }
        }
        let [q, k, v] = qkv;
        let heads = |x: Tensor, n: usize| x.reshape((b, t, n, dh))?.transpose(1, 2);
        let (mut q, mut k) = (heads(q, c.heads)?, heads(k, c.kv_heads)?);
        if let Some([qn, kn]) = &l.qk_norm {
            q = rms_norm(&q, qn, c.rms_eps)?;
            k = rms_norm(&k, kn, c.rms_eps)?;
        }
        let q = rope(&q, rotation, c.rope_pairs)?;
        let mut k = rope(&k, rotation, c.rope_pairs)?;
        let mut v = heads(v, c.kv_heads)?;
        let cache_free = cache.is_none();
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let rep = c.heads / c.kv_heads;
        let y = if cache_free && mask.rank() == 2 && a.device().is_cpu() {
            // Training and scoring: no cache and no padding before a real
            // position, so the causal mask alone; one fused node (softmax
            // and its gradient in place of five primitives and their
            // buffers), keys and values repeated for their query heads
            // (head g·rep + r reads key/value head g).
            let expand = |x: Tensor| -> candle_core::Result<Tensor> {
                if rep == 1 {
                    return x.contiguous();
                }
                x.unsqueeze(2)?
                    .broadcast_as((b, c.kv_heads, rep, t, dh))?
                    .contiguous()?
                    .reshape((b, c.heads, t, dh))
            };
            crate::policy::transformer::kernels::attention(
                &q,
                &expand(k)?,
                &expand(v)?,
                1.0 / (dh as f64).sqrt(),
            )?
        } else {
            self.masked_attention(&q, &k, &v, mask)?
        };
        let y = y.transpose(1, 2)?.reshape((b, t, c.q_width()))?;
        proj(Target::O, &y, &l.wo)
    }

    /// softmax(q kᵀ/√d + mask) v for q [B, heads, T, d], k and v
    /// [B, kv_heads, total, d], any mask of [`causal_mask`]'s.
    fn masked_attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, _, t, dh) = q.dims4()?;
        // Grouped-query attention without copying keys and values per
        // query head: query head h = g·rep + r uses key/value head g, so
        // the rep query heads of group g (× T positions) are the rows of
        // one matmul with that group's keys.
        let rep = c.heads / c.kv_heads;
        let total = k.dim(2)?;
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let q = q.contiguous()?.reshape((b, c.kv_heads, rep * t, dh))?;
        let scores = (q.matmul(&k.t()?)? / (dh as f64).sqrt())?;
        // The mask is per (row,) query position and key: broadcast over
        // the group's heads.
        let scores = scores.reshape((b, c.kv_heads, rep, t, total))?;
        let mask = match mask.rank() {
            2 => mask.clone(),
            _ => mask.unsqueeze(1)?, // [B, 1, 1, T, total]
        };
        let p = softmax_last(&scores.broadcast_add(&mask)?)?;
        p.reshape((b, c.kv_heads, rep * t, total))?
            .matmul(&v)?
            .reshape((b, c.heads, t, dh))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty key/value cache for this model.
    pub fn cache(&self) -> Cache {
        Cache {
            len: 0,
            layers: vec![None; self.layers.len()],
            pads: Vec::new(),
        }
    }
}

/// Keys and values of the positions seen so far, per layer:
/// [B, kv_heads, len, d_h] (before the heads are repeated).
#[derive(Clone)]
pub struct Cache {
    len: usize,
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per row, how many leading positions are left padding (empty: none).
    pads: Vec<usize>,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The cache of rows `rows` (in that order, repeats allowed).
    pub fn select_rows(&self, rows: &[u32]) -> Result<Cache> {
        let device = self
            .layers
            .iter()
            .flatten()
            .next()
            .map(|(k, _)| k.device().clone())
            .unwrap_or(Device::Cpu);
        let at = Tensor::new(rows, &device).map_err(ce)?;
        let layers = self
            .layers
            .iter()
            .map(|kv| {
                kv.as_ref()
                    .map(|(k, v)| -> candle_core::Result<(Tensor, Tensor)> {
                        Ok((
                            k.contiguous()?.index_select(&at, 0)?,
                            v.contiguous()?.index_select(&at, 0)?,
                        ))
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()
            .map_err(ce)?;
        let pads = if self.pads.is_empty() {
            Vec::new()
        } else {
            rows.iter().map(|&r| self.pads[r as usize]).collect()
        };
        Ok(Cache {
            len: self.len,
            layers,
            pads,
        })
    }

    /// An empty cache for a prefill of rows whose first `pads[r]` tokens
    /// are left padding.
    pub fn with_padding(mut self, pads: Vec<usize>) -> Cache {
        self.pads = pads;
        self
    }
}

/// x / √(mean(x²) + ε) · w over the last dimension.
/// RMSNorm over the last dimension: one fused node on the CPU
/// ([`super::fused`]), else [`rms_norm_primitive`].
fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() {
        super::fused::rms_norm(x, w, eps)
    } else {
        rms_norm_primitive(x, w, eps)
    }
}

/// x / √(mean(x²) + ε) ⊙ w from differentiable primitives.
pub(crate) fn rms_norm_primitive(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// Softmax over the last dimension from exp and sums (the max is a
/// constant shift, detached).
fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Query i (position start + i) may attend to key j ≤ start + i: 0
/// there, −∞ elsewhere; [T, start + T], or, with per-row left padding
/// (`pads[r]` positions of row r are padding), [B, 1, T, start + T] where
/// no real query sees a padding key (a padding query sees itself only, so
/// its softmax stays finite).
fn causal_mask(
    start: usize,
    t: usize,
    pads: &[usize],
    b: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let total = start + t;
    let visible = |pad: usize, i: usize, j: usize| j <= start + i && (j >= pad || j == start + i);
    let rows = if pads.iter().all(|&p| p == 0) { 1 } else { b };
    let mut m = Vec::with_capacity(rows * t * total);
    for r in 0..rows {
        let pad = pads.get(r).copied().unwrap_or(0);
        for i in 0..t {
            m.extend((0..total).map(|j| {
                if visible(pad, i, j) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                }
            }));
        }
    }
    if rows == 1 {
        Tensor::from_vec(m, (t, total), device)
    } else {
        Tensor::from_vec(m, (rows, 1, t, total), device)
    }
}

/// Rotates each pair of the last dimension of x [B, H, T, d_h] by its
/// position's angle: pairs (x₂ᵢ, x₂ᵢ₊₁) or (xᵢ, xᵢ₊d_h/2), as `pairs` says;
/// pair i turns by position × frequency i either way.
fn rope(x: &Tensor, rotation: &Rotation, pairs: RopePairs) -> candle_core::Result<Tensor> {
    match rotation {
        Rotation::Fused(tables) => super::fused::rope(x, tables, pairs),
        Rotation::Primitive(cos, sin) => rope_primitive(x, cos, sin, pairs),
    }
}

/// RoPE's angles for one forward pass, in the form its device applies:
/// one fused node on the CPU ([`super::fused`]), else cos and sin tensors
/// for [`rope_primitive`] (made once per pass, not per layer).
enum Rotation {
    Fused(RopeTables),
    Primitive(Tensor, Tensor),
}

impl Rotation {
    fn new(
        tables: RopeTables,
        dtype: candle_core::DType,
        device: &Device,
    ) -> candle_core::Result<Rotation> {
        if device.is_cpu() {
            Ok(Rotation::Fused(tables))
        } else {
            let (cos, sin) = tables.tensors(dtype, device)?;
            Ok(Rotation::Primitive(cos, sin))
        }
    }
}

/// [`rope`] from differentiable primitives; `cos` and `sin` [T, d_h/2, 1].
pub(crate) fn rope_primitive(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    pairs: RopePairs,
) -> candle_core::Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    // [B, H, T, d_h/2, 2] with pair i at [.., i, 0..2]; halves are first
    // laid out as [B, H, T, 2, d_h/2] and read transposed.
    let split = match pairs {
        RopePairs::Interleaved => x.reshape((b, h, t, dh / 2, 2))?,
        RopePairs::Halves => x.reshape((b, h, t, 2, dh / 2))?.transpose(3, 4)?,
    };
    let x0 = split.narrow(D::Minus1, 0, 1)?;
    let x1 = split.narrow(D::Minus1, 1, 1)?;
    let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    match pairs {
        RopePairs::Interleaved => Tensor::cat(&[r0, r1], D::Minus1)?.reshape((b, h, t, dh)),
        RopePairs::Halves => Tensor::cat(&[r0, r1], D::Minus1)?
            .transpose(3, 4)?
            .contiguous()?
            .reshape((b, h, t, dh)),
    }
}
