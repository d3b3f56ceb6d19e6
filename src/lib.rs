//! iterdeploy: iterative deployment of planners as reinforcement learning
//! with an implicit reward, made checkable.
//!
//! # Module map
//!
//! Every module, by layer (the README's "Layout" table says the same by
//! path; a test keeps the two in step with the `mod` lines below).
//!
//! | module | concept |
//! |---|---|
//! | [`pddl`] | reading PDDL domains and problems into typed, resolved structures |
//! | [`plan`] | plans as written (IPC format) |
//! | [`extract`] | finding a plan in free-form model output |
//! | [`validate`] | VAL-style sequential plan validation with explained failures |
//! | [`task`] | grounding to a STRIPS task: dense facts and actions, bitset states |
//! | [`search`] | the reference planner: A*, GBFS, BFS with h_max, h_add, h_FF |
//! | [`generate`] | seeded problem generators and `manifest.csv` |
//! | [`benchmarks`] | walking the shared IPC benchmark layout |
//! | [`mdp`] | deployment as an episodic MDP over a shared action index |
//! | [`policy`] | tabular, MLP and transformer policies over one flat θ |
//! | [`pretrained`] | a pretrained LM from a GGUF file as a policy: tokenizer, f32 llama decoder with backward, LoRA, batched sampling |
//! | [`exact`] | dynamic programs: J, ∇J, success and length laws, exact fits |
//! | [`estimator`] | sampled traces; SFT, REINFORCE, RLOO, GRPO, importance-weighted estimators |
//! | [`curation`] | curation rules and pools, as implicit length weights |
//! | [`matmul`] | x Wᵀ for a few rows against a whole weight matrix: the decode step's product |
//! | [`optim`] | SGD and Adam on flat parameters |
//! | [`verify`] | the claims of `proofs/`, checked numerically |
//! | [`explain`] | the worked example of the tutorial (`iterdeploy explain`) |
//! | [`deploy`] | the deployment loop, its arms, workloads and metrics |
//! | [`experiment`] | TOML specs, runs with checkpoints, CSVs, figures, summaries |
//! | [`stats`] | means and Student-t intervals over seeds |
//! | [`plot`] | figures (plotters, embedded font) |
//! | [`bridge`] | prompts out, model outputs in, curated chat JSONL and run reports |
//! | [`bench`] | `iterdeploy bench`: our throughput beside the named peers |
//! | [`rng`] | the one seeded generator and its named streams |
//! | [`tolerance`] | every numerical tolerance, with why |
//! | [`limits`] | what iterdeploy refuses to attempt (sizes, times), with why |
//! | [`input`] | bounded reads of files and standard input |
//! | [`output`] | atomic writes, locks and completion manifests of outputs |
//! | [`error`] | the library's error type |
//! | `hashing` | a fast hasher for dense integer keys (private) |
//! | `simd` | loops compiled for the widest vector instructions the CPU has, chosen at run time (private) |
//! | [`cli`] | command-line front end (argument types → library calls) |
//!
//! # Claim → code
//!
//! | claim | where |
//! |---|---|
//! | the validator is the reward | [`validate::Validator`] |

pub mod bench;
pub mod benchmarks;
pub mod bridge;
pub mod cli;
pub mod curation;
pub mod deploy;
pub mod error;
pub mod estimator;
pub mod exact;
pub mod experiment;
pub mod explain;
pub mod extract;
pub mod generate;
mod hashing;
pub mod input;
pub mod limits;
pub mod matmul;
pub mod mdp;
pub mod optim;
pub mod output;
pub mod pddl;
pub mod plan;
pub mod plot;
pub mod policy;
pub mod pretrained;
pub mod rng;
pub mod search;
mod simd;
pub mod stats;
pub mod task;
pub mod tolerance;
pub mod validate;
pub mod verify;

pub use error::{Error, Result};

#[cfg(test)]
mod layout {
    /// Every `mod` line of this file is in the module map above and in the
    /// README's layout table, so neither lists a module that is gone or
    /// misses a new one.
    #[test]
    fn module_map_and_readme_cover_every_module() {
        let lib = include_str!("lib.rs");
        let readme = include_str!("../README.md");
        let mods: Vec<&str> = lib
            .lines()
            .filter_map(|l| {
                l.strip_prefix("pub mod ")
                    .or_else(|| l.strip_prefix("mod "))
                    .and_then(|r| r.strip_suffix(';'))
            })
            .collect();
        assert!(mods.len() >= 30, "{mods:?}");
        for m in mods {
            assert!(
                lib.contains(&format!("//! | [`{m}`] |"))
                    || lib.contains(&format!("//! | `{m}` |")),
                "src/lib.rs: module `{m}` is missing from the module map"
            );
            assert!(
                readme.contains(&format!("`src/{m}.rs`"))
                    || readme.contains(&format!("`src/{m}/`")),
                "README.md: module `{m}` is missing from the layout table"
            );
        }
    }
}
