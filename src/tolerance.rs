//! Every tolerance iterdeploy checks against, with why it is what it is.
//! No other module writes a numeric threshold of its own.

/// Exact identities in f64 (two computations of the same sum, e.g. DP vs
/// trace enumeration, or one batch's SFT vs scaled REINFORCE gradient).
/// Terms are products and sums of at most ~10⁶ numbers in [0, 1] or
/// gradients of modest size; each operation loses ≤ 2⁻⁵³ ≈ 1.1e-16
/// relative, so accumulated error stays far below 1e-10 of the larger norm.
/// The issue sets 1e-10 relative as the bar; we keep it.
pub const EXACT_REL: f64 = 1e-10;

/// Absolute floor for comparing numbers that should both be ~0: relative
/// error is meaningless there. 1e-12 sits well above accumulated round-off
/// on our problem sizes (≈ 1e-15) and well below any real effect.
pub const EXACT_ABS: f64 = 1e-12;

/// Central finite differences f'(θ) ≈ (f(θ+h) − f(θ−h))/2h with
/// h = [`FD_STEP`]: truncation error ~h²·f''' ≈ 1e-10 and round-off
/// ~ε/h ≈ 1e-11 for functions of order 1, so 1e-6 relative (of the larger
/// of the two values, plus [`FD_ABS`]) leaves ample room while catching any
/// wrong term.
pub const FD_REL: f64 = 1e-6;
pub const FD_ABS: f64 = 1e-8;
pub const FD_STEP: f64 = 1e-5;

/// Symmetry of a Jacobian computed by central differences of an exact
/// field (P09). The Jacobian of a gradient field is a Hessian, symmetric;
/// each finite-difference entry carries truncation error ~h²·F''' ≈ 1e-10
/// and round-off ~ε/h ≈ 1e-11 relative to the field's scale, so the
/// relative antisymmetric part ‖(M − Mᵀ)/2‖_F / ‖M‖_F of a gradient's is
/// ~1e-10 (measured up to 3e-10). 1e-6, as for [`FD_REL`], leaves room.
pub const SYMMETRY_REL: f64 = 1e-6;

/// A field is declared *not* a gradient only if its relative asymmetry is
/// at least 10× [`SYMMETRY_REL`], i.e. 1e-5: four orders of magnitude above
/// the largest asymmetry measured on a true gradient field (1.1e-9), so
/// "not a gradient" is never a rounding artefact. (The smallest measured
/// on a shortest-per-task field is 1.5e-4: Sokoban, MLP, N = 5.)
pub const ASYMMETRY_MIN: f64 = 10.0 * SYMMETRY_REL;

/// P09's exact asymmetry of a gradient field: the chain rule gives the
/// antisymmetric part as Σ_x μ_x G_x ((W_x − W_xᵀ)/2) G_xᵀ, and for the
/// gradient fields W_x (a complex-step derivative of the weights) is
/// symmetric entry for entry, or zero, so the value is 0 in exact and in
/// floating-point arithmetic alike (measured: 0 on every row). 1e-12
/// allows rounding in W's entries should a rule's two halves ever be
/// computed along different paths.
pub const ASYMMETRY_EXACT: f64 = 1e-12;

/// P09: the finite-difference asymmetry and the exact one must agree to
/// within the finite-difference noise floor of [`SYMMETRY_REL`], in units
/// of relative asymmetry (both share the denominator ‖M‖_F).
pub const ASYMMETRY_AGREE: f64 = SYMMETRY_REL;

/// Monte Carlo checks: |estimate − exact| ≤ Z · standard error. At 5 SE a
/// correct unbiased estimator fails with probability ≈ 5.7e-7 per
/// direction; a P07 row tests 5 directions (4 random and ∇J), so its false
/// alarm rate is ≤ 2.9e-6, and the fixed-seed suite is stable. The power
/// is what a 5-SE threshold gives: a bias of b standard errors along one
/// direction is caught with probability Φ(b − 5) + Φ(−b − 5): about 2% at
/// b = 3, one half at b = 5, 98% at b = 7. So a bias of about 7 SE is
/// caught reliably; smaller ones are not.
pub const MC_Z: f64 = 5.0;

/// Orderings of computed weights (P05: w(L) strictly decreasing in L) are
/// only resolvable in f64 when the probability mass separating two lengths
/// is well above round-off relative to the mass they share: the gap
/// between w(L) and w(L') is of order q_L / (1 − Q_{<L}), so below 1e-12
/// it drowns in the ≈1e-16 rounding of each weight. Such pairs must still
/// not increase beyond [`EXACT_REL`]; pairs above the threshold must
/// decrease strictly.
pub const ORDER_RESOLUTION: f64 = 1e-12;

/// The pretrained decoder (f32, dequantized weights) against
/// candle-transformers' quantized llama on the same GGUF file: the
/// reference quantizes its activations to 8 bits inside every matmul, so
/// the logits agree in direction, not to round-off (the lowest per-position
/// cosine measured was 0.991 on SmolLM2-135M). A wrong RoPE convention gave
/// −0.61, so 0.98 separates the two with room for other prompts.
pub const QUANTIZED_REFERENCE_COS: f64 = 0.98;

/// Largest absolute difference between two f32 implementations of one
/// decoder on one set of weights (ours and candle-transformers', on the
/// tiny checkpoints the tests write, logits of order 1–10): they sum in
/// different orders, so they differ by round-off, ~1e-6 relative per
/// op. A wrong RoPE pairing, a missing bias or norm changes logits by
/// order 1. Measured: at most 6.4e-6 (qwen2), so 1e-4 leaves 15×; the
/// mutations tried gave 6.7 (RoPE on interleaved pairs), 5.6 (no q/k/v
/// bias) and 3.0 (no q norm). The from-scratch transformer's graph-free
/// decode step against its candle graph (log-probabilities, same
/// reasoning): measured 7.1e-6; a dropped MLP bias gave 1.2.
pub const F32_REFERENCE_LOGITS: f64 = 1e-4;

/// max |a − b| and max |a − b| / max(|a|, |b|, abs_floor) over coordinates.
pub fn errors(a: &[f64], b: &[f64], abs_floor: f64) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    // A NaN never agrees with anything (f64::max would silently skip it),
    // equal infinities agree, and the scale counts finite values only.
    let gap = |x: f64, y: f64| {
        if x == y {
            0.0
        } else {
            let d = (x - y).abs();
            if d.is_nan() { f64::INFINITY } else { d }
        }
    };
    let scale = a
        .iter()
        .chain(b)
        .filter(|v| v.is_finite())
        .fold(abs_floor, |m, v| m.max(v.abs()));
    let abs = a.iter().zip(b).fold(0.0f64, |m, (&x, &y)| m.max(gap(x, y)));
    (abs, abs / scale)
}

/// Largest |Δ log π(completion)| per completion token between the CPU and
/// a second device (`bench device`, a GPU) on the same f32 weights, θ and
/// tokens. The two sum in different orders (cuBLAS tiles, reductions in
/// other trees; candle keeps f32 matmuls at full precision, not TF32), so
/// logits of order 10 differ by ~1e-6 relative per op over 30 layers:
/// ~1e-4 nats per token at most. The faults a port can bring (a kernel
/// reading the wrong stride, the mask or RoPE off by a position, a
/// missing bias) move log π by order 1 per token, as the loader's
/// mutations did (3.0–6.7 in logits). 1e-3 sits between.
pub const DEVICE_LOG_PROB_PER_TOKEN: f64 = 1e-3;

/// Largest ‖g_dev − g_CPU‖ / ‖g_CPU‖ for the score of the same completions
/// on two devices (`bench device`). Round-off of one f32 backward pass is
/// ~1e-5 relative; a gradient path that stops or doubles on one device
/// (candle ops without a backward pass, a frozen weight's gradient taken
/// for θ's) gives order 1. 1e-3 leaves 100× for round-off.
pub const DEVICE_SCORE_REL: f64 = 1e-3;

#[cfg(test)]
mod tests {
    use super::*;

    /// A NaN on either side is an infinite error, never a pass; equal
    /// infinities agree.
    #[test]
    fn nan_never_agrees() {
        for (a, b) in [(f64::NAN, 1.0), (1.0, f64::NAN), (f64::NAN, f64::NAN)] {
            let (abs, rel) = errors(&[0.5, a], &[0.5, b], EXACT_ABS);
            assert!(abs == f64::INFINITY && rel == f64::INFINITY, "{a} vs {b}");
        }
        assert_eq!(
            errors(
                &[f64::NEG_INFINITY, 1.0],
                &[f64::NEG_INFINITY, 1.0],
                EXACT_ABS
            ),
            (0.0, 0.0)
        );
    }
}
