//! Curating real model outputs into the next generation's SFT set.
//!
//! Input: one JSONL file per generation, one object per sample:
//! `{"id": TASK_ID, "text": MODEL_OUTPUT, "reasoning_tokens": N?, "logprob": X?}`.
//! Every sample gets a verdict and a reason. A line that is not such an
//! object (malformed JSON, missing `id`/`text`, unknown task, not UTF-8) is
//! reported with its file and line number and skipped — it never aborts the
//! run. An invalid plan is data: it is counted under its failure kind.
//!
//! Rules (per task, over the pool): `shortest` (the paper: the valid sample
//! with the fewest plan steps; ties by fewer reasoning tokens — the
//! `reasoning_tokens` field, else the length of the text in characters — then
//! by the earliest generation and line), `one` (one valid sample chosen
//! uniformly with a seeded generator), `all` (every valid sample), `none` (every
//! sample, valid or not: the no-curation baseline). Pool `accumulate` uses
//! the samples of all generations given, `replace` only the last file's.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::TaskSet;
use super::prompt::{Template, messages};
use crate::Result;
use crate::curation::{Pool, Rule};
use crate::extract::extract_plan;
use crate::plan::StepSyntax;
use crate::validate::Validator;

/// A sample with its verdict.
#[derive(Clone, Debug)]
pub struct Judged {
    pub generation: usize,
    pub line: usize,
    pub task: usize,
    pub text: String,
    pub reasoning_size: u64,
    pub valid: bool,
    pub plan_length: usize,
    /// The extracted plan, normalised (lower case, single spaces), one step
    /// per line — for counting distinct plans.
    pub plan: String,
    /// `valid`, `no_plan_found`, or the validator's failure kind.
    pub reason: String,
}

/// A line that is not a usable sample.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BadLine {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

/// Per-task validators, built once for all samples.
pub struct Judge<'a> {
    set: &'a TaskSet,
    validators: Vec<Validator<'a>>,
}

impl<'a> Judge<'a> {
    pub fn new(set: &'a TaskSet) -> Self {
        Judge {
            set,
            validators: set
                .tasks
                .iter()
                .map(|t| Validator::new(&set.domain, &t.problem))
                .collect(),
        }
    }

    /// Extracts and validates one model output for task `task`.
    pub fn judge(
        &self,
        generation: usize,
        line: usize,
        task: usize,
        text: String,
        reasoning_tokens: Option<u64>,
    ) -> Judged {
        let domain = &self.set.domain;
        let extraction = extract_plan(&text, &|a| domain.action(a).is_some());
        let verdict = self.validators[task].validate(&extraction.steps);
        let plan = extraction
            .steps
            .iter()
            .map(|s| match &s.syntax {
                StepSyntax::Action { name, args } => {
                    let mut t = format!("({name}");
                    for a in args {
                        t.push(' ');
                        t.push_str(a);
                    }
                    t + ")"
                }
                StepSyntax::Unparseable { .. } => s.text.clone(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let reason = if !extraction.found_plan() {
            "no_plan_found".to_string()
        } else if verdict.valid {
            "valid".to_string()
        } else {
            verdict
                .failure
                .as_ref()
                .map_or("invalid", |f| f.kind.name())
                .to_string()
        };
        Judged {
            generation,
            line,
            task,
            reasoning_size: reasoning_tokens.unwrap_or(text.chars().count() as u64),
            text,
            valid: verdict.valid && extraction.found_plan(),
            plan_length: verdict.length,
            plan,
            reason,
        }
    }
}

/// Reads and judges one generation's JSONL file. Only an unreadable file is
/// an error; bad lines are returned beside the samples.
pub fn read_generation(
    path: &Path,
    generation: usize,
    judge: &Judge,
) -> Result<(Vec<Judged>, Vec<BadLine>)> {
    let bytes = crate::input::read_file(path)?;
    let bytes = crate::input::strip_bom(&bytes);
    let file = path.display().to_string();
    let mut samples = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let mut fail = |reason: String| {
            bad.push(BadLine {
                file: file.clone(),
                line,
                reason,
            })
        };
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            fail("not UTF-8".into());
            continue;
        };
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                fail(format!("malformed JSON: {e}"));
                continue;
            }
        };
        let Some(id) = value.get("id").and_then(|v| {
            v.as_str()
                .map(str::to_string)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        }) else {
            fail("no string `id` field".into());
            continue;
        };
        let Some(output) = value.get("text").and_then(|v| v.as_str()) else {
            fail(format!("sample `{id}` has no string `text` field"));
            continue;
        };
        let Some(task) = judge.set.find(&id) else {
            fail(format!("unknown task id `{id}`"));
            continue;
        };
        let reasoning = value.get("reasoning_tokens").and_then(|v| v.as_u64());
        samples.push(judge.judge(generation, line, task, output.to_string(), reasoning));
    }
    Ok((samples, bad))
}

impl crate::curation::Candidate for Judged {
    fn task(&self) -> usize {
        self.task
    }
    fn accepted(&self) -> bool {
        self.valid
    }
    fn plan_length(&self) -> usize {
        self.plan_length
    }
    /// Fewer reasoning tokens first, then the earliest generation and line.
    fn tie_key(&self) -> (u64, usize, usize) {
        (self.reasoning_size, self.generation, self.line)
    }
}

/// The kept samples under `rule` and `pool`, in (task, generation, line)
/// order (generations are read in order, lines in file order).
pub fn select(generations: &[Vec<Judged>], rule: Rule, pool: Pool, seed: u64) -> Vec<&Judged> {
    crate::curation::select(generations, rule, pool, seed)
}

/// Per-generation statistics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerationStats {
    pub generation: usize,
    pub file: String,
    pub samples: usize,
    pub bad_lines: usize,
    pub plans_found: usize,
    pub valid: usize,
    pub tasks: usize,
    pub solved_tasks: usize,
    pub mean_valid_length: Option<f64>,
    pub min_valid_length: Option<usize>,
    pub max_valid_length: Option<usize>,
    pub distinct_valid_plans: usize,
    /// Samples per reason (`valid`, `no_plan_found`, failure kinds).
    pub reasons: BTreeMap<String, usize>,
}

pub fn statistics(
    generation: usize,
    file: &str,
    samples: &[Judged],
    bad: usize,
    tasks: usize,
) -> GenerationStats {
    let valid: Vec<&Judged> = samples.iter().filter(|s| s.valid).collect();
    let lengths: Vec<usize> = valid.iter().map(|s| s.plan_length).collect();
    let mut reasons = BTreeMap::new();
    for s in samples {
        *reasons.entry(s.reason.clone()).or_insert(0) += 1;
    }
    GenerationStats {
        generation,
        file: file.to_string(),
        samples: samples.len(),
        bad_lines: bad,
        plans_found: samples
            .iter()
            .filter(|s| s.reason != "no_plan_found")
            .count(),
        valid: valid.len(),
        tasks,
        solved_tasks: valid.iter().map(|s| s.task).collect::<HashSet<_>>().len(),
        mean_valid_length: (!lengths.is_empty())
            .then(|| lengths.iter().sum::<usize>() as f64 / lengths.len() as f64),
        min_valid_length: lengths.iter().copied().min(),
        max_valid_length: lengths.iter().copied().max(),
        distinct_valid_plans: valid
            .iter()
            .map(|s| (s.task, s.plan.as_str()))
            .collect::<HashSet<_>>()
            .len(),
        reasons,
    }
}

/// The SFT set in chat format (`messages`: system, user prompt, assistant
/// output), one JSON object per kept sample, with its task id, generation
/// and plan length beside the messages.
pub fn sft_jsonl(kept: &[&Judged], set: &TaskSet, template: &Template) -> String {
    let mut out = String::new();
    for s in kept {
        let task = &set.tasks[s.task];
        let mut msgs = messages(template, set, task);
        msgs.as_array_mut()
            .expect("messages is an array")
            .push(serde_json::json!({"role": "assistant", "content": s.text}));
        let obj = serde_json::json!({
            "messages": msgs,
            "id": task.id,
            "generation": s.generation,
            "valid": s.valid,
            "plan_length": s.plan_length,
        });
        out.push_str(&obj.to_string());
        out.push('\n');
    }
    out
}
