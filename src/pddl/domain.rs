//! Reading a domain file into a name-resolved [`Domain`].

use super::error::{ErrorSite, PddlError, PddlErrorKind};
use super::grammar::{
    atom_args, flatten_condition, read_cost_number, read_define, read_requirements,
    read_typed_list, section,
};
use super::sexpr::{Sexpr, read_all};
use super::*;

/// Parses domain text. `file` names the text in errors.
pub fn parse_domain(bytes: &[u8], file: &str) -> Result<Domain, PddlError> {
    let site = ErrorSite { file };
    let text = super::check_text(bytes, file)?;
    let exprs = read_all(text).map_err(|(pos, e)| site.at(pos, PddlErrorKind::Syntax(e)))?;
    let (name, sections) = read_define(&exprs, "domain", site)?;
    let mut d = Domain {
        name: name.to_string(),
        requirements: Vec::new(),
        types: TypeTable::new(),
        constants: Vec::new(),
        predicates: Vec::new(),
        functions: Vec::new(),
        actions: Vec::new(),
        has_action_costs: false,
        predicate_by_name: HashMap::new(),
        function_by_name: HashMap::new(),
        action_by_name: HashMap::new(),
    };
    let mut constant_by_name: HashMap<String, ObjectId> = HashMap::new();
    for s in sections {
        let (keyword, items) = section(s, site)?;
        match keyword {
            ":requirements" => d.requirements.extend(read_requirements(items, site)?),
            ":types" => read_types(&mut d.types, items, site)?,
            ":constants" => {
                for t in read_typed_list(items, "a constant name", site)? {
                    let ty = resolve_type(&d.types, t.ty, site)?;
                    let id = d.constants.len() as ObjectId;
                    if constant_by_name.insert(t.name.to_string(), id).is_some() {
                        return Err(duplicate(site, t.pos, "constant", t.name));
                    }
                    d.constants.push((t.name.to_string(), ty));
                }
            }
            ":predicates" => {
                for p in items {
                    let (name, params) = read_skeleton(p, site)?;
                    let id = d.predicates.len() as PredicateId;
                    if d.predicate_by_name.insert(name.to_string(), id).is_some() {
                        return Err(duplicate(site, p.pos(), "predicate", name));
                    }
                    let param_types = params
                        .iter()
                        .map(|t| resolve_type(&d.types, t.ty, site))
                        .collect::<Result<_, _>>()?;
                    d.predicates.push(PredicateDecl {
                        name: name.to_string(),
                        param_types,
                    });
                }
            }
            ":functions" => read_functions(&mut d, items, site)?,
            ":action" => {
                let action = read_action(&d, &constant_by_name, s, items, site)?;
                let id = d.actions.len() as ActionId;
                if d.action_by_name.insert(action.name.clone(), id).is_some() {
                    return Err(duplicate(site, s.pos(), "action", &action.name));
                }
                d.actions.push(action);
            }
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
    Ok(d)
}

fn duplicate(site: ErrorSite, pos: Pos, what: &'static str, name: &str) -> PddlError {
    site.at(
        pos,
        PddlErrorKind::Duplicate {
            what,
            name: name.to_string(),
        },
    )
}

fn read_types(types: &mut TypeTable, items: &[Sexpr], site: ErrorSite) -> Result<(), PddlError> {
    let mut declared = std::collections::HashSet::new();
    for t in read_typed_list(items, "a type name", site)? {
        if t.name == "object" {
            continue;
        }
        if !declared.insert(t.name) {
            return Err(duplicate(site, t.pos, "type", t.name));
        }
        let id = types.get_or_add(t.name);
        // Parent types may be used before (or without) their own declaration,
        // as in `vehicle package - locatable` with `locatable - object` later.
        let parent = t.ty.map_or(OBJECT_TYPE, |(p, _)| types.get_or_add(p));
        if types.is_subtype(parent, id) {
            return Err(site.expected(t.pos, "an acyclic type hierarchy", t.name));
        }
        types.parent[id as usize] = Some(parent);
    }
    Ok(())
}

fn resolve_type(
    types: &TypeTable,
    ty: Option<(&str, Pos)>,
    site: ErrorSite,
) -> Result<TypeId, PddlError> {
    match ty {
        None => Ok(OBJECT_TYPE),
        Some((name, pos)) => types.get(name).ok_or_else(|| {
            site.at(
                pos,
                PddlErrorKind::Undefined {
                    what: "type",
                    name: name.to_string(),
                },
            )
        }),
    }
}

/// `(name ?a ?b - t)` as in `:predicates` and `:functions`.
fn read_skeleton<'a>(
    e: &'a Sexpr,
    site: ErrorSite,
) -> Result<(&'a str, Vec<super::grammar::TypedName<'a>>), PddlError> {
    match e.as_list() {
        Some([Sexpr::Atom { text, .. }, params @ ..]) => {
            let params = read_typed_list(params, "a ?variable", site)?;
            if let Some(p) = params.iter().find(|p| !p.name.starts_with('?')) {
                return Err(site.expected(p.pos, "a ?variable", p.name));
            }
            Ok((text, params))
        }
        _ => Err(site.expected(e.pos(), "`(name ?x …)`", e)),
    }
}

fn read_functions(d: &mut Domain, items: &[Sexpr], site: ErrorSite) -> Result<(), PddlError> {
    // `(f ?x) - number (g) - number` : the `- number` markers sit between
    // the skeletons; only `number` is allowed.
    let mut i = 0;
    while i < items.len() {
        let e = &items[i];
        if e.as_atom() == Some("-") {
            match items.get(i + 1).and_then(Sexpr::as_atom) {
                Some("number") => {
                    i += 2;
                    continue;
                }
                _ => {
                    return Err(site.at(
                        e.pos(),
                        PddlErrorKind::Unsupported {
                            construct: "non-numeric function type".into(),
                        },
                    ));
                }
            }
        }
        let (name, params) = read_skeleton(e, site)?;
        let id = d.functions.len() as FunctionId;
        if d.function_by_name.insert(name.to_string(), id).is_some() {
            return Err(duplicate(site, e.pos(), "function", name));
        }
        let param_types = params
            .iter()
            .map(|t| resolve_type(&d.types, t.ty, site))
            .collect::<Result<_, _>>()?;
        if name == "total-cost" {
            d.has_action_costs = true;
        }
        d.functions.push(FunctionDecl {
            name: name.to_string(),
            param_types,
        });
        i += 1;
    }
    Ok(())
}

/// Resolves names inside one action: its parameters and domain constants.
struct ActionScope<'a> {
    params: &'a [String],
    param_types: &'a [TypeId],
    constants: &'a HashMap<String, ObjectId>,
    site: ErrorSite<'a>,
}

impl ActionScope<'_> {
    fn term(&self, name: &str, pos: Pos) -> Result<Term, PddlError> {
        if name.starts_with('?') {
            self.params
                .iter()
                .position(|p| p == name)
                .map(|i| Term::Param(i as u32))
                .ok_or_else(|| {
                    self.site.at(
                        pos,
                        PddlErrorKind::Undefined {
                            what: "variable",
                            name: name.to_string(),
                        },
                    )
                })
        } else {
            self.constants
                .get(name)
                .map(|&o| Term::Object(o))
                .ok_or_else(|| {
                    self.site.at(
                        pos,
                        PddlErrorKind::Undefined {
                            what: "constant",
                            name: name.to_string(),
                        },
                    )
                })
        }
    }

    fn atom(&self, d: &Domain, atom: &[Sexpr], pos: Pos) -> Result<AtomSchema, PddlError> {
        let name = atom[0].as_atom().unwrap_or_default();
        let predicate = d.predicate(name).ok_or_else(|| {
            self.site.at(
                pos,
                PddlErrorKind::Undefined {
                    what: "predicate",
                    name: name.to_string(),
                },
            )
        })?;
        let args = atom_args(atom, self.site)?;
        let expected = d.predicates[predicate as usize].param_types.len();
        if args.len() != expected {
            return Err(self.site.at(
                pos,
                PddlErrorKind::Arity {
                    predicate: name.to_string(),
                    expected,
                    found: args.len(),
                },
            ));
        }
        let expected_types = &d.predicates[predicate as usize].param_types;
        let args = args
            .into_iter()
            .zip(expected_types)
            .map(|((a, p), &want)| {
                let term = self.term(a, p)?;
                // A variable or constant of another type can never make the
                // literal true (or, in an effect, a well-typed fact).
                let has = match term {
                    Term::Param(i) => self.param_types[i as usize],
                    Term::Object(o) => d.constants[o as usize].1,
                };
                if !d.types.is_subtype(has, want) {
                    return Err(self.site.at(
                        p,
                        PddlErrorKind::TypeMismatch {
                            object: a.to_string(),
                            object_type: d.types.names[has as usize].clone(),
                            expected: d.types.names[want as usize].clone(),
                        },
                    ));
                }
                Ok(term)
            })
            .collect::<Result<_, _>>()?;
        Ok(AtomSchema { predicate, args })
    }
}

fn read_action(
    d: &Domain,
    constants: &HashMap<String, ObjectId>,
    whole: &Sexpr,
    items: &[Sexpr],
    site: ErrorSite,
) -> Result<ActionSchema, PddlError> {
    let name = items
        .first()
        .and_then(Sexpr::as_atom)
        .ok_or_else(|| site.expected(whole.pos(), "an action name", whole))?;
    let mut param_names = Vec::new();
    let mut param_types = Vec::new();
    let mut precondition = None;
    let mut effect = None;
    let mut rest = &items[1..];
    while let [key, value, tail @ ..] = rest {
        match key.as_atom() {
            Some(":parameters") => {
                let list = value
                    .as_list()
                    .ok_or_else(|| site.expected(value.pos(), "a parameter list", value))?;
                for p in read_typed_list(list, "a ?variable", site)? {
                    if !p.name.starts_with('?') {
                        return Err(site.expected(p.pos, "a ?variable", p.name));
                    }
                    if param_names.iter().any(|n| n == p.name) {
                        return Err(duplicate(site, p.pos, "parameter", p.name));
                    }
                    param_names.push(p.name.to_string());
                    param_types.push(resolve_type(&d.types, p.ty, site)?);
                }
            }
            Some(":precondition") => precondition = Some(value),
            Some(":effect") => effect = Some(value),
            _ => {
                return Err(site.expected(
                    key.pos(),
                    "`:parameters`, `:precondition` or `:effect`",
                    key,
                ));
            }
        }
        rest = tail;
    }
    if let Some(extra) = rest.first() {
        return Err(site.expected(extra.pos(), "a value after the keyword", extra));
    }
    let scope = ActionScope {
        params: &param_names,
        param_types: &param_types,
        constants,
        site,
    };
    let mut a = ActionSchema {
        name: name.to_string(),
        param_names: param_names.clone(),
        param_types: param_types.clone(),
        pre_pos: Vec::new(),
        pre_neg: Vec::new(),
        pre_eq: Vec::new(),
        add: Vec::new(),
        del: Vec::new(),
        cost: Vec::new(),
    };
    if let Some(pre) = precondition {
        let mut lits = Vec::new();
        flatten_condition(pre, site, &mut lits)?;
        for lit in lits {
            if lit.atom[0].as_atom() == Some("=") {
                let args = atom_args(lit.atom, site)?;
                let [(l, lp), (r, rp)] = args[..] else {
                    return Err(site.expected(lit.pos, "`(= a b)`", "another arity"));
                };
                a.pre_eq.push(EqualitySchema {
                    left: scope.term(l, lp)?,
                    right: scope.term(r, rp)?,
                    equal: lit.positive,
                });
                continue;
            }
            let atom = scope.atom(d, lit.atom, lit.pos)?;
            if lit.positive {
                a.pre_pos.push(atom);
            } else {
                a.pre_neg.push(atom);
            }
        }
    }
    if let Some(eff) = effect {
        read_effect(d, &scope, eff, &mut a)?;
    }
    Ok(a)
}

fn read_effect(
    d: &Domain,
    scope: &ActionScope,
    eff: &Sexpr,
    a: &mut ActionSchema,
) -> Result<(), PddlError> {
    let site = scope.site;
    let mut todo = vec![eff];
    while let Some(e) = todo.pop() {
        let items = e
            .as_list()
            .ok_or_else(|| site.expected(e.pos(), "an effect in parentheses", e))?;
        match e.head() {
            None if items.is_empty() => {}
            Some("and") => todo.extend(items[1..].iter().rev()),
            Some("increase") => {
                let [_, target, amount] = items else {
                    return Err(site.expected(e.pos(), "`(increase (total-cost) N)`", e));
                };
                // Without `(total-cost)` among the functions the domain has
                // no action costs, and the increase would be silently
                // ignored (a plan's cost would read as its length).
                if !d.has_action_costs {
                    return Err(site.at(
                        e.pos(),
                        PddlErrorKind::Undefined {
                            what: "function (declare `(:functions (total-cost))` and `:action-costs`)",
                            name: "total-cost".to_string(),
                        },
                    ));
                }
                if target.as_list().map(|l| l.len()) != Some(1)
                    || target.head() != Some("total-cost")
                {
                    return Err(site.at(
                        e.pos(),
                        PddlErrorKind::Unsupported {
                            construct: format!("increase of {target}"),
                        },
                    ));
                }
                let term = match amount {
                    Sexpr::Atom { .. } => CostTerm::Constant(read_cost_number(amount, site)?),
                    Sexpr::List { items: f, .. } => {
                        let fname = f.first().and_then(Sexpr::as_atom).unwrap_or_default();
                        let function = d.function(fname).ok_or_else(|| {
                            site.at(
                                amount.pos(),
                                PddlErrorKind::Undefined {
                                    what: "function",
                                    name: fname.to_string(),
                                },
                            )
                        })?;
                        let args = atom_args(f, site)?
                            .into_iter()
                            .map(|(n, p)| scope.term(n, p))
                            .collect::<Result<_, _>>()?;
                        CostTerm::Function { function, args }
                    }
                };
                a.cost.push(term);
            }
            Some("not") => {
                let inner = match items {
                    [_, inner] if inner.head().is_some() => inner,
                    _ => return Err(site.expected(e.pos(), "`(not (atom))`", e)),
                };
                let inner_items = inner.as_list().unwrap_or_default();
                reject_connective(inner, site)?;
                a.del.push(scope.atom(d, inner_items, inner.pos())?);
            }
            Some(_) => {
                reject_connective(e, site)?;
                a.add.push(scope.atom(d, items, e.pos())?);
            }
            None => return Err(site.expected(e.pos(), "an effect", e)),
        }
    }
    Ok(())
}

fn reject_connective(e: &Sexpr, site: ErrorSite) -> Result<(), PddlError> {
    const UNSUPPORTED: &[&str] = &[
        "forall",
        "when",
        "and",
        "not",
        "or",
        "decrease",
        "assign",
        "scale-up",
        "scale-down",
        "increase",
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
