//! The real binary: exit codes, messages on bad input, and the commands'
//! files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iterdeploy"))
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = bin();
    // Commands that write default outputs (plots/…) write into a scratch
    // directory, never into the checkout.
    cmd.current_dir(std::env::temp_dir());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    child.wait_with_output().unwrap()
}

/// Asserts the exit code and returns stderr (shown when the code differs).
fn exits(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{err}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    err
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iterdeploy-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn examples() -> (PathBuf, PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domains");
    (
        root.join("blocksworld.pddl"),
        root.join("examples/blocksworld-4.pddl"),
        root.join("examples/blocksworld-4.plan"),
    )
}

#[test]
fn main_job_without_arguments_validates_the_bundled_example() {
    // The main job at smoke size: verify, the bundled example, the headline.
    let dir = scratch("main-job");
    let out = bin().current_dir(&dir).arg("--smoke").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bundled plan: valid (length 8, cost 8)"));
    assert!(stdout.contains("| curated SFT (paper) |"), "{stdout}");
    // A smoke run has its own directory and says what it is.
    assert!(dir.join("plots/headline-smoke/success.png").is_file());
    assert!(dir.join("plots/headline-smoke/summary.csv").is_file());
    assert!(!dir.join("plots/headline").exists());
    let summary = std::fs::read_to_string(dir.join("plots/headline-smoke/summary.md")).unwrap();
    assert!(
        summary.contains("[smoke run: 2 seed(s), 2 generation(s)"),
        "{summary}"
    );
    assert!(dir.join("plots/verify").is_dir());
}

#[test]
fn validate_exit_codes_json_stdin_and_extract() {
    let (d, p, plan) = examples();
    let (d, p, plan) = (
        d.to_str().unwrap(),
        p.to_str().unwrap(),
        plan.to_str().unwrap(),
    );
    assert_eq!(run(&["validate", d, p, plan], None).status.code(), Some(0));
    let out = run(
        &["validate", d, p, plan, "-", "--json"],
        Some("(unstack a b)\n(stack a c)\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["valid"], true);
    assert_eq!(json[1]["valid"], false);
    assert_eq!(json[1]["failure"]["kind"], "unsatisfied_precondition");
    assert_eq!(json[1]["failure"]["step"], 2);
    assert_eq!(json[1]["failure"]["literals"][0], "(clear c)");
    let model_output = "<think>maybe (pickup a)?</think>\nHere is my plan:\n1. (unstack a b)\n2. (putdown a)\n3. (unstack b c)\n4. (stack b a)\n5. (unstack c d)\n6. (stack c b)\n7. (pickup d)\n8. (stack d c)\nDone!";
    let out = run(&["validate", d, p, "-", "--extract"], Some(model_output));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("extracted lines 3-10"));
}

#[test]
fn bad_input_exits_2_with_file_line_and_column() {
    let dir = scratch("bad");
    let bad = dir.join("bad-domain.pddl");
    std::fs::write(&bad, "(define (domain x)\n  (:predicates (p ?x)\n").unwrap();
    let (_, p, plan) = examples();
    let out = run(
        &[
            "validate",
            bad.to_str().unwrap(),
            p.to_str().unwrap(),
            plan.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad-domain.pddl:3:1: unbalanced '('"), "{err}");
    let bin_plan = dir.join("binary.plan");
    std::fs::write(&bin_plan, b"\x7fELF\x00\x01").unwrap();
    let (d, p, _) = examples();
    let out = run(
        &[
            "validate",
            d.to_str().unwrap(),
            p.to_str().unwrap(),
            bin_plan.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("binary.plan:1:5: not a text file"));
    let out = run(
        &[
            "validate",
            d.to_str().unwrap(),
            p.to_str().unwrap(),
            "/nonexistent/x.plan",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.plan"));
    let out = run(
        &[
            "generate",
            "sokoban",
            "--param",
            "boxes=0",
            "--out",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("parameter `boxes` must be an integer in 1..=100, got `0`")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generate_then_plan_a_manifest_writes_valid_plans_and_a_csv() {
    let dir = scratch("gen");
    let gen_dir = dir.join("tasks");
    let out = run(
        &[
            "generate",
            "blocksworld",
            "--param",
            "blocks=4",
            "--count",
            "3",
            "--seed",
            "9",
            "--out",
            gen_dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = iterdeploy::generate::Manifest::read(&gen_dir.join("manifest.csv")).unwrap();
    assert_eq!(manifest.rows.len(), 3);
    assert!(
        manifest
            .rows
            .iter()
            .all(|r| r.plan_optimal && r.plan_length.is_some())
    );
    let plans = dir.join("plans");
    let out = run(
        &[
            "plan",
            gen_dir.join("domain.pddl").to_str().unwrap(),
            gen_dir.join("manifest.csv").to_str().unwrap(),
            "--satisficing",
            "--out",
            plans.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(plans.join("plans.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    for row in &manifest.rows {
        let stem = row.file.trim_end_matches(".pddl");
        let out = run(
            &[
                "validate",
                gen_dir.join("domain.pddl").to_str().unwrap(),
                gen_dir.join(&row.file).to_str().unwrap(),
                plans.join(format!("{stem}.plan")).to_str().unwrap(),
                gen_dir.join(format!("{stem}.plan")).to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn verify_runs_claims_on_user_tasks_and_rejects_unknown_claims() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domains");
    let dir = scratch("verify");
    let out = run(
        &[
            "verify",
            "--claim",
            "P02",
            "--claim",
            "P04",
            "--task",
            root.join("blocksworld.pddl").to_str().unwrap(),
            root.join("examples/blocksworld-3a.pddl").to_str().unwrap(),
            root.join("examples/blocksworld-3b.pddl").to_str().unwrap(),
            "--horizon",
            "7",
            "--out",
            dir.to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| P02 |") && stdout.contains("| P04 |") && !stdout.contains("| P01 |")
    );
    let csv = std::fs::read_to_string(dir.join("verify.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",cosine,tolerance,status")
    );
    assert!(
        csv.lines().count() > 4
            && csv.lines().skip(1).all(|l| l.ends_with(",pass")
                || l.ends_with(",reported")
                || l.ends_with(",skipped"))
    );
    let out = run(&["verify", "--claim", "P99"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown claim `P99`"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `verify --task` never passes vacuously: no valid trace within the
/// horizon is an error naming the shortest plan; `--horizon` needs
/// `--task`; absurd horizons are errors, not panics; claim ids take any case
/// and comma lists.
#[test]
fn verify_refuses_settings_that_would_check_nothing() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bridge/tasks");
    let domain = fixtures.join("domain.pddl");
    let bw4 = fixtures.join("bw4.pddl");
    for h in ["0", "1", "6"] {
        let out = run(
            &[
                "verify",
                "--task",
                domain.to_str().unwrap(),
                bw4.to_str().unwrap(),
                "--horizon",
                h,
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "H={h}: {err}");
        assert!(
            err.contains("no valid plan within the horizon")
                && err.contains("its shortest plan has 8 steps"),
            "H={h}: {err}"
        );
    }
    let out = run(&["verify", "--horizon", "3"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--task"));
    let out = run(
        &[
            "verify",
            "--task",
            domain.to_str().unwrap(),
            bw4.to_str().unwrap(),
            "--horizon",
            "9223372036854775808",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("above the largest supported"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // p03 and comma lists; the summary counts every status.
    let out = run(&["verify", "--claim", "p3,P09"], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("| P03 |") && stdout.contains("| P09 |") && !stdout.contains("| P01 |")
    );
    assert!(
        stdout.contains(" reported (measured, not asserted), "),
        "{stdout}"
    );
}

/// Absurd time limits are clear errors, not panics, and `generate` writes
/// nothing when it refuses one (issue 15, item 1).
#[test]
fn absurd_time_limits_are_refused_before_any_work() {
    let (domain, problem, _) = examples();
    for t in ["1e20", "1e300", "nan", "0", "-3"] {
        let flag = format!("--time-limit={t}");
        let out = run(
            &[
                "plan",
                domain.to_str().unwrap(),
                problem.to_str().unwrap(),
                &flag,
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "plan --time-limit {t}: {err}");
        assert!(
            err.contains("--time-limit") && !err.contains("panicked"),
            "{err}"
        );
        let dir = scratch(&format!("gen-time-{t}"));
        let target = dir.join("out");
        let out = run(
            &[
                "generate",
                "blocksworld",
                "--count",
                "2",
                &flag,
                "--out",
                target.to_str().unwrap(),
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "generate --time-limit {t}: {err}"
        );
        assert!(
            err.contains("--time-limit") && !err.contains("panicked"),
            "{err}"
        );
        assert!(!target.exists(), "generate wrote files before refusing");
        std::fs::remove_dir_all(&dir).ok();
        // `bench` checks its limit whatever it measures (a NaN once
        // reached Duration::from_secs_f64 in `bench plan` and panicked).
        let out = run(&["bench", "plan", &flag], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "bench --time-limit {t}: {err}");
        assert!(err.contains("--time-limit"), "{err}");
    }
    // A task count that would run for days is refused up front, by name.
    let dir = scratch("gen-count");
    let target = dir.join("out");
    let out = run(
        &[
            "generate",
            "blocksworld",
            "--count",
            "100000000000",
            "--out",
            target.to_str().unwrap(),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--count = 100000000000"), "{err}");
    assert!(!target.exists(), "generate wrote files before refusing");
    std::fs::remove_dir_all(&dir).ok();
}

/// Same seed, same bytes, whatever the thread count: the plan writer's
/// smoke run (sampling, Monte-Carlo KL, training) writes identical
/// results.csv on 1, 2 and 3 threads (issue 15, item 5: its KL used to
/// differ by ~1e-7 between thread counts).
#[test]
fn the_plan_writer_gives_the_same_bytes_on_any_thread_count() {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("experiments/transformer-writer-blocksworld.toml");
    let mut results = Vec::new();
    for threads in ["1", "2", "3"] {
        let dir = scratch(&format!("threads-{threads}"));
        let out = bin()
            .current_dir(&dir)
            .env("RAYON_NUM_THREADS", threads)
            .args([
                "run",
                spec.to_str().unwrap(),
                "--smoke",
                "--out",
                dir.join("out").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let csv = std::fs::read_to_string(
            dir.join("out/transformer-writer-blocksworld-smoke/results.csv"),
        )
        .unwrap();
        assert!(csv.contains("kl_from_previous"));
        results.push(csv);
        std::fs::remove_dir_all(&dir).ok();
    }
    assert_eq!(results[0], results[1], "1 vs 2 threads");
    assert_eq!(results[0], results[2], "1 vs 3 threads");
}

/// A byte-order mark in PDDL and plan files is accepted (the plan stays
/// valid); standard input is read once; an endless input is refused, not
/// read until memory runs out (issue 15, item 4).
#[test]
fn inputs_with_a_bom_read_and_endless_or_repeated_inputs_are_refused() {
    let (domain, problem, plan) = examples();
    let dir = scratch("bom");
    let bom = |from: &Path, name: &str| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            [b"\xEF\xBB\xBF".as_slice(), &std::fs::read(from).unwrap()].concat(),
        )
        .unwrap();
        p
    };
    let (d, p, pl) = (
        bom(&domain, "d.pddl"),
        bom(&problem, "p.pddl"),
        bom(&plan, "x.plan"),
    );
    let out = run(
        &[
            "validate",
            d.to_str().unwrap(),
            p.to_str().unwrap(),
            pl.to_str().unwrap(),
        ],
        None,
    );
    exits(&out, 0);
    let text = std::fs::read_to_string(&plan).unwrap();
    let out = run(
        &[
            "validate",
            d.to_str().unwrap(),
            p.to_str().unwrap(),
            "-",
            "-",
        ],
        Some(&text),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("more than once"), "{err}");
    let out = run(
        &[
            "validate",
            d.to_str().unwrap(),
            p.to_str().unwrap(),
            "/dev/zero",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("larger than 256 MiB"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// An `--out` that is, or lies inside, an input is refused before anything
/// is written, and the input is left as it was (issue 15, item 3).
#[test]
fn outputs_never_overwrite_inputs() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bridge");
    let dir = scratch("overwrite");
    let copy = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    };
    let tasks = dir.join("tasks");
    for e in std::fs::read_dir(fixtures.join("tasks")).unwrap() {
        let e = e.unwrap();
        copy(&e.path(), &tasks.join(e.file_name()));
    }
    let gen0 = dir.join("gen0.jsonl");
    copy(&fixtures.join("gen0.jsonl"), &gen0);
    let before = std::fs::read(&gen0).unwrap();
    let domain_before = std::fs::read(tasks.join("domain.pddl")).unwrap();
    let (t, g) = (tasks.to_str().unwrap(), gen0.to_str().unwrap());
    for out in [
        g.to_string(),
        tasks.join("domain.pddl").to_str().unwrap().to_string(),
        format!("{}/../gen0.jsonl", t),
    ] {
        let o = run(
            &["curate", "--tasks", t, "--generations", g, "--out", &out],
            None,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "curate --out {out}: {err}");
        assert!(err.contains("would overwrite the input"), "{err}");
    }
    let o = run(
        &[
            "prompts",
            "--tasks",
            t,
            "--out",
            tasks.join("prompts.jsonl").to_str().unwrap(),
        ],
        None,
    );
    exits(&o, 2);
    assert_eq!(std::fs::read(&gen0).unwrap(), before);
    assert_eq!(
        std::fs::read(tasks.join("domain.pddl")).unwrap(),
        domain_before
    );
    assert!(!tasks.join("prompts.jsonl").exists());
    // A fresh output next to the inputs is fine.
    let o = run(
        &[
            "curate",
            "--tasks",
            t,
            "--generations",
            g,
            "--out",
            dir.join("sft.jsonl").to_str().unwrap(),
        ],
        None,
    );
    exits(&o, 0);
    std::fs::remove_dir_all(&dir).ok();
}

/// An I/O error is printed once, with the path (its text used to appear
/// twice: once in the message, once more as the error's source).
#[test]
fn io_errors_print_their_message_once() {
    let (domain, problem, _) = examples();
    let out = run(
        &[
            "validate",
            domain.to_str().unwrap(),
            problem.to_str().unwrap(),
            "/nonexistent/p.plan",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/nonexistent/p.plan"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// `generate` is a function of the seed and parameters alone: the time
/// limit never changes what is written (two very different limits give the
/// same bytes), and a limit too short to finish is an error that writes
/// nothing (issue 15, item 5).
#[test]
fn generated_sets_do_not_depend_on_the_clock() {
    let dir = scratch("gen-clock");
    let generate = |t: &str, out: &str| {
        run(
            &[
                "generate",
                "sokoban",
                "--param",
                "size=7",
                "--param",
                "boxes=2",
                "--count",
                "3",
                "--seed",
                "4",
                &format!("--time-limit={t}"),
                "--out",
                dir.join(out).to_str().unwrap(),
            ],
            None,
        )
    };
    let a = generate("600", "a");
    let b = generate("30", "b");
    exits(&a, 0);
    exits(&b, 0);
    let mut names: Vec<_> = std::fs::read_dir(dir.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for n in &names {
        assert_eq!(
            std::fs::read(dir.join("a").join(n)).unwrap(),
            std::fs::read(dir.join("b").join(n)).unwrap(),
            "{n:?}"
        );
    }
    let c = generate("0.000001", "c");
    let err = String::from_utf8_lossy(&c.stderr);
    assert_eq!(c.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--time-limit") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(dir.join("c")).unwrap().count(),
        0,
        "files were written"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A reader that stops early (`iterdeploy verify | head`) ends the
/// process quietly, as with any Unix tool, instead of a panic about a
/// broken pipe.
#[cfg(unix)]
#[test]
fn a_closed_stdout_pipe_stops_quietly() {
    use std::io::{BufRead, BufReader};
    // All claims: ~110 kB of rows, more than a pipe buffers (64 kB).
    let mut child = bin()
        .arg("verify")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("| claim |"), "{first}");
    // The reader is dropped here: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A search that stops at its limit says so in words, with no plan length
/// or cost (there is no plan), and exits 1.
#[test]
fn a_planner_limit_reads_as_no_plan_within_the_limit() {
    let (domain, problem, _) = examples();
    let out = run(
        &[
            "plan",
            domain.to_str().unwrap(),
            problem.to_str().unwrap(),
            "--expansion-limit",
            "0",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no plan within the expansion limit"), "{err}");
    assert!(
        !err.contains("ExpansionLimit") && !err.contains("length 0"),
        "{err}"
    );
}
