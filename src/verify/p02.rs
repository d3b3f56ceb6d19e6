//! P02: E[Σ_pool ∇log π_θ] (DP, behaviour occupancies) equals

use super::prelude::*;
use super::*;

impl Ctx<'_> {
    /// P02: E[Σ_pool ∇log π_θ] (DP, behaviour occupancies) equals
    /// N Σ_j w_j E_{π_θ}[(π_j/π_θ) R ∇log π_θ] (explicit trace enumeration
    /// with importance ratios), and at θ = θ_j the j-th term is N∇J(θ_j)
    /// (checked against finite differences of J).
    pub(super) fn p02(
        &self,
        policy: &mut dyn Policy,
        make: &dyn Fn() -> Box<dyn Policy>,
    ) -> Result<Vec<Check>> {
        let env = self.env;
        let n_samples = 10.0;
        let weights = [0.3, 0.7];
        let mut rng = crate::rng::stream(self.seed, 102);
        let behaviours: Vec<Box<dyn Policy>> = (0..2)
            .map(|j| with_params(make, &perturbed(policy, 0.5 * (j + 1) as f64, &mut rng)))
            .collect();
        let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
        let all = vec![1.0; env.tasks.len()];
        let mut dp = vec![0.0; policy.num_params()];
        for (j, b) in behaviours.iter().enumerate() {
            let s = exact::weighted_score(env, &PolicyTable::new(&**b, env), policy, &all, &ones);
            for (d, v) in dp.iter_mut().zip(s) {
                *d += n_samples * weights[j] * v;
            }
        }
        let target = PolicyTable::new(policy, env);
        let mut enumerated = vec![0.0; policy.num_params()];
        for (j, b) in behaviours.iter().enumerate() {
            let bt = PolicyTable::new(&**b, env);
            for x in 0..env.tasks.len() {
                for y in self.valid_traces(x)? {
                    let log_pi = trace_log_prob(env, &target, x, &y);
                    let rho = (trace_log_prob(env, &bt, x, &y) - log_pi).exp();
                    score(
                        env,
                        policy,
                        x,
                        &y,
                        n_samples * weights[j] * log_pi.exp() * rho,
                        &mut enumerated,
                    );
                }
            }
        }
        let mut checks = vec![self.check(
            "P02",
            "pool expectation: DP vs enumeration with ratios pi_j/pi_theta",
            &dp,
            &enumerated,
            EXACT_REL,
            EXACT_ABS,
        )];
        // At θ = θ_j the j-th term N E_{π_j}[R ∇log π_j] is N ∇J(θ_j).
        let mut bj = with_params(make, behaviours[0].params());
        let on_policy =
            exact::weighted_score(env, &PolicyTable::new(&*bj, env), &*bj, &env.mu, &ones);
        let dirs = random_directions(bj.num_params(), 6, &mut rng);
        let fd = fd_directional(&mut *bj, &dirs, &|p| {
            exact::objective(env, &PolicyTable::new(p, env))
        });
        let proj: Vec<f64> = dirs.iter().map(|u| dot(u, &on_policy)).collect();
        checks.push(self.check(
            "P02",
            "theta = theta_j: term vs finite differences of J",
            &proj,
            &fd,
            FD_REL,
            FD_ABS,
        ));
        Ok(checks)
    }
}
