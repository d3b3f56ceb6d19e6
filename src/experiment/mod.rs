//! Running experiment specs: build the tasks and generation 0, run every
//! (seed, arm) job, and write `plots/<id>/` (`plots/<id>-smoke/` for a
//! smoke run):
//!
//! | file | content |
//! |---|---|
//! | `spec.toml` | the resolved spec (every arm field written out) |
//! | `results.csv` | every measured number, one row per seed |
//! | `summary.csv` | every plotted number: mean and 95% CI over seeds |
//! | `*.png`, `*.svg` | the figures |
//! | `summary.md` | the question, headline numbers, figure list |
//! | `completions.jsonl` | free-text policies only (plan writer, pretrained model): every completion sampled, one JSON line each (arm, seed, generation, task, sample, valid, text) |
//!
//! Long runs: a progress bar on stderr; each seed's trained generation 0,
//! and after every generation each job, writes a checkpoint under
//! `plots/<id>/checkpoints/`, and a rerun of the
//! same spec resumes from it (a checkpoint of another spec is ignored);
//! all files are written atomically. Randomness comes from streams keyed by
//! seed and generation, so the same spec gives byte-identical CSVs, resumed
//! or not.

mod analysis;
pub mod reach;
mod report;
pub mod spec;

pub use report::{Compared, compare, fmt_value, summary_series};
pub use spec::{Resolved, Spec};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use crate::deploy::{self, ArmState, Role, Workload};
use crate::estimator::Trace;
use crate::generate::{DomainKind, Params};
use crate::optim::Optimizer;
use crate::policy::{Mlp, Policy, Tabular};
use crate::{Error, Result};

/// The headline experiment's spec, built into the binary for the main job
/// (the same file as `experiments/headline.toml`).
pub const HEADLINE_SPEC: &str = include_str!("../../experiments/headline.toml");

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Parent of the output directory (`plots`).
    pub out_root: PathBuf,
    /// Scale the spec down (see [`Resolved::smoke`]).
    pub smoke: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop every job once it has measured this many generations, keeping
    /// its checkpoint and writing no results; a later run without it
    /// resumes (budgeted runs, and how resumption is tested).
    pub pause_after: Option<usize>,
}

/// Where a finished run put its outputs, and its summary text (empty, with
/// no figures, for a paused run).
pub struct RunOutcome {
    pub dir: PathBuf,
    pub summary: String,
    pub figures: Vec<String>,
}

/// The tasks of a spec: deployed and held-out tasks of every bucket, and
/// the base (demonstration) tasks, in one deployment; plus the base
/// demonstrations (one shortest plan per base task).
pub fn build_workload(spec: &Spec) -> Result<(Workload, Vec<Trace>)> {
    let t = &spec.tasks;
    let kind = DomainKind::from_name(&t.domain)?;
    let domain = kind.parse_domain();
    let mut problems = Vec::new();
    let mut role = Vec::new();
    let mut bucket = Vec::new();
    let generate = |b: usize, count: usize, seed: u64| -> Result<Vec<crate::pddl::Problem>> {
        let spec_b = &t.buckets[b];
        let pairs: std::collections::BTreeMap<String, String> = spec_b
            .params
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    other => {
                        return Err(Error::Invalid(format!(
                            "bucket `{}`: parameter `{k}` = {other} is not an integer or string",
                            spec_b.name
                        )));
                    }
                };
                Ok((k.clone(), text))
            })
            .collect::<Result<_>>()?;
        let draw = |n: usize| -> Result<Vec<crate::pddl::Problem>> {
            let mut params = Params::new(kind, pairs.clone());
            crate::generate::generate(kind, &mut params, n, seed)
                .map_err(|e| Error::Invalid(format!("bucket `{}`: {e}", spec_b.name)))?
                .iter()
                .map(|g| {
                    crate::pddl::parse_problem(g.pddl.as_bytes(), &g.name, &domain)
                        .map_err(Into::into)
                })
                .collect()
        };
        if !t.nontrivial {
            return draw(count);
        }
        // The generator's task i depends on (seed, i) only, so drawing
        // more tasks keeps the first ones: the kept tasks are the first
        // `count` that need a step, whatever the number drawn.
        let mut drawn = count;
        loop {
            let kept: Vec<_> = draw(drawn)?
                .into_iter()
                .filter(|p| !solved_at_start(p))
                .take(count)
                .collect();
            if kept.len() == count {
                return Ok(kept);
            }
            if drawn >= NONTRIVIAL_DRAWS * count.max(1) {
                return Err(Error::Invalid(format!(
                    "bucket `{}`: tasks.nontrivial: only {} of {drawn} generated tasks need a step; \
                     these parameters give too few",
                    spec_b.name,
                    kept.len()
                )));
            }
            drawn = (2 * drawn).max(1);
        }
    };
    for (b, spec_b) in t.buckets.iter().enumerate() {
        let n = spec_b.size();
        let ps = if spec_b.files.is_empty() {
            // One generator seed per bucket, so buckets draw different tasks.
            generate(b, n, bucket_seed(t.seed, b))?
        } else {
            spec_b.files[..n]
                .iter()
                .map(|f| crate::pddl::read_problem(f, &domain))
                .collect::<Result<Vec<_>>>()?
        };
        let held = (n as f64 * t.held_out_fraction).floor() as usize;
        for (i, p) in ps.into_iter().enumerate() {
            problems.push(p);
            role.push(if i >= n - held {
                Role::HeldOut
            } else {
                Role::Deployed
            });
            bucket.push(b);
        }
    }
    for name in &spec.base.buckets {
        let b = t
            .buckets
            .iter()
            .position(|x| &x.name == name)
            .expect("checked when the spec was resolved");
        for p in generate(b, spec.base.tasks, bucket_seed(spec.base.seed, b))? {
            problems.push(p);
            role.push(Role::Base);
            bucket.push(b);
        }
    }
    let env = crate::mdp::Deployment::build(&domain, &problems, t.horizon, t.max_states)?;
    // The exact measurement keeps per-task occupancy and value tables,
    // (H+1) × states each, and a policy table of states × actions.
    let states: usize = env.tasks.iter().map(|s| s.num_states()).sum();
    crate::limits::check_memory(
        &format!("tasks.horizon = {} over {states} states", t.horizon),
        states as f64 * 8.0 * (4.0 * (t.horizon + 1) as f64 + 2.0 * env.num_actions() as f64),
        "states x (4 (H+1) + 2 actions) x 8 bytes",
    )?;
    let names = t.buckets.iter().map(|b| b.name.clone()).collect();
    let work = Workload::new(env, role, bucket, names)?;
    let demos = crate::verify::shortest_plans(&work.env)
        .into_iter()
        .filter(|d| work.role[d.task] == Role::Base)
        .collect();
    Ok((work, demos))
}

/// With `tasks.nontrivial`, how many tasks per task wanted the generator
/// may draw before the bucket is refused.
const NONTRIVIAL_DRAWS: usize = 64;

/// The goal holds in the initial state (the empty plan solves it).
fn solved_at_start(p: &crate::pddl::Problem) -> bool {
    let init: std::collections::HashSet<&crate::pddl::GroundAtom> = p.init.iter().collect();
    p.goal_equalities_hold && p.goal.iter().all(|l| init.contains(&l.atom) == l.positive)
}

fn bucket_seed(seed: u64, bucket: usize) -> u64 {
    seed.wrapping_add(1_000_003u64.wrapping_mul(bucket as u64))
}

/// Stream id of generation 0's initial weights.
const BASE_INIT_STREAM: u64 = 0xBA5E;
const BASE_TRAIN_STREAM: u64 = 0xBA5F;
/// Stream id of a pretrained model's LoRA dropout masks (generation 0 and,
/// continuing in each arm's copy, every later generation).
const BASE_DROPOUT_STREAM: u64 = 0xBA60;

/// Refuses a policy whose parameters (with gradient and optimiser state)
/// would not fit in memory, before any is allocated.
fn check_policy_size(spec: &Spec, env: &crate::mdp::Deployment) -> Result<()> {
    let p = &spec.policy;
    let actions = env.num_actions() as f64;
    // Parameters and the field that sets their number.
    let (params, field) = match p.kind {
        spec::PolicyKind::Mlp => {
            let h = p.hidden as f64;
            (
                h * (2.0 * env.num_features as f64 + 1.0 + actions) + actions,
                format!("policy.hidden = {}", p.hidden),
            )
        }
        spec::PolicyKind::Tabular => {
            let states: usize = env.tasks.iter().map(|s| s.num_states()).sum();
            (
                states as f64 * actions,
                format!("the tabular policy over {states} states"),
            )
        }
        spec::PolicyKind::Pretrained => {
            // Its own measured model: frozen weights, activations, and
            // per-job copies of the LoRA state.
            let jobs = jobs_of(spec);
            let (bytes, how) = pretrained_memory(p, jobs)?;
            return crate::limits::check_memory(
                &format!(
                    "policy.lora_rank = {} with {jobs} (seed, arm) job(s)",
                    p.pretrained_settings().lora.rank
                ),
                bytes,
                &how,
            );
        }
        spec::PolicyKind::Transformer | spec::PolicyKind::PlanWriter => {
            let (d, ff, l) = (p.d_model as f64, p.d_ff as f64, p.layers as f64);
            // Per block: attention 4d², MLP 2·d·d_ff; embeddings at least
            // one row per action name.
            (
                l * (4.0 * d * d + 2.0 * d * ff) + actions * d,
                format!(
                    "policy.d_model = {}, d_ff = {}, layers = {}",
                    p.d_model, p.d_ff, p.layers
                ),
            )
        }
    };
    crate::limits::check_memory(
        &field,
        params * crate::limits::BYTES_PER_PARAMETER,
        &format!(
            "{params:.3e} parameters x {} bytes",
            crate::limits::BYTES_PER_PARAMETER
        ),
    )
}

/// Bytes per LoRA parameter per (seed, arm) job of a pretrained run:
/// measured, not derived. Peak resident memory (VmHWM) of the pretrained
/// smoke run (1 seed × 2 arms, 2 threads, SmolLM2-135M, 48-token
/// completions; 2026-12-07, `/usr/bin/time -v`) was 4.82·10⁹ bytes at
/// lora_rank 16 (4.88·10⁶ LoRA parameters) and 8.86·10⁹ at rank 128
/// (3.91·10⁷): 118 bytes per parameter over 2 jobs, 59 per job. Per job:
/// θ and the previous θ in f64, the gradient and Adam's two moments, the
/// candle variables, their gradients and the sampling adapters in f32, and
/// the checkpoint's text while it is written. Every job is counted,
/// whether or not it runs at the same time: finished jobs keep θ. 64 with
/// a margin.
pub const PRETRAINED_BYTES_PER_PARAMETER_JOB: f64 = 64.0;

/// The part of the same peaks that does not grow with the rank: the
/// intercept, 4.24·10⁹ bytes, less the frozen f32 weights, 0.54·10⁹, is
/// 3.7·10⁹; 4.2·10⁹ with a margin of about 10% (a second run of the rank-16
/// smoke peaked 1.2% higher than the first). It holds the training
/// activations of the jobs that train at once, the key/value caches of
/// sampling, the tokenizer and the process. Longer completions than the
/// smoke's 48 tokens need more; the full spec (96 tokens) has not been
/// measured.
pub const PRETRAINED_FIXED_BYTES: f64 = 4.2e9;

/// The estimated peak memory (bytes) of a pretrained run of `resolved`,
/// scaled down first if `smoke`; None for other policy kinds.
pub fn pretrained_memory_estimate(resolved: &Resolved, smoke: bool) -> Result<Option<f64>> {
    if resolved.spec.policy.kind != spec::PolicyKind::Pretrained {
        return Ok(None);
    }
    let mut r = resolved.clone();
    if smoke {
        r.smoke();
    }
    Ok(Some(pretrained_memory(&r.spec.policy, jobs_of(&r.spec))?.0))
}

/// The (seed, arm) jobs a spec runs (one per seed without arms).
fn jobs_of(spec: &Spec) -> usize {
    spec.seeds.len() * spec.deployment.as_ref().map_or(1, |d| d.arms.len().max(1))
}

/// The estimated peak memory of a pretrained run with `jobs` (seed, arm)
/// jobs, and how it was formed.
fn pretrained_memory(p: &spec::PolicySpec, jobs: usize) -> Result<(f64, String)> {
    let path = p.model_path()?;
    let c = crate::pretrained::read_config(&path)?;
    let params = p.pretrained_settings().lora.num_params(&c) as f64;
    let frozen = 4.0 * c.num_weights() as f64;
    let bytes =
        frozen + PRETRAINED_FIXED_BYTES + params * PRETRAINED_BYTES_PER_PARAMETER_JOB * jobs as f64;
    Ok((
        bytes,
        format!(
            "{frozen:.2e} bytes of frozen f32 weights + {PRETRAINED_FIXED_BYTES:.1e} fixed + {params:.3e} LoRA parameters x {PRETRAINED_BYTES_PER_PARAMETER_JOB} bytes x {jobs} jobs, measured on {}",
            path.display()
        ),
    ))
}

/// Generation 0 for `seed`: initial weights from our generator, then SFT
/// on the demonstrations.
pub fn base_policy(
    spec: &Spec,
    work: &Workload,
    demos: &[Trace],
    seed: u64,
) -> Result<Box<dyn Policy>> {
    let mut policy = untrained_policy(spec, work, seed)?;
    let env = &work.env;
    let kept: Vec<&Trace> = demos.iter().collect();
    let b = &spec.base;
    let mut opt = Optimizer::new(b.optimizer, b.learning_rate, None);
    deploy::fit_sft(
        env,
        policy.as_mut(),
        &kept,
        &mut opt,
        b.epochs,
        b.batch_size,
        &mut crate::rng::stream(seed, BASE_TRAIN_STREAM),
    );
    // A diverged generation 0 is the base's fault: say so here, before an
    // arm inherits NaN parameters and the error blames the arm.
    if let Some(i) = policy.params().iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "seed {seed}: generation 0 diverged while training on the demonstrations (parameter {i} became {}); lower `base.learning_rate` (now {:e}) or `base.epochs` (now {})",
            policy.params()[i],
            b.learning_rate,
            b.epochs
        )));
    }
    Ok(policy)
}

/// The spec's policy at its seeded initial weights, before any training.
fn untrained_policy(spec: &Spec, work: &Workload, seed: u64) -> Result<Box<dyn Policy>> {
    let p = &spec.policy;
    let env = &work.env;
    let mut init = crate::rng::stream(seed, BASE_INIT_STREAM);
    // Filled in for every kind that has one when the spec was resolved.
    let prior = p.prior.unwrap_or(spec::DEFAULT_PRIOR);
    check_policy_size(spec, env)?;
    let size = p.transformer_size();
    let policy: Box<dyn Policy> = match p.kind {
        spec::PolicyKind::Mlp => {
            Box::new(Mlp::new(env, p.hidden, 1.0, p.init_scale, prior, &mut init))
        }
        spec::PolicyKind::Tabular => {
            let mut t = Tabular::zeros(env, 1.0, prior);
            let normal = Normal::new(0.0, p.init_scale).expect("finite scale");
            for v in t.params_mut() {
                *v = normal.sample(&mut init);
            }
            Box::new(t)
        }
        spec::PolicyKind::Transformer => {
            Box::new(crate::policy::Transformer::new(env, size, 1.0, &mut init)?.with_prior(prior))
        }
        spec::PolicyKind::PlanWriter => {
            Box::new(crate::policy::PlanWriter::new(env, size, 1.0, &mut init)?)
        }
        spec::PolicyKind::Pretrained => {
            let backbone = crate::pretrained::policy::backbone(&p.model_path()?)?;
            let settings = p.pretrained_settings();
            let theta = settings.lora.init(&backbone.model.config, &mut init);
            Box::new(crate::pretrained::Pretrained::new(
                backbone,
                env,
                settings,
                theta,
                1.0,
                crate::rng::stream(seed, BASE_DROPOUT_STREAM),
            )?)
        }
    };
    Ok(policy)
}

/// Generation 0 of `seed`, trained once: its parameters are checkpointed
/// as `base-seed<seed>.json` in `ck_dir`, so a run killed after (or during
/// the first generation after) a long base training resumes without
/// retraining. A checkpoint of another spec is ignored and replaced.
fn checkpointed_base(
    spec: &Spec,
    work: &Workload,
    demos: &[Trace],
    seed: u64,
    ck_dir: &Path,
    fingerprint: &str,
) -> Result<Box<dyn Policy>> {
    let path = ck_dir.join(format!("base-seed{seed}.json"));
    if let Some(theta) = load_checkpoint::<Vec<f64>>(&path, fingerprint) {
        // The untrained policy fixes the shape; the saved θ replaces its
        // initial weights (a θ of the wrong length is not this spec's).
        let mut policy = untrained_policy(spec, work, seed)?;
        if theta.len() == policy.params().len() && theta.iter().all(|v| v.is_finite()) {
            policy.params_mut().copy_from_slice(&theta);
            return Ok(policy);
        }
    }
    let policy = base_policy(spec, work, demos, seed)?;
    save_checkpoint(&path, fingerprint, &policy.params())?;
    Ok(policy)
}

/// A checkpoint on disk: the spec fingerprint and what it saves (an arm's
/// state, or generation 0's θ).
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint<T> {
    fingerprint: String,
    state: T,
}

/// The state saved at `path` for the spec `fingerprint`; None if there is
/// none, it does not parse, or it belongs to another spec.
fn load_checkpoint<T: serde::de::DeserializeOwned>(path: &Path, fingerprint: &str) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Checkpoint<T>>(&b).ok())
        .filter(|c| c.fingerprint == fingerprint)
        .map(|c| c.state)
}

/// Writes `state` at `path` (atomically) for the spec `fingerprint`.
fn save_checkpoint<T: serde::Serialize + ?Sized>(
    path: &Path,
    fingerprint: &str,
    state: &T,
) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Borrowed<'a, T: ?Sized> {
        fingerprint: &'a str,
        state: &'a T,
    }
    let bytes = serde_json::to_vec(&Borrowed { fingerprint, state })
        .map_err(|e| Error::Invalid(format!("{}: checkpoint: {e}", path.display())))?;
    crate::output::write_atomic(path, &bytes)
}

/// Identifies the resolved spec (and the scale) a checkpoint belongs to.
fn fingerprint(resolved: &Resolved, smoke: bool) -> String {
    use std::hash::Hasher;
    let mut h = crate::hashing::FxHasher::default();
    h.write(resolved.to_toml().as_bytes());
    h.write_u8(smoke as u8);
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    format!("{:016x}", h.finish())
}

/// The directory name of a run of spec `id`: `<id>`, or `<id>-smoke` for a
/// smoke run, so a quick check never replaces a full run's results.
pub fn output_name(id: &str, smoke: bool) -> String {
    if smoke {
        format!("{id}-smoke")
    } else {
        id.to_string()
    }
}

/// Runs `resolved` and writes its outputs (see the module docs).
pub fn run(resolved: &Resolved, opts: &RunOptions) -> Result<RunOutcome> {
    if opts.pause_after == Some(0) {
        return Err(Error::Invalid(
            "pause after 0 generations would run nothing; give K ≥ 1".into(),
        ));
    }
    let mut resolved = resolved.clone();
    if opts.smoke {
        resolved.smoke();
    }
    let dir = opts
        .out_root
        .join(output_name(&resolved.spec.id, opts.smoke));
    // A link planted as the run folder or as its checkpoints/ would send
    // the run's writes, and its final removal of checkpoints/, into the
    // link's target: refused before anything is written.
    crate::output::refuse_linked_dir(&dir)?;
    crate::output::refuse_linked_dir(&dir.join("checkpoints"))?;
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // One run per directory at a time: a second one would rewrite the
    // first's checkpoints under it. Held until this function returns.
    let _lock = crate::output::lock_dir(&dir)?;
    crate::output::remove_stale_temps(&dir);
    crate::output::begin_set(&dir)?;
    // An earlier run's completions are not this run's.
    match std::fs::remove_file(dir.join(COMPLETIONS)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::io(&dir.join(COMPLETIONS), e));
        }
        _ => {}
    }
    crate::output::write_atomic(&dir.join("spec.toml"), resolved.to_toml().as_bytes())?;
    let (with_base, demos) = build_workload(&resolved.spec)?;
    let spec = &resolved.spec;
    let work = with_base.without_base()?;
    let fp = fingerprint(&resolved, opts.smoke);
    let ck_dir = dir.join("checkpoints");
    // Checked again under the lock: planted after the first check.
    crate::output::refuse_linked_dir(&ck_dir)?;
    std::fs::create_dir_all(&ck_dir).map_err(|e| Error::io(&ck_dir, e))?;
    crate::output::remove_stale_temps(&ck_dir);
    let bases: Vec<Box<dyn Policy>> = spec
        .seeds
        .par_iter()
        .map(|&seed| {
            let base = checkpointed_base(spec, &with_base, &demos, seed, &ck_dir, &fp)?;
            Ok(base.for_task_prefix(&work.env))
        })
        .collect::<Result<_>>()?;
    drop(with_base);
    let outcome = match resolved.kind() {
        spec::Kind::Deployment(arms) => {
            let states = run_arms(&work, spec, arms, &bases, &ck_dir, &fp, opts)?;
            if states
                .iter()
                .flatten()
                .zip(arms.iter().cycle())
                .any(|(s, a)| !s.finished(a))
            {
                return Ok(RunOutcome {
                    dir,
                    summary: String::new(),
                    figures: Vec::new(),
                });
            }
            report::write_deployment(&dir, &resolved, &work, &states)?
        }
        spec::Kind::GradientError(g) => {
            analysis::gradient_error(&dir, &resolved, &work, &bases, g)?
        }
        spec::Kind::Drift(d) => analysis::drift(&dir, &resolved, &work, &bases, d)?,
    };
    join_completions(&dir, &ck_dir, spec, resolved.arms.len())?;
    crate::output::write_atomic(&dir.join("summary.md"), outcome.summary.as_bytes())?;
    // Written last: the outputs of this run are now one set.
    let mut files: Vec<String> = [
        "spec.toml",
        "results.csv",
        "summary.csv",
        "summary.md",
        COMPLETIONS,
    ]
    .into_iter()
    .filter(|f| dir.join(f).is_file())
    .map(String::from)
    .collect();
    for stem in &outcome.figures {
        files.push(format!("{stem}.png"));
        files.push(format!("{stem}.svg"));
    }
    crate::output::finish_set(&dir, &files)?;
    // Only now: until the set is marked, a failed or killed run resumes
    // from its checkpoints rather than starting over.
    std::fs::remove_dir_all(&ck_dir).map_err(|e| Error::io(&ck_dir, e))?;
    Ok(RunOutcome { dir, ..outcome })
}

/// The file of one generation's completions of one job, under
/// `checkpoints/` until the run is whole (written atomically, so a rerun
/// of the generation after a kill replaces it).
fn completions_file(ck_dir: &Path, arm: usize, seed: u64, generation: usize) -> PathBuf {
    ck_dir.join(format!(
        "completions-arm{arm}-seed{seed}-gen{generation}.jsonl"
    ))
}

/// The file every completion of a run goes to (free-text policies only).
pub const COMPLETIONS: &str = "completions.jsonl";

/// Writes the text of every sample of the generation `state` just
/// finished, for a policy that writes free text (the plan writer, a
/// pretrained model): one JSON line each, with arm, seed, generation,
/// task, sample index, and whether the plan was valid.
fn save_completions(
    ck_dir: &Path,
    env: &crate::mdp::Deployment,
    arm: &deploy::ArmConfig,
    a: usize,
    seed: u64,
    policy: &dyn Policy,
    state: &ArmState,
) -> Result<()> {
    let Some(samples) = state.pool.last() else {
        return Ok(());
    };
    let mut out = String::new();
    for sm in samples {
        let Some(text) = policy.completion_text(env, &sm.trace) else {
            continue;
        };
        let line = serde_json::json!({
            "arm": arm.name,
            "seed": seed,
            "generation": sm.generation,
            "task": env.tasks[sm.trace.task].name,
            "sample": sm.index,
            "valid": sm.trace.valid,
            "text": text,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    match samples.first() {
        Some(first) if !out.is_empty() => crate::output::write_atomic(
            &completions_file(ck_dir, a, seed, first.generation),
            out.as_bytes(),
        ),
        _ => Ok(()),
    }
}

/// Joins the jobs' completion files, in arm, seed and generation order,
/// into the run folder's [`COMPLETIONS`], if there are any.
fn join_completions(dir: &Path, ck_dir: &Path, spec: &Spec, arms: usize) -> Result<()> {
    let mut all = Vec::new();
    for a in 0..arms {
        for &seed in &spec.seeds {
            for g in 0.. {
                let f = completions_file(ck_dir, a, seed, g);
                if !f.is_file() {
                    break;
                }
                all.extend(crate::input::read_file(&f)?);
            }
        }
    }
    if all.is_empty() {
        return Ok(());
    }
    crate::output::write_atomic(&dir.join(COMPLETIONS), &all)
}

/// Every (seed, arm) job, in parallel; results indexed [seed][arm].
fn run_arms(
    work: &Workload,
    spec: &Spec,
    arms: &[deploy::ArmConfig],
    bases: &[Box<dyn Policy>],
    ck_dir: &Path,
    fingerprint: &str,
    opts: &RunOptions,
) -> Result<Vec<Vec<ArmState>>> {
    let jobs: Vec<(usize, usize)> = (0..spec.seeds.len())
        .flat_map(|s| (0..arms.len()).map(move |a| (s, a)))
        .collect();
    let total: u64 = jobs
        .iter()
        .map(|&(_, a)| arms[a].generations as u64 + 1)
        .sum();
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} generations (eta {eta})",
            )
            .expect("static template"),
        );
        b.set_prefix(spec.id.clone());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    // A bar needs a terminal; a run logged to a file gets one line per
    // generation instead, so an hour-long run shows where it is.
    let log_lines = opts.progress && !std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let results: Vec<Result<ArmState>> = jobs
        .par_iter()
        .map(|&(s, a)| {
            let seed = spec.seeds[s];
            let arm = &arms[a];
            let path = ck_dir.join(format!("arm{a}-seed{seed}.json"));
            let state = match load_checkpoint::<ArmState>(&path, fingerprint) {
                Some(state) => {
                    bar.inc(state.next_generation as u64);
                    state
                }
                None => ArmState::fresh(bases[s].as_ref()),
            };
            // Paused runs stop after `pause_after` generations (the
            // arm's config is otherwise untouched, so the fingerprint and
            // the random streams are those of the full run).
            let mut until = arm.clone();
            if let Some(k) = opts.pause_after {
                until.generations = until.generations.min(k.saturating_sub(1));
            }
            let paused = until.generations < arm.generations;
            let state = if paused && state.finished(&until) {
                state
            } else {
                deploy::run_arm_until(
                    work,
                    bases[s].as_ref(),
                    arm,
                    until.generations,
                    seed,
                    state,
                    |st| {
                        bar.inc(1);
                        if log_lines {
                            eprintln!("{}", progress_line(&spec.id, arm, seed, st, &started));
                        }
                        save_completions(ck_dir, &work.env, arm, a, seed, bases[s].as_ref(), st)?;
                        save_checkpoint(&path, fingerprint, st)
                    },
                )?
            };
            Ok(state)
        })
        .collect();
    bar.finish_and_clear();
    let mut out: Vec<Vec<ArmState>> = (0..spec.seeds.len()).map(|_| Vec::new()).collect();
    for ((s, _), r) in jobs.iter().zip(results) {
        out[*s].push(r?);
    }
    Ok(out)
}

/// One generation's line of progress: which job, which generation of how
/// many, its measured solved@1 over the deployed tasks, the time so far.
fn progress_line(
    id: &str,
    arm: &deploy::ArmConfig,
    seed: u64,
    st: &ArmState,
    started: &std::time::Instant,
) -> String {
    let g = st.next_generation.saturating_sub(1);
    let solved = st
        .rows
        .iter()
        .rev()
        .find(|r| {
            r.generation == g
                && r.bucket == crate::deploy::metrics::BUCKET_ALL
                && r.metric == "success_prob"
        })
        .map_or("–".to_string(), |r| format!("{:.3}", r.value));
    let s = started.elapsed().as_secs();
    format!(
        "{id}: {}, seed {seed}: generation {g} of {} done, solved@1 {solved} ({}m{:02}s)",
        arm.name,
        arm.generations,
        s / 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
id = "base-ck"
title = "t"
question = "q"
seeds = [3]
[tasks]
domain = "blocksworld"
horizon = 8
seed = 5
[[tasks.buckets]]
name = "3 blocks"
count = 2
params = { blocks = 3 }
[policy]
kind = "mlp"
hidden = 8
[base]
buckets = ["3 blocks"]
tasks = 3
seed = 9
epochs = 3
learning_rate = 0.01
[deployment.defaults]
generations = 1
samples_per_task = 4
[[deployment.arms]]
name = "paper"
method = "curated-sft"
"#;

    fn write(path: &Path, fingerprint: &str, theta: Vec<f64>) {
        save_checkpoint(path, fingerprint, &theta).unwrap();
    }

    #[test]
    fn generation_zero_is_trained_once_and_restored_from_its_checkpoint() {
        let r = Resolved::parse(SPEC, "base-ck").unwrap();
        let (work, demos) = build_workload(&r.spec).unwrap();
        let dir = std::env::temp_dir().join(format!("iterdeploy-base-ck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("base-seed3.json");
        let trained = base_policy(&r.spec, &work, &demos, 3).unwrap();
        let first = checkpointed_base(&r.spec, &work, &demos, 3, &dir, "fp").unwrap();
        assert_eq!(first.params(), trained.params());
        assert!(path.is_file(), "the trained base is checkpointed");
        // A checkpoint of this spec is loaded, not retrained: planted
        // parameters come back as they were written.
        let n = trained.params().len();
        let planted: Vec<f64> = (0..n).map(|i| 0.25 + i as f64 * 1e-3).collect();
        write(&path, "fp", planted.clone());
        let resumed = checkpointed_base(&r.spec, &work, &demos, 3, &dir, "fp").unwrap();
        assert_eq!(resumed.params(), &planted[..]);
        // Another spec's checkpoint, a wrong length or a non-finite value
        // is retrained (and the file replaced with this spec's base).
        for (fp, theta) in [
            ("other", planted.clone()),
            ("fp", planted[1..].to_vec()),
            ("fp", vec![f64::NAN; n]),
        ] {
            write(&path, fp, theta);
            let again = checkpointed_base(&r.spec, &work, &demos, 3, &dir, "fp").unwrap();
            assert_eq!(again.params(), trained.params());
        }
        let saved: Checkpoint<Vec<f64>> =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(saved.fingerprint, "fp");
        assert_eq!(saved.state, trained.params());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
