//! Compact duplicate detection: every state is stored once, as a run of
//! `words` u64s in one arena, and found again through an open-addressing
//! table of ids (linear probing). No per-state allocation, no pointers.

use crate::task::State;

pub type StateId = u32;
const EMPTY: u32 = u32::MAX;

pub struct StateRegistry {
    words: usize,
    arena: Vec<u64>,
    table: Vec<u32>,
    len: usize,
}

fn hash_words(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    h ^ (h >> 29)
}

impl StateRegistry {
    pub fn new(words: usize) -> Self {
        StateRegistry {
            words: words.max(1),
            arena: Vec::new(),
            table: vec![EMPTY; 1024],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the arena and the table.
    pub fn bytes(&self) -> usize {
        self.arena.capacity() * 8 + self.table.capacity() * 4
    }

    pub fn words_of(&self, id: StateId) -> &[u64] {
        let start = id as usize * self.words;
        &self.arena[start..start + self.words]
    }

    pub fn state(&self, id: StateId) -> State {
        State::from_words(self.words_of(id))
    }

    /// The id of `state`, inserting it if new; the flag says whether it was new.
    pub fn insert(&mut self, state: &State) -> (StateId, bool) {
        let w = state.words();
        let padded;
        let w = if w.len() == self.words {
            w
        } else {
            // Tasks with no facts still store one (zero) word per state.
            padded = vec![0u64; self.words];
            &padded[..]
        };
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        let mask = self.table.len() - 1;
        let mut slot = hash_words(w) as usize & mask;
        loop {
            let id = self.table[slot];
            if id == EMPTY {
                let new = self.len as StateId;
                self.arena.extend_from_slice(w);
                self.table[slot] = new;
                self.len += 1;
                return (new, true);
            }
            if self.words_of(id) == w {
                return (id, false);
            }
            slot = (slot + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let mut table = vec![EMPTY; self.table.len() * 2];
        let mask = table.len() - 1;
        for id in 0..self.len as StateId {
            let mut slot = hash_words(self.words_of(id)) as usize & mask;
            while table[slot] != EMPTY {
                slot = (slot + 1) & mask;
            }
            table[slot] = id;
        }
        self.table = table;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_each_state_once_across_growth() {
        let mut r = StateRegistry::new(2);
        for round in 0..2 {
            for i in 0..5000u32 {
                let mut s = State::empty(128);
                s.set(i % 128);
                s.set((i / 128) % 128);
                s.set(127 - (i / 4096));
                let (id, new) = r.insert(&s);
                assert_eq!(r.state(id), s);
                if round == 1 {
                    assert!(!new);
                }
            }
        }
        assert!(r.len() < 5000);
    }
}
