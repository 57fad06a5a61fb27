//! What every rig that steps the plant records per control tick, so that `sim` and `emu`
//! produce traces of the same shape from the same kinds of facts: the plant's ground truth at
//! the end of the tick, and what the firmware measured, commanded and reported for it.

use driver_core::telemetry::TickRecord;
use driver_core::{event, Inputs, Outputs, State, StopReason};

use crate::plant::{GroundTruth, Plant};
use crate::scenario::Scenario;
use crate::trace::{EventSource, Samples, TraceEvent};

/// After the firmware has stopped the motor and the shaft is at rest, the trial runs on this
/// long (to catch an unwanted restart), then ends early, s.
pub const SETTLE_AFTER_STOP_S: f64 = 0.5;

/// Firmware event bits and their names in traces.
pub const FIRMWARE_EVENT_NAMES: &[(u16, &str)] = &[
    (event::STARTED, "started"),
    (event::BLANKING_DONE, "blanking_done"),
    (event::ARMED, "armed"),
    (event::BREAKTHROUGH, "breakthrough"),
    (event::MISSED_POP, "missed_pop"),
    (event::MOTOR_OFF, "motor_off"),
    (event::TRIGGER_RELEASED, "trigger_released"),
    (event::FAULT, "fault"),
    (event::LOW_BATTERY_WARNING, "low_battery_warning"),
    (event::DONE, "done"),
];

/// Every event bit this harness has a name for (derived from [`FIRMWARE_EVENT_NAMES`] at
/// compile time, not once per decoded tick).
const KNOWN_EVENT_BITS: u16 = {
    let mut bits = 0;
    let mut k = 0;
    while k < FIRMWARE_EVENT_NAMES.len() {
        bits |= FIRMWARE_EVENT_NAMES[k].0;
        k += 1;
    }
    bits
};

/// The ground truth of one tick's sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TruthSample {
    /// Needle depth, mm.
    pub depth_mm: f64,
    /// Output shaft speed, rpm.
    pub speed_rpm: f64,
    /// Output shaft revolutions since the start.
    pub revolutions: f64,
    /// Load torque, N*mm.
    pub load_torque_nmm: f64,
    /// Mean motor current over the tick, A.
    pub current_a: f64,
    /// Battery terminal voltage, V.
    pub battery_v: f64,
    /// Operator push, N.
    pub push_n: f64,
}

/// Samples and events of one trial, tick by tick.
#[derive(Debug)]
pub struct TickRecorder {
    /// Samples so far.
    pub samples: Samples,
    /// Events so far.
    pub events: Vec<TraceEvent>,
    previous_state: State,
    motor_off_at: Option<f64>,
    last_trigger_change_s: f64,
}

impl TickRecorder {
    /// A recorder for `scenario`.
    pub fn new(scenario: &Scenario) -> Self {
        Self::with_samples(scenario, Samples::default())
    }

    /// A recorder for `scenario` that records into `samples`'s memory (emptied first).
    pub fn with_samples(scenario: &Scenario, mut samples: Samples) -> Self {
        samples.clear();
        // Room for the whole scenario (most trials end earlier, once settled), so that the
        // columns never grow by copying; bounded against an absurd duration.
        let ticks =
            (scenario.duration_s * f64::from(driver_core::TICK_HZ)).clamp(0.0, 1e6) as usize;
        samples.reserve(ticks + 1);
        TickRecorder {
            samples,
            events: Vec::new(),
            previous_state: State::Idle,
            motor_off_at: None,
            last_trigger_change_s: scenario
                .operator
                .release_s
                .unwrap_or(scenario.operator.press_s)
                .max(scenario.operator.press_s),
        }
    }

    /// Records the tick ending at `t` s: the plant now, the mean true current over the tick,
    /// the trigger level, and the firmware's inputs and outputs for the tick.
    pub fn record(
        &mut self,
        t: f64,
        plant: &Plant,
        true_current_a: f64,
        trigger: bool,
        inputs: &Inputs,
        outputs: &Outputs,
    ) {
        self.record_truth(&TruthSample {
            depth_mm: plant.depth_mm(),
            speed_rpm: plant.output_speed_rpm(),
            revolutions: plant.output_revolutions(),
            load_torque_nmm: plant.load_torque_nmm(),
            current_a: true_current_a,
            battery_v: plant.terminal_v(),
            push_n: plant.push_n(),
        });
        self.record_firmware(t, trigger, inputs, outputs);
    }

    /// The ground-truth half of a tick's sample (call before [`TickRecorder::record_firmware`]).
    pub fn record_truth(&mut self, truth: &TruthSample) {
        let s = &mut self.samples;
        s.depth_mm.push(truth.depth_mm);
        s.speed_rpm.push(truth.speed_rpm);
        s.revolutions.push(truth.revolutions);
        s.load_torque_nmm.push(truth.load_torque_nmm);
        s.current_a.push(truth.current_a);
        s.battery_v.push(truth.battery_v);
        s.push_n.push(truth.push_n);
    }

    /// The firmware's half of the tick ending at `t` s: its events, state, inputs and outputs,
    /// and the trigger level.
    pub fn record_firmware(&mut self, t: f64, trigger: bool, inputs: &Inputs, outputs: &Outputs) {
        for (bit, name) in FIRMWARE_EVENT_NAMES {
            if outputs.events & bit != 0 {
                let detail = match *bit {
                    event::MOTOR_OFF | event::FAULT => {
                        outputs.stop_reason.map(|r| r.name().to_owned())
                    }
                    _ => None,
                };
                self.event(t, name, detail);
            }
        }
        if outputs.state != self.previous_state {
            self.event(t, "state", Some(outputs.state.name().to_owned()));
        }
        self.previous_state = outputs.state;
        if outputs.events & event::MOTOR_OFF != 0 {
            self.motor_off_at = Some(t);
        }
        if outputs.events & event::STARTED != 0 {
            self.motor_off_at = None;
        }
        let s = &mut self.samples;
        s.t_s.push(t);
        s.trigger.push(trigger);
        s.measured_current_ma.push(inputs.motor_current_ma);
        s.measured_battery_mv.push(inputs.battery_mv);
        s.duty_permille.push(outputs.duty_permille);
        s.brake.push(outputs.brake);
        s.state.push(outputs.state as u8);
    }

    /// When the firmware last reported the motor off (none since it last started), s.
    pub fn motor_off_at(&self) -> Option<f64> {
        self.motor_off_at
    }

    /// A firmware event that is not a tick's (a log line, a fault record).
    pub fn event(&mut self, t: f64, kind: &str, detail: Option<String>) {
        self.events.push(TraceEvent {
            t_s: t,
            source: EventSource::Firmware,
            kind: kind.to_owned(),
            detail,
        });
    }

    /// Whether the trial can end at `t`: the motor was stopped long enough ago, the shaft is
    /// at rest, and the operator has done everything the scenario makes them do.
    pub fn settled(&self, t: f64, plant: &Plant) -> bool {
        let at_rest = plant.output_speed_rpm() == 0.0;
        let settled = self
            .motor_off_at
            .is_some_and(|off| t - off >= SETTLE_AFTER_STOP_S);
        at_rest && settled && t > self.last_trigger_change_s + SETTLE_AFTER_STOP_S
    }

    /// The samples and the events (plant ground-truth events added), in time order.
    pub fn finish(self, plant: &Plant) -> (Samples, Vec<TraceEvent>) {
        self.finish_with(&plant.ground_truth())
    }

    /// As [`TickRecorder::finish`], with ground truth from elsewhere (the bench's load).
    pub fn finish_with(mut self, truth: &GroundTruth) -> (Samples, Vec<TraceEvent>) {
        for (kind, time) in [
            ("cortex_contact", truth.cortex_contact_s),
            ("t_bt", truth.t_bt_s),
            ("far_cortex_contact", truth.far_contact_s),
        ] {
            if let Some(t_s) = time {
                self.events.push(TraceEvent {
                    t_s,
                    source: EventSource::Plant,
                    kind: kind.to_owned(),
                    detail: None,
                });
            }
        }
        self.events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        (self.samples, self.events)
    }
}

/// The firmware's inputs and outputs of one tick as its telemetry frame reports them; an
/// anomaly text when the frame carries a state this harness does not know.
pub fn tick_io(record: &TickRecord) -> Result<(Inputs, Outputs), String> {
    let Some(state) = State::from_u8(record.state) else {
        return Err(format!(
            "telemetry tick {} carries an unknown state {}",
            record.tick, record.state
        ));
    };
    // 0 is "no stop"; any other code must be one this harness knows, or a stop would be read
    // as none (a firmware built from another core, or a damaged frame the CRC let through).
    let stop_reason = StopReason::from_u8(record.stop_reason);
    if record.stop_reason != 0 && stop_reason.is_none() {
        return Err(format!(
            "telemetry tick {} carries an unknown stop reason {}",
            record.tick, record.stop_reason
        ));
    }
    let unknown = record.events & !KNOWN_EVENT_BITS;
    if unknown != 0 {
        return Err(format!(
            "telemetry tick {} carries unknown event bits {unknown:#06x}",
            record.tick
        ));
    }
    let inputs = Inputs {
        tick: record.tick,
        motor_current_ma: i32::from(record.current_ma),
        battery_mv: i32::from(record.battery_mv),
        trigger_pressed: record.trigger_pressed,
    };
    let outputs = Outputs {
        duty_permille: record.duty_permille,
        brake: record.brake,
        state,
        stop_reason,
        events: record.events,
        filtered_current_ma: i32::from(record.filtered_ma),
        baseline_ma: i32::from(record.baseline_ma),
    };
    Ok((inputs, outputs))
}

/// The firmware's own fault bits in a tick frame (overrun, missing ADC readings, a watchdog
/// reset, a previous fault) are firmware failures, recorded once per trial; a dropped frame is
/// the link's (its sequence gap is reported by the decoder).
pub fn note_board_fault_bits(record: &TickRecord, firmware_faults: &mut Vec<String>) {
    let own = record.faults & !driver_core::telemetry::fault::TELEMETRY_DROPPED;
    if own != 0
        && !firmware_faults
            .iter()
            .any(|f| f.starts_with("board fault bits"))
    {
        firmware_faults.push(format!(
            "board fault bits {own:#06x} from tick {}",
            record.tick
        ));
    }
}

/// A fault record, readable.
pub fn describe_fault(f: &driver_core::telemetry::FaultRecord) -> String {
    format!(
        "{} at PC {:#010x} (LR {:#010x}, xPSR {:#010x}, CFSR {:#010x}, HFSR {:#010x}, tick {}, line {})",
        f.kind.name(),
        f.pc,
        f.lr,
        f.xpsr,
        f.cfsr,
        f.hfsr,
        f.tick,
        f.line
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_io_decodes_every_known_code_and_refuses_unknown_ones() {
        let base = TickRecord {
            tick: 7,
            state: State::Braking as u8,
            stop_reason: StopReason::Stall as u8,
            events: event::MOTOR_OFF | event::FAULT,
            ..TickRecord::default()
        };
        let (_, outputs) = tick_io(&base).expect("a valid record decodes");
        assert_eq!(outputs.state, State::Braking);
        assert_eq!(outputs.stop_reason, Some(StopReason::Stall));
        assert_eq!(outputs.events, event::MOTOR_OFF | event::FAULT);
        // Every state and stop-reason code the core defines, and every event bit, decodes.
        for code in 0..=6u8 {
            let record = TickRecord {
                state: code,
                stop_reason: code,
                events: KNOWN_EVENT_BITS,
                ..base
            };
            let (_, outputs) = tick_io(&record).expect("known codes decode");
            assert_eq!(outputs.state as u8, code);
            assert_eq!(outputs.stop_reason.map_or(0, |r| r as u8), code);
        }
        for (record, what) in [
            (TickRecord { state: 7, ..base }, "unknown state 7"),
            (
                TickRecord {
                    stop_reason: 9,
                    ..base
                },
                "unknown stop reason 9",
            ),
            (
                TickRecord {
                    events: base.events | 1 << 12,
                    ..base
                },
                "unknown event bits 0x1000",
            ),
        ] {
            let error = tick_io(&record).expect_err(what);
            assert!(error.contains(what), "{error}");
            assert!(error.contains("tick 7"), "{error}");
        }
    }
}
