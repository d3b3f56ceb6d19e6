//! One test per claim of `proofs/`, each running the claim's checks on the
//! built-in settings (toy chain, 3-block Blocksworld, 5×5 Sokoban; tabular
//! and MLP policies), plus the test that keeps `proofs/README.md`, the
//! proof files and these tests consistent.

use iterdeploy::verify::{self, Check};

fn run_claim(claim: &str) -> Vec<Check> {
    let settings = verify::default_settings().unwrap();
    let checks = verify::run(&[claim.to_string()], &settings, 2026).unwrap();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok())
        .map(|c| {
            format!(
                "{} / {} / {}: abs {:e}, rel {:e}",
                c.setting, c.policy, c.quantity, c.max_abs_error, c.max_rel_error
            )
        })
        .collect();
    assert!(failed.is_empty(), "{claim} failed:\n{}", failed.join("\n"));
    // Every setting and policy kind the claim applies to produced checks
    // (P06 is about full-capacity tabular policies).
    let kinds: &[&str] = if claim == "P06" {
        &["tabular"]
    } else {
        &["tabular", "mlp"]
    };
    for s in &settings {
        for &kind in kinds {
            assert!(
                checks
                    .iter()
                    .any(|c| c.setting == s.name && c.policy == kind),
                "{claim}: no check ran for {} / {kind}",
                s.name
            );
        }
    }
    checks
}

/// proofs/P01-sft-is-scaled-reinforce.md, steps 1–2.
#[test]
fn p01_sft_is_scaled_reinforce_on_every_batch() {
    let checks = run_claim("P01");
    // Batches without a valid trace are skipped (N⁺ = 0); most have some.
    assert!(
        checks.len() >= 12,
        "only {} batches had valid traces",
        checks.len()
    );
}

/// proofs/P02-off-policy-pool.md, steps 2–4.
#[test]
fn p02_off_policy_pool_is_reverse_weighted_reinforce() {
    let checks = run_claim("P02");
    assert!(
        checks
            .iter()
            .any(|c| c.quantity.contains("finite differences"))
    );
}

/// proofs/P03-proposition-2-by-reading.md: every reading of λ, each with
/// its own exact identity and the paper's form measured against it.

#[test]
fn p03_proposition_2_reading_by_reading() {
    use iterdeploy::verify::Status;
    let checks = run_claim("P03");
    let rows = |setting: &str, policy: &str, prefix: &str, reading: &str| -> Vec<&Check> {
        checks
            .iter()
            .filter(|c| {
                c.setting.starts_with(setting)
                    && c.policy == policy
                    && c.quantity.starts_with(prefix)
                    && c.quantity.contains(reading)
            })
            .collect()
    };
    let one = |setting: &str, policy: &str, prefix: &str, reading: &str| -> &Check {
        let r = rows(setting, policy, prefix, reading);
        assert_eq!(r.len(), 1, "{setting}/{policy}/{prefix}/{reading}: {r:?}");
        r[0]
    };
    for s in ["toy chain", "blocksworld", "sokoban"] {
        for p in ["tabular", "mlp"] {
            // (a) keep-all pool: the paper's form is the pool's gradient,
            // asserted unscaled at every drift.
            for sigma in ["sigma=0,", "sigma=0.3,", "sigma=1,", "sigma=3,"] {
                let a = one(s, p, &format!("{sigma} lambda=0.5"), "reading (a)");
                assert_eq!(a.status, Status::Pass, "{a:?}");
            }
            // (b) joint laws at β = π: J_π = J_β, so exact up to scale.
            let b0 = one(s, p, "sigma=0, lambda=0.5", "reading (b) joint laws (");
            assert_eq!(b0.status, Status::Pass, "{b0:?}");
            assert!((b0.cosine - 1.0).abs() < 1e-10, "{b0:?}");
            // (d) one law: exact up to scale in (b), and per task in (c).
            for lambda in ["lambda=0,", "lambda=1,"] {
                let b = one(s, p, &format!("sigma=1, {lambda}"), "reading (b)");
                assert_eq!(b.status, Status::Pass, "{b:?}");
                let d = one(s, p, &format!("sigma=1, {lambda}"), "reading (d)");
                assert_eq!(d.status, Status::Pass, "{d:?}");
            }
        }
    }
    // (c) per task on the two-task chain at β = π: the paper's form
    // points elsewhere, and all of it is the 1/Z_π(x) task weighting —
    // restoring that weight alone gives the truth's direction.
    let c = one(
        "toy chain",
        "tabular",
        "sigma=0, lambda=0.5",
        "reading (c) per-task laws: paper",
    );
    assert_eq!(c.status, Status::Reported);
    assert!(
        c.cosine < 0.99,
        "expected a visibly different direction: {c:?}"
    );
    let w = one(
        "toy chain",
        "tabular",
        "sigma=0, lambda=0.5",
        "1/Z_pi(x) restored",
    );
    assert!((w.cosine - 1.0).abs() < 1e-10, "{w:?}");
    // With one task (Sokoban) the task weighting is a single scale: at
    // β = π reading (c) is exact up to scale, and asserted.
    let single = one(
        "sokoban",
        "tabular",
        "sigma=0, lambda=0.5",
        "reading (c) per-task laws: paper",
    );
    assert_eq!(single.status, Status::Pass, "{single:?}");
}

/// proofs/P04-one-per-task-pass-at-j.md, steps 1–5.
#[test]
fn p04_one_per_task_is_the_gradient_of_harmonic_pass_at_j() {
    let checks = run_claim("P04");
    assert!(checks.iter().any(|c| c.quantity.contains("brute force")));
    assert!(checks.iter().any(|c| c.quantity.contains("grad E log p")));
}

/// proofs/P05-shortest-per-task-length-reward.md, steps 1–5.
#[test]
fn p05_shortest_per_task_rewards_short_plans() {
    let checks = run_claim("P05");
    assert!(checks.iter().any(|c| c.quantity.contains("brute force")));
}

/// proofs/P06-policy-improvement.md, steps 1–5.
#[test]
fn p06_ml_fit_improves_success_unless_the_filter_is_a_proxy() {
    use iterdeploy::verify::Status;
    let checks = run_claim("P06");
    assert!(
        checks
            .iter()
            .any(|c| c.quantity.starts_with("counterexample") && c.status == Status::Pass),
        "no counterexample ran"
    );
    assert_eq!(
        checks
            .iter()
            .filter(|c| c.quantity.contains("maximum-likelihood tabular fits")
                && c.status == Status::Pass)
            .count(),
        3
    );
}

/// proofs/P07-mc-estimators-unbiased.md.
#[test]
fn p07_mc_estimators_match_their_expectations() {
    let checks = run_claim("P07");
    assert_eq!(checks.len(), 3 * 2 * 4);
}

/// proofs/P09-shortest-per-task-is-no-gradient.md: the gradient fields'
/// Jacobians are symmetric, the shortest-per-task field's is not, on every
/// setting and policy, for N = 2, 3, 5; the exact (chain-rule) asymmetry
/// and the finite-difference one agree on every row.
#[test]
fn p09_shortest_per_task_is_no_gradient() {
    use iterdeploy::tolerance::{ASYMMETRY_AGREE, ASYMMETRY_MIN};
    use iterdeploy::verify::Status;
    let checks = run_claim("P09");
    // The exact asymmetry a row reports ("exact 3.835e-2 [").
    let exact = |c: &Check| -> f64 {
        let rest = c.quantity.split("exact ").nth(1).expect("an exact value");
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    let moving: Vec<&Check> = checks
        .iter()
        .filter(|c| c.quantity.contains("w(L; theta) (not a gradient"))
        .collect();
    // 3 settings x 2 policies x N in {2, 3, 5}, all asserted.
    assert_eq!(moving.len(), 18, "{moving:?}");
    for c in &moving {
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.tolerance.starts_with("exact >="), "{c:?}");
        assert!(exact(c) >= ASYMMETRY_MIN, "{c:?}");
    }
    let gradients: Vec<&Check> = checks
        .iter()
        .filter(|c| c.tolerance.starts_with("exact <="))
        .collect();
    assert_eq!(gradients.len(), 30);
    for c in &gradients {
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(exact(c), 0.0, "{c:?}");
    }
    // Large N, reported: the asymmetry falls toward the gradient limit
    // (on the chain's tabular policy 5.9e-3 at N = 50, 4.8e-10 at 200).
    let large = |n: usize| -> Vec<f64> {
        checks
            .iter()
            .filter(|c| {
                c.quantity
                    .contains(&format!("N={n}, weights w(L; theta) (large N)"))
            })
            .map(|c| {
                assert_eq!(c.status, Status::Reported, "{c:?}");
                exact(c)
            })
            .collect()
    };
    let (n50, n200) = (large(50), large(200));
    assert_eq!((n50.len(), n200.len()), (6, 6));
    for (a, b) in n50.iter().zip(&n200) {
        assert!(b < a || *a == 0.0, "N=50: {a}, N=200: {b}");
    }
    for c in &checks {
        assert!(c.max_abs_error <= ASYMMETRY_AGREE, "{c:?}");
    }
}

/// proofs/P10-retraining-from-base.md: the exact identities of one epoch
/// at θ_k and at θ_0, the start-independent limit, and the monotone
/// approach to it (tabular policies, every built-in setting).
#[test]
fn p10_retraining_from_base_is_an_ml_fit_in_the_limit() {
    use iterdeploy::verify::Status;
    let settings = verify::default_settings().unwrap();
    let checks = verify::run(&["P10".to_string()], &settings, 2026).unwrap();
    assert!(checks.iter().all(|c| c.ok()), "{checks:#?}");
    for s in &settings {
        let of = |needle: &str| {
            checks
                .iter()
                .filter(|c| c.setting == s.name && c.quantity.contains(needle))
                .collect::<Vec<_>>()
        };
        for needle in [
            "one epoch at theta_k",
            "one epoch from base",
            "K -> infinity",
        ] {
            let rows = of(needle);
            assert_eq!(rows.len(), 1, "{}: {needle}", s.name);
            assert_eq!(rows[0].status, Status::Pass);
        }
        assert_eq!(of("the ML fit bounds every iterate").len(), 2);
        // With θ_k produced by the loop (one generation), one epoch from
        // base is a reset: it moves along θ_0 − θ_k, against ∇J(θ_k), and
        // J falls; one epoch at θ_k is close to REINFORCE at θ_k.
        let k1 = |start: &str| {
            of(&format!("K=1 epochs from {start} "))
                .first()
                .map(|c| (c.cosine, c.quantity.clone()))
                .unwrap()
        };
        let reset_cos = |q: &str| -> f64 {
            q.split("cos(theta_K - theta_k, theta_0 - theta_k) ")
                .nth(1)
                .and_then(|t| t.split(';').next())
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("no reset cosine in {q}"))
        };
        let (cos_base, q_base) = k1("base");
        assert!(reset_cos(&q_base) > 0.9, "{}: {q_base}", s.name);
        assert!(cos_base < -0.9, "{}: {q_base}", s.name);
        let (cos_k, q_k) = k1("theta_k");
        assert!(cos_k > 0.9, "{}: {q_k}", s.name);
    }
}

/// The index in proofs/README.md names every proof file and every pNN test,
/// and nothing else.
#[test]
fn proofs_index_matches_files_and_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let index = std::fs::read_to_string(root.join("proofs/README.md")).unwrap();
    let tests_src = std::fs::read_to_string(root.join("tests/proofs.rs")).unwrap();
    let rows: Vec<Vec<&str>> = index
        .lines()
        .filter(|l| l.starts_with("| P"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert!(!rows.is_empty());
    let mut listed_tests = Vec::new();
    for row in &rows {
        let claim = row[1];
        let file = row[3].split("](").nth(1).unwrap().trim_end_matches(')');
        assert!(file.starts_with(claim), "{claim}: file {file}");
        let text = std::fs::read_to_string(root.join("proofs").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let test = row[4].trim_matches('`');
        assert!(
            test.starts_with(&claim.to_lowercase()),
            "{claim}: test {test}"
        );
        assert!(
            tests_src.contains(&format!("fn {test}()")),
            "{claim}: no test fn {test}"
        );
        assert!(text.contains(test), "{file} does not name its test {test}");
        for heading in [
            "## Claim",
            "## Assumptions",
            "## Derivation",
            "## What is checked numerically",
            "## Checked by",
            "## Figure",
        ] {
            assert!(text.contains(heading), "{file} lacks {heading}");
        }
        assert!(row[5].contains(&format!("--claim {claim}")));
        assert!(
            iterdeploy::verify::CLAIMS.contains(&claim),
            "{claim} unknown to verify"
        );
        listed_tests.push(test.to_string());
    }
    // Every pNN test is listed, and every proof file is indexed.
    for line in tests_src.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("fn p")
            .and_then(|r| r.split('(').next())
        {
            let name = format!("p{name}");
            if name.chars().nth(1).is_some_and(|c| c.is_ascii_digit()) {
                assert!(
                    listed_tests.contains(&name),
                    "test {name} is not in proofs/README.md"
                );
            }
        }
    }
    for entry in std::fs::read_dir(root.join("proofs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with('P') {
            assert!(
                index.contains(&format!("]({name})")),
                "{name} is not indexed"
            );
        }
    }
    assert_eq!(rows.len(), iterdeploy::verify::CLAIMS.len());
}

/// proofs/P08-pooled-curation-across-generations.md, steps 1–6.
#[test]
fn p08_pooled_curation_is_length_weighted_reinforce() {
    use iterdeploy::verify::Status;
    let checks = run_claim("P08");
    let brute = checks
        .iter()
        .filter(|c| c.quantity.contains("brute force") && c.status == Status::Pass)
        .count();
    // 3 rules × 2 pools × 3 sample-count patterns on the two small
    // settings, both policies (Sokoban has too many valid traces: skipped).
    assert_eq!(brute, 3 * 2 * 3 * 2 * 2);
}

/// The claims' figures (`verify --out`): each is drawn from a CSV beside
/// it, and the CSV says what the claim says — P01 batch by batch, P03's
/// keep-all reading exact and the joint reading exact at β = π, P06 up
/// under validity and down under the proxy, the rules against ∇J.
#[test]
fn claim_figures_show_what_the_claims_state() {
    use approx::assert_relative_eq;
    use iterdeploy::tolerance::{EXACT_ABS, EXACT_REL};
    let dir = std::env::temp_dir().join(format!("iterdeploy-claim-figs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let settings = verify::default_settings().unwrap();
    let stems = verify::figures::write(&dir, &settings, 2026).unwrap();
    assert_eq!(stems.len(), 4);
    for stem in &stems {
        for ext in ["png", "svg", "csv"] {
            assert!(dir.join(format!("{stem}.{ext}")).is_file(), "{stem}.{ext}");
        }
    }
    let rows = |stem: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(dir.join(format!("{stem}.csv")))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let num = |s: &str| s.parse::<f64>().unwrap();
    let p01 = rows("p01_sft_vs_reinforce");
    assert!(p01.len() > 100, "{} batches", p01.len());
    for r in &p01 {
        assert_relative_eq!(num(&r[5]), num(&r[4]), max_relative = EXACT_REL);
        assert_relative_eq!(num(&r[6]), 1.0, epsilon = EXACT_ABS);
        // The plotted residual is round-off.
        assert!(num(&r[7]) <= EXACT_REL, "{r:?}");
    }
    let p03 = rows("p03_readings");
    assert_eq!(num(&p03[0][0]), 0.0, "the sweep starts at β = π");
    assert_relative_eq!(num(&p03[0][5]), 1.0, epsilon = EXACT_ABS);
    for r in &p03 {
        assert_eq!(num(&r[4]), 1.0);
    }
    let last = p03.last().unwrap();
    assert!(num(&last[1]) > 1.0, "β drifts away: KL {}", last[1]);
    assert!(num(&last[5]) < 0.99 && num(&last[6]) < 0.99, "{last:?}");
    // P06: per (filter, task), p over the EM steps.
    let p06 = rows("p06_em_steps");
    let series = |filter: &str, task: &str| -> Vec<f64> {
        p06.iter()
            .filter(|r| r[0] == filter && r[2] == task)
            .map(|r| num(&r[3]))
            .collect()
    };
    let tasks: std::collections::BTreeSet<&str> = p06
        .iter()
        .filter(|r| r[0] == "validity filter")
        .map(|r| r[2].as_str())
        .collect();
    // The proxy's own score rises under its fit.
    let score = series("proxy score under the proxy fit", "mean over tasks");
    assert!(
        score.len() > 2 && score.last().unwrap() > &score[0],
        "{score:?}"
    );
    let mut proxy_falls = false;
    for t in tasks {
        let v = series("validity filter", t);
        assert!(v.windows(2).all(|w| w[1] >= w[0] - EXACT_ABS), "{t}: {v:?}");
        let p = series("proxy: any answer of ≤ H−2 steps", t);
        proxy_falls |= p.last().unwrap() < &(p[0] - 0.1);
    }
    assert!(proxy_falls, "the proxy lowers some task's success");
    let rules = rows("rules_vs_gradient");
    for r in &rules {
        let c = num(&r[2]);
        if r[0] == "all valid" || (r[0] == "one valid per task" && r[1] == "1") {
            assert_relative_eq!(c, 1.0, epsilon = EXACT_ABS);
        } else if r[1] == "16" {
            assert!(c < 1.0 - 1e-4, "{r:?}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
