//! The claims of `proofs/`, checked numerically on fixed settings. Each
//! check compares two *independent* computations (DP vs trace enumeration,
//! DP vs brute force over N-sample tuples, DP vs finite differences, one
//! batch's SFT vs REINFORCE, Monte Carlo vs exact) and reports the largest
//! absolute and relative difference against a named tolerance.
//!
//! Layout: [`settings`] builds the deployments and the warm-started
//! policies; this file holds the table row ([`Check`]), the runner and the
//! helpers every claim shares; each claim's checks live in their own file
//! (`p01.rs` … ), named like its proof in `proofs/`.

use prelude::*;

/// The names every claim's checks use (each `pNN.rs` imports this and the
/// shared helpers below).
mod prelude {
    pub(super) use rand::RngExt;
    pub(super) use rand_distr::{Distribution, StandardNormal};

    pub(super) use crate::curation::{Rule, length_weights};
    pub(super) use crate::deploy::cosine;
    pub(super) use crate::estimator::{self, Trace};
    pub(super) use crate::exact::{self, PolicyTable};
    pub(super) use crate::mdp::{ActionId, Deployment, StateIndex};
    pub(super) use crate::policy::{Policy, ScoreMemo};
    pub(super) use crate::rng::Rng;
    pub(super) use crate::tolerance::{
        self, EXACT_ABS, EXACT_REL, FD_ABS, FD_REL, FD_STEP, MC_Z, ORDER_RESOLUTION,
    };
    pub(super) use crate::{Error, Result};
}

pub mod figures;
mod p01;
mod p02;
mod p03;
mod p04;
mod p05;
mod p06;
mod p07;
mod p08;
mod p09;
mod p10;
pub mod settings;

pub use settings::{Setting, default_settings, setting_from_files, shortest_plans, warm_start};

/// Brute force over N-tuples of samples runs where every task has at most
/// this many valid traces (41³ ≈ 7·10⁴ tuples at N = 3).
const SMALL_TRACES: usize = 40;

/// Most sample tuples one pooled brute-force row enumerates.
const BRUTE_TUPLES: usize = 300_000;

/// Claim ids, in the order of `proofs/README.md`.
pub const CLAIMS: [&str; 10] = [
    "P01", "P02", "P03", "P04", "P05", "P06", "P07", "P08", "P09", "P10",
];

/// What a row of the verification table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Asserted, and within its tolerance.
    Pass,
    /// Asserted, and outside its tolerance.
    Fail,
    /// Measured and printed, not asserted (e.g. how far the paper's form
    /// is from the truth where the proof says it differs).
    Reported,
    /// Not run on this setting; the quantity says why.
    Skipped,
}

impl Status {
    /// Pass or Fail by an asserted condition.
    pub fn of(ok: bool) -> Self {
        if ok { Status::Pass } else { Status::Fail }
    }

    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Reported => "reported",
            Status::Skipped => "skipped",
        }
    }
}

/// One row of the verification table.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub claim: String,
    pub setting: String,
    pub policy: String,
    pub quantity: String,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    /// cos(compared, reference) where a direction is the point (NaN
    /// otherwise; `null` in JSON).
    #[serde(serialize_with = "nan_as_null")]
    pub cosine: f64,
    pub tolerance: String,
    pub status: Status,
}

impl Check {
    /// Not a failed assertion (passed, reported or skipped).
    pub fn ok(&self) -> bool {
        self.status != Status::Fail
    }
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
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

/// Claim ids as a user types them (`p3`, `P03`, ` p03 `) in canonical
/// form; an unknown id is an error naming the known ones.
pub fn parse_claims(raw: &[String]) -> Result<Vec<String>> {
    raw.iter()
        .map(|c| {
            let t = c.trim().to_ascii_uppercase();
            let canonical = t
                .strip_prefix('P')
                .and_then(|d| d.parse::<u32>().ok())
                .map(|n| format!("P{n:02}"));
            match canonical {
                Some(id) if CLAIMS.contains(&id.as_str()) => Ok(id),
                _ => Err(Error::Invalid(format!(
                    "unknown claim `{c}` (known: {})",
                    CLAIMS.join(", ")
                ))),
            }
        })
        .collect()
}

/// Runs the selected claims (all if empty; canonical ids, see
/// [`parse_claims`]) on `settings`.
pub fn run(claims: &[String], settings: &[Setting], seed: u64) -> Result<Vec<Check>> {
    let claims = parse_claims(claims)?;
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
            if wants("P09") {
                out.extend(ctx.p09(&mut *policy)?);
            }
            // The K → ∞ limit is the tabular ML fit (P06's projection).
            if wants("P10") && label == "tabular" {
                out.extend(ctx.p10(&*policy, &make)?);
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
            cosine: f64::NAN,
            tolerance: format!("rel {rel:.0e}"),
            status: Status::of(max_rel <= rel),
        }
    }

    /// A row that says a check did not run here, and why.
    fn skipped(&self, claim: &str, quantity: &str, reason: &str) -> Check {
        Check {
            claim: claim.into(),
            setting: self.setting.into(),
            policy: self.label.into(),
            quantity: format!("{quantity} — skipped: {reason}"),
            max_abs_error: f64::NAN,
            max_rel_error: f64::NAN,
            cosine: f64::NAN,
            tolerance: "—".into(),
            status: Status::Skipped,
        }
    }

    fn valid_traces(&self, x: usize) -> Result<Vec<Vec<(StateIndex, ActionId)>>> {
        exact::enumerate_valid_traces(self.env, x, 200_000)
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

    /// Few enough valid traces (≤ [`SMALL_TRACES`] per task) to enumerate
    /// N-tuples.
    fn small(&self) -> bool {
        (0..self.env.tasks.len())
            .all(|x| exact::count_valid_traces(self.env, x) <= SMALL_TRACES as f64)
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
