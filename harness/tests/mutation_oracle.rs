//! The oracle `cargo mutants` judges each mutant of `driver-core` by (`.cargo/mutants.toml`):
//! the shipped scenario suite and CI's fixed-seed fuzz campaign, run by the `iohil` binary
//! built from the mutant. A mutant is killed when either fails.
//!
//! Ignored in the ordinary test run (the test suite already runs both, in more detail);
//! `cargo mutants` runs it with `--include-ignored`.

use std::path::Path;
use std::process::Command;

fn iohil(args: &[&str], reports: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(args)
        .arg("--reports")
        .arg(reports)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run iohil")
}

#[test]
#[ignore = "the oracle of `cargo mutants` (.cargo/mutants.toml); the suite runs both in detail"]
fn the_scenario_suite_and_the_ci_fuzz_campaign_pass() {
    let reports = tempfile::tempdir().expect("temp dir");
    // Exactly those FAILs the known-anomaly register covers are accepted; a register entry that
    // no longer reproduces is an error, so a mutant that changes them is killed too.
    let run = iohil(
        &[
            "run",
            "scenarios/",
            "--accept-known-anomalies",
            "--no-progress",
        ],
        reports.path(),
    );
    assert!(
        run.status.success(),
        "iohil run scenarios/ exited {:?}\n{}",
        run.status.code(),
        String::from_utf8_lossy(&run.stdout)
    );
    let fuzz = iohil(
        &[
            "fuzz",
            "--cases",
            "20000",
            "--seed",
            "1",
            "--jobs",
            "2",
            "--no-promote",
            "--no-progress",
        ],
        reports.path(),
    );
    assert!(
        fuzz.status.success(),
        "iohil fuzz exited {:?}\n{}",
        fuzz.status.code(),
        String::from_utf8_lossy(&fuzz.stdout)
    );
}
