//! The physical plant: battery, H-bridge, brushed motor, gearbox, needle in a layered bone,
//! the operator's push, and the current/voltage sensors the firmware reads.
//!
//! This module owns the physics and the ground truth (depth, shaft speed, load torque, the
//! cap-fracture instant `t_bt`, far-cortex contact). It knows nothing of the firmware: the sim
//! rig feeds it a PWM duty and brake command and reads sensor values back. All numbers are the
//! reference values of DESIGN.md ("Plant model").
//!
//! Numerical method: over each step the winding current and the shaft speed follow the exact
//! solution of the coupled linear system `L di/dt = V - R i - k w`, `J dw/dt = k i - T` with
//! the load torque `T`, the push and the layer frozen (they change over millimetres, i.e.
//! hundreds of steps); the transition matrices depend only on the loop resistance and are
//! cached. The needle advance is the exact integral of the speed over the step times the feed
//! per turn, split where the tip crosses a layer boundary within the step. Static friction
//! (the shaft holds while the motor cannot overcome it) and the no-reverse rule are applied at
//! step ends. The PWM is averaged (20 kHz is 1000 times faster than the mechanics and the ADC
//! samples in step with it, so it reads the average). The emulated and virtual bench rigs meet
//! the plant at arbitrary instants and step [`DEFAULT_STEP_S`].
//!
//! The sim rig advances one 1 ms control tick at a time ([`Plant::advance_tick`], module
//! `tick`): where the equations stay linear over the whole tick (full drive or braking with
//! the shaft turning throughout, no boundary, push kink or locked rotor within it; or a shaft at
//! rest) the tick is one exact step, its twenty mid-period ADC samples and its mean current
//! taken from the same closed-form solution and the load evaluated at mid-tick; elsewhere it
//! takes twenty [`SIM_STEP_S`] integration steps (one PWM period each, the ADC sample from the
//! solution at half a step): on the adult tibia 4 of a trial's 2,580 ticks. Profiled before the
//! change (`perf record` of `iohil bench --only sim`, 2026-12-02): `Plant::step` 72 % of the
//! time, `SimRig::run_trial` 8 %, `Plant::layer_here` 7 %, `round` 3 %, `Controller::step` 2 %.
//!
//! Accuracy (`harness/tests/sim_rig.rs`): against a 5 us step-by-step reference, the exact tick
//! step's `t_bt` is within 0.03 ms on every reference and operator scenario, closer than the 50
//! us step's (within 0.06 ms), with every verdict the reference's; halving the step moves
//! `t_bt`, the braking time and the braking travel by less than 0.1 ms / 0.01 mm. Measured
//! values that depend on which 1 ms tick the firmware decides in (latency, time to stop,
//! overshoot) move by a tick when `t_bt` moves across a tick boundary: that is the firmware's
//! sampling, not integration error.

use std::f64::consts::PI;

use crate::scenario::{Bone, Layer, Ramp, Scenario};

mod gauss;
mod tick;

pub use tick::{TickPlan, TickSums};

/// Integration step of rigs that meet the plant at arbitrary instants (the emulated board's
/// ADC trigger, the virtual bench's board clock), s.
pub const DEFAULT_STEP_S: f64 = 5e-6;
/// Integration step of the sim rig: one PWM period (its ADC sample is taken mid-step), s.
pub const SIM_STEP_S: f64 = 50e-6;
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
        let (value, spare) = self.normal_pair();
        self.spare_normal = Some(spare);
        value
    }

    /// The next Box-Muller pair: (the cosine draw, the sine draw).
    fn normal_pair(&mut self) -> (f64, f64) {
        let (u1, u2) = self.box_muller_uniforms();
        gauss::box_muller(u1, u2)
    }

    /// The two uniforms of the next Box-Muller pair: the radius's, kept off zero, and the
    /// angle's.
    fn box_muller_uniforms(&mut self) -> (f64, f64) {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        (u1, self.uniform())
    }

    /// Fills `out` with standard normals: the values `out.len()` calls of [`Rng::normal`]
    /// would give, in order, with ten pairs at a time computed side by side ([`gauss`]).
    pub fn normals(&mut self, out: &mut [f64]) {
        /// Pairs per batch: a control tick's twenty ADC samples.
        const BATCH: usize = 10;
        let mut rest = out;
        while !rest.is_empty() {
            let taken = if let Some(spare) = self.spare_normal.take() {
                rest[0] = spare;
                1
            } else if rest.len() >= 2 * BATCH - 1 {
                let mut u1 = [0.0; BATCH];
                let mut u2 = [0.0; BATCH];
                for (u1, u2) in u1.iter_mut().zip(&mut u2) {
                    (*u1, *u2) = self.box_muller_uniforms();
                }
                let mut drawn = [[0.0; 2]; BATCH];
                gauss::box_muller_batch(&u1, &u2, &mut drawn);
                let drawn = drawn.as_flattened();
                let take = rest.len().min(2 * BATCH);
                rest[..take].copy_from_slice(&drawn[..take]);
                if take < 2 * BATCH {
                    self.spare_normal = Some(drawn[take]);
                }
                take
            } else {
                rest[0] = self.normal();
                1
            };
            rest = &mut rest[taken..];
        }
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

/// The exact transition of the winding current and shaft speed over one step (and half a
/// step) for one loop resistance: `x(t) = x_ss + phi(t) (x(0) - x_ss)`, and the integral of the
/// deviation over the step, `psi = A^-1 (phi(h) - I)`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StepMatrices {
    resistance: f64,
    phi: [[f64; 2]; 2],
    phi_half: [[f64; 2]; 2],
    psi: [[f64; 2]; 2],
    /// `exp(-R h / L)`: the current's decay with the rotor held.
    decay: f64,
    /// The same over half a step.
    decay_half: f64,
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
    /// Winding current at the middle of the last step (the board's ADC samples mid-period).
    mid_current_a: f64,
    /// Battery terminal voltage at the middle of the last step.
    mid_terminal_v: f64,
    /// Step matrices for the last loop resistance (it changes at most once per control tick).
    matrices: Option<StepMatrices>,
    /// The whole-tick transitions of the exact tick step (see [`Plant::advance_tick`]).
    tick_matrices: [Option<tick::TickMatrices>; 2],
    /// The needle's advance over the last control tick, mm (the exact tick step's predictor).
    tick_advance_mm: f64,
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
            mid_current_a: 0.0,
            mid_terminal_v: scenario.battery.open_circuit_v,
            matrices: None,
            tick_matrices: [None, None],
            tick_advance_mm: 0.0,
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
        self.region_at(self.depth_mm)
    }

    /// Region a tip at depth `d` would be in.
    fn region_at(&self, d: f64) -> Region {
        let bone = &self.bone;
        let inner = self.inner_surface_mm();
        let far = inner + bone.medullary.thickness_mm;
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

    /// Depths where the needle's load changes abruptly, mm: the cortex surface, the cap's
    /// fracture depth, the far cortex's surface and its end.
    fn boundaries_mm(&self) -> [f64; 4] {
        let inner = self.inner_surface_mm();
        let far_start = inner + self.bone.medullary.thickness_mm;
        [
            self.bone.soft_tissue.thickness_mm,
            inner - self.bone.cap_mm,
            far_start,
            far_start + self.bone.far_cortex.thickness_mm,
        ]
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

    /// Layer parameters just past the current depth, which lies on a layer boundary.
    fn layer_past_boundary(&self) -> Layer {
        self.layer_at(self.depth_mm + 1e-9)
    }

    /// Layer parameters at depth `depth` (ramp applied).
    fn layer_at(&self, depth: f64) -> Layer {
        let bone = &self.bone;
        match self.region_at(depth) {
            Region::SoftTissue => bone.soft_tissue,
            Region::Medullary => bone.medullary,
            Region::FarCortex | Region::Beyond => bone.far_cortex,
            Region::Cortex => {
                let inner = self.inner_surface_mm();
                let ramp_len = bone.ramp_mm.min(bone.cortex.thickness_mm);
                let ramp_start = inner - ramp_len;
                if ramp_len <= 0.0 || depth < ramp_start {
                    return bone.cortex;
                }
                let x = ((depth - ramp_start) / ramp_len).clamp(0.0, 1.0);
                let target = match bone.ramp_to {
                    Ramp::Fraction(f) => scale_layer(&bone.cortex, f),
                    Ramp::Medullary => bone.medullary,
                };
                lerp_layer(&bone.cortex, &target, x)
            }
        }
    }

    /// Shaft friction from the walls passed by a tip at depth `depth`, N*mm.
    fn wall_friction_at(&self, depth: f64) -> f64 {
        let bone = &self.bone;
        let soft = depth.clamp(0.0, bone.soft_tissue.thickness_mm);
        let near = (depth - bone.soft_tissue.thickness_mm).clamp(0.0, bone.cortex.thickness_mm);
        let far_start = self.inner_surface_mm() + bone.medullary.thickness_mm;
        let far = (depth - far_start).clamp(0.0, bone.far_cortex.thickness_mm);
        SOFT_TISSUE_FRICTION_NMM_PER_MM * soft + CORTICAL_WALL_FRICTION_NMM_PER_MM * (near + far)
    }

    /// The transition matrix `phi(t) = e^(A t)` of the winding current and shaft speed for
    /// loop resistance `resistance`: `x(t) = x_ss + phi(t) (x(0) - x_ss)`.
    fn transition(&self, resistance: f64, t: f64) -> [[f64; 2]; 2] {
        let d = self.drive;
        let (l, k, j) = (d.inductance_h, d.k_t, self.inertia_motor_side);
        // A = [[-R/L, -k/L], [k/J, 0]]; e^(At) = e^(st) (C(t) I + S(t) (A - s I)).
        let a = [[-resistance / l, -k / l], [k / j, 0.0]];
        let half_trace = -resistance / (2.0 * l);
        let det = k * k / (j * l);
        let disc = half_trace * half_trace - det;
        let (c, s) = if disc > 1e-9 {
            let q = disc.sqrt();
            ((q * t).cosh(), (q * t).sinh() / q)
        } else if disc < -1e-9 {
            let w = (-disc).sqrt();
            ((w * t).cos(), (w * t).sin() / w)
        } else {
            (1.0, t)
        };
        let e = (half_trace * t).exp();
        [
            [e * (c + s * (a[0][0] - half_trace)), e * s * a[0][1]],
            [e * s * a[1][0], e * (c + s * (a[1][1] - half_trace))],
        ]
    }

    /// The integral over `[0, t]` of the deviation's transition, `psi = A^-1 (phi(t) - I)`,
    /// from `phi = phi(t)`: `integral x dt = x_ss t + psi (x(0) - x_ss)`.
    fn deviation_integral(&self, resistance: f64, phi: [[f64; 2]; 2]) -> [[f64; 2]; 2] {
        let d = self.drive;
        let (l, k, j) = (d.inductance_h, d.k_t, self.inertia_motor_side);
        let det = k * k / (j * l);
        // A^-1 = (1/det) [[0, k/L], [-k/J, -R/L]].
        let inv = [[0.0, k / l / det], [-k / j / det, -resistance / l / det]];
        let m = [[phi[0][0] - 1.0, phi[0][1]], [phi[1][0], phi[1][1] - 1.0]];
        [
            [
                inv[0][0] * m[0][0] + inv[0][1] * m[1][0],
                inv[0][0] * m[0][1] + inv[0][1] * m[1][1],
            ],
            [
                inv[1][0] * m[0][0] + inv[1][1] * m[1][0],
                inv[1][0] * m[0][1] + inv[1][1] * m[1][1],
            ],
        ]
    }

    /// The step matrices for loop resistance `resistance`, computed when it changes.
    fn step_matrices(&mut self, resistance: f64) -> StepMatrices {
        if let Some(m) = self.matrices.filter(|m| m.resistance == resistance) {
            return m;
        }
        let (l, h) = (self.drive.inductance_h, self.step_s);
        let phi = self.transition(resistance, h);
        let matrices = StepMatrices {
            resistance,
            phi,
            phi_half: self.transition(resistance, 0.5 * h),
            psi: self.deviation_integral(resistance, phi),
            decay: (-h * resistance / l).exp(),
            decay_half: (-0.5 * h * resistance / l).exp(),
        };
        self.matrices = Some(matrices);
        matrices
    }

    /// The needle's feed per output revolution and its load torque on the output shaft at
    /// depth `depth` under push `push_n`: (mm/rev, N*mm).
    fn needle_load(&self, push_n: f64, depth: f64) -> (f64, f64) {
        let layer = self.layer_at(depth);
        let feed_mm_per_rev =
            ((push_n - layer.f_th_n) / layer.k_f).clamp(0.0, layer.f_max_mm_per_rev);
        let cutting_nmm =
            layer.t_fr_nmm + layer.k_t * feed_mm_per_rev + self.wall_friction_at(depth);
        (feed_mm_per_rev, cutting_nmm)
    }

    /// Advances one integration step under `command`.
    pub fn step(&mut self, command: DriveCommand) {
        let dt = self.step_s;
        let d = self.drive;
        let t_next = (self.steps + 1) as f64 * dt;
        // The push at mid-step (second-order accurate for the slowly varying operator).
        self.push_n = self.push_at(self.time_s + 0.5 * dt);

        // Needle load at the output shaft, frozen over the step (it changes over millimetres).
        let (feed_mm_per_rev, cutting_nmm) = self.needle_load(self.push_n, self.depth_mm);
        let friction_motor_side = d.k_t * d.no_load_current_a;
        let needle_motor_side = cutting_nmm / 1000.0 / (d.gear_ratio * d.gear_efficiency);
        let resisting = friction_motor_side + needle_motor_side;

        // The bridge as seen by the winding: source voltage and loop resistance.
        let loop_ohm = self.winding_ohm + d.bridge_ohm;
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
        let locked = self.lock_rotor_at_s.is_some_and(|t| self.time_s >= t);
        let speed_before = self.motor_speed_rad_s;
        let current_before = self.current_a;

        // Electromechanics over the step, exactly for the frozen load: the winding
        // L di/dt = V - R i - k w and the shaft J dw/dt = k i - T_resist, while it turns.
        let (current, speed, mid_current, turned_rad) = if !resistance.is_finite() {
            // Open circuit: no current; the shaft coasts down against its friction.
            let decel = resisting / self.inertia_motor_side;
            let stop_after = if decel > 0.0 {
                speed_before / decel
            } else {
                f64::INFINITY
            };
            let t = stop_after.min(dt);
            let speed = (speed_before - decel * t).max(0.0);
            (0.0, speed, 0.0, 0.5 * (speed_before + speed) * t)
        } else {
            let m = self.step_matrices(resistance);
            // With the rotor held (locked, or at rest and unable to break away): first order.
            let held = |i0: f64, decay: f64| {
                let steady = source_v / resistance;
                steady + (i0 - steady) * decay
            };
            if locked {
                (
                    held(current_before, m.decay),
                    0.0,
                    held(current_before, m.decay_half),
                    0.0,
                )
            } else {
                let i_ss = resisting / d.k_t;
                let w_ss = (source_v - resistance * i_ss) / d.k_t;
                let (yi, yw) = (current_before - i_ss, speed_before - w_ss);
                let current = i_ss + m.phi[0][0] * yi + m.phi[0][1] * yw;
                let speed = w_ss + m.phi[1][0] * yi + m.phi[1][1] * yw;
                let mid = i_ss + m.phi_half[0][0] * yi + m.phi_half[0][1] * yw;
                let turned = w_ss * dt + m.psi[1][0] * yi + m.psi[1][1] * yw;
                if speed_before <= 0.0 && (speed <= 0.0 || d.k_t * current <= resisting) {
                    // Static friction holds the shaft: it never started to turn.
                    (
                        held(current_before, m.decay),
                        0.0,
                        held(current_before, m.decay_half),
                        0.0,
                    )
                } else if speed < 0.0 {
                    // It stopped within the step (no reverse rotation).
                    (current, 0.0, mid, turned.max(0.0))
                } else {
                    (current, speed, mid, turned.max(0.0))
                }
            }
        };
        let clamp_coast = |i: f64| if coasting && i < 0.0 { 0.0 } else { i };
        self.current_a = clamp_coast(current);
        self.mid_current_a = clamp_coast(mid_current);
        self.motor_speed_rad_s = speed;
        let battery_current = if command.brake {
            0.0
        } else {
            duty * self.current_a
        };
        self.terminal_v = self.battery.open_circuit_v - battery_ohm * battery_current;
        self.mid_terminal_v = if command.brake {
            self.battery.open_circuit_v
        } else {
            self.battery.open_circuit_v - battery_ohm * duty * self.mid_current_a
        };

        let motor_torque = d.k_t * self.current_a;
        if locked {
            // A jammed needle carries whatever the motor delivers.
            self.load_torque_nmm = (motor_torque - friction_motor_side).max(0.0)
                * d.gear_ratio
                * d.gear_efficiency
                * 1000.0;
        } else {
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
        let output_rev = turned_rad / d.gear_ratio / (2.0 * PI);
        let rotating = self.motor_speed_rad_s > 0.0;
        let depth_before = self.depth_mm;
        let [cortex_start, fracture_depth, far_start, far_end] = self.boundaries_mm();
        let mut advance = feed_mm_per_rev * output_rev;
        let mut split = None;
        // A layer boundary crossed within the step: the turns before it feed at the old
        // layer's rate, the rest at the new one's (else the step would carry the soft tissue's
        // feed a step's worth into the cortex, an error of the order of the step).
        let boundary = [cortex_start, fracture_depth, far_start, far_end]
            .into_iter()
            .find(|&b| depth_before < b && b <= depth_before + advance);
        if let (Some(b), true) = (boundary, feed_mm_per_rev > 0.0) {
            let turns_to_boundary = (b - depth_before) / feed_mm_per_rev;
            self.depth_mm = b;
            let fractured = self.cap_fractured;
            // Past a fracture depth the cap has broken (the check below records it).
            self.cap_fractured = fractured || b == fracture_depth;
            let next = self.layer_past_boundary();
            self.cap_fractured = fractured;
            let next_feed =
                ((self.push_n - next.f_th_n) / next.k_f).clamp(0.0, next.f_max_mm_per_rev);
            advance = (b - depth_before) + next_feed * (output_rev - turns_to_boundary).max(0.0);
            if output_rev > 0.0 {
                split = Some((b, turns_to_boundary / output_rev));
            }
        }
        self.depth_mm = depth_before + advance;
        self.output_revolutions += output_rev;

        let punch_through_n = self.bone.punch_through_n;
        let (time_s, depth_after) = (self.time_s, self.depth_mm);
        let crossing = |boundary: f64| {
            let span = depth_after - depth_before;
            let fraction = match split {
                // The split boundary: reached after that fraction of the step's turns.
                Some((b, turns)) if b == boundary => turns,
                _ if span > 0.0 => (boundary - depth_before) / span,
                _ => 0.0,
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

    /// One current ADC sample as the firmware sees it, taken now: raw 12-bit counts.
    pub fn sample_current_counts(&mut self) -> u16 {
        self.current_counts(self.current_a)
    }

    /// One current ADC sample taken at the middle of the last step (the sim rig steps one PWM
    /// period at a time and the board samples mid-period).
    pub fn sample_current_counts_mid_step(&mut self) -> u16 {
        self.current_counts(self.mid_current_a)
    }

    fn current_counts(&mut self, current_a: f64) -> u16 {
        current_counts(&self.sensor, &mut self.rng, current_a)
    }

    /// One battery voltage sample as the firmware sees it, taken now: raw 12-bit counts.
    pub fn sample_voltage_counts(&self) -> u16 {
        quantize(self.terminal_v, VOLTAGE_ADC_FULL_SCALE_V)
    }

    /// One battery voltage sample taken at the middle of the last step.
    pub fn sample_voltage_counts_mid_step(&self) -> u16 {
        quantize(self.mid_terminal_v, VOLTAGE_ADC_FULL_SCALE_V)
    }
}

/// One current ADC sample of winding current `current_a` through `sensor`, drawing its noise
/// from `rng`: raw 12-bit counts.
#[inline]
fn current_counts(sensor: &crate::scenario::Sensor, rng: &mut Rng, current_a: f64) -> u16 {
    let noise = sensor_noise(sensor, rng);
    quantize(
        sensor_reading(sensor, current_a, noise),
        CURRENT_ADC_FULL_SCALE_A,
    )
}

/// One current sample's noise, A: [`sensor_noises`] for one sample.
#[inline]
fn sensor_noise(sensor: &crate::scenario::Sensor, rng: &mut Rng) -> f64 {
    let mut noise = [0.0];
    sensor_noises(sensor, rng, &mut noise);
    let [noise] = noise;
    noise
}

/// The noise of `out.len()` current samples in order, A: the sensor's rms noise times
/// standard normals from `rng` (the exact tick draws a tick's twenty side by side, the fine
/// step one at a time: the same values either way), and no draw for a noiseless sensor.
#[inline]
fn sensor_noises(sensor: &crate::scenario::Sensor, rng: &mut Rng, out: &mut [f64]) {
    if sensor.noise_a_rms > 0.0 {
        rng.normals(out);
        for v in out {
            *v *= sensor.noise_a_rms;
        }
    } else {
        out.fill(0.0);
    }
}

/// What the current-sense amplifier puts out for winding current `current_a` and a noise
/// sample `noise`, A.
#[inline]
fn sensor_reading(sensor: &crate::scenario::Sensor, current_a: f64, noise: f64) -> f64 {
    current_a * (1.0 + sensor.gain_error) + sensor.offset_a + noise
}

/// A unipolar 12-bit ADC reading over `full_scale`, in counts: `value` in LSBs, clamped to
/// 0..=4095 and rounded to the nearest count (ties, which a real-valued input reaches with
/// probability zero, to even). NaN reads 0.
#[inline]
fn quantize(value: f64, full_scale: f64) -> u16 {
    // Counts per unit: a constant where `full_scale` is (the callers pass constants).
    let per_unit = ADC_COUNTS / full_scale;
    #[expect(
        clippy::manual_clamp,
        reason = "clamp keeps a NaN, whose bits the bias trick below would read as a count; max \
                  returns the number when the other operand is NaN"
    )]
    let counts = (value * per_unit).max(0.0).min(ADC_COUNTS - 1.0);
    // Adding 2^52 leaves no fraction bits: the sum is 2^52 plus `counts` rounded to nearest
    // (ties to even, IEEE 754's default), and its low mantissa bits are that integer. Exact for
    // 0..=4095, and it vectorises, where a float-to-int cast saturates element by element.
    const ROUNDING_BIAS: f64 = 4_503_599_627_370_496.0;
    ((counts + ROUNDING_BIAS).to_bits() & 0xfff) as u16
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bias trick against the rounding it stands for, on a fine grid over the whole range
    /// and past both ends, exact ties (which go to even), and NaN.
    #[test]
    fn quantize_rounds_to_the_nearest_count_and_clamps() {
        let reference = |counts: f64| -> u16 {
            if counts.is_nan() {
                0
            } else {
                counts.clamp(0.0, ADC_COUNTS - 1.0).round_ties_even() as u16
            }
        };
        let full_scale = CURRENT_ADC_FULL_SCALE_A;
        let lsb = full_scale / ADC_COUNTS;
        for k in -2_000..=(4096 * 64 + 2_000) {
            let counts = f64::from(k) / 64.0 + 1e-7;
            let value = counts * lsb;
            assert_eq!(
                quantize(value, full_scale),
                reference(value * (ADC_COUNTS / full_scale)),
                "{value} A"
            );
        }
        for (counts, expected) in [(0.5, 0), (1.5, 2), (2.5, 2), (4094.5, 4094), (4095.0, 4095)] {
            let value = counts / (ADC_COUNTS / VOLTAGE_ADC_FULL_SCALE_V);
            assert_eq!(
                quantize(value, VOLTAGE_ADC_FULL_SCALE_V),
                expected,
                "{counts} counts"
            );
        }
        assert_eq!(quantize(-1.0, full_scale), 0);
        assert_eq!(quantize(1e9, full_scale), 4095);
        assert_eq!(quantize(f64::INFINITY, full_scale), 4095);
        assert_eq!(quantize(f64::NAN, full_scale), 0);
    }
}
