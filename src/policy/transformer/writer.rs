//! The plan writer: the decoder as the paper's models are used. The prompt
//! is the task — initial facts and goal facts in PDDL syntax — and the
//! completion is the whole plan in IPC syntax, written freely token by
//! token and closed by `<end>`:
//!
//!   `<state> (f1 …) … <goal> (g1 …) … <act>` → `( a1 … ) ( a2 … ) … <end>`
//!
//! Nothing holds it to well-formed or applicable steps, and every token
//! reads everything written before it, so its policy is over *texts*:
//!
//!   π_θ(y | x) = Π_t p_θ,τ(y_t | prompt(x), y_<t),   p_τ = softmax(z/τ).
//!
//! It is not Markov in the world state ([`Policy::is_markov`] is false): no
//! state-wise dynamic program applies, so the deployment loop measures it
//! by sampling. Training is what an LLM fine-tuner does: the score
//! ∇θ log π(y|x) is the gradient of the completion tokens' log-likelihood
//! under teacher forcing ([`Weights::marked_log_probs`]), so SFT on curated
//! plans is next-token training on them, and REINFORCE, RLOO and GRPO
//! weight the same per-sequence scores by their advantages.
//!
//! A completion is read into the deployment's [`Trace`] terms
//! ([`PlanWriter::read`]): steps are cut at each `)`, a step naming an
//! action applicable at the current state advances it; `<end>` stops the
//! plan (valid iff the state satisfies the goal); a step that names no
//! action, an inapplicable action, a step past the horizon, or text that
//! runs out of room without `<end>` makes the trace invalid. The trace
//! keeps the completion's tokens, whose probability its score is of. For a
//! completion closed by `<end>` within the horizon whose every line is a
//! step, this verdict is the extractor's and validator's on the plan text
//! (tested); the reader is stricter only where the bridge's extractor is
//! lenient by design (it skips prose and unreadable lines in real model
//! output and takes the last block of steps), which this writer's output,
//! plan text and nothing else, never needs.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::model::Weights;
use super::sampling::{self, Decode, Sampling};
use super::tokens::{self, Vocabulary};
use super::{Decoder, Size, candle};
use crate::Result;
use crate::estimator::Trace;
use crate::mdp::{Deployment, StateIndex};
use crate::policy::Policy;
use crate::rng::Rng;

/// The decoder as a whole-plan writer (module docs); θ and checkpoints are
/// its [`Decoder`]'s, τ its sampling and scoring temperature.
#[derive(Clone)]
pub struct PlanWriter {
    decoder: Decoder,
    tau: f64,
}

type R<T> = candle_core::Result<T>;

impl PlanWriter {
    /// A fresh writer for `env` (weights from our generator). Its context
    /// holds the longest task prompt and a plan of `env.horizon` of the
    /// longest steps plus `<end>`.
    pub fn new(env: &Deployment, size: Size, tau: f64, rng: &mut Rng) -> Result<Self> {
        let vocab = Vocabulary::new(env, size.objects)?;
        let cfg = size.config(&vocab, vocab.max_plan_sequence(env))?;
        Ok(PlanWriter {
            decoder: Decoder::new(cfg, vocab, rng),
            tau,
        })
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The prompt of task `x`: its initial state and goal.
    pub fn prompt(&self, env: &Deployment, x: usize) -> Vec<u32> {
        self.decoder.vocab.task(env, x).prompt(0)
    }

    /// The completion a trace's probability is of: the tokens the writer
    /// wrote, or, for a trace given as steps (a planner's plan), its steps
    /// in IPC syntax followed by `<end>`.
    pub fn completion(&self, env: &Deployment, trace: &Trace) -> Vec<u32> {
        if !trace.tokens.is_empty() {
            return trace.tokens.clone();
        }
        let task = self.decoder.vocab.task(env, trace.task);
        let mut out = Vec::new();
        for &(_, a) in &trace.steps {
            out.extend_from_slice(&task.action(a));
        }
        out
    }

    /// A completion of task `x` as a trace (module docs); the trace keeps
    /// the tokens.
    pub fn read(&self, env: &Deployment, x: usize, completion: &[u32]) -> Trace {
        let vocab = &self.decoder.vocab;
        let task = vocab.task(env, x);
        let (close, end) = (vocab.id(")"), vocab.id(tokens::END));
        let mut steps = Vec::new();
        let mut rest = completion;
        let mut closed = false;
        while let Some(&first) = rest.first() {
            if Some(first) == end {
                closed = true;
                break;
            }
            let len = rest
                .iter()
                .position(|&t| Some(t) == close)
                .map_or(rest.len(), |i| i + 1);
            let (step, after) = rest.split_at(len);
            let action = task.action_of(step);
            steps.push(action);
            if action.is_none() {
                break; // text that is no step: the plan stops unreadable
            }
            rest = after;
        }
        let mut trace = crate::estimator::follow_plan(env, x, &steps, closed);
        trace.tokens = completion.to_vec();
        trace
    }

    /// The plan text of a completion of task `x`, one step per line in IPC
    /// syntax and the task's own object names (what a user would hand to a
    /// validator); `<end>` and anything after it are not part of the plan.
    pub fn plan_text(&self, env: &Deployment, x: usize, completion: &[u32]) -> String {
        let vocab = &self.decoder.vocab;
        let task = vocab.task(env, x);
        let end = vocab.id(tokens::END);
        let close = vocab.id(")");
        let mut text = String::new();
        let mut line = Vec::new();
        for &t in completion.iter().take_while(|&&t| Some(t) != end) {
            line.push(t);
            if Some(t) == close {
                text += &task.text(&line);
                text.push('\n');
                line.clear();
            }
        }
        if !line.is_empty() {
            text += &task.text(&line);
            text.push('\n');
        }
        text
    }

    fn sampling(&self, env: &Deployment, x: usize) -> Sampling {
        Sampling {
            temperature: self.tau,
            top_k: None,
            top_p: None,
            max_new: self.decoder.cfg.max_len - self.prompt(env, x).len(),
        }
    }

    /// Log-probabilities of the completions of `batch` (task, trace) pairs
    /// at temperature τ, as a [B] tensor on the graph: one padded
    /// teacher-forced pass over prompt + completion per row.
    fn log_probs_on_graph(
        &self,
        w: &Weights,
        env: &Deployment,
        batch: &[&Trace],
        tau: f64,
    ) -> R<Tensor> {
        let rows: Vec<(Vec<u32>, usize)> = batch
            .iter()
            .map(|t| {
                let mut seq = self.prompt(env, t.task);
                let p = seq.len();
                seq.extend(self.completion(env, t));
                (seq, p)
            })
            .collect();
        let width = rows.iter().map(|(s, _)| s.len()).max().unwrap_or(2).max(2);
        let pad = self
            .decoder
            .vocab
            .id(tokens::PAD)
            .expect("in every vocabulary");
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut marked = Vec::with_capacity(rows.len() * (width - 1));
        for (seq, p) in &rows {
            ids.extend(
                seq.iter()
                    .copied()
                    .chain(std::iter::repeat(pad))
                    .take(width),
            );
            // Position j predicts token j+1: completion tokens are p..len.
            marked.extend((0..width - 1).map(|j| f64::from(j + 1 >= *p && j + 1 < seq.len())));
        }
        let ids = Tensor::from_vec(ids, (rows.len(), width), &w.device)?;
        let marked = Tensor::from_vec(marked, (rows.len(), width - 1), &w.device)?
            .to_dtype(w.cfg.dtype())?;
        w.marked_log_probs(&ids, &marked, tau)
    }

    /// [`Decoder::save`] with this writer's temperature.
    pub fn save(&self, path: &Path) -> Result<()> {
        let policy = serde_json::json!({ "kind": "plan-writer", "temperature": self.tau });
        self.decoder.save(path, policy)
    }

    /// [`Decoder::load`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.decoder.load(path)
    }
}

impl Policy for PlanWriter {
    fn params(&self) -> &[f64] {
        &self.decoder.theta
    }

    /// The tokens as words, in the task's own object names.
    fn completion_text(&self, env: &Deployment, trace: &Trace) -> Option<String> {
        if trace.tokens.is_empty() {
            return None;
        }
        let task = self.decoder.vocab.task(env, trace.task);
        Some(
            trace
                .tokens
                .iter()
                .map(|&t| task.word(t))
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    fn params_mut(&mut self) -> &mut [f64] {
        self.decoder.params_mut()
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

    /// The vocabulary and context are the deployment's; a prefix keeps them.
    fn for_task_prefix(&self, _env: &Deployment) -> Box<dyn Policy> {
        Box::new(self.clone())
    }

    fn is_markov(&self) -> bool {
        false
    }

    /// Not defined: the writer's next step depends on everything it wrote,
    /// not on a state. Callers check [`Policy::is_markov`] first.
    fn logits(&self, _env: &Deployment, _x: usize, _s: StateIndex, _out: &mut [f64]) {
        panic!("the plan writer reads its own text, not a state: it has no per-state logits");
    }

    fn backprop_logits(&self, _: &Deployment, _: usize, _: StateIndex, _: &[f64], _: &mut [f64]) {
        panic!("the plan writer reads its own text, not a state: it has no per-state logits");
    }

    fn sample_traces(&self, env: &Deployment, x: usize, rngs: &mut [Rng]) -> Vec<(Trace, f64)> {
        let w = self.decoder.weights();
        let end = self
            .decoder
            .vocab
            .id(tokens::END)
            .expect("in every vocabulary");
        let prompt = self.prompt(env, x);
        let rows = sampling::generate_rows(
            &w,
            &prompt,
            rngs,
            &[end],
            &self.sampling(env, x),
            Decode::KvCache,
        )
        .expect("a prompt of this deployment fits the writer's context");
        rows.into_iter()
            .map(|(tokens, logp)| (self.read(env, x, &tokens), logp))
            .collect()
    }

    fn trace_log_prob(&self, env: &Deployment, trace: &Trace) -> f64 {
        let w = self.decoder.weights();
        self.log_probs_on_graph(&w, env, &[trace], self.tau)
            .and_then(|t| t.to_dtype(DType::F64)?.to_vec1::<f64>())
            .expect("a trace of this deployment fits the writer's context")[0]
    }

    /// Σ_i w_i ∇ log π(y_i): the weighted log-likelihood of the batch's
    /// completions, back-propagated once per row shard (shards side by side
    /// on the rayon pool, summed in shard order).
    fn accumulate_trace_scores(
        &self,
        env: &Deployment,
        weighted: &[(&Trace, f64)],
        grad: &mut [f64],
    ) {
        if weighted.is_empty() {
            return; // nothing to add (and candle has no empty batches)
        }
        let w = self.decoder.weights();
        let shards = super::shard_count(weighted.len());
        let parts = super::on_row_shards(weighted.len(), shards, |rows| -> R<Vec<f64>> {
            let part = &weighted[rows];
            let traces: Vec<&Trace> = part.iter().map(|&(t, _)| t).collect();
            let coef: Vec<f64> = part.iter().map(|&(_, c)| c).collect();
            let lp = self.log_probs_on_graph(&w, env, &traces, self.tau)?;
            let coef = Tensor::from_vec(coef, traces.len(), &w.device)?.to_dtype(w.cfg.dtype())?;
            let mut g = vec![0.0; grad.len()];
            w.add_flat_grads(&(lp * coef)?.sum_all()?.backward()?, &mut g)?;
            Ok(g)
        });
        for (_, part) in parts {
            let g = part
                .map_err(candle)
                .expect("a trace of this deployment fits the writer's context");
            grad.iter_mut().zip(g).for_each(|(acc, v)| *acc += v);
        }
    }
}
