//! S-expression reader: the only place that looks at PDDL characters.
//!
//! PDDL is case-insensitive, so every symbol is lower-cased here once; the
//! rest of the crate compares lower-case strings. Comments (`;` to end of
//! line) are dropped. The reader is iterative (no recursion), so deeply
//! nested garbage cannot overflow the stack; nesting beyond
//! [`MAX_DEPTH`] is rejected because no real PDDL file comes close.

use std::fmt;

/// Deeper nesting than any real domain or problem; a guard against garbage.
pub const MAX_DEPTH: usize = 200;

/// 1-based line and column of a character in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A symbol (lower-cased) or a parenthesised list.
#[derive(Clone, Debug, PartialEq)]
pub enum Sexpr {
    Atom { text: String, pos: Pos },
    List { items: Vec<Sexpr>, pos: Pos },
}

impl Sexpr {
    pub fn pos(&self) -> Pos {
        match self {
            Sexpr::Atom { pos, .. } | Sexpr::List { pos, .. } => *pos,
        }
    }

    pub fn as_atom(&self) -> Option<&str> {
        match self {
            Sexpr::Atom { text, .. } => Some(text),
            Sexpr::List { .. } => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Sexpr]> {
        match self {
            Sexpr::List { items, .. } => Some(items),
            Sexpr::Atom { .. } => None,
        }
    }

    /// The head symbol of a list, e.g. `and` in `(and …)`.
    pub fn head(&self) -> Option<&str> {
        self.as_list()?.first()?.as_atom()
    }
}

impl fmt::Display for Sexpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sexpr::Atom { text, .. } => f.write_str(text),
            Sexpr::List { items, .. } => {
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What went wrong while reading characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyntaxError {
    UnexpectedClose,
    Unclosed { open: Pos },
    TooDeep,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyntaxError::UnexpectedClose => f.write_str("unbalanced ')': no '(' is open here"),
            SyntaxError::Unclosed { open } => {
                write!(
                    f,
                    "unbalanced '(': the list opened at {open} is never closed"
                )
            }
            SyntaxError::TooDeep => write!(f, "lists nested deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Reads every top-level expression of `src`.
pub fn read_all(src: &str) -> Result<Vec<Sexpr>, (Pos, SyntaxError)> {
    // Each open list on the stack: its start position and the items so far.
    let mut stack: Vec<(Pos, Vec<Sexpr>)> = Vec::new();
    let mut top: Vec<Sexpr> = Vec::new();
    let mut line = 1u32;
    let mut col = 1u32;
    let mut chars = src.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        let pos = Pos { line, col };
        match c {
            '\n' => {
                chars.next();
                line += 1;
                col = 1;
            }
            c if c.is_whitespace() => {
                chars.next();
                col += 1;
            }
            ';' => {
                while let Some(&(_, c)) = chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            '(' => {
                chars.next();
                col += 1;
                if stack.len() >= MAX_DEPTH {
                    return Err((pos, SyntaxError::TooDeep));
                }
                stack.push((pos, Vec::new()));
            }
            ')' => {
                chars.next();
                col += 1;
                let (open, items) = stack.pop().ok_or((pos, SyntaxError::UnexpectedClose))?;
                let list = Sexpr::List { items, pos: open };
                match stack.last_mut() {
                    Some((_, parent)) => parent.push(list),
                    None => top.push(list),
                }
            }
            _ => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == ';' {
                        break;
                    }
                    end = i + c.len_utf8();
                    col += 1;
                    chars.next();
                }
                let atom = Sexpr::Atom {
                    text: src[start..end].to_lowercase(),
                    pos,
                };
                match stack.last_mut() {
                    Some((_, parent)) => parent.push(atom),
                    None => top.push(atom),
                }
            }
        }
    }
    if let Some((open, _)) = stack.last() {
        return Err((Pos { line, col }, SyntaxError::Unclosed { open: *open }));
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_lowercases_and_skips_comments() {
        let e = read_all("(Define ;c\n (Domain X)(:A))").unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "(define (domain x) (:a))");
        let items = e[0].as_list().unwrap();
        assert_eq!(items[1].pos(), Pos { line: 2, col: 2 });
        assert_eq!(items[2].pos(), Pos { line: 2, col: 12 });
    }

    #[test]
    fn reports_unbalanced_parentheses_with_positions() {
        assert_eq!(
            read_all("(a\n (b)").unwrap_err(),
            (
                Pos { line: 2, col: 5 },
                SyntaxError::Unclosed {
                    open: Pos { line: 1, col: 1 }
                }
            )
        );
        assert_eq!(
            read_all("(a))").unwrap_err(),
            (Pos { line: 1, col: 4 }, SyntaxError::UnexpectedClose)
        );
    }

    #[test]
    fn rejects_deep_nesting_without_recursing() {
        let deep = "(".repeat(100_000);
        assert_eq!(read_all(&deep).unwrap_err().1, SyntaxError::TooDeep);
    }
}
