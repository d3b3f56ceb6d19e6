//! The deployment loop and experiment specs: spec checking, smoke runs of
//! every shipped spec, byte-identical reruns, resumption, and the loop's
//! link to the real validator.

use std::path::{Path, PathBuf};

use iterdeploy::curation::{Pool, Rule};
use iterdeploy::deploy::{self, ArmConfig, ArmState, Method, Role, Start};
use iterdeploy::experiment::{self, Resolved, RunOptions};
use iterdeploy::mdp::Deployment;
use iterdeploy::optim::OptimizerKind;

fn experiments_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments")
}

fn shipped_specs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(experiments_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iterdeploy-exp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn options(out: &Path) -> RunOptions {
    RunOptions {
        out_root: out.to_path_buf(),
        smoke: true,
        progress: false,
        pause_after: None,
    }
}

const SMALL: &str = r#"
id = "small"
title = "small"
question = "q"
seeds = [1, 2]
[tasks]
domain = "blocksworld"
horizon = 10
seed = 5
[[tasks.buckets]]
name = "3 blocks"
count = 4
params = { blocks = 3 }
[[tasks.buckets]]
name = "4 blocks"
count = 4
params = { blocks = 4 }
[policy]
kind = "mlp"
hidden = 16
[base]
buckets = ["3 blocks"]
tasks = 6
seed = 9
epochs = 5
learning_rate = 0.01
[deployment.defaults]
generations = 2
samples_per_task = 4
[[deployment.arms]]
name = "paper"
method = "curated-sft"
"#;

#[test]
fn every_shipped_spec_resolves_and_the_index_lists_it() {
    let specs = shipped_specs();
    assert!(specs.len() >= 9, "{specs:?}");
    let index = std::fs::read_to_string(experiments_dir().join("README.md")).unwrap();
    for p in &specs {
        let r = Resolved::read(p).unwrap_or_else(|e| panic!("{e}"));
        let file = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            r.spec.id,
            file.trim_end_matches(".toml"),
            "a spec's id is its file name"
        );
        assert!(
            index.contains(&format!("`{}`", r.spec.id)),
            "experiments/README.md does not index `{}`",
            r.spec.id
        );
    }
    // Every proof the index links to exists.
    for link in index.split("](../").skip(1) {
        let target = &link[..link.find(')').unwrap()];
        assert!(
            experiments_dir().join("..").join(target).exists(),
            "experiments/README.md links to missing {target}"
        );
    }
}

#[test]
fn specs_reject_unknown_fields_and_bad_values_with_their_place() {
    let bad_top = SMALL.replace("seeds = [1, 2]", "seeds = [1, 2]\nseedz = 3");
    let e = Resolved::parse(&bad_top, "x.toml").unwrap_err().to_string();
    assert!(
        e.contains("x.toml") && e.contains("seedz") && e.contains("line"),
        "{e}"
    );

    let bad_arm = SMALL.replace(
        "method = \"curated-sft\"",
        "method = \"curated-sft\"\nlerning_rate = 1",
    );
    let e = Resolved::parse(&bad_arm, "x.toml").unwrap_err().to_string();
    assert!(
        e.contains("arm `paper`") && e.contains("lerning_rate"),
        "{e}"
    );

    let bad_default = SMALL.replace("generations = 2", "generations = 2\ntemprature = 1.0");
    let e = Resolved::parse(&bad_default, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("temprature"), "{e}");

    let bad_value = SMALL.replace(
        "samples_per_task = 4",
        "samples_per_task = 4\nfalse_accept = 1.5",
    );
    let e = Resolved::parse(&bad_value, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("false_accept") && e.contains("paper"), "{e}");

    let bad_rl = SMALL.replace(
        "method = \"curated-sft\"",
        "method = \"rloo\"\nrl_batches = 4",
    );
    let e = Resolved::parse(&bad_rl, "x.toml").unwrap_err().to_string();
    assert!(e.contains("rl_batches"), "{e}");

    let bad_base = SMALL.replace("buckets = [\"3 blocks\"]", "buckets = [\"7 blocks\"]");
    let e = Resolved::parse(&bad_base, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("7 blocks"), "{e}");

    let two_kinds = format!(
        "{SMALL}\n[drift]\nsamples_per_task = 2\nrules = [\"all\"]\nepochs = 1\nlearning_rate = 0.1\n"
    );
    let e = Resolved::parse(&two_kinds, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly one"), "{e}");

    // The plan writer has no step logits (no prior) and no exact ∇J (no
    // gradient_error or drift specs); both are refused with the reason.
    let writer = SMALL.replace("kind = \"mlp\"", "kind = \"plan-writer\"");
    assert!(Resolved::parse(&writer, "x.toml").is_ok());
    let e = Resolved::parse(
        &writer.replace(
            "kind = \"plan-writer\"",
            "kind = \"plan-writer\"\nprior = 2.0",
        ),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prior = 2") && e.contains("free text"), "{e}");
    let i = writer.find("[deployment.defaults]").unwrap();
    let exact_kind = format!(
        "{}[drift]\nsamples_per_task = 2\nrules = [\"all\"]\nepochs = 1\nlearning_rate = 0.1\n",
        &writer[..i]
    );
    let e = Resolved::parse(&exact_kind, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("plan-writer") && e.contains("[drift]"), "{e}");

    let bad_param = SMALL.replace("params = { blocks = 3 }", "params = { blocks = 0 }");
    let r = Resolved::parse(&bad_param, "x.toml").unwrap();
    let e = experiment::run(&r, &options(&scratch("badparam")))
        .err()
        .expect("0 blocks is refused")
        .to_string();
    assert!(e.contains("3 blocks") && e.contains("blocks"), "{e}");
}

/// Values a user can type that used to panic, abort, race or give wrong
/// statistics are refused when the spec is read, naming the field and the
/// value (issue 15, items 1 and 2).
#[test]
fn specs_refuse_values_that_would_panic_or_mislead() {
    let refused = |text: &str, needles: &[&str]| {
        let e = Resolved::parse(text, "x.toml").unwrap_err().to_string();
        for n in needles {
            assert!(e.contains(n), "expected `{n}` in: {e}");
        }
    };
    let mlp = |extra: &str| SMALL.replace("hidden = 16", &format!("hidden = 16\n{extra}"));
    for v in ["nan", "inf", "-1.0", "0.0"] {
        refused(&mlp(&format!("init_scale = {v}")), &["policy.init_scale"]);
    }
    refused(&mlp("prior = nan"), &["policy.prior = NaN"]);
    refused(&mlp("prior = -1.0"), &["policy.prior"]);
    let tf = SMALL.replace("kind = \"mlp\"\nhidden = 16", "kind = \"transformer\"");
    assert!(Resolved::parse(&tf, "x.toml").is_ok());
    refused(
        &tf.replace("[base]", "d_model = 0\n[base]"),
        &["d_model = 0"],
    );
    refused(&tf.replace("[base]", "d_ff = 0\n[base]"), &["d_ff = 0"]);
    // 8,192 layers overflowed the stack in candle's recursive backward.
    refused(
        &tf.replace("[base]", "layers = 8192\n[base]"),
        &["policy.layers = 8192", "largest supported"],
    );
    refused(
        &SMALL.replace("horizon = 10", "horizon = 9223372036854775807"),
        &["tasks.horizon", "largest supported"],
    );
    refused(
        &SMALL.replace("horizon = 10", "horizon = 100000"),
        &["tasks.horizon = 100000"],
    );
    refused(
        &SMALL.replace("samples_per_task = 4", "samples_per_task = 100000000000"),
        &["samples_per_task = 100000000000", "GiB"],
    );
    for v in ["1e-300", "0.0", "nan", "1e9"] {
        refused(
            &SMALL.replace(
                "samples_per_task = 4",
                &format!("samples_per_task = 4\ntemperature = {v}"),
            ),
            &["temperature", "arm `paper`"],
        );
    }
    refused(
        &SMALL.replace("seeds = [1, 2]", "seeds = [1, 1]"),
        &["seeds: 1 is listed twice"],
    );
    refused(
        &SMALL.replace("name = \"4 blocks\"", "name = \"3 blocks\""),
        &["two buckets are named `3 blocks`"],
    );
    refused(
        &SMALL.replace("learning_rate = 0.01", "learning_rate = nan"),
        &["base: learning_rate = NaN"],
    );
    let i = SMALL.find("[deployment.defaults]").unwrap();
    let drift = |lr: &str| {
        format!(
            "{}[drift]\nsamples_per_task = 2\nrules = [\"all\"]\nepochs = 1\nlearning_rate = {lr}\n",
            &SMALL[..i]
        )
    };
    assert!(Resolved::parse(&drift("0.1"), "x.toml").is_ok());
    for lr in ["nan", "-1.0", "0.0"] {
        refused(&drift(lr), &["drift: learning_rate"]);
    }
    let grad = format!(
        "{}[gradient_error]\nsamples_per_task = [2, 4]\nrepetitions = 3\nestimators = []\n",
        &SMALL[..i]
    );
    refused(&grad, &["gradient_error.estimators: give at least one"]);
    // Counts that would run for days (or, for samples, not fit) are
    // refused by name: the fuzzed values that used to hang a run.
    let grad = |samples: &str, reps: &str| {
        format!(
            "{}[gradient_error]\nsamples_per_task = [{samples}]\nrepetitions = {reps}\nestimators = [\"sft\"]\n",
            &SMALL[..i]
        )
    };
    refused(
        &grad("2", "100000000000"),
        &["gradient_error.repetitions = 100000000000"],
    );
    refused(
        &grad("100000000000", "3"),
        &["gradient_error.samples_per_task = 100000000000", "GiB"],
    );
    refused(
        &drift("0.1").replace("epochs = 1", "epochs = 100000000000"),
        &["drift.epochs = 100000000000"],
    );
    refused(
        &drift("0.1").replace("samples_per_task = 2", "samples_per_task = 100000000000"),
        &["drift.samples_per_task = 100000000000"],
    );
    refused(
        &SMALL.replace("tasks = 6", "tasks = 100000000000"),
        &["base.tasks", "100000000008"],
    );
    refused(
        &SMALL.replace("epochs = 5", "epochs = 100000000000"),
        &["base.epochs = 100000000000"],
    );
    refused(
        &SMALL.replace(
            "samples_per_task = 4",
            "samples_per_task = 4\nepochs = 100000000000",
        ),
        &["arm `paper`: `epochs` = 100000000000"],
    );
    // Sizes that would not fit are refused with the estimate, before any
    // allocation (here: when generation 0 is built).
    let huge = SMALL.replace("hidden = 16", "hidden = 100000000000");
    let r = Resolved::parse(&huge, "x.toml").unwrap();
    let e = experiment::run(&r, &options(&scratch("huge")))
        .err()
        .expect("hidden = 1e11 is refused")
        .to_string();
    assert!(
        e.contains("policy.hidden = 100000000000") && e.contains("parameters"),
        "{e}"
    );
    let wide = tf.replace("[base]", "d_model = 4000000\nheads = 4\n[base]");
    let r = Resolved::parse(&wide, "x.toml").unwrap();
    let e = experiment::run(&r, &options(&scratch("wide")))
        .err()
        .expect("d_model = 4e6 is refused")
        .to_string();
    assert!(e.contains("policy.d_model = 4000000"), "{e}");
    // A diverged generation 0 blames the base, not an arm.
    let hot = SMALL.replace("learning_rate = 0.01", "learning_rate = 1e308");
    let r = Resolved::parse(&hot, "x.toml").unwrap();
    let e = experiment::run(&r, &options(&scratch("hot")))
        .err()
        .expect("a diverged base is an error")
        .to_string();
    assert!(
        e.contains("base.learning_rate") && !e.contains("arm `"),
        "{e}"
    );
}

/// `tasks.nontrivial` keeps the generator's tasks that need a step, in
/// the generator's order: the plain spec's tasks minus those whose goal
/// holds at the start, topped up with later draws (deployed and base).
#[test]
fn nontrivial_tasks_all_need_a_step_and_keep_the_generators_order() {
    let two = SMALL
        .replace(
            "name = \"3 blocks\"\ncount = 4\nparams = { blocks = 3 }",
            "name = \"2 blocks\"\ncount = 8\nparams = { blocks = 2 }",
        )
        .replace("buckets = [\"3 blocks\"]", "buckets = [\"2 blocks\"]");
    assert!(two.contains("blocks = 2"));
    let plain = Resolved::parse(&two, "x.toml").unwrap();
    let (w, _) = experiment::build_workload(&plain.spec).unwrap();
    let names = |w: &deploy::Workload, b: usize| -> Vec<(String, Option<usize>)> {
        (0..w.env.tasks.len())
            .filter(|&x| w.bucket[x] == b && w.role[x] == deploy::Role::Deployed)
            .map(|x| (w.env.tasks[x].name.clone(), w.optimal[x]))
            .collect()
    };
    let trivial: usize = w.optimal.iter().filter(|o| **o == Some(0)).count();
    assert!(
        trivial > 0,
        "some generated tasks are solved at the start: {:?}",
        w.optimal
    );
    let nt = Resolved::parse(
        &two.replace("seed = 5", "seed = 5\nnontrivial = true"),
        "x.toml",
    )
    .unwrap();
    let (w2, demos) = experiment::build_workload(&nt.spec).unwrap();
    assert!(
        w2.optimal.iter().all(|o| o.is_some_and(|n| n >= 1)),
        "{:?}",
        w2.optimal
    );
    assert!(demos.iter().all(|d| !d.steps.is_empty()));
    for b in 0..2 {
        let (before, after) = (names(&w, b), names(&w2, b));
        assert_eq!(after.len(), before.len());
        let kept: Vec<_> = before
            .iter()
            .filter(|(_, o)| *o != Some(0))
            .cloned()
            .collect();
        assert_eq!(
            after[..kept.len()],
            kept[..],
            "bucket {b}: the first tasks that need a step, in order"
        );
    }
}

/// The tokenisation fields belong to the transformer kinds (the object
/// pool to the plan writer), and a pool too small for a task's objects is
/// refused with the task named.
#[test]
fn tokenisation_fields_are_checked_against_the_kind() {
    let on_mlp = |extra: &str| SMALL.replace("hidden = 16", &format!("hidden = 16\n{extra}"));
    for (extra, needle) in [
        (
            "positions = \"none\"",
            "policy.positions is a setting of the transformer kinds",
        ),
        (
            "objects = \"pool\"",
            "policy.objects = \"pool\" is a setting of kind = \"plan-writer\"",
        ),
        (
            "objects = \"names\"",
            "policy.objects is a setting of the transformer kinds",
        ),
        (
            "object_pool = 8",
            "policy.object_pool = 8 needs policy.objects = \"pool\"",
        ),
    ] {
        let e = Resolved::parse(&on_mlp(extra), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let writer = SMALL.replace(
        "kind = \"mlp\"\nhidden = 16",
        "kind = \"plan-writer\"\nd_model = 8\nheads = 2\nlayers = 1\nd_ff = 8\npositions = \"none\"\nobjects = \"pool\"",
    );
    let ok = Resolved::parse(&writer, "x.toml").unwrap();
    let size = ok.spec.policy.transformer_size();
    assert_eq!(
        size.positions,
        iterdeploy::policy::transformer::Positions::None
    );
    assert_eq!(
        size.objects,
        iterdeploy::policy::transformer::Objects::Pool { size: 16 }
    );
    let e = Resolved::parse(
        &writer.replace("objects = \"pool\"", "objects = \"pool\"\nobject_pool = 0"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("policy.object_pool = 0 must be in 1..="), "{e}");
    // A pool of 2 cannot name a 3-block task's blocks: refused when the
    // writer is built, with the task named.
    let small = Resolved::parse(
        &writer.replace("objects = \"pool\"", "objects = \"pool\"\nobject_pool = 2"),
        "x.toml",
    )
    .unwrap();
    let out = scratch("pool-too-small");
    let e = experiment::run(&small, &options(&out))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("policy.object_pool = 2 is smaller than the 3 objects"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// The pretrained kind's fields are range-checked, belong to that kind
/// only, and `model` is relative to the spec (resolved to an absolute
/// path, so the resolved spec reads back from anywhere).
#[test]
fn pretrained_fields_are_checked_and_the_model_is_relative_to_the_spec() {
    let pt = SMALL.replace("kind = \"mlp\"\nhidden = 16", "kind = \"pretrained\"");
    let with = |extra: &str| pt.replace("[base]", &format!("{extra}\n[base]"));
    assert!(Resolved::parse(&with("top_p = 0.95\ntop_k = 40"), "x.toml").is_ok());
    for (field, needle) in [
        ("lora_rank = 0", "policy.lora_rank = 0"),
        ("lora_alpha = -2.0", "policy.lora_alpha = -2"),
        // α/r past what f32 holds once gave NaN log-probabilities, exit 0.
        (
            "lora_alpha = 1e39",
            "lora_alpha / lora_rank = 1000000000000000000000000000000000000000 / 16",
        ),
        ("lora_alpha = 16385.0", "= 1.0240625e3 is above 1024"),
        ("lora_dropout = 1.0", "policy.lora_dropout = 1"),
        ("max_new_tokens = 0", "policy.max_new_tokens = 0"),
        ("top_k = 0", "policy.top_k = 0"),
        ("top_p = 0.0", "policy.top_p = 0"),
        ("top_p = 1.5", "policy.top_p = 1.5"),
        ("top_p = nan", "policy.top_p = NaN"),
    ] {
        let e = Resolved::parse(&with(field), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{field}: {e}");
    }
    let mlp = SMALL.replace("hidden = 16", "hidden = 16\ntop_p = 0.9");
    let e = Resolved::parse(&mlp, "x.toml").unwrap_err().to_string();
    assert!(
        e.contains("policy.top_p") && e.contains("pretrained"),
        "{e}"
    );
    let dir = scratch("model-path");
    std::fs::create_dir_all(dir.join("models/tiny")).unwrap();
    let spec = dir.join("spec.toml");
    std::fs::write(&spec, with("model = \"models/tiny\"")).unwrap();
    let r = Resolved::read(&spec).unwrap();
    let m = r.spec.policy.model.clone().unwrap();
    assert_eq!(
        std::path::Path::new(&m),
        dir.join("models/tiny").canonicalize().unwrap()
    );
    std::fs::write(&spec, with("model = \"models/absent.gguf\"")).unwrap();
    let e = Resolved::read(&spec).unwrap_err().to_string();
    assert!(
        e.contains("spec.toml") && e.contains("policy.model") && e.contains("absent.gguf"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smoke_runs_of_every_shipped_spec_write_all_outputs() {
    crate::common::candle_cpu();
    let out = scratch("smoke");
    for p in shipped_specs() {
        let r = Resolved::read(&p).unwrap();
        if r.spec.policy.kind == iterdeploy::experiment::spec::PolicyKind::Pretrained
            && r.spec.policy.model.is_none()
            && iterdeploy::pretrained::cached_model().is_none()
        {
            crate::common::skip_or_fail(&format!(
                "{}: no cached model; run peers/fetch-model.sh (.ci/run does)",
                r.spec.id
            ));
            continue;
        }
        let dir = out.join(format!("{}-smoke", r.spec.id));
        let figures: Vec<String> =
            if r.spec.policy.kind == iterdeploy::experiment::spec::PolicyKind::Pretrained {
                // In its own process, so its peak memory is its own: the
                // estimate the spec was admitted on must cover it.
                let run = std::process::Command::new(env!("CARGO_BIN_EXE_iterdeploy"))
                    .args(["run", "--smoke", "--quiet", "--out"])
                    .arg(&out)
                    .arg(&p)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&run.stdout);
                assert!(
                    run.status.success(),
                    "{}: {}{stdout}",
                    p.display(),
                    String::from_utf8_lossy(&run.stderr)
                );
                let line = stdout
                    .lines()
                    .find(|l| l.starts_with("memory: peak resident "))
                    .unwrap_or_else(|| panic!("no memory line in\n{stdout}"));
                let gb: Vec<f64> = line
                    .split(' ')
                    .filter_map(|w| w.parse::<f64>().ok())
                    .collect();
                assert_eq!(gb.len(), 2, "{line}");
                assert!(
                    gb[0] <= gb[1],
                    "{}: the estimate undercounts: {line}",
                    r.spec.id
                );
                let mut pngs: Vec<String> = std::fs::read_dir(&dir)
                    .unwrap()
                    .filter_map(|e| {
                        let name = e.unwrap().file_name().into_string().unwrap();
                        name.strip_suffix(".png").map(String::from)
                    })
                    .collect();
                pngs.sort();
                pngs
            } else {
                experiment::run(&r, &options(&out))
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                    .figures
            };
        for f in ["spec.toml", "results.csv", "summary.csv", "summary.md"] {
            let bytes =
                std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", dir.display()));
            assert!(bytes.len() > 20, "{}/{f} is nearly empty", dir.display());
        }
        assert!(!figures.is_empty());
        // Arms that share a sample budget in the full run share one in
        // the smoke run too (the pretrained smoke once gave its arms 2 and
        // 4); an arm whose budget is the ablated setting keeps its own.
        let mut smoke = r.clone();
        smoke.smoke();
        for (i, a) in r.arms.iter().enumerate() {
            for (j, b) in r.arms.iter().enumerate() {
                if a.samples_per_task == b.samples_per_task {
                    assert_eq!(
                        smoke.arms[i].samples_per_task, smoke.arms[j].samples_per_task,
                        "{}: arms {} and {}",
                        r.spec.id, a.name, b.name
                    );
                }
            }
        }
        if let Ok(svg) = std::fs::read_to_string(dir.join("solved.svg")) {
            assert!(svg.contains("Any-of-N (N = "), "{}: solved.svg", r.spec.id);
        }
        // Every completion a free-text policy wrote is kept, for every
        // arm, seed and generation; a policy that chooses steps has none.
        let completions = dir.join("completions.jsonl");
        if r.spec.deployment.is_some() && !r.spec.policy.kind.is_markov() {
            let text = std::fs::read_to_string(&completions).unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let mut smoke = r.clone();
            smoke.smoke();
            let generations = smoke.arms[0].generations + 1;
            assert!(!lines.is_empty(), "{}", r.spec.id);
            assert!(
                lines
                    .iter()
                    .all(|l| l["text"].is_string() && l["valid"].is_boolean())
            );
            for g in 0..generations {
                assert!(
                    lines.iter().any(|l| l["generation"] == g),
                    "{}: no completion of generation {g}",
                    r.spec.id
                );
            }
            let listed = std::fs::read_to_string(dir.join("complete.json")).unwrap();
            assert!(listed.contains("completions.jsonl"), "{}", r.spec.id);
        } else {
            assert!(!completions.exists(), "{}", r.spec.id);
        }
        if r.spec.deployment.is_some() {
            // The reach measures and their verdict (issue 28).
            let results = std::fs::read_to_string(dir.join("results.csv")).unwrap();
            assert!(
                results.contains(",frontier_solved_at_1,")
                    && results.contains(",frontier_all_of_3,")
            );
            let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
            assert!(
                summary.contains("## Reach: do later generations solve larger tasks?"),
                "{}",
                r.spec.id
            );
            assert!(
                summary.contains("## Paired gains in solved@1"),
                "{}",
                r.spec.id
            );
            assert!(
                figures.iter().any(|f| f.starts_with("reach_heatmap_")),
                "{}",
                r.spec.id
            );
            assert!(
                figures.iter().any(|f| f == "frontier_solved_at_1"),
                "{}",
                r.spec.id
            );
            // The update cosine needs the exact ∇J: a policy that reads its
            // own text gets no (empty) cosine figure, and the summary says
            // why; a step policy gets the figure.
            let markov = r.spec.policy.kind.is_markov();
            assert_eq!(
                figures.iter().any(|f| f == "cosine"),
                markov,
                "{}: cosine figure",
                r.spec.id
            );
            assert_eq!(
                dir.join("cosine.png").exists(),
                markov,
                "{}: cosine.png",
                r.spec.id
            );
            assert_eq!(
                summary.contains("`update_cosine` is undefined"),
                !markov,
                "{}",
                r.spec.id
            );
        }
        // Whether P(valid) is exact or estimated is said, in the summary
        // and on the success figure's axis.
        let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
        let success_svg = std::fs::read_to_string(dir.join("success.svg")).unwrap_or_default();
        if r.spec.policy.kind.is_markov() {
            assert!(!summary.contains("Monte-Carlo estimates"), "{}", r.spec.id);
        } else {
            assert!(summary.contains("Monte-Carlo estimates"), "{}", r.spec.id);
            assert!(
                success_svg.contains("Monte-Carlo estimate") && !success_svg.contains("exact"),
                "{}: success.svg",
                r.spec.id
            );
        }
        for f in &figures {
            let png = std::fs::read(dir.join(format!("{f}.png"))).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{f}.png");
            let svg = std::fs::read_to_string(dir.join(format!("{f}.svg"))).unwrap();
            assert!(
                svg.contains("<svg") && svg.contains("generation")
                    || svg.contains("log scale")
                    || svg.contains("KL"),
                "{f}.svg has no axis label"
            );
        }
        // The resolved spec reads back to the same experiment.
        let again = Resolved::read(&dir.join("spec.toml")).unwrap();
        assert_eq!(again.arms, {
            let mut r2 = r.clone();
            r2.smoke();
            r2.arms
        });
        assert!(
            !dir.join("checkpoints").exists(),
            "finished runs leave no checkpoints"
        );
        // No temporary files are left behind.
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            assert!(!name.starts_with('.'), "left over: {name}");
        }
    }
}

#[test]
fn same_spec_gives_byte_identical_csvs_and_a_paused_run_resumes_exactly() {
    let r = Resolved::parse(SMALL, "small").unwrap();
    let (a, b) = (scratch("same-a"), scratch("same-b"));
    experiment::run(&r, &options(&a)).unwrap();
    experiment::run(&r, &options(&b)).unwrap();
    for f in ["results.csv", "summary.csv", "spec.toml"] {
        assert_eq!(
            std::fs::read(a.join("small-smoke").join(f)).unwrap(),
            std::fs::read(b.join("small-smoke").join(f)).unwrap(),
            "{f} differs between two runs of one spec"
        );
    }
    let c = scratch("same-c");
    let paused = RunOptions {
        pause_after: Some(2),
        ..options(&c)
    };
    let outcome = experiment::run(&r, &paused).unwrap();
    assert!(outcome.figures.is_empty());
    assert!(
        !c.join("small-smoke/results.csv").exists(),
        "a paused run writes no results"
    );
    // One checkpoint per (seed, arm) job and one per seed's generation 0.
    let mut saved: Vec<String> = std::fs::read_dir(c.join("small-smoke/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        [
            "arm0-seed1.json",
            "arm0-seed2.json",
            "base-seed1.json",
            "base-seed2.json"
        ]
    );
    experiment::run(&r, &options(&c)).unwrap();
    assert_eq!(
        std::fs::read(a.join("small-smoke/results.csv")).unwrap(),
        std::fs::read(c.join("small-smoke/results.csv")).unwrap(),
        "resumed run differs from an uninterrupted one"
    );
}

fn arm(method: Method) -> ArmConfig {
    ArmConfig {
        name: format!("{method:?}"),
        method,
        generations: 2,
        samples_per_task: 4,
        temperature: 1.0,
        rule: Rule::ShortestPerTask,
        pool: Pool::Accumulate,
        start: Start::Base,
        optimizer: OptimizerKind::Adam,
        learning_rate: 0.01,
        epochs: 3,
        batch_size: 8,
        rl_batches: 2,
        iw_clip: 5.0,
        max_grad_norm: 0.0,
        weight_decay: 0.0,
        false_accept: 0.0,
        false_reject: 0.0,
    }
}

fn small_workload() -> (deploy::Workload, Box<dyn iterdeploy::policy::Policy>) {
    let r = Resolved::parse(SMALL, "small").unwrap();
    let (full, demos) = experiment::build_workload(&r.spec).unwrap();
    let base = experiment::base_policy(&r.spec, &full, &demos, 1).unwrap();
    let work = full.without_base().unwrap();
    let base = base.for_task_prefix(&work.env);
    (work, base)
}

fn metric(state: &ArmState, generation: usize, name: &str) -> f64 {
    state
        .rows
        .iter()
        .find(|r| r.generation == generation && r.bucket == "all" && r.metric == name)
        .unwrap_or_else(|| panic!("no {name} at generation {generation}"))
        .value
}

/// Every arm spends the same samples (= validator calls) per generation.
#[test]
fn every_method_spends_the_same_budget() {
    let (work, base) = small_workload();
    let deployed = work.tasks_with(Role::Deployed).len();
    for m in [
        Method::CuratedSft,
        Method::Raft,
        Method::IwSft,
        Method::Reinforce,
        Method::Rloo,
        Method::Grpo,
    ] {
        let a = arm(m);
        let st = deploy::run_arm(
            &work,
            base.as_ref(),
            &a,
            3,
            ArmState::fresh(base.as_ref()),
            |_| Ok(()),
        )
        .unwrap();
        for g in 0..=a.generations {
            assert_eq!(
                metric(&st, g, "samples_drawn"),
                ((g + 1) * a.samples_per_task * deployed) as f64,
                "{m:?} generation {g}"
            );
        }
        assert!(st.theta.iter().all(|v| v.is_finite()));
    }
}

/// Generation 0 is one policy, so every arm reports the same generation-0
/// numbers (common random numbers: each arm deploys π_0 on the same
/// streams), and the on-policy arms' batches do not change them; later
/// generations differ between arms. Also: the paper's solved-task
/// measures are reported, exact and sampled.
#[test]
fn every_arm_sees_the_same_generation_zero() {
    let (work, base) = small_workload();
    let methods = [
        Method::CuratedSft,
        Method::Raft,
        Method::IwSft,
        Method::Reinforce,
        Method::Rloo,
        Method::Grpo,
    ];
    let states: Vec<ArmState> = methods
        .iter()
        .map(|&m| {
            let mut a = arm(m);
            // Enough samples that batches hold valid traces (p ≈ 0.03).
            a.samples_per_task = 32;
            a.rl_batches = 4;
            // Large enough that a batch's update changes the next batch's
            // draws (with 0.01 the same uniforms give the same traces).
            a.learning_rate = 1.0;
            a.optimizer = OptimizerKind::Sgd;
            deploy::run_arm(
                &work,
                base.as_ref(),
                &a,
                3,
                ArmState::fresh(base.as_ref()),
                |_| Ok(()),
            )
            .unwrap()
        })
        .collect();
    let gen0 = |st: &ArmState| -> Vec<(String, String, u64)> {
        st.rows
            .iter()
            .filter(|r| {
                r.generation == 0
                    && !matches!(r.metric.as_str(), "update_cosine" | "training_set_size")
            })
            .map(|r| (r.bucket.clone(), r.metric.clone(), r.value.to_bits()))
            .collect()
    };
    let first = gen0(&states[0]);
    for m in [
        "solved_sampled",
        "solved_at_1_sampled",
        "solved_all_of_3_sampled",
        "solved_any_of_3_sampled",
        "solved_all_of_3_exact",
        "solved_any_of_3_exact",
        "longest_valid_plan",
    ] {
        assert!(first.iter().any(|(_, name, _)| name == m), "no {m}");
    }
    for (st, m) in states.iter().zip(methods).skip(1) {
        assert_eq!(
            gen0(st),
            first,
            "{m:?}: generation-0 rows differ from curated SFT's"
        );
    }
    // The exact all-of-3 is the mean of p(x)^3, never above solved@1.
    let p = metric(&states[0], 0, "success_prob");
    let all3 = metric(&states[0], 0, "solved_all_of_3_exact");
    assert!(all3 <= p && all3 > 0.0, "{all3} vs {p}");
    // Later generations are not all equal (the arms learn differently).
    let later: Vec<u64> = states
        .iter()
        .map(|st| metric(st, 2, "success_prob").to_bits())
        .collect();
    assert!(later.iter().any(|&v| v != later[0]));
}

/// An update that diverges stops the arm with an error naming the arm,
/// seed, generation and the knob to turn — not NaN metrics that the
/// summaries would drop as missing data.
#[test]
fn a_diverging_update_is_an_error_not_nan_metrics() {
    let (work, base) = small_workload();
    // Adam moves each coordinate by about ±η per step: two steps of 1e308
    // overflow.
    let a = ArmConfig {
        learning_rate: 1e308,
        ..arm(Method::CuratedSft)
    };
    let err = deploy::run_arm(
        &work,
        base.as_ref(),
        &a,
        3,
        ArmState::fresh(base.as_ref()),
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    for part in [
        "arm `CuratedSft`",
        "seed 3",
        "after generation",
        "diverged",
        "learning_rate` (now 1e308)",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
}

/// A policy whose forward pass overflows: the base policy, except that
/// every sampled log-probability is NaN.
struct Overflowing(Box<dyn iterdeploy::policy::Policy>);

impl iterdeploy::policy::Policy for Overflowing {
    fn params(&self) -> &[f64] {
        self.0.params()
    }
    fn params_mut(&mut self) -> &mut [f64] {
        self.0.params_mut()
    }
    fn temperature(&self) -> f64 {
        self.0.temperature()
    }
    fn set_temperature(&mut self, tau: f64) {
        self.0.set_temperature(tau)
    }
    fn clone_box(&self) -> Box<dyn iterdeploy::policy::Policy> {
        Box::new(Overflowing(self.0.clone_box()))
    }
    fn for_task_prefix(&self, env: &Deployment) -> Box<dyn iterdeploy::policy::Policy> {
        Box::new(Overflowing(self.0.for_task_prefix(env)))
    }
    fn logits(&self, env: &Deployment, x: usize, s: u32, out: &mut [f64]) {
        self.0.logits(env, x, s, out)
    }
    fn backprop_logits(&self, env: &Deployment, x: usize, s: u32, g: &[f64], grad: &mut [f64]) {
        self.0.backprop_logits(env, x, s, g, grad)
    }
    fn sample_traces(
        &self,
        env: &Deployment,
        x: usize,
        rngs: &mut [iterdeploy::rng::Rng],
    ) -> Vec<(iterdeploy::estimator::Trace, f64)> {
        self.0
            .sample_traces(env, x, rngs)
            .into_iter()
            .map(|(t, _)| (t, f64::NAN))
            .collect()
    }
}

/// A non-finite log-probability from the policy stops the arm with an
/// error naming the arm, seed and generation (issue 27: `lora_alpha = 1e39`
/// once gave NaN log-probabilities and exit 0).
#[test]
fn a_non_finite_log_probability_is_an_error_naming_arm_seed_and_generation() {
    let (work, base) = small_workload();
    let broken = Overflowing(base.clone_box());
    let outcome = deploy::run_arm(
        &work,
        &broken,
        &arm(Method::CuratedSft),
        3,
        ArmState::fresh(&broken),
        |_| Ok(()),
    );
    let Err(err) = outcome else {
        panic!("a NaN log-probability must stop the arm");
    };
    let err = err.to_string();
    for part in [
        "arm `CuratedSft`",
        "seed 3",
        "generation 0",
        "log-probability NaN",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }
}

/// The simulator's verdicts are the validator's: every sampled trace,
/// written out as a plan, gets the same verdict from the PDDL validator.
#[test]
fn sampled_verdicts_agree_with_the_pddl_validator() {
    let (work, base) = small_workload();
    let a = ArmConfig {
        samples_per_task: 16,
        generations: 0,
        ..arm(Method::CuratedSft)
    };
    let st = deploy::run_arm(
        &work,
        base.as_ref(),
        &a,
        4,
        ArmState::fresh(base.as_ref()),
        |_| Ok(()),
    )
    .unwrap();
    let env = &work.env;
    let domain = iterdeploy::generate::DomainKind::Blocksworld.parse_domain();
    let (mut valid, mut invalid) = (0, 0);
    for s in &st.pool[0] {
        let t = &s.trace;
        let space = &env.tasks[t.task];
        let names: Vec<String> = t
            .steps
            .iter()
            .map(|&(_, a)| env.action_names[a].clone())
            .collect();
        // The trace's decisions: plan steps, then END (valid traces only end
        // in END); an invalid trace's last decision is the impossible step
        // or the step past the horizon.
        let plan_text: String = names
            .iter()
            .filter(|n| n.as_str() != "END")
            .map(|n| format!("{n}\n"))
            .collect();
        let plan = iterdeploy::plan::parse_ipc_plan(plan_text.as_bytes(), "trace").unwrap();
        let verdict =
            iterdeploy::validate::Validator::new(&domain, &space.problem).validate(&plan.steps);
        let ended = names.last().map(String::as_str) == Some("END");
        let within = t.plan_length() <= env.horizon;
        assert_eq!(
            t.valid,
            verdict.valid && ended && within,
            "task {} trace {names:?}",
            space.name
        );
        if t.valid { valid += 1 } else { invalid += 1 }
    }
    assert!(
        valid > 0 && invalid > 0,
        "{valid} valid, {invalid} invalid: the check needs both"
    );
}

/// A judge that accepts everything (false_accept = 1) makes curation keep
/// invalid traces; one that rejects every valid plan keeps nothing.
#[test]
fn validator_noise_reaches_the_training_set() {
    let (work, base) = small_workload();
    let accept_all = ArmConfig {
        false_accept: 1.0,
        generations: 0,
        ..arm(Method::CuratedSft)
    };
    let st = deploy::run_arm(
        &work,
        base.as_ref(),
        &accept_all,
        1,
        ArmState::fresh(base.as_ref()),
        |_| Ok(()),
    )
    .unwrap();
    assert!(st.pool[0].iter().all(|s| s.accepted));
    assert!(st.pool[0].iter().any(|s| !s.trace.valid));
    assert_eq!(metric(&st, 0, "accepted_rate"), 1.0);
    let reject_all = ArmConfig {
        false_reject: 1.0,
        samples_per_task: 16,
        generations: 0,
        ..arm(Method::CuratedSft)
    };
    let st = deploy::run_arm(
        &work,
        base.as_ref(),
        &reject_all,
        1,
        ArmState::fresh(base.as_ref()),
        |_| Ok(()),
    )
    .unwrap();
    assert!(st.pool[0].iter().all(|s| !s.accepted));
    assert!(metric(&st, 0, "valid_rate") > 0.0);
}

/// A bucket can be problem files (relative to the spec); the resolved spec
/// names them absolutely; mistakes name the bucket.
#[test]
fn buckets_of_problem_files_run_and_errors_name_the_bucket() {
    let dir = scratch("files");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domains/examples");
    for f in ["blocksworld-3a.pddl", "blocksworld-3b.pddl"] {
        std::fs::copy(examples.join(f), dir.join(f)).unwrap();
    }
    let spec = SMALL.replace(
        "[[tasks.buckets]]\nname = \"4 blocks\"\ncount = 4\nparams = { blocks = 4 }",
        "[[tasks.buckets]]\nname = \"hand-written\"\nfiles = [\"blocksworld-3a.pddl\", \"blocksworld-3b.pddl\"]",
    );
    assert!(spec.contains("hand-written"));
    std::fs::write(dir.join("files.toml"), &spec).unwrap();
    let r = Resolved::read(&dir.join("files.toml")).unwrap();
    let files = &r.spec.tasks.buckets[1].files;
    assert!(files.iter().all(|f| f.is_absolute()), "{files:?}");
    let (work, _) = experiment::build_workload(&r.spec).unwrap();
    let in_files_bucket = work.bucket.iter().filter(|&&b| b == 1).count();
    assert_eq!(in_files_bucket, 2, "both files are tasks of the bucket");
    let out = scratch("files-out");
    experiment::run(&r, &options(&out)).unwrap();
    let csv = std::fs::read_to_string(out.join("small-smoke/results.csv")).unwrap();
    assert!(csv.contains(",hand-written,success_prob,"));

    std::fs::write(
        dir.join("missing.toml"),
        spec.replace("blocksworld-3b.pddl\"]", "nope.pddl\"]"),
    )
    .unwrap();
    let e = Resolved::read(&dir.join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hand-written") && e.contains("nope.pddl"), "{e}");
    let both = spec.replace("files = [", "params = { blocks = 3 }\nfiles = [");
    let e = Resolved::parse(&both, "x.toml").unwrap_err().to_string();
    assert!(e.contains("hand-written") && e.contains("not both"), "{e}");
    let base_files = spec.replace("buckets = [\"3 blocks\"]", "buckets = [\"hand-written\"]");
    let e = Resolved::parse(&base_files, "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("bucket of files"), "{e}");
}

/// `compare` puts the arms of two runs in one figure and writes the plotted
/// numbers; both runs of one spec under two ids give equal rows.
#[test]
fn compare_overlays_the_arms_of_several_runs() {
    let out = scratch("compare");
    for id in ["twin-a", "twin-b"] {
        let r = Resolved::parse(
            &SMALL.replace("id = \"small\"", &format!("id = \"{id}\"")),
            id,
        )
        .unwrap();
        experiment::run(&r, &options(&out)).unwrap();
    }
    let dirs = [out.join("twin-a-smoke"), out.join("twin-b-smoke")];
    let c = experiment::compare(&dirs, "success_prob", &out.join("cmp")).unwrap();
    assert!(c.figure.is_file());
    assert_eq!(c.tasks_differ, None, "one spec, the same tasks");
    let csv = std::fs::read_to_string(out.join("cmp/success_prob.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2 * 3, "{csv}");
    for (a, b) in rows[..3].iter().zip(&rows[3..]) {
        assert_eq!(
            a.trim_start_matches("twin-a-smoke"),
            b.trim_start_matches("twin-b-smoke")
        );
    }
    let svg = std::fs::read_to_string(out.join("cmp/success_prob.svg")).unwrap();
    assert!(svg.contains("twin-a-smoke: paper") && svg.contains("twin-b-smoke: paper"));
    let e = experiment::compare(&dirs, "no_such_metric", &out.join("cmp"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_metric"), "{e}");
    // A run on other tasks is drawn, and said to differ.
    let other = SMALL
        .replace("id = \"small\"", "id = \"other\"")
        .replace("seed = 5", "seed = 6");
    experiment::run(&Resolved::parse(&other, "other").unwrap(), &options(&out)).unwrap();
    let mixed = [out.join("twin-a-smoke"), out.join("other-smoke")];
    let c = experiment::compare(&mixed, "success_prob", &out.join("cmp2")).unwrap();
    let why = c.tasks_differ.expect("other tasks are flagged");
    assert!(why.contains("other-smoke"), "{why}");
}

/// A run takes a lock on its output directory: a second run into the same
/// directory while the first holds it fails at once, naming the owner,
/// and a lock left by a killed run is taken over (issue 15, item 3).
#[test]
fn a_run_directory_has_one_writer_at_a_time() {
    let r = Resolved::parse(SMALL, "small").unwrap();
    let root = scratch("lock");
    let dir = root.join("small-smoke");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = dir.join(".iterdeploy.lock");
    // Held by a live process (this one stands in for it).
    std::fs::write(&lock, std::process::id().to_string()).unwrap();
    let e = experiment::run(&r, &options(&root))
        .err()
        .expect("the directory is locked")
        .to_string();
    assert!(
        e.contains("in use by another iterdeploy run")
            && e.contains(&std::process::id().to_string()),
        "{e}"
    );
    assert!(lock.exists(), "the other run's lock must stay");
    // Left by a process that no longer exists (above Linux's pid_max).
    std::fs::write(&lock, "4194304").unwrap();
    experiment::run(&r, &options(&root)).unwrap();
    assert!(!lock.exists(), "the run releases its lock");
    std::fs::remove_dir_all(&root).ok();
}

/// A run directory is one complete set or refused: a run marks its outputs
/// complete last; a reader (compare, report --overlay) refuses a directory
/// whose mark is missing (a killed run) or whose files differ from it (a new
/// results.csv beside an old summary.csv) (issue 15, item 3).
#[test]
fn readers_refuse_a_run_directory_that_is_not_one_complete_set() {
    let r = Resolved::parse(SMALL, "small").unwrap();
    let root = scratch("complete");
    let out = experiment::run(&r, &options(&root)).unwrap();
    let dir = out.dir.clone();
    experiment::summary_series(&dir, "success_prob", "").unwrap();
    // A file of another run beside this one's.
    let csv = dir.join("summary.csv");
    let original = std::fs::read(&csv).unwrap();
    std::fs::write(&csv, [&original[..], b"x"].concat()).unwrap();
    let e = experiment::summary_series(&dir, "success_prob", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("files of two runs are mixed"), "{e}");
    std::fs::write(&csv, &original).unwrap();
    // A run killed after it started replacing the set.
    iterdeploy::output::begin_set(&dir).unwrap();
    let e = experiment::summary_series(&dir, "success_prob", "")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a complete run"), "{e}");
    std::fs::remove_dir_all(&root).ok();
}

/// Unknown or mistyped fields of `[deployment]` tables name their file and
/// line, like toml's own errors elsewhere in the spec (issue 16, item 5).
#[test]
fn spec_field_errors_name_their_line() {
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.trim() == needle).unwrap() + 1;
    for (text, needle, what) in [
        (
            SMALL.replace(
                "samples_per_task = 4",
                "samples_per_task = 4\ntemprature = 1.0",
            ),
            "temprature = 1.0",
            "[deployment.defaults]: unknown field `temprature`",
        ),
        (
            SMALL.replace(
                "method = \"curated-sft\"",
                "method = \"curated-sft\"\nlr = 3",
            ),
            "lr = 3",
            "[[deployment.arms]] arm `paper`: unknown field `lr`",
        ),
        (
            SMALL.replace("method = \"curated-sft\"", "method = \"curated-sfx\""),
            "method = \"curated-sfx\"",
            "arm `paper`: `method`: unknown variant `curated-sfx`",
        ),
        (
            SMALL.replace("samples_per_task = 4", "samples_per_task = \"four\""),
            "samples_per_task = \"four\"",
            "[deployment.defaults]: `samples_per_task`: invalid type",
        ),
    ] {
        let e = Resolved::parse(&text, "x.toml").unwrap_err().to_string();
        let at = format!("x.toml:{}: ", line_of(&text, needle));
        assert!(
            e.starts_with(&at) && e.contains(what),
            "expected `{at}…{what}` in: {e}"
        );
    }
    // Elsewhere toml's own location is kept.
    let e = Resolved::parse(&SMALL.replace("hidden = 16", "hiden = 16"), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line") && e.contains("hiden"), "{e}");
}
