//! Sampling completions from the pretrained model: the prompt is prefilled
//! once, its key/value cache is repeated for the task's N samples, and the
//! N rows decode together, one token per step, until each writes the
//! end-of-turn token or reaches `max_new` tokens.

use super::llama::{Cache, Llama, ce};
use super::lora::Adapters;
use crate::policy::transformer::sampling::{Sampling, draw_with_log_prob};
use crate::rng::Rng;
use crate::{Error, Result};

/// One sampled completion: its tokens (the stop token included when it
/// was written) and log π(completion | prompt) at the sampling temperature.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    pub tokens: Vec<u32>,
    pub log_prob: f64,
    /// Whether it ended with the stop token (else it ran out of tokens).
    pub stopped: bool,
}

/// One completion of `prompt` per generator in `rngs` (row i draws only
/// from `rngs[i]`), stopping at `stop`; with the adapters of `lora` if
/// given. [`complete_many`] for one prompt.
pub fn complete(
    model: &Llama,
    lora: Option<&Adapters>,
    prompt: &[u32],
    stop: u32,
    sampling: &Sampling,
    rngs: &mut [Rng],
) -> Result<Vec<Completion>> {
    let mut out = complete_many(model, lora, &mut [(prompt, rngs)], stop, sampling)?;
    Ok(out.pop().unwrap_or_default())
}

/// Completions of several prompts in one batch: `requests` pairs each
/// prompt with its rows' generators (row i of a prompt draws only from its
/// own generator, so a row's text does not depend on which rows share the
/// batch). The prompts are left-padded to one length and prefilled
/// together (padding is masked, and RoPE scores depend only on relative
/// positions, so the shift changes nothing but rounding), each prompt's
/// cache is repeated for its rows, and all rows decode together until
/// each has written `stop` or `sampling.max_new` tokens.
pub fn complete_many(
    model: &Llama,
    lora: Option<&Adapters>,
    requests: &mut [(&[u32], &mut [Rng])],
    stop: u32,
    sampling: &Sampling,
) -> Result<Vec<Vec<Completion>>> {
    if requests.iter().any(|(p, _)| p.is_empty()) {
        return Err(Error::Invalid("sampling needs non-empty prompts".into()));
    }
    let mut out: Vec<Vec<Completion>> = requests
        .iter()
        .map(|(_, rngs)| vec![Completion::default(); rngs.len()])
        .collect();
    // Prompts that have rows, and the row → prompt map.
    let live: Vec<usize> = (0..requests.len())
        .filter(|&q| !requests[q].1.is_empty())
        .collect();
    if live.is_empty() {
        return Ok(out);
    }
    let prompts: Vec<&[u32]> = live.iter().map(|&q| requests[q].0).collect();
    let (prompt_cache, logits) = prefill(model, lora, &prompts, stop)?;
    let firsts = last_logits(&logits)?;
    let mut adapted = lora.map(Adapters::without_dropout);
    // Rows in order: every row of the first live prompt, then the next.
    let owner: Vec<(usize, usize)> = live
        .iter()
        .enumerate()
        .flat_map(|(i, &q)| (0..requests[q].1.len()).map(move |j| (i, j)))
        .collect();
    let index: Vec<u32> = owner.iter().map(|&(i, _)| i as u32).collect();
    let mut cache = prompt_cache.select_rows(&index)?;
    let mut rows: Vec<Vec<f64>> = owner.iter().map(|&(i, _)| firsts[i].clone()).collect();
    let mut done = vec![false; owner.len()];
    for _ in 0..sampling.max_new {
        let mut next = Vec::with_capacity(owner.len());
        for (r, &(i, j)) in owner.iter().enumerate() {
            if done[r] {
                // A finished row keeps the batch's shape; its draws are
                // never read.
                next.push(vec![stop]);
                continue;
            }
            let q = live[i];
            let (tok, lp) = draw_with_log_prob(&rows[r], sampling, &mut requests[q].1[j]);
            let c = &mut out[q][j];
            c.tokens.push(tok);
            c.log_prob += lp;
            c.stopped = tok == stop;
            done[r] = c.stopped;
            next.push(vec![tok]);
        }
        if done.iter().all(|&d| d) || cache.len() + 1 > model.config.context {
            break;
        }
        let l = model.forward_cached(&next, &mut cache, adapted.as_mut())?;
        rows = last_logits(&l)?;
    }
    Ok(out)
}

/// The prompts left-padded with `pad` to one length and run in one pass
/// (the padding masked; RoPE scores depend only on relative positions):
/// their key/value cache and each prompt's last logits, [K, 1, V].
pub fn prefill(
    model: &Llama,
    lora: Option<&Adapters>,
    prompts: &[&[u32]],
    pad: u32,
) -> Result<(Cache, candle_core::Tensor)> {
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| width - p.len()).collect();
    let padded: Vec<Vec<u32>> = prompts
        .iter()
        .zip(&pads)
        .map(|(p, &n)| {
            let mut row = vec![pad; n];
            row.extend_from_slice(p);
            row
        })
        .collect();
    let mut adapted = lora.map(Adapters::without_dropout);
    let mut cache = model.cache().with_padding(pads);
    let logits = model.forward_cached(&padded, &mut cache, adapted.as_mut())?;
    Ok((cache, logits))
}

/// The last position's logits of each row, [B][V] in f64.
fn last_logits(l: &candle_core::Tensor) -> Result<Vec<Vec<f64>>> {
    let t = l.dim(1).map_err(ce)?;
    l.narrow(1, t - 1, 1)
        .and_then(|x| x.squeeze(1))
        .and_then(|x| x.to_dtype(candle_core::DType::F64))
        .and_then(|x| x.to_vec2::<f64>())
        .map_err(ce)
}
