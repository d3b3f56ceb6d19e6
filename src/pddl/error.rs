//! Errors from reading PDDL: always a file, a 1-based line and column, and
//! the offending value.

use super::sexpr::{Pos, SyntaxError};
use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{pos}: {kind}")]
pub struct PddlError {
    /// The name the caller gave the text (usually its path).
    pub file: String,
    pub pos: Pos,
    pub kind: PddlErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PddlErrorKind {
    Syntax(SyntaxError),
    /// The text is not UTF-8 or contains NUL bytes.
    Binary,
    Empty,
    /// Something other than what the grammar allows here.
    Expected {
        what: &'static str,
        found: String,
    },
    UnsupportedRequirement(String),
    /// A construct outside the supported fragment (`forall`, `when`, …).
    Unsupported {
        construct: String,
    },
    Undefined {
        what: &'static str,
        name: String,
    },
    Duplicate {
        what: &'static str,
        name: String,
    },
    Arity {
        predicate: String,
        expected: usize,
        found: usize,
    },
    TypeMismatch {
        object: String,
        object_type: String,
        expected: String,
    },
    DomainMismatch {
        problem_says: String,
        domain_is: String,
    },
    BadCost {
        value: String,
    },
}

impl fmt::Display for PddlErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PddlErrorKind::*;
        match self {
            Syntax(e) => write!(f, "{e}"),
            Binary => f.write_str("not a text file (invalid UTF-8 or a NUL byte)"),
            Empty => f.write_str("no PDDL here: the file is empty or holds only comments"),
            Expected { what, found } => write!(f, "expected {what}, found `{found}`"),
            UnsupportedRequirement(r) => write!(
                f,
                "unsupported requirement `{r}` (supported: :strips :typing :negative-preconditions :equality :action-costs)"
            ),
            Unsupported { construct } => {
                write!(
                    f,
                    "unsupported construct `{construct}` (outside the STRIPS fragment iterdeploy reads)"
                )
            }
            Undefined { what, name } => write!(f, "undefined {what} `{name}`"),
            Duplicate { what, name } => write!(f, "duplicate {what} `{name}`"),
            Arity {
                predicate,
                expected,
                found,
            } => write!(
                f,
                "`{predicate}` takes {expected} argument(s), found {found}"
            ),
            TypeMismatch {
                object,
                object_type,
                expected,
            } => write!(
                f,
                "`{object}` has type `{object_type}`, which is not a `{expected}`"
            ),
            DomainMismatch {
                problem_says,
                domain_is,
            } => write!(
                f,
                "problem is for domain `{problem_says}` but the domain is `{domain_is}`"
            ),
            BadCost { value } => write!(f, "action cost `{value}` is not a non-negative integer"),
        }
    }
}

/// Builds errors for one file without repeating its name at every call.
#[derive(Clone, Copy)]
pub(crate) struct ErrorSite<'a> {
    pub file: &'a str,
}

impl ErrorSite<'_> {
    pub fn at(&self, pos: Pos, kind: PddlErrorKind) -> PddlError {
        PddlError {
            file: self.file.to_string(),
            pos,
            kind,
        }
    }

    pub fn expected(&self, pos: Pos, what: &'static str, found: impl fmt::Display) -> PddlError {
        let mut found = found.to_string();
        if found.len() > 60 {
            let cut = (0..=57)
                .rev()
                .find(|&i| found.is_char_boundary(i))
                .unwrap_or(0);
            found.truncate(cut);
            found.push('…');
        }
        self.at(pos, PddlErrorKind::Expected { what, found })
    }
}

/// Rejects text that cannot be PDDL before the reader sees it, pointing at
/// the first bad byte.
pub(crate) fn check_text<'a>(bytes: &'a [u8], file: &str) -> Result<&'a str, PddlError> {
    // A byte-order mark is not text (offsets below count from after it).
    let bytes = crate::input::strip_bom(bytes);
    let bad_at = |offset: usize| {
        let before = &bytes[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count() as u32
            + 1;
        PddlError {
            file: file.to_string(),
            pos: Pos { line, col },
            kind: PddlErrorKind::Binary,
        }
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad_at(e.valid_up_to()))?;
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        return Err(bad_at(nul));
    }
    Ok(text)
}
