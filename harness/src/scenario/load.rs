//! Loading and validation of scenario suites.
//!
//! This module owns the path from files on disk to a validated [`Suite`]: finding the suite
//! root, the formats of `requirements.yaml` and `profiles.yaml`, resolving a
//! [`ScenarioFile`] against them (profile lookup, overrides, defaults, unit conversion), the
//! plausibility bounds every value is checked against, and the diagnostics that point into the
//! YAML when something is wrong.
//!
//! Every problem found is reported, not only the first: each file is checked on its own, and
//! within a file every semantic problem is collected (a file that does not parse stops at its
//! first YAML or type error). Each [`Problem`] carries the file, the 1-based line and column,
//! the YAML path and a help text; [`LoadError`] is a [`miette::Diagnostic`] whose related
//! diagnostics carry the source snippet so the fancy renderer underlines the offending YAML.
//!
//! Positions come from two passes over the text: serde-saphyr deserializes into the model
//! types and reports line/column of the first error, and a lightweight node tree built with
//! the same YAML parser (granit) maps between positions and YAML paths, both ways (error
//! position to path, and path of a semantically invalid value to its position).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use serde::{Deserialize, Serialize};
use serde_saphyr::granit_parser::{Event, Marker, Parser as YamlParser};
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::model::{BoneSpec, LayerSpec, Population, RampTarget, ScenarioFile};
use super::{
    Battery, Bone, Clause, Hazard, Layer, Limit, Operator, Oscillation, PushStep, Ramp,
    Requirement, Requirements, Scenario, Sensor, Source, ANOMALIES_FILE, PROFILES_FILE,
    REQUIREMENTS_FILE, TOLERANCES_FILE,
};

// ---------------------------------------------------------------------------------------------
// Plausibility bounds
// ---------------------------------------------------------------------------------------------

/// An interval a value must lie in, with its unit and the reason for the limits (shown as the
/// help text when a value falls outside).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Lower limit.
    pub min: f64,
    /// Whether `min` itself is allowed.
    pub min_inclusive: bool,
    /// Upper limit (`f64::INFINITY`: none).
    pub max: f64,
    /// Whether `max` itself is allowed.
    pub max_inclusive: bool,
    /// Unit of the value as written in the file (empty for a plain fraction).
    pub unit: &'static str,
    /// Where the limits come from.
    pub why: &'static str,
}

impl Bounds {
    const fn closed(min: f64, max: f64, unit: &'static str, why: &'static str) -> Self {
        Self {
            min,
            min_inclusive: true,
            max,
            max_inclusive: true,
            unit,
            why,
        }
    }

    const fn open_closed(min: f64, max: f64, unit: &'static str, why: &'static str) -> Self {
        Self {
            min,
            min_inclusive: false,
            max,
            max_inclusive: true,
            unit,
            why,
        }
    }

    const fn at_least(min: f64, unit: &'static str, why: &'static str) -> Self {
        Self::closed(min, f64::INFINITY, unit, why)
    }

    const fn above(min: f64, unit: &'static str, why: &'static str) -> Self {
        Self::open_closed(min, f64::INFINITY, unit, why)
    }

    /// Whether `x` is finite and within the bounds.
    pub fn contains(&self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        let above_min = if self.min_inclusive {
            x >= self.min
        } else {
            x > self.min
        };
        let below_max = if self.max_inclusive {
            x <= self.max
        } else {
            x < self.max
        };
        above_min && below_max
    }

    /// The bounds as text, e.g. `> 0 and <= 300 N`.
    pub fn describe(&self) -> String {
        let lower = format!(
            "{} {}",
            if self.min_inclusive { ">=" } else { ">" },
            self.min
        );
        let text = if self.max.is_finite() {
            let upper = format!(
                "{} {}",
                if self.max_inclusive { "<=" } else { "<" },
                self.max
            );
            format!("{lower} and {upper}")
        } else {
            lower
        };
        with_unit(&text, self.unit)
    }
}

fn with_unit(text: &str, unit: &str) -> String {
    if unit.is_empty() {
        text.to_string()
    } else {
        format!("{text} {unit}")
    }
}

/// Nominal push force, N. Operators push an intraosseous driver by hand; published
/// punch-through forces of manual needles are 100-250 N, so more than 300 N is not a plausible
/// sustained push (a 10 kN typo must not pass).
pub const PUSH_N: Bounds = Bounds::open_closed(
    0.0,
    300.0,
    "N",
    "a hand pushing on a driver: manual punch-through forces are 100-250 N, 300 N is the most a hand plausibly pushes",
);
/// Thickness of soft tissue, medullary cavity and far cortex, mm: at an adult or pediatric
/// insertion site none of these exceeds ~100 mm.
pub const LAYER_THICKNESS_MM: Bounds = Bounds::open_closed(
    0.0,
    100.0,
    "mm",
    "soft tissue, marrow cavity and far cortex at an insertion site are less than 100 mm thick",
);
/// Near cortex thickness, mm: real cortex is at most ~20 mm, but the deliberate "endless
/// cortex" test (breakthrough never comes) needs ~300 mm, so up to 500 mm is allowed.
pub const CORTEX_THICKNESS_MM: Bounds = Bounds::open_closed(
    0.0,
    500.0,
    "mm",
    "real cortex is at most ~20 mm; up to 500 mm is allowed for the deliberate endless-cortex test",
);
/// Threshold push force of a layer, N: a force threshold cannot be negative.
pub const F_TH_N: Bounds = Bounds::at_least(0.0, "N", "a threshold force cannot be negative");
/// Feed stiffness, N*rev/mm: zero would mean unlimited feed at any push.
pub const K_F: Bounds = Bounds::above(
    0.0,
    "N*rev/mm",
    "feed stiffness must be positive (zero would mean unlimited feed at any push)",
);
/// Cutting torque per unit feed, N*mm*rev/mm: cutting never drives the motor.
pub const K_T: Bounds = Bounds::at_least(
    0.0,
    "N*mm*rev/mm",
    "cutting torque cannot drive the motor: it must not be negative",
);
/// Friction torque, N*mm: friction never drives the motor.
pub const T_FR_NMM: Bounds = Bounds::at_least(
    0.0,
    "N*mm",
    "friction torque cannot drive the motor: it must not be negative",
);
/// Largest feed per revolution, mm/rev: zero would mean the needle never advances.
pub const F_MAX_MM_PER_REV: Bounds = Bounds::above(
    0.0,
    "mm/rev",
    "the largest feed per revolution must be positive (zero: the needle never advances)",
);
/// Breakthrough ramp length, mm. A ramp longer than the cortex is allowed and covers the whole
/// cortex (the resolved value is clipped to the cortex thickness); the upper limit is the
/// largest cortex allowed.
pub const RAMP_MM: Bounds = Bounds::closed(
    0.0,
    500.0,
    "mm",
    "a ramp longer than the cortex covers the whole cortex (it is clipped to the cortex thickness)",
);
/// Ramp end point as a fraction of the cortex parameters.
pub const RAMP_TO_FRACTION: Bounds = Bounds::closed(
    0.0,
    1.0,
    "",
    "the ramp ends at a fraction (0 to 1) of the cortex parameters, or at `medullary`",
);
/// Remaining cap thickness at fracture, mm (further bounded by the cortex thickness and the
/// ramp length).
pub const CAP_MM: Bounds = Bounds::at_least(0.0, "mm", "a cap thickness cannot be negative");
/// Punch-through force of a non-rotating needle, N: published manual punch-through forces are
/// 100-250 N; 10-1000 N leaves room for surrogates and deliberate extremes.
pub const PUNCH_THROUGH_N: Bounds = Bounds::closed(
    10.0,
    1000.0,
    "N",
    "published manual punch-through forces are 100-250 N; 10-1000 N covers surrogates and extremes",
);
/// Push oscillation amplitude, % of nominal: beyond 60 % the push nearly reverses, which no
/// operator does while drilling.
pub const OSCILLATION_AMPLITUDE_PCT: Bounds = Bounds::closed(
    0.0,
    60.0,
    "%",
    "beyond 60 % of the nominal push the operator would be letting go",
);
/// Push oscillation frequency, Hz: slow sway (0.1 Hz) up to physiological tremor (~12 Hz)
/// with margin.
pub const OSCILLATION_FREQUENCY_HZ: Bounds = Bounds::closed(
    0.1,
    20.0,
    "Hz",
    "hand push variation spans slow sway (0.1 Hz) to tremor (~12 Hz); 20 Hz leaves margin",
);
/// Push oscillation phase, degrees: one turn either way.
pub const OSCILLATION_PHASE_DEG: Bounds = Bounds::closed(
    -360.0,
    360.0,
    "deg",
    "a phase is at most one turn either way",
);
/// Push step change, % of nominal: easing off to 10 % of nominal at most, doubling at most.
pub const STEP_CHANGE_PCT: Bounds = Bounds::closed(
    -90.0,
    100.0,
    "%",
    "an operator eases off to no less than 10 % of the nominal push, or at most doubles it",
);
/// Push step rise time, ms: a hand cannot change its push faster than ~50 ms.
pub const STEP_RISE_MS: Bounds = Bounds::closed(
    50.0,
    2000.0,
    "ms",
    "a hand cannot change its push faster than ~50 ms (default 80 ms)",
);
/// Operator reaction time after the pop, ms: human reaction times are 150-400 ms; 2 s covers
/// a distracted operator.
pub const REACTION_MS: Bounds = Bounds::closed(
    0.0,
    2000.0,
    "ms",
    "human reaction times are 150-400 ms; 2 s covers a distracted operator",
);
/// Relaxed push as a fraction of nominal.
pub const RELAXED_FRACTION: Bounds = Bounds::closed(
    0.0,
    1.0,
    "",
    "the relaxed push is a fraction (0 to 1) of the nominal push",
);
/// Battery open-circuit voltage, V: the pack is 6.4 V fresh; 3-9 V covers a deeply
/// discharged pack up to an over-voltage test.
pub const BATTERY_OPEN_CIRCUIT_V: Bounds = Bounds::closed(
    3.0,
    9.0,
    "V",
    "the pack is 6.4 V fresh; 3-9 V covers deep discharge to over-voltage",
);
/// Battery internal resistance, ohm: 0.25 fresh, ~0.6 at end of life or cold; 2 ohm is a
/// failing pack.
pub const BATTERY_INTERNAL_RESISTANCE_OHM: Bounds = Bounds::closed(
    0.01,
    2.0,
    "ohm",
    "0.25 ohm fresh, ~0.6 ohm at end of life or cold; 2 ohm is a failing pack",
);
/// Motor winding temperature, degC: cold field storage (-20 degC) up to the winding insulation
/// limit (~120 degC).
pub const MOTOR_TEMPERATURE_C: Bounds = Bounds::closed(
    -20.0,
    120.0,
    "degC",
    "cold field storage (-20 degC) up to the winding insulation limit (~120 degC)",
);
/// Current-sense gain error, %: a shunt amplifier out by more than 20 % is broken, not
/// imperfect.
pub const SENSOR_GAIN_ERROR_PCT: Bounds = Bounds::closed(
    -20.0,
    20.0,
    "%",
    "a current-sense gain out by more than 20 % is a broken sensor, not an imperfect one",
);
/// Current-sense offset, mA.
pub const SENSOR_OFFSET_MA: Bounds = Bounds::closed(
    -500.0,
    500.0,
    "mA",
    "an offset beyond 500 mA is a broken sensor, not an imperfect one",
);
/// Current-sense noise, mA RMS per sample.
pub const SENSOR_NOISE_MA_RMS: Bounds = Bounds::closed(
    0.0,
    500.0,
    "mA",
    "noise beyond 500 mA RMS is a broken sensor, not an imperfect one",
);
/// Trial duration, s: the over-time limit (SR-08) is 10 s; a minute is ample.
pub const DURATION_S: Bounds = Bounds::closed(
    0.1,
    60.0,
    "s",
    "the over-time limit is 10 s (default duration 12 s); a minute is ample",
);
/// Smallest number of trials.
pub const TRIALS_MIN: u32 = 1;
/// Largest number of trials: 10 000 trials resolve a 1e-3 failure fraction; more belongs to a
/// dedicated campaign, not a scenario file.
pub const TRIALS_MAX: u32 = 10_000;
/// Default trigger press time, s.
pub const DEFAULT_PRESS_S: f64 = 0.01;
/// Default battery open-circuit voltage, V (fresh pack).
pub const DEFAULT_OPEN_CIRCUIT_V: f64 = 6.4;
/// Default battery internal resistance, ohm (fresh pack).
pub const DEFAULT_INTERNAL_RESISTANCE_OHM: f64 = 0.25;
/// Default motor winding temperature, degC.
pub const DEFAULT_MOTOR_TEMPERATURE_C: f64 = 20.0;
/// Rigs a requirement may name.
pub const RIGS: [&str; 3] = ["sim", "emu", "bench"];

// ---------------------------------------------------------------------------------------------
// File formats of the suite-level files
// ---------------------------------------------------------------------------------------------

/// The requirements file (`requirements.yaml`) as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementsFile {
    /// Version of this file format; only 1 exists.
    pub format_version: u32,
    /// Hazards the requirements control.
    pub hazards: Vec<HazardSpec>,
    /// Software requirements verified by the suite.
    pub requirements: Vec<RequirementSpec>,
}

/// One hazard as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HazardSpec {
    /// ID, e.g. `HZ-01`; unique in the file.
    pub id: String,
    /// Title.
    pub title: String,
}

/// One requirement as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementSpec {
    /// ID, e.g. `SR-01`; unique in the file.
    pub id: String,
    /// Short title.
    pub title: String,
    /// The requirement text.
    pub text: String,
    /// Hazard ID it controls (defined under `hazards`).
    pub hazard: String,
    /// The statistic the verdict is taken over.
    pub statistic: String,
    /// The text split into clauses, by letter (`a: ...`, `b: ...`): exactly the clauses the
    /// evaluator checks for this requirement.
    pub clauses: BTreeMap<String, String>,
    /// Named numeric limits used by the evaluator.
    pub limits: BTreeMap<String, LimitSpec>,
    /// Rigs on which this requirement can be verified (see [`RIGS`]).
    pub rigs: Vec<String>,
}

/// One limit as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Value (finite).
    pub value: f64,
    /// Unit, e.g. `ms`; `"1"` for a plain fraction.
    pub unit: String,
}

/// The bone profile library (`profiles.yaml`) as written.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesFile {
    /// Version of this file format; only 1 exists.
    pub format_version: u32,
    /// Shared soft-tissue parameters that profiles merge in with a YAML anchor
    /// (`soft_tissue: &soft` here, `{ <<: *soft, thickness_mm: 15 }` in a profile). It is not
    /// applied by itself.
    #[serde(default)]
    pub soft_tissue: Option<LayerSpec>,
    /// Profiles by name.
    pub profiles: BTreeMap<String, ProfileSpec>,
}

/// One bone profile as written: every parameter is given, except the far cortex strength,
/// which defaults to the near cortex's.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Patient population.
    pub population: Population,
    /// Nominal push force of an operator on this bone, N.
    pub push_n: f64,
    /// Soft tissue (every field required).
    pub soft_tissue: LayerSpec,
    /// Near cortex (every field required).
    pub cortex: LayerSpec,
    /// Medullary cavity (every field required).
    pub medullary: LayerSpec,
    /// Far cortex (thickness required; strength defaults to the near cortex's).
    pub far_cortex: LayerSpec,
    /// Breakthrough ramp length, mm.
    pub ramp_mm: f64,
    /// Ramp end point.
    pub ramp_to: RampTarget,
    /// Cap thickness at fracture, mm.
    pub cap_mm: f64,
    /// Punch-through force of a non-rotating needle, N.
    pub punch_through_n: f64,
}

impl ProfileSpec {
    /// The profile as a bone specification (every field present).
    pub fn to_bone_spec(&self) -> BoneSpec {
        BoneSpec {
            profile: None,
            population: Some(self.population),
            soft_tissue: Some(self.soft_tissue.clone()),
            cortex: Some(self.cortex.clone()),
            medullary: Some(self.medullary.clone()),
            far_cortex: Some(self.far_cortex.clone()),
            ramp_mm: Some(self.ramp_mm),
            ramp_to: Some(self.ramp_to),
            cap_mm: Some(self.cap_mm),
            punch_through_n: Some(self.punch_through_n),
        }
    }
}

/// A validated bone profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Name, as in `bone.profile`.
    pub name: String,
    /// Nominal push force, N (the default of `operator.push_n`).
    pub push_n: f64,
    /// The profile's parameters as written: scenario overrides are applied to these field by
    /// field, so the far cortex strength follows an overridden near cortex unless the profile
    /// sets it explicitly.
    pub spec: BoneSpec,
    /// The profile resolved on its own.
    pub bone: Bone,
}

/// The validated bone profile library of a suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Profiles {
    /// Profiles by name.
    pub profiles: BTreeMap<String, Profile>,
    /// Source file.
    pub source: Source,
}

impl Profiles {
    /// Looks up a profile by name.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Profile names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }
}

/// A scenario suite: the requirements, profiles and scenarios found under the given paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// Suite root: the directory holding `requirements.yaml` and `profiles.yaml`.
    pub root: PathBuf,
    /// The requirements file.
    pub requirements: Requirements,
    /// The bone profile library.
    pub profiles: Profiles,
    /// Scenarios, sorted by file path.
    pub scenarios: Vec<Scenario>,
    /// The known residual anomaly register (`anomalies.yaml` at the root), empty without one.
    pub anomalies: Vec<super::KnownAnomaly>,
}

// ---------------------------------------------------------------------------------------------
// Problems and the error type
// ---------------------------------------------------------------------------------------------

/// One problem found while loading: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File the problem is in (as given or found).
    pub file: PathBuf,
    /// Line, 1-based; 0 when the problem concerns the file as a whole (it does not exist, it
    /// cannot be read, ...).
    pub line: usize,
    /// Column, 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// YAML path of the offending node, e.g. `operator.oscillation.frequency_hz` or
    /// `verifies[2]`; empty for the document as a whole.
    pub yaml_path: String,
    /// What is wrong, as a lowercase sentence fragment.
    pub message: String,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.yaml_path.is_empty() {
            write!(f, "{}: ", self.yaml_path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

/// A problem with the source text it points into, for miette rendering.
#[derive(Debug, Clone)]
struct ProblemDiagnostic {
    problem: Problem,
    source: Option<NamedSource<Arc<str>>>,
    /// Byte offset and length of the labelled span.
    span: (usize, usize),
}

impl fmt::Display for ProblemDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The snippet header shows `file:line:column`; without a snippet, say it here.
        if self.source.is_none() {
            write!(f, "{}: ", self.problem.file.display())?;
        }
        if !self.problem.yaml_path.is_empty() {
            write!(f, "{}: ", self.problem.yaml_path)?;
        }
        write!(f, "{}", self.problem.message)
    }
}

impl std::error::Error for ProblemDiagnostic {}

impl Diagnostic for ProblemDiagnostic {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let label = if self.problem.yaml_path.is_empty() {
            "here".to_string()
        } else {
            self.problem.yaml_path.clone()
        };
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(Some(label), self.span),
        )))
    }
}

/// Everything wrong with a suite (or a single file): one [`Problem`] per finding, in file
/// order. As a [`miette::Diagnostic`], each problem is a related diagnostic with its source
/// snippet.
#[derive(Debug, Clone)]
pub struct LoadError {
    problems: Vec<Problem>,
    diagnostics: Vec<ProblemDiagnostic>,
    /// What was read ("scenario files", "rig file").
    what: &'static str,
}

impl LoadError {
    fn new(diagnostics: Vec<ProblemDiagnostic>) -> Self {
        Self {
            problems: diagnostics.iter().map(|d| d.problem.clone()).collect(),
            diagnostics,
            what: "scenario files",
        }
    }

    /// All problems found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} problem{} in {}:",
            if n == 1 { "" } else { "s" },
            self.what
        )?;
        // One line each; the help texts are in the problems and the related diagnostics.
        for p in &self.problems {
            let short = Problem {
                help: None,
                ..p.clone()
            };
            write!(f, "\n  {short}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl Diagnostic for LoadError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("iohil::scenario::load"))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics.iter().map(|d| d as &dyn Diagnostic),
        ))
    }
}

/// Sorts the problems of one file by position (stable: same position keeps check order).
fn by_position(mut problems: Vec<ProblemDiagnostic>) -> Vec<ProblemDiagnostic> {
    problems.sort_by_key(|d| (d.problem.line, d.problem.column));
    problems
}

fn file_problem(file: &Path, message: String, help: Option<String>) -> ProblemDiagnostic {
    ProblemDiagnostic {
        problem: Problem {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            yaml_path: String::new(),
            message,
            help,
        },
        source: None,
        span: (0, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Loads and validates every scenario under `paths` (files, or directories searched
/// recursively for `*.yaml` / `*.yml`, excluding `requirements.yaml` and `profiles.yaml`;
/// sorted by path for determinism). The suite root is the nearest ancestor directory (of each
/// path) containing `requirements.yaml`; it must also contain `profiles.yaml`. All paths must
/// share one root.
///
/// All problems of all files are reported together. When the requirements or profiles file
/// has problems, the scenarios are not checked (every check would be suspect).
pub fn load_suite(paths: &[PathBuf]) -> Result<Suite, LoadError> {
    let mut out: Vec<ProblemDiagnostic> = Vec::new();
    if paths.is_empty() {
        out.push(file_problem(
            Path::new(""),
            "no scenario paths given".into(),
            Some("pass scenario files or directories, e.g. `scenarios/`".into()),
        ));
        return Err(LoadError::new(out));
    }

    let mut files: Vec<PathBuf> = Vec::new();
    // (root as found, canonical root, the path that led to it)
    let mut root: Option<(PathBuf, PathBuf, PathBuf)> = None;
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                let message = if e.kind() == std::io::ErrorKind::NotFound {
                    "path does not exist".to_string()
                } else {
                    format!("cannot access path: {}", lower_first(&e.to_string()))
                };
                out.push(file_problem(
                    path,
                    message,
                    Some("paths are relative to the current directory".into()),
                ));
                continue;
            }
        };
        let mut found_files = Vec::new();
        if meta.is_dir() {
            if let Err((p, e)) = collect_yaml(path, &mut found_files) {
                out.push(file_problem(
                    &p,
                    format!("cannot read directory: {}", lower_first(&e.to_string())),
                    None,
                ));
            }
            if found_files.is_empty() {
                out.push(file_problem(
                    path,
                    "no scenario files (*.yaml, *.yml) in this directory".into(),
                    Some(format!(
                        "scenario files are searched recursively; `{REQUIREMENTS_FILE}`, `{PROFILES_FILE}` and `{TOLERANCES_FILE}` are not scenarios"
                    )),
                ));
            }
        } else {
            found_files.push(path.clone());
        }

        let Some(found) = find_root(path, meta.is_dir()) else {
            out.push(file_problem(
                path,
                format!("no `{REQUIREMENTS_FILE}` found in this directory or any parent"),
                Some("run from the repository or pass a path under scenarios/".into()),
            ));
            continue;
        };
        let canonical = std::fs::canonicalize(&found).unwrap_or_else(|_| found.clone());
        match &root {
            None => root = Some((found, canonical, path.clone())),
            Some((first, first_canonical, first_path)) if *first_canonical != canonical => {
                // Its files are not checked against another suite's requirements.
                out.push(file_problem(
                    path,
                    format!(
                        "path belongs to the suite at `{}`, but `{}` belongs to the suite at `{}`",
                        found.display(),
                        first_path.display(),
                        first.display()
                    ),
                    Some("load one suite at a time".into()),
                ));
                continue;
            }
            Some(_) => {}
        }
        files.extend(found_files);
    }

    let Some((root, canonical_root, _)) = root else {
        return Err(LoadError::new(out));
    };
    // Every file must really be inside the suite (a symlink or `..` must not bring in a file
    // from elsewhere under the suite's requirements).
    files.retain(|file| match std::fs::canonicalize(file) {
        Ok(real) if real.starts_with(&canonical_root) => true,
        Ok(real) => {
            out.push(file_problem(
                file,
                format!(
                    "this file resolves to `{}`, outside the suite at `{}`",
                    real.display(),
                    canonical_root.display()
                ),
                Some("scenario files must be inside the suite directory (no links out)".into()),
            ));
            false
        }
        Err(_) => true,
    });
    if !out.is_empty() {
        return Err(LoadError::new(out));
    }

    let requirements = match load_requirements(&root.join(REQUIREMENTS_FILE)) {
        Ok(r) => Some(r),
        Err(e) => {
            out.extend(e.diagnostics);
            None
        }
    };
    let profiles_path = root.join(PROFILES_FILE);
    let profiles = if profiles_path.is_file() {
        match load_profiles(&profiles_path) {
            Ok(p) => Some(p),
            Err(e) => {
                out.extend(e.diagnostics);
                None
            }
        }
    } else {
        out.push(file_problem(
            &profiles_path,
            format!("the suite root has `{REQUIREMENTS_FILE}` but no `{PROFILES_FILE}`"),
            Some("a suite root holds both the requirements and the bone profiles".into()),
        ));
        None
    };
    let (Some(requirements), Some(profiles)) = (requirements, profiles) else {
        return Err(LoadError::new(out));
    };

    // Sorted, and each file once even when named twice (a directory and a file in it).
    files.sort();
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));

    let mut scenarios = Vec::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for file in &files {
        let doc = match read_doc(file) {
            Ok(doc) => doc,
            Err(p) => {
                out.push(*p);
                continue;
            }
        };
        let mut sink = Vec::new();
        let (id, scenario) = check_scenario(&doc, &requirements, &profiles, &mut sink);
        if let Some(id) = id {
            if let Some(first) = ids.get(&id) {
                sink.push(doc.at(
                    "id",
                    format!("duplicate scenario id `{id}`"),
                    Some(format!(
                        "first used at {first}; scenario ids must be unique in a suite"
                    )),
                ));
            } else {
                let here = doc.at("id", String::new(), None).problem;
                ids.insert(
                    id,
                    format!("{}:{}:{}", here.file.display(), here.line, here.column),
                );
            }
        }
        if sink.is_empty() {
            if let Some(s) = scenario {
                scenarios.push(s);
            }
        }
        out.extend(by_position(sink));
    }

    if !out.is_empty() {
        return Err(LoadError::new(out));
    }
    let register = root.join(super::ANOMALIES_FILE);
    let anomalies = if register.is_file() {
        load_anomalies(&register, &requirements)?
    } else {
        Vec::new()
    };
    Ok(Suite {
        root,
        requirements,
        profiles,
        scenarios,
        anomalies,
    })
}

/// Loads and validates a known anomaly register against the suite's requirements: IDs
/// `AN-nnnn` and unique, requirements and hazard defined, at least one scenario, a risk
/// evaluation. Whether its scenarios exist is checked by the run that has them.
pub fn load_anomalies(
    path: &Path,
    requirements: &Requirements,
) -> Result<Vec<super::KnownAnomaly>, LoadError> {
    let register: super::AnomalyRegister = load_yaml_file(
        path,
        "anomaly register",
        |r: &super::AnomalyRegister, problem| {
            if r.format_version != 1 {
                problem(
                    "format_version",
                    format!("format_version {} is not supported", r.format_version),
                    Some("this harness reads format_version 1".into()),
                );
            }
            let mut seen = std::collections::HashSet::new();
            for (i, a) in r.anomalies.iter().enumerate() {
                let at = format!("anomalies[{i}]");
                let well_formed = a.id.len() == 7
                    && a.id.starts_with("AN-")
                    && a.id[3..].bytes().all(|b| b.is_ascii_digit());
                if !well_formed {
                    problem(
                        &format!("{at}.id"),
                        format!("anomaly id `{}` is not `AN-` and four digits", a.id),
                        Some("e.g. `AN-0001`".into()),
                    );
                } else if !seen.insert(a.id.as_str()) {
                    problem(
                        &format!("{at}.id"),
                        format!("duplicate anomaly id `{}`", a.id),
                        Some("anomaly ids are unique in a register".into()),
                    );
                }
                if a.scenarios.is_empty() {
                    problem(
                        &format!("{at}.scenarios"),
                        "no scenario reproduces it".into(),
                        Some("an anomaly is registered with the scenarios that show it".into()),
                    );
                }
                if a.requirements.is_empty() {
                    problem(
                        &format!("{at}.requirements"),
                        "no requirement named".into(),
                        Some("name the requirements it makes those scenarios fail".into()),
                    );
                }
                for (j, id) in a.requirements.iter().enumerate() {
                    if requirements.get(id).is_none() {
                        let known = requirements.requirements.iter().map(|r| r.id.as_str());
                        problem(
                            &format!("{at}.requirements[{j}]"),
                            format!("unknown requirement `{id}`"),
                            Some(format!(
                                "{}requirements: {}",
                                suggestion(id, known.clone()),
                                backticked(known)
                            )),
                        );
                    }
                }
                if !requirements.hazards.iter().any(|h| h.id == a.hazard) {
                    problem(
                        &format!("{at}.hazard"),
                        format!("unknown hazard `{}`", a.hazard),
                        Some(format!(
                            "hazards: {}",
                            backticked(requirements.hazards.iter().map(|h| h.id.as_str()))
                        )),
                    );
                }
                if a.risk.trim().is_empty() {
                    problem(
                        &format!("{at}.risk"),
                        "no risk evaluation".into(),
                        Some("say what happens, how likely (with the evidence) and why it is accepted".into()),
                    );
                }
                // Bounds: per scenario of the entry, per clause of a requirement it names.
                let clauses: Vec<&str> = (a.requirements.iter())
                    .filter_map(|id| requirements.get(id))
                    .flat_map(|r| r.clauses.iter().map(|c| c.id.as_str()))
                    .collect();
                for (scenario, bounds) in &a.bounds {
                    let here = format!("{at}.bounds.{scenario}");
                    if !a.scenarios.contains(scenario) {
                        problem(
                            &here,
                            format!("`{scenario}` is not one of this entry's scenarios"),
                            Some(format!(
                                "scenarios: {}",
                                backticked(a.scenarios.iter().map(String::as_str))
                            )),
                        );
                    }
                    for (clause, bound) in bounds {
                        if !clauses.contains(&clause.as_str()) {
                            problem(
                                &format!("{here}.{clause}"),
                                format!("`{clause}` is not a clause of the requirements this entry names"),
                                Some(format!("clauses: {}", backticked(clauses.iter().copied()))),
                            );
                        }
                        if !(bound.is_finite() && *bound > 0.0) {
                            problem(
                                &format!("{here}.{clause}"),
                                format!("bound {bound} is not a positive number"),
                                Some("the worst value the risk evaluation accepts, in the clause's unit".into()),
                            );
                        }
                    }
                }
            }
        },
    )?;
    Ok(register.anomalies)
}

/// Loads a single scenario text against given requirements and profiles (used by tests and by
/// tools that write scenarios). `path` is only used for diagnostics and [`Source`].
pub fn load_scenario_str(
    path: &Path,
    text: &str,
    requirements: &Requirements,
    profiles: &Profiles,
) -> Result<Scenario, LoadError> {
    load_scenario_text(path, text, |doc, sink| {
        check_scenario(doc, requirements, profiles, sink)
    })
}

/// [`load_scenario_str`] for a text whose parse the caller already holds: `file` must be
/// what `text` deserialises to (the fuzz campaign builds both from one case; its tests check
/// that they agree). The checks, the diagnostics (they point into `text`) and the scenario's
/// source (`text`'s SHA-256) are the same; only the YAML parsing is skipped.
pub fn load_scenario_parsed(
    path: &Path,
    text: &str,
    file: ScenarioFile,
    requirements: &Requirements,
    profiles: &Profiles,
) -> Result<Scenario, LoadError> {
    load_scenario_text(path, text, |doc, sink| {
        check_scenario_file(doc, file, requirements, profiles, sink)
    })
}

/// The scenario `check` builds from the document of `text` at `path`, or every problem it
/// reported.
fn load_scenario_text(
    path: &Path,
    text: &str,
    check: impl FnOnce(&Doc, &mut Vec<ProblemDiagnostic>) -> (Option<String>, Option<Scenario>),
) -> Result<Scenario, LoadError> {
    let doc = Doc::new(path, Arc::from(text), crate::sha256_hex(text.as_bytes()));
    let mut sink = Vec::new();
    let (_, scenario) = check(&doc, &mut sink);
    match scenario {
        Some(s) if sink.is_empty() => Ok(s),
        _ => Err(LoadError::new(by_position(sink))),
    }
}

/// Loads and validates a requirements file.
pub fn load_requirements(path: &Path) -> Result<Requirements, LoadError> {
    let doc = read_doc(path).map_err(|p| LoadError::new(vec![*p]))?;
    let mut sink = Vec::new();
    match check_requirements(&doc, &mut sink) {
        Some(r) if sink.is_empty() => Ok(r),
        _ => Err(LoadError::new(by_position(sink))),
    }
}

/// Loads and validates a bone profile library.
pub fn load_profiles(path: &Path) -> Result<Profiles, LoadError> {
    let doc = read_doc(path).map_err(|p| LoadError::new(vec![*p]))?;
    let mut sink = Vec::new();
    match check_profiles(&doc, &mut sink) {
        Some(p) if sink.is_empty() => Ok(p),
        _ => Err(LoadError::new(by_position(sink))),
    }
}

/// Loads another kind of YAML file (`what`: "rig file") with the scenario files' reading rules
/// and diagnostics: UTF-8, syntax, duplicate keys, unknown keys and wrong types point at file,
/// line and column. `check` then validates values; it reports each problem with the YAML path
/// (`load.port`) it is about, and the problem points there.
pub fn load_yaml_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
    check: impl FnOnce(&T, &mut dyn FnMut(&str, String, Option<String>)),
) -> Result<T, LoadError> {
    let error = |problems| LoadError {
        what,
        ..LoadError::new(problems)
    };
    let doc = read_doc(path).map_err(|p| error(vec![*p]))?;
    let value: T = doc.parse().map_err(|p| error(vec![*p]))?;
    let mut sink = Vec::new();
    check(&value, &mut |yaml_path, message, help| {
        sink.push(doc.at(yaml_path, message, help));
    });
    if sink.is_empty() {
        Ok(value)
    } else {
        Err(error(by_position(sink)))
    }
}

/// JSON Schema (pretty JSON string) of the scenario file format ([`ScenarioFile`]), for
/// editors and yaml-language-server.
pub fn scenario_schema_json() -> String {
    let schema = schemars::schema_for!(ScenarioFile);
    format!("{:#}", schema.as_value())
}

// ---------------------------------------------------------------------------------------------
// Files and directories
// ---------------------------------------------------------------------------------------------

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let mut result = Ok(());
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                result = Err((dir.to_path_buf(), e));
                continue;
            }
        };
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if let Err(e) = collect_yaml(&path, files) {
                result = Err(e);
            }
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml
            && ![
                REQUIREMENTS_FILE,
                PROFILES_FILE,
                TOLERANCES_FILE,
                ANOMALIES_FILE,
            ]
            .contains(&name.as_ref())
            && path.is_file()
        {
            files.push(path);
        }
    }
    result
}

fn find_root(path: &Path, is_dir: bool) -> Option<PathBuf> {
    // Canonical: `..` and symlinks resolved, so a path cannot borrow a suite it is not in.
    let abs = std::fs::canonicalize(path).ok()?;
    let start = if is_dir { abs.as_path() } else { abs.parent()? };
    start
        .ancestors()
        .find(|dir| dir.join(REQUIREMENTS_FILE).is_file())
        .map(Path::to_path_buf)
}

/// Largest input file read, bytes: a scenario is a few kilobytes; anything near this is not
/// one, and reading it whole would only cost time and memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

fn read_doc(path: &Path) -> Result<Doc, Box<ProblemDiagnostic>> {
    use std::io::Read as _;
    let unreadable = |e: std::io::Error| {
        let message = if e.kind() == std::io::ErrorKind::NotFound {
            "file does not exist".to_string()
        } else {
            format!("cannot read file: {}", lower_first(&e.to_string()))
        };
        Box::new(file_problem(path, message, None))
    };
    // Looked at before it is opened: opening a FIFO would wait for a writer for ever.
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(Box::new(file_problem(
            path,
            "not a regular file".into(),
            Some("name a YAML file (not a device, a pipe or a directory)".into()),
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Box::new(file_problem(
            path,
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES}-byte limit for scenario, requirements, profile and rig files",
                meta.len()
            ),
            Some("a scenario file is a few kilobytes: is this the right file?".into()),
        )));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Box::new(file_problem(
            path,
            format!("file grew past the {MAX_FILE_BYTES}-byte limit while it was read"),
            None,
        )));
    }
    let sha = crate::sha256_hex(&bytes);
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Doc::new(path, Arc::from(text), sha)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bad = e.as_bytes().get(valid).copied().unwrap_or(0);
            let lossy: Arc<str> = Arc::from(String::from_utf8_lossy(e.as_bytes()).into_owned());
            // The lossy text equals the original up to the first invalid byte.
            let doc = Doc::new(path, lossy, sha);
            Err(Box::new(doc.at_byte(
                valid,
                1,
                String::new(),
                format!("file is not valid utf-8 (byte 0x{bad:02x})"),
                Some("save the file as UTF-8".into()),
            )))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Position tree: YAML paths <-> positions
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                segs.push(Seg::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    segs
}

#[derive(Debug)]
enum Kind {
    Scalar(String),
    Seq(Vec<usize>),
    Map(Vec<(usize, usize)>),
    Alias(usize),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Byte range in the text.
    start: usize,
    end: usize,
}

#[derive(Debug, Default)]
struct Tree {
    nodes: Vec<Node>,
    root: Option<usize>,
    anchors: HashMap<usize, usize>,
}

/// Where a byte position falls in the tree.
struct Hit {
    segs: Vec<Seg>,
    node: usize,
    on_key: bool,
}

impl Tree {
    /// Builds the tree of the first document; on a syntax error returns its byte position and
    /// message.
    fn build(text: &str, starts: &[usize]) -> Result<Self, (usize, String)> {
        let byte = |m: &Marker| {
            m.byte_offset()
                .unwrap_or_else(|| byte_of(text, starts, m.line(), m.col() + 1))
        };
        let mut tree = Tree::default();
        // Open collections: (node, pending mapping key).
        let mut stack: Vec<(usize, Option<usize>)> = Vec::new();
        for item in YamlParser::new_from_str(text) {
            let (event, span) = item.map_err(|e| (byte(e.marker()), e.info()))?;
            let (start, end) = (byte(&span.start), byte(&span.end));
            let (kind, anchor, opens) = match event {
                Event::Scalar(value, _, anchor, _) => {
                    (Kind::Scalar(value.into_owned()), anchor, false)
                }
                Event::Alias(id) => (Kind::Alias(id), 0, false),
                Event::SequenceStart(_, anchor, _) => (Kind::Seq(Vec::new()), anchor, true),
                Event::MappingStart(_, anchor, _) => (Kind::Map(Vec::new()), anchor, true),
                Event::SequenceEnd | Event::MappingEnd => {
                    if let Some((id, _)) = stack.pop() {
                        let node = &mut tree.nodes[id];
                        node.end = end.max(node.start);
                    }
                    continue;
                }
                Event::DocumentEnd => break,
                _ => continue,
            };
            let id = tree.nodes.len();
            tree.nodes.push(Node { kind, start, end });
            if anchor != 0 {
                tree.anchors.insert(anchor, id);
            }
            match stack.last_mut() {
                None => {
                    if tree.root.is_none() {
                        tree.root = Some(id);
                    }
                }
                Some((parent, pending)) => match (&mut tree.nodes[*parent].kind, pending.take()) {
                    (Kind::Map(entries), Some(key)) => entries.push((key, id)),
                    (Kind::Map(_), None) => *pending = Some(id),
                    (Kind::Seq(items), _) => items.push(id),
                    _ => {}
                },
            }
            if opens {
                stack.push((id, None));
            }
        }
        Ok(tree)
    }

    fn scalar(&self, id: usize) -> Option<&str> {
        match &self.nodes.get(id)?.kind {
            Kind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    fn key_text(&self, id: usize) -> String {
        self.scalar(id).unwrap_or("?").to_string()
    }

    fn deref(&self, mut id: usize) -> usize {
        for _ in 0..32 {
            match self.nodes.get(id).map(|n| &n.kind) {
                Some(Kind::Alias(a)) => match self.anchors.get(a) {
                    Some(&target) => id = target,
                    None => return id,
                },
                _ => return id,
            }
        }
        id
    }

    /// The entry `key` of mapping `map`, following merge keys (`<<`).
    fn map_get(&self, map: usize, key: &str, depth: usize) -> Option<(usize, usize)> {
        let Kind::Map(entries) = &self.nodes.get(map)?.kind else {
            return None;
        };
        if let Some(&entry) = entries
            .iter()
            .rev()
            .find(|(k, _)| self.scalar(*k) == Some(key))
        {
            return Some(entry);
        }
        if depth > 8 {
            return None;
        }
        for &(k, v) in entries {
            if self.scalar(k) != Some("<<") {
                continue;
            }
            let v = self.deref(v);
            let sources = match &self.nodes[v].kind {
                Kind::Seq(items) => items.iter().map(|&i| self.deref(i)).collect(),
                _ => vec![v],
            };
            if let Some(found) = sources
                .into_iter()
                .find_map(|s| self.map_get(s, key, depth + 1))
            {
                return Some(found);
            }
        }
        None
    }

    /// Follows `segs` from the root: the last key node and value node reached, and whether
    /// the whole path was found.
    fn lookup(&self, segs: &[Seg]) -> Option<(Option<usize>, usize, bool)> {
        let mut cur = self.deref(self.root?);
        let mut key = None;
        for seg in segs {
            let next = match (seg, &self.nodes[cur].kind) {
                (Seg::Key(k), Kind::Map(_)) => self.map_get(cur, k, 0).map(|(k, v)| (Some(k), v)),
                (Seg::Index(i), Kind::Seq(items)) => items.get(*i).map(|&v| (None, v)),
                _ => None,
            };
            match next {
                Some((k, v)) => {
                    key = k;
                    cur = self.deref(v);
                }
                None => return Some((key, cur, false)),
            }
        }
        Some((key, cur, true))
    }

    /// The node a byte position falls on, and its path.
    fn path_at(&self, byte: usize) -> Option<Hit> {
        let mut cur = self.root?;
        let mut segs = Vec::new();
        loop {
            match &self.nodes[cur].kind {
                Kind::Map(entries) => {
                    let Some(&(k, v)) = entries
                        .iter()
                        .rev()
                        .find(|(k, _)| self.nodes[*k].start <= byte)
                    else {
                        break;
                    };
                    segs.push(Seg::Key(self.key_text(k)));
                    let key = &self.nodes[k];
                    if byte == key.start || byte < key.end {
                        return Some(Hit {
                            segs,
                            node: k,
                            on_key: true,
                        });
                    }
                    if self.nodes[v].start > byte {
                        return Some(Hit {
                            segs,
                            node: v,
                            on_key: false,
                        });
                    }
                    cur = v;
                }
                Kind::Seq(items) => {
                    let Some((i, &item)) = items
                        .iter()
                        .enumerate()
                        .rev()
                        .find(|(_, &it)| self.nodes[it].start <= byte)
                    else {
                        break;
                    };
                    segs.push(Seg::Index(i));
                    cur = item;
                }
                _ => break,
            }
        }
        Some(Hit {
            segs,
            node: cur,
            on_key: false,
        })
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// Byte offset of 1-based `line` and character `column`, clamped to the line.
fn byte_of(text: &str, starts: &[usize], line: usize, column: usize) -> usize {
    let Some(&start) = starts.get(line.saturating_sub(1)) else {
        return text.len();
    };
    let rest = text.get(start..).unwrap_or("");
    for (i, (b, ch)) in rest.char_indices().enumerate() {
        if i + 1 >= column || ch == '\n' {
            return start + b;
        }
    }
    text.len()
}

// ---------------------------------------------------------------------------------------------
// A document being checked
// ---------------------------------------------------------------------------------------------

struct Doc {
    path: PathBuf,
    text: Arc<str>,
    sha256: String,
    starts: Vec<usize>,
    /// Built on first use: only a problem needs a position (a valid file never builds it).
    tree: std::sync::OnceLock<Result<Tree, (usize, String)>>,
}

impl Doc {
    fn new(path: &Path, text: Arc<str>, sha256: String) -> Self {
        // A byte-order mark is invisible in editors: positions count from after it.
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => Arc::from(rest),
            None => text,
        };
        let starts = line_starts(&text);
        Self {
            path: path.to_path_buf(),
            text,
            sha256,
            starts,
            tree: std::sync::OnceLock::new(),
        }
    }

    /// The position tree, or the YAML syntax error that kept it from being built.
    fn built_tree(&self) -> &Result<Tree, (usize, String)> {
        self.tree
            .get_or_init(|| Tree::build(&self.text, &self.starts))
    }

    fn source(&self) -> Source {
        Source {
            path: self.path.clone(),
            sha256: self.sha256.clone(),
        }
    }

    fn tree(&self) -> Option<&Tree> {
        self.built_tree().as_ref().ok()
    }

    fn line_col(&self, byte: usize) -> (usize, usize) {
        let byte = byte.min(self.text.len());
        let idx = match self.starts.binary_search(&byte) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(idx).copied().unwrap_or(0);
        let col = self.text.get(start..byte).map_or(0, |s| s.chars().count()) + 1;
        (idx + 1, col)
    }

    /// A problem at a byte range.
    fn at_byte(
        &self,
        byte: usize,
        len: usize,
        yaml_path: String,
        message: String,
        help: Option<String>,
    ) -> ProblemDiagnostic {
        let byte = byte.min(self.text.len());
        let len = len.max(1).min(self.text.len() - byte);
        let (line, column) = self.line_col(byte);
        ProblemDiagnostic {
            problem: Problem {
                file: self.path.clone(),
                line,
                column,
                yaml_path,
                message,
                help,
            },
            source: Some(NamedSource::new(
                self.path.display().to_string(),
                self.text.clone(),
            )),
            span: (byte, len),
        }
    }

    /// Byte range to point at for the node at `path` (the value of a scalar, the key of a
    /// collection), or at its nearest ancestor present in the file.
    fn locate(&self, path: &str) -> (usize, usize) {
        let Some((key, node, complete)) = self
            .tree()
            .and_then(|t| t.lookup(&parse_path(path)).map(|r| (t, r)))
            .map(|(t, (k, n, c))| (k.map(|k| &t.nodes[k]), &t.nodes[n], c))
        else {
            return (0, 1);
        };
        let scalar = matches!(node.kind, Kind::Scalar(_) | Kind::Alias(_));
        match key {
            Some(k) if !(complete && scalar) => (k.start, k.end.saturating_sub(k.start)),
            _ if scalar => (node.start, node.end.saturating_sub(node.start)),
            // A collection without a key (the document, a sequence item): its first line.
            _ => {
                let rest = self.text.get(node.start..node.end).unwrap_or("");
                (node.start, rest.find('\n').unwrap_or(rest.len()))
            }
        }
    }

    /// Whether `path` is written in the file (directly, through an alias or a merge key).
    fn has(&self, path: &str) -> bool {
        self.tree()
            .and_then(|t| t.lookup(&parse_path(path)))
            .is_some_and(|(_, _, complete)| complete)
    }

    /// A problem at the node at `path`.
    fn at(&self, path: &str, message: String, help: Option<String>) -> ProblemDiagnostic {
        let (byte, len) = self.locate(path);
        self.at_byte(byte, len, path.to_string(), message, help)
    }

    /// A problem about `yaml_path`, pointed at the node at `location_path`.
    fn at_other(
        &self,
        location_path: &str,
        yaml_path: &str,
        message: String,
        help: Option<String>,
    ) -> ProblemDiagnostic {
        let (byte, len) = self.locate(location_path);
        self.at_byte(byte, len, yaml_path.to_string(), message, help)
    }

    /// Deserializes the document, or returns its first YAML or type error.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Box<ProblemDiagnostic>> {
        // A syntax error is reported as the position tree's parser words it; the tree is only
        // built when deserialising fails (the same parser reads both, so a text the
        // deserialiser accepts has no syntax error in its first document).
        serde_saphyr::from_str::<T>(&self.text).map_err(|e| {
            if let Err((byte, message)) = self.built_tree() {
                return Box::new(self.at_byte(
                    *byte,
                    1,
                    String::new(),
                    format!("yaml syntax error: {}", lower_first(message)),
                    None,
                ));
            }
            Box::new(self.serde_problem(&e))
        })
    }

    fn serde_problem(&self, err: &serde_saphyr::Error) -> ProblemDiagnostic {
        use serde_saphyr::Error as E;
        let mut inner = err;
        while let E::WithSnippet { error, .. } | E::AliasError { error, .. } = inner {
            inner = error;
        }
        let location = inner
            .location()
            .filter(|l| l.line() > 0)
            .or_else(|| err.location());
        let Some(location) = location else {
            let message = lower_first(&UserMessageFormatter.format_message(inner));
            return self.at_byte(0, 1, String::new(), message, None);
        };
        let line = usize::try_from(location.line()).unwrap_or(usize::MAX);
        let column = usize::try_from(location.column()).unwrap_or(usize::MAX);
        let byte = byte_of(&self.text, &self.starts, line, column);
        let hit = self.tree().and_then(|t| t.path_at(byte).map(|h| (t, h)));
        let (path, node_text, node_len, node_kind) = match &hit {
            Some((t, h)) => {
                let mut segs = h.segs.clone();
                if segs.last() == Some(&Seg::Key("<<".into())) {
                    segs.pop();
                }
                let node = &t.nodes[h.node];
                let len = if node.start == byte {
                    node.end.saturating_sub(node.start)
                } else {
                    1
                };
                let kind = match node.kind {
                    Kind::Seq(_) => "a sequence",
                    Kind::Map(_) => "a mapping",
                    _ => "",
                };
                (path_string(&segs), t.scalar(h.node), len, kind)
            }
            None => (String::new(), None, 1, ""),
        };
        let found = node_text.map_or(String::new(), |s| format!(", found `{s}`"));

        match inner {
            E::SerdeUnknownField {
                field, expected, ..
            } => {
                let help = match did_you_mean(field, expected.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("expected one of {}", backticked(expected.iter().copied())),
                };
                self.at_byte(
                    byte,
                    node_len,
                    path,
                    format!("unknown field `{field}`"),
                    Some(help),
                )
            }
            E::SerdeMissingField { field, .. } => {
                // The error sits on a key (or the start) of the mapping that lacks the field.
                let mapping = match &hit {
                    Some((t, h)) if h.on_key || !matches!(t.nodes[h.node].kind, Kind::Map(_)) => {
                        path_string(&h.segs[..h.segs.len().saturating_sub(1)])
                    }
                    _ => path.clone(),
                };
                let yaml_path = if mapping.is_empty() {
                    (*field).to_string()
                } else {
                    format!("{mapping}.{field}")
                };
                let (b, l) = self.locate(&mapping);
                self.at_byte(
                    b,
                    l,
                    yaml_path,
                    format!("missing required field `{field}`"),
                    None,
                )
            }
            E::DuplicateMappingKey { key, .. } => {
                let name = key.clone().or(node_text.map(str::to_string));
                let first = hit.as_ref().and_then(|(t, h)| {
                    let parent = path_string(&h.segs[..h.segs.len().saturating_sub(1)]);
                    let (_, map, _) = t.lookup(&parse_path(&parent))?;
                    let Kind::Map(entries) = &t.nodes[map].kind else {
                        return None;
                    };
                    let name = name.as_deref()?;
                    entries
                        .iter()
                        .find(|(k, _)| t.scalar(*k) == Some(name) && *k != h.node)
                        .map(|(k, _)| self.line_col(t.nodes[*k].start))
                });
                let help = match first {
                    Some((l, c)) => format!(
                        "already given at line {l}, column {c}; a key may appear only once in a mapping"
                    ),
                    None => "a key may appear only once in a mapping".to_string(),
                };
                let message = match &name {
                    Some(k) => format!("duplicate key `{k}`"),
                    None => "duplicate key".to_string(),
                };
                self.at_byte(byte, node_len, path, message, Some(help))
            }
            E::InvalidScalar { ty, .. } => {
                let non_finite = node_text
                    .and_then(|s| s.parse::<f64>().ok())
                    .is_some_and(|x| !x.is_finite());
                let too_large =
                    ty.starts_with('u') && node_text.is_some_and(|t| t.parse::<u128>().is_ok());
                let message = if non_finite {
                    format!("`{}` is not a finite number", node_text.unwrap_or(""))
                } else if too_large {
                    let max = if *ty == "u32" {
                        u64::from(u32::MAX)
                    } else {
                        u64::MAX
                    };
                    format!("`{}` is too large (at most {max})", node_text.unwrap_or(""))
                } else {
                    format!("expected {}{found}", describe_type(ty))
                };
                self.at_byte(byte, node_len, path, message, None)
            }
            E::SerdeInvalidType {
                unexpected,
                expected,
                ..
            }
            | E::SerdeInvalidValue {
                unexpected,
                expected,
                ..
            } => self.at_byte(
                byte,
                node_len,
                path,
                format!("expected {expected}, found {unexpected}"),
                None,
            ),
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => {
                let help = match did_you_mean(variant, expected.iter().copied()) {
                    Some(s) => format!(
                        "did you mean `{s}`? expected one of {}",
                        backticked(expected.iter().copied())
                    ),
                    None => format!("expected one of {}", backticked(expected.iter().copied())),
                };
                self.at_byte(
                    byte,
                    node_len,
                    path,
                    format!("unknown value `{variant}`"),
                    Some(help),
                )
            }
            E::Message { msg, .. } if msg.contains("untagged enum RampTarget") => {
                let help = match node_text.and_then(|t| did_you_mean(t, ["medullary"])) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "write a fraction such as `0.4`, or `medullary`".to_string(),
                };
                self.at_byte(
                    byte,
                    node_len,
                    path,
                    format!("expected a fraction (0 to 1) or `medullary`{found}"),
                    Some(help),
                )
            }
            E::Unexpected { expected, .. } => {
                let expected = match *expected {
                    "mapping start" => "a mapping",
                    "sequence start" => "a sequence",
                    "string scalar" => "a single value",
                    other => other,
                };
                let found = if node_kind.is_empty() {
                    found
                } else {
                    format!(", found {node_kind}")
                };
                self.at_byte(
                    byte,
                    node_len,
                    path,
                    format!("expected {expected}{found}"),
                    None,
                )
            }
            E::Eof { .. } => self.at_byte(
                byte,
                1,
                path,
                "the file is empty: expected a yaml mapping".into(),
                None,
            ),
            E::MultipleDocuments { .. } => self.at_byte(
                byte,
                1,
                path,
                "more than one yaml document in the file".into(),
                Some("remove the `---` separators: one file holds one document".into()),
            ),
            other => {
                let message = lower_first(&UserMessageFormatter.format_message(other));
                self.at_byte(byte, node_len, path, message, None)
            }
        }
    }
}

fn describe_type(ty: &str) -> String {
    match ty {
        t if t.contains("float") || t == "f64" || t == "f32" => "a number".into(),
        t if t.starts_with('u') && t[1..].chars().all(|c| c.is_ascii_digit()) => {
            format!("a whole number >= 0 ({t})")
        }
        t if t.starts_with('i') && t[1..].chars().all(|c| c.is_ascii_digit()) => {
            format!("a whole number ({t})")
        }
        "bool" | "boolean" => "`true` or `false`".into(),
        t => t.to_string(),
    }
}

/// `s` with its first letter (or leading acronym, `YAML`) lowercased.
fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), s.chars().nth(1)) {
        (Some(_), Some(second)) if second.is_uppercase() => {
            let word = s.find(|c: char| !c.is_alphanumeric()).unwrap_or(s.len());
            format!("{}{}", s[..word].to_lowercase(), &s[word..])
        }
        (Some(c), _) => c.to_lowercase().chain(chars).collect(),
        (None, _) => String::new(),
    }
}

fn backticked<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "did you mean `x`? " for the closest of `candidates` (see [`did_you_mean`]), or nothing:
/// the start of a hint.
pub(crate) fn suggestion<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(input, candidates).map_or(String::new(), |s| format!("did you mean `{s}`? "))
}

/// The candidate closest to `input`, if one is clearly the closest and close enough.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let input_lower = input.to_lowercase();
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&input_lower, &c.to_lowercase()), c))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    match scored.as_slice() {
        [(best, c), rest @ ..] if *best >= 0.8 && rest.first().is_none_or(|(s, _)| s < best) => {
            Some(c)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------------------------

/// Collects the problems of one document.
struct Checker<'a> {
    doc: &'a Doc,
    out: &'a mut Vec<ProblemDiagnostic>,
    /// Profile the bone (and the default push) come from, when values may be inherited.
    profile: Option<&'a str>,
}

fn last_segment(path: &str) -> &str {
    let tail = path.rsplit('.').next().unwrap_or(path);
    tail.split('[').next().unwrap_or(tail)
}

fn num(x: f64, unit: &str) -> String {
    with_unit(&format!("{x}"), unit)
}

impl Checker<'_> {
    fn push(&mut self, path: &str, message: String, help: Option<String>) {
        let p = self.doc.at(path, message, help);
        self.out.push(p);
    }

    /// A problem about a value that may come from the profile: points at the value in the
    /// file if it is written there, else at `bone.profile`.
    fn push_value(
        &mut self,
        paths: &[&str],
        yaml_path: &str,
        message: String,
        help: Option<String>,
    ) {
        let profile_note = |m: &str| match self.profile {
            Some(profile) => format!("{m} (from profile `{profile}`)"),
            None => m.to_string(),
        };
        if self.doc.has(yaml_path) || (self.profile.is_none() && paths.is_empty()) {
            self.push(yaml_path, message, help);
        } else if let Some(p) = paths.iter().find(|p| self.doc.has(p)) {
            // The value itself is inherited; point at the related override that clashes.
            let message = match self.profile {
                Some(profile) => format!(
                    "{message} (`{}` from profile `{profile}`)",
                    last_segment(yaml_path)
                ),
                None => message,
            };
            let d = self.doc.at(p, message, help);
            self.out.push(d);
        } else if self.profile.is_some() {
            let d = self
                .doc
                .at_other("bone.profile", yaml_path, profile_note(&message), help);
            self.out.push(d);
        } else {
            self.push(yaml_path, message, help);
        }
    }

    /// Checks `value` (at `path`) against `bounds`.
    fn bounded(&mut self, path: &str, value: f64, bounds: &Bounds) -> bool {
        if bounds.contains(value) {
            return true;
        }
        let name = last_segment(path);
        let (message, help) = if value.is_finite() {
            (
                format!(
                    "`{name}` = {} is out of range (must be {})",
                    num(value, bounds.unit),
                    bounds.describe()
                ),
                bounds.why.to_string(),
            )
        } else {
            (
                format!("`{name}` is not a finite number ({value})"),
                format!("write a number {}", bounds.describe()),
            )
        };
        self.push_value(&[], path, message, Some(help));
        false
    }

    fn missing(&mut self, path: &str, help: &str) {
        self.push(
            path,
            format!("missing field `{path}`"),
            Some(help.to_string()),
        );
    }

    /// `value` if present and within `bounds`; reports a missing or bad value.
    fn required(
        &mut self,
        path: &str,
        value: Option<f64>,
        bounds: &Bounds,
        help: &str,
    ) -> Option<f64> {
        match value {
            None => {
                self.missing(path, help);
                None
            }
            Some(v) => self.bounded(path, v, bounds).then_some(v),
        }
    }

    fn layer(
        &mut self,
        path: &str,
        spec: Option<&LayerSpec>,
        thickness: &Bounds,
        strength_default: Option<&Layer>,
        help: &str,
    ) -> Option<Layer> {
        let empty = LayerSpec::default();
        if spec.is_none() && strength_default.is_none() {
            self.missing(path, help);
            return None;
        }
        let s = spec.unwrap_or(&empty);
        let d = strength_default;
        let field = |this: &mut Self, name: &str, v: Option<f64>, dv: Option<f64>, b: &Bounds| {
            let p = format!("{path}.{name}");
            match (v, dv) {
                (Some(v), _) => this.bounded(&p, v, b).then_some(v),
                // Inherited from the near cortex, which is checked there.
                (None, Some(dv)) => Some(dv),
                (None, None) => {
                    this.missing(&p, help);
                    None
                }
            }
        };
        let thickness_mm = field(self, "thickness_mm", s.thickness_mm, None, thickness);
        let f_th_n = field(self, "f_th_n", s.f_th_n, d.map(|l| l.f_th_n), &F_TH_N);
        let k_f = field(self, "k_f", s.k_f, d.map(|l| l.k_f), &K_F);
        let k_t = field(self, "k_t", s.k_t, d.map(|l| l.k_t), &K_T);
        let t_fr_nmm = field(
            self,
            "t_fr_nmm",
            s.t_fr_nmm,
            d.map(|l| l.t_fr_nmm),
            &T_FR_NMM,
        );
        let f_max = field(
            self,
            "f_max_mm_per_rev",
            s.f_max_mm_per_rev,
            d.map(|l| l.f_max_mm_per_rev),
            &F_MAX_MM_PER_REV,
        );
        Some(Layer {
            thickness_mm: thickness_mm?,
            f_th_n: f_th_n?,
            k_f: k_f?,
            k_t: k_t?,
            t_fr_nmm: t_fr_nmm?,
            f_max_mm_per_rev: f_max?,
        })
    }

    /// Resolves and checks a bone. `prefix` is its YAML path (`bone`, `profiles.<name>`).
    fn bone(&mut self, prefix: &str, spec: &BoneSpec, help: &str) -> Option<Bone> {
        let p = |rel: &str| format!("{prefix}.{rel}");
        let population = spec.population;
        if population.is_none() {
            self.missing(&p("population"), help);
        }
        let soft = self.layer(
            &p("soft_tissue"),
            spec.soft_tissue.as_ref(),
            &LAYER_THICKNESS_MM,
            None,
            help,
        );
        let cortex = self.layer(
            &p("cortex"),
            spec.cortex.as_ref(),
            &CORTEX_THICKNESS_MM,
            None,
            help,
        );
        let medullary = self.layer(
            &p("medullary"),
            spec.medullary.as_ref(),
            &LAYER_THICKNESS_MM,
            None,
            help,
        );
        let far = match (&spec.far_cortex, &cortex) {
            (None, _) => {
                self.missing(&p("far_cortex.thickness_mm"), help);
                None
            }
            (Some(far), Some(cortex)) => self.layer(
                &p("far_cortex"),
                Some(far),
                &LAYER_THICKNESS_MM,
                Some(cortex),
                help,
            ),
            // The near cortex is broken (reported); check what the far cortex gives itself.
            (Some(far), None) => {
                if let Some(t) = far.thickness_mm {
                    self.bounded(&p("far_cortex.thickness_mm"), t, &LAYER_THICKNESS_MM);
                } else {
                    self.missing(&p("far_cortex.thickness_mm"), help);
                }
                None
            }
        };
        let ramp_mm = self.required(&p("ramp_mm"), spec.ramp_mm, &RAMP_MM, help);
        let ramp_to = match spec.ramp_to {
            None => {
                self.missing(&p("ramp_to"), help);
                None
            }
            Some(RampTarget::Fraction(x)) => self
                .bounded(&p("ramp_to"), x, &RAMP_TO_FRACTION)
                .then_some(Ramp::Fraction(x)),
            Some(RampTarget::Keyword(_)) => Some(Ramp::Medullary),
        };
        let cap_mm = self.required(&p("cap_mm"), spec.cap_mm, &CAP_MM, help);
        let punch_through_n = self.required(
            &p("punch_through_n"),
            spec.punch_through_n,
            &PUNCH_THROUGH_N,
            help,
        );

        // A ramp longer than the cortex covers the whole cortex.
        let ramp_mm = match (ramp_mm, &cortex) {
            (Some(r), Some(c)) => Some(r.min(c.thickness_mm)),
            _ => ramp_mm,
        };
        if let (Some(cap), Some(c)) = (cap_mm, &cortex) {
            if cap >= c.thickness_mm {
                self.push_value(
                    &[&p("cortex.thickness_mm")],
                    &p("cap_mm"),
                    format!(
                        "`cap_mm` = {} is not less than the cortex thickness {}",
                        num(cap, "mm"),
                        num(c.thickness_mm, "mm")
                    ),
                    Some("the cap is what remains of the near cortex when it fractures: it must be thinner than the cortex".into()),
                );
            } else if let Some(r) = ramp_mm.filter(|&r| r > 0.0 && cap > r) {
                self.push_value(
                    &[&p("ramp_mm")],
                    &p("cap_mm"),
                    format!(
                        "`cap_mm` = {} is larger than the ramp length {}",
                        num(cap, "mm"),
                        num(r, "mm")
                    ),
                    Some("the cortex fractures inside the weakening ramp: the cap must not exceed the ramp length".into()),
                );
            }
        }
        Some(Bone {
            profile: spec.profile.clone(),
            population: population?,
            soft_tissue: soft?,
            cortex: cortex?,
            medullary: medullary?,
            far_cortex: far?,
            ramp_mm: ramp_mm?,
            ramp_to: ramp_to?,
            cap_mm: cap_mm?,
            punch_through_n: punch_through_n?,
        })
    }

    fn format_version(&mut self, version: u32) {
        if version != 1 {
            self.push(
                "format_version",
                format!("unsupported format_version {version}"),
                Some("only format_version 1 exists".into()),
            );
        }
    }

    /// Reports each value that repeats an earlier one; `path(i)` is the YAML path of item `i`.
    fn unique<'v>(
        &mut self,
        what: &str,
        values: impl IntoIterator<Item = &'v str>,
        path: impl Fn(usize) -> String,
    ) {
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, v) in values.into_iter().enumerate() {
            if let Some(&j) = first.get(v) {
                let (l, c) = {
                    let (b, _) = self.doc.locate(&path(j));
                    self.doc.line_col(b)
                };
                self.push(
                    &path(i),
                    format!("duplicate {what} `{v}`"),
                    Some(format!("first given at {} (line {l}, column {c})", path(j))),
                );
            } else {
                first.insert(v, i);
            }
        }
    }
}

/// Overlays `over` on `base`, field by field.
fn overlay_layer(base: Option<&LayerSpec>, over: Option<&LayerSpec>) -> Option<LayerSpec> {
    match (base, over) {
        (None, None) => None,
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (Some(b), Some(o)) => Some(LayerSpec {
            thickness_mm: o.thickness_mm.or(b.thickness_mm),
            f_th_n: o.f_th_n.or(b.f_th_n),
            k_f: o.k_f.or(b.k_f),
            k_t: o.k_t.or(b.k_t),
            t_fr_nmm: o.t_fr_nmm.or(b.t_fr_nmm),
            f_max_mm_per_rev: o.f_max_mm_per_rev.or(b.f_max_mm_per_rev),
        }),
    }
}

fn overlay_bone(base: &BoneSpec, over: &BoneSpec) -> BoneSpec {
    BoneSpec {
        profile: over.profile.clone(),
        population: over.population.or(base.population),
        soft_tissue: overlay_layer(base.soft_tissue.as_ref(), over.soft_tissue.as_ref()),
        cortex: overlay_layer(base.cortex.as_ref(), over.cortex.as_ref()),
        medullary: overlay_layer(base.medullary.as_ref(), over.medullary.as_ref()),
        far_cortex: overlay_layer(base.far_cortex.as_ref(), over.far_cortex.as_ref()),
        ramp_mm: over.ramp_mm.or(base.ramp_mm),
        ramp_to: over.ramp_to.or(base.ramp_to),
        cap_mm: over.cap_mm.or(base.cap_mm),
        punch_through_n: over.punch_through_n.or(base.punch_through_n),
    }
}

fn check_id(c: &mut Checker<'_>, path: &str, id: &str, what: &str) {
    let valid = id
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
    if !valid {
        c.push(
            path,
            format!("invalid {what} `{id}`"),
            Some("use letters, digits, `-`, `_` and `.`, starting with a letter or digit (it is used in file names)".into()),
        );
    }
}

/// Checks a scenario document; returns its id (when the file deserialized) and the scenario
/// (when nothing is wrong in it).
fn check_scenario(
    doc: &Doc,
    requirements: &Requirements,
    profiles: &Profiles,
    out: &mut Vec<ProblemDiagnostic>,
) -> (Option<String>, Option<Scenario>) {
    match doc.parse() {
        Ok(file) => check_scenario_file(doc, file, requirements, profiles, out),
        Err(p) => {
            out.push(*p);
            (None, None)
        }
    }
}

/// Validates `file`, parsed from `doc`, and builds the scenario: its id (if any) and the
/// scenario if nothing was wrong.
fn check_scenario_file(
    doc: &Doc,
    file: ScenarioFile,
    requirements: &Requirements,
    profiles: &Profiles,
    out: &mut Vec<ProblemDiagnostic>,
) -> (Option<String>, Option<Scenario>) {
    let start = out.len();
    let mut c = Checker {
        doc,
        out,
        profile: None,
    };
    c.format_version(file.format_version);
    check_id(&mut c, "id", &file.id, "scenario id");
    if file.title.trim().is_empty() {
        c.push(
            "title",
            "`title` is empty".into(),
            Some("give a one-line title".into()),
        );
    }

    // Requirements verified.
    let valid_ids = || backticked(requirements.requirements.iter().map(|r| r.id.as_str()));
    if file.verifies.is_empty() {
        c.push(
            "verifies",
            "`verifies` is empty".into(),
            Some(format!(
                "list the requirements this scenario verifies, from: {}",
                valid_ids()
            )),
        );
    }
    for (i, id) in file.verifies.iter().enumerate() {
        if requirements.get(id).is_none() {
            let suggestion =
                suggestion(id, requirements.requirements.iter().map(|r| r.id.as_str()));
            c.push(
                &format!("verifies[{i}]"),
                format!("unknown requirement `{id}`"),
                Some(format!(
                    "{suggestion}valid requirement IDs: {}",
                    valid_ids()
                )),
            );
        }
    }
    c.unique(
        "requirement",
        file.verifies.iter().map(String::as_str),
        |i| format!("verifies[{i}]"),
    );

    // Bone.
    let mut push_default = None;
    let bone = match &file.bone.profile {
        Some(name) => match profiles.get(name) {
            None => {
                let suggestion = suggestion(name, profiles.names());
                c.push(
                    "bone.profile",
                    format!("unknown profile `{name}`"),
                    Some(format!(
                        "{suggestion}valid profiles: {}",
                        backticked(profiles.names())
                    )),
                );
                None
            }
            Some(profile) => {
                push_default = Some(profile.push_n);
                c.profile = Some(&profile.name);
                let merged = overlay_bone(&profile.spec, &file.bone);
                c.bone("bone", &merged, "check the override")
            }
        },
        None => {
            c.bone(
                "bone",
                &file.bone,
                "a bone without `profile` must give every parameter (the far cortex strength defaults to the near cortex's)",
            )
        }
    };
    let profile_given = file.bone.profile.is_some();

    // Operator.
    let op = &file.operator;
    let duration_s = c
        .bounded("duration_s", file.duration_s, &DURATION_S)
        .then_some(file.duration_s);
    let push_n = match op.push_n.or(push_default) {
        Some(v) => c.bounded("operator.push_n", v, &PUSH_N).then_some(v),
        None => {
            if !profile_given {
                // Point at `operator` if written, else at the custom `bone`.
                let at = if doc.has("operator") {
                    "operator"
                } else {
                    "bone"
                };
                let d = doc.at_other(
                    at,
                    "operator.push_n",
                    "missing field `operator.push_n`".into(),
                    Some("a bone without `profile` has no nominal push to default to: give `operator.push_n`".into()),
                );
                c.out.push(d);
            }
            None
        }
    };
    // Only the bone and the default push come from the profile.
    c.profile = None;
    let oscillation = op.oscillation.as_ref().and_then(|o| {
        let a = c.bounded(
            "operator.oscillation.amplitude_pct",
            o.amplitude_pct,
            &OSCILLATION_AMPLITUDE_PCT,
        );
        let f = c.bounded(
            "operator.oscillation.frequency_hz",
            o.frequency_hz,
            &OSCILLATION_FREQUENCY_HZ,
        );
        let p = o.phase_deg.is_none_or(|ph| {
            c.bounded("operator.oscillation.phase_deg", ph, &OSCILLATION_PHASE_DEG)
        });
        (a && f && p).then(|| Oscillation {
            amplitude_fraction: o.amplitude_pct / 100.0,
            frequency_hz: o.frequency_hz,
            phase_rad: o.phase_deg.map(f64::to_radians),
        })
    });
    let mut steps = Vec::new();
    let mut steps_ok = true;
    for (i, s) in op.steps.iter().enumerate() {
        let at_path = format!("operator.steps[{i}].at_s");
        let mut ok = c.bounded(
            &at_path,
            s.at_s,
            &Bounds::at_least(0.0, "s", "a step starts at or after the trigger press"),
        );
        if let Some(d) = duration_s.filter(|&d| ok && s.at_s >= d) {
            c.push(
                &at_path,
                format!("step at {} starts after the end of the trial (duration_s {})", num(s.at_s, "s"), num(d, "s")),
                Some("a step past the end of the trial never happens: remove it or lengthen `duration_s`".into()),
            );
            ok = false;
        }
        ok &= c.bounded(
            &format!("operator.steps[{i}].change_pct"),
            s.change_pct,
            &STEP_CHANGE_PCT,
        );
        ok &= c.bounded(
            &format!("operator.steps[{i}].rise_ms"),
            s.rise_ms,
            &STEP_RISE_MS,
        );
        steps_ok &= ok;
        steps.push(PushStep {
            at_s: s.at_s,
            change_fraction: s.change_pct / 100.0,
            rise_s: s.rise_ms / 1000.0,
        });
    }
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    let reaction_ok = c.bounded("operator.reaction_ms", op.reaction_ms, &REACTION_MS);
    let relaxed_ok = c.bounded(
        "operator.relaxed_fraction",
        op.relaxed_fraction,
        &RELAXED_FRACTION,
    );
    let press_s = op.trigger.press_s.unwrap_or(DEFAULT_PRESS_S);
    let mut trigger_ok = c.bounded(
        "operator.trigger.press_s",
        press_s,
        &Bounds::at_least(
            0.0,
            "s",
            "the trigger is pressed at or after the start of the trial",
        ),
    );
    if let Some(d) = duration_s.filter(|&d| trigger_ok && press_s >= d) {
        c.push(
            "operator.trigger.press_s",
            format!(
                "trigger press at {} is not before the end of the trial (duration_s {})",
                num(press_s, "s"),
                num(d, "s")
            ),
            Some("press the trigger within the trial or lengthen `duration_s`".into()),
        );
        trigger_ok = false;
    }
    if let Some(release) = op.trigger.release_s {
        if !release.is_finite() {
            c.push(
                "operator.trigger.release_s",
                format!("`release_s` is not a finite number ({release})"),
                Some(
                    "write a time in seconds after the press, or leave it out to hold the trigger"
                        .into(),
                ),
            );
            trigger_ok = false;
        } else if release <= press_s {
            c.push(
                "operator.trigger.release_s",
                format!("trigger release at {} is not after the press at {}", num(release, "s"), num(press_s, "s")),
                Some("the release must come after the press; leave `release_s` out to hold the trigger".into()),
            );
            trigger_ok = false;
        } else if let Some(d) = duration_s.filter(|&d| release > d) {
            c.push(
                "operator.trigger.release_s",
                format!(
                    "trigger release at {} is after the end of the trial (duration_s {})",
                    num(release, "s"),
                    num(d, "s")
                ),
                Some("leave `release_s` out to hold the trigger for the whole trial".into()),
            );
            trigger_ok = false;
        }
    }

    // Battery, motor, sensor, faults, run control.
    let ocv = file
        .battery
        .open_circuit_v
        .unwrap_or(DEFAULT_OPEN_CIRCUIT_V);
    let r_int = file
        .battery
        .internal_resistance_ohm
        .unwrap_or(DEFAULT_INTERNAL_RESISTANCE_OHM);
    let battery_ok = c.bounded("battery.open_circuit_v", ocv, &BATTERY_OPEN_CIRCUIT_V)
        & c.bounded(
            "battery.internal_resistance_ohm",
            r_int,
            &BATTERY_INTERNAL_RESISTANCE_OHM,
        );
    let temperature = file
        .motor
        .temperature_c
        .unwrap_or(DEFAULT_MOTOR_TEMPERATURE_C);
    let motor_ok = c.bounded("motor.temperature_c", temperature, &MOTOR_TEMPERATURE_C);
    let s = &file.sensor;
    let sensor_ok = c.bounded(
        "sensor.gain_error_pct",
        s.gain_error_pct,
        &SENSOR_GAIN_ERROR_PCT,
    ) & c.bounded("sensor.offset_ma", s.offset_ma, &SENSOR_OFFSET_MA)
        & c.bounded("sensor.noise_ma_rms", s.noise_ma_rms, &SENSOR_NOISE_MA_RMS);
    let mut faults_ok = true;
    if let Some(t) = file.plant_faults.lock_rotor_at_s {
        faults_ok = c.bounded(
            "plant_faults.lock_rotor_at_s",
            t,
            &Bounds::at_least(
                0.0,
                "s",
                "the rotor locks at or after the start of the trial",
            ),
        );
        if let Some(d) = duration_s.filter(|&d| faults_ok && t > d) {
            c.push(
                "plant_faults.lock_rotor_at_s",
                format!("rotor lock at {} is after the end of the trial (duration_s {})", num(t, "s"), num(d, "s")),
                Some("a fault after the end of the trial is never injected: move it or lengthen `duration_s`".into()),
            );
            faults_ok = false;
        }
    }
    if !(TRIALS_MIN..=TRIALS_MAX).contains(&file.trials) {
        c.push(
            "trials",
            format!("`trials` = {} is out of range (must be >= {TRIALS_MIN} and <= {TRIALS_MAX})", file.trials),
            Some("10 000 trials resolve a 1e-3 failure fraction; larger campaigns do not belong in a scenario file".into()),
        );
    }

    let id = Some(file.id.clone());
    if c.out.len() > start {
        return (id, None);
    }
    let all_ok = steps_ok
        && reaction_ok
        && relaxed_ok
        && trigger_ok
        && battery_ok
        && motor_ok
        && sensor_ok
        && faults_ok;
    let (Some(bone), Some(push_n), Some(duration_s), true) = (bone, push_n, duration_s, all_ok)
    else {
        return (id, None);
    };
    let scenario = Scenario {
        id: file.id,
        title: file.title,
        description: file.description,
        verifies: file.verifies,
        bone,
        operator: Operator {
            push_n,
            oscillation,
            steps,
            reaction_s: op.reaction_ms / 1000.0,
            relaxed_fraction: op.relaxed_fraction,
            press_s,
            release_s: op.trigger.release_s,
        },
        battery: Battery {
            open_circuit_v: ocv,
            internal_resistance_ohm: r_int,
        },
        motor_temperature_c: temperature,
        sensor: Sensor {
            gain_error: s.gain_error_pct / 100.0,
            offset_a: s.offset_ma / 1000.0,
            noise_a_rms: s.noise_ma_rms / 1000.0,
        },
        lock_rotor_at_s: file.plant_faults.lock_rotor_at_s,
        trials: file.trials,
        seed: file.seed,
        duration_s,
        source: doc.source(),
    };
    (id, Some(scenario))
}

/// A requirement's limits against what the evaluator reads ([`crate::verdict::LIMIT_RULES`]):
/// every limit it needs present, no other, each in its unit and range, and ordered pairs in
/// order (a P99 bound above the maximum is a typing error, not a requirement).
fn check_limits(c: &mut Checker<'_>, path: &str, id: &str, limits: &BTreeMap<String, LimitSpec>) {
    use crate::verdict::{LimitKind, LIMIT_ORDER, LIMIT_RULES};
    let specs: Vec<_> = LIMIT_RULES.iter().filter(|s| s.requirement == id).collect();
    if specs.is_empty() {
        let known_ids = crate::verdict::evaluated_requirements();
        c.push(
            &format!("{path}.id"),
            format!("the harness has no check for requirement `{id}`"),
            Some(format!(
                "{}requirements it evaluates: {}",
                suggestion(id, known_ids.iter().copied()),
                backticked(known_ids.iter().copied())
            )),
        );
        return;
    }
    let names = || specs.iter().map(|s| s.name);
    for spec in &specs {
        if !limits.contains_key(spec.name) {
            c.push(
                &format!("{path}.limits"),
                format!("{id} has no limit `{}`", spec.name),
                Some(format!(
                    "the evaluator reads {} for {id}; add `{}: {{ value: ..., unit: {} }}`",
                    backticked(names()),
                    spec.name,
                    spec.unit
                )),
            );
        }
    }
    for (name, limit) in limits {
        let at = format!("{path}.limits.{name}");
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            c.push(
                &at,
                format!("unknown limit `{name}` for {id}"),
                Some(format!(
                    "{}the evaluator reads {} for {id}",
                    suggestion(name, names()),
                    backticked(names())
                )),
            );
            continue;
        };
        if limit.unit != spec.unit {
            c.push(
                &format!("{at}.unit"),
                format!(
                    "limit `{name}` is in `{}`, the evaluator reads it in `{}`",
                    limit.unit, spec.unit
                ),
                Some(format!(
                    "write the value in {} with `unit: {}`",
                    spec.unit, spec.unit
                )),
            );
        }
        let v = limit.value;
        let problem = if !v.is_finite() {
            Some(format!("is not a finite number ({v})"))
        } else {
            match spec.kind {
                LimitKind::Positive if v <= 0.0 => Some(format!("must be > 0 (it is {v})")),
                LimitKind::Fraction if !(0.0..=1.0).contains(&v) => {
                    Some(format!("is a fraction, in [0, 1] (it is {v})"))
                }
                LimitKind::Count if v < 0.0 || v.fract() != 0.0 => {
                    Some(format!("is a count, a whole number >= 0 (it is {v})"))
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            c.push(
                &format!("{at}.value"),
                format!("limit `{name}` {problem}"),
                None,
            );
        }
    }
    for (_, low, high) in LIMIT_ORDER.iter().filter(|(r, _, _)| *r == id) {
        if let (Some(l), Some(h)) = (limits.get(*low), limits.get(*high)) {
            if l.value > h.value {
                c.push(
                    &format!("{path}.limits.{low}.value"),
                    format!("`{low}` ({}) is above `{high}` ({})", l.value, h.value),
                    Some(format!("`{low}` may not exceed `{high}`")),
                );
            }
        }
    }
}

/// The clauses of a requirement must be exactly those the evaluator checks (`CLAUSE_RULES`),
/// each with its text.
fn check_clauses(c: &mut Checker<'_>, path: &str, id: &str, clauses: &BTreeMap<String, String>) {
    use crate::verdict::CLAUSE_RULES;
    let prefix = format!("{id}.");
    let letters: Vec<&str> = CLAUSE_RULES
        .iter()
        .filter_map(|r| r.id.strip_prefix(prefix.as_str()))
        .collect();
    if letters.is_empty() {
        // An unknown requirement: `check_limits` has said so.
        return;
    }
    let listed = || {
        letters
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for letter in &letters {
        if !clauses.contains_key(*letter) {
            c.push(
                &format!("{path}.clauses"),
                format!("{id} has no clause `{letter}`"),
                Some(format!(
                    "the evaluator checks {id} as clauses {}; give each its part of the text, e.g. `{letter}: ...`",
                    listed()
                )),
            );
        }
    }
    for (letter, text) in clauses {
        let at = format!("{path}.clauses.{letter}");
        if !letters.contains(&letter.as_str()) {
            c.push(
                &at,
                format!("unknown clause `{letter}` for {id}"),
                Some(format!(
                    "{}the evaluator checks {id} as clauses {}",
                    suggestion(letter, letters.iter().copied()),
                    listed()
                )),
            );
        } else if text.trim().is_empty() {
            c.push(
                &at,
                format!("clause {id}.{letter} has no text"),
                Some("write the part of the requirement's text this clause verifies".into()),
            );
        }
    }
}

fn check_requirements(doc: &Doc, out: &mut Vec<ProblemDiagnostic>) -> Option<Requirements> {
    let file: RequirementsFile = match doc.parse() {
        Ok(f) => f,
        Err(p) => {
            out.push(*p);
            return None;
        }
    };
    let mut c = Checker {
        doc,
        out,
        profile: None,
    };
    c.format_version(file.format_version);
    if file.hazards.is_empty() {
        c.push(
            "hazards",
            "no hazards defined".into(),
            Some("each requirement names the hazard it controls".into()),
        );
    }
    if file.requirements.is_empty() {
        c.push("requirements", "no requirements defined".into(), None);
    }
    for (i, h) in file.hazards.iter().enumerate() {
        check_id(&mut c, &format!("hazards[{i}].id"), &h.id, "hazard id");
    }
    c.unique(
        "hazard id",
        file.hazards.iter().map(|h| h.id.as_str()),
        |i| format!("hazards[{i}].id"),
    );
    c.unique(
        "requirement id",
        file.requirements.iter().map(|r| r.id.as_str()),
        |i| format!("requirements[{i}].id"),
    );
    let hazard_ids = || backticked(file.hazards.iter().map(|h| h.id.as_str()));
    for (i, r) in file.requirements.iter().enumerate() {
        let path = format!("requirements[{i}]");
        check_id(&mut c, &format!("{path}.id"), &r.id, "requirement id");
        if !file.hazards.iter().any(|h| h.id == r.hazard) {
            let suggestion = suggestion(&r.hazard, file.hazards.iter().map(|h| h.id.as_str()));
            c.push(
                &format!("{path}.hazard"),
                format!("unknown hazard `{}`", r.hazard),
                Some(format!(
                    "{suggestion}hazards defined in this file: {}",
                    hazard_ids()
                )),
            );
        }
        check_limits(&mut c, &path, &r.id, &r.limits);
        check_clauses(&mut c, &path, &r.id, &r.clauses);
        if r.rigs.is_empty() {
            c.push(
                &format!("{path}.rigs"),
                "`rigs` is empty".into(),
                Some(format!(
                    "list the rigs that can verify this requirement, from {}",
                    backticked(RIGS)
                )),
            );
        }
        for (j, rig) in r.rigs.iter().enumerate() {
            if !RIGS.contains(&rig.as_str()) {
                let suggestion = suggestion(rig, RIGS);
                c.push(
                    &format!("{path}.rigs[{j}]"),
                    format!("unknown rig `{rig}`"),
                    Some(format!("{suggestion}rigs: {}", backticked(RIGS))),
                );
            }
        }
        c.unique("rig", r.rigs.iter().map(String::as_str), |j| {
            format!("{path}.rigs[{j}]")
        });
    }
    if !c.out.is_empty() {
        return None;
    }
    Some(Requirements {
        requirements: file
            .requirements
            .into_iter()
            .map(|r| Requirement {
                clauses: r
                    .clauses
                    .into_iter()
                    .map(|(letter, text)| Clause {
                        id: format!("{}.{letter}", r.id),
                        text,
                    })
                    .collect(),
                id: r.id,
                title: r.title,
                text: r.text,
                hazard: r.hazard,
                statistic: r.statistic,
                limits: r
                    .limits
                    .into_iter()
                    .map(|(k, l)| {
                        (
                            k,
                            Limit {
                                value: l.value,
                                unit: l.unit,
                            },
                        )
                    })
                    .collect(),
                rigs: r.rigs,
            })
            .collect(),
        hazards: file
            .hazards
            .into_iter()
            .map(|h| Hazard {
                id: h.id,
                title: h.title,
            })
            .collect(),
        source: doc.source(),
    })
}

fn check_profiles(doc: &Doc, out: &mut Vec<ProblemDiagnostic>) -> Option<Profiles> {
    let file: ProfilesFile = match doc.parse() {
        Ok(f) => f,
        Err(p) => {
            out.push(*p);
            return None;
        }
    };
    let start = out.len();
    let mut c = Checker {
        doc,
        out,
        profile: None,
    };
    c.format_version(file.format_version);
    if file.profiles.is_empty() {
        c.push("profiles", "no profiles defined".into(), None);
    }
    let help = "every profile gives every parameter (the far cortex strength defaults to the near cortex's)";
    let mut profiles = BTreeMap::new();
    for (name, spec) in &file.profiles {
        let prefix = format!("profiles.{name}");
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'));
        if !valid_name {
            c.push(
                &prefix,
                format!("invalid profile name `{name}`"),
                Some("use letters, digits, `-` and `_`".into()),
            );
            continue;
        }
        let push_ok = c.bounded(&format!("{prefix}.push_n"), spec.push_n, &PUSH_N);
        let bone_spec = spec.to_bone_spec();
        let bone = c.bone(&prefix, &bone_spec, help);
        if let (Some(mut bone), true) = (bone, push_ok) {
            bone.profile = Some(name.clone());
            let mut bone_spec = bone_spec;
            bone_spec.profile = Some(name.clone());
            profiles.insert(
                name.clone(),
                Profile {
                    name: name.clone(),
                    push_n: spec.push_n,
                    spec: bone_spec,
                    bone,
                },
            );
        }
    }
    if c.out.len() > start {
        return None;
    }
    Some(Profiles {
        profiles,
        source: doc.source(),
    })
}
