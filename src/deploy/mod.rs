//! The iterative-deployment loop and its RL comparators.
//!
//! One *arm* is one way of turning a generation's samples into the next
//! policy. Every arm sees the same budget per generation: `samples_per_task`
//! samples of every deployed task, each judged once by the validator.
//!
//! Generation k (k = 0..=G; 0 is the base policy):
//! 1. deploy π_k: draw the generation's samples (at the sampling
//!    temperature) and judge them — the judge is the validator, optionally
//!    noisy (false accepts / false rejects);
//! 2. measure π_k (exact success probabilities by dynamic programming,
//!    sampled any-of-N, plan lengths, diversity, KL to π_{k−1}, and the
//!    cosine between the arm's update direction at π_k and the true ∇J(π_k);
//!    a policy that reads its own text — the plan writer — has no dynamic
//!    program, so its success and KL are Monte-Carlo estimates from fresh
//!    samples and the cosine is undefined, see [`metrics`]);
//! 3. unless k = G, update to π_{k+1} by the arm's method.
//!
//! Methods:
//! * `curated-sft` — the paper: curate the pool (rule × accumulate/replace),
//!   then SFT for `epochs` on the kept traces, starting from the base policy
//!   (the paper's experiments) or from π_k (its theory);
//! * `raft` — on-policy curated SFT: the generation's budget in `rl_batches`
//!   successive batches, each curated on its own and fine-tuned from the
//!   current policy;
//! * `iw-sft` — SFT on every accepted sample of every generation, weighted
//!   by the clipped importance ratio min(π_θ(y)/β(y), c) recomputed at every
//!   step (β: the generation that wrote y) — the correction `proofs/P03`
//!   says plain SFT needs to follow ∇J;
//! * `reinforce`, `rloo`, `grpo` — one on-policy gradient step per batch of
//!   `rl_batches` successive batches, reward = the judge's verdict.
//!
//! For on-policy arms (raft and the RL family) the samples of generation k
//! come from the successive policies within the generation; the exact
//! metrics are those of π_k, the policy at the start of the generation.

pub mod metrics;
mod workload;

pub use metrics::MetricRow;
pub use workload::{Role, Workload};

use rand::RngExt;
use rand::seq::SliceRandom;

use crate::curation::{Candidate, Pool, Rule};
use crate::estimator::{self, Trace};
use crate::exact::{self, PolicyTable};
use crate::optim::{Optimizer, OptimizerKind};
use crate::policy::Policy;
use crate::{Error, Result};

/// How an arm updates its policy (see the module docs).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    CuratedSft,
    Raft,
    IwSft,
    Reinforce,
    Rloo,
    Grpo,
}

impl Method {
    /// The name a spec uses (`method = "…"`), for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Method::CuratedSft => "curated-sft",
            Method::Raft => "raft",
            Method::IwSft => "iw-sft",
            Method::Reinforce => "reinforce",
            Method::Rloo => "rloo",
            Method::Grpo => "grpo",
        }
    }

    /// Arms that draw their budget in successive on-policy batches.
    pub fn on_policy(self) -> bool {
        matches!(
            self,
            Method::Raft | Method::Reinforce | Method::Rloo | Method::Grpo
        )
    }
}

/// Where a curated-SFT generation starts training from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Start {
    /// Retrain from the base policy every generation (the paper's runs).
    Base,
    /// Continue from the previous generation (the paper's theory).
    Continue,
}

/// One arm, fully resolved.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmConfig {
    pub name: String,
    pub method: Method,
    pub generations: usize,
    pub samples_per_task: usize,
    /// Sampling temperature τ (training is at τ = 1).
    pub temperature: f64,
    pub rule: Rule,
    pub pool: Pool,
    pub start: Start,
    pub optimizer: OptimizerKind,
    pub learning_rate: f64,
    /// SFT passes over the training set per generation (SFT-type methods).
    pub epochs: usize,
    /// Traces per SFT minibatch.
    pub batch_size: usize,
    /// Successive on-policy batches per generation (raft and RL methods).
    pub rl_batches: usize,
    /// Clip c of the importance ratio in `iw-sft`.
    pub iw_clip: f64,
    /// Clip update directions to this L2 norm (0: no clipping).
    pub max_grad_norm: f64,
    /// Decoupled weight decay λ per step (0: none; with Adam this is AdamW).
    pub weight_decay: f64,
    /// Probability that the judge accepts an invalid plan.
    pub false_accept: f64,
    /// Probability that the judge rejects a valid plan.
    pub false_reject: f64,
}

impl ArmConfig {
    /// Checks the values; the message names the arm and the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: &str| {
            Err(Error::Invalid(format!(
                "arm `{}`: `{field}` {why}",
                self.name
            )))
        };
        if self.samples_per_task == 0 {
            return bad("samples_per_task", "must be at least 1");
        }
        if crate::limits::check_temperature("temperature", self.temperature).is_err() {
            return bad(
                "temperature",
                &format!(
                    "= {} must be in [{:e}, {:e}]",
                    self.temperature,
                    crate::limits::MIN_TEMPERATURE,
                    crate::limits::MAX_TEMPERATURE
                ),
            );
        }
        if !positive(self.learning_rate) {
            return bad("learning_rate", "must be a positive number");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        crate::limits::check_count(
            &format!("arm `{}`: `epochs`", self.name),
            self.epochs,
            crate::limits::MAX_PASSES,
            "each is a full pass over the kept data",
        )?;
        if self.rl_batches == 0 || !self.samples_per_task.is_multiple_of(self.rl_batches) {
            return bad(
                "rl_batches",
                &format!(
                    "must be ≥ 1 and divide samples_per_task = {}",
                    self.samples_per_task
                ),
            );
        }
        if matches!(self.method, Method::Rloo | Method::Grpo)
            && self.samples_per_task / self.rl_batches < 2
        {
            return bad(
                "rl_batches",
                "leaves fewer than 2 samples per task per batch; rloo and grpo compare samples of a task",
            );
        }
        if self.method == Method::CuratedSft && self.rule == Rule::None && self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if !positive(self.iw_clip) {
            return bad("iw_clip", "must be positive");
        }
        if !(self.max_grad_norm == 0.0 || positive(self.max_grad_norm)) {
            return bad("max_grad_norm", "must be ≥ 0");
        }
        if !(self.weight_decay >= 0.0 && self.learning_rate * self.weight_decay < 1.0) {
            return bad(
                "weight_decay",
                "must be ≥ 0 with learning_rate × weight_decay < 1",
            );
        }
        for (field, p) in [
            ("false_accept", self.false_accept),
            ("false_reject", self.false_reject),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, "must be a probability in [0, 1]");
            }
        }
        Ok(())
    }

    fn optimizer(&self) -> Optimizer {
        let clip = (self.max_grad_norm > 0.0).then_some(self.max_grad_norm);
        Optimizer::new(self.optimizer, self.learning_rate, clip)
            .with_weight_decay(self.weight_decay)
    }
}

/// One deployed sample with the judge's verdict.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub trace: Trace,
    /// The judge's verdict (equals `trace.valid` without validator noise).
    pub accepted: bool,
    pub generation: usize,
    /// log β(y) under the policy that wrote it (at the sampling temperature).
    pub behaviour_logp: f64,
    /// Random key ordering ties among shortest plans (uniform ties).
    pub tie: u64,
    pub index: usize,
}

impl Candidate for Sample {
    fn task(&self) -> usize {
        self.trace.task
    }
    fn accepted(&self) -> bool {
        self.accepted
    }
    fn plan_length(&self) -> usize {
        self.trace.plan_length()
    }
    fn tie_key(&self) -> (u64, usize, usize) {
        (self.tie, self.generation, self.index)
    }
}

/// Everything needed to continue an arm after a finished generation
/// (the checkpoint). Randomness is drawn from streams keyed by (seed,
/// generation), so a resumed arm draws exactly what an uninterrupted one
/// would.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ArmState {
    /// The next generation to deploy.
    pub next_generation: usize,
    pub theta: Vec<f64>,
    /// θ of the previous generation (for the KL between generations).
    pub previous_theta: Option<Vec<f64>>,
    /// Samples of every generation so far (the accumulate pool).
    pub pool: Vec<Vec<Sample>>,
    pub rows: Vec<MetricRow>,
    /// Samples drawn (= validator calls) so far.
    pub samples_drawn: usize,
    /// Wall time of this process's generations (not checkpointed).
    #[serde(skip)]
    pub timings: Timings,
}

impl ArmState {
    /// The measured value of `metric` for `bucket` at `generation`; NaN
    /// where it was not measured (or is undefined).
    pub fn value(&self, generation: usize, bucket: &str, metric: &str) -> f64 {
        self.rows
            .iter()
            .find(|r| r.generation == generation && r.bucket == bucket && r.metric == metric)
            .map_or(f64::NAN, |r| r.value)
    }
}

/// Where an arm's time went, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Deploying and learning: sampling, judging, curating, updating.
    pub loop_seconds: f64,
    /// Exact measurement: policy tables, ∇J, KL, metrics.
    pub measure_seconds: f64,
}

impl ArmState {
    pub fn fresh(base: &dyn Policy) -> Self {
        ArmState {
            next_generation: 0,
            theta: base.params().to_vec(),
            previous_theta: None,
            pool: Vec::new(),
            rows: Vec::new(),
            samples_drawn: 0,
            timings: Timings::default(),
        }
    }

    pub fn finished(&self, arm: &ArmConfig) -> bool {
        self.next_generation > arm.generations
    }
}

/// Stream ids of the randomness of generation k (kept apart so that, e.g.,
/// validator noise never shifts the samples).
const SAMPLE_STREAM: u64 = 0;
const NOISE_STREAM: u64 = 1;
const TRAIN_STREAM: u64 = 2;
/// Fresh samples that measure a non-Markov policy (never trained on).
const MEASURE_STREAM: u64 = 3;

fn stream(seed: u64, generation: usize, purpose: u64) -> crate::rng::Rng {
    crate::rng::stream(seed, (generation as u64) << 8 | purpose)
}

/// The stream of sample `i` of task `x` in generation k.
fn sample_stream(
    seed: u64,
    generation: usize,
    x: usize,
    i: usize,
    purpose: u64,
) -> crate::rng::Rng {
    let key = ((generation as u64) << 48) ^ ((x as u64) << 24) ^ ((i as u64) << 8) ^ purpose;
    crate::rng::stream(seed ^ 0x5A3D_1E5C_0FF5_E7A1, key)
}

/// Runs one arm from `state` until it has measured generation G, calling
/// `checkpoint` after every generation. `base` is generation 0 (its
/// parameters are the starting point of `Start::Base` retraining).
pub fn run_arm(
    work: &Workload,
    base: &dyn Policy,
    arm: &ArmConfig,
    seed: u64,
    state: ArmState,
    checkpoint: impl FnMut(&ArmState) -> Result<()>,
) -> Result<ArmState> {
    run_arm_until(work, base, arm, arm.generations, seed, state, checkpoint)
}

/// [`run_arm`], stopping once generation `last` (≤ G) is measured — the
/// state is then exactly that of an uninterrupted run at that point.
pub fn run_arm_until(
    work: &Workload,
    base: &dyn Policy,
    arm: &ArmConfig,
    last: usize,
    seed: u64,
    mut state: ArmState,
    mut checkpoint: impl FnMut(&ArmState) -> Result<()>,
) -> Result<ArmState> {
    arm.validate()?;
    // π_{k−1}'s table, kept from the previous generation (recomputed from
    // `previous_theta` after a resume).
    let mut previous_table = None;
    while !state.finished(arm) && state.next_generation <= last.min(arm.generations) {
        deploy_generation(work, base, arm, seed, &mut state, &mut previous_table)?;
        checkpoint(&state)?;
    }
    Ok(state)
}

fn with_params(base: &dyn Policy, theta: &[f64], tau: f64) -> Box<dyn Policy> {
    let mut p = base.clone_box();
    p.params_mut().copy_from_slice(theta);
    p.set_temperature(tau);
    p
}

/// One generation: deploy, measure, update (see the module docs).
fn deploy_generation(
    work: &Workload,
    base: &dyn Policy,
    arm: &ArmConfig,
    seed: u64,
    state: &mut ArmState,
    previous_table: &mut Option<PolicyTable>,
) -> Result<()> {
    let env = &work.env;
    let k = state.next_generation;
    let last = k == arm.generations;
    let tau = arm.temperature;
    let deployed_tasks = work.tasks_with(Role::Deployed);
    let mut train_rng = stream(seed, k, TRAIN_STREAM);

    let started = std::time::Instant::now();
    let current = with_params(base, &state.theta, tau);
    // Exact measurement needs a Markov policy; a writer that reads its own
    // text is measured by sampling (see `metrics`) and has no exact ∇J to
    // compare update directions with.
    let exact = current.is_markov().then(|| {
        let table = PolicyTable::new(current.as_ref(), env);
        let gradient = exact::objective_gradient_at(env, current.as_ref(), &table);
        (table, gradient)
    });
    let cosine_to_true = |d: &[f64]| exact.as_ref().map_or(f64::NAN, |(_, g)| cosine(d, g));
    let mut measure_seconds = started.elapsed().as_secs_f64();

    // Sample i of task x in generation k has its own streams, so arms that
    // split the budget into batches draw, in their first batch, the very
    // samples the others draw first (common random numbers across arms).
    let draw = |policy: &dyn Policy, indices: std::ops::Range<usize>| -> Vec<Sample> {
        let mut out = Vec::with_capacity(indices.len() * deployed_tasks.len());
        let mut requests: Vec<(usize, Vec<crate::rng::Rng>)> = deployed_tasks
            .iter()
            .map(|&x| {
                let rngs = indices
                    .clone()
                    .map(|i| sample_stream(seed, k, x, i, SAMPLE_STREAM))
                    .collect();
                (x, rngs)
            })
            .collect();
        let drawn_all = policy.sample_tasks(env, &mut requests);
        for ((x, rngs), drawn) in requests.iter_mut().zip(drawn_all) {
            let x = *x;
            for ((i, (trace, behaviour_logp)), rng) in indices.clone().zip(drawn).zip(rngs) {
                let tie: u64 = rng.random();
                let u: f64 = sample_stream(seed, k, x, i, NOISE_STREAM).random();
                let accepted = if trace.valid {
                    u >= arm.false_reject
                } else {
                    u < arm.false_accept
                };
                out.push(Sample {
                    trace,
                    accepted,
                    generation: k,
                    behaviour_logp,
                    tie,
                    index: i,
                });
            }
        }
        out
    };

    let mut theta = state.theta.clone();
    let mut update_cosine = f64::NAN;
    let mut training_set_size = 0usize;
    // π_k's deployment: N samples per task from π_k on the shared streams.
    // Every arm at the same θ draws exactly these (at generation 0 all arms
    // do), so the generation's sampled metrics are paired across arms.
    let deployment = draw(current.as_ref(), 0..arm.samples_per_task);
    // A NaN or infinite log-probability means the policy's numbers broke
    // (an overflow in its forward pass); every estimator and importance
    // weight downstream would silently read it.
    if let Some(s) = deployment.iter().find(|s| !s.behaviour_logp.is_finite()) {
        return Err(Error::Invalid(format!(
            "arm `{}`, seed {seed}, generation {k}: sample {} has log-probability {}; the policy's forward pass overflowed",
            arm.name, s.index, s.behaviour_logp
        )));
    }
    if arm.method.on_policy() && !last {
        // The budget in successive batches, one update after each. The
        // first batch is the deployment's first samples (θ has not moved
        // yet); later batches come from the updated θ on their own streams.
        let per_batch = arm.samples_per_task / arm.rl_batches;
        let mut opt = arm.optimizer();
        for b in 0..arm.rl_batches {
            let policy = with_params(base, &theta, tau);
            let batch: Vec<Sample> = if b == 0 {
                deployment
                    .iter()
                    .filter(|s| s.index < per_batch)
                    .cloned()
                    .collect()
            } else {
                draw(policy.as_ref(), b * per_batch..(b + 1) * per_batch)
            };
            let train = with_params(base, &theta, 1.0);
            let direction = match arm.method {
                Method::Raft => {
                    let kept = crate::curation::select(
                        std::slice::from_ref(&batch),
                        arm.rule,
                        Pool::Replace,
                        seed ^ ((k * arm.rl_batches + b) as u64),
                    );
                    let traces: Vec<&Trace> = kept.iter().map(|s| &s.trace).collect();
                    training_set_size += traces.len();
                    let d = estimator::sft_gradient(env, train.as_ref(), &traces);
                    let mut p = train;
                    fit_sft_arm(env, p.as_mut(), &traces, arm, &mut train_rng);
                    theta = p.params().to_vec();
                    d
                }
                _ => {
                    let judged: Vec<Trace> = batch
                        .iter()
                        .map(|s| Trace {
                            valid: s.accepted,
                            ..s.trace.clone()
                        })
                        .collect();
                    let d = match arm.method {
                        Method::Reinforce => estimator::reinforce(env, train.as_ref(), &judged),
                        Method::Rloo => estimator::rloo(env, train.as_ref(), &judged),
                        _ => estimator::grpo(env, train.as_ref(), &judged),
                    };
                    training_set_size += judged.len();
                    opt.ascend(&mut theta, &d);
                    d
                }
            };
            if b == 0 {
                update_cosine = cosine_to_true(&direction);
            }
        }
    }
    // The training budget: N samples per deployed task for every arm (the
    // on-policy arms' later batches replace, not add to, the deployment's
    // samples after their first batch).
    state.samples_drawn += deployment.len();
    state.pool.push(deployment);

    if !last {
        match arm.method {
            Method::CuratedSft => {
                let kept =
                    crate::curation::select(&state.pool, arm.rule, arm.pool, seed ^ k as u64);
                let traces: Vec<&Trace> = kept.iter().map(|s| &s.trace).collect();
                training_set_size = traces.len();
                let at_current = with_params(base, &state.theta, 1.0);
                update_cosine =
                    cosine_to_true(&estimator::sft_gradient(env, at_current.as_ref(), &traces));
                let start = match arm.start {
                    Start::Base => base.params(),
                    Start::Continue => &state.theta[..],
                };
                let mut p = with_params(base, start, 1.0);
                fit_sft_arm(env, p.as_mut(), &traces, arm, &mut train_rng);
                theta = p.params().to_vec();
            }
            Method::IwSft => {
                let kept: Vec<&Sample> =
                    state.pool.iter().flatten().filter(|s| s.accepted).collect();
                training_set_size = kept.len();
                let mut p = with_params(base, &state.theta, 1.0);
                update_cosine =
                    cosine_to_true(&importance_weighted_sft(env, p.as_ref(), &kept, arm));
                fit_iw_sft(env, p.as_mut(), &kept, arm, &mut train_rng);
                theta = p.params().to_vec();
            }
            _ => {}
        }
    }

    // A diverged update (a learning rate too large for the arm) would
    // otherwise turn every later metric into NaN, which the summaries treat
    // as "no data" — a silent hole instead of an answer.
    if let Some(i) = theta.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "arm `{}`, seed {seed}: the update after generation {k} diverged (parameter {i} became {}); \
             lower `learning_rate` (now {:e}) or set `max_grad_norm`",
            arm.name, theta[i], arm.learning_rate
        )));
    }

    let measuring = std::time::Instant::now();
    let n = arm.samples_per_task;
    let measured = match &exact {
        Some((table, _)) => {
            if previous_table.is_none()
                && let Some(t) = &state.previous_theta
            {
                *previous_table = Some(PolicyTable::new(with_params(base, t, tau).as_ref(), env));
            }
            metrics::exact_measurement(work, table, previous_table.as_ref(), n)
        }
        None => {
            let previous = state
                .previous_theta
                .as_ref()
                .map(|t| with_params(base, t, tau));
            metrics::sampled_measurement(work, current.as_ref(), previous.as_deref(), n, |x, i| {
                sample_stream(seed, k, x, i, MEASURE_STREAM)
            })
        }
    };
    let generation_samples = state.pool.last().expect("just pushed");
    state.rows.extend(metrics::generation_metrics(
        work,
        &metrics::GenerationInputs {
            generation: k,
            samples_per_task: n,
            measured: &measured,
            samples: generation_samples,
            update_cosine,
            training_set_size,
            samples_drawn: state.samples_drawn,
        },
    ));
    measure_seconds += measuring.elapsed().as_secs_f64();
    state.timings.measure_seconds += measure_seconds;
    state.timings.loop_seconds += started.elapsed().as_secs_f64() - measure_seconds;
    if arm.method == Method::CuratedSft && arm.pool == Pool::Replace {
        // Only the last generation is ever curated again; drop the rest
        // (keeps checkpoints small).
        let n = state.pool.len();
        for g in &mut state.pool[..n - 1] {
            g.clear();
        }
    }
    state.previous_theta = Some(std::mem::replace(&mut state.theta, theta));
    *previous_table = exact.map(|(table, _)| table);
    state.next_generation += 1;
    Ok(())
}

/// A finite number > 0 (false for NaN).
pub fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

/// cos(a, b); NaN if either is zero.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        f64::NAN
    } else {
        dot / (na * nb)
    }
}

/// SFT on `kept`: `epochs` shuffled passes in minibatches of `batch_size`,
/// each step along −∇L_SFT of the minibatch, taken by `opt`.
pub fn fit_sft(
    env: &crate::mdp::Deployment,
    policy: &mut dyn Policy,
    kept: &[&Trace],
    opt: &mut Optimizer,
    epochs: usize,
    batch_size: usize,
    rng: &mut crate::rng::Rng,
) {
    if kept.is_empty() {
        return;
    }
    let mut order: Vec<usize> = (0..kept.len()).collect();
    for _ in 0..epochs {
        order.shuffle(rng);
        for chunk in order.chunks(batch_size) {
            let batch: Vec<&Trace> = chunk.iter().map(|&i| kept[i]).collect();
            let g = estimator::sft_gradient(env, policy, &batch);
            opt.ascend(policy.params_mut(), &g);
        }
    }
}

/// [`fit_sft`] with the arm's settings and a fresh optimiser (every
/// generation is a new fine-tuning job).
fn fit_sft_arm(
    env: &crate::mdp::Deployment,
    policy: &mut dyn Policy,
    kept: &[&Trace],
    arm: &ArmConfig,
    rng: &mut crate::rng::Rng,
) {
    let mut opt = arm.optimizer();
    fit_sft(env, policy, kept, &mut opt, arm.epochs, arm.batch_size, rng);
}

/// (1/|batch|) Σ min(π_θ(y)/β(y), c) ∇ log π_θ(y) over accepted samples.
fn importance_weighted_sft(
    env: &crate::mdp::Deployment,
    policy: &dyn Policy,
    batch: &[&Sample],
    arm: &ArmConfig,
) -> Vec<f64> {
    let mut g = vec![0.0; policy.num_params()];
    if batch.is_empty() {
        return g;
    }
    let mut at_tau = policy.clone_box();
    at_tau.set_temperature(arm.temperature);
    let w = 1.0 / batch.len() as f64;
    let weighted: Vec<(&Trace, f64)> = batch
        .iter()
        .map(|s| {
            let rho = (at_tau.trace_log_prob(env, &s.trace) - s.behaviour_logp)
                .exp()
                .min(arm.iw_clip);
            (&s.trace, w * rho)
        })
        .collect();
    policy.accumulate_trace_scores(env, &weighted, &mut g);
    g
}

fn fit_iw_sft(
    env: &crate::mdp::Deployment,
    policy: &mut dyn Policy,
    kept: &[&Sample],
    arm: &ArmConfig,
    rng: &mut crate::rng::Rng,
) {
    if kept.is_empty() {
        return;
    }
    let mut opt = arm.optimizer();
    let mut order: Vec<usize> = (0..kept.len()).collect();
    for _ in 0..arm.epochs {
        order.shuffle(rng);
        for chunk in order.chunks(arm.batch_size) {
            let batch: Vec<&Sample> = chunk.iter().map(|&i| kept[i]).collect();
            let g = importance_weighted_sft(env, policy, &batch, arm);
            opt.ascend(policy.params_mut(), &g);
        }
    }
}
