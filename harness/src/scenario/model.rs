//! The scenario file format as it is written in YAML (`format_version: 1`).
//!
//! These types are what serde-saphyr deserializes into; every optional field has a documented
//! default. They hold no physics: [`crate::scenario::Scenario`] is the validated, resolved form
//! (bone profile looked up, overrides applied, defaults filled in) that rigs consume.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Version of this file format; only 1 exists.
    pub format_version: u32,
    /// Stable identifier, unique within a suite (used in file names and reports).
    pub id: String,
    /// One-line human title.
    pub title: String,
    /// Free text: what the scenario exercises and why.
    #[serde(default)]
    pub description: Option<String>,
    /// Requirement IDs (from `requirements.yaml`) whose verdicts this scenario produces.
    pub verifies: Vec<String>,
    /// The bone the needle is driven into.
    pub bone: BoneSpec,
    /// The operator: push force, its variation, trigger timing.
    #[serde(default)]
    pub operator: OperatorSpec,
    /// Battery state.
    #[serde(default)]
    pub battery: BatterySpec,
    /// Motor temperature.
    #[serde(default)]
    pub motor: MotorSpec,
    /// Current and voltage sensor imperfections.
    #[serde(default)]
    pub sensor: SensorSpec,
    /// Faults injected into the plant (not the firmware).
    #[serde(default)]
    pub plant_faults: PlantFaultSpec,
    /// Number of trials; each trial uses seed `seed + trial index` for noise and randomized
    /// nuisance parameters.
    #[serde(default = "default_trials")]
    pub trials: u32,
    /// Base seed of the trial random streams.
    #[serde(default)]
    pub seed: u64,
    /// Simulated time limit of one trial, in seconds (default 12 s: past the 10 s over-time limit).
    #[serde(default = "default_duration_s")]
    pub duration_s: f64,
}

fn default_trials() -> u32 {
    1
}

impl ScenarioFile {
    /// A trial's simulated time limit when the file gives none, s.
    pub const DEFAULT_DURATION_S: f64 = 12.0;
}

fn default_duration_s() -> f64 {
    ScenarioFile::DEFAULT_DURATION_S
}

/// The bone: a reference profile, optionally with per-parameter overrides, or (without
/// `profile`) a fully explicit custom bone.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BoneSpec {
    /// Name of a reference profile in `profiles.yaml`. Without it every field below is required.
    #[serde(default)]
    pub profile: Option<String>,
    /// Patient population the overshoot limit of SR-03 is chosen by.
    #[serde(default)]
    pub population: Option<Population>,
    /// Soft tissue above the near cortex.
    #[serde(default)]
    pub soft_tissue: Option<LayerSpec>,
    /// Near cortex (the one the needle must break through).
    #[serde(default)]
    pub cortex: Option<LayerSpec>,
    /// Medullary cavity (marrow), the target.
    #[serde(default)]
    pub medullary: Option<LayerSpec>,
    /// Far cortex; its strength parameters default to the near cortex's.
    #[serde(default)]
    pub far_cortex: Option<LayerSpec>,
    /// Length of the weakening ramp at the end of the near cortex, mm (reference: 1.5).
    #[serde(default)]
    pub ramp_mm: Option<f64>,
    /// Fraction of the cortex parameters reached at the end of the ramp (reference: 0.4).
    /// `medullary` ramps to the medullary parameters instead (a gradual breakthrough).
    #[serde(default)]
    pub ramp_to: Option<RampTarget>,
    /// Remaining cap thickness at which the near cortex fractures, mm (0 = no fracture: the
    /// tip simply reaches the inner surface).
    #[serde(default)]
    pub cap_mm: Option<f64>,
    /// Axial force at which a non-rotating needle punches through cortex, N.
    #[serde(default)]
    pub punch_through_n: Option<f64>,
}

/// Patient population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Population {
    /// Adult (SR-03 limit 1.5 mm).
    Adult,
    /// Child (SR-03 limit 1.0 mm).
    Child,
}

/// What the breakthrough ramp ends at.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RampTarget {
    /// A fraction (0..=1) of the cortex parameters.
    Fraction(f64),
    /// The keyword `medullary`.
    Keyword(RampKeyword),
}

/// Keyword form of [`RampTarget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RampKeyword {
    /// Ramp to the medullary parameters.
    Medullary,
}

/// One bone layer; in a profile override only the given fields change.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// Thickness, mm.
    #[serde(default)]
    pub thickness_mm: Option<f64>,
    /// Threshold push force below which the needle does not feed, N.
    #[serde(default)]
    pub f_th_n: Option<f64>,
    /// Feed stiffness: push force per unit feed, N*rev/mm.
    #[serde(default)]
    pub k_f: Option<f64>,
    /// Cutting torque per unit feed, N*mm*rev/mm.
    #[serde(default)]
    pub k_t: Option<f64>,
    /// Friction torque while rotating in the layer, N*mm.
    #[serde(default)]
    pub t_fr_nmm: Option<f64>,
    /// Largest feed per revolution, mm/rev.
    #[serde(default)]
    pub f_max_mm_per_rev: Option<f64>,
}

/// The operator.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Nominal push force, N; default: the profile's nominal push.
    #[serde(default)]
    pub push_n: Option<f64>,
    /// Sinusoidal variation of the push force.
    #[serde(default)]
    pub oscillation: Option<OscillationSpec>,
    /// Step changes of the push force.
    #[serde(default)]
    pub steps: Vec<PushStepSpec>,
    /// Reaction time after the pop before the push relaxes, ms (default 200).
    #[serde(default = "default_reaction_ms")]
    pub reaction_ms: f64,
    /// Push force once relaxed, as a fraction of the nominal push (default 0.3).
    #[serde(default = "default_relaxed_fraction")]
    pub relaxed_fraction: f64,
    /// Trigger timing.
    #[serde(default)]
    pub trigger: TriggerSpec,
}

impl Default for OperatorSpec {
    fn default() -> Self {
        Self {
            push_n: None,
            oscillation: None,
            steps: Vec::new(),
            reaction_ms: default_reaction_ms(),
            relaxed_fraction: default_relaxed_fraction(),
            trigger: TriggerSpec::default(),
        }
    }
}

fn default_reaction_ms() -> f64 {
    200.0
}

fn default_relaxed_fraction() -> f64 {
    0.3
}

/// A sinusoidal push variation.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OscillationSpec {
    /// Amplitude as a percentage of the nominal push.
    pub amplitude_pct: f64,
    /// Frequency, Hz.
    pub frequency_hz: f64,
    /// Phase at t = 0, degrees; absent: each trial draws the phase uniformly from its seed.
    #[serde(default)]
    pub phase_deg: Option<f64>,
}

/// A step change of the push force.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushStepSpec {
    /// When the step starts, s after the trigger press.
    pub at_s: f64,
    /// Change as a percentage of the nominal push (negative: the operator eases off).
    pub change_pct: f64,
    /// Time over which the force changes, ms (default 80; a hand cannot step faster than ~50 ms).
    #[serde(default = "default_rise_ms")]
    pub rise_ms: f64,
}

fn default_rise_ms() -> f64 {
    80.0
}

/// Trigger timing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Press time, s (default 0.01).
    #[serde(default)]
    pub press_s: Option<f64>,
    /// Release time, s; absent: held for the whole trial.
    #[serde(default)]
    pub release_s: Option<f64>,
}

/// Battery state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatterySpec {
    /// Open-circuit voltage, V (default 6.4: fresh).
    #[serde(default)]
    pub open_circuit_v: Option<f64>,
    /// Internal resistance, ohm (default 0.25; 0.6 at end of life or cold).
    #[serde(default)]
    pub internal_resistance_ohm: Option<f64>,
}

/// Motor state.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MotorSpec {
    /// Winding temperature, degC (default 20; resistance rises 0.39 %/K).
    #[serde(default)]
    pub temperature_c: Option<f64>,
}

/// Current and voltage sensing imperfections.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    /// Current-sense gain error, percent.
    #[serde(default)]
    pub gain_error_pct: f64,
    /// Current-sense offset, mA.
    #[serde(default)]
    pub offset_ma: f64,
    /// RMS noise of each current ADC sample, mA.
    #[serde(default)]
    pub noise_ma_rms: f64,
}

/// Faults injected into the plant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlantFaultSpec {
    /// The needle jams and the output shaft locks at this time, s.
    #[serde(default)]
    pub lock_rotor_at_s: Option<f64>,
}
