//! A policy that remembers its per-step scores ∇θ log π(a | s, x).
//!
//! Monte-Carlo checks (P07) draw tens of thousands of traces from a fixed
//! θ, and a peaked policy writes the same few steps again and again. For
//! the transformer each score is a full forward and backward pass, so
//! recomputing them dominated `verify --transformer`. Since
//! Σ_steps w·∇ log π(a|s) is linear in w, one stored vector per visited
//! (task, state, action) answers every later request exactly (up to the
//! rounding of one multiplication). Changing θ or τ forgets everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Policy;
use crate::mdp::{ActionId, Deployment, StateIndex};

type Key = (usize, StateIndex, ActionId);

/// One stored step score. A tabular policy's score touches one state's row
/// of θ only, so storing it densely cost θ-many numbers per visited step
/// (2.4 MB each on a 6-block task, gigabytes over a P07 run); scores with
/// few non-zeros are kept as (index, value) pairs.
enum Stored {
    Dense(Vec<f64>),
    Sparse(Vec<(u32, f64)>),
}

impl Stored {
    fn new(g: Vec<f64>) -> Self {
        let nnz = g.iter().filter(|v| **v != 0.0).count();
        // (u32, f64) pairs take 16 bytes (with padding) against 8 per
        // dense entry: sparse pays off below half full.
        if nnz * 2 < g.len() && g.len() <= u32::MAX as usize {
            Stored::Sparse(
                g.iter()
                    .enumerate()
                    .filter(|(_, v)| **v != 0.0)
                    .map(|(i, &v)| (i as u32, v))
                    .collect(),
            )
        } else {
            Stored::Dense(g)
        }
    }

    /// grad += w · score.
    fn add_to(&self, w: f64, grad: &mut [f64]) {
        match self {
            Stored::Dense(v) => grad.iter_mut().zip(v).for_each(|(g, v)| *g += w * v),
            Stored::Sparse(pairs) => pairs.iter().for_each(|&(i, v)| grad[i as usize] += w * v),
        }
    }
}

pub struct ScoreMemo {
    inner: Box<dyn Policy>,
    scores: Mutex<HashMap<Key, Arc<Stored>>>,
}

impl ScoreMemo {
    pub fn new(inner: Box<dyn Policy>) -> Self {
        ScoreMemo {
            inner,
            scores: Mutex::new(HashMap::new()),
        }
    }

    /// How many distinct step scores are stored.
    pub fn len(&self) -> usize {
        self.scores.lock().expect("memo lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn forget(&mut self) {
        self.scores.get_mut().expect("memo lock").clear();
    }

    fn score(&self, env: &Deployment, x: usize, s: StateIndex, a: ActionId) -> Arc<Stored> {
        if let Some(v) = self.scores.lock().expect("memo lock").get(&(x, s, a)) {
            return Arc::clone(v);
        }
        let mut unit = vec![0.0; env.num_actions()];
        unit[a] = 1.0;
        let mut g = vec![0.0; self.inner.num_params()];
        self.inner.accumulate_score(env, x, s, &unit, &mut g);
        let g = Arc::new(Stored::new(g));
        self.scores
            .lock()
            .expect("memo lock")
            .insert((x, s, a), Arc::clone(&g));
        g
    }
}

impl Policy for ScoreMemo {
    fn params(&self) -> &[f64] {
        self.inner.params()
    }
    fn params_mut(&mut self) -> &mut [f64] {
        self.forget();
        self.inner.params_mut()
    }
    fn temperature(&self) -> f64 {
        self.inner.temperature()
    }
    fn set_temperature(&mut self, tau: f64) {
        self.forget();
        self.inner.set_temperature(tau);
    }
    fn clone_box(&self) -> Box<dyn Policy> {
        Box::new(ScoreMemo::new(self.inner.clone_box()))
    }
    fn for_task_prefix(&self, env: &Deployment) -> Box<dyn Policy> {
        Box::new(ScoreMemo::new(self.inner.for_task_prefix(env)))
    }
    fn logits(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        self.inner.logits(env, x, s, out);
    }
    fn backprop_logits(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        g: &[f64],
        grad: &mut [f64],
    ) {
        self.inner.backprop_logits(env, x, s, g, grad);
    }
    fn log_probs(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        self.inner.log_probs(env, x, s, out);
    }
    /// A weight on one action (what a trace's score asks for) is served
    /// from the memo; any other mix goes to the wrapped policy.
    fn accumulate_score(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        c: &[f64],
        grad: &mut [f64],
    ) {
        let mut nonzero = c.iter().enumerate().filter(|(_, v)| **v != 0.0);
        match (nonzero.next(), nonzero.next()) {
            (None, _) => {}
            (Some((a, &w)), None) => self.score(env, x, s, a).add_to(w, grad),
            _ => self.inner.accumulate_score(env, x, s, c, grad),
        }
    }
}
