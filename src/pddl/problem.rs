//! Reading a problem file against its domain into a [`Problem`].

use super::error::{ErrorSite, PddlError, PddlErrorKind};
use super::grammar::{
    atom_args, flatten_condition, read_cost_number, read_define, read_requirements,
    read_typed_list, section,
};
use super::sexpr::{Sexpr, read_all};
use super::*;

/// Parses problem text; every name is resolved against `domain`.
pub fn parse_problem(bytes: &[u8], file: &str, domain: &Domain) -> Result<Problem, PddlError> {
    let site = ErrorSite { file };
    let text = super::check_text(bytes, file)?;
    let exprs = read_all(text).map_err(|(pos, e)| site.at(pos, PddlErrorKind::Syntax(e)))?;
    let (name, sections) = read_define(&exprs, "problem", site)?;
    let mut p = Problem {
        name: name.to_string(),
        domain_name: String::new(),
        objects: domain
            .constants
            .iter()
            .map(|(n, t)| Object {
                name: n.clone(),
                ty: *t,
            })
            .collect(),
        init: Vec::new(),
        function_values: HashMap::new(),
        goal: Vec::new(),
        goal_equalities_hold: true,
        minimize_total_cost: false,
        object_by_name: HashMap::new(),
    };
    for (i, o) in p.objects.iter().enumerate() {
        p.object_by_name.insert(o.name.clone(), i as ObjectId);
    }
    let mut seen_goal = false;
    for s in sections {
        let (keyword, items) = section(s, site)?;
        match keyword {
            ":domain" => {
                let [Sexpr::Atom { text, pos }] = items else {
                    return Err(site.expected(s.pos(), "`(:domain NAME)`", s));
                };
                if *text != domain.name {
                    return Err(site.at(
                        *pos,
                        PddlErrorKind::DomainMismatch {
                            problem_says: text.clone(),
                            domain_is: domain.name.clone(),
                        },
                    ));
                }
                p.domain_name = text.clone();
            }
            ":requirements" => {
                read_requirements(items, site)?;
            }
            ":objects" => {
                for t in read_typed_list(items, "an object name", site)? {
                    let ty = match t.ty {
                        None => OBJECT_TYPE,
                        Some((name, pos)) => domain.types.get(name).ok_or_else(|| {
                            site.at(
                                pos,
                                PddlErrorKind::Undefined {
                                    what: "type",
                                    name: name.to_string(),
                                },
                            )
                        })?,
                    };
                    let id = p.objects.len() as ObjectId;
                    if p.object_by_name.insert(t.name.to_string(), id).is_some() {
                        return Err(site.at(
                            t.pos,
                            PddlErrorKind::Duplicate {
                                what: "object",
                                name: t.name.to_string(),
                            },
                        ));
                    }
                    p.objects.push(Object {
                        name: t.name.to_string(),
                        ty,
                    });
                }
            }
            ":init" => {
                for fact in items {
                    read_init_fact(domain, &mut p, fact, site)?;
                }
            }
            ":goal" => {
                let [goal] = items else {
                    return Err(site.expected(s.pos(), "one goal condition", s));
                };
                let mut lits = Vec::new();
                flatten_condition(goal, site, &mut lits)?;
                for lit in lits {
                    if lit.atom[0].as_atom() == Some("=") {
                        let args = resolve_args(&p, atom_args(lit.atom, site)?, site)?;
                        let [l, r] = args[..] else {
                            return Err(site.expected(lit.pos, "`(= a b)`", "another arity"));
                        };
                        p.goal_equalities_hold &= (l == r) == lit.positive;
                        continue;
                    }
                    let atom = ground_atom(domain, &p, lit.atom, lit.pos, site)?;
                    p.goal.push(GroundLiteral {
                        atom,
                        positive: lit.positive,
                    });
                }
                seen_goal = true;
            }
            ":metric" => match items {
                [dir, f]
                    if dir.as_atom() == Some("minimize") && f.to_string() == "(total-cost)" =>
                {
                    p.minimize_total_cost = true;
                }
                _ => {
                    return Err(site.at(
                        s.pos(),
                        PddlErrorKind::Unsupported {
                            construct: s.to_string(),
                        },
                    ));
                }
            },
            other => {
                return Err(site.at(
                    s.pos(),
                    PddlErrorKind::Unsupported {
                        construct: other.to_string(),
                    },
                ));
            }
        }
    }
    if !seen_goal {
        return Err(site.expected(exprs[0].pos(), "a `(:goal …)` section", "none"));
    }
    Ok(p)
}

fn resolve_args(
    p: &Problem,
    args: Vec<(&str, Pos)>,
    site: ErrorSite,
) -> Result<Vec<ObjectId>, PddlError> {
    args.into_iter()
        .map(|(name, pos)| {
            p.object(name).ok_or_else(|| {
                site.at(
                    pos,
                    PddlErrorKind::Undefined {
                        what: "object",
                        name: name.to_string(),
                    },
                )
            })
        })
        .collect()
}

fn ground_atom(
    d: &Domain,
    p: &Problem,
    atom: &[Sexpr],
    pos: Pos,
    site: ErrorSite,
) -> Result<GroundAtom, PddlError> {
    let name = atom.first().and_then(Sexpr::as_atom).unwrap_or_default();
    let predicate = d.predicate(name).ok_or_else(|| {
        site.at(
            pos,
            PddlErrorKind::Undefined {
                what: "predicate",
                name: name.to_string(),
            },
        )
    })?;
    let named = atom_args(atom, site)?;
    let positions: Vec<Pos> = named.iter().map(|&(_, p)| p).collect();
    let args = resolve_args(p, named, site)?;
    let expected_types = &d.predicates[predicate as usize].param_types;
    if args.len() != expected_types.len() {
        return Err(site.at(
            pos,
            PddlErrorKind::Arity {
                predicate: name.to_string(),
                expected: expected_types.len(),
                found: args.len(),
            },
        ));
    }
    // An object of another type can never satisfy the predicate: a fact or
    // goal that names one is an error, not a silently unreachable atom.
    for ((&o, &want), &at) in args.iter().zip(expected_types).zip(&positions) {
        let has = p.objects[o as usize].ty;
        if !d.types.is_subtype(has, want) {
            return Err(site.at(
                at,
                PddlErrorKind::TypeMismatch {
                    object: p.object_name(o).to_string(),
                    object_type: d.types.names[has as usize].clone(),
                    expected: d.types.names[want as usize].clone(),
                },
            ));
        }
    }
    Ok(GroundAtom { predicate, args })
}

fn read_init_fact(
    d: &Domain,
    p: &mut Problem,
    fact: &Sexpr,
    site: ErrorSite,
) -> Result<(), PddlError> {
    let items = fact
        .as_list()
        .filter(|l| l.first().and_then(Sexpr::as_atom).is_some())
        .ok_or_else(|| site.expected(fact.pos(), "a ground atom `(pred obj …)`", fact))?;
    match fact.head() {
        Some("=") => {
            let [
                _,
                Sexpr::List {
                    items: f,
                    pos: fpos,
                },
                value,
            ] = items
            else {
                return Err(site.expected(fact.pos(), "`(= (function args) value)`", fact));
            };
            let fname = f.first().and_then(Sexpr::as_atom).unwrap_or_default();
            let function = d.function(fname).ok_or_else(|| {
                site.at(
                    *fpos,
                    PddlErrorKind::Undefined {
                        what: "function",
                        name: fname.to_string(),
                    },
                )
            })?;
            let args = resolve_args(p, atom_args(f, site)?, site)?;
            let value = read_cost_number(value, site)?;
            p.function_values.insert((function, args), value);
        }
        Some(h @ ("not" | "and" | "or" | "forall" | "at"))
            if h != "at" || d.predicate("at").is_none() =>
        {
            return Err(site.at(
                fact.pos(),
                PddlErrorKind::Unsupported {
                    construct: format!("`{h}` in init"),
                },
            ));
        }
        _ => {
            let atom = ground_atom(d, p, items, fact.pos(), site)?;
            p.init.push(atom);
        }
    }
    Ok(())
}
