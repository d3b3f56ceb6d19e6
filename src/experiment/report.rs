//! Outputs of a deployment experiment: CSVs, figures and summary.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Resolved, RunOutcome};
use crate::deploy::metrics::{BUCKET_ALL, summarise};
use crate::deploy::{ArmState, Workload};
use crate::output::csv_field;
use crate::plot::{Figure, LineKind, Series};
use crate::stats::{Interval, mean_ci95};
use crate::{Error, Result};

/// Values across seeds, keyed by (series index, x, bucket, metric); the
/// key order is the output order.
#[derive(Default)]
pub struct Collected {
    pub values: BTreeMap<(usize, usize, String, String), Vec<f64>>,
}

impl Collected {
    pub fn interval(&self, series: usize, x: usize, bucket: &str, metric: &str) -> Interval {
        self.values
            .get(&(series, x, bucket.to_string(), metric.to_string()))
            .map_or(mean_ci95(&[]), |v| summarise(metric, v))
    }

    /// One line of a figure: mean with CI band at every x present.
    pub fn series(&self, series: usize, name: &str, bucket: &str, metric: &str) -> Series {
        let mut points = Vec::new();
        let mut band = Vec::new();
        for ((s, x, b, m), v) in &self.values {
            if *s == series && b == bucket && m == metric {
                let i = summarise(metric, v);
                points.push((*x as f64, i.mean));
                band.push((i.low, i.high));
            }
        }
        Series {
            name: name.to_string(),
            points,
            band: Some(band),
            style: LineKind::Solid,
        }
    }
}

/// A metric plotted per arm over generations.
struct PerArmFigure {
    stem: &'static str,
    metric: &'static str,
    title: &'static str,
    y_label: &'static str,
    /// Where the measure lives: (0, 1) for probabilities, (0, ∞) for
    /// counts and KL, (1, ∞) for a length over the optimal one. The axis
    /// and the clipped bands stay inside.
    bounds: (f64, f64),
}

const UNIT: (f64, f64) = (0.0, 1.0);
const NONNEGATIVE: (f64, f64) = (0.0, f64::INFINITY);

const PER_ARM_FIGURES: [PerArmFigure; 9] = [
    PerArmFigure {
        stem: "success",
        metric: "success_prob",
        title: "Solved@1: tasks solved by one plan",
        y_label: "solved@1 = P(valid plan), exact, mean over deployed tasks",
        bounds: UNIT,
    },
    PerArmFigure {
        stem: "solved_all_of_3",
        metric: "solved_all_of_3_exact",
        title: "All-of-3: tasks solved in each of 3 runs",
        y_label: "all-of-3 = mean of p(x)^3, exact, over deployed tasks",
        bounds: UNIT,
    },
    PerArmFigure {
        stem: "solved",
        metric: "solved_sampled",
        title: "Any-of-N: tasks with a valid plan among the N samples",
        y_label: "fraction of deployed tasks with a valid sample",
        bounds: UNIT,
    },
    PerArmFigure {
        stem: "longest",
        metric: "longest_solved_optimal",
        title: "Hardest task solved",
        y_label: "steps: optimal length of the hardest task with a valid sample",
        bounds: NONNEGATIVE,
    },
    PerArmFigure {
        stem: "length_ratio",
        metric: "length_over_optimal",
        title: "Plan quality",
        y_label: "valid plan length / optimal length, mean over valid samples",
        bounds: (1.0, f64::INFINITY),
    },
    PerArmFigure {
        stem: "diversity",
        metric: "distinct_valid_plans",
        title: "Diversity of valid plans",
        y_label: "distinct valid plans sampled, over all tasks (count)",
        bounds: NONNEGATIVE,
    },
    PerArmFigure {
        stem: "validity",
        metric: "valid_rate",
        title: "Valid samples",
        y_label: "fraction of samples that are valid",
        bounds: UNIT,
    },
    PerArmFigure {
        stem: "cosine",
        metric: "update_cosine",
        title: "Alignment of the update with the true gradient",
        y_label: "cos(update direction at π_k, ∇J(π_k))",
        bounds: (-1.0, 1.0),
    },
    PerArmFigure {
        stem: "kl",
        metric: "kl_from_previous",
        title: "Change between generations",
        y_label: "KL(π_k ‖ π_k−1) of trace laws (nats)",
        bounds: NONNEGATIVE,
    },
];

pub(super) fn write_deployment(
    dir: &Path,
    resolved: &Resolved,
    work: &Workload,
    states: &[Vec<ArmState>],
) -> Result<RunOutcome> {
    let spec = &resolved.spec;
    let arms = &resolved.arms;
    let mut results = String::from("arm,seed,generation,bucket,metric,value\n");
    let mut collected = Collected::default();
    let reach_rule = spec.reach.unwrap_or_default();
    for (s, per_arm) in states.iter().enumerate() {
        for (a, state) in per_arm.iter().enumerate() {
            // The measured rows, then the reach rows derived from them.
            let derived = super::reach::derived_rows(state, &work.buckets, &reach_rule);
            for r in state.rows.iter().chain(&derived) {
                let _ = writeln!(
                    results,
                    "{},{},{},{},{},{}",
                    csv_field(&arms[a].name),
                    spec.seeds[s],
                    r.generation,
                    csv_field(&r.bucket),
                    r.metric,
                    r.value
                );
                collected
                    .values
                    .entry((a, r.generation, r.bucket.clone(), r.metric.clone()))
                    .or_default()
                    .push(r.value);
            }
        }
    }
    crate::output::write_atomic(&dir.join("results.csv"), results.as_bytes())?;
    let mut summary_csv = String::from("arm,generation,bucket,metric,seeds,mean,ci_low,ci_high\n");
    for ((a, g, b, m), v) in &collected.values {
        let i = summarise(m, v);
        let _ = writeln!(
            summary_csv,
            "{},{g},{},{m},{},{},{},{}",
            csv_field(&arms[*a].name),
            csv_field(b),
            i.n,
            i.mean,
            i.low,
            i.high
        );
    }
    crate::output::write_atomic(&dir.join("summary.csv"), summary_csv.as_bytes())?;

    let mut figures = Vec::new();
    for f in &PER_ARM_FIGURES {
        // No exact ∇J for a policy that reads its own text: the cosine is
        // undefined, and an empty figure would say nothing (the summary
        // says why it is absent).
        if f.metric == "update_cosine" && !spec.policy.kind.is_markov() {
            continue;
        }
        let mut series: Vec<Series> = arms
            .iter()
            .enumerate()
            .map(|(a, arm)| collected.series(a, &arm.name, BUCKET_ALL, f.metric))
            .collect();
        if f.metric == "longest_solved_optimal" {
            // The claim: later generations solve tasks whose optimal plan is
            // longer than any valid plan generation 0 wrote.
            let g0 = collected.interval(0, 0, BUCKET_ALL, "longest_valid_plan");
            let last = arms.iter().map(|a| a.generations).max().unwrap_or(0) as f64;
            series.push(Series {
                name: "gen 0's longest valid plan (its sampled length, not an optimal one)".into(),
                points: vec![(0.0, g0.mean), (last, g0.mean)],
                band: None,
                style: LineKind::Reference,
            });
        }
        let fig = Figure {
            title: format!("{} ({})", with_n(f.title, arms), spec.title),
            x_label: "generation".into(),
            y_label: measured_how(f.y_label, spec.policy.kind),
            series,
            log_x: false,
            log_y: false,
            y_bounds: Some(f.bounds),
            band_note: band_note(spec.seeds.len()),
            integer_x: true,
            y_exact: None,
            annotations: Vec::new(),
            y_ticks: None,
        };
        fig.write(dir, f.stem)?;
        figures.push(f.stem.to_string());
    }
    // Success by size bucket for each arm (one figure per arm, named by
    // the arm, all on one y range so they can be set side by side).
    let mut buckets: Vec<String> = work.buckets.clone();
    buckets.push(crate::deploy::metrics::BUCKET_HELD_OUT.into());
    let per_arm: Vec<Vec<Series>> = (0..arms.len())
        .map(|a| {
            buckets
                .iter()
                .map(|b| collected.series(a, b, b, "success_prob"))
                .filter(|s| !s.points.is_empty())
                .collect()
        })
        .collect();
    let top = per_arm
        .iter()
        .flatten()
        .flat_map(|s| {
            let band = s.band.iter().flatten().map(|&(_, h)| h);
            s.points.iter().map(|p| p.1).chain(band)
        })
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let shared = (0.0, (top * 1.05).clamp(0.05, 1.0));
    let slugs = arm_slugs(&arms.iter().map(|a| a.name.as_str()).collect::<Vec<_>>());
    for ((arm, series), slug) in arms.iter().zip(per_arm).zip(&slugs) {
        let stem = format!("success_by_bucket_{slug}");
        Figure {
            title: format!("Success by size: {} ({})", arm.name, spec.title),
            x_label: "generation".into(),
            y_label: measured_how(
                "P(valid plan), exact, mean over the bucket's tasks",
                spec.policy.kind,
            ),
            series,
            log_x: false,
            log_y: false,
            y_bounds: Some((0.0, 1.0)),
            band_note: band_note(spec.seeds.len()),
            integer_x: true,
            y_exact: Some(shared),
            annotations: Vec::new(),
            y_ticks: None,
        }
        .write(dir, &stem)?;
        figures.push(stem);
    }

    figures.extend(super::reach::figures(
        dir, resolved, work, &collected, &slugs,
    )?);
    let mut summary = deployment_summary(resolved, work, &collected, states, &figures);
    summary += &headline_checks(resolved, states);
    summary += &super::reach::summary(resolved, work, states, &reach_rule);
    summary += &paired_gains(resolved, work, states);
    Ok(RunOutcome {
        dir: dir.to_path_buf(),
        summary,
        figures,
    })
}

/// A title naming "any-of-N" with its N: the arms' samples per task
/// ("N = 16", or "N = 8 or 16" where arms differ).
fn with_n(title: &str, arms: &[crate::deploy::ArmConfig]) -> String {
    if !title.contains("Any-of-N") {
        return title.to_string();
    }
    let mut ns: Vec<usize> = arms.iter().map(|a| a.samples_per_task).collect();
    ns.sort_unstable();
    ns.dedup();
    let list = ns
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" or ");
    title.replace("Any-of-N", &format!("Any-of-N (N = {list})"))
}

/// Arm names as parts of file names: lower-case letters and digits, every
/// other run of characters one `-` ("curated SFT (paper)" →
/// "curated-sft-paper"); a name that would repeat an earlier arm's gets
/// the arm's index after it.
fn arm_slugs(names: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (a, name) in names.iter().enumerate() {
        let mut slug = String::new();
        for c in name.chars() {
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        let mut slug = slug.trim_end_matches('-').to_string();
        if slug.is_empty() || out.contains(&slug) {
            slug = format!("{slug}{}arm{a}", if slug.is_empty() { "" } else { "-" });
        }
        out.push(slug);
    }
    out
}

/// The legend note for bands of mean ± 95% t-interval over seeds (none
/// with one seed, where no interval is drawn).
pub(super) fn band_note(seeds: usize) -> Option<String> {
    (seeds >= 2).then(|| format!("shaded: 95% CI over {seeds} seeds"))
}

/// A label that says "exact" says "Monte-Carlo estimate" instead for a
/// policy measured by sampling (see `deploy::metrics`).
fn measured_how(label: &str, kind: super::spec::PolicyKind) -> String {
    if kind.is_markov() {
        label.to_string()
    } else {
        label.replace(", exact,", ", Monte-Carlo estimate,")
    }
}

fn fmt_interval(i: Interval, digits: usize) -> String {
    if i.mean.is_finite() && i.low.is_finite() {
        format!("{:.d$} [{:.d$}, {:.d$}]", i.mean, i.low, i.high, d = digits)
    } else {
        fmt_value(i.mean, digits)
    }
}

/// A number for a summary table: "–" where it is undefined for every seed
/// (NaN: e.g. a cosine with no valid sample to form a direction).
pub fn fmt_value(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "–".into()
    }
}

/// The legend of "–" in a summary table.
pub(super) const UNDEFINED_NOTE: &str = "\"–\": undefined in every seed (e.g. a cosine or a ratio with nothing to measure, such as no valid sample).\n";

/// The solved-task measures of the summary, (metric, label), for N
/// samples per task.
fn solved_measures(n: usize) -> [(&'static str, String); 4] {
    [
        ("success_prob", "solved@1".into()),
        ("solved_all_of_3_exact", "all-of-3".into()),
        ("solved_any_of_3_exact", "any-of-3".into()),
        ("solved_sampled", format!("any-of-{n} (sampled)")),
    ]
}

/// Per seed, whether `metric` reaches 2× its generation-0 value within `g`
/// generations: how many seeds do, how many have a ratio at all (a
/// generation-0 value of 0 — or an undefined one — has none: "2× of 0" is
/// no growth claim), and the first generation at 2× per seed ("–" for not
/// reached, "n/a" for no ratio).
fn doubling(states: &[Vec<ArmState>], a: usize, g: usize, metric: &str) -> Doubling {
    let mut d = Doubling {
        doubled: 0,
        defined: 0,
        firsts: Vec::new(),
    };
    for per_arm in states {
        let st = &per_arm[a];
        let v0 = value(st, 0, metric);
        if !(v0.is_finite() && v0 > 0.0) {
            d.firsts.push("n/a".into());
            continue;
        }
        d.defined += 1;
        let first = (1..=g).find(|&k| value(st, k, metric) >= 2.0 * v0);
        d.doubled += usize::from(first.is_some());
        d.firsts
            .push(first.map_or("–".to_string(), |k| k.to_string()));
    }
    d
}

struct Doubling {
    doubled: usize,
    defined: usize,
    firsts: Vec<String>,
}

impl Doubling {
    /// "k of m" over the seeds with a ratio, naming the seeds without one.
    fn verdict(&self, seeds: usize) -> String {
        let mut v = format!("{} of {}", self.doubled, self.defined);
        if self.defined < seeds {
            let _ = write!(
                v,
                " ({} seed(s) with gen 0 = 0 have no ratio)",
                seeds - self.defined
            );
        }
        v
    }
}

/// last / first as "r×", or "–" when the first is 0 (no ratio).
fn ratio(first: f64, last: f64) -> String {
    if first.is_finite() && first > 0.0 && last.is_finite() {
        format!("{:.2}×", last / first)
    } else {
        "–".into()
    }
}

fn deployment_summary(
    resolved: &Resolved,
    work: &Workload,
    c: &Collected,
    states: &[Vec<ArmState>],
    figures: &[String],
) -> String {
    let spec = &resolved.spec;
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n\n**Question.** {}\n", spec.title, spec.question);
    let deployed = work.tasks_with(crate::deploy::Role::Deployed).len();
    let _ = writeln!(
        s,
        "{} deployed task(s) in {} bucket(s) ({}), horizon {}, {} seed(s) {:?}; mean [95% CI over seeds].\n",
        deployed,
        work.buckets.len(),
        work.buckets.join(", "),
        spec.tasks.horizon,
        spec.seeds.len(),
        spec.seeds
    );
    if !spec.policy.kind.is_markov() {
        let _ = writeln!(
            s,
            "The policy reads its own text (`kind = {}`), so no dynamic program applies: P(valid) and \
             the KL between generations are Monte-Carlo estimates from `samples_per_task` fresh \
             samples per task on their own random stream, and `update_cosine` is undefined \
             (see `src/deploy/metrics.rs`).\n",
            toml::Value::try_from(spec.policy.kind).expect("a unit variant serialises")
        );
    }
    let n = resolved.arms.first().map_or(0, |a| a.samples_per_task);
    let how = if spec.policy.kind.is_markov() {
        "exact"
    } else {
        "Monte-Carlo estimate"
    };
    let _ = writeln!(
        s,
        "The solved-task measures (per task x with p(x) = P(one sample is a valid plan), mean over deployed tasks): \
         **solved@1** = p(x) ({how}); **all-of-3** = p(x)³ ({how}): solved in each of 3 independent runs of one plan, \
         the paper's count over its 3 runs (\"unanimous@3\"); **any-of-3** = 1 − (1 − p(x))³ ({how}); \
         **any-of-{n}** = has a valid plan among this generation's {n} samples (sampled).\n"
    );
    let _ = writeln!(
        s,
        "| arm | method | measure | gen 0 | last gen | ratio | at least 2× (seeds) | first generation at 2× (per seed) |\n|---|---|---|---|---|---|---|---|"
    );
    for (a, arm) in resolved.arms.iter().enumerate() {
        let g = arm.generations;
        for (metric, label) in solved_measures(arm.samples_per_task) {
            let p0 = c.interval(a, 0, BUCKET_ALL, metric);
            let pg = c.interval(a, g, BUCKET_ALL, metric);
            let d = doubling(states, a, g, metric);
            let _ = writeln!(
                s,
                "| {} | {} | {label} | {} | {} (gen {g}) | {} | {} | {} |",
                arm.name,
                arm.method.label(),
                fmt_interval(p0, 3),
                fmt_interval(pg, 3),
                ratio(p0.mean, pg.mean),
                d.verdict(states.len()),
                d.firsts.join(", ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nThe ratio column is the ratio of the means over seeds (last gen's mean / gen 0's mean; \"–\" where gen 0's mean is 0). \
         \"At least 2×\" and the first generation at 2× are per seed, against that seed's own generation 0: a seed whose \
         generation-0 value is 0 has no ratio (\"n/a\" per seed), and \"–\" per seed means 2× was not reached.\n"
    );
    let _ = writeln!(
        s,
        "| arm | longest valid plan gen 0 | hardest solved (optimal length) last gen |\n|---|---|---|"
    );
    for (a, arm) in resolved.arms.iter().enumerate() {
        let l0 = c.interval(a, 0, BUCKET_ALL, "longest_valid_plan");
        let hg = c.interval(a, arm.generations, BUCKET_ALL, "longest_solved_optimal");
        // The mean over the seeds where it is defined; seeds with no valid
        // plan (or no solved task) are counted apart, never as 0.
        let seeds = states.len();
        let length = |i: &crate::stats::Interval| match i.n {
            0 => "none in any seed".to_string(),
            n if n == seeds => fmt_value(i.mean, 1),
            n => format!(
                "{} ({n} of {seeds} seeds; none in the others)",
                fmt_value(i.mean, 1)
            ),
        };
        let _ = writeln!(s, "| {} | {} | {} |", arm.name, length(&l0), length(&hg));
    }
    let _ = writeln!(
        s,
        "\nEvery number above and in the figures is in `summary.csv` (per-seed values: `results.csv`). Figures: {}.",
        figures
            .iter()
            .map(|f| format!("`{f}.png`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(p) = &spec.proof {
        let _ = writeln!(s, "\nRelated claim: `proofs/` {p}.");
    }
    s
}

/// Solved@1's gains computed by the tool, not by hand: per arm the paired
/// gain gen 0 → last generation over seeds (mean and t-interval), each
/// seed's gain with its Monte-Carlo z where solved@1 is sampled, and each
/// arm against the first at the last generation, paired by seed, with
/// the smallest difference this many seeds could resolve (the interval's
/// half-width).
fn paired_gains(resolved: &Resolved, work: &Workload, states: &[Vec<ArmState>]) -> String {
    let metric = "success_prob";
    let sampled = !resolved.spec.policy.kind.is_markov();
    let tasks = work.tasks_with(crate::deploy::Role::Deployed).len();
    let mut s = String::from(
        "\n## Paired gains in solved@1\n\nEach seed's gain is its last generation minus its own generation 0 (paired); \
         the interval is a 95% t-interval over seeds.",
    );
    if sampled {
        let _ = write!(
            s,
            " Solved@1 is a Monte-Carlo estimate here (N fresh samples per task, {tasks} tasks): z is each seed's gain \
             over its binomial standard error √(p₀(1−p₀)/n + p_G(1−p_G)/n), n = {tasks}·N samples (conservative: \
             it ignores the stratification by task); |z| < 2 is within Monte-Carlo error."
        );
    }
    s.push_str("\n\n| arm | gain gen 0 → last gen | per seed |\n|---|---|---|\n");
    let gains_of = |a: usize, g: usize| -> Vec<f64> {
        states
            .iter()
            .map(|per_arm| value(&per_arm[a], g, metric) - value(&per_arm[a], 0, metric))
            .collect()
    };
    for (a, arm) in resolved.arms.iter().enumerate() {
        let g = arm.generations;
        let gains = gains_of(a, g);
        let per_seed: Vec<String> = states
            .iter()
            .zip(&gains)
            .map(|(per_arm, d)| {
                let (p0, pg) = (value(&per_arm[a], 0, metric), value(&per_arm[a], g, metric));
                let n = (tasks * arm.samples_per_task) as f64;
                let se = (p0 * (1.0 - p0) / n + pg * (1.0 - pg) / n).sqrt();
                if sampled && se > 0.0 {
                    format!("{d:+.3} (z {:.1})", d / se)
                } else {
                    format!("{d:+.3}")
                }
            })
            .collect();
        let i = crate::stats::mean_ci95(&gains);
        let _ = writeln!(
            s,
            "| {} | {} (gen {g}) | {} |",
            arm.name,
            fmt_signed_interval(i),
            per_seed.join(", ")
        );
    }
    if resolved.arms.len() >= 2 && states.len() >= 2 {
        let first = &resolved.arms[0];
        let _ = writeln!(
            s,
            "\n| arm − {} | difference at the last generation, paired by seed | smallest difference these seeds resolve | verdict |\n|---|---|---|---|",
            first.name
        );
        for (a, arm) in resolved.arms.iter().enumerate().skip(1) {
            let g = arm.generations.min(first.generations);
            let diffs: Vec<f64> = states
                .iter()
                .map(|per_arm| value(&per_arm[a], g, metric) - value(&per_arm[0], g, metric))
                .collect();
            let i = crate::stats::mean_ci95(&diffs);
            let half = (i.high - i.low) / 2.0;
            let verdict = if !(i.low.is_finite() && i.high.is_finite()) {
                "–".to_string()
            } else if i.low > 0.0 || i.high < 0.0 {
                "separated".to_string()
            } else {
                "this run cannot separate the two arms".to_string()
            };
            let _ = writeln!(
                s,
                "| {} | {} (gen {g}) | ±{} | {verdict} |",
                arm.name,
                fmt_signed_interval(i),
                fmt_value(half, 3)
            );
        }
    }
    s
}

/// "+0.183 [+0.031, +0.335]", or the mean alone without an interval.
fn fmt_signed_interval(i: Interval) -> String {
    if !i.mean.is_finite() {
        return "–".into();
    }
    if i.low.is_finite() && i.high.is_finite() {
        format!("{:+.3} [{:+.3}, {:+.3}]", i.mean, i.low, i.high)
    } else {
        format!("{:+.3}", i.mean)
    }
}

/// Value of `metric` (bucket `all`) at `generation` in one arm's rows.
fn value(state: &ArmState, generation: usize, metric: &str) -> f64 {
    state.value(generation, BUCKET_ALL, metric)
}

/// The paper's second headline claim, seed by seed for every arm: some
/// generation ≥ 1 solves (has a valid sample for) a task whose optimal
/// plan is longer than every valid plan generation 0 sampled. (The first,
/// doubling, is in the summary table, per solved-task measure.)
fn headline_checks(resolved: &Resolved, states: &[Vec<ArmState>]) -> String {
    let mut s = String::from(
        "\n## Longer plans than generation 0, seed by seed\n\n| arm | solves a task harder than gen 0's longest valid plan |\n|---|---|\n",
    );
    let seeds = states.len();
    for (a, arm) in resolved.arms.iter().enumerate() {
        // A seed whose generation 0 sampled no valid plan has no
        // reference length: counted apart, not as "harder than 0".
        let (mut harder, mut no_reference) = (0, 0);
        for per_arm in states {
            let st = &per_arm[a];
            let longest0 = value(st, 0, "longest_valid_plan");
            if longest0.is_nan() {
                no_reference += 1;
            } else if (1..=arm.generations)
                .any(|g| value(st, g, "longest_solved_optimal") > longest0)
            {
                harder += 1;
            }
        }
        let apart = if no_reference > 0 {
            format!(" ({no_reference} seed(s) without a valid plan at gen 0 left out)")
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {} | {harder} of {} seeds{apart} |",
            arm.name,
            seeds - no_reference
        );
    }
    s
}

/// One series per arm of a deployment experiment's `summary.csv`
/// (`metric`, bucket `all`): mean over seeds with its 95% band, labelled
/// `<label><arm>`.
pub fn summary_series(dir: &Path, metric: &str, label: &str) -> Result<Vec<Series>> {
    crate::output::check_set(dir)?;
    let path = dir.join("summary.csv");
    let text = crate::input::read_text(&path)?;
    let mut lines = text.lines();
    if lines.next() != Some("arm,generation,bucket,metric,seeds,mean,ci_low,ci_high") {
        return Err(Error::Invalid(format!(
            "{}: not the summary.csv of a deployment experiment",
            path.display()
        )));
    }
    let mut by_arm: Vec<(String, Series)> = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields = split_csv(line);
        let bad = || {
            Error::Invalid(format!(
                "{}:{}: malformed row `{line}`",
                path.display(),
                i + 2
            ))
        };
        if fields.len() != 8 {
            return Err(bad());
        }
        if fields[2] != "all" || fields[3] != metric {
            continue;
        }
        let g: f64 = fields[1].parse().map_err(|_| bad())?;
        let mean: f64 = fields[5].parse().map_err(|_| bad())?;
        let (lo, hi): (f64, f64) = (
            fields[6].parse().map_err(|_| bad())?,
            fields[7].parse().map_err(|_| bad())?,
        );
        let arm = fields[0].clone();
        if by_arm.last().is_none_or(|(a, _)| *a != arm) {
            by_arm.push((
                arm.clone(),
                Series {
                    name: format!("{label}{arm}"),
                    points: Vec::new(),
                    band: Some(Vec::new()),
                    style: LineKind::Solid,
                },
            ));
        }
        let s = &mut by_arm.last_mut().expect("just pushed").1;
        s.points.push((g, mean));
        s.band.as_mut().expect("set above").push((lo, hi));
    }
    Ok(by_arm.into_iter().map(|(_, s)| s).collect())
}

/// Splits one CSV line with `"`-quoted fields (as `csv_field` writes them).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A metric's readable name: the title of its per-arm figure, or the raw
/// name for metrics no figure plots.
fn metric_title(metric: &str) -> String {
    PER_ARM_FIGURES
        .iter()
        .find(|f| f.metric == metric)
        .map_or_else(|| metric.replace('_', " "), |f| f.title.to_string())
}

/// What `compare` drew, and whether its runs deployed the same tasks.
#[derive(Debug)]
pub struct Compared {
    pub figure: PathBuf,
    /// None when every run's `[tasks]` (in its `spec.toml`) is the same;
    /// else which run differs from the first, so curves on different tasks
    /// are never shown as if comparable without saying so.
    pub tasks_differ: Option<String>,
}

/// The `[tasks]` table of a run's `spec.toml`.
fn tasks_of(dir: &Path) -> Result<toml::Value> {
    let path = dir.join("spec.toml");
    let text = crate::input::read_text(&path)?;
    let v: toml::Table =
        toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    v.get("tasks")
        .cloned()
        .ok_or_else(|| Error::Invalid(format!("{}: no [tasks] table", path.display())))
}

/// `iterdeploy compare`: one figure with every arm of several deployment
/// experiments (e.g. the same spec run with different policy kinds), and
/// the plotted numbers as CSV.
pub fn compare(dirs: &[PathBuf], metric: &str, out: &Path) -> Result<Compared> {
    // Before anything is read or written: each run once, and the output
    // neither one of the runs nor inside one (their files would be
    // replaced by the comparison's).
    for (i, a) in dirs.iter().enumerate() {
        if let Some(b) = dirs[..i]
            .iter()
            .find(|b| crate::output::resolved(b) == crate::output::resolved(a))
        {
            return Err(Error::Invalid(format!(
                "{} and {} are the same run; give each run once",
                b.display(),
                a.display()
            )));
        }
    }
    let outputs = [
        out.join(format!("{metric}.csv")),
        out.join(format!("{metric}.png")),
        out.join(format!("{metric}.svg")),
    ];
    crate::output::refuse_overwriting_inputs(
        &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    )?;
    let mut series = Vec::new();
    let mut csv = String::from("experiment,arm,generation,mean,ci_low,ci_high\n");
    for d in dirs {
        let id = d
            .file_name()
            .map_or("run".into(), |n| n.to_string_lossy().into_owned());
        for s in summary_series(d, metric, &format!("{id}: "))? {
            let band = s.band.clone().unwrap_or_default();
            for (i, (g, m)) in s.points.iter().enumerate() {
                let (lo, hi) = band.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
                let arm = s.name.trim_start_matches(&format!("{id}: ")).to_string();
                let _ = writeln!(
                    csv,
                    "{},{},{g},{m},{lo},{hi}",
                    csv_field(&id),
                    csv_field(&arm)
                );
            }
            series.push(s);
        }
    }
    if series.is_empty() {
        return Err(Error::Invalid(format!(
            "no `{metric}` rows in the given summaries"
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::output::write_atomic(&out.join(format!("{metric}.csv")), csv.as_bytes())?;
    Figure {
        title: format!("{} across experiments", metric_title(metric)),
        x_label: "generation".into(),
        y_label: format!("{} (mean over seeds)", metric_title(metric)),
        series,
        log_x: false,
        log_y: false,
        y_bounds: PER_ARM_FIGURES
            .iter()
            .find(|f| f.metric == metric)
            .map(|f| f.bounds),
        band_note: Some("shaded: 95% CI over each run's seeds".into()),
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(out, metric)?;
    let first = tasks_of(&dirs[0])?;
    let mut tasks_differ = None;
    for d in &dirs[1..] {
        if tasks_of(d)? != first {
            tasks_differ = Some(format!(
                "{} deployed other tasks than {} (their spec.toml [tasks] differ)",
                d.display(),
                dirs[0].display()
            ));
            break;
        }
    }
    Ok(Compared {
        figure: out.join(format!("{metric}.png")),
        tasks_differ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::metrics::MetricRow;

    fn arm_with(values: &[f64]) -> ArmState {
        ArmState {
            next_generation: values.len(),
            theta: Vec::new(),
            previous_theta: None,
            pool: Vec::new(),
            rows: values
                .iter()
                .enumerate()
                .map(|(g, &v)| MetricRow {
                    generation: g,
                    bucket: BUCKET_ALL.into(),
                    metric: "m".into(),
                    value: v,
                })
                .collect(),
            samples_drawn: 0,
            timings: Default::default(),
        }
    }

    #[test]
    fn a_zero_generation_0_has_no_ratio_and_never_counts_as_doubled() {
        // Seeds: doubles at gen 2; never doubles; starts at 0 (0 ≥ 2·0
        // would "double" trivially); starts undefined.
        let states: Vec<Vec<ArmState>> = [
            vec![0.1, 0.15, 0.2],
            vec![0.1, 0.1, 0.19],
            vec![0.0, 0.0, 0.0],
            vec![f64::NAN, 0.3, 0.4],
        ]
        .iter()
        .map(|v| vec![arm_with(v)])
        .collect();
        let d = doubling(&states, 0, 2, "m");
        assert_eq!((d.doubled, d.defined), (1, 2));
        assert_eq!(d.firsts, ["2", "–", "n/a", "n/a"]);
        assert_eq!(
            d.verdict(4),
            "1 of 2 (2 seed(s) with gen 0 = 0 have no ratio)"
        );
        assert_eq!(ratio(0.1, 0.25), "2.50×");
        assert_eq!(ratio(0.0, 0.0), "–");
        assert_eq!(ratio(0.0, 0.3), "–");
    }

    #[test]
    fn undefined_numbers_print_as_a_dash_never_as_nan() {
        let nan = Interval {
            n: 0,
            mean: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
        assert_eq!(fmt_interval(nan, 3), "–");
        assert_eq!(fmt_value(f64::INFINITY, 2), "–");
        assert_eq!(fmt_value(0.25, 2), "0.25");
        let one_seed = Interval {
            n: 1,
            mean: 0.5,
            low: f64::NAN,
            high: f64::NAN,
        };
        assert_eq!(fmt_interval(one_seed, 2), "0.50");
    }
}
