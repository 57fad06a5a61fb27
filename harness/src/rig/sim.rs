//! The `sim` rig: the firmware's control core compiled for the host, stepped in lockstep with
//! the plant model in virtual time. Deterministic: a scenario and a seed give the same trace.

use driver_core::{sensing, Config, Controller, Inputs, TICK_HZ};

use super::record::TickRecorder;
use super::{trial_seed, Rig, RigError, RigIdentity};
use crate::plant::{DriveCommand, Plant, TickPlan, ADC_SAMPLE_PERIOD_S, SIM_STEP_S};
use crate::scenario::Scenario;
use crate::trace::{FirmwareIdentity, Samples, Trace, TRACE_FORMAT_VERSION};

pub use super::record::{FIRMWARE_EVENT_NAMES, SETTLE_AFTER_STOP_S};

/// The simulated rig.
#[derive(Debug, Clone)]
pub struct SimRig {
    /// Controller configuration (the shipped one unless a test weakens it).
    pub config: Config,
    /// Plant integration step, s.
    pub step_s: f64,
    /// Take a control tick in one exact step where the plant's equations allow it
    /// ([`Plant::advance_tick`]); `false` takes every integration step (the reference).
    pub exact_ticks: bool,
    /// The columns of a trace handed back ([`Rig::recycle`]), reused by the next trial.
    spare: Option<Samples>,
}

impl Default for SimRig {
    fn default() -> Self {
        SimRig {
            config: Config::DEFAULT,
            step_s: SIM_STEP_S,
            exact_ticks: true,
            spare: None,
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
                (
                    "tick_step".to_owned(),
                    if self.exact_ticks {
                        "one exact step per tick where linear, else integration steps"
                    } else {
                        "integration steps only"
                    }
                    .to_owned(),
                ),
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
        // The board samples at mid-PWM-period (TIM1 CH4 compare at half the period): at the end
        // of step n/2 of the period when it has an even number n of steps, else in the middle
        // of step (n+1)/2 (one step per period: in its middle).
        let (adc_step, mid_step) = if steps_per_adc.is_multiple_of(2) {
            (steps_per_adc / 2, false)
        } else {
            (steps_per_adc.div_ceil(2) % steps_per_adc, true)
        };
        let plan = TickPlan {
            steps_per_tick,
            steps_per_adc,
            adc_step,
            mid_step,
        };
        let seed = trial_seed(scenario.seed, trial);
        let mut plant = Plant::new(scenario, seed, self.step_s);
        let mut controller = Controller::new(self.config);
        let ticks = (scenario.duration_s * f64::from(TICK_HZ)).round() as u64;
        let mut recorder =
            TickRecorder::with_samples(scenario, self.spare.take().unwrap_or_default());
        let mut command = DriveCommand::default();
        for tick in 1..=ticks {
            let sums = plant.advance_tick(command, &plan, self.exact_ticks);
            // The tick's nominal time (not the sum of steps), so that events scheduled on the
            // millisecond grid fall on the same tick whatever the integration step.
            let t = tick as f64 / f64::from(TICK_HZ);
            let trigger = plant.trigger_pressed_at(t);
            let inputs = Inputs {
                tick: u32::try_from(tick).unwrap_or(u32::MAX),
                // The board's own conversion of the tick's raw ADC sums (bit-identical inputs).
                motor_current_ma: sensing::mean_current_ma(sums.current_counts, sums.samples),
                battery_mv: sensing::mean_battery_mv(sums.voltage_counts, sums.samples),
                trigger_pressed: trigger,
            };
            let outputs = controller.step(&inputs);
            command = DriveCommand {
                duty: f64::from(outputs.duty_permille) / f64::from(driver_core::DUTY_FULL_SCALE),
                brake: outputs.brake,
            };
            recorder.record(t, &plant, sums.mean_current_a, trigger, &inputs, &outputs);
            if recorder.settled(t, &plant) {
                break;
            }
        }
        let truth = plant.ground_truth();
        let (samples, events) = recorder.finish(&plant);
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
            firmware_faults: Vec::new(),
            clock: None,
        })
    }

    fn recycle(&mut self, trace: Trace) {
        self.spare = Some(trace.samples);
    }
}
