//! The reference planner: A* with h_max (optimal), greedy best-first search
//! with h_FF and preferred operators (satisficing), and breadth-first search
//! (optimal for unit costs, the brute-force oracle of the tests). All run on
//! the grounded [`Task`] with compact duplicate detection.

pub mod heuristic;
mod registry;

pub use registry::{StateId, StateRegistry};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use heuristic::{Aggregation, DEAD_END, RelaxedExploration};

use crate::task::{OpId, Task};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// A* with h_max: optimal plans (cost-optimal).
    AstarHmax,
    /// Greedy best-first with h_FF and preferred operators: fast, not optimal.
    GbfsFf,
    /// Breadth-first: length-optimal; the brute-force reference.
    Bfs,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub time: Option<Duration>,
    pub expansions: Option<u64>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Statistics {
    pub expanded: u64,
    pub generated: u64,
    pub evaluated: u64,
    pub seconds: f64,
    /// States kept for duplicate detection, and their bytes.
    pub stored_states: u64,
    pub registry_bytes: u64,
    /// Peak resident memory of the process (Linux), when known.
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Solved,
    /// The whole reachable space was searched: no plan exists.
    Unsolvable,
    TimeLimit,
    ExpansionLimit,
}

impl Outcome {
    /// What a user reads: "solved", "no plan within the time limit", …
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Solved => "solved",
            Outcome::Unsolvable => "unsolvable (no plan exists)",
            Outcome::TimeLimit => "no plan within the time limit",
            Outcome::ExpansionLimit => "no plan within the expansion limit",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SearchResult {
    pub outcome: Outcome,
    pub plan: Vec<OpId>,
    pub cost: u64,
    pub stats: Statistics,
}

impl SearchResult {
    pub fn plan_names(&self, task: &Task) -> Vec<String> {
        self.plan.iter().map(|&o| task.operator_name(o)).collect()
    }
}

/// Per-state bookkeeping of a search: parent pointers and best g.
struct Nodes {
    parent: Vec<StateId>,
    op: Vec<OpId>,
    g: Vec<u64>,
    closed: Vec<bool>,
}

impl Nodes {
    fn new() -> Self {
        Nodes {
            parent: Vec::new(),
            op: Vec::new(),
            g: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn add(&mut self, parent: StateId, op: OpId, g: u64) {
        self.parent.push(parent);
        self.op.push(op);
        self.g.push(g);
        self.closed.push(false);
    }

    fn plan_to(&self, mut s: StateId) -> Vec<OpId> {
        let mut plan = Vec::new();
        while self.parent[s as usize] != s {
            plan.push(self.op[s as usize]);
            s = self.parent[s as usize];
        }
        plan.reverse();
        plan
    }
}

struct Clock {
    start: Instant,
    limits: Limits,
}

impl Clock {
    fn exceeded(&self, expanded: u64) -> Option<Outcome> {
        if self.limits.expansions.is_some_and(|m| expanded >= m) {
            return Some(Outcome::ExpansionLimit);
        }
        // Reading the clock every 256 expansions keeps it off the hot path.
        if expanded.is_multiple_of(256)
            && self.limits.time.is_some_and(|t| self.start.elapsed() >= t)
        {
            return Some(Outcome::TimeLimit);
        }
        None
    }
}

/// What every search starts with: a clock, statistics, the state registry
/// holding the initial state, and its node as the root.
struct Scaffold {
    clock: Clock,
    stats: Statistics,
    reg: StateRegistry,
    nodes: Nodes,
    root: StateId,
}

impl Scaffold {
    fn start(task: &Task, limits: Limits) -> Self {
        let clock = Clock {
            start: Instant::now(),
            limits,
        };
        let mut reg = StateRegistry::new(task.state_words());
        let mut nodes = Nodes::new();
        let (root, _) = reg.insert(&task.init);
        nodes.add(root, OpId::MAX, 0);
        Scaffold {
            clock,
            stats: Statistics::default(),
            reg,
            nodes,
            root,
        }
    }
}

fn finish(
    outcome: Outcome,
    plan: Vec<OpId>,
    task: &Task,
    mut stats: Statistics,
    reg: &StateRegistry,
    clock: &Clock,
) -> SearchResult {
    stats.seconds = clock.start.elapsed().as_secs_f64();
    stats.stored_states = reg.len() as u64;
    stats.registry_bytes = reg.bytes() as u64;
    stats.peak_rss_bytes = crate::limits::peak_resident_bytes();
    let cost = plan.iter().map(|&o| task.operators[o as usize].cost).sum();
    SearchResult {
        outcome,
        plan,
        cost,
        stats,
    }
}

/// Searches `task` with `algorithm` under `limits`.
pub fn search(task: &Task, algorithm: Algorithm, limits: Limits) -> SearchResult {
    match algorithm {
        Algorithm::AstarHmax => astar(task, limits),
        Algorithm::GbfsFf => gbfs(task, limits),
        Algorithm::Bfs => breadth_first(task, limits),
    }
}

/// A* with h_max; reopens states reached again more cheaply.
pub fn astar(task: &Task, limits: Limits) -> SearchResult {
    let Scaffold {
        clock,
        mut stats,
        mut reg,
        mut nodes,
        root,
    } = Scaffold::start(task, limits);
    let mut rx = RelaxedExploration::new(task);
    let mut open: BinaryHeap<Reverse<(u64, u64, StateId)>> = BinaryHeap::new();
    let mut h_cache: Vec<u64> = Vec::new();
    let h0 = rx.explore(&task.init, Aggregation::Max);
    h_cache.push(h0);
    stats.evaluated += 1;
    if h0 != DEAD_END && task.goal_reachable {
        open.push(Reverse((h0, h0, root)));
    }
    let mut applicable = Vec::new();
    let mut succ = task.init.clone();
    while let Some(Reverse((f, _h, s))) = open.pop() {
        let g = nodes.g[s as usize];
        if nodes.closed[s as usize] || f != g + h_cache[s as usize] {
            continue; // stale entry
        }
        let state = reg.state(s);
        if task.is_goal(&state) {
            return finish(Outcome::Solved, nodes.plan_to(s), task, stats, &reg, &clock);
        }
        if let Some(out) = clock.exceeded(stats.expanded) {
            return finish(out, Vec::new(), task, stats, &reg, &clock);
        }
        nodes.closed[s as usize] = true;
        stats.expanded += 1;
        task.applicable(&state, &mut applicable);
        for &o in &applicable {
            let op = &task.operators[o as usize];
            task.apply_into(op, &state, &mut succ);
            stats.generated += 1;
            let g2 = g + op.cost;
            let (t, new) = reg.insert(&succ);
            if new {
                nodes.add(s, o, g2);
                let h = rx.explore(&succ, Aggregation::Max);
                stats.evaluated += 1;
                h_cache.push(h);
                if h != DEAD_END {
                    open.push(Reverse((g2 + h, h, t)));
                }
            } else if g2 < nodes.g[t as usize] && h_cache[t as usize] != DEAD_END {
                nodes.g[t as usize] = g2;
                nodes.parent[t as usize] = s;
                nodes.op[t as usize] = o;
                nodes.closed[t as usize] = false;
                let h = h_cache[t as usize];
                open.push(Reverse((g2 + h, h, t)));
            }
        }
    }
    finish(Outcome::Unsolvable, Vec::new(), task, stats, &reg, &clock)
}

/// Eager greedy best-first search with h_FF and two open lists (all
/// successors; successors through preferred operators), alternating, with
/// the preferred list boosted by 1000 expansions whenever h improves — the
/// scheme of Fast Downward's `lazy_greedy([ff], preferred=[ff])` family.
pub fn gbfs(task: &Task, limits: Limits) -> SearchResult {
    let Scaffold {
        clock,
        mut stats,
        mut reg,
        mut nodes,
        root,
    } = Scaffold::start(task, limits);
    let mut rx = RelaxedExploration::new(task);
    // (h, insertion counter, state): FIFO among equal h.
    let mut open: [BinaryHeap<Reverse<(u64, u64, StateId)>>; 2] =
        [BinaryHeap::new(), BinaryHeap::new()];
    let mut counter = 0u64;
    let mut preferred = Vec::new();
    let h0 = rx.h_ff(&task.init, &mut preferred);
    stats.evaluated += 1;
    if h0 == DEAD_END || !task.goal_reachable {
        return finish(Outcome::Unsolvable, Vec::new(), task, stats, &reg, &clock);
    }
    let mut pref_of: Vec<Vec<OpId>> = vec![std::mem::take(&mut preferred)];
    open[0].push(Reverse((h0, 0, root)));
    let mut best_h = h0;
    let mut boost = 0u32;
    let mut turn = 0usize;
    let mut applicable = Vec::new();
    let mut succ = task.init.clone();
    loop {
        let which = if boost > 0 && !open[1].is_empty() {
            boost -= 1;
            1
        } else {
            turn ^= 1;
            if open[turn].is_empty() {
                turn ^ 1
            } else {
                turn
            }
        };
        let Some(Reverse((_, _, s))) = open[which].pop() else {
            return finish(Outcome::Unsolvable, Vec::new(), task, stats, &reg, &clock);
        };
        if nodes.closed[s as usize] {
            continue;
        }
        nodes.closed[s as usize] = true;
        let state = reg.state(s);
        if task.is_goal(&state) {
            return finish(Outcome::Solved, nodes.plan_to(s), task, stats, &reg, &clock);
        }
        if let Some(out) = clock.exceeded(stats.expanded) {
            return finish(out, Vec::new(), task, stats, &reg, &clock);
        }
        stats.expanded += 1;
        let pref = std::mem::take(&mut pref_of[s as usize]);
        task.applicable(&state, &mut applicable);
        for &o in &applicable {
            let op = &task.operators[o as usize];
            task.apply_into(op, &state, &mut succ);
            stats.generated += 1;
            let (t, new) = reg.insert(&succ);
            if !new {
                continue;
            }
            nodes.add(s, o, nodes.g[s as usize] + op.cost);
            preferred.clear();
            let h = rx.h_ff(&succ, &mut preferred);
            stats.evaluated += 1;
            pref_of.push(std::mem::take(&mut preferred));
            if h == DEAD_END {
                nodes.closed[t as usize] = true;
                continue;
            }
            if task.is_goal(&succ) {
                return finish(Outcome::Solved, nodes.plan_to(t), task, stats, &reg, &clock);
            }
            counter += 1;
            open[0].push(Reverse((h, counter, t)));
            if pref.contains(&o) {
                open[1].push(Reverse((h, counter, t)));
            }
            if h < best_h {
                best_h = h;
                boost += 1000;
            }
        }
    }
}

/// Breadth-first search: a shortest plan by number of steps.
pub fn breadth_first(task: &Task, limits: Limits) -> SearchResult {
    let Scaffold {
        clock,
        mut stats,
        mut reg,
        mut nodes,
        root,
    } = Scaffold::start(task, limits);
    if task.is_goal(&task.init) {
        return finish(Outcome::Solved, Vec::new(), task, stats, &reg, &clock);
    }
    let mut queue = VecDeque::from([root]);
    let mut applicable = Vec::new();
    let mut succ = task.init.clone();
    while let Some(s) = queue.pop_front() {
        if let Some(out) = clock.exceeded(stats.expanded) {
            return finish(out, Vec::new(), task, stats, &reg, &clock);
        }
        stats.expanded += 1;
        let state = reg.state(s);
        task.applicable(&state, &mut applicable);
        for &o in &applicable {
            let op = &task.operators[o as usize];
            task.apply_into(op, &state, &mut succ);
            stats.generated += 1;
            let (t, new) = reg.insert(&succ);
            if new {
                nodes.add(s, o, nodes.g[s as usize] + 1);
                if task.is_goal(&succ) {
                    return finish(Outcome::Solved, nodes.plan_to(t), task, stats, &reg, &clock);
                }
                queue.push_back(t);
            }
        }
    }
    finish(Outcome::Unsolvable, Vec::new(), task, stats, &reg, &clock)
}

/// A plan found by search, already checked by the lifted validator.
pub struct Solution {
    pub result: SearchResult,
    /// The plan in IPC format with its `; cost = N` footer (None if unsolved).
    pub ipc_text: Option<String>,
    pub facts: usize,
    pub operators: usize,
}

/// Grounds, searches, and validates the plan found with the independent
/// lifted validator. A plan the validator rejects is a bug here, reported
/// as an error rather than written out.
pub fn solve(
    domain: &crate::pddl::Domain,
    problem: &crate::pddl::Problem,
    algorithm: Algorithm,
    limits: Limits,
) -> crate::Result<Solution> {
    let task = Task::ground(domain, problem)?;
    let result = search(&task, algorithm, limits);
    let ipc_text = if result.outcome == Outcome::Solved {
        let names = result.plan_names(&task);
        let text = crate::plan::format_ipc_plan(
            names.iter().map(String::as_str),
            result.cost,
            task.unit_cost,
        );
        let parsed = crate::plan::parse_ipc_plan(text.as_bytes(), "<planner output>")?;
        let verdict = crate::validate::validate(domain, problem, &parsed.steps);
        if !verdict.valid || verdict.cost != Some(result.cost) {
            return Err(crate::Error::Invalid(format!(
                "internal error: the planner's plan for `{}` failed validation: {:?}",
                problem.name, verdict.failure
            )));
        }
        Some(text)
    } else {
        None
    };
    Ok(Solution {
        facts: task.num_facts(),
        operators: task.operators.len(),
        result,
        ipc_text,
    })
}
