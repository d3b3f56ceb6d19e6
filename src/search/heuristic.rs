//! Delete-relaxation heuristics: h_max (admissible), h_add, and h_FF with
//! preferred operators. Negative preconditions and negative goals are
//! ignored by the relaxation, as usual.
//!
//! One generalised Dijkstra over facts computes them all:
//!   cost(f) = 0                                   if f holds in s
//!   cost(f) = min_{o adds f} [ c(o) + agg_{p ∈ pre(o)} cost(p) ]
//! with agg = max (h_max) or sum (h_add); h(s) = agg over goal facts.
//! h_FF follows best supporters back from the goal (under h_add) and sums
//! the costs of the operators of that relaxed plan, each once.

use crate::task::{FactId, OpId, State, Task};

pub const DEAD_END: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregation {
    Max,
    Sum,
}

/// Reusable buffers for relaxed exploration on one task.
pub struct RelaxedExploration<'t> {
    task: &'t Task,
    pre_of: Vec<Vec<OpId>>,
    num_pre: Vec<u32>,
    fact_cost: Vec<u64>,
    supporter: Vec<OpId>,
    unsatisfied: Vec<u32>,
    op_value: Vec<u64>,
    queue: BucketQueue,
    is_goal_fact: Vec<bool>,
    marked: Vec<bool>,
}

/// A monotone priority queue over integer costs. For unit-cost tasks, one
/// bucket per cost popped in increasing order: relaxed exploration only
/// pushes costs ≥ the last popped one, so a cursor that never moves back
/// suffices and pushes and pops are O(1). With general action costs the
/// values can be large and sparse, so a binary heap is used instead.
#[derive(Default)]
struct BucketQueue {
    buckets: Vec<Vec<FactId>>,
    cursor: usize,
    len: usize,
    heap: Option<std::collections::BinaryHeap<std::cmp::Reverse<(u64, FactId)>>>,
}

impl BucketQueue {
    fn new(unit_cost: bool) -> Self {
        BucketQueue {
            heap: (!unit_cost).then(std::collections::BinaryHeap::new),
            ..Default::default()
        }
    }

    fn clear(&mut self) {
        if let Some(h) = &mut self.heap {
            h.clear();
            return;
        }
        let start = self.cursor.min(self.buckets.len());
        for b in &mut self.buckets[start..] {
            b.clear();
        }
        self.cursor = 0;
        self.len = 0;
    }

    fn push(&mut self, cost: u64, f: FactId) {
        if let Some(h) = &mut self.heap {
            h.push(std::cmp::Reverse((cost, f)));
            return;
        }
        let c = cost as usize;
        debug_assert!(c >= self.cursor, "monotone queue");
        if c >= self.buckets.len() {
            self.buckets.resize_with(c + 1, Vec::new);
        }
        self.buckets[c].push(f);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<(u64, FactId)> {
        if let Some(h) = &mut self.heap {
            return h.pop().map(|std::cmp::Reverse(x)| x);
        }
        if self.len == 0 {
            return None;
        }
        while self.buckets[self.cursor].is_empty() {
            self.cursor += 1;
        }
        self.len -= 1;
        let f = self.buckets[self.cursor].pop().expect("non-empty bucket");
        Some((self.cursor as u64, f))
    }
}

impl<'t> RelaxedExploration<'t> {
    pub fn new(task: &'t Task) -> Self {
        let mut pre_of = vec![Vec::new(); task.num_facts()];
        for (o, op) in task.operators.iter().enumerate() {
            for &p in op.pre.iter() {
                pre_of[p as usize].push(o as OpId);
            }
        }
        let n_ops = task.operators.len();
        RelaxedExploration {
            task,
            pre_of,
            num_pre: task.operators.iter().map(|o| o.pre.len() as u32).collect(),
            fact_cost: vec![DEAD_END; task.num_facts()],
            supporter: vec![OpId::MAX; task.num_facts()],
            unsatisfied: vec![0; n_ops],
            op_value: vec![0; n_ops],
            queue: BucketQueue::new(task.unit_cost),
            is_goal_fact: {
                let mut g = vec![false; task.num_facts()];
                for &f in &task.goal {
                    g[f as usize] = true;
                }
                g
            },
            marked: vec![false; n_ops],
        }
    }

    /// Fills `fact_cost` (and supporters) for `state`; returns h or DEAD_END.
    pub fn explore(&mut self, state: &State, agg: Aggregation) -> u64 {
        let task = self.task;
        self.fact_cost.fill(DEAD_END);
        self.supporter.fill(OpId::MAX);
        self.unsatisfied.copy_from_slice(&self.num_pre);
        self.op_value.fill(0);
        self.queue.clear();
        for f in state.ones() {
            self.fact_cost[f as usize] = 0;
            self.queue.push(0, f);
        }
        for (o, op) in task.operators.iter().enumerate() {
            if op.pre.is_empty() {
                self.fire(o as OpId);
            }
        }
        let mut goals_left = task.goal.iter().filter(|&&g| !state.get(g)).count();
        while let Some((c, f)) = self.queue.pop() {
            if c > self.fact_cost[f as usize] {
                continue;
            }
            if self.is_goal_fact[f as usize] && c > 0 {
                goals_left -= 1;
                // Popped costs are final (costs only grow along the
                // queue), so once every goal is popped h is known.
                if goals_left == 0 {
                    break;
                }
            }
            for i in 0..self.pre_of[f as usize].len() {
                let o = self.pre_of[f as usize][i] as usize;
                self.op_value[o] = match agg {
                    Aggregation::Max => self.op_value[o].max(c),
                    Aggregation::Sum => self.op_value[o].saturating_add(c),
                };
                self.unsatisfied[o] -= 1;
                if self.unsatisfied[o] == 0 {
                    self.fire(o as OpId);
                }
            }
        }
        let mut h = 0u64;
        for &g in &task.goal {
            let c = self.fact_cost[g as usize];
            if c == DEAD_END {
                return DEAD_END;
            }
            h = match agg {
                Aggregation::Max => h.max(c),
                Aggregation::Sum => h.saturating_add(c),
            };
        }
        h
    }

    fn fire(&mut self, o: OpId) {
        let op = &self.task.operators[o as usize];
        let value = self.op_value[o as usize].saturating_add(op.cost);
        for &a in op.add.iter() {
            if value < self.fact_cost[a as usize] {
                self.fact_cost[a as usize] = value;
                self.supporter[a as usize] = o;
                self.queue.push(value, a);
            }
        }
    }

    /// h_FF and the preferred operators (relaxed-plan operators applicable
    /// in `state`), appended to `preferred`.
    pub fn h_ff(&mut self, state: &State, preferred: &mut Vec<OpId>) -> u64 {
        if self.task.goal_reachable && self.explore(state, Aggregation::Sum) == DEAD_END {
            return DEAD_END;
        }
        let task = self.task;
        let mut stack: Vec<FactId> = task
            .goal
            .iter()
            .copied()
            .filter(|&g| !state.get(g))
            .collect();
        let mut plan_ops = Vec::new();
        let mut h = 0u64;
        while let Some(f) = stack.pop() {
            let o = self.supporter[f as usize];
            if o == OpId::MAX || self.marked[o as usize] {
                continue;
            }
            self.marked[o as usize] = true;
            plan_ops.push(o);
            let op = &task.operators[o as usize];
            h = h.saturating_add(op.cost);
            stack.extend(op.pre.iter().copied().filter(|&p| !state.get(p)));
        }
        for o in plan_ops {
            self.marked[o as usize] = false;
            if task.is_applicable(&task.operators[o as usize], state) {
                preferred.push(o);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bundled::{BLOCKSWORLD_DOMAIN, EXAMPLE_PROBLEM};
    use crate::pddl::{parse_domain, parse_problem};

    #[test]
    fn hmax_hadd_hff_on_the_bundled_tower_reversal() {
        let d = parse_domain(BLOCKSWORLD_DOMAIN.as_bytes(), "d").unwrap();
        let p = parse_problem(EXAMPLE_PROBLEM.as_bytes(), "p", &d).unwrap();
        let task = Task::ground(&d, &p).unwrap();
        let mut rx = RelaxedExploration::new(&task);
        // Goal (on d c) needs holding d, i.e. pickup d, which needs d clear:
        // unstack c d, needing c clear: unstack b c, needing b clear:
        // unstack a b. h_max is that longest chain: 3 unstacks, pickup d,
        // stack d c = 5 (the optimal plan has 8 steps).
        assert_eq!(rx.explore(&task.init, Aggregation::Max), 5);
        let h_add = rx.explore(&task.init, Aggregation::Sum);
        let mut pref = Vec::new();
        let h_ff = rx.h_ff(&task.init, &mut pref);
        assert!(h_ff >= 5 && h_ff <= h_add, "h_ff {h_ff}, h_add {h_add}");
        // The only applicable operator, (unstack a b), is preferred.
        assert_eq!(
            pref.iter()
                .map(|&o| task.operator_name(o))
                .collect::<Vec<_>>(),
            ["(unstack a b)"]
        );
    }
}
