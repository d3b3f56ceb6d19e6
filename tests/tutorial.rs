//! docs/tutorial.md runs: every `$ iterdeploy …` command in its console
//! blocks is executed, and every line shown under it must still be printed
//! (so the tutorial cannot drift from the code).
//!
//! Format: a block opened by ```` ```console ```` holds one or more
//! commands, each a line `$ iterdeploy ARGS` followed by the output lines
//! it must print. A line `…` skips any output; `…` inside a line matches
//! any text there. Shown lines must appear in the output in this order.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Step {
    line: usize,
    args: Vec<String>,
    shown: Vec<String>,
}

fn steps(text: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.starts_with("```") {
            inside = line == "```console";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            let mut words = cmd.split_whitespace().map(String::from);
            assert_eq!(
                words.next().as_deref(),
                Some("iterdeploy"),
                "docs/tutorial.md:{}: a console command must call iterdeploy",
                i + 1
            );
            out.push(Step {
                line: i + 1,
                args: words.collect(),
                shown: Vec::new(),
            });
        } else {
            out.last_mut()
                .unwrap_or_else(|| panic!("docs/tutorial.md:{}: output before a command", i + 1))
                .shown
                .push(line.to_string());
        }
    }
    out
}

/// Whether `line` matches `pattern`, where `…` in the pattern matches any
/// text.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = line;
    for (k, part) in parts.iter().enumerate() {
        if k == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if k == parts.len() - 1 && !part.is_empty() {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    parts.len() > 1 || rest.is_empty()
}

/// Checks that the shown lines appear in `printed` in order (`…` skips).
fn check(step: &Step, printed: &str) {
    let lines: Vec<&str> = printed.lines().map(str::trim_end).collect();
    let mut at = 0;
    let mut skipping = false;
    for want in &step.shown {
        if want == "…" {
            skipping = true;
            continue;
        }
        let found = if skipping {
            lines[at..]
                .iter()
                .position(|l| matches(want, l))
                .map(|k| at + k)
        } else {
            (at < lines.len() && matches(want, lines[at])).then_some(at)
        };
        match found {
            Some(k) => at = k + 1,
            None => panic!(
                "docs/tutorial.md:{}: `iterdeploy {}` no longer prints\n  {want}\n(after output line {at}); it printed:\n{printed}",
                step.line,
                step.args.join(" ")
            ),
        }
        skipping = false;
    }
}

/// A scratch working directory that sees the repository's `src/` and
/// `experiments/` (what the tutorial's paths name) but keeps `plots/` out
/// of the checkout.
fn workdir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("iterdeploy-tutorial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for d in ["src", "experiments"] {
        std::os::unix::fs::symlink(root.join(d), dir.join(d)).unwrap();
    }
    dir
}

#[test]
fn every_command_of_the_tutorial_prints_what_it_shows() {
    crate::common::candle_cpu();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tutorial.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let steps = steps(&text);
    assert!(steps.len() >= 10, "only {} commands found", steps.len());
    let dir = workdir();
    for step in &steps {
        let out = Command::new(env!("CARGO_BIN_EXE_iterdeploy"))
            .current_dir(&dir)
            .args(&step.args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docs/tutorial.md:{}: `iterdeploy {}` failed: {}",
            step.line,
            step.args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        check(step, &String::from_utf8_lossy(&out.stdout));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_tutorial_matcher_rejects_what_it_should() {
    assert!(matches("a … c", "a b c"));
    assert!(matches("facts 4 …", "facts 4  operators 6"));
    assert!(!matches("facts 5 …", "facts 4  operators 6"));
    assert!(!matches("x", "xy"));
    let step = Step {
        line: 1,
        args: vec![],
        shown: vec!["one".into(), "…".into(), "three".into()],
    };
    check(&step, "one\ntwo\nthree\n");
    let gap = std::panic::catch_unwind(|| {
        check(
            &Step {
                line: 1,
                args: vec![],
                shown: vec!["one".into(), "three".into()],
            },
            "one\ntwo\nthree\n",
        )
    });
    assert!(
        gap.is_err(),
        "a shown line must follow directly unless … says otherwise"
    );
}
