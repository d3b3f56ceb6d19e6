//! Rovers with connected traversal graphs, solvable by construction.
//!
//! Waypoints form a random spanning tree plus extra edges (each traversable
//! both ways by every rover, and visible both ways); some extra pairs are
//! visible without being traversable. Every waypoint then has a visible
//! neighbour, so data can be sent to the lander from next to it. Soil and
//! rock goals are placed where samples are, and a rover equipped for each
//! kind of analysis exists; image goals use modes some camera supports, and
//! every objective is visible from at least one waypoint. Each rover has
//! one store (drop empties it), so every goal is achievable.

use rand::RngExt;
use rand::seq::SliceRandom;

use super::Params;
use crate::rng::Rng;
use crate::{Error, Result};

pub struct RoversParams {
    pub rovers: usize,
    pub waypoints: usize,
    pub objectives: usize,
    pub cameras: usize,
    pub goals: usize,
}

const MODES: [&str; 3] = ["colour", "high_res", "low_res"];

impl RoversParams {
    pub fn read(p: &mut Params) -> Result<Self> {
        let params = RoversParams {
            rovers: p.int("rovers", 1, 1, 50)?,
            waypoints: p.int("waypoints", 4, 2, 500)?,
            objectives: p.int("objectives", 1, 1, 100)?,
            cameras: p.int("cameras", 1, 1, 100)?,
            goals: p.int("goals", 3, 1, 1000)?,
        };
        // Soil and rock data per waypoint, and at least one image mode per
        // objective, can always be made goals; more cannot be promised.
        let promised = 2 * params.waypoints + params.objectives;
        if params.goals > promised {
            return Err(Error::Invalid(format!(
                "rovers: goals={} exceeds the {promised} distinct goal facts guaranteed by waypoints={} and objectives={} (2 per waypoint + 1 per objective)",
                params.goals, params.waypoints, params.objectives
            )));
        }
        Ok(params)
    }

    pub fn describe(&self) -> String {
        format!(
            "rovers={};waypoints={};objectives={};cameras={};goals={}",
            self.rovers, self.waypoints, self.objectives, self.cameras, self.goals
        )
    }

    pub fn generate(&self, name: &str, rng: &mut Rng) -> String {
        let w = self.waypoints;
        let mut edges = Vec::new();
        for i in 1..w {
            edges.push((rng.random_range(0..i), i));
        }
        for i in 0..w {
            for j in i + 1..w {
                if !edges.contains(&(i, j)) && rng.random_bool(0.25) {
                    edges.push((i, j));
                }
            }
        }
        let mut visible_only = Vec::new();
        for i in 0..w {
            for j in i + 1..w {
                if !edges.contains(&(i, j)) && rng.random_bool(0.15) {
                    visible_only.push((i, j));
                }
            }
        }
        // Equipment: random, then make sure each kind exists somewhere.
        let mut soil: Vec<bool> = (0..self.rovers).map(|_| rng.random_bool(0.5)).collect();
        let mut rock: Vec<bool> = (0..self.rovers).map(|_| rng.random_bool(0.5)).collect();
        let mut imaging: Vec<bool> = (0..self.rovers).map(|_| rng.random_bool(0.5)).collect();
        for flags in [&mut soil, &mut rock, &mut imaging] {
            if !flags.iter().any(|&f| f) {
                let r = rng.random_range(0..self.rovers);
                flags[r] = true;
            }
        }
        let imaging_rovers: Vec<usize> = (0..self.rovers).filter(|&r| imaging[r]).collect();
        let cameras: Vec<(usize, Vec<usize>, usize)> = (0..self.cameras)
            .map(|_| {
                let rover = imaging_rovers[rng.random_range(0..imaging_rovers.len())];
                let mut modes: Vec<usize> = (0..3).filter(|_| rng.random_bool(0.5)).collect();
                if modes.is_empty() {
                    modes.push(rng.random_range(0..3));
                }
                (rover, modes, rng.random_range(0..self.objectives))
            })
            .collect();
        let visible_from: Vec<Vec<usize>> = (0..self.objectives)
            .map(|_| {
                let k = rng.random_range(1..=w.min(3));
                let mut v = rand::seq::index::sample(rng, w, k).into_vec();
                v.sort_unstable();
                v
            })
            .collect();
        let mut soil_at: Vec<bool> = (0..w).map(|_| rng.random_bool(0.4)).collect();
        let mut rock_at: Vec<bool> = (0..w).map(|_| rng.random_bool(0.4)).collect();
        // Top up samples (in random order) until enough goal facts exist.
        let image_goals = self.objectives
            * (0..3)
                .filter(|m| cameras.iter().any(|(_, modes, _)| modes.contains(m)))
                .count();
        let mut missing: Vec<(bool, usize)> = (0..w)
            .flat_map(|p| [(true, p), (false, p)])
            .filter(|&(soil, p)| if soil { !soil_at[p] } else { !rock_at[p] })
            .collect();
        missing.shuffle(rng);
        let count = |soil_at: &[bool], rock_at: &[bool]| {
            soil_at.iter().filter(|&&x| x).count()
                + rock_at.iter().filter(|&&x| x).count()
                + image_goals
        };
        while count(&soil_at, &rock_at) < self.goals {
            let (soil, p) = missing
                .pop()
                .expect("goals <= 2 * waypoints + objectives (checked when read)");
            if soil {
                soil_at[p] = true;
            } else {
                rock_at[p] = true;
            }
        }
        let lander = rng.random_range(0..w);
        let starts: Vec<usize> = (0..self.rovers).map(|_| rng.random_range(0..w)).collect();

        // Candidate goal facts, in a fixed order, then a random subset.
        let mut candidates = Vec::new();
        for p in 0..w {
            if soil_at[p] {
                candidates.push(format!("(communicated_soil_data waypoint{})", p + 1));
            }
            if rock_at[p] {
                candidates.push(format!("(communicated_rock_data waypoint{})", p + 1));
            }
        }
        for o in 0..self.objectives {
            for (m, mode) in MODES.iter().enumerate() {
                if cameras.iter().any(|(_, modes, _)| modes.contains(&m)) {
                    candidates.push(format!(
                        "(communicated_image_data objective{} {mode})",
                        o + 1
                    ));
                }
            }
        }
        let mut picked = rand::seq::index::sample(rng, candidates.len(), self.goals).into_vec();
        picked.sort_unstable();

        let wp = |i: usize| format!("waypoint{}", i + 1);
        let mut s = format!(
            ";; {}\n(define (problem {name})\n (:domain rover)\n (:objects\n",
            self.describe()
        );
        s += "    general - lander\n    colour high_res low_res - mode\n";
        let list = |prefix: &str, n: usize, suffix: &str| {
            (1..=n)
                .map(|i| format!("{prefix}{i}{suffix}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        s += &format!("    {} - rover\n", list("rover", self.rovers, ""));
        s += &format!("    {} - store\n", list("rover", self.rovers, "store"));
        s += &format!("    {} - waypoint\n", list("waypoint", w, ""));
        s += &format!("    {} - camera\n", list("camera", self.cameras, ""));
        s += &format!(
            "    {} - objective)\n (:init\n",
            list("objective", self.objectives, "")
        );
        s += &format!("    (at_lander general {})\n", wp(lander));
        for r in 0..self.rovers {
            let rv = format!("rover{}", r + 1);
            s += &format!("    (at {rv} {})\n", wp(starts[r]));
            s += &format!("    (empty {rv}store)\n    (store_of {rv}store {rv})\n");
            for (flag, pred) in [
                (soil[r], "equipped_for_soil_analysis"),
                (rock[r], "equipped_for_rock_analysis"),
                (imaging[r], "equipped_for_imaging"),
            ] {
                if flag {
                    s += &format!("    ({pred} {rv})\n");
                }
            }
            for &(i, j) in &edges {
                s += &format!("    (can_traverse {rv} {} {})\n", wp(i), wp(j));
                s += &format!("    (can_traverse {rv} {} {})\n", wp(j), wp(i));
            }
        }
        for &(i, j) in edges.iter().chain(&visible_only) {
            s += &format!(
                "    (visible {} {})\n    (visible {} {})\n",
                wp(i),
                wp(j),
                wp(j),
                wp(i)
            );
        }
        for p in 0..w {
            if soil_at[p] {
                s += &format!("    (at_soil_sample {})\n", wp(p));
            }
            if rock_at[p] {
                s += &format!("    (at_rock_sample {})\n", wp(p));
            }
        }
        for (c, (rover, modes, target)) in cameras.iter().enumerate() {
            s += &format!("    (on_board camera{} rover{})\n", c + 1, rover + 1);
            s += &format!(
                "    (calibration_target camera{} objective{})\n",
                c + 1,
                target + 1
            );
            for &m in modes {
                s += &format!("    (supports camera{} {})\n", c + 1, MODES[m]);
            }
        }
        for (o, ws) in visible_from.iter().enumerate() {
            for &p in ws {
                s += &format!("    (visible_from objective{} {})\n", o + 1, wp(p));
            }
        }
        s += " )\n (:goal (and\n";
        for i in picked {
            s += &format!("    {}\n", candidates[i]);
        }
        s += " )))\n";
        s
    }
}
