//! Blocksworld: initial and goal states drawn uniformly from all states of
//! n labelled blocks.
//!
//! A state is a set of towers, i.e. a partition of the n blocks into k
//! non-empty ordered lists. There are L(n,k) = C(n−1,k−1)·n!/k! such states
//! (Lah numbers). Draw k with probability ∝ L(n,k), then a uniform
//! permutation of the blocks and a uniform composition of n into k parts
//! (k−1 distinct cut points): each state with k towers arises from exactly
//! k! (permutation, composition) pairs — the orders of its towers — so the
//! state is uniform given k, and overall.

use rand::RngExt;
use rand::seq::SliceRandom;

use super::Params;
use crate::Result;
use crate::rng::Rng;

pub struct BlocksworldParams {
    pub blocks: usize,
}

/// Towers, each listed bottom to top.
pub type Towers = Vec<Vec<usize>>;

impl BlocksworldParams {
    pub fn read(p: &mut Params) -> Result<Self> {
        Ok(BlocksworldParams {
            blocks: p.int("blocks", 4, 1, 500)?,
        })
    }

    pub fn describe(&self) -> String {
        format!("blocks={}", self.blocks)
    }

    pub fn generate(&self, name: &str, rng: &mut Rng) -> String {
        let init = uniform_state(self.blocks, rng);
        let goal = uniform_state(self.blocks, rng);
        render(name, self.blocks, &init, &goal)
    }
}

/// A uniformly random state of `n` blocks.
pub fn uniform_state(n: usize, rng: &mut Rng) -> Towers {
    // log L(n,k) − log n! = log C(n−1,k−1) − log k!, for k = 1..n.
    let mut log_w = Vec::with_capacity(n);
    let (mut log_binom, mut log_fact) = (0.0f64, 0.0f64);
    for k in 1..=n {
        if k > 1 {
            log_binom += ((n - k + 1) as f64).ln() - ((k - 1) as f64).ln();
        }
        log_fact += (k as f64).ln();
        log_w.push(log_binom - log_fact);
    }
    let max = log_w.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = log_w.iter().map(|w| (w - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    let mut k = n;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            k = i + 1;
            break;
        }
        u -= w;
    }
    let mut blocks: Vec<usize> = (0..n).collect();
    blocks.shuffle(rng);
    let mut cuts: Vec<usize> = rand::seq::index::sample(rng, n - 1, k - 1)
        .into_iter()
        .map(|c| c + 1)
        .collect();
    cuts.sort_unstable();
    let mut towers = Vec::with_capacity(k);
    let mut start = 0;
    for c in cuts.into_iter().chain([n]) {
        towers.push(blocks[start..c].to_vec());
        start = c;
    }
    towers
}

fn render(name: &str, n: usize, init: &Towers, goal: &Towers) -> String {
    let b = |i: usize| format!("b{}", i + 1);
    let facts = |towers: &Towers, with_clear: bool| {
        let mut out = Vec::new();
        for t in towers {
            out.push(format!("(on-table {})", b(t[0])));
            for w in t.windows(2) {
                out.push(format!("(on {} {})", b(w[1]), b(w[0])));
            }
            if with_clear {
                out.push(format!(
                    "(clear {})",
                    b(*t.last().expect("towers are non-empty"))
                ));
            }
        }
        out
    };
    let objects: Vec<String> = (0..n).map(b).collect();
    let mut s = format!(
        ";; blocks={n}; initial and goal states uniform over all {n}-block states\n(define (problem {name})\n (:domain blocksworld)\n (:objects {})\n (:init\n    (arm-empty)\n",
        objects.join(" ")
    );
    for f in facts(init, true) {
        s += &format!("    {f}\n");
    }
    s += " )\n (:goal (and\n";
    for f in facts(goal, false) {
        s += &format!("    {f}\n");
    }
    s += " )))\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// 3 blocks have 13 states (Lah: 6 + 6 + 1); 13,000 draws hit each about
    /// 1000 times. A χ² test with 12 degrees of freedom at p = 0.001 has
    /// critical value 32.9.
    #[test]
    fn states_are_uniform_for_three_blocks() {
        let mut rng = crate::rng::seeded(7);
        let mut counts: HashMap<Vec<Vec<usize>>, usize> = HashMap::new();
        let draws = 13_000;
        for _ in 0..draws {
            let mut t = uniform_state(3, &mut rng);
            t.sort();
            *counts.entry(t).or_default() += 1;
        }
        assert_eq!(counts.len(), 13);
        let expected = draws as f64 / 13.0;
        let chi2: f64 = counts
            .values()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 32.9, "chi2 = {chi2}, counts {counts:?}");
    }
}
