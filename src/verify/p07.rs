//! P07: Monte-Carlo estimators are unbiased: their batch means match the

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P07: Monte-Carlo estimators are unbiased: their batch means match the
    /// exact expectation within MC_Z standard errors, along ∇J and random
    /// directions.
    pub(super) fn p07(
        &self,
        policy: &dyn Policy,
        make: &dyn Fn() -> Box<dyn Policy>,
    ) -> Vec<Check> {
        let env = self.env;
        // θ stays fixed: every repeated step score comes from the memo.
        let memo = ScoreMemo::new(policy.clone_box());
        let policy: &dyn Policy = &memo;
        let table = PolicyTable::new(policy, env);
        let mut rng = crate::rng::stream(self.seed, 107);
        let grad_j = exact::objective_gradient(env, policy);
        let mut dirs = random_directions(policy.num_params(), 4, &mut rng);
        let norm = dot(&grad_j, &grad_j).sqrt();
        if norm > 0.0 {
            dirs.push(grad_j.iter().map(|g| g / norm).collect());
        }
        let per_task = 8;
        let (_, one_exact) = curated_expectation(env, &table, policy, Rule::OnePerTask, per_task);
        let (beta, sigma) = overlapping_behaviour(env, policy, &table, make, &mut rng);
        let beta_table = PolicyTable::new(&*beta, env);
        let batches = 1500;
        let mut sums = vec![vec![(0.0f64, 0.0f64); dirs.len()]; 4];
        let mut ess_total = 0.0;
        for _ in 0..batches {
            let batch = estimator::sample_batch(env, &table, per_task, &mut rng);
            // Curated: one valid per task, uniformly, weighted by μ.
            let mut curated = vec![0.0; policy.num_params()];
            for x in 0..env.tasks.len() {
                let valid: Vec<&Trace> = batch.iter().filter(|t| t.task == x && t.valid).collect();
                if !valid.is_empty() {
                    valid[rng.random_range(0..valid.len())].accumulate_score(
                        env,
                        policy,
                        env.mu[x],
                        &mut curated,
                    );
                }
            }
            // REINFORCE and RLOO average over N = per_task·|X|; scale to μ-weighting.
            let k = env.tasks.len() as f64;
            let reinforce: Vec<f64> = estimator::reinforce(env, policy, &batch)
                .iter()
                .map(|g| g * k * env.mu[0])
                .collect();
            let rloo: Vec<f64> = estimator::rloo(env, policy, &batch)
                .iter()
                .map(|g| g * k * env.mu[0])
                .collect();
            let off = estimator::sample_batch(env, &beta_table, per_task, &mut rng);
            let (iw, ess) =
                estimator::importance_weighted(env, policy, &table, &beta_table, &off, false);
            ess_total += ess;
            let iw: Vec<f64> = iw.iter().map(|g| g * k * env.mu[0]).collect();
            for (e, g) in [reinforce, rloo, iw, curated].iter().enumerate() {
                for (d, u) in dirs.iter().enumerate() {
                    let v = dot(u, g);
                    sums[e][d].0 += v;
                    sums[e][d].1 += v * v;
                }
            }
        }
        let names = [
            "REINFORCE vs grad J",
            "RLOO vs grad J",
            "importance-weighted (ordinary) vs grad J",
            "one-per-task curated SFT vs formula",
        ];
        let mut checks = Vec::new();
        for (e, name) in names.iter().enumerate() {
            let target = if e == 3 { &one_exact } else { &grad_j };
            let mut worst_z = 0.0f64;
            let mut worst_abs = 0.0f64;
            for (d, u) in dirs.iter().enumerate() {
                let (s, ss) = sums[e][d];
                let m = batches as f64;
                let mean = s / m;
                let var = (ss / m - mean * mean).max(0.0) * m / (m - 1.0);
                let se = (var / m).sqrt();
                let diff = (mean - dot(u, target)).abs();
                worst_abs = worst_abs.max(diff);
                if se > 0.0 {
                    worst_z = worst_z.max(diff / se);
                } else if diff > EXACT_ABS {
                    worst_z = f64::INFINITY;
                }
            }
            let extra = if e == 2 {
                format!(
                    ", behaviour θ + {sigma}·noise, mean ESS {:.1} of {}",
                    ess_total / batches as f64,
                    per_task * env.tasks.len()
                )
            } else {
                String::new()
            };
            checks.push(Check {
                claim: "P07".into(),
                setting: self.setting.into(),
                policy: self.label.into(),
                quantity: format!(
                    "{name}: {batches} batches of {per_task}/task, max z {worst_z:.2}{extra}"
                ),
                max_abs_error: worst_abs,
                max_rel_error: worst_z,
                tolerance: format!("z <= {MC_Z}"),
                cosine: f64::NAN,
                status: Status::of(worst_z <= MC_Z),
            });
        }
        checks
    }
}
