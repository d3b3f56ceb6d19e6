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

mod device;
mod pretrained;
pub use device::{
    DEVICE_WORKLOAD, DeviceReport, DeviceWorkload, device_bench, device_check, device_named,
};
pub use pretrained::{
    PRETRAINED_WORKLOAD, PretrainedRates, PretrainedWorkload, pretrained_throughput,
};

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

/// One planner run: outcome, expansions, search seconds, end-to-end seconds.
#[derive(Clone, Debug, Default)]
pub struct PlannerRun {
    pub solved: bool,
    pub length: usize,
    pub expanded: u64,
    pub search_seconds: f64,
    pub total_seconds: f64,
}

/// Our planner in-process: parse + ground + search, timed.
pub fn plan_ours(
    t: &BenchmarkTask,
    algorithm: crate::search::Algorithm,
    time_limit: f64,
) -> Result<PlannerRun> {
    let start = Instant::now();
    let domain = read_domain(&t.domain)?;
    let problem = read_problem(&t.problem, &domain)?;
    let task = Task::ground(&domain, &problem)?;
    let limits = crate::search::Limits {
        time: Some(std::time::Duration::from_secs_f64(time_limit)),
        expansions: None,
    };
    let r = crate::search::search(&task, algorithm, limits);
    Ok(PlannerRun {
        solved: r.outcome == crate::search::Outcome::Solved,
        length: r.plan.len(),
        expanded: r.stats.expanded,
        search_seconds: r.stats.seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs a command, killing it after `limit` seconds; returns stdout+stderr
/// and wall seconds (None output when killed).
fn run_with_timeout(mut cmd: Command, limit: f64) -> Result<(Option<String>, f64)> {
    use std::process::Stdio;
    let start = Instant::now();
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("iterdeploy-peer-{}.out", std::process::id()));
    let out_file = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
    let err_file = out_file.try_clone().map_err(|e| Error::io(&out_path, e))?;
    // Its own process group, so a timeout also ends the planner binary the
    // Python driver started (killing only the driver orphans it).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdout(Stdio::from(out_file))
        .stderr(Stdio::from(err_file))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| Error::Invalid(format!("cannot start peer: {e}")))?;
    loop {
        if child
            .try_wait()
            .map_err(|e| Error::Invalid(e.to_string()))?
            .is_some()
        {
            break;
        }
        if start.elapsed().as_secs_f64() > limit {
            #[cfg(unix)]
            Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status()
                .ok();
            child.kill().ok();
            child.wait().ok();
            return Ok((None, start.elapsed().as_secs_f64()));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let secs = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    std::fs::remove_file(&out_path).ok();
    Ok((Some(text), secs))
}

fn number_after<T: std::str::FromStr>(text: &str, before: &str, after: &str) -> Option<T> {
    text.lines().find_map(|l| {
        let i = l.find(before)? + before.len();
        let rest = &l[i..];
        let j = rest.find(after).unwrap_or(rest.len());
        rest[..j].trim().parse().ok()
    })
}

/// Fast Downward (translator + search) as a subprocess with the same
/// algorithm and heuristic.
pub fn plan_fast_downward(
    python: &Path,
    t: &BenchmarkTask,
    algorithm: crate::search::Algorithm,
    time_limit: f64,
) -> Result<PlannerRun> {
    use crate::search::Algorithm;
    let search = match algorithm {
        Algorithm::AstarHmax => "astar(hmax())",
        Algorithm::GbfsFf => "eager_greedy([ff()], preferred=[ff()])",
        Algorithm::Bfs => "astar(blind())",
    };
    let scratch = std::env::temp_dir().join(format!("iterdeploy-fd-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let mut cmd = Command::new(python);
    cmd.current_dir(&scratch)
        .arg(fast_downward_driver(python)?)
        .arg(&t.domain)
        .arg(&t.problem)
        .args(["--search", search]);
    let (out, secs) = run_with_timeout(cmd, time_limit)?;
    let Some(out) = out else {
        return Ok(PlannerRun {
            total_seconds: secs,
            ..Default::default()
        });
    };
    Ok(PlannerRun {
        solved: out.contains("Solution found!"),
        length: number_after(&out, "Plan length: ", " step").unwrap_or(0),
        expanded: number_after(&out, "] Expanded ", " state").unwrap_or(0),
        search_seconds: number_after(&out, "Search time: ", "s").unwrap_or(0.0),
        total_seconds: secs,
    })
}

/// pyperplan as a subprocess (PYTHONHASHSEED fixed), on a copy of the
/// problem, since it writes its solution beside the problem file.
pub fn plan_pyperplan(
    python: &Path,
    t: &BenchmarkTask,
    algorithm: crate::search::Algorithm,
    time_limit: f64,
) -> Result<PlannerRun> {
    use crate::search::Algorithm;
    let (s, h) = match algorithm {
        Algorithm::AstarHmax => ("astar", "hmax"),
        Algorithm::GbfsFf => ("gbf", "hff"),
        Algorithm::Bfs => ("bfs", "blind"),
    };
    let scratch = std::env::temp_dir().join(format!("iterdeploy-pyperplan-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let (d, p) = (scratch.join("domain.pddl"), scratch.join("problem.pddl"));
    std::fs::copy(&t.domain, &d).map_err(|e| Error::io(&t.domain, e))?;
    std::fs::copy(&t.problem, &p).map_err(|e| Error::io(&t.problem, e))?;
    let mut cmd = Command::new(python);
    cmd.env("PYTHONHASHSEED", "0")
        .args(["-m", "pyperplan", "-s", s, "-H", h])
        .arg(&d)
        .arg(&p);
    let (out, secs) = run_with_timeout(cmd, time_limit)?;
    let Some(out) = out else {
        return Ok(PlannerRun {
            total_seconds: secs,
            ..Default::default()
        });
    };
    let length: Option<usize> = number_after(&out, "Plan length: ", "\n");
    Ok(PlannerRun {
        solved: length.is_some(),
        length: length.unwrap_or(0),
        expanded: number_after(&out, "INFO     ", " Nodes expanded").unwrap_or(0),
        search_seconds: number_after(&out, "Search time: ", "\n").unwrap_or(0.0),
        total_seconds: secs,
    })
}

/// Exact DP throughput on a 6-block Blocksworld task (all 7057 states
/// reachable within H = 24) and sampled traces per second, printed.
pub fn exact_throughput() -> Result<()> {
    use crate::exact::{self, PolicyTable};
    use crate::generate::{DomainKind, Params, generate};
    use crate::mdp::Deployment;
    use crate::policy::{Mlp, Policy, Tabular};
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let t = generate(
        kind,
        &mut Params::from_pairs(kind, &["blocks=6".to_string()])?,
        1,
        5,
    )?;
    let problem = crate::pddl::parse_problem(t[0].pddl.as_bytes(), &t[0].name, &domain)?;
    let start = Instant::now();
    let env = Deployment::build(&domain, &[problem], 24, 1_000_000)?;
    println!(
        "6-block Blocksworld: {} states, {} actions, H = {}; state space built in {:.3}s",
        env.tasks[0].num_states(),
        env.num_actions(),
        env.horizon,
        start.elapsed().as_secs_f64()
    );
    let mut rng = crate::rng::seeded(1);
    let policies: Vec<(&str, Box<dyn Policy>)> = vec![
        ("tabular", Box::new(Tabular::zeros(&env, 1.0, 3.0))),
        (
            "mlp (64 hidden)",
            Box::new(Mlp::new(&env, 64, 1.0, 1.0, 3.0, &mut rng)),
        ),
    ];
    println!(
        "| policy | params | J | exact J+∇J evaluations/s | sampled traces/s (1 core) | mean trace length |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, p) in &policies {
        let reps = 5;
        let start = Instant::now();
        let mut j = 0.0;
        for _ in 0..reps {
            j = exact::objective(&env, &PolicyTable::new(&**p, &env));
            std::hint::black_box(exact::objective_gradient(&env, &**p));
        }
        let dp_rate = reps as f64 / start.elapsed().as_secs_f64();
        let table = PolicyTable::new(&**p, &env);
        let n = 200_000;
        let start = Instant::now();
        let mut steps = 0usize;
        for _ in 0..n {
            steps += crate::estimator::sample_trace(&env, &table, 0, &mut rng)
                .steps
                .len();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {j:.4} | {dp_rate:.2} | {rate:.0} | {:.2} |",
            p.num_params(),
            steps as f64 / n as f64
        );
    }
    Ok(())
}

/// The deployment loop's throughput on the headline workload (40
/// Blocksworld tasks of 3–6 blocks, MLP policy, 16 samples per task, 5
/// generations, seed 1): per method, traces per second of the loop proper
/// (sampling, judging, curating, updating) and of the whole run including
/// the exact per-generation measurements; then the wall time of the full
/// headline experiment (all seeds and arms, both cores).
pub fn loop_throughput() -> Result<()> {
    use crate::deploy::{self, ArmState, Method};
    use crate::experiment::{self, Resolved, RunOptions};
    let resolved = Resolved::parse(experiment::HEADLINE_SPEC, "experiments/headline.toml")?;
    let (full, demos) = experiment::build_workload(&resolved.spec)?;
    let work = full.without_base()?;
    let base =
        experiment::base_policy(&resolved.spec, &full, &demos, 1)?.for_task_prefix(&work.env);
    let states: usize = work.env.tasks.iter().map(|t| t.num_states()).sum();
    println!(
        "headline workload: {} deployed tasks, {states} states, {} actions, MLP with {} parameters; one core per run",
        work.env.tasks.len(),
        work.env.num_actions(),
        base.num_params()
    );
    println!(
        "| method | traces | loop s | loop traces/s | exact-measurement s | end-to-end traces/s |"
    );
    println!("|---|---|---|---|---|---|");
    for method in [
        Method::CuratedSft,
        Method::Raft,
        Method::IwSft,
        Method::Reinforce,
        Method::Rloo,
        Method::Grpo,
    ] {
        let mut arm = resolved.arms[0].clone();
        arm.method = method;
        if method == Method::IwSft {
            arm.start = deploy::Start::Continue;
        }
        let st = deploy::run_arm(
            &work,
            base.as_ref(),
            &arm,
            1,
            ArmState::fresh(base.as_ref()),
            |_| Ok(()),
        )?;
        let t = st.timings;
        println!(
            "| {method:?} | {} | {:.2} | {:.0} | {:.2} | {:.0} |",
            st.samples_drawn,
            t.loop_seconds,
            st.samples_drawn as f64 / t.loop_seconds,
            t.measure_seconds,
            st.samples_drawn as f64 / (t.loop_seconds + t.measure_seconds)
        );
    }
    let out = std::env::temp_dir().join(format!("iterdeploy-bench-loop-{}", std::process::id()));
    let start = Instant::now();
    let outcome = experiment::run(
        &resolved,
        &RunOptions {
            out_root: out.clone(),
            smoke: false,
            progress: false,
            pause_after: None,
        },
    )?;
    println!(
        "headline experiment ({} seeds × {} arms × {} generations, figures included): {:.1} s wall",
        resolved.spec.seeds.len(),
        resolved.arms.len(),
        resolved.arms[0].generations,
        start.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&outcome.dir).map_err(|e| crate::Error::io(&outcome.dir, e))?;
    Ok(())
}

/// Curation throughput: `samples` synthetic model outputs (reasoning text,
/// then a plan of ~50 steps, a quarter of them corrupted) over 100 generated
/// 12-block Blocksworld tasks, written as JSONL and curated end to end
/// (read, extract, validate, select, write SFT JSONL).
pub fn curate_throughput(samples: usize) -> Result<()> {
    use crate::bridge::TaskSet;
    use crate::bridge::curate::{Judge, read_generation, select, sft_jsonl, statistics};
    use crate::curation::{Pool, Rule};
    use crate::generate::{DomainKind, Params, generate};
    use rand::RngExt;
    let dir = std::env::temp_dir().join(format!("iterdeploy-bench-curate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let tasks = generate(
        kind,
        &mut Params::from_pairs(kind, &["blocks=12".to_string()])?,
        100,
        7,
    )?;
    std::fs::write(dir.join("domain.pddl"), kind.domain_pddl()).map_err(|e| Error::io(&dir, e))?;
    let mut plans = Vec::new();
    for t in &tasks {
        std::fs::write(dir.join(format!("{}.pddl", t.name)), &t.pddl)
            .map_err(|e| Error::io(&dir, e))?;
        let problem = crate::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain)?;
        let sol = crate::search::solve(
            &domain,
            &problem,
            crate::search::Algorithm::GbfsFf,
            Default::default(),
        )?;
        plans.push((
            t.name.clone(),
            sol.result.plan_names(&Task::ground(&domain, &problem)?),
        ));
    }
    let mean_len = plans.iter().map(|(_, p)| p.len()).sum::<usize>() as f64 / plans.len() as f64;
    let mut rng = crate::rng::seeded(3);
    let mut jsonl = String::new();
    let reasoning =
        "Let me think about which blocks are clear and what has to move first. ".repeat(8);
    for i in 0..samples {
        let (id, plan) = &plans[i % plans.len()];
        let mut steps = plan.clone();
        if rng.random_bool(0.25) && !steps.is_empty() {
            steps.remove(rng.random_range(0..steps.len()));
        }
        let body: String = steps
            .iter()
            .enumerate()
            .map(|(k, s)| format!("{}. {s}\n", k + 1))
            .collect();
        let text = format!("<think>{reasoning}</think>\nHere is the plan:\n{body}");
        jsonl.push_str(
            &serde_json::json!({"id": id, "text": text, "reasoning_tokens": 120}).to_string(),
        );
        jsonl.push('\n');
    }
    let gen_path = dir.join("gen0.jsonl");
    std::fs::write(&gen_path, &jsonl).map_err(|e| Error::io(&gen_path, e))?;
    let start = Instant::now();
    let set = TaskSet::load(&dir)?;
    let judge = Judge::new(&set);
    let (judged, bad) = read_generation(&gen_path, 0, &judge)?;
    let stats = statistics(0, "gen0", &judged, bad.len(), set.tasks.len());
    let gens = vec![judged];
    let kept = select(&gens, Rule::ShortestPerTask, Pool::Accumulate, 0);
    let out = sft_jsonl(
        &kept,
        &set,
        &crate::bridge::prompt::Template::default_template(),
    );
    crate::output::write_atomic(&dir.join("sft.jsonl"), out.as_bytes())?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "curated {samples} samples ({:.1} MB JSONL, mean plan length {mean_len:.1}, {} valid) in {secs:.2}s: {:.0} samples/s, {:.0} plan steps/s",
        jsonl.len() as f64 / 1e6,
        stats.valid,
        samples as f64 / secs,
        samples as f64 * mean_len / secs
    );
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// A*/h_max and GBFS/h_FF on `tasks` (at most `max_tasks` per domain and
/// split), ours beside Fast Downward and pyperplan when `peer_python` is
/// given; prints a markdown table per algorithm and the summed ratios.
pub fn compare_planners(
    tasks: &[BenchmarkTask],
    time_limit: f64,
    max_tasks: Option<usize>,
    peer_python: Option<&Path>,
) -> Result<()> {
    use crate::search::Algorithm;
    let mut per_group: std::collections::HashMap<(String, String), usize> = Default::default();
    let tasks: Vec<_> = tasks
        .iter()
        .filter(|t| {
            let n = per_group
                .entry((t.domain_name.clone(), t.split.clone()))
                .or_default();
            *n += 1;
            max_tasks.is_none_or(|m| *n <= m)
        })
        .collect();
    for algorithm in [Algorithm::AstarHmax, Algorithm::GbfsFf] {
        println!("\n### {algorithm:?} (time limit {}s per run)\n", time_limit);
        println!(
            "| task | ref len | ours len | ours exp | ours search s | ours total s | FD len | FD exp | FD search s | FD total s | pyperplan len | pyperplan exp | pyperplan search s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let mut solved = [0usize; 3];
        let mut longer_than_reference = 0usize;
        // Sums over tasks the pair both solved: (our exp, our s, their exp, their s, our total, their total).
        let mut vs_fd = [0.0f64; 6];
        let mut vs_pp = [0.0f64; 6];
        let cell = |r: &PlannerRun| -> [String; 3] {
            if r.solved {
                [
                    r.length.to_string(),
                    r.expanded.to_string(),
                    format!("{:.3}", r.search_seconds),
                ]
            } else {
                ["-".into(), "-".into(), "-".into()]
            }
        };
        for t in &tasks {
            let ours = plan_ours(t, algorithm, time_limit)?;
            let (fd, pp) = match &peer_python {
                Some(py) => (
                    plan_fast_downward(py, t, algorithm, time_limit)?,
                    plan_pyperplan(py, t, algorithm, time_limit)?,
                ),
                None => (PlannerRun::default(), PlannerRun::default()),
            };
            for (i, r) in [&ours, &fd, &pp].into_iter().enumerate() {
                solved[i] += r.solved as usize;
            }
            for (acc, other) in [(&mut vs_fd, &fd), (&mut vs_pp, &pp)] {
                if ours.solved && other.solved {
                    let add = [
                        ours.expanded as f64,
                        ours.search_seconds,
                        other.expanded as f64,
                        other.search_seconds,
                        ours.total_seconds,
                        other.total_seconds,
                    ];
                    for (a, b) in acc.iter_mut().zip(add) {
                        *a += b;
                    }
                }
            }
            let [ol, oe, os] = cell(&ours);
            let [fl, fe, fs] = cell(&fd);
            let [pl, pe, ps] = cell(&pp);
            let fd_total = if fd.solved {
                format!("{:.3}", fd.total_seconds)
            } else {
                "-".into()
            };
            let reference = match &t.plan {
                Some(p) => parse_ipc_plan(
                    &std::fs::read(p).map_err(|e| Error::io(p, e))?,
                    &p.display().to_string(),
                )?
                .steps
                .len()
                .to_string(),
                None => "-".into(),
            };
            if ours.solved && reference.parse::<usize>().is_ok_and(|r| ours.length > r) {
                longer_than_reference += 1;
            }
            println!(
                "| {}/{}/{} | {reference} | {ol} | {oe} | {os} | {:.3} | {fl} | {fe} | {fs} | {fd_total} | {pl} | {pe} | {ps} |",
                t.domain_name,
                t.split,
                t.problem.file_name().unwrap_or_default().to_string_lossy(),
                ours.total_seconds
            );
        }
        if peer_python.is_some() {
            println!(
                "\nsolved: iterdeploy {}, Fast Downward {}, pyperplan {} of {}",
                solved[0],
                solved[1],
                solved[2],
                tasks.len()
            );
        } else {
            println!(
                "\nsolved: iterdeploy {} of {}; Fast Downward and pyperplan not run (no --peer-python: `peers/setup-venv.sh` prints one)",
                solved[0],
                tasks.len()
            );
        }
        println!("iterdeploy plans longer than the reference plan: {longer_than_reference}");
        let rate = |exp: f64, secs: f64| exp / secs.max(1e-9);
        for (name, acc) in [("Fast Downward", vs_fd), ("pyperplan", vs_pp)] {
            if acc[2] > 0.0 {
                println!(
                    "vs {name} (tasks both solved): expansions/s iterdeploy {:.0}, {name} {:.0}, ratio {:.2}; end-to-end time ratio {:.2}x",
                    rate(acc[0], acc[1]),
                    rate(acc[2], acc[3]),
                    rate(acc[0], acc[1]) / rate(acc[2], acc[3]),
                    acc[5] / acc[4].max(1e-9)
                );
            }
        }
    }
    Ok(())
}

/// The model every transformer throughput figure is measured on: the
/// issue's reference size (2 layers, d_model 128, 4 heads, d_ff 512,
/// vocabulary 96, 256 positions: 450,176 parameters), f32.
pub const BENCH_TRANSFORMER: crate::policy::transformer::Config =
    crate::policy::transformer::Config {
        vocab: 96,
        d_model: 128,
        heads: 4,
        layers: 2,
        d_ff: 512,
        max_len: 256,
        f64: false,
        positions: crate::policy::transformer::Positions::Learned,
    };

/// Throughput of one side of the transformer benchmark, tokens per second.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct TransformerRates {
    pub train: f64,
    pub sample_cached: f64,
    pub sample_recompute: f64,
    /// The instruction set the side's kernels use (PyTorch:
    /// `torch.backends.cpu.get_cpu_capability()`).
    #[serde(default)]
    pub isa: String,
}

/// Same-round comparisons of ours with a peer, from (ours, peer) rates
/// per round: the median of the peer's rates and of the per-round ratios
/// ours / peer, and those ratios listed ("0.95, 1.16, 1.00").
pub(crate) struct RoundRatios {
    pub peer: f64,
    pub ratio: f64,
    pub list: String,
}

/// [`RoundRatios`] of `pairs`; `None` without any (no peer ran).
pub(crate) fn round_ratios(pairs: &[(f64, f64)]) -> Option<RoundRatios> {
    use crate::stats::median;
    if pairs.is_empty() {
        return None;
    }
    let ratios: Vec<f64> = pairs.iter().map(|&(o, p)| o / p).collect();
    Some(RoundRatios {
        peer: median(pairs.iter().map(|&(_, p)| p).collect()),
        list: ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        ratio: median(ratios),
    })
}

/// The CPU as /proc/cpuinfo names it, with its family, model and stepping
/// where it gives them (a name such as "AMD EPYC" covers several
/// generations: family 25 is Zen 3/4, family 26 Zen 5), or the
/// architecture elsewhere.
pub fn cpu_model() -> String {
    match std::fs::read_to_string("/proc/cpuinfo") {
        Ok(info) => cpu_model_in(&info),
        Err(_) => std::env::consts::ARCH.to_string(),
    }
}

/// [`cpu_model`] from the text of /proc/cpuinfo.
fn cpu_model_in(info: &str) -> String {
    let field = |key: &str| {
        info.lines()
            .take_while(|l| !l.trim().is_empty()) // the first processor only
            .find(|l| l.split(':').next().map(str::trim) == Some(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    match (field("cpu family"), field("model"), field("stepping")) {
        (Some(f), Some(m), Some(s)) => format!("{name} (family {f}, model {m}, stepping {s})"),
        _ => name,
    }
}

/// The widest vector instructions our matrix multiply (gemm, chosen at run
/// time) uses on this CPU.
pub fn our_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX512 (gemm x86-v4 kernels)";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA (gemm x86-v3 kernels)";
        }
        "SSE2 (gemm baseline kernels)"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// Workload of `bench transformer` (the same numbers go to the PyTorch
/// script): training steps on `train_batch` × `train_seq` random tokens
/// (AdamW, clip 1), and sampling `sample_batch` continuations of
/// `new_tokens` tokens after a `prompt` -token prompt, with and without
/// the key/value cache.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TransformerWorkload {
    pub train_batch: usize,
    pub train_seq: usize,
    pub train_steps: usize,
    pub sample_batch: usize,
    pub prompt: usize,
    pub new_tokens: usize,
    pub top_k: usize,
    /// Cached sampling is timed over this many batches in a row: one batch
    /// takes about 10 ms with the cache, too short to time alone on a
    /// shared machine (single-batch rounds ranged 1.9×–5.1× in one run).
    pub cached_repeats: usize,
}

pub const TRANSFORMER_WORKLOAD: TransformerWorkload = TransformerWorkload {
    train_batch: 8,
    train_seq: 128,
    train_steps: 40,
    sample_batch: 8,
    prompt: 32,
    new_tokens: 96,
    top_k: 20,
    cached_repeats: 20,
};

/// Our side: candle on the CPU, weights from our generator.
pub fn transformer_ours(work: &TransformerWorkload) -> Result<TransformerRates> {
    use crate::policy::transformer::model::{Weights, initial_params};
    use crate::policy::transformer::sampling::{Decode, Sampling, generate};
    use crate::policy::transformer::train::{AdamW, LmTrainer};
    use rand::RngExt;
    let cfg = BENCH_TRANSFORMER;
    let fail = |e: candle_core::Error| Error::Invalid(format!("transformer benchmark: {e}"));
    let mut rng = crate::rng::seeded(1);
    let theta = initial_params(&cfg, &mut rng);
    let random_tokens = |n: usize, rng: &mut crate::rng::Rng| -> Vec<u32> {
        (0..n)
            .map(|_| rng.random_range(0..cfg.vocab as u32))
            .collect()
    };
    let adamw = AdamW {
        learning_rate: 1e-3,
        weight_decay: 0.01,
        max_grad_norm: 1.0,
    };
    let device = candle_core::Device::Cpu;
    let mut trainer = LmTrainer::new(cfg, theta.clone(), adamw, &device).map_err(fail)?;
    let tokens = random_tokens(work.train_batch * work.train_seq, &mut rng);
    for _ in 0..2 {
        trainer.step(&tokens, work.train_batch).map_err(fail)?; // warm-up
    }
    let start = Instant::now();
    for _ in 0..work.train_steps {
        trainer.step(&tokens, work.train_batch).map_err(fail)?;
    }
    let train = (work.train_steps * work.train_batch * work.train_seq) as f64
        / start.elapsed().as_secs_f64();

    let w = Weights::from_flat(cfg, &theta, &device).map_err(fail)?;
    let prompt = random_tokens(work.prompt, &mut rng);
    let sampling = Sampling {
        temperature: 1.0,
        top_k: Some(work.top_k),
        top_p: None,
        max_new: work.new_tokens,
    };
    let mut rate = |decode, repeats: usize| -> Result<f64> {
        generate(&w, &prompt, 1, &[], &sampling, decode, &mut rng).map_err(fail)?; // warm-up
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..repeats {
            let rows = generate(
                &w,
                &prompt,
                work.sample_batch,
                &[],
                &sampling,
                decode,
                &mut rng,
            )
            .map_err(fail)?;
            n += rows.iter().map(Vec::len).sum::<usize>();
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    Ok(TransformerRates {
        sample_cached: rate(Decode::KvCache, work.cached_repeats)?,
        sample_recompute: rate(Decode::Recompute, 1)?,
        train,
        isa: our_isa().to_string(),
    })
}

/// The peer: `peers/torch_transformer.py`, the same architecture, batch and
/// workload in PyTorch (CPU, f32, its default threads).
pub fn transformer_torch(python: &Path, work: &TransformerWorkload) -> Result<TransformerRates> {
    let args = serde_json::json!({ "model": BENCH_TRANSFORMER, "work": work });
    run_peer_script(python, "torch_transformer.py", &[&args.to_string()])
}

/// Runs `peers/<script>` with `args` under `python` and reads the one JSON
/// object it prints; a failure or unreadable output names the script and
/// carries what it printed.
fn run_peer_script<T: serde::de::DeserializeOwned>(
    python: &Path,
    script: &str,
    args: &[&str],
) -> Result<T> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(script);
    // The script and its mode arguments (not the JSON payload).
    let modes: String = args
        .iter()
        .filter(|a| !a.starts_with('{'))
        .map(|a| format!(" {a}"))
        .collect();
    let what = format!("{}{modes}", path.display());
    let out = Command::new(python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| Error::io(python, e))?;
    if !out.status.success() {
        // A peer that dies by a signal (llama-cpp-python's SIGSEGV on one
        // Xeon) writes nothing to stderr: say how it ended.
        use std::os::unix::process::ExitStatusExt;
        let how = match (out.status.code(), out.status.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig}{}", signal_name(sig)),
            (None, None) => "failed".to_string(),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::Invalid(format!(
            "{what} {how}: {}",
            if stderr.trim().is_empty() {
                "(nothing on stderr)".into()
            } else {
                stderr
            }
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::Invalid(format!(
            "{what}: unreadable output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// " (SIGSEGV)" for the signals a crashing peer dies of, "" otherwise.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => " (SIGILL: an instruction this CPU lacks?)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        9 => " (SIGKILL: out of memory?)",
        11 => " (SIGSEGV)",
        _ => "",
    }
}

/// Rounds of `bench transformer`: ours then PyTorch, alternating, so both
/// see the same drift in machine load; ratios are taken within a round.
pub const TRANSFORMER_ROUNDS: usize = 3;

/// `bench transformer`: training and sampling tokens/s of candle beside
/// PyTorch (when the peers' Python has torch), and the KV cache's speed-up,
/// over [`TRANSFORMER_ROUNDS`] alternating rounds: medians of each side's
/// rate and of the same-round ratios.
pub fn transformer_throughput(peer_python: Option<&Path>) -> Result<()> {
    use crate::stats::median;
    let work = TRANSFORMER_WORKLOAD;
    println!(
        "model: {} parameters (2 layers, d_model 128, 4 heads, d_ff 512), f32, CPU; \
         {} training steps on {}×{} tokens; sampling {} × {} new tokens after a {}-token prompt, top-k {} \
         (with the cache: {} batches in a row); {} alternating rounds, medians",
        BENCH_TRANSFORMER.num_params(),
        work.train_steps,
        work.train_batch,
        work.train_seq,
        work.sample_batch,
        work.new_tokens,
        work.prompt,
        work.top_k,
        work.cached_repeats,
        TRANSFORMER_ROUNDS
    );
    println!("CPU: {}; iterdeploy: {}", cpu_model(), our_isa());
    let mut rounds = Vec::new();
    for _ in 0..TRANSFORMER_ROUNDS {
        let ours = transformer_ours(&work)?;
        let peer = peer_python
            .map(|py| transformer_torch(py, &work))
            .transpose()?;
        rounds.push((ours, peer));
    }
    match rounds.iter().find_map(|(_, p)| p.as_ref()) {
        Some(p) => println!("PyTorch: get_cpu_capability() = {}", p.isa),
        None => {
            println!("PyTorch: not run (no --peer-python); the columns below show iterdeploy alone")
        }
    }
    println!(
        "| measure | iterdeploy (candle) tokens/s | PyTorch tokens/s | candle / PyTorch | ratio per round |"
    );
    println!("|---|---|---|---|---|");
    let row = |name: &str, pick: fn(&TransformerRates) -> f64| {
        let ours = median(rounds.iter().map(|(o, _)| pick(o)).collect());
        let peers: Vec<(f64, f64)> = rounds
            .iter()
            .filter_map(|(o, p)| p.as_ref().map(|p| (pick(o), pick(p))))
            .collect();
        match round_ratios(&peers) {
            None => println!("| {name} | {ours:.0} | — | — | — |"),
            Some(r) => println!(
                "| {name} | {ours:.0} | {:.0} | {:.2} | {} |",
                r.peer, r.ratio, r.list
            ),
        }
    };
    row("training (fwd + bwd + AdamW)", |r| r.train);
    row("sampling, KV cache", |r| r.sample_cached);
    row("sampling, no cache", |r| r.sample_recompute);
    let speed_up = |r: &TransformerRates| r.sample_cached / r.sample_recompute;
    println!(
        "\nKV cache speed-up (iterdeploy): {:.1}x",
        median(rounds.iter().map(|(o, _)| speed_up(o)).collect())
    );
    if peer_python.is_some() {
        println!(
            "KV cache speed-up (PyTorch): {:.1}x",
            median(
                rounds
                    .iter()
                    .filter_map(|(_, p)| p.as_ref().map(speed_up))
                    .collect()
            )
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A peer that dies by a signal with nothing on stderr (llama-cpp on
    /// one Xeon) is reported with the signal, not as "failed:" and
    /// nothing after it (issue 27, item 5).
    #[test]
    fn a_peer_killed_by_a_signal_says_so() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("iterdeploy-peer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("python");
        std::fs::write(&fake, "#!/bin/sh\nkill -SEGV $$\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = super::run_peer_script::<serde_json::Value>(
            &fake,
            "pretrained_peers.py",
            &["llama-cpp"],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pretrained_peers.py llama-cpp was killed by signal 11 (SIGSEGV): (nothing on stderr)"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The CPU line names family, model and stepping of the first
    /// processor (two CPUs sharing a marketing name stay apart), and falls
    /// back to the name alone.
    #[test]
    fn the_cpu_line_tells_generations_apart() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n\
                    model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 25\n";
        assert_eq!(
            super::cpu_model_in(info),
            "AMD EPYC (family 26, model 2, stepping 1)"
        );
        assert_eq!(super::cpu_model_in("model name\t: Some CPU\n"), "Some CPU");
    }
}
