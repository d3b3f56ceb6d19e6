//! What is measured about each generation (one row per metric and bucket).
//!
//! | metric | meaning |
//! |---|---|
//! | `success_prob` | **solved@1**: mean over tasks of p(x) = π_k(valid trace \| x), exact (DP)†: the expected fraction of tasks solved by one plan per task |
//! | `solved_all_of_3_exact` | **all-of-3** (unanimous@3): mean over tasks of p(x)³, exact†: the expected fraction of tasks solved in each of 3 independent runs of one plan per task (the paper's count over 3 runs) |
//! | `solved_any_of_3_exact` | **any-of-3**: mean over tasks of 1 − (1 − p(x))³, exact† |
//! | `solved_any_exact` | **any-of-N**: mean over tasks of 1 − (1 − p(x))^N, exact†: the expected fraction of tasks with a valid plan among N samples |
//! | `solved_at_1_sampled` | solved@1 from this generation's N samples: mean over tasks of c/N (c = valid samples of the task) |
//! | `solved_all_of_3_sampled` | all-of-3 from the N samples: mean over tasks of C(c,3)/C(N,3), unbiased for p(x)³ |
//! | `solved_any_of_3_sampled` | any-of-3 from the N samples: mean over tasks of 1 − C(N−c,3)/C(N,3), unbiased |
//! | `solved_sampled` | any-of-N from the N samples: fraction of tasks with ≥ 1 truly valid sample this generation |
//! | `valid_rate` | fraction of this generation's samples that are valid |
//! | `accepted_rate` | fraction the judge accepted (≠ `valid_rate` only with validator noise) |
//! | `mean_valid_length` | mean plan length of valid samples |
//! | `length_over_optimal` | mean of (valid plan length / optimal length) over valid samples |
//! | `longest_valid_plan` | longest valid plan sampled this generation |
//! | `longest_solved_optimal` | largest optimal length among tasks with a valid sample |
//! | `distinct_valid_plans` | distinct valid plans sampled (over all tasks) |
//! | `update_cosine` | cos(the arm's update direction at π_k, ∇J(π_k)) (bucket `all`) |
//! | `kl_from_previous` | mean over tasks of KL(π_k ‖ π_{k−1}) of trace laws, exact (bucket `all`)† |
//! | `training_set_size` | traces the update used (bucket `all`) |
//! | `samples_drawn` | cumulative samples the arm learns from: N per deployed task per generation (bucket `all`); on-policy arms with several batches also judge the rest of π_k's deployment, for the sampled metrics only |
//!
//! Buckets: `all` (deployed tasks), each size bucket's deployed tasks, and
//! `held-out` (held-out tasks; the † metrics only).
//!
//! The sampled metrics describe π_k's own deployment: N samples per task
//! from π_k on the streams every arm shares, so arms at the same θ (all of
//! them at generation 0) see the same samples and their differences are
//! paired. On-policy arms that split the budget into batches train on the
//! first batch of that deployment and on later batches drawn from their
//! updated θ (see `deploy`).
//!
//! † Exact for Markov policies. A policy that reads its own earlier text
//! ([`crate::policy::Policy::is_markov`] false) has no state-wise dynamic
//! program, so these are unbiased Monte-Carlo estimates from M = N fresh
//! samples of π_k per task, drawn on their own stream and never trained on
//! ([`sampled_measurement`]); `update_cosine` is then NaN (no exact ∇J).

use std::collections::HashSet;

use super::{Role, Sample, Workload};
use crate::estimator::Trace;
use crate::exact::{self, PolicyTable};

/// Metrics that are probabilities or fractions, so every interval drawn
/// or written for them is clipped to [0, 1].
pub fn is_probability(metric: &str) -> bool {
    metric == "success_prob"
        || metric.starts_with("solved_")
        || metric == "valid_rate"
        || metric == "accepted_rate"
}

/// The range a metric's values lie in: [0, 1] for probabilities and
/// fractions, [−1, 1] for a cosine, [1, ∞) for a length over the optimal
/// one, [0, ∞) for counts, lengths and the (never negative) KL.
pub fn bounds(metric: &str) -> (f64, f64) {
    if is_probability(metric) {
        (0.0, 1.0)
    } else if metric.contains("cosine") {
        (-1.0, 1.0)
    } else if metric == "length_over_optimal" {
        (1.0, f64::INFINITY)
    } else {
        (0.0, f64::INFINITY)
    }
}

/// The mean and 95% interval over seeds of `metric`'s defined values
/// (NaN, undefined, is left out and counted apart by the interval's n),
/// clipped to the metric's [`bounds`]: a t-interval over few seeds can
/// reach past them (a length's once read [−46.8, 54.8]).
pub fn summarise(metric: &str, values: &[f64]) -> crate::stats::Interval {
    let (lo, hi) = bounds(metric);
    crate::stats::mean_ci95(values).clipped(lo, hi)
}

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

/// The † metrics of π_k (module docs), exact or estimated.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// p(x) = π_k(valid | x) per task.
    pub success: Vec<f64>,
    /// 1 − (1 − p(x))^N per task.
    pub solved_any: Vec<f64>,
    /// p(x)^K and 1 − (1 − p(x))^K per task, K = [`RUNS`].
    pub all_of_runs: Vec<f64>,
    pub any_of_runs: Vec<f64>,
    /// Mean over deployed tasks of KL(π_k ‖ π_{k−1}) (NaN at k = 0).
    pub kl_from_previous: f64,
}

/// Independent runs of one plan per task in the paper's solved-task count
/// (3 runs; a task counts as solved when every run solves it).
pub const RUNS: usize = 3;

/// Exact measurement from π_k's table (and π_{k−1}'s, both at the sampling
/// temperature); N = `samples_per_task`.
pub fn exact_measurement(
    work: &Workload,
    table: &PolicyTable,
    previous: Option<&PolicyTable>,
    samples_per_task: usize,
) -> Measurement {
    let success = exact::success_probabilities(&work.env, table);
    let n = samples_per_task as i32;
    let solved_any = success.iter().map(|p| 1.0 - (1.0 - p).powi(n)).collect();
    let k = RUNS as i32;
    let all_of_runs = success.iter().map(|p| p.powi(k)).collect();
    let any_of_runs = success.iter().map(|p| 1.0 - (1.0 - p).powi(k)).collect();
    let kl_from_previous = match previous {
        Some(prev) => {
            let per_task = exact::trajectory_kl(&work.env, table, prev);
            let deployed = work.tasks_with(Role::Deployed);
            deployed.iter().map(|&x| per_task[x]).sum::<f64>() / deployed.len() as f64
        }
        None => f64::NAN,
    };
    Measurement {
        success,
        solved_any,
        all_of_runs,
        any_of_runs,
        kl_from_previous,
    }
}

/// One sample's term of the KL(π_k ‖ π_{k−1}) estimate from π_k's
/// samples, with log r = log π_{k−1}(y) − log π_k(y): r − 1 − log r, never
/// negative, and unbiased since E_{π_k}[r] = 1.
fn kl_term(log_r: f64) -> f64 {
    log_r.exp_m1() - log_r
}

/// Monte-Carlo measurement of `current` = π_k (at the sampling
/// temperature) from M = N samples of every task, sample i of task x drawn
/// from `stream(x, i)`. With c valid samples of M:
/// * p̂(x) = c/M, unbiased for p(x);
/// * 1 − C(M−c, N)/C(M, N), the unbiased estimator of 1 − (1 − p)^N (the
///   pass@N estimator of Chen et al., 2021; for M = N it is 1[c > 0]);
/// * KL(π_k ‖ π_{k−1}) ≈ mean over π_k's samples of r − 1 − log r, with
///   r = π_{k−1}(y)/π_k(y) (`previous` = π_{k−1} at the same
///   temperature): unbiased, since E_{π_k}[r] = 1 where π_{k−1}'s support
///   lies in π_k's (softmax policies: everywhere), and never negative
///   term by term, unlike the plain mean of log π_k − log π_{k−1}, which
///   gave −3.7·10⁻⁶ nats for two nearly equal policies.
pub fn sampled_measurement(
    work: &Workload,
    current: &dyn crate::policy::Policy,
    previous: Option<&dyn crate::policy::Policy>,
    samples_per_task: usize,
    stream: impl Fn(usize, usize) -> crate::rng::Rng,
) -> Measurement {
    let (m, n) = (samples_per_task, samples_per_task);
    let env = &work.env;
    let mut success = Vec::with_capacity(env.tasks.len());
    let mut solved_any = Vec::with_capacity(env.tasks.len());
    let (mut all_of_runs, mut any_of_runs) = (Vec::new(), Vec::new());
    let mut kl_sum = 0.0;
    let mut requests: Vec<(usize, Vec<crate::rng::Rng>)> = (0..env.tasks.len())
        .map(|x| (x, (0..m).map(|i| stream(x, i)).collect()))
        .collect();
    for (x, drawn) in current
        .sample_tasks(env, &mut requests)
        .into_iter()
        .enumerate()
    {
        let c = drawn.iter().filter(|(t, _)| t.valid).count();
        success.push(c as f64 / m as f64);
        solved_any.push(any_of(c, m, n));
        all_of_runs.push(all_of(c, m, RUNS));
        any_of_runs.push(any_of(c, m, RUNS));
        if let (Some(prev), Role::Deployed) = (previous, work.role[x]) {
            let traces: Vec<&Trace> = drawn.iter().map(|(t, _)| t).collect();
            kl_sum += drawn
                .iter()
                .zip(prev.trace_log_probs(env, &traces))
                .map(|((_, logp), before)| kl_term(before - logp))
                .sum::<f64>()
                / m as f64;
        }
    }
    let kl_from_previous = if previous.is_some() {
        kl_sum / work.tasks_with(Role::Deployed).len() as f64
    } else {
        f64::NAN
    };
    Measurement {
        success,
        solved_any,
        all_of_runs,
        any_of_runs,
        kl_from_previous,
    }
}

/// The unbiased estimate of p^k from c valid samples of m (C(c,k)/C(m,k));
/// NaN when m < k.
pub fn all_of(c: usize, m: usize, k: usize) -> f64 {
    if m < k {
        f64::NAN
    } else {
        binomial_ratio(c, m, k)
    }
}

/// The unbiased estimate of 1 − (1 − p)^k from c valid samples of m
/// (1 − C(m−c,k)/C(m,k), the pass@k estimator); NaN when m < k.
pub fn any_of(c: usize, m: usize, k: usize) -> f64 {
    if m < k {
        f64::NAN
    } else {
        1.0 - binomial_ratio(m - c, m, k)
    }
}

/// C(a, n) / C(m, n) for a ≤ m (0 when a < n), as a product of ratios
/// (no factorials to overflow).
fn binomial_ratio(a: usize, m: usize, n: usize) -> f64 {
    if a < n {
        return 0.0;
    }
    (0..n).map(|i| (a - i) as f64 / (m - i) as f64).product()
}

/// What [`generation_metrics`] needs about generation k.
pub struct GenerationInputs<'a> {
    pub generation: usize,
    pub samples_per_task: usize,
    /// π_k's † metrics.
    pub measured: &'a Measurement,
    pub samples: &'a [Sample],
    pub update_cosine: f64,
    pub training_set_size: usize,
    pub samples_drawn: usize,
}

pub const BUCKET_ALL: &str = "all";
pub const BUCKET_HELD_OUT: &str = "held-out";

/// Averages a per-task value over a group of tasks.
type GroupMean<'a> = dyn Fn(&dyn Fn(usize) -> f64) -> f64 + 'a;

/// The † metrics of a group of tasks, `mean` averaging a per-task value
/// over the group: solved@1, all-of-3, any-of-3, any-of-N.
fn measured_rows(m: &Measurement, mean: &GroupMean) -> [(&'static str, f64); 4] {
    [
        ("success_prob", mean(&|x| m.success[x])),
        ("solved_all_of_3_exact", mean(&|x| m.all_of_runs[x])),
        ("solved_any_of_3_exact", mean(&|x| m.any_of_runs[x])),
        ("solved_any_exact", mean(&|x| m.solved_any[x])),
    ]
}

/// The rows of one generation, in a fixed order (bucket `all`, size
/// buckets in spec order, `held-out`; metrics in the order of the table).
pub fn generation_metrics(work: &Workload, g: &GenerationInputs) -> Vec<MetricRow> {
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
        for (metric, value) in measured_rows(g.measured, &mean) {
            push(name, metric, value);
        }
        let samples: Vec<&Sample> = g
            .samples
            .iter()
            .filter(|s| in_group(s.trace.task))
            .collect();
        let valid: Vec<&Sample> = samples.iter().copied().filter(|s| s.trace.valid).collect();
        let solved: HashSet<usize> = valid.iter().map(|s| s.trace.task).collect();
        // Per task: (valid, drawn) among this generation's samples.
        let counts = |x: usize| {
            let of_x = samples.iter().filter(|s| s.trace.task == x);
            let drawn = of_x.clone().count();
            (of_x.filter(|s| s.trace.valid).count(), drawn)
        };
        let per_task: Vec<(usize, usize)> = tasks.iter().map(|&x| counts(x)).collect();
        let mean_of = |f: &dyn Fn(usize, usize) -> f64| {
            per_task.iter().map(|&(c, m)| f(c, m)).sum::<f64>() / per_task.len() as f64
        };
        push(
            name,
            "solved_at_1_sampled",
            mean_of(&|c, m| {
                if m == 0 {
                    f64::NAN
                } else {
                    c as f64 / m as f64
                }
            }),
        );
        push(
            name,
            "solved_all_of_3_sampled",
            mean_of(&|c, m| all_of(c, m, RUNS)),
        );
        push(
            name,
            "solved_any_of_3_sampled",
            mean_of(&|c, m| any_of(c, m, RUNS)),
        );
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
                .map_or(f64::NAN, |v| v as f64),
        );
        // Undefined (NaN, never 0) where no task was solved: a seed with
        // none must not pull a mean over seeds towards 0.
        push(
            name,
            "longest_solved_optimal",
            solved
                .iter()
                .filter_map(|&x| work.optimal[x])
                .max()
                .map_or(f64::NAN, |v| v as f64),
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
        for (metric, value) in measured_rows(g.measured, &mean) {
            push(BUCKET_HELD_OUT, metric, value);
        }
    }
    push(BUCKET_ALL, "update_cosine", g.update_cosine);
    push(BUCKET_ALL, "kl_from_previous", g.measured.kl_from_previous);
    push(BUCKET_ALL, "training_set_size", g.training_set_size as f64);
    push(BUCKET_ALL, "samples_drawn", g.samples_drawn as f64);
    rows
}

#[cfg(test)]
mod tests {
    /// The KL estimator's terms are never negative (the plain mean of log
    /// π_k − log π_{k−1} once gave −3.7·10⁻⁶ nats), and their expectation
    /// under π_k is KL(π_k ‖ π_{k−1}) exactly, on a three-outcome law.
    #[test]
    fn the_kl_terms_are_non_negative_and_unbiased() {
        for log_r in [-30.0, -1.0, -1e-9, 0.0, 1e-9, 0.5, 5.0] {
            assert!(super::kl_term(log_r) >= 0.0, "{log_r}");
        }
        let (p, q) = ([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]);
        let kl: f64 = p
            .iter()
            .zip(&q)
            .map(|(a, b): (&f64, &f64)| a * (a / b).ln())
            .sum();
        let expected: f64 = p
            .iter()
            .zip(&q)
            .map(|(a, b): (&f64, &f64)| a * super::kl_term((b / a).ln()))
            .sum();
        assert!((kl - expected).abs() < 1e-15, "{kl} vs {expected}");
    }

    use super::{binomial_ratio, summarise};

    /// Every interval stays in its measure's bounds: a probability's in
    /// [0, 1], a length's or a count's in [0, ∞) (a hardest-solved length
    /// over two seeds once read [−46.8, 54.8]), a cosine's in [−1, 1]; and
    /// a seed where the measure is undefined (NaN: nothing solved) is left
    /// out, never averaged in as 0 (issue 27, item 3).
    #[test]
    fn probability_intervals_stay_in_the_unit_interval() {
        let values = [0.0, 0.01];
        let raw = crate::stats::mean_ci95(&values);
        assert!(raw.low < 0.0, "the plain interval leaves [0, 1]: {raw:?}");
        for m in [
            "success_prob",
            "solved_all_of_3_exact",
            "solved_sampled",
            "valid_rate",
        ] {
            let i = summarise(m, &values);
            assert_eq!((i.low, i.mean, i.high), (0.0, raw.mean, raw.high), "{m}");
        }
        for m in [
            "mean_valid_length",
            "longest_solved_optimal",
            "kl_from_previous",
        ] {
            let i = summarise(m, &values);
            assert_eq!((i.low, i.mean, i.high), (0.0, raw.mean, raw.high), "{m}");
        }
        let c = summarise("update_cosine", &[0.99, 0.999, 1.0]);
        assert!(c.high <= 1.0 && c.low >= -1.0, "{c:?}");
        let hardest = summarise("longest_solved_optimal", &[f64::NAN, 4.0]);
        assert_eq!((hardest.n, hardest.mean), (1, 4.0));
        assert!(hardest.low.is_nan(), "one defined seed has no interval");
    }

    /// C(a, n)/C(m, n) against the factorial formula on small arguments,
    /// and the pass@N estimator's edge cases.
    #[test]
    fn binomial_ratio_matches_the_factorial_formula() {
        let choose = |a: u64, n: u64| -> f64 {
            if n > a {
                return 0.0;
            }
            (1..=n).map(|i| (a - n + i) as f64 / i as f64).product()
        };
        for m in 1..12usize {
            for n in 1..=m {
                for a in 0..=m {
                    let want = choose(a as u64, n as u64) / choose(m as u64, n as u64);
                    let got = binomial_ratio(a, m, n);
                    assert!(
                        (got - want).abs() <= 1e-12 * want.max(1.0),
                        "{a} {m} {n}: {got} vs {want}"
                    );
                }
            }
        }
        // M = N: the estimator 1 − ratio is 1[c > 0].
        assert_eq!(binomial_ratio(8, 8, 8), 1.0);
        assert_eq!(binomial_ratio(7, 8, 8), 0.0);
    }
}
