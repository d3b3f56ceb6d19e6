//! Gradients and dynamic programs: scores against finite differences for
//! both policy kinds, DP against direct sums, the 6-block state space.

use approx::{assert_abs_diff_eq, assert_relative_eq};
use iterdeploy::estimator::{Trace, sample_trace};
use iterdeploy::exact::{self, PolicyTable};
use iterdeploy::generate::{DomainKind, Params, generate};
use iterdeploy::mdp::Deployment;
use iterdeploy::policy::{Mlp, Policy, Tabular};
use iterdeploy::tolerance::{EXACT_ABS, EXACT_REL, FD_ABS, FD_REL, FD_STEP, errors};
use rand_distr::{Distribution, StandardNormal};

fn blocks_env(blocks: usize, count: usize, horizon: usize) -> Deployment {
    let kind = DomainKind::Blocksworld;
    let domain = kind.parse_domain();
    let tasks = generate(
        kind,
        &mut Params::from_pairs(kind, &[format!("blocks={blocks}")]).unwrap(),
        count,
        5,
    )
    .unwrap();
    let problems: Vec<_> = tasks
        .iter()
        .map(|t| iterdeploy::pddl::parse_problem(t.pddl.as_bytes(), &t.name, &domain).unwrap())
        .collect();
    Deployment::build(&domain, &problems, horizon, 1_000_000).unwrap()
}

/// The applicability prior penalises inapplicable actions only, also in
/// states first reached at depth H (whose successor lists are empty): there
/// every applicable action keeps logit 0 under a tabular policy at θ = 0,
/// and every inapplicable one gets −penalty.
#[test]
fn the_prior_spares_applicable_actions_at_the_horizon() {
    let env = blocks_env(3, 3, 4);
    let penalty = 4.0;
    let policy = Tabular::zeros(&env, 1.0, penalty);
    let mut at_horizon = 0;
    for (x, space) in env.tasks.iter().enumerate() {
        for s in 0..space.num_states() {
            let mut applicable = vec![false; env.num_actions()];
            space.for_each_applicable(s as u32, |a| applicable[a] = true);
            if space.depth[s] as usize == env.horizon {
                assert!(space.successors[s].is_empty());
                if applicable.iter().any(|&b| b) {
                    at_horizon += 1;
                }
            }
            applicable[env.end()] = true;
            let mut logp = vec![0.0; env.num_actions()];
            policy.log_probs(&env, x, s as u32, &mut logp);
            let top = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for (a, &lp) in logp.iter().enumerate() {
                let want = if applicable[a] { 0.0 } else { -penalty };
                assert_abs_diff_eq!(lp - top, want, epsilon = EXACT_ABS);
            }
        }
    }
    assert!(
        at_horizon > 0,
        "the setting must have non-terminal states at depth H"
    );
}

/// ∇ log π(trace) against central differences of log π(trace), every
/// coordinate, for the tabular and the MLP policy (proofs rely on it).
#[test]
fn trace_scores_match_finite_differences() {
    let env = blocks_env(3, 2, 6);
    let mut rng = iterdeploy::rng::seeded(3);
    let mut tab = Tabular::zeros(&env, 0.7, 2.0);
    for v in tab.params_mut() {
        *v = StandardNormal.sample(&mut rng);
    }
    let mlp = Mlp::new(&env, 6, 0.7, 1.0, 2.0, &mut rng);
    let mut policies: Vec<Box<dyn Policy>> = vec![Box::new(tab), Box::new(mlp)];
    for policy in policies.iter_mut() {
        let table = PolicyTable::new(&**policy, &env);
        let traces: Vec<Trace> = (0..4)
            .map(|i| sample_trace(&env, &table, i % 2, &mut rng))
            .collect();
        for trace in &traces {
            let mut analytic = vec![0.0; policy.num_params()];
            trace.accumulate_score(&env, &**policy, 1.0, &mut analytic);
            let theta = policy.params().to_vec();
            let mut numeric = vec![0.0; theta.len()];
            for i in 0..theta.len() {
                let mut lp = [0.0; 2];
                for (k, sign) in [1.0, -1.0].into_iter().enumerate() {
                    policy.params_mut()[i] = theta[i] + sign * FD_STEP;
                    lp[k] = trace.log_prob(&PolicyTable::new(&**policy, &env), &env);
                }
                policy.params_mut()[i] = theta[i];
                numeric[i] = (lp[0] - lp[1]) / (2.0 * FD_STEP);
            }
            let (abs, rel) = errors(&analytic, &numeric, FD_ABS);
            assert!(rel <= FD_REL, "score vs FD: abs {abs:e}, rel {rel:e}");
            assert!(analytic.iter().any(|&g| g != 0.0));
        }
    }
}

/// The DP success probability equals a direct sum over enumerated valid
/// traces, and the valid-length distribution sums to it.
#[test]
fn dp_success_equals_enumeration_and_length_law_sums_to_it() {
    let env = blocks_env(3, 2, 6);
    let mut rng = iterdeploy::rng::seeded(4);
    let mlp = Mlp::new(&env, 8, 1.0, 1.5, 3.0, &mut rng);
    let table = PolicyTable::new(&mlp, &env);
    let p = exact::success_probabilities(&env, &table);
    let q = exact::valid_length_distribution(&env, &table);
    for x in 0..env.tasks.len() {
        let traces = iterdeploy::exact::enumerate_valid_traces(&env, x, 100_000).unwrap();
        let direct: f64 = traces
            .iter()
            .map(|y| {
                Trace {
                    task: x,
                    steps: y.clone(),
                    valid: true,
                    tokens: Vec::new(),
                }
                .log_prob(&table, &env)
                .exp()
            })
            .sum();
        assert_relative_eq!(p[x], direct, epsilon = EXACT_ABS, max_relative = EXACT_REL);
        assert_relative_eq!(
            q[x].iter().sum::<f64>(),
            p[x],
            epsilon = EXACT_ABS,
            max_relative = EXACT_REL
        );
        assert!(p[x] > 0.0, "task {x} should be solvable within the horizon");
    }
}

/// Six blocks: 4051 hand-empty states plus 6·501 holding states = 7057
/// reachable states; the exact gradient over all of them is computed.
#[test]
fn six_block_state_space_is_complete_and_tractable() {
    let env = blocks_env(6, 1, 24);
    let space = &env.tasks[0];
    assert_eq!(space.num_states(), 7057);
    let hand_empty = space
        .states
        .iter()
        .filter(|s| space.task.describe(s).iter().any(|f| f == "(arm-empty)"))
        .count();
    assert_eq!(hand_empty, 4051);
    let tab = Tabular::zeros(&env, 1.0, 3.0);
    let g = exact::objective_gradient(&env, &tab);
    assert_eq!(g.len(), 7057 * env.num_actions());
    assert!(g.iter().any(|&v| v != 0.0));
}

/// The MLP's hand-written backprop agrees with candle's autograd in f64:
/// ∇θ log π(trace) for sampled traces, every parameter, to EXACT_REL.
/// The network is rebuilt in candle from our parameter vector (candle's own
/// initialisers are never used), with log-softmax written from primitive,
/// differentiable ops.
#[test]
fn mlp_backprop_matches_candle_autograd_in_f64() {
    use candle_core::{DType, Device, Tensor, Var};
    use iterdeploy::policy::add_applicability_prior;
    let env = blocks_env(3, 2, 6);
    let mut rng = iterdeploy::rng::seeded(11);
    let tau = 0.8;
    let mlp = Mlp::new(&env, 7, tau, 1.3, 2.5, &mut rng);
    let (d, h, o) = mlp.dims();
    let theta = mlp.params();
    let dev = Device::Cpu;
    let w1 = Var::from_tensor(&Tensor::from_slice(&theta[..h * d], (h, d), &dev).unwrap()).unwrap();
    let b1 =
        Var::from_tensor(&Tensor::from_slice(&theta[h * d..h * d + h], h, &dev).unwrap()).unwrap();
    let w2_at = h * d + h;
    let w2 =
        Var::from_tensor(&Tensor::from_slice(&theta[w2_at..w2_at + o * h], (o, h), &dev).unwrap())
            .unwrap();
    let b2 =
        Var::from_tensor(&Tensor::from_slice(&theta[w2_at + o * h..], o, &dev).unwrap()).unwrap();
    let table = PolicyTable::new(&mlp, &env);
    let mut checked = 0;
    for i in 0..6 {
        let trace = sample_trace(&env, &table, i % 2, &mut rng);
        let mut total = Tensor::zeros((), DType::F64, &dev).unwrap();
        for &(s, a) in &trace.steps {
            let mut input = vec![0.0f64; d];
            for k in mlp.active_inputs(&env, trace.task, s) {
                input[k] = 1.0;
            }
            let mut prior = vec![0.0f64; o];
            add_applicability_prior(&env, trace.task, s, 2.5, &mut prior);
            let x = Tensor::from_vec(input, (d, 1), &dev).unwrap();
            let hidden = (w1.as_tensor().matmul(&x).unwrap().squeeze(1).unwrap() + b1.as_tensor())
                .unwrap()
                .tanh()
                .unwrap();
            let z = (w2
                .as_tensor()
                .matmul(&hidden.unsqueeze(1).unwrap())
                .unwrap()
                .squeeze(1)
                .unwrap()
                + b2.as_tensor())
            .unwrap();
            let z = ((z + Tensor::from_vec(prior, o, &dev).unwrap()).unwrap() / tau).unwrap();
            let max = z.max(0).unwrap().detach();
            let lse = (z
                .broadcast_sub(&max)
                .unwrap()
                .exp()
                .unwrap()
                .sum(0)
                .unwrap()
                .log()
                .unwrap()
                + &max)
                .unwrap();
            let logp_a = (z.get(a).unwrap() - lse).unwrap();
            total = (total + logp_a).unwrap();
        }
        let grads = total.backward().unwrap();
        let mut autograd = Vec::with_capacity(theta.len());
        for var in [&w1, &b1, &w2, &b2] {
            let g = grads
                .get(var.as_tensor())
                .expect("every parameter receives a gradient");
            autograd.extend(g.flatten_all().unwrap().to_vec1::<f64>().unwrap());
        }
        let mut ours = vec![0.0; theta.len()];
        trace.accumulate_score(&env, &mlp, 1.0, &mut ours);
        let (abs, rel) = errors(&ours, &autograd, EXACT_ABS);
        assert!(rel <= EXACT_REL, "trace {i}: abs {abs:e}, rel {rel:e}");
        assert_relative_eq!(
            trace.log_prob(&table, &env),
            total.to_scalar::<f64>().unwrap(),
            epsilon = EXACT_ABS,
            max_relative = EXACT_REL
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// KL(π ‖ ρ) of trace laws by the occupancy-weighted DP equals the direct
/// sum Σ_y π(y) log(π(y)/ρ(y)) over every trace (valid or not), enumerated.
#[test]
fn trajectory_kl_equals_the_sum_over_all_traces() {
    let env = blocks_env(3, 2, 3);
    let mut rng = iterdeploy::rng::seeded(11);
    let mut p = Tabular::zeros(&env, 1.0, 1.0);
    let mut q = Tabular::zeros(&env, 1.0, 1.0);
    for v in p.params_mut().iter_mut().chain(q.params_mut().iter_mut()) {
        *v = StandardNormal.sample(&mut rng);
    }
    let (tp, tq) = (PolicyTable::new(&p, &env), PolicyTable::new(&q, &env));
    let dp = exact::trajectory_kl(&env, &tp, &tq);
    // Depth-first over (state, time, log π(prefix), log ρ(prefix)).
    struct Walk<'a> {
        env: &'a Deployment,
        tp: &'a PolicyTable,
        tq: &'a PolicyTable,
        x: usize,
    }
    impl Walk<'_> {
        /// Adds Σ π(y) log(π(y)/ρ(y)) and Σ π(y) over traces continuing
        /// the prefix into `out`.
        fn go(&self, s: usize, t: usize, lp: f64, lq: f64, out: &mut (f64, f64)) {
            let n = self.env.num_actions();
            for a in 0..n {
                let la = lp + self.tp.logp[self.x][s * n + a];
                let lb = lq + self.tq.logp[self.x][s * n + a];
                let next = self.env.tasks[self.x].successors[s]
                    .iter()
                    .find(|&&(b, _)| b == a);
                match next {
                    Some(&(_, s2)) if t < self.env.horizon && a != self.env.end() => {
                        self.go(s2 as usize, t + 1, la, lb, out)
                    }
                    _ => {
                        out.0 += la.exp() * (la - lb);
                        out.1 += la.exp();
                    }
                }
            }
        }
    }
    for (x, &kl) in dp.iter().enumerate() {
        let mut acc = (0.0, 0.0);
        Walk {
            env: &env,
            tp: &tp,
            tq: &tq,
            x,
        }
        .go(0, 0, 0.0, 0.0, &mut acc);
        // The trace probabilities sum to 1, and the enumerated KL is the DP's.
        assert_relative_eq!(acc.1, 1.0, epsilon = EXACT_ABS);
        assert_relative_eq!(acc.0, kl, epsilon = EXACT_ABS, max_relative = EXACT_REL);
        assert!(kl > 0.0);
    }
    let zero = exact::trajectory_kl(&env, &tp, &tp);
    assert!(zero.iter().all(|&k| k.abs() < 1e-15), "{zero:?}");
}

/// GRPO's group-normalised advantages, written out for one group of four
/// with one valid trace: A = (R − 1/4)/σ, σ = √(3/16).
#[test]
fn grpo_uses_group_normalised_advantages() {
    let env = blocks_env(3, 1, 4);
    let mut rng = iterdeploy::rng::seeded(5);
    let mut p = Tabular::zeros(&env, 1.0, 1.0);
    for v in p.params_mut() {
        *v = StandardNormal.sample(&mut rng);
    }
    let table = PolicyTable::new(&p, &env);
    let mut batch: Vec<Trace> = Vec::new();
    let (mut valid, mut invalid) = (0, 0);
    while valid < 1 || invalid < 3 {
        let t = sample_trace(&env, &table, 0, &mut rng);
        if t.valid && valid < 1 {
            valid += 1;
            batch.push(t);
        } else if !t.valid && invalid < 3 {
            invalid += 1;
            batch.push(t);
        }
    }
    let g = iterdeploy::estimator::grpo(&env, &p, &batch);
    let sigma = (3.0f64 / 16.0).sqrt();
    let mut expected = vec![0.0; p.num_params()];
    for t in &batch {
        let a = (f64::from(u8::from(t.valid)) - 0.25) / (sigma + 1e-6);
        t.accumulate_score(&env, &p, a / 4.0, &mut expected);
    }
    let (abs, _) = errors(&g, &expected, 1e-12);
    assert!(abs < 1e-12, "{abs}");
    // All-equal rewards carry no signal.
    let all_invalid: Vec<Trace> = batch.iter().filter(|t| !t.valid).cloned().collect();
    assert!(
        iterdeploy::estimator::grpo(&env, &p, &all_invalid)
            .iter()
            .all(|&v| v == 0.0)
    );
}

/// A policy moved to a prefix of its deployment's tasks computes the same
/// log-probabilities there (what the experiments do after training gen 0).
#[test]
fn policies_keep_their_values_on_a_task_prefix() {
    let env = blocks_env(3, 3, 4);
    let prefix = env.prefix(2);
    let mut rng = iterdeploy::rng::seeded(2);
    let mut tab = Tabular::zeros(&env, 1.0, 1.0);
    for v in tab.params_mut() {
        *v = StandardNormal.sample(&mut rng);
    }
    let mlp = Mlp::new(&env, 5, 1.0, 1.0, 1.0, &mut rng);
    for policy in [&tab as &dyn Policy, &mlp] {
        let moved = policy.for_task_prefix(&prefix);
        let (full, part) = (
            PolicyTable::new(policy, &env),
            PolicyTable::new(moved.as_ref(), &prefix),
        );
        assert_eq!(part.logp.len(), 2);
        for x in 0..2 {
            assert_eq!(full.logp[x], part.logp[x]);
        }
    }
}

/// Tasks with different object lists share facts and actions by name (not
/// by per-problem object ids): the same fact in two tasks whose objects are
/// listed in different orders gets one shared id.
#[test]
fn deployments_share_facts_by_name_across_object_lists() {
    let domain = DomainKind::Blocksworld.parse_domain();
    let text = |objects: &str| {
        format!(
            "(define (problem p) (:domain blocksworld) (:objects {objects})
             (:init (arm-empty) (on-table b1) (on b2 b1) (clear b2)) (:goal (on b1 b2)))"
        )
    };
    let a = iterdeploy::pddl::parse_problem(text("b1 b2").as_bytes(), "a", &domain).unwrap();
    let b = iterdeploy::pddl::parse_problem(text("b2 b1 b3").as_bytes(), "b", &domain).unwrap();
    let env = Deployment::build(&domain, &[a, b], 4, 10_000).unwrap();
    let names = |x: usize| -> Vec<&str> {
        env.tasks[x].state_features[0]
            .iter()
            .map(|&f| env.fact_names[f as usize].as_str())
            .collect()
    };
    let (mut na, mut nb) = (names(0), names(1));
    na.sort_unstable();
    nb.retain(|n| !n.contains("b3"));
    nb.sort_unstable();
    assert_eq!(na, nb);
    assert_eq!(env.tasks[0].goal_features, env.tasks[1].goal_features);
    assert!(env.fact_names.iter().any(|n| n == "(on b2 b1)"));
}

/// The score memo of the Monte-Carlo checks returns what the wrapped
/// policy computes, serves repeats from memory, and forgets on a new θ.
#[test]
fn score_memo_matches_the_wrapped_policy_and_forgets_on_new_parameters() {
    use iterdeploy::policy::ScoreMemo;
    let env = blocks_env(3, 2, 6);
    let mut rng = iterdeploy::rng::seeded(8);
    let mlp = Mlp::new(&env, 6, 0.8, 1.0, 2.0, &mut rng);
    let mut memo = ScoreMemo::new(mlp.clone_box());
    let table = PolicyTable::new(&mlp, &env);
    let traces: Vec<Trace> = (0..40)
        .map(|i| sample_trace(&env, &table, i % 2, &mut rng))
        .collect();
    let score = |p: &dyn Policy| {
        let mut g = vec![0.0; p.num_params()];
        for (i, t) in traces.iter().enumerate() {
            t.accumulate_score(&env, p, 0.5 + i as f64, &mut g);
        }
        g
    };
    let want = score(&mlp);
    let got = score(&memo);
    let (_, rel) = errors(&got, &want, 1e-12);
    assert!(rel < 1e-12, "memo differs from the policy: {rel}");
    let distinct: std::collections::HashSet<_> = traces
        .iter()
        .flat_map(|t| t.steps.iter().map(move |&(s, a)| (t.task, s, a)))
        .collect();
    assert_eq!(memo.len(), distinct.len());
    memo.params_mut()[0] += 0.25;
    assert!(memo.is_empty(), "a new θ must forget the stored scores");
}
