//! Measurements and verdicts: from a [`Trace`] (ground truth plus what the firmware reported)
//! to measured values with units and a PASS / FAIL / INCONCLUSIVE verdict per requirement.
//!
//! Verdicts are computed from the plant's ground truth and the firmware's reported commands,
//! never from the firmware's opinion alone: a "breakthrough" event the firmware sends counts
//! only through the motor-off command it comes with, timed against the plant's `t_bt`.
//! Limits come from the requirements file; a limit the evaluator needs and the file lacks is
//! reported as INCONCLUSIVE, never replaced by a built-in number.
//!
//! This module does not run trials and does not write files.

use serde::{Deserialize, Serialize};

use crate::scenario::{Population, Requirement, Requirements, Scenario};
use crate::trace::{EventSource, Trace};

/// Verdict of one requirement.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The requirement was met.
    Pass,
    /// The requirement could not be checked (rig fault, condition not exercised).
    Inconclusive,
    /// The firmware violated the requirement.
    Fail,
    /// A run's overall verdict when it did not carry out its plan (interrupted by a signal, a
    /// rig abort, or killed while its `results.json` was being kept): whatever its recorded
    /// trials show, the run is no evidence that the plan passes. Never a requirement's verdict.
    Incomplete,
}

impl Verdict {
    /// Upper-case name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::Fail => "FAIL",
            Verdict::Incomplete => "INCOMPLETE",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Measured values of one trial. Times are from the trigger press timeline of the trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Measurements {
    /// Motor start (firmware `started`), ms.
    pub motor_start_ms: Option<f64>,
    /// Tip reached the near cortex, ms (truth).
    pub cortex_contact_ms: Option<f64>,
    /// Detector armed (firmware), ms.
    pub armed_ms: Option<f64>,
    /// Cap fracture `t_bt`, ms (truth).
    pub t_bt_ms: Option<f64>,
    /// First firmware motor-off command, ms.
    pub motor_off_ms: Option<f64>,
    /// Why the firmware stopped the motor first.
    pub stop_reason: Option<String>,
    /// The firmware latched a fault (its `fault` event) on the tick of that first motor-off,
    /// as the protective stops must (SR-07.b stall, SR-08.b over-time, SR-11.a low battery).
    #[serde(default)]
    pub fault_latched: bool,
    /// Motor-off command minus `t_bt`, ms (SR-01).
    pub detection_latency_ms: Option<f64>,
    /// The firmware stopped for breakthrough (detector or fallback) before `t_bt`.
    pub premature_stop: bool,
    /// Mean output speed over the 20 ms before `t_bt`, rpm.
    pub pre_breakthrough_speed_rpm: Option<f64>,
    /// From `t_bt` to speed below the stopped fraction, ms (SR-02).
    pub time_to_stop_ms: Option<f64>,
    /// Depth past the inner surface of the near cortex reached while rotating, mm (SR-03).
    pub overshoot_mm: Option<f64>,
    /// Output revolutions from `t_bt` to stop (SR-03).
    pub overshoot_rev: Option<f64>,
    /// The tip touched the far cortex while rotating (SR-04).
    pub far_cortex_contact_rotating: bool,
    /// Largest tick-mean motor current after the start-up blanking, A.
    pub peak_current_a: Option<f64>,
    /// Median load torque in the near cortex (from contact + 50 ms to `t_bt`), N*mm.
    pub cortex_torque_nmm: Option<f64>,
    /// Time from cortex contact to `t_bt`, s.
    pub time_in_cortex_s: Option<f64>,
    /// Load torque fall at breakthrough, percent of the cortex torque.
    pub torque_drop_pct: Option<f64>,
    /// Longest continuous drive, s (SR-08).
    pub longest_run_s: f64,
    /// Mean battery terminal voltage 30-50 ms after the first start, V (SR-11).
    pub loaded_battery_v: Option<f64>,
    /// Final needle depth, mm.
    pub final_depth_mm: f64,
    /// Depth of the inner surface of the near cortex, mm.
    pub inner_surface_mm: f64,
    /// Longest control interrupt of the trial, CPU cycles, as the firmware's telemetry reports
    /// it (rigs that run the board firmware; `None` on `sim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_isr_cycles_max: Option<f64>,
    /// 99th percentile (nearest rank) of the control interrupt's cycles over the trial's ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_isr_cycles_p99: Option<f64>,
}

impl Measurements {
    /// Whether the first motor-off was the firmware's own breakthrough decision (the detector
    /// or the missed-pop fallback), rather than a release or a protective fault.
    pub fn breakthrough_decision(&self) -> bool {
        matches!(
            self.stop_reason.as_deref(),
            Some("breakthrough" | "missed_pop")
        )
    }

    /// For a trial whose breakthrough was never detected (motor off by another cause, or never),
    /// what happened instead, e.g. `never detected; stopped by over_time at 9.90 s, 8.9 s after
    /// t_bt, 24.6 mm past the inner surface`. `None` when breakthrough was detected or never
    /// happened.
    pub fn never_detected(&self) -> Option<String> {
        let t_bt = self.t_bt_ms?;
        // Detected, or stopped before the cap broke (a premature stop is one of those).
        if self
            .motor_off_ms
            .is_some_and(|off| off < t_bt || self.breakthrough_decision())
        {
            return None;
        }
        let past = self.final_depth_mm - self.inner_surface_mm;
        Some(match (self.motor_off_ms, self.stop_reason.as_deref()) {
            (Some(off), Some(reason)) => format!(
                "never detected; stopped by {reason} at {:.2} s, {:.1} s after t_bt, {past:.1} mm past the inner surface",
                off / 1000.0,
                (off - t_bt) / 1000.0
            ),
            _ => format!(
                "never detected; the motor was never stopped, {past:.1} mm past the inner surface"
            ),
        })
    }
}

/// One requirement's verdict for one trial or one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RequirementVerdict {
    /// Requirement ID.
    pub requirement: String,
    /// Verdict.
    pub verdict: Verdict,
    /// The measured value the verdict rests on, if one.
    pub measured: Option<f64>,
    /// Unit of `measured` and `limit`.
    pub unit: String,
    /// The limit it was held to, if numeric.
    pub limit: Option<f64>,
    /// Human explanation: what was compared, or why INCONCLUSIVE.
    pub detail: String,
    /// The verdict of each clause of the requirement (SR-07.a, SR-07.b, ...), in the order of
    /// the requirements file; the requirement's verdict is combined from them ([`combine`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clauses: Vec<ClauseVerdict>,
}

/// The verdict of one clause of a requirement, for one trial or one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClauseVerdict {
    /// Clause ID, e.g. `SR-07.b`.
    pub clause: String,
    /// Verdict; INCONCLUSIVE when the clause was not exercised.
    pub verdict: Verdict,
    /// Whether the trial (or, over trials, any trial) put the firmware in the condition the
    /// clause speaks of, watched long enough for a violation to show. A clause that was not
    /// exercised is never PASS.
    pub exercised: bool,
    /// The measured value the verdict rests on, if one.
    pub measured: Option<f64>,
    /// Unit of `measured` and `limit`.
    pub unit: String,
    /// The limit it was held to, if numeric.
    pub limit: Option<f64>,
    /// What was compared, or why it was not exercised.
    pub detail: String,
}

/// Whether the firmware latched a fault (its `fault` event) on the tick of `t_s`.
fn fault_latched_at(trace: &Trace, t_s: f64) -> bool {
    trace
        .events_of(EventSource::Firmware, "fault")
        .any(|e| (e.t_s - t_s).abs() <= 0.5 * trace.sample_period_s)
}

/// Computes the measurements of a trial.
pub fn measure(trace: &Trace, stopped_fraction: f64) -> Measurements {
    let s = &trace.samples;
    let ms = |t: f64| t * 1000.0;
    let started = trace.first_event(EventSource::Firmware, "started");
    let t_bt = trace.truth.t_bt_s;
    let motor_off = trace
        .events_of(EventSource::Firmware, "motor_off")
        .find(|e| started.is_none_or(|t0| e.t_s >= t0));
    let stop_reason = motor_off.and_then(|e| e.detail.clone());
    let fault_latched = motor_off.is_some_and(|off| fault_latched_at(trace, off.t_s));
    // A premature stop is the firmware deciding "breakthrough" (by the detector or the
    // missed-pop fallback) before the cap fractured. Operator releases and protective faults
    // are judged by their own requirements.
    let breakthrough_stop = matches!(stop_reason.as_deref(), Some("breakthrough" | "missed_pop"));
    let premature = match (motor_off, t_bt) {
        (Some(off), Some(bt)) => off.t_s < bt && breakthrough_stop,
        (Some(_), None) => breakthrough_stop,
        _ => false,
    };
    let mut m = Measurements {
        motor_start_ms: started.map(ms),
        cortex_contact_ms: trace.truth.cortex_contact_s.map(ms),
        armed_ms: trace.first_event(EventSource::Firmware, "armed").map(ms),
        t_bt_ms: t_bt.map(ms),
        motor_off_ms: motor_off.map(|e| ms(e.t_s)),
        stop_reason,
        fault_latched,
        premature_stop: premature,
        far_cortex_contact_rotating: trace.truth.far_contact_rotating,
        longest_run_s: longest_run_s(trace),
        final_depth_mm: s.depth_mm.last().copied().unwrap_or(0.0),
        inner_surface_mm: trace.truth.inner_surface_mm,
        control_isr_cycles_max: isr_cycles(trace, 1.0),
        control_isr_cycles_p99: isr_cycles(trace, 0.99),
        ..Measurements::default()
    };
    if let (Some(off), Some(bt)) = (motor_off, t_bt) {
        if off.t_s >= bt {
            m.detection_latency_ms = Some(ms(off.t_s - bt));
        }
    }
    if let Some(t0) = started {
        let after_blanking = t0 + f64::from(driver_core::BLANKING_MS) / 1000.0;
        m.peak_current_a = s
            .t_s
            .iter()
            .zip(&s.current_a)
            .filter(|(t, _)| **t > after_blanking)
            .map(|(_, i)| *i)
            .reduce(f64::max);
        m.loaded_battery_v = mean_between(&s.t_s, &s.battery_v, t0 + 0.030, t0 + 0.050);
    }
    if let Some(bt) = t_bt {
        m.pre_breakthrough_speed_rpm = mean_between(&s.t_s, &s.speed_rpm, bt - 0.020, bt);
        if let Some(pre) = m.pre_breakthrough_speed_rpm {
            let threshold = pre * stopped_fraction;
            if let Some(t_stop) = crossing_below(&s.t_s, &s.speed_rpm, bt, threshold) {
                m.time_to_stop_ms = Some(ms(t_stop - bt));
                let depth_at_stop = interpolate(&s.t_s, &s.depth_mm, t_stop);
                m.overshoot_mm = Some(depth_at_stop - trace.truth.inner_surface_mm);
                let rev_stop = interpolate(&s.t_s, &s.revolutions, t_stop);
                let rev_bt = interpolate(&s.t_s, &s.revolutions, bt);
                m.overshoot_rev = Some(rev_stop - rev_bt);
            }
        }
        if let Some(contact) = trace.truth.cortex_contact_s {
            m.time_in_cortex_s = Some(bt - contact);
            let cortex: Vec<f64> = (0..s.len())
                .filter(|&k| s.t_s[k] >= contact + 0.050 && s.t_s[k] < bt)
                .map(|k| s.load_torque_nmm[k])
                .collect();
            m.cortex_torque_nmm = median(cortex);
            let before = interpolate(&s.t_s, &s.load_torque_nmm, bt - 0.002);
            let after = interpolate(&s.t_s, &s.load_torque_nmm, bt + 0.002);
            if before > 0.0 {
                m.torque_drop_pct = Some(100.0 * (1.0 - after / before));
            }
        }
    }
    m
}

/// Longest stretch of samples with drive applied, s.
fn longest_run_s(trace: &Trace) -> f64 {
    let s = &trace.samples;
    let mut longest = 0.0f64;
    let mut run_start: Option<f64> = None;
    for k in 0..s.len() {
        let driving = s.duty_permille[k] > 0;
        match (driving, run_start) {
            (true, None) => run_start = Some(s.t_s[k]),
            (false, Some(t0)) => {
                longest = longest.max(s.t_s[k] - t0);
                run_start = None;
            }
            _ => {}
        }
    }
    if let (Some(t0), Some(t_end)) = (run_start, s.t_s.last()) {
        longest = longest.max(t_end - t0 + trace.sample_period_s);
    }
    longest
}

fn mean_between(t: &[f64], v: &[f64], from: f64, to: f64) -> Option<f64> {
    let values: Vec<f64> = t
        .iter()
        .zip(v)
        .filter(|(time, _)| **time > from && **time <= to)
        .map(|(_, value)| *value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Linear interpolation of a sampled quantity at time `at`.
pub fn interpolate(t: &[f64], v: &[f64], at: f64) -> f64 {
    let k = t.partition_point(|time| *time < at);
    if k == 0 {
        return v.first().copied().unwrap_or(0.0);
    }
    if k >= t.len() {
        return v.last().copied().unwrap_or(0.0);
    }
    let (t0, t1, v0, v1) = (t[k - 1], t[k], v[k - 1], v[k]);
    if t1 <= t0 {
        return v1;
    }
    v0 + (v1 - v0) * (at - t0) / (t1 - t0)
}

/// First time after `from` that `v` falls below `threshold`, linearly interpolated.
fn crossing_below(t: &[f64], v: &[f64], from: f64, threshold: f64) -> Option<f64> {
    let start = t.partition_point(|time| *time <= from);
    for k in start..t.len() {
        if v[k] < threshold {
            if k == 0 || t[k - 1] < from {
                return Some(t[k]);
            }
            let (t0, t1, v0, v1) = (t[k - 1], t[k], v[k - 1], v[k]);
            let x = if v0 > v1 {
                (v0 - threshold) / (v0 - v1)
            } else {
                1.0
            };
            return Some(t0 + x.clamp(0.0, 1.0) * (t1 - t0));
        }
    }
    None
}

/// What values a limit may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A time, length, angle or voltage bound: finite and > 0.
    Positive,
    /// A fraction: in [0, 1].
    Fraction,
    /// A count: a whole number >= 0.
    Count,
}

/// A limit the evaluator reads: the requirement, its name, its unit and what values it may take.
#[derive(Debug, Clone, Copy)]
pub struct LimitRule {
    /// Requirement ID.
    pub requirement: &'static str,
    /// Limit name in `requirements.yaml`.
    pub name: &'static str,
    /// The only unit accepted.
    pub unit: &'static str,
    /// Accepted values.
    pub kind: LimitKind,
}

const fn rule(
    requirement: &'static str,
    name: &'static str,
    unit: &'static str,
    kind: LimitKind,
) -> LimitRule {
    LimitRule {
        requirement,
        name,
        unit,
        kind,
    }
}

/// Every limit the evaluator reads, per requirement: `requirements.yaml` must give exactly these
/// (checked when it is loaded), so that a misspelt or missing limit is an input error before a
/// run, never an INCONCLUSIVE during it.
pub const LIMIT_RULES: &[LimitRule] = &[
    rule("SR-01", "max_latency_ms", "ms", LimitKind::Positive),
    rule("SR-01", "p99_latency_ms", "ms", LimitKind::Positive),
    rule("SR-02", "max_stop_ms", "ms", LimitKind::Positive),
    rule("SR-02", "stopped_speed_fraction", "1", LimitKind::Fraction),
    rule("SR-03", "max_overshoot_mm_adult", "mm", LimitKind::Positive),
    rule("SR-03", "max_overshoot_mm_child", "mm", LimitKind::Positive),
    rule("SR-03", "max_overshoot_rev", "rev", LimitKind::Positive),
    rule("SR-04", "max_far_contacts", "count", LimitKind::Count),
    rule("SR-05", "max_fraction_nominal", "1", LimitKind::Fraction),
    rule(
        "SR-05",
        "max_fraction_oscillating",
        "1",
        LimitKind::Fraction,
    ),
    rule("SR-06", "min_blanking_ms", "ms", LimitKind::Positive),
    rule("SR-07", "max_stop_ms", "ms", LimitKind::Positive),
    rule("SR-07", "stall_speed_fraction", "1", LimitKind::Fraction),
    rule("SR-07", "stall_current_fraction", "1", LimitKind::Fraction),
    rule("SR-08", "max_run_s", "s", LimitKind::Positive),
    rule("SR-09", "max_deenergise_ms", "ms", LimitKind::Positive),
    rule("SR-10", "max_stop_ms", "ms", LimitKind::Positive),
    rule("SR-10", "plateau_fraction", "1", LimitKind::Fraction),
    rule("SR-11", "min_loaded_v", "V", LimitKind::Positive),
    rule("SR-11", "warn_loaded_v", "V", LimitKind::Positive),
    rule("SR-11", "max_stop_ms", "ms", LimitKind::Positive),
    rule("SR-11", "refusal_margin_v", "V", LimitKind::Positive),
    rule("SR-12", "max_drive_removed_ms", "ms", LimitKind::Positive),
];

/// A clause the evaluator checks on its own: its ID and how it is checked.
#[derive(Debug, Clone, Copy)]
pub struct ClauseRule {
    /// Clause ID, e.g. `SR-07.b`: the requirement ID, a dot and a lower-case letter.
    pub id: &'static str,
    /// How the evaluator checks it, for the clause table.
    pub check: &'static str,
}

const fn clause_rule(id: &'static str, check: &'static str) -> ClauseRule {
    ClauseRule { id, check }
}

/// Every clause of every requirement and its check. `requirements.yaml` must split each
/// requirement's text into exactly these clauses (checked when it is loaded).
pub const CLAUSE_RULES: &[ClauseRule] = &[
    clause_rule("SR-01.a", "per trial: motor-off command minus t_bt <= max_latency_ms (a trial the detector never stopped is held to it by its first stop of any kind)"),
    clause_rule("SR-01.b", "over a scenario of 5 or more trials: the 95 % upper confidence bound of the latency P99 <= p99_latency_ms"),
    clause_rule("SR-02.a", "per trial: t_bt to output speed below stopped_speed_fraction of its mean over the 20 ms before t_bt <= max_stop_ms"),
    clause_rule("SR-03.a", "per trial: depth past the inner surface of the near cortex at the stop <= max_overshoot_mm_adult or _child"),
    clause_rule("SR-03.b", "per trial: output revolutions from t_bt to the stop <= max_overshoot_rev"),
    clause_rule("SR-04.a", "per trial: the plant records no far-cortex contact while the shaft rotates"),
    clause_rule("SR-05.a", "over a scenario at nominal push: fraction of trials the firmware stopped for breakthrough before t_bt <= max_fraction_nominal"),
    clause_rule("SR-05.b", "over a scenario with push oscillation or steps: the same fraction <= max_fraction_oscillating"),
    clause_rule("SR-06.a", "per trial: the firmware's `armed` event comes at or after the tip's cortex contact (plant truth)"),
    clause_rule("SR-06.b", "per trial: the `armed` event comes >= min_blanking_ms after the `started` event"),
    clause_rule("SR-07.a", "per trial: stall onset (speed < stall_speed_fraction of no-load and current > stall_current_fraction of stall, held 10 ms) to motor off <= max_stop_ms"),
    clause_rule("SR-07.b", "per trial: the motor-off after a stall carries the `stall` reason and latches a `fault` on the same tick"),
    clause_rule("SR-07.c", "per trial: no drive after that stop while the trigger stays held, watched for >= 450 ms"),
    clause_rule("SR-08.a", "per trial: longest continuous drive <= max_run_s"),
    clause_rule("SR-08.b", "per trial: a run that reaches max_run_s ends with the `over_time` reason and a latched `fault`"),
    clause_rule("SR-09.a", "per trial, when the motor is driven at the release: trigger release to zero duty <= max_deenergise_ms"),
    clause_rule("SR-09.b", "per trial: no drive while the trigger stays released, watched for >= 450 ms"),
    clause_rule("SR-10.a", "per trial on a cortex without a detected pop: load torque below plateau_fraction of its 50 ms cortical plateau to motor off <= max_stop_ms, and no far-cortex contact"),
    clause_rule("SR-11.a", "per trial, loaded battery < min_loaded_v: `low_battery` stop with a latched `fault` <= max_stop_ms after start, no restart while held"),
    clause_rule("SR-11.b", "per trial, min_loaded_v <= loaded battery < warn_loaded_v: a `low_battery_warning` (or a refusal)"),
    clause_rule("SR-11.c", "per trial, loaded battery >= min_loaded_v + refusal_margin_v: drilling not refused"),
    clause_rule("SR-12.a", "no evaluator yet: a firmware hang with the watchdog's drive removal timed against max_drive_removed_ms needs a hang-injection scenario"),
];

/// Pairs of limits of one requirement where the first may not exceed the second.
pub const LIMIT_ORDER: &[(&str, &str, &str)] = &[
    ("SR-01", "p99_latency_ms", "max_latency_ms"),
    ("SR-05", "max_fraction_nominal", "max_fraction_oscillating"),
    ("SR-11", "min_loaded_v", "warn_loaded_v"),
];

/// The requirement IDs [`LIMIT_RULES`] covers: the requirements the evaluator checks.
pub fn evaluated_requirements() -> Vec<&'static str> {
    let mut ids: Vec<&'static str> = LIMIT_RULES.iter().map(|r| r.requirement).collect();
    ids.dedup();
    ids
}

/// Reads a limit, or explains why it is missing.
fn limit(req: &Requirement, name: &str) -> Result<f64, String> {
    req.limits
        .get(name)
        .map(|l| l.value)
        .ok_or_else(|| format!("requirements file gives no limit `{name}` for {}", req.id))
}

/// The `quantile` (nearest rank) of the control interrupt cycles the firmware reported; the
/// first tick reports 0 (no previous interrupt) and is left out.
fn isr_cycles(trace: &Trace, quantile: f64) -> Option<f64> {
    let mut cycles: Vec<u32> = trace
        .samples
        .isr_cycles
        .iter()
        .copied()
        .filter(|c| *c > 0)
        .collect();
    if cycles.is_empty() {
        return None;
    }
    cycles.sort_unstable();
    let rank = ((quantile * cycles.len() as f64).ceil() as usize).clamp(1, cycles.len());
    Some(f64::from(cycles[rank - 1]))
}

/// A clause verdict from a check that ran.
fn clause(
    id: &str,
    verdict: Verdict,
    measured: Option<f64>,
    unit: &str,
    limit: Option<f64>,
    detail: String,
) -> ClauseVerdict {
    ClauseVerdict {
        clause: id.to_owned(),
        verdict,
        exercised: true,
        measured,
        unit: unit.to_owned(),
        limit,
        detail,
    }
}

/// A clause the trial (or scenario) did not put to the test: INCONCLUSIVE, never PASS.
fn not_exercised(id: &str, why: impl Into<String>) -> ClauseVerdict {
    ClauseVerdict {
        clause: id.to_owned(),
        verdict: Verdict::Inconclusive,
        exercised: false,
        measured: None,
        unit: String::new(),
        limit: None,
        detail: why.into(),
    }
}

/// Holds a measured value to an upper limit.
fn at_most(id: &str, what: &str, measured: f64, limit: f64, unit: &str) -> ClauseVerdict {
    let (v, op) = if measured <= limit {
        (Verdict::Pass, "<=")
    } else {
        (Verdict::Fail, ">")
    };
    clause(
        id,
        v,
        Some(measured),
        unit,
        Some(limit),
        format!("{what} {measured:.3} {unit} {op} {limit} {unit}"),
    )
}

/// Marks a clause verdict FAIL with a reason appended (a second condition of the same clause).
fn fail_also(mut c: ClauseVerdict, why: String) -> ClauseVerdict {
    c.verdict = Verdict::Fail;
    c.detail = format!("{}; {why}", c.detail);
    c
}

/// The same verdict and detail for every clause of a requirement (a firmware fault, a rig
/// anomaly, a rig that cannot verify it, an input error).
fn every_clause(
    req: &Requirement,
    verdict: Verdict,
    exercised: bool,
    detail: &str,
) -> Vec<ClauseVerdict> {
    req.clauses
        .iter()
        .map(|c| ClauseVerdict {
            clause: c.id.clone(),
            verdict,
            exercised,
            measured: None,
            unit: String::new(),
            limit: None,
            detail: detail.to_owned(),
        })
        .collect()
}

/// A requirement a rig fault kept from being checked in a trial: INCONCLUSIVE, every clause
/// claimed but undecided.
pub fn rig_fault(req_id: &str, requirements: &Requirements, detail: &str) -> RequirementVerdict {
    let clauses = requirements
        .get(req_id)
        .map(|req| every_clause(req, Verdict::Inconclusive, true, detail))
        .unwrap_or_default();
    let mut v = combine(req_id, clauses);
    v.verdict = Verdict::Inconclusive;
    v.detail = detail.to_owned();
    v
}

/// A requirement's verdict from its clauses' verdicts: FAIL when a clause fails; else
/// INCONCLUSIVE when an exercised clause could not be decided; else PASS when at least one clause
/// was exercised and passed; else INCONCLUSIVE ("not exercised"). The measured value, unit and
/// limit shown for the requirement are those of the first clause with that verdict.
pub fn combine(requirement: &str, clauses: Vec<ClauseVerdict>) -> RequirementVerdict {
    let any = |f: &dyn Fn(&ClauseVerdict) -> bool| clauses.iter().any(f);
    let verdict = if any(&|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if any(&|c| c.exercised && c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else if any(&|c| c.exercised && c.verdict == Verdict::Pass) {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    let head = clauses
        .iter()
        .find(|c| c.verdict == verdict && c.exercised)
        .or(clauses.first());
    let line = |c: &ClauseVerdict| {
        if c.exercised {
            c.detail.clone()
        } else {
            format!("not exercised: {}", c.detail)
        }
    };
    let detail = match clauses.as_slice() {
        [] => format!("{requirement} has no clauses"),
        [only] => line(only),
        // One cause for every clause (a firmware fault, a rig anomaly, no evaluator): said once.
        [first, rest @ ..]
            if rest
                .iter()
                .all(|c| c.detail == first.detail && c.exercised == first.exercised) =>
        {
            line(first)
        }
        many => many
            .iter()
            .map(|c| format!("{}: {}", c.clause, line(c)))
            .collect::<Vec<_>>()
            .join("; "),
    };
    RequirementVerdict {
        requirement: requirement.to_owned(),
        verdict,
        measured: head.and_then(|c| c.measured),
        unit: head.map(|c| c.unit.clone()).unwrap_or_default(),
        limit: head.and_then(|c| c.limit),
        detail,
        clauses,
    }
}

/// Evaluates every requirement the scenario verifies on one trial, clause by clause: every
/// clause FAILs on a firmware fault, is INCONCLUSIVE on a rig anomaly or when the firmware's
/// telemetry contradicts itself ([`crate::consistency`]), and is otherwise judged by its check.
pub fn evaluate_trial(
    trace: &Trace,
    measurements: &Measurements,
    scenario: &Scenario,
    requirements: &Requirements,
) -> Vec<RequirementVerdict> {
    let contradictions = crate::consistency::contradictions(trace);
    scenario
        .verifies
        .iter()
        .map(|id| match requirements.get(id) {
            None => RequirementVerdict {
                requirement: id.clone(),
                verdict: Verdict::Inconclusive,
                measured: None,
                unit: String::new(),
                limit: None,
                detail: format!("requirement {id} is not in the requirements file"),
                clauses: Vec::new(),
            },
            Some(req) => {
                let clauses = if !trace.firmware_faults.is_empty() {
                    every_clause(
                        req,
                        Verdict::Fail,
                        true,
                        &format!("firmware fault: {}", trace.firmware_faults.join("; ")),
                    )
                } else if !trace.anomalies.is_empty() {
                    every_clause(
                        req,
                        Verdict::Inconclusive,
                        true,
                        &format!("rig anomaly: {}", trace.anomalies.join("; ")),
                    )
                } else if !contradictions.is_empty() {
                    every_clause(
                        req,
                        Verdict::Inconclusive,
                        true,
                        &format!(
                            "the firmware's telemetry contradicts itself: {}",
                            contradictions.join("; ")
                        ),
                    )
                } else if !req.rigs.iter().any(|r| r == &trace.rig) {
                    every_clause(
                        req,
                        Verdict::Inconclusive,
                        false,
                        &format!(
                            "{} cannot be verified on the {} rig (verifiable on: {})",
                            req.id,
                            trace.rig,
                            req.rigs.join(", ")
                        ),
                    )
                } else {
                    evaluate_one(req, trace, measurements, scenario).unwrap_or_else(|missing| {
                        every_clause(req, Verdict::Inconclusive, true, &missing)
                    })
                };
                combine(&req.id, clauses)
            }
        })
        .collect()
}

/// How long a "does not restart" or "stays off" clause must be watched after the stop before
/// its PASS means anything: a restart that comes later than this is outside what the trial saw.
/// The rigs run on [`crate::rig::sim::SETTLE_AFTER_STOP_S`] (0.5 s) after the last stop or
/// trigger change; this leaves room for the control tick's quantisation.
pub const MIN_OBSERVATION_S: f64 = 0.45;

fn evaluate_one(
    req: &Requirement,
    trace: &Trace,
    m: &Measurements,
    scenario: &Scenario,
) -> Result<Vec<ClauseVerdict>, String> {
    let no_pop = "breakthrough never occurred in this trial";
    let reason = m.stop_reason.as_deref().unwrap_or("an unknown stop");
    Ok(match req.id.as_str() {
        "SR-01" => {
            let max = limit(req, "max_latency_ms")?;
            let id = "SR-01.a";
            // SR-01.b, the P99 over trials, is a property of the scenario's population: it is
            // assessed by `aggregate`, not per trial.
            vec![match (m.t_bt_ms, m.detection_latency_ms) {
                (None, _) => not_exercised(id, no_pop),
                (Some(_), Some(latency)) if !m.breakthrough_decision() => at_most(
                    id,
                    &format!("breakthrough never detected; motor off by {reason} after t_bt"),
                    latency,
                    max,
                    "ms",
                ),
                (Some(_), Some(latency)) => at_most(id, "detection latency", latency, max, "ms"),
                (Some(_), None) if m.premature_stop => {
                    not_exercised(id, "motor stopped before breakthrough (see SR-05)")
                }
                (Some(bt), None) if m.motor_off_ms.is_some_and(|off| off < bt) => not_exercised(
                    id,
                    format!("the motor was already stopped by {reason} before breakthrough"),
                ),
                (Some(_), None) => clause(
                    id,
                    Verdict::Fail,
                    None,
                    "ms",
                    Some(max),
                    "no motor-off command after breakthrough".to_owned(),
                ),
            }]
        }
        "SR-02" => {
            let max = limit(req, "max_stop_ms")?;
            let id = "SR-02.a";
            vec![match (m.t_bt_ms, m.time_to_stop_ms) {
                (None, _) => not_exercised(id, no_pop),
                (Some(_), Some(stop)) => at_most(id, "time to stop after t_bt", stop, max, "ms"),
                (Some(_), None) => clause(
                    id,
                    Verdict::Fail,
                    None,
                    "ms",
                    Some(max),
                    "shaft never stopped after breakthrough".to_owned(),
                ),
            }]
        }
        "SR-03" => {
            let max_mm = match scenario.bone.population {
                Population::Adult => limit(req, "max_overshoot_mm_adult")?,
                Population::Child => limit(req, "max_overshoot_mm_child")?,
            };
            let max_rev = limit(req, "max_overshoot_rev")?;
            let rotating = "needle still rotating at the end of the trial";
            match (m.t_bt_ms, m.overshoot_mm, m.overshoot_rev) {
                (None, _, _) => vec![
                    not_exercised("SR-03.a", no_pop),
                    not_exercised("SR-03.b", no_pop),
                ],
                (Some(_), Some(mm), Some(rev)) => vec![
                    at_most("SR-03.a", "rotating overshoot", mm, max_mm, "mm"),
                    at_most("SR-03.b", "revolutions after t_bt", rev, max_rev, "rev"),
                ],
                (Some(_), _, _) => vec![
                    clause(
                        "SR-03.a",
                        Verdict::Fail,
                        None,
                        "mm",
                        Some(max_mm),
                        rotating.into(),
                    ),
                    clause(
                        "SR-03.b",
                        Verdict::Fail,
                        None,
                        "rev",
                        Some(max_rev),
                        rotating.into(),
                    ),
                ],
            }
        }
        "SR-04" => {
            let _ = limit(req, "max_far_contacts")?;
            vec![if m.far_cortex_contact_rotating {
                let at = trace.truth.far_contact_s.unwrap_or(0.0) * 1000.0;
                clause(
                    "SR-04.a",
                    Verdict::Fail,
                    Some(1.0),
                    "count",
                    Some(0.0),
                    format!("needle reached the far cortex rotating at {at:.1} ms"),
                )
            } else {
                clause(
                    "SR-04.a",
                    Verdict::Pass,
                    Some(0.0),
                    "count",
                    Some(0.0),
                    "no far-cortex contact while rotating".to_owned(),
                )
            }]
        }
        "SR-05" => {
            // Per trial: a premature stop is recorded against the clause of the scenario's push
            // (nominal: SR-05.a; oscillating or stepped: SR-05.b); the fraction limit is applied
            // over trials by `aggregate`.
            let allowed = premature_stop_limit(req, scenario)?;
            let (id, other, why) = if push_varies(scenario) {
                ("SR-05.b", "SR-05.a", "the push varies in this scenario")
            } else {
                ("SR-05.a", "SR-05.b", "the push is nominal in this scenario")
            };
            let count = f64::from(u8::from(m.premature_stop));
            let detail = if m.premature_stop {
                format!(
                    "firmware stopped ({reason}) at {:.1} ms, before breakthrough",
                    m.motor_off_ms.unwrap_or(0.0)
                )
            } else {
                "no stop before breakthrough".to_owned()
            };
            let v = if count <= allowed {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            let mut clauses = vec![
                clause(id, v, Some(count), "fraction", Some(allowed), detail),
                not_exercised(other, why),
            ];
            clauses.sort_by(|a, b| a.clause.cmp(&b.clause));
            clauses
        }
        "SR-06" => evaluate_arming(req, m)?,
        "SR-07" => evaluate_stall(req, trace)?,
        "SR-08" => {
            let max_s = limit(req, "max_run_s")?;
            let run = m.longest_run_s;
            let over_time = m.stop_reason.as_deref() == Some("over_time");
            let short = format!(
                "the longest run ({run:.3} s, stop reason {}) never reached the {max_s} s limit",
                m.stop_reason.as_deref().unwrap_or("none")
            );
            let a = if run > max_s || over_time {
                at_most("SR-08.a", "longest run", run, max_s, "s")
            } else {
                not_exercised("SR-08.a", short.clone())
            };
            let outcome = if over_time && m.fault_latched {
                Some((
                    Verdict::Pass,
                    format!("stopped by the over-time fault after {run:.3} s"),
                ))
            } else if over_time {
                Some((
                    Verdict::Fail,
                    format!("stopped for over-time after {run:.3} s, but no fault latched"),
                ))
            } else if run > max_s {
                Some((
                    Verdict::Fail,
                    format!(
                        "ran {run:.3} s, past the {max_s} s limit, without the over-time fault (stop reason {})",
                        m.stop_reason.as_deref().unwrap_or("none")
                    ),
                ))
            } else {
                None
            };
            let b = match outcome {
                Some((verdict, detail)) => {
                    clause("SR-08.b", verdict, Some(run), "s", Some(max_s), detail)
                }
                None => not_exercised("SR-08.b", short),
            };
            vec![a, b]
        }
        "SR-09" => evaluate_release(req, trace, scenario)?,
        "SR-10" => vec![evaluate_missed_pop(req, trace, m, scenario.bone.cap_mm)?],
        "SR-11" => evaluate_low_battery(req, trace, m)?,
        other => every_clause(
            req,
            Verdict::Inconclusive,
            false,
            &format!("no evaluator for {other} on the {} rig", trace.rig),
        ),
    })
}

/// Whether the operator's push varies over the trial (oscillation or steps).
fn push_varies(scenario: &Scenario) -> bool {
    scenario.operator.oscillation.is_some() || !scenario.operator.steps.is_empty()
}

/// Allowed premature-stop fraction for this scenario (nominal push or with push variation).
pub fn premature_stop_limit(req: &Requirement, scenario: &Scenario) -> Result<f64, String> {
    if push_varies(scenario) {
        limit(req, "max_fraction_oscillating")
    } else {
        limit(req, "max_fraction_nominal")
    }
}

/// SR-06: armed only after cortex contact (a) and at least the blanking time after motor start
/// (b). A detector that never armed exercised neither.
fn evaluate_arming(req: &Requirement, m: &Measurements) -> Result<Vec<ClauseVerdict>, String> {
    let blanking = limit(req, "min_blanking_ms")?;
    let Some(armed) = m.armed_ms else {
        return Ok(vec![
            not_exercised("SR-06.a", "the detector never armed"),
            not_exercised("SR-06.b", "the detector never armed"),
        ]);
    };
    let a = match m.cortex_contact_ms {
        Some(c) if armed >= c => clause(
            "SR-06.a",
            Verdict::Pass,
            Some(armed - c),
            "ms",
            Some(0.0),
            format!("armed {:.1} ms after cortex contact", armed - c),
        ),
        contact => clause(
            "SR-06.a",
            Verdict::Fail,
            contact.map(|c| armed - c),
            "ms",
            Some(0.0),
            format!(
                "armed at {armed:.1} ms, before cortical engagement ({})",
                contact.map_or("never".to_owned(), |c| format!("{c:.1} ms"))
            ),
        ),
    };
    let b = match m.motor_start_ms {
        None => clause(
            "SR-06.b",
            Verdict::Fail,
            None,
            "ms",
            Some(blanking),
            "armed without a motor start".to_owned(),
        ),
        Some(start) => {
            let after = armed - start;
            let (v, how) = if after < blanking {
                (Verdict::Fail, "inside")
            } else {
                (Verdict::Pass, "after")
            };
            clause(
                "SR-06.b",
                v,
                Some(after),
                "ms",
                Some(blanking),
                format!("armed {after:.1} ms after start, {how} the {blanking} ms blanking"),
            )
        }
    };
    Ok(vec![a, b])
}

/// SR-07: stall to motor off within the limit (a), with a stall fault (b), and no restart while
/// the trigger stays held (c, watched for at least [`MIN_OBSERVATION_S`]).
fn evaluate_stall(req: &Requirement, trace: &Trace) -> Result<Vec<ClauseVerdict>, String> {
    let max_ms = limit(req, "max_stop_ms")?;
    let speed_fraction = limit(req, "stall_speed_fraction")?;
    let current_fraction = limit(req, "stall_current_fraction")?;
    let s = &trace.samples;
    let speed_limit = trace.truth.no_load_speed_rpm * speed_fraction;
    let current_limit = trace.truth.stall_current_a * current_fraction;
    // The stall condition must hold 10 ms: the start-up inrush satisfies it for a few ms.
    const PERSIST_S: f64 = 0.010;
    let mut onset: Option<f64> = None;
    let mut stall_at: Option<f64> = None;
    for k in 0..s.len() {
        let stalled = s.duty_permille[k] > 0
            && s.speed_rpm[k] < speed_limit
            && s.current_a[k] > current_limit;
        match (stalled, onset) {
            (true, None) => onset = Some(s.t_s[k]),
            (true, Some(t0)) if s.t_s[k] - t0 >= PERSIST_S => {
                stall_at = Some(t0);
                break;
            }
            (false, _) => onset = None,
            _ => {}
        }
    }
    let Some(stall_at) = stall_at else {
        let why = "the stall condition was never reached";
        return Ok(vec![
            not_exercised("SR-07.a", why),
            not_exercised("SR-07.b", why),
            not_exercised("SR-07.c", why),
        ]);
    };
    let off = trace
        .events_of(EventSource::Firmware, "motor_off")
        .find(|e| e.t_s >= stall_at);
    let Some(off) = off else {
        let never = format!(
            "motor never stopped after the stall at {:.1} ms",
            stall_at * 1000.0
        );
        return Ok(vec![
            clause(
                "SR-07.a",
                Verdict::Fail,
                None,
                "ms",
                Some(max_ms),
                never.clone(),
            ),
            clause("SR-07.b", Verdict::Fail, None, "", None, never.clone()),
            not_exercised("SR-07.c", never),
        ]);
    };
    let latency_ms = (off.t_s - stall_at) * 1000.0;
    let a = at_most("SR-07.a", "stall to motor off", latency_ms, max_ms, "ms");
    let reason = off.detail.as_deref().unwrap_or("none");
    let latched = fault_latched_at(trace, off.t_s);
    let b = clause(
        "SR-07.b",
        if reason == "stall" && latched {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        None,
        "",
        None,
        format!(
            "stop reason {reason} (expected stall), {}",
            if latched {
                "fault latched"
            } else {
                "no fault latched (expected one)"
            }
        ),
    );
    let c = no_restart_while_held("SR-07.c", trace, off.t_s);
    Ok(vec![a, b, c])
}

/// A "does not restart by itself" clause: FAIL when drive comes back after `after` while the
/// trigger has stayed held; PASS only when the trigger stayed held, undriven, for at least
/// [`MIN_OBSERVATION_S`].
fn no_restart_while_held(id: &str, trace: &Trace, after: f64) -> ClauseVerdict {
    if let Some(restart) = drive_while_held_after(trace, after) {
        return clause(
            id,
            Verdict::Fail,
            None,
            "",
            None,
            format!(
                "drive restarted at {:.1} ms without a new trigger press",
                restart * 1000.0
            ),
        );
    }
    let s = &trace.samples;
    let from = s.t_s.partition_point(|t| *t <= after);
    let until = (from..s.len())
        .find(|&k| !s.trigger[k])
        .map_or(end_s(trace), |k| s.t_s[k]);
    let watched = until - after;
    if watched < MIN_OBSERVATION_S {
        return not_exercised(
            id,
            format!(
                "the trigger was held {:.0} ms after the stop; a restart needs {:.0} ms of watching",
                watched * 1000.0,
                MIN_OBSERVATION_S * 1000.0
            ),
        );
    }
    clause(
        id,
        Verdict::Pass,
        Some(watched * 1000.0),
        "ms",
        None,
        format!(
            "no drive in the {:.0} ms the trigger stayed held after the stop",
            watched * 1000.0
        ),
    )
}

/// First sample after `after` with drive applied while the trigger has stayed held since.
fn drive_while_held_after(trace: &Trace, after: f64) -> Option<f64> {
    let s = &trace.samples;
    for k in s.t_s.partition_point(|t| *t <= after)..s.len() {
        if !s.trigger[k] {
            return None;
        }
        if s.duty_permille[k] > 0 {
            return Some(s.t_s[k]);
        }
    }
    None
}

/// SR-09: release to de-energised within the limit (a); no drive while the trigger stays
/// released (b, watched for at least [`MIN_OBSERVATION_S`]).
fn evaluate_release(
    req: &Requirement,
    trace: &Trace,
    scenario: &Scenario,
) -> Result<Vec<ClauseVerdict>, String> {
    let max_ms = limit(req, "max_deenergise_ms")?;
    let Some(release) = scenario.operator.release_s else {
        let why = "the trigger is never released in this scenario";
        return Ok(vec![
            not_exercised("SR-09.a", why),
            not_exercised("SR-09.b", why),
        ]);
    };
    let s = &trace.samples;
    let from = s.t_s.partition_point(|t| *t < release);
    let Some(k_off) = (from..s.len()).find(|&k| s.duty_permille[k] == 0) else {
        let never = "motor still driven at the end of the trial after release";
        return Ok(vec![
            clause(
                "SR-09.a",
                Verdict::Fail,
                None,
                "ms",
                Some(max_ms),
                never.into(),
            ),
            clause("SR-09.b", Verdict::Fail, None, "", None, never.into()),
        ]);
    };
    let latency_ms = ((s.t_s[k_off] - release) * 1000.0).max(0.0);
    let driven_at_release = from.checked_sub(1).is_some_and(|k| s.duty_permille[k] > 0);
    let a = if driven_at_release {
        at_most(
            "SR-09.a",
            "release to de-energised",
            latency_ms,
            max_ms,
            "ms",
        )
    } else {
        not_exercised(
            "SR-09.a",
            "the motor was not driven when the trigger was released",
        )
    };
    let b = if let Some(k) = (k_off..s.len()).find(|&k| s.duty_permille[k] > 0 && !s.trigger[k]) {
        clause(
            "SR-09.b",
            Verdict::Fail,
            None,
            "",
            None,
            format!(
                "driven at {:.1} ms with the trigger released",
                s.t_s[k] * 1000.0
            ),
        )
    } else {
        let until = (from..s.len())
            .find(|&k| s.trigger[k])
            .map_or(end_s(trace), |k| s.t_s[k]);
        let watched = until - release;
        if watched < MIN_OBSERVATION_S {
            not_exercised(
                "SR-09.b",
                format!(
                    "the trigger stayed released {:.0} ms; a restart needs {:.0} ms of watching",
                    watched * 1000.0,
                    MIN_OBSERVATION_S * 1000.0
                ),
            )
        } else {
            clause(
                "SR-09.b",
                Verdict::Pass,
                Some(watched * 1000.0),
                "ms",
                None,
                format!(
                    "no drive in the {:.0} ms the trigger stayed released",
                    watched * 1000.0
                ),
            )
        }
    };
    Ok(vec![a, b])
}

/// Time of the trial's last sample, s.
fn end_s(trace: &Trace) -> f64 {
    trace.samples.t_s.last().copied().unwrap_or(0.0)
}

/// SR-10 (one clause): motor off within the limit after the load torque falls below the
/// plateau fraction, on a cortex that gives way without a detectable pop.
fn evaluate_missed_pop(
    req: &Requirement,
    trace: &Trace,
    m: &Measurements,
    cap_mm: f64,
) -> Result<ClauseVerdict, String> {
    const ID: &str = "SR-10.a";
    let max_ms = limit(req, "max_stop_ms")?;
    let fraction = limit(req, "plateau_fraction")?;
    let s = &trace.samples;
    let Some(contact) = trace.truth.cortex_contact_s else {
        return Ok(not_exercised(ID, "the needle never reached the cortex"));
    };
    // Plateau: largest 50 ms mean of the load torque while driven in the near cortex.
    let end_of_cortex = trace.truth.t_bt_s.unwrap_or(f64::INFINITY);
    let window = (0.050 / trace.sample_period_s).round().max(1.0) as usize;
    let in_cortex: Vec<usize> = (0..s.len())
        .filter(|&k| s.t_s[k] >= contact && s.t_s[k] <= end_of_cortex && s.duty_permille[k] > 0)
        .collect();
    let mut plateau = 0.0f64;
    let mut plateau_at = contact;
    for w in in_cortex.windows(window) {
        let mean = w.iter().map(|&k| s.load_torque_nmm[k]).sum::<f64>() / window as f64;
        if mean > plateau {
            plateau = mean;
            plateau_at = s.t_s[w[window - 1]];
        }
    }
    let threshold = plateau * fraction;
    let t_low = (0..s.len())
        .find(|&k| {
            s.t_s[k] > plateau_at && s.speed_rpm[k] > 0.0 && s.load_torque_nmm[k] < threshold
        })
        .map(|k| s.t_s[k]);
    let pct = fraction * 100.0;
    let reason = m.stop_reason.as_deref().unwrap_or("none");
    let detector_stop = matches!(reason, "breakthrough" | "missed_pop");
    if m.far_cortex_contact_rotating {
        let at = trace.truth.far_contact_s.unwrap_or(0.0) * 1000.0;
        return Ok(clause(
            ID,
            Verdict::Fail,
            None,
            "ms",
            Some(max_ms),
            format!("needle reached the far cortex rotating at {at:.1} ms (stop: {reason})"),
        ));
    }
    // SR-10 is about a cortex that gives way without a detectable pop. A bone with a cap
    // whose pop the detector caught never needed the fallback: no verdict on it. A cap-less
    // bone, or a pop the detector missed (stopped by anything else, or not at all), exercises
    // it.
    if cap_mm > 0.0 && reason == "breakthrough" {
        return Ok(not_exercised(
            ID,
            format!(
                "the bone breaks through with a pop (cap {cap_mm} mm) that the detector caught (motor off at {:.1} ms); SR-10 needs a cortex that gives way without a detectable pop",
                m.motor_off_ms.unwrap_or(0.0)
            ),
        ));
    }
    Ok(match (t_low, m.motor_off_ms) {
        (None, Some(off)) if detector_stop => clause(ID, Verdict::Pass, None, "ms", Some(max_ms), format!("motor off at {off:.1} ms ({reason}) before the torque fell below {pct:.0} % of its {plateau:.1} N*mm plateau")),
        (None, _) => not_exercised(ID, format!("load torque never fell below {pct:.0} % of its {plateau:.1} N*mm plateau (stop: {reason})")),
        (Some(low), None) => clause(ID, Verdict::Fail, None, "ms", Some(max_ms), format!("torque below {pct:.0} % of plateau from {:.1} ms and the motor never stopped", low * 1000.0)),
        (Some(low), Some(off)) => {
            let latency = off - low * 1000.0;
            if latency < 0.0 && detector_stop {
                clause(ID, Verdict::Pass, Some(latency), "ms", Some(max_ms), format!("motor off ({reason}) {:.1} ms before the torque fell below {pct:.0} % of plateau", -latency))
            } else {
                let mut result = at_most(ID, "torque below plateau fraction to motor off", latency.max(0.0), max_ms, "ms");
                result.detail = format!("{} (stop: {reason})", result.detail);
                result
            }
        }
    })
}

/// SR-11: below the minimum under load, drilling is refused within the limit and not
/// restarted (a); between the minimum and the warning level a warning is given (b); above the
/// minimum by the refusal margin, drilling is not refused (c).
fn evaluate_low_battery(
    req: &Requirement,
    trace: &Trace,
    m: &Measurements,
) -> Result<Vec<ClauseVerdict>, String> {
    let min_v = limit(req, "min_loaded_v")?;
    let warn_v = limit(req, "warn_loaded_v")?;
    let max_ms = limit(req, "max_stop_ms")?;
    let margin_v = limit(req, "refusal_margin_v")?;
    let (Some(loaded), Some(start)) = (m.loaded_battery_v, m.motor_start_ms) else {
        let why = "the motor never started";
        return Ok(vec![
            not_exercised("SR-11.a", why),
            not_exercised("SR-11.b", why),
            not_exercised("SR-11.c", why),
        ]);
    };
    let refused = m.stop_reason.as_deref() == Some("low_battery");
    let warned = trace
        .first_event(EventSource::Firmware, "low_battery_warning")
        .is_some();
    let stop = m.stop_reason.as_deref().unwrap_or("none");
    let a = if loaded >= min_v {
        not_exercised(
            "SR-11.a",
            format!("loaded battery {loaded:.3} V is not below the {min_v} V minimum"),
        )
    } else if !refused {
        clause(
            "SR-11.a",
            Verdict::Fail,
            Some(loaded),
            "V",
            Some(min_v),
            format!("loaded battery {loaded:.3} V < {min_v} V and drilling was not refused (stop: {stop})"),
        )
    } else {
        let stop_ms = m.motor_off_ms.unwrap_or(f64::INFINITY) - start;
        let mut result = at_most(
            "SR-11.a",
            "start to low-battery stop",
            stop_ms,
            max_ms,
            "ms",
        );
        result.detail = format!(
            "loaded battery {loaded:.3} V < {min_v} V; {}",
            result.detail
        );
        if !m.fault_latched {
            result = fail_also(result, "the refusal latched no fault".to_owned());
        }
        match drive_while_held_after(trace, m.motor_off_ms.unwrap_or(0.0) / 1000.0) {
            Some(t) => fail_also(
                result,
                format!(
                    "drive restarted at {:.1} ms without a new press",
                    t * 1000.0
                ),
            ),
            None => result,
        }
    };
    let b = if loaded < min_v || loaded >= warn_v {
        not_exercised(
            "SR-11.b",
            format!(
                "loaded battery {loaded:.3} V is outside the warning band [{min_v}, {warn_v}) V"
            ),
        )
    } else {
        clause(
            "SR-11.b",
            if warned || refused {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            Some(loaded),
            "V",
            Some(warn_v),
            format!(
                "loaded battery {loaded:.3} V < {warn_v} V; warned: {warned}, refused: {refused}"
            ),
        )
    };
    let c = if loaded < min_v + margin_v {
        not_exercised(
            "SR-11.c",
            format!("loaded battery {loaded:.3} V is within {margin_v} V of the {min_v} V minimum"),
        )
    } else {
        clause(
            "SR-11.c",
            if refused {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
            Some(loaded),
            "V",
            Some(min_v + margin_v),
            if refused {
                format!("drilling refused at {loaded:.3} V, more than {margin_v} V above the {min_v} V minimum")
            } else {
                format!("loaded battery {loaded:.3} V; drilling not refused")
            },
        )
    };
    Ok(vec![a, b, c])
}

/// Statistics of one measured value over trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Statistics {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for n = 1).
    pub sd: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// 95th percentile, nearest rank.
    pub p95: f64,
    /// 99th percentile, nearest rank (equals the maximum while n < 100).
    pub p99: f64,
    /// One-sided 95 % upper confidence bound on the 99th percentile; see
    /// [`p99_upper_bound_95`]. `None` for n < 5.
    #[serde(default)]
    pub p99_ucb95: Option<f64>,
}

impl Statistics {
    /// Statistics of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Statistics> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Statistics {
            n,
            mean,
            sd,
            min: sorted[0],
            max: sorted[n - 1],
            p95: rank(0.95),
            p99: rank(0.99),
            p99_ucb95: p99_upper_bound_95(n, mean, sd, sorted[n - 1]),
        })
    }
}

/// Smallest n for a normal-theory bound.
pub const MIN_N_FOR_BOUND: usize = 5;
/// Smallest n for which the sample maximum is a distribution-free 95 % upper confidence bound
/// on the 99th percentile (1 - 0.99^n >= 0.95).
pub const MIN_N_DISTRIBUTION_FREE: usize = 299;

/// One-sided 95 % upper confidence bound on the 99th percentile of a measured value.
///
/// Method: from n >= 299 trials the sample maximum is used, which bounds the P99 with 95 %
/// confidence whatever the distribution. Below that, the normal-theory one-sided tolerance
/// bound `mean + k * sd` is used, with k(n, p = 0.99, confidence 0.95) from the Natrella
/// approximation `k = (z_p + sqrt(z_p^2 - a b)) / a`, `a = 1 - z_g^2 / (2 (n - 1))`,
/// `b = z_p^2 - z_g^2 / n` (z_p = 2.3263, z_g = 1.6449); it assumes the trials are normally
/// distributed and is never taken below the sample maximum. None below n = 5.
pub fn p99_upper_bound_95(n: usize, mean: f64, sd: f64, max: f64) -> Option<f64> {
    if n >= MIN_N_DISTRIBUTION_FREE {
        return Some(max);
    }
    if n < MIN_N_FOR_BOUND {
        return None;
    }
    const Z_P: f64 = 2.326_347_874;
    const Z_G: f64 = 1.644_853_627;
    let n = n as f64;
    let a = 1.0 - Z_G * Z_G / (2.0 * (n - 1.0));
    let b = Z_P * Z_P - Z_G * Z_G / n;
    let k = (Z_P + (Z_P * Z_P - a * b).max(0.0).sqrt()) / a;
    Some((mean + k * sd).max(max))
}

/// Combines per-trial verdicts of one requirement into the scenario's verdict, clause by
/// clause, applying the over-trials statistics (SR-01.b P99, SR-05.a/b fractions).
pub fn aggregate(
    req_id: &str,
    trials: &[&RequirementVerdict],
    requirements: &Requirements,
    scenario: &Scenario,
) -> RequirementVerdict {
    let Some(req) = requirements.get(req_id) else {
        return RequirementVerdict {
            requirement: req_id.to_owned(),
            verdict: Verdict::Inconclusive,
            measured: None,
            unit: String::new(),
            limit: None,
            detail: format!("requirement {req_id} is not in the requirements file"),
            clauses: Vec::new(),
        };
    };
    if trials.is_empty() {
        return combine(
            req_id,
            every_clause(req, Verdict::Inconclusive, false, "no trials"),
        );
    }
    let clauses = req
        .clauses
        .iter()
        .map(|c| aggregate_clause(&c.id, req, trials, scenario))
        .collect();
    let mut result = combine(req_id, clauses);
    let n = trials.len();
    if n > 1 {
        let counts = |v: Verdict| trials.iter().filter(|t| t.verdict == v).count();
        result.detail = format!(
            "{n} trials: {} pass, {} fail, {} inconclusive; {}",
            counts(Verdict::Pass),
            counts(Verdict::Fail),
            counts(Verdict::Inconclusive),
            result.detail
        );
    }
    result
}

/// One clause over the scenario's trials.
fn aggregate_clause(
    id: &str,
    req: &Requirement,
    trials: &[&RequirementVerdict],
    scenario: &Scenario,
) -> ClauseVerdict {
    let n = trials.len();
    // A scenario cut off before its planned trials ran (an interrupted run, or one still
    // running): a statistic of its planned population is not assessed from the trials that
    // ran, in either direction; per-trial limits still FAIL where a trial failed.
    let planned = usize::try_from(scenario.trials).unwrap_or(usize::MAX);
    let cut_off = n < planned;
    let not_assessed = format!(
        "{n} of {planned} planned trials ran: the statistic over the planned population is not assessed"
    );
    let of_clause = |clause: &str| -> Vec<&ClauseVerdict> {
        trials
            .iter()
            .filter_map(|t| t.clauses.iter().find(|c| c.clause == clause))
            .collect()
    };
    let exercised: Vec<&ClauseVerdict> =
        of_clause(id).into_iter().filter(|c| c.exercised).collect();
    match id {
        "SR-01.b" => {
            let Ok(p99_limit) = limit(req, "p99_latency_ms") else {
                return clause(
                    id,
                    Verdict::Inconclusive,
                    None,
                    "",
                    None,
                    "requirements file lacks p99_latency_ms".into(),
                );
            };
            if planned < MIN_N_FOR_BOUND {
                return not_exercised(
                    id,
                    format!("a P99 bound needs {MIN_N_FOR_BOUND} or more trials; this scenario plans {planned}"),
                );
            }
            // The latencies of the trials whose per-trial clause was exercised.
            let values: Vec<f64> = of_clause("SR-01.a")
                .iter()
                .filter(|c| c.exercised)
                .filter_map(|c| c.measured)
                .collect();
            if cut_off {
                return clause(
                    id,
                    Verdict::Inconclusive,
                    None,
                    "ms",
                    Some(p99_limit),
                    format!("P99 not assessed: {not_assessed}"),
                );
            }
            match Statistics::of(&values).and_then(|s| s.p99_ucb95.map(|b| (b, s.n))) {
                Some((bound, k)) => {
                    let mut c = at_most(id, "P99 detection latency", bound, p99_limit, "ms");
                    c.detail = format!("{} (95 % upper confidence bound over n = {k})", c.detail);
                    c
                }
                None => clause(
                    id,
                    Verdict::Inconclusive,
                    None,
                    "ms",
                    Some(p99_limit),
                    format!(
                        "P99 not assessed: {} trial(s) measured a latency, a confidence bound needs {MIN_N_FOR_BOUND}",
                        values.len()
                    ),
                ),
            }
        }
        "SR-05.a" | "SR-05.b" => {
            if exercised.is_empty() {
                return not_exercised_over(id, &of_clause(id), n);
            }
            let name = if id == "SR-05.a" {
                "max_fraction_nominal"
            } else {
                "max_fraction_oscillating"
            };
            let allowed = match limit(req, name) {
                Ok(allowed) => allowed,
                Err(missing) => {
                    return clause(id, Verdict::Inconclusive, None, "", None, missing);
                }
            };
            let conclusive: Vec<&&ClauseVerdict> = exercised
                .iter()
                .filter(|t| t.verdict != Verdict::Inconclusive)
                .collect();
            if conclusive.is_empty() {
                return worst_of(id, &exercised, n);
            }
            let premature = conclusive
                .iter()
                .filter(|t| t.measured == Some(1.0))
                .count();
            let fraction = premature as f64 / conclusive.len() as f64;
            let verdict = if cut_off {
                // Definite only when the premature stops already recorded exceed what the
                // whole planned population may have.
                if premature as f64 > allowed * planned as f64 {
                    Verdict::Fail
                } else {
                    Verdict::Inconclusive
                }
            } else if fraction <= allowed {
                Verdict::Pass
            } else {
                Verdict::Fail
            };
            clause(
                id,
                verdict,
                Some(fraction),
                "fraction",
                Some(allowed),
                format!(
                    "{premature} premature stops in {} trials ({:.1} %), limit {:.1} %{}",
                    conclusive.len(),
                    fraction * 100.0,
                    allowed * 100.0,
                    if cut_off {
                        format!("; {not_assessed}")
                    } else {
                        String::new()
                    }
                ),
            )
        }
        _ if exercised.is_empty() => not_exercised_over(id, &of_clause(id), n),
        _ => worst_of(id, &exercised, n),
    }
}

/// A clause no trial exercised, with the first trial's reason.
fn not_exercised_over(id: &str, per_trial: &[&ClauseVerdict], n: usize) -> ClauseVerdict {
    let why = per_trial
        .first()
        .map_or("no trial evaluated it".to_owned(), |c| c.detail.clone());
    not_exercised(
        id,
        if n > 1 {
            format!("in none of {n} trials: {why}")
        } else {
            why
        },
    )
}

/// The worst of the trials that exercised a clause: its verdict and detail, with the largest
/// value measured over them.
fn worst_of(id: &str, exercised: &[&ClauseVerdict], n: usize) -> ClauseVerdict {
    let worst = exercised
        .iter()
        .map(|c| c.verdict)
        .max()
        .unwrap_or(Verdict::Inconclusive);
    // The trial that decides the verdict: the worst one, the largest value among equals.
    let decisive = exercised
        .iter()
        .filter(|t| t.verdict == worst)
        .max_by(|a, b| {
            a.measured
                .unwrap_or(f64::NEG_INFINITY)
                .total_cmp(&b.measured.unwrap_or(f64::NEG_INFINITY))
        });
    let Some(d) = decisive else {
        return not_exercised(id, "no trial exercised it");
    };
    let max = exercised.iter().filter_map(|c| c.measured).reduce(f64::max);
    let counts = |v: Verdict| exercised.iter().filter(|t| t.verdict == v).count();
    ClauseVerdict {
        clause: id.to_owned(),
        verdict: worst,
        exercised: true,
        measured: max.or(d.measured),
        unit: d.unit.clone(),
        limit: d.limit,
        detail: if n > 1 {
            format!(
                "{} of {n} trials exercised it: {} pass, {} fail, {} inconclusive; worst: {}",
                exercised.len(),
                counts(Verdict::Pass),
                counts(Verdict::Fail),
                counts(Verdict::Inconclusive),
                d.detail
            )
        } else {
            d.detail.clone()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped requirements, and a scenario with `trials` planned (push oscillation when
    /// `oscillating`, so that SR-05 allows 2 % premature stops).
    fn planned(trials: u32, oscillating: bool) -> (Requirements, Scenario) {
        use crate::scenario::load::{load_profiles, load_requirements, load_scenario_str};
        let suite = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let requirements = load_requirements(&suite.join("requirements.yaml")).expect("reqs");
        let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
        let operator = if oscillating {
            "operator: { oscillation: { amplitude_pct: 20, frequency_hz: 4 } }\n"
        } else {
            ""
        };
        let text = format!(
            "format_version: 1\nid: cut\ntitle: cut off\nverifies: [SR-01, SR-05]\nbone: {{ profile: adult-proximal-tibia }}\n{operator}trials: {trials}\n"
        );
        let scenario = load_scenario_str(
            std::path::Path::new("cut.yaml"),
            &text,
            &requirements,
            &profiles,
        )
        .expect("scenario");
        (requirements, scenario)
    }

    /// A trial's verdict of SR-01 (its per-trial clause a) or SR-05 (clause b: the push
    /// oscillates in these scenarios).
    fn trial(requirement: &str, verdict: Verdict, measured: f64) -> RequirementVerdict {
        let id = if requirement == "SR-01" {
            "SR-01.a"
        } else {
            "SR-05.b"
        };
        combine(
            requirement,
            vec![clause(id, verdict, Some(measured), "", None, String::new())],
        )
    }

    #[test]
    fn a_cut_off_population_is_not_assessed_but_a_failed_trial_still_fails() {
        let (reqs, scenario) = planned(100, true);
        // SR-01: five trials of 100 at 5 ms pass every per-trial limit; the P99 over the
        // planned 100 is not claimed from them.
        let fine: Vec<_> = (0..5).map(|_| trial("SR-01", Verdict::Pass, 5.0)).collect();
        let refs: Vec<&RequirementVerdict> = fine.iter().collect();
        let v = aggregate("SR-01", &refs, &reqs, &scenario);
        assert_eq!(v.verdict, Verdict::Inconclusive, "{v:?}");
        assert!(
            v.detail.contains("5 of 100 planned trials ran"),
            "{}",
            v.detail
        );
        // ... while a trial over the per-trial limit is a FAIL however many ran.
        let mut bad = fine.clone();
        bad.push(trial("SR-01", Verdict::Fail, 30.0));
        let refs: Vec<&RequirementVerdict> = bad.iter().collect();
        assert_eq!(
            aggregate("SR-01", &refs, &reqs, &scenario).verdict,
            Verdict::Fail
        );
        // The same five trials as the whole plan: the P99 bound is assessed and met.
        let (reqs5, scenario5) = planned(5, true);
        let refs: Vec<&RequirementVerdict> = fine.iter().collect();
        assert_eq!(
            aggregate("SR-01", &refs, &reqs5, &scenario5).verdict,
            Verdict::Pass
        );

        // SR-05 with 2 % allowed of 100 planned: one premature stop in ten is no verdict yet;
        // three are more than the whole plan may have, a definite FAIL.
        let sr05 = |premature: usize, ran: usize| {
            let trials: Vec<_> = (0..ran)
                .map(|k| {
                    trial(
                        "SR-05",
                        Verdict::Pass,
                        if k < premature { 1.0 } else { 0.0 },
                    )
                })
                .collect();
            let refs: Vec<&RequirementVerdict> = trials.iter().collect();
            aggregate("SR-05", &refs, &reqs, &scenario)
        };
        let v = sr05(1, 10);
        assert_eq!(v.verdict, Verdict::Inconclusive, "{v:?}");
        assert!(
            v.detail.contains("10 of 100 planned trials ran"),
            "{}",
            v.detail
        );
        assert_eq!(sr05(3, 10).verdict, Verdict::Fail);
        assert_eq!(sr05(2, 100).verdict, Verdict::Pass);
        assert_eq!(sr05(3, 100).verdict, Verdict::Fail);
    }

    #[test]
    fn a_requirement_is_combined_from_its_clauses_and_never_passes_unexercised() {
        let pass = || {
            clause(
                "SR-07.a",
                Verdict::Pass,
                Some(1.0),
                "ms",
                Some(300.0),
                "ok".into(),
            )
        };
        let fail = || {
            clause(
                "SR-07.b",
                Verdict::Fail,
                None,
                "",
                None,
                "no stall fault".into(),
            )
        };
        let idle = |id: &str| not_exercised(id, "the stall condition was never reached");
        // One failed clause fails the requirement, whatever the others say; the requirement
        // shows the failed clause's values.
        let v = combine("SR-07", vec![pass(), fail(), idle("SR-07.c")]);
        assert_eq!(v.verdict, Verdict::Fail);
        assert_eq!((v.measured, v.limit), (None, None));
        assert!(v.detail.contains("SR-07.b: no stall fault"), "{}", v.detail);
        // A passed clause and unexercised ones: PASS, the unexercised ones said so.
        let v = combine("SR-07", vec![pass(), idle("SR-07.b"), idle("SR-07.c")]);
        assert_eq!(v.verdict, Verdict::Pass);
        assert_eq!(v.measured, Some(1.0));
        assert!(v.detail.contains("SR-07.c: not exercised"), "{}", v.detail);
        // Nothing exercised: INCONCLUSIVE, never PASS.
        let v = combine("SR-07", vec![idle("SR-07.a"), idle("SR-07.b")]);
        assert_eq!(v.verdict, Verdict::Inconclusive);
        // An exercised clause that could not be decided outweighs a pass.
        let undecided = clause("SR-07.b", Verdict::Inconclusive, None, "", None, "?".into());
        assert_eq!(
            combine("SR-07", vec![pass(), undecided]).verdict,
            Verdict::Inconclusive
        );
    }

    #[test]
    fn a_clause_over_trials_counts_only_the_trials_that_exercised_it() {
        let (reqs, scenario) = planned(3, false);
        let with = |clauses: Vec<ClauseVerdict>| combine("SR-06", clauses);
        let armed = |after: f64| {
            with(vec![
                clause(
                    "SR-06.a",
                    Verdict::Pass,
                    Some(after),
                    "ms",
                    Some(0.0),
                    "a".into(),
                ),
                clause(
                    "SR-06.b",
                    Verdict::Pass,
                    Some(after + 50.0),
                    "ms",
                    Some(50.0),
                    "b".into(),
                ),
            ])
        };
        let never = || {
            with(vec![
                not_exercised("SR-06.a", "the detector never armed"),
                not_exercised("SR-06.b", "the detector never armed"),
            ])
        };
        // Two trials armed, one never did: the clauses PASS over the two that exercised them.
        let trials = [armed(10.0), never(), armed(12.0)];
        let refs: Vec<&RequirementVerdict> = trials.iter().collect();
        let v = aggregate("SR-06", &refs, &reqs, &scenario);
        assert_eq!(v.verdict, Verdict::Pass, "{v:?}");
        assert_eq!(v.clauses[0].measured, Some(12.0));
        assert!(
            v.clauses[0]
                .detail
                .starts_with("2 of 3 trials exercised it"),
            "{v:?}"
        );
        // No trial armed: not exercised, INCONCLUSIVE.
        let trials = [never(), never(), never()];
        let refs: Vec<&RequirementVerdict> = trials.iter().collect();
        let v = aggregate("SR-06", &refs, &reqs, &scenario);
        assert_eq!(v.verdict, Verdict::Inconclusive);
        assert!(v.clauses.iter().all(|c| !c.exercised), "{v:?}");
        // SR-01.b needs five planned trials: with three it is not exercised, and SR-01 rests on
        // its per-trial clause.
        let latency = |ms: f64| trial("SR-01", Verdict::Pass, ms);
        let trials = [latency(5.0), latency(6.0), latency(7.0)];
        let refs: Vec<&RequirementVerdict> = trials.iter().collect();
        let v = aggregate("SR-01", &refs, &reqs, &scenario);
        assert_eq!(v.verdict, Verdict::Pass);
        assert_eq!(v.clauses[1].clause, "SR-01.b");
        assert!(!v.clauses[1].exercised, "{v:?}");
    }

    #[test]
    fn p99_bound_matches_the_tolerance_factor_tables() {
        // Tabulated one-sided normal tolerance factors k(n, 0.99, 0.95): n = 20: 3.295,
        // n = 100: 2.684. The Natrella approximation is within 1 % of both.
        let k20 = p99_upper_bound_95(20, 0.0, 1.0, 0.0).expect("bound");
        assert!((k20 - 3.295).abs() / 3.295 < 0.01, "{k20}");
        let k100 = p99_upper_bound_95(100, 0.0, 1.0, 0.0).expect("bound");
        assert!((k100 - 2.684).abs() / 2.684 < 0.01, "{k100}");
        // Never below the largest observation; distribution-free from 299 trials; none below 5.
        assert_eq!(p99_upper_bound_95(20, 10.0, 0.1, 12.0), Some(12.0));
        assert_eq!(p99_upper_bound_95(299, 10.0, 5.0, 11.0), Some(11.0));
        assert_eq!(p99_upper_bound_95(4, 10.0, 1.0, 11.0), None);
    }
}
