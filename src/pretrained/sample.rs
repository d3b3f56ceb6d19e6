//! Sampling completions from the pretrained model: the prompt is prefilled
//! once, its key/value cache is repeated for the task's N samples, and the
//! N rows decode together, one token per step, until each writes the
//! end-of-turn token or reaches `max_new` tokens.

use super::llama::{Llama, ce};
use crate::policy::transformer::sampling::{Sampling, draw_with_log_prob};
use crate::rng::Rng;
use crate::{Error, Result};

/// One sampled completion: its tokens (the stop token included when it
/// was written) and log π(completion | prompt) at the sampling temperature.
#[derive(Clone, Debug)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub log_prob: f64,
    /// Whether it ended with the stop token (else it ran out of tokens).
    pub stopped: bool,
}

/// `n` completions of `prompt`, stopping at `stop`.
pub fn complete(
    model: &Llama,
    prompt: &[u32],
    n: usize,
    stop: u32,
    sampling: &Sampling,
    rng: &mut Rng,
) -> Result<Vec<Completion>> {
    if prompt.is_empty() || n == 0 {
        return Err(Error::Invalid("sampling needs a prompt and n ≥ 1".into()));
    }
    let mut one = model.cache();
    let logits = model.forward_cached(&[prompt.to_vec()], &mut one)?;
    let last = |l: &candle_core::Tensor| -> Result<Vec<Vec<f64>>> {
        let t = l.dim(1).map_err(ce)?;
        l.narrow(1, t - 1, 1)
            .and_then(|x| x.squeeze(1))
            .and_then(|x| x.to_dtype(candle_core::DType::F64))
            .and_then(|x| x.to_vec2::<f64>())
            .map_err(ce)
    };
    let first = last(&logits)?.remove(0);
    let mut cache = one.repeat_rows(n)?;
    let mut rows: Vec<Vec<f64>> = vec![first; n];
    let mut out: Vec<Completion> = (0..n)
        .map(|_| Completion {
            tokens: Vec::new(),
            log_prob: 0.0,
            stopped: false,
        })
        .collect();
    for _ in 0..sampling.max_new {
        let mut next = Vec::with_capacity(n);
        for (c, logits) in out.iter_mut().zip(&rows) {
            if c.stopped {
                // A finished row keeps the batch's shape; its draws are
                // never read.
                next.push(vec![stop]);
                continue;
            }
            let (tok, lp) = draw_with_log_prob(logits, sampling, rng);
            c.tokens.push(tok);
            c.log_prob += lp;
            c.stopped = tok == stop;
            next.push(vec![tok]);
        }
        if out.iter().all(|c| c.stopped) || cache.len() + 1 > model.config.context {
            break;
        }
        let l = model.forward_cached(&next, &mut cache)?;
        rows = last(&l)?;
    }
    Ok(out)
}
