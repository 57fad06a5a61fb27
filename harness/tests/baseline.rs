//! Baseline comparison: a run against itself, against a slower detector, acceptance records,
//! and the command line's exit codes.

use std::path::{Path, PathBuf};
use std::process::Command;

use driver_core::Config;
use iohil::baseline::{
    accept, compare, load_baseline, load_tolerances, Acceptance, Baseline, Change, Tolerances,
};
use iohil::rig::SimRig;
use iohil::run::{run_suite, RunOptions, RunResults};
use iohil::scenario::load::load_suite;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tolerances() -> Tolerances {
    load_tolerances(&repo().join("scenarios/tolerances.yaml")).expect("shipped tolerances load")
}

fn run_reference(config: Config, reports: &Path, run_id: &str) -> RunResults {
    let suite = load_suite(&[repo().join("scenarios/reference")]).expect("suite");
    let options = RunOptions {
        reports_dir: reports.to_owned(),
        run_id: Some(run_id.to_owned()),
    };
    run_suite(
        &suite,
        &mut SimRig::with_config(config),
        &options,
        |_, _| {},
    )
    .expect("run")
    .1
}

#[test]
fn a_run_compared_with_itself_shows_no_regression() {
    let reports = tempfile::tempdir().expect("tempdir");
    let results = run_reference(Config::DEFAULT, reports.path(), "self");
    let baseline = Baseline::from_results(&results, None);
    let comparison = compare(&results, &baseline, Path::new("self"), &tolerances(), false);
    assert_eq!(comparison.regressions, 0);
    assert_eq!(comparison.improvements, 0);
    // Every scenario was compared on every tolerated metric that it measured.
    assert!(
        comparison.rows.len() >= 5 * 8 * 2,
        "{} rows",
        comparison.rows.len()
    );
    assert!(comparison.rows.iter().all(|r| r.change == Change::Within));
    assert!(comparison.not_in_baseline.is_empty());
    assert_eq!(comparison.exit_code(0), 0);
}

#[test]
fn a_slower_detector_shows_regressions_per_metric_with_the_tolerance_exceeded() {
    let reports = tempfile::tempdir().expect("tempdir");
    let shipped = run_reference(Config::DEFAULT, reports.path(), "shipped");
    // Four more confirmation ticks: 4 ms later on every profile, still inside every limit.
    let slower_config = Config {
        confirm_ticks: driver_core::CONFIRM_TICKS + 4,
        ..Config::DEFAULT
    };
    let slower = run_reference(slower_config, reports.path(), "slower");
    assert_eq!(
        slower.summary.exit_code, 0,
        "the slower detector still passes every limit"
    );

    let baseline = Baseline::from_results(&shipped, None);
    let comparison = compare(
        &slower,
        &baseline,
        Path::new("shipped"),
        &tolerances(),
        false,
    );
    for scenario in &slower.scenarios {
        let latency: Vec<_> = comparison
            .rows
            .iter()
            .filter(|r| r.scenario == scenario.id && r.metric == "detection_latency_ms")
            .collect();
        assert_eq!(latency.len(), 2, "mean and max of {}", scenario.id);
        for row in latency {
            assert_eq!(row.change, Change::Regression, "{}", row.detail);
            assert_eq!(row.requirement.as_deref(), Some("SR-01"));
            assert!(
                (row.current - row.baseline - 4.0).abs() < 0.5,
                "{}",
                row.detail
            );
            assert!(row.current - row.baseline > row.tolerance);
            // The tolerance is the larger of 0.5 ms and 5 % of the baseline value.
            assert!((row.tolerance - (0.5f64).max(0.05 * row.baseline)).abs() < 1e-9);
            assert!(
                row.detail
                    .contains(&format!("tolerance +-{:.3} ms", row.tolerance)),
                "{}",
                row.detail
            );
        }
    }
    assert!(comparison
        .rows
        .iter()
        .any(|r| r.metric == "time_to_stop_ms" && r.change == Change::Regression));
    // No verdict changed, and nothing about the bone moved.
    assert!(comparison
        .rows
        .iter()
        .filter(|r| r.metric == "verdict" || r.metric == "cortex_torque_nmm")
        .all(|r| r.change == Change::Within));
    assert_eq!(comparison.exit_code(0), 1);
    let text = comparison.text();
    assert!(text.contains("REGRESSION"), "{text}");
    assert!(text.contains("detection_latency_ms max"), "{text}");

    // The same comparison marked informational keeps the exit code.
    let informational = compare(
        &slower,
        &baseline,
        Path::new("shipped"),
        &tolerances(),
        true,
    );
    assert_eq!(informational.exit_code(0), 0);
    // And the other way round it is an improvement.
    let reverse = compare(
        &shipped,
        &Baseline::from_results(&slower, None),
        Path::new("slower"),
        &tolerances(),
        false,
    );
    assert_eq!(reverse.regressions, 0);
    assert!(reverse.improvements >= 10);
}

#[test]
fn accept_records_who_when_and_why_and_refuses_an_incomplete_run() {
    let reports = tempfile::tempdir().expect("tempdir");
    run_reference(Config::DEFAULT, reports.path(), "accepted");
    let output = reports.path().join("baselines/sim.json");
    let acceptance = Acceptance {
        by: "V. Engineer".to_owned(),
        utc: "2026-11-23T12:00:00Z".to_owned(),
        reason: "release candidate 0.1 verified".to_owned(),
    };
    accept(
        &reports.path().join("accepted"),
        &output,
        acceptance.clone(),
    )
    .expect("accept");
    let baseline = load_baseline(&output).expect("baseline file");
    assert_eq!(baseline.accepted, Some(acceptance));
    assert_eq!(baseline.run_id, "accepted");
    assert_eq!(baseline.scenarios.len(), 5);

    // An interrupted run says complete: false and cannot become a baseline.
    let results_path = reports.path().join("accepted/results.json");
    let text = std::fs::read_to_string(&results_path).expect("results");
    std::fs::write(
        &results_path,
        text.replace("\"complete\": true", "\"complete\": false"),
    )
    .expect("write");
    let error = accept(
        &reports.path().join("accepted"),
        &output,
        Acceptance {
            by: "x".to_owned(),
            utc: "x".to_owned(),
            reason: "x".to_owned(),
        },
    )
    .expect_err("incomplete run refused");
    assert!(error.to_string().contains("incomplete"), "{error}");
}

fn iohil(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("iohil runs")
}

#[test]
fn run_with_a_baseline_reports_regressions_in_console_and_results_and_exits_1() {
    let reports = tempfile::tempdir().expect("tempdir");
    let dir = reports.path().to_str().expect("utf-8");
    let scenario = "scenarios/reference/osteoporotic-tibia.yaml";
    let out = iohil(&[
        "run",
        scenario,
        "--reports",
        dir,
        "--run-id",
        "base",
        "--no-progress",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let baseline_file = reports.path().join("sim.json");
    let out = iohil(&[
        "baseline",
        "accept",
        &format!("{dir}/base"),
        "--reason",
        "test baseline",
        "--by",
        "ci",
        "--output",
        baseline_file.to_str().expect("utf-8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Pretend the accepted firmware detected 3 ms sooner: this run is then 3 ms slower.
    let mut baseline: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline_file).expect("read"))
            .expect("json");
    let latency = &mut baseline["scenarios"]["osteoporotic-tibia-nominal"]["statistics"]
        ["detection_latency_ms"];
    for key in ["mean", "max", "min", "p95", "p99"] {
        let value = latency[key].as_f64().expect("number");
        latency[key] = serde_json::json!(value - 3.0);
    }
    std::fs::write(
        &baseline_file,
        serde_json::to_vec_pretty(&baseline).expect("json"),
    )
    .expect("write");

    let baseline_arg = baseline_file.to_str().expect("utf-8");
    let out = iohil(&[
        "run",
        scenario,
        "--reports",
        dir,
        "--run-id",
        "cmp",
        "--no-progress",
        "--baseline",
        baseline_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    assert!(stdout.contains("accepted by ci"), "{stdout}");
    let results = RunResults::read(&reports.path().join("cmp/results.json")).expect("results");
    let comparison = results
        .baseline_comparison
        .expect("comparison recorded in results.json");
    assert_eq!(comparison.regressions, 2);
    assert_eq!(results.summary.exit_code, 1);

    let out = iohil(&[
        "run",
        scenario,
        "--reports",
        dir,
        "--run-id",
        "info",
        "--no-progress",
        "--baseline",
        baseline_arg,
        "--informational",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("informational"), "{stdout}");

    // A baseline that does not exist is a usage error and nothing runs.
    let out = iohil(&[
        "run",
        scenario,
        "--reports",
        dir,
        "--run-id",
        "none",
        "--baseline",
        "no/such/baseline.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!reports.path().join("none").exists());
}
