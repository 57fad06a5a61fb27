//! `iohil validate`: every known defect is caught against the shipped firmware as control, and
//! the validation fails the day one is not.

mod common;
use common::{iohil, repo, text};

use std::path::PathBuf;

use driver_core::Config;
use iohil::validate::{known_defects, validate, Defect, Firmware};

#[test]
fn every_known_defect_is_caught_on_the_sim_rig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = iohil(&[
        "validate",
        "--reports",
        dir.path().to_str().expect("utf-8"),
        "--run-id",
        "v",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("## iohil tool validation: PASS"),
        "{stdout}"
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("v/validation.json")).expect("validation.json"),
    )
    .expect("json");
    let rows = json["defects"].as_array().expect("defects");
    assert_eq!(rows.len(), known_defects(None, None, None).len());
    for row in rows {
        assert_eq!(row["caught"], true, "{row}");
        assert_eq!(
            row["failed_shipped"].as_array().map(Vec::len),
            Some(0),
            "{row}"
        );
    }
    assert!(dir.path().join("v/validation.md").is_file());
}

#[test]
fn a_defect_that_is_not_caught_or_a_control_that_fails_fails_the_validation() {
    let suite = repo().join("scenarios");
    let defect = |id: &str, defective: Config, scenario: &str| Defect {
        id: id.to_owned(),
        what: "test".to_owned(),
        defective: Firmware::Sim(defective),
        shipped: Firmware::Sim(Config::DEFAULT),
        scenarios: vec![PathBuf::from(scenario)],
        expected: vec!["SR-01".to_owned()],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // The shipped tuning passed off as a defect: nothing fails, so it is not caught.
    let v = validate(
        &suite,
        &[defect(
            "NONE",
            Config::DEFAULT,
            "reference/adult-proximal-tibia.yaml",
        )],
        dir.path(),
    )
    .expect("validation runs");
    assert!(!v.passed);
    assert!(!v.defects[0].caught);
    assert!(
        v.defects[0].detail.starts_with("NOT CAUGHT: SR-01"),
        "{}",
        v.defects[0].detail
    );
    // A scenario the shipped firmware fails (a known anomaly) is no control: not caught either.
    let v = validate(
        &suite,
        &[defect(
            "NO-CONTROL",
            Config::LEGACY,
            "known-anomalies/fuzz-s1-c433618.yaml",
        )],
        dir.path(),
    )
    .expect("validation runs");
    assert!(!v.passed);
    assert!(
        v.defects[0].detail.contains("no control"),
        "{}",
        v.defects[0].detail
    );
}
