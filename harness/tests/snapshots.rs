//! Review snapshots: one per scenario file, of the rounded result summary (state sequence,
//! stop reasons and faults, measured values, verdicts). A detector change that still passes
//! every limit shows up here as a diff. Review changes with `cargo insta review`; in CI
//! (`CI=true`) a changed or missing snapshot fails the test and nothing is written.

use std::path::{Path, PathBuf};

use driver_core::Config;
use iohil::rig::SimRig;
use iohil::run::{run_suite, RunOptions};
use iohil::scenario::load::load_suite;
use iohil::snapshot::{read_trace, scenario_summary};

/// Runs the scenario file on `rig` and returns each scenario's snapshot text.
fn summaries(path: &Path, rig: &mut SimRig) -> Vec<(String, String)> {
    let suite =
        load_suite(&[path.to_owned()]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reports = tempfile::tempdir().expect("tempdir");
    let options = RunOptions {
        reports_dir: reports.path().to_owned(),
        run_id: Some("snapshot".to_owned()),
    };
    let (run_dir, results) = run_suite(&suite, rig, &options, |_, _| {}).expect("run");
    results
        .scenarios
        .iter()
        .map(|s| {
            let traces: Vec<_> = s
                .trials
                .iter()
                .map(|t| read_trace(&run_dir, &t.trace_file).expect("trace"))
                .collect();
            (s.id.clone(), scenario_summary(s, &traces))
        })
        .collect()
}

fn is_scenario_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !matches!(
        name,
        "requirements.yaml" | "profiles.yaml" | "tolerances.yaml" | "anomalies.yaml"
    )
}

#[test]
fn every_scenario_file_matches_its_snapshot() {
    insta::glob!("../../scenarios", "**/*.yaml", |path| {
        if !is_scenario_file(path) {
            return;
        }
        for (_, summary) in summaries(path, &mut SimRig::default()) {
            insta::assert_snapshot!(summary);
        }
    });
}

fn adult_reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/reference/adult-proximal-tibia.yaml")
}

/// What a reviewer sees when a detector constant changes: the stored snapshot no longer
/// matches, and the diff names the moved values.
#[test]
fn a_slower_detector_changes_the_snapshot_with_a_readable_diff() {
    let shipped = summaries(&adult_reference(), &mut SimRig::default());
    let slower = summaries(
        &adult_reference(),
        &mut SimRig::with_config(Config {
            confirm_ticks: driver_core::CONFIRM_TICKS + 4,
            ..Config::DEFAULT
        }),
    );
    let (before, after) = (&shipped[0].1, &slower[0].1);
    // The stored snapshot is the shipped firmware's summary, which the slower one does not match.
    let stored = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots/snapshots__every_scenario_file_matches_its_snapshot@reference__adult-proximal-tibia.yaml.snap"),
    )
    .expect("stored snapshot of the adult reference");
    let stored_body = stored
        .splitn(3, "---")
        .nth(2)
        .expect("snapshot body")
        .trim();
    assert_eq!(
        stored_body,
        before.trim(),
        "shipped firmware matches the stored snapshot"
    );
    assert_ne!(stored_body, after.trim(), "a slower detector does not");

    let diff = similar::TextDiff::from_lines(before.as_str(), after.as_str())
        .unified_diff()
        .header("stored snapshot", "slower detector")
        .to_string();
    println!("{diff}");
    let removed: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .collect();
    let added: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .collect();
    assert!(
        removed.iter().any(|l| l.contains("latency 5.6 ms")),
        "{diff}"
    );
    assert!(added.iter().any(|l| l.contains("latency 9.6 ms")), "{diff}");
    assert!(
        added.iter().any(|l| l.contains("SR-01 PASS 9.6 ms")),
        "{diff}"
    );
}
