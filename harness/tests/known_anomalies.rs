//! Known residual anomaly KA-01 (README, "Known residual anomalies"): fuzz counterexamples the
//! shipped core still fails, kept in the open rather than dropped. They live in
//! `harness/tests/known_anomalies/` (not in `scenarios/`, whose every scenario must pass), are
//! run here as a suite of their own, and must still fail: the day a firmware change makes one
//! pass, this test says so, and the scenario moves to `scenarios/regressions/`.

mod common;
use common::{repo, run_on_sim};

use driver_core::Config;
use iohil::verdict::Verdict;

#[test]
fn the_known_anomalies_still_fail_on_the_shipped_core() {
    let suite_dir = tempfile::tempdir().expect("tempdir");
    for file in ["requirements.yaml", "profiles.yaml"] {
        std::fs::copy(
            repo().join("scenarios").join(file),
            suite_dir.path().join(file),
        )
        .expect("copy");
    }
    let anomalies = suite_dir.path().join("known-anomalies");
    std::fs::create_dir(&anomalies).expect("dir");
    let source = repo().join("harness/tests/known_anomalies");
    let mut files = 0;
    for entry in std::fs::read_dir(&source).expect("known anomalies") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, anomalies.join(path.file_name().expect("name"))).expect("copy");
        files += 1;
    }
    assert!(files >= 1, "{files} known-anomaly scenarios");
    let results = run_on_sim(&anomalies, Config::DEFAULT);
    assert_eq!(results.scenarios.len(), files);
    for s in &results.scenarios {
        let sr01 = s
            .verdicts
            .iter()
            .find(|v| v.requirement == "SR-01")
            .expect("SR-01 verdict");
        assert_eq!(
            sr01.verdict,
            Verdict::Fail,
            "{} now passes SR-01: move it to scenarios/regressions/ and close KA-01 for it",
            s.id
        );
    }
}
