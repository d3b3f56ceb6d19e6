//! Lenient plan extraction from model output (free text with reasoning,
//! then a plan). The extractor only *finds* the plan; the validator decides
//! whether it is valid. Its rules, in order (also in the README):
//!
//! 1. **Reasoning is skipped.** If the text has a `</think>` tag, only the
//!    part after the last one is searched; the reasoning before it is
//!    searched only when the answer part holds no candidate plan.
//! 2. **Action lines.** A line is an action line when, after removing a list
//!    marker (`-`, `*`, `•`, `1.`, `1)`, `1:`, `Step 1:`, `step 1.`), wrapping
//!    backticks or bold markers, and a trailing `;` comment, it consists only
//!    of parenthesised groups `(name arg …)` (several per line allowed). An
//!    unclosed group at the end of a line is kept: it is what a truncated
//!    output looks like, and the validator rejects it as unparseable.
//! 3. **Blocks.** Consecutive action lines form a block; blank lines, code
//!    fences and `;` comment lines do not interrupt a block, any other line
//!    (prose) does.
//! 4. **Candidates.** A block is a candidate plan when at least one of its
//!    steps names an action of the domain (blocks that only restate facts,
//!    like `(on a b)`, are skipped and reported).
//! 5. **Choice.** The last candidate is the plan. If other candidates with
//!    different steps exist, that is reported as an ambiguity. No candidate
//!    means an empty plan, reported as "no plan found".

use crate::plan::{Columns, PlanStep, StepSyntax, parse_action, split_groups};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Extraction {
    pub steps: Vec<PlanStep>,
    /// First and last line of the chosen block.
    pub lines: Option<(u32, u32)>,
    /// Parenthesised lines that were not taken, with why.
    pub skipped: Vec<Skipped>,
    /// Reasons to doubt the choice (several candidate plans, none found).
    pub notes: Vec<String>,
    /// Number of prose lines passed over.
    pub prose_lines: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub line: u32,
    pub text: String,
    pub reason: String,
}

impl Extraction {
    pub fn found_plan(&self) -> bool {
        self.lines.is_some()
    }
}

enum LineKind<'a> {
    Actions(Vec<(usize, &'a str)>, &'a str),
    Neutral,
    Prose,
}

/// Removes list markers, bold/backtick wrappers; returns the rest.
fn strip_marker(line: &str) -> &str {
    let mut s = line.trim();
    loop {
        let before = s.len();
        for wrapper in ["**", "`"] {
            if let Some(inner) = s.strip_prefix(wrapper) {
                s = inner.trim_start();
            }
            if let Some(inner) = s.strip_suffix(wrapper) {
                s = inner.trim_end();
            }
        }
        for bullet in ["-", "*", "•", "+"] {
            if let Some(rest) = s.strip_prefix(bullet)
                && rest.starts_with(char::is_whitespace)
            {
                s = rest.trim_start();
            }
        }
        // `Step 3:` / `step 3.` / `3.` / `3)` / `3:` / `Step 3`
        let after_word = match s.get(..4) {
            Some(w) if w.eq_ignore_ascii_case("step") => s[4..].trim_start(),
            _ => s,
        };
        let digits = after_word.len()
            - after_word
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        if digits > 0 {
            let rest = &after_word[digits..];
            if let Some(rest) = rest.strip_prefix(['.', ')', ':', '-']) {
                s = rest.trim_start();
            } else if after_word.len() != s.len() {
                s = rest.trim_start();
            }
        }
        if s.len() == before {
            return s;
        }
    }
}

fn classify(line: &str) -> LineKind<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with("```") || trimmed.starts_with(';') {
        return LineKind::Neutral;
    }
    let body = strip_marker(trimmed);
    let code = match body.find(';') {
        Some(c) => body[..c].trim_end(),
        None => body,
    };
    let code = code.trim_end_matches('`').trim_end_matches("**").trim_end();
    match split_groups(code) {
        Some(groups) if !groups.is_empty() => LineKind::Actions(groups, code),
        _ => LineKind::Prose,
    }
}

struct Block {
    steps: Vec<PlanStep>,
    first: u32,
    last: u32,
}

fn find_blocks(lines: &[(u32, &str)], prose: &mut usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for &(line_no, raw) in lines {
        match classify(raw) {
            LineKind::Actions(groups, code) => {
                let block = current.get_or_insert(Block {
                    steps: Vec::new(),
                    first: line_no,
                    last: line_no,
                });
                block.last = line_no;
                // Column of `code` inside the raw line.
                let base = raw.find(code).unwrap_or(0);
                let mut cols = Columns::new(raw);
                for (offset, group) in groups {
                    block.steps.push(PlanStep {
                        text: group.to_string(),
                        line: line_no,
                        col: cols.at(base + offset),
                        syntax: parse_action(group),
                    });
                }
            }
            LineKind::Neutral => {}
            LineKind::Prose => {
                *prose += 1;
                blocks.extend(current.take());
            }
        }
    }
    blocks.extend(current);
    blocks
}

/// Extracts the plan from model output. `is_action` tells which names are
/// actions of the domain (lower-case).
pub fn extract_plan(text: &str, is_action: &dyn Fn(&str) -> bool) -> Extraction {
    let all: Vec<(u32, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| ((i + 1) as u32, l))
        .collect();
    let think_end = all.iter().rposition(|(_, l)| l.contains("</think>"));
    let (reasoning, answer) = match think_end {
        Some(i) => {
            // Text after the tag on the same line belongs to the answer.
            let (no, line) = all[i];
            let tail = &line[line.rfind("</think>").map_or(0, |p| p + "</think>".len())..];
            let mut answer = vec![(no, tail)];
            answer.extend_from_slice(&all[i + 1..]);
            (all[..i].to_vec(), answer)
        }
        None => (Vec::new(), all),
    };
    let mut out = Extraction::default();
    let is_candidate = |b: &Block| {
        b.steps
            .iter()
            .any(|s| matches!(&s.syntax, StepSyntax::Action { name, .. } if is_action(name)))
    };
    let mut blocks = find_blocks(&answer, &mut out.prose_lines);
    let reasoning_blocks = find_blocks(&reasoning, &mut out.prose_lines);
    if blocks.iter().any(is_candidate) {
        for b in &reasoning_blocks {
            for s in &b.steps {
                out.skipped.push(Skipped {
                    line: s.line,
                    text: s.text.clone(),
                    reason: "inside the <think> reasoning".into(),
                });
            }
        }
    } else if reasoning_blocks.iter().any(is_candidate) {
        out.notes
            .push("no plan after </think>; the plan was taken from the reasoning".into());
        let mut answer_blocks = std::mem::replace(&mut blocks, reasoning_blocks);
        blocks.append(&mut answer_blocks);
    }
    let candidates: Vec<usize> = (0..blocks.len())
        .filter(|&i| is_candidate(&blocks[i]))
        .collect();
    let chosen = candidates.last().copied();
    for (i, b) in blocks.iter().enumerate() {
        if Some(i) == chosen {
            continue;
        }
        let reason = if candidates.contains(&i) {
            "an earlier candidate plan"
        } else {
            "no step names an action of the domain"
        };
        for s in &b.steps {
            out.skipped.push(Skipped {
                line: s.line,
                text: s.text.clone(),
                reason: reason.to_string(),
            });
        }
    }
    match chosen {
        None => out.notes.push("no plan found".into()),
        Some(c) => {
            let chosen_texts: Vec<&str> = blocks[c].steps.iter().map(|s| s.text.as_str()).collect();
            let differing: Vec<String> = candidates
                .iter()
                .filter(|&&i| i != c)
                .filter(|&&i| {
                    let texts: Vec<&str> =
                        blocks[i].steps.iter().map(|s| s.text.as_str()).collect();
                    !texts
                        .iter()
                        .map(|t| t.to_lowercase())
                        .eq(chosen_texts.iter().map(|t| t.to_lowercase()))
                })
                .map(|&i| format!("lines {}-{}", blocks[i].first, blocks[i].last))
                .collect();
            if !differing.is_empty() {
                out.notes.push(format!(
                    "ambiguous: {} other candidate plan(s) ({}); using the last, lines {}-{}",
                    differing.len(),
                    differing.join(", "),
                    blocks[c].first,
                    blocks[c].last
                ));
            }
            let block = blocks.swap_remove(c);
            out.lines = Some((block.first, block.last));
            out.steps = block.steps;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bw(name: &str) -> bool {
        matches!(name, "pickup" | "putdown" | "stack" | "unstack")
    }

    fn names(e: &Extraction) -> Vec<String> {
        e.steps.iter().map(|s| s.text.to_lowercase()).collect()
    }

    #[test]
    fn strips_numbering_and_skips_fact_lists() {
        let text = "The state is:\n(on a b)\n(clear a)\nSo the plan:\n1. (unstack a b)\nStep 2: (putdown a)\n- `(pickup b)`\n**4.** (stack b a)\nDone.";
        let e = extract_plan(text, &bw);
        assert_eq!(
            names(&e),
            ["(unstack a b)", "(putdown a)", "(pickup b)", "(stack b a)"]
        );
        assert_eq!(e.lines, Some((5, 8)));
        assert_eq!(e.skipped.len(), 2);
        assert!(e.notes.is_empty(), "{:?}", e.notes);
    }

    #[test]
    fn reports_two_candidates_and_takes_the_last() {
        let text =
            "Try:\n(pickup a)\n(stack a b)\nWait, better:\n```\n(pickup b)\n\n(stack b a)\n```\n";
        let e = extract_plan(text, &bw);
        assert_eq!(names(&e), ["(pickup b)", "(stack b a)"]);
        assert!(e.notes[0].contains("ambiguous"), "{:?}", e.notes);
    }

    #[test]
    fn prefers_the_answer_after_think_and_keeps_truncation() {
        let text = "<think>\n(pickup c)\n</think>\nPlan:\n(pickup a)\n(stack a";
        let e = extract_plan(text, &bw);
        assert_eq!(e.steps.len(), 2);
        assert!(matches!(e.steps[1].syntax, StepSyntax::Unparseable { .. }));
        assert_eq!(e.skipped[0].line, 2);
    }

    #[test]
    fn no_plan_is_an_empty_extraction_with_a_note() {
        let e = extract_plan("I cannot solve this.", &bw);
        assert!(e.steps.is_empty() && !e.found_plan());
        assert_eq!(e.notes, ["no plan found"]);
    }
}
