//! Plans as written: the IPC plan format (one `(action arg …)` per line,
//! `;` comments, a `; cost = N` footer).
//!
//! A line that is not an action is kept as an [`StepSyntax::Unparseable`]
//! step so the validator can reject the plan *at that step* — an invalid
//! plan is data, not an error. Only text that is not text at all (invalid
//! UTF-8, NUL bytes) is an error.

use crate::pddl::{PddlError, check_text};

/// One step of a plan with where it was written.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanStep {
    /// The step exactly as written (trimmed).
    pub text: String,
    /// 1-based line and column in the source text.
    pub line: u32,
    pub col: u32,
    pub syntax: StepSyntax,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepSyntax {
    /// Lower-cased action name and arguments.
    Action {
        name: String,
        args: Vec<String>,
    },
    Unparseable {
        reason: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    /// The `; cost = N` footer if present (informational; never trusted).
    pub claimed_cost: Option<u64>,
}

/// Parses `(name arg …)`. The text must be exactly one parenthesised group
/// of plain symbols.
pub fn parse_action(text: &str) -> StepSyntax {
    let unparseable = |reason: &str| StepSyntax::Unparseable {
        reason: reason.to_string(),
    };
    let Some(inner) = text.strip_prefix('(') else {
        return unparseable("an action must start with `(`");
    };
    let Some(inner) = inner.strip_suffix(')') else {
        return unparseable("the action is not closed with `)` (truncated?)");
    };
    if inner.contains(['(', ')']) {
        return unparseable("nested parentheses inside an action");
    }
    let mut words = inner.split_whitespace().map(str::to_lowercase);
    match words.next() {
        None => unparseable("empty action `()`"),
        Some(name) => StepSyntax::Action {
            name,
            args: words.collect(),
        },
    }
}

/// Splits a line into its parenthesised groups, e.g. `(a x)(b y)`; `None`
/// if anything else than groups and white space is on the line.
pub(crate) fn split_groups(line: &str) -> Option<Vec<(usize, &str)>> {
    let mut groups = Vec::new();
    let mut rest = line;
    let mut offset = 0;
    loop {
        let trimmed = rest.trim_start();
        offset += rest.len() - trimmed.len();
        if trimmed.is_empty() {
            return Some(groups);
        }
        if !trimmed.starts_with('(') {
            return None;
        }
        match trimmed.find(')') {
            Some(end) => {
                groups.push((offset, &trimmed[..=end]));
                rest = &trimmed[end + 1..];
                offset += end + 1;
            }
            None => {
                // An unclosed group runs to the end of the line (truncation).
                groups.push((offset, trimmed.trim_end()));
                return Some(groups);
            }
        }
    }
}

fn read_cost_footer(comment: &str) -> Option<u64> {
    let rest = comment.trim_start_matches(';').trim();
    let rest = rest.strip_prefix("cost")?.trim_start();
    let rest = rest.strip_prefix('=')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Parses a plan in IPC format.
pub fn parse_ipc_plan(bytes: &[u8], file: &str) -> Result<Plan, PddlError> {
    let text = check_text(bytes, file)?;
    let mut plan = Plan::default();
    for (i, raw) in text.lines().enumerate() {
        let line = (i + 1) as u32;
        let (code, comment) = match raw.find(';') {
            Some(c) => (&raw[..c], Some(&raw[c..])),
            None => (raw, None),
        };
        if let Some(cost) = comment.and_then(read_cost_footer) {
            plan.claimed_cost = Some(cost);
        }
        if code.trim().is_empty() {
            continue;
        }
        match split_groups(code) {
            Some(groups) => {
                let mut cols = Columns::new(code);
                for (offset, group) in groups {
                    plan.steps.push(PlanStep {
                        text: group.to_string(),
                        line,
                        col: cols.at(offset),
                        syntax: parse_action(group),
                    });
                }
            }
            None => {
                let trimmed = code.trim();
                let offset = code.len() - code.trim_start().len();
                plan.steps.push(PlanStep {
                    text: trimmed.to_string(),
                    line,
                    col: col_of(code, offset),
                    syntax: StepSyntax::Unparseable {
                        reason: "not an action `(name arg …)`".into(),
                    },
                });
            }
        }
    }
    Ok(plan)
}

/// 1-based column (in characters) of a byte offset.
pub(crate) fn col_of(line: &str, byte_offset: usize) -> u32 {
    line[..byte_offset].chars().count() as u32 + 1
}

/// 1-based character columns of non-decreasing byte offsets in one line,
/// counting each character once: linear in the line's length overall,
/// where [`col_of`] for every step of a long line was quadratic (one line
/// of 10⁶ actions took over two minutes).
pub(crate) struct Columns<'a> {
    line: &'a str,
    byte: usize,
    chars: u32,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(line: &'a str) -> Self {
        Columns {
            line,
            byte: 0,
            chars: 0,
        }
    }

    /// The column of `byte_offset` (≥ the previous one asked for).
    pub(crate) fn at(&mut self, byte_offset: usize) -> u32 {
        if byte_offset < self.byte {
            return col_of(self.line, byte_offset);
        }
        self.chars += self.line[self.byte..byte_offset].chars().count() as u32;
        self.byte = byte_offset;
        self.chars + 1
    }
}

/// Writes a plan in IPC format with the cost footer.
pub fn format_ipc_plan<'a>(
    actions: impl IntoIterator<Item = &'a str>,
    cost: u64,
    unit_cost: bool,
) -> String {
    let mut out = String::new();
    for a in actions {
        out.push_str(a);
        out.push('\n');
    }
    let kind = if unit_cost {
        "unit cost"
    } else {
        "general cost"
    };
    out.push_str(&format!("; cost = {cost} ({kind})\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The linear column cursor agrees with counting from the line start,
    /// with multi-byte characters inside and between the steps.
    #[test]
    fn columns_agree_with_counting_from_the_start() {
        let line = "(ä b) (é)  (∀ d e f)\t (g)";
        let groups = split_groups(line).unwrap();
        let mut cols = Columns::new(line);
        for (offset, _) in &groups {
            assert_eq!(cols.at(*offset), col_of(line, *offset), "offset {offset}");
        }
        assert_eq!(groups.len(), 4);
    }

    #[test]
    fn reads_ipc_plans_with_comments_footer_and_quirks() {
        let p = parse_ipc_plan(
            b"(Pick-Up A)\n; note\n(stack a b)(put x)\n\nhello\n; cost = 7 (unit cost)\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.claimed_cost, Some(7));
        assert_eq!(p.steps.len(), 4);
        assert_eq!(
            p.steps[0].syntax,
            StepSyntax::Action {
                name: "pick-up".into(),
                args: vec!["a".into()]
            }
        );
        assert_eq!(p.steps[0].text, "(Pick-Up A)");
        assert_eq!((p.steps[2].line, p.steps[2].col), (3, 12));
        assert!(matches!(p.steps[3].syntax, StepSyntax::Unparseable { .. }));
        assert_eq!((p.steps[3].line, p.steps[3].col), (5, 1));
    }

    #[test]
    fn truncated_and_nested_actions_are_unparseable_steps() {
        assert!(matches!(
            parse_action("(stack a"),
            StepSyntax::Unparseable { .. }
        ));
        assert!(matches!(
            parse_action("(stack (a) b)"),
            StepSyntax::Unparseable { .. }
        ));
        assert!(matches!(parse_action("()"), StepSyntax::Unparseable { .. }));
    }

    #[test]
    fn binary_plans_are_errors_with_position() {
        let e = parse_ipc_plan(b"(a)\n(b\x00)", "bin.plan").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bin.plan:2:3: not a text file (invalid UTF-8 or a NUL byte)"
        );
    }
}
