//! `bench device`: the pretrained model on a second device (a GPU, with
//! the `cuda` feature) checked against the CPU and timed beside it.
//!
//! * **Agreement.** The same completions (sampled once, on the CPU, from a
//!   θ whose LoRA terms are all nonzero) are scored on both devices:
//!   log π(completion | prompt) at τ, per completion, and the score
//!   ∇θ log π of their sum (dropout off, so it is exactly the gradient).
//!   Verdicts against [`crate::tolerance::DEVICE_LOG_PROB_PER_TOKEN`] and
//!   [`crate::tolerance::DEVICE_SCORE_REL`].
//! * **Throughput**, per device: prefill (the K prompts in one pass),
//!   decode (K·N rows, one token a step, the prefill's time taken out),
//!   and LoRA training (forward + backward of the completions' log π, the
//!   gradient copied back to θ, 2 rows a pass as the loop trains).
//!
//! With `--device cpu` the second device is the CPU again: a self-check of
//! the command (the differences are then exactly 0), which the test suite
//! runs; `gpu/run-gpu.sh` runs it on a GPU.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::policy::transformer::sampling::Sampling;
use crate::pretrained::Llama;
use crate::pretrained::lora::{Adapters, Mode};
use crate::{Error, Result};

/// What the check runs.
#[derive(Clone, Copy, Debug)]
pub struct DeviceWorkload {
    /// K: tasks (3-block Blocksworld), one prompt each.
    pub tasks: usize,
    /// N: completions per prompt.
    pub samples: usize,
    pub new_tokens: usize,
    pub temperature: f64,
    /// Rows per teacher-forced pass (agreement and training).
    pub rows: usize,
    /// Training passes over the K·N completions (after one warm-up pass).
    pub train_epochs: usize,
    /// Standard deviation of the noise added to the initial θ, so every B
    /// is nonzero and the adapters change the forward pass.
    pub theta_noise: f64,
}

pub const DEVICE_WORKLOAD: DeviceWorkload = DeviceWorkload {
    tasks: 4,
    samples: 8,
    new_tokens: 48,
    temperature: 0.6,
    rows: 2,
    train_epochs: 1,
    theta_noise: 0.01,
};

/// The device `name` names: `cpu`, or `cuda` / `cuda:N` (the `cuda`
/// feature and a GPU).
pub fn device_named(name: &str) -> Result<Device> {
    let ordinal = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Some(0),
        _ => name.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
    };
    let Some(ordinal) = ordinal else {
        return Err(Error::Invalid(format!(
            "device {name:?}: expected cpu, cuda or cuda:N"
        )));
    };
    Device::new_cuda(ordinal).map_err(|e| {
        // candle appends a backtrace when RUST_BACKTRACE is set: keep the cause.
        let e = e.to_string();
        let cause = e.lines().next().unwrap_or_default();
        Error::Invalid(if cfg!(feature = "cuda") {
            format!("device {name:?}: no usable CUDA device ({cause})")
        } else {
            format!(
                "device {name:?}: this build lacks the cuda feature (gpu/build-cuda.sh builds one that has it)"
            )
        })
    })
}

/// One device's rates, tokens per second.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceRates {
    pub prefill: f64,
    pub decode: f64,
    pub train: f64,
}

/// What [`device_check`] found.
#[derive(Clone, Debug)]
pub struct DeviceReport {
    pub device: String,
    pub completions: usize,
    pub tokens: usize,
    /// Largest |Δ log π| over completions, each divided by its
    /// completion's length (nats per token).
    pub log_prob_per_token: f64,
    /// Largest |Δ log π| of any completion, nats.
    pub log_prob_abs: f64,
    /// ‖g_dev − g_cpu‖ / ‖g_cpu‖ of the score of the summed log π.
    pub score_rel: f64,
    pub cpu: DeviceRates,
    pub other: DeviceRates,
}

impl DeviceReport {
    pub fn agrees(&self) -> bool {
        self.log_prob_per_token <= crate::tolerance::DEVICE_LOG_PROB_PER_TOKEN
            && self.score_rel <= crate::tolerance::DEVICE_SCORE_REL
    }
}

/// The check and the timings (module docs) of the model at `model` on
/// `device` beside the CPU.
pub fn device_check(
    model: &Path,
    device: &Device,
    name: &str,
    w: &DeviceWorkload,
) -> Result<DeviceReport> {
    // One copy of the model per device: the CPU's first.
    let (tokenizer, cpu) = crate::pretrained::load(model, &Device::Cpu)?;
    let sides = [cpu, crate::pretrained::load(model, device)?.1];
    let config = &sides[0].config;
    let lora = crate::pretrained::LoraConfig {
        rank: 16,
        alpha: 32.0,
        dropout: 0.0,
    };
    let mut rng = crate::rng::stream(3, 0);
    let mut theta = lora.init(config, &mut rng);
    {
        use rand_distr::Distribution;
        let noise = rand_distr::Normal::new(0.0, w.theta_noise)
            .map_err(|e| Error::Invalid(format!("θ noise {}: {e}", w.theta_noise)))?;
        theta.iter_mut().for_each(|t| *t += noise.sample(&mut rng));
    }
    let prompts = blocksworld_prompts(&tokenizer, w.tasks)?;
    let sampling = Sampling {
        temperature: w.temperature,
        top_k: None,
        top_p: None,
        max_new: w.new_tokens,
    };

    let mut rates = Vec::new();
    let mut completions = Vec::new();
    for side in &sides {
        let infer = Adapters::from_flat(
            config,
            lora,
            &theta,
            (DType::F32, side.device(), Mode::Infer),
        )?;
        let (r, written) = time_sampling(side, &infer, &prompts, w, &sampling, tokenizer.im_end)?;
        if completions.is_empty() {
            completions = written;
        }
        rates.push(r);
    }
    let rows: Vec<(Vec<u32>, usize)> = completions
        .iter()
        .map(|(x, c)| {
            let mut s = prompts[*x].clone();
            s.extend_from_slice(c);
            (s, prompts[*x].len())
        })
        .collect();
    let mut scored = Vec::new();
    for (side, r) in sides.iter().zip(rates.iter_mut()) {
        let lp = log_probs(side, lora, &theta, &rows, w)?;
        let (g, train) = score_and_train(side, lora, &theta, &rows, w)?;
        r.train = train;
        scored.push((lp, g));
    }
    let (per_token, abs) = scored[0]
        .0
        .iter()
        .zip(&scored[1].0)
        .zip(&completions)
        .map(|((a, b), (_, c))| {
            // A NaN on either side is an infinite difference (f64::max
            // would drop it).
            let d = if (a - b).is_nan() {
                f64::INFINITY
            } else {
                (a - b).abs()
            };
            (d / c.len() as f64, d)
        })
        .fold((0.0f64, 0.0f64), |(p, q), (x, y)| (p.max(x), q.max(y)));
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let diff: Vec<f64> = scored[0]
        .1
        .iter()
        .zip(&scored[1].1)
        .map(|(a, b)| a - b)
        .collect();
    Ok(DeviceReport {
        device: name.to_string(),
        completions: rows.len(),
        tokens: completions.iter().map(|(_, c)| c.len()).sum(),
        log_prob_per_token: per_token,
        log_prob_abs: abs,
        score_rel: norm(&diff) / norm(&scored[0].1),
        cpu: rates[0],
        other: rates[1],
    })
}

/// The chat prompts of the first `k` nontrivial 3-block tasks of the
/// shipped pretrained spec's generator.
fn blocksworld_prompts(tok: &crate::pretrained::ChatTokenizer, k: usize) -> Result<Vec<Vec<u32>>> {
    let spec = super::pretrained::three_block_spec("bench-device", k, "kind = \"mlp\"");
    let r = crate::experiment::Resolved::parse(&spec, "bench device")?;
    let (work, _) = crate::experiment::build_workload(&r.spec)?;
    (0..work.env.tasks.len())
        .map(|x| crate::pretrained::policy::chat_prompt(tok, &work.env, x))
        .collect()
}

/// Prefill alone (prompts left-padded with `stop`), then prefill + decode
/// of K·N rows (written tokens returned per row with its prompt index).
#[allow(clippy::type_complexity)]
fn time_sampling(
    model: &Llama,
    adapters: &Adapters,
    prompts: &[Vec<u32>],
    w: &DeviceWorkload,
    sampling: &Sampling,
    stop: u32,
) -> Result<(DeviceRates, Vec<(usize, Vec<u32>)>)> {
    let asked: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let prefill = || -> Result<f64> {
        let start = Instant::now();
        let (_, l) = crate::pretrained::sample::prefill(model, Some(adapters), &asked, stop)?;
        // Reading the logits back waits for the device.
        l.to_dtype(DType::F32)
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(crate::pretrained::llama::ce)?;
        Ok(start.elapsed().as_secs_f64())
    };
    prefill()?; // warm-up (kernel loading on a GPU)
    let t_prefill = prefill()?;
    let mut rngs = super::pretrained::row_streams(prompts.len(), w.samples);
    let mut asks: Vec<(&[u32], &mut [crate::rng::Rng])> = prompts
        .iter()
        .zip(rngs.iter_mut())
        .map(|(p, r)| (p.as_slice(), r.as_mut_slice()))
        .collect();
    let start = Instant::now();
    // No stop (u32::MAX is no id): every row writes max_new tokens.
    let done = crate::pretrained::sample::complete_many(
        model,
        Some(adapters),
        &mut asks,
        u32::MAX,
        sampling,
    )?;
    let t_all = start.elapsed().as_secs_f64();
    let written: Vec<(usize, Vec<u32>)> = done
        .into_iter()
        .enumerate()
        .flat_map(|(x, cs)| cs.into_iter().map(move |c| (x, c.tokens)))
        .collect();
    let decoded: usize = written.iter().map(|(_, c)| c.len()).sum();
    Ok((
        DeviceRates {
            prefill: (prompts.len() * width) as f64 / t_prefill,
            decode: decoded as f64 / (t_all - t_prefill).max(f64::MIN_POSITIVE),
            train: 0.0,
        },
        written,
    ))
}

/// log π at τ of every row, in passes of `w.rows`.
fn log_probs(
    model: &Llama,
    lora: crate::pretrained::LoraConfig,
    theta: &[f64],
    rows: &[(Vec<u32>, usize)],
    w: &DeviceWorkload,
) -> Result<Vec<f64>> {
    let infer = Adapters::from_flat(
        &model.config,
        lora,
        theta,
        (DType::F32, model.device(), Mode::Infer),
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(w.rows) {
        let mut ad = infer.without_dropout();
        let lp = model.completion_log_probs(part, w.temperature, Some(&mut ad))?;
        out.extend(
            lp.to_dtype(DType::F64)
                .and_then(|t| t.to_vec1::<f64>())
                .map_err(crate::pretrained::llama::ce)?,
        );
    }
    Ok(out)
}

/// The score of Σ log π over `rows` (one pass over them), and the training
/// rate: the same passes timed, `w.train_epochs` times after the first.
fn score_and_train(
    model: &Llama,
    lora: crate::pretrained::LoraConfig,
    theta: &[f64],
    rows: &[(Vec<u32>, usize)],
    w: &DeviceWorkload,
) -> Result<(Vec<f64>, f64)> {
    let train = Adapters::from_flat(
        &model.config,
        lora,
        theta,
        (DType::F32, model.device(), Mode::Train),
    )?;
    let pass = |g: &mut [f64]| -> Result<usize> {
        let mut tokens = 0;
        for part in rows.chunks(w.rows) {
            let mut ad = train.without_dropout();
            let lp = model.completion_log_probs(part, w.temperature, Some(&mut ad))?;
            let grads = lp
                .sum_all()
                .and_then(|s| s.backward())
                .map_err(crate::pretrained::llama::ce)?;
            train.add_flat_grads(&grads, g)?;
            tokens += part.iter().map(|(s, _)| s.len()).sum::<usize>();
        }
        Ok(tokens)
    };
    let mut score = vec![0.0; theta.len()];
    pass(&mut score)?;
    let mut scratch = vec![0.0; theta.len()];
    let start = Instant::now();
    let mut tokens = 0;
    for _ in 0..w.train_epochs {
        tokens += pass(&mut scratch)?;
    }
    let rate = tokens as f64 / start.elapsed().as_secs_f64();
    Ok((score, rate))
}

/// `bench device` (module docs): prints the report; `Ok(false)` when the
/// devices disagree beyond the tolerances.
pub fn device_bench(model: &Path, name: &str) -> Result<bool> {
    let device = device_named(name)?;
    let w = DEVICE_WORKLOAD;
    println!(
        "model: {}; CPU beside {name}; {} prompts, {} completions each of {} tokens at τ {}, \
         sampled on the CPU from a θ with every LoRA term nonzero (r 16, α 32, dropout 0)",
        model.display(),
        w.tasks,
        w.samples,
        w.new_tokens,
        w.temperature
    );
    println!("CPU: {}", crate::bench::cpu_model());
    let r = device_check(model, &device, name, &w)?;
    print!("{}", report_text(&r));
    Ok(r.agrees())
}

/// The report as Markdown: the agreement verdicts, then the rates.
pub fn report_text(r: &DeviceReport) -> String {
    use crate::tolerance::{DEVICE_LOG_PROB_PER_TOKEN, DEVICE_SCORE_REL};
    let verdict = |ok: bool| if ok { "agree" } else { "DISAGREE" };
    let mut s = format!(
        "\n| check ({} completions, {} tokens) | CPU vs {} | tolerance | verdict |\n|---|---|---|---|\n",
        r.completions, r.tokens, r.device
    );
    s += &format!(
        "| max over completions of abs(Δ log π) / tokens, nats per token | {:.2e} | {:.0e} | {} |\n",
        r.log_prob_per_token,
        DEVICE_LOG_PROB_PER_TOKEN,
        verdict(r.log_prob_per_token <= DEVICE_LOG_PROB_PER_TOKEN)
    );
    s += &format!(
        "| max over completions of abs(Δ log π), nats | {:.2e} | — | — |\n",
        r.log_prob_abs
    );
    s += &format!(
        "| score of Σ log π: ‖Δg‖ / ‖g_CPU‖ | {:.2e} | {:.0e} | {} |\n",
        r.score_rel,
        DEVICE_SCORE_REL,
        verdict(r.score_rel <= DEVICE_SCORE_REL)
    );
    s += &format!(
        "\n| tokens/s | CPU | {} | {} / CPU |\n|---|---|---|---|\n",
        r.device, r.device
    );
    for (name, a, b) in [
        ("prefill", r.cpu.prefill, r.other.prefill),
        ("decode (K·N rows)", r.cpu.decode, r.other.decode),
        ("LoRA training (fwd + bwd)", r.cpu.train, r.other.train),
    ] {
        s += &format!("| {name} | {a:.1} | {b:.1} | {:.2} |\n", b / a);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command's own path on the CPU beside itself: every difference
    /// is exactly 0 (same kernels, same order), every rate is positive,
    /// and the verdict reads the tolerances (a report with a difference
    /// beyond them disagrees).
    #[test]
    fn the_cpu_beside_itself_agrees_exactly() {
        let Some(model) = crate::pretrained::cached_model() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true and no cached model: CI fetches it (peers/fetch-model.sh), so it must not skip"
            );
            eprintln!("SKIPPED: no cached model (peers/fetch-model.sh)");
            return;
        };
        let w = DeviceWorkload {
            tasks: 1,
            samples: 2,
            new_tokens: 6,
            train_epochs: 1,
            ..DEVICE_WORKLOAD
        };
        let r = device_check(&model, &Device::Cpu, "cpu", &w).unwrap();
        assert_eq!(r.completions, 2);
        assert_eq!(r.tokens, 12);
        assert_eq!(r.log_prob_per_token, 0.0);
        assert_eq!(r.score_rel, 0.0);
        assert!(r.agrees());
        for x in [r.cpu, r.other] {
            assert!(x.prefill > 0.0 && x.decode > 0.0 && x.train > 0.0, "{x:?}");
        }
        let text = report_text(&r);
        assert!(
            text.contains("| agree |") && !text.contains("DISAGREE"),
            "{text}"
        );
        let off = DeviceReport {
            score_rel: 2.0 * crate::tolerance::DEVICE_SCORE_REL,
            ..r.clone()
        };
        assert!(!off.agrees());
        assert!(report_text(&off).contains("DISAGREE"));
    }

    #[test]
    fn device_names_are_checked() {
        assert!(matches!(device_named("cpu"), Ok(Device::Cpu)));
        let e = device_named("tpu").unwrap_err().to_string();
        assert!(e.contains("\"tpu\"") && e.contains("cuda:N"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = device_named("cuda").unwrap_err().to_string();
            assert!(e.contains("lacks the cuda feature"), "{e}");
        } else {
            // No GPU here (the suite runs on CPU machines).
            let e = device_named("cuda:7").unwrap_err().to_string();
            assert!(e.contains("no usable CUDA device"), "{e}");
        }
    }
}
