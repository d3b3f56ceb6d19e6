//! Fused CPU kernels with hand-written backward passes for the three
//! element-wise pieces of the decoder that dominate a training step when
//! written from candle primitives (each primitive allocates a tensor and
//! records a backward node; GELU's built-in backward calls `powf` twice).
//!
//!   GELU (tanh form):  y = ½x(1 + tanh u),  u = c(x + 0.044715x³), c = √(2/π)
//!                      y' = ½(1 + tanh u) + ½x(1 − tanh²u)·c(1 + 3·0.044715x²)
//!   normalise (last dim, n entries):  x̂ = (x − μ)/σ,  σ = √(var + ε)
//!                      dx = (dy − mean(dy) − x̂·mean(dy ⊙ x̂)) / σ
//!   softmax (last dim): y = e^{x − max} / Σ e^{x − max}
//!                      dx = y ⊙ (dy − Σ dy ⊙ y)
//!
//! Each is a candle `CustomOp` on the CPU; other devices (the `cuda`
//! feature) use the same formulas composed from differentiable candle
//! primitives. The finite-difference and every-parameter-gets-a-gradient
//! tests of the transformer run through these kernels in f64.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, D, Layout, Shape, Tensor};
use rayon::prelude::*;

type R<T> = candle_core::Result<T>;

/// Below this many elements a kernel runs on one thread (the policy's
/// per-state passes are tiny; threads would cost more than they save).
const PARALLEL_MIN: usize = 1 << 15;

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_A: f64 = 0.044_715;

trait Real: Copy + Send + Sync + 'static {
    fn f(self) -> f64;
    fn of(x: f64) -> Self;
    /// exp in the storage's precision (f32's is several times cheaper).
    fn exp_(self) -> Self;
    /// tanh u = 1 − 2/(e^{2u} + 1): one exp instead of libm's tanh (which
    /// calls expm1 and dominated the training step); exact at ±∞, absolute
    /// error at the type's epsilon near 0.
    fn tanh_(self) -> Self {
        Self::of(1.0 - 2.0 / (Self::of(2.0 * self.f()).exp_().f() + 1.0))
    }
}
impl Real for f32 {
    fn f(self) -> f64 {
        self as f64
    }
    fn of(x: f64) -> Self {
        x as f32
    }
    fn exp_(self) -> Self {
        self.exp()
    }
}
impl Real for f64 {
    fn f(self) -> f64 {
        self
    }
    fn of(x: f64) -> Self {
        x
    }
    fn exp_(self) -> Self {
        self.exp()
    }
}

fn slice<'a, T>(v: &'a [T], l: &Layout, op: &str) -> R<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Applies `f` to rows of `width` (`out` and inputs row-aligned), in
/// parallel when the tensor is large.
fn rows<T: Real>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() >= PARALLEL_MIN {
        out.par_chunks_mut(width)
            .enumerate()
            .for_each(|(i, r)| f(i, r));
    } else {
        out.chunks_mut(width).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// Dispatches a one-input kernel over f32/f64 storage.
macro_rules! unary {
    ($s:expr, $l:expr, $op:expr, $k:ident $(, $arg:expr)*) => {
        match $s {
            CpuStorage::F32(v) => CpuStorage::F32($k(slice(v, $l, $op)?, $($arg),*)),
            CpuStorage::F64(v) => CpuStorage::F64($k(slice(v, $l, $op)?, $($arg),*)),
            _ => candle_core::bail!("{}: f32 or f64 only", $op),
        }
    };
}

/// Dispatches a two-input kernel (same dtype) over f32/f64 storage.
macro_rules! binary {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $op:expr, $k:ident $(, $arg:expr)*) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32($k(slice(a, $l1, $op)?, slice(b, $l2, $op)?, $($arg),*))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64($k(slice(a, $l1, $op)?, slice(b, $l2, $op)?, $($arg),*))
            }
            _ => candle_core::bail!("{}: f32 or f64, both the same", $op),
        }
    };
}

// ---- GELU ------------------------------------------------------------------

fn gelu_fwd<T: Real>(x: &[T]) -> Vec<T> {
    let mut out = x.to_vec();
    let w = out.len().clamp(1, 4096);
    rows(&mut out, w, |_, r| {
        for v in r {
            let x = v.f();
            let t = T::of(GELU_C * (x + GELU_A * x * x * x)).tanh_().f();
            *v = T::of(0.5 * x * (1.0 + t));
        }
    });
    out
}

fn gelu_bwd<T: Real>(x: &[T], dy: &[T]) -> Vec<T> {
    let mut out = dy.to_vec();
    let w = out.len().clamp(1, 4096);
    rows(&mut out, w, |i, r| {
        for (j, v) in r.iter_mut().enumerate() {
            let x = x[i * w + j].f();
            let t = T::of(GELU_C * (x + GELU_A * x * x * x)).tanh_().f();
            let d =
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
            *v = T::of(v.f() * d);
        }
    });
    out
}

struct Gelu;
struct GeluGrad;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        Ok((unary!(s, l, self.name(), gelu_fwd), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluGrad)?))
    }
}

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        Ok((
            binary!(s1, l1, s2, l2, self.name(), gelu_bwd),
            l1.shape().clone(),
        ))
    }
}

/// GELU, tanh form.
pub fn gelu(x: &Tensor) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Gelu)
    } else {
        gelu_primitive(x)
    }
}

/// The same from primitives (candle's own `gelu` rounds √(2/π) to six
/// digits, so it is composed here).
fn gelu_primitive(x: &Tensor) -> R<Tensor> {
    let cube = (x * x)?.mul(x)?;
    let u = ((x + (cube * GELU_A)?)? * GELU_C)?;
    (x * 0.5)? * (u.tanh()? + 1.0)?
}

// ---- normalisation over the last dimension --------------------------------

fn normalize_fwd<T: Real>(x: &[T], n: usize, eps: f64) -> Vec<T> {
    let mut out = x.to_vec();
    rows(&mut out, n, |_, r| {
        let mean = r.iter().map(|v| v.f()).sum::<f64>() / n as f64;
        let var = r.iter().map(|v| (v.f() - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        for v in r {
            *v = T::of((v.f() - mean) * inv);
        }
    });
    out
}

/// From x (to recompute σ) and x̂ (the forward's result), dy.
fn normalize_bwd<T: Real>(x: &[T], xhat_dy: &[T], n: usize, eps: f64) -> Vec<T> {
    // `xhat_dy` holds x̂ rows followed by dy rows (one input of two halves).
    let half = xhat_dy.len() / 2;
    let (xhat, dy) = xhat_dy.split_at(half);
    let mut out = vec![T::of(0.0); half];
    rows(&mut out, n, |i, r| {
        let xs = &x[i * n..(i + 1) * n];
        let mean = xs.iter().map(|v| v.f()).sum::<f64>() / n as f64;
        let var = xs.iter().map(|v| (v.f() - mean).powi(2)).sum::<f64>() / n as f64;
        let inv = 1.0 / (var + eps).sqrt();
        let (xh, g) = (&xhat[i * n..(i + 1) * n], &dy[i * n..(i + 1) * n]);
        let mean_g = g.iter().map(|v| v.f()).sum::<f64>() / n as f64;
        let mean_gx = g.iter().zip(xh).map(|(a, b)| a.f() * b.f()).sum::<f64>() / n as f64;
        for (j, v) in r.iter_mut().enumerate() {
            *v = T::of((g[j].f() - mean_g - xh[j].f() * mean_gx) * inv);
        }
    });
    out
}

struct Normalize {
    eps: f64,
}
struct NormalizeGrad {
    eps: f64,
}

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let n = *l.dims().last().unwrap_or(&1);
        Ok((
            unary!(s, l, self.name(), normalize_fwd, n, self.eps),
            l.shape().clone(),
        ))
    }
    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
        let both = Tensor::cat(&[y, &dy.contiguous()?], 0)?;
        Ok(Some(x.apply_op2_no_bwd(
            &both,
            &NormalizeGrad { eps: self.eps },
        )?))
    }
}

impl CustomOp2 for NormalizeGrad {
    fn name(&self) -> &'static str {
        "normalize-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let n = *l1.dims().last().unwrap_or(&1);
        Ok((
            binary!(s1, l1, s2, l2, self.name(), normalize_bwd, n, self.eps),
            l1.shape().clone(),
        ))
    }
}

/// (x − mean)/√(var + ε) over the last dimension.
pub fn normalize(x: &Tensor, eps: f64) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Normalize { eps })
    } else {
        normalize_primitive(x, eps)
    }
}

fn normalize_primitive(x: &Tensor, eps: f64) -> R<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)
}

// ---- softmax over the last dimension --------------------------------------

fn softmax_fwd<T: Real>(x: &[T], n: usize) -> Vec<T> {
    let mut out = x.to_vec();
    rows(&mut out, n, |_, r| {
        let max = r.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.f()));
        let mut total = 0.0;
        for v in r.iter_mut() {
            let e = T::of(v.f() - max).exp_().f();
            total += e;
            *v = T::of(e);
        }
        for v in r {
            *v = T::of(v.f() / total);
        }
    });
    out
}

fn softmax_bwd<T: Real>(y: &[T], dy: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::of(0.0); y.len()];
    rows(&mut out, n, |i, r| {
        let (y, g) = (&y[i * n..(i + 1) * n], &dy[i * n..(i + 1) * n]);
        let dot: f64 = y.iter().zip(g).map(|(a, b)| a.f() * b.f()).sum();
        for (j, v) in r.iter_mut().enumerate() {
            *v = T::of(y[j].f() * (g[j].f() - dot));
        }
    });
    out
}

struct Softmax;
struct SoftmaxGrad;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-last"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let n = *l.dims().last().unwrap_or(&1);
        Ok((unary!(s, l, self.name(), softmax_fwd, n), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-last-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let n = *l1.dims().last().unwrap_or(&1);
        Ok((
            binary!(s1, l1, s2, l2, self.name(), softmax_bwd, n),
            l1.shape().clone(),
        ))
    }
}

/// softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        softmax_primitive(x)
    }
}

fn softmax_primitive(x: &Tensor) -> R<Tensor> {
    // The max is a constant shift (softmax is shift-invariant): detached.
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Each kernel's value and gradient against the primitive composition
    /// (the form other devices use), in f64.
    #[test]
    fn kernels_match_the_primitive_forms_and_their_gradients() {
        let dev = Device::Cpu;
        let data: Vec<f64> = (0..60)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) * 0.31)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(data, (3, 4, 5), &dev).unwrap()).unwrap();
        let weights = Tensor::from_vec(
            (0..60)
                .map(|i| (i as f64 * 0.7).sin())
                .collect::<Vec<f64>>(),
            (3, 4, 5),
            &dev,
        )
        .unwrap();
        type F = fn(&Tensor) -> R<Tensor>;
        let cases: [(&str, F, F); 3] = [
            ("gelu", gelu, gelu_primitive),
            (
                "normalize",
                |x| normalize(x, 1e-5),
                |x| normalize_primitive(x, 1e-5),
            ),
            ("softmax", softmax_last, softmax_primitive),
        ];
        for (name, fused, primitive) in cases {
            let run = |f: F| {
                let y = f(x.as_tensor()).unwrap();
                let loss = (&y * &weights).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap();
                let gx: Vec<f64> = g
                    .get(x.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                (y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), gx)
            };
            let (ya, ga) = run(fused);
            let (yb, gb) = run(primitive);
            for (a, b) in ya.iter().zip(&yb).chain(ga.iter().zip(&gb)) {
                assert!((a - b).abs() < 1e-9 * (1.0 + b.abs()), "{name}: {a} vs {b}");
            }
        }
    }
}
