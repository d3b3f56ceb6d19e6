//! The decoder's RMSNorm and RoPE as single candle nodes on the CPU, each
//! with its backward pass (candle 0.11's own fused `rms_norm` and `rope`
//! record none, so gradients would stop there; composed from primitives
//! they cost ten passes and buffers each way). Other devices use the
//! primitive forms in [`super::llama`], which the tests compare these
//! against.
//!
//!   RMSNorm, per row x of width d, weight w:
//!     r = (mean(x²) + ε)^(−1/2),  y = x · r ⊙ w
//!     g = dy ⊙ w:  dx = r·g − x · r³ · mean(g ⊙ x),  dw = Σ_rows dy ⊙ x·r
//!
//!   RoPE, per position p and pair i (entries a, b of the pair):
//!     (a, b) ↦ (a cos θ − b sin θ, a sin θ + b cos θ),  θ = p·base^(−2i/d)
//!     its backward is the rotation by −θ.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::config::RopePairs;
use crate::policy::transformer::kernels::{Real, binary, rows, ternary, unary};

type R<T> = candle_core::Result<T>;

// ---- RMSNorm ----------------------------------------------------------------

/// y = RMSNorm(x) ⊙ w over the last dimension (module docs), for x
/// [.., d] and w [d].
pub(super) fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> R<Tensor> {
    x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps })
}

/// (x, w) → y.
struct RmsNorm {
    eps: f64,
}

/// Per row: 1 / √(mean(x²) + ε).
fn inv_rms<T: Real>(x: &[T], eps: f64) -> f64 {
    let ss: f64 = x.iter().map(|v| v.f() * v.f()).sum();
    1.0 / (ss / x.len() as f64 + eps).sqrt()
}

fn rms_fwd<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = vec![T::of(0.0); x.len()];
    rows(&mut out, d, |r, o| {
        let row = &x[r * d..(r + 1) * d];
        let inv = inv_rms(row, eps);
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = T::of(v.f() * inv * g.f());
        }
    });
    out
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let d = lw.shape().elem_count();
        if lx.dims().last() != Some(&d) {
            candle_core::bail!("rms-norm: input {:?} does not end in {d}", lx.dims());
        }
        let out = binary!(sx, lx, sw, lw, self.name(), rms_fwd, self.eps);
        Ok((out, lx.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = x.apply_op3_no_bwd(w, &dy, &RmsNormGrad { eps: self.eps })?;
        // dw = Σ_rows dy ⊙ x·r: x·r is the forward with w = 1.
        let d = w.elem_count();
        let xhat = x.apply_op2_no_bwd(&w.ones_like()?, self)?;
        let dw = (dy * xhat)?.reshape(((), d))?.sum(0)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw)))
    }
}

/// (x, w, dy) → dx of RMSNorm (module docs).
struct RmsNormGrad {
    eps: f64,
}

fn rms_bwd<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let d = w.len();
    let mut out = vec![T::of(0.0); x.len()];
    rows(&mut out, d, |r, o| {
        let (row, drow) = (&x[r * d..(r + 1) * d], &dy[r * d..(r + 1) * d]);
        let inv = inv_rms(row, eps);
        let gx: f64 = drow
            .iter()
            .zip(w)
            .zip(row)
            .map(|((g, w), v)| g.f() * w.f() * v.f())
            .sum::<f64>()
            / d as f64;
        let c = inv * inv * inv * gx;
        for (((o, &v), &g), &wv) in o.iter_mut().zip(row).zip(drow).zip(w) {
            *o = T::of(inv * g.f() * wv.f() - v.f() * c);
        }
    });
    out
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let out = ternary!(sx, lx, sw, lw, sd, ld, self.name(), rms_bwd, self.eps);
        Ok((out, lx.shape().clone()))
    }
}

// ---- RoPE -------------------------------------------------------------------

/// cos θ and sin θ for positions start..start + t and pairs 0..d/2,
/// [t][d/2] row-major (module docs).
#[derive(Clone, Debug)]
pub(super) struct RopeTables {
    cos: Arc<Vec<f64>>,
    sin: Arc<Vec<f64>>,
    half: usize,
}

impl RopeTables {
    pub(super) fn new(base: f64, head_dim: usize, start: usize, t: usize) -> RopeTables {
        let half = head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in start..start + t {
            for i in 0..half {
                let angle = p as f64 * base.powf(-2.0 * i as f64 / head_dim as f64);
                // Rounded to f32 in every dtype, as the primitive form's
                // tables are.
                cos.push(f64::from(angle.cos() as f32));
                sin.push(f64::from(angle.sin() as f32));
            }
        }
        RopeTables {
            cos: Arc::new(cos),
            sin: Arc::new(sin),
            half,
        }
    }

    /// The tables as [t, d/2, 1] tensors in `dtype` (the primitive form's).
    pub(super) fn tensors(
        &self,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> R<(Tensor, Tensor)> {
        let t = self.cos.len() / self.half.max(1);
        let as_t = |v: &[f64]| {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Tensor::from_vec(f, (t, self.half, 1), device)?.to_dtype(dtype)
        };
        Ok((as_t(&self.cos)?, as_t(&self.sin)?))
    }
}

/// x [B, H, T, d] rotated by its positions' angles (module docs).
pub(super) fn rope(x: &Tensor, tables: &RopeTables, pairs: RopePairs) -> R<Tensor> {
    x.contiguous()?.apply_op1(Rope {
        tables: tables.clone(),
        pairs,
        inverse: false,
    })
}

struct Rope {
    tables: RopeTables,
    pairs: RopePairs,
    /// Rotate by −θ (the backward pass).
    inverse: bool,
}

fn rope_fwd<T: Real>(
    x: &[T],
    tab: &RopeTables,
    t: usize,
    pairs: RopePairs,
    inverse: bool,
) -> Vec<T> {
    let half = tab.half;
    let d = 2 * half;
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut out = vec![T::of(0.0); x.len()];
    rows(&mut out, d, |r, o| {
        let p = r % t;
        let row = &x[r * d..(r + 1) * d];
        let (cos, sin) = (
            &tab.cos[p * half..(p + 1) * half],
            &tab.sin[p * half..(p + 1) * half],
        );
        for i in 0..half {
            let (ia, ib) = match pairs {
                RopePairs::Interleaved => (2 * i, 2 * i + 1),
                RopePairs::Halves => (i, i + half),
            };
            let (c, s) = (cos[i], sign * sin[i]);
            let (a, b) = (row[ia].f(), row[ib].f());
            o[ia] = T::of(a * c - b * s);
            o[ib] = T::of(a * s + b * c);
        }
    });
    out
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let (_, _, t, d) = l.shape().dims4()?;
        if d != 2 * self.tables.half || self.tables.cos.len() != t * self.tables.half {
            candle_core::bail!(
                "rope: input {:?} does not match tables of {} positions",
                l.dims(),
                self.tables.cos.len() / self.tables.half.max(1)
            );
        }
        let (tab, pairs, inverse) = (&self.tables, self.pairs, self.inverse);
        let out = unary!(s, l, self.name(), rope_fwd, tab, t, pairs, inverse);
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
        Ok(Some(dy.contiguous()?.apply_op1(Rope {
            tables: self.tables.clone(),
            pairs: self.pairs,
            inverse: !self.inverse,
        })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrained::llama::{rms_norm_primitive, rope_primitive};
    use candle_core::{DType, Device, Var};

    fn random(shape: &[usize], seed: u64) -> Var {
        use rand::RngExt;
        let mut rng = crate::rng::stream(seed, 0);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.5..1.5)).collect();
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    fn max_gap(a: &Tensor, b: &Tensor) -> f64 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// In f64, each fused node gives the primitive form's values and, for a
    /// random cotangent, its gradients (every input's), to round-off; in
    /// both pairings of RoPE and with a position offset.
    #[test]
    fn the_fused_nodes_equal_the_primitive_forms_and_their_gradients() {
        let x = random(&[2, 3, 5, 8], 1);
        let w = random(&[8], 2);
        let dy = random(&[2, 3, 5, 8], 3);
        let loss = |y: Tensor| (y * dy.as_tensor()).unwrap().sum_all().unwrap();
        let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        let prim = rms_norm_primitive(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
        assert!(
            max_gap(&fused, &prim) < crate::tolerance::EXACT_ABS,
            "rms-norm values"
        );
        let (gf, gp) = (
            loss(fused).backward().unwrap(),
            loss(prim).backward().unwrap(),
        );
        for v in [&x, &w] {
            let gap = max_gap(
                gf.get(v.as_tensor()).unwrap(),
                gp.get(v.as_tensor()).unwrap(),
            );
            assert!(
                gap < crate::tolerance::EXACT_ABS,
                "rms-norm gradient differs by {gap}"
            );
        }
        for pairs in [RopePairs::Interleaved, RopePairs::Halves] {
            let tables = RopeTables::new(10_000.0, 8, 3, 5);
            let (cos, sin) = tables.tensors(DType::F64, &Device::Cpu).unwrap();
            let fused = rope(x.as_tensor(), &tables, pairs).unwrap();
            let prim = rope_primitive(x.as_tensor(), &cos, &sin, pairs).unwrap();
            assert!(
                max_gap(&fused, &prim) < crate::tolerance::EXACT_ABS,
                "rope values ({pairs:?})"
            );
            let (gf, gp) = (
                loss(fused).backward().unwrap(),
                loss(prim).backward().unwrap(),
            );
            let gap = max_gap(
                gf.get(x.as_tensor()).unwrap(),
                gp.get(x.as_tensor()).unwrap(),
            );
            assert!(
                gap < crate::tolerance::EXACT_ABS,
                "rope gradient ({pairs:?}) differs by {gap}"
            );
        }
    }
}
