//! Deployment as an episodic MDP (shared by the exact DP, the samplers and
//! the policies).
//!
//! A policy writes a trace one action at a time. Its actions are *all*
//! ground actions of a deployment's tasks plus `END`. At time t ≤ H in state
//! s it draws an action a:
//! * `END`: the trace stops; it is valid (R = 1) iff s satisfies the goal;
//! * a ground action applicable in s, at t < H: the trace moves on;
//! * a ground action that is inapplicable in s, or any action at t = H:
//!   the trace stops, invalid (R = 0) — like a model writing an impossible
//!   step or running out of budget.
//!
//! So valid traces are plans of length ≤ H followed by `END`. Stopping at
//! the first inapplicable step changes no R-weighted quantity: every
//! continuation of an invalid prefix has R = 0.
//!
//! Several tasks of one domain form a [`Deployment`]; they share one index
//! of ground actions and of facts (the union over the tasks, by name, so
//! tasks of different sizes fit: an action naming an object a task lacks is
//! simply never applicable there), so a single network can
//! read any of them (state facts and goal facts as bit vectors).

use std::collections::{HashMap, VecDeque};

use crate::pddl::{Domain, Problem};
use crate::task::{State, Task};
use crate::{Error, Result};

pub use crate::limits::MAX_HORIZON;

/// Index of an action in the shared action set (`END` is the last).
pub type ActionId = usize;
pub type StateIndex = u32;

/// One task's reachable state graph up to the horizon.
#[derive(Clone, Debug)]
pub struct TaskSpace {
    pub name: String,
    /// The problem as read (for the PDDL validator and reports).
    pub problem: Problem,
    pub task: Task,
    /// Reachable states in breadth-first order; `states[0]` is the initial state.
    pub states: Vec<State>,
    /// Applicable actions of each state: (shared action id, successor index),
    /// sorted by action id. Empty for states first reached at depth H: a
    /// trace is there only at t = H, where no step can follow.
    pub successors: Vec<Vec<(ActionId, StateIndex)>>,
    /// The applicable actions (sorted shared ids) of the states first
    /// reached at depth H, keyed by state; their successors are beyond
    /// the horizon and never stored. See [`TaskSpace::for_each_applicable`].
    pub horizon_applicable: HashMap<StateIndex, Vec<ActionId>>,
    pub is_goal: Vec<bool>,
    /// Fewest steps from the initial state.
    pub depth: Vec<u32>,
    /// Shared fact ids of each state's true facts, and of the goal.
    pub state_features: Vec<Vec<u32>>,
    pub goal_features: Vec<u32>,
    pub index: HashMap<State, StateIndex>,
}

#[derive(Clone, Debug)]
pub struct Deployment {
    pub tasks: Vec<TaskSpace>,
    /// Task weights μ(x), summing to 1.
    pub mu: Vec<f64>,
    pub horizon: usize,
    /// Ground actions in the shared index, by name; `END` is appended last.
    pub action_names: Vec<String>,
    /// Number of shared facts (the length of a state or goal bit vector).
    pub num_features: usize,
    /// Shared facts by id, e.g. `(on b1 b2)`.
    pub fact_names: Vec<String>,
    /// The domain's constants by name: the objects every task shares
    /// (the rest of a task's objects are its own; see
    /// `policy::transformer::tokens::Objects`).
    pub constants: Vec<String>,
    /// The domain's type names by type id (`object` first), so an object's
    /// type is `type_names[object.ty]`.
    pub type_names: Vec<String>,
}

impl Deployment {
    pub fn num_actions(&self) -> usize {
        self.action_names.len()
    }

    pub fn end(&self) -> ActionId {
        self.action_names.len() - 1
    }

    /// The deployment of the first `n` tasks, with the same action and fact
    /// index (so policies of this deployment read it unchanged); μ uniform.
    pub fn prefix(&self, n: usize) -> Deployment {
        let n = n.min(self.tasks.len());
        Deployment {
            tasks: self.tasks[..n].to_vec(),
            mu: vec![1.0 / n as f64; n],
            horizon: self.horizon,
            action_names: self.action_names.clone(),
            num_features: self.num_features,
            fact_names: self.fact_names.clone(),
            constants: self.constants.clone(),
            type_names: self.type_names.clone(),
        }
    }

    /// Grounds `problems` (one domain; object sets may differ) and enumerates every
    /// state reachable within `horizon` steps. Fails if a task has more than
    /// `max_states` such states (the exact computations are for small tasks).
    pub fn build(
        domain: &Domain,
        problems: &[Problem],
        horizon: usize,
        max_states: usize,
    ) -> Result<Self> {
        if problems.is_empty() {
            return Err(Error::Invalid(
                "a deployment needs at least one task".into(),
            ));
        }
        if horizon > MAX_HORIZON {
            return Err(Error::Invalid(format!(
                "horizon {horizon} is above the largest supported, {MAX_HORIZON} (exact tables hold (H+1) x states numbers per task)"
            )));
        }
        let mut action_ids: HashMap<String, ActionId> = HashMap::new();
        let mut action_names = Vec::new();
        // Facts are shared by name: object ids are per problem, so two
        // tasks with different object lists may give one id two names.
        let mut fact_ids: HashMap<String, u32> = HashMap::new();
        let mut fact_names: Vec<String> = Vec::new();
        let mut spaces = Vec::new();
        for p in problems {
            let task = Task::ground(domain, p)?;
            let op_action: Vec<ActionId> = (0..task.operators.len() as u32)
                .map(|o| {
                    let name = task.operator_name(o);
                    let n = action_names.len();
                    *action_ids.entry(name.clone()).or_insert_with(|| {
                        action_names.push(name);
                        n
                    })
                })
                .collect();
            let fact_map: Vec<u32> = (0..task.facts.len() as u32)
                .map(|f| {
                    let name = task.fact_name(f);
                    let n = fact_names.len() as u32;
                    *fact_ids.entry(name.clone()).or_insert_with(|| {
                        fact_names.push(name);
                        n
                    })
                })
                .collect();
            let mut goal_features: Vec<u32> =
                task.goal.iter().map(|&f| fact_map[f as usize]).collect();
            goal_features.sort_unstable();
            let mut space = TaskSpace {
                name: p.name.clone(),
                problem: p.clone(),
                states: Vec::new(),
                successors: Vec::new(),
                horizon_applicable: HashMap::new(),
                is_goal: Vec::new(),
                depth: Vec::new(),
                state_features: Vec::new(),
                goal_features,
                index: HashMap::new(),
                task,
            };
            space.explore(&op_action, &fact_map, horizon, max_states)?;
            spaces.push(space);
        }
        action_names.push("END".into());
        let n = spaces.len() as f64;
        Ok(Deployment {
            mu: vec![1.0 / n; spaces.len()],
            tasks: spaces,
            horizon,
            action_names,
            num_features: fact_names.len(),
            fact_names,
            constants: domain.constants.iter().map(|(n, _)| n.clone()).collect(),
            type_names: domain.types.names.clone(),
        })
    }
}

impl TaskSpace {
    /// The state action `a` leads to from state `s`, if `a` is applicable
    /// there (the successor lists are sorted by action id).
    pub fn successor(&self, s: StateIndex, a: ActionId) -> Option<StateIndex> {
        let succ = &self.successors[s as usize];
        succ.binary_search_by_key(&a, |&(b, _)| b)
            .ok()
            .map(|i| succ[i].1)
    }

    /// The ground actions applicable in state `s` (sorted shared ids),
    /// also for states at depth H, whose successor lists are empty. This
    /// is what the applicability prior reads: it penalises inapplicable
    /// actions only, wherever the state lies.
    pub fn for_each_applicable(&self, s: StateIndex, mut f: impl FnMut(ActionId)) {
        match self.horizon_applicable.get(&s) {
            Some(list) => list.iter().for_each(|&a| f(a)),
            None => self.successors[s as usize].iter().for_each(|&(a, _)| f(a)),
        }
    }

    fn explore(
        &mut self,
        op_action: &[ActionId],
        fact_map: &[u32],
        horizon: usize,
        max_states: usize,
    ) -> Result<()> {
        let task = &self.task;
        let add = |space_states: &mut Vec<State>,
                   index: &mut HashMap<State, StateIndex>,
                   depth: &mut Vec<u32>,
                   s: State,
                   d: u32| {
            let n = space_states.len() as StateIndex;
            *index.entry(s.clone()).or_insert_with(|| {
                space_states.push(s);
                depth.push(d);
                n
            })
        };
        add(
            &mut self.states,
            &mut self.index,
            &mut self.depth,
            task.init.clone(),
            0,
        );
        let mut queue = VecDeque::from([0 as StateIndex]);
        let mut applicable = Vec::new();
        let mut successors: Vec<Vec<(ActionId, StateIndex)>> = Vec::new();
        while let Some(s) = queue.pop_front() {
            let state = self.states[s as usize].clone();
            let d = self.depth[s as usize];
            let mut succ = Vec::new();
            if (d as usize) >= horizon {
                task.applicable(&state, &mut applicable);
                let mut ids: Vec<ActionId> =
                    applicable.iter().map(|&o| op_action[o as usize]).collect();
                ids.sort_unstable();
                ids.dedup();
                if !ids.is_empty() {
                    self.horizon_applicable.insert(s, ids);
                }
            } else {
                task.applicable(&state, &mut applicable);
                for &o in &applicable {
                    let next = task.apply(&task.operators[o as usize], &state);
                    let before = self.states.len();
                    let t = add(
                        &mut self.states,
                        &mut self.index,
                        &mut self.depth,
                        next,
                        d + 1,
                    );
                    if self.states.len() > before {
                        queue.push_back(t);
                    }
                    succ.push((op_action[o as usize], t));
                }
            }
            succ.sort_unstable();
            successors.push(succ);
            if self.states.len() > max_states {
                return Err(Error::Invalid(format!(
                    "task `{}` has more than {max_states} states within horizon {horizon}; exact computation is for small tasks",
                    self.name
                )));
            }
        }
        // States first reached at depth H still need their (empty within
        // the horizon) successor lists, which the queue gave them.
        debug_assert_eq!(successors.len(), self.states.len());
        self.successors = successors;
        self.is_goal = self.states.iter().map(|s| task.is_goal(s)).collect();
        self.state_features = self
            .states
            .iter()
            .map(|s| {
                let mut f: Vec<u32> = s.ones().map(|f| fact_map[f as usize]).collect();
                f.sort_unstable();
                f
            })
            .collect();
        Ok(())
    }

    pub fn num_states(&self) -> usize {
        self.states.len()
    }
}
