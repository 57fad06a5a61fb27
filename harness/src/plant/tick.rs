//! One control tick of the sim rig at a time: the plant's integration steps over the tick and
//! the ADC samples the board takes within it.
//!
//! Where the equations stay linear over the whole tick, the tick is one exact step: the drive
//! is constant (full duty; the shipped core commands 0 or 100 %), the shaft keeps turning
//! (speed above zero at every integration-step end, as the fine step checks), no layer boundary
//! or cap fracture lies within the tick's advance, the rotor is not locked and the operator's
//! push has no kink in it (a step's start or end, the relaxation after the pop). The winding
//! current and speed at every integration-step end and at every ADC instant then come from the
//! same closed-form solution the fine step uses (`x(t) = x_ss + phi(t) (x(0) - x_ss)`), with the
//! matrices for all those instants computed once per trial; the needle load is evaluated at the
//! tick's midpoint (push at mid-tick, layer at the predicted mid-tick depth: second order, where
//! the fine step freezes it at each step's start, first order). A needle at rest with the
//! bridge off and no current is the other exact case: nothing moves, only the ADC samples (and
//! their noise) are drawn. Everything else (starting from rest, braking, coasting, PWM below
//! 100 %, a locked rotor, a boundary or a push kink within the tick) runs the fine step
//! unchanged. The ADC noise is drawn from the same stream in the same order either way.

use std::f64::consts::PI;

use super::{
    current_counts, quantize, sensor_noises, sensor_reading, DriveCommand, Plant, Region,
    CURRENT_ADC_FULL_SCALE_A, RELAX_RAMP_S, VOLTAGE_ADC_FULL_SCALE_V,
};

/// When the board samples within a control tick, in units of the plant's integration step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickPlan {
    /// Integration steps per control tick.
    pub steps_per_tick: u64,
    /// Integration steps per ADC period (one sample per period).
    pub steps_per_adc: u64,
    /// The step of each period at whose end (or in whose middle) the sample is taken:
    /// `step % steps_per_adc == adc_step`.
    pub adc_step: u64,
    /// The sample is taken in the middle of that step, not at its end.
    pub mid_step: bool,
}

impl TickPlan {
    /// For each integration step of the tick in order, whether a sample is taken in it (at
    /// its end or in its middle): `step % steps_per_adc == adc_step`, without a division.
    fn adc_steps(&self) -> impl Iterator<Item = bool> + '_ {
        let mut phase = 0;
        (0..self.steps_per_tick).map(move |_| {
            phase += 1;
            if phase == self.steps_per_adc {
                phase = 0;
            }
            phase == self.adc_step
        })
    }

    /// Sample instants within the tick, in integration steps from its start.
    fn adc_instants(&self) -> impl Iterator<Item = f64> + '_ {
        let offset = if self.mid_step { 0.5 } else { 0.0 };
        (1..=self.steps_per_tick)
            .zip(self.adc_steps())
            .filter(|&(_, sampled)| sampled)
            .map(move |(step, _)| step as f64 - offset)
    }
}

/// What one control tick gave the board's ADC, and the winding current's true mean over it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TickSums {
    /// Sum of the tick's raw current samples, counts.
    pub current_counts: u32,
    /// Sum of the tick's raw battery-voltage samples, counts.
    pub voltage_counts: u32,
    /// Number of samples.
    pub samples: u32,
    /// Mean of the winding current over the integration-step ends of the tick, A.
    pub mean_current_a: f64,
    /// The tick was taken as one exact step (not step by step).
    pub exact: bool,
}

/// The bridge states the exact tick step covers; the index of their matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DriveMode {
    /// Full duty: the battery drives the winding.
    Full = 0,
    /// The winding shorted.
    Brake = 1,
}

/// ADC samples in one control tick (a 1 ms tick, one sample per 50 us PWM period). A plan
/// with another count runs the fine step.
const ADC_SAMPLES_PER_TICK: usize = 20;

/// The transitions of one whole tick at full drive, for one plan and loop resistance, laid out
/// by row so that the per-instant loops vectorise. `x(t) - x_ss = phi(t) (x(0) - x_ss)`; the
/// `_i` and `_w` arrays hold the coefficients of the current and the speed deviation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TickMatrices {
    plan: TickPlan,
    resistance: f64,
    /// The speed row of `phi(k h)` at every integration-step end, k = 1..=n.
    end_speed_i: Vec<f64>,
    end_speed_w: Vec<f64>,
    /// `phi` at the tick's end.
    end: [[f64; 2]; 2],
    /// The current row of the sum of `phi(k h)` over the step ends (the tick-mean current).
    mean_current: [f64; 2],
    /// The current row of `phi` at every ADC instant.
    adc_current_i: [f64; ADC_SAMPLES_PER_TICK],
    adc_current_w: [f64; ADC_SAMPLES_PER_TICK],
    /// `psi` over the tick (the angle turned).
    psi: [[f64; 2]; 2],
    /// Reciprocals, so that the per-tick solution is multiplications: `1 / k_t`; output
    /// torque in N*mm to motor-side N*m; motor radians to output revolutions.
    per_k_t: f64,
    motor_nm_per_output_nmm: f64,
    output_rev_per_motor_rad: f64,
}

impl Plant {
    /// Advances one control tick under `command`, sampling the ADC as `plan` says. With
    /// `exact` the tick is one exact step where the equations allow (module docs), else every
    /// integration step is taken one by one.
    pub fn advance_tick(
        &mut self,
        command: DriveCommand,
        plan: &TickPlan,
        exact: bool,
    ) -> TickSums {
        let depth_before = self.depth_mm;
        let exact_sums = if exact {
            self.driven_tick(command, plan)
                .or_else(|| self.resting_tick(command, plan))
        } else {
            None
        };
        let sums = exact_sums.unwrap_or_else(|| self.fine_tick(command, plan));
        self.tick_advance_mm = self.depth_mm - depth_before;
        sums
    }

    /// Every integration step of the tick, one by one.
    fn fine_tick(&mut self, command: DriveCommand, plan: &TickPlan) -> TickSums {
        let mut sums = TickSums::default();
        let mut current_sum = 0.0;
        for adc_step in plan.adc_steps() {
            self.step(command);
            current_sum += self.current_a;
            if adc_step {
                let (current, voltage) = if plan.mid_step {
                    (
                        self.sample_current_counts_mid_step(),
                        self.sample_voltage_counts_mid_step(),
                    )
                } else {
                    (self.sample_current_counts(), self.sample_voltage_counts())
                };
                sums.current_counts += u32::from(current);
                sums.voltage_counts += u32::from(voltage);
                sums.samples += 1;
            }
        }
        sums.mean_current_a = current_sum / plan.steps_per_tick as f64;
        sums
    }

    /// Whether the operator's push has a kink (a step's start or end, the relaxation's start
    /// or end) in `(from, to]`.
    fn push_kink_within(&self, from: f64, to: f64) -> bool {
        let within = |t: f64| from < t && t <= to;
        let steps = self
            .operator
            .steps
            .iter()
            .any(|s| within(s.at_s) || within(s.at_s + s.rise_s));
        let relax = self.t_bt_s.is_some_and(|t_bt| {
            let start = t_bt + self.operator.reaction_s;
            within(start) || within(start + RELAX_RAMP_S)
        });
        steps || relax
    }

    /// The tick as one exact step at full drive or braking with the shaft turning throughout,
    /// or `None` where that would not be exact (nothing is changed then).
    fn driven_tick(&mut self, command: DriveCommand, plan: &TickPlan) -> Option<TickSums> {
        let mode = if command.brake {
            DriveMode::Brake
        } else if command.duty >= 1.0 {
            DriveMode::Full
        } else {
            return None;
        };
        if self.motor_speed_rad_s <= 0.0 {
            return None;
        }
        let d = self.drive;
        let n = plan.steps_per_tick;
        let h = self.step_s;
        let span = n as f64 * h;
        let t0 = self.time_s;
        if self.lock_rotor_at_s.is_some_and(|t| t < t0 + span)
            || self.push_kink_within(t0, t0 + span)
        {
            return None;
        }
        let open_circuit_v = self.battery.open_circuit_v;
        let battery_ohm = self.battery.internal_resistance_ohm;
        let loop_ohm = self.winding_ohm + d.bridge_ohm;
        // Source voltage, loop resistance, and the share of the winding current the battery
        // carries (the fine step's bridge at duty 1, or shorted).
        let (source_v, resistance, battery_share) = match mode {
            DriveMode::Full => (open_circuit_v, loop_ohm + battery_ohm, 1.0),
            DriveMode::Brake => (0.0, loop_ohm, 0.0),
        };
        let slot = mode as usize;
        if self.tick_matrices[slot]
            .as_ref()
            .is_none_or(|m| m.plan != *plan || m.resistance != resistance)
        {
            self.tick_matrices[slot] = self.tick_matrices_for(plan, resistance);
        }
        let m = self.tick_matrices[slot].as_ref()?;
        let push = self.push_at(self.time_s + 0.5 * span);
        let friction_motor_side = d.k_t * d.no_load_current_a;
        let (i0, w0) = (self.current_a, self.motor_speed_rad_s);
        // The tick for a load frozen at `depth`: feed, cutting torque, the steady state and the
        // output revolutions turned.
        let solve = |depth: f64| {
            let (feed, cutting) = self.needle_load(push, depth);
            let resisting = friction_motor_side + cutting * m.motor_nm_per_output_nmm;
            let i_ss = resisting * m.per_k_t;
            let w_ss = (source_v - resistance * i_ss) * m.per_k_t;
            let turned = w_ss * span + m.psi[1][0] * (i0 - i_ss) + m.psi[1][1] * (w0 - w_ss);
            let revs = turned * m.output_rev_per_motor_rad;
            (feed, cutting, i_ss, w_ss, revs)
        };
        // The load at the mid-tick depth, predicted from the last tick's advance (the advance
        // changes over tens of ticks, so the prediction's error is of second order).
        let (feed, cutting, i_ss, w_ss, revs) = solve(self.depth_mm + 0.5 * self.tick_advance_mm);
        let (yi, yw) = (i0 - i_ss, w0 - w_ss);
        // The shaft keeps turning at every step end (the fine step's no-reverse check). The
        // speed deviation is a sum of two exponentials, so it has at most one extremum; its
        // slope is k (i - i_ss) / J. The same sign of the current deviation at both ends means
        // no extremum within the tick: the speed is monotonic and the ends decide.
        let end = &m.end;
        let (yi_end, yw_end) = (
            end[0][0] * yi + end[0][1] * yw,
            end[1][0] * yi + end[1][1] * yw,
        );
        let monotonic = (yi >= 0.0) == (yi_end >= 0.0);
        let turning = if monotonic {
            w0 > 0.0 && w_ss + yw_end > 0.0
        } else {
            (m.end_speed_i.iter().zip(&m.end_speed_w))
                .all(|(pi, pw)| w_ss + pi * yi + pw * yw > 0.0)
        };
        if revs <= 0.0 || !turning {
            return None;
        }
        let advance = feed * revs;
        let depth_before = self.depth_mm;
        let boundaries = self.boundaries_mm();
        // No boundary within the tick's advance, nor before the depth the load was taken at.
        let reach = advance.max(0.5 * self.tick_advance_mm);
        if boundaries
            .iter()
            .any(|&b| depth_before < b && b <= depth_before + reach)
        {
            return None;
        }

        // Exact: commit the tick. Each ADC sample has its own noise draw, in sample order.
        let (current, speed) = (i_ss + yi_end, w_ss + yw_end);
        let mut noise = [0.0; ADC_SAMPLES_PER_TICK];
        sensor_noises(&self.sensor, &mut self.rng, &mut noise);
        let sample_current = |k: usize| i_ss + m.adc_current_i[k] * yi + m.adc_current_w[k] * yw;
        // Twenty 12-bit samples cannot overflow a u32: wrapping adds, so that the loop
        // vectorises under the release profile's overflow checks.
        let (mut current_counts, mut voltage_counts) = (0u32, 0u32);
        for (k, noise) in noise.iter().enumerate() {
            let i = sample_current(k);
            let reading = sensor_reading(&self.sensor, i, *noise);
            let counts = u32::from(quantize(reading, CURRENT_ADC_FULL_SCALE_A));
            current_counts = current_counts.wrapping_add(counts);
            let terminal_v = open_circuit_v - battery_ohm * battery_share * i;
            let counts = u32::from(quantize(terminal_v, VOLTAGE_ADC_FULL_SCALE_V));
            voltage_counts = voltage_counts.wrapping_add(counts);
        }
        let sums = TickSums {
            current_counts,
            voltage_counts,
            samples: ADC_SAMPLES_PER_TICK as u32,
            mean_current_a: i_ss + (m.mean_current[0] * yi + m.mean_current[1] * yw) / n as f64,
            exact: true,
        };
        let sample_current = sample_current(ADC_SAMPLES_PER_TICK - 1);
        self.current_a = current;
        self.mid_current_a = sample_current;
        self.mid_terminal_v = open_circuit_v - battery_ohm * battery_share * sample_current;
        self.motor_speed_rad_s = speed;
        self.terminal_v = open_circuit_v - battery_ohm * battery_share * current;
        self.load_torque_nmm = cutting;
        self.depth_mm = depth_before + advance;
        self.output_revolutions += revs;
        self.steps += n;
        self.time_s = self.steps as f64 * h;
        // The push the fine step would have left: at the middle of the tick's last step.
        self.push_n = self.push_at(self.time_s - 0.5 * h);
        Some(sums)
    }

    /// The tick at rest (shaft still; bridge off with no current, or braking with a current
    /// too weak to turn it, decaying as the fine step's held rotor), or `None` where something
    /// could move. Only the current (first order, the fine step's own recurrence) and the ADC
    /// samples change.
    fn resting_tick(&mut self, command: DriveCommand, plan: &TickPlan) -> Option<TickSums> {
        if self.motor_speed_rad_s != 0.0 || command.duty > 0.0 {
            return None;
        }
        // An intact cortex under a standing needle could still be punched through.
        if !self.cap_fractured && self.region() == Region::Cortex {
            return None;
        }
        let d = self.drive;
        let (decay, decay_half) = if command.brake {
            // Static friction holds the shaft whatever the needle adds.
            if self.current_a > d.no_load_current_a {
                return None;
            }
            let m = self.step_matrices(self.winding_ohm + d.bridge_ohm);
            (m.decay, m.decay_half)
        } else if self.current_a == 0.0 {
            (0.0, 0.0)
        } else {
            return None;
        };
        let open_circuit_v = self.battery.open_circuit_v;
        let voltage = u32::from(quantize(open_circuit_v, VOLTAGE_ADC_FULL_SCALE_V));
        let mut sums = TickSums {
            exact: true,
            ..TickSums::default()
        };
        let (mut current, mut sample, mut current_sum) = (self.current_a, self.current_a, 0.0);
        for adc_step in plan.adc_steps() {
            let before = current;
            current *= decay;
            current_sum += current;
            if adc_step {
                sample = if plan.mid_step {
                    before * decay_half
                } else {
                    current
                };
                sums.current_counts +=
                    u32::from(current_counts(&self.sensor, &mut self.rng, sample));
                sums.voltage_counts += voltage;
                sums.samples += 1;
            }
        }
        sums.mean_current_a = current_sum / plan.steps_per_tick as f64;
        self.current_a = current;
        self.mid_current_a = sample;
        self.mid_terminal_v = open_circuit_v;
        self.terminal_v = open_circuit_v;
        self.load_torque_nmm = 0.0;
        self.steps += plan.steps_per_tick;
        self.time_s = self.steps as f64 * self.step_s;
        self.push_n = self.push_at(self.time_s - 0.5 * self.step_s);
        Some(sums)
    }

    /// The matrices for `plan` at loop resistance `resistance`; `None` for a plan whose
    /// ADC sample count is not [`ADC_SAMPLES_PER_TICK`].
    fn tick_matrices_for(&self, plan: &TickPlan, resistance: f64) -> Option<TickMatrices> {
        let (d, h) = (self.drive, self.step_s);
        let mut adc_current_i = [0.0; ADC_SAMPLES_PER_TICK];
        let mut adc_current_w = [0.0; ADC_SAMPLES_PER_TICK];
        let mut instants = plan.adc_instants();
        for (ci, cw) in adc_current_i.iter_mut().zip(&mut adc_current_w) {
            let phi = self.transition(resistance, instants.next()? * h);
            (*ci, *cw) = (phi[0][0], phi[0][1]);
        }
        if instants.next().is_some() || plan.steps_per_tick == 0 {
            return None;
        }
        let ends: Vec<_> = (1..=plan.steps_per_tick)
            .map(|k| self.transition(resistance, k as f64 * h))
            .collect();
        let end = *ends.last()?;
        Some(TickMatrices {
            plan: *plan,
            resistance,
            end_speed_i: ends.iter().map(|p| p[1][0]).collect(),
            end_speed_w: ends.iter().map(|p| p[1][1]).collect(),
            end,
            mean_current: [
                ends.iter().map(|p| p[0][0]).sum(),
                ends.iter().map(|p| p[0][1]).sum(),
            ],
            adc_current_i,
            adc_current_w,
            psi: self.deviation_integral(resistance, end),
            per_k_t: 1.0 / d.k_t,
            motor_nm_per_output_nmm: 1.0 / (1000.0 * d.gear_ratio * d.gear_efficiency),
            output_rev_per_motor_rad: 1.0 / (d.gear_ratio * 2.0 * PI),
        })
    }
}
