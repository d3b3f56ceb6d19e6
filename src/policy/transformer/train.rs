//! Language-model training of the decoder on token sequences, as an LLM is
//! fine-tuned: teacher-forced next-token loss ([`Weights::lm_loss`]),
//! autograd, then clipping and AdamW on a flat f64 master copy of the
//! weights ([`crate::optim`], the optimiser every policy uses), written
//! back into the candle variables.
//!
//! The batch is split into row shards that run forward and backward side
//! by side on our rayon pool (one per core; candle itself runs each op on
//! one thread, see [`super::prepare_cpu_process`]). The loss is a mean over
//! positions, so with rows b_s of B in shard s,
//!
//!   L = Σ_s (b_s / B) · L_s,   ∇L = Σ_s (b_s / B) · ∇L_s,
//!
//! summed in shard order, so the result does not depend on thread timing.
//!
//! The deployment loop trains the transformer through the [`crate::policy::Policy`]
//! interface (scores of whole steps); this trainer is the model-level step
//! the throughput benchmark times beside PyTorch.

use candle_core::{Device, Tensor};

use super::model::{Config, Weights};
use crate::optim::{Optimizer, OptimizerKind};

type R<T> = candle_core::Result<T>;

pub struct LmTrainer {
    pub weights: Weights,
    theta: Vec<f64>,
    grad: Vec<f64>,
    opt: Optimizer,
}

/// AdamW settings of [`LmTrainer`].
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Clip the gradient to this global L2 norm.
    pub max_grad_norm: f64,
}

impl LmTrainer {
    pub fn new(cfg: Config, theta: Vec<f64>, adamw: AdamW, device: &Device) -> R<Self> {
        let weights = Weights::from_flat(cfg, &theta, device)?;
        let opt = Optimizer::new(
            OptimizerKind::Adam,
            adamw.learning_rate,
            Some(adamw.max_grad_norm),
        )
        .with_weight_decay(adamw.weight_decay);
        Ok(LmTrainer {
            grad: vec![0.0; theta.len()],
            weights,
            theta,
            opt,
        })
    }

    /// One step on `batch` sequences of equal length (`tokens` row-major),
    /// sharded over the rayon pool; returns the loss before the step.
    pub fn step(&mut self, tokens: &[u32], batch: usize) -> R<f64> {
        let shards = super::shard_count(batch);
        let loss = lm_gradient(&self.weights, tokens, batch, shards, &mut self.grad)?;
        // The optimiser ascends; the loss is minimised.
        self.grad.iter_mut().for_each(|g| *g = -*g);
        self.opt.ascend(&mut self.theta, &self.grad);
        self.weights.set_flat(&self.theta)?;
        Ok(loss)
    }

    pub fn params(&self) -> &[f64] {
        &self.theta
    }
}

/// The language-model loss of `batch` equal-length sequences and its
/// gradient (flat, [`super::Config::shapes`] order, overwriting `grad`),
/// computed on up to `shards` row shards in parallel (module docs).
pub fn lm_gradient(
    weights: &Weights,
    tokens: &[u32],
    batch: usize,
    shards: usize,
    grad: &mut [f64],
) -> R<f64> {
    if batch == 0 || !tokens.len().is_multiple_of(batch) {
        candle_core::bail!(
            "{} tokens do not split into {batch} equal rows",
            tokens.len()
        );
    }
    let t = tokens.len() / batch;
    let parts = super::on_row_shards(batch, shards, |rows| -> R<(f64, Vec<f64>)> {
        let x = Tensor::from_vec(
            tokens[rows.start * t..rows.end * t].to_vec(),
            (rows.len(), t),
            &weights.device,
        )?;
        let loss = weights.lm_loss(&x)?;
        let mut g = vec![0.0; grad.len()];
        weights.add_flat_grads(&loss.backward()?, &mut g)?;
        let loss = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        Ok((loss, g))
    });
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut loss = 0.0;
    for (rows, part) in parts {
        let (l, g) = part?;
        let share = rows.len() as f64 / batch as f64;
        loss += share * l;
        for (acc, v) in grad.iter_mut().zip(g) {
            *acc += share * v;
        }
    }
    Ok(loss)
}
