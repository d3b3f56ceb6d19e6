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

use std::collections::BTreeSet;
use std::collections::HashMap;

use crate::mdp::{Deployment, StateIndex};

pub const PAD: &str = "<pad>";
pub const STATE: &str = "<state>";
pub const GOAL: &str = "<goal>";
pub const ACT: &str = "<act>";
pub const END: &str = "<end>";

#[derive(Clone, Debug)]
pub struct Vocabulary {
    pub words: Vec<String>,
    index: HashMap<String, u32>,
    /// Token ids of each shared fact, `( pred args )`.
    fact_tokens: Vec<Vec<u32>>,
    /// Token ids of each action's completion (END: `<end>`).
    pub action_tokens: Vec<Vec<u32>>,
}

/// `(on b1 b2)` → `(`, `on`, `b1`, `b2`, `)`.
fn words(name: &str) -> Vec<String> {
    name.replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

impl Vocabulary {
    pub fn new(env: &Deployment) -> Self {
        let mut set: BTreeSet<String> = BTreeSet::new();
        for n in env.fact_names.iter().chain(&env.action_names[..env.end()]) {
            set.extend(words(n));
        }
        let mut list: Vec<String> = [PAD, STATE, GOAL, ACT, END].map(String::from).to_vec();
        list.extend(set);
        let index: HashMap<String, u32> = list
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        let ids = |name: &str| -> Vec<u32> { words(name).iter().map(|w| index[w]).collect() };
        let fact_tokens = env.fact_names.iter().map(|f| ids(f)).collect();
        let mut action_tokens: Vec<Vec<u32>> = env.action_names[..env.end()]
            .iter()
            .map(|a| ids(a))
            .collect();
        action_tokens.push(vec![index[END]]);
        Vocabulary {
            words: list,
            index,
            fact_tokens,
            action_tokens,
        }
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

    /// The action whose completion is exactly `tokens` (`<end>`: END).
    pub fn action_of(&self, tokens: &[u32]) -> Option<usize> {
        self.action_tokens.iter().position(|a| a == tokens)
    }

    /// The prompt of task `x` in state `s`.
    pub fn prompt(&self, env: &Deployment, x: usize, s: StateIndex) -> Vec<u32> {
        let t = &env.tasks[x];
        let mut out = vec![self.index[STATE]];
        for &f in &t.state_features[s as usize] {
            out.extend(&self.fact_tokens[f as usize]);
        }
        out.push(self.index[GOAL]);
        for &f in &t.goal_features {
            out.extend(&self.fact_tokens[f as usize]);
        }
        out.push(self.index[ACT]);
        out
    }

    /// Longest prompt over every state of `env`, plus the longest completion.
    pub fn max_sequence(&self, env: &Deployment) -> usize {
        let fact_len = |f: &u32| self.fact_tokens[*f as usize].len();
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
        longest_prompt + self.action_tokens.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// The plan writer's context: the longest task prompt (initial state
    /// and goal), then `horizon` of the longest steps and `<end>`.
    pub fn max_plan_sequence(&self, env: &Deployment) -> usize {
        let longest_prompt = (0..env.tasks.len())
            .map(|x| self.prompt(env, x, 0).len())
            .max()
            .unwrap_or(3);
        let longest_step = self.action_tokens.iter().map(Vec::len).max().unwrap_or(1);
        longest_prompt + env.horizon * longest_step + 1
    }

    /// Text of token ids, words joined by spaces, parentheses tight:
    /// `(pick-up b1)`.
    pub fn text(&self, ids: &[u32]) -> String {
        let mut s = String::new();
        for &i in ids {
            let w = &self.words[i as usize];
            if !(s.is_empty() || s.ends_with('(') || w == ")") {
                s.push(' ');
            }
            s.push_str(w);
        }
        s
    }
}
