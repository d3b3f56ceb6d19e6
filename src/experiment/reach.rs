//! Reach: does deployment extend the sizes a policy solves, the paper's
//! second claim ("later models discover much longer plans")? Derived for
//! every (seed, arm, generation) from the per-bucket rows the loop
//! measures, with the protocol fixed in the spec's `[reach]` table before
//! a run (defaults below):
//!
//! | metric (bucket `all`) | meaning |
//! |---|---|
//! | `frontier_solved_at_1` | position (1 = the first size bucket, in spec order) of the largest size bucket whose solved@1 is at least `reach.threshold`; 0 when no bucket reaches it |
//! | `frontier_all_of_3` | the same in all-of-3, the paper's count over 3 runs |
//!
//! `summary.md` states, per arm and measure, in how many seeds the
//! frontier moved by at least `reach.frontier_moves` sizes and the
//! hardest solved task's optimal length (`longest_solved_optimal`) grew by
//! at least `reach.hardest_growth`×, within the arm's generations; and
//! generation 0's solved@1 on each size, with how often that size lies
//! past generation 0's frontier (the necessary condition "some success
//! just past the frontier", measured).

use std::fmt::Write as _;
use std::path::Path;

use super::Resolved;
use super::report::{Collected, band_note, fmt_value};
use crate::Result;
use crate::deploy::metrics::{BUCKET_ALL, MetricRow};
use crate::deploy::{ArmState, Workload};
use crate::plot::{Figure, Heatmap, Series};
use crate::stats::mean_ci95;

/// The measures a frontier is computed in: (per-bucket metric, frontier
/// metric, label).
pub const MEASURES: [(&str, &str, &str); 2] = [
    ("success_prob", "frontier_solved_at_1", "solved@1"),
    ("solved_all_of_3_exact", "frontier_all_of_3", "all-of-3"),
];

/// The protocol of the reach verdict, fixed before a run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReachSpec {
    /// A size is "solved" at this measure or above. Default 0.1: one task
    /// in ten solved by one plan, well above the Monte-Carlo resolution of
    /// the shipped specs (≥ 8 samples × ≥ 4 tasks per size, a resolution
    /// of 1/32), and low enough that a size counts as soon as it is
    /// solved at all reliably.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// The frontier must move by at least this many sizes (default 2: one
    /// size can move by noise at a bucket's edge).
    #[serde(default = "default_moves")]
    pub frontier_moves: usize,
    /// The hardest solved task's optimal length must grow by at least this
    /// factor (default 1.5: "much longer plans").
    #[serde(default = "default_growth")]
    pub hardest_growth: f64,
}

fn default_threshold() -> f64 {
    0.1
}
fn default_moves() -> usize {
    2
}
fn default_growth() -> f64 {
    1.5
}

impl Default for ReachSpec {
    fn default() -> Self {
        ReachSpec {
            threshold: default_threshold(),
            frontier_moves: default_moves(),
            hardest_growth: default_growth(),
        }
    }
}

impl ReachSpec {
    /// Why these values cannot be a protocol, if they cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!(
                "reach.threshold = {} must be in (0, 1]",
                self.threshold
            ));
        }
        if self.frontier_moves == 0 {
            return Err("reach.frontier_moves = 0 would count a frontier that never moved".into());
        }
        if !(self.hardest_growth.is_finite() && self.hardest_growth > 1.0) {
            return Err(format!(
                "reach.hardest_growth = {} must be a number above 1",
                self.hardest_growth
            ));
        }
        Ok(())
    }
}

/// The frontier of one generation: the 1-based position of the largest
/// bucket (in `buckets`' order) whose `metric` is at least `threshold`,
/// 0 if none is. A bucket without a value (no deployed task) never is.
pub fn frontier(
    state: &ArmState,
    generation: usize,
    buckets: &[String],
    metric: &str,
    threshold: f64,
) -> usize {
    buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| state.value(generation, b, metric) >= threshold)
        .map(|(i, _)| i + 1)
        .max()
        .unwrap_or(0)
}

/// The frontier rows of every generation of one job (bucket `all`).
pub fn derived_rows(state: &ArmState, buckets: &[String], rule: &ReachSpec) -> Vec<MetricRow> {
    let generations: std::collections::BTreeSet<usize> =
        state.rows.iter().map(|r| r.generation).collect();
    let mut out = Vec::new();
    for g in generations {
        for (metric, name, _) in MEASURES {
            out.push(MetricRow {
                generation: g,
                bucket: BUCKET_ALL.into(),
                metric: name.into(),
                value: frontier(state, g, buckets, metric, rule.threshold) as f64,
            });
        }
    }
    out
}

/// The frontier's name: "4 blocks" for position 2 of ["3 blocks", "4
/// blocks"], "below 3 blocks" for 0.
fn frontier_name(position: f64, buckets: &[String]) -> String {
    if !position.is_finite() {
        return "–".into();
    }
    let name = |p: usize| match p {
        0 => format!("below {}", buckets.first().map_or("", String::as_str)),
        p => buckets.get(p - 1).cloned().unwrap_or_else(|| p.to_string()),
    };
    // A mean over seeds between two sizes names both.
    if position.fract() == 0.0 {
        name(position as usize)
    } else {
        format!(
            "between {} and {}",
            name(position.floor() as usize),
            name(position.ceil() as usize)
        )
    }
}

/// One seed of one arm against the protocol, in one measure.
struct SeedReach {
    moved: Option<usize>,
    growth: Option<f64>,
}

fn seed_reach(
    state: &ArmState,
    generations: usize,
    metric: &str,
    rule: &ReachSpec,
    buckets: &[String],
) -> SeedReach {
    let f0 = frontier(state, 0, buckets, metric, rule.threshold);
    let best = (1..=generations)
        .map(|g| frontier(state, g, buckets, metric, rule.threshold))
        .max();
    let hardest0 = state.value(0, BUCKET_ALL, "longest_solved_optimal");
    let hardest = (1..=generations)
        .map(|g| state.value(g, BUCKET_ALL, "longest_solved_optimal"))
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    SeedReach {
        moved: best.map(|b| b.saturating_sub(f0)),
        // Undefined where generation 0 solved nothing (no length to grow
        // from) or no later generation solved anything.
        growth: (hardest0 > 0.0 && hardest.is_finite()).then(|| hardest / hardest0),
    }
}

/// The reach section of `summary.md`.
pub fn summary(
    resolved: &Resolved,
    work: &Workload,
    states: &[Vec<ArmState>],
    rule: &ReachSpec,
) -> String {
    let buckets = &work.buckets;
    let seeds = states.len();
    let mut s = format!(
        "\n## Reach: do later generations solve larger tasks?\n\n\
         Protocol, fixed before the run (`[reach]`): a size is solved when its measure is at least {}; \
         the frontier is the largest size so solved (sizes in spec order: {}). A seed counts when, within \
         the arm's generations, the frontier moved by at least {} size(s) **and** the hardest solved \
         task's optimal length grew by at least {}× over generation 0's.\n\n\
         | arm | measure | frontier gen 0 → last gen (mean over seeds) | frontier moved ≥ {} | hardest solved grew ≥ {}× | both (the verdict) |\n|---|---|---|---|---|---|\n",
        rule.threshold,
        buckets.join(", "),
        rule.frontier_moves,
        rule.hardest_growth,
        rule.frontier_moves,
        rule.hardest_growth,
    );
    for (a, arm) in resolved.arms.iter().enumerate() {
        let g = arm.generations;
        for (metric, _, label) in MEASURES {
            let per_seed: Vec<SeedReach> = states
                .iter()
                .map(|per_arm| seed_reach(&per_arm[a], g, metric, rule, buckets))
                .collect();
            let moved = per_seed
                .iter()
                .filter(|r| r.moved.is_some_and(|m| m >= rule.frontier_moves))
                .count();
            let grew = per_seed
                .iter()
                .filter(|r| r.growth.is_some_and(|x| x >= rule.hardest_growth))
                .count();
            let no_growth = per_seed.iter().filter(|r| r.growth.is_none()).count();
            let both = per_seed
                .iter()
                .filter(|r| {
                    r.moved.is_some_and(|m| m >= rule.frontier_moves)
                        && r.growth.is_some_and(|x| x >= rule.hardest_growth)
                })
                .count();
            let mean_at = |generation: usize| {
                let v: Vec<f64> = states
                    .iter()
                    .map(|per_arm| {
                        frontier(&per_arm[a], generation, buckets, metric, rule.threshold) as f64
                    })
                    .collect();
                mean_ci95(&v).mean
            };
            let (first, last) = (mean_at(0), mean_at(g));
            let undefined = if no_growth > 0 {
                format!(" ({no_growth} seed(s) without a solved task at gen 0 or later: no ratio)")
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {label} | {} ({}) → {} ({}) | {moved} of {seeds} | {grew} of {seeds}{undefined} | **{both} of {seeds}** |",
                arm.name,
                fmt_value(first, 2),
                frontier_name(first, buckets),
                fmt_value(last, 2),
                frontier_name(last, buckets),
            );
        }
    }
    // The necessary condition: generation 0's success on each size, and
    // how often that size lies past generation 0's frontier.
    let _ = writeln!(
        s,
        "\nGeneration 0's solved@1 per size (mean [95% CI] over seeds), and in how many seeds the size lies past \
         generation 0's solved@1 frontier: reach can only grow where generation 0 already succeeds sometimes.\n\n\
         | size | gen 0 solved@1 | past gen 0's frontier |\n|---|---|---|"
    );
    for (b, name) in buckets.iter().enumerate() {
        let v: Vec<f64> = states
            .iter()
            .map(|per_arm| per_arm[0].value(0, name, "success_prob"))
            .collect();
        let past = states
            .iter()
            .filter(|per_arm| {
                frontier(&per_arm[0], 0, buckets, "success_prob", rule.threshold) < b + 1
            })
            .count();
        let i = mean_ci95(&v);
        let interval = if i.low.is_finite() {
            format!(
                "{:.3} [{:.3}, {:.3}]",
                i.mean,
                i.low.max(0.0),
                i.high.min(1.0)
            )
        } else {
            fmt_value(i.mean, 3)
        };
        let _ = writeln!(s, "| {name} | {interval} | {past} of {seeds} |");
    }
    s
}

/// The reach figures: per arm, a heat map of solved@1 by size and
/// generation (mean over seeds, one shared colour scale), and the
/// frontier against generation in each measure, with bands over seeds.
pub fn figures(
    dir: &Path,
    resolved: &Resolved,
    work: &Workload,
    collected: &Collected,
    slugs: &[String],
) -> Result<Vec<String>> {
    let spec = &resolved.spec;
    let mut stems = Vec::new();
    for (a, arm) in resolved.arms.iter().enumerate() {
        let generations: Vec<usize> = (0..=arm.generations).collect();
        let cells: Vec<Vec<f64>> = work
            .buckets
            .iter()
            .map(|b| {
                generations
                    .iter()
                    .map(|&g| collected.interval(a, g, b, "success_prob").mean)
                    .collect()
            })
            .collect();
        let stem = format!("reach_heatmap_{}", slugs[a]);
        Heatmap {
            title: format!(
                "Solved@1 by size and generation: {} ({})",
                arm.name, spec.title
            ),
            x_label: "generation".into(),
            y_label: "size bucket".into(),
            columns: generations.iter().map(|g| g.to_string()).collect(),
            rows: work.buckets.clone(),
            cells,
            scale_label: format!(
                "solved@1, mean over {} seed(s); blank: no value",
                spec.seeds.len()
            ),
        }
        .write(dir, &stem)?;
        stems.push(stem);
    }
    for (_, name, label) in MEASURES {
        let series: Vec<Series> = resolved
            .arms
            .iter()
            .enumerate()
            .map(|(a, arm)| collected.series(a, &arm.name, BUCKET_ALL, name))
            .collect();
        let mut ticks = vec!["none".to_string()];
        ticks.extend(work.buckets.iter().cloned());
        let stem = name.to_string();
        Figure {
            title: format!(
                "Frontier in {label}: the largest size with {label} ≥ {} ({})",
                resolved.spec.reach.unwrap_or_default().threshold,
                spec.title
            ),
            x_label: "generation".into(),
            y_label: "frontier (largest size so solved)".into(),
            series,
            log_x: false,
            log_y: false,
            y_bounds: Some((0.0, work.buckets.len() as f64)),
            band_note: band_note(spec.seeds.len()),
            integer_x: true,
            y_exact: Some((0.0, work.buckets.len() as f64 + 0.3)),
            annotations: Vec::new(),
            y_ticks: Some(ticks),
        }
        .write(dir, &stem)?;
        stems.push(stem);
    }
    Ok(stems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rows: &[(usize, &str, &str, f64)]) -> ArmState {
        ArmState {
            next_generation: 0,
            theta: Vec::new(),
            previous_theta: None,
            pool: Vec::new(),
            rows: rows
                .iter()
                .map(|&(g, b, m, v)| MetricRow {
                    generation: g,
                    bucket: b.into(),
                    metric: m.into(),
                    value: v,
                })
                .collect(),
            samples_drawn: 0,
            timings: Default::default(),
        }
    }

    /// The frontier is the largest size at or above the threshold (not
    /// the first one below it), 0 when none is, and a size without a
    /// value never counts.
    #[test]
    fn the_frontier_is_the_largest_size_at_the_threshold() {
        let buckets: Vec<String> = ["3", "4", "5", "6"].map(String::from).to_vec();
        let st = state(&[
            (0, "3", "success_prob", 0.5),
            (0, "4", "success_prob", 0.05),
            (0, "5", "success_prob", 0.12),
            (0, "6", "success_prob", f64::NAN),
            (1, "3", "success_prob", 0.02),
        ]);
        assert_eq!(frontier(&st, 0, &buckets, "success_prob", 0.1), 3);
        assert_eq!(frontier(&st, 0, &buckets, "success_prob", 0.6), 0);
        assert_eq!(frontier(&st, 1, &buckets, "success_prob", 0.1), 0);
        // Exactly at the threshold counts.
        assert_eq!(frontier(&st, 0, &buckets, "success_prob", 0.5), 1);
        let rows = derived_rows(&st, &buckets, &ReachSpec::default());
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].metric, "frontier_solved_at_1");
        assert_eq!(rows[0].value, 3.0);
        assert_eq!(frontier_name(0.0, &buckets), "below 3");
        assert_eq!(frontier_name(2.0, &buckets), "4");
        assert_eq!(frontier_name(1.5, &buckets), "between 3 and 4");
    }

    /// A seed moves the frontier and grows the hardest solved length, or
    /// not; with nothing solved at generation 0 there is no ratio.
    #[test]
    fn a_seed_counts_only_when_both_conditions_hold() {
        let buckets: Vec<String> = ["3", "4", "5"].map(String::from).to_vec();
        let rule = ReachSpec::default();
        let st = state(&[
            (0, "3", "success_prob", 0.3),
            (0, BUCKET_ALL, "longest_solved_optimal", 4.0),
            (1, "3", "success_prob", 0.3),
            (1, "5", "success_prob", 0.2),
            (1, BUCKET_ALL, "longest_solved_optimal", 6.0),
        ]);
        let r = seed_reach(&st, 1, "success_prob", &rule, &buckets);
        assert_eq!(r.moved, Some(2));
        assert_eq!(r.growth, Some(1.5));
        let none0 = state(&[
            (0, BUCKET_ALL, "longest_solved_optimal", f64::NAN),
            (1, BUCKET_ALL, "longest_solved_optimal", 6.0),
        ]);
        assert_eq!(
            seed_reach(&none0, 1, "success_prob", &rule, &buckets).growth,
            None
        );
        assert!(
            ReachSpec {
                threshold: 0.0,
                ..rule
            }
            .check()
            .is_err()
        );
        assert!(
            ReachSpec {
                hardest_growth: 1.0,
                ..rule
            }
            .check()
            .is_err()
        );
        assert!(rule.check().is_ok());
    }
}
