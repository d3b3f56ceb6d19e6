//! Ferry: n cars, each to be carried to another location by a ferry that
//! holds one car at a time. A size ladder whose plan length grows linearly
//! with the number of cars (issue 28): every car must cross, and each
//! crossing is a board, a sail and a debark.
//!
//! Each car starts at a uniform location and must end at a uniform *other*
//! location; the ferry starts at a uniform location. With two locations
//! (the default) the optimal length is known in closed form
//! ([`optimal_two_locations`]): 2n + k, a board and a debark per car and
//! k sails, where k = max(2a − 1, 2b) for a > 0 cars waiting on the
//! ferry's side and b on the other (k = 2b for a = 0). Sails alternate
//! sides and carry at most one car, so ⌈k/2⌉ crossings leave the ferry's
//! side and ⌊k/2⌋ come back; k is the least number that carries everyone,
//! and taking a waiting car whenever there is one achieves it. With a ≈ b
//! ≈ n/2 that is about 3n.

use rand::RngExt;

use super::Params;
use crate::Result;
use crate::rng::Rng;

pub struct FerryParams {
    pub cars: usize,
    pub locations: usize,
}

impl FerryParams {
    pub fn read(p: &mut Params) -> Result<Self> {
        Ok(FerryParams {
            cars: p.int("cars", 3, 1, 500)?,
            locations: p.int("locations", 2, 2, 500)?,
        })
    }

    pub fn describe(&self) -> String {
        format!("cars={};locations={}", self.cars, self.locations)
    }

    pub fn generate(&self, name: &str, rng: &mut Rng) -> String {
        let (ferry, start, goal) = self.draw(rng);
        render(name, self.locations, ferry, &start, &goal)
    }

    /// The ferry's location, and each car's start and goal location.
    fn draw(&self, rng: &mut Rng) -> (usize, Vec<usize>, Vec<usize>) {
        let l = self.locations;
        let ferry = rng.random_range(0..l);
        let start: Vec<usize> = (0..self.cars).map(|_| rng.random_range(0..l)).collect();
        // A uniform location other than the start: skip over it.
        let goal: Vec<usize> = start
            .iter()
            .map(|&s| {
                let g = rng.random_range(0..l - 1);
                if g >= s { g + 1 } else { g }
            })
            .collect();
        (ferry, start, goal)
    }
}

/// The optimal plan length with two locations (module docs): `start[c]`
/// is car c's side, the ferry is on side `ferry`, and every car must cross.
pub fn optimal_two_locations(ferry: usize, start: &[usize]) -> usize {
    let n = start.len();
    let a = start.iter().filter(|&&s| s == ferry).count();
    let b = n - a;
    let sails = if a > 0 { (2 * a - 1).max(2 * b) } else { 2 * b };
    2 * n + sails
}

fn render(name: &str, l: usize, ferry: usize, start: &[usize], goal: &[usize]) -> String {
    let n = start.len();
    let cars: Vec<String> = (1..=n).map(|c| format!("c{c}")).collect();
    let locs: Vec<String> = (1..=l).map(|i| format!("l{i}")).collect();
    let mut s = format!(
        ";; cars={n}; locations={l}; every car must move to another location\n(define (problem {name})\n (:domain ferry)\n (:objects {} - car {} - location)\n (:init\n    (empty-ferry)\n    (at-ferry {})\n",
        cars.join(" "),
        locs.join(" "),
        locs[ferry]
    );
    for (c, &at) in start.iter().enumerate() {
        s += &format!("    (at {} {})\n", cars[c], locs[at]);
    }
    s += " )\n (:goal (and\n";
    for (c, &at) in goal.iter().enumerate() {
        s += &format!("    (at {} {})\n", cars[c], locs[at]);
    }
    s += " ))\n)\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::DomainKind;

    /// The closed form is the breadth-first optimum on every generated
    /// two-location task of 1 to 6 cars, and a 6-car plan is about 3n
    /// long: linear in the size, as the ladder needs.
    #[test]
    fn the_closed_form_is_the_optimal_length() {
        let domain = DomainKind::Ferry.parse_domain();
        for cars in 1..=6 {
            let p = FerryParams { cars, locations: 2 };
            for i in 0..12u64 {
                let (ferry, start, _) = p.draw(&mut crate::rng::stream(5, i));
                let text = p.generate("t", &mut crate::rng::stream(5, i));
                let problem = crate::pddl::parse_problem(text.as_bytes(), "t", &domain).unwrap();
                let env =
                    crate::mdp::Deployment::build(&domain, &[problem], 40, 1_000_000).unwrap();
                let t = &env.tasks[0];
                let bfs = (0..t.num_states())
                    .filter(|&s| t.is_goal[s])
                    .map(|s| t.depth[s] as usize)
                    .min();
                assert_eq!(bfs, Some(optimal_two_locations(ferry, &start)), "{text}");
                assert!((2 * cars + cars - 1..=4 * cars).contains(&bfs.unwrap()));
            }
        }
    }
}
