//! The pretrained model as a deployment policy (`[policy] kind =
//! "pretrained"`): the plan writer's shape with a pretrained backbone.
//!
//! * The prompt is the task in the model's chat template (a system turn
//!   saying what to write, a user turn with the domain's action names, the
//!   objects, the initial facts and the goal facts); the completion is the
//!   assistant's free text, up to `<|im_end|>` or `max_new_tokens`.
//! * A completion is judged as the paper judges model output: the bridge's
//!   extractor finds the plan in the text ([`crate::extract`]), and the
//!   plan is valid iff every step names an action of the task, each is
//!   applicable in turn within the horizon, and the last state satisfies
//!   the goal. A completion cut off at `max_new_tokens` is judged by the
//!   plan found in it, like any other text.
//! * θ is the LoRA parameters ([`super::lora`]) on the frozen base, so the
//!   loop's estimators, curation rules and P01's identity apply unchanged:
//!   the score ∇θ log π(y|x) is the gradient of the completion tokens'
//!   teacher-forced log-likelihood at τ.
//! * Training (every call of [`Policy::accumulate_trace_scores`]) draws
//!   LoRA dropout masks from the policy's own seeded stream, as peft does
//!   in train mode; scoring ([`Policy::trace_log_prob`]) and sampling use
//!   none. With `dropout = 0` the training score is exactly ∇ log π.
//!
//! The model's weights are loaded once per process and shared by every
//! clone (seeds, arms, generations): a clone is θ and the task prompts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::DType;

use super::lora::{Adapted, Adapters, LoraConfig, Mode};
use super::{ChatTokenizer, Llama};
use crate::estimator::Trace;
use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::plan::StepSyntax;
use crate::policy::Policy;
use crate::policy::transformer::sampling::Sampling;
use crate::rng::Rng;
use crate::{Error, Result};

/// The frozen model and its tokenizer, loaded once per file.
pub struct Backbone {
    pub model: Llama,
    pub tokenizer: ChatTokenizer,
    pub path: PathBuf,
}

/// Loads `path` (a GGUF file or a Hugging Face directory) on the CPU, or returns the copy already
/// loaded in this process.
pub fn backbone(path: &Path) -> Result<Arc<Backbone>> {
    static LOADED: Mutex<Vec<Arc<Backbone>>> = Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = loaded.iter().find(|b| b.path == path) {
        return Ok(b.clone());
    }
    let (tokenizer, model) = super::load(path, &crate::policy::transformer::device())?;
    let b = Arc::new(Backbone {
        tokenizer,
        model,
        path: path.to_path_buf(),
    });
    loaded.push(b.clone());
    Ok(b)
}

/// What a spec sets besides the file: LoRA, the completion budget,
/// top-k and top-p (sampling only: the score and log π are those of the
/// full softmax at τ, the sampler's truncated probability is the
/// behaviour's, which importance weights divide by).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub lora: LoraConfig,
    pub max_new_tokens: usize,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
}

/// The system turn of every prompt.
const SYSTEM: &str = "You are a planner. Answer with the plan only: one action per line, \
                      written as (action-name argument ...), and nothing else.";

/// Rows decoded together (whole tasks): up to here a decoding step costs
/// about one read of the weights, whatever the row count.
const DECODE_ROWS: usize = 32;

/// Rows per teacher-forced pass in training. The graph of one pass holds
/// every layer's activations, so memory grows with rows × tokens × layers:
/// at 4 rows the smoke run (two jobs training at once) peaked at 16 GB
/// resident, at 2 rows at 11.6 GB.
const TRAIN_ROWS: usize = 2;

/// The deployment policy (module docs).
pub struct Pretrained {
    backbone: Arc<Backbone>,
    settings: Settings,
    theta: Vec<f64>,
    tau: f64,
    /// Per task of the deployment: the prompt's token ids.
    prompts: Arc<Vec<Vec<u32>>>,
    /// Ground action `(name arg …)` → its shared id; action names.
    actions: Arc<HashMap<String, ActionId>>,
    names: Arc<Vec<String>>,
    /// The candle adapters of θ, rebuilt after `params_mut`.
    adapters: Mutex<Option<Arc<Adapters>>>,
    /// Dropout masks of training passes.
    dropout: Mutex<Rng>,
}

impl Clone for Pretrained {
    fn clone(&self) -> Self {
        Pretrained {
            backbone: self.backbone.clone(),
            settings: self.settings,
            theta: self.theta.clone(),
            tau: self.tau,
            prompts: self.prompts.clone(),
            actions: self.actions.clone(),
            names: self.names.clone(),
            adapters: Mutex::new(
                self.adapters
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
            dropout: Mutex::new(
                self.dropout
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }
}

/// The action schemas of `env`, as (name, arity) in order of first
/// appearance among its ground actions `(name arg …)`.
fn schemas(env: &Deployment) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    for name in &env.action_names[..env.end()] {
        let mut words = name
            .trim_matches(|c| c == '(' || c == ')')
            .split_whitespace();
        if let Some(head) = words.next() {
            let schema = (head.to_lowercase(), words.count());
            if !out.contains(&schema) {
                out.push(schema);
            }
        }
    }
    out
}

/// The user turn for task `x` of `env`.
pub fn task_text(env: &Deployment, x: usize) -> String {
    let t = &env.tasks[x];
    let schemas: Vec<String> = schemas(env)
        .into_iter()
        .map(|(name, arity)| {
            let params: String = (0..arity)
                .map(|i| format!(" ?{}", (b'x' + i as u8) as char))
                .collect();
            format!("({name}{params})")
        })
        .collect();
    let facts = |ids: &[u32]| {
        ids.iter()
            .map(|&f| env.fact_names[f as usize].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let objects: Vec<&str> = t.problem.objects.iter().map(|o| o.name.as_str()).collect();
    format!(
        "Domain: {}\nActions: {}\nObjects: {}\nInitial state: {}\nGoal: {}\nPlan:",
        t.problem.domain_name,
        schemas.join(" "),
        objects.join(" "),
        facts(&t.state_features[0]),
        facts(&t.goal_features),
    )
}

/// The chat prompt of task `x` of `env` (token ids, ending where the
/// answer begins).
pub fn chat_prompt(tok: &ChatTokenizer, env: &Deployment, x: usize) -> Result<Vec<u32>> {
    tok.chat_prompt(SYSTEM, &task_text(env, x))
}

impl Pretrained {
    /// The policy on `env` with LoRA parameters `theta` (see
    /// [`LoraConfig::init`]); dropout masks from `dropout`.
    pub fn new(
        backbone: Arc<Backbone>,
        env: &Deployment,
        settings: Settings,
        theta: Vec<f64>,
        tau: f64,
        dropout: Rng,
    ) -> Result<Pretrained> {
        let c = &backbone.model.config;
        if theta.len() != settings.lora.num_params(c) {
            return Err(Error::Invalid(format!(
                "pretrained policy: {} LoRA parameters given, {} needed",
                theta.len(),
                settings.lora.num_params(c)
            )));
        }
        let tok = &backbone.tokenizer;
        let prompts = (0..env.tasks.len())
            .map(|x| {
                let p = chat_prompt(tok, env, x)?;
                if p.len() + settings.max_new_tokens > c.context {
                    return Err(Error::Invalid(format!(
                        "task {}: a prompt of {} tokens and max_new_tokens = {} exceed the model's context of {}",
                        env.tasks[x].name,
                        p.len(),
                        settings.max_new_tokens,
                        c.context
                    )));
                }
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        let actions = env.action_names[..env.end()]
            .iter()
            .enumerate()
            .map(|(a, n)| (n.to_lowercase(), a))
            .collect();
        let mut names: Vec<String> = schemas(env).into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(Pretrained {
            backbone,
            settings,
            theta,
            tau,
            prompts: Arc::new(prompts),
            actions: Arc::new(actions),
            names: Arc::new(names),
            adapters: Mutex::new(None),
            dropout: Mutex::new(dropout),
        })
    }

    /// The tokenizer and frozen decoder.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The chat prompt of task `x` (token ids, ending where the answer
    /// begins).
    pub fn prompt(&self, x: usize) -> &[u32] {
        &self.prompts[x]
    }

    /// The adapters of θ for sampling and scoring (built once per θ).
    pub fn adapters(&self) -> Result<Arc<Adapters>> {
        let mut slot = self.adapters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let a = Arc::new(self.build_adapters(Mode::Infer)?);
        *slot = Some(a.clone());
        Ok(a)
    }

    fn build_adapters(&self, mode: Mode) -> Result<Adapters> {
        let m = &self.backbone.model;
        Adapters::from_flat(
            &m.config,
            self.settings.lora,
            &self.theta,
            (DType::F32, m.device(), mode),
        )
    }

    /// The completion a trace's probability is of: the tokens written, or,
    /// for a trace given as steps (a planner's plan), the plan one step a
    /// line, then `<|im_end|>`.
    pub fn completion(&self, env: &Deployment, trace: &Trace) -> Result<Vec<u32>> {
        if !trace.tokens.is_empty() {
            return Ok(trace.tokens.clone());
        }
        let text: String = trace
            .steps
            .iter()
            .filter(|&&(_, a)| a != env.end())
            .map(|&(_, a)| format!("{}\n", env.action_names[a]))
            .collect();
        let mut ids = self.backbone.tokenizer.encode(text.trim_end())?;
        ids.push(self.backbone.tokenizer.im_end);
        Ok(ids)
    }

    /// A completion of task `x` as a trace (module docs); the trace keeps
    /// the tokens.
    pub fn read(&self, env: &Deployment, x: usize, tokens: &[u32]) -> Result<Trace> {
        let text = self.plan_text(tokens)?;
        let found = crate::extract::extract_plan(&text, &|n| {
            self.names.binary_search_by(|m| m.as_str().cmp(n)).is_ok()
        });
        let steps: Vec<Option<ActionId>> = found
            .steps
            .iter()
            .map(|s| match &s.syntax {
                StepSyntax::Action { name, args } => {
                    let key = std::iter::once(name.as_str())
                        .chain(args.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(" ");
                    self.actions.get(&format!("({key})")).copied()
                }
                StepSyntax::Unparseable { .. } => None,
            })
            .collect();
        let mut trace = crate::estimator::follow_plan(env, x, &steps, true);
        trace.tokens = tokens.to_vec();
        Ok(trace)
    }

    /// The text of a completion, without the end-of-turn token.
    pub fn plan_text(&self, tokens: &[u32]) -> Result<String> {
        let tok = &self.backbone.tokenizer;
        let body = match tokens.split_last() {
            Some((&last, body)) if last == tok.im_end => body,
            _ => tokens,
        };
        tok.decode(body)
    }

    fn rows(&self, env: &Deployment, traces: &[&Trace]) -> Result<Vec<(Vec<u32>, usize)>> {
        traces
            .iter()
            .map(|t| {
                let mut seq = self.prompts[t.task].clone();
                let p = seq.len();
                seq.extend(self.completion(env, t)?);
                Ok((seq, p))
            })
            .collect()
    }

    fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.tau,
            top_k: self.settings.top_k,
            top_p: self.settings.top_p,
            max_new: self.settings.max_new_tokens,
        }
    }

    /// Every request's rows in batches of at most [`DECODE_ROWS`] rows
    /// (whole tasks; a task with more rows is a batch of its own).
    fn try_sample(
        &self,
        env: &Deployment,
        requests: &mut [(usize, Vec<Rng>)],
    ) -> Result<Vec<Vec<(Trace, f64)>>> {
        let adapters = self.adapters()?;
        let mut out = Vec::with_capacity(requests.len());
        let mut rest = requests;
        while !rest.is_empty() {
            let mut take = 1;
            let mut rows = rest[0].1.len();
            while take < rest.len() && rows + rest[take].1.len() <= DECODE_ROWS {
                rows += rest[take].1.len();
                take += 1;
            }
            let (batch, tail) = rest.split_at_mut(take);
            rest = tail;
            let mut asks: Vec<(&[u32], &mut [Rng])> = batch
                .iter_mut()
                .map(|(x, rngs)| (self.prompts[*x].as_slice(), rngs.as_mut_slice()))
                .collect();
            let done = super::sample::complete_many(
                &self.backbone.model,
                Some(&adapters),
                &mut asks,
                self.backbone.tokenizer.im_end,
                &self.sampling(),
            )?;
            for ((x, _), completions) in batch.iter().zip(done) {
                out.push(
                    completions
                        .into_iter()
                        .map(|c| Ok((self.read(env, *x, &c.tokens)?, c.log_prob)))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
        }
        Ok(out)
    }

    /// log π of `traces` at τ as a [len] tensor on the graph of
    /// `adapters` (one teacher-forced pass; dropout masks from `dropout`
    /// if given).
    fn log_probs_on_graph(
        &self,
        env: &Deployment,
        traces: &[&Trace],
        adapters: &Adapters,
        dropout: Option<&mut Rng>,
    ) -> Result<candle_core::Tensor> {
        let mut ad = Adapted { adapters, dropout };
        self.backbone
            .model
            .completion_log_probs(&self.rows(env, traces)?, self.tau, Some(&mut ad))
    }

    fn try_log_probs(&self, env: &Deployment, traces: &[&Trace]) -> Result<Vec<f64>> {
        let adapters = self.adapters()?;
        let mut out = Vec::with_capacity(traces.len());
        for part in traces.chunks(TRAIN_ROWS) {
            let lp = self.log_probs_on_graph(env, part, &adapters, None)?;
            out.extend(
                lp.to_dtype(DType::F64)
                    .and_then(|t| t.to_vec1::<f64>())
                    .map_err(super::llama::ce)?,
            );
        }
        Ok(out)
    }

    fn try_scores(
        &self,
        env: &Deployment,
        weighted: &[(&Trace, f64)],
        grad: &mut [f64],
    ) -> Result<()> {
        let adapters = self.build_adapters(Mode::Train)?;
        let mut rng = self.dropout.lock().unwrap_or_else(|e| e.into_inner());
        for part in weighted.chunks(TRAIN_ROWS) {
            let traces: Vec<&Trace> = part.iter().map(|&(t, _)| t).collect();
            let lp = self.log_probs_on_graph(env, &traces, &adapters, Some(&mut *rng))?;
            let coef: Vec<f32> = part.iter().map(|&(_, c)| c as f32).collect();
            let grads = (|| {
                let coef = candle_core::Tensor::from_vec(coef, part.len(), lp.device())?;
                (lp * coef)?.sum_all()?.backward()
            })()
            .map_err(super::llama::ce)?;
            adapters.add_flat_grads(&grads, grad)?;
        }
        Ok(())
    }
}

/// Failures inside the trait's infallible methods: the model and its
/// prompts were checked when the policy was made, so what is left is a
/// broken invariant, reported with its cause.
fn must<T>(what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("pretrained policy: {what}: {e}"))
}

impl Policy for Pretrained {
    fn params(&self) -> &[f64] {
        &self.theta
    }

    fn completion_text(&self, _env: &Deployment, trace: &Trace) -> Option<String> {
        if trace.tokens.is_empty() {
            return None;
        }
        // A decoding error (an id the tokenizer cannot map) is shown, not
        // dropped: the file is for reading what the model wrote.
        Some(
            self.plan_text(&trace.tokens)
                .unwrap_or_else(|e| format!("<undecodable: {e}>")),
        )
    }

    fn params_mut(&mut self) -> &mut [f64] {
        *self.adapters.get_mut().unwrap_or_else(|e| e.into_inner()) = None;
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

    /// The prompts of a prefix's tasks are the first prompts.
    fn for_task_prefix(&self, _env: &Deployment) -> Box<dyn Policy> {
        Box::new(self.clone())
    }

    fn is_markov(&self) -> bool {
        false
    }

    /// Not defined: the model reads its own text, not a state. Callers
    /// check [`Policy::is_markov`] first.
    fn logits(&self, _env: &Deployment, _x: usize, _s: StateIndex, _out: &mut [f64]) {
        panic!("the pretrained model reads its own text, not a state: it has no per-state logits");
    }

    fn backprop_logits(&self, _: &Deployment, _: usize, _: StateIndex, _: &[f64], _: &mut [f64]) {
        panic!("the pretrained model reads its own text, not a state: it has no per-state logits");
    }

    fn sample_traces(&self, env: &Deployment, x: usize, rngs: &mut [Rng]) -> Vec<(Trace, f64)> {
        let mut one = [(x, rngs.to_vec())];
        let out = must("sampling", self.try_sample(env, &mut one)).pop();
        rngs.clone_from_slice(&one[0].1);
        out.unwrap_or_default()
    }

    fn sample_tasks(
        &self,
        env: &Deployment,
        requests: &mut [(usize, Vec<Rng>)],
    ) -> Vec<Vec<(Trace, f64)>> {
        must("sampling", self.try_sample(env, requests))
    }

    fn trace_log_prob(&self, env: &Deployment, trace: &Trace) -> f64 {
        must("scoring a completion", self.try_log_probs(env, &[trace]))[0]
    }

    fn trace_log_probs(&self, env: &Deployment, traces: &[&Trace]) -> Vec<f64> {
        must("scoring completions", self.try_log_probs(env, traces))
    }

    fn accumulate_trace_scores(
        &self,
        env: &Deployment,
        weighted: &[(&Trace, f64)],
        grad: &mut [f64],
    ) {
        if weighted.is_empty() {
            return;
        }
        must("training", self.try_scores(env, weighted, grad));
    }
}
