//! Differential check against an independent validator (unified-planning's
//! `sequential_plan_validator`, run by `peers/up_validate.py`) on corrupted
//! copies of the shared reference plans: a step dropped, two steps swapped,
//! an argument replaced by another object, an action renamed, a truncated
//! plan. Any disagreement on valid/invalid fails the test.
//!
//! Needs the peers' venv: `peers/differential.sh` creates it and runs this
//! test with `ITERDEPLOY_PEER_PYTHON` set.

use crate::common::{ipc_benchmarks, read};
use iterdeploy::pddl::Domain;
use iterdeploy::plan::{PlanStep, StepSyntax, parse_ipc_plan};
use iterdeploy::validate::Validator;
use rand::RngExt;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug)]
enum Corruption {
    DropStep,
    SwapSteps,
    ReplaceArgument,
    RenameAction,
    Truncate,
}

const ALL: [Corruption; 5] = [
    Corruption::DropStep,
    Corruption::SwapSteps,
    Corruption::ReplaceArgument,
    Corruption::RenameAction,
    Corruption::Truncate,
];

fn action_parts(step: &PlanStep) -> (String, Vec<String>) {
    match &step.syntax {
        StepSyntax::Action { name, args } => (name.clone(), args.clone()),
        StepSyntax::Unparseable { .. } => unreachable!("reference plans parse"),
    }
}

fn render(name: &str, args: &[String]) -> String {
    let mut s = format!("({name}");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s + ")"
}

/// One corrupted copy of `steps`, as plan text.
fn corrupt(
    kind: Corruption,
    steps: &[PlanStep],
    domain: &Domain,
    objects: &[String],
    rng: &mut iterdeploy::rng::Rng,
) -> String {
    let mut lines: Vec<(String, Vec<String>)> = steps.iter().map(action_parts).collect();
    let n = lines.len();
    match kind {
        Corruption::DropStep => {
            lines.remove(rng.random_range(0..n));
        }
        Corruption::SwapSteps if n >= 2 => {
            let i = rng.random_range(0..n - 1);
            let j = rng.random_range(i + 1..n);
            lines.swap(i, j);
        }
        Corruption::ReplaceArgument => {
            let with_args: Vec<usize> = (0..n).filter(|&i| !lines[i].1.is_empty()).collect();
            if let Some(&i) = with_args.get(rng.random_range(0..with_args.len().max(1))) {
                let k = rng.random_range(0..lines[i].1.len());
                lines[i].1[k] = objects[rng.random_range(0..objects.len())].clone();
            }
        }
        Corruption::RenameAction => {
            let i = rng.random_range(0..n);
            let names: Vec<&str> = domain.actions.iter().map(|a| a.name.as_str()).collect();
            let new = names[rng.random_range(0..names.len())];
            lines[i].0 = if new == lines[i].0 {
                format!("{new}-renamed")
            } else {
                new.to_string()
            };
        }
        Corruption::Truncate | Corruption::SwapSteps => {
            lines.truncate(rng.random_range(0..n));
        }
    }
    let mut text = String::new();
    for (name, args) in &lines {
        writeln!(text, "{}", render(name, args)).unwrap();
    }
    text
}

#[test]
#[ignore = "needs the peers' Python venv; run peers/differential.sh"]
fn differential_against_unified_planning() {
    let python = std::env::var("ITERDEPLOY_PEER_PYTHON")
        .expect("set ITERDEPLOY_PEER_PYTHON (peers/differential.sh does)");
    let Some(root) = ipc_benchmarks() else { return };
    let per_plan: usize = std::env::var("ITERDEPLOY_CORRUPTIONS_PER_PLAN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("iterdeploy-differential-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tasks = iterdeploy::benchmarks::collect(&root).unwrap();
    let mut rng = iterdeploy::rng::seeded(2026);
    let mut manifest = String::new();
    let mut ours = Vec::new();
    let mut labels = Vec::new();
    let mut domains: std::collections::HashMap<_, Domain> = Default::default();
    for (t_idx, t) in tasks
        .iter()
        .filter(|t| t.split.ends_with("easy"))
        .enumerate()
    {
        let domain = domains
            .entry(t.domain.clone())
            .or_insert_with(|| iterdeploy::pddl::read_domain(&t.domain).unwrap());
        let problem = iterdeploy::pddl::read_problem(&t.problem, domain).unwrap();
        let plan = parse_ipc_plan(&read(t.plan.as_ref().unwrap()), "plan").unwrap();
        let objects: Vec<String> = problem.objects.iter().map(|o| o.name.clone()).collect();
        let validator = Validator::new(domain, &problem);
        let mut variants = vec![("original".to_string(), plan_text(&plan.steps))];
        for c in 0..per_plan {
            let kind = ALL[(t_idx * per_plan + c) % ALL.len()];
            variants.push((
                format!("{kind:?}"),
                corrupt(kind, &plan.steps, domain, &objects, &mut rng),
            ));
        }
        for (k, (label, text)) in variants.into_iter().enumerate() {
            let path = dir.join(format!("{t_idx:04}-{k}.plan"));
            std::fs::write(&path, &text).unwrap();
            let steps = parse_ipc_plan(text.as_bytes(), "x").unwrap().steps;
            ours.push(validator.validate(&steps));
            labels.push(format!("{} {label}", t.problem.display()));
            writeln!(
                manifest,
                "{}\t{}\t{}",
                t.domain.display(),
                t.problem.display(),
                path.display()
            )
            .unwrap();
        }
    }
    let manifest_path = dir.join("manifest.tsv");
    std::fs::write(&manifest_path, &manifest).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/up_validate.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&manifest_path)
        .output()
        .expect("running the unified-planning oracle");
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        theirs.len(),
        ours.len(),
        "oracle answered a different number of plans"
    );
    let mut disagreements = Vec::new();
    let (mut invalid, mut valid) = (0, 0);
    for ((v, t), label) in ours.iter().zip(&theirs).zip(&labels) {
        let their_valid = t == "valid";
        if v.valid {
            valid += 1
        } else {
            invalid += 1
        }
        if v.valid != their_valid {
            disagreements.push(format!(
                "{label}: ours {} ({:?}), theirs {t}",
                v.valid, v.failure
            ));
        }
    }
    eprintln!(
        "differential: {} plans ({valid} valid, {invalid} invalid by iterdeploy), {} disagreements",
        ours.len(),
        disagreements.len()
    );
    std::fs::remove_dir_all(&dir).ok();
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    assert!(
        ours.len() >= 2000 && invalid >= 1000,
        "too few plans to mean anything"
    );
}

fn plan_text(steps: &[PlanStep]) -> String {
    steps.iter().map(|s| s.text.clone() + "\n").collect()
}
