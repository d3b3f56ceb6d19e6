//! The library's error type. Every variant names what was wrong and where;
//! the binary adds context and maps errors to exit code 2.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pddl(#[from] crate::pddl::PddlError),
    /// The I/O error is part of the message, not a `source` in the error
    /// chain: a chain-printing caller (the binary prints `{:#}`) would
    /// otherwise print its text twice.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A value given by the user (argument, parameter, spec field) is not
    /// acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
