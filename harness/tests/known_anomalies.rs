//! Known residual anomaly AN-0001 (KA-01 in the README): fuzz counterexamples the shipped core
//! still fails, kept in the open rather than dropped. They live in
//! `scenarios/known-anomalies/`, registered in `scenarios/anomalies.yaml`; they are run here and
//! must still fail, each covered by its open entry: the day a firmware change makes one pass,
//! this test says so, the scenario moves to `scenarios/regressions/` and the entry is closed.

mod common;
use common::{repo, run_on_sim};

use driver_core::Config;
use iohil::verdict::Verdict;

#[test]
fn the_known_anomalies_still_fail_on_the_shipped_core_and_their_entries_cover_them() {
    let dir = repo().join("scenarios/known-anomalies");
    let files = std::fs::read_dir(&dir)
        .expect("scenarios/known-anomalies")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .count();
    assert!(files >= 1, "{files} known-anomaly scenarios");
    // The suite root above it holds the register.
    let results = run_on_sim(&dir, Config::DEFAULT);
    assert_eq!(results.scenarios.len(), files);
    assert!(!results.known_anomalies.is_empty(), "no register loaded");
    for s in &results.scenarios {
        let verdict = |id: &str| {
            s.verdicts
                .iter()
                .find(|v| v.requirement == id)
                .unwrap_or_else(|| panic!("{} has no {id} verdict", s.id))
                .verdict
        };
        assert_eq!(
            verdict("SR-01"),
            Verdict::Fail,
            "{} now passes SR-01: move it to scenarios/regressions/ and close its entry",
            s.id
        );
        // The register's risk evaluation rests on this: the needle stops short of the far
        // cortex.
        assert_eq!(verdict("SR-04"), Verdict::Pass, "{}", s.id);
        assert_eq!(
            s.known_anomaly.as_deref(),
            Some("AN-0001"),
            "{} fails outside what its register entry covers",
            s.id
        );
    }
    assert!(results.summary.stale_anomalies.is_empty());
    assert_eq!(results.summary.known_anomaly_fails, files);
}
