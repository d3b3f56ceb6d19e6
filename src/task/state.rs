//! States as fixed-width bitsets over fluent facts.

use super::FactId;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    words: Box<[u64]>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.ones()).finish()
    }
}

impl State {
    /// All facts false, for a task with `num_facts` facts.
    pub fn empty(num_facts: usize) -> Self {
        State {
            words: vec![0; num_facts.div_ceil(64)].into_boxed_slice(),
        }
    }

    pub fn from_words(words: &[u64]) -> Self {
        State {
            words: words.into(),
        }
    }

    pub fn words(&self) -> &[u64] {
        &self.words
    }

    #[inline]
    pub fn get(&self, f: FactId) -> bool {
        self.words[(f / 64) as usize] >> (f % 64) & 1 == 1
    }

    #[inline]
    pub fn set(&mut self, f: FactId) {
        self.words[(f / 64) as usize] |= 1 << (f % 64);
    }

    #[inline]
    pub fn clear(&mut self, f: FactId) {
        self.words[(f / 64) as usize] &= !(1 << (f % 64));
    }

    #[inline]
    pub fn copy_from(&mut self, other: &State) {
        self.words.copy_from_slice(&other.words);
    }

    /// The true facts in increasing order.
    pub fn ones(&self) -> impl Iterator<Item = FactId> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(w as FactId * 64 + b)
            })
        })
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}
