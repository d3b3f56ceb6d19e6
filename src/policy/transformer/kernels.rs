//! Fused CPU kernels with hand-written backward passes for the
//! element-wise pieces of the decoder that dominate a training step when
//! written from candle primitives (each primitive allocates a tensor and
//! records a backward node, broadcasts are reduced back by strided sums,
//! and GELU's built-in backward calls `powf` twice).
//!
//!   GELU (tanh form):  y = ½x(1 + tanh u),  u = c(x + 0.044715x³), c = √(2/π)
//!                      y' = ½(1 + tanh u) + ½x(1 − tanh²u)·c(1 + 3·0.044715x²)
//!                      (applied to x + b with the bias fused in: db = Σ_rows dx)
//!   layer norm (last dim, n entries):  y = g ⊙ x̂ + b,  x̂ = (x − μ)/σ,  σ = √(var + ε)
//!                      dx = (ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)) / σ  with ĝ = g ⊙ dy,
//!                      dg = Σ_rows dy ⊙ x̂,  db = Σ_rows dy
//!   bias:              y = x + b (per row),  db = Σ_rows dy
//!   causal softmax (scores of t queries against p + t keys, scaled by s):
//!                      y_ij = e^{s x_ij} / Σ_{k ≤ p+i} e^{s x_ik} for j ≤ p + i, else 0
//!                      dx = s · y ⊙ (dy − Σ dy ⊙ y)
//!   attention (q: t queries, k, v: p + t keys and values, per batch and head):
//!                      P = causal-softmax(q kᵀ),  o = P v
//!                      dv = Pᵀ do,  dS = s · P ⊙ (dP − Σ dP ⊙ P) with dP = do vᵀ,
//!                      dq = dS k,  dk = dSᵀ q
//!
//!   token log-probability (rows of V logits z, target c):
//!                      y = z_c − log Σ_v e^{z_v},  dz_v = dy · (1[v = c] − softmax(z)_v)
//!
//! Attention is one node rather than five (two matmuls, a transpose, the
//! softmax, and their gradient buffers): its forward keeps P for the
//! backward pass, which then needs four matmuls and one softmax gradient
//! and no zero-filled accumulators for scores-sized tensors.
//!
//! Each is a candle `CustomOp` on the CPU; other devices (the `cuda`
//! feature) use the same formulas composed from differentiable candle
//! primitives. The finite-difference and every-parameter-gets-a-gradient
//! tests of the transformer run through these kernels in f64.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::simd::widest;

type R<T> = candle_core::Result<T>;

/// Below this many elements a kernel runs on one thread (the policy's
/// per-state passes are tiny; threads would cost more than they save).
const PARALLEL_MIN: usize = 1 << 15;

const GELU_C: f64 = 0.797_884_560_802_865_4; // √(2/π)
const GELU_A: f64 = 0.044_715;

/// The element types the kernels run in: f32 (training, sampling) and
/// f64 (verification). Also the pretrained model's fused nodes' type.
pub(crate) trait Real:
    Copy
    + Send
    + Sync
    + 'static
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
{
    fn f(self) -> f64;
    fn of(x: f64) -> Self;
    /// exp in the storage's precision (f32's is several times cheaper).
    fn exp_(self) -> Self;
    /// tanh in the storage's precision: libm's in f64 (verification);
    /// in f32 a branch-free rational approximation the compiler vectorises
    /// (libm's scalar tanh call dominated the f32 training step).
    fn tanh_(self) -> Self;
}
impl Real for f32 {
    #[inline(always)]
    fn f(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        self.exp()
    }
    /// tanh x ≈ x·P(x²)/Q(x²) on |x| ≤ 7.9053 (where f32 tanh rounds to
    /// ±1), P of degree 6 and Q of degree 3 in x²: the minimax
    /// coefficients Eigen publishes for its float tanh (error within a few
    /// ulp; `f32_tanh_is_accurate` checks it against libm).
    #[inline(always)]
    fn tanh_(self) -> Self {
        const A: [f32; 7] = [
            -2.760_768_5e-16,
            2.000_188e-13,
            -8.604_672e-11,
            5.122_297e-8,
            1.485_722_4e-5,
            6.372_619e-4,
            4.893_524_6e-3,
        ];
        const B: [f32; 4] = [1.198_258_4e-6, 1.185_347e-4, 2.268_434_6e-3, 4.893_525e-3];
        let x = self.clamp(-7.905_311, 7.905_311);
        let x2 = x * x;
        let p = A.iter().fold(0.0, |acc, &a| acc * x2 + a) * x;
        let q = B.iter().fold(0.0, |acc, &b| acc * x2 + b);
        p / q
    }
}
impl Real for f64 {
    #[inline(always)]
    fn f(self) -> f64 {
        self
    }
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn tanh_(self) -> Self {
        self.tanh()
    }
}

/// The elements of a contiguous storage under its layout.
pub(crate) fn slice<'a, T>(v: &'a [T], l: &Layout, op: &str) -> R<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Applies `f` to rows of `width` (`out` and inputs row-aligned), in
/// parallel when the tensor is large (also the pretrained model's fused
/// nodes' loop).
pub(crate) fn rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
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
    ($s:expr, $l:expr, $op:expr, $k:ident $(, $arg:expr)*) => {{
        use $crate::policy::transformer::kernels::slice;
        use candle_core::CpuStorage;
        match $s {
            CpuStorage::F32(v) => CpuStorage::F32($k(slice(v, $l, $op)?, $($arg),*)),
            CpuStorage::F64(v) => CpuStorage::F64($k(slice(v, $l, $op)?, $($arg),*)),
            _ => candle_core::bail!("{}: f32 or f64 only", $op),
        }
    }};
}

/// Dispatches a two-input kernel (same dtype) over f32/f64 storage.
macro_rules! binary {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $op:expr, $k:ident $(, $arg:expr)*) => {{
        use $crate::policy::transformer::kernels::slice;
        use candle_core::CpuStorage;
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                CpuStorage::F32($k(slice(a, $l1, $op)?, slice(b, $l2, $op)?, $($arg),*))
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                CpuStorage::F64($k(slice(a, $l1, $op)?, slice(b, $l2, $op)?, $($arg),*))
            }
            _ => candle_core::bail!("{}: f32 or f64, both the same", $op),
        }
    }};
}

/// Dispatches a three-input kernel (same dtype) over f32/f64 storage.
macro_rules! ternary {
    ($s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, $op:expr, $k:ident $(, $arg:expr)*) => {{
        use $crate::policy::transformer::kernels::slice;
        use candle_core::CpuStorage;
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => CpuStorage::F32($k(
                slice(a, $l1, $op)?,
                slice(b, $l2, $op)?,
                slice(c, $l3, $op)?,
                $($arg),*
            )),
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => CpuStorage::F64($k(
                slice(a, $l1, $op)?,
                slice(b, $l2, $op)?,
                slice(c, $l3, $op)?,
                $($arg),*
            )),
            _ => candle_core::bail!("{}: f32 or f64, all the same", $op),
        }
    }};
}

// The dispatchers, for the pretrained model's fused nodes too.
pub(crate) use {binary, ternary, unary};

/// Column sums of rows of `width`: Σ_rows dy (a bias's or gain's gradient).
fn column_sums<T: Real>(dy: &[T], width: usize) -> Vec<f64> {
    let mut acc = vec![0.0; width];
    for row in dy.chunks(width) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v.f();
        }
    }
    acc
}

// ---- GELU ------------------------------------------------------------------

/// GELU(u) and its slope GELU'(u) (module docs), in the storage's precision.
#[inline(always)]
fn gelu_at<T: Real>(u: T) -> T {
    let (c, a, half, one) = (T::of(GELU_C), T::of(GELU_A), T::of(0.5), T::of(1.0));
    let t = (c * (u + a * u * u * u)).tanh_();
    half * u * (one + t)
}

#[inline(always)]
fn gelu_slope<T: Real>(u: T) -> T {
    let (c, a, half, one) = (T::of(GELU_C), T::of(GELU_A), T::of(0.5), T::of(1.0));
    let a3 = T::of(3.0 * GELU_A);
    let t = (c * (u + a * u * u * u)).tanh_();
    half * (one + t) + half * u * (one - t * t) * c * (one + a3 * u * u)
}

/// GELU(x + b) row by row (b: one entry per column).
pub(crate) fn bias_gelu_fwd<T: Real>(x: &[T], b: &[T]) -> Vec<T> {
    let mut out = vec![T::of(0.0); x.len()];
    let n = b.len();
    rows(&mut out, n, |i, r| {
        bias_gelu_row(r, &x[i * n..(i + 1) * n], b)
    });
    out
}

#[inline(always)]
fn bias_gelu_row_body<T: Real>(out: &mut [T], x: &[T], b: &[T]) {
    for ((o, &x), &b) in out.iter_mut().zip(x).zip(b) {
        *o = gelu_at(x + b);
    }
}

widest! {
    /// One row of [`bias_gelu_fwd`].
    fn bias_gelu_row<T: Real> = bias_gelu_row_body(out: &mut [T], x: &[T], b: &[T])
}

/// dy ⊙ GELU'(x + b): the gradient of the pre-activation (= dx; db is its
/// column sums).
fn bias_gelu_bwd<T: Real>(x: &[T], b: &[T], dy: &[T]) -> Vec<T> {
    let mut out = vec![T::of(0.0); x.len()];
    let n = b.len();
    rows(&mut out, n, |i, r| {
        let at = i * n..(i + 1) * n;
        bias_gelu_grad_row(r, &x[at.clone()], b, &dy[at]);
    });
    out
}

#[inline(always)]
fn bias_gelu_grad_row_body<T: Real>(out: &mut [T], x: &[T], b: &[T], dy: &[T]) {
    for (((o, &x), &b), &dy) in out.iter_mut().zip(x).zip(b).zip(dy) {
        *o = dy * gelu_slope(x + b);
    }
}

widest! {
    /// One row of [`bias_gelu_bwd`].
    fn bias_gelu_grad_row<T: Real> = bias_gelu_grad_row_body(out: &mut [T], x: &[T], b: &[T], dy: &[T])
}

struct BiasGelu;
struct BiasGeluGrad;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu-tanh"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        Ok((
            binary!(s1, l1, s2, l2, self.name(), bias_gelu_fwd),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>)> {
        let dz = x.apply_op3_no_bwd(b, &dy.contiguous()?, &BiasGeluGrad)?;
        let db = dz.apply_op1_no_bwd(&ColumnSums)?;
        Ok((Some(dz), Some(db)))
    }
}

impl CustomOp3 for BiasGeluGrad {
    fn name(&self) -> &'static str {
        "bias-gelu-tanh-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        Ok((
            ternary!(s1, l1, s2, l2, s3, l3, self.name(), bias_gelu_bwd),
            l1.shape().clone(),
        ))
    }
}

/// GELU(x + b), tanh form, b added to every row: the MLP's first layer
/// after its matmul, as one node (one pass forward, one backward).
pub fn bias_gelu(x: &Tensor, b: &Tensor) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op2(b, BiasGelu)
    } else {
        gelu_primitive(&x.broadcast_add(b)?)
    }
}

/// The same from primitives (candle's own `gelu` rounds √(2/π) to six
/// digits, so it is composed here).
fn gelu_primitive(x: &Tensor) -> R<Tensor> {
    let cube = (x * x)?.mul(x)?;
    let u = ((x + (cube * GELU_A)?)? * GELU_C)?;
    (x * 0.5)? * (u.tanh()? + 1.0)?
}

// ---- layer norm over the last dimension ----------------------------------

/// Mean and 1/σ of one row.
#[inline(always)]
fn moments<T: Real>(r: &[T], eps: f64) -> (f64, f64) {
    let n = r.len() as f64;
    let mean = r.iter().map(|v| v.f()).sum::<f64>() / n;
    let var = r.iter().map(|v| (v.f() - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

pub(crate) fn layer_norm_fwd<T: Real>(x: &[T], g: &[T], b: &[T], eps: f64) -> Vec<T> {
    let n = g.len();
    let mut out = x.to_vec();
    rows(&mut out, n, |_, r| layer_norm_row(r, g, b, eps));
    out
}

#[inline(always)]
fn layer_norm_row_body<T: Real>(r: &mut [T], g: &[T], b: &[T], eps: f64) {
    let (mean, inv) = moments(r, eps);
    for ((v, g), b) in r.iter_mut().zip(g).zip(b) {
        *v = T::of((v.f() - mean) * inv * g.f() + b.f());
    }
}

widest! {
    /// One row of [`layer_norm_fwd`], normalised in place.
    fn layer_norm_row<T: Real> = layer_norm_row_body(r: &mut [T], g: &[T], b: &[T], eps: f64)
}

fn layer_norm_dx<T: Real>(x: &[T], g: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let n = g.len();
    let mut out = vec![T::of(0.0); x.len()];
    rows(&mut out, n, |i, r| {
        let at = i * n..(i + 1) * n;
        layer_norm_dx_row(r, &x[at.clone()], g, &dy[at], eps);
    });
    out
}

#[inline(always)]
fn layer_norm_dx_row_body<T: Real>(out: &mut [T], xs: &[T], g: &[T], dys: &[T], eps: f64) {
    let n = g.len();
    let (mean, inv) = moments(xs, eps);
    let (mut m_g, mut m_gx) = (0.0, 0.0);
    for j in 0..n {
        let gh = g[j].f() * dys[j].f();
        m_g += gh;
        m_gx += gh * (xs[j].f() - mean) * inv;
    }
    let (m_g, m_gx) = (m_g / n as f64, m_gx / n as f64);
    for (j, v) in out.iter_mut().enumerate() {
        let xh = (xs[j].f() - mean) * inv;
        *v = T::of((g[j].f() * dys[j].f() - m_g - xh * m_gx) * inv);
    }
}

widest! {
    /// One row of [`layer_norm_dx`].
    fn layer_norm_dx_row<T: Real> = layer_norm_dx_row_body(out: &mut [T], xs: &[T], g: &[T], dys: &[T], eps: f64)
}

/// [dg; db] as one [2, n] tensor: Σ_rows dy ⊙ x̂ and Σ_rows dy.
fn layer_norm_dparams<T: Real>(x: &[T], dy: &[T], n: usize, eps: f64) -> Vec<T> {
    let mut dg = vec![0.0; n];
    for (xs, dys) in x.chunks(n).zip(dy.chunks(n)) {
        let (mean, inv) = moments(xs, eps);
        for j in 0..n {
            dg[j] += dys[j].f() * (xs[j].f() - mean) * inv;
        }
    }
    dg.into_iter()
        .chain(column_sums(dy, n))
        .map(T::of)
        .collect()
}

struct LayerNorm {
    eps: f64,
}
struct LayerNormDx {
    eps: f64,
}
struct LayerNormDparams {
    eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let out = ternary!(
            s1,
            l1,
            s2,
            l2,
            s3,
            l3,
            self.name(),
            layer_norm_fwd,
            self.eps
        );
        Ok((out, l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let eps = self.eps;
        let dx = x.apply_op3_no_bwd(g, &dy, &LayerNormDx { eps })?;
        let params = x.apply_op2_no_bwd(&dy, &LayerNormDparams { eps })?;
        Ok((Some(dx), Some(params.get(0)?), Some(params.get(1)?)))
    }
}

impl CustomOp3 for LayerNormDx {
    fn name(&self) -> &'static str {
        "layer-norm-dx"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let out = ternary!(s1, l1, s2, l2, s3, l3, self.name(), layer_norm_dx, self.eps);
        Ok((out, l1.shape().clone()))
    }
}

impl CustomOp2 for LayerNormDparams {
    fn name(&self) -> &'static str {
        "layer-norm-dparams"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let n = *l1.dims().last().unwrap_or(&1);
        let out = binary!(s1, l1, s2, l2, self.name(), layer_norm_dparams, n, self.eps);
        Ok((out, Shape::from((2, n))))
    }
}

/// g ⊙ (x − μ)/√(var + ε) + b over the last dimension (g, b of that size).
pub fn layer_norm(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op3(g, b, LayerNorm { eps })
    } else {
        layer_norm_primitive(x, g, b, eps)
    }
}

fn layer_norm_primitive(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64) -> R<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(g)?
        .broadcast_add(b)
}

// ---- bias ------------------------------------------------------------------

pub(crate) fn bias_fwd<T: Real>(x: &[T], b: &[T]) -> Vec<T> {
    let mut out = x.to_vec();
    rows(&mut out, b.len(), |_, r| {
        for (v, b) in r.iter_mut().zip(b) {
            *v = T::of(v.f() + b.f());
        }
    });
    out
}

fn column_sums_of<T: Real>(dy: &[T], n: usize) -> Vec<T> {
    column_sums(dy, n).into_iter().map(T::of).collect()
}

struct Bias;
struct ColumnSums;

impl CustomOp2 for Bias {
    fn name(&self) -> &'static str {
        "bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        Ok((
            binary!(s1, l1, s2, l2, self.name(), bias_fwd),
            l1.shape().clone(),
        ))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>)> {
        let db = dy.contiguous()?.apply_op1_no_bwd(&ColumnSums)?;
        Ok((Some(dy.clone()), Some(db)))
    }
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let n = *l.dims().last().unwrap_or(&1);
        Ok((unary!(s, l, self.name(), column_sums_of, n), Shape::from(n)))
    }
}

/// x + b, b added to every row (b of the last dimension's size).
pub fn bias(x: &Tensor, b: &Tensor) -> R<Tensor> {
    if x.device().is_cpu() {
        x.contiguous()?.apply_op2(b, Bias)
    } else {
        x.broadcast_add(b)
    }
}

// ---- causal softmax over the last dimension -------------------------------

/// Row r of the scores is query i = r mod t; it sees keys 0..=p+i.
fn visible(r: usize, t: usize, p: usize) -> usize {
    p + r % t + 1
}

pub(crate) fn causal_softmax_fwd<T: Real>(x: &[T], n: usize, t: usize, scale: f64) -> Vec<T> {
    let p = n - t;
    let mut out = x.to_vec();
    rows(&mut out, n, |i, r| {
        let (seen, hidden) = r.split_at_mut(visible(i, t, p));
        let max = seen.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.f()));
        let mut total = 0.0;
        for v in seen.iter_mut() {
            let e = T::of(scale * (v.f() - max)).exp_().f();
            total += e;
            *v = T::of(e);
        }
        for v in seen {
            *v = T::of(v.f() / total);
        }
        hidden.iter_mut().for_each(|v| *v = T::of(0.0));
    });
    out
}

fn causal_softmax_bwd<T: Real>(y: &[T], dy: &[T], n: usize, t: usize, scale: f64) -> Vec<T> {
    let p = n - t;
    let mut out = vec![T::of(0.0); y.len()];
    rows(&mut out, n, |i, r| {
        let k = visible(i, t, p);
        let (y, g) = (&y[i * n..i * n + k], &dy[i * n..i * n + k]);
        let dot: f64 = y.iter().zip(g).map(|(a, b)| a.f() * b.f()).sum();
        for (j, v) in r[..k].iter_mut().enumerate() {
            *v = T::of(scale * y[j].f() * (g[j].f() - dot));
        }
    });
    out
}

struct CausalSoftmax {
    scale: f64,
}
struct CausalSoftmaxGrad {
    scale: f64,
}

fn query_count(l: &Layout) -> usize {
    let d = l.dims();
    if d.len() >= 2 { d[d.len() - 2] } else { 1 }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> R<(CpuStorage, Shape)> {
        let (n, t) = (*l.dims().last().unwrap_or(&1), query_count(l));
        let out = unary!(s, l, self.name(), causal_softmax_fwd, n, t, self.scale);
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> R<Option<Tensor>> {
        let grad = CausalSoftmaxGrad { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &grad)?))
    }
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let (n, t) = (*l1.dims().last().unwrap_or(&1), query_count(l1));
        let out = binary!(
            s1,
            l1,
            s2,
            l2,
            self.name(),
            causal_softmax_bwd,
            n,
            t,
            self.scale
        );
        Ok((out, l1.shape().clone()))
    }
}

/// Attention weights from raw scores [.., t, p + t] (t queries at
/// positions p..p+t, p + t keys): softmax over the last dimension of
/// `scale` × scores, with keys after each query's position given weight 0.
pub fn causal_softmax(scores: &Tensor, scale: f64) -> R<Tensor> {
    if scores.device().is_cpu() {
        scores.contiguous()?.apply_op1(CausalSoftmax { scale })
    } else {
        causal_softmax_primitive(scores, scale)
    }
}

// ---- attention: causal softmax(q kᵀ) v in one node ------------------------

/// softmax(s · q kᵀ, causal) v for q [b, h, t, d], k and v [b, h, p + t, d]
/// (contiguous), keeping P for the backward pass.
struct Attention {
    scale: f64,
    /// P from the forward pass (taken by the first backward pass; a second
    /// one recomputes it).
    weights: std::sync::Mutex<Option<CpuStorage>>,
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "causal-attention"
    }
    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (b, h, t, d) = lq.shape().dims4()?;
        let n = lk.dims()[2];
        if !(lq.is_contiguous() && lk.is_contiguous() && lv.is_contiguous()) {
            candle_core::bail!("{}: inputs must be contiguous", self.name());
        }
        let scores = sq.matmul(sk, (b * h, t, n, d), lq, &lk.transpose(2, 3)?)?;
        let weights = unary!(
            &scores,
            &Layout::contiguous((b, h, t, n)),
            self.name(),
            causal_softmax_fwd,
            n,
            t,
            self.scale
        );
        let out = weights.matmul(sv, (b * h, t, d, n), &Layout::contiguous((b, h, t, n)), lv)?;
        *self
            .weights
            .lock()
            .expect("no panics while holding the lock") = Some(weights);
        Ok((out, lq.shape().clone()))
    }
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        dout: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, h, t, _) = q.dims4()?;
        let n = k.dim(2)?;
        let saved = self
            .weights
            .lock()
            .expect("no panics while holding the lock")
            .take();
        let p = match saved {
            Some(CpuStorage::F32(w)) => Tensor::from_vec(w, (b, h, t, n), q.device())?,
            Some(CpuStorage::F64(w)) => Tensor::from_vec(w, (b, h, t, n), q.device())?,
            _ => causal_softmax(&q.matmul(&k.t()?)?, self.scale)?.detach(),
        };
        let dout = dout.contiguous()?;
        let dv = p.t()?.matmul(&dout)?;
        let dp = dout.matmul(&v.t()?)?;
        let ds = p.apply_op2_no_bwd(&dp, &CausalSoftmaxGrad { scale: self.scale })?;
        let dq = ds.matmul(k)?;
        let dk = ds.t()?.matmul(q)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Causal attention softmax(`scale` · q kᵀ) v with q [b, h, t, d] at
/// positions p..p+t and k, v [b, h, p + t, d]: each query sees the keys up
/// to its own position. One node on the CPU (see the module docs); other
/// devices compose it from primitives.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> R<Tensor> {
    if q.device().is_cpu() {
        let op = Attention {
            scale,
            weights: std::sync::Mutex::new(None),
        };
        q.contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    } else {
        causal_softmax(&q.matmul(&k.t()?)?, scale)?.matmul(v)
    }
}

// ---- log-probability of target tokens -------------------------------------

fn token_log_probs_fwd<T: Real>(z: &[T], targets: &[u32], v: usize) -> Vec<T> {
    targets
        .iter()
        .zip(z.chunks(v))
        .map(|(&c, row)| {
            let max = row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.f()));
            let total: f64 = row.iter().map(|&x| (x - T::of(max)).exp_().f()).sum();
            T::of(row[c as usize].f() - max - total.ln())
        })
        .collect()
}

fn token_log_probs_bwd<T: Real>(z: &[T], targets: &[u32], dy: &[T], v: usize) -> Vec<T> {
    let mut out = vec![T::of(0.0); z.len()];
    rows(&mut out, v, |r, o| {
        let row = &z[r * v..(r + 1) * v];
        let max = T::of(row.iter().fold(f64::NEG_INFINITY, |m, x| m.max(x.f())));
        for (o, &x) in o.iter_mut().zip(row) {
            *o = (x - max).exp_();
        }
        let total: f64 = o.iter().map(|p| p.f()).sum();
        let g = dy[r].f();
        let scale = T::of(-g / total);
        for p in o.iter_mut() {
            *p = *p * scale;
        }
        let c = targets[r] as usize;
        o[c] = o[c] + T::of(g);
    });
    out
}

fn u32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> R<&'a [u32]> {
    match s {
        CpuStorage::U32(t) => slice(t, l, op),
        _ => candle_core::bail!("{op}: targets must be u32"),
    }
}

/// log softmax(z)[target] per row of logits (last dimension V).
struct TokenLogProbs;
/// Its gradient with respect to the logits, given dy per row.
struct TokenLogProbsGrad;

impl CustomOp2 for TokenLogProbs {
    fn name(&self) -> &'static str {
        "token-log-probs"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let v = *l1.dims().last().unwrap_or(&1);
        let targets = u32s(s2, l2, self.name())?;
        let out = unary!(s1, l1, self.name(), token_log_probs_fwd, targets, v);
        Ok((out, l2.shape().clone()))
    }
    fn bwd(
        &self,
        z: &Tensor,
        targets: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> R<(Option<Tensor>, Option<Tensor>)> {
        let dz = z.apply_op3_no_bwd(targets, &dy.contiguous()?, &TokenLogProbsGrad)?;
        Ok((Some(dz), None))
    }
}

impl CustomOp3 for TokenLogProbsGrad {
    fn name(&self) -> &'static str {
        "token-log-probs-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> R<(CpuStorage, Shape)> {
        let v = *l1.dims().last().unwrap_or(&1);
        let targets = u32s(s2, l2, self.name())?;
        let out = binary!(
            s1,
            l1,
            s3,
            l3,
            self.name(),
            token_log_probs_bwd_of,
            targets,
            v
        );
        Ok((out, l1.shape().clone()))
    }
}

/// [`token_log_probs_bwd`] with its arguments in the dispatch order.
fn token_log_probs_bwd_of<T: Real>(z: &[T], dy: &[T], targets: &[u32], v: usize) -> Vec<T> {
    token_log_probs_bwd(z, targets, dy, v)
}

/// log softmax(logits)[target] for logits [.., V] and u32 targets [..]
/// (the leading dimensions): each token's log-probability under teacher
/// forcing, as one node on the CPU; other devices compose it.
pub fn token_log_probs(logits: &Tensor, targets: &Tensor) -> R<Tensor> {
    if logits.device().is_cpu() {
        logits
            .contiguous()?
            .apply_op2(&targets.contiguous()?, TokenLogProbs)
    } else {
        token_log_probs_primitive(logits, targets)
    }
}

fn token_log_probs_primitive(logits: &Tensor, targets: &Tensor) -> R<Tensor> {
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&m)?;
    let lp = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
    lp.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)
}

/// Added to the scores of hidden keys in the primitive form (finite, so
/// they get exactly zero weight without NaN gradients).
const MASKED: f64 = -1e9;

fn causal_softmax_primitive(scores: &Tensor, scale: f64) -> R<Tensor> {
    let d = scores.dims();
    let (t, n) = (d[d.len() - 2], d[d.len() - 1]);
    let mask: Vec<f64> = (0..t)
        .flat_map(|i| {
            (0..n).map(move |j| {
                if j < visible(i, t, n - t) {
                    0.0
                } else {
                    MASKED
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, n), scores.device())?.to_dtype(scores.dtype())?;
    let x = (scores * scale)?.broadcast_add(&mask)?;
    // The max is a constant shift (softmax is shift-invariant): detached.
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The widest path the CPU dispatches to gives the portable body's
    /// bits, for every row kernel under `widest!` (so the same seed gives
    /// the same bytes on AVX-512, AVX2 and baseline machines alike).
    #[test]
    fn the_widest_row_kernels_give_the_portable_bits() {
        use rand::RngExt;
        let mut rng = crate::rng::stream(17, 0);
        for n in [1, 7, 16, 37, 128, 513] {
            let mut v = |scale: f32| -> Vec<f32> {
                (0..n)
                    .map(|_| scale * rng.random_range(-1.0..1.0f32))
                    .collect()
            };
            let (x, b, dy, g) = (v(4.0), v(1.0), v(1.0), v(2.0));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let (mut wide, mut portable) = (vec![0f32; n], vec![0f32; n]);
            bias_gelu_row(&mut wide, &x, &b);
            bias_gelu_row_body(&mut portable, &x, &b);
            assert_eq!(bits(&wide), bits(&portable), "GELU, n {n}");
            bias_gelu_grad_row(&mut wide, &x, &b, &dy);
            bias_gelu_grad_row_body(&mut portable, &x, &b, &dy);
            assert_eq!(bits(&wide), bits(&portable), "GELU slope, n {n}");
            layer_norm_dx_row(&mut wide, &x, &g, &dy, 1e-5);
            layer_norm_dx_row_body(&mut portable, &x, &g, &dy, 1e-5);
            assert_eq!(bits(&wide), bits(&portable), "layer norm dx, n {n}");
            let (mut wide, mut portable) = (x.clone(), x.clone());
            layer_norm_row(&mut wide, &g, &b, 1e-5);
            layer_norm_row_body(&mut portable, &g, &b, 1e-5);
            assert_eq!(bits(&wide), bits(&portable), "layer norm, n {n}");
        }
    }

    /// The f32 tanh against libm's f64 tanh on a fine grid (it feeds GELU
    /// in every f32 run).
    #[test]
    fn f32_tanh_is_accurate() {
        let worst = (-100_000..=100_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| (x.tanh_() as f64 - (x as f64).tanh()).abs())
            .fold(0.0, f64::max);
        // A few f32 ulps (an ulp just below 1 is 6e-8).
        assert!(worst < 5e-7, "max |error| {worst:e}");
        assert!((40.0f32.tanh_() - 1.0).abs() <= f32::EPSILON);
        assert!((-40.0f32).tanh_() + 1.0 <= f32::EPSILON);
    }

    /// Queries [1, 2, 3, 5] from x [2, 3, 5]; keys and values [1, 2, 5, 5]
    /// as differentiable functions of g and b [5] (so their gradients reach
    /// g and b): 3 queries at positions 2..5 of a 5-key sequence.
    fn attention_inputs(x: &Tensor, g: &Tensor, b: &Tensor) -> R<(Tensor, Tensor, Tensor)> {
        let q = x.reshape((1, 2, 3, 5))?;
        let grid = Tensor::arange(0.0, 50.0, x.device())?
            .reshape((1, 2, 5, 5))?
            .affine(0.05, -1.0)?
            .sin()?;
        let k = grid.broadcast_mul(g)?;
        let v = grid.cos()?.broadcast_add(b)?;
        Ok((q, k, v))
    }

    /// Fixed targets [2, 3] among 5 tokens.
    fn targets(x: &Tensor) -> R<Tensor> {
        Tensor::new(&[[0u32, 4, 2], [1, 3, 0]], x.device())
    }

    /// Each kernel's value and gradients (of every input) against the
    /// primitive composition other devices use, in f64.
    #[test]
    fn kernels_match_the_primitive_forms_and_their_gradients() {
        let dev = Device::Cpu;
        let var = |n: usize, shape: &[usize], k: f64| {
            let data: Vec<f64> = (0..n)
                .map(|i| ((i as f64 + k) * 0.83).sin() * 2.0)
                .collect();
            Var::from_tensor(&Tensor::from_vec(data, shape, &dev).unwrap()).unwrap()
        };
        // Scores of 3 queries after a 2-key prefix: [2, 3, 5].
        let x = var(30, &[2, 3, 5], 0.0);
        let g = var(5, &[5], 1.0);
        let b = var(5, &[5], 2.0);
        let weights = var(30, &[2, 3, 5], 3.0).as_tensor().detach();
        type F = Box<dyn Fn(&Tensor, &Tensor, &Tensor) -> R<Tensor>>;
        let cases: Vec<(&str, F, F)> = vec![
            (
                "bias + gelu",
                Box::new(|x, _, b| bias_gelu(x, b)),
                Box::new(|x, _, b| gelu_primitive(&x.broadcast_add(b)?)),
            ),
            (
                "layer norm",
                Box::new(|x, g, b| layer_norm(x, g, b, 1e-5)),
                Box::new(|x, g, b| layer_norm_primitive(x, g, b, 1e-5)),
            ),
            (
                "bias",
                Box::new(|x, _, b| bias(x, b)),
                Box::new(|x, _, b| x.broadcast_add(b)),
            ),
            (
                "causal softmax",
                Box::new(|x, _, _| causal_softmax(x, 0.7)),
                Box::new(|x, _, _| causal_softmax_primitive(x, 0.7)),
            ),
            (
                // x as logits over 5 tokens at [2, 3] positions; the
                // result is broadcast back to x's shape to be weighted.
                "token log-probabilities",
                Box::new(|x, _, _| {
                    token_log_probs(x, &targets(x)?)?
                        .unsqueeze(2)?
                        .broadcast_as((2, 3, 5))
                }),
                Box::new(|x, _, _| {
                    token_log_probs_primitive(x, &targets(x)?)?
                        .unsqueeze(2)?
                        .broadcast_as((2, 3, 5))
                }),
            ),
            (
                // x as queries [1, 2, 3, 5] against a 5-key sequence made
                // of g (keys) and b (values), 2 of them a cached prefix.
                "attention",
                Box::new(|x, g, b| {
                    let (q, k, v) = attention_inputs(x, g, b)?;
                    attention(&q, &k, &v, 0.7)?.reshape((2, 3, 5))
                }),
                Box::new(|x, g, b| {
                    let (q, k, v) = attention_inputs(x, g, b)?;
                    causal_softmax_primitive(&q.matmul(&k.t()?)?, 0.7)?
                        .matmul(&v)?
                        .reshape((2, 3, 5))
                }),
            ),
        ];
        for (name, fused, primitive) in cases {
            let run = |f: &F| {
                let y = f(x.as_tensor(), g.as_tensor(), b.as_tensor()).unwrap();
                let grads = (&y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut out: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
                for v in [&x, &g, &b] {
                    if let Some(d) = grads.get(v.as_tensor()) {
                        out.extend(d.flatten_all().unwrap().to_vec1::<f64>().unwrap());
                    }
                }
                out
            };
            let (a, e) = (run(&fused), run(&primitive));
            assert_eq!(a.len(), e.len(), "{name}: gradients reach different inputs");
            for (a, e) in a.iter().zip(&e) {
                assert!((a - e).abs() < 1e-9 * (1.0 + e.abs()), "{name}: {a} vs {e}");
            }
        }
    }
}
