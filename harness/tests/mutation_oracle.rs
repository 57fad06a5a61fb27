//! The oracle `cargo mutants` judges each mutant of `driver-core` by (`.cargo/mutants.toml`):
//! the shipped scenario suite, CI's fixed-seed fuzz campaign and tool validation's defects on
//! the sim rig, and the reference and protection scenarios on the emu rig with the board ELF
//! (every state and stop reason the core reports), run by the `iohil` binary built from the
//! mutant. A mutant is killed when any of them fails.
//!
//! The emu run matters for the core's telemetry side: the ELF was built from the unmutated
//! core, so a mutated frame layout, event bit, state or stop-reason code in the harness's
//! decoder shows as a disagreement with the firmware (the decoder refuses codes and bits it
//! does not know); on the sim rig both sides share the mutant.
//!
//! Ignored in the ordinary test run (the test suite already runs each of them, in more detail);
//! `cargo mutants` runs it with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `iohil` with `args` (reports under `reports`) and asserts that it exits 0.
fn iohil_passes(args: &[&str], reports: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(args)
        .arg("--reports")
        .arg(reports)
        .current_dir(repo_root())
        .output()
        .expect("run iohil");
    assert!(
        output.status.success(),
        "iohil {} exited {:?}\n{}\n{}",
        args.join(" "),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The board ELF the emu run uses: `IOHIL_BOARD_ELF`, else the release build of
/// `firmware-under-test/board/build.sh`. Missing is an error, not a skip: a skipped run would
/// let every telemetry mutant survive and lower the score for a reason that is not the suite's.
fn board_elf() -> PathBuf {
    let elf = std::env::var_os("IOHIL_BOARD_ELF").map_or_else(
        || {
            repo_root()
                .join("firmware-under-test/board/target/thumbv7m-none-eabi/release/iohil-board")
        },
        PathBuf::from,
    );
    assert!(
        elf.is_file(),
        "no board ELF at {}: build it with firmware-under-test/board/build.sh or set IOHIL_BOARD_ELF",
        elf.display()
    );
    elf
}

#[test]
#[ignore = "the oracle of `cargo mutants` (.cargo/mutants.toml); the test suite runs each in detail"]
fn the_scenario_suite_the_ci_fuzz_campaign_validation_and_the_emu_runs_pass() {
    let elf = board_elf();
    let reports = tempfile::tempdir().expect("temp dir");
    // Exactly those FAILs the known-anomaly register covers are accepted; a register entry that
    // no longer reproduces is an error, so a mutant that changes them is killed too.
    iohil_passes(
        &[
            "run",
            "scenarios/",
            "--accept-known-anomalies",
            "--no-progress",
        ],
        reports.path(),
    );
    iohil_passes(
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
    // Tool validation's sim defects (without `--elf`): a mutant of a seeded-defect tuning
    // (`Config::LEGACY`, `Config::WINDOWED_ONLY`) that the suite no longer catches is killed.
    iohil_passes(&["validate"], reports.path());
    let elf = elf.to_str().expect("UTF-8 ELF path");
    iohil_passes(
        &[
            "run",
            "scenarios/reference",
            "scenarios/protections",
            "--rig",
            "emu",
            "--elf",
            elf,
            "--no-progress",
        ],
        reports.path(),
    );
}
