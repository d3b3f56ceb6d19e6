//! P03: the paper's Proposition 2 under each reading of λ (see
//! `proofs/P03-proposition-2-by-reading.md`). The paper's form is
//! REINFORCE under π_θ with R_eff = R[(1−λ) + λ β/π_θ], i.e. the vector
//! (1−λ)·A + λ·B with A = Σ_x μ E_π[R ∇log π_θ] and B = Σ_x μ E_β[R ∇log π_θ].
//! Each reading defines a different true SFT gradient:
//!
//! * (a) keep-all pool, λ = share of β's samples, unnormalised sum: truth
//!   (1−λ)A + λB, so the paper's form is exact;
//! * (b) λ-mixture of the valid-conditional laws joint over tasks,
//!   p⁺ ∝ μπR and μβR: truth (1−λ)A/J_π + λB/J_β;
//! * (c) the same per task: truth Σ_x μ_x [(1−λ)A_x/Z_π(x) + λB_x/Z_β(x)];
//! * (d) λ ∈ {0, 1}: one law only.
//!
//! Every truth is computed by enumerating the valid traces; every form
//! by dynamic programming.

use super::prelude::*;
use super::*;

/// The λ of the drift sweep, and the behaviours' noise scales.
const LAMBDA: f64 = 0.5;
const SIGMAS: [f64; 4] = [0.0, 0.3, 1.0, 3.0];
/// The drift at which the single-law readings (λ ∈ {0, 1}) are checked.
const SIGMA_ENDPOINTS: f64 = 1.0;

/// Per-task score sums of one behaviour: row x is μ_x E_b[R ∇log π_θ | x].
pub(super) struct PerTask(Vec<Vec<f64>>);

impl PerTask {
    pub(super) fn of(env: &Deployment, beh: &PolicyTable, target: &dyn Policy) -> Self {
        let ones = vec![vec![1.0; env.horizon + 1]; env.tasks.len()];
        PerTask(
            (0..env.tasks.len())
                .map(|x| {
                    let mut coef = vec![0.0; env.tasks.len()];
                    coef[x] = env.mu[x];
                    exact::weighted_score(env, beh, target, &coef, &ones)
                })
                .collect(),
        )
    }

    /// Σ_x c_x · row_x.
    pub(super) fn combine(&self, c: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.0[0].len()];
        for (row, &cx) in self.0.iter().zip(c) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += cx * v;
            }
        }
        out
    }
}

pub(super) fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `form` scaled by the positive factor that brings it closest to `truth`
/// (least squares): what "equal up to scale" is measured with.
fn best_scaled(form: &[f64], truth: &[f64]) -> Vec<f64> {
    let c = dot(form, truth) / dot(form, form);
    form.iter().map(|v| v * c.max(0.0)).collect()
}

impl Ctx<'_> {
    /// Row: `form` equals `truth` up to one positive factor, asserted
    /// (`assert`) or reported; the error is that of the best-scaled form.
    fn up_to_scale(&self, quantity: &str, form: &[f64], truth: &[f64], assert: bool) -> Check {
        let mut c = self.check(
            "P03",
            quantity,
            &best_scaled(form, truth),
            truth,
            EXACT_REL,
            EXACT_ABS,
        );
        c.cosine = cosine(form, truth);
        if !assert {
            c.tolerance = "reported".into();
            c.status = Status::Reported;
        } else {
            c.tolerance = format!("rel {EXACT_REL:.0e} up to scale");
        }
        c
    }

    /// Row: `form` equals `truth` exactly (no scale), asserted.
    fn exactly(&self, quantity: &str, form: &[f64], truth: &[f64]) -> Check {
        let mut c = self.check("P03", quantity, form, truth, EXACT_REL, EXACT_ABS);
        c.cosine = cosine(form, truth);
        c
    }

    /// Σ_x Σ_{y valid} weight(x, π(y), β(y)) ∇log π_θ(y), by enumeration.
    fn enumerate(
        &self,
        policy: &dyn Policy,
        pi: &PolicyTable,
        beta: &PolicyTable,
        weight: &dyn Fn(usize, f64, f64) -> f64,
    ) -> Result<Vec<f64>> {
        let env = self.env;
        let mut g = vec![0.0; policy.num_params()];
        for x in 0..env.tasks.len() {
            for y in self.valid_traces(x)? {
                let pi_y = trace_log_prob(env, pi, x, &y).exp();
                let beta_y = trace_log_prob(env, beta, x, &y).exp();
                score(env, policy, x, &y, weight(x, pi_y, beta_y), &mut g);
            }
        }
        Ok(g)
    }

    pub(super) fn p03(
        &self,
        policy: &dyn Policy,
        make: &dyn Fn() -> Box<dyn Policy>,
    ) -> Result<Vec<Check>> {
        let env = self.env;
        let mut rng = crate::rng::stream(self.seed, 103);
        let pi_table = PolicyTable::new(policy, env);
        let z_pi = exact::success_probabilities(env, &pi_table);
        let mut checks = Vec::new();
        // The valid-conditional law itself: Σ_x μ E_{π(·|x,R=1)}[∇log π_θ].
        let conditional = self.enumerate(policy, &pi_table, &pi_table, &|x, p, _| {
            env.mu[x] * p / z_pi[x]
        })?;
        checks.push(self.check(
            "P03",
            "valid-conditional score E[grad log pi given R=1]: DP vs enumeration",
            &exact::valid_conditional_score(env, &pi_table, policy),
            &conditional,
            EXACT_REL,
            EXACT_ABS,
        ));
        let a = PerTask::of(env, &pi_table, policy);
        let mut sweep: Vec<(f64, f64)> = SIGMAS.iter().map(|&s| (s, LAMBDA)).collect();
        sweep.extend([(SIGMA_ENDPOINTS, 0.0), (SIGMA_ENDPOINTS, 1.0)]);
        // Each σ draws its behaviour once; the endpoint rows reuse σ = 1's.
        let mut behaviours: Vec<(f64, Box<dyn Policy>)> = Vec::new();
        for &(sigma, lambda) in &sweep {
            let beta = match behaviours.iter().find(|(s, _)| *s == sigma) {
                Some((_, b)) => b.clone_box(),
                None => {
                    let b = with_params(make, &perturbed(policy, sigma, &mut rng));
                    behaviours.push((sigma, b.clone_box()));
                    b
                }
            };
            let beta_table = PolicyTable::new(&*beta, env);
            let z_beta = exact::success_probabilities(env, &beta_table);
            let tag = format!("sigma={sigma}, lambda={lambda}");
            if let Some(x) = (0..env.tasks.len()).find(|&x| z_pi[x] <= 0.0 || z_beta[x] <= 0.0) {
                checks.push(self.skipped(
                    "P03",
                    &tag,
                    &format!(
                        "task {x} has Z_pi = {:.3e}, Z_beta = {:.3e}: the valid-conditional laws are undefined",
                        z_pi[x], z_beta[x]
                    ),
                ));
                continue;
            }
            let b = PerTask::of(env, &beta_table, policy);
            checks.extend(self.p03_readings(
                policy,
                &pi_table,
                &beta_table,
                &a,
                &b,
                &z_beta,
                &z_pi,
                lambda,
                &tag,
            )?);
        }
        Ok(checks)
    }

    /// The rows of one (β, λ): every reading's exact identity, and the
    /// paper's form against every reading's truth.
    #[allow(clippy::too_many_arguments)]
    fn p03_readings(
        &self,
        policy: &dyn Policy,
        pi: &PolicyTable,
        beta: &PolicyTable,
        a: &PerTask,
        b: &PerTask,
        z_beta: &[f64],
        z_pi: &[f64],
        lambda: f64,
        tag: &str,
    ) -> Result<Vec<Check>> {
        let env = self.env;
        let k = env.tasks.len();
        let mu = &env.mu;
        let j_pi: f64 = (0..k).map(|x| mu[x] * z_pi[x]).sum();
        let j_beta: f64 = (0..k).map(|x| mu[x] * z_beta[x]).sum();
        let uniform = |c: f64| vec![c; k];
        // The paper's form, by DP: (1−λ)A + λB.
        let paper = add(
            &a.combine(&uniform(1.0 - lambda)),
            &b.combine(&uniform(lambda)),
        );
        let mut rows = Vec::new();
        let endpoint = lambda == 0.0 || lambda == 1.0;

        // (a) Keep-all pool with a share λ of β's samples, summed.
        let pool = self.enumerate(policy, pi, beta, &|x, p, q| {
            mu[x] * ((1.0 - lambda) * p + lambda * q)
        })?;
        rows.push(self.exactly(
            &format!("{tag}, reading (a) keep-all pool: paper's form vs the pool's expected sum"),
            &paper,
            &pool,
        ));

        // (b) Joint valid-conditional mixture.
        let joint = self.enumerate(policy, pi, beta, &|x, p, q| {
            mu[x] * ((1.0 - lambda) * p / j_pi + lambda * q / j_beta)
        })?;
        let corrected_b = add(
            &a.combine(&uniform((1.0 - lambda) / j_pi)),
            &b.combine(&uniform(lambda / j_beta)),
        );
        if !endpoint {
            rows.push(self.exactly(&format!("{tag}, reading (b) joint laws: corrected form (1/J_pi, 1/J_beta) vs enumeration"), &corrected_b, &joint));
        }
        // Exact up to scale iff J_π = J_β, or λ ∈ {0, 1} (or A ∥ B).
        let equal_j = (j_pi - j_beta).abs() <= EXACT_REL * j_pi.max(j_beta);
        rows.push(self.up_to_scale(
            &format!("{tag}, reading (b) joint laws (J_pi={j_pi:.4}, J_beta={j_beta:.4}): paper's form vs truth"),
            &paper,
            &joint,
            endpoint || equal_j,
        ));

        // (c) Per-task valid-conditional mixture.
        let per_task = self.enumerate(policy, pi, beta, &|x, p, q| {
            mu[x] * ((1.0 - lambda) * p / z_pi[x] + lambda * q / z_beta[x])
        })?;
        let corrected_c = add(
            &a.combine(&z_pi.iter().map(|z| (1.0 - lambda) / z).collect::<Vec<_>>()),
            &b.combine(&z_beta.iter().map(|z| lambda / z).collect::<Vec<_>>()),
        );
        if !endpoint {
            rows.push(self.exactly(&format!("{tag}, reading (c) per-task laws: corrected form (Z_pi(x)/Z_beta(x), 1/Z_pi(x)) vs enumeration"), &corrected_c, &per_task));
        }
        rows.push(self.up_to_scale(
            &format!("{tag}, reading (c) per-task laws: paper's form vs truth"),
            &paper,
            &per_task,
            // One task: the task weighting is a single scale, so only the
            // ratio can tilt the form, and it is 1 when Z_π = Z_β.
            k == 1 && (endpoint || (z_pi[0] - z_beta[0]).abs() <= EXACT_REL * z_pi[0]),
        ));
        if endpoint {
            // One law: the paper's form is Σ_x Z(x)·(task x's truth), so
            // it is exact up to one scale per task, and up to a single
            // scale only when Z is the same on every task.
            let z = if lambda == 0.0 { z_pi } else { z_beta };
            let rescaled = self.enumerate(policy, pi, beta, &|x, p, q| {
                mu[x] * z[x] * ((1.0 - lambda) * p / z_pi[x] + lambda * q / z_beta[x])
            })?;
            rows.push(self.exactly(
                &format!("{tag}, reading (d) one law, per task: paper's form vs sum_x Z(x) x task x's truth"),
                &paper,
                &rescaled,
            ));
        } else {
            // Which of the two corrections the error comes from: restore
            // the ratio Z_π(x)/Z_β(x) only (task weights still Z_π(x)), or
            // the task weight 1/Z_π(x) only (ratio still missing).
            let ratio_only = add(
                &a.combine(&uniform(1.0 - lambda)),
                &b.combine(
                    &(0..k)
                        .map(|x| lambda * z_pi[x] / z_beta[x])
                        .collect::<Vec<_>>(),
                ),
            );
            rows.push(self.up_to_scale(
                &format!("{tag}, reading (c): paper's form with Z_pi(x)/Z_beta(x) restored, task weighting not (error = task weighting alone)"),
                &ratio_only,
                &per_task,
                false,
            ));
            let weight_only = add(
                &a.combine(&z_pi.iter().map(|z| (1.0 - lambda) / z).collect::<Vec<_>>()),
                &b.combine(&z_pi.iter().map(|z| lambda / z).collect::<Vec<_>>()),
            );
            rows.push(self.up_to_scale(
                &format!("{tag}, reading (c): paper's form with 1/Z_pi(x) restored, ratio not (error = missing ratio alone)"),
                &weight_only,
                &per_task,
                false,
            ));
        }
        Ok(rows)
    }
}
