//! Mutated inputs through every reader and through the CLI: no panic, exit
//! codes as documented (0 valid, 1 invalid plan, 2 bad input), every error
//! located (it names the file, and PDDL errors the line and column).
//! The mutations are seeded (the project's generator), so a failure
//! reproduces; their number is fixed, so the module's time is bounded
//! (a few seconds).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use iterdeploy::rng::Rng;
use rand::RngExt;

/// Mutations per reader.
const PER_READER: usize = 400;
/// Mutated files per CLI command (each a process).
const PER_COMMAND: usize = 25;

/// Fragments that stress parsers: structure, BOMs, NULs, huge or odd
/// numbers, comments, line breaks, a multi-byte character.
const INSERTS: [&str; 14] = [
    "(",
    ")",
    "\u{feff}",
    "\0",
    "\"",
    "?x",
    " - ",
    "\n",
    "99999999999999999999999",
    "nan",
    ";",
    "{",
    "ä",
    "(increase (total-cost) 5)",
];

/// One to four random edits of `seed`: flip a byte, delete a range,
/// insert a fragment, duplicate a range, or truncate.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let n = v.len().max(1);
        let at = rng.random_range(0..n);
        match rng.random_range(0..5) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let end = (at + rng.random_range(1..20)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => {
                let s = INSERTS[rng.random_range(0..INSERTS.len())];
                let at = at.min(v.len());
                v.splice(at..at, s.bytes());
            }
            3 if !v.is_empty() => {
                let end = (at + rng.random_range(1..40)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                v.splice(at..at, piece);
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(root().join(p)).unwrap()
}

/// Runs `reader` on PER_READER mutations of `seed`; it must not panic, and
/// every error message must satisfy `located`.
fn fuzz(
    name: &str,
    stream: u64,
    seed: &[u8],
    reader: impl Fn(&[u8]) -> Result<(), String>,
    located: impl Fn(&str) -> bool,
) {
    fuzz_min(name, stream, seed, reader, located, PER_READER / 10);
}

/// [`fuzz`] with the least number of errors the mutations must reach.
fn fuzz_min(
    name: &str,
    stream: u64,
    seed: &[u8],
    reader: impl Fn(&[u8]) -> Result<(), String>,
    located: impl Fn(&str) -> bool,
    min_errors: usize,
) {
    let mut rng = iterdeploy::rng::stream(2026, stream);
    let mut errors = 0;
    for i in 0..PER_READER {
        let input = mutate(seed, &mut rng);
        let outcome = catch_unwind(AssertUnwindSafe(|| reader(&input)));
        let Ok(result) = outcome else {
            panic!(
                "{name}: mutation {i} panicked on input:\n{}",
                String::from_utf8_lossy(&input)
            );
        };
        if let Err(e) = result {
            errors += 1;
            assert!(located(&e), "{name}: mutation {i}: unlocated error `{e}`");
        }
    }
    // The mutations must reach the error paths, or this tests nothing.
    assert!(errors >= min_errors, "{name}: only {errors} errors");
}

/// `file:line:col: …`
fn pddl_located(file: &str) -> impl Fn(&str) -> bool + '_ {
    move |e: &str| {
        let mut parts = e.splitn(4, ':');
        parts.next() == Some(file)
            && parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
            && parts.next().is_some_and(|c| c.parse::<u32>().is_ok())
    }
}

#[test]
fn mutated_pddl_plans_and_model_outputs_never_panic_and_errors_are_located() {
    let bw = read("src/domains/blocksworld.pddl");
    let domain = iterdeploy::pddl::parse_domain(&bw, "d.pddl").unwrap();
    for (i, d) in ["blocksworld", "sokoban", "rovers"].iter().enumerate() {
        fuzz(
            d,
            i as u64,
            &read(&format!("src/domains/{d}.pddl")),
            |b| {
                iterdeploy::pddl::parse_domain(b, "d.pddl")
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
            pddl_located("d.pddl"),
        );
    }
    fuzz(
        "problem",
        10,
        &read("src/domains/examples/blocksworld-4.pddl"),
        |b| {
            iterdeploy::pddl::parse_problem(b, "p.pddl", &domain)
                .map(drop)
                .map_err(|e| e.to_string())
        },
        pddl_located("p.pddl"),
    );
    let plan = read("src/domains/examples/blocksworld-4.plan");
    let problem = iterdeploy::pddl::parse_problem(
        &read("src/domains/examples/blocksworld-4.pddl"),
        "p.pddl",
        &domain,
    )
    .unwrap();
    let validator = iterdeploy::validate::Validator::new(&domain, &problem);
    // Most mutated plans are invalid plans, a verdict (data), not an error:
    // only text that is not a plan file (binary, not UTF-8) is an error.
    fuzz_min(
        "plan",
        11,
        &plan,
        |b| {
            // An invalid plan is a verdict; only unreadable text is an error.
            let p = iterdeploy::plan::parse_ipc_plan(b, "x.plan").map_err(|e| e.to_string())?;
            let v = validator.validate(&p.steps);
            assert!(v.valid == v.failure.is_none());
            Ok(())
        },
        pddl_located("x.plan"),
        PER_READER / 40,
    );
    let output = [
        b"Let me think.\n<think>blocks...</think>\nThe plan:\n".as_slice(),
        &plan,
        b"\nDone.".as_slice(),
    ]
    .concat();
    fuzz(
        "model output",
        12,
        &output,
        |b| {
            let text = String::from_utf8_lossy(b);
            let e = iterdeploy::extract::extract_plan(&text, &|a| domain.action(a).is_some());
            validator.validate(&e.steps);
            Err("x.txt: (extraction never fails)".into())
        },
        |e| e.starts_with("x.txt"),
    );
}

#[test]
fn mutated_specs_templates_and_jsonl_never_panic_and_errors_are_located() {
    fuzz(
        "spec",
        20,
        &read("experiments/headline.toml"),
        |b| {
            let text = String::from_utf8_lossy(b);
            iterdeploy::experiment::Resolved::parse(&text, "x.toml")
                .map(drop)
                .map_err(|e| e.to_string())
        },
        |e| e.contains("x.toml") || e.contains("arm `") || e.contains('='),
    );
    fuzz(
        "template",
        21,
        iterdeploy::bridge::prompt::DEFAULT_TEMPLATE.as_bytes(),
        |b| {
            let text = String::from_utf8_lossy(b);
            iterdeploy::bridge::prompt::Template::new(&text, "t.txt")
                .map(drop)
                .map_err(|e| e.to_string())
        },
        |e| e.starts_with("t.txt:"),
    );
    let set =
        iterdeploy::bridge::TaskSet::load(&root().join("tests/fixtures/bridge/tasks")).unwrap();
    let judge = iterdeploy::bridge::curate::Judge::new(&set);
    let dir = std::env::temp_dir().join(format!("iterdeploy-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gen0.jsonl");
    let mut rng = iterdeploy::rng::stream(2026, 22);
    let seed = read("tests/fixtures/bridge/gen0.jsonl");
    let mut bad_lines = 0;
    for i in 0..PER_READER {
        std::fs::write(&file, mutate(&seed, &mut rng)).unwrap();
        // Bad lines are data (reported, skipped); only an unreadable file is
        // an error.
        let got = catch_unwind(AssertUnwindSafe(|| {
            iterdeploy::bridge::curate::read_generation(&file, 0, &judge)
        }))
        .unwrap_or_else(|_| panic!("jsonl mutation {i} panicked"));
        let (_, bad) = got.unwrap();
        for b in &bad {
            assert!(b.line >= 1 && !b.reason.is_empty() && b.file.ends_with("gen0.jsonl"));
        }
        bad_lines += bad.len();
    }
    assert!(bad_lines > PER_READER / 10, "only {bad_lines} bad lines");
    std::fs::remove_dir_all(&dir).ok();
}

/// The binary on mutated files: exit 0, 1 or 2 as documented, never a
/// panic, and a bad-input message names the file.
#[test]
fn the_cli_on_mutated_files_exits_as_documented() {
    let dir = std::env::temp_dir().join(format!("iterdeploy-fuzz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (d, p, x) = (
        root().join("src/domains/blocksworld.pddl"),
        root().join("src/domains/examples/blocksworld-4.pddl"),
        root().join("src/domains/examples/blocksworld-4.plan"),
    );
    let mut rng = iterdeploy::rng::stream(2026, 30);
    let cases: [(&str, &Path); 3] = [("domain", &d), ("problem", &p), ("plan", &x)];
    for (what, original) in cases {
        let seed = std::fs::read(original).unwrap();
        for i in 0..PER_COMMAND {
            let m = dir.join(format!("{what}-{i}"));
            std::fs::write(&m, mutate(&seed, &mut rng)).unwrap();
            let args: [&Path; 3] = match what {
                "domain" => [&m, &p, &x],
                "problem" => [&d, &m, &x],
                _ => [&d, &p, &m],
            };
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_iterdeploy"))
                .arg("validate")
                .args(args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            let code = out.status.code();
            assert!(
                matches!(code, Some(0..=2)),
                "{what} {i}: exit {code:?}: {err}"
            );
            assert!(!err.contains("panicked"), "{what} {i}: {err}");
            // A bad input is located in one of the files: a mutated
            // domain name, say, is reported where the problem names it.
            if code == Some(2) {
                let named = args
                    .iter()
                    .any(|f| err.contains(&format!("{}:", f.display())));
                assert!(named, "{what} {i}: {err}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
