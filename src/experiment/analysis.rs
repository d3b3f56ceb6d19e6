//! The two analysis experiments: Monte-Carlo gradient error against sample
//! count, and the drift of the SFT direction from ∇J as training moves the
//! policy away from the behaviour that wrote the data.

use std::fmt::Write as _;
use std::path::Path;

use rayon::prelude::*;

use super::report::{Collected, UNDEFINED_NOTE, fmt_value};
use super::spec::{DriftSpec, GradientErrorSpec};
use super::{Resolved, RunOutcome};
use crate::Result;
use crate::curation::{Pool, select};
use crate::deploy::{self, Role, Sample, Workload, cosine};
use crate::estimator::{self, Trace};
use crate::exact::{self, PolicyTable};
use crate::optim::{Optimizer, OptimizerKind};
use crate::output::csv_field;
use crate::plot::{Figure, LineKind, Series};
use crate::policy::Policy;
use crate::stats::mean_ci95;

/// The legend label of an estimator.
fn estimator_label(name: &str) -> &'static str {
    match name {
        "reinforce" => "REINFORCE",
        "rloo" => "RLOO (leave-one-out baseline)",
        "grpo" => "GRPO (group-normalised, biased)",
        _ => "SFT on valid × N⁺/N (= REINFORCE, P01)",
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `n` samples of every deployed task from `table`.
fn deployed_batch(
    work: &Workload,
    table: &PolicyTable,
    n: usize,
    rng: &mut crate::rng::Rng,
) -> Vec<Trace> {
    let mut out = Vec::new();
    for x in work.tasks_with(Role::Deployed) {
        for _ in 0..n {
            out.push(estimator::sample_trace(&work.env, table, x, rng));
        }
    }
    out
}

/// One estimate of ∇J by `name` from `batch` (see
/// [`super::spec::GRADIENT_ESTIMATORS`]).
fn estimate(work: &Workload, policy: &dyn Policy, batch: &[Trace], name: &str) -> Vec<f64> {
    let env = &work.env;
    match name {
        "reinforce" => estimator::reinforce(env, policy, batch),
        "rloo" => estimator::rloo(env, policy, batch),
        "grpo" => estimator::grpo(env, policy, batch),
        _ => {
            // SFT on the valid samples, times N⁺/N (P01: equals REINFORCE).
            let kept: Vec<&Trace> = batch.iter().filter(|t| t.valid).collect();
            let scale = kept.len() as f64 / batch.len() as f64;
            estimator::sft_gradient(env, policy, &kept)
                .into_iter()
                .map(|g| g * scale)
                .collect()
        }
    }
}

/// Root-mean-square relative error ‖ĝ − ∇J‖/‖∇J‖ over repetitions, per
/// seed, estimator and sample count; for an unbiased estimator it falls as
/// 1/√n exactly (variance ∝ 1/n).
pub(super) fn gradient_error(
    dir: &Path,
    resolved: &Resolved,
    work: &Workload,
    bases: &[Box<dyn Policy>],
    g: &GradientErrorSpec,
) -> Result<RunOutcome> {
    let spec = &resolved.spec;
    let per_seed: Vec<Vec<(usize, usize, usize, f64)>> = bases
        .par_iter()
        .zip(&spec.seeds)
        .map(|(base, &seed)| {
            let table = PolicyTable::new(base.as_ref(), &work.env);
            let truth = exact::objective_gradient(&work.env, base.as_ref());
            let scale = norm(&truth);
            let mut rows = Vec::new();
            for (ni, &n) in g.samples_per_task.iter().enumerate() {
                for r in 0..g.repetitions {
                    let mut rng = crate::rng::stream(seed, ((ni as u64) << 32) | r as u64);
                    let batch = deployed_batch(work, &table, n, &mut rng);
                    for (e, name) in g.estimators.iter().enumerate() {
                        let est = estimate(work, base.as_ref(), &batch, name);
                        let diff: Vec<f64> = est.iter().zip(&truth).map(|(a, b)| a - b).collect();
                        rows.push((e, n, r, norm(&diff) / scale));
                    }
                }
            }
            rows
        })
        .collect();
    let mut results = String::from("estimator,seed,samples_per_task,repetition,relative_error\n");
    let mut collected = Collected::default();
    for (s, rows) in per_seed.iter().enumerate() {
        for &(e, n, r, err) in rows {
            let _ = writeln!(
                results,
                "{},{},{n},{r},{err}",
                g.estimators[e], spec.seeds[s]
            );
        }
        for (e, _) in g.estimators.iter().enumerate() {
            for &n in &g.samples_per_task {
                let sq: Vec<f64> = rows
                    .iter()
                    .filter(|row| row.0 == e && row.1 == n)
                    .map(|row| row.3 * row.3)
                    .collect();
                let rms = (sq.iter().sum::<f64>() / sq.len() as f64).sqrt();
                collected
                    .values
                    .entry((e, n, "all".into(), "rms_relative_error".into()))
                    .or_default()
                    .push(rms);
            }
        }
    }
    crate::output::write_atomic(&dir.join("results.csv"), results.as_bytes())?;
    let mut summary_csv =
        String::from("estimator,samples_per_task,metric,seeds,mean,ci_low,ci_high\n");
    for ((e, n, _, m), v) in &collected.values {
        let i = mean_ci95(v);
        let _ = writeln!(
            summary_csv,
            "{},{n},{m},{},{},{},{}",
            g.estimators[*e], i.n, i.mean, i.low, i.high
        );
    }
    let mut series: Vec<Series> = g
        .estimators
        .iter()
        .enumerate()
        .map(|(e, name)| collected.series(e, estimator_label(name), "all", "rms_relative_error"))
        .collect();
    // 1/√n through the first estimator's first point.
    let n0 = g.samples_per_task[0] as f64;
    let y0 = series[0].points[0].1;
    let reference: Vec<(f64, f64)> = g
        .samples_per_task
        .iter()
        .map(|&n| (n as f64, y0 * (n0 / n as f64).sqrt()))
        .collect();
    for &(n, y) in &reference {
        let _ = writeln!(
            summary_csv,
            "1/sqrt(n) reference,{n},rms_relative_error,0,{y},NaN,NaN"
        );
    }
    crate::output::write_atomic(&dir.join("summary.csv"), summary_csv.as_bytes())?;
    series.push(Series {
        name: "∝ 1/√n".into(),
        points: reference,
        band: None,
        style: LineKind::Reference,
    });
    Figure {
        title: spec.title.clone(),
        x_label: "samples per task n (log scale)".into(),
        y_label: "RMS relative error ‖ĝ − ∇J‖ / ‖∇J‖ (log scale)".into(),
        series,
        log_x: true,
        log_y: true,
        y_bounds: None,
        band_note: super::report::band_note(spec.seeds.len()),
        integer_x: false,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "gradient_error")?;
    let mut summary = format!(
        "# {}\n\n**Question.** {}\n\nRMS relative error of each estimator of ∇J at generation 0 (mean [95% CI] over {} seed(s), {} repetitions each):\n\n| estimator |",
        spec.title,
        spec.question,
        spec.seeds.len(),
        g.repetitions
    );
    for n in &g.samples_per_task {
        let _ = write!(summary, " n = {n} |");
    }
    summary += "\n|---|";
    summary += &"---|".repeat(g.samples_per_task.len());
    summary += "\n";
    for (e, name) in g.estimators.iter().enumerate() {
        let _ = write!(summary, "| {name} |");
        for &n in &g.samples_per_task {
            let i = collected.interval(e, n, "all", "rms_relative_error");
            let _ = write!(summary, " {} |", fmt_value(i.mean, 3));
        }
        summary += "\n";
    }
    if summary.contains('–') {
        summary += "\n";
        summary += UNDEFINED_NOTE;
    }
    summary += "\nFigure: `gradient_error.png` (log-log, dashed: 1/√n). Numbers: `summary.csv`, per repetition: `results.csv`.\n";
    Ok(RunOutcome {
        dir: dir.to_path_buf(),
        summary,
        figures: vec!["gradient_error".into()],
    })
}

/// For each rule: draw one generation of samples from the base β, curate,
/// then SFT epoch by epoch from β; before every epoch record KL(π_θ ‖ β),
/// the cosine of the exact expected curated-SFT direction E_β[w R ∇log π_θ]
/// with ∇J(θ), the same for the sampled SFT gradient, and J(θ).
pub(super) fn drift(
    dir: &Path,
    resolved: &Resolved,
    work: &Workload,
    bases: &[Box<dyn Policy>],
    d: &DriftSpec,
) -> Result<RunOutcome> {
    let spec = &resolved.spec;
    let env = &work.env;
    const METRICS: [&str; 4] = [
        "kl_from_behaviour",
        "cosine_expected",
        "cosine_sampled",
        "objective",
    ];
    type Row = (usize, usize, [f64; 4]);
    let per_seed: Vec<Result<Vec<Row>>> = bases
        .par_iter()
        .zip(&spec.seeds)
        .map(|(base, &seed)| {
            let beh = PolicyTable::new(base.as_ref(), env);
            let mut rng = crate::rng::stream(seed, 0xD81F7);
            let batch = deployed_batch(work, &beh, d.samples_per_task, &mut rng);
            let samples: Vec<Sample> = batch
                .into_iter()
                .enumerate()
                .map(|(i, trace)| Sample {
                    accepted: trace.valid,
                    trace,
                    generation: 0,
                    behaviour_logp: f64::NAN,
                    tie: rand::RngExt::random(&mut rng),
                    index: i,
                })
                .collect();
            let generations = [samples];
            let mut rows = Vec::new();
            for (ri, &rule) in d.rules.iter().enumerate() {
                let kept: Vec<&Trace> = select(&generations, rule, Pool::Accumulate, seed)
                    .into_iter()
                    .map(|s| &s.trace)
                    .collect();
                let mut policy = base.clone_box();
                let mut opt = Optimizer::new(OptimizerKind::Adam, d.learning_rate, None);
                let mut train_rng = crate::rng::stream(seed, 0xD820 + ri as u64);
                for epoch in 0..=d.epochs {
                    let table = PolicyTable::new(policy.as_ref(), env);
                    let kl = exact::trajectory_kl(env, &table, &beh);
                    let kl = work
                        .tasks_with(Role::Deployed)
                        .iter()
                        .map(|&x| kl[x])
                        .sum::<f64>()
                        / work.tasks_with(Role::Deployed).len() as f64;
                    let truth = exact::objective_gradient_at(env, policy.as_ref(), &table);
                    let expected = exact::curated_sft_expectation(
                        env,
                        policy.as_ref(),
                        std::slice::from_ref(&beh),
                        rule,
                        Pool::Accumulate,
                        &[d.samples_per_task],
                    )?;
                    let sampled = estimator::sft_gradient(env, policy.as_ref(), &kept);
                    rows.push((
                        ri,
                        epoch,
                        [
                            kl,
                            cosine(&expected, &truth),
                            cosine(&sampled, &truth),
                            exact::objective(env, &table),
                        ],
                    ));
                    if epoch < d.epochs {
                        deploy::fit_sft(
                            env,
                            policy.as_mut(),
                            &kept,
                            &mut opt,
                            1,
                            d.batch_size,
                            &mut train_rng,
                        );
                    }
                }
            }
            Ok(rows)
        })
        .collect();
    let per_seed = per_seed.into_iter().collect::<Result<Vec<_>>>()?;
    let rule_name = |r: usize| d.rules[r].label().to_string();
    let mut results = String::from("rule,seed,epoch,metric,value\n");
    let mut collected = Collected::default();
    for (s, rows) in per_seed.iter().enumerate() {
        for &(r, epoch, vals) in rows {
            for (m, v) in METRICS.iter().zip(vals) {
                let _ = writeln!(
                    results,
                    "{},{},{epoch},{m},{v}",
                    rule_name(r),
                    spec.seeds[s]
                );
                collected
                    .values
                    .entry((r, epoch, "all".into(), m.to_string()))
                    .or_default()
                    .push(v);
            }
        }
    }
    crate::output::write_atomic(&dir.join("results.csv"), results.as_bytes())?;
    let mut summary_csv = String::from("rule,epoch,metric,seeds,mean,ci_low,ci_high\n");
    for ((r, e, _, m), v) in &collected.values {
        let i = mean_ci95(v);
        let _ = writeln!(
            summary_csv,
            "{},{e},{m},{},{},{},{}",
            csv_field(&rule_name(*r)),
            i.n,
            i.mean,
            i.low,
            i.high
        );
    }
    crate::output::write_atomic(&dir.join("summary.csv"), summary_csv.as_bytes())?;
    // Cosine against mean KL (x) per epoch, per rule.
    let mut series = Vec::new();
    for (r, _) in d.rules.iter().enumerate() {
        for (metric, label) in [
            ("cosine_expected", "expected"),
            ("cosine_sampled", "sampled"),
        ] {
            let mut s = collected.series(
                r,
                &format!("{}: {label} SFT direction", rule_name(r)),
                "all",
                metric,
            );
            let kl = collected.series(r, "", "all", "kl_from_behaviour");
            for (p, k) in s.points.iter_mut().zip(&kl.points) {
                p.0 = k.1;
            }
            // x is itself a mean over seeds, so a y-band alone would
            // mislead; the intervals of both are in summary.csv.
            s.band = None;
            series.push(s);
        }
    }
    Figure {
        title: spec.title.clone(),
        x_label: "KL(π_θ ‖ β) of trace laws, mean over tasks (nats)".into(),
        y_label: "cos(SFT direction, ∇J(θ))".into(),
        series,
        log_x: false,
        log_y: false,
        y_bounds: Some((-1.0, 1.0)),
        band_note: super::report::band_note(spec.seeds.len()),
        integer_x: false,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "cosine_vs_kl")?;
    let objective: Vec<Series> = d
        .rules
        .iter()
        .enumerate()
        .map(|(r, _)| collected.series(r, &rule_name(r), "all", "objective"))
        .collect();
    Figure {
        title: format!("{} — J during SFT", spec.title),
        x_label: "SFT epoch on generation 0's curated samples".into(),
        y_label: "J(θ) = mean P(valid plan), exact".into(),
        series: objective,
        log_x: false,
        log_y: false,
        y_bounds: None,
        band_note: super::report::band_note(spec.seeds.len()),
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(dir, "objective")?;
    let mut summary = format!(
        "# {}\n\n**Question.** {}\n\n| rule | epoch | KL(π‖β) | cos expected | cos sampled | J |\n|---|---|---|---|---|---|\n",
        spec.title, spec.question
    );
    for (r, _) in d.rules.iter().enumerate() {
        for e in [0, d.epochs / 2, d.epochs] {
            let v: Vec<f64> = METRICS
                .iter()
                .map(|m| collected.interval(r, e, "all", m).mean)
                .collect();
            let cells: Vec<String> = v.iter().map(|&x| fmt_value(x, 4)).collect();
            let _ = writeln!(
                summary,
                "| {} | {e} | {} |",
                rule_name(r),
                cells.join(" | ")
            );
        }
    }
    if summary.contains('–') {
        summary += "\n";
        summary += UNDEFINED_NOTE;
    }
    summary += "\nFigures: `cosine_vs_kl.png`, `objective.png`. Numbers: `summary.csv`, per seed: `results.csv`.\n";
    Ok(RunOutcome {
        dir: dir.to_path_buf(),
        summary,
        figures: vec!["cosine_vs_kl".into(), "objective".into()],
    })
}
