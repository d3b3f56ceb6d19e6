//! Plan validation with VAL's sequential semantics, on the lifted task.
//!
//! Nothing is grounded up front: the state is the set of true ground atoms
//! and each step instantiates only its own schema, so a plan validates in
//! time proportional to its length (plus reading the initial state).
//!
//! Per step, in this order (the first failure is reported):
//! 1. the line is an action `(name arg …)`;
//! 2. `name` is an action of the domain;
//! 3. it has as many arguments as parameters;
//! 4. each argument is an object of the problem (or a domain constant);
//! 5. each object's type is the parameter's type or a subtype;
//! 6. every precondition holds in the current state: positive and negative
//!    literals and (in)equalities;
//! 7. effects apply, deletes first, then adds (an atom both deleted and
//!    added ends true).
//!
//! After the last step the goal must hold. An empty plan is valid iff the
//! goal holds initially; a plan may pass through the goal and continue.

use crate::hashing::FxHashSet;
use crate::pddl::{ActionSchema, AtomSchema, CostTerm, Domain, ObjectId, Problem, Term};
use crate::plan::{PlanStep, StepSyntax};

/// The outcome of validating one plan. Invalid plans are data, not errors.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub valid: bool,
    /// Number of steps in the plan (parsed or not).
    pub length: usize,
    /// Total cost when valid: the sum of `total-cost` increases in a
    /// costed domain, the number of steps otherwise.
    pub cost: Option<u64>,
    pub failure: Option<Failure>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// 1-based step; `None` when every step applied but the goal is false.
    pub step: Option<usize>,
    /// The step as written (empty for a goal failure).
    pub action: String,
    /// Line of the step in its source text.
    pub line: Option<u32>,
    #[serde(flatten)]
    pub kind: FailureKind,
    /// The offending literals: unsatisfied preconditions or goal literals,
    /// in PDDL syntax.
    pub literals: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureKind {
    UnparseableLine {
        reason: String,
    },
    UnknownAction {
        name: String,
    },
    WrongArity {
        expected: usize,
        found: usize,
    },
    UnknownObject {
        object: String,
    },
    TypeMismatch {
        parameter: String,
        object: String,
        object_type: String,
        expected_type: String,
    },
    UnsatisfiedPrecondition,
    /// The cost of the step uses a numeric function the problem leaves undefined.
    UndefinedCost {
        function: String,
    },
    /// The total cost passes 2⁶⁴ − 1: it cannot be represented, so no cost
    /// (and no verdict of validity with a cost) is given.
    CostOverflow,
    GoalNotReached,
}

impl FailureKind {
    /// A short stable name, used in tables and statistics.
    pub fn name(&self) -> &'static str {
        match self {
            FailureKind::UnparseableLine { .. } => "unparseable_line",
            FailureKind::UnknownAction { .. } => "unknown_action",
            FailureKind::WrongArity { .. } => "wrong_arity",
            FailureKind::UnknownObject { .. } => "unknown_object",
            FailureKind::TypeMismatch { .. } => "type_mismatch",
            FailureKind::UnsatisfiedPrecondition => "unsatisfied_precondition",
            FailureKind::UndefinedCost { .. } => "undefined_cost",
            FailureKind::CostOverflow => "cost_overflow",
            FailureKind::GoalNotReached => "goal_not_reached",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(s) => write!(f, "step {s} `{}`: ", self.action)?,
            None => f.write_str("after the last step: ")?,
        }
        match &self.kind {
            FailureKind::UnparseableLine { reason } => write!(f, "unparseable line: {reason}")?,
            FailureKind::UnknownAction { name } => write!(f, "unknown action `{name}`")?,
            FailureKind::WrongArity { expected, found } => write!(
                f,
                "wrong arity: expected {expected} argument(s), found {found}"
            )?,
            FailureKind::UnknownObject { object } => write!(f, "unknown object `{object}`")?,
            FailureKind::TypeMismatch {
                parameter,
                object,
                object_type,
                expected_type,
            } => write!(
                f,
                "type mismatch: {parameter} needs a `{expected_type}`, `{object}` is a `{object_type}`"
            )?,
            FailureKind::UnsatisfiedPrecondition => f.write_str("unsatisfied precondition")?,
            FailureKind::UndefinedCost { function } => write!(
                f,
                "the step's cost uses `{function}`, undefined in the problem"
            )?,
            FailureKind::CostOverflow => f.write_str(
                "the total cost passes 18446744073709551615 (2^64 - 1) and cannot be represented",
            )?,
            FailureKind::GoalNotReached => f.write_str("goal not reached")?,
        }
        if !self.literals.is_empty() {
            write!(f, ": {}", self.literals.join(" "))?;
        }
        Ok(())
    }
}

/// Validates plans for one domain and problem; reusable across many plans.
pub struct Validator<'a> {
    domain: &'a Domain,
    problem: &'a Problem,
    init: FxHashSet<Box<[u32]>>,
}

/// Atoms are stored as `[predicate, arg…]` so a lookup can reuse a buffer.
fn atom_key(buf: &mut Vec<u32>, schema: &AtomSchema, binding: &[ObjectId]) {
    buf.clear();
    buf.push(schema.predicate);
    buf.extend(schema.args.iter().map(|t| resolve(*t, binding)));
}

#[inline]
fn resolve(t: Term, binding: &[ObjectId]) -> ObjectId {
    match t {
        Term::Param(i) => binding[i as usize],
        Term::Object(o) => o,
    }
}

impl<'a> Validator<'a> {
    pub fn new(domain: &'a Domain, problem: &'a Problem) -> Self {
        let init = problem
            .init
            .iter()
            .map(|a| {
                let mut key = Vec::with_capacity(a.args.len() + 1);
                key.push(a.predicate);
                key.extend(&a.args);
                key.into_boxed_slice()
            })
            .collect();
        Validator {
            domain,
            problem,
            init,
        }
    }

    fn format_key(&self, key: &[u32]) -> String {
        let mut s = format!("({}", self.domain.predicates[key[0] as usize].name);
        for &o in &key[1..] {
            s.push(' ');
            s.push_str(self.problem.object_name(o));
        }
        s.push(')');
        s
    }

    /// Validates one plan from its initial state.
    pub fn validate(&self, steps: &[PlanStep]) -> Verdict {
        let mut state = self.init.clone();
        let mut buf = Vec::with_capacity(8);
        let mut binding: Vec<ObjectId> = Vec::with_capacity(8);
        let mut cost = 0u64;
        let invalid = |i: usize, step: &PlanStep, kind, literals| Verdict {
            valid: false,
            length: steps.len(),
            cost: None,
            failure: Some(Failure {
                step: Some(i + 1),
                action: step.text.clone(),
                line: Some(step.line),
                kind,
                literals,
            }),
        };
        for (i, step) in steps.iter().enumerate() {
            let (name, args) = match &step.syntax {
                StepSyntax::Action { name, args } => (name, args),
                StepSyntax::Unparseable { reason } => {
                    let kind = FailureKind::UnparseableLine {
                        reason: reason.clone(),
                    };
                    return invalid(i, step, kind, vec![]);
                }
            };
            let Some(action_id) = self.domain.action(name) else {
                let kind = FailureKind::UnknownAction { name: name.clone() };
                return invalid(i, step, kind, vec![]);
            };
            let action = &self.domain.actions[action_id as usize];
            if let Err(kind) = self.bind(action, args, &mut binding) {
                return invalid(i, step, kind, vec![]);
            }
            let unsatisfied = self.unsatisfied_preconditions(action, &binding, &state, &mut buf);
            if !unsatisfied.is_empty() {
                return invalid(i, step, FailureKind::UnsatisfiedPrecondition, unsatisfied);
            }
            match self
                .step_cost(action, &binding)
                .and_then(|c| cost.checked_add(c).ok_or(FailureKind::CostOverflow))
            {
                Ok(c) => cost = c,
                Err(kind) => return invalid(i, step, kind, vec![]),
            }
            // Deletes before adds: an atom deleted and added ends true.
            for d in &action.del {
                atom_key(&mut buf, d, &binding);
                state.remove(buf.as_slice());
            }
            for a in &action.add {
                atom_key(&mut buf, a, &binding);
                if !state.contains(buf.as_slice()) {
                    state.insert(buf.clone().into_boxed_slice());
                }
            }
        }
        let unmet = self.unmet_goals(&state, &mut buf);
        if unmet.is_empty() && self.problem.goal_equalities_hold {
            Verdict {
                valid: true,
                length: steps.len(),
                cost: Some(cost),
                failure: None,
            }
        } else {
            Verdict {
                valid: false,
                length: steps.len(),
                cost: None,
                failure: Some(Failure {
                    step: None,
                    action: String::new(),
                    line: None,
                    kind: FailureKind::GoalNotReached,
                    literals: unmet,
                }),
            }
        }
    }

    /// Resolves arguments to objects and checks arity and types.
    fn bind(
        &self,
        action: &ActionSchema,
        args: &[String],
        binding: &mut Vec<ObjectId>,
    ) -> Result<(), FailureKind> {
        if args.len() != action.param_types.len() {
            return Err(FailureKind::WrongArity {
                expected: action.param_types.len(),
                found: args.len(),
            });
        }
        binding.clear();
        for (k, arg) in args.iter().enumerate() {
            let o = self
                .problem
                .object(arg)
                .ok_or_else(|| FailureKind::UnknownObject {
                    object: arg.clone(),
                })?;
            let have = self.problem.objects[o as usize].ty;
            let want = action.param_types[k];
            if !self.domain.types.is_subtype(have, want) {
                return Err(FailureKind::TypeMismatch {
                    parameter: action.param_names[k].clone(),
                    object: arg.clone(),
                    object_type: self.domain.types.name(have).to_string(),
                    expected_type: self.domain.types.name(want).to_string(),
                });
            }
            binding.push(o);
        }
        Ok(())
    }

    fn unsatisfied_preconditions(
        &self,
        action: &ActionSchema,
        binding: &[ObjectId],
        state: &FxHashSet<Box<[u32]>>,
        buf: &mut Vec<u32>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for p in &action.pre_pos {
            atom_key(buf, p, binding);
            if !state.contains(buf.as_slice()) {
                out.push(self.format_key(buf));
            }
        }
        for p in &action.pre_neg {
            atom_key(buf, p, binding);
            if state.contains(buf.as_slice()) {
                out.push(format!("(not {})", self.format_key(buf)));
            }
        }
        for e in &action.pre_eq {
            let (l, r) = (resolve(e.left, binding), resolve(e.right, binding));
            if (l == r) != e.equal {
                let eq = format!(
                    "(= {} {})",
                    self.problem.object_name(l),
                    self.problem.object_name(r)
                );
                out.push(if e.equal { eq } else { format!("(not {eq})") });
            }
        }
        out
    }

    fn step_cost(&self, action: &ActionSchema, binding: &[ObjectId]) -> Result<u64, FailureKind> {
        if !self.domain.has_action_costs {
            return Ok(1);
        }
        let mut total = 0u64;
        for term in &action.cost {
            let c = match term {
                CostTerm::Constant(c) => *c,
                CostTerm::Function { function, args } => {
                    let key = (
                        *function,
                        args.iter().map(|t| resolve(*t, binding)).collect(),
                    );
                    *self.problem.function_values.get(&key).ok_or_else(|| {
                        FailureKind::UndefinedCost {
                            function: self.domain.functions[*function as usize].name.clone(),
                        }
                    })?
                }
            };
            total = total.checked_add(c).ok_or(FailureKind::CostOverflow)?;
        }
        Ok(total)
    }

    fn unmet_goals(&self, state: &FxHashSet<Box<[u32]>>, buf: &mut Vec<u32>) -> Vec<String> {
        let mut out = Vec::new();
        for g in &self.problem.goal {
            buf.clear();
            buf.push(g.atom.predicate);
            buf.extend(&g.atom.args);
            if state.contains(buf.as_slice()) != g.positive {
                out.push(self.problem.format_literal(self.domain, g));
            }
        }
        out
    }
}

/// Validates one plan (convenience for a single use).
pub fn validate(domain: &Domain, problem: &Problem, steps: &[PlanStep]) -> Verdict {
    Validator::new(domain, problem).validate(steps)
}
