//! Policies π_θ(a | s, x) over the shared action set of a [`Deployment`],
//! each with one flat parameter vector θ in a documented order, so every
//! gradient in iterdeploy is a `Vec<f64>` of the same layout.
//!
//! Both kinds compute logits z(s, x) and then
//!   log π(a | s) = z_a / τ − log Σ_b exp(z_b / τ)      (temperature τ > 0),
//! so the score of a weighted sum of log-probabilities is
//!   ∂/∂z_b Σ_a c_a log π(a|s) = (c_b − (Σ_a c_a) π(b|s)) / τ,
//! which [`Policy::accumulate_score`] pushes back into θ.
//!
//! Most policies are *Markov*: π(a | s, x) reads the current state only, so
//! every exact dynamic program of [`crate::exact`] applies. A policy that
//! reads its own earlier text — [`transformer::PlanWriter`], the LLM-shaped
//! writer — is not ([`Policy::is_markov`] is false): it has no per-state
//! logits, and it is sampled, scored and trained through the trace-level
//! methods ([`Policy::sample_traces`], [`Policy::trace_log_prob`],
//! [`Policy::accumulate_trace_scores`]), which Markov policies get from
//! their per-state logits by default.

mod memo;
mod mlp;
mod tabular;
pub mod transformer;

pub use memo::ScoreMemo;
pub use mlp::Mlp;
pub use tabular::Tabular;
pub use transformer::{PlanWriter, Transformer};

use crate::estimator::Trace;
use crate::mdp::{Deployment, StateIndex};
use crate::rng::Rng;

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

    /// The text a free-text writer wrote for `trace` (decoded from its
    /// tokens), to be kept beside a run's numbers; `None` for policies
    /// that choose steps (their trace is its steps) or a trace without
    /// tokens.
    fn completion_text(&self, _env: &Deployment, _trace: &Trace) -> Option<String> {
        None
    }

    /// Whether π reads only the current state (then [`Policy::logits`] is
    /// defined and exact dynamic programs apply). The deployment loop
    /// measures other policies by sampling.
    fn is_markov(&self) -> bool {
        true
    }

    /// One trace of task `x` per generator in `rngs` (sample i uses only
    /// `rngs[i]`), each with its log-probability log π(y) at this policy's
    /// temperature.
    fn sample_traces(&self, env: &Deployment, x: usize, rngs: &mut [Rng]) -> Vec<(Trace, f64)> {
        rngs.iter_mut()
            .map(|rng| {
                crate::estimator::sample_trace_by(env, x, rng, |s, out| {
                    self.log_probs(env, x, s, out)
                })
            })
            .collect()
    }

    /// [`Policy::sample_traces`] for several tasks at once: request
    /// (x, rngs) gets one trace of task x per generator, each generator
    /// advanced exactly as `sample_traces` would. A model that decodes
    /// rows in batches overrides it to batch across tasks.
    fn sample_tasks(
        &self,
        env: &Deployment,
        requests: &mut [(usize, Vec<Rng>)],
    ) -> Vec<Vec<(Trace, f64)>> {
        requests
            .iter_mut()
            .map(|(x, rngs)| self.sample_traces(env, *x, rngs))
            .collect()
    }

    /// [`Policy::trace_log_prob`] of each trace (a sequence model
    /// overrides it to score them in batches).
    fn trace_log_probs(&self, env: &Deployment, traces: &[&Trace]) -> Vec<f64> {
        traces.iter().map(|t| self.trace_log_prob(env, t)).collect()
    }

    /// log π(y) at this policy's temperature.
    fn trace_log_prob(&self, env: &Deployment, trace: &Trace) -> f64 {
        let mut row = vec![0.0; env.num_actions()];
        trace
            .steps
            .iter()
            .map(|&(s, a)| {
                self.log_probs(env, trace.task, s, &mut row);
                row[a]
            })
            .sum()
    }

    /// grad += Σ_i w_i ∇θ log π(y_i) over `weighted` = [(y_i, w_i)] — one
    /// call per batch, so a sequence model can score the batch in one pass.
    fn accumulate_trace_scores(
        &self,
        env: &Deployment,
        weighted: &[(&Trace, f64)],
        grad: &mut [f64],
    ) {
        let mut c = vec![0.0; env.num_actions()];
        for &(trace, w) in weighted {
            for &(s, a) in &trace.steps {
                c[a] = w;
                self.accumulate_score(env, trace.task, s, &c, grad);
                c[a] = 0.0;
            }
        }
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
/// that is inapplicable in s (END is always allowed), in every state,
/// including those first reached at depth H. It is a constant, not
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
    // Applicable in s, also where s lies at depth H and has no stored
    // successors (a step there ends the trace by the horizon, not by
    // inapplicability, so the prior must not count it as inapplicable).
    env.tasks[x].for_each_applicable(s, |a| z[a] += penalty);
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
