//! The regression scenarios the fuzzer found (`scenarios/regressions/`): the shipped core passes
//! every one, and the detector of driver-core 0.1 (`Config::LEGACY`), which the fuzzer found
//! them against, still fails those it missed: the harness still catches what it caught.

mod common;
use common::{repo, run_on_sim};

use driver_core::Config;
use iohil::run::RunResults;
use iohil::verdict::Verdict;

/// The regression scenarios that driver-core 0.1 never detected (each reached the far cortex).
const MISSED_BY_LEGACY: &[&str] = &[
    "fuzz-s5-c120",
    "fuzz-s1-c790",
    "fuzz-s1-c841",
    "fuzz-s1-c865",
    "fuzz-s1-c4270",
    "fuzz-s1-c12762",
];

fn run_regressions(config: Config) -> RunResults {
    run_on_sim(&repo().join("scenarios/regressions"), config)
}

fn verdict_of(results: &RunResults, scenario: &str, requirement: &str) -> Verdict {
    let s = results
        .scenarios
        .iter()
        .find(|s| s.id == scenario)
        .unwrap_or_else(|| panic!("{scenario} is not under scenarios/regressions"));
    s.verdicts
        .iter()
        .find(|v| v.requirement == requirement)
        .unwrap_or_else(|| panic!("{scenario} does not verify {requirement}"))
        .verdict
}

#[test]
fn the_shipped_core_passes_every_regression_scenario() {
    let results = run_regressions(Config::DEFAULT);
    assert!(
        results.scenarios.len() >= MISSED_BY_LEGACY.len(),
        "{} regression scenarios",
        results.scenarios.len()
    );
    for s in &results.scenarios {
        assert_eq!(s.verdict, Some(Verdict::Pass), "{}: {:?}", s.id, s.verdicts);
    }
}

#[test]
fn the_legacy_detector_still_fails_the_regressions_it_missed() {
    let results = run_regressions(Config::LEGACY);
    for id in MISSED_BY_LEGACY {
        for requirement in ["SR-01", "SR-02", "SR-03", "SR-04"] {
            assert_eq!(
                verdict_of(&results, id, requirement),
                Verdict::Fail,
                "{id} {requirement} on the legacy detector"
            );
        }
        let trial = &results
            .scenarios
            .iter()
            .find(|s| s.id == *id)
            .expect("scenario")
            .trials[0];
        assert_eq!(
            trial.measurements.stop_reason.as_deref(),
            Some("over_time"),
            "{id}: the legacy core never detected the pop"
        );
    }
}
