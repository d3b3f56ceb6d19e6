//! What is measured about each generation (one row per metric and bucket).
//!
//! | metric | meaning |
//! |---|---|
//! | `success_prob` | mean over tasks of p(x) = π_k(valid trace \| x), exact (DP) |
//! | `solved_any_exact` | mean over tasks of 1 − (1 − p(x))^N, exact: the expected fraction of tasks with a valid plan among N samples |
//! | `solved_sampled` | fraction of tasks with ≥ 1 truly valid sample this generation |
//! | `valid_rate` | fraction of this generation's samples that are valid |
//! | `accepted_rate` | fraction the judge accepted (≠ `valid_rate` only with validator noise) |
//! | `mean_valid_length` | mean plan length of valid samples |
//! | `length_over_optimal` | mean of (valid plan length / optimal length) over valid samples |
//! | `longest_valid_plan` | longest valid plan sampled this generation |
//! | `longest_solved_optimal` | largest optimal length among tasks with a valid sample |
//! | `distinct_valid_plans` | distinct valid plans sampled (over all tasks) |
//! | `update_cosine` | cos(the arm's update direction at π_k, ∇J(π_k)) (bucket `all`) |
//! | `kl_from_previous` | mean over tasks of KL(π_k ‖ π_{k−1}) of trace laws, exact (bucket `all`) |
//! | `training_set_size` | traces the update used (bucket `all`) |
//! | `samples_drawn` | cumulative samples = validator calls (bucket `all`) |
//!
//! Buckets: `all` (deployed tasks), each size bucket's deployed tasks, and
//! `held-out` (held-out tasks; exact metrics only).

use std::collections::HashSet;

use super::{Role, Sample, Workload};
use crate::exact::{self, PolicyTable};

/// One measured number of a generation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricRow {
    pub generation: usize,
    pub bucket: String,
    pub metric: String,
    /// NaN where undefined (e.g. no valid plan to measure); stored as
    /// `null` in checkpoints (JSON has no NaN).
    #[serde(with = "nan_as_null")]
    pub value: f64,
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// What [`generation_metrics`] needs about generation k.
pub struct GenerationInputs<'a> {
    pub generation: usize,
    pub samples_per_task: usize,
    /// π_k at the sampling temperature.
    pub table: &'a PolicyTable,
    /// π_{k−1}, if k > 0.
    pub previous: Option<&'a PolicyTable>,
    pub samples: &'a [Sample],
    pub update_cosine: f64,
    pub training_set_size: usize,
    pub samples_drawn: usize,
}

pub const BUCKET_ALL: &str = "all";
pub const BUCKET_HELD_OUT: &str = "held-out";

/// The rows of one generation, in a fixed order (bucket `all`, size
/// buckets in spec order, `held-out`; metrics in the order of the table).
pub fn generation_metrics(work: &Workload, g: &GenerationInputs) -> Vec<MetricRow> {
    let p = exact::success_probabilities(&work.env, g.table);
    let n = g.samples_per_task as i32;
    let mut rows = Vec::new();
    let mut push = |bucket: &str, metric: &str, value: f64| {
        rows.push(MetricRow {
            generation: g.generation,
            bucket: bucket.to_string(),
            metric: metric.to_string(),
            value,
        })
    };
    let deployed = work.tasks_with(Role::Deployed);
    let mut groups: Vec<(String, Vec<usize>)> = vec![(BUCKET_ALL.into(), deployed.clone())];
    for (b, name) in work.buckets.iter().enumerate() {
        let tasks: Vec<usize> = deployed
            .iter()
            .copied()
            .filter(|&x| work.bucket[x] == b)
            .collect();
        if !tasks.is_empty() {
            groups.push((name.clone(), tasks));
        }
    }
    for (name, tasks) in &groups {
        let in_group = |x: usize| tasks.binary_search(&x).is_ok();
        let mean = |f: &dyn Fn(usize) -> f64| {
            tasks.iter().map(|&x| f(x)).sum::<f64>() / tasks.len() as f64
        };
        push(name, "success_prob", mean(&|x| p[x]));
        push(
            name,
            "solved_any_exact",
            mean(&|x| 1.0 - (1.0 - p[x]).powi(n)),
        );
        let samples: Vec<&Sample> = g
            .samples
            .iter()
            .filter(|s| in_group(s.trace.task))
            .collect();
        let valid: Vec<&Sample> = samples.iter().copied().filter(|s| s.trace.valid).collect();
        let solved: HashSet<usize> = valid.iter().map(|s| s.trace.task).collect();
        push(
            name,
            "solved_sampled",
            solved.len() as f64 / tasks.len() as f64,
        );
        let frac = |k: usize| {
            if samples.is_empty() {
                f64::NAN
            } else {
                k as f64 / samples.len() as f64
            }
        };
        push(name, "valid_rate", frac(valid.len()));
        push(
            name,
            "accepted_rate",
            frac(samples.iter().filter(|s| s.accepted).count()),
        );
        let lengths: Vec<f64> = valid.iter().map(|s| s.trace.plan_length() as f64).collect();
        let avg = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        push(name, "mean_valid_length", avg(&lengths));
        let ratios: Vec<f64> = valid
            .iter()
            .filter_map(|s| {
                let opt = work.optimal[s.trace.task]?;
                (opt > 0).then(|| s.trace.plan_length() as f64 / opt as f64)
            })
            .collect();
        push(name, "length_over_optimal", avg(&ratios));
        push(
            name,
            "longest_valid_plan",
            valid
                .iter()
                .map(|s| s.trace.plan_length())
                .max()
                .map_or(0.0, |v| v as f64),
        );
        push(
            name,
            "longest_solved_optimal",
            solved
                .iter()
                .filter_map(|&x| work.optimal[x])
                .max()
                .map_or(0.0, |v| v as f64),
        );
        let distinct: HashSet<(usize, Vec<usize>)> = valid
            .iter()
            .map(|s| {
                (
                    s.trace.task,
                    s.trace.steps.iter().map(|&(_, a)| a).collect(),
                )
            })
            .collect();
        push(name, "distinct_valid_plans", distinct.len() as f64);
    }
    let held_out = work.tasks_with(Role::HeldOut);
    if !held_out.is_empty() {
        let mean = |f: &dyn Fn(usize) -> f64| {
            held_out.iter().map(|&x| f(x)).sum::<f64>() / held_out.len() as f64
        };
        push(BUCKET_HELD_OUT, "success_prob", mean(&|x| p[x]));
        push(
            BUCKET_HELD_OUT,
            "solved_any_exact",
            mean(&|x| 1.0 - (1.0 - p[x]).powi(n)),
        );
    }
    push(BUCKET_ALL, "update_cosine", g.update_cosine);
    let kl = match g.previous {
        Some(prev) => {
            let per_task = exact::trajectory_kl(&work.env, g.table, prev);
            deployed.iter().map(|&x| per_task[x]).sum::<f64>() / deployed.len() as f64
        }
        None => f64::NAN,
    };
    push(BUCKET_ALL, "kl_from_previous", kl);
    push(BUCKET_ALL, "training_set_size", g.training_set_size as f64);
    push(BUCKET_ALL, "samples_drawn", g.samples_drawn as f64);
    rows
}
