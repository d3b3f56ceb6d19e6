//! The deployments and warm-started policies `iterdeploy verify` checks
//! the claims on.

use rand_distr::{Distribution, StandardNormal};

use crate::Result;
use crate::estimator::{self, Trace};
use crate::exact::{self, PolicyTable};
use crate::generate::{DomainKind, Params};
use crate::mdp::{ActionId, Deployment, StateIndex};
use crate::optim::{Optimizer, OptimizerKind};
use crate::policy::{Mlp, Policy, Tabular, Transformer};

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

fn chain_problem(goal: &str) -> String {
    format!(
        "(define (problem chain-{goal}) (:domain chain) (:objects c0 c1 c2 c3)
         (:init (at c0) (next c0 c1) (next c1 c2) (next c2 c3)) (:goal (at {goal})))"
    )
}

/// The fixed settings of `iterdeploy verify`.
pub fn default_settings() -> Result<Vec<Setting>> {
    let chain = crate::pddl::parse_domain(
        include_bytes!("../domains/examples/chain.pddl"),
        "chain.pddl",
    )?;
    let chain_tasks = ["c3", "c2"]
        .iter()
        .map(|g| crate::pddl::parse_problem(chain_problem(g).as_bytes(), "chain", &chain))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut out = vec![Setting {
        name: "toy chain (2 tasks, H=5)".into(),
        env: Deployment::build(&chain, &chain_tasks, 5, 10_000)?,
        transformer: false,
    }];
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

/// Builds a setting from the user's PDDL files (for `verify --task`).
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
    Ok(Setting {
        name: format!("{} ({} task(s), H={horizon})", domain.display(), ps.len()),
        env: Deployment::build(&d, &ps, horizon, 200_000)?,
        transformer: false,
    })
}
