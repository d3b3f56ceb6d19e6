//! Grounding by relaxed reachability (semi-naive evaluation).
//!
//! Atoms are processed one at a time from a queue that starts with the
//! initial state. When atom `a` is processed, every action schema with a
//! positive precondition that matches `a` is joined with the atoms
//! processed so far; each complete match is a reachable ground action whose
//! add effects join the queue. A ground action with precondition set S is
//! found when the last atom of S is processed, so nothing reachable is
//! missed and nothing unreachable is ever materialised. Negative
//! preconditions on changeable facts are ignored during the relaxation
//! (an over-approximation, as in every relaxed grounder); negative
//! preconditions on static facts and (in)equalities prune at once.

use super::{FactId, Names, Operator, State, Task};
use crate::Error;
use crate::hashing::{FxHashMap, FxHashSet};
use crate::pddl::{
    ActionSchema, AtomSchema, CostTerm, Domain, GroundAtom, ObjectId, Problem, Term,
};

/// One schema prepared for joining.
struct SchemaPlan {
    /// For each positive precondition used as the trigger, the order in
    /// which to join the others.
    orders: Vec<Vec<usize>>,
    /// Parameters no positive precondition mentions: enumerated by type.
    free_params: Vec<usize>,
}

/// Processed atoms with indexes for joins.
struct AtomStore {
    /// `[predicate, args…]` of every processed atom.
    atoms: Vec<Box<[u32]>>,
    by_pred: Vec<Vec<u32>>,
    /// predicate → argument position → object → atom ids.
    by_pred_arg: Vec<Vec<FxHashMap<ObjectId, Vec<u32>>>>,
}

impl AtomStore {
    fn push(&mut self, key: Box<[u32]>) {
        let id = self.atoms.len() as u32;
        let pred = key[0] as usize;
        self.by_pred[pred].push(id);
        for (pos, &o) in key[1..].iter().enumerate() {
            self.by_pred_arg[pred][pos].entry(o).or_default().push(id);
        }
        self.atoms.push(key);
    }
}

struct Grounder<'a> {
    domain: &'a Domain,
    problem: &'a Problem,
    plans: Vec<SchemaPlan>,
    /// For each type, which objects belong to it (by id).
    type_members: Vec<Vec<bool>>,
    objects_of_type: Vec<Vec<ObjectId>>,
    static_preds: Vec<bool>,
    static_init: FxHashSet<Box<[u32]>>,
    store: AtomStore,
    seen_atoms: FxHashSet<Box<[u32]>>,
    queue: Vec<Box<[u32]>>,
    seen_actions: FxHashSet<Box<[u32]>>,
    /// `[schema, args…]` of reachable ground actions, in discovery order.
    actions: Vec<Box<[u32]>>,
}

fn key_of(atom: &GroundAtom) -> Box<[u32]> {
    let mut k = Vec::with_capacity(atom.args.len() + 1);
    k.push(atom.predicate);
    k.extend(&atom.args);
    k.into_boxed_slice()
}

fn resolve(t: Term, binding: &[Option<ObjectId>]) -> Option<ObjectId> {
    match t {
        Term::Param(i) => binding[i as usize],
        Term::Object(o) => Some(o),
    }
}

fn plan_schema(a: &ActionSchema) -> SchemaPlan {
    let vars = |atom: &AtomSchema| -> Vec<u32> {
        atom.args
            .iter()
            .filter_map(|t| match t {
                Term::Param(i) => Some(*i),
                Term::Object(_) => None,
            })
            .collect()
    };
    let orders = (0..a.pre_pos.len())
        .map(|trigger| {
            let mut bound: Vec<bool> = vec![false; a.param_types.len()];
            for v in vars(&a.pre_pos[trigger]) {
                bound[v as usize] = true;
            }
            let mut rest: Vec<usize> = (0..a.pre_pos.len()).filter(|&j| j != trigger).collect();
            let mut order = Vec::new();
            // Greedy: join next the precondition with the most bound
            // variables (fewest unbound as tie-break), so lookups use indexes.
            while !rest.is_empty() {
                let best = (0..rest.len())
                    .max_by_key(|&k| {
                        let vs = vars(&a.pre_pos[rest[k]]);
                        let b = vs.iter().filter(|&&v| bound[v as usize]).count();
                        (b.min(1), b, usize::MAX - (vs.len() - b))
                    })
                    .expect("rest is not empty");
                let j = rest.swap_remove(best);
                for v in vars(&a.pre_pos[j]) {
                    bound[v as usize] = true;
                }
                order.push(j);
            }
            order
        })
        .collect();
    let mut covered = vec![false; a.param_types.len()];
    for p in &a.pre_pos {
        for v in vars(p) {
            covered[v as usize] = true;
        }
    }
    SchemaPlan {
        orders,
        free_params: (0..a.param_types.len()).filter(|&i| !covered[i]).collect(),
    }
}

impl Grounder<'_> {
    /// Binds the atom schema's variables to the atom's arguments; returns
    /// the parameters newly bound, or None on a mismatch.
    fn unify(
        &self,
        schema: &ActionSchema,
        pattern: &AtomSchema,
        atom: &[u32],
        binding: &mut [Option<ObjectId>],
        newly: &mut Vec<usize>,
    ) -> bool {
        let start = newly.len();
        for (t, &o) in pattern.args.iter().zip(&atom[1..]) {
            let ok = match *t {
                Term::Object(c) => c == o,
                Term::Param(i) => match binding[i as usize] {
                    Some(b) => b == o,
                    None => {
                        let ty = schema.param_types[i as usize] as usize;
                        if self.type_members[ty][o as usize] {
                            binding[i as usize] = Some(o);
                            newly.push(i as usize);
                            true
                        } else {
                            false
                        }
                    }
                },
            };
            if !ok {
                for &i in &newly[start..] {
                    binding[i] = None;
                }
                newly.truncate(start);
                return false;
            }
        }
        true
    }

    fn join(&mut self, s: usize, trigger: usize, depth: usize, binding: &mut [Option<ObjectId>]) {
        let schema = &self.domain.actions[s];
        let order = &self.plans[s].orders[trigger];
        if depth == order.len() {
            self.enumerate_free(s, 0, binding);
            return;
        }
        let pattern = &schema.pre_pos[order[depth]];
        let pred = pattern.predicate as usize;
        // Use the index of the first bound argument, if any.
        let bound = pattern
            .args
            .iter()
            .enumerate()
            .find_map(|(pos, t)| resolve(*t, binding).map(|o| (pos, o)));
        let candidates: Vec<u32> = match bound {
            Some((pos, o)) => match self.store.by_pred_arg[pred][pos].get(&o) {
                Some(ids) => ids.clone(),
                None => return,
            },
            None => self.store.by_pred[pred].clone(),
        };
        let mut newly = Vec::new();
        for id in candidates {
            let atom = self.store.atoms[id as usize].clone();
            if self.unify(schema, pattern, &atom, binding, &mut newly) {
                self.join(s, trigger, depth + 1, binding);
                for &i in &newly {
                    binding[i] = None;
                }
                newly.clear();
            }
        }
    }

    fn enumerate_free(&mut self, s: usize, k: usize, binding: &mut [Option<ObjectId>]) {
        let free = &self.plans[s].free_params;
        if k == free.len() {
            self.finish(s, binding);
            return;
        }
        let p = free[k];
        let ty = self.domain.actions[s].param_types[p] as usize;
        for idx in 0..self.objects_of_type[ty].len() {
            binding[p] = Some(self.objects_of_type[ty][idx]);
            self.enumerate_free(s, k + 1, binding);
        }
        binding[p] = None;
    }

    /// All parameters bound: check what the relaxation can, record the
    /// action, queue its add effects.
    fn finish(&mut self, s: usize, binding: &[Option<ObjectId>]) {
        let schema = &self.domain.actions[s];
        let args: Vec<ObjectId> = binding.iter().map(|b| b.expect("all bound")).collect();
        for e in &schema.pre_eq {
            let l = resolve(e.left, binding).expect("bound");
            let r = resolve(e.right, binding).expect("bound");
            if (l == r) != e.equal {
                return;
            }
        }
        let mut buf: Vec<u32> = Vec::with_capacity(8);
        for n in &schema.pre_neg {
            if self.static_pred(n.predicate) {
                ground_key(&mut buf, n, binding);
                if self.static_init.contains(buf.as_slice()) {
                    return;
                }
            }
        }
        let mut key = Vec::with_capacity(args.len() + 1);
        key.push(s as u32);
        key.extend(&args);
        let key = key.into_boxed_slice();
        if !self.seen_actions.insert(key.clone()) {
            return;
        }
        self.actions.push(key);
        for a in &schema.add {
            ground_key(&mut buf, a, binding);
            if !self.seen_atoms.contains(buf.as_slice()) {
                let k: Box<[u32]> = buf.clone().into_boxed_slice();
                self.seen_atoms.insert(k.clone());
                self.queue.push(k);
            }
        }
    }
}

fn ground_key(buf: &mut Vec<u32>, atom: &AtomSchema, binding: &[Option<ObjectId>]) {
    buf.clear();
    buf.push(atom.predicate);
    buf.extend(
        atom.args
            .iter()
            .map(|t| resolve(*t, binding).expect("bound")),
    );
}

impl Task {
    /// Grounds `problem` by relaxed reachability.
    pub fn ground(domain: &Domain, problem: &Problem) -> Result<Task, Error> {
        let static_preds = domain.static_predicates();
        let n_obj = problem.objects.len();
        let type_members: Vec<Vec<bool>> = (0..domain.types.names.len() as u32)
            .map(|t| {
                (0..n_obj)
                    .map(|o| domain.types.is_subtype(problem.objects[o].ty, t))
                    .collect()
            })
            .collect();
        let objects_of_type = type_members
            .iter()
            .map(|m| (0..n_obj as u32).filter(|&o| m[o as usize]).collect())
            .collect();
        let init_keys: Vec<Box<[u32]>> = problem.init.iter().map(key_of).collect();
        let static_init = init_keys
            .iter()
            .filter(|k| static_preds[k[0] as usize])
            .cloned()
            .collect();
        let mut g = Grounder {
            domain,
            problem,
            plans: domain.actions.iter().map(plan_schema).collect(),
            type_members,
            objects_of_type,
            static_init,
            store: AtomStore {
                atoms: Vec::new(),
                by_pred: vec![Vec::new(); domain.predicates.len()],
                by_pred_arg: domain
                    .predicates
                    .iter()
                    .map(|p| vec![FxHashMap::default(); p.param_types.len()])
                    .collect(),
            },
            seen_atoms: FxHashSet::default(),
            queue: Vec::new(),
            seen_actions: FxHashSet::default(),
            actions: Vec::new(),
            static_preds,
        };
        for k in init_keys {
            if g.seen_atoms.insert(k.clone()) {
                g.queue.push(k);
            }
        }
        // Schemas without positive preconditions fire once, unconditionally.
        for s in 0..domain.actions.len() {
            if domain.actions[s].pre_pos.is_empty() {
                let mut binding = vec![None; domain.actions[s].param_types.len()];
                g.enumerate_free(s, 0, &mut binding);
            }
        }
        // Triggers: for each predicate, the (schema, precondition) pairs.
        let mut triggers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); domain.predicates.len()];
        for (s, a) in domain.actions.iter().enumerate() {
            for (i, p) in a.pre_pos.iter().enumerate() {
                triggers[p.predicate as usize].push((s, i));
            }
        }
        let mut head = 0;
        while head < g.queue.len() {
            let atom = g.queue[head].clone();
            head += 1;
            g.store.push(atom.clone());
            for &(s, i) in &triggers[atom[0] as usize] {
                let schema = &domain.actions[s];
                let mut binding = vec![None; schema.param_types.len()];
                let mut newly = Vec::new();
                if g.unify(schema, &schema.pre_pos[i], &atom, &mut binding, &mut newly) {
                    g.join(s, i, 0, &mut binding);
                }
            }
        }
        g.into_task()
    }
}

impl Grounder<'_> {
    fn static_pred(&self, pred: u32) -> bool {
        self.static_preds[pred as usize]
    }

    fn into_task(self) -> Result<Task, Error> {
        let (domain, problem) = (self.domain, self.problem);
        // Fluent facts in discovery order (deterministic).
        let mut fact_of: FxHashMap<&[u32], FactId> = FxHashMap::default();
        let mut facts = Vec::new();
        for k in &self.store.atoms {
            if !self.static_pred(k[0]) {
                fact_of.insert(k, facts.len() as FactId);
                facts.push(GroundAtom {
                    predicate: k[0],
                    args: k[1..].to_vec(),
                });
            }
        }
        let mut buf = Vec::with_capacity(8);
        let mut operators = Vec::with_capacity(self.actions.len());
        for key in &self.actions {
            let schema = &domain.actions[key[0] as usize];
            let binding: Vec<Option<ObjectId>> = key[1..].iter().map(|&o| Some(o)).collect();
            let mut facts_of = |atoms: &[AtomSchema], only_fluent: bool| -> Vec<FactId> {
                let mut out: Vec<FactId> = atoms
                    .iter()
                    .filter(|a| !only_fluent || !self.static_pred(a.predicate))
                    .filter_map(|a| {
                        ground_key(&mut buf, a, &binding);
                        fact_of.get(buf.as_slice()).copied()
                    })
                    .collect();
                out.sort_unstable();
                out.dedup();
                out
            };
            let pre = facts_of(&schema.pre_pos, true);
            // Unreachable facts are never true: their negation always holds.
            let pre_neg = facts_of(&schema.pre_neg, true);
            let add = facts_of(&schema.add, false);
            let del = facts_of(&schema.del, false);
            let cost = action_cost(domain, problem, schema, &binding)?;
            operators.push(Operator {
                schema: key[0],
                args: key[1..].into(),
                pre: pre.into(),
                pre_neg: pre_neg.into(),
                add: add.into(),
                del: del.into(),
                cost,
            });
        }
        let mut init = State::empty(facts.len());
        for a in &problem.init {
            if let Some(&f) = fact_of.get(key_of(a).as_ref()) {
                init.set(f);
            }
        }
        let mut goal_reachable = problem.goal_equalities_hold;
        let (mut goal, mut goal_neg) = (Vec::new(), Vec::new());
        for lit in &problem.goal {
            let k = key_of(&lit.atom);
            if self.static_pred(lit.atom.predicate) {
                goal_reachable &= self.static_init.contains(&k) == lit.positive;
                continue;
            }
            match (fact_of.get(k.as_ref()), lit.positive) {
                (Some(&f), true) => goal.push(f),
                (Some(&f), false) => goal_neg.push(f),
                (None, true) => goal_reachable = false,
                (None, false) => {}
            }
        }
        goal.sort_unstable();
        goal.dedup();
        goal_neg.sort_unstable();
        goal_neg.dedup();
        let mut task = Task {
            facts,
            operators,
            init,
            goal,
            goal_neg,
            goal_reachable,
            unit_cost: !domain.has_action_costs,
            names: Names {
                objects: problem.objects.iter().map(|o| o.name.clone()).collect(),
                predicates: domain.predicates.iter().map(|p| p.name.clone()).collect(),
                schemas: domain.actions.iter().map(|a| a.name.clone()).collect(),
            },
            by_trigger: Vec::new(),
            always: Vec::new(),
        };
        task.build_trigger_index();
        Ok(task)
    }
}

fn action_cost(
    domain: &Domain,
    problem: &Problem,
    schema: &ActionSchema,
    binding: &[Option<ObjectId>],
) -> Result<u64, Error> {
    if !domain.has_action_costs {
        return Ok(1);
    }
    let mut total = 0;
    for term in &schema.cost {
        total += match term {
            CostTerm::Constant(c) => *c,
            CostTerm::Function { function, args } => {
                let args: Vec<ObjectId> = args
                    .iter()
                    .map(|t| resolve(*t, binding).expect("bound"))
                    .collect();
                *problem.function_values.get(&(*function, args.clone())).ok_or_else(|| {
                    let f = &domain.functions[*function as usize].name;
                    let names: Vec<&str> = args.iter().map(|&o| problem.object_name(o)).collect();
                    Error::Invalid(format!(
                        "problem `{}`: action `{}` costs ({f} {}), which the init does not define",
                        problem.name,
                        schema.name,
                        names.join(" ")
                    ))
                })?
            }
        };
    }
    Ok(total)
}
