//! Baselines: comparing a run's measured values with an accepted earlier run, metric by
//! metric, with per-metric tolerances from the suite's `tolerances.yaml`.
//!
//! A change that still passes every limit can move detection later on every profile; the
//! comparison makes that visible as a regression. This module owns the baseline file format
//! (versioned, with who accepted it, when and why), the tolerance file and the comparison. It
//! does not run trials; the command line attaches the comparison to `results.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rig::RigIdentity;
use crate::run::{write_atomic, HarnessIdentity, RunResults};
use crate::verdict::{Statistics, Verdict};

/// Version of the baseline file format.
pub const BASELINE_FORMAT_VERSION: u32 = 1;
/// Version of the tolerance file format.
pub const TOLERANCES_FORMAT_VERSION: u32 = 1;

/// Which direction of change is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Smaller is better (latency, overshoot).
    Lower,
    /// Larger is better.
    Higher,
    /// Neither: any change beyond tolerance is reported as a regression (a bone property
    /// that moves means the plant or the scenario changed).
    Unchanged,
}

/// Tolerance of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricTolerance {
    /// Absolute tolerance, in the metric's unit.
    pub abs: f64,
    /// Relative tolerance, fraction of the baseline value.
    pub rel: f64,
    /// Which direction is better.
    pub better: Better,
    /// The requirement this metric is evidence for, if any.
    #[serde(default)]
    pub requirement: Option<String>,
    /// Unit, for messages.
    pub unit: String,
}

impl MetricTolerance {
    /// The allowed change from `baseline`: the larger of the absolute and relative tolerance.
    pub fn allowed(&self, baseline: f64) -> f64 {
        self.abs.max(self.rel * baseline.abs())
    }
}

/// `tolerances.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerances {
    /// [`TOLERANCES_FORMAT_VERSION`].
    pub format_version: u32,
    /// Statistics over trials that are compared (`mean`, `max`, `p95`, `p99`, `min`).
    pub statistics: Vec<String>,
    /// Per metric (names as in `results.json` statistics).
    pub metrics: BTreeMap<String, MetricTolerance>,
}

/// Who accepted a baseline, when and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Acceptance {
    /// Who.
    pub by: String,
    /// UTC time, RFC 3339.
    pub utc: String,
    /// Why.
    pub reason: String,
}

/// One scenario in a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineScenario {
    /// SHA-256 of the scenario file the baseline ran.
    pub source_sha256: String,
    /// Statistics per metric.
    pub statistics: BTreeMap<String, Statistics>,
    /// Verdict per requirement.
    pub verdicts: BTreeMap<String, Verdict>,
}

/// A baseline: the measured values of one accepted run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// [`BASELINE_FORMAT_VERSION`].
    pub format_version: u32,
    /// Acceptance record; `None` when compared directly with a run that was never accepted.
    pub accepted: Option<Acceptance>,
    /// Run the values come from.
    pub run_id: String,
    /// Harness build of that run.
    pub harness: HarnessIdentity,
    /// Rig of that run.
    pub rig: RigIdentity,
    /// Scenarios by ID.
    pub scenarios: BTreeMap<String, BaselineScenario>,
}

impl Baseline {
    /// The baseline view of a run.
    pub fn from_results(results: &RunResults, accepted: Option<Acceptance>) -> Baseline {
        Baseline {
            format_version: BASELINE_FORMAT_VERSION,
            accepted,
            run_id: results.run_id.clone(),
            harness: results.harness.clone(),
            rig: results.rig.clone(),
            scenarios: results
                .scenarios
                .iter()
                .map(|s| {
                    (
                        s.id.clone(),
                        BaselineScenario {
                            source_sha256: s.source.sha256.clone(),
                            statistics: s.statistics.clone(),
                            verdicts: s
                                .verdicts
                                .iter()
                                .map(|v| (v.requirement.clone(), v.verdict))
                                .collect(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A baseline or tolerance file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    /// Cannot read or write.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not in the expected format.
    #[error("{path} is not a {what}: {message}")]
    Format {
        /// Which path.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// Parser message, with line and column.
        message: String,
    },
    /// A tolerance file with problems, each with its location and a hint.
    #[error("{0}")]
    Input(crate::scenario::load::LoadError),
    /// The run is incomplete and cannot become a baseline.
    #[error("run {run_id} is incomplete (interrupted or still running); only a complete run can become a baseline")]
    Incomplete {
        /// Run ID.
        run_id: String,
    },
}

/// Reads a baseline from a baseline file, a `results.json`, or a run directory.
pub fn load_baseline(path: &Path) -> Result<Baseline, BaselineError> {
    let file = crate::run::results_file(path);
    let text = fs::read_to_string(&file).map_err(|source| BaselineError::Io {
        action: "read baseline",
        path: file.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| BaselineError::Format {
            path: file.clone(),
            what: "baseline file, results.json or run directory",
            message: e.to_string(),
        })?;
    if value.get("accepted").is_some() {
        return serde_json::from_value(value).map_err(|e| BaselineError::Format {
            path: file,
            what: "baseline file",
            message: e.to_string(),
        });
    }
    let results: RunResults = serde_json::from_value(value).map_err(|e| BaselineError::Format {
        path: file.clone(),
        what: "results.json",
        message: e.to_string(),
    })?;
    Ok(Baseline::from_results(&results, None))
}

/// The unit of each metric of [`crate::run::STATISTIC_METRICS`], as `tolerances.yaml` must
/// state it.
pub fn metric_unit(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "detection_latency_ms" | "time_to_stop_ms" => "ms",
        "overshoot_mm" => "mm",
        "overshoot_rev" => "rev",
        "peak_current_a" => "A",
        "cortex_torque_nmm" => "N*mm",
        "time_in_cortex_s" => "s",
        "torque_drop_pct" => "%",
        "control_isr_cycles_max" | "control_isr_cycles_p99" => "cycles",
        _ => return None,
    })
}

/// Statistic names a tolerance file may compare.
const STATISTIC_NAMES: &[&str] = &["mean", "max", "min", "p95", "p99"];

/// Reads and validates `tolerances.yaml` like a scenario file: each problem (unknown metric,
/// statistic or requirement, a unit that is not the metric's, a tolerance that is negative
/// or not finite) with file, line, column and a hint.
pub fn load_tolerances(path: &Path) -> Result<Tolerances, BaselineError> {
    use crate::run::STATISTIC_METRICS;
    let metrics = || STATISTIC_METRICS.iter().map(|(name, _)| *name);
    crate::scenario::load::load_yaml_file::<Tolerances>(path, "tolerance file", |t, problem| {
        if t.format_version != TOLERANCES_FORMAT_VERSION {
            problem(
                "format_version",
                format!("format_version {} is not supported", t.format_version),
                Some(format!("this harness reads format_version {TOLERANCES_FORMAT_VERSION}")),
            );
        }
        if t.statistics.is_empty() {
            problem(
                "statistics",
                "no statistics to compare".into(),
                Some(format!("name some of {}", STATISTIC_NAMES.join(", "))),
            );
        }
        for (i, name) in t.statistics.iter().enumerate() {
            if statistic(&STATISTICS_PROBE, name).is_none() {
                problem(
                    &format!("statistics[{i}]"),
                    format!("unknown statistic `{name}`"),
                    Some(format!(
                        "{}known: {}",
                        crate::scenario::load::suggestion(name, STATISTIC_NAMES.iter().copied()),
                        STATISTIC_NAMES.join(", ")
                    )),
                );
            }
        }
        for (name, tolerance) in &t.metrics {
            let at = format!("metrics.{name}");
            let Some(unit) = metric_unit(name) else {
                let names: Vec<&str> = metrics().collect();
                problem(
                    &at,
                    format!("unknown metric `{name}`"),
                    Some(format!(
                        "{}metrics in results.json statistics: {}",
                        crate::scenario::load::suggestion(name, names.iter().copied()),
                        names.join(", ")
                    )),
                );
                continue;
            };
            for (field, value) in [("abs", tolerance.abs), ("rel", tolerance.rel)] {
                if !(value.is_finite() && value >= 0.0) {
                    problem(
                        &format!("{at}.{field}"),
                        format!("tolerance `{field}` of `{name}` must be a finite number >= 0 (it is {value})"),
                        Some("0 allows no change in that form; the larger of abs and rel applies".into()),
                    );
                }
            }
            if tolerance.unit != unit {
                problem(
                    &format!("{at}.unit"),
                    format!("`{name}` is measured in `{unit}`, not `{}`", tolerance.unit),
                    Some(format!("write `unit: {unit}` (abs is in the metric's unit)")),
                );
            }
            if let Some(id) = &tolerance.requirement {
                let known = crate::verdict::evaluated_requirements();
                if !known.contains(&id.as_str()) {
                    problem(
                        &format!("{at}.requirement"),
                        format!("unknown requirement `{id}`"),
                        Some(format!(
                            "{}requirements the harness evaluates: {}",
                            crate::scenario::load::suggestion(id, known.iter().copied()),
                            known.join(", ")
                        )),
                    );
                }
            }
        }
    })
    .map_err(BaselineError::Input)
}

const STATISTICS_PROBE: Statistics = Statistics {
    n: 0,
    mean: 0.0,
    sd: 0.0,
    min: 0.0,
    max: 0.0,
    p95: 0.0,
    p99: 0.0,
    p99_ucb95: None,
};

fn statistic(stats: &Statistics, name: &str) -> Option<f64> {
    match name {
        "mean" => Some(stats.mean),
        "max" => Some(stats.max),
        "min" => Some(stats.min),
        "p95" => Some(stats.p95),
        "p99" => Some(stats.p99),
        _ => None,
    }
}

/// Promotes the run in `run_dir` to a baseline written to `output`.
pub fn accept(
    run_dir: &Path,
    output: &Path,
    acceptance: Acceptance,
) -> Result<Baseline, BaselineError> {
    let results_path = crate::run::results_file(run_dir);
    let results = RunResults::read(&results_path).map_err(|e| BaselineError::Format {
        path: results_path.clone(),
        what: "results.json",
        message: e.to_string(),
    })?;
    if !results.complete {
        return Err(BaselineError::Incomplete {
            run_id: results.run_id,
        });
    }
    let baseline = Baseline::from_results(&results, Some(acceptance));
    let mut bytes = serde_json::to_vec_pretty(&baseline).map_err(|e| BaselineError::Format {
        path: output.to_owned(),
        what: "baseline file",
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    write_atomic(output, &bytes).map_err(|e| BaselineError::Io {
        action: "write baseline",
        path: output.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(baseline)
}

/// How one compared value came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Worse than the baseline by more than the tolerance.
    Regression,
    /// Better than the baseline by more than the tolerance.
    Improvement,
    /// Within tolerance.
    Within,
}

/// One compared value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ComparisonRow {
    /// Scenario ID.
    pub scenario: String,
    /// Requirement the metric is evidence for.
    pub requirement: Option<String>,
    /// Metric name, or `verdict`.
    pub metric: String,
    /// Statistic over trials (`mean`, `max`, ...), or the requirement for verdict rows.
    pub statistic: String,
    /// Baseline value (verdict rows: 0 PASS, 1 INCONCLUSIVE, 2 FAIL).
    pub baseline: f64,
    /// This run's value.
    pub current: f64,
    /// Allowed change.
    pub tolerance: f64,
    /// Unit.
    pub unit: String,
    /// Outcome.
    pub change: Change,
    /// Human explanation.
    pub detail: String,
}

/// The comparison of a run with a baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Comparison {
    /// Where the baseline came from.
    pub baseline_path: PathBuf,
    /// Baseline run ID.
    pub baseline_run_id: String,
    /// Acceptance record of the baseline.
    pub accepted: Option<Acceptance>,
    /// Whether regressions are informational (do not change the exit code).
    pub informational: bool,
    /// Every compared value.
    pub rows: Vec<ComparisonRow>,
    /// Scenarios of this run the baseline does not have.
    pub not_in_baseline: Vec<String>,
    /// Scenarios whose file changed since the baseline (compared all the same).
    pub changed_scenario_files: Vec<String>,
    /// Number of regressions.
    pub regressions: usize,
    /// Number of improvements.
    pub improvements: usize,
}

fn verdict_rank(v: Verdict) -> f64 {
    match v {
        Verdict::Pass => 0.0,
        Verdict::Inconclusive => 1.0,
        Verdict::Fail => 2.0,
        Verdict::Incomplete => 3.0,
    }
}

/// Compares `results` with `baseline`.
pub fn compare(
    results: &RunResults,
    baseline: &Baseline,
    baseline_path: &Path,
    tolerances: &Tolerances,
    informational: bool,
) -> Comparison {
    let mut rows = Vec::new();
    let mut not_in_baseline = Vec::new();
    let mut changed_scenario_files = Vec::new();
    for scenario in &results.scenarios {
        let Some(base) = baseline.scenarios.get(&scenario.id) else {
            not_in_baseline.push(scenario.id.clone());
            continue;
        };
        if base.source_sha256 != scenario.source.sha256 {
            changed_scenario_files.push(scenario.id.clone());
        }
        for (metric, tolerance) in &tolerances.metrics {
            let (Some(current), Some(old)) =
                (scenario.statistics.get(metric), base.statistics.get(metric))
            else {
                continue;
            };
            for name in &tolerances.statistics {
                let (Some(now), Some(then)) = (statistic(current, name), statistic(old, name))
                else {
                    continue;
                };
                let allowed = tolerance.allowed(then);
                let delta = now - then;
                let change = if delta.abs() <= allowed {
                    Change::Within
                } else {
                    match (tolerance.better, delta > 0.0) {
                        (Better::Lower, true)
                        | (Better::Higher, false)
                        | (Better::Unchanged, _) => Change::Regression,
                        _ => Change::Improvement,
                    }
                };
                let unit = &tolerance.unit;
                rows.push(ComparisonRow {
                    scenario: scenario.id.clone(),
                    requirement: tolerance.requirement.clone(),
                    metric: metric.clone(),
                    statistic: name.clone(),
                    baseline: then,
                    current: now,
                    tolerance: allowed,
                    unit: unit.clone(),
                    change,
                    detail: format!(
                        "{metric} {name}: {then:.3} -> {now:.3} {unit} ({delta:+.3} {unit}, tolerance +-{allowed:.3} {unit})"
                    ),
                });
            }
        }
        for verdict in &scenario.verdicts {
            let Some(old) = base.verdicts.get(&verdict.requirement) else {
                continue;
            };
            let (then, now) = (verdict_rank(*old), verdict_rank(verdict.verdict));
            let change = if now > then {
                Change::Regression
            } else if now < then {
                Change::Improvement
            } else {
                Change::Within
            };
            rows.push(ComparisonRow {
                scenario: scenario.id.clone(),
                requirement: Some(verdict.requirement.clone()),
                metric: "verdict".to_owned(),
                statistic: verdict.requirement.clone(),
                baseline: then,
                current: now,
                tolerance: 0.0,
                unit: String::new(),
                change,
                detail: format!(
                    "{} verdict: {old} -> {}",
                    verdict.requirement, verdict.verdict
                ),
            });
        }
    }
    let count = |c: Change| rows.iter().filter(|r| r.change == c).count();
    Comparison {
        baseline_path: baseline_path.to_owned(),
        baseline_run_id: baseline.run_id.clone(),
        accepted: baseline.accepted.clone(),
        informational,
        regressions: count(Change::Regression),
        improvements: count(Change::Improvement),
        rows,
        not_in_baseline,
        changed_scenario_files,
    }
}

impl Comparison {
    /// Exit code of a run whose verdicts gave `verdict_exit`, once this comparison is taken
    /// into account: a regression makes a passing or inconclusive run exit 1, unless the
    /// comparison is informational.
    pub fn exit_code(&self, verdict_exit: i32) -> i32 {
        if self.regressions > 0
            && !self.informational
            && verdict_exit != crate::run::EXIT_FAIL
            && verdict_exit != crate::run::EXIT_INCOMPLETE
        {
            crate::run::EXIT_FAIL
        } else {
            verdict_exit
        }
    }

    /// Console text: regressions and improvements per scenario, then counts.
    pub fn text(&self) -> String {
        let mut out = format!(
            "\nbaseline comparison against run {} ({}){}\n",
            self.baseline_run_id,
            self.baseline_path.display(),
            self.accepted
                .as_ref()
                .map(|a| format!(", accepted by {} at {}: {}", a.by, a.utc, a.reason))
                .unwrap_or_default()
        );
        for row in self.rows.iter().filter(|r| r.change != Change::Within) {
            let label = match row.change {
                Change::Regression => "REGRESSION",
                Change::Improvement => "improvement",
                Change::Within => "within",
            };
            out.push_str(&format!(
                "  {label:<12} {:<44} {:<6} {}\n",
                row.scenario,
                row.requirement.as_deref().unwrap_or("-"),
                row.detail
            ));
        }
        if !self.not_in_baseline.is_empty() {
            out.push_str(&format!(
                "  not in the baseline: {}\n",
                self.not_in_baseline.join(", ")
            ));
        }
        if !self.changed_scenario_files.is_empty() {
            out.push_str(&format!(
                "  scenario file changed since the baseline: {}\n",
                self.changed_scenario_files.join(", ")
            ));
        }
        let within = self
            .rows
            .iter()
            .filter(|r| r.change == Change::Within)
            .count();
        out.push_str(&format!(
            "  {} regressions, {} improvements, {within} within tolerance{}\n",
            self.regressions,
            self.improvements,
            if self.informational && self.regressions > 0 {
                " (informational: exit code unchanged)"
            } else {
                ""
            }
        ));
        out
    }
}
