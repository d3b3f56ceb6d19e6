//! Sampled traces and the Monte-Carlo gradient estimators compared in the
//! proofs. Every estimator returns a flat gradient in the policy's
//! parameter order, and all are *ascent* directions on their objective (the
//! SFT "gradient" is −∇L_SFT).

use rand::RngExt;

use crate::exact::PolicyTable;
use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::policy::Policy;
use crate::rng::Rng;

/// One sampled trace: its task, the (state, action) decisions, validity.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trace {
    pub task: usize,
    pub steps: Vec<(StateIndex, ActionId)>,
    pub valid: bool,
    /// The text a free-text writer produced, as its token ids (what its
    /// log-probability is of); empty for policies that choose steps, whose
    /// trace *is* its steps. See [`crate::policy::transformer::PlanWriter`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<u32>,
}

impl Trace {
    /// Plan length of a valid trace (the decisions before END).
    pub fn plan_length(&self) -> usize {
        self.steps.len().saturating_sub(1)
    }

    /// log π(y) under a table.
    pub fn log_prob(&self, table: &PolicyTable, env: &Deployment) -> f64 {
        let n = env.num_actions();
        self.steps
            .iter()
            .map(|&(s, a)| table.logp[self.task][s as usize * n + a])
            .sum()
    }

    /// grad += weight · ∇θ log π_θ(y).
    pub fn accumulate_score(
        &self,
        env: &Deployment,
        policy: &dyn Policy,
        weight: f64,
        grad: &mut [f64],
    ) {
        policy.accumulate_trace_scores(env, &[(self, weight)], grad);
    }
}

/// The trace of a written plan of task `x`: `steps` are the plan's steps
/// as shared action ids (None: a step that names no action of the task),
/// `closed` whether the text ended the plan (else it ran out first).
///
/// A step naming an action applicable at the current state advances it;
/// the plan stops at the first step that names no action, is not
/// applicable, or lies past the horizon (invalid), and otherwise ends with
/// END, valid iff it is closed and the state satisfies the goal. The trace
/// keeps no tokens (the writer adds them).
pub fn follow_plan(env: &Deployment, x: usize, steps: &[Option<ActionId>], closed: bool) -> Trace {
    let space = &env.tasks[x];
    let mut s: StateIndex = 0;
    let mut out = Vec::with_capacity(steps.len() + 1);
    let mut valid = closed;
    for &step in steps {
        let Some(a) = step.filter(|&a| a != env.end()) else {
            valid = false;
            break;
        };
        out.push((s, a));
        // The step at time t = out.len() − 1 moves on only if t < H.
        let next = if out.len() <= env.horizon {
            space.successor(s, a)
        } else {
            None
        };
        match next {
            Some(t) => s = t,
            None => {
                return Trace {
                    task: x,
                    steps: out,
                    valid: false,
                    tokens: Vec::new(),
                };
            }
        }
    }
    out.push((s, env.end()));
    Trace {
        task: x,
        steps: out,
        valid: valid && space.is_goal[s as usize],
        tokens: Vec::new(),
    }
}

/// Σ_i w_i ∇θ log π(y_i) as a fresh vector; `weighted` entries with w = 0
/// are skipped (they add nothing).
fn weighted_scores(env: &Deployment, policy: &dyn Policy, weighted: &[(&Trace, f64)]) -> Vec<f64> {
    let mut g = vec![0.0; policy.num_params()];
    let nonzero: Vec<(&Trace, f64)> = weighted
        .iter()
        .copied()
        .filter(|&(_, w)| w != 0.0)
        .collect();
    if !nonzero.is_empty() {
        policy.accumulate_trace_scores(env, &nonzero, &mut g);
    }
    g
}

/// Draws one trace of task `x` from `table` (see [`crate::mdp`] for when a
/// trace stops).
pub fn sample_trace(env: &Deployment, table: &PolicyTable, x: usize, rng: &mut Rng) -> Trace {
    let n = env.num_actions();
    sample_trace_by(env, x, rng, |s, out| {
        out.copy_from_slice(&table.logp[x][s as usize * n..(s as usize + 1) * n])
    })
    .0
}

/// Draws one trace of task `x`, asking `log_probs(s, out)` for log π(·|s)
/// only at the states the trace visits (no table over the whole state
/// space). Returns the trace and its log-probability log π(y).
pub fn sample_trace_by(
    env: &Deployment,
    x: usize,
    rng: &mut Rng,
    mut log_probs: impl FnMut(StateIndex, &mut [f64]),
) -> (Trace, f64) {
    let space = &env.tasks[x];
    let n = env.num_actions();
    let end = env.end();
    let mut row = vec![0.0; n];
    let mut s: StateIndex = 0;
    let mut steps = Vec::new();
    let mut logp = 0.0;
    for t in 0..=env.horizon {
        log_probs(s, &mut row);
        let mut u: f64 = rng.random();
        let mut a = n - 1;
        for (i, lp) in row.iter().enumerate() {
            let p = lp.exp();
            if u < p {
                a = i;
                break;
            }
            u -= p;
        }
        logp += row[a];
        steps.push((s, a));
        if a == end {
            let valid = space.is_goal[s as usize];
            return (
                Trace {
                    task: x,
                    steps,
                    valid,
                    tokens: Vec::new(),
                },
                logp,
            );
        }
        let next = if t < env.horizon {
            space.successor(s, a)
        } else {
            None
        };
        match next {
            Some(n2) => s = n2,
            None => {
                return (
                    Trace {
                        task: x,
                        steps,
                        valid: false,
                        tokens: Vec::new(),
                    },
                    logp,
                );
            }
        }
    }
    unreachable!("a trace stops by time H")
}

/// `per_task` traces of every task, task by task.
pub fn sample_batch(
    env: &Deployment,
    table: &PolicyTable,
    per_task: usize,
    rng: &mut Rng,
) -> Vec<Trace> {
    (0..env.tasks.len())
        .flat_map(|x| (0..per_task).map(move |_| x))
        .map(|x| sample_trace(env, table, x, rng))
        .collect()
}

/// −∇L_SFT on the kept traces: (1/|kept|) Σ_kept ∇ log π(y). Zero if none.
pub fn sft_gradient(env: &Deployment, policy: &dyn Policy, kept: &[&Trace]) -> Vec<f64> {
    let w = 1.0 / kept.len().max(1) as f64;
    let weighted: Vec<(&Trace, f64)> = kept.iter().map(|&t| (t, w)).collect();
    weighted_scores(env, policy, &weighted)
}

/// −∇L_SFT computed a second way: per-state action counts of the kept
/// traces, one score accumulation per visited state. (Same quantity as
/// [`sft_gradient`], different arithmetic path.)
pub fn sft_gradient_from_counts(
    env: &Deployment,
    policy: &dyn Policy,
    kept: &[&Trace],
) -> Vec<f64> {
    let mut g = vec![0.0; policy.num_params()];
    if kept.is_empty() {
        return g;
    }
    let mut counts: std::collections::BTreeMap<(usize, StateIndex), Vec<f64>> = Default::default();
    for t in kept {
        for &(s, a) in &t.steps {
            counts
                .entry((t.task, s))
                .or_insert_with(|| vec![0.0; env.num_actions()])[a] += 1.0;
        }
    }
    let inv = 1.0 / kept.len() as f64;
    for ((x, s), mut c) in counts {
        c.iter_mut().for_each(|v| *v *= inv);
        policy.accumulate_score(env, x, s, &c, &mut g);
    }
    g
}

/// REINFORCE with binary reward: (1/N) Σ_i R_i ∇ log π(y_i).
pub fn reinforce(env: &Deployment, policy: &dyn Policy, batch: &[Trace]) -> Vec<f64> {
    let w = 1.0 / batch.len() as f64;
    let weighted: Vec<(&Trace, f64)> = batch.iter().filter(|t| t.valid).map(|t| (t, w)).collect();
    weighted_scores(env, policy, &weighted)
}

/// REINFORCE with a leave-one-out baseline per task:
/// (1/N) Σ_i (R_i − mean_{j≠i, same task} R_j) ∇ log π(y_i). Unbiased
/// because the baseline does not depend on y_i.
pub fn rloo(env: &Deployment, policy: &dyn Policy, batch: &[Trace]) -> Vec<f64> {
    let mut weighted = Vec::new();
    let w = 1.0 / batch.len() as f64;
    for x in 0..env.tasks.len() {
        let group: Vec<&Trace> = batch.iter().filter(|t| t.task == x).collect();
        let k = group.len();
        if k < 2 {
            continue;
        }
        let total: f64 = group.iter().map(|t| t.valid as u8 as f64).sum();
        for t in group {
            let r = t.valid as u8 as f64;
            let baseline = (total - r) / (k - 1) as f64;
            weighted.push((t, w * (r - baseline)));
        }
    }
    weighted_scores(env, policy, &weighted)
}

/// Group-normalised advantages (GRPO-style, no KL term, one on-policy
/// step so no ratio clipping): per task group,
/// A_i = (R_i − mean R) / (std R + ε), gradient (1/N) Σ_i A_i ∇ log π(y_i).
/// Biased (the normaliser depends on the group), zero for groups whose
/// rewards are all equal.
pub fn grpo(env: &Deployment, policy: &dyn Policy, batch: &[Trace]) -> Vec<f64> {
    const EPS: f64 = 1e-6;
    let mut weighted = Vec::new();
    let w = 1.0 / batch.len() as f64;
    for x in 0..env.tasks.len() {
        let group: Vec<&Trace> = batch.iter().filter(|t| t.task == x).collect();
        if group.len() < 2 {
            continue;
        }
        let k = group.len() as f64;
        let mean = group.iter().map(|t| t.valid as u8 as f64).sum::<f64>() / k;
        let std = (mean * (1.0 - mean)).sqrt();
        if std == 0.0 {
            continue;
        }
        for t in group {
            let a = (t.valid as u8 as f64 - mean) / (std + EPS);
            weighted.push((t, w * a));
        }
    }
    weighted_scores(env, policy, &weighted)
}

/// Importance-weighted REINFORCE for target π_θ from traces of a behaviour
/// β: ordinary (1/N) Σ ρ_i R_i ∇log π_θ(y_i) or self-normalised
/// Σ ρ_i R_i ∇log π_θ(y_i) / Σ ρ_i, with ρ_i = π_θ(y_i)/β(y_i). Returns the
/// gradient and the effective sample size (Σρ)²/Σρ².
pub fn importance_weighted(
    env: &Deployment,
    target: &dyn Policy,
    target_table: &PolicyTable,
    behaviour_table: &PolicyTable,
    batch: &[Trace],
    self_normalised: bool,
) -> (Vec<f64>, f64) {
    let rho: Vec<f64> = batch
        .iter()
        .map(|t| (t.log_prob(target_table, env) - t.log_prob(behaviour_table, env)).exp())
        .collect();
    let sum: f64 = rho.iter().sum();
    let sum_sq: f64 = rho.iter().map(|r| r * r).sum();
    let norm = if self_normalised {
        sum
    } else {
        batch.len() as f64
    };
    let weighted: Vec<(&Trace, f64)> = batch
        .iter()
        .zip(&rho)
        .filter(|(t, _)| t.valid)
        .map(|(t, r)| (t, r / norm))
        .collect();
    (weighted_scores(env, target, &weighted), sum * sum / sum_sq)
}
