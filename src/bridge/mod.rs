//! The bridge to real LLM pipelines: iterdeploy is the *user in the loop*.
//! It writes prompts for a sampling engine ([`prompt`]), reads what the
//! model wrote, extracts and validates every plan, curates the next
//! generation's fine-tuning set by the paper's rule and writes it as chat
//! JSONL ([`curate`]).

pub mod curate;
pub mod prompt;
pub mod report;

use std::path::{Path, PathBuf};

use crate::pddl::{Domain, Problem};
use crate::{Error, Result};

/// One deployment task: an id (the problem file's stem), its files and text.
pub struct BridgeTask {
    pub id: String,
    pub problem_file: PathBuf,
    pub problem_text: String,
    pub problem: Problem,
}

/// The tasks of a run: a directory with `domain.pddl` and problem files, or
/// a generator `manifest.csv` (with `domain.pddl` beside it).
pub struct TaskSet {
    pub domain_file: PathBuf,
    pub domain_text: String,
    pub domain: Domain,
    pub tasks: Vec<BridgeTask>,
}

impl TaskSet {
    pub fn load(path: &Path) -> Result<TaskSet> {
        let (dir, problem_files): (PathBuf, Vec<PathBuf>) = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension().is_some_and(|e| e == "pddl")
                        && f.file_name().is_some_and(|n| n != "domain.pddl")
                })
                .collect();
            files.sort();
            (path.to_path_buf(), files)
        } else {
            let manifest = crate::generate::Manifest::read(path)?;
            let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
            let files = manifest.rows.iter().map(|r| dir.join(&r.file)).collect();
            (dir, files)
        };
        let domain_file = dir.join("domain.pddl");
        let domain_text = crate::input::read_text(&domain_file)?;
        let domain =
            crate::pddl::parse_domain(domain_text.as_bytes(), &domain_file.display().to_string())?;
        let mut tasks = Vec::with_capacity(problem_files.len());
        let mut seen = std::collections::HashSet::new();
        for f in problem_files {
            let text = crate::input::read_text(&f)?;
            let problem =
                crate::pddl::parse_problem(text.as_bytes(), &f.display().to_string(), &domain)?;
            let id = f
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !seen.insert(id.clone()) {
                return Err(Error::Invalid(format!(
                    "two problem files have the id `{id}`"
                )));
            }
            tasks.push(BridgeTask {
                id,
                problem_file: f,
                problem_text: text,
                problem,
            });
        }
        if tasks.is_empty() {
            return Err(Error::Invalid(format!(
                "no problem files found in {}",
                path.display()
            )));
        }
        Ok(TaskSet {
            domain_file,
            domain_text,
            domain,
            tasks,
        })
    }

    pub fn find(&self, id: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.id == id)
    }
}
