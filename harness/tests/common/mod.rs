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

/// A board ELF for the tests that need one: `$variable`, else `default` under the repository.
/// Missing, the test prints `skipped` and gets `None`, unless `IOHIL_REQUIRE_BOARD_ELF=1`
/// (set by `.ci/run`, which builds the ELFs first): then a missing ELF fails the test.
pub fn board_elf(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(default));
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("IOHIL_REQUIRE_BOARD_ELF").as_deref() != Ok("1"),
        "IOHIL_REQUIRE_BOARD_ELF=1 but {} is missing",
        path.display()
    );
    eprintln!(
        "skipped: no board ELF at {} (firmware-under-test/board/build.sh)",
        path.display()
    );
    None
}

/// Loads the scenarios under `dir` and runs them on the sim rig with `config`, evidence in a
/// temporary directory.
pub fn run_on_sim(dir: &Path, config: driver_core::Config) -> iohil::run::RunResults {
    let suite = iohil::scenario::load::load_suite(&[dir.to_owned()]).expect("the scenarios load");
    let reports = tempfile::tempdir().expect("tempdir");
    let options = iohil::run::RunOptions {
        reports_dir: reports.path().to_owned(),
        run_id: Some("run".to_owned()),
    };
    let mut rig = iohil::rig::SimRig::with_config(config);
    let (_, results) = iohil::run::run_suite(&suite, &mut rig, &options, |_, _| {}).expect("run");
    results
}
