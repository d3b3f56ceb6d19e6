//! Tokens of a deployment: a vocabulary read off the domain's facts and
//! actions (predicate, action and object names, parentheses) plus markers,
//! prompts that spell a state and a goal as PDDL facts, and each action's
//! completion in IPC syntax.
//!
//! Prompt of task x in state s:
//!   `<state> (f1 …) (f2 …) … <goal> (g1 …) … <act>`
//! Completion: one plan step `( name arg … )`, or `<end>` (the plan is
//! finished). A plan is the concatenation of its steps' completions, i.e.
//! IPC plan text.
//!
//! Objects become tokens in one of two ways ([`Objects`]):
//! * `names`: one token per object name. A model shown only 3-block tasks
//!   has never trained the token `b5`, so on a 5-block task it meets an
//!   input it cannot read and must write a word it never learned to write.
//! * `pool`: each task's own objects are renamed, in its prompt and its
//!   plan alike, by a fixed injection into K pool tokens per type drawn
//!   from the task's name ([`TaskTokens`]): `o1 … oK` for untyped objects,
//!   `car1 … carK` and `location1 … locationK` for Ferry's; the type
//!   prefix is the part of a name that carries across sizes, the digits
//!   the part that does not. Small tasks then use every pool
//!   token, so a larger task's prompt holds only trained tokens; the plan
//!   text a user sees is mapped back to the real names. Domain constants
//!   (the same objects in every task) keep their names.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::hash::Hasher;

use rand::Rng as _;

use crate::mdp::{Deployment, StateIndex};
use crate::{Error, Result};

pub const PAD: &str = "<pad>";
pub const STATE: &str = "<state>";
pub const GOAL: &str = "<goal>";
pub const ACT: &str = "<act>";
pub const END: &str = "<end>";

/// The stream of the pool injections (see [`crate::rng::stream`]).
const POOL_STREAM: u64 = 0x706f_6f6c;

/// How a vocabulary turns a task's objects into tokens (module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objects {
    /// One token per object name.
    #[default]
    Names,
    /// Each task's objects renamed into `size` shared pool tokens.
    Pool { size: usize },
}

/// A word of a fact or action: a token, or (pool vocabularies) the k-th
/// object, whose token depends on the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Sym {
    Word(u32),
    Object(u32),
}

#[derive(Clone, Debug)]
pub struct Vocabulary {
    pub words: Vec<String>,
    index: HashMap<String, u32>,
    objects: Objects,
    /// Each shared fact, `( pred args )`, and each action's completion
    /// (END last: `<end>`), as words.
    fact_syms: Vec<Vec<Sym>>,
    action_syms: Vec<Vec<Sym>>,
    /// The action of each completion.
    action_lookup: HashMap<Vec<Sym>, usize>,
    /// `names` vocabularies: every action's token ids (the same in every
    /// task); empty for `pool`.
    action_tokens: Vec<Vec<u32>>,
    /// `pool` vocabularies: the objects (`Sym::Object(k)` is `objects[k]`)
    /// and each type's pool of token ids (by type id; empty for a type
    /// that owns no object). The pool tokens are the last words, from
    /// `first_pool` on (the vocabulary's length without a pool).
    object_names: Vec<String>,
    object_index: HashMap<String, u32>,
    pool_tokens: Vec<Vec<u32>>,
    first_pool: usize,
}

/// `(on b1 b2)` → `(`, `on`, `b1`, `b2`, `)`.
fn words(name: &str) -> Vec<String> {
    name.replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The largest object pool a spec may ask for (a pool token per object of
/// the largest task is enough; far more only adds untrained rows).
pub const MAX_POOL: usize = 4096;

impl Vocabulary {
    /// The vocabulary of `env`'s facts and actions. A pool must hold the
    /// objects of every task of `env`.
    pub fn new(env: &Deployment, objects: Objects) -> Result<Self> {
        let constants: BTreeSet<&str> = env.constants.iter().map(String::as_str).collect();
        let pooled = matches!(objects, Objects::Pool { .. });
        let is_object =
            |i: usize, w: &str| pooled && i >= 2 && w != "(" && w != ")" && !constants.contains(w);
        let fact_words: Vec<Vec<String>> = env.fact_names.iter().map(|n| words(n)).collect();
        let action_words: Vec<Vec<String>> = env.action_names[..env.end()]
            .iter()
            .map(|n| words(n))
            .collect();
        let (mut set, mut object_set) = (BTreeSet::new(), BTreeSet::new());
        for ws in fact_words.iter().chain(&action_words) {
            for (i, w) in ws.iter().enumerate() {
                if is_object(i, w) {
                    object_set.insert(w.clone());
                } else {
                    set.insert(w.clone());
                }
            }
        }
        let mut list: Vec<String> = [PAD, STATE, GOAL, ACT, END].map(String::from).to_vec();
        list.extend(set);
        let object_names: Vec<String> = object_set.into_iter().collect();
        let object_index: HashMap<String, u32> = object_names
            .iter()
            .enumerate()
            .map(|(k, w)| (w.clone(), k as u32))
            .collect();
        let mut pool_tokens = vec![Vec::new(); env.type_names.len()];
        let first_pool = list.len();
        if let Objects::Pool { size } = objects {
            if !(1..=MAX_POOL).contains(&size) {
                return Err(Error::Invalid(format!(
                    "policy.object_pool = {size} must be in 1..={MAX_POOL}"
                )));
            }
            let mut used = BTreeSet::new();
            for t in &env.tasks {
                for (ty, own) in own_objects(t, &constants, &object_index)
                    .into_iter()
                    .enumerate()
                {
                    if own.len() > size {
                        return Err(Error::Invalid(format!(
                            "policy.object_pool = {size} is smaller than the {} objects of type {} of task {}: every object of a task needs its own pool token",
                            own.len(),
                            env.type_names.get(ty).map_or("?", String::as_str),
                            t.name
                        )));
                    }
                    if !own.is_empty() {
                        used.insert(ty);
                    }
                }
            }
            for ty in used {
                let stem = match env.type_names[ty].as_str() {
                    "object" => "o".to_string(),
                    other => other.to_string(),
                };
                for k in 1..=size {
                    let w = format!("{stem}{k}");
                    if list.contains(&w) {
                        return Err(Error::Invalid(format!(
                            "the pool token {w} is already a word of the domain; use policy.objects = \"names\""
                        )));
                    }
                    pool_tokens[ty].push(list.len() as u32);
                    list.push(w);
                }
            }
        }
        let index: HashMap<String, u32> = list
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let syms = |ws: &Vec<String>| -> Vec<Sym> {
            ws.iter()
                .enumerate()
                .map(|(i, w)| {
                    if is_object(i, w) {
                        Sym::Object(object_index[w])
                    } else {
                        Sym::Word(index[w])
                    }
                })
                .collect()
        };
        let fact_syms = fact_words.iter().map(syms).collect();
        let mut action_syms: Vec<Vec<Sym>> = action_words.iter().map(syms).collect();
        action_syms.push(vec![Sym::Word(index[END])]);
        let mut action_lookup = HashMap::new();
        for (a, s) in action_syms.iter().enumerate() {
            action_lookup.entry(s.clone()).or_insert(a);
        }
        let action_tokens = if pooled {
            Vec::new()
        } else {
            action_syms.iter().map(|s| words_only(s)).collect()
        };
        Ok(Vocabulary {
            words: list,
            index,
            objects,
            fact_syms,
            action_syms,
            action_lookup,
            action_tokens,
            object_names,
            object_index,
            pool_tokens,
            first_pool,
        })
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The tokens of task `x` of `env` (its object naming).
    pub fn task<'a>(&'a self, env: &'a Deployment, x: usize) -> TaskTokens<'a> {
        let Objects::Pool { size } = self.objects else {
            return TaskTokens {
                vocab: self,
                env,
                x,
                map: Vec::new(),
                inverse: HashMap::new(),
            };
        };
        let constants: BTreeSet<&str> = env.constants.iter().map(String::as_str).collect();
        let name = &env.tasks[x].name;
        let mut map = vec![None; self.object_names.len()];
        let mut inverse = HashMap::new();
        let own = own_objects(&env.tasks[x], &constants, &self.object_index);
        for (ty, objects) in own.iter().enumerate() {
            let Some(pool) = self.pool_tokens.get(ty).filter(|p| !p.is_empty()) else {
                continue; // a type this vocabulary has no pool for: never spelled
            };
            // The first type keeps the plain name as its stream, so an
            // untyped domain's naming depends on the task name alone.
            let key = if ty == 0 {
                name.clone()
            } else {
                format!("{name}/{}", env.type_names[ty])
            };
            for (&k, slot) in objects.iter().zip(pool_slots(&key, objects.len(), size)) {
                map[k as usize] = Some(pool[slot]);
                inverse.insert(pool[slot], k);
            }
        }
        TaskTokens {
            vocab: self,
            env,
            x,
            map,
            inverse,
        }
    }

    /// Longest prompt over every state of `env`, plus the longest completion.
    pub fn max_sequence(&self, env: &Deployment) -> usize {
        let fact_len = |f: &u32| self.fact_syms[*f as usize].len();
        let longest_prompt = env
            .tasks
            .iter()
            .map(|t| {
                let goal: usize = t.goal_features.iter().map(fact_len).sum();
                let state = t
                    .state_features
                    .iter()
                    .map(|s| s.iter().map(fact_len).sum::<usize>())
                    .max()
                    .unwrap_or(0);
                3 + goal + state
            })
            .max()
            .unwrap_or(3);
        longest_prompt + self.longest_step()
    }

    /// The plan writer's context: the longest task prompt (initial state
    /// and goal), then `horizon` of the longest steps and `<end>`.
    pub fn max_plan_sequence(&self, env: &Deployment) -> usize {
        let longest_prompt = (0..env.tasks.len())
            .map(|x| self.task(env, x).prompt(0).len())
            .max()
            .unwrap_or(3);
        longest_prompt + env.horizon * self.longest_step() + 1
    }

    fn longest_step(&self) -> usize {
        self.action_syms.iter().map(Vec::len).max().unwrap_or(1)
    }
}

/// The token ids of words that hold no object.
fn words_only(syms: &[Sym]) -> Vec<u32> {
    syms.iter()
        .map(|s| match *s {
            Sym::Word(t) => t,
            Sym::Object(_) => unreachable!("a names vocabulary has no object symbols"),
        })
        .collect()
}

/// The task's own objects (not constants) that some fact or action names,
/// by type id, each in the problem's order, as object indices.
fn own_objects(
    t: &crate::mdp::TaskSpace,
    constants: &BTreeSet<&str>,
    object_index: &HashMap<String, u32>,
) -> Vec<Vec<u32>> {
    let mut by_type: Vec<Vec<u32>> = Vec::new();
    for o in &t.problem.objects {
        if constants.contains(o.name.as_str()) {
            continue;
        }
        if let Some(&k) = object_index.get(&o.name) {
            let ty = o.ty as usize;
            if by_type.len() <= ty {
                by_type.resize(ty + 1, Vec::new());
            }
            by_type[ty].push(k);
        }
    }
    by_type
}

/// `n` distinct slots of a pool of `size` for the task named `name`: a
/// partial Fisher–Yates shuffle driven by our generator, seeded from the
/// name, so a task's naming is the same in every generation, run and
/// machine. Needs n ≤ size (checked when the vocabulary is built).
fn pool_slots(name: &str, n: usize, size: usize) -> Vec<usize> {
    let mut h = crate::hashing::FxHasher::default();
    h.write(name.as_bytes());
    let mut rng = crate::rng::stream(h.finish(), POOL_STREAM);
    let mut slots: Vec<usize> = (0..size).collect();
    for i in 0..n.min(size) {
        // Modulo of a 64-bit draw: the bias is below size/2⁶⁴, and unlike
        // a library's range sampler it can never change between versions.
        let j = i + (rng.next_u64() % (size - i) as u64) as usize;
        slots.swap(i, j);
    }
    slots.truncate(n.min(size));
    slots
}

/// The tokens of one task: its prompts, its actions' completions and the
/// text of its tokens, under its object naming.
pub struct TaskTokens<'a> {
    vocab: &'a Vocabulary,
    env: &'a Deployment,
    x: usize,
    /// `pool`: each object's token in this task (None: not its object).
    map: Vec<Option<u32>>,
    /// `pool`: the object of each pool token this task uses.
    inverse: HashMap<u32, u32>,
}

impl TaskTokens<'_> {
    fn token(&self, s: Sym) -> u32 {
        match s {
            Sym::Word(t) => t,
            // Only facts of this task's states and its applicable actions
            // are spelled, and those name its own objects; any other
            // object is spelled as padding, which no completion contains.
            Sym::Object(k) => self.map[k as usize].unwrap_or(0),
        }
    }

    fn spell(&self, syms: &[Sym], out: &mut Vec<u32>) {
        out.extend(syms.iter().map(|&s| self.token(s)));
    }

    /// The prompt in state `s`.
    pub fn prompt(&self, s: StateIndex) -> Vec<u32> {
        let v = self.vocab;
        let t = &self.env.tasks[self.x];
        let mut out = vec![v.index[STATE]];
        for &f in &t.state_features[s as usize] {
            self.spell(&v.fact_syms[f as usize], &mut out);
        }
        out.push(v.index[GOAL]);
        for &f in &t.goal_features {
            self.spell(&v.fact_syms[f as usize], &mut out);
        }
        out.push(v.index[ACT]);
        out
    }

    /// The completion of action `a` (END: `<end>`).
    pub fn action(&self, a: usize) -> Cow<'_, [u32]> {
        match self.vocab.objects {
            Objects::Names => Cow::Borrowed(&self.vocab.action_tokens[a]),
            Objects::Pool { .. } => {
                let mut out = Vec::new();
                self.spell(&self.vocab.action_syms[a], &mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Every action's completion, in action order.
    pub fn actions(&self) -> Cow<'_, [Vec<u32>]> {
        match self.vocab.objects {
            Objects::Names => Cow::Borrowed(&self.vocab.action_tokens),
            Objects::Pool { .. } => Cow::Owned(
                (0..self.vocab.action_syms.len())
                    .map(|a| self.action(a).into_owned())
                    .collect(),
            ),
        }
    }

    /// The action whose completion is exactly `tokens` (`<end>`: END); a
    /// pool token this task does not use names no action.
    pub fn action_of(&self, tokens: &[u32]) -> Option<usize> {
        let syms: Option<Vec<Sym>> = tokens
            .iter()
            .map(|&t| match self.inverse.get(&t) {
                Some(&k) => Some(Sym::Object(k)),
                None if t as usize >= self.vocab.first_pool => None,
                None => Some(Sym::Word(t)),
            })
            .collect();
        self.vocab.action_lookup.get(&syms?).copied()
    }

    /// The word a token stands for in this task: a pool token is the
    /// object it renames (or itself, if this task uses no such object).
    pub fn word(&self, t: u32) -> &str {
        if let Some(&k) = self.inverse.get(&t) {
            return &self.vocab.object_names[k as usize];
        }
        self.vocab
            .words
            .get(t as usize)
            .map_or("<?>", String::as_str)
    }

    /// Text of token ids, words joined by spaces, parentheses tight:
    /// `(pick-up b1)`, in the task's real object names.
    pub fn text(&self, ids: &[u32]) -> String {
        let mut s = String::new();
        for &i in ids {
            let w = self.word(i);
            if !(s.is_empty() || s.ends_with('(') || w == ")") {
                s.push(' ');
            }
            s.push_str(w);
        }
        s
    }
}
