//! Generators and the reference planner: generated tasks are solvable and
//! reproducible, A* lengths equal brute-force BFS lengths, bad parameters
//! are clear errors, and the planner covers the shared easy tasks.

use iterdeploy::generate::{DomainKind, Params, generate};
use iterdeploy::pddl::parse_problem;
use iterdeploy::search::{Algorithm, Limits, Outcome, breadth_first, search, solve};
use iterdeploy::task::Task;
use std::time::Duration;

fn params(kind: DomainKind, pairs: &[&str]) -> Params {
    Params::from_pairs(
        kind,
        &pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    )
    .unwrap()
}

fn gen_tasks(
    kind: DomainKind,
    pairs: &[&str],
    count: usize,
    seed: u64,
) -> Vec<iterdeploy::generate::GeneratedTask> {
    generate(kind, &mut params(kind, pairs), count, seed).unwrap()
}

#[test]
fn same_seed_same_bytes_other_seed_other_tasks() {
    for (kind, pairs) in [
        (DomainKind::Blocksworld, vec!["blocks=7"]),
        (DomainKind::Sokoban, vec!["size=7", "boxes=2"]),
        (DomainKind::Rovers, vec!["rovers=2", "waypoints=6"]),
    ] {
        let a = gen_tasks(kind, &pairs, 4, 11);
        let b = gen_tasks(kind, &pairs, 4, 11);
        let c = gen_tasks(kind, &pairs, 4, 12);
        for i in 0..4 {
            assert_eq!(a[i].pddl, b[i].pddl, "{kind:?} task {i}");
            // Names embed the seed; the tasks themselves must differ too.
            assert_ne!(
                a[i].pddl.replace("-11-", "-"),
                c[i].pddl.replace("-12-", "-"),
                "{kind:?} task {i}"
            );
        }
    }
}

/// Every generated task of each domain, over a range of sizes, is solved by
/// A* and the plan passes the validator (`solve` validates before returning).
#[test]
fn every_generated_task_is_solvable() {
    let settings: Vec<(DomainKind, Vec<&str>)> = vec![
        (DomainKind::Blocksworld, vec!["blocks=1"]),
        (DomainKind::Blocksworld, vec!["blocks=5"]),
        (DomainKind::Blocksworld, vec!["blocks=7"]),
        (DomainKind::Sokoban, vec!["size=5", "boxes=1"]),
        (DomainKind::Sokoban, vec!["size=7", "boxes=2"]),
        (DomainKind::Sokoban, vec!["size=8", "boxes=3", "walls=6"]),
        (DomainKind::Rovers, vec!["rovers=1", "waypoints=3"]),
        (
            DomainKind::Rovers,
            vec![
                "rovers=2",
                "waypoints=6",
                "objectives=2",
                "cameras=2",
                "goals=4",
            ],
        ),
    ];
    for (kind, pairs) in settings {
        let domain = kind.parse_domain();
        for t in gen_tasks(kind, &pairs, 8, 3) {
            let problem = parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap();
            let limits = Limits {
                time: Some(Duration::from_secs(20)),
                expansions: None,
            };
            let mut sol = solve(&domain, &problem, Algorithm::AstarHmax, limits).unwrap();
            if sol.ipc_text.is_none() {
                sol = solve(&domain, &problem, Algorithm::GbfsFf, limits).unwrap();
            }
            assert!(
                sol.ipc_text.is_some(),
                "{} ({pairs:?}) unsolved: {:?}",
                t.name,
                sol.result.outcome
            );
        }
    }
}

/// A* with h_max finds plans exactly as short as breadth-first search on
/// small Blocksworld and Sokoban tasks (unit costs: length = cost).
#[test]
fn astar_lengths_equal_brute_force_bfs() {
    let mut compared = 0;
    for (kind, pairs) in [
        (DomainKind::Blocksworld, vec!["blocks=4"]),
        (DomainKind::Blocksworld, vec!["blocks=5"]),
        (DomainKind::Sokoban, vec!["size=6", "boxes=1"]),
        (DomainKind::Sokoban, vec!["size=6", "boxes=2", "walls=2"]),
    ] {
        let domain = kind.parse_domain();
        for t in gen_tasks(kind, &pairs, 10, 5) {
            let problem = parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap();
            let task = Task::ground(&domain, &problem).unwrap();
            let astar = search(&task, Algorithm::AstarHmax, Limits::default());
            let bfs = breadth_first(&task, Limits::default());
            assert_eq!(astar.outcome, Outcome::Solved);
            assert_eq!(bfs.outcome, Outcome::Solved);
            assert_eq!(astar.plan.len(), bfs.plan.len(), "{}", t.name);
            compared += 1;
        }
    }
    assert_eq!(compared, 40);
}

#[test]
fn bad_generator_parameters_are_clear_errors() {
    let err = |kind, pairs: &[&str]| {
        let mut p = Params::from_pairs(
            kind,
            &pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        generate(kind, &mut p, 1, 0).unwrap_err().to_string()
    };
    assert_eq!(
        err(DomainKind::Blocksworld, &["blocks=0"]),
        "blocksworld: parameter `blocks` must be an integer in 1..=500, got `0`"
    );
    assert_eq!(
        err(DomainKind::Sokoban, &["size=5", "boxes=9"]),
        "sokoban: 9 box(es) and a robot need 10 free cells, but a 5x5 room with 2 interior wall(s) has at most 7"
    );
    assert!(
        err(DomainKind::Blocksworld, &["blocks=3", "towers=2"])
            .contains("unknown parameter(s) towers")
    );
    assert_eq!(
        DomainKind::from_name("logistics").unwrap_err().to_string(),
        "unknown domain `logistics` (generators exist for: blocksworld, ferry, rovers, sokoban)"
    );
    assert!(Params::from_pairs(DomainKind::Sokoban, &["size".to_string()]).is_err());
}

/// The shipped domains plan unchanged with the shared benchmark problems:
/// A* (optimal) never finds a plan longer than the shared reference plan,
/// and GBFS solves every task, on the first tasks of each domain's
/// training/easy split.
#[test]
fn planner_solves_shared_easy_tasks_and_astar_never_exceeds_reference() {
    let Some(root) = crate::common::ipc_benchmarks() else {
        return;
    };
    let tasks = iterdeploy::benchmarks::collect(&root).unwrap();
    let limits = Limits {
        time: Some(Duration::from_secs(10)),
        expansions: None,
    };
    let mut optimal_checked = 0;
    for domain_name in [
        "blocksworld",
        "rovers",
        "sokoban",
        "childsnack",
        "ferry",
        "floortile",
        "miconic",
        "satellite",
        "spanner",
        "transport",
    ] {
        let domain_tasks: Vec<_> = tasks
            .iter()
            .filter(|t| t.domain_name == domain_name && t.split == "training/easy")
            .take(6)
            .collect();
        let domain = iterdeploy::pddl::read_domain(&domain_tasks[0].domain).unwrap();
        for t in domain_tasks {
            let problem = iterdeploy::pddl::read_problem(&t.problem, &domain).unwrap();
            let reference = iterdeploy::plan::parse_ipc_plan(
                &crate::common::read(t.plan.as_ref().unwrap()),
                "ref",
            )
            .unwrap()
            .steps
            .len();
            let gbfs = solve(&domain, &problem, Algorithm::GbfsFf, limits).unwrap();
            assert!(
                gbfs.ipc_text.is_some(),
                "{}: {:?}",
                t.problem.display(),
                gbfs.result.outcome
            );
            let astar = solve(&domain, &problem, Algorithm::AstarHmax, limits).unwrap();
            if astar.ipc_text.is_some() {
                assert!(
                    astar.result.plan.len() <= reference,
                    "{}",
                    t.problem.display()
                );
                optimal_checked += 1;
            }
        }
    }
    assert!(
        optimal_checked >= 30,
        "A* solved only {optimal_checked} of 60 small tasks"
    );
}
