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

/// Monte Carlo checks: |estimate − exact| ≤ Z · standard error. At 5 SE a
/// correct unbiased estimator fails with probability ≈ 5.7e-7 per check, so
/// the fixed-seed suite is stable, while a bias of a few SE is caught.
pub const MC_Z: f64 = 5.0;

/// max |a − b| and max |a − b| / max(|a|, |b|, abs_floor) over coordinates.
pub fn errors(a: &[f64], b: &[f64], abs_floor: f64) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    let scale = a.iter().chain(b).fold(abs_floor, |m, v| m.max(v.abs()));
    let abs = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    (abs, abs / scale)
}
