//! The figures of the claims (`verify --out DIR`; the main job writes them
//! to `plots/verify/`). Each is drawn from a CSV written beside it, on the
//! built-in settings with verify's seeded, warm-started tabular policy:
//!
//! | figure | claim | what it shows |
//! |---|---|---|
//! | `p01_sft_vs_reinforce` | P01 | per sampled batch, the relative residual ‖REINFORCE − SFT·N⁺/N‖/‖REINFORCE‖ in units of machine ε (the CSV keeps ‖SFT‖/‖REINFORCE‖ against N/N⁺ and the cosine) |
//! | `p03_readings` | P03 | cos(paper's form, true SFT gradient) per reading of λ as β drifts from π |
//! | `p06_em_steps` | P06 | p(x) over successive maximum-likelihood fits: up with the validity filter, down for a task under a length-budget proxy |
//! | `rules_vs_gradient` | P04, P05, P08 | the teacher's picture: cos(expected update of each curation rule, ∇J) as N grows |

use std::fmt::Write as _;
use std::path::Path;

use super::p03::{PerTask, add};
use super::prelude::*;
use super::{Setting, perturbed, shortest_plans};
use crate::curation::Pool;
use crate::output::csv_field;
use crate::plot::{Figure, LineKind, Series};

/// Sampled batches per sample count in the P01 figure.
const P01_BATCHES: usize = 40;
/// Samples per task of those batches.
const P01_SIZES: [usize; 4] = [2, 4, 8, 16];
/// The mixture weight λ of the P03 figure, and its drift grid.
const P03_LAMBDA: f64 = 0.5;
const P03_SIGMAS: [f64; 9] = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0];
/// Maximum-likelihood fits (EM steps) in the P06 figure.
const P06_STEPS: usize = 6;
/// Samples per task on the x axis of the rules figure.
const RULE_SIZES: [usize; 8] = [1, 2, 3, 4, 6, 8, 12, 16];
/// Drift of the previous generation in the pooled rule (θ plus noise of
/// this scale).
const PREVIOUS_SIGMA: f64 = 0.5;

/// Writes every figure (PNG, SVG and its CSV) into `dir`; returns the
/// stems.
pub fn write(dir: &Path, settings: &[Setting], seed: u64) -> Result<Vec<String>> {
    let chain = settings
        .first()
        .ok_or_else(|| Error::Invalid("no setting to draw the figures on".into()))?;
    let tabular = |s: &Setting| -> Box<dyn Policy> {
        s.policies(seed)
            .into_iter()
            .next()
            .map(|(_, p)| p)
            .expect("the tabular policy comes first")
    };
    let mut stems = Vec::new();
    let policy = tabular(chain);
    p01(dir, chain, &*policy, seed)?;
    stems.push("p01_sft_vs_reinforce".to_string());
    p03(dir, chain, &*policy, seed)?;
    stems.push("p03_readings".into());
    // P06's counterexample needs a task whose every valid plan is over
    // the length budget H − 2; the first setting with one.
    let budgeted = settings
        .iter()
        .find(|s| {
            let k = s.env.horizon.saturating_sub(2);
            shortest_plans(&s.env).iter().any(|y| y.plan_length() > k)
        })
        .unwrap_or(chain);
    p06(dir, budgeted, &*tabular(budgeted))?;
    stems.push("p06_em_steps".into());
    let rules_on = settings.get(1).unwrap_or(chain);
    rules(dir, rules_on, &*tabular(rules_on), seed)?;
    stems.push("rules_vs_gradient".into());
    Ok(stems)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn p01(dir: &Path, s: &Setting, policy: &dyn Policy, seed: u64) -> Result<()> {
    let env = &s.env;
    let table = PolicyTable::new(policy, env);
    let mut rng = crate::rng::stream(seed, 201);
    let mut csv = String::from(
        "samples_per_task,batch,n,n_valid,n_over_n_valid,norm_ratio,cosine,relative_residual\n",
    );
    let mut series = Vec::new();
    let mut index = 0usize;
    let mut worst = 0.0f64;
    for &per_task in &P01_SIZES {
        let mut points = Vec::new();
        for b in 0..P01_BATCHES {
            let batch = estimator::sample_batch(env, &table, per_task, &mut rng);
            let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
            index += 1;
            if kept.is_empty() {
                continue;
            }
            let rl = estimator::reinforce(env, policy, &batch);
            let sft = estimator::sft_gradient(env, policy, &kept);
            let factor = batch.len() as f64 / kept.len() as f64;
            let ratio = norm(&sft) / norm(&rl);
            // The evidence: ‖REINFORCE − SFT·N⁺/N‖ / ‖REINFORCE‖, in units
            // of f64's machine epsilon.
            let residual: Vec<f64> = rl.iter().zip(&sft).map(|(r, g)| r - g / factor).collect();
            let rel = norm(&residual) / norm(&rl);
            worst = worst.max(rel);
            let _ = writeln!(
                csv,
                "{per_task},{b},{},{},{factor},{ratio},{},{rel:e}",
                batch.len(),
                kept.len(),
                cosine(&sft, &rl)
            );
            points.push((index as f64, rel / f64::EPSILON));
        }
        series.push(Series {
            name: format!("batches of {per_task} samples per task"),
            points,
            band: None,
            style: LineKind::Points,
        });
    }
    crate::output::write_atomic(&dir.join("p01_sft_vs_reinforce.csv"), csv.as_bytes())?;
    let batches = P01_SIZES.len() * P01_BATCHES;
    Figure {
        title: format!(
            "P01: REINFORCE − SFT × N⁺/N on each of {batches} sampled batches ({}, tabular): round-off only, largest {worst:.1e} (tolerance {EXACT_REL:.0e}); batches with no valid sample have no SFT and are left out",
            s.name
        ),
        x_label: "batch (in order: 2, 4, 8, 16 samples per task)".into(),
        y_label: "‖REINFORCE − SFT·N⁺/N‖ / ‖REINFORCE‖, in units of f64 ε = 2.2e-16".into(),
        series,
        log_x: false,
        log_y: false,
        y_bounds: Some((0.0, f64::INFINITY)),
        band_note: None,
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "p01_sft_vs_reinforce")
}

fn p03(dir: &Path, s: &Setting, policy: &dyn Policy, seed: u64) -> Result<()> {
    let env = &s.env;
    let pi = PolicyTable::new(policy, env);
    let a = PerTask::of(env, &pi, policy);
    let z_pi = exact::success_probabilities(env, &pi);
    let j_pi = exact::objective(env, &pi);
    // One drift direction, scaled: β_σ = θ + σ ε.
    let eps = perturbed(policy, 1.0, &mut crate::rng::stream(seed, 203));
    let lam = P03_LAMBDA;
    let mut csv = String::from("sigma,kl_pi_beta,j_pi,j_beta,cos_a,cos_b,cos_c\n");
    let mut rows: [Vec<(f64, f64)>; 3] = Default::default();
    let mut labels = Vec::new();
    for &sigma in &P03_SIGMAS {
        let mut beta = policy.clone_box();
        for ((b, t), e) in beta.params_mut().iter_mut().zip(policy.params()).zip(&eps) {
            *b = t + sigma * (e - t);
        }
        let bt = PolicyTable::new(&*beta, env);
        let b = PerTask::of(env, &bt, policy);
        let z_b = exact::success_probabilities(env, &bt);
        let j_b = exact::objective(env, &bt);
        let n = env.tasks.len();
        // Coefficients per task of the A and B rows (P03's readings).
        let form = |ca: &dyn Fn(usize) -> f64, cb: &dyn Fn(usize) -> f64| {
            add(
                &a.combine(&(0..n).map(ca).collect::<Vec<_>>()),
                &b.combine(&(0..n).map(cb).collect::<Vec<_>>()),
            )
        };
        let paper = form(&|_| 1.0 - lam, &|_| lam);
        let joint = form(&|_| (1.0 - lam) / j_pi, &|_| lam / j_b);
        let per = form(&|x| (1.0 - lam) / z_pi[x], &|x| lam / z_b[x]);
        let kl: f64 = exact::trajectory_kl(env, &pi, &bt)
            .iter()
            .zip(&env.mu)
            .map(|(k, m)| k * m)
            .sum();
        // Reading (a): the keep-all pool's gradient is the paper's form
        // itself (P03, derivation step 2).
        let cos = [1.0, cosine(&paper, &joint), cosine(&paper, &per)];
        let _ = writeln!(
            csv,
            "{sigma},{kl},{j_pi},{j_b},{},{},{}",
            cos[0], cos[1], cos[2]
        );
        for (r, c) in rows.iter_mut().zip(cos) {
            r.push((kl, c));
        }
        // Each drift labelled with its σ, on the per-task reading's curve
        // (the one that moves most).
        labels.push((kl, cos[2], format!("σ={sigma}")));
    }
    crate::output::write_atomic(&dir.join("p03_readings.csv"), csv.as_bytes())?;
    let names = [
        "(a) keep-all pool: exact",
        "(b) joint valid-conditional laws (the paper's wording)",
        "(c) per-task laws (per-task curation)",
    ];
    let series = rows
        .into_iter()
        .zip(names)
        .map(|(points, name)| Series {
            name: name.into(),
            points,
            band: None,
            style: LineKind::Solid,
        })
        .collect();
    Figure {
        title: format!(
            "P03: the paper's Proposition 2 against the true SFT gradient, by reading of λ = {lam} ({}, tabular)",
            s.name
        ),
        x_label: "KL(π_θ ‖ β) of trace laws, mean over tasks (nats): how far the behaviour β = θ + σ(ε − θ) has drifted".into(),
        y_label: "cos(paper's form, true SFT gradient)".into(),
        series,
        log_x: false,
        log_y: false,
        y_bounds: Some((-1.0, 1.0)),
        band_note: None,
        integer_x: false,
        y_exact: None,
        annotations: labels,
        y_ticks: None,
    }
    .write(dir, "p03_readings")
}

fn p06(dir: &Path, s: &Setting, policy: &dyn Policy) -> Result<()> {
    let env = &s.env;
    let k = env.horizon.saturating_sub(2);
    let valid = |x: usize, st: usize, _t: usize| if env.tasks[x].is_goal[st] { 1.0 } else { 0.0 };
    let budget = move |_x: usize, _s: usize, t: usize| if t <= k { 1.0 } else { 0.0 };
    let filters: [(&str, exact::EndReward); 2] = [
        ("validity filter", &valid),
        ("proxy: any answer of ≤ H−2 steps", &budget),
    ];
    let mut csv = String::from("filter,em_step,task,p_valid\n");
    let mut series = Vec::new();
    // What the proxy fit raises: the proxy's own score, the mean over
    // tasks of P(an answer of ≤ H−2 steps), while p(x) falls.
    let mut proxy_score = Vec::new();
    for (name, filter) in filters {
        let mut table = PolicyTable::new(policy, env);
        let mut per_task: Vec<Vec<(f64, f64)>> = vec![Vec::new(); env.tasks.len()];
        for step in 0..=P06_STEPS {
            if step > 0 {
                table = exact::fit_filtered(env, &table, filter);
            }
            if name != "validity filter" {
                let r = exact::expected_reward(env, &table, &budget);
                let score = r.iter().sum::<f64>() / r.len().max(1) as f64;
                let _ = writeln!(
                    csv,
                    "proxy score under the proxy fit,{step},mean over tasks,{score}"
                );
                proxy_score.push((step as f64, score));
            }
            for (x, p) in exact::success_probabilities(env, &table)
                .into_iter()
                .enumerate()
            {
                let _ = writeln!(
                    csv,
                    "{},{step},{},{p}",
                    csv_field(name),
                    csv_field(&env.tasks[x].name)
                );
                per_task[x].push((step as f64, p));
            }
        }
        for (x, points) in per_task.into_iter().enumerate() {
            series.push(Series {
                name: format!("{}, {name}", env.tasks[x].name),
                points,
                band: None,
                style: if name == "validity filter" {
                    LineKind::Solid
                } else {
                    LineKind::Reference
                },
            });
        }
    }
    series.push(Series {
        name: "the proxy's own score under its fit: P(answer of ≤ H−2 steps), mean over tasks"
            .into(),
        points: proxy_score,
        band: None,
        style: LineKind::Points,
    });
    crate::output::write_atomic(&dir.join("p06_em_steps.csv"), csv.as_bytes())?;
    Figure {
        title: format!(
            "P06: fitting the valid traces never lowers a task's success; fitting a proxy's raises the proxy's score while a task's success falls ({}, tabular)",
            s.name
        ),
        x_label: "maximum-likelihood fits to the filtered traces (EM steps)".into(),
        y_label: "p(x) = P(valid plan), exact (points: the proxy's score)".into(),
        series,
        log_x: false,
        log_y: false,
        y_bounds: Some((0.0, 1.0)),
        band_note: None,
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "p06_em_steps")
}

fn rules(dir: &Path, s: &Setting, policy: &dyn Policy, seed: u64) -> Result<()> {
    let env = &s.env;
    let grad = exact::objective_gradient(env, policy);
    let mut previous = policy.clone_box();
    previous.params_mut().copy_from_slice(&perturbed(
        policy,
        PREVIOUS_SIGMA,
        &mut crate::rng::stream(seed, 204),
    ));
    let pooled = [
        PolicyTable::new(&*previous, env),
        PolicyTable::new(policy, env),
    ];
    let mut csv = String::from("rule,samples_per_task,cosine\n");
    // (rule, label, generations pooled): the single-generation rules on
    // this generation's samples, the paper's on this and the previous one.
    let rules = [
        (Rule::AllValid, "all valid", 1),
        (Rule::OnePerTask, "one valid per task", 1),
        (Rule::ShortestPerTask, "shortest valid per task", 1),
        (
            Rule::ShortestPerTask,
            "the paper's rule: shortest per task over this and the previous generation",
            2,
        ),
    ];
    let mut series = Vec::new();
    for (rule, name, gens) in rules {
        let mut points = Vec::new();
        for &n in &RULE_SIZES {
            let g = exact::curated_sft_expectation(
                env,
                policy,
                &pooled[2 - gens..],
                rule,
                Pool::Accumulate,
                &vec![n; gens],
            )?;
            let c = cosine(&g, &grad);
            let _ = writeln!(csv, "{},{n},{c}", csv_field(name));
            points.push((n as f64, c));
        }
        series.push(Series {
            name: name.into(),
            points,
            band: None,
            style: LineKind::Solid,
        });
    }
    crate::output::write_atomic(&dir.join("rules_vs_gradient.csv"), csv.as_bytes())?;
    Figure {
        title: format!(
            "Which curation rule follows the RL gradient? Expected SFT update of each rule against ∇J ({}, tabular)",
            s.name
        ),
        x_label: "samples per task N (log scale)".into(),
        y_label: "cos(expected SFT update, ∇J), exact".into(),
        series,
        log_x: true,
        log_y: false,
        y_bounds: Some((-1.0, 1.0)),
        band_note: None,
        integer_x: false,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "rules_vs_gradient")
}
