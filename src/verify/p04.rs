//! P04: one valid trace per task out of N, at θ = θ_k:

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P04: one valid trace per task out of N, at θ = θ_k:
    /// expected gradient = Σ_x μ_x [(1−(1−p)^N)/p] ∇p(x) = ∇ Σ_j (1/j) pass@j.
    pub(super) fn p04(&self, policy: &mut dyn Policy) -> Result<Vec<Check>> {
        let env = self.env;
        let mut checks = Vec::new();
        let mut rng = crate::rng::stream(self.seed, 104);
        let dirs = random_directions(policy.num_params(), 6, &mut rng);
        for n in [1usize, 3, 8] {
            let table = PolicyTable::new(policy, env);
            let (_, curated) = curated_expectation(env, &table, policy, Rule::OnePerTask, n);
            let proj: Vec<f64> = dirs.iter().map(|u| dot(u, &curated)).collect();
            let f = |p: &dyn Policy| {
                let probs = exact::success_probabilities(env, &PolicyTable::new(p, env));
                probs
                    .iter()
                    .zip(&env.mu)
                    .map(|(&px, m)| {
                        m * (1..=n)
                            .map(|j| (1.0 - (1.0 - px).powi(j as i32)) / j as f64)
                            .sum::<f64>()
                    })
                    .sum()
            };
            let fd = fd_directional(policy, &dirs, &f);
            checks.push(self.check(
                "P04",
                &format!("N={n}: curated expectation vs FD of sum_j pass@j/j"),
                &proj,
                &fd,
                FD_REL,
                FD_ABS,
            ));
            if n == 1 {
                let grad_j = exact::objective_gradient(env, policy);
                checks.push(self.check(
                    "P04",
                    "N=1: curated expectation equals grad J",
                    &curated,
                    &grad_j,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
            if n <= 3 && !self.small() {
                checks.push(self.skipped(
                    "P04",
                    &format!("N={n}: formula vs brute force over N-tuples"),
                    &format!("a task has more than {SMALL_TRACES} valid traces"),
                ));
            }
            if self.small() && n <= 3 {
                let brute = self.brute_force(policy, Rule::OnePerTask, n)?;
                checks.push(self.check(
                    "P04",
                    &format!("N={n}: formula vs brute force over N-tuples"),
                    &curated,
                    &brute,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
        }
        // Large N: → Σ μ ∇ log p.
        let table = PolicyTable::new(policy, env);
        let p = exact::success_probabilities(env, &table);
        let n = 100_000usize;
        if p.iter().all(|&px| (1.0 - px).powi(n as i32) < 1e-15) {
            let (_, curated) = curated_expectation(env, &table, policy, Rule::OnePerTask, n);
            let coef: Vec<f64> = env.mu.iter().zip(&p).map(|(m, px)| m / px).collect();
            let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
            let grad_log_p = exact::weighted_score(env, &table, policy, &coef, &ones);
            checks.push(self.check(
                "P04",
                "N=1e5: curated expectation equals grad E log p",
                &curated,
                &grad_log_p,
                EXACT_REL,
                EXACT_ABS,
            ));
        } else {
            checks.push(self.skipped(
                "P04",
                "N=1e5: curated expectation equals grad E log p",
                "some task has (1-p)^N >= 1e-15 at N = 1e5, so the limit is not reached",
            ));
        }
        Ok(checks)
    }
}
