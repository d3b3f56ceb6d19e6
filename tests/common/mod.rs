//! Helpers shared by the test modules.

use std::path::PathBuf;

/// `../shared/benchmarks/ipc2023-learning` beside the checkout, or None
/// (tests that need it print why they skip).
pub fn ipc_benchmarks() -> Option<PathBuf> {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks/ipc2023-learning");
    if root.is_dir() {
        Some(root)
    } else {
        skip_or_fail(&format!(
            "{} is absent (the shared benchmark folder lives beside the checkout)",
            root.display()
        ));
        None
    }
}

/// Outside CI a test whose data is absent says why and skips. Under
/// `CI=true` it fails instead: CI has `../shared` and the fetched model,
/// so an absence there is a broken setup, not a reason to pass.
pub fn skip_or_fail(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {why}: CI must not skip this test");
    }
    eprintln!("SKIP: {why}");
}

pub fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What the binary's `main` does first
/// (`iterdeploy::policy::transformer::prepare_cpu_process`): with
/// `RAYON_NUM_THREADS` unset, candle re-reads the CPU topology from /proc on
/// every matmul, which made the transformer tests spend most of their time
/// in the kernel. Tests that run the transformer call this first. Setting
/// the variable while other test threads run is sound here because every
/// reader in this binary goes through `std::env`, which serialises access.
pub fn candle_cpu() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(iterdeploy::policy::transformer::prepare_cpu_process);
}
