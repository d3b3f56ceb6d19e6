//! The transformer policies: one decoder ([`model`], shared through
//! [`Decoder`]), used two ways.
//!
//! * [`Transformer`], the *step* policy: reads the task as tokens — the
//!   current state's facts and the goal's, in PDDL syntax ([`tokens`]) —
//!   and writes the next plan step token by token in IPC syntax, or
//!   `<end>`. Its logit for action a is the log-probability of a's
//!   completion, z_a = log P(`( name args )` | prompt), and π(a|s) =
//!   softmax(z/τ): decoding constrained to well-formed steps of the shared
//!   action set. Reading the current state (not the whole history) keeps
//!   it Markov in the world state, so every exact dynamic program and every
//!   claim of `proofs/` applies to it unchanged.
//! * [`PlanWriter`] ([`writer`]), the LLM-shaped policy: the prompt is the
//!   task (initial state and goal), the completion the whole plan as free
//!   text closed by `<end>`; each token reads everything written before
//!   it. Its policy is over texts, not Markov, and the loop measures it by
//!   sampling.
//!
//! Parameters are one flat f64 vector (the [`Policy`] contract) in the order
//! of [`Config::shapes`]; the candle graph is rebuilt from it when it
//! changes. Initial weights come from our seeded generator.

pub mod decode;
pub mod kernels;
pub mod model;
pub mod sampling;
pub mod tokens;
pub mod train;
pub mod writer;

use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use model::Weights;
pub use model::{Config, Positions};
use sampling::{Decode, Sampling};
pub use tokens::Objects;
use tokens::Vocabulary;
pub use writer::PlanWriter;

use super::Policy;
use crate::mdp::{Deployment, StateIndex};
use crate::{Error, Result};

/// Size of a transformer policy (the vocabulary and maximal length come
/// from the deployment).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Size {
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub d_ff: usize,
    pub f64: bool,
    /// How positions enter the model ([`Positions`]).
    pub positions: Positions,
    /// How objects become tokens ([`Objects`]; the plan writer only: the
    /// step policy scores every action of the deployment in every task,
    /// and under a pool two actions may spell the same text there).
    pub objects: Objects,
}

/// What both transformer policies share: the architecture, the
/// vocabulary, the flat parameters θ and the candle weights built from them
/// (rebuilt lazily after θ changes), and checkpoints.
pub struct Decoder {
    cfg: Config,
    vocab: Vocabulary,
    theta: Vec<f64>,
    device: Device,
    /// The candle weights of `theta`, rebuilt after `params_mut`.
    weights: Mutex<Option<std::sync::Arc<Weights>>>,
}

impl Clone for Decoder {
    fn clone(&self) -> Self {
        Decoder {
            cfg: self.cfg,
            vocab: self.vocab.clone(),
            theta: self.theta.clone(),
            device: self.device.clone(),
            weights: Mutex::new(None),
        }
    }
}

/// The step policy (module docs): reads the current state and the goal,
/// writes the next step.
#[derive(Clone)]
pub struct Transformer {
    decoder: Decoder,
    tau: f64,
    /// Fixed applicability prior (see [`super::add_applicability_prior`];
    /// 0: none — the model alone decides what is applicable).
    prior: f64,
}

fn candle(e: candle_core::Error) -> Error {
    Error::Invalid(format!("transformer: {e}"))
}

/// The compute device: CUDA with the `cuda` feature (if a device is
/// present), else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Process-wide settings that make candle fast on the CPU; call first
/// thing in `main`, before any thread starts (the binary does), or where
/// every other thread reads the environment only through `std::env`.
///
/// * Thread count: with `RAYON_NUM_THREADS` unset, candle 0.11 asks
///   `num_cpus::get_physical()` — which reads /proc — on every matmul;
///   the policy's thousands of tiny per-state passes then spent more time
///   in the kernel than computing (transformer smoke run: 85 s wall, 70 s
///   sys; with the variable set: 33 s, 0 s sys).
/// * Where the parallelism goes: when the user has not set
///   `RAYON_NUM_THREADS`, our rayon pool gets one thread per available
///   core (experiments run seeds × arms on it; [`train::LmTrainer`] runs
///   batch shards side by side) and candle is told 1 thread. On these
///   small tensors candle's own threads cost more than they gain (its
///   barrier pool spins a worker per core between element-wise ops, and
///   gemm does not split matrices this small): a training step of the
///   benchmark model took 105 ms with 2 candle threads and 87 ms with 1,
///   and two shards on one candle thread each 61 ms. A user who sets
///   `RAYON_NUM_THREADS` sets both.
/// * Allocator (glibc): candle allocates a fresh buffer for every tensor;
///   with glibc's defaults, buffers of a few MB are mapped and unmapped per
///   op and a training step spent a quarter of its time in page faults.
///   A 32 MB mmap threshold (glibc's maximum) and no trimming reuse them
///   (about 15% faster training steps here).
pub fn prepare_cpu_process() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // The global pool is built before the variable exists, so it keeps
        // one thread per core; an Err means it was built already (a test
        // harness calling twice) and is harmless.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .build_global();
        // SAFETY: per the contract above, no other thread exists or all
        // read the environment through std::env, which serialises access.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes allocator tuning parameters (under
        // the allocator's own lock).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20);
            mallopt(M_TRIM_THRESHOLD, std::ffi::c_int::MAX);
        }
    }
}

/// Row shards of the batched transformer work (training, scoring and
/// decoding): one per [`SHARD_ROWS`] rows, at most [`MAX_SHARDS`]. The
/// partition depends on the batch alone, never on the thread count, so the
/// same seed gives the same bytes on 1 thread or 64 (f32 batch shapes and
/// the order shard results are summed in are fixed); rayon runs the shards
/// on however many threads there are.
pub(crate) fn shard_count(rows: usize) -> usize {
    (rows / SHARD_ROWS).clamp(1, MAX_SHARDS)
}

/// Rows per shard: two shards for the benchmark's batch of 8 (what the two
/// cores here ran side by side before the partition was fixed).
pub(crate) const SHARD_ROWS: usize = 4;
/// Beyond this many shards the per-shard graph costs more than the extra
/// parallelism gains on the machines this runs on.
pub(crate) const MAX_SHARDS: usize = 8;

/// Runs `job` on up to `shards` contiguous row ranges of `0..rows` (sizes
/// differing by at most one) — on the rayon pool when there is more than
/// one — and returns each range with its result, in row order, so callers
/// combine results in an order that does not depend on thread timing.
pub(crate) fn on_row_shards<T: Send>(
    rows: usize,
    shards: usize,
    job: impl Fn(std::ops::Range<usize>) -> T + Sync,
) -> Vec<(std::ops::Range<usize>, T)> {
    use rayon::prelude::*;
    let shards = shards.clamp(1, rows.max(1));
    let ranges: Vec<std::ops::Range<usize>> = (0..shards)
        .map(|s| s * rows / shards..(s + 1) * rows / shards)
        .collect();
    let run = |r: &std::ops::Range<usize>| (r.clone(), job(r.clone()));
    if shards == 1 {
        ranges.iter().map(run).collect()
    } else {
        ranges.par_iter().map(run).collect()
    }
}

impl Size {
    /// The architecture for `vocab`, reading sequences of up to `max_len`
    /// tokens; an error names a width that does not split into the heads.
    fn config(&self, vocab: &Vocabulary, max_len: usize) -> Result<Config> {
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return Err(Error::Invalid(format!(
                "transformer: d_model = {} must be a positive multiple of heads = {}",
                self.d_model, self.heads
            )));
        }
        Ok(Config {
            vocab: vocab.len(),
            d_model: self.d_model,
            heads: self.heads,
            layers: self.layers,
            d_ff: self.d_ff,
            max_len,
            f64: self.f64,
            positions: self.positions,
        })
    }
}

impl Decoder {
    /// Fresh weights ([`model::initial_params`]) from our generator.
    fn new(cfg: Config, vocab: Vocabulary, rng: &mut crate::rng::Rng) -> Self {
        let theta = model::initial_params(&cfg, rng);
        Decoder {
            cfg,
            vocab,
            theta,
            device: device(),
            weights: Mutex::new(None),
        }
    }

    pub fn config(&self) -> Config {
        self.cfg
    }

    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocab
    }

    fn params_mut(&mut self) -> &mut [f64] {
        *self
            .weights
            .get_mut()
            .expect("no panics while holding the lock") = None;
        &mut self.theta
    }

    /// The candle weights of θ (for sampling, scoring and benchmarks).
    pub fn weights(&self) -> std::sync::Arc<Weights> {
        let mut slot = self
            .weights
            .lock()
            .expect("no panics while holding the lock");
        if slot.is_none() {
            let w = Weights::from_flat(self.cfg, &self.theta, &self.device)
                .expect("the flat parameters match the config");
            *slot = Some(std::sync::Arc::new(w));
        }
        slot.as_ref().expect("just set").clone()
    }

    /// Writes the weights as safetensors at `path` and the config, the
    /// vocabulary and `policy` (what the policy adds: its kind, temperature…)
    /// beside it (`path` with extension `json`).
    pub fn save(&self, path: &Path, policy: serde_json::Value) -> Result<()> {
        let w = self.weights();
        let tensors: std::collections::HashMap<String, Tensor> = self
            .cfg
            .shapes()
            .into_iter()
            .zip(&w.vars)
            .map(|((name, _), v)| (name, v.as_tensor().clone()))
            .collect();
        // A temporary file of ours (created new, unpredictable name), then
        // renamed over the checkpoint.
        let (tmp, _) = crate::output::create_temp(path, "").map_err(|e| Error::io(path, e))?;
        let saved = candle_core::safetensors::save(&tensors, &tmp)
            .map_err(candle)
            .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
        if saved.is_err() {
            std::fs::remove_file(&tmp).ok();
        }
        saved?;
        let meta = serde_json::json!({
            "config": self.cfg,
            "policy": policy,
            "vocabulary": self.vocab.words,
        });
        crate::output::write_atomic(
            &path.with_extension("json"),
            serde_json::to_string_pretty(&meta)
                .expect("json")
                .as_bytes(),
        )
    }

    /// Reads weights written by [`Decoder::save`] into this model (same
    /// config and vocabulary).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let meta_path = path.with_extension("json");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?,
        )
        .map_err(|e| Error::Invalid(format!("{}: {e}", meta_path.display())))?;
        let cfg: Config = serde_json::from_value(meta["config"].clone())
            .map_err(|e| Error::Invalid(format!("{}: config: {e}", meta_path.display())))?;
        if cfg != self.cfg || meta["vocabulary"] != serde_json::json!(self.vocab.words) {
            return Err(Error::Invalid(format!(
                "{}: the checkpoint's config or vocabulary differs from this model's",
                meta_path.display()
            )));
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(candle)?;
        let mut theta = Vec::with_capacity(self.theta.len());
        for (name, shape) in cfg.shapes() {
            let t = tensors.get(&name).ok_or_else(|| {
                Error::Invalid(format!("{}: tensor `{name}` is missing", path.display()))
            })?;
            if t.dims() != shape.as_slice() {
                return Err(Error::Invalid(format!(
                    "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                    path.display(),
                    t.dims()
                )));
            }
            theta.extend(
                t.to_dtype(DType::F64)
                    .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
                    .map_err(candle)?,
            );
        }
        self.params_mut().copy_from_slice(&theta);
        Ok(())
    }
}

impl Transformer {
    /// A fresh model for `env` with [`model::initial_params`].
    pub fn new(env: &Deployment, size: Size, tau: f64, rng: &mut crate::rng::Rng) -> Result<Self> {
        if size.objects != Objects::Names {
            return Err(Error::Invalid(
                "transformer: objects must be \"names\" (an object pool is for the plan writer: the step policy scores every action of the deployment in each task, and under a pool two of them may read the same)".into(),
            ));
        }
        let vocab = Vocabulary::new(env, size.objects)?;
        let cfg = size.config(&vocab, vocab.max_sequence(env))?;
        Ok(Transformer {
            decoder: Decoder::new(cfg, vocab, rng),
            tau,
            prior: 0.0,
        })
    }

    /// The same model with a fixed applicability prior of `penalty` on its
    /// step logits (a constant: gradients are unchanged, so every identity
    /// holds as without it).
    pub fn with_prior(mut self, penalty: f64) -> Self {
        self.prior = penalty;
        self
    }

    /// z over all actions of `env` in state s of task x, on the graph.
    fn action_log_probs(
        &self,
        w: &Weights,
        env: &Deployment,
        x: usize,
        s: StateIndex,
    ) -> candle_core::Result<Tensor> {
        let task = self.decoder.vocab.task(env, x);
        w.completion_log_probs(&task.prompt(s), &task.actions())
    }

    /// Plan text written freely, token by token ([`sampling`]): nothing
    /// holds the model to well-formed steps. From the initial state it
    /// writes a step; if the step names an action applicable in the current
    /// state, the state advances and the next prompt shows it. `<end>`,
    /// text that is not an applicable step (kept, for the validator to
    /// reject), or the horizon ends the plan. One step per line, IPC
    /// syntax — read it with the extractor and validator like any model's.
    pub fn write_plan(
        &self,
        env: &Deployment,
        x: usize,
        sampling: &Sampling,
        rng: &mut crate::rng::Rng,
    ) -> Result<String> {
        let w = self.decoder.weights();
        let stop = [
            self.decoder.vocab.id(")"),
            self.decoder.vocab.id(tokens::END),
        ]
        .map(|t| t.expect("in every vocabulary"));
        let space = &env.tasks[x];
        let task = self.decoder.vocab.task(env, x);
        let mut s: StateIndex = 0;
        let mut text = String::new();
        for _ in 0..env.horizon {
            let prompt = task.prompt(s);
            let step = sampling::generate(&w, &prompt, 1, &stop, sampling, Decode::KvCache, rng)
                .map_err(candle)?
                .pop()
                .expect("one row");
            if step.last() == Some(&stop[1]) && step.len() == 1 {
                break;
            }
            text += &task.text(&step);
            text.push('\n');
            let next = task.action_of(&step).and_then(|a| space.successor(s, a));
            match next {
                Some(t) => s = t,
                None => break,
            }
        }
        Ok(text)
    }

    /// [`Decoder::save`] with this policy's temperature and prior.
    pub fn save(&self, path: &Path) -> Result<()> {
        let policy = serde_json::json!({
            "kind": "transformer",
            "temperature": self.tau,
            "prior": self.prior,
        });
        self.decoder.save(path, policy)
    }

    /// [`Decoder::load`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.decoder.load(path)
    }

    /// The decoder: config, vocabulary and candle weights.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }
}

impl Policy for Transformer {
    fn params(&self) -> &[f64] {
        &self.decoder.theta
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

    /// The action set is the deployment's; a prefix of its tasks keeps it.
    fn for_task_prefix(&self, _env: &Deployment) -> Box<dyn Policy> {
        Box::new(self.clone())
    }

    fn logits(&self, env: &Deployment, x: usize, s: StateIndex, out: &mut [f64]) {
        let w = self.decoder.weights();
        let z = self
            .action_log_probs(&w, env, x, s)
            .and_then(|z| z.to_dtype(DType::F64)?.to_vec1::<f64>())
            .expect("a prompt of this deployment fits the model");
        out.copy_from_slice(&z);
        super::add_applicability_prior(env, x, s, self.prior, out);
    }

    fn backprop_logits(
        &self,
        env: &Deployment,
        x: usize,
        s: StateIndex,
        g: &[f64],
        grad: &mut [f64],
    ) {
        let w = self.decoder.weights();
        let mut run = || -> candle_core::Result<()> {
            let z = self.action_log_probs(&w, env, x, s)?;
            let g = Tensor::from_vec(g.to_vec(), g.len(), &w.device)?
                .to_dtype(self.decoder.cfg.dtype())?;
            let grads = (z * g)?.sum_all()?.backward()?;
            w.add_flat_grads(&grads, grad)
        };
        run().expect("a prompt of this deployment fits the model");
    }
}
