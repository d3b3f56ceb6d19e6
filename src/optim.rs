//! First-order optimisers over a flat parameter vector (the layout of
//! [`crate::policy::Policy::params`]). Every step is an *ascent* step on the
//! direction given (the estimators return ascent directions), optionally
//! clipped to a maximal global L2 norm first, and optionally with decoupled
//! weight decay (Loshchilov & Hutter 2019): θ ← θ − η λ θ at every step,
//! outside the adaptive scaling — Adam with λ > 0 is AdamW.

/// Which update rule.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// θ ← θ + η g.
    Sgd,
    /// Adam (Kingma & Ba 2015) with β1 = 0.9, β2 = 0.999, ε = 1e-8:
    ///   m ← β1 m + (1−β1) g,  v ← β2 v + (1−β2) g²,
    ///   θ ← θ + η m̂ / (√v̂ + ε)  with bias corrections m̂ = m/(1−β1ᵗ), v̂ = v/(1−β2ᵗ).
    Adam,
}

/// An optimiser with its state (moments and step count for Adam).
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    learning_rate: f64,
    max_norm: Option<f64>,
    weight_decay: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPSILON: f64 = 1e-8;

impl Optimizer {
    /// `max_norm`: clip the direction to this L2 norm before the step.
    pub fn new(kind: OptimizerKind, learning_rate: f64, max_norm: Option<f64>) -> Self {
        Optimizer {
            kind,
            learning_rate,
            max_norm,
            weight_decay: 0.0,
            m: Vec::new(),
            v: Vec::new(),
            t: 0,
        }
    }

    /// Decoupled weight decay λ ≥ 0 (0: none).
    pub fn with_weight_decay(mut self, lambda: f64) -> Self {
        self.weight_decay = lambda;
        self
    }

    /// θ ← θ(1 − ηλ) + step(g).
    pub fn ascend(&mut self, theta: &mut [f64], direction: &[f64]) {
        assert_eq!(
            theta.len(),
            direction.len(),
            "direction has the parameter layout"
        );
        let scale = match self.max_norm {
            Some(c) => {
                let norm = direction.iter().map(|g| g * g).sum::<f64>().sqrt();
                if norm > c { c / norm } else { 1.0 }
            }
            None => 1.0,
        };
        let lr = self.learning_rate;
        let keep = 1.0 - lr * self.weight_decay;
        match self.kind {
            OptimizerKind::Sgd => {
                for (p, g) in theta.iter_mut().zip(direction) {
                    *p = *p * keep + lr * scale * g;
                }
            }
            OptimizerKind::Adam => {
                if self.m.len() != theta.len() {
                    self.m = vec![0.0; theta.len()];
                    self.v = vec![0.0; theta.len()];
                }
                self.t += 1;
                let c1 = 1.0 - BETA1.powi(self.t);
                let c2 = 1.0 - BETA2.powi(self.t);
                let step = AdamStep {
                    scale,
                    keep,
                    lr,
                    c1,
                    c2,
                };
                let update = |theta: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]| {
                    adam_chunk(theta, g, m, v, step)
                };
                // Element-wise, so chunks on the rayon pool give the same
                // numbers as one loop; worth it only for large models (the
                // transformer benchmark's 453k parameters: the step's serial
                // tail).
                if theta.len() >= PARALLEL_MIN {
                    use rayon::prelude::*;
                    theta
                        .par_chunks_mut(PARALLEL_CHUNK)
                        .zip(direction.par_chunks(PARALLEL_CHUNK))
                        .zip(self.m.par_chunks_mut(PARALLEL_CHUNK))
                        .zip(self.v.par_chunks_mut(PARALLEL_CHUNK))
                        .for_each(|(((p, g), m), v)| update(p, g, m, v));
                } else {
                    update(theta, direction, &mut self.m, &mut self.v);
                }
            }
        }
    }
}

/// The numbers of one Adam step shared by every coordinate: the gradient's
/// clipping scale, the weight-decay factor, the learning rate and the bias
/// corrections 1 − β₁ᵗ, 1 − β₂ᵗ.
#[derive(Clone, Copy)]
struct AdamStep {
    scale: f64,
    keep: f64,
    lr: f64,
    c1: f64,
    c2: f64,
}

#[inline(always)]
fn adam_chunk_body(theta: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], s: AdamStep) {
    for ((p, g), (m, v)) in theta.iter_mut().zip(g).zip(m.iter_mut().zip(v.iter_mut())) {
        let g = g * s.scale;
        *m = BETA1 * *m + (1.0 - BETA1) * g;
        *v = BETA2 * *v + (1.0 - BETA2) * g * g;
        *p = *p * s.keep + s.lr * (*m / s.c1) / ((*v / s.c2).sqrt() + EPSILON);
    }
}

crate::simd::widest! {
    /// Adam on one chunk of coordinates, at the widest vector width (its
    /// divisions and square roots were the step's serial tail at SSE2's
    /// two f64 lanes); the same bits on every path.
    fn adam_chunk = adam_chunk_body(theta: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], s: AdamStep)
}

/// Parameter counts from which Adam's update runs in parallel chunks.
const PARALLEL_MIN: usize = 1 << 16;
const PARALLEL_CHUNK: usize = 1 << 14;

#[cfg(test)]
mod tests {
    use super::*;

    /// Adam at the widest vector width the CPU has gives the portable
    /// loop's bits.
    #[test]
    fn adam_at_the_widest_width_gives_the_portable_bits() {
        use rand::RngExt;
        let mut rng = crate::rng::stream(23, 0);
        let mut v =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let n = 1003;
        let (theta, g, m) = (v(n), v(n), v(n));
        let second: Vec<f64> = v(n).iter().map(|x| x * x).collect();
        let step = AdamStep {
            scale: 0.7,
            keep: 0.999,
            lr: 1e-3,
            c1: 0.19,
            c2: 0.002,
        };
        let run = |wide: bool| {
            let (mut p, mut m, mut s) = (theta.clone(), m.clone(), second.clone());
            if wide {
                adam_chunk(&mut p, &g, &mut m, &mut s, step);
            } else {
                adam_chunk_body(&mut p, &g, &mut m, &mut s, step);
            }
            [p, m, s].map(|x| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(run(true), run(false));
    }

    /// Adam's first step moves every coordinate by ±η (m̂/√v̂ = sign g).
    #[test]
    fn adam_first_step_is_signed_learning_rate() {
        let mut opt = Optimizer::new(OptimizerKind::Adam, 0.1, None);
        let mut theta = vec![0.0, 1.0, 2.0];
        opt.ascend(&mut theta, &[3.0, -0.5, 1e-3]);
        let expected = [0.1, 0.9, 2.1];
        for (a, b) in theta.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{theta:?}");
        }
    }

    /// AdamW: with a zero direction only the decay acts, θ ← θ(1 − ηλ) —
    /// decoupled from Adam's scaling (coupled L2 through the gradient would
    /// move every coordinate by ±η instead).
    #[test]
    fn adamw_decay_is_decoupled_from_the_adaptive_step() {
        let mut opt = Optimizer::new(OptimizerKind::Adam, 0.1, None).with_weight_decay(0.5);
        let mut theta = vec![2.0, -4.0];
        opt.ascend(&mut theta, &[0.0, 0.0]);
        assert!(
            (theta[0] - 1.9).abs() < 1e-12 && (theta[1] + 3.8).abs() < 1e-12,
            "{theta:?}"
        );
        opt.ascend(&mut theta, &[1.0, 1.0]);
        // Decay to 1.805 and −3.61, then Adam's +η·m̂/(√v̂+ε) ≈ +0.1·0.1/√0.001·... > 0.
        assert!(theta[0] > 1.805 && theta[1] > -3.61, "{theta:?}");
    }

    /// Large vectors update in parallel chunks; the numbers must be those of
    /// one serial loop: without clipping every coordinate is independent,
    /// so small optimisers on slices (serial path) are the reference.
    #[test]
    fn parallel_adam_equals_the_serial_loop() {
        let n = PARALLEL_MIN + 12_345;
        let mut rng = crate::rng::seeded(3);
        let draw = |rng: &mut crate::rng::Rng| -> Vec<f64> {
            use rand::RngExt;
            (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
        };
        let mut theta = draw(&mut rng);
        let mut slices: Vec<Vec<f64>> = theta.chunks(1000).map(<[f64]>::to_vec).collect();
        let mut big = Optimizer::new(OptimizerKind::Adam, 0.01, None).with_weight_decay(0.1);
        let mut small = vec![big.clone(); slices.len()];
        for _ in 0..3 {
            let g = draw(&mut rng);
            big.ascend(&mut theta, &g);
            for ((slice, opt), gs) in slices.iter_mut().zip(&mut small).zip(g.chunks(1000)) {
                opt.ascend(slice, gs);
            }
        }
        assert_eq!(theta, slices.concat());
    }

    /// Clipping scales the whole direction, not coordinates.
    #[test]
    fn sgd_clips_to_the_global_norm() {
        let mut opt = Optimizer::new(OptimizerKind::Sgd, 1.0, Some(1.0));
        let mut theta = vec![0.0, 0.0];
        opt.ascend(&mut theta, &[3.0, 4.0]);
        assert!((theta[0] - 0.6).abs() < 1e-12 && (theta[1] - 0.8).abs() < 1e-12);
    }
}
