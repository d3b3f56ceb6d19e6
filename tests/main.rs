//! The one integration-test binary (see Cargo.toml: every extra test binary
//! links the crate again). Modules by purpose.

mod bridge;
mod cli;
mod common;
mod differential;
mod exact;
mod experiment;
mod pddl;
mod pretrained;
mod proofs;
mod robustness;
mod search;
mod transformer;
mod tutorial;
mod validate;
