//! P06: the maximum-likelihood projection of the valid-filtered trace law
//! onto tabular policies (one EM step, reward-weighted regression) never
//! lowers success; a thresholded graded score can.

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P06: the maximum-likelihood tabular fit of the valid-filtered trace
    /// law (one EM step; reward-weighted regression with a binary reward)
    /// never lowers any task's success probability —
    /// checked over EM_STEPS successive fits; and a counterexample when the
    /// filter is a threshold on a graded score ("answers of at least H−1
    /// steps") instead of validity: the proxy rises, validity falls.
    pub(super) fn p06(&self, policy: &dyn Policy) -> Vec<Check> {
        const EM_STEPS: usize = 5;
        let env = self.env;
        let valid = |x: usize, s: usize, _t: usize| if env.tasks[x].is_goal[s] { 1.0 } else { 0.0 };
        let mut table = PolicyTable::new(policy, env);
        let mut p = exact::success_probabilities(env, &table);
        let start = p.clone();
        let mut worst_drop = 0.0f64;
        let mut after_one = Vec::new();
        for step in 0..EM_STEPS {
            table = exact::fit_filtered(env, &table, &valid);
            let next = exact::success_probabilities(env, &table);
            if step == 0 {
                after_one = next.clone();
            }
            for (a, b) in p.iter().zip(&next) {
                worst_drop = worst_drop.max(a - b);
            }
            p = next;
        }
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut checks = vec![Check {
            claim: "P06".into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: format!(
                "maximum-likelihood tabular fits to the valid traces (EM steps): p(x) {} -> {} after one -> {} after {EM_STEPS}; largest drop",
                fmt(&start),
                fmt(&after_one),
                fmt(&p)
            ),
            max_abs_error: worst_drop.max(0.0),
            max_rel_error: worst_drop.max(0.0),
            tolerance: format!("drop <= {EXACT_ABS:.0e}"),
            cosine: f64::NAN,
            status: Status::of(worst_drop <= EXACT_ABS),
        }];
        // Graded score = −(answer length), threshold −k: a length budget of
        // k = H − 2 steps, valid or not. It admits short invalid answers and
        // rejects valid plans longer than k — the situation of proofs/P06 §5.
        // It needs a task whose every valid plan is over budget (shortest
        // plan > k); the other settings skip it.
        let k = env.horizon.saturating_sub(2);
        if !shortest_plans(env).iter().any(|y| y.plan_length() > k) {
            checks.push(self.skipped(
                "P06",
                &format!("counterexample, filter = answers of <= {k} steps"),
                "no task's shortest plan is over the budget H-2, so the proxy filter keeps every valid plan",
            ));
            return checks;
        }
        let budget = move |_x: usize, _s: usize, t: usize| if t <= k { 1.0 } else { 0.0 };
        let table0 = PolicyTable::new(policy, env);
        let fitted = exact::fit_filtered(env, &table0, &budget);
        let mean = |v: &[f64]| -> f64 { v.iter().zip(&env.mu).map(|(a, m)| a * m).sum() };
        let proxy_before = mean(&exact::expected_reward(env, &table0, &budget));
        let proxy_after = mean(&exact::expected_reward(env, &fitted, &budget));
        let p_before = exact::success_probabilities(env, &table0);
        let p_after = exact::success_probabilities(env, &fitted);
        let worst = p_before
            .iter()
            .zip(&p_after)
            .map(|(a, b)| a - b)
            .fold(f64::NEG_INFINITY, f64::max);
        checks.push(Check {
            claim: "P06".into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: format!(
                "counterexample, filter = answers of <= {k} steps: proxy {proxy_before:.3} -> {proxy_after:.3}, p(x) {} -> {} (largest drop of a p(x): {:.3})",
                fmt(&p_before),
                fmt(&p_after),
                worst.max(0.0)
            ),
            // A counterexample, not an error: the drop it exhibits is in
            // the quantity, and the error columns read "—".
            max_abs_error: f64::NAN,
            max_rel_error: f64::NAN,
            tolerance: "some p(x) falls, proxy rises".into(),
            cosine: f64::NAN,
            status: Status::of(worst > EXACT_ABS && proxy_after >= proxy_before - EXACT_ABS),
        });
        checks
    }
}
