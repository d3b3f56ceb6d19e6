//! What iterdeploy refuses to attempt, and why. Every size a user can type
//! (a horizon, a hidden width, a sample count, a time limit) is checked
//! against these before anything is allocated or run, and the refusal
//! names the field, the value and the estimate it was refused on.

use crate::{Error, Result};

/// Memory one run may plan for: a third of the 24 GiB these machines have,
/// leaving room for the OS, a parallel build and a second run.
pub const MEMORY_BUDGET_BYTES: f64 = 8.0 * GIB;

const GIB: f64 = (1u64 << 30) as f64;

/// The largest horizon (maximum plan length) of a deployment: every exact
/// computation keeps (H+1) × states numbers per task. IPC-sized tasks here
/// have optimal plans of tens of steps, so this is far above any useful
/// horizon, and it keeps (H+1) from overflowing anything.
pub const MAX_HORIZON: usize = 10_000;

/// This process's peak resident memory so far (VmHWM of
/// `/proc/self/status`), where the system says.
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes per trainable parameter: the f64 weights, their gradient and the
/// two Adam moments.
pub const BYTES_PER_PARAMETER: f64 = 32.0;

/// Sampling temperatures outside [MIN_TEMPERATURE, MAX_TEMPERATURE] are
/// degenerate (argmax or uniform in all but name), and logits / τ overflow
/// f64 long before τ reaches 1e-300.
pub const MIN_TEMPERATURE: f64 = 1e-3;
pub const MAX_TEMPERATURE: f64 = 1e3;

/// The longest time limit a planner or generator accepts, in seconds
/// (about 116 days); `Duration` and `Instant` overflow not far beyond.
pub const MAX_TIME_LIMIT_SECONDS: f64 = 1e7;

/// The most tasks (deployed, held out and base, all buckets together) one
/// run may ask for: each is generated, grounded and solved by the
/// reference planner before the first generation, so 10⁵ small tasks
/// already take hours; beyond that a typo, not an experiment, is likely.
pub const MAX_TASKS: usize = 100_000;

/// The most passes (training epochs, or independent repetitions of an
/// estimate) one field may ask for: even a one-task run would take days
/// beyond this, with no progress to show until it ends.
pub const MAX_PASSES: usize = 100_000;

/// The deepest transformer (layers) a spec may ask for. candle's backward
/// pass walks the graph recursively, so depth costs stack: 2,048 layers
/// trained on a 2 MiB worker stack here and 8,192 overflowed it (an abort,
/// not an error). Useful depths for these tasks are 1–8.
pub const MAX_LAYERS: usize = 1024;

/// Refuses `field = value` above `max`; `why` names what the count costs.
pub fn check_count(field: &str, value: usize, max: usize, why: &str) -> Result<()> {
    if value <= max {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{field} = {value} is above the largest supported, {max} ({why})"
    )))
}

/// Refuses `what` if `bytes` exceeds the budget; `how` says how the
/// estimate was formed.
pub fn check_memory(what: &str, bytes: f64, how: &str) -> Result<()> {
    if bytes.is_finite() && bytes <= MEMORY_BUDGET_BYTES {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{what} would need about {} ({how}), more than the {:.0} GiB a run may use",
        human_bytes(bytes),
        MEMORY_BUDGET_BYTES / GIB
    )))
}

fn human_bytes(b: f64) -> String {
    if !b.is_finite() || b > 1e18 {
        format!("{b:.1e} bytes")
    } else if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    }
}

/// A time limit in seconds as a `Duration`, for `flag`; a clear error for
/// zero, negative, NaN or absurdly large values.
pub fn time_limit(flag: &str, seconds: f64) -> Result<std::time::Duration> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIME_LIMIT_SECONDS) {
        return Err(Error::Invalid(format!(
            "{flag} must be a number of seconds in (0, {MAX_TIME_LIMIT_SECONDS:e}], got {seconds}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// A sampling temperature for `field`, checked against the bounds above.
pub fn check_temperature(field: &str, tau: f64) -> Result<()> {
    if tau.is_finite() && (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&tau) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field} = {tau} must be in [{MIN_TEMPERATURE:e}, {MAX_TEMPERATURE:e}]"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_refuse_with_the_value_and_the_estimate() {
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e20, 1e300] {
            let e = time_limit("--time-limit", t).unwrap_err().to_string();
            assert!(e.contains("--time-limit"), "{e}");
        }
        assert_eq!(time_limit("--time-limit", 2.5).unwrap().as_millis(), 2500);
        let e = check_memory("policy.hidden = 1e11", 3.2e12, "parameters x 32 bytes").unwrap_err();
        assert!(e.to_string().contains("policy.hidden = 1e11") && e.to_string().contains("GiB"));
        assert!(check_memory("x", 1e6, "y").is_ok());
        assert!(check_memory("x", f64::NAN, "y").is_err());
        for tau in [1e-300, 0.0, -1.0, f64::NAN, 1e9] {
            assert!(check_temperature("temperature", tau).is_err(), "{tau}");
        }
        assert!(check_temperature("temperature", 0.6).is_ok());
        let e = check_count("base.epochs", 1 << 40, MAX_PASSES, "passes").unwrap_err();
        assert!(e.to_string().contains("base.epochs = 1099511627776"), "{e}");
        assert!(check_count("base.epochs", MAX_PASSES, MAX_PASSES, "passes").is_ok());
    }
}
