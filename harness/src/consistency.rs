//! The firmware's telemetry checked against itself.
//!
//! Each tick the firmware reports its state, the trigger it saw, and the events of the tick.
//! Verdicts read the events (the motor-off command, the detection, the fault), so an event
//! stream that contradicts the same firmware's own state stream is evidence that cannot be
//! trusted: the trial is INCONCLUSIVE, with the contradiction named. The rules follow from the
//! control core's contract (`driver-core`, `Controller::step`), tick by tick:
//!
//! | event | reported on exactly the ticks where |
//! |---|---|
//! | `started` | the state goes from Idle to Blanking |
//! | `motor_off` | the state leaves the driving states (Blanking, SoftTissue, Cortex) |
//! | `fault` | the state enters Fault |
//! | `done` | the state goes from Braking to Done |
//! | `breakthrough`, `missed_pop` | a `motor_off` carries that stop reason |
//! | `trigger_released` | the debounced trigger is released: only on a tick with the trigger released, at most once per release, and on every release that lasts the debounce time after a press that lasted it |
//!
//! A violation of any of these is a defect of the firmware's telemetry (a reviewer could not
//! reconstruct the run from it), found whatever the scenario verifies.

use driver_core::{State, TRIGGER_DEBOUNCE_TICKS};

use crate::trace::{EventSource, Trace};

/// At most this many contradictions are named (a broken event is usually broken on every tick).
const MAX_NAMED: usize = 3;

/// The events whose ticks these rules check, and their bits in the per-tick masks below.
const CHECKED: [&str; 7] = [
    "started",
    "motor_off",
    "fault",
    "done",
    "trigger_released",
    "breakthrough",
    "missed_pop",
];

fn bit(kind: &str) -> u8 {
    CHECKED
        .iter()
        .position(|k| *k == kind)
        .map_or(0, |i| 1 << i)
}

fn driving(state: State) -> bool {
    matches!(state, State::Blanking | State::SoftTissue | State::Cortex)
}

/// Every contradiction between the trace's firmware events and its firmware states and trigger
/// levels, as text; empty when the telemetry is consistent.
pub fn contradictions(trace: &Trace) -> Vec<String> {
    let s = &trace.samples;
    let n = s.t_s.len().min(s.state.len()).min(s.trigger.len());
    if n == 0 {
        return Vec::new();
    }
    // Each checked event onto the tick it was reported with (same time, within half a period).
    let half = trace.sample_period_s / 2.0;
    let mut reported = vec![0u8; n];
    // The motor-off events' ticks and the stop reasons they carry.
    let mut stops = Vec::new();
    for e in &trace.events {
        let b = bit(&e.kind);
        if e.source != EventSource::Firmware || b == 0 {
            continue;
        }
        let k = s.t_s[..n].partition_point(|&t| t < e.t_s - half);
        if k < n && (s.t_s[k] - e.t_s).abs() <= half {
            reported[k] |= b;
            if e.kind == "motor_off" {
                stops.push((k, e.detail.as_deref()));
            }
        }
    }
    let mut found = Vec::new();
    let mut note = |k: usize, what: String| found.push(format!("t = {:.3} s: {what}", s.t_s[k]));

    // The transitions: each event on exactly the ticks of its transition (from the second tick;
    // the first has no previous state in the trace).
    let transition_bits = bit("started") | bit("motor_off") | bit("fault") | bit("done");
    for (k, &events) in reported.iter().enumerate().skip(1) {
        if s.state[k] == s.state[k - 1] && events & transition_bits == 0 {
            // No transition and no transition event: the common tick, nothing to check.
            continue;
        }
        let (Some(prev), Some(cur)) = (State::from_u8(s.state[k - 1]), State::from_u8(s.state[k]))
        else {
            continue;
        };
        let expected = [
            ("started", prev == State::Idle && cur == State::Blanking),
            ("motor_off", driving(prev) && !driving(cur)),
            ("fault", prev != State::Fault && cur == State::Fault),
            ("done", prev == State::Braking && cur == State::Done),
        ];
        for (kind, transition) in expected {
            let got = events & bit(kind) != 0;
            if got != transition {
                note(
                    k,
                    if got {
                        format!(
                            "`{kind}` reported while the state went {} -> {}",
                            prev.name(),
                            cur.name()
                        )
                    } else {
                        format!(
                            "the state went {} -> {} without the `{kind}` event",
                            prev.name(),
                            cur.name()
                        )
                    },
                );
            }
        }
    }

    // A detection's own event: `breakthrough` and `missed_pop` on exactly the ticks of a
    // motor-off that carries that stop reason.
    for kind in ["breakthrough", "missed_pop"] {
        let b = bit(kind);
        for &(k, reason) in &stops {
            if reason == Some(kind) && reported[k] & b == 0 {
                note(
                    k,
                    format!("a motor-off for `{kind}` without the `{kind}` event"),
                );
            }
        }
        for (k, &events) in reported.iter().enumerate() {
            if events & b != 0 && !stops.iter().any(|&(at, r)| at == k && r == Some(kind)) {
                note(k, format!("`{kind}` reported without a motor-off for it"));
            }
        }
    }

    // The trigger: a release is reported on a released tick, once, and whenever it is
    // debounced (a press of the debounce time or longer, then a release as long).
    let released_bit = bit("trigger_released");
    let debounce = usize::from(TRIGGER_DEBOUNCE_TICKS);
    let mut pressed_run = 0usize;
    let mut released_run = 0usize;
    // Whether the current release (after a debounced press) has been reported.
    let mut press_debounced = false;
    let mut release_reported = true;
    for (k, &events) in reported.iter().enumerate() {
        let released_here = events & released_bit != 0;
        if s.trigger[k] {
            pressed_run += 1;
            released_run = 0;
            if released_here {
                note(
                    k,
                    "`trigger_released` reported with the trigger pressed".to_owned(),
                );
            }
            if pressed_run >= debounce {
                press_debounced = true;
                release_reported = false;
            }
            continue;
        }
        released_run += 1;
        pressed_run = 0;
        if released_here {
            if release_reported {
                note(
                    k,
                    "`trigger_released` reported again with no press since the last".to_owned(),
                );
            }
            release_reported = true;
        }
        if press_debounced && released_run >= debounce {
            if !release_reported {
                note(
                    k,
                    format!(
                        "the trigger was released for {debounce} ticks after a press without the `trigger_released` event"
                    ),
                );
                release_reported = true;
            }
            press_debounced = false;
        }
    }
    if found.len() > MAX_NAMED {
        let more = found.len() - MAX_NAMED;
        found.truncate(MAX_NAMED);
        found.push(format!("{more} more"));
    }
    found
}
