//! Command-line front end: clap types and their conversion into library
//! calls. No planning logic lives here.

use std::fmt::Write as _;
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
    /// Main job only: run the headline experiment at smoke size (seconds).
    #[arg(long)]
    pub smoke: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate plans against a PDDL domain and problem (exit 0: all valid,
    /// 1: some invalid, 2: bad input).
    Validate(ValidateArgs),
    /// Ground a task and print its size (facts, operators, reachability).
    Ground(GroundArgs),
    /// Check every SFT <-> REINFORCE claim of proofs/ numerically (exit 1 if
    /// any fails).
    Verify(VerifyArgs),
    /// For students: one tiny deployment worked through by hand — every
    /// valid trace with π(y), ∇J, one batch's SFT and REINFORCE gradients
    /// side by side (docs/tutorial.md walks through it)
    Explain(ExplainArgs),
    /// Generate seeded problems (and their plans) for a shipped domain.
    Generate(GenerateArgs),
    /// Find plans with the reference planner; every plan written validates.
    Plan(PlanArgs),
    /// Write one chat prompt per task as JSONL, for a sampling engine.
    Prompts(PromptsArgs),
    /// Validate model outputs (JSONL per generation) and write the curated
    /// SFT set as chat JSONL, with per-generation statistics.
    Curate(CurateArgs),
    /// Measure throughput beside the named peer, in the same run.
    Bench(BenchArgs),
    /// Run experiment specs (TOML, see experiments/) and write
    /// plots/<id>/: resolved spec, CSVs, PNG+SVG figures, summary.md.
    Run(RunArgs),
    /// Per-generation table and figures of a real run (RUN_DIR with
    /// gen0.jsonl, gen1.jsonl, … and tasks/), in the simulator's metrics.
    Report(ReportArgs),
    /// One figure with the arms of several experiments (plots/<id> dirs),
    /// e.g. the transformer and MLP twins of one spec.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Output directories of deployment experiments.
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// Metric of summary.csv (bucket `all`).
    #[arg(long, default_value = "success_prob")]
    pub metric: String,
    #[arg(long, default_value = "plots/compare")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory with gen0.jsonl, gen1.jsonl, … (and tasks/ unless --tasks).
    pub run_dir: PathBuf,
    /// The tasks (directory with domain.pddl, or a manifest.csv).
    #[arg(long)]
    pub tasks: Option<PathBuf>,
    /// Simulation output directories (plots/<id>) to overlay.
    #[arg(long)]
    pub overlay: Vec<PathBuf>,
    /// Output directory [default: RUN_DIR-report, beside the run folder].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// One or more spec files.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// A quick, scaled-down run (2 seeds, 2 generations, 2 tasks per
    /// bucket; a pretrained model: 1 seed, 1 generation after gen 0, one
    /// sample budget of 2-4 per task for every arm), written to
    /// `<out>/<id>-smoke/` so it never replaces a full run's results; its
    /// titles and summary state its real size.
    #[arg(long)]
    pub smoke: bool,
    /// Parent directory of the outputs.
    #[arg(long, default_value = "plots")]
    pub out: PathBuf,
    /// No progress bar on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after measuring K generations, keeping checkpoints; rerun
    /// without it to resume.
    #[arg(long, value_name = "K")]
    pub pause_after: Option<usize>,
}

#[derive(Args, Debug)]
pub struct PromptsArgs {
    /// A directory with domain.pddl and problem files, or a manifest.csv.
    #[arg(long)]
    pub tasks: PathBuf,
    /// User-message template with {domain} {problem} {task_id} {domain_name}.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// The prompts, one JSON object per line ("id", "domain",
    /// "problem_file", and "messages" in the chat format a sampling engine
    /// such as vLLM or TRL reads).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct CurateArgs {
    /// The tasks the samples answer (directory or manifest.csv).
    #[arg(long)]
    pub tasks: PathBuf,
    /// Model outputs, one JSONL file per generation, oldest first.
    #[arg(long, num_args = 1.., required = true)]
    pub generations: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "shortest")]
    pub rule: crate::curation::Rule,
    #[arg(long, value_enum, default_value = "accumulate")]
    pub pool: crate::curation::Pool,
    /// The prompt template the samples were generated with (default prompt otherwise).
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// Seed for `--rule one`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The SFT set; statistics go beside it as `<out>.stats.json`.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only these claims, any case, repeatable or comma-separated
    /// (`--claim p03`, `--claim P01,P09`); all by default.
    #[arg(long = "claim", value_delimiter = ',', value_name = "ID")]
    pub claims: Vec<String>,
    /// Run on your own task instead of the built-in settings: DOMAIN then
    /// one or more PROBLEM files of DOMAIN.
    #[arg(long, num_args = 2.., value_name = "FILE")]
    pub task: Vec<PathBuf>,
    /// Horizon (maximum plan length) for `--task`; at least the shortest
    /// plan of every task (verify says which is too short). Default 6.
    #[arg(long, requires = "task")]
    pub horizon: Option<usize>,
    /// Seed of the built-in policies' random initialisation, the
    /// behaviours' perturbations and the Monte-Carlo batches.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Write `verify.csv`, `verify.json` and the claims' figures (P01, P03,
    /// P06, and the curation rules against ∇J; PNG, SVG and CSV) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also check every claim on a small transformer (minutes, not seconds).
    #[arg(long)]
    pub transformer: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Explain your own tiny task instead of the toy chain: DOMAIN then one
    /// or more PROBLEM files (at most 40 valid traces per task).
    #[arg(long, num_args = 2.., value_name = "FILE")]
    pub task: Vec<PathBuf>,
    /// Horizon (maximum plan length) for `--task`. Default 6.
    #[arg(long, requires = "task")]
    pub horizon: Option<usize>,
    /// Samples per task in the batch of step 4.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Seed of the sampled batches.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// blocksworld, ferry, rovers or sokoban.
    pub domain: String,
    /// Generator parameters, e.g. `--param blocks=5` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// How many tasks to generate.
    #[arg(long, default_value_t = 10)]
    pub count: usize,
    /// Seed of the generator: task i uses its own stream of this seed, so
    /// the same seed and parameters give the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Directory for domain.pddl, the problems, their plans and
    /// manifest.csv (created if missing; written only once all succeed).
    #[arg(long)]
    pub out: PathBuf,
    /// Skip planning (no plans, no lengths in the manifest).
    #[arg(long)]
    pub no_plan: bool,
    /// A safety limit in seconds per planner run. Exceeding it is an
    /// error and writes nothing: whether a plan is optimal (A*) or from
    /// the greedy fallback is decided by an expansion limit (2,000,000),
    /// so the files never depend on the machine's speed or load.
    #[arg(long, default_value_t = 600.0)]
    pub time_limit: f64,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The PDDL domain file.
    pub domain: PathBuf,
    /// Problem files, directories of `*.pddl`, or `manifest.csv` files
    /// written by `generate`.
    #[arg(required = true)]
    pub problems: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "astar-hmax")]
    pub algorithm: crate::search::Algorithm,
    /// Shorthand for `--algorithm astar-hmax`.
    #[arg(long, conflicts_with_all = ["satisficing", "algorithm"])]
    pub optimal: bool,
    /// Shorthand for `--algorithm gbfs-ff`.
    #[arg(long, conflicts_with = "algorithm")]
    pub satisficing: bool,
    /// Seconds per problem; a problem not solved in time is reported as
    /// "no plan within the time limit" (exit code 1), and the others are
    /// still planned.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Node expansions per problem (machine-independent, unlike the time
    /// limit); exceeding it is reported as "no plan within the expansion
    /// limit" (exit code 1).
    #[arg(long)]
    pub expansion_limit: Option<u64>,
    /// Write `<problem>.plan` files and `plans.csv` here (always used when
    /// more than one problem is given).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub what: BenchTarget,
    /// The shared benchmark folder (domains with training/ and testing/).
    #[arg(long, default_value = "../shared/benchmarks/ipc2023-learning")]
    pub benchmarks: PathBuf,
    /// Python of the peers' venv (`peers/setup-venv.sh` prints it); without
    /// it only our side is measured.
    #[arg(long, env = "ITERDEPLOY_PEER_PYTHON")]
    pub peer_python: Option<PathBuf>,
    /// Restrict to these domains (comma-separated folder names).
    #[arg(long, value_delimiter = ',')]
    pub domains: Vec<String>,
    /// Restrict to these splits, e.g. `training/easy`.
    #[arg(long, value_delimiter = ',')]
    pub splits: Vec<String>,
    /// Seconds per planner run (`bench plan`).
    #[arg(long, default_value_t = 60.0)]
    pub time_limit: f64,
    /// At most this many tasks per domain and split (`bench plan`).
    #[arg(long)]
    pub max_tasks: Option<usize>,
    /// The model: a GGUF file or a Hugging Face directory (`bench
    /// pretrained` takes GGUF only; default: the GGUF file
    /// `peers/fetch-model.sh` caches).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The device checked beside the CPU (`bench device`): cuda, cuda:N,
    /// or cpu (a self-check).
    #[arg(long, default_value = "cuda")]
    pub device: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BenchTarget {
    /// Parse + validate every reference plan (peer: unified-planning).
    Validate,
    /// Parse + ground every task (peer: Fast Downward's translator).
    Ground,
    /// A*/h_max and GBFS/h_FF (peers: Fast Downward and pyperplan, same
    /// algorithm and heuristic).
    Plan,
    /// Exact DP gradients on the largest setting (6 blocks, 7057 states)
    /// and sampled traces per second (no peer).
    Exact,
    /// Curate 100k synthetic model outputs end to end (no peer).
    Curate,
    /// The deployment loop on the headline workload: traces per second of
    /// sampling + validation + update per method, and the headline
    /// experiment's wall time (no peer).
    Loop,
    /// The transformer: training and sampling tokens/s (peer: PyTorch on
    /// the same architecture and batch; `peers/setup-venv.sh --with-torch`)
    /// and the KV cache's speed-up.
    Transformer,
    /// The pretrained model: batched sampling tokens/s (peer: llama.cpp
    /// through llama-cpp-python) and LoRA training tokens/s (peer:
    /// PyTorch and peft), on one GGUF file and the same token ids
    /// (`peers/setup-venv.sh --with-llm`).
    Pretrained,
    /// The pretrained model on a second device (`--device`, a GPU) beside
    /// the CPU: log π and score agreement within stated tolerances
    /// (exit 1 if not), and prefill, decode and LoRA tokens/s on each.
    Device,
}

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The PDDL domain file.
    pub domain: PathBuf,
    /// The PDDL problem file the plans are for.
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
    /// The PDDL domain file.
    pub domain: PathBuf,
    /// The PDDL problem file to ground.
    pub problem: PathBuf,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => main_job(cli.smoke),
        Some(Command::Validate(args)) => validate_cmd(&args),
        Some(Command::Ground(args)) => ground_cmd(&args),
        Some(Command::Verify(args)) => verify_cmd(&args),
        Some(Command::Explain(args)) => explain_cmd(&args),
        Some(Command::Generate(args)) => generate_cmd(&args),
        Some(Command::Plan(args)) => plan_cmd(&args),
        Some(Command::Prompts(args)) => prompts_cmd(&args),
        Some(Command::Curate(args)) => curate_cmd(&args),
        Some(Command::Bench(args)) => bench_cmd(&args),
        Some(Command::Run(args)) => run_cmd(&args),
        Some(Command::Report(args)) => report_cmd(&args),
        Some(Command::Compare(args)) => {
            let c = crate::experiment::compare(&args.runs, &args.metric, &args.out)?;
            println!("wrote {} (+ .svg, .csv)", c.figure.display());
            match &c.tasks_differ {
                None => println!("every run deployed the same tasks"),
                Some(why) => println!("note: {why}; the curves are not on the same tasks"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The bundled example: a Blocksworld task and a plan for it.
pub mod bundled {
    pub const BLOCKSWORLD_DOMAIN: &str = include_str!("domains/blocksworld.pddl");
    pub const EXAMPLE_PROBLEM: &str = include_str!("domains/examples/blocksworld-4.pddl");
    pub const EXAMPLE_PLAN: &str = include_str!("domains/examples/blocksworld-4.plan");
}

fn main_job(smoke: bool) -> Result<ExitCode> {
    println!("== iterdeploy verify: every claim of proofs/ on the built-in settings ==");
    let verified = verify_cmd(&VerifyArgs {
        claims: Vec::new(),
        task: Vec::new(),
        horizon: None,
        seed: 2026,
        out: Some(PathBuf::from("plots/verify")),
        transformer: false,
    })?;
    println!();
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
    println!();
    println!(
        "== iterdeploy run experiments/headline.toml{}: curated deployment vs REINFORCE ==",
        if smoke { " --smoke" } else { "" }
    );
    let headline = crate::experiment::Resolved::parse(
        crate::experiment::HEADLINE_SPEC,
        "experiments/headline.toml",
    )?;
    let started = std::time::Instant::now();
    let outcome = crate::experiment::run(
        &headline,
        &crate::experiment::RunOptions {
            out_root: PathBuf::from("plots"),
            smoke,
            progress: true,
            pause_after: None,
        },
    )?;
    println!("{}", outcome.summary);
    println!(
        "figures: {}/{{{}}}.{{png,svg}} ({:.0} s); verification table: plots/verify/",
        outcome.dir.display(),
        outcome.figures.join(","),
        started.elapsed().as_secs_f64()
    );
    Ok(if verdict.valid && verified == ExitCode::SUCCESS {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        crate::input::read_bounded(std::io::stdin(), "standard input")
            .context("reading a plan from standard input")
    } else {
        Ok(crate::input::read_file(path)?)
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
    // Standard input can be read once; a second `-` would silently judge
    // an empty plan.
    if args.plans.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        anyhow::bail!("`-` (standard input) is given more than once; it can be read only once");
    }
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
            // Raw model output (prose around the plan) is what --extract is
            // for: the plan it would read, to compare with the IPC reading.
            let found = extract_plan(&String::from_utf8_lossy(&bytes), &|a| {
                domain.action(a).is_some()
            });
            let parsed = parse_ipc_plan(&bytes, &name).map_err(|e| {
                if found.steps.is_empty() {
                    anyhow::Error::from(e)
                } else {
                    anyhow::Error::from(e).context(format!(
                        "{name} is not an IPC plan file, but a plan of {} step(s) can be extracted from it: if it is model output, add --extract",
                        found.steps.len()
                    ))
                }
            })?;
            // Text that reads as a different plan once prose is skipped
            // is likely raw model output: say so beside the verdict.
            if !found.steps.is_empty() && found.steps != parsed.steps {
                eprintln!(
                    "note: {name} reads as raw model output (a plan of {} step(s) can be extracted from it, \
                     the IPC reading has {}): if it is, add --extract",
                    found.steps.len(),
                    parsed.steps.len()
                );
            }
            (parsed, None)
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

fn bench_cmd(args: &BenchArgs) -> Result<ExitCode> {
    // Checked for every target, so a bad value is never silently unused
    // and never reaches `Duration::from_secs_f64` (which panics on NaN).
    crate::limits::time_limit("--time-limit", args.time_limit)?;
    match args.what {
        BenchTarget::Exact => crate::bench::exact_throughput()?,
        BenchTarget::Curate => crate::bench::curate_throughput(100_000)?,
        BenchTarget::Loop => crate::bench::loop_throughput()?,
        BenchTarget::Transformer => {
            crate::bench::transformer_throughput(args.peer_python.as_deref())?
        }
        BenchTarget::Pretrained => {
            crate::bench::pretrained_throughput(&bench_model(args)?, args.peer_python.as_deref())?
        }
        BenchTarget::Device => {
            if !crate::bench::device_bench(&bench_model(args)?, &args.device)? {
                eprintln!("the devices disagree beyond the tolerances (table above)");
                return Ok(ExitCode::from(1));
            }
        }
        BenchTarget::Plan => crate::bench::compare_planners(
            &shared_tasks(args)?,
            args.time_limit,
            args.max_tasks,
            args.peer_python.as_deref(),
        )?,
        BenchTarget::Validate => bench_validate(args, &shared_tasks(args)?)?,
        BenchTarget::Ground => bench_ground(args, &shared_tasks(args)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `--model`, or the GGUF file `peers/fetch-model.sh` caches.
fn bench_model(args: &BenchArgs) -> Result<PathBuf> {
    match &args.model {
        Some(m) => Ok(m.clone()),
        None => crate::pretrained::cached_model().ok_or_else(|| {
            anyhow::anyhow!("no cached model: run peers/fetch-model.sh, or give --model FILE.gguf")
        }),
    }
}

/// The shared benchmark folder's tasks that pass `--domains` and `--splits`.
fn shared_tasks(args: &BenchArgs) -> Result<Vec<crate::benchmarks::BenchmarkTask>> {
    let tasks: Vec<_> = crate::benchmarks::collect(&args.benchmarks)?
        .into_iter()
        .filter(|t| args.domains.is_empty() || args.domains.contains(&t.domain_name))
        .filter(|t| args.splits.is_empty() || args.splits.contains(&t.split))
        .collect();
    if tasks.is_empty() {
        anyhow::bail!(
            "no tasks under {} match the filters",
            args.benchmarks.display()
        );
    }
    Ok(tasks)
}

/// `bench validate`: every reference plan, ours beside unified-planning.
fn bench_validate(args: &BenchArgs, tasks: &[crate::benchmarks::BenchmarkTask]) -> Result<()> {
    use crate::bench;
    let ours = bench::validate_all(tasks)?;
    println!("| tool | plans | steps | valid | seconds | plans/s | steps/s |");
    println!("|---|---|---|---|---|---|---|");
    let row = |name: &str, secs: f64, valid: usize| {
        println!(
            "| {name} | {} | {} | {valid} | {secs:.3} | {:.0} | {:.0} |",
            ours.plans,
            ours.steps,
            ours.plans as f64 / secs,
            ours.steps as f64 / secs
        )
    };
    row("iterdeploy", ours.seconds, ours.valid);
    if let Some(py) = &args.peer_python {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/up_validate.py");
        let (secs, valid) = bench::validate_all_peer(py, &script, tasks)?;
        row("unified-planning", secs, valid);
        println!("\nspeed-up (end to end): {:.0}x", secs / ours.seconds);
    }
    Ok(())
}

/// `bench ground`: every task, ours beside Fast Downward's translator.
fn bench_ground(args: &BenchArgs, tasks: &[crate::benchmarks::BenchmarkTask]) -> Result<()> {
    use crate::bench;
    println!("| task | facts | operators | iterdeploy s | FD operators | FD translate s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    let (mut ours_total, mut fd_total) = (0.0, 0.0);
    for t in tasks {
        let g = bench::ground_one(t)?;
        ours_total += g.seconds;
        let fd = match &args.peer_python {
            Some(py) => Some(bench::ground_one_fast_downward(py, t)?),
            None => None,
        };
        let (fd_ops, fd_secs, ratio) = match fd {
            Some((s, ops)) => {
                fd_total += s;
                (
                    ops.to_string(),
                    format!("{s:.3}"),
                    format!("{:.0}x", s / g.seconds),
                )
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {}/{}/{} | {} | {} | {:.4} | {fd_ops} | {fd_secs} | {ratio} |",
            t.domain_name,
            t.split,
            t.problem.file_name().unwrap_or_default().to_string_lossy(),
            g.facts,
            g.operators,
            g.seconds
        );
    }
    println!(
        "\ntotal: iterdeploy {ours_total:.3}s over {} tasks",
        tasks.len()
    );
    if args.peer_python.is_some() {
        println!(
            "total: Fast Downward translator {fd_total:.3}s; speed-up {:.0}x",
            fd_total / ours_total
        );
    }
    Ok(())
}

/// Expands directories and generator manifests into problem files.
fn problem_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "pddl"))
                .collect();
            files.sort();
            out.extend(files);
        } else if p.extension().is_some_and(|e| e == "csv") {
            let manifest = crate::generate::Manifest::read(p)?;
            let base = p.parent().unwrap_or(Path::new("."));
            out.extend(manifest.rows.iter().map(|r| base.join(&r.file)));
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn plan_cmd(args: &PlanArgs) -> Result<ExitCode> {
    use crate::search::{Algorithm, Limits, solve};
    let algorithm = if args.optimal {
        Algorithm::AstarHmax
    } else if args.satisficing {
        Algorithm::GbfsFf
    } else {
        args.algorithm
    };
    let time = args
        .time_limit
        .map(|t| crate::limits::time_limit("--time-limit", t))
        .transpose()?;
    let limits = Limits {
        time,
        expansions: args.expansion_limit,
    };
    let domain = read_domain(&args.domain)?;
    // A folder `generate` wrote holds domain.pddl beside the problems.
    let domain_file = crate::output::resolved(&args.domain);
    let problems: Vec<PathBuf> = problem_files(&args.problems)?
        .into_iter()
        .filter(|p| crate::output::resolved(p) != domain_file)
        .collect();
    let out_dir = match (&args.out, problems.len()) {
        (Some(d), _) => Some(d.clone()),
        (None, 1) => None,
        (None, _) => anyhow::bail!("several problems need --out DIR for their plans"),
    };
    if let Some(d) = &out_dir {
        let mut outputs: Vec<PathBuf> = vec![d.join("plans.csv")];
        outputs.extend(problems.iter().map(|p| d.join(plan_name(p))));
        let mut inputs: Vec<&Path> = vec![args.domain.as_path()];
        inputs.extend(problems.iter().map(PathBuf::as_path));
        crate::output::refuse_overwriting_inputs(
            &outputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
            &inputs,
        )?;
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut csv = String::from(
        "problem,outcome,length,cost,expanded,generated,evaluated,seconds,facts,operators\n",
    );
    let mut all_solved = true;
    let mut failed = 0usize;
    for path in &problems {
        // A problem that cannot be read or searched is a row of plans.csv
        // (outcome `error`), and the others are still planned.
        let solved = read_problem(path, &domain)
            .and_then(|problem| solve(&domain, &problem, algorithm, limits));
        let sol = match solved {
            Ok(sol) => sol,
            Err(e) => {
                eprintln!("{}: error: {e:#}", path.display());
                let _ = writeln!(
                    csv,
                    "{},error,,,,,,,,",
                    crate::output::csv_field(&plan_stem(path))
                );
                failed += 1;
                all_solved = false;
                continue;
            }
        };
        let r = &sol.result;
        all_solved &= sol.ipc_text.is_some();
        let stem = plan_stem(path);
        csv += &format!(
            "{stem},{},{},{},{},{},{},{:.4},{},{}\n",
            serde_json::to_value(&r.outcome)?.as_str().unwrap_or("?"),
            r.plan.len(),
            r.cost,
            r.stats.expanded,
            r.stats.generated,
            r.stats.evaluated,
            r.stats.seconds,
            sol.facts,
            sol.operators
        );
        // A plan's length and cost only when there is one.
        let plan = if r.outcome == crate::search::Outcome::Solved {
            format!(", length {}, cost {}", r.plan.len(), r.cost)
        } else {
            String::new()
        };
        eprintln!(
            "{}: {}{plan}; expanded {}, generated {}, evaluated {}, {:.3}s, {} states stored ({} KiB), peak RSS {}",
            path.display(),
            r.outcome.label(),
            r.stats.expanded,
            r.stats.generated,
            r.stats.evaluated,
            r.stats.seconds,
            r.stats.stored_states,
            r.stats.registry_bytes / 1024,
            r.stats
                .peak_rss_bytes
                .map_or("?".into(), |b| format!("{} MiB", b >> 20)),
        );
        match (&out_dir, &sol.ipc_text) {
            (Some(d), Some(text)) => {
                crate::output::write_atomic(&d.join(plan_name(path)), text.as_bytes())?
            }
            (None, Some(text)) => print!("{text}"),
            (_, None) => {}
        }
    }
    if let Some(d) = &out_dir {
        crate::output::write_atomic(&d.join("plans.csv"), csv.as_bytes())?;
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} problem(s) could not be planned (see above{})",
            problems.len(),
            out_dir.as_ref().map_or(String::new(), |d| format!(
                "; their rows in {} say `error`",
                d.join("plans.csv").display()
            ))
        );
    }
    Ok(if all_solved {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A problem file's name without its extension: its row in plans.csv.
fn plan_stem(path: &Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The plan file `plan --out DIR` writes for a problem.
fn plan_name(path: &Path) -> String {
    format!("{}.plan", plan_stem(path))
}

/// Expansions each planner may use per generated task: what decides
/// whether the manifest's plan is optimal (A*) or the greedy fallback's,
/// independently of the machine's speed or load.
const GENERATE_EXPANSIONS: u64 = 2_000_000;

fn generate_cmd(args: &GenerateArgs) -> Result<ExitCode> {
    use crate::generate::{DomainKind, Manifest, ManifestRow, Params, generate};
    use crate::output::write_atomic;
    use crate::search::{Algorithm, Limits, solve};
    let kind = DomainKind::from_name(&args.domain)?;
    if args.count == 0 {
        anyhow::bail!("--count must be at least 1");
    }
    crate::limits::check_count(
        "--count",
        args.count,
        crate::limits::MAX_TASKS,
        "every task is generated and planned before anything is written",
    )?;
    let time_limit = crate::limits::time_limit("--time-limit", args.time_limit)?;
    let mut params = Params::from_pairs(kind, &args.params)?;
    // The output directory exists before any work, and nothing is written
    // into it until every task is generated and planned: a failure leaves
    // no task set without its manifest.
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let tasks = generate(kind, &mut params, args.count, args.seed)?;
    let domain = kind.parse_domain();
    let mut manifest = Manifest::default();
    let mut plans: Vec<Option<String>> = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.iter().enumerate() {
        let mut row = ManifestRow {
            file: format!("{}.pddl", t.name),
            domain: kind.name().to_string(),
            seed: args.seed,
            index: i,
            params: t.params.clone(),
            plan_length: None,
            plan_optimal: false,
        };
        let mut plan_text = None;
        if !args.no_plan {
            let problem = crate::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain)?;
            // Expansion limits decide what is written (optimal or not), so
            // the set is a function of the seed and parameters alone; the
            // time limit only aborts, with an error, never changes a plan.
            let limits = Limits {
                time: Some(time_limit),
                expansions: Some(GENERATE_EXPANSIONS),
            };
            // One planner run; hitting the time limit aborts the command.
            let run = |algorithm| -> Result<crate::search::Solution> {
                let sol = solve(&domain, &problem, algorithm, limits)?;
                if sol.result.outcome == crate::search::Outcome::TimeLimit {
                    anyhow::bail!(
                        "{}: planning hit --time-limit {}s before its expansion limit; nothing was written (raise --time-limit)",
                        t.name,
                        args.time_limit
                    );
                }
                Ok(sol)
            };
            let mut sol = run(Algorithm::AstarHmax)?;
            row.plan_optimal = sol.ipc_text.is_some();
            if sol.ipc_text.is_none() {
                sol = run(Algorithm::GbfsFf)?;
            }
            let text = sol.ipc_text.ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no plan found within {GENERATE_EXPANSIONS} expansions (is the task solvable?); nothing was written",
                    t.name
                )
            })?;
            row.plan_length = Some(sol.result.plan.len());
            plan_text = Some(text);
        }
        eprintln!(
            "{}: plan length {}{}",
            t.name,
            row.plan_length.map_or("-".into(), |l| l.to_string()),
            if row.plan_optimal { " (optimal)" } else { "" }
        );
        manifest.rows.push(row);
        plans.push(plan_text);
    }
    write_atomic(&args.out.join("domain.pddl"), kind.domain_pddl().as_bytes())?;
    for (t, plan) in tasks.iter().zip(&plans) {
        write_atomic(
            &args.out.join(format!("{}.pddl", t.name)),
            t.pddl.as_bytes(),
        )?;
        if let Some(text) = plan {
            write_atomic(&args.out.join(format!("{}.plan", t.name)), text.as_bytes())?;
        }
    }
    write_atomic(&args.out.join("manifest.csv"), manifest.to_csv().as_bytes())?;
    println!(
        "wrote {} problem(s) and manifest.csv to {}",
        tasks.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The setting of `--task DOMAIN PROBLEM…` (and `--horizon`, default
/// [`crate::verify::settings::DEFAULT_TASK_HORIZON`]); None without `--task`.
fn user_setting(
    task: &[PathBuf],
    horizon: Option<usize>,
) -> Result<Option<crate::verify::Setting>> {
    let Some((domain, problems)) = task.split_first() else {
        return Ok(None);
    };
    let h = horizon.unwrap_or(crate::verify::settings::DEFAULT_TASK_HORIZON);
    Ok(Some(crate::verify::setting_from_files(
        domain, problems, h,
    )?))
}

fn explain_cmd(args: &ExplainArgs) -> Result<ExitCode> {
    if args.samples == 0 {
        anyhow::bail!("--samples must be at least 1");
    }
    crate::limits::check_count(
        "--samples",
        args.samples,
        10_000,
        "step 5 draws 2,000 batches of this size",
    )?;
    let setting = match user_setting(&args.task, args.horizon)? {
        None => crate::verify::settings::chain_setting()?,
        Some(s) => s,
    };
    let text = crate::explain::explain(&setting.env, args.samples, args.seed)?;
    print!("# {}\n\n{text}", setting.name);
    Ok(ExitCode::SUCCESS)
}

fn verify_cmd(args: &VerifyArgs) -> Result<ExitCode> {
    use crate::verify;
    let mut settings = match user_setting(&args.task, args.horizon)? {
        None => verify::default_settings()?,
        Some(s) => vec![s],
    };
    for s in &mut settings {
        s.transformer = args.transformer;
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let start = std::time::Instant::now();
    let checks = verify::run(&args.claims, &settings, args.seed)?;
    println!(
        "| claim | setting | policy | quantity | max abs err | max rel err (z for MC) | cosine | tolerance | status |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut csv = String::from(
        "claim,setting,policy,quantity,max_abs_error,max_rel_error,cosine,tolerance,status\n",
    );
    let num = |v: f64, digits: usize| {
        if v.is_nan() {
            "—".to_string()
        } else {
            format!("{v:.digits$e}")
        }
    };
    for c in &checks {
        let cosine = if c.cosine.is_nan() {
            "—".to_string()
        } else {
            format!("{:.6}", c.cosine)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {cosine} | {} | {} |",
            c.claim,
            c.setting.replace('|', "\\|"),
            c.policy,
            c.quantity.replace('|', "\\|"),
            num(c.max_abs_error, 3),
            num(c.max_rel_error, 3),
            c.tolerance,
            c.status.label()
        );
        let q = |s: &str| format!("\"{}\"", s.replace('"', "'"));
        // Undefined (NaN): an empty field, as for the cosine.
        let field = |v: f64| {
            if v.is_nan() {
                String::new()
            } else {
                format!("{v:e}")
            }
        };
        csv += &format!(
            "{},{},{},{},{},{},{},{},{}\n",
            c.claim,
            q(&c.setting),
            c.policy,
            q(&c.quantity),
            field(c.max_abs_error),
            field(c.max_rel_error),
            field(c.cosine),
            q(&c.tolerance),
            c.status.label()
        );
    }
    let count = |st: verify::Status| checks.iter().filter(|c| c.status == st).count();
    let (passed, failed) = (count(verify::Status::Pass), count(verify::Status::Fail));
    let (reported, skipped) = (
        count(verify::Status::Reported),
        count(verify::Status::Skipped),
    );
    println!(
        "\n{} rows: {passed} passed, {failed} failed, {reported} reported (measured, not asserted), {skipped} skipped ({:.1}s)",
        checks.len(),
        start.elapsed().as_secs_f64()
    );
    if skipped > 0 {
        println!("\nSkipped rows:");
        for c in checks
            .iter()
            .filter(|c| c.status == verify::Status::Skipped)
        {
            println!(
                "- {} / {} / {}: {}",
                c.claim, c.setting, c.policy, c.quantity
            );
        }
    }
    if passed + failed == 0 {
        return Err(anyhow::anyhow!(
            "verify: no check was asserted on these settings ({} reported, {skipped} skipped), so nothing was verified",
            reported
        ));
    }
    if let Some(dir) = &args.out {
        crate::output::write_atomic(&dir.join("verify.csv"), csv.as_bytes())?;
        crate::output::write_atomic(
            &dir.join("verify.json"),
            serde_json::to_string_pretty(&checks)?.as_bytes(),
        )?;
        println!("wrote {}/verify.csv and verify.json", dir.display());
        let figures = verify::figures::write(dir, &settings, args.seed)?;
        println!(
            "figures of the claims: {}/{{{}}}.{{png,svg,csv}}",
            dir.display(),
            figures.join(",")
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_template(path: &Option<PathBuf>) -> Result<crate::bridge::prompt::Template> {
    use crate::bridge::prompt::Template;
    Ok(match path {
        None => Template::default_template(),
        Some(p) => {
            let text = crate::input::read_text(p)?;
            Template::new(&text, &p.display().to_string())?
        }
    })
}

/// Creates the directory an output file goes into, before any work, so a
/// missing directory fails at once instead of after the work is done.
fn create_parent(out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

fn prompts_cmd(args: &PromptsArgs) -> Result<ExitCode> {
    let mut inputs = vec![args.tasks.as_path()];
    inputs.extend(args.template.as_deref());
    crate::output::refuse_overwriting_inputs(&[&args.out], &inputs)?;
    create_parent(&args.out)?;
    let set = crate::bridge::TaskSet::load(&args.tasks)?;
    let template = load_template(&args.template)?;
    let text = crate::bridge::prompt::prompts_jsonl(&template, &set);
    crate::output::write_atomic(&args.out, text.as_bytes())?;
    println!(
        "wrote {} prompt(s) to {}",
        set.tasks.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn curate_cmd(args: &CurateArgs) -> Result<ExitCode> {
    use crate::bridge::curate::{Judge, read_generation, select, sft_jsonl, statistics};
    let stats_path = PathBuf::from(format!("{}.stats.json", args.out.display()));
    let mut inputs: Vec<&Path> = vec![args.tasks.as_path()];
    inputs.extend(args.generations.iter().map(PathBuf::as_path));
    inputs.extend(args.template.as_deref());
    crate::output::refuse_overwriting_inputs(&[&args.out, &stats_path], &inputs)?;
    create_parent(&args.out)?;
    let set = crate::bridge::TaskSet::load(&args.tasks)?;
    let template = load_template(&args.template)?;
    let judge = Judge::new(&set);
    let mut generations = Vec::new();
    let mut stats = Vec::new();
    for (g, path) in args.generations.iter().enumerate() {
        let (samples, bad) = read_generation(path, g, &judge)?;
        for b in &bad {
            eprintln!("{}:{}: skipped: {}", b.file, b.line, b.reason);
        }
        stats.push(statistics(
            g,
            &path.display().to_string(),
            &samples,
            bad.len(),
            set.tasks.len(),
        ));
        generations.push(samples);
    }
    let kept = select(&generations, args.rule, args.pool, args.seed);
    crate::output::write_atomic(&args.out, sft_jsonl(&kept, &set, &template).as_bytes())?;
    crate::output::write_atomic(
        &stats_path,
        serde_json::to_string_pretty(&stats)?.as_bytes(),
    )?;
    println!(
        "| gen | samples | bad lines | plans found | valid | solved tasks | mean / min / max valid length | distinct valid plans | reasons |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in &stats {
        let lens = match (s.mean_valid_length, s.min_valid_length, s.max_valid_length) {
            (Some(m), Some(lo), Some(hi)) => format!("{m:.1} / {lo} / {hi}"),
            _ => "-".into(),
        };
        let reasons: Vec<String> = s.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "| {} | {} | {} | {} | {} | {}/{} | {lens} | {} | {} |",
            s.generation,
            s.samples,
            s.bad_lines,
            s.plans_found,
            s.valid,
            s.solved_tasks,
            s.tasks,
            s.distinct_valid_plans,
            reasons.join(", ")
        );
    }
    let solved: std::collections::HashSet<usize> =
        kept.iter().filter(|k| k.valid).map(|k| k.task).collect();
    println!(
        "\nkept {} sample(s) for {} task(s) (rule: {}, pool: {}) -> {}; statistics -> {}",
        kept.len(),
        solved.len(),
        args.rule.label(),
        args.pool.label(),
        args.out.display(),
        stats_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_cmd(args: &RunArgs) -> Result<ExitCode> {
    // Check every spec before running any, so a typo in the last one does
    // not surface after an hour.
    let specs = args
        .specs
        .iter()
        .map(|p| crate::experiment::Resolved::read(p))
        .collect::<crate::Result<Vec<_>>>()?;
    let opts = crate::experiment::RunOptions {
        out_root: args.out.clone(),
        smoke: args.smoke,
        progress: !args.quiet,
        pause_after: args.pause_after,
    };
    for (spec, path) in specs.iter().zip(&args.specs) {
        let started = std::time::Instant::now();
        let outcome = crate::experiment::run(spec, &opts)
            .with_context(|| format!("running {}", path.display()))?;
        if outcome.figures.is_empty() && opts.pause_after.is_some() {
            println!(
                "paused {} after {} generation(s); checkpoints in {}",
                path.display(),
                opts.pause_after.unwrap_or(0),
                outcome.dir.join("checkpoints").display()
            );
            continue;
        }
        println!("{}", outcome.summary);
        println!(
            "wrote {} ({} figure(s), {:.1} s)",
            outcome.dir.display(),
            outcome.figures.len(),
            started.elapsed().as_secs_f64()
        );
        // The memory estimate a pretrained spec was admitted on, beside
        // what the process used (its peak so far, this spec included).
        if let (Some(estimate), Some(peak)) = (
            crate::experiment::pretrained_memory_estimate(spec, args.smoke)?,
            crate::limits::peak_resident_bytes(),
        ) {
            println!(
                "memory: peak resident {:.2} GB; estimated {:.2} GB",
                peak as f64 / 1e9,
                estimate / 1e9
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(args: &ReportArgs) -> Result<ExitCode> {
    let r = crate::bridge::report::report(
        &args.run_dir,
        args.tasks.as_deref(),
        &args.overlay,
        args.out.as_deref(),
    )
    .with_context(|| format!("reporting {}", args.run_dir.display()))?;
    print!("{}", r.table);
    println!(
        "\n{} bad line(s) skipped; wrote {}{{results.csv,lengths.csv,summary.md,solved.png,lengths.png}} (+ .svg)",
        r.bad_lines,
        r.out.join("").display()
    );
    Ok(ExitCode::SUCCESS)
}
