//! Grammar pieces shared by domains and problems: typed lists, requirements,
//! and flattening conjunctions of literals.

use super::error::{ErrorSite, PddlError, PddlErrorKind};
use super::sexpr::{Pos, Sexpr};

/// Requirements whose semantics iterdeploy implements.
pub const SUPPORTED_REQUIREMENTS: &[&str] = &[
    ":strips",
    ":typing",
    ":negative-preconditions",
    ":equality",
    ":action-costs",
];

pub fn read_requirements(items: &[Sexpr], site: ErrorSite) -> Result<Vec<String>, PddlError> {
    let mut out = Vec::new();
    for item in items {
        let r = item
            .as_atom()
            .ok_or_else(|| site.expected(item.pos(), "a requirement like :strips", item))?;
        if !SUPPORTED_REQUIREMENTS.contains(&r) {
            return Err(site.at(item.pos(), PddlErrorKind::UnsupportedRequirement(r.into())));
        }
        out.push(r.to_string());
    }
    Ok(out)
}

/// One name of a typed list with its type (None = untyped, i.e. `object`).
pub struct TypedName<'a> {
    pub name: &'a str,
    pub pos: Pos,
    pub ty: Option<(&'a str, Pos)>,
}

/// `a b - t1 c - t2 d` → (a,t1) (b,t1) (c,t2) (d,None).
pub fn read_typed_list<'a>(
    items: &'a [Sexpr],
    what: &'static str,
    site: ErrorSite,
) -> Result<Vec<TypedName<'a>>, PddlError> {
    let mut out = Vec::new();
    let mut pending = 0usize; // names waiting for a `- type`
    let mut i = 0;
    while i < items.len() {
        let item = &items[i];
        match item {
            Sexpr::Atom { text, pos } if text == "-" => {
                let ty = items
                    .get(i + 1)
                    .ok_or_else(|| site.expected(*pos, "a type after `-`", "end of list"))?;
                let ty_name = match ty {
                    Sexpr::Atom { text, .. } => text.as_str(),
                    Sexpr::List { .. } if ty.head() == Some("either") => {
                        return Err(site.at(
                            ty.pos(),
                            PddlErrorKind::Unsupported {
                                construct: "either".into(),
                            },
                        ));
                    }
                    Sexpr::List { .. } => return Err(site.expected(ty.pos(), "a type name", ty)),
                };
                if pending == 0 {
                    return Err(site.expected(*pos, what, "-"));
                }
                let n = out.len();
                for entry in &mut out[n - pending..] {
                    let entry: &mut TypedName = entry;
                    entry.ty = Some((ty_name, ty.pos()));
                }
                pending = 0;
                i += 2;
            }
            Sexpr::Atom { text, pos } => {
                out.push(TypedName {
                    name: text,
                    pos: *pos,
                    ty: None,
                });
                pending += 1;
                i += 1;
            }
            Sexpr::List { .. } => return Err(site.expected(item.pos(), what, item)),
        }
    }
    Ok(out)
}

/// A literal of a conjunction before its terms are resolved.
pub struct RawLiteral<'a> {
    pub positive: bool,
    /// The atom list `(pred t1 t2)` or `(= t1 t2)`.
    pub atom: &'a [Sexpr],
    pub pos: Pos,
}

/// Flattens `(and l1 (and l2 l3) …)` into literals. `()` and `(and)` are
/// the empty conjunction. Anything else than literals is unsupported.
pub fn flatten_condition<'a>(
    expr: &'a Sexpr,
    site: ErrorSite,
    out: &mut Vec<RawLiteral<'a>>,
) -> Result<(), PddlError> {
    // An explicit stack: nested `and`s cannot overflow the call stack.
    let mut todo = vec![expr];
    while let Some(e) = todo.pop() {
        let items = e
            .as_list()
            .ok_or_else(|| site.expected(e.pos(), "a condition in parentheses", e))?;
        match e.head() {
            None if items.is_empty() => {}
            Some("and") => todo.extend(items[1..].iter().rev()),
            Some("not") => {
                let inner = match items {
                    [_, inner] => inner,
                    _ => return Err(site.expected(e.pos(), "`(not (atom))`", e)),
                };
                let atom = inner
                    .as_list()
                    .filter(|l| l.first().and_then(Sexpr::as_atom).is_some())
                    .ok_or_else(|| site.expected(inner.pos(), "an atom under `not`", inner))?;
                check_literal_head(inner, site)?;
                out.push(RawLiteral {
                    positive: false,
                    atom,
                    pos: e.pos(),
                });
            }
            Some(_) => {
                check_literal_head(e, site)?;
                out.push(RawLiteral {
                    positive: true,
                    atom: items,
                    pos: e.pos(),
                });
            }
            None => return Err(site.expected(e.pos(), "a predicate name", e)),
        }
    }
    Ok(())
}

/// Connectives and quantifiers outside STRIPS are named in the error.
fn check_literal_head(e: &Sexpr, site: ErrorSite) -> Result<(), PddlError> {
    const UNSUPPORTED: &[&str] = &[
        "or",
        "imply",
        "exists",
        "forall",
        "when",
        "not",
        "and",
        "preference",
        "increase",
        "decrease",
        "assign",
        "scale-up",
        "scale-down",
        "<",
        ">",
        "<=",
        ">=",
    ];
    match e.head() {
        Some(h) if UNSUPPORTED.contains(&h) => Err(site.at(
            e.pos(),
            PddlErrorKind::Unsupported {
                construct: h.to_string(),
            },
        )),
        _ => Ok(()),
    }
}

/// The symbol items of an atom `(pred a b)` after the head, or an error at
/// the first nested list (function terms are not allowed in atoms).
pub fn atom_args<'a>(atom: &'a [Sexpr], site: ErrorSite) -> Result<Vec<(&'a str, Pos)>, PddlError> {
    atom[1..]
        .iter()
        .map(|a| match a {
            Sexpr::Atom { text, pos } => Ok((text.as_str(), *pos)),
            Sexpr::List { .. } => Err(site.expected(a.pos(), "an object or ?variable", a)),
        })
        .collect()
}

/// Splits `(define (KIND name) sections…)` from a file's expressions.
pub fn read_define<'a>(
    exprs: &'a [Sexpr],
    kind: &'static str,
    site: ErrorSite,
) -> Result<(&'a str, &'a [Sexpr]), PddlError> {
    let first = exprs
        .first()
        .ok_or_else(|| site.at(Pos { line: 1, col: 1 }, PddlErrorKind::Empty))?;
    if let Some(extra) = exprs.get(1) {
        return Err(site.expected(extra.pos(), "end of file after the `define`", extra));
    }
    let items = first
        .as_list()
        .filter(|_| first.head() == Some("define"))
        .ok_or_else(|| site.expected(first.pos(), "`(define …)`", first))?;
    let header = items.get(1).ok_or_else(|| {
        site.expected(
            first.pos(),
            "a `(domain NAME)`/`(problem NAME)` header",
            first,
        )
    })?;
    let what = if kind == "domain" {
        "`(domain NAME)`"
    } else {
        "`(problem NAME)`"
    };
    match header.as_list() {
        Some([k, Sexpr::Atom { text, .. }]) if k.as_atom() == Some(kind) => Ok((text, &items[2..])),
        _ => Err(site.expected(header.pos(), what, header)),
    }
}

/// A section `(:keyword …)`: its keyword and the items after it.
pub fn section<'a>(s: &'a Sexpr, site: ErrorSite) -> Result<(&'a str, &'a [Sexpr]), PddlError> {
    match s.as_list() {
        Some([Sexpr::Atom { text, .. }, rest @ ..]) if text.starts_with(':') => Ok((text, rest)),
        _ => Err(site.expected(s.pos(), "a section like `(:keyword …)`", s)),
    }
}

/// A non-negative integer cost.
pub fn read_cost_number(e: &Sexpr, site: ErrorSite) -> Result<u64, PddlError> {
    let text = e.as_atom().unwrap_or_default();
    let value: f64 = text.parse().map_err(|_| {
        site.at(
            e.pos(),
            PddlErrorKind::BadCost {
                value: e.to_string(),
            },
        )
    })?;
    if value < 0.0 || value.fract() != 0.0 || value > 1e15 {
        return Err(site.at(
            e.pos(),
            PddlErrorKind::BadCost {
                value: e.to_string(),
            },
        ));
    }
    Ok(value as u64)
}
