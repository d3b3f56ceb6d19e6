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
    AllValid,
    /// One valid sample per task, uniformly among the valid ones.
    OnePerTask,
    /// The valid sample with the shortest plan (ties uniform).
    ShortestPerTask,
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
            let w = if p > 0.0 {
                (1.0 - (1.0 - p).powi(n as i32)) / p
            } else {
                nf
            };
            Some(vec![w; q.len()])
        }
        // P(kept = y) = β(y) [(1 − Q_{<L})^N − (1 − Q_{≤L})^N] / q_L.
        Rule::ShortestPerTask => {
            let mut below = 0.0f64;
            Some(
                q.iter()
                    .map(|&ql| {
                        let w = if ql > 0.0 {
                            ((1.0 - below).powi(n as i32) - (1.0 - below - ql).powi(n as i32)) / ql
                        } else {
                            // No mass at this length: the weight never
                            // multiplies anything; use its limit q_L → 0.
                            nf * (1.0 - below).powi(n as i32 - 1)
                        };
                        below += ql;
                        w
                    })
                    .collect(),
            )
        }
    }
}
