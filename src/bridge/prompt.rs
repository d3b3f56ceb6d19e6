//! Prompts: one chat request per task, as JSONL for a sampling engine.
//!
//! The default user message gives the PDDL domain and problem and asks for
//! a plan in IPC syntax; a user template replaces it. Templates may use
//! `{domain}`, `{problem}`, `{task_id}` and `{domain_name}`; any other
//! `{…}` placeholder is an error naming it (write `{{` and `}}` for braces).

use super::{BridgeTask, TaskSet};
use crate::{Error, Result};

pub const SYSTEM_MESSAGE: &str =
    "You are an expert in automated planning. You solve planning tasks given in PDDL.";

pub const DEFAULT_TEMPLATE: &str = "Solve this planning task.\n\nDomain:\n```pddl\n{domain}\n```\n\nProblem:\n```pddl\n{problem}\n```\n\nThink it through, then give the plan as the last thing you write: one action per line in IPC syntax, e.g. (action-name arg1 arg2), nothing else on those lines.";

/// A checked template.
pub struct Template {
    text: String,
}

const PLACEHOLDERS: [&str; 4] = ["domain", "problem", "task_id", "domain_name"];

impl Template {
    pub fn new(text: &str, source: &str) -> Result<Self> {
        // Scan for {name} outside {{ }} escapes.
        let mut chars = text.char_indices().peekable();
        let mut line = 1;
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => line += 1,
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                }
                '{' => {
                    let end = text[i..].find('}').ok_or_else(|| {
                        Error::Invalid(format!("{source}:{line}: unclosed `{{` in the template"))
                    })?;
                    let name = &text[i + 1..i + end];
                    if !PLACEHOLDERS.contains(&name) {
                        return Err(Error::Invalid(format!(
                            "{source}:{line}: unknown placeholder `{{{name}}}` (known: {{domain}} {{problem}} {{task_id}} {{domain_name}}; write {{{{ for a brace)"
                        )));
                    }
                }
                _ => {}
            }
        }
        Ok(Template {
            text: text.to_string(),
        })
    }

    pub fn default_template() -> Self {
        Template {
            text: DEFAULT_TEMPLATE.to_string(),
        }
    }

    pub fn render(&self, set: &TaskSet, task: &BridgeTask) -> String {
        let mut out = String::with_capacity(
            self.text.len() + set.domain_text.len() + task.problem_text.len(),
        );
        let mut rest = self.text.as_str();
        while let Some(i) = rest.find(['{', '}']) {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                out.push_str(&tail[..1]);
                rest = &tail[2..];
            } else if let Some(stripped) = tail.strip_prefix('{') {
                let end = stripped.find('}').expect("checked in Template::new");
                out.push_str(match &stripped[..end] {
                    "domain" => set.domain_text.trim_end(),
                    "problem" => task.problem_text.trim_end(),
                    "task_id" => &task.id,
                    _ => &set.domain.name,
                });
                rest = &stripped[end + 1..];
            } else {
                out.push('}');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        out
    }
}

/// The chat messages for one task.
pub fn messages(template: &Template, set: &TaskSet, task: &BridgeTask) -> serde_json::Value {
    serde_json::json!([
        {"role": "system", "content": SYSTEM_MESSAGE},
        {"role": "user", "content": template.render(set, task)},
    ])
}

/// `prompts.jsonl`: one object per task (id, domain, problem file, messages).
pub fn prompts_jsonl(template: &Template, set: &TaskSet) -> String {
    let mut out = String::new();
    for t in &set.tasks {
        let obj = serde_json::json!({
            "id": t.id,
            "domain": set.domain.name,
            "problem_file": t.problem_file.display().to_string(),
            "messages": messages(template, set, t),
        });
        out.push_str(&obj.to_string());
        out.push('\n');
    }
    out
}
