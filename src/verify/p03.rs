//! P03: the paper's effective-reward form vs the exact valid-conditional

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P03: the paper's effective-reward form vs the exact valid-conditional
    /// form. The corrected identity (with Z_pi/Z_beta) is checked exactly;
    /// the paper's form is reported (relative error, cosine) as β drifts.
    pub(super) fn p03(
        &self,
        policy: &dyn Policy,
        make: &dyn Fn() -> Box<dyn Policy>,
    ) -> Result<Vec<Check>> {
        let env = self.env;
        let lambda = 0.5;
        let mut rng = crate::rng::stream(self.seed, 103);
        let pi_table = PolicyTable::new(policy, env);
        let p_pi = exact::success_probabilities(env, &pi_table);
        let mut checks = Vec::new();
        // The valid-conditional law itself: Σ_x μ E_{π(·|x,R=1)}[∇log π_θ].
        let mut conditional = vec![0.0; policy.num_params()];
        for (x, &px) in p_pi.iter().enumerate() {
            for y in self.valid_traces(x)? {
                let w = env.mu[x] * trace_log_prob(env, &pi_table, x, &y).exp() / px;
                score(env, policy, x, &y, w, &mut conditional);
            }
        }
        checks.push(self.check(
            "P03",
            "valid-conditional score E[grad log pi | R=1]: DP vs enumeration",
            &exact::valid_conditional_score(env, &pi_table, policy),
            &conditional,
            EXACT_REL,
            EXACT_ABS,
        ));
        for sigma in [0.0, 0.3, 1.0, 3.0] {
            let beta = with_params(make, &perturbed(policy, sigma, &mut rng));
            let beta_table = PolicyTable::new(&*beta, env);
            let p_beta = exact::success_probabilities(env, &beta_table);
            if p_pi.iter().chain(&p_beta).any(|&p| p <= 0.0) {
                continue;
            }
            // True gradient of the valid-conditional λ-mixture, by enumeration:
            // Σ_x μ_x Σ_y [(1−λ) π(y)/Z_π + λ β(y)/Z_β] R(y) ∇log π_θ(y).
            let mut truth = vec![0.0; policy.num_params()];
            for x in 0..env.tasks.len() {
                for y in self.valid_traces(x)? {
                    let pi_y = trace_log_prob(env, &pi_table, x, &y).exp();
                    let beta_y = trace_log_prob(env, &beta_table, x, &y).exp();
                    let w =
                        env.mu[x] * ((1.0 - lambda) * pi_y / p_pi[x] + lambda * beta_y / p_beta[x]);
                    score(env, policy, x, &y, w, &mut truth);
                }
            }
            let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
            let s_pi = |coef: &[f64]| exact::weighted_score(env, &pi_table, policy, coef, &ones);
            let s_beta =
                |coef: &[f64]| exact::weighted_score(env, &beta_table, policy, coef, &ones);
            // Corrected form: REINFORCE under π_θ with reward
            // R[(1−λ) + λ (β/π)(Z_π/Z_β)], scaled by 1/Z_π per task.
            let c_pi: Vec<f64> = (0..env.tasks.len())
                .map(|x| env.mu[x] * (1.0 - lambda) / p_pi[x])
                .collect();
            let c_beta: Vec<f64> = (0..env.tasks.len())
                .map(|x| env.mu[x] * lambda / p_beta[x])
                .collect();
            let corrected: Vec<f64> = s_pi(&c_pi)
                .iter()
                .zip(s_beta(&c_beta))
                .map(|(a, b)| a + b)
                .collect();
            checks.push(self.check(
                "P03",
                &format!("sigma={sigma}: corrected form (with Z_pi/Z_beta) vs enumeration"),
                &corrected,
                &truth,
                EXACT_REL,
                EXACT_ABS,
            ));
            // Paper's form: R[(1−λ) + λ β/π] without normalisers.
            let c1: Vec<f64> = env.mu.iter().map(|m| m * (1.0 - lambda)).collect();
            let c2: Vec<f64> = env.mu.iter().map(|m| m * lambda).collect();
            let paper: Vec<f64> = s_pi(&c1)
                .iter()
                .zip(s_beta(&c2))
                .map(|(a, b)| a + b)
                .collect();
            let cos =
                dot(&paper, &truth) / (dot(&paper, &paper).sqrt() * dot(&truth, &truth).sqrt());
            let mut c = self.check(
                "P03",
                &format!("sigma={sigma}: paper's form vs truth (report; cosine {cos:.6})"),
                &paper,
                &truth,
                f64::INFINITY,
                EXACT_ABS,
            );
            c.tolerance = "reported".into();
            c.pass = true;
            checks.push(c);
        }
        Ok(checks)
    }
}
