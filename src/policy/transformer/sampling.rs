//! Free decoding: the model writes tokens one at a time, each drawn from
//! its next-token distribution with temperature and top-k, as a language
//! model writes a plan — nothing constrains the text to well-formed steps,
//! so what comes out goes through the extractor and validator like any
//! model's output.
//!
//! Next-token distribution at temperature τ > 0 with top-k:
//!   p(v) ∝ exp(z_v / τ) for the k largest logits z_v, 0 for the rest;
//! τ = 0 is greedy decoding (argmax, lowest id on ties).
//!
//! Two decode loops: with a key/value cache the prompt runs once and each
//! step feeds one new token per sequence (O(T) work per step); without it
//! each step re-runs the whole sequence (O(T²) per step). The benchmark
//! compares them. An f64 model decodes both ways through the graph and
//! writes the same tokens for the same generator state; an f32 model on
//! the CPU takes the cached steps on [`super::decode`], which agrees with
//! the graph to f32 round-off (so a near-tie can draw differently).
//!
//! Draws use our seeded generator (never candle's): one number from the
//! caller's generator seeds a stream per row (`rng::stream(base, row)`),
//! one uniform per token. Rows are then independent, so they are decoded
//! in shards side by side on the rayon pool, and a seed fixes the text
//! whatever the number of threads.

use candle_core::{DType, Tensor};
use rand::RngExt;

use super::decode::StepWeights;
use super::model::{KvCache, Weights, log_softmax_last};

type R<T> = candle_core::Result<T>;
/// A decoded row: its new tokens and their log-probability.
pub type Row = (Vec<u32>, f64);

/// How to draw each token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// τ ≥ 0; 0 is greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens (None: all).
    pub top_k: Option<usize>,
    /// Then keep the most likely tokens whose probabilities first reach a
    /// total of p, 0 < p ≤ 1 (nucleus sampling; None: all). Applied after
    /// top-k, as Hugging Face and vLLM do.
    pub top_p: Option<f64>,
    /// At most this many new tokens per sequence.
    pub max_new: usize,
}

/// Whether the decode loop keeps keys and values of earlier positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decode {
    KvCache,
    Recompute,
}

/// The probabilities `draw` samples from, for one row of logits: the
/// softmax at `s.temperature` (greedy at 0), restricted to the top-k
/// tokens and then to the top-p nucleus, renormalised. Ties are ordered
/// by id, so the kept set is a fixed function of the logits.
pub fn next_token_distribution(logits: &[f64], s: &Sampling) -> Vec<f64> {
    let (temperature, v) = (s.temperature, logits.len());
    let k = s.top_k.unwrap_or(v).clamp(1, v);
    let nucleus = s.top_p.filter(|&p| p < 1.0);
    if temperature > 0.0 && k == v && nucleus.is_none() {
        // Every token kept: no order needed (the same numbers as below,
        // without sorting the vocabulary at every step).
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z)) / temperature;
        let mut p: Vec<f64> = logits
            .iter()
            .map(|&z| (z / temperature - max).exp())
            .collect();
        let total: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= total);
        return p;
    }
    let mut order: Vec<usize> = (0..v).collect();
    // Descending by logit, ties by id: a total order, so selecting the k
    // first and sorting only those gives the prefix a full sort would.
    let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if k < v {
        order.select_nth_unstable_by(k - 1, by_logit);
    }
    order[..k].sort_unstable_by(by_logit);
    let mut p = vec![0.0; v];
    if temperature == 0.0 {
        p[order[0]] = 1.0;
        return p;
    }
    let max = logits[order[0]] / temperature;
    for &i in &order[..k] {
        p[i] = (logits[i] / temperature - max).exp();
    }
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    if let Some(top_p) = nucleus {
        // The shortest prefix of the order whose mass reaches top_p (at
        // least one token); the rest is dropped.
        let mut mass = 0.0;
        let mut keep = 0;
        while keep < k && mass < top_p {
            mass += p[order[keep]];
            keep += 1;
        }
        for &i in &order[keep..k] {
            p[i] = 0.0;
        }
        p.iter_mut().for_each(|x| *x /= mass);
    }
    p
}

/// One token from `logits` (inverse CDF on one uniform draw).
pub fn draw(logits: &[f64], sampling: &Sampling, rng: &mut crate::rng::Rng) -> u32 {
    draw_with_log_prob(logits, sampling, rng).0
}

/// [`draw`], with the log-probability of the drawn token under the
/// distribution it was drawn from.
pub fn draw_with_log_prob(
    logits: &[f64],
    sampling: &Sampling,
    rng: &mut crate::rng::Rng,
) -> (u32, f64) {
    let p = next_token_distribution(logits, sampling);
    let u: f64 = rng.random();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &pi) in p.iter().enumerate() {
        if pi > 0.0 {
            acc += pi;
            last = i;
            if u < acc {
                return (i as u32, pi.ln());
            }
        }
    }
    (last as u32, p[last].ln()) // rounding left u ≥ Σp: the last token with mass
}

/// `batch` continuations of one prompt. Each stops after emitting a token of
/// `stop` (kept), after `max_new` tokens, or when the model's `max_len` is
/// reached. The prompt runs once; its cache is shared by every shard of
/// rows.
pub fn generate(
    w: &Weights,
    prompt: &[u32],
    batch: usize,
    stop: &[u32],
    sampling: &Sampling,
    decode: Decode,
    rng: &mut crate::rng::Rng,
) -> R<Vec<Vec<u32>>> {
    let base: u64 = rng.random();
    let mut rngs: Vec<_> = (0..batch)
        .map(|r| crate::rng::stream(base, r as u64))
        .collect();
    let rows = generate_rows(w, prompt, &mut rngs, stop, sampling, decode)?;
    Ok(rows.into_iter().map(|(tokens, _)| tokens).collect())
}

/// [`generate`] with one caller-given generator per row (row r draws only
/// from `rngs[r]`, which is left advanced past its draws), returning each
/// row's tokens and their log-probability under the distributions they
/// were drawn from. Rows are decoded in chunks side by side; since each
/// has its own generator, the chunking does not change the result.
pub fn generate_rows(
    w: &Weights,
    prompt: &[u32],
    rngs: &mut [crate::rng::Rng],
    stop: &[u32],
    sampling: &Sampling,
    decode: Decode,
) -> R<Vec<Row>> {
    let batch = rngs.len();
    if batch == 0 || sampling.max_new == 0 {
        return Ok(vec![(Vec::new(), 0.0); batch]);
    }
    let (first, cache) = w.prompt(prompt)?;
    let first: Vec<f64> = first.to_dtype(DType::F64)?.to_vec1()?;
    let step = match decode {
        Decode::KvCache => StepWeights::of(w)?,
        Decode::Recompute => None,
    };
    let job = Rows {
        w,
        prompt,
        first: &first,
        cache: &cache,
        step: step.as_ref(),
        stop,
        sampling,
        decode,
    };
    let chunk = batch.div_ceil(super::shard_count(batch));
    let parts: Vec<R<Vec<Row>>> = if chunk == batch {
        vec![job.decode(rngs)]
    } else {
        use rayon::prelude::*;
        rngs.par_chunks_mut(chunk)
            .map(|mine| job.decode(mine))
            .collect()
    };
    let mut out = Vec::with_capacity(batch);
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// One shard's decode loop: what every row shares.
struct Rows<'a> {
    w: &'a Weights,
    prompt: &'a [u32],
    /// log-probabilities of the first new token (from the prompt pass).
    first: &'a [f64],
    cache: &'a KvCache,
    /// The graph-free cached step ([`super::decode`]), where it applies.
    step: Option<&'a StepWeights>,
    stop: &'a [u32],
    sampling: &'a Sampling,
    decode: Decode,
}

impl Rows<'_> {
    /// Decodes one row per generator in `rngs`: tokens and log-probability.
    fn decode(&self, rngs: &mut [crate::rng::Rng]) -> R<Vec<Row>> {
        let (w, prompt, sampling) = (self.w, self.prompt, self.sampling);
        let batch = rngs.len();
        let max_len = w.cfg.max_len;
        let mut out = vec![Vec::new(); batch];
        let mut logp = vec![0.0; batch];
        let mut done = vec![false; batch];
        let mut cache = self.cache.clone();
        let mut step_cache = match self.step {
            Some(sw) => Some(sw.cache(self.cache, batch, sampling.max_new)?),
            None => None,
        };
        for (((row, d), rng), lp) in out
            .iter_mut()
            .zip(done.iter_mut())
            .zip(rngs.iter_mut())
            .zip(logp.iter_mut())
        {
            let (t, l) = draw_with_log_prob(self.first, sampling, rng);
            row.push(t);
            *lp += l;
            *d = self.stop.contains(&t);
        }
        // `len`: positions written so far (the prompt and one token per row).
        for len in prompt.len()..prompt.len() + sampling.max_new - 1 {
            if done.iter().all(|&d| d) || len + 1 > max_len {
                break;
            }
            // Finished rows are fed their last token; their output is ignored.
            let last: Vec<u32> = out.iter().map(|r| *r.last().expect("one token")).collect();
            let rows: Vec<Vec<f64>> = match (self.decode, self.step, step_cache.as_mut()) {
                (Decode::KvCache, Some(sw), Some(sc)) => sw.step(sc, &last)?,
                (Decode::KvCache, ..) => {
                    let input = Tensor::from_vec(last, (batch, 1), &w.device)?;
                    let (logits, keys, values) = w.forward(&input, len, Some(&cache))?;
                    cache = KvCache {
                        keys,
                        values,
                        len: len + 1,
                    };
                    log_probs(&logits)?
                }
                (Decode::Recompute, ..) => {
                    let width = len + 1;
                    let mut all = Vec::with_capacity(batch * width);
                    for row in &out {
                        all.extend_from_slice(prompt);
                        // Rows that stopped early are padded with their last
                        // token: causal attention keeps them out of other rows.
                        all.extend((0..width - prompt.len()).map(|i| row[i.min(row.len() - 1)]));
                    }
                    let input = Tensor::from_vec(all, (batch, width), &w.device)?;
                    let (logits, _, _) = w.forward(&input, 0, None)?;
                    log_probs(&logits.narrow(1, width - 1, 1)?)?
                }
            };
            for ((((row, d), z), rng), lp) in out
                .iter_mut()
                .zip(done.iter_mut())
                .zip(&rows)
                .zip(rngs.iter_mut())
                .zip(logp.iter_mut())
            {
                if !*d {
                    let (t, l) = draw_with_log_prob(z, sampling, rng);
                    row.push(t);
                    *lp += l;
                    *d = self.stop.contains(&t);
                }
            }
        }
        Ok(out.into_iter().zip(logp).collect())
    }
}

/// Per row, log-probabilities of the next token from logits [B, 1, V].
fn log_probs(logits: &Tensor) -> R<Vec<Vec<f64>>> {
    log_softmax_last(&logits.squeeze(1)?)?
        .to_dtype(DType::F64)?
        .to_vec2()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frequencies of `draw` against `next_token_distribution` at several
    /// temperatures and top-k (binomial 5σ bands), and the distribution
    /// itself against the formula.
    #[test]
    fn draws_follow_temperature_top_k_and_top_p() {
        let z = [1.0, -0.5, 0.3, 2.0, 0.3];
        let at = |temperature, top_k, top_p| Sampling {
            temperature,
            top_k,
            top_p,
            max_new: 1,
        };
        let p = next_token_distribution(&z, &at(0.5, Some(3), None));
        // Top 3: ids 3, 0, then 2 (tie with 4 broken by id).
        let e: Vec<f64> = [1.0, 0.0, 0.3, 2.0, 0.0]
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if [0, 2, 3].contains(&i) {
                    (v / 0.5f64).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = e.iter().sum();
        for (a, b) in p.iter().zip(&e) {
            assert!((a - b / total).abs() < 1e-12, "{p:?}");
        }
        assert_eq!(next_token_distribution(&z, &at(0.0, None, None))[3], 1.0);
        let mut rng = crate::rng::seeded(5);
        // Top-p at τ = 1: p(3) = 0.551 < 0.7 ≤ p(3) + p(0) = 0.754, so
        // {3, 0} is kept; at 0.5 id 3 alone; after top-k 2 at 0.9, the
        // two kept by top-k.
        let e3 = 1f64.exp();
        let nucleus = next_token_distribution(&z, &at(1.0, None, Some(0.7)));
        let expect = [e3 / (e3 + e3 * e3), 0.0, 0.0, e3 * e3 / (e3 + e3 * e3), 0.0];
        for (a, b) in nucleus.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-12, "{nucleus:?}");
        }
        assert_eq!(
            next_token_distribution(&z, &at(1.0, None, Some(0.5)))[3],
            1.0
        );
        // On a larger vocabulary with ties, against a full sort: the top-k
        // set, and the top-p prefix within it, in descending order.
        let wide: Vec<f64> = (0..60)
            .map(|_| f64::from(rng.random_range(0..25u32)) / 5.0)
            .collect();
        let mut sorted: Vec<usize> = (0..60).collect();
        sorted.sort_by(|&a, &b| wide[b].total_cmp(&wide[a]).then(a.cmp(&b)));
        for (k, top_p) in [(5, 0.6), (17, 0.5), (17, 0.9), (59, 0.8), (60, 0.3)] {
            let mut want = vec![0.0; 60];
            for &i in &sorted[..k] {
                want[i] = (wide[i] - wide[sorted[0]]).exp();
            }
            let total: f64 = want.iter().sum();
            let (mut mass, mut keep) = (0.0, 0);
            while mass < top_p {
                mass += want[sorted[keep]] / total;
                keep += 1;
            }
            sorted[keep..].iter().for_each(|&i| want[i] = 0.0);
            let got = next_token_distribution(&wide, &at(1.0, Some(k), Some(top_p)));
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b / (mass * total)).abs() < 1e-12, "k {k}, p {top_p}");
            }
        }
        assert_eq!(
            next_token_distribution(&z, &at(1.0, Some(2), Some(0.9))),
            next_token_distribution(&z, &at(1.0, Some(2), None))
        );
        assert_eq!(
            next_token_distribution(&z, &at(0.7, None, Some(1.0))),
            next_token_distribution(&z, &at(0.7, None, None))
        );
        for (tau, k, top_p) in [
            (1.0, None, None),
            (0.5, Some(3), None),
            (2.0, Some(1), None),
            (1.0, None, Some(0.7)),
            (1.5, Some(4), Some(0.8)),
        ] {
            let s = at(tau, k, top_p);
            let p = next_token_distribution(&z, &s);
            let n = 40_000;
            let mut counts = [0usize; 5];
            for _ in 0..n {
                counts[draw(&z, &s, &mut rng) as usize] += 1;
            }
            for (c, pi) in counts.iter().zip(&p) {
                let sd = (pi * (1.0 - pi) / n as f64).sqrt();
                let f = *c as f64 / n as f64;
                assert!(
                    (f - pi).abs() <= 5.0 * sd + 1e-12,
                    "τ={tau} k={k:?} p={top_p:?}: {counts:?} vs {p:?}"
                );
            }
        }
    }
}
