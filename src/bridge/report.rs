//! `iterdeploy report RUN_DIR`: per-generation numbers and figures of a real
//! run, in the simulator's metric names, so real runs and simulations
//! overlay.
//!
//! A run directory holds the model outputs `gen0.jsonl`, `gen1.jsonl`, …
//! (contiguous from 0) and the tasks they answer (`tasks/` — a directory
//! with `domain.pddl`, or `tasks/manifest.csv` — unless given elsewhere).
//! Size buckets are the generator parameters of a manifest row (e.g.
//! `blocks=6`), else the task's object count; optimal lengths come from a
//! manifest's proven-optimal plan lengths.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::TaskSet;
use super::curate::{Judge, Judged, read_generation};
use crate::plot::{Figure, LineKind, Series};
use crate::{Error, Result};

/// What `report` produced.
pub struct Report {
    pub out: PathBuf,
    /// The per-generation table (markdown), also in `summary.md`.
    pub table: String,
    pub bad_lines: usize,
}

/// The generation files of `run`: `gen0.jsonl`, `gen1.jsonl`, … in order.
pub fn generation_files(run: &Path) -> Result<Vec<PathBuf>> {
    let mut found = BTreeMap::new();
    for e in std::fs::read_dir(run).map_err(|e| Error::io(run, e))? {
        let name = e.map_err(|e| Error::io(run, e))?.file_name();
        let name = name.to_string_lossy();
        let Some(digits) = name
            .strip_prefix("gen")
            .and_then(|r| r.strip_suffix(".jsonl"))
        else {
            continue;
        };
        // Only canonical names: `gen00.jsonl` beside `gen0.jsonl` would
        // otherwise be one generation, and one of them silently dropped.
        match digits.parse::<usize>() {
            Ok(k) if digits == k.to_string() => {
                found.insert(k, run.join(name.as_ref()));
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: `{name}` is not a generation file name; name them gen0.jsonl, gen1.jsonl, … (no leading zeros)",
                    run.display()
                )));
            }
        }
    }
    if found.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no gen0.jsonl, gen1.jsonl, … files",
            run.display()
        )));
    }
    for (i, k) in found.keys().enumerate() {
        if *k != i {
            return Err(Error::Invalid(format!(
                "{}: generation files must be gen0.jsonl … genN.jsonl without gaps; gen{i}.jsonl is missing",
                run.display()
            )));
        }
    }
    Ok(found.into_values().collect())
}

/// Per task: its size bucket and optimal plan length (if known).
fn task_info(set: &TaskSet, tasks: &Path) -> Result<Vec<(String, Option<usize>)>> {
    let manifest = if tasks.is_dir() {
        let m = tasks.join("manifest.csv");
        m.is_file().then_some(m)
    } else {
        Some(tasks.to_path_buf())
    };
    let rows: BTreeMap<String, (String, Option<usize>)> = match manifest {
        Some(m) => crate::generate::Manifest::read(&m)?
            .rows
            .into_iter()
            .map(|r| {
                let stem = Path::new(&r.file)
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                let optimal = if r.plan_optimal { r.plan_length } else { None };
                (stem, (r.params.replace(';', " "), optimal))
            })
            .collect(),
        None => BTreeMap::new(),
    };
    Ok(set
        .tasks
        .iter()
        .map(|t| {
            rows.get(&t.id).cloned().unwrap_or_else(|| {
                let own = t.problem.objects.len() - set.domain.constants.len();
                (format!("{own} objects"), None)
            })
        })
        .collect())
}

/// At most this many points per generation in `lengths.png`: the figure's
/// size must not grow with the longest plan (a 4M-step plan once gave a
/// 5.4 GB SVG). lengths.csv keeps every length exactly.
const LENGTH_BINS: usize = 60;

/// Valid-plan counts by length, merged into at most [`LENGTH_BINS`] bins
/// of equal integer width (a bin is drawn at its first length). Every bin
/// from the shortest to the longest length is listed, empty ones with 0,
/// so the bars of the figure are one bin wide.
fn binned(counts: &BTreeMap<usize, usize>) -> Vec<(f64, usize)> {
    let (Some((&lo, _)), Some((&hi, _))) = (counts.first_key_value(), counts.last_key_value())
    else {
        return Vec::new();
    };
    let width = (hi - lo) / LENGTH_BINS + 1;
    let mut bins: BTreeMap<usize, usize> = (lo..=hi).step_by(width).map(|l| (l, 0)).collect();
    for (&l, &c) in counts {
        *bins.entry(lo + (l - lo) / width * width).or_default() += c;
    }
    bins.into_iter().map(|(l, c)| (l as f64, c)).collect()
}

/// The files `report` writes into its output directory.
const REPORT_FILES: [&str; 7] = [
    "results.csv",
    "lengths.csv",
    "summary.md",
    "solved.png",
    "solved.svg",
    "lengths.png",
    "lengths.svg",
];

/// Where `report` writes by default: `RUN-report` beside the run folder,
/// never inside it (the run is an input).
pub fn default_out(run: &Path) -> PathBuf {
    let run = match run.file_name() {
        Some(_) => run.to_path_buf(),
        None => crate::output::resolved(run),
    };
    let name = run
        .file_name()
        .map_or("run".into(), |n| n.to_string_lossy().into_owned());
    run.with_file_name(format!("{name}-report"))
}

/// Reads, judges and reports a run; writes `out` (default
/// [`default_out`]) as one complete set.
pub fn report(
    run: &Path,
    tasks: Option<&Path>,
    overlay: &[PathBuf],
    out: Option<&Path>,
) -> Result<Report> {
    let tasks_path = match tasks {
        Some(t) => t.to_path_buf(),
        None => {
            let t = run.join("tasks");
            if !t.exists() {
                return Err(Error::Invalid(format!(
                    "{}: no tasks/ directory; give --tasks DIR|MANIFEST",
                    run.display()
                )));
            }
            t
        }
    };
    let set = TaskSet::load(&tasks_path)?;
    let info = task_info(&set, &tasks_path)?;
    let judge = Judge::new(&set);
    let files = generation_files(run)?;
    let out = out.map_or_else(|| default_out(run), Path::to_path_buf);
    // Before anything is written: no output file may be an input or lie
    // inside the run, its tasks or an overlaid simulation.
    let outputs: Vec<PathBuf> = REPORT_FILES.iter().map(|f| out.join(f)).collect();
    let mut inputs: Vec<&Path> = vec![run];
    inputs.extend(files.iter().map(PathBuf::as_path));
    inputs.push(&tasks_path);
    inputs.extend(overlay.iter().map(PathBuf::as_path));
    crate::output::refuse_overwriting_inputs(
        &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        &inputs,
    )?;
    crate::output::refuse_linked_dir(&out)?;
    crate::output::refuse_foreign_set(&out, &REPORT_FILES)?;
    // Every overlay is read (and refused if it is not a complete
    // simulation) before anything is written.
    let mut overlay_series = Vec::new();
    for dir in overlay {
        overlay_series.extend(crate::experiment::summary_series(
            dir,
            "solved_sampled",
            "simulation: ",
        )?);
    }
    let mut generations: Vec<Vec<Judged>> = Vec::new();
    let mut bad_lines = 0;
    for (g, f) in files.iter().enumerate() {
        let (samples, bad) = read_generation(f, g, &judge)?;
        for b in &bad {
            eprintln!("{}:{}: skipped: {}", b.file, b.line, b.reason);
        }
        bad_lines += bad.len();
        generations.push(samples);
    }
    let buckets: BTreeSet<String> = info.iter().map(|(b, _)| b.clone()).collect();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    // A report killed while writing leaves no set that looks whole.
    let _lock = crate::output::lock_dir(&out)?;
    crate::output::begin_set(&out)?;

    let mut results = String::from("generation,bucket,metric,value\n");
    let mut lengths_csv = String::from("generation,plan_length,valid_samples\n");
    let mut rows: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut length_series = Vec::new();
    let mut table = String::from(
        "| gen | samples | valid | solved tasks | mean valid length | longest valid plan | distinct valid plans |\n|---|---|---|---|---|---|---|\n",
    );
    for (g, samples) in generations.iter().enumerate() {
        let groups = std::iter::once(("all".to_string(), None))
            .chain(buckets.iter().map(|b| (b.clone(), Some(b.clone()))));
        for (name, bucket) in groups {
            let in_bucket = |t: usize| bucket.as_ref().is_none_or(|b| &info[t].0 == b);
            let tasks = (0..set.tasks.len()).filter(|&t| in_bucket(t)).count();
            let mine: Vec<&Judged> = samples.iter().filter(|s| in_bucket(s.task)).collect();
            let valid: Vec<&Judged> = mine.iter().copied().filter(|s| s.valid).collect();
            let solved: HashSet<usize> = valid.iter().map(|s| s.task).collect();
            let mean = |v: &[f64]| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            let lens: Vec<f64> = valid.iter().map(|s| s.plan_length as f64).collect();
            let ratios: Vec<f64> = valid
                .iter()
                .filter_map(|s| {
                    let o = info[s.task].1?;
                    (o > 0).then(|| s.plan_length as f64 / o as f64)
                })
                .collect();
            let distinct: HashSet<(usize, &str)> =
                valid.iter().map(|s| (s.task, s.plan.as_str())).collect();
            // Undefined (NaN; "–" in the table) without a valid plan.
            let longest = valid
                .iter()
                .map(|s| s.plan_length)
                .max()
                .map_or(f64::NAN, |v| v as f64);
            let metrics = [
                ("solved_sampled", solved.len() as f64 / tasks.max(1) as f64),
                (
                    "valid_rate",
                    if mine.is_empty() {
                        f64::NAN
                    } else {
                        valid.len() as f64 / mine.len() as f64
                    },
                ),
                ("mean_valid_length", mean(&lens)),
                ("length_over_optimal", mean(&ratios)),
                ("longest_valid_plan", longest),
                ("distinct_valid_plans", distinct.len() as f64),
            ];
            for (m, v) in metrics {
                let _ = writeln!(results, "{g},{},{m},{v}", crate::output::csv_field(&name));
                rows.entry((name.clone(), m.to_string()))
                    .or_default()
                    .push((g as f64, v));
            }
            if bucket.is_none() {
                let _ = writeln!(
                    table,
                    "| {g} | {} | {} | {}/{tasks} | {} | {} | {} |",
                    mine.len(),
                    valid.len(),
                    solved.len(),
                    crate::experiment::fmt_value(mean(&lens), 1),
                    crate::experiment::fmt_value(longest, 0),
                    distinct.len()
                );
                let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
                for s in &valid {
                    *counts.entry(s.plan_length).or_default() += 1;
                }
                for (l, c) in &counts {
                    let _ = writeln!(lengths_csv, "{g},{l},{c}");
                }
                let total = valid.len().max(1) as f64;
                length_series.push(Series {
                    name: format!("generation {g}"),
                    points: binned(&counts)
                        .into_iter()
                        .map(|(l, c)| (l, c as f64 / total))
                        .collect(),
                    band: None,
                    style: LineKind::Bars,
                });
            }
        }
    }
    crate::output::write_atomic(&out.join("results.csv"), results.as_bytes())?;
    crate::output::write_atomic(&out.join("lengths.csv"), lengths_csv.as_bytes())?;

    let mut solved_series: Vec<Series> = std::iter::once("all".to_string())
        .chain(buckets.iter().cloned())
        .map(|b| Series {
            name: if b == "all" {
                "real run: all tasks".into()
            } else {
                format!("real run: {b}")
            },
            points: rows[&(b.clone(), "solved_sampled".to_string())].clone(),
            band: None,
            style: LineKind::Solid,
        })
        .collect();
    solved_series.extend(overlay_series);
    Figure {
        title: format!("Tasks solved per generation ({})", run.display()),
        x_label: "generation".into(),
        y_label: "fraction of tasks with a valid sample".into(),
        series: solved_series,
        log_x: false,
        log_y: false,
        y_bounds: Some((0.0, 1.0)),
        band_note: None,
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(&out, "solved")?;
    Figure {
        title: format!("Valid plan lengths ({})", run.display()),
        x_label: "plan length (steps)".into(),
        y_label: "fraction of the generation's valid samples".into(),
        series: length_series,
        log_x: false,
        log_y: false,
        y_bounds: Some((0.0, 1.0)),
        band_note: None,
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(&out, "lengths")?;
    let summary = format!(
        "# Report of {}\n\n{} task(s) in {} size bucket(s); {} generation(s); {bad_lines} bad line(s) skipped.\n\n{table}\nFigures: `solved.png` (solved fraction per generation, by size{}), `lengths.png` (valid plan lengths per generation). Numbers: `results.csv` (simulator metric names), `lengths.csv`.\n",
        run.display(),
        set.tasks.len(),
        buckets.len(),
        generations.len(),
        if overlay.is_empty() {
            ""
        } else {
            ", simulations overlaid"
        }
    );
    crate::output::write_atomic(&out.join("summary.md"), summary.as_bytes())?;
    crate::output::finish_set(&out, &REPORT_FILES.map(String::from))?;
    Ok(Report {
        out,
        table,
        bad_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::{BTreeMap, LENGTH_BINS, binned};

    /// The plotted lengths keep every valid plan, in at most LENGTH_BINS
    /// points, and short ranges stay one point per length.
    #[test]
    fn lengths_are_binned_without_losing_plans() {
        let short: BTreeMap<usize, usize> = [(3, 2), (5, 1)].into();
        assert_eq!(binned(&short), vec![(3.0, 2), (4.0, 0), (5.0, 1)]);
        let long: BTreeMap<usize, usize> = (0..10_000).map(|l| (l * 400, 1)).collect();
        let b = binned(&long);
        assert!(b.len() <= LENGTH_BINS + 1, "{}", b.len());
        assert_eq!(b.iter().map(|&(_, c)| c).sum::<usize>(), 10_000);
        assert!(binned(&BTreeMap::new()).is_empty());
    }
}
