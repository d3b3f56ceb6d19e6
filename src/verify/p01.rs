//! P01: −∇L_SFT = (N/N⁺)·ĝ_RL on every batch drawn at θ.

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P01: −∇L_SFT = (N/N⁺)·ĝ_RL on every batch drawn at θ.
    pub(super) fn p01(&self, policy: &dyn Policy) -> Vec<Check> {
        let table = PolicyTable::new(policy, self.env);
        let mut rng = crate::rng::stream(self.seed, 101);
        let mut checks = Vec::new();
        for (b, per_task) in [4usize, 16, 64].into_iter().enumerate() {
            let batch = estimator::sample_batch(self.env, &table, per_task, &mut rng);
            let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
            if kept.is_empty() {
                checks.push(self.skipped(
                    "P01",
                    &format!("batch {b}: N={}", batch.len()),
                    "no valid trace in the batch (N+ = 0: the SFT loss is undefined)",
                ));
                continue;
            }
            let sft = estimator::sft_gradient_from_counts(self.env, policy, &kept);
            let scale = batch.len() as f64 / kept.len() as f64;
            let rl: Vec<f64> = estimator::reinforce(self.env, policy, &batch)
                .iter()
                .map(|g| g * scale)
                .collect();
            checks.push(self.check(
                "P01",
                &format!("batch {b}: N={}, N+={}", batch.len(), kept.len()),
                &sft,
                &rl,
                EXACT_REL,
                EXACT_ABS,
            ));
        }
        checks
    }
}
