//! A grounded STRIPS task: facts and actions as dense indices, states as
//! bitsets. The planner, the exact dynamic programs and the policies all run
//! on this representation.
//!
//! Grounding ([`Task::ground`]) keeps only what relaxed reachability can
//! reach from the initial state, and folds static facts (those no action
//! changes) into the actions, so a ground action's precondition lists only
//! facts that can change.

mod ground;
mod state;

pub use state::State;

use crate::pddl::{ActionId, GroundAtom, ObjectId};

pub type FactId = u32;
pub type OpId = u32;

/// A ground action ("operator").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub schema: ActionId,
    pub args: Box<[ObjectId]>,
    /// Facts that must be true.
    pub pre: Box<[FactId]>,
    /// Facts that must be false.
    pub pre_neg: Box<[FactId]>,
    pub add: Box<[FactId]>,
    pub del: Box<[FactId]>,
    pub cost: u64,
}

#[derive(Clone, Debug)]
pub struct Task {
    /// The fluent facts (atoms some action can change), by id.
    pub facts: Vec<GroundAtom>,
    pub operators: Vec<Operator>,
    pub init: State,
    pub goal: Vec<FactId>,
    pub goal_neg: Vec<FactId>,
    /// False when relaxed reachability already proves the goal unreachable.
    pub goal_reachable: bool,
    /// Every operator costs 1 (no `:action-costs`).
    pub unit_cost: bool,
    names: Names,
    /// Operators indexed by one of their precondition facts, for fast
    /// successor generation; operators without preconditions are listed
    /// in `always`.
    by_trigger: Vec<Vec<OpId>>,
    always: Vec<OpId>,
}

/// Names kept for printing facts and operators.
#[derive(Clone, Debug)]
struct Names {
    objects: Vec<String>,
    predicates: Vec<String>,
    schemas: Vec<String>,
}

impl Task {
    pub fn num_facts(&self) -> usize {
        self.facts.len()
    }

    /// Words of 64 bits per state.
    pub fn state_words(&self) -> usize {
        self.facts.len().div_ceil(64)
    }

    #[inline]
    pub fn is_applicable(&self, op: &Operator, state: &State) -> bool {
        op.pre.iter().all(|&f| state.get(f)) && !op.pre_neg.iter().any(|&f| state.get(f))
    }

    /// Applies `op` (deletes first, then adds) into `out`.
    #[inline]
    pub fn apply_into(&self, op: &Operator, state: &State, out: &mut State) {
        out.copy_from(state);
        for &f in op.del.iter() {
            out.clear(f);
        }
        for &f in op.add.iter() {
            out.set(f);
        }
    }

    pub fn apply(&self, op: &Operator, state: &State) -> State {
        let mut out = state.clone();
        self.apply_into(op, state, &mut out);
        out
    }

    pub fn is_goal(&self, state: &State) -> bool {
        self.goal_reachable
            && self.goal.iter().all(|&f| state.get(f))
            && !self.goal_neg.iter().any(|&f| state.get(f))
    }

    /// The operators applicable in `state`, in increasing id order.
    pub fn applicable(&self, state: &State, out: &mut Vec<OpId>) {
        out.clear();
        out.extend(self.always.iter().copied().filter(|&o| {
            let op = &self.operators[o as usize];
            !op.pre_neg.iter().any(|&f| state.get(f))
        }));
        for f in state.ones() {
            for &o in &self.by_trigger[f as usize] {
                if self.is_applicable(&self.operators[o as usize], state) {
                    out.push(o);
                }
            }
        }
        out.sort_unstable();
    }

    /// `(pred a b)`.
    pub fn fact_name(&self, f: FactId) -> String {
        let atom = &self.facts[f as usize];
        let mut s = format!("({}", self.names.predicates[atom.predicate as usize]);
        for &o in &atom.args {
            s.push(' ');
            s.push_str(&self.names.objects[o as usize]);
        }
        s.push(')');
        s
    }

    /// `(schema a b)` in IPC plan syntax.
    pub fn operator_name(&self, o: OpId) -> String {
        let op = &self.operators[o as usize];
        let mut s = format!("({}", self.names.schemas[op.schema as usize]);
        for &a in op.args.iter() {
            s.push(' ');
            s.push_str(&self.names.objects[a as usize]);
        }
        s.push(')');
        s
    }

    /// Facts true in `state`, by name (for debugging and displays).
    pub fn describe(&self, state: &State) -> Vec<String> {
        state.ones().map(|f| self.fact_name(f)).collect()
    }

    fn build_trigger_index(&mut self) {
        // Trigger on the precondition fact that fewest operators need: a
        // state then visits few operators that turn out inapplicable.
        let mut uses = vec![0u32; self.facts.len()];
        for op in &self.operators {
            for &f in op.pre.iter() {
                uses[f as usize] += 1;
            }
        }
        let mut by_trigger = vec![Vec::new(); self.facts.len()];
        let mut always = Vec::new();
        for (i, op) in self.operators.iter().enumerate() {
            match op.pre.iter().min_by_key(|&&f| uses[f as usize]) {
                Some(&f) => by_trigger[f as usize].push(i as OpId),
                None => always.push(i as OpId),
            }
        }
        self.by_trigger = by_trigger;
        self.always = always;
    }
}
