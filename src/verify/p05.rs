//! P05: shortest valid per task is the length-weighted reward

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P05: shortest valid per task is the length-weighted reward
    /// w(L) = [(1−Q_{<L})^N − (1−Q_{≤L})^N]/q_L (checked by brute force),
    /// which is not a function of validity (weights differ across lengths,
    /// and the expected gradient is not parallel to ∇J).
    pub(super) fn p05(&self, policy: &dyn Policy) -> Result<Vec<Check>> {
        let env = self.env;
        let table = PolicyTable::new(policy, env);
        let q = exact::valid_length_distribution(env, &table);
        let mut checks = Vec::new();
        for n in [2usize, 3] {
            let (w, dp) = curated_expectation(env, &table, policy, Rule::ShortestPerTask, n);
            if !self.small() {
                checks.push(self.skipped(
                    "P05",
                    &format!("N={n}: length-weighted DP vs brute force"),
                    &format!("a task has more than {SMALL_TRACES} valid traces"),
                ));
            } else {
                let brute = self.brute_force(policy, Rule::ShortestPerTask, n)?;
                checks.push(self.check(
                    "P05",
                    &format!("N={n}: length-weighted DP vs brute force"),
                    &dp,
                    &brute,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
            // The implicit reward is strictly decreasing in plan length
            // (over lengths that occur), hence no function of validity alone.
            let grad_j = exact::objective_gradient(env, policy);
            let cos = cosine(&dp, &grad_j);
            let mut decreasing = true;
            let mut spread = 1.0f64;
            let (mut resolved, mut pairs) = (0usize, 0usize);
            for (wx, qx) in w.iter().zip(&q) {
                // (weight, mass, mass of invalid-or-not-shorter) per
                // length that occurs.
                let mut below = 0.0f64;
                let mut used = Vec::new();
                for (&wl, &ql) in wx.iter().zip(qx) {
                    if ql > 0.0 {
                        used.push((wl, ql, 1.0 - below));
                    }
                    below += ql;
                }
                for p in used.windows(2) {
                    let ((w0, q0, rest0), (w1, ..)) = (p[0], p[1]);
                    pairs += 1;
                    decreasing &= if q0 > ORDER_RESOLUTION * rest0 {
                        resolved += 1;
                        w1 < w0
                    } else {
                        w1 <= w0 * (1.0 + EXACT_REL)
                    };
                }
                if let (Some(first), Some(last)) = (used.first(), used.last()) {
                    spread = spread.max(first.0 / last.0);
                }
            }
            checks.push(Check {
                claim: "P05".into(),
                setting: self.setting.into(),
                policy: self.label.into(),
                quantity: format!(
                    "N={n}: w(L) strictly decreasing in L ({resolved} of {pairs} length pairs resolvable in f64, the rest non-increasing); w(shortest)/w(longest) {spread:.4}; cos(E grad, grad J) {cos:.6}"
                ),
                // An order check, not an error measurement: no error
                // columns ("—"); what was found is in the quantity.
                max_abs_error: f64::NAN,
                max_rel_error: f64::NAN,
                tolerance: "strict order".into(),
                cosine: f64::NAN,
                status: Status::of(decreasing),
            });
        }
        Ok(checks)
    }
}
