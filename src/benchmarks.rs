//! The shared benchmark layout (`<root>/<domain>/domain.pddl`,
//! `<root>/<domain>/<split>/<level>/pNN.pddl` with `pNN.plan` beside it),
//! walked in a fixed order so tests and benchmarks see the same list.

use std::path::{Path, PathBuf};

/// One problem of the benchmark set and its reference plan, if any.
#[derive(Clone, Debug)]
pub struct BenchmarkTask {
    pub domain_name: String,
    pub domain: PathBuf,
    pub problem: PathBuf,
    pub plan: Option<PathBuf>,
    /// `training/easy`, `testing/medium`, …
    pub split: String,
}

fn sorted_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.sort();
    Ok(v)
}

/// Every task under `root`, sorted by domain, split and file name.
pub fn collect(root: &Path) -> crate::Result<Vec<BenchmarkTask>> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| crate::Error::io(&p, e)
    };
    // Absolute paths: peers run in scratch directories.
    let root = &root.canonicalize().map_err(io(root))?;
    let mut out = Vec::new();
    for dom_dir in sorted_dir(root).map_err(io(root))? {
        let domain = dom_dir.join("domain.pddl");
        if !domain.is_file() {
            continue;
        }
        let domain_name = dom_dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        for split in ["training", "testing"] {
            let split_dir = dom_dir.join(split);
            if !split_dir.is_dir() {
                continue;
            }
            for level_dir in sorted_dir(&split_dir).map_err(io(&split_dir))? {
                let level = level_dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                for f in sorted_dir(&level_dir).map_err(io(&level_dir))? {
                    if f.extension().is_some_and(|e| e == "pddl") {
                        let plan = f.with_extension("plan");
                        out.push(BenchmarkTask {
                            domain_name: domain_name.clone(),
                            domain: domain.clone(),
                            plan: plan.is_file().then_some(plan),
                            problem: f,
                            split: format!("{split}/{level}"),
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}
