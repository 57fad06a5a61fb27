//! Known residual anomalies (KA-01..KA-04 in the README): fuzz and falsification
//! counterexamples the shipped core still fails, kept in the open rather than dropped. They live
//! in `scenarios/known-anomalies/`, registered in `scenarios/anomalies.yaml`; they are run here and
//! must still fail as their entry's risk evaluation says, each covered by its open entry: the day
//! a firmware change makes one pass, this test says so, the scenario moves to
//! `scenarios/regressions/` and the entry is closed.

mod common;
use common::{repo, run_on_sim};

use driver_core::Config;
use iohil::verdict::Verdict;

/// Counterexamples of guided falsification registered under AN-0001 (late detection, the needle
/// stops in the marrow).
const AN_0001_FALSIFIED: &[&str] = &["falsify-s1-sr01-de12ce14", "falsify-s5-sr01-ce269934"];

/// AN-0002: no breakthrough test sees the pop in time; the missed-pop fallback stops the motor
/// hundreds of ms late, the needle in the marrow.
const AN_0002: &[&str] = &[
    "falsify-s1-sr01-a0cc7b41",
    "falsify-s4-sr01-3d31ea94",
    "falsify-s4-sr01-52cf162d",
    "falsify-s6-sr01-c3057d01",
];

/// AN-0004: detected only by the level-shift test, late; the needle stops in the marrow.
const AN_0004: &[&str] = &[
    "falsify-s2-sr01-ce69d77d",
    "falsify-s2-sr01-134ca3fb",
    "falsify-s3-sr01-09e83afe",
    "falsify-s4-sr01-1868c30e",
    "falsify-s5-sr01-0a8ebcc7",
    "falsify-s6-sr01-58238a32",
];

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
        // What each entry's risk evaluation rests on: the requirements its scenarios fail and
        // the ones they still hold (every entry: the needle stops short of the far cortex).
        let id = s.id.as_str();
        let (entry, fail, pass): (&str, &[&str], &[&str]) =
            if id.starts_with("fuzz-") || AN_0001_FALSIFIED.contains(&id) {
                ("AN-0001", &["SR-01"], &["SR-04"])
            } else if id.contains("-sr05-") {
                ("AN-0003", &["SR-05"], &["SR-04"])
            } else if AN_0002.contains(&id) {
                ("AN-0002", &["SR-01", "SR-02", "SR-03"], &["SR-04"])
            } else if AN_0004.contains(&id) {
                ("AN-0004", &["SR-01", "SR-02"], &["SR-04"])
            } else {
                panic!("{id}: no register entry expected for it in this test")
            };
        for r in fail {
            assert_eq!(
                verdict(r),
                Verdict::Fail,
                "{} now passes {r}: move it to scenarios/regressions/ and close {entry}",
                s.id
            );
        }
        for r in pass {
            assert_eq!(
                verdict(r),
                Verdict::Pass,
                "{}: {entry}'s evaluation says {r} holds",
                s.id
            );
        }
        assert_eq!(
            s.known_anomaly.as_deref(),
            Some(entry),
            "{} fails outside what its register entry covers",
            s.id
        );
    }
    assert!(results.summary.stale_anomalies.is_empty());
    assert_eq!(results.summary.known_anomaly_fails, files);
}
