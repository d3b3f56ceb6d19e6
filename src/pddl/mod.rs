//! PDDL domains and problems: the STRIPS fragment of the IPC 2023 learning
//! track (`:strips`, `:typing`, `:negative-preconditions`, `:equality`,
//! `:action-costs`).
//!
//! Reading goes text → [`sexpr`] → typed, name-resolved structures. Every
//! name is resolved to a dense index while reading, so later stages never
//! look up strings, and every reference to an undefined name, wrong arity or
//! unsupported construct is an error with file, line and column.

mod domain;
mod error;
mod grammar;
mod problem;
pub mod sexpr;

pub use domain::parse_domain;
pub use error::{PddlError, PddlErrorKind};
pub use problem::parse_problem;
pub use sexpr::Pos;

pub(crate) use error::check_text;

use std::collections::HashMap;

pub type TypeId = u32;
pub type ObjectId = u32;
pub type PredicateId = u32;
pub type FunctionId = u32;
pub type ActionId = u32;

/// The type `object`, root of every hierarchy.
pub const OBJECT_TYPE: TypeId = 0;

/// Types with single inheritance; `object` is always id 0.
#[derive(Clone, Debug)]
pub struct TypeTable {
    pub names: Vec<String>,
    pub parent: Vec<Option<TypeId>>,
    by_name: HashMap<String, TypeId>,
}

impl TypeTable {
    fn new() -> Self {
        TypeTable {
            names: vec!["object".into()],
            parent: vec![None],
            by_name: HashMap::from([("object".to_string(), OBJECT_TYPE)]),
        }
    }

    pub fn get(&self, name: &str) -> Option<TypeId> {
        self.by_name.get(name).copied()
    }

    fn get_or_add(&mut self, name: &str) -> TypeId {
        if let Some(t) = self.get(name) {
            return t;
        }
        let id = self.names.len() as TypeId;
        self.names.push(name.to_string());
        self.parent.push(Some(OBJECT_TYPE));
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// Is `sub` equal to `sup` or a descendant of it?
    pub fn is_subtype(&self, mut sub: TypeId, sup: TypeId) -> bool {
        // Parent chains are acyclic by construction (checked when read), and
        // no longer than the number of types.
        for _ in 0..=self.names.len() {
            if sub == sup {
                return true;
            }
            match self.parent[sub as usize] {
                Some(p) => sub = p,
                None => return false,
            }
        }
        false
    }

    pub fn name(&self, t: TypeId) -> &str {
        &self.names[t as usize]
    }
}

#[derive(Clone, Debug)]
pub struct PredicateDecl {
    pub name: String,
    pub param_types: Vec<TypeId>,
}

#[derive(Clone, Debug)]
pub struct FunctionDecl {
    pub name: String,
    pub param_types: Vec<TypeId>,
}

/// An argument in an action schema: one of its parameters, or an object
/// (a domain constant, whose id is the same in every problem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Term {
    Param(u32),
    Object(ObjectId),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AtomSchema {
    pub predicate: PredicateId,
    pub args: Vec<Term>,
}

/// `(= a b)` or `(not (= a b))` in a precondition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EqualitySchema {
    pub left: Term,
    pub right: Term,
    pub equal: bool,
}

/// The amount an action adds to `total-cost`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostTerm {
    Constant(u64),
    /// A static numeric function whose value is given in the problem's init.
    Function {
        function: FunctionId,
        args: Vec<Term>,
    },
}

#[derive(Clone, Debug)]
pub struct ActionSchema {
    pub name: String,
    pub param_names: Vec<String>,
    pub param_types: Vec<TypeId>,
    pub pre_pos: Vec<AtomSchema>,
    pub pre_neg: Vec<AtomSchema>,
    pub pre_eq: Vec<EqualitySchema>,
    pub add: Vec<AtomSchema>,
    pub del: Vec<AtomSchema>,
    /// Summed; empty means cost 0 in a costed domain and 1 otherwise.
    pub cost: Vec<CostTerm>,
}

#[derive(Clone, Debug)]
pub struct Domain {
    pub name: String,
    pub requirements: Vec<String>,
    pub types: TypeTable,
    /// Constants are the first objects of every problem of this domain.
    pub constants: Vec<(String, TypeId)>,
    pub predicates: Vec<PredicateDecl>,
    pub functions: Vec<FunctionDecl>,
    pub actions: Vec<ActionSchema>,
    /// True when the domain declares `total-cost`: actions cost what their
    /// `increase` effects say. Otherwise every action costs 1.
    pub has_action_costs: bool,
    predicate_by_name: HashMap<String, PredicateId>,
    function_by_name: HashMap<String, FunctionId>,
    action_by_name: HashMap<String, ActionId>,
}

impl Domain {
    pub fn predicate(&self, name: &str) -> Option<PredicateId> {
        self.predicate_by_name.get(name).copied()
    }

    pub fn function(&self, name: &str) -> Option<FunctionId> {
        self.function_by_name.get(name).copied()
    }

    pub fn action(&self, name: &str) -> Option<ActionId> {
        self.action_by_name.get(name).copied()
    }

    /// Predicates no action adds or deletes: their truth is fixed by init.
    pub fn static_predicates(&self) -> Vec<bool> {
        let mut is_static = vec![true; self.predicates.len()];
        for a in &self.actions {
            for atom in a.add.iter().chain(&a.del) {
                is_static[atom.predicate as usize] = false;
            }
        }
        is_static
    }
}

/// A ground atom: predicate and object arguments.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroundAtom {
    pub predicate: PredicateId,
    pub args: Vec<ObjectId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroundLiteral {
    pub atom: GroundAtom,
    pub positive: bool,
}

#[derive(Clone, Debug)]
pub struct Object {
    pub name: String,
    pub ty: TypeId,
}

#[derive(Clone, Debug)]
pub struct Problem {
    pub name: String,
    pub domain_name: String,
    /// Domain constants first (same ids as in the domain), then the
    /// problem's own objects.
    pub objects: Vec<Object>,
    pub init: Vec<GroundAtom>,
    /// Values of static numeric functions, for action costs.
    pub function_values: HashMap<(FunctionId, Vec<ObjectId>), u64>,
    pub goal: Vec<GroundLiteral>,
    /// Ground `(= a b)` literals in the goal, already decided: false if any
    /// of them cannot hold.
    pub goal_equalities_hold: bool,
    /// `(:metric minimize (total-cost))` was given.
    pub minimize_total_cost: bool,
    object_by_name: HashMap<String, ObjectId>,
}

impl Problem {
    pub fn object(&self, name: &str) -> Option<ObjectId> {
        self.object_by_name.get(name).copied()
    }

    pub fn object_name(&self, o: ObjectId) -> &str {
        &self.objects[o as usize].name
    }

    /// `(pred a b)` in PDDL syntax.
    pub fn format_atom(&self, domain: &Domain, atom: &GroundAtom) -> String {
        let mut s = format!("({}", domain.predicates[atom.predicate as usize].name);
        for &o in &atom.args {
            s.push(' ');
            s.push_str(self.object_name(o));
        }
        s.push(')');
        s
    }

    pub fn format_literal(&self, domain: &Domain, lit: &GroundLiteral) -> String {
        let atom = self.format_atom(domain, &lit.atom);
        if lit.positive {
            atom
        } else {
            format!("(not {atom})")
        }
    }

    /// Objects of type `t` or any subtype, in id order.
    pub fn objects_of_type(&self, domain: &Domain, t: TypeId) -> Vec<ObjectId> {
        (0..self.objects.len() as ObjectId)
            .filter(|&o| domain.types.is_subtype(self.objects[o as usize].ty, t))
            .collect()
    }
}

/// Reads a domain file from disk; errors name the path.
pub fn read_domain(path: &std::path::Path) -> Result<Domain, crate::Error> {
    let bytes = crate::input::read_file(path)?;
    Ok(parse_domain(&bytes, &path.display().to_string())?)
}

/// Reads a problem file from disk against its domain; errors name the path.
pub fn read_problem(path: &std::path::Path, domain: &Domain) -> Result<Problem, crate::Error> {
    let bytes = crate::input::read_file(path)?;
    Ok(parse_problem(&bytes, &path.display().to_string(), domain)?)
}
