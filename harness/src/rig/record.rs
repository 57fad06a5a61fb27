//! What every rig that steps the plant records per control tick, so that `sim` and `emu`
//! produce traces of the same shape from the same kinds of facts: the plant's ground truth at
//! the end of the tick, and what the firmware measured, commanded and reported for it.

use driver_core::{event, Inputs, Outputs, State};

use crate::plant::Plant;
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
        TickRecorder {
            samples: Samples::default(),
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
        s.depth_mm.push(plant.depth_mm());
        s.speed_rpm.push(plant.output_speed_rpm());
        s.revolutions.push(plant.output_revolutions());
        s.load_torque_nmm.push(plant.load_torque_nmm());
        s.current_a.push(true_current_a);
        s.battery_v.push(plant.terminal_v());
        s.push_n.push(plant.push_n());
        s.trigger.push(trigger);
        s.measured_current_ma.push(inputs.motor_current_ma);
        s.measured_battery_mv.push(inputs.battery_mv);
        s.duty_permille.push(outputs.duty_permille);
        s.brake.push(outputs.brake);
        s.state.push(outputs.state as u8);
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
    pub fn finish(mut self, plant: &Plant) -> (Samples, Vec<TraceEvent>) {
        let truth = plant.ground_truth();
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
