//! The key/value-cached decode step on the CPU in f32, without the graph.
//!
//! Sampling needs no gradient, so building a candle graph for one new
//! token per row buys nothing and costs a great deal at these sizes: every
//! op allocates a tensor, and appending to the cache with `Tensor::cat`
//! copies all earlier keys and values at every step (O(T²) bytes over a
//! completion). Here the weights are read once into the layout
//! [`crate::matmul::few_rows`] streams ([out, in], with q, k and v stacked
//! into one product), and each row's keys and values go into buffers
//! allocated once for the whole completion, written in place.
//!
//! The arithmetic is the graph's, op for op: the same layer-norm, bias,
//! GELU and causal-softmax kernels ([`super::kernels`]), one query against
//! the keys up to its own position, and the same residual sums. Only the
//! matrix products differ (gemm there, [`crate::matmul::few_rows`] here),
//! so the two agree to f32 round-off, not bit for bit; a test holds them
//! within [`crate::tolerance::F32_REFERENCE_LOGITS`]. f64 models (the
//! verification runs) and other devices decode through the graph.

use candle_core::{DType, Tensor};

use super::kernels::{bias_fwd, bias_gelu_fwd, causal_softmax_fwd, layer_norm_fwd};
use super::model::{KvCache, LN_EPS, Positions, Weights};
use crate::matmul::few_rows;

type R<T> = candle_core::Result<T>;

/// One block's weights, matrices transposed to [out, in].
struct Block {
    ln1: (Vec<f32>, Vec<f32>),
    /// wq, wk and wv stacked: [3·d, d].
    qkv: Vec<f32>,
    wo: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// A decoder's weights as the step reads them (a snapshot: built from the
/// candle variables, it does not follow later changes to them).
pub struct StepWeights {
    d: usize,
    heads: usize,
    d_ff: usize,
    vocab: usize,
    max_len: usize,
    tok: Vec<f32>,
    /// Learned position embeddings, [max_len, d] (empty: none).
    pos: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: (Vec<f32>, Vec<f32>),
    head: Vec<f32>,
}

/// Keys and values of positions `0..len` for each of `rows` sequences:
/// per layer [rows, heads, capacity, d_head], filled up to `len`.
pub struct StepCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    rows: usize,
    capacity: usize,
    pub len: usize,
}

/// `w` ([k, n], row-major) as [n, k], in blocks of 16 × 16 so that reads
/// and writes both stay within a few cache lines.
fn transposed(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    const B: usize = 16;
    let mut t = vec![0f32; w.len()];
    for i0 in (0..k).step_by(B) {
        for j0 in (0..n).step_by(B) {
            for i in i0..(i0 + B).min(k) {
                for j in j0..(j0 + B).min(n) {
                    t[j * k + i] = w[i * n + j];
                }
            }
        }
    }
    t
}

impl StepWeights {
    /// The step's copy of `w`; `None` unless `w` is an f32 decoder on the
    /// CPU (the graph decodes every other kind).
    pub fn of(w: &Weights) -> R<Option<Self>> {
        let c = w.cfg;
        if c.f64 || !w.device.is_cpu() {
            return Ok(None);
        }
        let flat = |i: usize| -> R<Vec<f32>> { w.vars[i].as_tensor().flatten_all()?.to_vec1() };
        let (d, f) = (c.d_model, c.d_ff);
        let mut blocks = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let at = |k: usize| flat(c.block_start(l) + k);
            let mut qkv = transposed(&at(2)?, d, d);
            qkv.extend(transposed(&at(3)?, d, d));
            qkv.extend(transposed(&at(4)?, d, d));
            blocks.push(Block {
                ln1: (at(0)?, at(1)?),
                qkv,
                wo: transposed(&at(5)?, d, d),
                ln2: (at(6)?, at(7)?),
                w1: transposed(&at(8)?, d, f),
                b1: at(9)?,
                w2: transposed(&at(10)?, f, d),
                b2: at(11)?,
            });
        }
        let n = w.vars.len();
        Ok(Some(StepWeights {
            d,
            heads: c.heads,
            d_ff: f,
            vocab: c.vocab,
            max_len: c.max_len,
            tok: flat(0)?,
            pos: match c.positions {
                Positions::Learned => flat(1)?,
                Positions::None => Vec::new(),
            },
            blocks,
            ln_f: (flat(n - 3)?, flat(n - 2)?),
            head: transposed(&flat(n - 1)?, d, c.vocab),
        }))
    }

    fn d_head(&self) -> usize {
        self.d / self.heads
    }

    /// A cache for `rows` sequences that all continue `prompt` (the graph's
    /// cache of one prompt, batch 1), with room for `new` more positions
    /// (bounded by the model's `max_len`).
    pub fn cache(&self, prompt: &KvCache, rows: usize, new: usize) -> R<StepCache> {
        let (p, dh, h) = (prompt.len, self.d_head(), self.heads);
        let capacity = (p + new).min(self.max_len).max(p);
        let spread = |t: &Tensor| -> R<Vec<f32>> {
            let src: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            if src.len() != h * p * dh {
                candle_core::bail!("decode step: the prompt's cache is not one sequence");
            }
            let mut buf = vec![0f32; rows * h * capacity * dh];
            for r in 0..rows {
                for head in 0..h {
                    let to = (r * h + head) * capacity * dh;
                    buf[to..to + p * dh].copy_from_slice(&src[head * p * dh..(head + 1) * p * dh]);
                }
            }
            Ok(buf)
        };
        Ok(StepCache {
            keys: prompt.keys.iter().map(spread).collect::<R<_>>()?,
            values: prompt.values.iter().map(spread).collect::<R<_>>()?,
            rows,
            capacity,
            len: p,
        })
    }

    /// Feeds `tokens` (one per row) at position `cache.len`, appends their
    /// keys and values, and returns each row's log-probabilities of the
    /// next token (log-softmax in f64).
    pub fn step(&self, cache: &mut StepCache, tokens: &[u32]) -> R<Vec<Vec<f64>>> {
        let (d, dh, h, at) = (self.d, self.d_head(), self.heads, cache.len);
        let rows = tokens.len();
        if rows != cache.rows || at >= cache.capacity {
            candle_core::bail!(
                "decode step: {rows} tokens for a cache of {} rows at position {at} of {}",
                cache.rows,
                cache.capacity
            );
        }
        let mut x = Vec::with_capacity(rows * d);
        for &t in tokens {
            let t = t as usize;
            if t >= self.vocab {
                candle_core::bail!("decode step: token {t} is outside the vocabulary");
            }
            let e = &self.tok[t * d..(t + 1) * d];
            if self.pos.is_empty() {
                x.extend(e); // no position embeddings
            } else {
                let p = &self.pos[at * d..(at + 1) * d];
                x.extend(e.iter().zip(p).map(|(a, b)| a + b));
            }
        }
        let scale = 1.0 / (dh as f64).sqrt();
        for (l, b) in self.blocks.iter().enumerate() {
            let hn = layer_norm_fwd(&x, &b.ln1.0, &b.ln1.1, LN_EPS);
            let qkv = few_rows(&hn, &b.qkv, d);
            let (keys, values) = (&mut cache.keys[l], &mut cache.values[l]);
            let mut att = vec![0f32; rows * d];
            for r in 0..rows {
                let row = &qkv[r * 3 * d..(r + 1) * 3 * d];
                for head in 0..h {
                    let base = (r * h + head) * cache.capacity * dh;
                    let slot = base + at * dh;
                    keys[slot..slot + dh].copy_from_slice(&row[d + head * dh..d + (head + 1) * dh]);
                    values[slot..slot + dh]
                        .copy_from_slice(&row[2 * d + head * dh..2 * d + (head + 1) * dh]);
                    let q = &row[head * dh..(head + 1) * dh];
                    let scores = few_rows(q, &keys[base..slot + dh], dh);
                    let p = causal_softmax_fwd(&scores, at + 1, 1, scale);
                    let out = &mut att[r * d + head * dh..r * d + (head + 1) * dh];
                    for (pj, v) in p.iter().zip(values[base..slot + dh].chunks_exact(dh)) {
                        for (o, &vv) in out.iter_mut().zip(v) {
                            *o += pj * vv;
                        }
                    }
                }
            }
            add(&mut x, &few_rows(&att, &b.wo, d));
            let h2 = layer_norm_fwd(&x, &b.ln2.0, &b.ln2.1, LN_EPS);
            let hidden = bias_gelu_fwd(&few_rows(&h2, &b.w1, d), &b.b1);
            add(
                &mut x,
                &bias_fwd(&few_rows(&hidden, &b.w2, self.d_ff), &b.b2),
            );
        }
        cache.len += 1;
        let out = layer_norm_fwd(&x, &self.ln_f.0, &self.ln_f.1, LN_EPS);
        let logits = few_rows(&out, &self.head, d);
        Ok(logits
            .chunks_exact(self.vocab)
            .map(|z| {
                let mut z: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
                crate::policy::log_softmax_in_place(&mut z, 1.0);
                z
            })
            .collect())
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::transformer::Config;
    use crate::policy::transformer::sampling::{Decode, Sampling, generate};
    use candle_core::Device;
    use rand::RngExt;
    use rand_distr::{Distribution, Normal};

    /// A small f32 decoder with weights large enough that its logits are
    /// far from uniform, and nonzero biases and gains away from 1, so a
    /// dropped term shows.
    fn decoder() -> Weights {
        decoder_with(Positions::Learned)
    }

    fn decoder_with(positions: Positions) -> Weights {
        let cfg = Config {
            vocab: 23,
            d_model: 32,
            heads: 4,
            layers: 2,
            d_ff: 48,
            max_len: 40,
            f64: false,
            positions,
        };
        let mut rng = crate::rng::seeded(3);
        let normal = Normal::new(0.0, 0.3).expect("finite");
        let theta: Vec<f64> = cfg
            .shapes()
            .iter()
            .flat_map(|(name, shape)| {
                let gain = name.ends_with(".g");
                (0..shape.iter().product::<usize>())
                    .map(|_| f64::from(gain) + normal.sample(&mut rng))
                    .collect::<Vec<_>>()
            })
            .collect();
        Weights::from_flat(cfg, &theta, &Device::Cpu).unwrap()
    }

    /// Fed the same tokens, the step and the graph's cached forward pass
    /// give the same next-token log-probabilities to f32 round-off, at
    /// every position of three rows that share a prompt, with learned
    /// positions and with none.
    #[test]
    fn the_step_matches_the_graph_at_every_position() {
        step_matches_graph(Positions::Learned);
        step_matches_graph(Positions::None);
    }

    fn step_matches_graph(positions: Positions) {
        let w = decoder_with(positions);
        let step = StepWeights::of(&w).unwrap().expect("f32 on the CPU");
        let mut rng = crate::rng::seeded(4);
        let prompt: Vec<u32> = (0..5).map(|_| rng.random_range(0..23)).collect();
        let (_, prompt_cache) = w.prompt(&prompt).unwrap();
        let rows = 3;
        let mut graph = prompt_cache.clone();
        let mut ours = step.cache(&prompt_cache, rows, 30).unwrap();
        let mut worst = 0f64;
        for len in prompt.len()..prompt.len() + 30 {
            let tokens: Vec<u32> = (0..rows).map(|_| rng.random_range(0..23)).collect();
            let input = Tensor::from_vec(tokens.clone(), (rows, 1), &w.device).unwrap();
            let (logits, keys, values) = w.forward(&input, len, Some(&graph)).unwrap();
            graph = KvCache {
                keys,
                values,
                len: len + 1,
            };
            let want: Vec<Vec<f64>> =
                super::super::model::log_softmax_last(&logits.squeeze(1).unwrap())
                    .unwrap()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .to_vec2()
                    .unwrap();
            let got = step.step(&mut ours, &tokens).unwrap();
            for (g, e) in got.iter().zip(&want) {
                for (a, b) in g.iter().zip(e) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        assert!(
            worst <= crate::tolerance::F32_REFERENCE_LOGITS,
            "{positions:?}: largest log-probability difference {worst:e}"
        );
        // The cache is full: one more position is refused, not overrun.
        assert!(step.step(&mut ours, &[0, 0, 0]).is_err());
        assert!(
            step.step(&mut step.cache(&prompt_cache, 2, 4).unwrap(), &[0])
                .is_err()
        );
        assert!(
            step.step(&mut step.cache(&prompt_cache, 1, 4).unwrap(), &[23])
                .is_err()
        );
    }

    /// Decoding an f32 model (the step's path) writes the same tokens on
    /// any number of threads; f64 decodes through the graph.
    #[test]
    fn the_step_writes_the_same_tokens_on_any_thread_count() {
        let w = decoder();
        assert!(
            StepWeights::of(
                &Weights::from_flat(
                    Config { f64: true, ..w.cfg },
                    &vec![0.0; w.cfg.num_params()],
                    &Device::Cpu
                )
                .unwrap()
            )
            .unwrap()
            .is_none()
        );
        let sampling = Sampling {
            temperature: 1.0,
            top_k: Some(10),
            top_p: None,
            max_new: 20,
        };
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut rng = crate::rng::seeded(9);
            pool.install(|| generate(&w, &[1, 2, 3], 9, &[], &sampling, Decode::KvCache, &mut rng))
                .unwrap()
        };
        let one = run(1);
        assert_eq!(one.len(), 9);
        assert!(one.iter().all(|r| r.len() == 20));
        assert_eq!(run(3), one);
    }
}
