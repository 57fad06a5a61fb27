//! The verification report: one versioned model built from a run directory's evidence, and
//! its views.
//!
//! [`build`] reads only what the run stored (`results.json`, the traces, `fuzz.json`), never
//! the suite files, so `iohil report <run-dir>` regenerates the same report from the evidence
//! alone. The views are `report.json` (the model itself), `report.html` (self-contained, for a
//! reviewer to read and sign), `junit.xml` (CI test reporting) and `summary.md` (a PR
//! comment or job summary). [`write_all`] writes them atomically and then `manifest.json`: the
//! SHA-256 of every file of the run, which [`manifest::verify`] recomputes (tamper evidence).

pub mod html;
pub mod junit;
pub mod manifest;
pub mod markdown;
pub mod plot;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::baseline::Comparison;
use crate::fuzz::FuzzResults;
use crate::rig::RigIdentity;
use crate::run::{
    write_atomic, AcceptanceCriterion, HarnessIdentity, RunError, RunResults, ScenarioResult,
    Summary, RESULTS_FILE, STATISTIC_METRICS,
};
use crate::scenario::{Hazard, Source};
use crate::trace::FirmwareIdentity;
use crate::verdict::{RequirementVerdict, Verdict};

/// Version of the report model (`report.json`).
pub const REPORT_FORMAT_VERSION: u32 = 1;
/// The model, as JSON.
pub const REPORT_JSON: &str = "report.json";
/// The HTML report.
pub const REPORT_HTML: &str = "report.html";
/// The JUnit XML.
pub const JUNIT_XML: &str = "junit.xml";
/// The Markdown summary.
pub const SUMMARY_MD: &str = "summary.md";
/// The fuzz campaign record, when the run directory holds one.
pub const FUZZ_FILE: &str = "fuzz.json";
/// The falsification record, when the run directory holds one.
pub const FALSIFY_FILE: &str = crate::falsify::FALSIFY_FILE;

/// Units and labels of the statistic metrics (names from [`STATISTIC_METRICS`]).
pub fn metric_label(metric: &str) -> (&'static str, &'static str) {
    match metric {
        "detection_latency_ms" => ("detection latency (t_bt to motor-off)", "ms"),
        "time_to_stop_ms" => ("time to stop after t_bt", "ms"),
        "overshoot_mm" => ("rotating overshoot", "mm"),
        "overshoot_rev" => ("revolutions after t_bt", "rev"),
        "peak_current_a" => ("peak motor current", "A"),
        "cortex_torque_nmm" => ("cortex torque", "N*mm"),
        "time_in_cortex_s" => ("time in cortex", "s"),
        "torque_drop_pct" => ("torque drop at breakthrough", "%"),
        "control_isr_cycles_max" => (
            "control interrupt CPU time, longest of the trial (budget: 170 000 cycles per 1 ms tick at 170 MHz)",
            "cycles",
        ),
        "control_isr_cycles_p99" => (
            "control interrupt CPU time, P99 over the trial's ticks (budget: 170 000 cycles)",
            "cycles",
        ),
        _ => ("", ""),
    }
}

/// The report model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// When this report was generated, UTC, RFC 3339.
    pub generated_utc: String,
    /// The harness that generated the report (may differ from the one that ran).
    pub generator: HarnessIdentity,
    /// Provenance.
    pub identification: Identification,
    /// The run's overall outcome.
    pub status: Status,
    /// Acceptance criteria as stated before execution.
    pub acceptance: Vec<AcceptanceCriterion>,
    /// Verdict counts and exit code.
    pub summary: Summary,
    /// Requirement -> hazard -> scenarios -> trials -> verdict.
    pub traceability: Vec<TraceabilityEntry>,
    /// Per scenario.
    pub scenarios: Vec<ScenarioSection>,
    /// Every firmware fault, rig anomaly and INCONCLUSIVE verdict, with its cause.
    pub anomalies: Vec<Anomaly>,
    /// The suite's known residual anomaly register, each entry with what this run showed.
    #[serde(default)]
    pub known_anomalies: Vec<KnownAnomalyRow>,
    /// The exit code ignored the FAILs open entries cover (`--accept-known-anomalies`).
    #[serde(default)]
    pub accept_known_anomalies: bool,
    /// The fuzz campaign, when the run directory holds one.
    pub fuzz: Option<FuzzSection>,
    /// The falsification ("worst cases found"), when the run directory holds one.
    #[serde(default)]
    pub falsify: Option<FalsifySection>,
    /// Baseline comparison, when the run had one.
    pub baseline: Option<Comparison>,
    /// Every evidence file with its SHA-256 (the report's own views are in `manifest.json`).
    pub evidence: Vec<manifest::FileEntry>,
}

/// Who and what ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identification {
    /// Run ID.
    pub run_id: String,
    /// Start, UTC.
    pub started_utc: Option<String>,
    /// End, UTC; `None` if the run did not finish.
    pub finished_utc: Option<String>,
    /// Harness that ran.
    pub harness: HarnessIdentity,
    /// Host.
    pub host: Option<String>,
    /// Rig.
    pub rig: Option<RigIdentity>,
    /// Firmware that produced the traces (distinct identities over all trials).
    pub firmware: Vec<FirmwareIdentity>,
    /// Suite root as given.
    pub suite_root: Option<PathBuf>,
    /// Requirements file and hash.
    pub requirements_file: Option<Source>,
    /// Scenario files and hashes, in run order (a file with several scenarios once).
    pub scenario_files: Vec<Source>,
    /// Seed per scenario.
    pub seeds: Vec<(String, u64)>,
}

/// Overall outcome, with the reason when the run is not a clean PASS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Worst verdict; `None` when nothing was judged.
    pub verdict: Option<Verdict>,
    /// Whether every planned trial is recorded.
    pub complete: bool,
    /// Lines a reviewer must read first (incomplete run, failures, unverified requirements).
    pub notes: Vec<String>,
}

/// One requirement's traceability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceabilityEntry {
    /// Requirement ID.
    pub requirement: String,
    /// Title.
    pub title: String,
    /// Hazard ID.
    pub hazard: String,
    /// Hazard title, when known.
    pub hazard_title: Option<String>,
    /// Scenarios verifying it, with their verdict for this requirement.
    pub scenarios: Vec<(String, Option<Verdict>)>,
    /// Trials.
    pub trials: usize,
    /// Worst verdict; `None`: no scenario verified it.
    pub verdict: Option<Verdict>,
    /// Its clauses: text, check, and the scenarios that exercised each.
    pub clauses: Vec<ClauseEntry>,
}

/// One clause's row of the clause table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClauseEntry {
    /// Clause ID.
    pub clause: String,
    /// Its text.
    pub text: String,
    /// The evaluator's check.
    pub check: String,
    /// Scenarios of this run that exercised it, with their verdict for it.
    pub scenarios: Vec<(String, Verdict)>,
    /// Those of them that did not pass (listed first in the report).
    pub not_passed: Vec<(String, Verdict)>,
    /// Worst verdict; `None`: not verified (no scenario of this run exercised it).
    pub verdict: Option<Verdict>,
}

/// One statistic row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatisticRow {
    /// Metric name.
    pub metric: String,
    /// Label.
    pub label: String,
    /// Unit.
    pub unit: String,
    /// The values (see [`crate::verdict::Statistics`]).
    pub statistics: crate::verdict::Statistics,
}

/// One trial row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    /// Trial index.
    pub trial: u32,
    /// Seed.
    pub seed: u64,
    /// Trace file.
    pub trace_file: String,
    /// Worst verdict of the trial.
    pub verdict: Option<Verdict>,
    /// Key measured values, in [`STATISTIC_METRICS`] order (`None` when not measured).
    pub values: Vec<Option<f64>>,
    /// Why the firmware stopped.
    pub stop_reason: Option<String>,
    /// Far-cortex contact while rotating.
    pub far_cortex_contact: bool,
    /// Bound on the board-to-load clock alignment error, ms (bench rig).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_error_ms: Option<f64>,
    /// Requirement verdicts that did not pass, with details.
    pub not_passed: Vec<RequirementVerdict>,
}

/// Per-scenario section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSection {
    /// ID.
    pub id: String,
    /// The open known anomaly covering this scenario's FAIL.
    #[serde(default)]
    pub known_anomaly: Option<String>,
    /// Title.
    pub title: String,
    /// Source file and hash.
    pub source: Source,
    /// Bone profile.
    pub profile: Option<String>,
    /// Requirements verified.
    pub verifies: Vec<String>,
    /// Trials planned / run.
    pub trials_planned: u32,
    /// Trials run.
    pub trials_run: usize,
    /// Base seed.
    pub seed: u64,
    /// Worst verdict.
    pub verdict: Option<Verdict>,
    /// Verdict per requirement, with measured value and limit.
    pub requirements: Vec<RequirementVerdict>,
    /// Statistics over trials.
    pub statistics: Vec<StatisticRow>,
    /// Metric names of [`TrialRow::values`], with units.
    pub trial_columns: Vec<(String, String)>,
    /// Trials (all of them; the HTML shows at most [`html::MAX_TRIAL_ROWS`] plus every
    /// trial that did not pass).
    pub trials: Vec<TrialRow>,
    /// Plots of one trial (the worst; else the slowest detection), `None` if no trace.
    pub plot: Option<plot::TrialPlot>,
}

/// An anomaly or INCONCLUSIVE verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Scenario.
    pub scenario: String,
    /// Trial, or `None` for a scenario-level verdict.
    pub trial: Option<u32>,
    /// Requirement, when the entry is a verdict.
    pub requirement: Option<String>,
    /// Cause.
    pub cause: String,
}

/// A fuzz campaign summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzSection {
    /// Campaign seed.
    pub seed: u64,
    /// Cases planned / run.
    pub cases_planned: u64,
    /// Cases run.
    pub cases_run: usize,
    /// Shards covered, of how many.
    pub shards: Vec<u32>,
    /// Shard count.
    pub shard_count: u32,
    /// Whether every case of the covered shards ran.
    pub complete: bool,
    /// Per property: pass, fail, inconclusive.
    pub properties: Vec<(String, u64, u64, u64)>,
    /// Margins to each limit (min is the closest approach).
    pub margins: Vec<(String, crate::verdict::Statistics)>,
    /// Premature-stop fraction with push variation.
    pub premature_fraction_with_variation: Option<f64>,
    /// Requirements the campaign failed.
    pub failing_requirements: Vec<String>,
    /// The statistical statement on the per-insertion failure probability, one sentence.
    pub failure_rate: Option<String>,
    /// Cases whose breakthrough was never detected.
    pub never_detected: usize,
    /// Shrunk failures.
    pub failures: Vec<FuzzFailureRow>,
}

/// A falsification summary: the worst case found per requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalsifySection {
    /// Seed.
    pub seed: u64,
    /// Most simulations per requirement.
    pub budget: u64,
    /// Every search ran to its end.
    pub complete: bool,
    /// Simulations over all searches.
    pub simulations: u64,
    /// Requirements falsified.
    pub failing_requirements: Vec<String>,
    /// One row per requirement searched.
    pub rows: Vec<FalsifyRow>,
    /// The shrunk failures, once each (a case that failed several requirements is one).
    pub failures: Vec<FalsifyFailureRow>,
}

/// One shrunk failure of a falsification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalsifyFailureRow {
    /// Scenario id it is promoted under.
    pub scenario_id: String,
    /// Requirements whose worst case it is.
    pub requirements: Vec<String>,
    /// The minimal case, described.
    pub minimal: String,
    /// What failed on it.
    pub findings: Vec<String>,
    /// The minimal case as a scenario file.
    pub scenario_yaml: String,
    /// Where it was promoted, if it was.
    pub scenario_file: Option<PathBuf>,
}

/// One requirement's search in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalsifyRow {
    /// Requirement.
    pub requirement: String,
    /// What the margin measures.
    pub objective: String,
    /// Smallest normalised margin found (at most 0: falsified).
    pub worst_margin: Option<f64>,
    /// Simulations of its search.
    pub simulations: u64,
    /// CMA-ES restarts.
    pub restarts: u32,
    /// Falsified.
    pub falsified: bool,
    /// The outcome in words.
    pub result: String,
    /// The worst case, described.
    pub worst_case: Option<String>,
    /// What the worst case showed.
    pub findings: Vec<String>,
    /// The minimal failing case, described.
    pub minimal: Option<String>,
    /// Worst margin after each generation: (simulations, margin).
    pub history: Vec<(u64, f64)>,
}

/// One shrunk fuzz failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzFailureRow {
    /// Case index.
    pub index: u64,
    /// Requirements it failed.
    pub requirements: Vec<String>,
    /// What was found.
    pub findings: Vec<String>,
    /// The minimal case, described.
    pub minimal: String,
    /// The minimal case as a scenario file.
    pub scenario_yaml: String,
    /// Whether it fails the campaign on its own (else a premature stop with push variation,
    /// counted against SR-05's allowance).
    pub counted: bool,
}

/// A report could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Neither results.json nor fuzz.json.
    #[error("{0} holds no run evidence (no results.json, fuzz.json or falsify.json)")]
    NoEvidence(PathBuf),
    /// Reading or writing failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// fuzz.json or falsify.json unreadable.
    #[error("{path} is not a valid fuzz or falsification record: {message}")]
    Fuzz {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The evidence no longer matches the manifest written with the last report: regenerating
    /// would sign the change.
    #[error("the evidence in {run_dir} changed since its manifest was written ({detail}); refusing to write a new manifest over it (hint: `iohil verify` names the files; remove manifest.json only if the change is deliberate and recorded)")]
    Tampered {
        /// Run directory.
        run_dir: PathBuf,
        /// What differs.
        detail: String,
    },
    /// Rendering failed.
    #[error("cannot render {view}: {message}")]
    Render {
        /// Which view.
        view: &'static str,
        /// Cause.
        message: String,
    },
}

/// A search's record (`fuzz.json`, `falsify.json`) in a run directory, if it holds one.
fn read_search_record<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<Option<T>, ReportError> {
    if !path.is_file() {
        return Ok(None);
    }
    let invalid = |message: String| ReportError::Fuzz {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// Builds the report of the run in `run_dir` from its stored evidence.
pub fn build(run_dir: &Path) -> Result<Report, ReportError> {
    let results_path = run_dir.join(RESULTS_FILE);
    let fuzz_path = run_dir.join(FUZZ_FILE);
    let results = if results_path.is_file() {
        Some(RunResults::read(&results_path)?)
    } else {
        None
    };
    let fuzz = read_search_record::<FuzzResults>(&fuzz_path)?;
    let falsify =
        read_search_record::<crate::falsify::FalsifyResults>(&run_dir.join(FALSIFY_FILE))?;
    let run_id = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let evidence = manifest::evidence_files(run_dir)?;
    let fuzz_section = fuzz.as_ref().map(fuzz_section);
    let falsify_section = falsify.as_ref().map(falsify_section);

    let results = match (results, &fuzz, &falsify) {
        (Some(results), _, _) => results,
        (None, None, None) => return Err(ReportError::NoEvidence(run_dir.to_owned())),
        (None, _, _) => {
            let mut failing: Vec<String> = Vec::new();
            let mut notes = Vec::new();
            let mut complete = true;
            let mut harness = HarnessIdentity::current();
            let mut seeds = Vec::new();
            let (mut started_utc, mut finished_utc) = (None, None);
            if let Some(fuzz) = &fuzz {
                if !fuzz.complete {
                    notes.push("the campaign did not run every case (time budget)".to_owned());
                }
                if !fuzz.failing_requirements.is_empty() {
                    notes.push(format!(
                        "the campaign failed {}",
                        fuzz.failing_requirements.join(", ")
                    ));
                }
                failing.extend(fuzz.failing_requirements.iter().cloned());
                complete &= fuzz.complete;
                harness = fuzz.harness.clone();
                seeds.push(("fuzz campaign".to_owned(), fuzz.seed));
            }
            if let Some(falsify) = &falsify {
                if !falsify.complete {
                    notes.push(
                        "the falsification did not run every search to its end (time budget)"
                            .to_owned(),
                    );
                }
                if !falsify.failing_requirements.is_empty() {
                    notes.push(format!(
                        "the falsification found cases failing {}",
                        falsify.failing_requirements.join(", ")
                    ));
                }
                failing.extend(falsify.failing_requirements.iter().cloned());
                complete &= falsify.complete;
                harness = falsify.harness.clone();
                started_utc = Some(falsify.started_utc.clone());
                finished_utc = Some(falsify.finished_utc.clone());
                seeds.push(("falsification".to_owned(), falsify.seed));
            }
            failing.sort();
            failing.dedup();
            // A search or campaign cut short proves nothing about what it did not reach: never
            // PASS.
            let verdict = Some(if !failing.is_empty() {
                Verdict::Fail
            } else if !complete {
                Verdict::Incomplete
            } else {
                Verdict::Pass
            });
            let exit_code = i32::from(verdict != Some(Verdict::Pass));
            return Ok(Report {
                format_version: REPORT_FORMAT_VERSION,
                generated_utc: now_utc(),
                generator: HarnessIdentity::current(),
                identification: Identification {
                    run_id,
                    started_utc,
                    finished_utc,
                    harness,
                    host: None,
                    rig: None,
                    firmware: Vec::new(),
                    suite_root: None,
                    requirements_file: None,
                    scenario_files: Vec::new(),
                    seeds,
                },
                status: Status {
                    verdict,
                    complete,
                    notes,
                },
                acceptance: Vec::new(),
                summary: Summary {
                    verdict,
                    exit_code,
                    ..Summary::default()
                },
                traceability: Vec::new(),
                scenarios: Vec::new(),
                anomalies: Vec::new(),
                known_anomalies: Vec::new(),
                accept_known_anomalies: false,
                fuzz: fuzz_section,
                falsify: falsify_section,
                baseline: None,
                evidence,
            });
        }
    };

    // Every firmware that produced a trace: the rig's, and any a trial recorded as different.
    let mut firmware: Vec<FirmwareIdentity> = vec![results.rig.firmware.clone()];
    for f in results
        .scenarios
        .iter()
        .flat_map(|s| &s.trials)
        .filter_map(|t| t.firmware.as_ref())
    {
        if !firmware.contains(f) {
            firmware.push(f.clone());
        }
    }
    let mut scenarios = Vec::new();
    let mut anomalies = Vec::new();
    for scenario in &results.scenarios {
        let (section, trace_firmware) = scenario_section(run_dir, scenario, &mut anomalies);
        for f in trace_firmware {
            if !firmware.contains(&f) {
                firmware.push(f);
            }
        }
        scenarios.push(section);
    }

    let mut scenario_files: Vec<Source> = Vec::new();
    for s in &results.scenarios {
        if !scenario_files.iter().any(|f| f.path == s.source.path) {
            scenario_files.push(s.source.clone());
        }
    }
    let hazard_title = |id: &str| {
        results
            .hazards
            .iter()
            .find(|h: &&Hazard| h.id == id)
            .map(|h| h.title.clone())
    };
    let traceability = results
        .traceability
        .iter()
        .map(|row| {
            let title = results
                .acceptance
                .iter()
                .find(|a| a.requirement == row.requirement)
                .map(|a| a.title.clone())
                .unwrap_or_default();
            TraceabilityEntry {
                requirement: row.requirement.clone(),
                title,
                hazard: row.hazard.clone(),
                hazard_title: hazard_title(&row.hazard),
                scenarios: row
                    .scenarios
                    .iter()
                    .map(|id| {
                        let verdict =
                            results
                                .scenarios
                                .iter()
                                .find(|s| &s.id == id)
                                .and_then(|s| {
                                    s.verdicts
                                        .iter()
                                        .find(|v| v.requirement == row.requirement)
                                        .map(|v| v.verdict)
                                });
                        (id.clone(), verdict)
                    })
                    .collect(),
                trials: row.trials,
                verdict: row.verdict,
                clauses: row
                    .clauses
                    .iter()
                    .map(|c| {
                        let stated = results
                            .acceptance
                            .iter()
                            .flat_map(|a| a.clauses.iter())
                            .find(|a| a.clause == c.clause);
                        ClauseEntry {
                            clause: c.clause.clone(),
                            text: stated.map(|a| a.text.clone()).unwrap_or_default(),
                            check: stated.map(|a| a.check.clone()).unwrap_or_default(),
                            scenarios: c.scenarios.clone(),
                            not_passed: c
                                .scenarios
                                .iter()
                                .filter(|(_, v)| *v != Verdict::Pass)
                                .cloned()
                                .collect(),
                            verdict: c.verdict,
                        }
                    })
                    .collect(),
            }
        })
        .collect::<Vec<_>>();

    let mut notes = Vec::new();
    // Every trace must still be the one results.json recorded.
    for scenario in &results.scenarios {
        for trial in scenario.trials.iter().filter(|t| !t.trace_file.is_empty()) {
            let entry = evidence.iter().find(|f| f.path == trial.trace_file);
            let problem = match entry {
                None => Some("is missing".to_owned()),
                Some(f) if f.sha256 != trial.trace_sha256 => Some(format!(
                    "has SHA-256 {} but results.json recorded {}",
                    f.sha256, trial.trace_sha256
                )),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                notes.push(format!("EVIDENCE MISMATCH: {} {problem}", trial.trace_file));
                anomalies.push(Anomaly {
                    scenario: scenario.id.clone(),
                    trial: Some(trial.trial),
                    requirement: None,
                    cause: format!("trace {} {problem}", trial.trace_file),
                });
            }
        }
    }
    for file in evidence
        .iter()
        .filter(|f| manifest::is_incomplete_write(&f.path))
    {
        notes.push(format!(
            "an evidence write never completed: {} (the run was killed while writing)",
            file.path
        ));
    }
    // The summary must agree with the verdicts it summarises.
    let worst_scenario = results.scenarios.iter().filter_map(|s| s.verdict).max();
    if worst_scenario.is_some() && worst_scenario > results.summary.verdict {
        notes.push(format!(
            "results.json's summary verdict {} is better than its worst scenario verdict {}",
            verdict_name(results.summary.verdict),
            verdict_name(worst_scenario)
        ));
    }
    if !results.complete {
        notes.push(format!(
            "INCOMPLETE RUN: {} of {} planned trials are recorded; the run stopped before its \
             plan was carried out, so it is no evidence that the plan passes",
            results.recorded_trials(),
            results.planned_trials()
        ));
    }
    if let Some(reason) = &results.aborted {
        let safe_state = if results.rig.kind == "bench" {
            " The rig was put in its safe state (load emergency stop, board reset)."
        } else {
            ""
        };
        notes.push(format!(
            "RUN ABORTED: {reason}.{safe_state} The trials recorded before the abort are kept"
        ));
    }
    if results.summary.known_anomaly_fails > 0 {
        notes.push(format!(
            "{} scenario FAIL(s) covered by an open known anomaly (section 8); they stay FAIL{}",
            results.summary.known_anomaly_fails,
            if results.accept_known_anomalies {
                ", and the exit code ignores them (--accept-known-anomalies)"
            } else {
                ""
            }
        ));
    }
    notes.extend(
        (results.scenarios.iter())
            .filter_map(crate::run::ScenarioResult::beyond_known_anomaly_note),
    );
    for id in &results.summary.stale_anomalies {
        notes.push(format!(
            "ERROR: known anomaly {id} no longer reproduces (its scenarios ran and none failed): close it"
        ));
    }
    if results.summary.fail > 0 {
        notes.push(format!(
            "{} requirement verdict(s) FAIL",
            results.summary.fail
        ));
    }
    if results.summary.inconclusive > 0 {
        notes.push(format!(
            "{} requirement verdict(s) INCONCLUSIVE (see Anomalies)",
            results.summary.inconclusive
        ));
    }
    let mut note_ids = |what: &str, ids: Vec<&str>| {
        if !ids.is_empty() {
            notes.push(format!("{what}: {}", ids.join(", ")));
        }
    };
    note_ids(
        "requirements no scenario of this run verifies",
        traceability
            .iter()
            .filter(|t| t.scenarios.is_empty())
            .map(|t| t.requirement.as_str())
            .collect(),
    );
    note_ids(
        "clauses no scenario of this run exercised (not verified)",
        traceability
            .iter()
            .flat_map(|t| t.clauses.iter())
            .filter(|c| c.verdict.is_none())
            .map(|c| c.clause.as_str())
            .collect(),
    );
    if let Some(comparison) = &results.baseline_comparison {
        let regressions = comparison
            .rows
            .iter()
            .filter(|r| r.change == crate::baseline::Change::Regression)
            .count();
        if regressions > 0 {
            notes.push(format!(
                "{regressions} regression(s) against baseline {}",
                comparison.baseline_run_id
            ));
        }
    }
    if !firmware.iter().all(|f| f.shipped_config) {
        notes.push(
            "a modified (not shipped) controller configuration produced some traces".to_owned(),
        );
    }

    Ok(Report {
        format_version: REPORT_FORMAT_VERSION,
        generated_utc: now_utc(),
        generator: HarnessIdentity::current(),
        identification: Identification {
            run_id: results.run_id.clone(),
            started_utc: Some(results.started_utc.clone()),
            finished_utc: results.finished_utc.clone(),
            harness: results.harness.clone(),
            host: Some(results.host.clone()),
            rig: Some(results.rig.clone()),
            firmware,
            suite_root: Some(results.suite_root.clone()),
            requirements_file: Some(results.requirements_file.clone()),
            scenario_files,
            seeds: results
                .scenarios
                .iter()
                .map(|s| (s.id.clone(), s.seed))
                .collect(),
        },
        status: Status {
            // A results.json that never reached its end (written by a harness that kept the
            // verdict of the trials so far) is still no PASS.
            verdict: if results.complete {
                results.summary.verdict
            } else {
                Some(Verdict::Incomplete)
            },
            complete: results.complete,
            notes,
        },
        acceptance: results.acceptance.clone(),
        summary: results.summary.clone(),
        traceability,
        scenarios,
        anomalies,
        known_anomalies: known_anomaly_rows(&results),
        accept_known_anomalies: results.accept_known_anomalies,
        fuzz: fuzz_section,
        falsify: falsify_section,
        baseline: results.baseline_comparison.clone(),
        evidence,
    })
}

/// One entry of the known anomaly register with what this run showed of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownAnomalyRow {
    /// The entry as registered.
    pub anomaly: crate::scenario::KnownAnomaly,
    /// Its scenarios and their verdicts in this run (`None`: not in this run).
    pub scenarios: Vec<(String, Option<Verdict>)>,
    /// Open, its scenarios all ran and none failed: the register is out of date.
    pub stale: bool,
}

fn known_anomaly_rows(results: &RunResults) -> Vec<KnownAnomalyRow> {
    results
        .known_anomalies
        .iter()
        .map(|a| KnownAnomalyRow {
            anomaly: a.clone(),
            scenarios: a
                .scenarios
                .iter()
                .map(|id| {
                    let verdict = results
                        .scenarios
                        .iter()
                        .find(|s| &s.id == id)
                        .and_then(|s| s.verdict);
                    (id.clone(), verdict)
                })
                .collect(),
            stale: results.summary.stale_anomalies.contains(&a.id),
        })
        .collect()
}

fn now_utc() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn worst(verdicts: &[RequirementVerdict]) -> Option<Verdict> {
    verdicts.iter().map(|v| v.verdict).max()
}

/// One scenario's section, the firmware identities of its traces, and its anomalies.
fn scenario_section(
    run_dir: &Path,
    scenario: &ScenarioResult,
    anomalies: &mut Vec<Anomaly>,
) -> (ScenarioSection, Vec<FirmwareIdentity>) {
    let trials: Vec<TrialRow> = scenario
        .trials
        .iter()
        .map(|t| TrialRow {
            trial: t.trial,
            seed: t.seed,
            trace_file: t.trace_file.clone(),
            verdict: worst(&t.verdicts),
            values: STATISTIC_METRICS
                .iter()
                .map(|(_, get)| get(&t.measurements))
                .collect(),
            stop_reason: t.measurements.stop_reason.clone(),
            far_cortex_contact: t.measurements.far_cortex_contact_rotating,
            clock_error_ms: t.clock_error_ms,
            not_passed: t
                .verdicts
                .iter()
                .filter(|v| v.verdict != Verdict::Pass)
                .cloned()
                .collect(),
        })
        .collect();
    for t in &scenario.trials {
        for fault in &t.firmware_faults {
            anomalies.push(Anomaly {
                scenario: scenario.id.clone(),
                trial: Some(t.trial),
                requirement: None,
                cause: format!("firmware fault (the trial FAILs): {fault}"),
            });
        }
        for cause in &t.anomalies {
            anomalies.push(Anomaly {
                scenario: scenario.id.clone(),
                trial: Some(t.trial),
                requirement: None,
                cause: cause.clone(),
            });
        }
        for v in t
            .verdicts
            .iter()
            .filter(|v| v.verdict == Verdict::Inconclusive)
        {
            anomalies.push(Anomaly {
                scenario: scenario.id.clone(),
                trial: Some(t.trial),
                requirement: Some(v.requirement.clone()),
                cause: v.detail.clone(),
            });
        }
    }
    for v in scenario
        .verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Inconclusive)
    {
        anomalies.push(Anomaly {
            scenario: scenario.id.clone(),
            trial: None,
            requirement: Some(v.requirement.clone()),
            cause: v.detail.clone(),
        });
    }

    // The trial to plot: the first with the worst verdict; among equals, the slowest detection.
    let latency =
        |t: &&crate::run::TrialResult| t.measurements.detection_latency_ms.unwrap_or(-1.0);
    let chosen = scenario
        .trials
        .iter()
        .filter(|t| !t.trace_file.is_empty())
        .max_by(|a, b| {
            worst(&a.verdicts)
                .cmp(&worst(&b.verdicts))
                .then(latency(b).total_cmp(&latency(a)).reverse())
                .then(b.trial.cmp(&a.trial))
        });
    let mut firmware = Vec::new();
    let plot = chosen.and_then(
        |t| match crate::snapshot::read_trace(run_dir, &t.trace_file) {
            Ok(trace) => {
                firmware.push(trace.firmware.clone());
                plot::TrialPlot::of(&trace, &t.measurements)
            }
            Err(cause) => {
                anomalies.push(Anomaly {
                    scenario: scenario.id.clone(),
                    trial: Some(t.trial),
                    requirement: None,
                    cause: format!("trace unreadable for the report: {cause}"),
                });
                None
            }
        },
    );

    let statistics = STATISTIC_METRICS
        .iter()
        .filter_map(|(name, _)| {
            let (label, unit) = metric_label(name);
            scenario.statistics.get(*name).map(|s| StatisticRow {
                metric: (*name).to_owned(),
                label: label.to_owned(),
                unit: unit.to_owned(),
                statistics: s.clone(),
            })
        })
        .collect();
    (
        ScenarioSection {
            id: scenario.id.clone(),
            title: scenario.title.clone(),
            source: scenario.source.clone(),
            profile: scenario.profile.clone(),
            verifies: scenario.verifies.clone(),
            trials_planned: scenario.trials_planned,
            trials_run: scenario.trials.len(),
            seed: scenario.seed,
            known_anomaly: scenario.known_anomaly.clone(),
            verdict: scenario.verdict,
            requirements: scenario.verdicts.clone(),
            statistics,
            trial_columns: STATISTIC_METRICS
                .iter()
                .map(|(name, _)| ((*name).to_owned(), metric_label(name).1.to_owned()))
                .collect(),
            trials,
            plot,
        },
        firmware,
    )
}

fn falsify_section(falsify: &crate::falsify::FalsifyResults) -> FalsifySection {
    let mut failures: Vec<FalsifyFailureRow> = Vec::new();
    for s in &falsify.searches {
        let Some(f) = &s.failure else {
            continue;
        };
        if let Some(row) = failures.iter_mut().find(|r| r.scenario_id == f.scenario_id) {
            row.requirements.push(s.requirement.clone());
            continue;
        }
        failures.push(FalsifyFailureRow {
            scenario_id: f.scenario_id.clone(),
            requirements: vec![s.requirement.clone()],
            minimal: f.minimal.clone(),
            findings: f.findings.clone(),
            scenario_yaml: f.scenario_yaml.clone(),
            scenario_file: f.scenario_file.clone(),
        });
    }
    FalsifySection {
        failures,
        seed: falsify.seed,
        budget: falsify.budget,
        complete: falsify.complete,
        simulations: falsify.simulations(),
        failing_requirements: falsify.failing_requirements.clone(),
        rows: falsify
            .searches
            .iter()
            .map(|s| FalsifyRow {
                requirement: s.requirement.clone(),
                objective: s.objective.clone(),
                worst_margin: s.worst.as_ref().map(|w| w.margin),
                simulations: s.simulations,
                restarts: s.restarts,
                falsified: s.falsified,
                result: s.outcome(),
                worst_case: s.worst.as_ref().map(|w| w.description.clone()),
                findings: s
                    .worst
                    .as_ref()
                    .map(|w| w.findings.clone())
                    .unwrap_or_default(),
                minimal: s.failure.as_ref().map(|f| f.minimal.clone()),
                history: s
                    .history
                    .iter()
                    .map(|h| (h.simulations, h.worst_margin))
                    .collect(),
            })
            .collect(),
    }
}

fn fuzz_section(fuzz: &FuzzResults) -> FuzzSection {
    FuzzSection {
        seed: fuzz.seed,
        cases_planned: fuzz.cases_planned,
        cases_run: fuzz.cases.len(),
        shards: fuzz.shards.clone(),
        shard_count: fuzz.shard_count,
        complete: fuzz.complete,
        properties: fuzz
            .properties
            .iter()
            .map(|(name, c)| (name.clone(), c.pass, c.fail, c.inconclusive))
            .collect(),
        margins: fuzz
            .margins
            .iter()
            .map(|(name, s)| (name.clone(), s.clone()))
            .collect(),
        premature_fraction_with_variation: fuzz.premature_fraction_with_variation,
        failing_requirements: fuzz.failing_requirements.clone(),
        failure_rate: fuzz.failure_rate.map(|r| {
            let over = fuzz
                .overpenetration_rate
                .map(|o| format!("overpenetration (SR-01..SR-04): {}; ", o.describe("cases")))
                .unwrap_or_default();
            format!("{over}any requirement: {}", r.describe("cases"))
        }),
        never_detected: fuzz.never_detected_count(),
        failures: fuzz
            .failures
            .iter()
            .map(|f| FuzzFailureRow {
                index: f.index,
                requirements: f.requirements.clone(),
                findings: f.findings.clone(),
                minimal: f.minimal.clone(),
                scenario_yaml: f.scenario_yaml.clone(),
                counted: f.counted(),
            })
            .collect(),
    }
}

/// Files written by [`write_all`].
#[derive(Debug, Clone)]
pub struct Written {
    /// The model.
    pub report: Report,
    /// Paths written, in order.
    pub files: Vec<PathBuf>,
    /// SHA-256 of `manifest.json` (record it elsewhere to make the manifest itself checkable).
    pub manifest_sha256: String,
}

/// Builds the report of `run_dir` and writes every view and the manifest, atomically.
pub fn write_all(run_dir: &Path) -> Result<Written, ReportError> {
    // A manifest from an earlier report vouches for the evidence as it was: never re-sign a
    // change. (A run's first report finds no manifest.)
    if run_dir.join(manifest::MANIFEST_FILE).is_file() {
        let check = manifest::verify(run_dir).map_err(|e| ReportError::Tampered {
            run_dir: run_dir.to_owned(),
            detail: e.to_string(),
        })?;
        // The views themselves are regenerated; any other difference is a change of evidence.
        let views = [REPORT_JSON, REPORT_HTML, JUNIT_XML, SUMMARY_MD];
        let evidence_changed: Vec<String> = check
            .changed
            .iter()
            .map(|(path, _, _)| path.clone())
            .chain(check.missing.iter().cloned())
            .chain(check.unlisted.iter().cloned())
            .chain(check.incomplete_writes.iter().cloned())
            .chain(check.links.iter().cloned())
            .filter(|path| !views.contains(&path.as_str()))
            .collect();
        if !evidence_changed.is_empty() {
            return Err(ReportError::Tampered {
                run_dir: run_dir.to_owned(),
                detail: evidence_changed.join(", "),
            });
        }
    }
    let report = build(run_dir)?;
    let json = serde_json::to_vec(&report).map_err(|e| ReportError::Render {
        view: REPORT_JSON,
        message: e.to_string(),
    })?;
    let views: [(&str, Vec<u8>); 4] = [
        (REPORT_JSON, json),
        (REPORT_HTML, html::render(&report)?.into_bytes()),
        (JUNIT_XML, junit::render(&report).into_bytes()),
        (SUMMARY_MD, markdown::render(&report).into_bytes()),
    ];
    let mut files = Vec::new();
    for (name, bytes) in views {
        let path = run_dir.join(name);
        write_atomic(&path, &bytes)?;
        files.push(path);
    }
    let manifest_sha256 = manifest::write(run_dir, &report.identification.run_id)?;
    files.push(run_dir.join(manifest::MANIFEST_FILE));
    Ok(Written {
        report,
        files,
        manifest_sha256,
    })
}

/// Worst-first order of verdicts for display.
pub fn verdict_name(verdict: Option<Verdict>) -> &'static str {
    verdict.map_or("NO VERDICT", Verdict::as_str)
}

/// Escapes text for XML/HTML text and attribute values. Characters XML 1.0 does not allow
/// (control characters other than tab, newline and carriage return) become U+FFFD; newline,
/// carriage return and tab are written as character references so attribute values keep them.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}
