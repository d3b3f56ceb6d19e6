//! Tabular softmax: one logit per (task, reachable state, action).
//!
//! Parameter order: task by task, state by state (the deployment's state
//! order), action by action: θ[offset(x) + s·|A| + a].

use super::Policy;
use crate::mdp::{Deployment, StateIndex};

#[derive(Clone, Debug)]
pub struct Tabular {
    theta: Vec<f64>,
    offsets: Vec<usize>,
    num_actions: usize,
    tau: f64,
    penalty: f64,
}

impl Tabular {
    /// All logits zero: uniform over actions, apart from the fixed
    /// applicability prior (`penalty` ≥ 0, see [`super::add_applicability_prior`]).
    pub fn zeros(env: &Deployment, tau: f64, penalty: f64) -> Self {
        let mut offsets = Vec::with_capacity(env.tasks.len());
        let mut n = 0;
        for t in &env.tasks {
            offsets.push(n);
            n += t.num_states() * env.num_actions();
        }
        Tabular {
            theta: vec![0.0; n],
            offsets,
            num_actions: env.num_actions(),
            tau,
            penalty,
        }
    }

    fn at(&self, x: usize, s: StateIndex) -> usize {
        self.offsets[x] + s as usize * self.num_actions
    }
}

impl Policy for Tabular {
    fn params(&self) -> &[f64] {
        &self.theta
    }

    fn params_mut(&mut self) -> &mut [f64] {
        &mut self.theta
    }

    fn temperature(&self) -> f64 {
        self.tau
    }

    fn set_temperature(&mut self, tau: f64) {
        self.tau = tau;
    }

    fn clone_box(&self) -> Box<dyn Policy> {
        Box::new(self.clone())
    }

    /// Keeps the logits of the first `env.tasks.len()` tasks.
    fn for_task_prefix(&self, env: &Deployment) -> Box<dyn Policy> {
        let n = env.tasks.len();
        let end = self.offsets.get(n).copied().unwrap_or(self.theta.len());
        Box::new(Tabular {
            theta: self.theta[..end].to_vec(),
            offsets: self.offsets[..n].to_vec(),
            num_actions: self.num_actions,
            tau: self.tau,
            penalty: self.penalty,
        })
    }

    fn logits(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        let i = self.at(x, s);
        out.copy_from_slice(&self.theta[i..i + self.num_actions]);
        super::add_applicability_prior(env, x, s, self.penalty, out);
    }

    fn backprop_logits(
        &self,
        _env: &Deployment,
        x: usize,
        s: StateIndex,
        g: &[f64],
        grad: &mut [f64],
    ) {
        let i = self.at(x, s);
        for (gi, &v) in grad[i..i + self.num_actions].iter_mut().zip(g) {
            *gi += v;
        }
    }
}
