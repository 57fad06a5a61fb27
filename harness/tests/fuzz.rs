//! The fuzzer: a fixed-seed campaign passes on the shipped core; it is not vacuous (a weakened
//! controller fails, the failure shrinks, the regression scenario replays it); it is
//! deterministic across worker counts; shards partition the campaign.

use std::path::{Path, PathBuf};

use driver_core::Config;
use iohil::fuzz::{merge, promote, run_campaign, Campaign, FuzzResults};
use iohil::rig::SimRig;
use iohil::run::{run_suite, RunOptions};
use iohil::scenario::load::{load_profiles, load_requirements, load_suite, Profiles};
use iohil::scenario::Requirements;
use iohil::verdict::Verdict;

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn suite_data() -> (Requirements, Profiles) {
    (
        load_requirements(&scenarios().join("requirements.yaml")).expect("requirements"),
        load_profiles(&scenarios().join("profiles.yaml")).expect("profiles"),
    )
}

fn campaign(
    data: &(Requirements, Profiles),
    config: Config,
    cases: u64,
    shard: (u32, u32),
    jobs: usize,
) -> FuzzResults {
    let campaign = Campaign {
        requirements: &data.0,
        profiles: &data.1,
        rig: SimRig::with_config(config),
        seed: 1,
        cases,
        shard,
        jobs,
        time_budget: None,
    };
    run_campaign(&campaign, |_| {}).expect("campaign runs")
}

#[test]
fn a_fixed_seed_campaign_passes_on_the_shipped_core() {
    let data = suite_data();
    let results = campaign(&data, Config::DEFAULT, 48, (1, 1), 2);
    assert!(results.complete);
    assert_eq!(results.cases.len(), 48);
    assert!(!results.failed(), "{}", results.text());
    // Breakthrough was exercised in almost every case, and every property was checked.
    assert!(results.properties["SR-01"].pass >= 40, "{}", results.text());
    insta::assert_snapshot!(results.text());
}

#[test]
fn a_weakened_controller_fails_shrinks_and_its_regression_scenario_replays_the_failure() {
    let data = suite_data();
    // The 0.1 detector with a drop threshold of 45 % misses the weaker pops (about 50 % of
    // the load current).
    let weak = Config {
        drop_percent: 45,
        ..Config::LEGACY
    };
    let mut results = campaign(&data, weak, 24, (1, 1), 2);
    assert!(results.failed(), "{}", results.text());
    assert!(
        results.failing_requirements.iter().any(|r| r == "SR-01"),
        "{}",
        results.text()
    );
    let failure = results
        .failures
        .iter()
        .find(|f| f.requirements.iter().any(|r| r == "SR-01"))
        .expect("an SR-01 failure")
        .clone();
    // Shrinking moved toward the typical case: nominal push without variation, ideal sensing,
    // the bone's nominal geometry; what is left is what the failure needs (here the weakest pop,
    // the osteoporotic tibia, helped by a slightly weaker drive).
    assert!(failure.shrink_steps > 0);
    assert_eq!(failure.case.oscillation, None, "{}", failure.minimal);
    assert_eq!(failure.case.step, None, "{}", failure.minimal);
    assert_eq!(failure.case.sensor, None, "{}", failure.minimal);
    assert_eq!(failure.case.push_pct, 0, "{}", failure.minimal);
    assert!(
        failure
            .minimal
            .starts_with("osteoporotic-tibia: cortex 1.5 mm, cap 0.2 mm"),
        "{}",
        failure.minimal
    );
    assert!(
        failure.findings.iter().any(|f| f.contains("(SR-01)")),
        "{:?}",
        failure.findings
    );
    println!("{}", results.text());

    // The regression scenario goes into a suite and `run` replays the failure.
    let suite_dir = tempfile::tempdir().expect("tempdir");
    for file in ["requirements.yaml", "profiles.yaml"] {
        std::fs::copy(scenarios().join(file), suite_dir.path().join(file)).expect("copy");
    }
    let written = promote(&mut results, &suite_dir.path().join("regressions")).expect("promote");
    assert_eq!(
        written.len(),
        results.failures.iter().filter(|f| f.counted()).count()
    );
    let file = failure_file(&results, failure.index);
    let suite = load_suite(std::slice::from_ref(&file))
        .expect("the regression scenario is a valid scenario");
    let reports = tempfile::tempdir().expect("tempdir");
    let options = RunOptions {
        reports_dir: reports.path().to_owned(),
        run_id: Some("replay".to_owned()),
    };
    let (_, weak_run) =
        run_suite(&suite, &mut SimRig::with_config(weak), &options, |_, _| {}).expect("replay");
    let sr01 = weak_run.scenarios[0]
        .verdicts
        .iter()
        .find(|v| v.requirement == "SR-01")
        .expect("SR-01 verdict");
    assert_eq!(sr01.verdict, Verdict::Fail, "{}", sr01.detail);
    // The shipped core passes the same bone.
    let options = RunOptions {
        reports_dir: reports.path().to_owned(),
        run_id: Some("shipped".to_owned()),
    };
    let (_, shipped_run) =
        run_suite(&suite, &mut SimRig::default(), &options, |_, _| {}).expect("replay");
    assert_eq!(
        shipped_run.summary.exit_code, 0,
        "{:?}",
        shipped_run.scenarios[0].verdicts
    );
}

fn failure_file(results: &FuzzResults, index: u64) -> PathBuf {
    results
        .failures
        .iter()
        .find(|f| f.index == index)
        .and_then(|f| f.scenario_file.clone())
        .expect("promoted file")
}

#[test]
fn a_campaign_is_identical_whatever_the_number_of_jobs() {
    let data = suite_data();
    let one = campaign(&data, Config::DEFAULT, 16, (1, 1), 1);
    let two = campaign(&data, Config::DEFAULT, 16, (1, 1), 2);
    let json = |r: &FuzzResults| serde_json::to_string(r).expect("json");
    assert!(json(&one) == json(&two), "--jobs 1 and --jobs 2 differ");
}

#[test]
fn shards_partition_the_campaign_and_merge_into_it() {
    let data = suite_data();
    let whole = campaign(&data, Config::DEFAULT, 16, (1, 1), 2);
    let first = campaign(&data, Config::DEFAULT, 16, (1, 2), 1);
    let second = campaign(&data, Config::DEFAULT, 16, (2, 2), 1);
    let first_indices: Vec<u64> = first.cases.iter().map(|c| c.index).collect();
    let second_indices: Vec<u64> = second.cases.iter().map(|c| c.index).collect();
    assert!(
        first_indices.iter().all(|i| !second_indices.contains(i)),
        "shards overlap"
    );
    let merged = merge(vec![second, first.clone()], &data.0).expect("merge");
    assert_eq!(merged.shards, vec![1, 2]);
    assert_eq!(merged.cases, whole.cases);
    assert_eq!(merged.distributions, whole.distributions);
    assert_eq!(merged.properties, whole.properties);
    // A shard cannot be merged twice.
    assert!(merge(vec![first.clone(), first], &data.0).is_err());
}

#[test]
fn a_time_budget_stops_the_campaign_and_says_so() {
    let data = suite_data();
    let budgeted = Campaign {
        requirements: &data.0,
        profiles: &data.1,
        rig: SimRig::default(),
        seed: 1,
        cases: 500,
        shard: (1, 1),
        jobs: 1,
        time_budget: Some(std::time::Duration::from_millis(1)),
    };
    let results = run_campaign(&budgeted, |_| {}).expect("campaign");
    assert!(!results.complete);
    assert!(
        results.cases.len() < 500,
        "{} cases ran",
        results.cases.len()
    );
    assert!(
        results.text().contains("stopped by the time budget"),
        "{}",
        results.text()
    );
}

#[test]
fn a_failure_a_known_anomaly_keeps_is_labelled_still_fails_and_is_not_promoted_twice() {
    use iohil::fuzz::label_known_anomalies;
    use iohil::scenario::{AnomalyStatus, KnownAnomaly};
    let data = suite_data();
    let weak = Config {
        drop_percent: 45,
        ..Config::LEGACY
    };
    let mut results = campaign(&data, weak, 24, (1, 1), 2);
    let failure = results
        .failures
        .iter()
        .find(|f| f.counted())
        .expect("a counted failure")
        .clone();
    let entry = |requirements: Vec<String>| KnownAnomaly {
        id: "AN-0009".to_owned(),
        title: "test".to_owned(),
        scenarios: vec![format!("fuzz-s1-c{}", failure.index)],
        requirements,
        hazard: "HZ-01".to_owned(),
        risk: "test".to_owned(),
        status: AnomalyStatus::Open,
        bounds: Default::default(),
    };
    // An entry that does not name every requirement the case fails does not cover it.
    let partial: Vec<String> = failure.requirements.iter().skip(1).cloned().collect();
    label_known_anomalies(&mut results, &[entry(partial)]);
    assert!(results.failures.iter().all(|f| f.known_anomaly.is_none()));
    // One that does labels exactly that case; the campaign still fails.
    label_known_anomalies(&mut results, &[entry(failure.requirements.clone())]);
    let labelled: Vec<u64> = results
        .failures
        .iter()
        .filter(|f| f.known_anomaly.is_some())
        .map(|f| f.index)
        .collect();
    assert_eq!(labelled, vec![failure.index]);
    assert!(results.failed());
    assert!(
        results.text().contains("known anomaly AN-0009"),
        "{}",
        results.text()
    );
    // Its scenario is already in the suite: promotion skips it and writes the others.
    let dir = tempfile::tempdir().expect("tempdir");
    let written = promote(&mut results, dir.path()).expect("promote");
    let counted = results.failures.iter().filter(|f| f.counted()).count();
    assert_eq!(written.len(), counted - 1);
    assert!(!dir
        .path()
        .join(format!("fuzz-s1-c{}.yaml", failure.index))
        .exists());
}

/// Guided falsification of `targets` on the sim rig with `config`.
fn falsify(
    data: &(Requirements, Profiles),
    config: Config,
    targets: &[&str],
    budget: u64,
    seed: u64,
    jobs: usize,
) -> iohil::falsify::FalsifyResults {
    let f = iohil::falsify::Falsification {
        requirements: &data.0,
        profiles: &data.1,
        rig: SimRig::with_config(config),
        seed,
        targets: targets.iter().map(|t| (*t).to_owned()).collect(),
        budget,
        time_budget: None,
        jobs,
    };
    iohil::falsify::run(&f, |_, _, _| {}).expect("falsification runs")
}

#[test]
fn falsification_is_identical_whatever_the_number_of_jobs() {
    let data = suite_data();
    let one = falsify(&data, Config::DEFAULT, &["SR-01", "SR-04"], 60, 3, 1);
    let mut two = falsify(&data, Config::DEFAULT, &["SR-01", "SR-04"], 60, 3, 2);
    // Everything but the wall-clock times.
    two.started_utc.clone_from(&one.started_utc);
    two.finished_utc.clone_from(&one.finished_utc);
    assert_eq!(one, two);
    for search in &one.searches {
        assert_eq!(search.simulations, 60, "{search:?}");
        let worst = search.worst.as_ref().expect("a worst case");
        assert!(worst.margin > 0.0 && worst.margin <= 1.0, "{worst:?}");
        assert!(!search.history.is_empty());
        // The history is the running minimum, ending at the worst case.
        assert!(search
            .history
            .windows(2)
            .all(|w| w[1].worst_margin <= w[0].worst_margin));
        assert_eq!(
            search.history.last().map(|h| h.worst_margin),
            Some(worst.margin)
        );
    }
    assert!(!one.failed() && one.complete);
}

/// A weakened core whose failures lie in a small corner of the space (the `falsify`
/// benchmark's: random sampling meets one in many thousand cases).
#[test]
fn a_weakened_core_is_falsified_shrunk_promoted_and_replayed() {
    let data = suite_data();
    let weak = iohil::bench::FALSIFY_BENCH_CONFIG;
    let mut found = 0;
    for seed in [1, 2, 10] {
        let mut results = falsify(&data, weak, &["SR-01", "SR-03"], 1000, seed, 2);
        let sr01 = &results.searches[0];
        let Some(at) = sr01.first_failure_at else {
            continue;
        };
        found += 1;
        assert!(at <= 1000 && sr01.simulations >= at);
        assert!(results.failing_requirements.contains(&"SR-01".to_owned()));
        let worst = sr01.worst.as_ref().expect("worst case");
        assert!(worst.margin <= 0.0 && worst.failed.contains(&"SR-01".to_owned()));
        let failure = sr01.failure.clone().expect("a shrunk failure");
        assert!(failure.minimal_requirements.contains(&"SR-01".to_owned()));
        // The minimal case is no more complicated than the one found.
        let disturbances = |c: &iohil::fuzz::FuzzCase| {
            [
                c.oscillation.is_some(),
                c.step.is_some(),
                c.battery.is_some(),
                c.sensor.is_some(),
            ]
            .iter()
            .filter(|d| **d)
            .count()
        };
        assert!(disturbances(&failure.case) <= disturbances(&worst.case));
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["requirements.yaml", "profiles.yaml"] {
            std::fs::copy(scenarios().join(file), dir.path().join(file)).expect("copy");
        }
        let regressions = dir.path().join("regressions");
        let written = iohil::falsify::promote(&mut results, &regressions).expect("promote");
        assert!(!written.is_empty());
        let file = regressions.join(format!("{}.yaml", failure.scenario_id));
        assert!(failure
            .scenario_id
            .starts_with(&format!("falsify-s{seed}-sr01-")));
        assert!(written.contains(&file), "{written:?}");
        // The promoted scenario replays the failure on the weakened core, and the shipped core
        // passes it.
        let suite = load_suite(std::slice::from_ref(&file)).expect("the promoted file loads");
        let reports = tempfile::tempdir().expect("tempdir");
        let verdict_on = |config: Config, id: &str| {
            let options = RunOptions {
                reports_dir: reports.path().to_owned(),
                run_id: Some(id.to_owned()),
            };
            let (_, run) = run_suite(
                &suite,
                &mut SimRig::with_config(config),
                &options,
                |_, _| {},
            )
            .expect("replay");
            run.scenarios[0]
                .verdicts
                .iter()
                .find(|v| v.requirement == "SR-01")
                .map(|v| v.verdict)
        };
        assert_eq!(
            verdict_on(weak, "weakened"),
            Some(Verdict::Fail),
            "{file:?}"
        );
        assert_eq!(
            verdict_on(Config::DEFAULT, "shipped"),
            Some(Verdict::Pass),
            "{file:?}"
        );
    }
    assert_eq!(
        found, 3,
        "guided falsification finds the weakened core's failure on every seed"
    );
}

#[test]
fn falsification_refuses_a_requirement_it_cannot_search_and_stops_on_its_time_budget() {
    let data = suite_data();
    let mut f = iohil::falsify::Falsification {
        requirements: &data.0,
        profiles: &data.1,
        rig: SimRig::default(),
        seed: 1,
        targets: vec!["SR-07".to_owned()],
        budget: 10,
        time_budget: None,
        jobs: 1,
    };
    let error = iohil::falsify::run(&f, |_, _, _| {}).expect_err("SR-07 is not searchable");
    assert!(error.contains("SR-07"), "{error}");
    f.targets = vec!["SR-01".to_owned()];
    f.budget = 1_000_000;
    f.time_budget = Some(std::time::Duration::from_millis(300));
    let results = iohil::falsify::run(&f, |_, _, _| {}).expect("runs");
    assert!(!results.complete, "a search cut short says so");
    assert!(results.searches[0].simulations < 1_000_000);
    assert!(results.text().contains("INCOMPLETE"));
}

#[test]
fn a_case_runs_exactly_the_scenario_its_file_loads_to() {
    // The campaign builds each case's scenario file as data and skips parsing its text; the
    // text is what a promoted counterexample keeps. Both must be the same scenario.
    use iohil::fuzz::{case_at, scenario_file, scenario_text, PROPERTIES};
    use iohil::scenario::load::{load_scenario_parsed, load_scenario_str};
    use iohil::scenario::model::ScenarioFile;
    let (requirements, profiles) = suite_data();
    let path = Path::new("case.yaml");
    let mut with = [0usize; 4];
    for seed in [1, 2, 3] {
        for index in 0..2_000 {
            let case = case_at(seed, index).expect("case");
            let title = "a \"quoted\" title";
            let file = scenario_file(&case, &profiles, "fuzz-x", title, "d", index, PROPERTIES)
                .expect("file");
            let text = scenario_text(&file);
            let parsed: ScenarioFile = serde_saphyr::from_str(&text).expect("parses");
            assert_eq!(parsed, file, "case {index} of seed {seed}:\n{text}");
            let from_text = load_scenario_str(path, &text, &requirements, &profiles);
            let from_file = load_scenario_parsed(path, &text, file, &requirements, &profiles);
            assert_eq!(
                from_text.expect("text loads"),
                from_file.expect("file loads"),
                "case {index} of seed {seed}"
            );
            for (count, present) in with.iter_mut().zip([
                case.oscillation.is_some(),
                case.step.is_some(),
                case.battery.is_some(),
                case.sensor.is_some(),
            ]) {
                *count += usize::from(present);
            }
        }
    }
    // Every optional part of a case was written and read back many times.
    assert!(with.iter().all(|&n| n > 100), "{with:?}");
}
