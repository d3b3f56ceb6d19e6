//! A one-hidden-layer MLP shared by all tasks of a deployment: the input is
//! the state's fact bits followed by the goal's fact bits (shared fact
//! index), the output one logit per action.
//!
//!   h = tanh(W1 x + b1),   z = W2 h + b2
//!
//! Parameter order: W1 (hidden × inputs, row-major), b1, W2 (actions ×
//! hidden, row-major), b2. Backprop is written out by hand; the inputs are
//! sparse 0/1 vectors, so only the active columns of W1 are touched.

use nalgebra::{DMatrixView, DVector, DVectorView};
use rand_distr::{Distribution, Normal};

use super::Policy;
use crate::mdp::{Deployment, StateIndex};

#[derive(Clone, Debug)]
pub struct Mlp {
    theta: Vec<f64>,
    inputs: usize,
    hidden: usize,
    outputs: usize,
    tau: f64,
    penalty: f64,
}

impl Mlp {
    /// Weights ~ N(0, scale²/fan_in) from our seeded generator; biases 0.
    /// `penalty`: the fixed applicability prior (see
    /// [`super::add_applicability_prior`]).
    pub fn new(
        env: &Deployment,
        hidden: usize,
        tau: f64,
        scale: f64,
        penalty: f64,
        rng: &mut crate::rng::Rng,
    ) -> Self {
        let inputs = 2 * env.num_features;
        let outputs = env.num_actions();
        let n = hidden * inputs + hidden + outputs * hidden + outputs;
        let mut theta = vec![0.0; n];
        let w1 = Normal::new(0.0, scale / (inputs.max(1) as f64).sqrt()).expect("finite scale");
        let w2 = Normal::new(0.0, scale / (hidden.max(1) as f64).sqrt()).expect("finite scale");
        for v in &mut theta[..hidden * inputs] {
            *v = w1.sample(rng);
        }
        let w2_start = hidden * inputs + hidden;
        for v in &mut theta[w2_start..w2_start + outputs * hidden] {
            *v = w2.sample(rng);
        }
        Mlp {
            theta,
            inputs,
            hidden,
            outputs,
            tau,
            penalty,
        }
    }

    /// (inputs, hidden units, outputs).
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.inputs, self.hidden, self.outputs)
    }

    /// Indices of the 1s of the input vector: state facts, then goal facts
    /// offset by the number of shared facts.
    pub fn active_inputs(&self, env: &Deployment, x: usize, s: StateIndex) -> Vec<usize> {
        let t = &env.tasks[x];
        let half = env.num_features;
        t.state_features[s as usize]
            .iter()
            .map(|&f| f as usize)
            .chain(t.goal_features.iter().map(|&f| half + f as usize))
            .collect()
    }

    fn hidden_activations(&self, active: &[usize]) -> DVector<f64> {
        let (h, d) = (self.hidden, self.inputs);
        let b1 = &self.theta[h * d..h * d + h];
        DVector::from_iterator(
            h,
            (0..h).map(|j| {
                let row = &self.theta[j * d..(j + 1) * d];
                (b1[j] + active.iter().map(|&i| row[i]).sum::<f64>()).tanh()
            }),
        )
    }

    fn w2(&self) -> DMatrixView<'_, f64> {
        let start = self.hidden * self.inputs + self.hidden;
        // nalgebra is column-major: a row-major (outputs × hidden) block is
        // the column-major (hidden × outputs) matrix, transposed below.
        DMatrixView::from_slice(
            &self.theta[start..start + self.outputs * self.hidden],
            self.hidden,
            self.outputs,
        )
    }
}

impl Policy for Mlp {
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

    /// The network reads shared fact bits only; it does not depend on the
    /// task list.
    fn for_task_prefix(&self, _env: &Deployment) -> Box<dyn Policy> {
        Box::new(self.clone())
    }

    fn logits(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        let h = self.hidden_activations(&self.active_inputs(env, x, s));
        let z = self.w2().transpose() * &h;
        let b2_start = self.theta.len() - self.outputs;
        for (o, (zi, b)) in out.iter_mut().zip(z.iter().zip(&self.theta[b2_start..])) {
            *o = zi + b;
        }
        super::add_applicability_prior(env, x, s, self.penalty, out);
    }

    fn backprop_logits(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        g: &[f64],
        grad: &mut [f64],
    ) {
        let (hd, d, o) = (self.hidden, self.inputs, self.outputs);
        let active = self.active_inputs(env, x, s);
        let h = self.hidden_activations(&active);
        let gz = DVectorView::from_slice(g, o);
        // z = W2 h + b2: ∂W2 = g hᵀ, ∂b2 = g, ∂h = W2ᵀ g.
        let w2_start = hd * d + hd;
        for a in 0..o {
            if g[a] == 0.0 {
                continue;
            }
            let row = &mut grad[w2_start + a * hd..w2_start + (a + 1) * hd];
            for (r, hj) in row.iter_mut().zip(h.iter()) {
                *r += g[a] * hj;
            }
        }
        let b2_start = self.theta.len() - o;
        for (gb, &v) in grad[b2_start..].iter_mut().zip(g) {
            *gb += v;
        }
        let gh = self.w2() * gz;
        // h = tanh(u): ∂u = ∂h ⊙ (1 − h²); u = W1 x + b1 with x ∈ {0,1}.
        for j in 0..hd {
            let gu = gh[j] * (1.0 - h[j] * h[j]);
            if gu == 0.0 {
                continue;
            }
            for &i in &active {
                grad[j * d + i] += gu;
            }
            grad[hd * d + j] += gu;
        }
    }
}
