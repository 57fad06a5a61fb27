//! The regression scenarios the fuzzer found (`scenarios/regressions/`): the shipped core passes
//! every one, and the earlier detectors the fuzzer found them against still fail those they
//! missed: driver-core 0.1 (`Config::LEGACY`), driver-core 0.2, the windowed test without
//! the trend-step test (`Config::WINDOWED_ONLY`), and driver-core 0.3, without the plateau-step
//! and level-shift tests (`Config::DRIVER_CORE_0_3`). The harness still catches what it caught.

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

/// The regression scenarios that driver-core 0.2 never detected or detected hundreds of ms late
/// (weak pops at the trough of a push swing: the part of known anomaly KA-01 that the
/// trend-step test of driver-core 0.3 closed).
const MISSED_BY_WINDOWED: &[&str] = &[
    "fuzz-s1-c268545",
    "fuzz-s1-c347474",
    "fuzz-s1-c395849",
    "fuzz-s1-c521833",
    "fuzz-s1-c682865-as-drawn",
    "fuzz-s1-c919477",
];

/// The regression scenarios that driver-core 0.3 never detected, the needle turning into the far
/// cortex (the part of known anomaly KA-02 that the plateau-step test of driver-core 0.4 closed).
const MISSED_BY_0_3: &[&str] = &[
    "falsify-s2-sr01-c6d81f3c",
    "falsify-s3-sr01-faf17286",
    "falsify-s5-sr01-99ae516d",
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

#[test]
fn the_windowed_test_alone_still_fails_the_swing_regressions() {
    let results = run_regressions(Config::WINDOWED_ONLY);
    for id in MISSED_BY_WINDOWED {
        assert_eq!(
            verdict_of(&results, id, "SR-01"),
            Verdict::Fail,
            "{id} SR-01 on driver-core 0.2 (the windowed test alone)"
        );
    }
}

#[test]
fn driver_core_0_3_still_fails_the_plateau_regressions_into_the_far_cortex() {
    let results = run_regressions(Config::DRIVER_CORE_0_3);
    for id in MISSED_BY_0_3 {
        for requirement in ["SR-01", "SR-04"] {
            assert_eq!(
                verdict_of(&results, id, requirement),
                Verdict::Fail,
                "{id} {requirement} on driver-core 0.3"
            );
        }
    }
}
