//! Exact expectations over all traces by dynamic programming on the
//! reachable state graph (no sampling), in f64.
//!
//! The one workhorse is the *weighted score* of a behaviour policy β for a
//! target policy π_θ under a length-dependent reward:
//!
//!   S(β, θ, w) = Σ_x c_x E_{y~β(·|x)} [ w_x(|y|) R(x,y) ∇θ log π_θ(y|x) ]
//!
//! where |y| is the plan length of a valid trace. Since
//! ∇ log π_θ(y) = Σ_t ∇ log π_θ(a_t|s_t) and the reward comes at the end,
//!   S = Σ_x c_x Σ_t Σ_s d_t(s) Σ_a β(a|s) Q_t(s,a) ∇ log π_θ(a|s)
//! with the behaviour's time-indexed occupancy d_t and action values
//!   Q_t(s,END) = w(t)·goal(s),  Q_t(s,a) = V_{t+1}(s'(a)) for applicable a,
//!   t < H, and 0 otherwise;   V_t(s) = Σ_a β(a|s) Q_t(s,a).
//! Special cases: β = π_θ and w ≡ 1 give ∇J(θ) (policy-gradient theorem);
//! w ≡ 1 with β ≠ π_θ gives the expected SFT gradient of a pool of β's valid
//! traces; the curation rules of [`crate::curation`] are length weights.

use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::policy::Policy;
use crate::{Error, Result};

/// log π(·|s) for every state of every task, computed once.
pub struct PolicyTable {
    /// Per task: states × actions, row-major.
    pub logp: Vec<Vec<f64>>,
    num_actions: usize,
}

impl PolicyTable {
    pub fn new(policy: &dyn Policy, env: &Deployment) -> Self {
        assert!(
            policy.is_markov(),
            "exact tables need a policy that reads only the current state"
        );
        let n = env.num_actions();
        let logp = env
            .tasks
            .iter()
            .enumerate()
            .map(|(x, t)| {
                let mut table = vec![0.0; t.num_states() * n];
                for s in 0..t.num_states() {
                    policy.log_probs(env, x, s as StateIndex, &mut table[s * n..(s + 1) * n]);
                }
                table
            })
            .collect();
        PolicyTable {
            logp,
            num_actions: n,
        }
    }

    #[inline]
    pub fn prob(&self, x: usize, s: usize, a: usize) -> f64 {
        self.logp[x][s * self.num_actions + a].exp()
    }
}

/// The reward of a trace that writes END in state s at time t of task x:
/// `r(x, s, t)`. Validity with length weights is `goal(s)·w_x(t)`; other
/// rewards (e.g. a graded score, P06) fit the same dynamic programs.
pub type EndReward<'a> = &'a dyn Fn(usize, usize, usize) -> f64;

/// Per task: V_t(s) for t = 0..=H under `beh` with END reward r.
fn values(env: &Deployment, beh: &PolicyTable, x: usize, r: EndReward) -> Vec<Vec<f64>> {
    let t_ = &env.tasks[x];
    let h = env.horizon;
    let end = env.end();
    let mut v = vec![vec![0.0; t_.num_states()]; h + 1];
    for t in (0..=h).rev() {
        for s in 0..t_.num_states() {
            let mut val = beh.prob(x, s, end) * r(x, s, t);
            if t < h {
                for &(a, next) in &t_.successors[s] {
                    val += beh.prob(x, s, a) * v[t + 1][next as usize];
                }
            }
            v[t][s] = val;
        }
    }
    v
}

/// Per task: for every state s and action a, the expected reward-weighted
/// number of times a trace of `beh` takes a in s:
///   c_s[a] = Σ_t d_t(s) β(a|s) Q_t(s,a) = E_β[ r(y) · #{t: (s_t,a_t) = (s,a)} ].
/// Row-major states × actions.
// `s` indexes the occupancy and value tables together.
#[allow(clippy::needless_range_loop)]
fn action_weights(env: &Deployment, beh: &PolicyTable, x: usize, r: EndReward) -> Vec<f64> {
    let n = env.num_actions();
    let end = env.end();
    let v = values(env, beh, x, r);
    let d = occupancy(env, beh, x);
    let t_ = &env.tasks[x];
    let mut c = vec![0.0; t_.num_states() * n];
    for s in 0..t_.num_states() {
        let row = &mut c[s * n..(s + 1) * n];
        for t in 0..=env.horizon {
            let mass = d[t][s];
            if mass == 0.0 {
                continue;
            }
            row[end] += mass * beh.prob(x, s, end) * r(x, s, t);
            if t < env.horizon {
                for &(a, next) in &t_.successors[s] {
                    row[a] += mass * beh.prob(x, s, a) * v[t + 1][next as usize];
                }
            }
        }
    }
    c
}

/// Expected END reward E_π[r(y)] of each task.
pub fn expected_reward(env: &Deployment, pi: &PolicyTable, r: EndReward) -> Vec<f64> {
    (0..env.tasks.len())
        .map(|x| values(env, pi, x, r)[0][0])
        .collect()
}

/// The tabular policy that fits the reward-filtered trace law of `beh`
/// by maximum likelihood with full capacity (one EM step):
///   π'(a|s) = c_s[a] / Σ_b c_s[b]   with c as in [`action_weights`];
/// states the filtered law never visits keep β's row.
pub fn fit_filtered(env: &Deployment, beh: &PolicyTable, r: EndReward) -> PolicyTable {
    fit_filtered_onto(env, beh, r, beh)
}

/// [`fit_filtered`], with the rows of states the filtered law never
/// visits taken from `rest` (e.g. the base policy a retraining starts
/// from) instead of from β.
pub fn fit_filtered_onto(
    env: &Deployment,
    beh: &PolicyTable,
    r: EndReward,
    rest: &PolicyTable,
) -> PolicyTable {
    let n = env.num_actions();
    let logp = (0..env.tasks.len())
        .map(|x| {
            let c = action_weights(env, beh, x, r);
            let mut out = rest.logp[x].clone();
            for (s, row) in c.chunks(n).enumerate() {
                let total: f64 = row.iter().sum();
                if total > 0.0 {
                    for (o, &v) in out[s * n..(s + 1) * n].iter_mut().zip(row) {
                        *o = (v / total).ln();
                    }
                }
            }
            out
        })
        .collect();
    PolicyTable {
        logp,
        num_actions: n,
    }
}

/// Per task: the reward-weighted visit counts c_s[a] of `beh`
/// ([`action_weights`]), row-major states × actions: the expected counts
/// of a pool of `beh`'s traces filtered by r, which is all an SFT loss on
/// that pool depends on for a state-based policy.
pub fn filtered_counts(env: &Deployment, beh: &PolicyTable, r: EndReward) -> Vec<Vec<f64>> {
    (0..env.tasks.len())
        .map(|x| action_weights(env, beh, x, r))
        .collect()
}

/// Σ_x coef[x] Σ_{s,a} counts[x][s,a] · log π(a|s): the expected
/// log-likelihood of a pool with these counts under `pi` (pairs with zero
/// count contribute nothing, even where log π = −∞).
pub fn pool_log_likelihood(
    env: &Deployment,
    counts: &[Vec<f64>],
    pi: &PolicyTable,
    coef: &[f64],
) -> f64 {
    (0..env.tasks.len())
        .map(|x| {
            coef[x]
                * counts[x]
                    .iter()
                    .zip(&pi.logp[x])
                    .filter(|(c, _)| **c != 0.0)
                    .map(|(c, lp)| c * lp)
                    .sum::<f64>()
        })
        .sum()
}

/// Per task: d_t(s), the probability that a trace of `beh` is in s at time
/// t and has not stopped.
fn occupancy(env: &Deployment, beh: &PolicyTable, x: usize) -> Vec<Vec<f64>> {
    let t_ = &env.tasks[x];
    let h = env.horizon;
    let mut d = vec![vec![0.0; t_.num_states()]; h + 1];
    d[0][0] = 1.0;
    for t in 0..h {
        for s in 0..t_.num_states() {
            let mass = d[t][s];
            if mass == 0.0 {
                continue;
            }
            for &(a, next) in &t_.successors[s] {
                d[t + 1][next as usize] += mass * beh.prob(x, s, a);
            }
        }
    }
    d
}

/// Success probability p(x) of each task (π's probability of a valid trace).
pub fn success_probabilities(env: &Deployment, pi: &PolicyTable) -> Vec<f64> {
    expected_reward(env, pi, &|x, s, _| valid(env, x, s))
}

/// R at END: 1 in a goal state.
fn valid(env: &Deployment, x: usize, s: usize) -> f64 {
    if env.tasks[x].is_goal[s] { 1.0 } else { 0.0 }
}

/// J(θ) = Σ_x μ(x) p(x).
pub fn objective(env: &Deployment, pi: &PolicyTable) -> f64 {
    success_probabilities(env, pi)
        .iter()
        .zip(&env.mu)
        .map(|(p, m)| p * m)
        .sum()
}

/// Per task: P(valid and plan length = L) for L = 0..=H. Summing over L
/// gives p(x); dividing by p(x) gives the length law of π(·|x, R=1).
pub fn valid_length_distribution(env: &Deployment, pi: &PolicyTable) -> Vec<Vec<f64>> {
    let end = env.end();
    (0..env.tasks.len())
        .map(|x| {
            let d = occupancy(env, pi, x);
            let t_ = &env.tasks[x];
            (0..=env.horizon)
                .map(|l| {
                    (0..t_.num_states())
                        .filter(|&s| t_.is_goal[s])
                        .map(|s| d[l][s] * pi.prob(x, s, end))
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// S(β, θ, w) as defined in the module docs. `coef[x]` multiplies task x;
/// `length_weights[x][L]` is w_x(L) for L = 0..=H.
pub fn weighted_score(
    env: &Deployment,
    beh: &PolicyTable,
    target: &dyn Policy,
    coef: &[f64],
    length_weights: &[Vec<f64>],
) -> Vec<f64> {
    let mut grad = vec![0.0; target.num_params()];
    let n = env.num_actions();
    for x in 0..env.tasks.len() {
        if coef[x] == 0.0 {
            continue;
        }
        let w = &length_weights[x];
        let c = action_weights(env, beh, x, &|x, s, t| valid(env, x, s) * w[t]);
        for (s, row) in c.chunks(n).enumerate() {
            if row.iter().any(|&v| v != 0.0) {
                let scaled: Vec<f64> = row.iter().map(|v| v * coef[x]).collect();
                target.accumulate_score(env, x, s as StateIndex, &scaled, &mut grad);
            }
        }
    }
    grad
}

/// ∇J(θ) = Σ_x μ(x) ∇p(x).
pub fn objective_gradient(env: &Deployment, policy: &dyn Policy) -> Vec<f64> {
    objective_gradient_at(env, policy, &PolicyTable::new(policy, env))
}

/// [`objective_gradient`] when `policy`'s table is already computed.
pub fn objective_gradient_at(
    env: &Deployment,
    policy: &dyn Policy,
    table: &PolicyTable,
) -> Vec<f64> {
    let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
    weighted_score(env, table, policy, &env.mu, &ones)
}

/// ∇p(x) for one task.
pub fn task_gradient(env: &Deployment, policy: &dyn Policy, x: usize) -> Vec<f64> {
    let table = PolicyTable::new(policy, env);
    let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
    let mut coef = vec![0.0; env.tasks.len()];
    coef[x] = 1.0;
    weighted_score(env, &table, policy, &coef, &ones)
}

/// Expected SFT gradient E[Σ_x μ(x) Σ_{y kept for x} ∇log π_θ(y)] when
/// `samples[j]` traces per task are drawn from generation j of
/// `generations` (oldest first, each a behaviour policy table; unequal
/// counts give a weighted mixture of behaviours), curated by `rule` over the
/// pool: `Accumulate` curates over all generations' samples, `Replace` over
/// the last generation's only. Errors for [`Rule::None`], which is not
/// a rule on valid traces.
pub fn curated_sft_expectation(
    env: &Deployment,
    target: &dyn Policy,
    generations: &[PolicyTable],
    rule: crate::curation::Rule,
    pool: crate::curation::Pool,
    samples: &[usize],
) -> crate::Result<Vec<f64>> {
    use crate::curation::{Pool, Rule, pooled_shortest_weights};
    if samples.len() != generations.len() || generations.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "{} generation(s) but {} sample count(s)",
            generations.len(),
            samples.len()
        )));
    }
    let last = generations.len() - 1;
    let (gens, n): (&[PolicyTable], &[usize]) = match pool {
        Pool::Accumulate => (generations, samples),
        Pool::Replace => (&generations[last..], &samples[last..]),
    };
    let laws: Vec<Vec<Vec<f64>>> = gens
        .iter()
        .map(|g| valid_length_distribution(env, g))
        .collect();
    let h = env.horizon + 1;
    let mut grad = vec![0.0; target.num_params()];
    for x in 0..env.tasks.len() {
        let q: Vec<Vec<f64>> = laws.iter().map(|l| l[x].clone()).collect();
        let weights: Vec<Vec<f64>> = match rule {
            Rule::None => {
                return Err(crate::Error::Invalid(
                    "curation rule `none` keeps invalid traces too; it has no validity-weighted form".into(),
                ));
            }
            Rule::AllValid => n.iter().map(|&nj| vec![nj as f64; h]).collect(),
            Rule::ShortestPerTask => pooled_shortest_weights(n, &q),
            // One uniformly chosen valid sample: the shortest-rule formula
            // with every valid trace in a single length class.
            Rule::OnePerTask => {
                let collapsed: Vec<Vec<f64>> = q.iter().map(|qj| vec![qj.iter().sum()]).collect();
                pooled_shortest_weights(n, &collapsed)
                    .into_iter()
                    .map(|w| vec![w[0]; h])
                    .collect()
            }
        };
        let mut coef = vec![0.0; env.tasks.len()];
        coef[x] = env.mu[x];
        for (g, w) in gens.iter().zip(&weights) {
            let mut lw = vec![vec![0.0; h]; env.tasks.len()];
            lw[x] = w.clone();
            for (acc, v) in grad
                .iter_mut()
                .zip(weighted_score(env, g, target, &coef, &lw))
            {
                *acc += v;
            }
        }
    }
    Ok(grad)
}

/// Σ_x μ(x) E_{y~β(·|x, R=1)}[∇log π_θ(y|x)]: the SFT gradient of the
/// valid-conditional law of `beh` (tasks where β never succeeds contribute 0).
pub fn valid_conditional_score(
    env: &Deployment,
    beh: &PolicyTable,
    target: &dyn Policy,
) -> Vec<f64> {
    let p = success_probabilities(env, beh);
    let coef: Vec<f64> = env
        .mu
        .iter()
        .zip(&p)
        .map(|(m, &px)| if px > 0.0 { m / px } else { 0.0 })
        .collect();
    let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
    weighted_score(env, beh, target, &coef, &ones)
}

/// KL(π ‖ ρ) between the trace laws of two policies, per task:
///   KL_x = Σ_t Σ_s d^π_t(s) Σ_a π(a|s) (log π(a|s) − log ρ(a|s)),
/// the occupancy-weighted per-decision KL (chain rule for the sequence of
/// decisions; a trace stops at END, at an inapplicable action, or at H).
pub fn trajectory_kl(env: &Deployment, pi: &PolicyTable, rho: &PolicyTable) -> Vec<f64> {
    let n = env.num_actions();
    (0..env.tasks.len())
        .map(|x| {
            let d = occupancy(env, pi, x);
            let (lp, lq) = (&pi.logp[x], &rho.logp[x]);
            (0..env.tasks[x].num_states())
                .map(|s| {
                    let mass: f64 = d.iter().map(|dt| dt[s]).sum();
                    if mass == 0.0 {
                        return 0.0;
                    }
                    let row = s * n..(s + 1) * n;
                    let kl: f64 = lp[row.clone()]
                        .iter()
                        .zip(&lq[row])
                        .map(|(&a, &b)| {
                            if a == f64::NEG_INFINITY {
                                0.0
                            } else {
                                a.exp() * (a - b)
                            }
                        })
                        .sum();
                    mass * kl
                })
                .sum()
        })
        .collect()
}

/// How many valid traces task `x` has within the horizon (plans of length
/// ≤ H that end in a goal state, each followed by END), counted by dynamic
/// programming in f64 without listing them: what
/// [`enumerate_valid_traces`] would return, known before it allocates.
pub fn count_valid_traces(env: &Deployment, x: usize) -> f64 {
    let space = &env.tasks[x];
    let goal = |s: usize| if space.is_goal[s] { 1.0 } else { 0.0 };
    let mut next: Vec<f64> = (0..space.num_states()).map(goal).collect();
    for _ in 0..env.horizon {
        next = (0..space.num_states())
            .map(|s| {
                goal(s)
                    + space.successors[s]
                        .iter()
                        .map(|&(_, t)| next[t as usize])
                        .sum::<f64>()
            })
            .collect();
    }
    next[0]
}

/// Every valid trace of task `x`: decisions (state, action), END last.
pub fn enumerate_valid_traces(
    env: &Deployment,
    x: usize,
    limit: usize,
) -> Result<Vec<Vec<(StateIndex, ActionId)>>> {
    let space = &env.tasks[x];
    let mut out = Vec::new();
    let mut path: Vec<(StateIndex, ActionId)> = Vec::new();
    // Explicit stack of (state, time, next successor to try).
    let mut stack: Vec<(StateIndex, usize, usize)> = vec![(0, 0, 0)];
    let mut entered = true;
    while let Some(&mut (s, t, ref mut k)) = stack.last_mut() {
        if entered && space.is_goal[s as usize] {
            let mut trace = path.clone();
            trace.push((s, env.end()));
            out.push(trace);
            if out.len() > limit {
                return Err(Error::Invalid(format!(
                    "task `{}` has more than {limit} valid traces within H={}; enumeration is for tiny tasks",
                    space.name, env.horizon
                )));
            }
        }
        let succ = &space.successors[s as usize];
        if t < env.horizon && *k < succ.len() {
            let (a, next) = succ[*k];
            *k += 1;
            path.push((s, a));
            stack.push((next, t + 1, 0));
            entered = true;
        } else {
            stack.pop();
            path.pop();
            entered = false;
        }
    }
    Ok(out)
}

/// J(θ) and ∇J(θ) by enumerating every valid trace (at most `limit` per
/// task):
///
///   J = Σ_x μ(x) Σ_{y valid} π(y|x),   ∇J = Σ_x μ(x) Σ_{y valid} π(y|x) ∇log π(y|x).
///
/// Exact for *any* policy, Markov or not, because R = 0 off the valid
/// traces: for the plan writer, whose policy is over texts, a valid text is
/// exactly the IPC text of one valid trace followed by `<end>` (the reader
/// accepts nothing else), so summing over valid traces sums over every text
/// with R = 1. For Markov policies it agrees with the dynamic programs
/// ([`objective`], [`objective_gradient`]; tested).
pub fn objective_by_enumeration(
    env: &Deployment,
    policy: &dyn Policy,
    limit: usize,
) -> Result<(f64, Vec<f64>)> {
    let mut j = 0.0;
    let mut grad = vec![0.0; policy.num_params()];
    for x in 0..env.tasks.len() {
        if env.mu[x] == 0.0 {
            continue;
        }
        let traces: Vec<crate::estimator::Trace> = enumerate_valid_traces(env, x, limit)?
            .into_iter()
            .map(|steps| crate::estimator::Trace {
                task: x,
                steps,
                valid: true,
                tokens: Vec::new(),
            })
            .collect();
        let weighted: Vec<(&crate::estimator::Trace, f64)> = traces
            .iter()
            .map(|t| (t, env.mu[x] * policy.trace_log_prob(env, t).exp()))
            .collect();
        j += weighted.iter().map(|&(_, w)| w).sum::<f64>();
        policy.accumulate_trace_scores(env, &weighted, &mut grad);
    }
    Ok((j, grad))
}
