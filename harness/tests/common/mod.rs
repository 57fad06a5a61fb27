//! Helpers shared by the integration tests (each test crate uses a subset).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `iohil` binary in `cwd`.
pub fn iohil_in(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("iohil runs")
}

/// Runs the `iohil` binary at the repository root.
pub fn iohil(args: &[&str]) -> Output {
    iohil_in(args, &repo())
}

/// Command output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
