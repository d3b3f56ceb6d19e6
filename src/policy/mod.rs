//! Policies π_θ(a | s, x) over the shared action set of a [`Deployment`],
//! each with one flat parameter vector θ in a documented order, so every
//! gradient in iterdeploy is a `Vec<f64>` of the same layout.
//!
//! Both kinds compute logits z(s, x) and then
//!   log π(a | s) = z_a / τ − log Σ_b exp(z_b / τ)      (temperature τ > 0),
//! so the score of a weighted sum of log-probabilities is
//!   ∂/∂z_b Σ_a c_a log π(a|s) = (c_b − (Σ_a c_a) π(b|s)) / τ,
//! which [`Policy::accumulate_score`] pushes back into θ.

mod memo;
mod mlp;
mod tabular;
pub mod transformer;

pub use memo::ScoreMemo;
pub use mlp::Mlp;
pub use tabular::Tabular;
pub use transformer::Transformer;

use crate::mdp::{Deployment, StateIndex};

pub trait Policy: Send + Sync {
    fn params(&self) -> &[f64];
    fn params_mut(&mut self) -> &mut [f64];
    fn temperature(&self) -> f64;
    /// Sets τ (sampling at another temperature than training).
    fn set_temperature(&mut self, tau: f64);
    /// A boxed copy (the deployment loop keeps several generations).
    fn clone_box(&self) -> Box<dyn Policy>;
    /// The same policy on `env`, a deployment made of the first tasks of
    /// this policy's deployment (same action and fact index; see
    /// [`crate::mdp::Deployment::prefix`]).
    fn for_task_prefix(&self, env: &Deployment) -> Box<dyn Policy>;

    /// Logits z(s) over all actions of `env` for state `s` of task `x`.
    fn logits(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]);

    /// θ-gradient of z·g (g: upstream gradient on the logits), added to `grad`.
    fn backprop_logits(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        g: &[f64],
        grad: &mut [f64],
    );

    fn num_params(&self) -> usize {
        self.params().len()
    }

    /// log π(·|s) into `out`.
    fn log_probs(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        self.logits(env, x, s, out);
        log_softmax_in_place(out, self.temperature());
    }

    /// grad += Σ_a c_a ∇θ log π(a|s).
    fn accumulate_score(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        c: &[f64],
        grad: &mut [f64],
    ) {
        let mut logp = vec![0.0; env.num_actions()];
        self.log_probs(env, x, s, &mut logp);
        let total: f64 = c.iter().sum();
        let tau = self.temperature();
        let g: Vec<f64> = c
            .iter()
            .zip(&logp)
            .map(|(&cb, &lp)| (cb - total * lp.exp()) / tau)
            .collect();
        self.backprop_logits(env, x, s, &g, grad);
    }
}

/// Adds the fixed applicability prior to logits: −`penalty` on every action
/// that is inapplicable in s (END is always allowed). It is a constant, not
/// a parameter, so gradients are unchanged; it models a writer that mostly
/// proposes applicable steps, giving realistic success rates.
pub fn add_applicability_prior(
    env: &Deployment,
    x: usize,
    s: StateIndex,
    penalty: f64,
    z: &mut [f64],
) {
    if penalty == 0.0 {
        return;
    }
    for v in z.iter_mut() {
        *v -= penalty;
    }
    for &(a, _) in &env.tasks[x].successors[s as usize] {
        z[a] += penalty;
    }
    z[env.end()] += penalty;
}

/// z ← z/τ − logsumexp(z/τ), stable for any magnitude.
pub fn log_softmax_in_place(z: &mut [f64], tau: f64) {
    let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v / tau));
    let lse = max + z.iter().map(|&v| (v / tau - max).exp()).sum::<f64>().ln();
    for v in z.iter_mut() {
        *v = *v / tau - lse;
    }
}
