//! `iterdeploy bench …`: throughput of our code beside the named peer,
//! measured in the same run on the same inputs, printed as ratios.
//!
//! Peers run as subprocesses of a Python interpreter from the peers' venv
//! (`peers/setup-venv.sh`): unified-planning's sequential plan validator for
//! validation, Fast Downward's translator for grounding. Their wall time is
//! end to end (interpreter start and imports included), which is what a
//! user of either tool pays.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::benchmarks::BenchmarkTask;
use crate::pddl::{Domain, read_domain, read_problem};
use crate::plan::parse_ipc_plan;
use crate::task::Task;
use crate::validate::Validator;
use crate::{Error, Result};

/// Parse + validate throughput over a set of tasks with reference plans.
#[derive(Clone, Debug)]
pub struct ValidationRun {
    pub plans: usize,
    pub steps: usize,
    pub valid: usize,
    pub seconds: f64,
}

fn domain_cache<'a>(cache: &'a mut Vec<(PathBuf, Domain)>, path: &Path) -> Result<&'a Domain> {
    if let Some(i) = cache.iter().position(|(p, _)| p == path) {
        return Ok(&cache[i].1);
    }
    cache.push((path.to_path_buf(), read_domain(path)?));
    Ok(&cache.last().expect("just pushed").1)
}

/// Reads every domain, problem and plan from disk and validates, timing it
/// all (domains are read once each).
pub fn validate_all(tasks: &[BenchmarkTask]) -> Result<ValidationRun> {
    let start = Instant::now();
    let mut cache = Vec::new();
    let mut run = ValidationRun {
        plans: 0,
        steps: 0,
        valid: 0,
        seconds: 0.0,
    };
    for t in tasks {
        let Some(plan_path) = &t.plan else { continue };
        let domain = domain_cache(&mut cache, &t.domain)?;
        let problem = read_problem(&t.problem, domain)?;
        let bytes = std::fs::read(plan_path).map_err(|e| Error::io(plan_path, e))?;
        let plan = parse_ipc_plan(&bytes, &plan_path.display().to_string())?;
        let verdict = Validator::new(domain, &problem).validate(&plan.steps);
        run.plans += 1;
        run.steps += plan.steps.len();
        run.valid += verdict.valid as usize;
    }
    run.seconds = start.elapsed().as_secs_f64();
    Ok(run)
}

/// Runs `peers/up_validate.py` on the same tasks; returns (seconds, valid).
pub fn validate_all_peer(
    python: &Path,
    script: &Path,
    tasks: &[BenchmarkTask],
) -> Result<(f64, usize)> {
    let manifest =
        std::env::temp_dir().join(format!("iterdeploy-bench-{}.tsv", std::process::id()));
    let mut text = String::new();
    for t in tasks {
        if let Some(plan) = &t.plan {
            text += &format!(
                "{}\t{}\t{}\n",
                t.domain.display(),
                t.problem.display(),
                plan.display()
            );
        }
    }
    std::fs::write(&manifest, text).map_err(|e| Error::io(&manifest, e))?;
    let start = Instant::now();
    let out = Command::new(python)
        .arg(script)
        .arg(&manifest)
        .output()
        .map_err(|e| Error::io(python, e))?;
    let seconds = start.elapsed().as_secs_f64();
    std::fs::remove_file(&manifest).ok();
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "peer validator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let valid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "valid")
        .count();
    Ok((seconds, valid))
}

/// Grounding size and time of one task.
#[derive(Clone, Debug)]
pub struct GroundingRun {
    pub facts: usize,
    pub operators: usize,
    /// Parse + ground, domain included.
    pub seconds: f64,
}

pub fn ground_one(t: &BenchmarkTask) -> Result<GroundingRun> {
    let start = Instant::now();
    let domain = read_domain(&t.domain)?;
    let problem = read_problem(&t.problem, &domain)?;
    let task = Task::ground(&domain, &problem)?;
    Ok(GroundingRun {
        facts: task.num_facts(),
        operators: task.operators.len(),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Fast Downward's translator on one task (the driver's `--translate`, run
/// in a scratch directory); returns (wall seconds, operator count).
pub fn ground_one_fast_downward(python: &Path, t: &BenchmarkTask) -> Result<(f64, usize)> {
    let scratch = std::env::temp_dir().join(format!("iterdeploy-fd-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let driver = fast_downward_driver(python)?;
    let start = Instant::now();
    let out = Command::new(python)
        .current_dir(&scratch)
        .arg(&driver)
        .arg("--translate")
        .arg(&t.domain)
        .arg(&t.problem)
        .output()
        .map_err(|e| Error::io(python, e))?;
    let seconds = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ops = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Translator operators: "))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "Fast Downward's translator failed on {}",
                t.problem.display()
            ))
        })?;
    Ok((seconds, ops))
}

/// Path of `fast-downward.py` inside the venv's up-fast-downward package.
pub fn fast_downward_driver(python: &Path) -> Result<PathBuf> {
    let out = Command::new(python)
        .args([
            "-c",
            "import os, up_fast_downward; print(os.path.join(os.path.dirname(up_fast_downward.__file__), 'downward', 'fast-downward.py'))",
        ])
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "{} cannot import up_fast_downward (run peers/setup-venv.sh)",
            python.display()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
