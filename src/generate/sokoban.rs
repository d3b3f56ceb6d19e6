//! Sokoban, generated backwards from the goal so every task is solvable.
//!
//! 1. A `size`×`size` room with a wall border and `walls` random interior
//!    walls, each kept only if the free cells stay connected.
//! 2. Each box starts on its own goal cell; the robot on a random free cell.
//! 3. `pulls` random reverse moves: the robot steps to a free neighbour, or
//!    steps back from an adjacent box and pulls it along. Every reverse move
//!    undone is a legal forward move or push, so the goal stays reachable.
//!    The final position is the initial state of the task.

use rand::RngExt;

use super::Params;
use crate::rng::Rng;
use crate::{Error, Result};

pub struct SokobanParams {
    pub size: usize,
    pub boxes: usize,
    pub walls: usize,
    pub pulls: usize,
}

const DIRS: [(&str, i64, i64); 4] = [
    ("up", -1, 0),
    ("down", 1, 0),
    ("left", 0, -1),
    ("right", 0, 1),
];

impl SokobanParams {
    pub fn read(p: &mut Params) -> Result<Self> {
        let size = p.int("size", 6, 4, 40)?;
        let boxes = p.int("boxes", 1, 1, 100)?;
        let walls = p.int("walls", size - 3, 0, size * size)?;
        let pulls = p.int("pulls", 30 * boxes, 1, 100_000)?;
        let interior = (size - 2) * (size - 2);
        if boxes + 1 > interior.saturating_sub(walls) {
            return Err(Error::Invalid(format!(
                "sokoban: {boxes} box(es) and a robot need {} free cells, but a {size}x{size} room with {walls} interior wall(s) has at most {}",
                boxes + 1,
                interior.saturating_sub(walls)
            )));
        }
        Ok(SokobanParams {
            size,
            boxes,
            walls,
            pulls,
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "size={};boxes={};walls={};pulls={}",
            self.size, self.boxes, self.walls, self.pulls
        )
    }

    pub fn generate(&self, name: &str, rng: &mut Rng) -> Result<String> {
        // A few layouts may leave every box stuck on its goal; draw again.
        for _ in 0..100 {
            if let Some(text) = self.try_generate(name, rng) {
                return Ok(text);
            }
        }
        Err(Error::Invalid(format!(
            "sokoban: could not move any box off its goal in 100 layouts with {}",
            self.describe()
        )))
    }

    fn try_generate(&self, name: &str, rng: &mut Rng) -> Option<String> {
        let n = self.size;
        let mut free = vec![vec![false; n]; n];
        for row in free.iter_mut().take(n - 1).skip(1) {
            for cell in row.iter_mut().take(n - 1).skip(1) {
                *cell = true;
            }
        }
        let mut placed = 0;
        for _ in 0..self.walls * 20 + 20 {
            if placed == self.walls {
                break;
            }
            let (r, c) = (rng.random_range(1..n - 1), rng.random_range(1..n - 1));
            if !free[r][c] {
                continue;
            }
            free[r][c] = false;
            if connected(&free) {
                placed += 1;
            } else {
                free[r][c] = true;
            }
        }
        let cells: Vec<(usize, usize)> = (0..n)
            .flat_map(|r| (0..n).map(move |c| (r, c)))
            .filter(|&(r, c)| free[r][c])
            .collect();
        if cells.len() < self.boxes + 1 {
            return None;
        }
        let picks = rand::seq::index::sample(rng, cells.len(), self.boxes + 1).into_vec();
        let goals: Vec<(usize, usize)> = picks[..self.boxes].iter().map(|&i| cells[i]).collect();
        let mut boxes = goals.clone();
        let mut robot = cells[picks[self.boxes]];
        let at = |p: (usize, usize), d: (i64, i64)| -> Option<(usize, usize)> {
            let (r, c) = (p.0 as i64 + d.0, p.1 as i64 + d.1);
            (r >= 0
                && c >= 0
                && (r as usize) < n
                && (c as usize) < n
                && free[r as usize][c as usize])
                .then_some((r as usize, c as usize))
        };
        for _ in 0..self.pulls {
            let (_, dr, dc) = DIRS[rng.random_range(0..4)];
            let Some(next) = at(robot, (dr, dc)) else {
                continue;
            };
            if boxes.contains(&next) {
                continue;
            }
            // A box on the opposite side follows the robot (a pull) half the time.
            let behind = at(robot, (-dr, -dc));
            match behind.and_then(|b| boxes.iter().position(|&x| x == b)) {
                Some(i) if rng.random_bool(0.5) => {
                    boxes[i] = robot;
                    robot = next;
                }
                _ => robot = next,
            }
        }
        if boxes == goals {
            return None;
        }
        Some(self.render(name, &free, &boxes, &goals, robot))
    }

    fn render(
        &self,
        name: &str,
        free: &[Vec<bool>],
        boxes: &[(usize, usize)],
        goals: &[(usize, usize)],
        robot: (usize, usize),
    ) -> String {
        let n = self.size;
        let loc = |(r, c): (usize, usize)| format!("loc_{}_{}", r + 1, c + 1);
        let mut s = format!(";; {}\n;;\n", self.describe());
        for (r, row) in free.iter().enumerate() {
            s += ";; ";
            for (c, &is_free) in row.iter().enumerate() {
                let p = (r, c);
                s.push(if !is_free {
                    '#'
                } else if p == robot {
                    'R'
                } else if boxes.contains(&p) && goals.contains(&p) {
                    '*'
                } else if boxes.contains(&p) {
                    'B'
                } else if goals.contains(&p) {
                    'G'
                } else {
                    '.'
                });
            }
            s.push('\n');
        }
        s += &format!("\n(define (problem {name})\n (:domain sokoban)\n (:objects\n");
        for r in 0..n {
            let row: Vec<String> = (0..n).map(|c| loc((r, c))).collect();
            s += &format!("    {}\n", row.join(" "));
        }
        s += "    - location\n";
        let box_names: Vec<String> = (1..=boxes.len()).map(|i| format!("box{i}")).collect();
        s += &format!("    {} - box)\n (:init\n", box_names.join(" "));
        s += &format!("    (at-robot {})\n", loc(robot));
        for (i, &b) in boxes.iter().enumerate() {
            s += &format!("    (at {} {})\n", box_names[i], loc(b));
        }
        let free_cells: Vec<(usize, usize)> = (0..n)
            .flat_map(|r| (0..n).map(move |c| (r, c)))
            .filter(|&(r, c)| free[r][c])
            .collect();
        for &(r, c) in &free_cells {
            if !boxes.contains(&(r, c)) {
                s += &format!("    (clear {})\n", loc((r, c)));
            }
        }
        for &(r, c) in &free_cells {
            {
                for (d, dr, dc) in DIRS {
                    let (r2, c2) = (r as i64 + dr, c as i64 + dc);
                    if r2 >= 0
                        && c2 >= 0
                        && (r2 as usize) < n
                        && (c2 as usize) < n
                        && free[r2 as usize][c2 as usize]
                    {
                        s += &format!(
                            "    (adjacent {} {} {d})\n",
                            loc((r, c)),
                            loc((r2 as usize, c2 as usize))
                        );
                    }
                }
            }
        }
        s += " )\n (:goal (and\n";
        for (i, &g) in goals.iter().enumerate() {
            s += &format!("    (at {} {})\n", box_names[i], loc(g));
        }
        s += " )))\n";
        s
    }
}

/// Are all free cells one 4-connected region?
fn connected(free: &[Vec<bool>]) -> bool {
    let n = free.len();
    let cells: Vec<(usize, usize)> = (0..n)
        .flat_map(|r| (0..n).map(move |c| (r, c)))
        .filter(|&(r, c)| free[r][c])
        .collect();
    let Some(&start) = cells.first() else {
        return true;
    };
    let mut seen = vec![vec![false; n]; n];
    let mut stack = vec![start];
    seen[start.0][start.1] = true;
    let mut count = 0;
    while let Some((r, c)) = stack.pop() {
        count += 1;
        for (_, dr, dc) in DIRS {
            let (r2, c2) = ((r as i64 + dr) as usize, (c as i64 + dc) as usize);
            if r2 < n && c2 < n && free[r2][c2] && !seen[r2][c2] {
                seen[r2][c2] = true;
                stack.push((r2, c2));
            }
        }
    }
    count == cells.len()
}
