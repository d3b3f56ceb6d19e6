//! The transformer policy: every parameter gets a gradient (candle's fused
//! norms and softmax would silently stop it), scores against finite
//! differences in f64, the P01 identity on sampled batches, exact claims
//! through the shared dynamic programs, checkpoints, and plan text through
//! the extractor and validator.

use iterdeploy::estimator::{self, Trace, sample_trace};
use iterdeploy::exact::PolicyTable;
use iterdeploy::generate::{DomainKind, Params, generate};
use iterdeploy::mdp::Deployment;
use iterdeploy::policy::Policy;
use iterdeploy::policy::transformer::{Size, Transformer};
use iterdeploy::tolerance::{EXACT_ABS, EXACT_REL, FD_ABS, FD_REL, FD_STEP, errors};

fn blocks_env(blocks: usize, count: usize, horizon: usize) -> Deployment {
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let tasks = generate(
        kind,
        &mut Params::from_pairs(kind, &[format!("blocks={blocks}")]).unwrap(),
        count,
        9,
    )
    .unwrap();
    let problems: Vec<_> = tasks
        .iter()
        .map(|t| iterdeploy::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap())
        .collect();
    Deployment::build(&domain, &problems, horizon, 100_000).unwrap()
}

const SMALL: Size = Size {
    d_model: 16,
    heads: 2,
    layers: 2,
    d_ff: 32,
    f64: true,
};

fn model(env: &Deployment, seed: u64) -> Transformer {
    Transformer::new(env, SMALL, 1.0, &mut iterdeploy::rng::seeded(seed)).unwrap()
}

/// Every parameter tensor receives a non-zero gradient from one state's
/// score (a fused layer norm or softmax without backward would leave whole
/// tensors at zero while the loss still moves).
#[test]
fn every_parameter_tensor_gets_a_gradient() {
    let env = blocks_env(3, 1, 4);
    let m = model(&env, 1);
    let g: Vec<f64> = (0..env.num_actions())
        .map(|a| (a as f64 * 0.37).sin())
        .collect();
    let mut grad = vec![0.0; m.num_params()];
    m.backprop_logits(&env, 0, 0, &g, &mut grad);
    let mut at = 0;
    for (name, shape) in m.config().shapes() {
        let n: usize = shape.iter().product();
        let norm: f64 = grad[at..at + n].iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm > 0.0, "no gradient reaches `{name}`");
        at += n;
    }
    assert_eq!(at, m.num_params());
}

/// ∇ log π(trace) by autograd against central differences along random
/// directions, in f64.
#[test]
fn trace_scores_match_finite_differences() {
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
    let env = blocks_env(3, 2, 6);
    let m = model(&env, 8);
    let table = PolicyTable::new(&m, &env);
    let mut rng = iterdeploy::rng::seeded(9);
    let domain = DomainKind::Blocksworld.parse_domain();
    let vocab = m.vocabulary();
    let mut seen = [0usize; 2];
    for _ in 0..200 {
        let t = sample_trace(&env, &table, rng_task(&mut rng), &mut rng);
        let text: String = t
            .steps
            .iter()
            .map(|&(_, a)| vocab.text(&vocab.action_tokens[a]) + "\n")
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
        assert!(c.pass, "{c:?}");
    }
    for claim in &claims {
        assert!(
            on_tf.iter().any(|c| &c.claim == claim),
            "{claim} not checked on the transformer"
        );
    }
}
