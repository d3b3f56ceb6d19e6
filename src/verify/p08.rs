//! P08: the paper's curation across generations (accumulate the pool,

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P08: the paper's curation across generations (accumulate the pool,
    /// keep the shortest valid trace per task) — and the other rules and
    /// pools — equal Σ_j E_{β_j}[w_j(|y|) R ∇log π_θ] with the weights of
    /// `curation::pooled_shortest_weights`; checked against brute force over
    /// every tuple of samples from all generations.
    pub(super) fn p08(
        &self,
        policy: &dyn Policy,
        make: &dyn Fn() -> Box<dyn Policy>,
    ) -> Result<Vec<Check>> {
        use crate::curation::Pool;
        let env = self.env;
        let mut rng = crate::rng::stream(self.seed, 108);
        let mut checks = Vec::new();
        // One generation: the pooled weights reduce to P05's.
        let table = PolicyTable::new(policy, env);
        let q = exact::valid_length_distribution(env, &table);
        for n in [1usize, 2, 5] {
            let pooled: Vec<f64> = q
                .iter()
                .flat_map(|qx| {
                    crate::curation::pooled_shortest_weights(&[n], std::slice::from_ref(qx))
                        .remove(0)
                })
                .collect();
            let single: Vec<f64> = q
                .iter()
                .flat_map(|qx| length_weights(Rule::ShortestPerTask, n, qx).expect("w"))
                .collect();
            checks.push(self.check(
                "P08",
                &format!("N={n}: one generation reduces to the P05 weights"),
                &pooled,
                &single,
                EXACT_REL,
                EXACT_ABS,
            ));
        }
        if !self.small() {
            checks.push(self.skipped(
                "P08",
                "several generations: formula vs brute force",
                &format!("a task has more than {SMALL_TRACES} valid traces"),
            ));
            return Ok(checks);
        }
        let gens: Vec<Box<dyn Policy>> = vec![
            with_params(make, &perturbed(policy, 1.0, &mut rng)),
            with_params(make, &perturbed(policy, 0.5, &mut rng)),
            with_params(make, policy.params()),
        ];
        let tables: Vec<PolicyTable> = gens.iter().map(|g| PolicyTable::new(&**g, env)).collect();
        // Samples per task of each generation (unequal counts = a weighted
        // mixture of behaviours).
        for counts in [vec![1usize, 1, 1], vec![2, 2], vec![2, 1]] {
            let g_count = counts.len();
            let tabs = &tables[tables.len() - g_count..];
            for rule in [Rule::ShortestPerTask, Rule::OnePerTask, Rule::AllValid] {
                for pool in [Pool::Accumulate, Pool::Replace] {
                    let exact_g =
                        exact::curated_sft_expectation(env, policy, tabs, rule, pool, &counts)?;
                    let (used, used_counts) = if pool == Pool::Accumulate {
                        (tabs, &counts[..])
                    } else {
                        (&tabs[g_count - 1..], &counts[g_count - 1..])
                    };
                    let quantity = format!(
                        "{}, {}, samples per generation {counts:?}: formula vs brute force",
                        rule.label(),
                        pool.label()
                    );
                    let Some(brute) =
                        self.brute_force_pooled(policy, used, used_counts, rule, BRUTE_TUPLES)?
                    else {
                        checks.push(self.skipped(
                            "P08",
                            &quantity,
                            &format!("more than {BRUTE_TUPLES} sample tuples"),
                        ));
                        continue;
                    };
                    checks
                        .push(self.check("P08", &quantity, &exact_g, &brute, EXACT_REL, EXACT_ABS));
                }
            }
        }
        Ok(checks)
    }
}
