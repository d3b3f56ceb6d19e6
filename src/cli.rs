//! Command-line front end: clap types and their conversion into library
//! calls. No planning logic lives here.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::extract::{Extraction, extract_plan};
use crate::pddl::{Domain, Problem, parse_domain, parse_problem, read_domain, read_problem};
use crate::plan::{Plan, parse_ipc_plan};
use crate::validate::{Validator, Verdict};

#[derive(Parser, Debug)]
#[command(
    name = "iterdeploy",
    version,
    about = "Iterative deployment of planners as RL with an implicit reward: validate, verify, simulate",
    long_about = "Without a subcommand, runs the main job on built-in defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate plans against a PDDL domain and problem (exit 0: all valid,
    /// 1: some invalid, 2: bad input).
    Validate(ValidateArgs),
    /// Ground a task and print its size (facts, operators, reachability).
    Ground(GroundArgs),
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    pub domain: PathBuf,
    pub problem: PathBuf,
    /// Plan files in IPC format (`-` reads standard input).
    #[arg(required = true)]
    pub plans: Vec<PathBuf>,
    /// Print one JSON array with a verdict object per plan.
    #[arg(long)]
    pub json: bool,
    /// Treat plan files as free-form model output and extract the plan.
    #[arg(long)]
    pub extract: bool,
}

#[derive(Args, Debug)]
pub struct GroundArgs {
    pub domain: PathBuf,
    pub problem: PathBuf,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => main_job(),
        Some(Command::Validate(args)) => validate_cmd(&args),
        Some(Command::Ground(args)) => ground_cmd(&args),
    }
}

/// The bundled example: a Blocksworld task and a plan for it.
pub mod bundled {
    pub const BLOCKSWORLD_DOMAIN: &str = include_str!("domains/blocksworld.pddl");
    pub const EXAMPLE_PROBLEM: &str = include_str!("domains/examples/blocksworld-4.pddl");
    pub const EXAMPLE_PLAN: &str = include_str!("domains/examples/blocksworld-4.plan");
}

fn main_job() -> Result<ExitCode> {
    let domain = parse_domain(
        bundled::BLOCKSWORLD_DOMAIN.as_bytes(),
        "<bundled blocksworld domain>",
    )?;
    let problem = parse_problem(
        bundled::EXAMPLE_PROBLEM.as_bytes(),
        "<bundled blocksworld-4 problem>",
        &domain,
    )?;
    let plan = parse_ipc_plan(
        bundled::EXAMPLE_PLAN.as_bytes(),
        "<bundled blocksworld-4 plan>",
    )?;
    let verdict = Validator::new(&domain, &problem).validate(&plan.steps);
    println!("iterdeploy: validating the bundled Blocksworld example (4 blocks)");
    for step in &plan.steps {
        println!("  {}", step.text);
    }
    println!("{}", human_line("bundled plan", &verdict, None));
    Ok(if verdict.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading a plan from standard input")?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn load_task(domain: &Path, problem: &Path) -> Result<(Domain, Problem)> {
    let d = read_domain(domain)?;
    let p = read_problem(problem, &d)?;
    Ok((d, p))
}

fn human_line(name: &str, v: &Verdict, extraction: Option<&Extraction>) -> String {
    let mut s = match (&v.failure, v.cost) {
        (None, Some(cost)) => format!("{name}: valid (length {}, cost {cost})", v.length),
        (Some(f), _) => {
            let at = f.line.map(|l| format!(" [line {l}]")).unwrap_or_default();
            format!("{name}: INVALID (length {}) {f}{at}", v.length)
        }
        (None, None) => unreachable!("a valid verdict always has a cost"),
    };
    if let Some(e) = extraction {
        if let Some((a, b)) = e.lines {
            s.push_str(&format!("\n  extracted lines {a}-{b}"));
        }
        for note in &e.notes {
            s.push_str(&format!("\n  note: {note}"));
        }
        if !e.skipped.is_empty() {
            s.push_str(&format!(
                "\n  skipped {} parenthesised line(s) and {} prose line(s)",
                e.skipped.len(),
                e.prose_lines
            ));
        }
    }
    s
}

fn validate_cmd(args: &ValidateArgs) -> Result<ExitCode> {
    let (domain, problem) = load_task(&args.domain, &args.problem)?;
    let validator = Validator::new(&domain, &problem);
    let mut all_valid = true;
    let mut json = Vec::new();
    for path in &args.plans {
        let name = if path.as_os_str() == "-" {
            "<stdin>".to_string()
        } else {
            path.display().to_string()
        };
        let bytes = read_input(path)?;
        let (plan, extraction) = if args.extract {
            let text = crate::pddl::check_text(&bytes, &name)?;
            let e = extract_plan(text, &|a| domain.action(a).is_some());
            (
                Plan {
                    steps: e.steps.clone(),
                    claimed_cost: None,
                },
                Some(e),
            )
        } else {
            (parse_ipc_plan(&bytes, &name)?, None)
        };
        let verdict = validator.validate(&plan.steps);
        all_valid &= verdict.valid;
        if args.json {
            let mut obj = serde_json::to_value(&verdict)?;
            obj["plan"] = serde_json::Value::String(name);
            if let Some(e) = &extraction {
                obj["extraction"] = serde_json::to_value(e)?;
            }
            json.push(obj);
        } else {
            println!("{}", human_line(&name, &verdict, extraction.as_ref()));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ground_cmd(args: &GroundArgs) -> Result<ExitCode> {
    let (domain, problem) = load_task(&args.domain, &args.problem)?;
    let start = std::time::Instant::now();
    let task = crate::task::Task::ground(&domain, &problem)?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "facts {}  operators {}  goal reachable (relaxed) {}  grounding {:.3}s",
        task.num_facts(),
        task.operators.len(),
        task.goal_reachable,
        secs
    );
    Ok(if task.goal_reachable {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
