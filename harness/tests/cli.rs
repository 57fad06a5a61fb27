//! The `iohil` binary as a user runs it: exit codes, output, evidence on disk.

mod common;
use common::{iohil_in, repo, text};

use std::path::Path;

/// A scratch suite: the shipped requirements and profiles, plus the given scenario files.
fn scratch_suite(requirements: &str, scenarios: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("requirements.yaml"), requirements).expect("write");
    std::fs::copy(
        repo().join("scenarios/profiles.yaml"),
        dir.path().join("profiles.yaml"),
    )
    .expect("copy");
    for (name, body) in scenarios {
        std::fs::write(dir.path().join(name), body).expect("write");
    }
    dir
}

fn shipped_requirements() -> String {
    std::fs::read_to_string(repo().join("scenarios/requirements.yaml")).expect("requirements")
}

const ADULT: &str = "format_version: 1
id: adult
title: Adult tibia
verifies: [SR-01, SR-03]
bone: { profile: adult-proximal-tibia }
";

#[test]
fn run_prints_tables_and_writes_evidence_with_exit_0() {
    let reports = tempfile::tempdir().expect("tempdir");
    let out = iohil_in(
        &[
            "run",
            "scenarios/reference/adult-proximal-tibia.yaml",
            "scenarios/protections/stall-locked-rotor.yaml",
            "--reports",
            reports.path().to_str().expect("utf-8 path"),
            "--run-id",
            "cli",
        ],
        &repo(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("adult-proximal-tibia-nominal"), "{stdout}");
    assert!(stdout.contains("detection latency"), "{stdout}");
    assert!(stdout.contains("SR-01  PASS"), "{stdout}");
    assert!(stdout.contains("SR-07  PASS"), "{stdout}");
    assert!(stdout.contains("overall: PASS"), "{stdout}");
    let run_dir = reports.path().join("cli");
    assert!(run_dir.join("results.json").is_file());
    assert!(run_dir
        .join("traces/adult-proximal-tibia-nominal/trial-0000.json")
        .is_file());
    let latest = std::fs::read_link(reports.path().join("latest")).expect("latest link");
    assert_eq!(latest, Path::new("cli"));
}

#[test]
fn a_fail_verdict_gives_exit_1() {
    // The shipped firmware detects the adult pop in about 10 ms: a 5 ms limit must fail.
    let requirements = shipped_requirements()
        .replace(
            "max_latency_ms: { value: 20, unit: ms }",
            "max_latency_ms: { value: 5, unit: ms }",
        )
        .replace(
            "p99_latency_ms: { value: 15, unit: ms }",
            "p99_latency_ms: { value: 4, unit: ms }",
        );
    let suite = scratch_suite(&requirements, &[("adult.yaml", ADULT)]);
    let out = iohil_in(&["run", ".", "--reports", "reports"], suite.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("SR-01  FAIL"), "{stdout}");
    assert!(stdout.contains("> 5 ms"), "{stdout}");
    assert!(stdout.contains("overall: FAIL"), "{stdout}");
}

#[test]
fn an_inconclusive_verdict_without_fail_gives_exit_3() {
    // SR-09 needs a trigger release; this scenario never releases.
    let scenario = ADULT.replace("verifies: [SR-01, SR-03]", "verifies: [SR-01, SR-09]");
    let suite = scratch_suite(&shipped_requirements(), &[("adult.yaml", &scenario)]);
    let out = iohil_in(&["run", ".", "--reports", "reports"], suite.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("SR-09  INCONCLUSIVE"), "{stdout}");
    assert!(stdout.contains("never released"), "{stdout}");
}

#[test]
fn bad_input_gives_exit_2_with_location_and_runs_nothing() {
    let bad = ADULT.replace("bone:", "operator: { pushn: 35 }\nbone:");
    let suite = scratch_suite(&shipped_requirements(), &[("bad.yaml", &bad)]);
    let out = iohil_in(&["run", ".", "--reports", "reports"], suite.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.yaml:5:"), "{stderr}");
    assert!(stderr.contains("unknown field `pushn`"), "{stderr}");
    assert!(stderr.contains("did you mean `push_n`?"), "{stderr}");
    assert!(stderr.contains("nothing was run"), "{stderr}");
    assert!(
        !suite.path().join("reports").exists(),
        "no evidence directory for a run that did not start"
    );

    let out = iohil_in(&["check", "."], suite.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_give_exit_2() {
    let out = iohil_in(&["run", "--rig", "warp"], &repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("warp"));
    let out = iohil_in(&["frobnicate"], &repo());
    assert_eq!(out.status.code(), Some(2));
    let out = iohil_in(&["run", "no/such/dir"], &repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no/such/dir"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_accepts_the_shipped_suite() {
    let out = iohil_in(&["check", "scenarios"], &repo());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("scenarios valid"));
}

#[test]
fn schema_is_json_schema_of_the_scenario_format() {
    let out = iohil_in(&["schema"], &repo());
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert!(schema["properties"]["operator"].is_object(), "{schema}");
    assert!(schema["required"]
        .as_array()
        .is_some_and(|r| r.iter().any(|v| v == "verifies")));
}

#[test]
fn fuzz_writes_its_campaign_as_evidence_and_shards_merge() {
    let reports = tempfile::tempdir().expect("tempdir");
    let dir = reports.path().to_str().expect("utf-8 path");
    for (shard, id) in [("1/2", "s1"), ("2/2", "s2")] {
        let out = iohil_in(
            &[
                "fuzz",
                "--cases",
                "6",
                "--jobs",
                "2",
                "--shard",
                shard,
                "--no-promote",
                "--no-progress",
                "--reports",
                dir,
                "--run-id",
                id,
            ],
            &repo(),
        );
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("verdict: PASS"), "{stdout}");
        assert!(reports.path().join(id).join("fuzz.json").is_file());
    }
    let out = iohil_in(
        &[
            "fuzz-merge",
            &format!("{dir}/s1"),
            &format!("{dir}/s2"),
            "--reports",
            dir,
            "--run-id",
            "merged",
        ],
        &repo(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("6 of 6 cases run (shards [1, 2] of 2)"),
        "{stdout}"
    );

    let out = iohil_in(&["fuzz", "--shard", "0/2"], &repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("K must be between 1 and N"));
    let out = iohil_in(&["fuzz", "--cases", "0"], &repo());
    assert_eq!(out.status.code(), Some(2), "an empty campaign is refused");
}

#[test]
fn sigint_mid_run_leaves_an_incomplete_run_with_exit_4_and_no_pass_verdict() {
    use iohil::run::RunResults;
    use iohil::verdict::Verdict;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    // A one-trial scenario that completes, then one of 10,000 planned trials (over a minute)
    // that the signal cuts off.
    let long = ADULT.replace("id: adult", "id: long").replace(
        "verifies: [SR-01, SR-03]",
        "verifies: [SR-01, SR-03, SR-05]",
    ) + "trials: 10000\n";
    let suite = scratch_suite(
        &shipped_requirements(),
        &[("a-short.yaml", ADULT), ("b-long.yaml", &long)],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(["run", ".", "--reports", "reports", "--no-progress"])
        .current_dir(suite.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    let results_path = suite.path().join("reports/latest/results.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let long_trials = RunResults::read(&results_path)
            .ok()
            .and_then(|r| {
                r.scenarios
                    .iter()
                    .find(|s| s.id == "long")
                    .map(|s| s.trials.len())
            })
            .unwrap_or(0);
        if long_trials >= 3 {
            break;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before the signal"
        );
        assert!(Instant::now() < deadline, "the long scenario never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = child.wait_with_output().expect("run ends");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{stderr}");
    assert!(stderr.contains("RUN ABORTED: SIGINT"), "{stderr}");
    assert!(stdout.contains("overall: INCOMPLETE ("), "{stdout}");

    let results = RunResults::read(&results_path).expect("results.json");
    assert!(!results.complete);
    assert_eq!(results.summary.verdict, Some(Verdict::Incomplete));
    assert_eq!(results.summary.exit_code, 4);
    // The completed scenario keeps its real verdicts; the cut-off one claims no population
    // statistic (SR-01's P99, SR-05's fraction) from the trials that ran.
    let short = &results.scenarios[0];
    assert_eq!(
        (short.id.as_str(), short.verdict),
        ("adult", Some(Verdict::Pass))
    );
    let long = &results.scenarios[1];
    assert!(long.trials.len() < 10_000);
    for id in ["SR-01", "SR-05"] {
        let v = long
            .verdicts
            .iter()
            .find(|v| v.requirement == id)
            .expect(id);
        assert_eq!(v.verdict, Verdict::Inconclusive, "{v:?}");
        assert!(v.detail.contains("planned trials ran"), "{v:?}");
    }
    assert_ne!(long.verdict, Some(Verdict::Pass));

    // Every view of the run says INCOMPLETE, none says the run passed.
    let dir = suite.path().join("reports/latest");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect(name);
    let report: serde_json::Value = serde_json::from_str(&read("report.json")).expect("json");
    assert_eq!(report["status"]["verdict"], "INCOMPLETE");
    assert_eq!(report["summary"]["verdict"], "INCOMPLETE");
    assert!(read("summary.md").starts_with("## iohil verification: INCOMPLETE"));
    assert!(read("report.html")
        .contains("Overall verdict: <span class=\"verdict INCOMPLETE\">INCOMPLETE</span>"));
    let junit = read("junit.xml");
    assert!(junit.contains("all planned trials recorded"), "{junit}");
    assert!(junit.contains("type=\"incomplete\""), "{junit}");
    // The evidence that was written is intact.
    let verify = iohil_in(&["verify", "reports/latest"], suite.path());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}

#[test]
fn nonsense_limits_and_tolerances_exit_2_with_their_location_and_run_nothing() {
    // A P99 limit above the maximum: an input error before anything runs, not INCONCLUSIVE.
    let requirements = shipped_requirements().replace(
        "p99_latency_ms: { value: 15, unit: ms }",
        "p99_latency_ms: { value: 25, unit: ms }",
    );
    let suite = scratch_suite(&requirements, &[("adult.yaml", ADULT)]);
    for command in ["check", "run"] {
        let args: &[&str] = if command == "run" {
            &["run", ".", "--reports", "reports"]
        } else {
            &["check", "."]
        };
        let out = iohil_in(args, suite.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("requirements.yaml:29:32"), "{stderr}");
        assert!(
            stderr.contains("`p99_latency_ms` (25) is above `max_latency_ms` (20)"),
            "{stderr}"
        );
        assert!(stderr.contains("help:"), "{stderr}");
        assert!(
            !suite.path().join("reports").exists(),
            "{command} ran something"
        );
    }
    // A tolerance file the suite carries is checked by `check` too.
    let suite = scratch_suite(&shipped_requirements(), &[("adult.yaml", ADULT)]);
    let tolerances = std::fs::read_to_string(repo().join("scenarios/tolerances.yaml"))
        .expect("tolerances")
        .replace(
            "requirement: SR-01, unit: ms",
            "requirement: SR-01, unit: s",
        );
    std::fs::write(suite.path().join("tolerances.yaml"), tolerances).expect("write");
    let out = iohil_in(&["check", "."], suite.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tolerances.yaml:14:"), "{stderr}");
    assert!(
        stderr.contains("`detection_latency_ms` is measured in `ms`, not `s`"),
        "{stderr}"
    );
}

#[test]
fn a_requirement_its_scenario_cannot_exercise_is_inconclusive_not_pass() {
    // SR-10 is the missed-pop fallback; the adult tibia pops cleanly and the detector stops
    // the motor long before the fallback's torque criterion arises.
    let scenario = ADULT.replace("verifies: [SR-01, SR-03]", "verifies: [SR-01, SR-10]");
    let suite = scratch_suite(&shipped_requirements(), &[("adult.yaml", &scenario)]);
    let out = iohil_in(&["run", ".", "--reports", "reports"], suite.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("SR-10  INCONCLUSIVE"), "{stdout}");
    assert!(
        stdout.contains("not exercised: the bone breaks through with a pop"),
        "{stdout}"
    );
}

/// A register covering one known failing scenario (AN-0001's case 433618).
const REGISTER: &str = "format_version: 1
anomalies:
  - id: AN-0001
    title: weak pop at a swing trough
    scenarios: [fuzz-s1-c433618]
    requirements: [SR-01, SR-02, SR-03]
    hazard: HZ-01
    risk: deep marrow overshoot, 2e-6 of insertions
    status: open
";

#[test]
fn known_anomalies_label_their_fails_and_only_the_flag_lets_the_exit_code_ignore_exactly_those() {
    let known = |name: &str| {
        std::fs::read_to_string(repo().join("scenarios/known-anomalies").join(name))
            .expect("known anomaly scenario")
    };
    let (c433618, c608254) = (known("fuzz-s1-c433618.yaml"), known("fuzz-s1-c608254.yaml"));
    let suite = scratch_suite(
        &shipped_requirements(),
        &[
            ("adult.yaml", ADULT),
            ("c433618.yaml", &c433618),
            ("anomalies.yaml", REGISTER),
        ],
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["run", ".", "--reports", "reports"];
        args.extend_from_slice(extra);
        let out = iohil_in(&args, suite.path());
        (out.status.code(), text(&out.stdout))
    };
    // Without the flag the FAIL counts: exit 1, labelled with its entry.
    let (code, stdout) = run(&[]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL of fuzz-s1-c433618 covered by known anomaly AN-0001"),
        "{stdout}"
    );
    assert!(stdout.contains("overall: FAIL"), "{stdout}");
    // With it, exactly that FAIL is ignored by the exit code; the verdict stays FAIL.
    let (code, stdout) = run(&["--accept-known-anomalies"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("overall: FAIL"), "{stdout}");
    let results =
        iohil::run::RunResults::read(&suite.path().join("reports/latest/results.json")).unwrap();
    let s = results
        .scenarios
        .iter()
        .find(|s| s.id == "fuzz-s1-c433618")
        .unwrap();
    assert_eq!(s.verdict, Some(iohil::verdict::Verdict::Fail));
    assert_eq!(s.known_anomaly.as_deref(), Some("AN-0001"));
    assert!(results.accept_known_anomalies);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(suite.path().join("reports/latest/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["known_anomalies"][0]["anomaly"]["id"], "AN-0001");
    let html = std::fs::read_to_string(suite.path().join("reports/latest/report.html")).unwrap();
    assert!(html.contains("Known residual anomalies"));
    assert!(html.contains("1 scenario FAIL(s) covered by an open entry of the register"));
    assert!(html.contains("ignored by the exit code (--accept-known-anomalies)"));

    // A FAIL the register does not cover still fails the run, flag or not.
    std::fs::write(suite.path().join("c608254.yaml"), &c608254).unwrap();
    let (code, stdout) = run(&["--accept-known-anomalies"]);
    assert_eq!(code, Some(1), "{stdout}");
    std::fs::remove_file(suite.path().join("c608254.yaml")).unwrap();

    // An open entry whose scenarios all ran and none failed is an error: close it.
    let stale = format!(
        "{REGISTER}  - id: AN-0002\n    title: adult\n    scenarios: [adult]\n    requirements: [SR-01]\n    hazard: HZ-01\n    risk: none\n    status: open\n"
    );
    std::fs::write(suite.path().join("anomalies.yaml"), stale).unwrap();
    let (code, stdout) = run(&["--accept-known-anomalies"]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("AN-0002 no longer reproduces"), "{stdout}");

    // A register with an unknown requirement is an input error with its location.
    std::fs::write(
        suite.path().join("anomalies.yaml"),
        REGISTER.replace("[SR-01, SR-02, SR-03]", "[SR-01, SR-2]"),
    )
    .unwrap();
    let out = iohil_in(&["check", "."], suite.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("anomalies.yaml:6:"), "{stderr}");
    assert!(stderr.contains("unknown requirement `SR-2`"), "{stderr}");
}

#[test]
fn a_fuzz_campaign_cut_by_its_time_budget_is_incomplete_never_a_pass() {
    let reports = tempfile::tempdir().expect("tempdir");
    let out = iohil_in(
        &[
            "fuzz",
            "--cases",
            "1000000",
            "--time-budget",
            "1s",
            "--no-promote",
            "--no-progress",
            "--reports",
            reports.path().to_str().expect("utf-8 path"),
            "--run-id",
            "cut",
        ],
        &repo(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stopped by the time budget"), "{stdout}");
    let run = reports.path().join("cut");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("report.json")).expect("report.json"))
            .expect("json");
    assert_eq!(report["status"]["verdict"], "INCOMPLETE");
    assert_eq!(report["summary"]["exit_code"], 1);
    let summary = std::fs::read_to_string(run.join("summary.md")).expect("summary.md");
    assert!(
        summary.starts_with("## iohil verification: INCOMPLETE"),
        "{summary}"
    );
}

#[test]
fn falsify_writes_its_worst_cases_as_evidence_and_report_and_refuses_bad_arguments() {
    let reports = tempfile::tempdir().expect("tempdir");
    let reports_arg = reports.path().to_str().expect("utf-8 path");
    let out = iohil_in(
        &[
            "falsify",
            "--requirement",
            "SR-01",
            "--requirement",
            "SR-04",
            "--budget",
            "40",
            "--jobs",
            "2",
            "--no-promote",
            "--no-progress",
            "--reports",
            reports_arg,
            "--run-id",
            "f",
        ],
        &repo(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("no requirement falsified"), "{stdout}");
    let run = reports.path().join("f");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("falsify.json")).expect("falsify.json"))
            .expect("json");
    assert_eq!(json["searches"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["searches"][0]["simulations"], 40);
    let html = std::fs::read_to_string(run.join("report.html")).expect("report.html");
    assert!(
        html.contains("Worst cases found") && html.contains("<svg"),
        "no falsify section"
    );
    let summary = std::fs::read_to_string(run.join("summary.md")).expect("summary.md");
    assert!(
        summary.contains("## Worst cases found") && summary.contains("| SR-04 |"),
        "{summary}"
    );
    let junit = std::fs::read_to_string(run.join("junit.xml")).expect("junit.xml");
    assert!(junit.contains("name=\"falsify\""), "{junit}");
    let verify = iohil_in(&["verify", run.to_str().expect("utf-8")], &repo());
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));

    // The failures the register already keeps (seed 1's AN-0001 and AN-0003 cases) are
    // labelled, fail the run, and are not promoted a second time.
    let promoted = tempfile::tempdir().expect("tempdir");
    let out = iohil_in(
        &[
            "falsify",
            "--budget",
            "5000",
            "--seed",
            "1",
            "--jobs",
            "2",
            "--promote",
            promoted.path().to_str().expect("utf-8 path"),
            "--no-progress",
            "--reports",
            reports_arg,
            "--run-id",
            "known",
        ],
        &repo(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    for entry in ["AN-0001", "AN-0003"] {
        assert!(
            stdout.contains(&format!(
                "known anomaly {entry}: already kept as scenario falsify-s1-"
            )),
            "{stdout}"
        );
    }
    assert_eq!(std::fs::read_dir(promoted.path()).expect("dir").count(), 0);

    for bad in [
        &["falsify", "--requirement", "SR-07"][..],
        &["falsify", "--budget", "0"][..],
        &["falsify", "--time-budget", "soon"][..],
    ] {
        let out = iohil_in(bad, &repo());
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}
