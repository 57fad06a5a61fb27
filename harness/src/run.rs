//! A verification run: every trial of every scenario on one rig, evidence written as it goes.
//!
//! This module owns the run directory `reports/<run-id>/`: one trace file per trial and a
//! versioned `results.json`, each written atomically (temporary file, then rename) as soon as
//! the trial completes, so a fault or an interrupt never loses a recorded trial; `results.json`
//! says `complete: false` until the last trial is in. It also owns the exit-code policy and
//! the console tables. It does not parse scenarios or compute verdicts.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rig::{trial_seed, Rig, RigIdentity};
use crate::scenario::load::Suite;
use crate::scenario::{Population, Source};
use crate::verdict::{
    aggregate, evaluate_trial, measure, Measurements, RequirementVerdict, Statistics, Verdict,
};

/// Version of the `results.json` format.
pub const RESULTS_FORMAT_VERSION: u32 = 1;

/// File name of the run record in a run directory.
pub const RESULTS_FILE: &str = "results.json";

/// The run record named by `path`: the `results.json` in it when it is a run directory,
/// else `path` itself.
pub fn results_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(RESULTS_FILE)
    } else {
        path.to_owned()
    }
}

/// Exit code: every verdict PASS.
pub const EXIT_PASS: i32 = 0;
/// Exit code: at least one FAIL.
pub const EXIT_FAIL: i32 = 1;
/// Exit code: input or usage error, nothing run.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: at least one INCONCLUSIVE and no FAIL.
pub const EXIT_INCONCLUSIVE: i32 = 3;
/// Exit code: the run did not carry out its plan (a signal, a rig abort); whatever FAIL or
/// PASS its recorded trials show is in its results, but the run is not evidence of its plan.
pub const EXIT_INCOMPLETE: i32 = 4;

/// Identity of the harness build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HarnessIdentity {
    /// Package version.
    pub version: String,
    /// Git commit the harness was built from (`-dirty` if the tree had changes), or `unknown`.
    pub git_commit: String,
}

impl HarnessIdentity {
    /// This build.
    pub fn current() -> Self {
        HarnessIdentity {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: env!("IOHIL_GIT_COMMIT").to_owned(),
        }
    }
}

/// A requirement as stated before execution (the acceptance criteria of the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AcceptanceCriterion {
    /// Requirement ID.
    pub requirement: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Hazard ID.
    pub hazard: String,
    /// Statistic.
    pub statistic: String,
    /// Limits, `name: value unit`.
    pub limits: BTreeMap<String, String>,
    /// The text's clauses, each checked on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<AcceptanceClause>,
}

/// One clause of a requirement as stated before execution, with how the evaluator checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AcceptanceClause {
    /// Clause ID, e.g. `SR-07.b`.
    pub clause: String,
    /// The clause's text.
    pub text: String,
    /// The check the evaluator applies.
    pub check: String,
}

/// A scenario in the plan of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlannedScenario {
    /// Scenario ID.
    pub id: String,
    /// Trials planned.
    pub trials: u32,
}

/// One trial's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrialResult {
    /// Trial index.
    pub trial: u32,
    /// Seed.
    pub seed: u64,
    /// Trace file, relative to the run directory.
    pub trace_file: String,
    /// SHA-256 of the trace file.
    pub trace_sha256: String,
    /// Measured values.
    pub measurements: Measurements,
    /// Per-requirement verdicts.
    pub verdicts: Vec<RequirementVerdict>,
    /// Rig anomalies (make the trial INCONCLUSIVE).
    pub anomalies: Vec<String>,
    /// Faults the firmware recorded (make the trial FAIL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firmware_faults: Vec<String>,
    /// The firmware that produced this trial's trace, when it is not the rig's (`rig.firmware`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<crate::trace::FirmwareIdentity>,
    /// Bound on the error of the board-to-load clock alignment, ms (bench rig; `NaN` is not
    /// written: a failed alignment is an anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_ms: Option<f64>,
}

/// One scenario's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScenarioResult {
    /// Scenario ID.
    pub id: String,
    /// Title.
    pub title: String,
    /// Source file (relative to the suite root) and hash.
    pub source: Source,
    /// Bone profile name, if from a profile.
    pub profile: Option<String>,
    /// Population.
    pub population: Population,
    /// Requirement IDs verified.
    pub verifies: Vec<String>,
    /// Trials planned.
    pub trials_planned: u32,
    /// Base seed.
    pub seed: u64,
    /// Trials run so far.
    pub trials: Vec<TrialResult>,
    /// Statistics per measured value over trials.
    pub statistics: BTreeMap<String, Statistics>,
    /// Verdict per requirement over all trials.
    pub verdicts: Vec<RequirementVerdict>,
    /// Worst verdict.
    pub verdict: Option<Verdict>,
    /// The open known anomaly that covers this scenario's FAIL (every requirement it fails
    /// is one the anomaly names); the verdict stays FAIL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_anomaly: Option<String>,
    /// Why the open known anomaly that names this scenario and its failed requirements does
    /// not cover its FAIL: a clause measured beyond the bound the entry's risk evaluation
    /// accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beyond_known_anomaly: Option<String>,
}

impl ScenarioResult {
    /// The console's and the report's line for a FAIL its known anomaly no longer covers.
    pub fn beyond_known_anomaly_note(&self) -> Option<String> {
        self.beyond_known_anomaly.as_ref().map(|beyond| {
            format!(
                "FAIL of {} not covered by its known anomaly: {beyond} (re-evaluate the entry)",
                self.id
            )
        })
    }
}

/// One row of the traceability matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TraceabilityRow {
    /// Requirement ID.
    pub requirement: String,
    /// Hazard it controls.
    pub hazard: String,
    /// Scenarios that verify it.
    pub scenarios: Vec<String>,
    /// Trials that verified it.
    pub trials: usize,
    /// Worst verdict over those scenarios; `None`: not verified by any scenario of this run.
    pub verdict: Option<Verdict>,
    /// The matrix down to clauses: per clause, the scenarios that exercised it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<ClauseTraceRow>,
}

/// One clause's row of the traceability matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClauseTraceRow {
    /// Clause ID.
    pub clause: String,
    /// Scenarios of this run that exercised the clause, with their verdict for it.
    pub scenarios: Vec<(String, Verdict)>,
    /// Worst verdict over those scenarios; `None`: no scenario of this run exercised the clause,
    /// so it is not verified.
    pub verdict: Option<Verdict>,
}

/// Verdict counts and the exit code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// Scenario-level requirement verdicts that passed.
    pub pass: usize,
    /// ... that failed.
    pub fail: usize,
    /// ... that were inconclusive.
    pub inconclusive: usize,
    /// Overall verdict.
    pub verdict: Option<Verdict>,
    /// Scenario FAIL verdicts covered by an open known anomaly (still counted in `fail`).
    #[serde(default)]
    pub known_anomaly_fails: usize,
    /// Open anomalies none of whose scenarios failed although all of them ran their planned
    /// trials: the register is out of date (an error: close them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_anomalies: Vec<String>,
    /// Exit code of `iohil run`.
    pub exit_code: i32,
}

/// `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunResults {
    /// [`RESULTS_FORMAT_VERSION`].
    pub format_version: u32,
    /// Run ID (also the directory name).
    pub run_id: String,
    /// UTC start time, RFC 3339.
    pub started_utc: String,
    /// UTC finish time, RFC 3339; `None` while running or if interrupted.
    pub finished_utc: Option<String>,
    /// Whether every planned trial is recorded.
    pub complete: bool,
    /// Harness build.
    pub harness: HarnessIdentity,
    /// Host name.
    pub host: String,
    /// Rig.
    pub rig: RigIdentity,
    /// The suite root directory, as given on the command line.
    pub suite_root: PathBuf,
    /// Requirements file (relative to the suite root) and hash.
    pub requirements_file: Source,
    /// Acceptance criteria, stated before any trial ran.
    pub acceptance: Vec<AcceptanceCriterion>,
    /// Hazards the requirements control, as stated in the requirements file.
    #[serde(default)]
    pub hazards: Vec<crate::scenario::Hazard>,
    /// Every scenario the run was to execute and its trial count, stated before any ran (an
    /// interrupted run's report counts what is missing from it).
    #[serde(default)]
    pub planned: Vec<PlannedScenario>,
    /// Scenarios in run order.
    pub scenarios: Vec<ScenarioResult>,
    /// Traceability: every requirement, its hazard, scenarios and verdict.
    pub traceability: Vec<TraceabilityRow>,
    /// Counts and exit code.
    pub summary: Summary,
    /// Why the run was stopped before its plan was done (a signal, a timeout, a lost link, a
    /// load fault), as the rig reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
    /// The known residual anomaly register of the suite, as it stood when the run started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_anomalies: Vec<crate::scenario::KnownAnomaly>,
    /// Whether the exit code ignores the FAILs the open anomalies cover
    /// (`--accept-known-anomalies`); the verdicts do not change.
    #[serde(default)]
    pub accept_known_anomalies: bool,
    /// Comparison with a baseline, when the run was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_comparison: Option<crate::baseline::Comparison>,
}

impl RunResults {
    /// Trials the run planned (for a run recorded before the plan was stored: what its
    /// recorded scenarios planned).
    pub fn planned_trials(&self) -> u64 {
        if self.planned.is_empty() {
            return self
                .scenarios
                .iter()
                .map(|s| u64::from(s.trials_planned))
                .sum();
        }
        self.planned.iter().map(|p| u64::from(p.trials)).sum()
    }

    /// Trials recorded so far.
    pub fn recorded_trials(&self) -> usize {
        self.scenarios.iter().map(|s| s.trials.len()).sum()
    }

    /// Reads a `results.json`.
    pub fn read(path: &Path) -> Result<RunResults, RunError> {
        let text = fs::read_to_string(path).map_err(|e| RunError::io("read", path, e))?;
        serde_json::from_str(&text).map_err(|e| RunError::Format {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// A failure of the run machinery (not of the firmware).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// File-system failure.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// An evidence file is not in the expected format.
    #[error("{path} is not a valid results file: {message}")]
    Format {
        /// Which path.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
}

impl RunError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        RunError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Directory that receives `<run-id>/` and the `latest` link.
    pub reports_dir: PathBuf,
    /// Run ID; default: UTC time plus a random suffix.
    pub run_id: Option<String>,
}

/// Checks a run ID given by the user: it names a directory inside the reports directory, so it
/// is 1 to 100 characters of `A-Z a-z 0-9 . _ -` starting with a letter or digit (no `/`, no
/// `..`, not absolute).
pub fn check_run_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "run ID {id:?} is not a plain name: use 1-100 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    }
}

/// A new run ID: `YYYYMMDDTHHMMSSZ-xxxx`.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = stamp
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{compact}-{:04x}", (nanos ^ std::process::id()) & 0xffff)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, flushed and
/// synced, then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| RunError::io("create directory", dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut file = fs::File::create(&tmp).map_err(|e| RunError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| RunError::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| RunError::io("sync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RunError::io("rename into", path, e))
}

pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Reads one measured value of a trial.
pub type MetricAccessor = fn(&Measurements) -> Option<f64>;

/// The measured values that get statistics over trials, with their accessors.
pub const STATISTIC_METRICS: &[(&str, MetricAccessor)] = &[
    ("detection_latency_ms", |m| m.detection_latency_ms),
    ("time_to_stop_ms", |m| m.time_to_stop_ms),
    ("overshoot_mm", |m| m.overshoot_mm),
    ("overshoot_rev", |m| m.overshoot_rev),
    ("peak_current_a", |m| m.peak_current_a),
    ("cortex_torque_nmm", |m| m.cortex_torque_nmm),
    ("time_in_cortex_s", |m| m.time_in_cortex_s),
    ("torque_drop_pct", |m| m.torque_drop_pct),
    ("control_isr_cycles_max", |m| m.control_isr_cycles_max),
    ("control_isr_cycles_p99", |m| m.control_isr_cycles_p99),
];

/// Runs every trial of every scenario of `suite` on `rig`, writing evidence as it goes.
/// `on_trial` is called after each trial is recorded (progress display).
pub fn run_suite(
    suite: &Suite,
    rig: &mut dyn Rig,
    options: &RunOptions,
    mut on_trial: impl FnMut(&ScenarioResult, &TrialResult),
) -> Result<(PathBuf, RunResults), RunError> {
    let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
    check_run_id(&run_id).map_err(|message| RunError::Format {
        path: options.reports_dir.clone(),
        message,
    })?;
    let run_dir = options.reports_dir.join(&run_id);
    fs::create_dir_all(&run_dir).map_err(|e| RunError::io("create run directory", &run_dir, e))?;
    let results_path = run_dir.join(RESULTS_FILE);
    let requirements = &suite.requirements;
    let mut results = RunResults {
        format_version: RESULTS_FORMAT_VERSION,
        run_id: run_id.clone(),
        started_utc: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        finished_utc: None,
        complete: false,
        harness: HarnessIdentity::current(),
        host: host_name(),
        rig: rig.identity(),
        suite_root: suite.root.clone(),
        requirements_file: relative_to(&requirements.source, &suite.root),
        acceptance: requirements
            .requirements
            .iter()
            .map(|r| AcceptanceCriterion {
                requirement: r.id.clone(),
                title: r.title.clone(),
                text: r.text.clone(),
                hazard: r.hazard.clone(),
                statistic: r.statistic.clone(),
                limits: r
                    .limits
                    .iter()
                    .map(|(name, l)| (name.clone(), format!("{} {}", l.value, l.unit)))
                    .collect(),
                clauses: r
                    .clauses
                    .iter()
                    .map(|c| AcceptanceClause {
                        clause: c.id.clone(),
                        text: c.text.clone(),
                        check: crate::verdict::CLAUSE_RULES
                            .iter()
                            .find(|rule| rule.id == c.id)
                            .map(|rule| rule.check.to_owned())
                            .unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        hazards: requirements.hazards.clone(),
        planned: suite
            .scenarios
            .iter()
            .map(|s| PlannedScenario {
                id: s.id.clone(),
                trials: s.trials,
            })
            .collect(),
        scenarios: Vec::new(),
        traceability: Vec::new(),
        summary: Summary::default(),
        aborted: None,
        known_anomalies: suite.anomalies.clone(),
        accept_known_anomalies: false,
        baseline_comparison: None,
    };
    // The acceptance criteria are on disk before the first trial runs.
    write_results(&results_path, &mut results, requirements)?;
    update_latest_link(&options.reports_dir, &run_id);

    for scenario in &suite.scenarios {
        let mut scenario_result = ScenarioResult {
            id: scenario.id.clone(),
            title: scenario.title.clone(),
            source: relative_to(&scenario.source, &suite.root),
            profile: scenario.bone.profile.clone(),
            population: scenario.bone.population,
            verifies: scenario.verifies.clone(),
            trials_planned: scenario.trials,
            seed: scenario.seed,
            trials: Vec::new(),
            statistics: BTreeMap::new(),
            verdicts: Vec::new(),
            verdict: None,
            known_anomaly: None,
            beyond_known_anomaly: None,
        };
        for trial in 0..scenario.trials {
            let trace_rel = format!("traces/{}/trial-{trial:04}.json", scenario.id);
            let trace_path = run_dir.join(&trace_rel);
            // A rig that has been asked to stop (a signal between trials) runs nothing more.
            if let Some(reason) = rig.aborted() {
                results.aborted = Some(reason);
                break;
            }
            let trial_result = match rig.run_trial(scenario, trial) {
                Ok(trace) => {
                    let bytes = serde_json::to_vec(&trace).map_err(|e| RunError::Format {
                        path: trace_path.clone(),
                        message: e.to_string(),
                    })?;
                    write_atomic(&trace_path, &bytes)?;
                    let stopped_fraction = requirements
                        .get("SR-02")
                        .and_then(|r| r.limits.get("stopped_speed_fraction"))
                        .map_or(0.05, |l| l.value);
                    let measurements = measure(&trace, stopped_fraction);
                    let verdicts = evaluate_trial(&trace, &measurements, scenario, requirements);
                    TrialResult {
                        trial,
                        seed: trace.seed,
                        trace_file: trace_rel,
                        trace_sha256: crate::sha256_hex(&bytes),
                        measurements,
                        verdicts,
                        anomalies: trace.anomalies.clone(),
                        firmware_faults: trace.firmware_faults.clone(),
                        firmware: (trace.firmware != results.rig.firmware)
                            .then(|| trace.firmware.clone()),
                        clock_error_ms: trace
                            .clock
                            .as_ref()
                            .map(|c| c.error_bound_ms)
                            .filter(|e| e.is_finite()),
                    }
                }
                Err(rig_error) => TrialResult {
                    trial,
                    seed: trial_seed(scenario.seed, trial),
                    trace_file: String::new(),
                    trace_sha256: String::new(),
                    measurements: Measurements::default(),
                    verdicts: scenario
                        .verifies
                        .iter()
                        .map(|id| {
                            crate::verdict::rig_fault(
                                id,
                                requirements,
                                &format!("rig fault: {rig_error}"),
                            )
                        })
                        .collect(),
                    anomalies: vec![rig_error.to_string()],
                    firmware_faults: Vec::new(),
                    firmware: None,
                    clock_error_ms: None,
                },
            };
            scenario_result.trials.push(trial_result);
            summarise_scenario(&mut scenario_result, suite, scenario);
            if let Some(last) = scenario_result.trials.last() {
                on_trial(&scenario_result, last);
            }
            // Evidence so far is on disk before the next trial starts.
            upsert(&mut results.scenarios, &scenario_result);
            if let Some(reason) = rig.aborted() {
                results.aborted = Some(reason);
            }
            write_results(&results_path, &mut results, requirements)?;
            if results.aborted.is_some() {
                break;
            }
        }
        if results.aborted.is_some() {
            break;
        }
    }
    if results.aborted.is_some() {
        // Not complete, no finish time: the report says the run was interrupted, and why.
        write_results(&results_path, &mut results, requirements)?;
        return Ok((run_dir, results));
    }
    results.complete = true;
    results.finished_utc =
        Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    write_results(&results_path, &mut results, requirements)?;
    Ok((run_dir, results))
}

/// `source` with its path relative to the suite root, so that results do not depend on the
/// directory the run was started from.
fn relative_to(source: &Source, root: &Path) -> Source {
    let absolute = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let path = absolute(&source.path);
    Source {
        path: path
            .strip_prefix(absolute(root))
            .map_or_else(|_| source.path.clone(), Path::to_path_buf),
        sha256: source.sha256.clone(),
    }
}

/// Records a baseline comparison in the run's `results.json` (rewritten atomically) and folds
/// it into the exit code.
pub fn record_comparison(
    run_dir: &Path,
    results: &mut RunResults,
    requirements: &crate::scenario::Requirements,
    comparison: crate::baseline::Comparison,
) -> Result<(), RunError> {
    results.baseline_comparison = Some(comparison);
    write_results(&run_dir.join(RESULTS_FILE), results, requirements)
}

fn upsert(scenarios: &mut Vec<ScenarioResult>, result: &ScenarioResult) {
    match scenarios.iter_mut().find(|s| s.id == result.id) {
        Some(existing) => *existing = result.clone(),
        None => scenarios.push(result.clone()),
    }
}

fn summarise_scenario(
    result: &mut ScenarioResult,
    suite: &Suite,
    scenario: &crate::scenario::Scenario,
) {
    result.statistics = STATISTIC_METRICS
        .iter()
        .filter_map(|(name, get)| {
            let values: Vec<f64> = result
                .trials
                .iter()
                .filter_map(|t| get(&t.measurements))
                .collect();
            Statistics::of(&values).map(|s| ((*name).to_owned(), s))
        })
        .collect();
    result.verdicts = scenario
        .verifies
        .iter()
        .map(|id| {
            let per_trial: Vec<&RequirementVerdict> = result
                .trials
                .iter()
                .flat_map(|t| t.verdicts.iter().filter(|v| &v.requirement == id))
                .collect();
            aggregate(id, &per_trial, &suite.requirements, scenario)
        })
        .collect();
    result.verdict = result.verdicts.iter().map(|v| v.verdict).max();
    (result.known_anomaly, result.beyond_known_anomaly) =
        match covering_anomaly(result, &suite.anomalies) {
            Some(Ok(a)) => (Some(a.id.clone()), None),
            Some(Err(beyond)) => (None, Some(beyond)),
            None => (None, None),
        };
}

/// The open anomaly that covers `result`'s FAIL: it names the scenario and every requirement
/// the scenario fails, and no failing clause is measured beyond the entry's bound for it.
/// `Err` says why the entry that names them does not cover it.
fn covering_anomaly<'a>(
    result: &ScenarioResult,
    anomalies: &'a [crate::scenario::KnownAnomaly],
) -> Option<Result<&'a crate::scenario::KnownAnomaly, String>> {
    if result.verdict != Some(Verdict::Fail) {
        return None;
    }
    let failed = result
        .verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Fail);
    let entry = anomalies
        .iter()
        .find(|a| a.covers(&result.id, failed.clone().map(|v| v.requirement.as_str())))?;
    let failing_clauses = failed
        .flat_map(|v| v.clauses.iter())
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| (c.clause.as_str(), c.measured, c.unit.as_str()));
    Some(match entry.beyond_bounds(&result.id, failing_clauses) {
        Some(beyond) => Err(beyond),
        None => Ok(entry),
    })
}

/// Records `--accept-known-anomalies` in the run's `results.json` (rewritten atomically): the
/// exit code then ignores the FAILs open anomalies cover, and nothing else.
pub fn accept_known_anomalies(
    run_dir: &Path,
    results: &mut RunResults,
    requirements: &crate::scenario::Requirements,
) -> Result<(), RunError> {
    results.accept_known_anomalies = true;
    write_results(&run_dir.join(RESULTS_FILE), results, requirements)
}

fn write_results(
    path: &Path,
    results: &mut RunResults,
    requirements: &crate::scenario::Requirements,
) -> Result<(), RunError> {
    results.traceability = requirements
        .requirements
        .iter()
        .map(|req| {
            let verifying: Vec<&ScenarioResult> = results
                .scenarios
                .iter()
                .filter(|s| s.verifies.contains(&req.id))
                .collect();
            TraceabilityRow {
                requirement: req.id.clone(),
                hazard: req.hazard.clone(),
                scenarios: verifying.iter().map(|s| s.id.clone()).collect(),
                trials: verifying.iter().map(|s| s.trials.len()).sum(),
                verdict: verifying
                    .iter()
                    .flat_map(|s| s.verdicts.iter().filter(|v| v.requirement == req.id))
                    .map(|v| v.verdict)
                    .max(),
                clauses: req
                    .clauses
                    .iter()
                    .map(|clause| {
                        let scenarios: Vec<(String, Verdict)> = verifying
                            .iter()
                            .filter_map(|s| {
                                s.verdicts
                                    .iter()
                                    .flat_map(|v| v.clauses.iter())
                                    .find(|c| c.clause == clause.id && c.exercised)
                                    .map(|c| (s.id.clone(), c.verdict))
                            })
                            .collect();
                        ClauseTraceRow {
                            clause: clause.id.clone(),
                            verdict: scenarios.iter().map(|(_, v)| *v).max(),
                            scenarios,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let verdicts = results.scenarios.iter().flat_map(|s| s.verdicts.iter());
    let mut summary = Summary::default();
    for v in verdicts {
        match v.verdict {
            Verdict::Pass => summary.pass += 1,
            Verdict::Fail => summary.fail += 1,
            Verdict::Inconclusive | Verdict::Incomplete => summary.inconclusive += 1,
        }
    }
    // Until the run has carried out its plan (and for ever, if it is interrupted or killed
    // first) its results say INCOMPLETE, never the verdict of the trials recorded so far.
    summary.verdict = if results.complete {
        results.scenarios.iter().filter_map(|s| s.verdict).max()
    } else {
        Some(Verdict::Incomplete)
    };
    summary.known_anomaly_fails = results
        .scenarios
        .iter()
        .filter(|s| s.known_anomaly.is_some())
        .count();
    summary.stale_anomalies = stale_anomalies(results);
    summary.exit_code = exit_code(summary.verdict);
    if results.complete && results.accept_known_anomalies {
        // The verdict each scenario would have without the FAILs its anomaly covers.
        let accepted = results
            .scenarios
            .iter()
            .filter_map(|s| match &s.known_anomaly {
                Some(_) => s
                    .verdicts
                    .iter()
                    .map(|v| v.verdict)
                    .filter(|v| *v != Verdict::Fail)
                    .max()
                    .or(Some(Verdict::Pass)),
                None => s.verdict,
            })
            .max();
        summary.exit_code = exit_code(accepted);
    }
    if !summary.stale_anomalies.is_empty() && summary.exit_code != EXIT_INCOMPLETE {
        summary.exit_code = EXIT_FAIL;
    }
    if let Some(comparison) = &results.baseline_comparison {
        summary.exit_code = comparison.exit_code(summary.exit_code);
    }
    results.summary = summary;
    let mut bytes = serde_json::to_vec_pretty(results).map_err(|e| RunError::Format {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Open anomalies of the register whose scenarios all ran their planned trials in this run
/// and none of which failed: they no longer reproduce.
fn stale_anomalies(results: &RunResults) -> Vec<String> {
    results
        .known_anomalies
        .iter()
        .filter(|a| a.status == crate::scenario::AnomalyStatus::Open)
        .filter(|a| {
            let ran: Vec<&ScenarioResult> = a
                .scenarios
                .iter()
                .filter_map(|id| results.scenarios.iter().find(|s| &s.id == id))
                .collect();
            ran.len() == a.scenarios.len()
                && ran
                    .iter()
                    .all(|s| s.trials.len() >= s.trials_planned as usize)
                && ran.iter().all(|s| s.verdict != Some(Verdict::Fail))
        })
        .map(|a| a.id.clone())
        .collect()
}

/// The exit code for an overall verdict.
pub fn exit_code(verdict: Option<Verdict>) -> i32 {
    match verdict {
        Some(Verdict::Pass) => EXIT_PASS,
        Some(Verdict::Fail) => EXIT_FAIL,
        Some(Verdict::Inconclusive) | None => EXIT_INCONCLUSIVE,
        Some(Verdict::Incomplete) => EXIT_INCOMPLETE,
    }
}

/// Points `reports/latest` at the run directory (a symlink, replaced atomically). Best effort:
/// a file system without symlinks gets a `latest.txt` holding the run ID instead.
pub fn update_latest_link(reports_dir: &Path, run_id: &str) {
    let latest = reports_dir.join("latest");
    let tmp = reports_dir.join(".latest.tmp");
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    {
        if std::os::unix::fs::symlink(run_id, &tmp).is_ok() && fs::rename(&tmp, &latest).is_ok() {
            return;
        }
    }
    let _ = write_atomic(
        &reports_dir.join("latest.txt"),
        format!("{run_id}\n").as_bytes(),
    );
}

/// Formats an optional value with `decimals` and `unit`, or `-`.
pub fn fmt_value(value: Option<f64>, decimals: usize, unit: &str) -> String {
    match value {
        Some(v) => format!("{v:.decimals$} {unit}"),
        None => "-".to_owned(),
    }
}

/// The console table of one finished scenario.
pub fn scenario_table(result: &ScenarioResult) -> String {
    let mut out = String::new();
    let verdict = result.verdict.map_or("-", Verdict::as_str);
    out.push_str(&format!(
        "\n{verdict:<12} {}  ({} trial{}, seed {})\n             {}\n",
        result.id,
        result.trials.len(),
        if result.trials.len() == 1 { "" } else { "s" },
        result.seed,
        result.title
    ));
    let stat = |name: &str| result.statistics.get(name).map(|s| s.max);
    let far = result
        .trials
        .iter()
        .any(|t| t.measurements.far_cortex_contact_rotating);
    let stop_reasons: Vec<String> = {
        let mut reasons: Vec<String> = result
            .trials
            .iter()
            .map(|t| {
                t.measurements
                    .stop_reason
                    .clone()
                    .unwrap_or_else(|| "none".to_owned())
            })
            .collect();
        reasons.sort();
        reasons.dedup();
        reasons
    };
    let max_label = if result.trials.len() > 1 {
        " (max)"
    } else {
        ""
    };
    let rows = [
        (
            "detection latency",
            fmt_value(stat("detection_latency_ms"), 1, "ms"),
        ),
        ("time to stop", fmt_value(stat("time_to_stop_ms"), 1, "ms")),
        (
            "overshoot",
            format!(
                "{} / {}",
                fmt_value(stat("overshoot_mm"), 2, "mm"),
                fmt_value(stat("overshoot_rev"), 2, "rev")
            ),
        ),
        (
            "far-cortex contact",
            if far {
                "YES, rotating".to_owned()
            } else {
                "no".to_owned()
            },
        ),
        ("peak current", fmt_value(stat("peak_current_a"), 3, "A")),
        (
            "cortex torque",
            fmt_value(stat("cortex_torque_nmm"), 1, "N*mm"),
        ),
        (
            "time in cortex",
            fmt_value(stat("time_in_cortex_s"), 2, "s"),
        ),
        (
            "torque drop at pop",
            fmt_value(stat("torque_drop_pct"), 0, "%"),
        ),
        ("final depth", {
            let deepest = result
                .trials
                .iter()
                .map(|t| t.measurements.final_depth_mm)
                .reduce(f64::max);
            let inner = result
                .trials
                .first()
                .map(|t| t.measurements.inner_surface_mm);
            format!(
                "{} (inner surface of the cortex at {})",
                fmt_value(deepest, 2, "mm"),
                fmt_value(inner, 2, "mm")
            )
        }),
        ("stop reason", stop_reasons.join(", ")),
    ];
    for (label, value) in rows {
        out.push_str(&format!("  {:<24}{value}\n", format!("{label}{max_label}")));
    }
    for v in &result.verdicts {
        out.push_str(&format!(
            "  {:<6} {:<12} {}\n",
            v.requirement,
            v.verdict.as_str(),
            v.detail
        ));
    }
    out
}

/// The console summary of a run.
pub fn summary_text(results: &RunResults, run_dir: &Path) -> String {
    let s = &results.summary;
    let mut out = format!(
        "\n{} scenarios, {} requirement verdicts: {} PASS, {} FAIL, {} INCONCLUSIVE\n",
        results.scenarios.len(),
        s.pass + s.fail + s.inconclusive,
        s.pass,
        s.fail,
        s.inconclusive
    );
    let unverified: Vec<&str> = results
        .traceability
        .iter()
        .filter(|row| row.scenarios.is_empty())
        .map(|row| row.requirement.as_str())
        .collect();
    if !unverified.is_empty() {
        out.push_str(&format!(
            "requirements no scenario of this run verifies: {}\n",
            unverified.join(", ")
        ));
    }
    let ran = if results.complete {
        String::new()
    } else {
        format!(
            " ({} of {} planned trials ran)",
            results.recorded_trials(),
            results.planned_trials()
        )
    };
    for s in results
        .scenarios
        .iter()
        .filter(|s| s.known_anomaly.is_some())
    {
        out.push_str(&format!(
            "FAIL of {} covered by known anomaly {}{}\n",
            s.id,
            s.known_anomaly.as_deref().unwrap_or(""),
            if results.accept_known_anomalies {
                " (accepted for the exit code: --accept-known-anomalies)"
            } else {
                ""
            }
        ));
    }
    for note in results
        .scenarios
        .iter()
        .filter_map(ScenarioResult::beyond_known_anomaly_note)
    {
        out.push_str(&note);
        out.push('\n');
    }
    for id in &s.stale_anomalies {
        out.push_str(&format!(
            "ERROR: {id} no longer reproduces (its scenarios ran and none failed): close it in {}\n",
            crate::scenario::ANOMALIES_FILE
        ));
    }
    out.push_str(&format!(
        "overall: {}{ran}   evidence: {}\n",
        s.verdict.map_or("NO VERDICT", Verdict::as_str),
        run_dir.display()
    ));
    out
}

/// The JSON Schema of `results.json` (format version [`RESULTS_FORMAT_VERSION`]).
pub fn results_schema_json() -> String {
    let schema = schemars::schema_for!(RunResults);
    format!("{:#}", schema.as_value())
}
