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
        eprintln!(
            "SKIP: {} is absent (the shared benchmark folder lives beside the checkout)",
            root.display()
        );
        None
    }
}

pub fn read(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
