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
    // The same output without --extract: judged as given, with a note
    // that suggests --extract.
    let out = run(&["validate", d, p, "-"], Some(model_output));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("a plan of 8 step(s) can be extracted from it")
            && err.contains("add --extract"),
        "{err}"
    );
    // A plain plan file gets no such note.
    let out = run(&["validate", d, p, plan], None);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("--extract"));
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
    // An endless device is not a regular file: refused before it is
    // read (a pipe on standard input is bounded instead: input.rs).
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/dev/zero: a device, not a regular file"),
        "{err}"
    );
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

/// Copies the bridge fixture (tasks/, gen0.jsonl, gen1.jsonl) into `dir`.
fn bridge_run_in(dir: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bridge");
    std::fs::create_dir_all(dir.join("tasks")).unwrap();
    for e in std::fs::read_dir(fixtures.join("tasks")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("tasks").join(e.file_name())).unwrap();
    }
    for g in ["gen0.jsonl", "gen1.jsonl"] {
        std::fs::copy(fixtures.join(g), dir.join(g)).unwrap();
    }
}

/// Every file under `dir` with its bytes, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// An `--out` through a folder that does not exist yet and then `..` is
/// the file it lands on: refused when that is an input, before any folder
/// is created (issue 27, item 1). `report` never writes inside its run,
/// its tasks or an overlay, and checks the overlay before writing;
/// `compare` refuses a run given twice and an `--out` inside a run.
#[test]
fn outputs_through_missing_folders_and_dotdot_never_overwrite_inputs() {
    let dir = scratch("dotdot");
    let fx = dir.join("fx");
    bridge_run_in(&fx);
    let before = snapshot(&fx);
    let p = |rel: &str| fx.join(rel).to_str().unwrap().to_string();
    let (tasks, gen0) = (p("tasks"), p("gen0.jsonl"));
    // curate onto its generation file, and prompts onto a task file.
    let o = run(
        &[
            "curate",
            "--tasks",
            &tasks,
            "--generations",
            &gen0,
            "--out",
            &p("new/../gen0.jsonl"),
        ],
        None,
    );
    assert!(exits(&o, 2).contains("would overwrite the input"));
    let o = run(
        &[
            "prompts",
            "--tasks",
            &tasks,
            "--out",
            &p("tasks/x/../bw4.pddl"),
        ],
        None,
    );
    assert!(exits(&o, 2).contains("would overwrite the input"));
    // report inside its own run, or inside its tasks through a new folder.
    for out in [p(""), p("tasks/x"), p("new/../tasks/y")] {
        let o = run(&["report", &p(""), "--out", &out], None);
        assert!(exits(&o, 2).contains("would overwrite the input"), "{out}");
    }
    assert_eq!(snapshot(&fx), before, "an input changed");
    assert!(!fx.join("new").exists() && !fx.join("tasks/x").exists());

    // A bad overlay is refused before anything is written.
    let bad_sim = dir.join("sim");
    std::fs::create_dir_all(&bad_sim).unwrap();
    std::fs::write(bad_sim.join("summary.csv"), "not,a,summary\n").unwrap();
    let rep = dir.join("rep");
    let o = run(
        &[
            "report",
            &p(""),
            "--overlay",
            bad_sim.to_str().unwrap(),
            "--out",
            rep.to_str().unwrap(),
        ],
        None,
    );
    exits(&o, 2);
    assert!(!rep.exists(), "report wrote before checking its overlay");
    // A finished simulation's folder is not a report's: refused, and its
    // files kept.
    let sim = dir.join("sim-done");
    std::fs::create_dir_all(&sim).unwrap();
    std::fs::write(sim.join("results.csv"), "arm,seed\n").unwrap();
    std::fs::write(sim.join("summary.csv"), "arm\n").unwrap();
    iterdeploy::output::finish_set(&sim, &["results.csv".into(), "summary.csv".into()]).unwrap();
    let o = run(&["report", &p(""), "--out", sim.to_str().unwrap()], None);
    assert!(exits(&o, 2).contains("another complete set"));
    assert_eq!(
        std::fs::read_to_string(sim.join("results.csv")).unwrap(),
        "arm,seed\n"
    );
    // Without --out: beside the run, never inside it.
    let o = run(&["report", &p("")], None);
    exits(&o, 0);
    assert!(dir.join("fx-report/results.csv").is_file());
    assert!(dir.join("fx-report/complete.json").is_file());
    assert_eq!(snapshot(&fx), before, "report wrote inside its run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(!stdout.contains("//"), "{stdout}");

    // compare: the same run twice (also spelled differently), and --out
    // inside one of the runs.
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    let a2 = format!("{sb}/../a");
    let o = run(
        &["compare", sa, &a2, "--out", dir.join("c").to_str().unwrap()],
        None,
    );
    assert!(exits(&o, 2).contains("are the same run"));
    for out in [sa.to_string(), format!("{sb}/x/../")] {
        let o = run(&["compare", sa, sb, "--out", &out], None);
        assert!(exits(&o, 2).contains("would overwrite the input"), "{out}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A `checkpoints` link planted in a run folder is refused before the run
/// writes anything; the link's target is untouched (issue 27, item 1).
#[test]
fn a_planted_checkpoints_link_is_never_followed() {
    let dir = scratch("planted");
    let victim = dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.json"), "keep").unwrap();
    let run_dir = dir.join("plots/headline-smoke");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::os::unix::fs::symlink(&victim, run_dir.join("checkpoints")).unwrap();
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/headline.toml");
    let o = run(
        &[
            "run",
            spec.to_str().unwrap(),
            "--smoke",
            "--out",
            dir.join("plots").to_str().unwrap(),
        ],
        None,
    );
    assert!(exits(&o, 2).contains("symbolic link"));
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    assert_eq!(
        std::fs::read_to_string(victim.join("keep.json")).unwrap(),
        "keep"
    );
    assert!(
        !run_dir.join("spec.toml").exists(),
        "the run wrote before refusing"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Anything that is not a regular file is refused as an input, at once: a
/// FIFO with no writer once made `validate` wait for ever (issue 27,
/// item 2).
#[test]
fn a_fifo_given_as_an_input_is_refused_not_waited_on() {
    let dir = scratch("fifo");
    let fifo = dir.join("plan.fifo");
    let ok = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo failed");
    let (domain, problem, plan) = examples();
    let f = fifo.to_str().unwrap();
    let cases: [Vec<&str>; 3] = [
        vec![
            "validate",
            domain.to_str().unwrap(),
            problem.to_str().unwrap(),
            f,
        ],
        vec![
            "validate",
            f,
            problem.to_str().unwrap(),
            plan.to_str().unwrap(),
        ],
        vec![
            "validate",
            domain.to_str().unwrap(),
            f,
            plan.to_str().unwrap(),
        ],
    ];
    for args in cases {
        let start = std::time::Instant::now();
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait at most 20 s: a hang is the bug.
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed().as_secs() > 20 {
                child.kill().ok();
                panic!("{args:?} hung on a FIFO");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("FIFO") && err.contains("not a regular file"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `plan DOMAIN DIR` on a folder `generate` wrote skips its domain.pddl,
/// and a problem that fails is a row of plans.csv, which is written even
/// then (issue 27, item 5).
#[test]
fn plan_on_a_generated_folder_skips_the_domain_and_always_writes_plans_csv() {
    let dir = scratch("plan-dir");
    let tasks = dir.join("tasks");
    let o = run(
        &[
            "generate",
            "blocksworld",
            "--count",
            "2",
            "--out",
            tasks.to_str().unwrap(),
            "--param",
            "blocks=3",
        ],
        None,
    );
    exits(&o, 0);
    // Generated names say the size first, then the seed and index.
    assert!(tasks.join("blocksworld-b3-seed0-0000.pddl").is_file());
    let plans = dir.join("plans");
    let domain = tasks.join("domain.pddl");
    let o = run(
        &[
            "plan",
            domain.to_str().unwrap(),
            tasks.to_str().unwrap(),
            "--out",
            plans.to_str().unwrap(),
        ],
        None,
    );
    exits(&o, 0);
    let csv = std::fs::read_to_string(plans.join("plans.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(!csv.contains("domain,"), "{csv}");
    // A broken problem among them: its row says error, the others are
    // planned, plans.csv is written, and the exit code is 2.
    std::fs::write(tasks.join("broken.pddl"), "(define (problem").unwrap();
    let o = run(
        &[
            "plan",
            domain.to_str().unwrap(),
            tasks.to_str().unwrap(),
            "--out",
            plans.to_str().unwrap(),
        ],
        None,
    );
    exits(&o, 2);
    let csv = std::fs::read_to_string(plans.join("plans.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("broken,error,"), "{csv}");
    std::fs::remove_dir_all(&dir).ok();
}
