//! Summaries over seeds: mean with a two-sided 95% Student-t confidence
//! interval,
//!   mean ± t_{0.975, n−1} · s / √n,   s² = Σ (v − mean)² / (n − 1),
//! the interval the figures draw as bands. With one seed the interval is
//! undefined (NaN bounds); NaN values (a metric undefined for a seed, e.g.
//! the mean length of valid plans when there were none) are left out.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and 95% interval of the finite values among `values`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// Number of finite values used.
    pub n: usize,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// The interval intersected with [lo, hi], for a quantity that cannot
    /// leave it (a probability's t-interval over 2 seeds can reach −0.3).
    pub fn clipped(self, lo: f64, hi: f64) -> Interval {
        Interval {
            low: self.low.clamp(lo, hi),
            high: self.high.clamp(lo, hi),
            ..self
        }
    }
}

pub fn mean_ci95(values: &[f64]) -> Interval {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    if n == 0 {
        return Interval {
            n,
            mean: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let mean = v.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Interval {
            n,
            mean,
            low: f64::NAN,
            high: f64::NAN,
        };
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .expect("n ≥ 2 gives positive degrees of freedom")
        .inverse_cdf(0.975);
    let half = t * (var / n as f64).sqrt();
    Interval {
        n,
        mean,
        low: mean - half,
        high: mean + half,
    }
}

/// Median of `values` (mean of the middle two for an even count; NaN for
/// none). Benchmarks report it over repeated rounds: one slow round from a
/// noisy machine moves it less than the mean.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three values 1, 2, 3: mean 2, s = 1, t_{0.975,2} = 4.302653 (tables).
    #[test]
    fn three_values_match_the_t_table() {
        let i = mean_ci95(&[1.0, 2.0, 3.0]);
        let half = 4.302_652_7 / 3f64.sqrt();
        assert_eq!(i.n, 3);
        approx::assert_relative_eq!(i.mean, 2.0, max_relative = crate::tolerance::EXACT_REL);
        // `half` uses a t quantile from tables, given to 7 digits.
        approx::assert_abs_diff_eq!(i.high, 2.0 + half, epsilon = 1e-6);
        approx::assert_abs_diff_eq!(i.low, 2.0 - half, epsilon = 1e-6);
    }

    #[test]
    fn nan_values_are_left_out_and_one_value_has_no_interval() {
        let i = mean_ci95(&[f64::NAN, 5.0]);
        assert_eq!(i.n, 1);
        assert_eq!(i.mean, 5.0);
        assert!(i.low.is_nan() && i.high.is_nan());
    }

    #[test]
    fn median_of_odd_even_and_empty_lists() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }
}
