//! The deployments and warm-started policies `iterdeploy verify` checks
//! the claims on.

use rand_distr::{Distribution, StandardNormal};

use crate::estimator::{self, Trace};
use crate::exact::{self, PolicyTable};
use crate::generate::{DomainKind, Params};
use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::optim::{Optimizer, OptimizerKind};
use crate::policy::{Mlp, Policy, Tabular, Transformer};
use crate::{Error, Result};

/// Logit penalty on inapplicable actions for the built-in policies. Without
/// it a random policy over all ground actions almost never writes a valid
/// plan; with it the built-in settings have success probabilities from
/// ~1e-3 to ~0.3, so every claim is informative and Monte-Carlo checks see
/// valid traces.
const PRIOR: f64 = 4.0;

/// Warm start of the built-in policies: SFT steps on one shortest plan per
/// task until J(θ) ≥ WARM_TARGET (at most WARM_MAX steps) — a weak but
/// non-zero generation 0, like the paper's, for which every claim is
/// informative and Monte-Carlo checks see valid traces. Tabular and MLP
/// take plain gradient steps of WARM_RATE; the transformer takes Adam
/// steps of WARM_RATE_TRANSFORMER: at initialisation it almost always
/// writes the one-token `<end>` (a five-token step has probability ~V⁻⁵),
/// so its SFT gradient is large and plain steps of 0.5 diverge to NaN.
const WARM_TARGET: f64 = 0.25;
const WARM_RATE: f64 = 0.5;
const WARM_RATE_TRANSFORMER: f64 = 0.01;
const WARM_MAX: usize = 200;

/// One shortest valid trace per task (breadth-first over the state graph),
/// ending in END; tasks with no goal within the horizon are skipped.
pub fn shortest_plans(env: &Deployment) -> Vec<Trace> {
    let mut out = Vec::new();
    for (x, space) in env.tasks.iter().enumerate() {
        let n = space.num_states();
        let mut parent: Vec<Option<(StateIndex, ActionId)>> = vec![None; n];
        let mut seen = vec![false; n];
        seen[0] = true;
        let mut queue = std::collections::VecDeque::from([0 as StateIndex]);
        let mut goal = None;
        while let Some(s) = queue.pop_front() {
            if space.is_goal[s as usize] {
                goal = Some(s);
                break;
            }
            for &(a, t) in &space.successors[s as usize] {
                if !seen[t as usize] {
                    seen[t as usize] = true;
                    parent[t as usize] = Some((s, a));
                    queue.push_back(t);
                }
            }
        }
        let Some(g) = goal else { continue };
        let mut steps = vec![(g, env.end())];
        let mut s = g;
        while let Some((p, a)) = parent[s as usize] {
            steps.push((p, a));
            s = p;
        }
        steps.reverse();
        out.push(Trace {
            task: x,
            steps,
            valid: true,
            tokens: Vec::new(),
        });
    }
    out
}

/// SFT steps θ ← θ + rate·(−∇L_SFT) on [`shortest_plans`] until
/// J(θ) ≥ `target` or `max_steps` steps; returns the steps taken.
pub fn warm_start(
    env: &Deployment,
    policy: &mut dyn Policy,
    target: f64,
    opt: &mut Optimizer,
    max_steps: usize,
) -> usize {
    let demos = shortest_plans(env);
    let kept: Vec<&Trace> = demos.iter().collect();
    for step in 0..max_steps {
        if exact::objective(env, &PolicyTable::new(policy, env)) >= target {
            return step;
        }
        let g = estimator::sft_gradient(env, policy, &kept);
        opt.ascend(policy.params_mut(), &g);
    }
    max_steps
}

/// The transformer of `verify --transformer` (f64: the checks compare to
/// 1e-10).
const TRANSFORMER_SIZE: crate::policy::transformer::Size = crate::policy::transformer::Size {
    d_model: 16,
    heads: 2,
    layers: 2,
    d_ff: 32,
    f64: true,
    positions: crate::policy::transformer::Positions::Learned,
    objects: crate::policy::transformer::Objects::Names,
};

/// A deployment and the policies the claims are checked for.
pub struct Setting {
    pub name: String,
    pub env: Deployment,
    /// Also check every claim on a small transformer (slow: a forward pass
    /// per state; `iterdeploy verify --transformer`).
    pub transformer: bool,
}

impl Setting {
    /// Tabular (random logits) and MLP (random weights) policies, seeded,
    /// then warm-started like the paper's generation 0: a few SFT steps on
    /// one shortest plan per task (see [`warm_start`]).
    pub fn policies(&self, seed: u64) -> Vec<(&'static str, Box<dyn Policy>)> {
        let mut rng = crate::rng::stream(seed, 1);
        let mut tab = Tabular::zeros(&self.env, 1.0, PRIOR);
        for v in tab.params_mut() {
            *v = StandardNormal.sample(&mut rng);
        }
        let mut mlp = Mlp::new(
            &self.env,
            16,
            1.0,
            1.5,
            PRIOR,
            &mut crate::rng::stream(seed, 2),
        );
        let sgd = || Optimizer::new(OptimizerKind::Sgd, WARM_RATE, None);
        warm_start(&self.env, &mut tab, WARM_TARGET, &mut sgd(), WARM_MAX);
        warm_start(&self.env, &mut mlp, WARM_TARGET, &mut sgd(), WARM_MAX);
        let mut out: Vec<(&'static str, Box<dyn Policy>)> =
            vec![("tabular", Box::new(tab)), ("mlp", Box::new(mlp))];
        // The sequence model: every claim then runs on a transformer too.
        if self.transformer {
            let mut tf = Transformer::new(
                &self.env,
                TRANSFORMER_SIZE,
                1.0,
                &mut crate::rng::stream(seed, 3),
            )
            .expect("a valid built-in size")
            .with_prior(PRIOR);
            let mut adam = Optimizer::new(OptimizerKind::Adam, WARM_RATE_TRANSFORMER, None);
            warm_start(&self.env, &mut tf, WARM_TARGET, &mut adam, WARM_MAX);
            out.push(("transformer", Box::new(tf)));
        }
        out
    }
}

/// The toy chain's tasks (shipped as PDDL files for `verify --task` and
/// the tutorial): reach c3, reach c2.
const CHAIN_TASKS: [(&str, &str); 2] = [
    (
        include_str!("../domains/examples/chain-c3.pddl"),
        "chain-c3.pddl",
    ),
    (
        include_str!("../domains/examples/chain-c2.pddl"),
        "chain-c2.pddl",
    ),
];

/// The toy chain deployment (2 tasks, H = 5), the first built-in setting.
pub fn chain_setting() -> Result<Setting> {
    let chain = crate::pddl::parse_domain(
        include_bytes!("../domains/examples/chain.pddl"),
        "chain.pddl",
    )?;
    let tasks = CHAIN_TASKS
        .iter()
        .map(|(text, name)| crate::pddl::parse_problem(text.as_bytes(), name, &chain))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Setting {
        name: "toy chain (2 tasks, H=5)".into(),
        env: Deployment::build(&chain, &tasks, 5, 10_000)?,
        transformer: false,
    })
}

/// The fixed settings of `iterdeploy verify`.
pub fn default_settings() -> Result<Vec<Setting>> {
    let mut out = vec![chain_setting()?];
    let bw = DomainKind::Blocksworld.parse_domain();
    let bw_tasks = [
        (
            include_str!("../domains/examples/blocksworld-3a.pddl"),
            "blocksworld-3a.pddl",
        ),
        (
            include_str!("../domains/examples/blocksworld-3b.pddl"),
            "blocksworld-3b.pddl",
        ),
    ]
    .iter()
    .map(|(text, name)| crate::pddl::parse_problem(text.as_bytes(), name, &bw))
    .collect::<std::result::Result<Vec<_>, _>>()?;
    out.push(Setting {
        name: "blocksworld 3 blocks (2 tasks, plans of 4 and 6, H=7)".into(),
        env: Deployment::build(&bw, &bw_tasks, 7, 100_000)?,
        transformer: false,
    });
    // A generated Sokoban room, solvable within the horizon by construction
    // (6 reverse moves).
    let kind = DomainKind::Sokoban;
    let sokoban = kind.parse_domain();
    let pairs: Vec<String> = ["size=5", "boxes=1", "walls=0", "pulls=6"]
        .map(String::from)
        .to_vec();
    let tasks = crate::generate::generate(kind, &mut Params::from_pairs(kind, &pairs)?, 1, 2026)?;
    let problems = tasks
        .iter()
        .map(|t| crate::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &sokoban))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    out.push(Setting {
        name: "sokoban 5x5, 1 box (H=6)".into(),
        env: Deployment::build(&sokoban, &problems, 6, 100_000)?,
        transformer: false,
    });
    Ok(out)
}

/// `verify --task` without `--horizon`.
pub const DEFAULT_TASK_HORIZON: usize = 6;

/// States per task that `verify --task` explores at most (the exact
/// tables are states × actions per policy).
pub const MAX_TASK_STATES: usize = 200_000;

/// Memory `verify --task` may plan for, in bytes (a third of the 24 GiB
/// these machines have, leaving room for the OS and a parallel build).
pub const MEMORY_BUDGET_BYTES: f64 = 8.0 * (1u64 << 30) as f64;

/// Live policy tables and DP arrays during one claim: the target's table,
/// up to three behaviours', and per-call occupancy and value arrays.
const LIVE_TABLES: f64 = 6.0;

/// What one setting will hold in memory, estimated from its state graph
/// and its valid-trace counts before any claim runs.
#[derive(Clone, Debug)]
pub struct SizeEstimate {
    pub states: usize,
    pub actions: usize,
    pub horizon: usize,
    /// Valid traces per task (what the enumeration rows list).
    pub valid_traces: Vec<f64>,
    pub bytes: f64,
}

impl SizeEstimate {
    pub fn of(env: &Deployment) -> Self {
        let states: usize = env.tasks.iter().map(|t| t.num_states()).sum();
        let actions = env.num_actions();
        let h1 = (env.horizon + 1) as f64;
        let valid_traces: Vec<f64> = (0..env.tasks.len())
            .map(|x| exact::count_valid_traces(env, x))
            .collect();
        // Tables: states × actions f64 each; DP: (H+1) × states f64 twice;
        // enumerated traces (capped at the enumeration limit): (H+1)
        // (state, action) pairs of 16 bytes each.
        let listed: f64 = valid_traces
            .iter()
            .map(|c| c.min(ENUMERATION_LIMIT as f64))
            .sum();
        let bytes =
            states as f64 * 8.0 * (LIVE_TABLES * actions as f64 + 2.0 * h1) + listed * h1 * 16.0;
        SizeEstimate {
            states,
            actions,
            horizon: env.horizon,
            valid_traces,
            bytes,
        }
    }
}

/// Valid traces per task that the enumeration-based rows list at most;
/// above it those rows are skipped (and say so).
pub const ENUMERATION_LIMIT: usize = 200_000;

/// Builds a setting from the user's PDDL files (for `verify --task`).
/// Refuses, before any claim runs: a horizon above [`crate::mdp::MAX_HORIZON`]
/// or a task with more than [`MAX_TASK_STATES`] states within it; a task with
/// no valid plan within the horizon (naming its shortest plan length); and a
/// setting whose estimated memory exceeds [`MEMORY_BUDGET_BYTES`].
pub fn setting_from_files(
    domain: &std::path::Path,
    problems: &[std::path::PathBuf],
    horizon: usize,
) -> Result<Setting> {
    let d = crate::pddl::read_domain(domain)?;
    let ps = problems
        .iter()
        .map(|p| crate::pddl::read_problem(p, &d))
        .collect::<Result<Vec<_>>>()?;
    let env = Deployment::build(&d, &ps, horizon, MAX_TASK_STATES)?;
    let size = SizeEstimate::of(&env);
    let unsolved: Vec<String> = size
        .valid_traces
        .iter()
        .zip(problems)
        .zip(&env.tasks)
        .filter(|((c, _), _)| **c == 0.0)
        .map(|((_, file), space)| {
            format!(
                "{} (`{}`): {}",
                file.display(),
                space.name,
                shortest_plan_note(&space.task, horizon)
            )
        })
        .collect();
    if !unsolved.is_empty() {
        return Err(Error::Invalid(format!(
            "no valid plan within the horizon H={horizon}, so every claim would compare zeros:\n  {}",
            unsolved.join("\n  ")
        )));
    }
    if size.bytes > MEMORY_BUDGET_BYTES {
        return Err(Error::Invalid(format!(
            "this setting would need about {:.1} GiB ({} states x {} actions, horizon {}, {:.3e} valid traces), more than the {:.0} GiB verify plans for; use fewer or smaller tasks or a shorter horizon",
            size.bytes / (1u64 << 30) as f64,
            size.states,
            size.actions,
            size.horizon,
            size.valid_traces.iter().sum::<f64>(),
            MEMORY_BUDGET_BYTES / (1u64 << 30) as f64
        )));
    }
    Ok(Setting {
        name: format!("{} ({} task(s), H={horizon})", domain.display(), ps.len()),
        env,
        transformer: false,
    })
}

/// Why a task has no valid plan within `horizon`: its shortest plan
/// (breadth-first search, at most a million expansions) is longer, or it
/// has none.
fn shortest_plan_note(task: &crate::task::Task, horizon: usize) -> String {
    use crate::search::{Limits, Outcome, breadth_first};
    let limits = Limits {
        time: None,
        expansions: Some(1_000_000),
    };
    let r = breadth_first(task, limits);
    match r.outcome {
        Outcome::Solved => format!(
            "its shortest plan has {} steps; rerun with --horizon {} or more",
            r.plan.len(),
            r.plan.len()
        ),
        Outcome::Unsolvable => "the task has no plan at all".into(),
        _ => format!(
            "no plan within {horizon} steps, and none found within a million breadth-first expansions"
        ),
    }
}
