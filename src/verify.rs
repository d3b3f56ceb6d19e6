//! The claims of `proofs/`, checked numerically on fixed settings. Each
//! check compares two *independent* computations (DP vs trace enumeration,
//! DP vs brute force over N-sample tuples, DP vs finite differences, one
//! batch's SFT vs REINFORCE, Monte Carlo vs exact) and reports the largest
//! absolute and relative difference against a named tolerance.

use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

use crate::curation::{Rule, length_weights};
use crate::estimator::{self, Trace};
use crate::exact::{self, PolicyTable};
use crate::generate::{DomainKind, Params};
use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::optim::{Optimizer, OptimizerKind};
use crate::policy::{Mlp, Policy, ScoreMemo, Tabular, Transformer};
use crate::rng::Rng;
use crate::tolerance::{
    self, EXACT_ABS, EXACT_REL, FD_ABS, FD_REL, FD_STEP, MC_Z, ORDER_RESOLUTION,
};
use crate::{Error, Result};

/// Logit penalty on inapplicable actions for the built-in policies. Without
/// it a random policy over all ground actions almost never writes a valid
/// plan; with it the built-in settings have success probabilities from
/// ~1e-3 to ~0.3, so every claim is informative and Monte-Carlo checks see
/// valid traces.
const PRIOR: f64 = 4.0;

/// Warm start of the built-in policies: SFT steps on one shortest plan per
/// task until J(θ) ≥ WARM_TARGET (at most WARM_MAX steps) — a weak but
/// non-zero generation 0, like the paper's, for which every claim is
/// informative and Monte-Carlo checks see valid traces. Tabular and MLP
/// take plain gradient steps of WARM_RATE; the transformer takes Adam
/// steps of WARM_RATE_TRANSFORMER: at initialisation it almost always
/// writes the one-token `<end>` (a five-token step has probability ~V⁻⁵),
/// so its SFT gradient is large and plain steps of 0.5 diverge to NaN.
const WARM_TARGET: f64 = 0.25;
const WARM_RATE: f64 = 0.5;
const WARM_RATE_TRANSFORMER: f64 = 0.01;
const WARM_MAX: usize = 200;

/// One shortest valid trace per task (breadth-first over the state graph),
/// ending in END; tasks with no goal within the horizon are skipped.
pub fn shortest_plans(env: &Deployment) -> Vec<Trace> {
    let mut out = Vec::new();
    for (x, space) in env.tasks.iter().enumerate() {
        let n = space.num_states();
        let mut parent: Vec<Option<(StateIndex, ActionId)>> = vec![None; n];
        let mut seen = vec![false; n];
        seen[0] = true;
        let mut queue = std::collections::VecDeque::from([0 as StateIndex]);
        let mut goal = None;
        while let Some(s) = queue.pop_front() {
            if space.is_goal[s as usize] {
                goal = Some(s);
                break;
            }
            for &(a, t) in &space.successors[s as usize] {
                if !seen[t as usize] {
                    seen[t as usize] = true;
                    parent[t as usize] = Some((s, a));
                    queue.push_back(t);
                }
            }
        }
        let Some(g) = goal else { continue };
        let mut steps = vec![(g, env.end())];
        let mut s = g;
        while let Some((p, a)) = parent[s as usize] {
            steps.push((p, a));
            s = p;
        }
        steps.reverse();
        out.push(Trace {
            task: x,
            steps,
            valid: true,
            tokens: Vec::new(),
        });
    }
    out
}

/// SFT steps θ ← θ + rate·(−∇L_SFT) on [`shortest_plans`] until
/// J(θ) ≥ `target` or `max_steps` steps; returns the steps taken.
pub fn warm_start(
    env: &Deployment,
    policy: &mut dyn Policy,
    target: f64,
    opt: &mut Optimizer,
    max_steps: usize,
) -> usize {
    let demos = shortest_plans(env);
    let kept: Vec<&Trace> = demos.iter().collect();
    for step in 0..max_steps {
        if exact::objective(env, &PolicyTable::new(policy, env)) >= target {
            return step;
        }
        let g = estimator::sft_gradient(env, policy, &kept);
        opt.ascend(policy.params_mut(), &g);
    }
    max_steps
}

/// The transformer of `verify --transformer` (f64: the checks compare to
/// 1e-10).
const TRANSFORMER_SIZE: crate::policy::transformer::Size = crate::policy::transformer::Size {
    d_model: 16,
    heads: 2,
    layers: 2,
    d_ff: 32,
    f64: true,
};

/// Claim ids, in the order of `proofs/README.md`.
pub const CLAIMS: [&str; 8] = ["P01", "P02", "P03", "P04", "P05", "P06", "P07", "P08"];

/// One row of the verification table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub claim: String,
    pub setting: String,
    pub policy: String,
    pub quantity: String,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    pub tolerance: String,
    pub pass: bool,
}

/// A deployment and the policies the claims are checked for.
pub struct Setting {
    pub name: String,
    pub env: Deployment,
    /// Also check every claim on a small transformer (slow: a forward pass
    /// per state; `iterdeploy verify --transformer`).
    pub transformer: bool,
}

impl Setting {
    /// Tabular (random logits) and MLP (random weights) policies, seeded,
    /// then warm-started like the paper's generation 0: a few SFT steps on
    /// one shortest plan per task (see [`warm_start`]).
    pub fn policies(&self, seed: u64) -> Vec<(&'static str, Box<dyn Policy>)> {
        let mut rng = crate::rng::stream(seed, 1);
        let mut tab = Tabular::zeros(&self.env, 1.0, PRIOR);
        for v in tab.params_mut() {
            *v = StandardNormal.sample(&mut rng);
        }
        let mut mlp = Mlp::new(
            &self.env,
            16,
            1.0,
            1.5,
            PRIOR,
            &mut crate::rng::stream(seed, 2),
        );
        let sgd = || Optimizer::new(OptimizerKind::Sgd, WARM_RATE, None);
        warm_start(&self.env, &mut tab, WARM_TARGET, &mut sgd(), WARM_MAX);
        warm_start(&self.env, &mut mlp, WARM_TARGET, &mut sgd(), WARM_MAX);
        let mut out: Vec<(&'static str, Box<dyn Policy>)> =
            vec![("tabular", Box::new(tab)), ("mlp", Box::new(mlp))];
        // The sequence model: every claim then runs on a transformer too.
        if self.transformer {
            let mut tf = Transformer::new(
                &self.env,
                TRANSFORMER_SIZE,
                1.0,
                &mut crate::rng::stream(seed, 3),
            )
            .expect("a valid built-in size")
            .with_prior(PRIOR);
            let mut adam = Optimizer::new(OptimizerKind::Adam, WARM_RATE_TRANSFORMER, None);
            warm_start(&self.env, &mut tf, WARM_TARGET, &mut adam, WARM_MAX);
            out.push(("transformer", Box::new(tf)));
        }
        out
    }
}

fn chain_problem(goal: &str) -> String {
    format!(
        "(define (problem chain-{goal}) (:domain chain) (:objects c0 c1 c2 c3)
         (:init (at c0) (next c0 c1) (next c1 c2) (next c2 c3)) (:goal (at {goal})))"
    )
}

/// The fixed settings of `iterdeploy verify`.
pub fn default_settings() -> Result<Vec<Setting>> {
    let chain =
        crate::pddl::parse_domain(include_bytes!("domains/examples/chain.pddl"), "chain.pddl")?;
    let chain_tasks = ["c3", "c2"]
        .iter()
        .map(|g| crate::pddl::parse_problem(chain_problem(g).as_bytes(), "chain", &chain))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = vec![Setting {
        name: "toy chain (2 tasks, H=5)".into(),
        env: Deployment::build(&chain, &chain_tasks, 5, 10_000)?,
        transformer: false,
    }];
    let bw = DomainKind::Blocksworld.parse_domain();
    let bw_tasks = [
        (
            include_str!("domains/examples/blocksworld-3a.pddl"),
            "blocksworld-3a.pddl",
        ),
        (
            include_str!("domains/examples/blocksworld-3b.pddl"),
            "blocksworld-3b.pddl",
        ),
    ]
    .iter()
    .map(|(text, name)| crate::pddl::parse_problem(text.as_bytes(), name, &bw))
    .collect::<std::result::Result<Vec<_>, _>>()?;
    out.push(Setting {
        name: "blocksworld 3 blocks (2 tasks, plans of 4 and 6, H=7)".into(),
        env: Deployment::build(&bw, &bw_tasks, 7, 100_000)?,
        transformer: false,
    });
    // A generated Sokoban room, solvable within the horizon by construction
    // (6 reverse moves).
    let kind = DomainKind::Sokoban;
    let sokoban = kind.parse_domain();
    let pairs: Vec<String> = ["size=5", "boxes=1", "walls=0", "pulls=6"]
        .map(String::from)
        .to_vec();
    let tasks = crate::generate::generate(kind, &mut Params::from_pairs(kind, &pairs)?, 1, 2026)?;
    let problems = tasks
        .iter()
        .map(|t| crate::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &sokoban))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    out.push(Setting {
        name: "sokoban 5x5, 1 box (H=6)".into(),
        env: Deployment::build(&sokoban, &problems, 6, 100_000)?,
        transformer: false,
    });
    Ok(out)
}

/// Builds a setting from the user's PDDL files (for `verify --task`).
pub fn setting_from_files(
    domain: &std::path::Path,
    problems: &[std::path::PathBuf],
    horizon: usize,
) -> Result<Setting> {
    let d = crate::pddl::read_domain(domain)?;
    let ps = problems
        .iter()
        .map(|p| crate::pddl::read_problem(p, &d))
        .collect::<Result<Vec<_>>>()?;
    Ok(Setting {
        name: format!("{} ({} task(s), H={horizon})", domain.display(), ps.len()),
        env: Deployment::build(&d, &ps, horizon, 200_000)?,
        transformer: false,
    })
}

fn trace_log_prob(
    env: &Deployment,
    table: &PolicyTable,
    x: usize,
    steps: &[(StateIndex, ActionId)],
) -> f64 {
    let n = env.num_actions();
    steps
        .iter()
        .map(|&(s, a)| table.logp[x][s as usize * n + a])
        .sum()
}

fn score(
    env: &Deployment,
    policy: &dyn Policy,
    x: usize,
    steps: &[(StateIndex, ActionId)],
    w: f64,
    grad: &mut [f64],
) {
    Trace {
        task: x,
        steps: steps.to_vec(),
        valid: true,
        tokens: Vec::new(),
    }
    .accumulate_score(env, policy, w, grad);
}

fn perturbed(policy: &dyn Policy, sigma: f64, rng: &mut Rng) -> Vec<f64> {
    policy
        .params()
        .iter()
        .map(|&v| {
            let z: f64 = StandardNormal.sample(rng);
            v + sigma * z
        })
        .collect::<Vec<f64>>()
}

/// A behaviour policy near `policy` (whose table is `table`) for
/// off-policy Monte-Carlo checks:
/// θ plus Gaussian noise of scale σ = 0.3, halved until the behaviour
/// still solves at least half as often as the policy. Importance
/// weighting is unbiased for any behaviour with full support, but a
/// behaviour that practically never writes a valid plan gives batches
/// that are all zero — then the check tests nothing. The transformer
/// needs the smaller scales: 0.3 on each of its thousands of weights
/// moves its logits far more than the same noise on a tabular policy.
fn overlapping_behaviour(
    env: &Deployment,
    policy: &dyn Policy,
    table: &PolicyTable,
    make: &dyn Fn() -> Box<dyn Policy>,
    rng: &mut Rng,
) -> (Box<dyn Policy>, f64) {
    let j = exact::objective(env, table);
    let mut sigma = 0.3;
    loop {
        let beta = with_params(make, &perturbed(policy, sigma, rng));
        let j_beta = exact::objective(env, &PolicyTable::new(&*beta, env));
        if j_beta >= 0.5 * j || sigma < 1e-3 {
            return (beta, sigma);
        }
        sigma /= 2.0;
    }
}

fn with_params(make: &dyn Fn() -> Box<dyn Policy>, theta: &[f64]) -> Box<dyn Policy> {
    let mut p = make();
    p.params_mut().copy_from_slice(theta);
    p
}

fn random_directions(n: usize, k: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    (0..k)
        .map(|_| {
            let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.into_iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// The single-generation curation weights w_x(L) of `rule` with `n`
/// samples per task (`curation::length_weights`), and the expected curated
/// SFT gradient they give at θ: Σ_x μ_x E_π[w_x(|y|) R ∇log π_θ].
fn curated_expectation(
    env: &Deployment,
    table: &PolicyTable,
    policy: &dyn Policy,
    rule: Rule,
    n: usize,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let w: Vec<Vec<f64>> = exact::valid_length_distribution(env, table)
        .iter()
        .map(|qx| length_weights(rule, n, qx).expect("a validity rule"))
        .collect();
    let grad = exact::weighted_score(env, table, policy, &env.mu, &w);
    (w, grad)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Directional derivatives of `f` at θ along `dirs` by central differences.
fn fd_directional(
    policy: &mut dyn Policy,
    dirs: &[Vec<f64>],
    f: &dyn Fn(&dyn Policy) -> f64,
) -> Vec<f64> {
    let theta = policy.params().to_vec();
    let mut out = Vec::with_capacity(dirs.len());
    for u in dirs {
        for (p, (t, d)) in policy.params_mut().iter_mut().zip(theta.iter().zip(u)) {
            *p = t + FD_STEP * d;
        }
        let plus = f(&*policy);
        for (p, (t, d)) in policy.params_mut().iter_mut().zip(theta.iter().zip(u)) {
            *p = t - FD_STEP * d;
        }
        let minus = f(&*policy);
        out.push((plus - minus) / (2.0 * FD_STEP));
    }
    policy.params_mut().copy_from_slice(&theta);
    out
}

/// Runs the selected claims (all if empty) on `settings`.
pub fn run(claims: &[String], settings: &[Setting], seed: u64) -> Result<Vec<Check>> {
    for c in claims {
        if !CLAIMS.contains(&c.as_str()) {
            return Err(Error::Invalid(format!(
                "unknown claim `{c}` (known: {})",
                CLAIMS.join(", ")
            )));
        }
    }
    let wants = |c: &str| claims.is_empty() || claims.iter().any(|x| x == c);
    let mut out = Vec::new();
    for setting in settings {
        let env = &setting.env;
        for (label, mut policy) in setting.policies(seed) {
            // A policy with non-finite parameters would make every
            // comparison meaningless (the same test as the deployment
            // loop's divergence check; no forward pass needed).
            if let Some(i) = policy.params().iter().position(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "verify: the {label} policy of `{}` is not finite after its warm start (parameter {i} is {})",
                    setting.name,
                    policy.params()[i]
                )));
            }
            // Fresh copies of the same kind (their parameters are set
            // before use).
            let template = policy.clone_box();
            let make = move || template.clone_box();
            let ctx = Ctx {
                setting: &setting.name,
                label,
                env,
                seed,
            };
            if wants("P01") {
                out.extend(ctx.p01(&*policy));
            }
            if wants("P02") {
                out.extend(ctx.p02(&mut *policy, &make)?);
            }
            if wants("P03") {
                out.extend(ctx.p03(&*policy, &make)?);
            }
            if wants("P04") {
                out.extend(ctx.p04(&mut *policy)?);
            }
            if wants("P05") {
                out.extend(ctx.p05(&*policy)?);
            }
            if wants("P06") && label == "tabular" {
                out.extend(ctx.p06(&*policy));
            }
            if wants("P07") {
                out.extend(ctx.p07(&*policy, &make));
            }
            if wants("P08") {
                out.extend(ctx.p08(&*policy, &make)?);
            }
        }
    }
    Ok(out)
}

struct Ctx<'a> {
    setting: &'a str,
    label: &'static str,
    env: &'a Deployment,
    seed: u64,
}

impl Ctx<'_> {
    fn check(
        &self,
        claim: &str,
        quantity: &str,
        a: &[f64],
        b: &[f64],
        rel: f64,
        abs: f64,
    ) -> Check {
        let (max_abs, max_rel) = tolerance::errors(a, b, abs);
        Check {
            claim: claim.into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: quantity.into(),
            max_abs_error: max_abs,
            max_rel_error: max_rel,
            tolerance: format!("rel {rel:.0e}"),
            pass: max_rel <= rel,
        }
    }

    fn valid_traces(&self, x: usize) -> Result<Vec<Vec<(StateIndex, ActionId)>>> {
        exact::enumerate_valid_traces(self.env, x, 200_000)
    }

    /// P01: −∇L_SFT = (N/N⁺)·ĝ_RL on every batch drawn at θ.
    fn p01(&self, policy: &dyn Policy) -> Vec<Check> {
        let table = PolicyTable::new(policy, self.env);
        let mut rng = crate::rng::stream(self.seed, 101);
        let mut checks = Vec::new();
        for (b, per_task) in [4usize, 16, 64].into_iter().enumerate() {
            let batch = estimator::sample_batch(self.env, &table, per_task, &mut rng);
            let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
            if kept.is_empty() {
                continue;
            }
            let sft = estimator::sft_gradient_from_counts(self.env, policy, &kept);
            let scale = batch.len() as f64 / kept.len() as f64;
            let rl: Vec<f64> = estimator::reinforce(self.env, policy, &batch)
                .iter()
                .map(|g| g * scale)
                .collect();
            checks.push(self.check(
                "P01",
                &format!("batch {b}: N={}, N+={}", batch.len(), kept.len()),
                &sft,
                &rl,
                EXACT_REL,
                EXACT_ABS,
            ));
        }
        checks
    }

    /// P02: E[Σ_pool ∇log π_θ] (DP, behaviour occupancies) equals
    /// N Σ_j w_j E_{π_θ}[(π_j/π_θ) R ∇log π_θ] (explicit trace enumeration
    /// with importance ratios), and at θ = θ_j the j-th term is N∇J(θ_j)
    /// (checked against finite differences of J).
    fn p02(
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

    /// P03: the paper's effective-reward form vs the exact valid-conditional
    /// form. The corrected identity (with Z_pi/Z_beta) is checked exactly;
    /// the paper's form is reported (relative error, cosine) as β drifts.
    fn p03(&self, policy: &dyn Policy, make: &dyn Fn() -> Box<dyn Policy>) -> Result<Vec<Check>> {
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

    /// P04: one valid trace per task out of N, at θ = θ_k:
    /// expected gradient = Σ_x μ_x [(1−(1−p)^N)/p] ∇p(x) = ∇ Σ_j (1/j) pass@j.
    fn p04(&self, policy: &mut dyn Policy) -> Result<Vec<Check>> {
        let env = self.env;
        let mut checks = Vec::new();
        let mut rng = crate::rng::stream(self.seed, 104);
        let dirs = random_directions(policy.num_params(), 6, &mut rng);
        for n in [1usize, 3, 8] {
            let table = PolicyTable::new(policy, env);
            let (_, curated) = curated_expectation(env, &table, policy, Rule::OnePerTask, n);
            let proj: Vec<f64> = dirs.iter().map(|u| dot(u, &curated)).collect();
            let f = |p: &dyn Policy| {
                let probs = exact::success_probabilities(env, &PolicyTable::new(p, env));
                probs
                    .iter()
                    .zip(&env.mu)
                    .map(|(&px, m)| {
                        m * (1..=n)
                            .map(|j| (1.0 - (1.0 - px).powi(j as i32)) / j as f64)
                            .sum::<f64>()
                    })
                    .sum()
            };
            let fd = fd_directional(policy, &dirs, &f);
            checks.push(self.check(
                "P04",
                &format!("N={n}: curated expectation vs FD of sum_j pass@j/j"),
                &proj,
                &fd,
                FD_REL,
                FD_ABS,
            ));
            if n == 1 {
                let grad_j = exact::objective_gradient(env, policy);
                checks.push(self.check(
                    "P04",
                    "N=1: curated expectation equals grad J",
                    &curated,
                    &grad_j,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
            if self.small() && n <= 3 {
                let brute = self.brute_force(policy, Rule::OnePerTask, n)?;
                checks.push(self.check(
                    "P04",
                    &format!("N={n}: formula vs brute force over N-tuples"),
                    &curated,
                    &brute,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
        }
        // Large N: → Σ μ ∇ log p.
        let table = PolicyTable::new(policy, env);
        let p = exact::success_probabilities(env, &table);
        let n = 100_000usize;
        if p.iter().all(|&px| (1.0 - px).powi(n as i32) < 1e-15) {
            let (_, curated) = curated_expectation(env, &table, policy, Rule::OnePerTask, n);
            let coef: Vec<f64> = env.mu.iter().zip(&p).map(|(m, px)| m / px).collect();
            let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
            let grad_log_p = exact::weighted_score(env, &table, policy, &coef, &ones);
            checks.push(self.check(
                "P04",
                "N=1e5: curated expectation equals grad E log p",
                &curated,
                &grad_log_p,
                EXACT_REL,
                EXACT_ABS,
            ));
        }
        Ok(checks)
    }

    /// P05: shortest valid per task is the length-weighted reward
    /// w(L) = [(1−Q_{<L})^N − (1−Q_{≤L})^N]/q_L (checked by brute force),
    /// which is not a function of validity (weights differ across lengths,
    /// and the expected gradient is not parallel to ∇J).
    fn p05(&self, policy: &dyn Policy) -> Result<Vec<Check>> {
        let env = self.env;
        let table = PolicyTable::new(policy, env);
        let q = exact::valid_length_distribution(env, &table);
        let mut checks = Vec::new();
        for n in [2usize, 3] {
            let (w, dp) = curated_expectation(env, &table, policy, Rule::ShortestPerTask, n);
            if self.small() {
                let brute = self.brute_force(policy, Rule::ShortestPerTask, n)?;
                checks.push(self.check(
                    "P05",
                    &format!("N={n}: length-weighted DP vs brute force"),
                    &dp,
                    &brute,
                    EXACT_REL,
                    EXACT_ABS,
                ));
            }
            // The implicit reward is strictly decreasing in plan length
            // (over lengths that occur), hence no function of validity alone.
            let grad_j = exact::objective_gradient(env, policy);
            let cos = dot(&dp, &grad_j) / (dot(&dp, &dp).sqrt() * dot(&grad_j, &grad_j).sqrt());
            let mut decreasing = true;
            let mut spread = 1.0f64;
            let (mut resolved, mut pairs) = (0usize, 0usize);
            for (wx, qx) in w.iter().zip(&q) {
                // (weight, mass, mass of invalid-or-not-shorter) per
                // length that occurs.
                let mut below = 0.0f64;
                let mut used = Vec::new();
                for (&wl, &ql) in wx.iter().zip(qx) {
                    if ql > 0.0 {
                        used.push((wl, ql, 1.0 - below));
                    }
                    below += ql;
                }
                for p in used.windows(2) {
                    let ((w0, q0, rest0), (w1, ..)) = (p[0], p[1]);
                    pairs += 1;
                    decreasing &= if q0 > ORDER_RESOLUTION * rest0 {
                        resolved += 1;
                        w1 < w0
                    } else {
                        w1 <= w0 * (1.0 + EXACT_REL)
                    };
                }
                if let (Some(first), Some(last)) = (used.first(), used.last()) {
                    spread = spread.max(first.0 / last.0);
                }
            }
            checks.push(Check {
                claim: "P05".into(),
                setting: self.setting.into(),
                policy: self.label.into(),
                quantity: format!(
                    "N={n}: w(L) strictly decreasing in L ({resolved} of {pairs} length pairs resolvable in f64, the rest non-increasing); w(shortest)/w(longest) {spread:.4}; cos(E grad, grad J) {cos:.6}"
                ),
                max_abs_error: 0.0,
                max_rel_error: 0.0,
                tolerance: "strict order".into(),
                pass: decreasing,
            });
        }
        Ok(checks)
    }

    /// P06: fitting the valid-filtered trace law exactly with a tabular
    /// policy (one EM step) never lowers any task's success probability —
    /// checked over EM_STEPS successive fits; and a counterexample when the
    /// filter is a threshold on a graded score ("answers of at least H−1
    /// steps") instead of validity: the proxy rises, validity falls.
    fn p06(&self, policy: &dyn Policy) -> Vec<Check> {
        const EM_STEPS: usize = 5;
        let env = self.env;
        let valid = |x: usize, s: usize, _t: usize| if env.tasks[x].is_goal[s] { 1.0 } else { 0.0 };
        let mut table = PolicyTable::new(policy, env);
        let mut p = exact::success_probabilities(env, &table);
        let start = p.clone();
        let mut worst_drop = 0.0f64;
        for _ in 0..EM_STEPS {
            table = exact::fit_filtered(env, &table, &valid);
            let next = exact::success_probabilities(env, &table);
            for (a, b) in p.iter().zip(&next) {
                worst_drop = worst_drop.max(a - b);
            }
            p = next;
        }
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.3}"))
                .collect::<Vec<_>>()
                .join("/")
        };
        let mut checks = vec![Check {
            claim: "P06".into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: format!(
                "{EM_STEPS} exact tabular fits to the valid traces: p(x) {} -> {}; largest drop",
                fmt(&start),
                fmt(&p)
            ),
            max_abs_error: worst_drop.max(0.0),
            max_rel_error: worst_drop.max(0.0),
            tolerance: format!("drop <= {EXACT_ABS:.0e}"),
            pass: worst_drop <= EXACT_ABS,
        }];
        // Graded score = −(answer length), threshold −k: a length budget of
        // k = H − 2 steps, valid or not. It admits short invalid answers and
        // rejects valid plans longer than k — the situation of proofs/P06 §5.
        // It needs a task whose every valid plan is over budget (shortest
        // plan > k); the other settings skip it.
        let k = env.horizon.saturating_sub(2);
        if !shortest_plans(env).iter().any(|y| y.plan_length() > k) {
            return checks;
        }
        let budget = move |_x: usize, _s: usize, t: usize| if t <= k { 1.0 } else { 0.0 };
        let table0 = PolicyTable::new(policy, env);
        let fitted = exact::fit_filtered(env, &table0, &budget);
        let mean = |v: &[f64]| -> f64 { v.iter().zip(&env.mu).map(|(a, m)| a * m).sum() };
        let proxy_before = mean(&exact::expected_reward(env, &table0, &budget));
        let proxy_after = mean(&exact::expected_reward(env, &fitted, &budget));
        let p_before = exact::success_probabilities(env, &table0);
        let p_after = exact::success_probabilities(env, &fitted);
        let worst = p_before
            .iter()
            .zip(&p_after)
            .map(|(a, b)| a - b)
            .fold(f64::NEG_INFINITY, f64::max);
        checks.push(Check {
            claim: "P06".into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: format!(
                "counterexample, filter = answers of <= {k} steps: proxy {proxy_before:.3} -> {proxy_after:.3}, p(x) {} -> {}",
                fmt(&p_before),
                fmt(&p_after)
            ),
            max_abs_error: worst.max(0.0),
            max_rel_error: 0.0,
            tolerance: "some p(x) falls, proxy rises".into(),
            pass: worst > EXACT_ABS && proxy_after >= proxy_before - EXACT_ABS,
        });
        checks
    }

    /// P07: Monte-Carlo estimators are unbiased: their batch means match the
    /// exact expectation within MC_Z standard errors, along ∇J and random
    /// directions.
    fn p07(&self, policy: &dyn Policy, make: &dyn Fn() -> Box<dyn Policy>) -> Vec<Check> {
        let env = self.env;
        // θ stays fixed: every repeated step score comes from the memo.
        let memo = ScoreMemo::new(policy.clone_box());
        let policy: &dyn Policy = &memo;
        let table = PolicyTable::new(policy, env);
        let mut rng = crate::rng::stream(self.seed, 107);
        let grad_j = exact::objective_gradient(env, policy);
        let mut dirs = random_directions(policy.num_params(), 4, &mut rng);
        let norm = dot(&grad_j, &grad_j).sqrt();
        if norm > 0.0 {
            dirs.push(grad_j.iter().map(|g| g / norm).collect());
        }
        let per_task = 8;
        let (_, one_exact) = curated_expectation(env, &table, policy, Rule::OnePerTask, per_task);
        let (beta, sigma) = overlapping_behaviour(env, policy, &table, make, &mut rng);
        let beta_table = PolicyTable::new(&*beta, env);
        let batches = 1500;
        let mut sums = vec![vec![(0.0f64, 0.0f64); dirs.len()]; 4];
        let mut ess_total = 0.0;
        for _ in 0..batches {
            let batch = estimator::sample_batch(env, &table, per_task, &mut rng);
            // Curated: one valid per task, uniformly, weighted by μ.
            let mut curated = vec![0.0; policy.num_params()];
            for x in 0..env.tasks.len() {
                let valid: Vec<&Trace> = batch.iter().filter(|t| t.task == x && t.valid).collect();
                if !valid.is_empty() {
                    valid[rng.random_range(0..valid.len())].accumulate_score(
                        env,
                        policy,
                        env.mu[x],
                        &mut curated,
                    );
                }
            }
            // REINFORCE and RLOO average over N = per_task·|X|; scale to μ-weighting.
            let k = env.tasks.len() as f64;
            let reinforce: Vec<f64> = estimator::reinforce(env, policy, &batch)
                .iter()
                .map(|g| g * k * env.mu[0])
                .collect();
            let rloo: Vec<f64> = estimator::rloo(env, policy, &batch)
                .iter()
                .map(|g| g * k * env.mu[0])
                .collect();
            let off = estimator::sample_batch(env, &beta_table, per_task, &mut rng);
            let (iw, ess) =
                estimator::importance_weighted(env, policy, &table, &beta_table, &off, false);
            ess_total += ess;
            let iw: Vec<f64> = iw.iter().map(|g| g * k * env.mu[0]).collect();
            for (e, g) in [reinforce, rloo, iw, curated].iter().enumerate() {
                for (d, u) in dirs.iter().enumerate() {
                    let v = dot(u, g);
                    sums[e][d].0 += v;
                    sums[e][d].1 += v * v;
                }
            }
        }
        let names = [
            "REINFORCE vs grad J",
            "RLOO vs grad J",
            "importance-weighted (ordinary) vs grad J",
            "one-per-task curated SFT vs formula",
        ];
        let mut checks = Vec::new();
        for (e, name) in names.iter().enumerate() {
            let target = if e == 3 { &one_exact } else { &grad_j };
            let mut worst_z = 0.0f64;
            let mut worst_abs = 0.0f64;
            for (d, u) in dirs.iter().enumerate() {
                let (s, ss) = sums[e][d];
                let m = batches as f64;
                let mean = s / m;
                let var = (ss / m - mean * mean).max(0.0) * m / (m - 1.0);
                let se = (var / m).sqrt();
                let diff = (mean - dot(u, target)).abs();
                worst_abs = worst_abs.max(diff);
                if se > 0.0 {
                    worst_z = worst_z.max(diff / se);
                } else if diff > EXACT_ABS {
                    worst_z = f64::INFINITY;
                }
            }
            let extra = if e == 2 {
                format!(
                    ", behaviour θ + {sigma}·noise, mean ESS {:.1} of {}",
                    ess_total / batches as f64,
                    per_task * env.tasks.len()
                )
            } else {
                String::new()
            };
            checks.push(Check {
                claim: "P07".into(),
                setting: self.setting.into(),
                policy: self.label.into(),
                quantity: format!(
                    "{name}: {batches} batches of {per_task}/task, max z {worst_z:.2}{extra}"
                ),
                max_abs_error: worst_abs,
                max_rel_error: worst_z,
                tolerance: format!("z <= {MC_Z}"),
                pass: worst_z <= MC_Z,
            });
        }
        checks
    }

    /// P08: the paper's curation across generations (accumulate the pool,
    /// keep the shortest valid trace per task) — and the other rules and
    /// pools — equal Σ_j E_{β_j}[w_j(|y|) R ∇log π_θ] with the weights of
    /// `curation::pooled_shortest_weights`; checked against brute force over
    /// every tuple of samples from all generations.
    fn p08(&self, policy: &dyn Policy, make: &dyn Fn() -> Box<dyn Policy>) -> Result<Vec<Check>> {
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
                    let Some(brute) =
                        self.brute_force_pooled(policy, used, used_counts, rule, 300_000)?
                    else {
                        continue;
                    };
                    checks.push(self.check(
                        "P08",
                        &format!("{rule:?}, {pool:?}, samples per generation {counts:?}: formula vs brute force"),
                        &exact_g,
                        &brute,
                        EXACT_REL,
                        EXACT_ABS,
                    ));
                }
            }
        }
        Ok(checks)
    }

    /// E[Σ_x μ_x Σ_{kept} ∇ log π_θ(y)] by enumerating every tuple of
    /// outcomes (each valid trace, or "invalid") of the `counts[j]` samples of
    /// each generation j in `behaviours`, and applying the rule literally,
    /// ties and all; None if there are more than `max_tuples` tuples.
    fn brute_force_pooled(
        &self,
        target: &dyn Policy,
        behaviours: &[PolicyTable],
        counts: &[usize],
        rule: Rule,
        max_tuples: usize,
    ) -> Result<Option<Vec<f64>>> {
        let env = self.env;
        let mut grad = vec![0.0; target.num_params()];
        for x in 0..env.tasks.len() {
            let traces = self.valid_traces(x)?;
            let k = traces.len() + 1;
            let slots: usize = counts.iter().sum();
            if (k as f64).powi(slots as i32) > max_tuples as f64 {
                return Ok(None);
            }
            // Outcome probabilities per slot: valid traces, then "invalid".
            let probs: Vec<Vec<f64>> = behaviours
                .iter()
                .zip(counts)
                .flat_map(|(b, &n)| {
                    let mut p: Vec<f64> = traces
                        .iter()
                        .map(|y| trace_log_prob(env, b, x, y).exp())
                        .collect();
                    p.push(1.0 - p.iter().sum::<f64>());
                    std::iter::repeat_n(p, n)
                })
                .collect();
            // Each tuple adds to the weight of the traces it keeps; every
            // trace's score is computed once at the end (a transformer
            // score is a forward and backward pass).
            let mut kept_weight = vec![0.0f64; traces.len()];
            let mut tuple = vec![0usize; slots];
            loop {
                let prob: f64 = tuple.iter().zip(&probs).map(|(&o, p)| p[o]).product();
                let valid: Vec<usize> = tuple.iter().copied().filter(|&o| o != k - 1).collect();
                let kept: Vec<usize> = match rule {
                    Rule::OnePerTask | Rule::AllValid => valid,
                    Rule::ShortestPerTask => {
                        let min = valid.iter().map(|&o| traces[o].len()).min();
                        valid
                            .into_iter()
                            .filter(|&o| Some(traces[o].len()) == min)
                            .collect()
                    }
                    Rule::None => unreachable!("not a validity rule"),
                };
                if prob > 0.0 && !kept.is_empty() {
                    let each = if rule == Rule::AllValid {
                        1.0
                    } else {
                        1.0 / kept.len() as f64
                    };
                    for &o in &kept {
                        kept_weight[o] += prob * each;
                    }
                }
                let mut i = 0;
                while i < slots {
                    tuple[i] += 1;
                    if tuple[i] < k {
                        break;
                    }
                    tuple[i] = 0;
                    i += 1;
                }
                if i == slots {
                    break;
                }
            }
            for (y, w) in traces.iter().zip(kept_weight) {
                if w != 0.0 {
                    score(env, target, x, y, env.mu[x] * w, &mut grad);
                }
            }
        }
        Ok(Some(grad))
    }

    /// Few enough valid traces to enumerate N-tuples.
    fn small(&self) -> bool {
        (0..self.env.tasks.len()).all(|x| exact::enumerate_valid_traces(self.env, x, 40).is_ok())
    }

    /// E[Σ_x μ_x Σ_{kept} ∇ log π(y)] for N samples drawn at θ itself, by
    /// brute force (see [`Self::brute_force_pooled`]).
    fn brute_force(&self, policy: &dyn Policy, rule: Rule, n: usize) -> Result<Vec<f64>> {
        let table = PolicyTable::new(policy, self.env);
        Ok(self
            .brute_force_pooled(policy, std::slice::from_ref(&table), &[n], rule, usize::MAX)?
            .expect("no tuple limit"))
    }
}
