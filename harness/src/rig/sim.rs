//! The `sim` rig: the firmware's control core compiled for the host, stepped in lockstep with
//! the plant model in virtual time. Deterministic: a scenario and a seed give the same trace.

use driver_core::{event, sensing, Config, Controller, Inputs, Outputs, State, TICK_HZ};

use super::{trial_seed, Rig, RigError, RigIdentity};
use crate::plant::{DriveCommand, Plant, ADC_SAMPLE_PERIOD_S, DEFAULT_STEP_S};
use crate::scenario::Scenario;
use crate::trace::{
    EventSource, FirmwareIdentity, Samples, Trace, TraceEvent, TRACE_FORMAT_VERSION,
};

/// After the firmware has stopped the motor and the shaft is at rest, the trial runs on this
/// long (to catch an unwanted restart), then ends early, s.
pub const SETTLE_AFTER_STOP_S: f64 = 0.5;

/// The simulated rig.
#[derive(Debug, Clone)]
pub struct SimRig {
    /// Controller configuration (the shipped one unless a test weakens it).
    pub config: Config,
    /// Plant integration step, s.
    pub step_s: f64,
}

impl Default for SimRig {
    fn default() -> Self {
        SimRig {
            config: Config::DEFAULT,
            step_s: DEFAULT_STEP_S,
        }
    }
}

impl SimRig {
    /// A sim rig running `config` instead of the shipped tuning.
    pub fn with_config(config: Config) -> Self {
        SimRig {
            config,
            ..SimRig::default()
        }
    }

    fn firmware(&self) -> FirmwareIdentity {
        FirmwareIdentity {
            kind: "driver-core (host build)".to_owned(),
            version: driver_core::VERSION.to_owned(),
            shipped_config: self.config == Config::DEFAULT,
        }
    }
}

impl Rig for SimRig {
    fn identity(&self) -> RigIdentity {
        RigIdentity {
            kind: "sim".to_owned(),
            id: "sim".to_owned(),
            firmware: self.firmware(),
            details: vec![
                ("integration_step_s".to_owned(), format!("{}", self.step_s)),
                ("control_tick_hz".to_owned(), TICK_HZ.to_string()),
            ],
        }
    }

    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError> {
        let tick_s = 1.0 / f64::from(TICK_HZ);
        let steps_per_tick = (tick_s / self.step_s).round();
        let steps_per_adc = (ADC_SAMPLE_PERIOD_S / self.step_s).round();
        let exact = |n: f64, span: f64| n >= 1.0 && (n * self.step_s - span).abs() < 1e-12;
        if !exact(steps_per_tick, tick_s) || !exact(steps_per_adc, ADC_SAMPLE_PERIOD_S) {
            return Err(RigError {
                rig: "sim".to_owned(),
                scenario: scenario.id.clone(),
                trial,
                message: format!(
                    "integration step {} s does not divide the {} s ADC period",
                    self.step_s, ADC_SAMPLE_PERIOD_S
                ),
            });
        }
        let steps_per_tick = steps_per_tick as u64;
        let steps_per_adc = steps_per_adc as u64;
        let seed = trial_seed(scenario.seed, trial);
        let mut plant = Plant::new(scenario, seed, self.step_s);
        let mut controller = Controller::new(self.config);
        let ticks = (scenario.duration_s * f64::from(TICK_HZ)).round() as u64;
        let last_trigger_change = scenario
            .operator
            .release_s
            .unwrap_or(scenario.operator.press_s)
            .max(scenario.operator.press_s);

        let mut samples = Samples::default();
        let mut events = Vec::new();
        let mut command = DriveCommand::default();
        let mut previous_state = controller.state();
        let mut motor_off_at: Option<f64> = None;
        for tick in 1..=ticks {
            let mut current_sum = 0u32;
            let mut voltage_sum = 0u32;
            let mut adc_samples = 0u32;
            let mut true_current_sum = 0.0;
            for step in 1..=steps_per_tick {
                plant.step(command);
                true_current_sum += plant.current_a();
                if step % steps_per_adc == 0 {
                    current_sum += u32::from(plant.sample_current_counts());
                    voltage_sum += u32::from(plant.sample_voltage_counts());
                    adc_samples += 1;
                }
            }
            // The tick's nominal time (not the sum of steps), so that events scheduled on the
            // millisecond grid fall on the same tick whatever the integration step.
            let t = tick as f64 / f64::from(TICK_HZ);
            let trigger = plant.trigger_pressed_at(t);
            let inputs = Inputs {
                tick: u32::try_from(tick).unwrap_or(u32::MAX),
                // The board's own conversion of the tick's raw ADC sums (bit-identical inputs).
                motor_current_ma: sensing::mean_current_ma(current_sum, adc_samples),
                battery_mv: sensing::mean_battery_mv(voltage_sum, adc_samples),
                trigger_pressed: trigger,
            };
            let outputs = controller.step(&inputs);
            command = DriveCommand {
                duty: f64::from(outputs.duty_permille) / f64::from(driver_core::DUTY_FULL_SCALE),
                brake: outputs.brake,
            };
            record_firmware_events(&mut events, t, &outputs, previous_state);
            previous_state = outputs.state;
            if outputs.events & event::MOTOR_OFF != 0 {
                motor_off_at = Some(t);
            }
            if outputs.events & event::STARTED != 0 {
                motor_off_at = None;
            }
            samples.t_s.push(t);
            samples.depth_mm.push(plant.depth_mm());
            samples.speed_rpm.push(plant.output_speed_rpm());
            samples.revolutions.push(plant.output_revolutions());
            samples.load_torque_nmm.push(plant.load_torque_nmm());
            samples
                .current_a
                .push(true_current_sum / steps_per_tick as f64);
            samples.battery_v.push(plant.terminal_v());
            samples.push_n.push(plant.push_n());
            samples.trigger.push(trigger);
            samples.measured_current_ma.push(inputs.motor_current_ma);
            samples.measured_battery_mv.push(inputs.battery_mv);
            samples.duty_permille.push(outputs.duty_permille);
            samples.brake.push(outputs.brake);
            samples.state.push(outputs.state as u8);

            let at_rest = plant.output_speed_rpm() == 0.0;
            let settled = motor_off_at.is_some_and(|off| t - off >= SETTLE_AFTER_STOP_S);
            if at_rest && settled && t > last_trigger_change + SETTLE_AFTER_STOP_S {
                break;
            }
        }
        let truth = plant.ground_truth();
        for (kind, time) in [
            ("cortex_contact", truth.cortex_contact_s),
            ("t_bt", truth.t_bt_s),
            ("far_cortex_contact", truth.far_contact_s),
        ] {
            if let Some(t_s) = time {
                events.push(TraceEvent {
                    t_s,
                    source: EventSource::Plant,
                    kind: kind.to_owned(),
                    detail: None,
                });
            }
        }
        events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        Ok(Trace {
            format_version: TRACE_FORMAT_VERSION,
            scenario_id: scenario.id.clone(),
            trial,
            seed,
            rig: "sim".to_owned(),
            firmware: self.firmware(),
            sample_period_s: tick_s,
            integration_step_s: Some(self.step_s),
            samples,
            events,
            truth,
            anomalies: Vec::new(),
        })
    }
}

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

fn record_firmware_events(
    events: &mut Vec<TraceEvent>,
    t_s: f64,
    outputs: &Outputs,
    previous: State,
) {
    for (bit, name) in FIRMWARE_EVENT_NAMES {
        if outputs.events & bit != 0 {
            let detail = match *bit {
                event::MOTOR_OFF | event::FAULT => outputs.stop_reason.map(|r| r.name().to_owned()),
                _ => None,
            };
            events.push(TraceEvent {
                t_s,
                source: EventSource::Firmware,
                kind: (*name).to_owned(),
                detail,
            });
        }
    }
    if outputs.state != previous {
        events.push(TraceEvent {
            t_s,
            source: EventSource::Firmware,
            kind: "state".to_owned(),
            detail: Some(outputs.state.name().to_owned()),
        });
    }
}
