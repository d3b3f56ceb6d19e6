//! The LLM bridge on a hand-written fixture of realistic model outputs:
//! verdicts and reasons for every sample, bad lines reported and skipped,
//! the paper's curation rule with its tie-break, other rules and pools,
//! templates, and robustness to what real models write.

use iterdeploy::bridge::TaskSet;
use iterdeploy::bridge::curate::{Judge, read_generation, select, statistics};
use iterdeploy::bridge::prompt::Template;
use iterdeploy::curation::{Pool, Rule};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bridge")
        .join(name)
}

#[test]
fn every_sample_gets_a_verdict_and_bad_lines_are_reported() {
    let set = TaskSet::load(&fixture("tasks")).unwrap();
    let judge = Judge::new(&set);
    let (g0, bad0) = read_generation(&fixture("gen0.jsonl"), 0, &judge).unwrap();
    let (g1, bad1) = read_generation(&fixture("gen1.jsonl"), 1, &judge).unwrap();
    assert_eq!(bad0.iter().map(|b| b.line).collect::<Vec<_>>(), [4, 8]);
    assert!(bad0[0].reason.starts_with("malformed JSON"));
    assert_eq!(bad0[1].reason, "unknown task id `bw9`");
    assert_eq!(bad1.iter().map(|b| b.line).collect::<Vec<_>>(), [7]);
    let reasons: Vec<&str> = g0.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "valid",
            "unsatisfied_precondition",
            "valid",
            "unparseable_line",
            "no_plan_found",
            "valid"
        ]
    );
    let s0 = statistics(0, "gen0", &g0, bad0.len(), set.tasks.len());
    assert_eq!(
        (s0.samples, s0.bad_lines, s0.valid, s0.solved_tasks),
        (6, 2, 3, 3)
    );
    assert_eq!(
        (s0.min_valid_length, s0.max_valid_length),
        (Some(4), Some(8))
    );
    let s1 = statistics(1, "gen1", &g1, bad1.len(), set.tasks.len());
    assert_eq!((s1.valid, s1.distinct_valid_plans), (4, 3));
}

#[test]
fn shortest_rule_pools_generations_and_breaks_ties_by_reasoning() {
    let set = TaskSet::load(&fixture("tasks")).unwrap();
    let judge = Judge::new(&set);
    let gens: Vec<_> = ["gen0.jsonl", "gen1.jsonl"]
        .iter()
        .enumerate()
        .map(|(g, f)| read_generation(&fixture(f), g, &judge).unwrap().0)
        .collect();
    let kept = select(&gens, Rule::ShortestPerTask, Pool::Accumulate, 0);
    let picked: Vec<(String, usize, usize)> = kept
        .iter()
        .map(|k| (set.tasks[k.task].id.clone(), k.generation, k.line))
        .collect();
    // Equal lengths everywhere: fewest reasoning tokens wins (30 < 41,
    // 3 < 48, 0 < 18 < the text length of the unannotated gen-0 sample).
    assert_eq!(
        picked,
        [
            ("bw3a".into(), 1, 1),
            ("bw3b".into(), 1, 3),
            ("bw4".into(), 1, 5)
        ]
    );
    assert!(kept.iter().all(|k| k.valid));
    // Replace: only the last generation; all: every valid sample; none:
    // every sample.
    assert_eq!(
        select(&gens, Rule::ShortestPerTask, Pool::Replace, 0).len(),
        3
    );
    assert_eq!(select(&gens, Rule::AllValid, Pool::Accumulate, 0).len(), 7);
    assert_eq!(select(&gens, Rule::None, Pool::Replace, 0).len(), 5);
    let one_a = select(&gens, Rule::OnePerTask, Pool::Accumulate, 5);
    let one_b = select(&gens, Rule::OnePerTask, Pool::Accumulate, 5);
    assert_eq!(
        one_a
            .iter()
            .map(|k| (k.generation, k.line))
            .collect::<Vec<_>>(),
        one_b
            .iter()
            .map(|k| (k.generation, k.line))
            .collect::<Vec<_>>()
    );
}

#[test]
fn templates_check_placeholders_and_keep_escaped_braces() {
    let set = TaskSet::load(&fixture("tasks")).unwrap();
    let t = Template::new("Task {task_id} of {domain_name}: {{json}}", "t.txt").unwrap();
    assert_eq!(
        t.render(&set, &set.tasks[0]),
        "Task bw3a of blocksworld: {json}"
    );
    let err = Template::new("line one\n{domian}", "t.txt")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("t.txt:2: unknown placeholder `{domian}`"),
        "{err}"
    );
}

#[test]
fn long_unicode_and_binary_outputs_never_abort_a_run() {
    let set = TaskSet::load(&fixture("tasks")).unwrap();
    let judge = Judge::new(&set);
    let dir = std::env::temp_dir().join(format!("iterdeploy-bridge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let long_reasoning = "ünïcödé reasoning (maybe (pickup b1)?) ".repeat(50_000);
    let text = format!(
        "<think>{long_reasoning}</think>\n(pickup b2)\n(stack b2 b3)\n(pickup b1)\n(stack b1 b2)"
    );
    let mut content = serde_json::json!({"id": "bw3a", "text": text}).to_string();
    content.push('\n');
    let mut bytes = content.into_bytes();
    bytes.extend_from_slice(
        b"\xff\xfe\x00garbage\n{\"id\": 3, \"text\": \"x\"}\n{\"text\": \"no id\"}\n",
    );
    let path = dir.join("gen.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let (samples, bad) = read_generation(&path, 0, &judge).unwrap();
    assert_eq!(samples.len(), 1);
    assert!(samples[0].valid, "{}", samples[0].reason);
    assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(bad[0].reason, "not UTF-8");
    std::fs::remove_dir_all(&dir).ok();
}

/// `report` on the fixture run: per-generation numbers in the simulator's
/// metric names, figures, bad lines counted; gaps in the generation files
/// and a missing tasks/ are errors that say so.
#[test]
fn report_summarises_a_real_run_and_overlays_a_simulation() {
    let run = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bridge");
    let out = std::env::temp_dir().join(format!("iterdeploy-report-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let r = iterdeploy::bridge::report::report(&run, None, &[], Some(&out)).unwrap();
    assert_eq!(r.bad_lines, 3);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    for row in [
        "0,all,solved_sampled,1\n",
        "0,all,valid_rate,0.5\n",
        "1,all,valid_rate,0.8\n",
        "0,all,longest_valid_plan,8\n",
        "1,all,distinct_valid_plans,3\n",
    ] {
        assert!(csv.contains(row), "missing {row:?} in\n{csv}");
    }
    let lengths = std::fs::read_to_string(out.join("lengths.csv")).unwrap();
    assert!(
        lengths.starts_with("generation,plan_length,valid_samples\n0,4,"),
        "{lengths}"
    );
    for f in [
        "solved.png",
        "solved.svg",
        "lengths.png",
        "lengths.svg",
        "summary.md",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    // Overlay: a simulation's summary.csv adds one series per arm.
    let sim = out.join("sim");
    std::fs::create_dir_all(&sim).unwrap();
    std::fs::write(
        sim.join("summary.csv"),
        "arm,generation,bucket,metric,seeds,mean,ci_low,ci_high\n\"paper, curated\",0,all,solved_sampled,3,0.2,0.1,0.3\n\"paper, curated\",1,all,solved_sampled,3,0.4,0.3,0.5\n",
    )
    .unwrap();
    // Not yet marked complete (as after a killed run): refused.
    let e = iterdeploy::bridge::report::report(&run, None, std::slice::from_ref(&sim), Some(&out))
        .err()
        .expect("an unmarked overlay is refused")
        .to_string();
    assert!(e.contains("not a complete run"), "{e}");
    iterdeploy::output::finish_set(&sim, &["summary.csv".to_string()]).unwrap();
    iterdeploy::bridge::report::report(&run, None, std::slice::from_ref(&sim), Some(&out)).unwrap();
    let svg = std::fs::read_to_string(out.join("solved.svg")).unwrap();
    assert!(
        svg.contains("simulation: paper, curated"),
        "overlay series missing"
    );
    std::fs::write(sim.join("summary.csv"), "not,a,summary\n").unwrap();
    iterdeploy::output::finish_set(&sim, &["summary.csv".to_string()]).unwrap();
    let e = iterdeploy::bridge::report::report(&run, None, &[sim], Some(&out))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("summary.csv") && e.contains("not the summary"),
        "{e}"
    );

    // A gap in the generation files.
    let gappy = out.join("gappy");
    std::fs::create_dir_all(&gappy).unwrap();
    std::fs::copy(run.join("gen0.jsonl"), gappy.join("gen0.jsonl")).unwrap();
    std::fs::copy(run.join("gen1.jsonl"), gappy.join("gen2.jsonl")).unwrap();
    let e = iterdeploy::bridge::report::report(&gappy, Some(&run.join("tasks")), &[], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("gen1.jsonl is missing"), "{e}");
    let e = iterdeploy::bridge::report::report(&gappy, None, &[], None)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--tasks"), "{e}");
}

/// A UTF-8 byte-order mark before the first line changes nothing: the
/// JSONL file, a template and a spec read as without it (issue 15, item 4).
#[test]
fn a_byte_order_mark_is_not_part_of_the_text() {
    let set = TaskSet::load(&fixture("tasks")).unwrap();
    let judge = Judge::new(&set);
    let plain = std::fs::read(fixture("gen0.jsonl")).unwrap();
    let dir = std::env::temp_dir().join(format!("iterdeploy-bom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_bom = dir.join("gen0.jsonl");
    std::fs::write(&with_bom, [b"\xEF\xBB\xBF".as_slice(), &plain].concat()).unwrap();
    let (a, bad_a) = read_generation(&fixture("gen0.jsonl"), 0, &judge).unwrap();
    let (b, bad_b) = read_generation(&with_bom, 0, &judge).unwrap();
    let lines =
        |v: &[iterdeploy::bridge::curate::BadLine]| v.iter().map(|x| x.line).collect::<Vec<_>>();
    assert_eq!(lines(&bad_a), lines(&bad_b));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| x.reason == y.reason));
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/headline.toml");
    let text = std::fs::read(&spec).unwrap();
    let spec_bom = dir.join("headline.toml");
    std::fs::write(&spec_bom, [b"\xEF\xBB\xBF".as_slice(), &text].concat()).unwrap();
    iterdeploy::experiment::Resolved::read(&spec_bom).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

/// Generation files are named strictly: `gen00.jsonl` beside `gen0.jsonl`
/// (one generation twice) and malformed names are errors naming the file,
/// never a silently dropped generation (issue 15, item 6).
#[test]
fn generation_file_names_are_strict() {
    use iterdeploy::bridge::report::generation_files;
    let dir = std::env::temp_dir().join(format!("iterdeploy-gens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["gen0.jsonl", "gen1.jsonl", "notes.txt"] {
        std::fs::write(dir.join(f), "").unwrap();
    }
    assert_eq!(generation_files(&dir).unwrap().len(), 2);
    for bad in ["gen00.jsonl", "gen1a.jsonl", "gen-1.jsonl", "gen.jsonl"] {
        std::fs::write(dir.join(bad), "").unwrap();
        let e = generation_files(&dir).unwrap_err().to_string();
        assert!(
            e.contains(bad) && e.contains("no leading zeros"),
            "{bad}: {e}"
        );
        std::fs::remove_file(dir.join(bad)).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A figure's size does not grow with the width of an integer axis: a
/// 4M-step plan length used to put 4M tick labels into the SVG.
#[test]
fn an_integer_axis_of_millions_stays_a_small_figure() {
    use iterdeploy::plot::{Figure, LineKind, Series};
    let dir = std::env::temp_dir().join(format!("iterdeploy-wide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Figure {
        title: "wide".into(),
        x_label: "plan length".into(),
        y_label: "fraction".into(),
        series: vec![Series {
            name: "g0".into(),
            points: vec![(1.0, 0.5), (4_000_000.0, 0.5)],
            band: None,
            style: LineKind::Solid,
        }],
        log_x: false,
        log_y: false,
        y_bounds: Some((0.0, 1.0)),
        band_note: None,
        integer_x: true,
        y_exact: None,
        annotations: Vec::new(),
        y_ticks: None,
    }
    .write(&dir, "wide")
    .unwrap();
    let svg = std::fs::metadata(dir.join("wide.svg")).unwrap().len();
    assert!(svg < 200_000, "{svg} bytes");
    std::fs::remove_dir_all(&dir).ok();
}
