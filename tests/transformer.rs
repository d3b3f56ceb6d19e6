//! The transformer policy: every parameter gets a gradient (candle's fused
//! norms and softmax would silently stop it), scores against finite
//! differences in f64, the P01 identity on sampled batches, exact claims
//! through the shared dynamic programs, checkpoints, and plan text through
//! the extractor and validator.

use approx::{assert_relative_eq, relative_eq};
use iterdeploy::estimator::{self, Trace, sample_trace};
use iterdeploy::exact::PolicyTable;
use iterdeploy::generate::{DomainKind, Params, generate};
use iterdeploy::mdp::Deployment;
use iterdeploy::policy::Policy;
use iterdeploy::policy::transformer::{Objects, PlanWriter, Positions, Size, Transformer};
use iterdeploy::tolerance::{EXACT_ABS, EXACT_REL, FD_ABS, FD_REL, FD_STEP, errors};

fn blocks_env(blocks: usize, count: usize, horizon: usize) -> Deployment {
    ladder_env(&[(blocks, count)], horizon)
}

/// One deployment of `count` Blocksworld tasks of each `(blocks, count)`.
fn ladder_env(sizes: &[(usize, usize)], horizon: usize) -> Deployment {
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let mut problems = Vec::new();
    for &(blocks, count) in sizes {
        let tasks = generate(
            kind,
            &mut Params::from_pairs(kind, &[format!("blocks={blocks}")]).unwrap(),
            count,
            9,
        )
        .unwrap();
        problems.extend(tasks.iter().map(|t| {
            iterdeploy::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap()
        }));
    }
    Deployment::build(&domain, &problems, horizon, 100_000).unwrap()
}

const SMALL: Size = Size {
    d_model: 16,
    heads: 2,
    layers: 2,
    d_ff: 32,
    f64: true,
    positions: Positions::Learned,
    objects: Objects::Names,
};

/// The plan writer built to extrapolate (issue 28): no position
/// embeddings, and each task's objects renamed into a pool of 8 tokens.
const EXTRAPOLATING: Size = Size {
    positions: Positions::None,
    objects: Objects::Pool { size: 8 },
    ..SMALL
};

/// Both writer schemes: every writer check holds under each.
const WRITER_SIZES: [Size; 2] = [SMALL, EXTRAPOLATING];

fn model(env: &Deployment, seed: u64) -> Transformer {
    Transformer::new(env, SMALL, 1.0, &mut iterdeploy::rng::seeded(seed)).unwrap()
}

/// Every parameter tensor receives a non-zero gradient from one state's
/// score (a fused layer norm or softmax without backward would leave whole
/// tensors at zero while the loss still moves).
#[test]
fn every_parameter_tensor_gets_a_gradient() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 1, 4);
    let m = model(&env, 1);
    let g: Vec<f64> = (0..env.num_actions())
        .map(|a| (a as f64 * 0.37).sin())
        .collect();
    let mut grad = vec![0.0; m.num_params()];
    m.backprop_logits(&env, 0, 0, &g, &mut grad);
    assert_every_tensor_has_gradient(&m.decoder().config(), &grad);
}

/// Each parameter tensor's slice of the flat gradient `grad` (layout of
/// `cfg.shapes()`) is non-zero, and the slices cover `grad` exactly.
fn assert_every_tensor_has_gradient(cfg: &iterdeploy::policy::transformer::Config, grad: &[f64]) {
    let mut at = 0;
    for (name, shape) in cfg.shapes() {
        let n: usize = shape.iter().product();
        let norm: f64 = grad[at..at + n].iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm > 0.0, "no gradient reaches `{name}`");
        at += n;
    }
    assert_eq!(at, grad.len());
}

/// ∇ log π(trace) by autograd against central differences along random
/// directions, in f64.
#[test]
fn trace_scores_match_finite_differences() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 5);
    let mut m = model(&env, 2);
    let mut rng = iterdeploy::rng::seeded(3);
    let table = PolicyTable::new(&m, &env);
    let traces: Vec<Trace> = (0..3)
        .map(|i| sample_trace(&env, &table, i % 2, &mut rng))
        .collect();
    let theta = m.params().to_vec();
    for trace in &traces {
        let mut analytic = vec![0.0; theta.len()];
        trace.accumulate_score(&env, &m, 1.0, &mut analytic);
        for k in 0..3 {
            let dir: Vec<f64> = (0..theta.len())
                .map(|i| ((i * 7 + k * 13) as f64 * 0.61).sin())
                .collect();
            let mut lp = [0.0; 2];
            for (j, sign) in [1.0, -1.0].into_iter().enumerate() {
                for (p, (t, d)) in m.params_mut().iter_mut().zip(theta.iter().zip(&dir)) {
                    *p = t + sign * FD_STEP * d;
                }
                lp[j] = trace.log_prob(&PolicyTable::new(&m, &env), &env);
            }
            m.params_mut().copy_from_slice(&theta);
            let numeric = (lp[0] - lp[1]) / (2.0 * FD_STEP);
            let exact: f64 = analytic.iter().zip(&dir).map(|(a, d)| a * d).sum();
            let (abs, rel) = errors(&[exact], &[numeric], FD_ABS);
            assert!(
                abs <= FD_ABS || rel <= FD_REL,
                "direction {k}: autograd {exact} vs differences {numeric}"
            );
        }
    }
}

/// P01 on the sequence model: on every sampled batch, the autograd
/// gradient of the SFT loss on the valid samples times N⁺/N equals the
/// REINFORCE estimate, to f64 precision.
#[test]
fn p01_sft_is_scaled_reinforce_on_the_transformer() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 6);
    let m = model(&env, 4);
    let table = PolicyTable::new(&m, &env);
    let mut rng = iterdeploy::rng::seeded(5);
    let mut checked = 0;
    for _ in 0..40 {
        let batch = estimator::sample_batch(&env, &table, 4, &mut rng);
        let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
        if kept.is_empty() {
            continue;
        }
        let scale = kept.len() as f64 / batch.len() as f64;
        let sft: Vec<f64> = estimator::sft_gradient(&env, &m, &kept)
            .iter()
            .map(|g| g * scale)
            .collect();
        let rl = estimator::reinforce(&env, &m, &batch);
        let (abs, rel) = errors(&sft, &rl, EXACT_ABS);
        assert!(abs <= EXACT_ABS || rel <= EXACT_REL, "abs {abs}, rel {rel}");
        checked += 1;
        if checked == 3 {
            break;
        }
    }
    assert!(checked > 0, "no batch had a valid trace");
}

/// A checkpoint restores the same policy; a checkpoint of another model is
/// refused with the file named.
#[test]
fn checkpoints_round_trip_as_safetensors() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 1, 4);
    let a = model(&env, 6);
    let mut b = model(&env, 7);
    let dir = std::env::temp_dir().join(format!("iterdeploy-tf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gen0.safetensors");
    a.save(&path).unwrap();
    assert!(path.with_extension("json").is_file());
    b.load(&path).unwrap();
    assert_eq!(a.params(), b.params());
    let mut z = vec![0.0; env.num_actions()];
    let mut w = vec![0.0; env.num_actions()];
    a.logits(&env, 0, 0, &mut z);
    b.logits(&env, 0, 0, &mut w);
    assert_eq!(z, w);
    let other = Transformer::new(
        &env,
        Size {
            d_model: 8,
            ..SMALL
        },
        1.0,
        &mut iterdeploy::rng::seeded(1),
    );
    let e = other.unwrap().load(&path).unwrap_err().to_string();
    assert!(e.contains("gen0.json") && e.contains("differs"), "{e}");
}

/// Sampled traces written out as plan text (the model's own tokens) go
/// through the extractor and the validator, which agree with the trace's
/// verdict.
#[test]
fn plan_text_from_the_model_is_judged_like_model_output() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 6);
    let m = model(&env, 8);
    let table = PolicyTable::new(&m, &env);
    let mut rng = iterdeploy::rng::seeded(9);
    let domain = DomainKind::Blocksworld.parse_domain();
    let vocab = m.decoder().vocabulary();
    let mut seen = [0usize; 2];
    for _ in 0..200 {
        let t = sample_trace(&env, &table, rng_task(&mut rng), &mut rng);
        let text: String = t
            .steps
            .iter()
            .map(|&(_, a)| {
                let task = vocab.task(&env, t.task);
                task.text(&task.action(a)) + "\n"
            })
            .collect();
        let extraction = iterdeploy::extract::extract_plan(&text, &|a| domain.action(a).is_some());
        let verdict = iterdeploy::validate::Validator::new(&domain, &env.tasks[t.task].problem)
            .validate(&extraction.steps);
        let ended = text.trim_end().ends_with("<end>");
        assert_eq!(t.valid, verdict.valid && ended, "{text}");
        seen[t.valid as usize] += 1;
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "{seen:?}: need valid and invalid traces"
    );
}

fn rng_task(rng: &mut iterdeploy::rng::Rng) -> usize {
    use rand::RngExt;
    rng.random_range(0..2)
}

/// P02 and P07 (and P08) on the sequence model: the shared dynamic programs
/// against trace enumeration, brute force and Monte Carlo, with the
/// transformer as the policy, on the toy chain (small enough to enumerate
/// every trace).
#[test]
fn p02_p07_p08_hold_exactly_on_the_transformer() {
    crate::common::candle_cpu();
    let mut chain = iterdeploy::verify::default_settings().unwrap().remove(0);
    chain.transformer = true;
    let claims: Vec<String> = ["P02", "P07", "P08"].map(String::from).to_vec();
    let checks = iterdeploy::verify::run(&claims, std::slice::from_ref(&chain), 2026).unwrap();
    let on_tf: Vec<_> = checks
        .iter()
        .filter(|c| c.policy == "transformer")
        .collect();
    assert!(on_tf.len() >= 5, "{} transformer checks", on_tf.len());
    for c in &checks {
        assert!(c.ok(), "{c:?}");
    }
    for claim in &claims {
        assert!(
            on_tf.iter().any(|c| &c.claim == claim),
            "{claim} not checked on the transformer"
        );
    }
}

/// The key/value cache changes the work, not the text: with the same
/// generator state both decode loops, on any number of threads, write the
/// same tokens (f64 model).
#[test]
fn decoding_writes_the_same_tokens_with_or_without_cache_on_any_thread_count() {
    crate::common::candle_cpu();
    use iterdeploy::policy::transformer::sampling::{Decode, Sampling, generate};
    let env = blocks_env(3, 1, 4);
    let m = model(&env, 11);
    let w = m.decoder().weights();
    let prompt = m.decoder().vocabulary().task(&env, 0).prompt(0);
    let sampling = Sampling {
        temperature: 1.0,
        top_k: Some(8),
        top_p: None,
        max_new: 7,
    };
    let stop = [m.decoder().vocabulary().id(")").unwrap()];
    let run = |decode| {
        let mut rng = iterdeploy::rng::seeded(12);
        generate(&w, &prompt, 5, &stop, &sampling, decode, &mut rng).unwrap()
    };
    let cached = run(Decode::KvCache);
    assert_eq!(cached, run(Decode::Recompute));
    // Rows decode in shards on the rayon pool; the text must not depend
    // on how many threads it has.
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert_eq!(
            pool.install(|| run(Decode::KvCache)),
            cached,
            "{threads} threads"
        );
    }
    assert_eq!(cached.len(), 5);
    assert!(cached.iter().all(|r| !r.is_empty() && r.len() <= 7));
    assert!(
        cached.iter().any(|r| r.len() > 1),
        "no row got past one token: {cached:?}"
    );
}

/// Free sampling draws whole sequences from the model's teacher-forced
/// distribution: Pearson χ² of 20,000 two-token continuations against
/// P(t₁ t₂ | prompt) from `completion_log_probs`, below the χ² 0.999
/// quantile (cells with expectation < 5 pooled).
#[test]
fn free_sampling_follows_the_teacher_forced_distribution() {
    crate::common::candle_cpu();
    use iterdeploy::policy::transformer::sampling::{Decode, Sampling, generate};
    use rand_distr::Distribution;
    use statrs::distribution::{ChiSquared, ContinuousCDF};
    let env = blocks_env(3, 1, 4);
    let mut m = model(&env, 13);
    // Larger weights than at initialisation: a peaked distribution, so the
    // test has cells with real mass.
    let normal = rand_distr::Normal::new(0.0, 0.4).unwrap();
    let mut rng = iterdeploy::rng::seeded(14);
    for p in m.params_mut() {
        *p = normal.sample(&mut rng);
    }
    let w = m.decoder().weights();
    let prompt = m.decoder().vocabulary().task(&env, 0).prompt(0);
    let v = m.decoder().vocabulary().len() as u32;
    let pairs: Vec<Vec<u32>> = (0..v)
        .flat_map(|a| (0..v).map(move |b| vec![a, b]))
        .collect();
    let exact: Vec<f64> = w
        .completion_log_probs(&prompt, &pairs)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
        .into_iter()
        .map(f64::exp)
        .collect();
    assert!((exact.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    let n = 20_000;
    let sampling = Sampling {
        temperature: 1.0,
        top_k: None,
        top_p: None,
        max_new: 2,
    };
    let rows = generate(&w, &prompt, n, &[], &sampling, Decode::KvCache, &mut rng).unwrap();
    let mut counts = vec![0usize; pairs.len()];
    for r in &rows {
        counts[(r[0] * v + r[1]) as usize] += 1;
    }
    let (mut chi2, mut cells) = (0.0, 0);
    let (mut rest_e, mut rest_o) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(&exact) {
        let e = p * n as f64;
        if e >= 5.0 {
            chi2 += (c as f64 - e).powi(2) / e;
            cells += 1;
        } else {
            rest_e += e;
            rest_o += c as f64;
        }
    }
    if rest_e > 0.0 {
        chi2 += (rest_o - rest_e).powi(2) / rest_e;
        cells += 1;
    }
    assert!(cells >= 20, "only {cells} cells with mass");
    let limit = ChiSquared::new((cells - 1) as f64)
        .unwrap()
        .inverse_cdf(0.999);
    assert!(
        chi2 < limit,
        "χ² = {chi2:.1} over {cells} cells, limit {limit:.1}"
    );
}

/// The language-model training step (the one `bench transformer` times
/// beside PyTorch) learns: on a repeated batch the loss falls well below
/// its start, and every parameter tensor moves (no gradient silently
/// stopped on the way).
#[test]
fn lm_training_step_learns_and_reaches_every_parameter() {
    crate::common::candle_cpu();
    use iterdeploy::policy::transformer::Config;
    use iterdeploy::policy::transformer::model::initial_params;
    use iterdeploy::policy::transformer::train::{AdamW, LmTrainer};
    let cfg = Config {
        vocab: 12,
        d_model: 16,
        heads: 2,
        layers: 2,
        d_ff: 32,
        max_len: 16,
        f64: false,
        positions: Positions::Learned,
    };
    let theta = initial_params(&cfg, &mut iterdeploy::rng::seeded(21));
    let adamw = AdamW {
        learning_rate: 1e-2,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
    };
    let mut trainer = LmTrainer::new(cfg, theta.clone(), adamw, &candle_core::Device::Cpu).unwrap();
    // Four sequences of a fixed pattern: learnable by heart.
    let tokens: Vec<u32> = (0..4 * 12)
        .map(|i| ((i * 5 + i / 12) % 12) as u32)
        .collect();
    let first = trainer.step(&tokens, 4).unwrap();
    let mut last = first;
    for _ in 0..60 {
        last = trainer.step(&tokens, 4).unwrap();
    }
    assert!(last < 0.3 * first, "loss {first} → {last}");
    let mut at = 0;
    for (name, shape) in cfg.shapes() {
        let n: usize = shape.iter().product();
        let moved = theta[at..at + n]
            .iter()
            .zip(&trainer.params()[at..at + n])
            .any(|(a, b)| a != b);
        assert!(moved, "`{name}` never moved");
        at += n;
    }
}

/// Splitting the training batch into row shards (run in parallel) gives
/// the loss and gradient of the whole batch: shares b_s/B of the
/// per-shard means, f64 to rounding, for even and uneven splits.
#[test]
fn sharded_lm_gradient_equals_the_whole_batch_gradient() {
    crate::common::candle_cpu();
    use iterdeploy::policy::transformer::Config;
    use iterdeploy::policy::transformer::model::{Weights, initial_params};
    use iterdeploy::policy::transformer::train::lm_gradient;
    let cfg = Config {
        vocab: 10,
        d_model: 8,
        heads: 2,
        layers: 1,
        d_ff: 16,
        max_len: 8,
        f64: true,
        positions: Positions::None,
    };
    let theta = initial_params(&cfg, &mut iterdeploy::rng::seeded(4));
    let w = Weights::from_flat(cfg, &theta, &candle_core::Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..5 * 7).map(|i| ((i * 7 + 3) % 10) as u32).collect();
    let mut whole = vec![0.0; theta.len()];
    let loss = lm_gradient(&w, &tokens, 5, 1, &mut whole).unwrap();
    assert!(whole.iter().any(|g| *g != 0.0));
    for shards in [2, 3, 5, 9] {
        let mut split = vec![1.0; theta.len()];
        let l = lm_gradient(&w, &tokens, 5, shards, &mut split).unwrap();
        assert_relative_eq!(l, loss, epsilon = EXACT_ABS, max_relative = EXACT_REL);
        let (_, rel) = iterdeploy::tolerance::errors(&split, &whole, 1e-12);
        assert!(rel < 1e-12, "{shards} shards: gradient differs by {rel}");
    }
    assert!(lm_gradient(&w, &tokens[..34], 5, 2, &mut whole).is_err());
}

// ---- The plan writer: prompt = task, completion = the whole plan as text.

fn writer(env: &Deployment, seed: u64) -> PlanWriter {
    writer_of(env, SMALL, seed)
}

fn writer_of(env: &Deployment, size: Size, seed: u64) -> PlanWriter {
    PlanWriter::new(env, size, 1.0, &mut iterdeploy::rng::seeded(seed)).unwrap()
}

/// Shortest plans of `env`'s tasks as traces (the planner's demonstrations).
fn demonstrations(env: &Deployment) -> Vec<Trace> {
    iterdeploy::verify::shortest_plans(env)
}

/// Free-text samples of every task, `per_task` each.
fn writer_samples(
    env: &Deployment,
    w: &PlanWriter,
    per_task: usize,
    seed: u64,
) -> Vec<(Trace, f64)> {
    (0..env.tasks.len())
        .flat_map(|x| {
            let mut rngs: Vec<_> = (0..per_task)
                .map(|i| iterdeploy::rng::stream(seed, (x * 1000 + i) as u64))
                .collect();
            w.sample_traces(env, x, &mut rngs)
        })
        .collect()
}

/// The writer's scores reach every parameter tensor, and it declares
/// itself non-Markov (exact tables refuse it).
#[test]
fn plan_writer_gets_a_gradient_in_every_parameter_tensor() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 6);
    for size in WRITER_SIZES {
        let w = writer_of(&env, size, 1);
        assert!(!w.is_markov());
        let demos = demonstrations(&env);
        let weighted: Vec<(&Trace, f64)> = demos.iter().map(|t| (t, 1.0)).collect();
        let mut grad = vec![0.0; w.num_params()];
        w.accumulate_trace_scores(&env, &weighted, &mut grad);
        assert_every_tensor_has_gradient(&w.decoder().config(), &grad);
    }
}

/// ∇ log π(y | x) of whole completions (free-text samples and planner
/// plans), at τ = 1 and τ = 0.7, against central differences of log π in
/// f64 along random directions.
#[test]
fn plan_writer_scores_match_finite_differences() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 5);
    for size in WRITER_SIZES {
        writer_scores_match_finite_differences(&env, size);
    }
}

fn writer_scores_match_finite_differences(env: &Deployment, size: Size) {
    let env = env.clone();
    let mut w = writer_of(&env, size, 2);
    let mut traces: Vec<Trace> = writer_samples(&env, &w, 1, 3)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    traces.push(demonstrations(&env).remove(0));
    let theta = w.params().to_vec();
    let mut rng = iterdeploy::rng::seeded(4);
    let normal = rand_distr::Normal::new(0.0, 1.0).unwrap();
    for tau in [1.0, 0.7] {
        w.set_temperature(tau);
        for trace in &traces {
            let mut analytic = vec![0.0; w.num_params()];
            w.accumulate_trace_scores(&env, &[(trace, 1.0)], &mut analytic);
            for k in 0..2 {
                // A unit direction: along an unnormalised one (length ≈ √P)
                // the truncation error h²·f''' of the differences grows
                // with its cube and swamps the check.
                let mut dir: Vec<f64> = (0..theta.len())
                    .map(|_| rand_distr::Distribution::sample(&normal, &mut rng))
                    .collect();
                let len = dir.iter().map(|d| d * d).sum::<f64>().sqrt();
                dir.iter_mut().for_each(|d| *d /= len);
                let mut at = |h: f64| {
                    for ((p, t), d) in w.params_mut().iter_mut().zip(&theta).zip(&dir) {
                        *p = t + h * d;
                    }
                    w.trace_log_prob(&env, trace)
                };
                let numeric = (at(FD_STEP) - at(-FD_STEP)) / (2.0 * FD_STEP);
                w.params_mut().copy_from_slice(&theta);
                let exact: f64 = analytic.iter().zip(&dir).map(|(a, d)| a * d).sum();
                assert!(
                    relative_eq!(exact, numeric, epsilon = FD_ABS, max_relative = FD_REL),
                    "{size:?}, τ {tau}, direction {k}: autograd {exact} vs differences {numeric}"
                );
            }
        }
    }
}

/// What the sampler reports as log π(y) while decoding with the key/value
/// cache equals the teacher-forced log-probability of the same text (two
/// different computations), at a sampling temperature ≠ 1 (f64 model).
#[test]
fn plan_writer_sampling_log_probs_equal_teacher_forced_ones() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 6);
    for size in WRITER_SIZES {
        let mut w = writer_of(&env, size, 5);
        w.set_temperature(0.8);
        let samples = writer_samples(&env, &w, 4, 6);
        for (t, logp) in &samples {
            let forced = w.trace_log_prob(&env, t);
            assert_relative_eq!(*logp, forced, epsilon = EXACT_ABS, max_relative = EXACT_REL);
        }
    }
}

/// The writer's completions are judged like any model output: the plan
/// text goes through the extractor and validator, whose verdict equals the
/// trace's for every text that closed with `<end>` within the horizon —
/// free samples (mostly garbage from an untrained writer), planner plans
/// (valid) and planner plans missing their last step (invalid). A planner
/// plan read back gives its own steps.
#[test]
fn plan_writer_text_is_judged_like_model_output() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 3, 6);
    for size in WRITER_SIZES {
        writer_text_is_judged_like_model_output(&env, size);
    }
}

fn writer_text_is_judged_like_model_output(env: &Deployment, size: Size) {
    let env = env.clone();
    let w = writer_of(&env, size, 7);
    let domain = DomainKind::Blocksworld.parse_domain();
    let end = w.decoder().vocabulary().id("<end>").unwrap();
    let mut completions: Vec<(usize, Vec<u32>)> = writer_samples(&env, &w, 20, 8)
        .into_iter()
        .map(|(t, _)| (t.task, t.tokens))
        .collect();
    for d in demonstrations(&env) {
        let full = w.completion(&env, &d);
        assert_eq!(
            w.read(&env, d.task, &full).steps,
            d.steps,
            "a plan reads back as itself"
        );
        if d.plan_length() > 0 {
            let mut cut = full.clone();
            let last_step = w
                .decoder()
                .vocabulary()
                .task(&env, d.task)
                .action(d.steps[d.steps.len() - 2].1)
                .len();
            cut.drain(cut.len() - 1 - last_step..cut.len() - 1);
            completions.push((d.task, cut));
        }
        completions.push((d.task, full));
    }
    let mut seen = [0usize; 2];
    for (x, tokens) in completions {
        let t = w.read(&env, x, &tokens);
        let text = w.plan_text(&env, x, &tokens);
        let closed = tokens.contains(&end) && text.lines().count() <= env.horizon;
        let extraction = iterdeploy::extract::extract_plan(&text, &|a| domain.action(a).is_some());
        let verdict = iterdeploy::validate::Validator::new(&domain, &env.tasks[x].problem)
            .validate(&extraction.steps);
        let readable = extraction.steps.len() == text.lines().count();
        if closed {
            assert_eq!(t.valid, verdict.valid && readable, "task {x}:\n{text}");
        } else {
            assert!(
                !t.valid,
                "a text without <end> or past the horizon is never valid:\n{text}"
            );
        }
        seen[t.valid as usize] += 1;
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "{size:?}: {seen:?}: need valid and invalid texts"
    );
}

/// Issue 28's precondition for reach: a writer trained only on 3-block
/// tasks meets a 5-block prompt. Under the pool every token of that prompt
/// got gradient from the 3-block training (its embedding row is trained and
/// finite), and there are no position embeddings to leave untrained; under
/// one token per name, the tokens of blocks b4 and b5 got none and neither
/// did the positions past the longest 3-block sequence.
#[test]
fn a_pool_writer_trained_on_3_blocks_reads_5_block_prompts_with_trained_tokens() {
    crate::common::candle_cpu();
    // 12 tasks of 3 blocks (the training set), then 2 of 5 blocks.
    let env = ladder_env(&[(3, 12), (5, 2)], 12);
    let small: Vec<Trace> = demonstrations(&env)
        .into_iter()
        .filter(|t| t.task < 12)
        .collect();
    assert_eq!(small.len(), 12);
    let weighted: Vec<(&Trace, f64)> = small.iter().map(|t| (t, 1.0)).collect();
    for size in WRITER_SIZES {
        let w = writer_of(&env, size, 3);
        let cfg = w.decoder().config();
        let mut grad = vec![0.0; w.num_params()];
        w.accumulate_trace_scores(&env, &weighted, &mut grad);
        // tok_emb is the first tensor, [vocab, d_model].
        let d = cfg.d_model;
        let row_trained = |t: u32| {
            let row = &grad[t as usize * d..(t as usize + 1) * d];
            row.iter().all(|g| g.is_finite()) && row.iter().any(|&g| g != 0.0)
        };
        let untrained: Vec<String> = (12..14)
            .flat_map(|x| w.prompt(&env, x))
            .filter(|&t| !row_trained(t))
            .map(|t| w.decoder().vocabulary().words[t as usize].clone())
            .collect();
        let has_positions = cfg.shapes().iter().any(|(n, _)| n == "pos_emb");
        match size.objects {
            Objects::Pool { .. } => {
                assert!(untrained.is_empty(), "untrained tokens: {untrained:?}");
                assert!(!has_positions);
            }
            Objects::Names => {
                assert!(
                    untrained.contains(&"b4".to_string()) && untrained.contains(&"b5".to_string()),
                    "{untrained:?}"
                );
                // The positions past every 3-block sequence got no gradient.
                let longest = small
                    .iter()
                    .map(|t| w.prompt(&env, t.task).len() + w.completion(&env, t).len())
                    .max()
                    .unwrap();
                let pos = cfg.vocab * d;
                assert!(
                    grad[pos + longest * d..pos + (longest + 1) * d]
                        .iter()
                        .all(|&g| g == 0.0)
                );
                let big = demonstrations(&env)
                    .into_iter()
                    .filter(|t| t.task >= 12)
                    .map(|t| w.prompt(&env, t.task).len() + w.completion(&env, &t).len())
                    .max()
                    .unwrap();
                assert!(big > longest + 1, "5-block plans reach past them");
            }
        }
    }
}

/// Under the pool, a task's naming is fixed by its name (the same in every
/// writer and run), injective, and distinct tasks get distinct namings; the
/// plan text comes back in the task's own names.
#[test]
fn a_pool_names_each_task_fixedly_and_injectively() {
    crate::common::candle_cpu();
    let env = ladder_env(&[(3, 6), (5, 2)], 12);
    let (a, b) = (
        writer_of(&env, EXTRAPOLATING, 1),
        writer_of(&env, EXTRAPOLATING, 2),
    );
    let is_pool = |w: &str| w.len() > 1 && w.starts_with('o') && w[1..].parse::<u32>().is_ok();
    let mut namings = std::collections::BTreeSet::new();
    for x in 0..env.tasks.len() {
        assert_eq!(a.prompt(&env, x), b.prompt(&env, x), "task {x}");
        let vocab = a.decoder().vocabulary();
        let task = vocab.task(&env, x);
        let objects = env.tasks[x].problem.objects.len();
        // The pool token of each block, b1 … bn, read off the prompt.
        let mut naming = vec![None; objects];
        for &t in &a.prompt(&env, x) {
            if is_pool(&vocab.words[t as usize]) {
                let block: usize = task.word(t)[1..].parse().unwrap();
                assert!(
                    naming[block - 1].is_none_or(|n| n == t),
                    "task {x}: b{block} has two tokens"
                );
                naming[block - 1] = Some(t);
            }
        }
        let naming: Vec<u32> = naming
            .into_iter()
            .map(|n| n.expect("every block named"))
            .collect();
        let distinct: std::collections::BTreeSet<u32> = naming.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            objects,
            "task {x}: one pool token per block"
        );
        namings.insert(naming);
    }
    assert_eq!(namings.len(), env.tasks.len(), "each task its own naming");
    let demos = demonstrations(&env);
    let demo = demos.iter().rev().find(|d| d.plan_length() > 0).unwrap();
    let text = a.plan_text(&env, demo.task, &a.completion(&env, demo));
    assert!(
        !text.is_empty()
            && text
                .split_whitespace()
                .all(|w| !is_pool(w.trim_matches(|c| c == '(' || c == ')'))),
        "{text}"
    );
}

/// In a typed domain each type has its own pool: Ferry's cars become
/// `car` tokens and its locations `location` tokens, and a planner plan
/// written in them reads back as itself and prints in the real names.
#[test]
fn a_typed_pool_renames_each_type_into_its_own_tokens() {
    crate::common::candle_cpu();
    let kind = DomainKind::Ferry;
    let domain = kind.parse_domain();
    let tasks = generate(
        kind,
        &mut Params::from_pairs(kind, &["cars=3".to_string()]).unwrap(),
        4,
        2,
    )
    .unwrap();
    let problems: Vec<_> = tasks
        .iter()
        .map(|t| iterdeploy::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap())
        .collect();
    let env = Deployment::build(&domain, &problems, 14, 100_000).unwrap();
    let w = writer_of(&env, EXTRAPOLATING, 1);
    let vocab = w.decoder().vocabulary();
    for d in demonstrations(&env) {
        let task = vocab.task(&env, d.task);
        let completion = w.completion(&env, &d);
        assert_eq!(w.read(&env, d.task, &completion).steps, d.steps);
        assert!(w.read(&env, d.task, &completion).valid);
        for &t in w.prompt(&env, d.task).iter().chain(&completion) {
            let (token, shown) = (&vocab.words[t as usize], task.word(t));
            if shown.starts_with('c') && shown[1..].parse::<u32>().is_ok() {
                assert!(token.starts_with("car"), "{shown} spelled {token}");
            }
            if shown.starts_with('l') && shown[1..].parse::<u32>().is_ok() {
                assert!(token.starts_with("location"), "{shown} spelled {token}");
            }
        }
        let text = w.plan_text(&env, d.task, &completion);
        assert!(text.contains("(board c") || d.plan_length() == 0, "{text}");
    }
}

/// P01 on the plan writer: on a batch of completions, some valid, the
/// gradient of the SFT loss on the valid ones times N⁺/N equals REINFORCE
/// on the whole batch — the invalid rows (and their padding) contribute
/// nothing, to f64 precision.
#[test]
fn p01_sft_is_scaled_reinforce_on_the_plan_writer() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 2, 6);
    for size in WRITER_SIZES {
        let w = writer_of(&env, size, 9);
        let mut batch: Vec<Trace> = writer_samples(&env, &w, 3, 10)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        batch.extend(demonstrations(&env));
        let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
        assert!(!kept.is_empty() && kept.len() < batch.len());
        let scale = kept.len() as f64 / batch.len() as f64;
        let sft: Vec<f64> = estimator::sft_gradient(&env, &w, &kept)
            .iter()
            .map(|g| g * scale)
            .collect();
        let rl = estimator::reinforce(&env, &w, &batch);
        let (abs, rel) = errors(&sft, &rl, EXACT_ABS);
        assert!(
            abs <= EXACT_ABS || rel <= EXACT_REL,
            "{size:?}: abs {abs}, rel {rel}"
        );
    }
}

/// The toy chain of `verify` (2 tasks, H = 5): every valid trace can be
/// enumerated.
fn chain_env() -> Deployment {
    iterdeploy::verify::default_settings()
        .unwrap()
        .remove(0)
        .env
}

/// Summing π(y)·∇log π(y) over the enumerated valid traces gives the
/// dynamic program's J and ∇J for a Markov policy (the step transformer),
/// to f64 precision — the exact route the plan writer's checks rely on.
#[test]
fn enumerated_objective_equals_the_dynamic_program() {
    crate::common::candle_cpu();
    let env = chain_env();
    let m = model(&env, 11);
    let (j, grad) = iterdeploy::exact::objective_by_enumeration(&env, &m, 10_000).unwrap();
    let table = PolicyTable::new(&m, &env);
    let dp_j = iterdeploy::exact::objective(&env, &table);
    let dp_grad = iterdeploy::exact::objective_gradient(&env, &m);
    assert_relative_eq!(j, dp_j, epsilon = EXACT_ABS, max_relative = EXACT_REL);
    let (abs, rel) = errors(&grad, &dp_grad, EXACT_ABS);
    assert!(
        abs <= EXACT_ABS || rel <= EXACT_REL,
        "∇J: abs {abs}, rel {rel}"
    );
}

/// A writer fine-tuned on the chain's shortest plans until it solves at
/// least 30% (exact J by enumeration), so Monte-Carlo checks are not vacuous.
fn warm_writer(env: &Deployment) -> PlanWriter {
    let mut w = writer(env, 12);
    let demos = demonstrations(env);
    let kept: Vec<&Trace> = demos.iter().collect();
    let mut opt =
        iterdeploy::optim::Optimizer::new(iterdeploy::optim::OptimizerKind::Adam, 0.01, None);
    for _ in 0..60 {
        let (j, _) = iterdeploy::exact::objective_by_enumeration(env, &w, 10_000).unwrap();
        if j >= 0.3 {
            return w;
        }
        for _ in 0..5 {
            let g = estimator::sft_gradient(env, &w, &kept);
            opt.ascend(w.params_mut(), &g);
        }
    }
    panic!("the writer did not reach J ≥ 0.3 on the chain");
}

/// P07 and P02 on the plan writer, a policy over texts that is not Markov:
/// against the exact J and ∇J (by enumeration), the sampled validity rate
/// matches J, and REINFORCE, RLOO and the importance-weighted estimator
/// from a behaviour at another sampling temperature (τ = 1.3, as a
/// deployment samples) have batch means within MC_Z standard errors of ∇J
/// along ∇J and random unit directions.
#[test]
fn p07_p02_estimators_are_unbiased_on_the_plan_writer() {
    use iterdeploy::tolerance::MC_Z;
    crate::common::candle_cpu();
    let env = chain_env();
    let w = warm_writer(&env);
    let (j, grad_j) = iterdeploy::exact::objective_by_enumeration(&env, &w, 10_000).unwrap();
    let mut beta = w.clone();
    beta.set_temperature(1.3);
    let mut rng = iterdeploy::rng::seeded(13);
    let normal = rand_distr::Normal::new(0.0, 1.0).unwrap();
    let unit = |v: Vec<f64>| {
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f64>>()
    };
    let mut dirs = vec![unit(grad_j.clone())];
    for _ in 0..3 {
        dirs.push(unit(
            (0..w.num_params())
                .map(|_| rand_distr::Distribution::sample(&normal, &mut rng))
                .collect(),
        ));
    }
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let (per_task, batches) = (8, 300);
    let n = per_task * env.tasks.len();
    // sums[estimator][direction] = (Σ v, Σ v²)
    let mut sums = vec![vec![(0.0f64, 0.0f64); dirs.len()]; 3];
    let mut valid = 0usize;
    for b in 0..batches {
        let draw = |p: &PlanWriter, salt: u64| -> Vec<(Trace, f64)> {
            (0..env.tasks.len())
                .flat_map(|x| {
                    let mut rngs: Vec<_> = (0..per_task)
                        .map(|i| iterdeploy::rng::stream(salt, (b * 10_000 + x * 100 + i) as u64))
                        .collect();
                    p.sample_traces(&env, x, &mut rngs)
                })
                .collect()
        };
        let on: Vec<Trace> = draw(&w, 14).into_iter().map(|(t, _)| t).collect();
        valid += on.iter().filter(|t| t.valid).count();
        let reinforce = estimator::reinforce(&env, &w, &on);
        let rloo = estimator::rloo(&env, &w, &on);
        // (1/N) Σ ρ_i R_i ∇log π(y_i), ρ = π(y)/β(y), y ~ β.
        let off = draw(&beta, 15);
        let weighted: Vec<(&Trace, f64)> = off
            .iter()
            .filter(|(t, _)| t.valid)
            .map(|(t, log_beta)| (t, (w.trace_log_prob(&env, t) - log_beta).exp() / n as f64))
            .collect();
        let mut iw = vec![0.0; w.num_params()];
        w.accumulate_trace_scores(&env, &weighted, &mut iw);
        for (e, g) in [reinforce, rloo, iw].iter().enumerate() {
            for (d, u) in dirs.iter().enumerate() {
                let v = dot(u, g);
                sums[e][d].0 += v;
                sums[e][d].1 += v * v;
            }
        }
    }
    let total = (batches * n) as f64;
    let rate = valid as f64 / total;
    let z_rate = (rate - j).abs() / (j * (1.0 - j) / total).sqrt();
    assert!(
        z_rate <= MC_Z,
        "sampled validity {rate} vs exact J {j}: z = {z_rate:.2}"
    );
    let m = batches as f64;
    for (e, name) in [
        "REINFORCE",
        "RLOO",
        "importance-weighted (τ = 1.3 behaviour)",
    ]
    .iter()
    .enumerate()
    {
        for (d, u) in dirs.iter().enumerate() {
            let (s, ss) = sums[e][d];
            let mean = s / m;
            let se = ((ss / m - mean * mean).max(0.0) / (m - 1.0)).sqrt();
            let z = (mean - dot(u, &grad_j)).abs() / se;
            assert!(
                z <= MC_Z,
                "{name}, direction {d}: mean {mean} vs exact {} (z = {z:.2})",
                dot(u, &grad_j)
            );
        }
    }
}

/// A writer's checkpoint restores the same text probabilities and says
/// which kind of policy wrote it.
#[test]
fn plan_writer_checkpoints_round_trip() {
    crate::common::candle_cpu();
    let env = blocks_env(3, 1, 4);
    let a = writer(&env, 16);
    let mut b = writer(&env, 17);
    let dir = std::env::temp_dir().join(format!("iterdeploy-writer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("writer.safetensors");
    a.save(&path).unwrap();
    let meta = std::fs::read_to_string(path.with_extension("json")).unwrap();
    assert!(meta.contains("\"plan-writer\""), "{meta}");
    b.load(&path).unwrap();
    assert_eq!(a.params(), b.params());
    let demo = &demonstrations(&env)[0];
    assert_eq!(a.trace_log_prob(&env, demo), b.trace_log_prob(&env, demo));
    std::fs::remove_dir_all(&dir).unwrap();
}
