//! Curation rules as implicit rewards. Each rule that keeps traces from N
//! samples of a task becomes, in expectation, a *length weight* w(L) on
//! valid traces of plan length L: the expected SFT gradient of the kept
//! set is E_{y~β}[w(|y|) R(y) ∇ log π_θ(y)] (see `proofs/P04`, `P05`).

/// Which traces of a task's N samples enter the training pool.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Every sample, valid or not (plain imitation of the policy).
    None,
    /// Every valid sample.
    #[value(name = "all", alias = "all-valid")]
    #[serde(alias = "all")]
    AllValid,
    /// One valid sample per task, uniformly among the valid ones.
    #[value(name = "one", alias = "one-per-task")]
    #[serde(alias = "one")]
    OnePerTask,
    /// The valid sample with the shortest plan (ties uniform; the bridge
    /// breaks them by fewer reasoning tokens, as the paper does).
    #[value(name = "shortest", alias = "shortest-per-task")]
    #[serde(alias = "shortest")]
    ShortestPerTask,
}

impl Rule {
    /// A human label for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Rule::None => "no curation",
            Rule::AllValid => "all valid",
            Rule::OnePerTask => "one valid per task",
            Rule::ShortestPerTask => "shortest valid per task",
        }
    }
}

/// w(L) for `rule` with `n` samples of a task whose valid-length law under
/// the behaviour is `q[L]` = P(valid, plan length L), L = 0..=H.
/// Returns None for [`Rule::None`] (not a function of validity).
pub fn length_weights(rule: Rule, n: usize, q: &[f64]) -> Option<Vec<f64>> {
    let nf = n as f64;
    match rule {
        Rule::None => None,
        // E[Σ_i R_i g_i] = N E[R g].
        Rule::AllValid => Some(vec![nf; q.len()]),
        // P(kept = y) = β(y) (1 − (1−p)^N) / p.
        Rule::OnePerTask => {
            let p: f64 = q.iter().sum();
            Some(vec![power_gap_ratio(1.0, p, n); q.len()])
        }
        // P(kept = y) = β(y) [(1 − Q_{<L})^N − (1 − Q_{≤L})^N] / q_L.
        Rule::ShortestPerTask => {
            let mut below = 0.0f64;
            Some(
                q.iter()
                    .map(|&ql| {
                        // With no mass at this length the weight never
                        // multiplies anything; power_gap_ratio returns
                        // its limit q_L → 0.
                        let w = power_gap_ratio((1.0 - below).max(0.0), ql, n);
                        below += ql;
                        w
                    })
                    .collect(),
            )
        }
    }
}

/// (aⁿ − (a − q)ⁿ) / q for 0 ≤ q ≤ a ≤ 1, and its limit n·aⁿ⁻¹ at q = 0.
///
/// The direct form cancels catastrophically when q is far below a: at
/// q = 1e-20 both powers round to the same f64 and the weight of a valid
/// (if rare) length came out as exactly 0. Written as
/// aⁿ⁻¹ · (1 − (1 − t)ⁿ) / t with t = q/a and 1 − (1 − t)ⁿ =
/// −expm1(n · ln1p(−t)), it keeps full relative precision for every t.
fn power_gap_ratio(a: f64, q: f64, n: usize) -> f64 {
    let nf = n as f64;
    if n == 0 {
        return 0.0;
    }
    if a <= 0.0 {
        // a = 0 forces q = 0: no samples can be invalid-or-longer.
        return if n == 1 { 1.0 } else { 0.0 };
    }
    let t = (q / a).clamp(0.0, 1.0);
    let head = a.powi(n as i32 - 1);
    if t == 0.0 {
        return nf * head;
    }
    head * -(nf * (-t).ln_1p()).exp_m1() / t
}

/// Training pool across generations.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Pool {
    /// Curate over the samples of every generation so far (the paper).
    Accumulate,
    /// Curate over the last generation's samples only.
    Replace,
}

impl Pool {
    /// A human label for tables and legends.
    pub fn label(self) -> &'static str {
        match self {
            Pool::Accumulate => "accumulate",
            Pool::Replace => "replace",
        }
    }
}

/// Length weights per behaviour generation for the paper's rule pooled over
/// generations: `n[j]` samples per task from generation j (valid-length
/// laws `q[j][L]`), one trace kept per task — the shortest valid one among
/// *all* samples, ties uniform. For a valid trace y of length L,
///
///   P(kept = y) = Σ_j β_j(y) · w_j(L),
///   w_j(L) = n_j ∫₀¹ Π_{j'} (r_{j'}(L) + u·q_{j'}(L))^{n_{j'} − [j'=j]} du,
///
/// with r_{j'}(L) = 1 − Q_{j',≤L} (invalid or longer). The integral is
/// E[1/(1+M)] for the M other samples tied at length L, via
/// 1/(1+M) = ∫₀¹ u^M du; it is evaluated exactly by expanding the
/// polynomial in u. With one generation this is [`length_weights`] for
/// [`Rule::ShortestPerTask`] (see `proofs/P08`).
// `j` and `l` index the weights and the laws together.
#[allow(clippy::needless_range_loop)]
pub fn pooled_shortest_weights(n: &[usize], q: &[Vec<f64>]) -> Vec<Vec<f64>> {
    assert_eq!(n.len(), q.len(), "one sample count per generation");
    let gens = q.len();
    let len = q.first().map_or(0, Vec::len);
    let mut below = vec![0.0f64; gens];
    let mut out = vec![vec![0.0; len]; gens];
    for l in 0..len {
        for j in 0..gens {
            // A generation with no samples keeps nothing (and has no
            // `n_j − 1` other samples to count).
            if n[j] == 0 {
                continue;
            }
            // Polynomial in u: Π_{j'} (r + u q)^{m}, coefficients by degree.
            let mut poly = vec![1.0f64];
            for jj in 0..gens {
                let ql = q[jj][l];
                let r = (1.0 - below[jj] - ql).max(0.0);
                let m = n[jj] - usize::from(jj == j);
                for _ in 0..m {
                    let mut next = vec![0.0; poly.len() + 1];
                    for (d, &c) in poly.iter().enumerate() {
                        next[d] += c * r;
                        next[d + 1] += c * ql;
                    }
                    poly = next;
                }
            }
            let integral: f64 = poly
                .iter()
                .enumerate()
                .map(|(d, c)| c / (d + 1) as f64)
                .sum();
            out[j][l] = n[j] as f64 * integral;
        }
        for jj in 0..gens {
            below[jj] += q[jj][l];
        }
    }
    out
}

/// A sample as curation sees it: which task, whether the validator
/// accepted it, its plan length, and a key that orders ties among the
/// shortest (the bridge: fewer reasoning tokens, then file order; the
/// simulator: a random key drawn at sampling time, so ties are uniform).
pub trait Candidate {
    fn task(&self) -> usize;
    fn accepted(&self) -> bool;
    fn plan_length(&self) -> usize;
    fn tie_key(&self) -> (u64, usize, usize);
}

/// The kept samples of `generations` (oldest first) under `rule` and
/// `pool`, in (task, generation, position) order. [`Rule::OnePerTask`]
/// picks uniformly with stream (`seed`, task).
pub fn select<C: Candidate>(generations: &[Vec<C>], rule: Rule, pool: Pool, seed: u64) -> Vec<&C> {
    use rand::RngExt;
    let pooled: Vec<&C> = match pool {
        Pool::Accumulate => generations.iter().flatten().collect(),
        Pool::Replace => generations.last().into_iter().flatten().collect(),
    };
    let mut by_task: std::collections::BTreeMap<usize, Vec<&C>> = Default::default();
    for s in pooled {
        if s.accepted() || rule == Rule::None {
            by_task.entry(s.task()).or_default().push(s);
        }
    }
    let mut kept = Vec::new();
    for (task, group) in by_task {
        match rule {
            Rule::None | Rule::AllValid => kept.extend(group),
            Rule::ShortestPerTask => {
                kept.extend(
                    group
                        .into_iter()
                        .min_by_key(|s| (s.plan_length(), s.tie_key())),
                );
            }
            Rule::OnePerTask => {
                let mut rng = crate::rng::stream(seed, task as u64);
                kept.push(group[rng.random_range(0..group.len())]);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (aⁿ − bⁿ)/(a − b) = Σ_{k<n} aᵏ bⁿ⁻¹⁻ᵏ: a sum of non-negative terms,
    /// free of cancellation — the reference for the closed form, which is
    /// what scales to n = 10⁵.
    fn by_sum(a: f64, q: f64, n: usize) -> f64 {
        let b = a - q;
        (0..n)
            .map(|k| a.powi(k as i32) * b.powi((n - 1 - k) as i32))
            .sum()
    }

    #[test]
    fn power_gap_ratio_keeps_precision_for_rare_lengths() {
        for &(a, q) in &[
            (1.0, 0.5),
            (0.53, 1e-8),
            (0.53, 2e-20),
            (0.53, 3e-32),
            (0.2, 0.2),
            (1.0, 1e-300),
            (0.7, 0.0),
        ] {
            for n in [1usize, 2, 3, 8, 40] {
                let got = power_gap_ratio(a, q, n);
                let want = by_sum(a, q, n);
                assert!(
                    (got - want).abs() <= 1e-13 * want.abs().max(1e-300),
                    "a={a} q={q} n={n}: {got} vs {want}"
                );
            }
        }
    }

    /// A generation with no samples gets weight 0 and does not change the
    /// others' weights (it used to underflow `n_j − 1` and, in release,
    /// loop for ever).
    #[test]
    fn a_generation_without_samples_keeps_nothing() {
        let q = vec![vec![0.0, 0.2, 0.1], vec![0.0, 0.3, 0.0]];
        let w = pooled_shortest_weights(&[0, 2], &q);
        assert_eq!(w[0], vec![0.0; 3]);
        let alone = pooled_shortest_weights(&[2], &q[1..]);
        assert_eq!(w[1], alone[0]);
        assert_eq!(pooled_shortest_weights(&[0], &q[..1]), vec![vec![0.0; 3]]);
    }

    /// The shortest-per-task weight of a length with almost no mass is the
    /// (positive) chance that no other sample is valid and shorter, not 0.
    #[test]
    fn rare_lengths_keep_their_weight() {
        let q = [0.0, 0.47, 1.7e-8, 5.9e-13, 2.2e-20, 7.4e-25, 2.7e-32];
        let w = length_weights(Rule::ShortestPerTask, 2, &q).unwrap();
        let rest = 1.0 - 0.47 - 1.7e-8 - 5.9e-13;
        for (l, wl) in w.iter().enumerate().skip(4) {
            assert!((wl - 2.0 * rest).abs() < 1e-12, "w[{l}] = {wl}");
        }
        let one = length_weights(Rule::OnePerTask, 3, &[1e-30]).unwrap();
        assert!((one[0] - 3.0).abs() < 1e-12, "{one:?}");
    }
}
