//! iterdeploy: iterative deployment of planners as reinforcement learning
//! with an implicit reward, made checkable.
//!
//! # Module map
//!
//! | module | concept |
//! |---|---|
//! | [`pddl`] | reading PDDL domains and problems into typed, resolved structures |
//! | [`plan`] | plans as written (IPC format) |
//! | [`extract`] | finding a plan in free-form model output |
//! | [`validate`] | VAL-style sequential plan validation with explained failures |
//! | [`task`] | grounding to a STRIPS task: dense facts and actions, bitset states |
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
pub mod mdp;
pub mod optim;
pub mod output;
pub mod pddl;
pub mod plan;
pub mod plot;
pub mod policy;
pub mod rng;
pub mod search;
pub mod stats;
pub mod task;
pub mod tolerance;
pub mod validate;
pub mod verify;

pub use error::{Error, Result};
