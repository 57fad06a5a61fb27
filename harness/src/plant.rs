//! The physical plant: battery, H-bridge, brushed motor, gearbox, needle in a layered bone,
//! the operator's push, and the current/voltage sensors the firmware reads.
//!
//! This module owns the physics and the ground truth (depth, shaft speed, load torque, the
//! cap-fracture instant `t_bt`, far-cortex contact). It knows nothing of the firmware: the sim
//! rig feeds it a PWM duty and brake command and reads sensor values back. All numbers are the
//! reference values of DESIGN.md ("Plant model").
//!
//! Numerical method: fixed step [`DEFAULT_STEP_S`]. The winding current uses the exact
//! solution of `L di/dt = V - R i - k_e w` over one step with the speed frozen, so the 67 us
//! electrical time constant never limits the step; the shaft speed and the needle advance use
//! explicit Euler, which is accurate for the 9 ms mechanical time constant at this step. The PWM
//! is averaged (20 kHz is 1000 times faster than the mechanics and the ADC samples in step with
//! it, so it reads the average). The step was chosen by the convergence test in
//! `harness/tests/sim_rig.rs`: halving it moves `t_bt`, the stop time and the overshoot by less
//! than 0.1 ms / 0.01 mm.

use std::f64::consts::PI;

use crate::scenario::{Bone, Layer, Ramp, Scenario};

/// Default integration step, s.
pub const DEFAULT_STEP_S: f64 = 5e-6;
/// Interval between current ADC samples, s (20 kHz PWM, one sample per period).
pub const ADC_SAMPLE_PERIOD_S: f64 = 50e-6;

/// Motor, drive and gearbox constants (DESIGN.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveParams {
    /// Winding resistance at 20 degC, ohm.
    pub winding_ohm_20c: f64,
    /// Winding resistance temperature coefficient, 1/K.
    pub winding_tempco_per_k: f64,
    /// Winding inductance, H.
    pub inductance_h: f64,
    /// Torque and back-EMF constant, N*m/A = V*s/rad.
    pub k_t: f64,
    /// No-load current, A (sets the motor's Coulomb friction).
    pub no_load_current_a: f64,
    /// Rotor inertia, kg*m^2.
    pub rotor_inertia: f64,
    /// Output-side inertia (chuck and needle), kg*m^2.
    pub output_inertia: f64,
    /// Gear ratio (motor turns per output turn).
    pub gear_ratio: f64,
    /// Gearbox efficiency.
    pub gear_efficiency: f64,
    /// H-bridge on-resistance in the loop, ohm.
    pub bridge_ohm: f64,
    /// Diode drop pair while coasting, V.
    pub coast_diode_v: f64,
}

/// The reference drive of DESIGN.md.
pub const REFERENCE_DRIVE: DriveParams = DriveParams {
    winding_ohm_20c: 0.60,
    winding_tempco_per_k: 0.0039,
    inductance_h: 40e-6,
    k_t: 8.0e-3,
    no_load_current_a: 0.15,
    rotor_inertia: 6.0e-7,
    output_inertia: 2.0e-6,
    gear_ratio: 6.0,
    gear_efficiency: 0.80,
    bridge_ohm: 0.03,
    coast_diode_v: 1.4,
};

/// Shaft friction per mm of cortical wall passed, N*mm/mm.
pub const CORTICAL_WALL_FRICTION_NMM_PER_MM: f64 = 0.8;
/// Shaft friction per mm of soft tissue passed, N*mm/mm.
pub const SOFT_TISSUE_FRICTION_NMM_PER_MM: f64 = 0.05;
/// Time over which the push relaxes after the operator's reaction, s.
pub const RELAX_RAMP_S: f64 = 0.1;

/// Current-sense ADC: 12 bits over 16.5 A (10 mOhm shunt, gain 20, 3.3 V reference); the
/// board's scaling, defined once in `driver_core::sensing`.
pub const CURRENT_ADC_FULL_SCALE_A: f64 =
    driver_core::sensing::CURRENT_FULL_SCALE_MA as f64 / 1000.0;
/// Battery-sense ADC: 12 bits over 9.9 V (divider 1:3, 3.3 V reference).
pub const VOLTAGE_ADC_FULL_SCALE_V: f64 =
    driver_core::sensing::VOLTAGE_FULL_SCALE_MV as f64 / 1000.0;
const ADC_COUNTS: f64 = (1u32 << driver_core::sensing::ADC_BITS) as f64;

/// Which part of the bone the tip is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Region {
    /// Soft tissue.
    SoftTissue,
    /// Near cortex (intact).
    Cortex,
    /// Medullary cavity.
    Medullary,
    /// Far cortex.
    FarCortex,
    /// Past the far cortex.
    Beyond,
}

/// Deterministic random source: SplitMix64 with Box-Muller normals. Owned here so that a
/// seed gives the same stream on every platform and crate version.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    spare_normal: Option<f64>,
}

impl Rng {
    /// A stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng {
            state: seed ^ 0x6a09_e667_f3bc_c909,
            spare_normal: None,
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(value) = self.spare_normal.take() {
            return value;
        }
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        let radius = (-2.0 * u1.ln()).sqrt();
        self.spare_normal = Some(radius * (2.0 * PI * u2).sin());
        radius * (2.0 * PI * u2).cos()
    }
}

/// Commands from the motor driver stage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DriveCommand {
    /// PWM duty, 0..=1.
    pub duty: f64,
    /// Winding shorted.
    pub brake: bool,
}

/// The plant state and its ground-truth records.
#[derive(Debug, Clone)]
pub struct Plant {
    drive: DriveParams,
    bone: Bone,
    operator: crate::scenario::Operator,
    battery: crate::scenario::Battery,
    sensor: crate::scenario::Sensor,
    lock_rotor_at_s: Option<f64>,
    winding_ohm: f64,
    inertia_motor_side: f64,
    oscillation_phase_rad: f64,
    step_s: f64,
    rng: Rng,
    /// Integration steps taken; time is derived from it so that it does not drift.
    steps: u64,
    /// Simulated time, s.
    time_s: f64,
    current_a: f64,
    motor_speed_rad_s: f64,
    depth_mm: f64,
    output_revolutions: f64,
    load_torque_nmm: f64,
    terminal_v: f64,
    push_n: f64,
    cap_fractured: bool,
    t_bt_s: Option<f64>,
    cortex_contact_s: Option<f64>,
    far_contact_s: Option<f64>,
    far_contact_rotating: bool,
}

/// Ground truth events and constants of one trial.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct GroundTruth {
    /// Instant the near-cortex cap fractured, s.
    pub t_bt_s: Option<f64>,
    /// Instant the tip first touched the near cortex, s.
    pub cortex_contact_s: Option<f64>,
    /// Instant the tip first touched the far cortex, s.
    pub far_contact_s: Option<f64>,
    /// Whether the shaft was rotating at far-cortex contact.
    pub far_contact_rotating: bool,
    /// Depth of the inner surface of the near cortex, mm.
    pub inner_surface_mm: f64,
    /// Depth of the far cortex, mm.
    pub far_cortex_mm: f64,
    /// No-load output speed at the scenario's battery voltage, rpm.
    pub no_load_speed_rpm: f64,
    /// Stall current at the scenario's battery and temperature, A.
    pub stall_current_a: f64,
}

impl Plant {
    /// A plant at rest, the needle tip on the skin, for one trial of `scenario`.
    pub fn new(scenario: &Scenario, trial_seed: u64, step_s: f64) -> Self {
        let drive = REFERENCE_DRIVE;
        let mut rng = Rng::new(trial_seed);
        // A trial draws the push oscillation phase unless the scenario fixes it.
        let oscillation_phase_rad = match scenario.operator.oscillation {
            Some(osc) => osc.phase_rad.unwrap_or_else(|| 2.0 * PI * rng.uniform()),
            None => 0.0,
        };
        let winding_ohm = drive.winding_ohm_20c
            * (1.0 + drive.winding_tempco_per_k * (scenario.motor_temperature_c - 20.0));
        Plant {
            drive,
            bone: scenario.bone.clone(),
            operator: scenario.operator.clone(),
            battery: scenario.battery,
            sensor: scenario.sensor,
            lock_rotor_at_s: scenario.lock_rotor_at_s,
            winding_ohm,
            inertia_motor_side: drive.rotor_inertia
                + drive.output_inertia / (drive.gear_ratio * drive.gear_ratio),
            oscillation_phase_rad,
            step_s,
            rng,
            steps: 0,
            time_s: 0.0,
            current_a: 0.0,
            motor_speed_rad_s: 0.0,
            depth_mm: 0.0,
            output_revolutions: 0.0,
            load_torque_nmm: 0.0,
            terminal_v: scenario.battery.open_circuit_v,
            push_n: 0.0,
            cap_fractured: false,
            t_bt_s: None,
            cortex_contact_s: None,
            far_contact_s: None,
            far_contact_rotating: false,
        }
    }

    /// Integration step, s.
    pub fn step_s(&self) -> f64 {
        self.step_s
    }

    /// Simulated time, s.
    pub fn time_s(&self) -> f64 {
        self.time_s
    }

    /// Winding current, A.
    pub fn current_a(&self) -> f64 {
        self.current_a
    }

    /// Output shaft speed, rpm.
    pub fn output_speed_rpm(&self) -> f64 {
        self.motor_speed_rad_s / self.drive.gear_ratio * 60.0 / (2.0 * PI)
    }

    /// Needle tip depth from the skin, mm.
    pub fn depth_mm(&self) -> f64 {
        self.depth_mm
    }

    /// Output revolutions turned since the start.
    pub fn output_revolutions(&self) -> f64 {
        self.output_revolutions
    }

    /// Torque the needle load exerts on the output shaft, N*mm.
    pub fn load_torque_nmm(&self) -> f64 {
        self.load_torque_nmm
    }

    /// Battery terminal voltage, V.
    pub fn terminal_v(&self) -> f64 {
        self.terminal_v
    }

    /// Operator push force, N.
    pub fn push_n(&self) -> f64 {
        self.push_n
    }

    /// Whether the trigger is held at time `t_s`.
    pub fn trigger_pressed_at(&self, t_s: f64) -> bool {
        t_s >= self.operator.press_s && self.operator.release_s.is_none_or(|release| t_s < release)
    }

    /// Region the tip is in.
    pub fn region(&self) -> Region {
        let bone = &self.bone;
        let inner = self.inner_surface_mm();
        let far = inner + bone.medullary.thickness_mm;
        let d = self.depth_mm;
        if d < bone.soft_tissue.thickness_mm {
            Region::SoftTissue
        } else if d < inner - if self.cap_fractured { bone.cap_mm } else { 0.0 } {
            Region::Cortex
        } else if d < far {
            Region::Medullary
        } else if d < far + bone.far_cortex.thickness_mm {
            Region::FarCortex
        } else {
            Region::Beyond
        }
    }

    fn inner_surface_mm(&self) -> f64 {
        self.bone.soft_tissue.thickness_mm + self.bone.cortex.thickness_mm
    }

    /// Ground truth so far.
    pub fn ground_truth(&self) -> GroundTruth {
        let inner = self.inner_surface_mm();
        let no_load_motor_rad_s = (self.battery.open_circuit_v
            - (self.winding_ohm + self.drive.bridge_ohm + self.battery.internal_resistance_ohm)
                * self.drive.no_load_current_a)
            / self.drive.k_t;
        GroundTruth {
            t_bt_s: self.t_bt_s,
            cortex_contact_s: self.cortex_contact_s,
            far_contact_s: self.far_contact_s,
            far_contact_rotating: self.far_contact_rotating,
            inner_surface_mm: inner,
            far_cortex_mm: inner + self.bone.medullary.thickness_mm,
            no_load_speed_rpm: no_load_motor_rad_s / self.drive.gear_ratio * 60.0 / (2.0 * PI),
            stall_current_a: self.battery.open_circuit_v
                / (self.winding_ohm + self.drive.bridge_ohm + self.battery.internal_resistance_ohm),
        }
    }

    /// Operator push force at time `t`, N.
    fn push_at(&self, t: f64) -> f64 {
        let op = &self.operator;
        let mut factor = 1.0;
        if let Some(osc) = op.oscillation {
            factor += osc.amplitude_fraction
                * (2.0 * PI * osc.frequency_hz * t + self.oscillation_phase_rad).sin();
        }
        for step in &op.steps {
            if t > step.at_s {
                factor += step.change_fraction * ((t - step.at_s) / step.rise_s).min(1.0);
            }
        }
        let mut push = op.push_n * factor;
        // After the pop the operator keeps pushing for the reaction time, then relaxes.
        if let Some(t_bt) = self.t_bt_s {
            let relax_start = t_bt + op.reaction_s;
            if t > relax_start {
                let x = ((t - relax_start) / RELAX_RAMP_S).min(1.0);
                let relaxed = op.push_n * op.relaxed_fraction;
                push = push + (relaxed - push) * x;
            }
        }
        push.max(0.0)
    }

    /// Layer parameters at the current depth (ramp applied).
    fn layer_here(&self) -> Layer {
        let bone = &self.bone;
        match self.region() {
            Region::SoftTissue => bone.soft_tissue,
            Region::Medullary => bone.medullary,
            Region::FarCortex | Region::Beyond => bone.far_cortex,
            Region::Cortex => {
                let inner = self.inner_surface_mm();
                let ramp_len = bone.ramp_mm.min(bone.cortex.thickness_mm);
                let ramp_start = inner - ramp_len;
                if ramp_len <= 0.0 || self.depth_mm < ramp_start {
                    return bone.cortex;
                }
                let x = ((self.depth_mm - ramp_start) / ramp_len).clamp(0.0, 1.0);
                let target = match bone.ramp_to {
                    Ramp::Fraction(f) => scale_layer(&bone.cortex, f),
                    Ramp::Medullary => bone.medullary,
                };
                lerp_layer(&bone.cortex, &target, x)
            }
        }
    }

    /// Shaft friction from the walls already passed, N*mm.
    fn wall_friction_nmm(&self) -> f64 {
        let bone = &self.bone;
        let soft = self.depth_mm.clamp(0.0, bone.soft_tissue.thickness_mm);
        let near =
            (self.depth_mm - bone.soft_tissue.thickness_mm).clamp(0.0, bone.cortex.thickness_mm);
        let far_start = self.inner_surface_mm() + bone.medullary.thickness_mm;
        let far = (self.depth_mm - far_start).clamp(0.0, bone.far_cortex.thickness_mm);
        SOFT_TISSUE_FRICTION_NMM_PER_MM * soft + CORTICAL_WALL_FRICTION_NMM_PER_MM * (near + far)
    }

    /// Advances one integration step under `command`.
    pub fn step(&mut self, command: DriveCommand) {
        let dt = self.step_s;
        let d = self.drive;
        let t_next = (self.steps + 1) as f64 * dt;
        self.push_n = self.push_at(self.time_s);

        // Electrical: exact first-order update with the speed frozen over the step.
        let loop_ohm = self.winding_ohm + d.bridge_ohm;
        let back_emf = d.k_t * self.motor_speed_rad_s;
        let duty = command.duty.clamp(0.0, 1.0);
        let battery_ohm = self.battery.internal_resistance_ohm;
        let (source_v, resistance) = if command.brake {
            (0.0, loop_ohm)
        } else if duty > 0.0 {
            (
                duty * self.battery.open_circuit_v,
                loop_ohm + duty * duty * battery_ohm,
            )
        } else if self.current_a > 0.0 {
            // Bridge off: the current freewheels into the supply through the diodes.
            (-(self.battery.open_circuit_v + d.coast_diode_v), loop_ohm)
        } else {
            (0.0, f64::INFINITY)
        };
        let coasting = !command.brake && duty <= 0.0;
        if resistance.is_finite() {
            let steady = (source_v - back_emf) / resistance;
            let decay = (-dt * resistance / d.inductance_h).exp();
            let next = steady + (self.current_a - steady) * decay;
            self.current_a = if coasting && next < 0.0 { 0.0 } else { next };
        } else {
            self.current_a = 0.0;
        }
        let battery_current = if command.brake {
            0.0
        } else {
            duty * self.current_a
        };
        self.terminal_v = self.battery.open_circuit_v - battery_ohm * battery_current;

        // Needle load at the output shaft.
        let layer = self.layer_here();
        let feed_mm_per_rev =
            ((self.push_n - layer.f_th_n) / layer.k_f).clamp(0.0, layer.f_max_mm_per_rev);
        let cutting_nmm = layer.t_fr_nmm + layer.k_t * feed_mm_per_rev + self.wall_friction_nmm();

        // Mechanical: Coulomb friction of motor and needle, no reverse rotation.
        let motor_torque = d.k_t * self.current_a;
        let friction_motor_side = d.k_t * d.no_load_current_a;
        let needle_motor_side = cutting_nmm / 1000.0 / (d.gear_ratio * d.gear_efficiency);
        let resisting = friction_motor_side + needle_motor_side;
        let locked = self.lock_rotor_at_s.is_some_and(|t| self.time_s >= t);
        let speed_before = self.motor_speed_rad_s;
        if locked {
            self.motor_speed_rad_s = 0.0;
            // A jammed needle carries whatever the motor delivers.
            self.load_torque_nmm = (motor_torque - friction_motor_side).max(0.0)
                * d.gear_ratio
                * d.gear_efficiency
                * 1000.0;
        } else {
            if speed_before <= 0.0 && motor_torque <= resisting {
                self.motor_speed_rad_s = 0.0;
            } else {
                let accel = (motor_torque - resisting) / self.inertia_motor_side;
                self.motor_speed_rad_s = (speed_before + accel * dt).max(0.0);
            }
            self.load_torque_nmm = if self.motor_speed_rad_s > 0.0 || speed_before > 0.0 {
                cutting_nmm
            } else {
                // At rest the needle holds back at most what the motor pushes.
                ((motor_torque - friction_motor_side).max(0.0)
                    * d.gear_ratio
                    * d.gear_efficiency
                    * 1000.0)
                    .min(cutting_nmm)
            };
        }

        // Advance: feed per revolution times revolutions turned in the step.
        let output_rev =
            0.5 * (speed_before + self.motor_speed_rad_s) / d.gear_ratio / (2.0 * PI) * dt;
        let rotating = self.motor_speed_rad_s > 0.0;
        let depth_before = self.depth_mm;
        self.depth_mm += feed_mm_per_rev * output_rev;
        self.output_revolutions += output_rev;

        let cortex_start = self.bone.soft_tissue.thickness_mm;
        let inner = self.inner_surface_mm();
        let fracture_depth = inner - self.bone.cap_mm;
        let far_start = inner + self.bone.medullary.thickness_mm;
        let punch_through_n = self.bone.punch_through_n;
        let (time_s, depth_after) = (self.time_s, self.depth_mm);
        let crossing = |boundary: f64| {
            let span = depth_after - depth_before;
            let fraction = if span > 0.0 {
                (boundary - depth_before) / span
            } else {
                0.0
            };
            time_s + fraction.clamp(0.0, 1.0) * dt
        };
        if self.cortex_contact_s.is_none() && self.depth_mm >= cortex_start {
            self.cortex_contact_s = Some(crossing(cortex_start));
        }
        if !self.cap_fractured && self.depth_mm >= fracture_depth {
            self.cap_fractured = true;
            self.t_bt_s = Some(crossing(fracture_depth));
        }
        // A non-rotating needle pushed harder than the punch-through force breaks the cortex.
        if !self.cap_fractured
            && !rotating
            && self.region() == Region::Cortex
            && self.push_n > punch_through_n
        {
            self.cap_fractured = true;
            self.t_bt_s = Some(self.time_s);
            self.depth_mm = self.depth_mm.max(fracture_depth);
        }
        if self.far_contact_s.is_none() && self.depth_mm >= far_start {
            self.far_contact_s = Some(crossing(far_start));
            self.far_contact_rotating = rotating;
        }
        self.steps += 1;
        self.time_s = t_next;
    }

    /// One current ADC sample as the firmware sees it: raw 12-bit counts.
    pub fn sample_current_counts(&mut self) -> u16 {
        let s = self.sensor;
        let noise = if s.noise_a_rms > 0.0 {
            s.noise_a_rms * self.rng.normal()
        } else {
            0.0
        };
        let reading = self.current_a * (1.0 + s.gain_error) + s.offset_a + noise;
        quantize(reading, CURRENT_ADC_FULL_SCALE_A)
    }

    /// One battery voltage sample as the firmware sees it: raw 12-bit counts.
    pub fn sample_voltage_counts(&self) -> u16 {
        quantize(self.terminal_v, VOLTAGE_ADC_FULL_SCALE_V)
    }
}

/// A unipolar 12-bit ADC reading over `full_scale`, in counts.
fn quantize(value: f64, full_scale: f64) -> u16 {
    let lsb = full_scale / ADC_COUNTS;
    // Clamped to 0..=4095, so the cast is exact.
    (value / lsb).round().clamp(0.0, ADC_COUNTS - 1.0) as u16
}

fn scale_layer(layer: &Layer, factor: f64) -> Layer {
    Layer {
        thickness_mm: layer.thickness_mm,
        f_th_n: layer.f_th_n * factor,
        k_f: layer.k_f * factor,
        k_t: layer.k_t * factor,
        t_fr_nmm: layer.t_fr_nmm * factor,
        f_max_mm_per_rev: layer.f_max_mm_per_rev,
    }
}

fn lerp_layer(a: &Layer, b: &Layer, x: f64) -> Layer {
    let lerp = |p: f64, q: f64| p + (q - p) * x;
    Layer {
        thickness_mm: a.thickness_mm,
        f_th_n: lerp(a.f_th_n, b.f_th_n),
        k_f: lerp(a.k_f, b.k_f),
        k_t: lerp(a.k_t, b.k_t),
        t_fr_nmm: lerp(a.t_fr_nmm, b.t_fr_nmm),
        f_max_mm_per_rev: lerp(a.f_max_mm_per_rev, b.f_max_mm_per_rev),
    }
}
