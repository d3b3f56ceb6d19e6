//! Language-model training of the decoder on token sequences, as an LLM is
//! fine-tuned: teacher-forced next-token loss ([`Weights::lm_loss`]),
//! autograd, then clipping and AdamW on a flat f64 master copy of the
//! weights ([`crate::optim`], the optimiser every policy uses), written
//! back into the candle variables.
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

    /// One step on `batch` sequences of equal length (`tokens` row-major);
    /// returns the loss before the step.
    pub fn step(&mut self, tokens: &[u32], batch: usize) -> R<f64> {
        let t = tokens.len() / batch;
        let x = Tensor::from_vec(tokens.to_vec(), (batch, t), &self.weights.device)?;
        let loss = self.weights.lm_loss(&x)?;
        let grads = loss.backward()?;
        self.grad.iter_mut().for_each(|g| *g = 0.0);
        self.weights.add_flat_grads(&grads, &mut self.grad)?;
        // The optimiser ascends; the loss is minimised.
        self.grad.iter_mut().for_each(|g| *g = -*g);
        self.opt.ascend(&mut self.theta, &self.grad);
        self.weights.set_flat(&self.theta)?;
        loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()
    }

    pub fn params(&self) -> &[f64] {
        &self.theta
    }
}
