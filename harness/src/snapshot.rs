//! Review snapshots: a deterministic text summary of a scenario's results, rounded to the
//! resolution that matters (0.1 ms, 0.01 mm, 1 mA), for insta snapshot tests.
//!
//! A detector change that still passes every limit can move detection later on every profile;
//! the snapshot of every scenario file makes such a change show up as a diff in review. This
//! module only formats; the snapshot tests live in `harness/tests/snapshots.rs`.

use std::fmt::Write as _;
use std::path::Path;

use crate::run::ScenarioResult;
use crate::trace::{EventSource, Trace};
use crate::verdict::Verdict;

/// Formats `value` with `decimals`, without a negative zero.
fn rounded(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        text.trim_start_matches('-').to_owned()
    } else {
        text
    }
}

fn opt(value: Option<f64>, decimals: usize, unit: &str) -> String {
    value.map_or_else(
        || "-".to_owned(),
        |v| format!("{} {unit}", rounded(v, decimals)),
    )
}

/// The firmware's state sequence of a trace: `state@ms` for each transition.
pub fn state_sequence(trace: &Trace) -> String {
    trace
        .events_of(EventSource::Firmware, "state")
        .map(|e| {
            format!(
                "{}@{}",
                e.detail.as_deref().unwrap_or("?"),
                rounded(e.t_s * 1000.0, 0)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The snapshot text of one scenario's results; `traces` are its trials' traces in order.
pub fn scenario_summary(result: &ScenarioResult, traces: &[Trace]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {}", result.id);
    let _ = writeln!(
        out,
        "source: {} (sha256 {})",
        result.source.path.display(),
        result.source.sha256
    );
    let _ = writeln!(out, "verifies: {}", result.verifies.join(" "));
    let _ = writeln!(
        out,
        "trials: {} (seed {})",
        result.trials.len(),
        result.seed
    );
    for (trial, trace) in result.trials.iter().zip(traces) {
        let m = &trial.measurements;
        let faults: Vec<String> = trace
            .events_of(EventSource::Firmware, "fault")
            .map(|e| e.detail.clone().unwrap_or_default())
            .collect();
        let _ = writeln!(out, "trial {} (seed {}):", trial.trial, trial.seed);
        let _ = writeln!(out, "  states: {}", state_sequence(trace));
        let _ = writeln!(
            out,
            "  stop: {} at {}; faults: {}",
            m.stop_reason.as_deref().unwrap_or("none"),
            opt(m.motor_off_ms, 1, "ms"),
            if faults.is_empty() {
                "none".to_owned()
            } else {
                faults.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  t_bt {}, latency {}, stop {}, overshoot {} / {}, far-cortex contact {}, premature {}",
            opt(m.t_bt_ms, 1, "ms"),
            opt(m.detection_latency_ms, 1, "ms"),
            opt(m.time_to_stop_ms, 1, "ms"),
            opt(m.overshoot_mm, 2, "mm"),
            opt(m.overshoot_rev, 2, "rev"),
            if m.far_cortex_contact_rotating { "yes" } else { "no" },
            if m.premature_stop { "yes" } else { "no" },
        );
        let _ = writeln!(
            out,
            "  peak current {}, cortex torque {}, time in cortex {}, torque drop {}, final depth {}",
            opt(m.peak_current_a.map(|a| a * 1000.0), 0, "mA"),
            opt(m.cortex_torque_nmm, 1, "N*mm"),
            opt(m.time_in_cortex_s.map(|s| s * 1000.0), 0, "ms"),
            opt(m.torque_drop_pct, 0, "%"),
            opt(Some(m.final_depth_mm), 2, "mm"),
        );
    }
    if result.trials.len() > 1 {
        let _ = writeln!(out, "statistics:");
        for (name, s) in &result.statistics {
            let decimals = if name.ends_with("_mm") || name.ends_with("_rev") {
                2
            } else {
                1
            };
            let _ = writeln!(
                out,
                "  {name}: n {} mean {} sd {} max {} p95 {}",
                s.n,
                rounded(s.mean, decimals),
                rounded(s.sd, decimals),
                rounded(s.max, decimals),
                rounded(s.p95, decimals)
            );
        }
    }
    let _ = writeln!(out, "verdicts:");
    let decimals = |unit: &str| match unit {
        "ms" => 1,
        "s" => 3,
        _ => 2,
    };
    // `indent id VERDICT measured (limit limit)`.
    let line = |indent: &str, id: &str, verdict: Verdict, measured, unit: &str, limit| {
        format!(
            "{indent}{id} {verdict} {} (limit {})\n",
            opt(measured, decimals(unit), unit),
            opt(limit, decimals(unit), unit)
        )
    };
    for v in &result.verdicts {
        out.push_str(&line(
            "  ",
            &v.requirement,
            v.verdict,
            v.measured,
            &v.unit,
            v.limit,
        ));
        for c in &v.clauses {
            if c.exercised {
                out.push_str(&line(
                    "    ", &c.clause, c.verdict, c.measured, &c.unit, c.limit,
                ));
            } else {
                let _ = writeln!(out, "    {} not exercised", c.clause);
            }
        }
    }
    out
}

/// Reads a trial's trace back from a run directory. `trace_file` comes from stored evidence:
/// a path that could leave the run directory (absolute, `..`) is refused, not read.
pub fn read_trace(run_dir: &Path, trace_file: &str) -> Result<Trace, String> {
    let inside = Path::new(trace_file)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !inside {
        return Err(format!(
            "trace path {trace_file:?} leaves the run directory; not read"
        ));
    }
    let path = run_dir.join(trace_file);
    let bytes =
        std::fs::read(&path).map_err(|e| format!("failed to read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not a trace: {e}", path.display()))
}
