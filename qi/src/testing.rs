//! Helpers for the crate's unit tests.

/// A fresh, empty scratch folder for one test: `name` and the process id keep concurrent tests
/// and test runs apart; whatever an earlier run left there is removed first.
pub(crate) fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("qi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
