//! Scenarios: the YAML format ([`model`]), loading and validation with diagnostics that point
//! into the file ([`load`]), the bone profile library and the requirements file.
//!
//! This module owns turning files into a validated, fully resolved [`Scenario`]. It does not
//! run anything: rigs take a `Scenario` and produce a trace.

pub mod load;
pub mod model;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use model::Population;

/// File name of the requirements file at the root of a scenario suite.
pub const REQUIREMENTS_FILE: &str = "requirements.yaml";
/// File name of the bone profile library at the root of a scenario suite.
pub const PROFILES_FILE: &str = "profiles.yaml";
/// File name of the baseline comparison tolerances at the root of a scenario suite.
pub const TOLERANCES_FILE: &str = "tolerances.yaml";
/// File name of the known residual anomaly register at the root of a scenario suite.
pub const ANOMALIES_FILE: &str = "anomalies.yaml";

/// Whether a known anomaly is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyStatus {
    /// The anomaly reproduces and is accepted with its risk evaluation.
    Open,
    /// Fixed; kept for the record. Its scenarios are held to their requirements again.
    Closed,
}

/// One entry of the known residual anomaly register (`anomalies.yaml`, IEC 62304 5.8): a
/// failure the project knows, keeps reproducing and has evaluated, rather than one it hides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnownAnomaly {
    /// ID, `AN-` and four digits.
    pub id: String,
    /// Short title.
    pub title: String,
    /// Scenario IDs that reproduce it.
    pub scenarios: Vec<String>,
    /// Requirements those scenarios fail because of it; a FAIL of any other is not covered.
    pub requirements: Vec<String>,
    /// Hazard it contributes to (an ID of the requirements file).
    pub hazard: String,
    /// Risk evaluation: what happens, how likely (with the evidence), why it is accepted.
    pub risk: String,
    /// Open or closed.
    pub status: AnomalyStatus,
    /// The worst values the risk evaluation accepts, by scenario and clause (in the clause's
    /// unit): `{scenario: {SR-01.a: 45}}`. A failing clause measured beyond its bound is not
    /// covered: the anomaly has become worse than the evaluation says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bounds: BTreeMap<String, BTreeMap<String, f64>>,
}

impl KnownAnomaly {
    /// The first failing clause of scenario `scenario` measured beyond this entry's bound for
    /// it, as a sentence; `failing` gives each failing clause's id, measured value and unit.
    /// A clause with a bound but no measured value is beyond it (nothing shows it within).
    pub fn beyond_bounds<'a>(
        &self,
        scenario: &str,
        failing: impl IntoIterator<Item = (&'a str, Option<f64>, &'a str)>,
    ) -> Option<String> {
        let bounds = self.bounds.get(scenario)?;
        failing.into_iter().find_map(|(clause, measured, unit)| {
            let bound = *bounds.get(clause)?;
            match measured {
                Some(m) if m <= bound => None,
                Some(m) => Some(format!(
                    "{clause} measured {m:.2} {unit}, beyond the {bound} {unit} {} accepts",
                    self.id
                )),
                None => Some(format!(
                    "{clause} has no measured value to hold to the {bound} {unit} {} accepts",
                    self.id
                )),
            }
        })
    }

    /// Whether this entry covers a failure of scenario `scenario` that failed the requirements
    /// `failed`: it is open, names the scenario, and names every one of them.
    pub fn covers<'a>(&self, scenario: &str, failed: impl IntoIterator<Item = &'a str>) -> bool {
        self.status == AnomalyStatus::Open
            && self.scenarios.iter().any(|s| s == scenario)
            && failed
                .into_iter()
                .all(|r| self.requirements.iter().any(|k| k == r))
    }
}

/// The register file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalyRegister {
    /// Version of this file format; only 1 exists.
    pub format_version: u32,
    /// The entries.
    pub anomalies: Vec<KnownAnomaly>,
}

/// Mechanical parameters of one bone layer, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Thickness, mm.
    pub thickness_mm: f64,
    /// Threshold push force, N.
    pub f_th_n: f64,
    /// Feed stiffness, N*rev/mm.
    pub k_f: f64,
    /// Cutting torque per unit feed, N*mm*rev/mm.
    pub k_t: f64,
    /// Friction torque, N*mm.
    pub t_fr_nmm: f64,
    /// Largest feed per revolution, mm/rev.
    pub f_max_mm_per_rev: f64,
}

/// What the ramp at the end of the near cortex ends at.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ramp {
    /// This fraction of the cortex parameters.
    Fraction(f64),
    /// The medullary parameters (gradual breakthrough).
    Medullary,
}

/// A bone, resolved: every parameter has a value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bone {
    /// Reference profile this bone started from, if any.
    pub profile: Option<String>,
    /// Population (chooses the SR-03 overshoot limit).
    pub population: Population,
    /// Soft tissue.
    pub soft_tissue: Layer,
    /// Near cortex.
    pub cortex: Layer,
    /// Medullary cavity.
    pub medullary: Layer,
    /// Far cortex.
    pub far_cortex: Layer,
    /// Ramp length at the end of the near cortex, mm.
    pub ramp_mm: f64,
    /// Ramp end point.
    pub ramp_to: Ramp,
    /// Cap thickness at fracture, mm.
    pub cap_mm: f64,
    /// Punch-through force of a non-rotating needle, N.
    pub punch_through_n: f64,
}

/// A push step, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PushStep {
    /// Start, s.
    pub at_s: f64,
    /// Change, fraction of nominal (e.g. -0.4).
    pub change_fraction: f64,
    /// Rise time, s.
    pub rise_s: f64,
}

/// A sinusoidal push variation, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Oscillation {
    /// Amplitude, fraction of nominal.
    pub amplitude_fraction: f64,
    /// Frequency, Hz.
    pub frequency_hz: f64,
    /// Phase at t = 0, rad; `None`: each trial draws it uniformly from its seed.
    pub phase_rad: Option<f64>,
}

/// The operator, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    /// Nominal push, N.
    pub push_n: f64,
    /// Sinusoidal variation.
    pub oscillation: Option<Oscillation>,
    /// Push steps, in time order.
    pub steps: Vec<PushStep>,
    /// Reaction time after the pop before the push relaxes, s.
    pub reaction_s: f64,
    /// Relaxed push as a fraction of nominal.
    pub relaxed_fraction: f64,
    /// Trigger press time, s.
    pub press_s: f64,
    /// Trigger release time, s.
    pub release_s: Option<f64>,
}

/// Battery, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Battery {
    /// Open-circuit voltage, V.
    pub open_circuit_v: f64,
    /// Internal resistance, ohm.
    pub internal_resistance_ohm: f64,
}

/// Sensor imperfections, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    /// Current gain error, fraction.
    pub gain_error: f64,
    /// Current offset, A.
    pub offset_a: f64,
    /// Per-sample noise RMS, A.
    pub noise_a_rms: f64,
}

/// Where a scenario came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Source {
    /// Path as given or found.
    pub path: PathBuf,
    /// SHA-256 of the file bytes, lowercase hex.
    pub sha256: String,
}

/// A validated, fully resolved scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Identifier.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Requirement IDs verified, as written (all known to the requirements file).
    pub verifies: Vec<String>,
    /// Bone.
    pub bone: Bone,
    /// Operator.
    pub operator: Operator,
    /// Battery.
    pub battery: Battery,
    /// Motor winding temperature, degC.
    pub motor_temperature_c: f64,
    /// Sensors.
    pub sensor: Sensor,
    /// Output shaft locks at this time, s.
    pub lock_rotor_at_s: Option<f64>,
    /// Number of trials.
    pub trials: u32,
    /// Base seed.
    pub seed: u64,
    /// Trial duration, s.
    pub duration_s: f64,
    /// Source file.
    pub source: Source,
}

/// One requirement from the requirements file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirement {
    /// ID, e.g. `SR-01`.
    pub id: String,
    /// Short title.
    pub title: String,
    /// The requirement text.
    pub text: String,
    /// Hazard ID it controls (defined in the same file).
    pub hazard: String,
    /// The statistic the verdict is taken over (e.g. "max over trials", "P99").
    pub statistic: String,
    /// The text split into separately checked clauses, in order (`SR-07.a`, `SR-07.b`, ...).
    pub clauses: Vec<Clause>,
    /// Named numeric limits used by the evaluator (e.g. `max_ms: 20`).
    pub limits: BTreeMap<String, Limit>,
    /// Rigs on which this requirement can be verified.
    pub rigs: Vec<String>,
}

/// One clause of a requirement's text, checked on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clause {
    /// ID, e.g. `SR-07.b`.
    pub id: String,
    /// The clause's text.
    pub text: String,
}

/// One numeric limit with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Value.
    pub value: f64,
    /// Unit, e.g. `ms`.
    pub unit: String,
}

/// A hazard from the requirements file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hazard {
    /// ID, e.g. `HZ-01`.
    pub id: String,
    /// Title.
    pub title: String,
}

/// The requirements file, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requirements {
    /// Requirements in file order.
    pub requirements: Vec<Requirement>,
    /// Hazards in file order.
    pub hazards: Vec<Hazard>,
    /// Source file.
    pub source: Source,
}

impl Requirements {
    /// Looks up a requirement by ID.
    pub fn get(&self, id: &str) -> Option<&Requirement> {
        self.requirements.iter().find(|r| r.id == id)
    }
}
