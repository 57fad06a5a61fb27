//! Property-based fuzzing of breakthrough timing: proptest strategies over a physiologically
//! bounded space of bones, operators, batteries and sensors; the requirements SR-01..SR-05 as
//! properties; shrinking toward the typical case; failures kept as regression scenarios.
//!
//! Every case is written as scenario YAML and loaded with the ordinary scenario loader before
//! it runs, so a promoted regression file replays exactly the case that failed. Case `i` of a
//! campaign draws from its own random stream (seed, i), which makes a campaign identical
//! whatever the number of worker threads and lets shards split it by index.
//!
//! # The space searched (all relative to one of the five reference profiles)
//!
//! | parameter | range | source |
//! |---|---|---|
//! | reference profile | the five of DESIGN.md | DESIGN.md profile table |
//! | soft tissue thickness | +-50 % | patient habitus; DESIGN.md spans 7-25 mm across sites |
//! | near / far cortex thickness | +-40 % | inter-patient spread around DESIGN.md's estimates (1.2-4.5 mm) |
//! | medullary width | +-40 % | as above (10-30 mm) |
//! | cortex strength (F_th, K_f, K_T, T_fr together) | +-30 % | bone density spread between the osteoporotic and dense profiles |
//! | medullary strength | +-30 % | as above |
//! | ramp length | 1.5 mm +-1.0 mm (clipped to the cortex) | DESIGN.md gives 1.5 mm as an estimate |
//! | cap at fracture | profile value -0.1/+0.2 mm, at least 0.05 mm | DESIGN.md: 0.2-0.5 mm |
//! | nominal push | +-30 % | operator spread |
//! | push oscillation | none, or 0-30 % at 2-5 Hz, any phase | DESIGN.md operator variation |
//! | push step | none, or -40..+40 % at 0.1-3 s, rise 50-200 ms | DESIGN.md (+-40 %); a hand needs >= 50 ms |
//! | reaction after the pop | 150-250 ms | DESIGN.md |
//! | battery | fresh, or 5.3-6.4 V open circuit with 0.25-0.6 ohm | DESIGN.md: 6.4 V fresh, 0.6 ohm end of life; 5.3 V keeps the loaded voltage above the 4.8 V start limit |
//! | motor temperature | -10..80 degC | storage to hot after repeated use |
//! | current sensing | ideal, or gain +-10 %, offset +-60 mA, noise 0-40 mA rms | assumed worst-case shunt amplifier tolerances |
//!
//! Integers (percent, mm/100, ms) keep minimal cases readable. Every parameter shrinks toward
//! the profile's nominal value, every optional disturbance toward "none", and the profile
//! toward the adult tibia, so a shrunk case differs from the typical one only where it must.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};
use serde::{Deserialize, Serialize};

use crate::rig::{Rig, SimRig};
use crate::scenario::load::{load_scenario_parsed, Profiles};
use crate::scenario::model::{
    BatterySpec, BoneSpec, LayerSpec, MotorSpec, OperatorSpec, OscillationSpec, PlantFaultSpec,
    PushStepSpec, ScenarioFile, SensorSpec,
};
use crate::scenario::{Requirements, Scenario};
use crate::verdict::{evaluate_trial, measure, Statistics, Verdict};

/// Cases per run of the property tests that fuzz the parsers (scenario loader, telemetry
/// decoder, load protocol): 256 by default (CI), or `IOHIL_FUZZ_CASES` for a longer run.
pub fn property_test_cases() -> u32 {
    std::env::var("IOHIL_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Version of `fuzz.json`.
/// Version 2 added `failure_rate`, `never_detected`, `stop_reason` and `minimal_requirements`
/// (version 1 files still read: those fields are then empty).
pub const FUZZ_FORMAT_VERSION: u32 = 2;
/// The requirements checked as properties.
pub const PROPERTIES: &[&str] = &["SR-01", "SR-02", "SR-03", "SR-04", "SR-05"];
/// The properties whose failure lets the needle overpenetrate (hazard HZ-01).
pub const OVERPENETRATION: &[&str] = &["SR-01", "SR-02", "SR-03", "SR-04"];
/// Reference profiles in shrinking order (the first is the most typical).
pub const PROFILES: &[&str] = &[
    "adult-proximal-tibia",
    "pediatric-proximal-tibia",
    "adult-proximal-humerus",
    "osteoporotic-tibia",
    "dense-young-tibia",
];
/// Most shrinking steps tried per failure.
pub const MAX_SHRINK_STEPS: u32 = 400;

/// One point of the searched space (see the module documentation for the ranges).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuzzCase {
    /// Index into [`PROFILES`].
    pub profile: usize,
    /// Soft tissue thickness change, percent.
    pub soft_pct: i32,
    /// Near cortex thickness change, percent.
    pub cortex_pct: i32,
    /// Medullary width change, percent.
    pub medullary_pct: i32,
    /// Far cortex thickness change, percent.
    pub far_cortex_pct: i32,
    /// Near cortex strength change, percent.
    pub cortex_strength_pct: i32,
    /// Medullary strength change, percent.
    pub medullary_strength_pct: i32,
    /// Ramp length change from 1.5 mm, 1/100 mm.
    pub ramp_delta_cmm: i32,
    /// Cap change from the profile's, 1/100 mm.
    pub cap_delta_cmm: i32,
    /// Nominal push change, percent.
    pub push_pct: i32,
    /// Oscillation: amplitude percent, frequency in 1/10 Hz, phase degrees.
    pub oscillation: Option<(u32, u32, u32)>,
    /// Push step: change percent, start ms, rise ms.
    pub step: Option<(i32, u32, u32)>,
    /// Reaction change from 200 ms, ms.
    pub reaction_delta_ms: i32,
    /// Battery: open-circuit drop from 6.4 V in 1/100 V, extra internal resistance in mOhm.
    pub battery: Option<(u32, u32)>,
    /// Motor temperature change from 20 degC.
    pub temperature_delta_c: i32,
    /// Current sensing: gain percent, offset mA, noise mA rms.
    pub sensor: Option<(i32, i32, u32)>,
}

/// An inclusive integer range of one parameter of the space.
pub type Bounds = (i32, i32);

/// The bounds of every parameter of [`FuzzCase`] (see the module documentation for their
/// sources). The fuzzer's strategy and the falsifier's decoder both read them here, so the two
/// search exactly the same space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// [`FuzzCase::soft_pct`].
    pub soft_pct: Bounds,
    /// [`FuzzCase::cortex_pct`].
    pub cortex_pct: Bounds,
    /// [`FuzzCase::medullary_pct`].
    pub medullary_pct: Bounds,
    /// [`FuzzCase::far_cortex_pct`].
    pub far_cortex_pct: Bounds,
    /// [`FuzzCase::cortex_strength_pct`].
    pub cortex_strength_pct: Bounds,
    /// [`FuzzCase::medullary_strength_pct`].
    pub medullary_strength_pct: Bounds,
    /// [`FuzzCase::ramp_delta_cmm`].
    pub ramp_delta_cmm: Bounds,
    /// [`FuzzCase::cap_delta_cmm`].
    pub cap_delta_cmm: Bounds,
    /// [`FuzzCase::push_pct`].
    pub push_pct: Bounds,
    /// [`FuzzCase::oscillation`]: amplitude percent, frequency 1/10 Hz, phase degrees.
    pub oscillation: [Bounds; 3],
    /// [`FuzzCase::step`]: change percent, start ms, rise ms.
    pub step: [Bounds; 3],
    /// [`FuzzCase::reaction_delta_ms`].
    pub reaction_delta_ms: Bounds,
    /// [`FuzzCase::battery`]: open-circuit drop 1/100 V, extra resistance mOhm.
    pub battery: [Bounds; 2],
    /// [`FuzzCase::temperature_delta_c`].
    pub temperature_delta_c: Bounds,
    /// [`FuzzCase::sensor`]: gain percent, offset mA, noise mA rms.
    pub sensor: [Bounds; 3],
}

/// The space searched, as documented in the module documentation.
pub const SPACE: Space = Space {
    soft_pct: (-50, 50),
    cortex_pct: (-40, 40),
    medullary_pct: (-40, 40),
    far_cortex_pct: (-40, 40),
    cortex_strength_pct: (-30, 30),
    medullary_strength_pct: (-30, 30),
    ramp_delta_cmm: (-100, 100),
    cap_delta_cmm: (-10, 20),
    push_pct: (-30, 30),
    oscillation: [(0, 30), (20, 50), (0, 359)],
    step: [(-40, 40), (100, 3000), (50, 200)],
    reaction_delta_ms: (-50, 50),
    battery: [(0, 110), (0, 350)],
    temperature_delta_c: (-30, 60),
    sensor: [(-10, 10), (-60, 60), (0, 40)],
};

fn signed(b: Bounds) -> std::ops::RangeInclusive<i32> {
    b.0..=b.1
}

fn unsigned(b: Bounds) -> std::ops::RangeInclusive<u32> {
    b.0.unsigned_abs()..=b.1.unsigned_abs()
}

/// The proptest strategy over [`FuzzCase`].
pub fn case_strategy() -> impl Strategy<Value = FuzzCase> {
    let s = SPACE;
    let bone = (
        0..PROFILES.len(),
        signed(s.soft_pct),
        signed(s.cortex_pct),
        signed(s.medullary_pct),
        signed(s.far_cortex_pct),
        signed(s.cortex_strength_pct),
        signed(s.medullary_strength_pct),
        signed(s.ramp_delta_cmm),
        signed(s.cap_delta_cmm),
    );
    let [amplitude, frequency, phase] = s.oscillation;
    let [change, start, rise] = s.step;
    let operator = (
        signed(s.push_pct),
        // The phase was drawn from the half-open 0..360 since the first campaign: kept so, so that
        // every campaign draws the cases it always drew.
        proptest::option::of((
            unsigned(amplitude),
            unsigned(frequency),
            phase.0.unsigned_abs()..phase.1.unsigned_abs() + 1,
        )),
        proptest::option::of((signed(change), unsigned(start), unsigned(rise))),
        signed(s.reaction_delta_ms),
    );
    let [drop, resistance] = s.battery;
    let [gain, offset, noise] = s.sensor;
    let supply = (
        proptest::option::of((unsigned(drop), unsigned(resistance))),
        signed(s.temperature_delta_c),
        proptest::option::of((signed(gain), signed(offset), unsigned(noise))),
    );
    (bone, operator, supply).prop_map(|(b, o, s)| FuzzCase {
        profile: b.0,
        soft_pct: b.1,
        cortex_pct: b.2,
        medullary_pct: b.3,
        far_cortex_pct: b.4,
        cortex_strength_pct: b.5,
        medullary_strength_pct: b.6,
        ramp_delta_cmm: b.7,
        cap_delta_cmm: b.8,
        push_pct: o.0,
        oscillation: o.1,
        step: o.2,
        reaction_delta_ms: o.3,
        battery: s.0,
        temperature_delta_c: s.1,
        sensor: s.2,
    })
}

fn scale(value: f64, pct: i32) -> f64 {
    value * (1.0 + f64::from(pct) / 100.0)
}

/// Rounds to 1/1000 so that YAML shows short, exact decimals.
fn r3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// The concrete values of a case, in engineering units.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    profile: &'static str,
    soft_mm: f64,
    cortex_mm: f64,
    medullary_mm: f64,
    far_cortex_mm: f64,
    cortex: [f64; 4],
    medullary: [f64; 4],
    ramp_mm: f64,
    cap_mm: f64,
    push_n: f64,
    reaction_ms: i32,
    temperature_c: i32,
}

fn resolve(case: &FuzzCase, profiles: &Profiles) -> Result<Resolved, String> {
    let name = PROFILES
        .get(case.profile)
        .copied()
        .ok_or("profile index out of range")?;
    let profile = profiles
        .get(name)
        .ok_or_else(|| format!("the profiles file has no reference profile `{name}`"))?;
    let bone = &profile.bone;
    let strength = |layer: &crate::scenario::Layer, pct: i32| {
        [
            r3(scale(layer.f_th_n, pct)),
            r3(scale(layer.k_f, pct)),
            r3(scale(layer.k_t, pct)),
            r3(scale(layer.t_fr_nmm, pct)),
        ]
    };
    let cortex_mm = r3(scale(bone.cortex.thickness_mm, case.cortex_pct));
    let ramp_mm = r3((1.5 + f64::from(case.ramp_delta_cmm) / 100.0).min(cortex_mm));
    let cap_mm = r3((bone.cap_mm + f64::from(case.cap_delta_cmm) / 100.0)
        .max(0.05)
        .min(ramp_mm - 0.05)
        .min(cortex_mm - 0.05));
    Ok(Resolved {
        profile: name,
        soft_mm: r3(scale(bone.soft_tissue.thickness_mm, case.soft_pct)),
        cortex_mm,
        medullary_mm: r3(scale(bone.medullary.thickness_mm, case.medullary_pct)),
        far_cortex_mm: r3(scale(bone.far_cortex.thickness_mm, case.far_cortex_pct)),
        cortex: strength(&bone.cortex, case.cortex_strength_pct),
        medullary: strength(&bone.medullary, case.medullary_strength_pct),
        ramp_mm,
        cap_mm,
        push_n: r3(scale(profile.push_n, case.push_pct)),
        reaction_ms: 200 + case.reaction_delta_ms,
        temperature_c: 20 + case.temperature_delta_c,
    })
}

/// One line in engineering terms, e.g. `osteoporotic-tibia: cortex 1.3 mm, cap 0.2 mm, push
/// 21 N +-30 % at 4.7 Hz`. Only what differs from the profile's nominal case is listed.
pub fn describe(case: &FuzzCase, profiles: &Profiles) -> String {
    let Ok(r) = resolve(case, profiles) else {
        return format!("{case:?}");
    };
    let mut parts = vec![
        format!("cortex {} mm", r.cortex_mm),
        format!("cap {} mm", r.cap_mm),
    ];
    if case.soft_pct != 0 {
        parts.push(format!("soft tissue {} mm", r.soft_mm));
    }
    if case.medullary_pct != 0 {
        parts.push(format!("medullary {} mm", r.medullary_mm));
    }
    if case.far_cortex_pct != 0 {
        parts.push(format!("far cortex {} mm", r.far_cortex_mm));
    }
    if case.cortex_strength_pct != 0 {
        parts.push(format!("cortex strength {:+} %", case.cortex_strength_pct));
    }
    if case.medullary_strength_pct != 0 {
        parts.push(format!(
            "medullary strength {:+} %",
            case.medullary_strength_pct
        ));
    }
    if case.ramp_delta_cmm != 0 {
        parts.push(format!("ramp {} mm", r.ramp_mm));
    }
    let mut push = format!("push {} N", r.push_n);
    if let Some((amplitude, tenth_hz, phase)) = case.oscillation {
        let _ = write!(
            push,
            " +-{amplitude} % at {:.1} Hz (phase {phase} deg)",
            f64::from(tenth_hz) / 10.0
        );
    }
    if let Some((change, at_ms, rise_ms)) = case.step {
        let _ = write!(push, ", step {change:+} % at {at_ms} ms over {rise_ms} ms");
    }
    parts.push(push);
    if case.reaction_delta_ms != 0 {
        parts.push(format!("reaction {} ms", r.reaction_ms));
    }
    if let Some((drop_cv, extra_mohm)) = case.battery {
        parts.push(format!(
            "battery {:.2} V / {:.3} ohm",
            6.4 - f64::from(drop_cv) / 100.0,
            0.25 + f64::from(extra_mohm) / 1000.0
        ));
    }
    if case.temperature_delta_c != 0 {
        parts.push(format!("motor {} degC", r.temperature_c));
    }
    if let Some((gain, offset, noise)) = case.sensor {
        parts.push(format!(
            "sensor gain {gain:+} %, offset {offset:+} mA, noise {noise} mA rms"
        ));
    }
    format!("{}: {}", r.profile, parts.join(", "))
}

/// The case as a scenario file that verifies every property. `seed` seeds the trial's noise
/// stream.
pub fn scenario_yaml(
    case: &FuzzCase,
    profiles: &Profiles,
    id: &str,
    title: &str,
    description: &str,
    seed: u64,
) -> Result<String, String> {
    scenario_file(case, profiles, id, title, description, seed, PROPERTIES)
        .map(|file| fuzz_header(scenario_text(&file)))
}

/// `body` under the header comment of a file the campaign writes.
fn fuzz_header(body: String) -> String {
    format!("# Written by iohil fuzz. Replays one case of a campaign; edit with care.\n{body}")
}

/// The scenario text [`scenario_yaml`] writes for a case run under `id` (as id, title and
/// "fuzz case" description), and the file it parses to, built once.
fn scenario_text_and_file(
    case: &FuzzCase,
    profiles: &Profiles,
    id: &str,
    seed: u64,
) -> Result<(String, ScenarioFile), String> {
    let file = scenario_file(case, profiles, id, id, "fuzz case", seed, PROPERTIES)?;
    Ok((fuzz_header(scenario_text(&file)), file))
}

/// The case as a scenario file that verifies `verifies`; `seed` seeds the trial's noise
/// stream. [`scenario_text`] writes it; the campaign runs it without parsing that text
/// (`a_case_runs_exactly_the_scenario_its_file_loads_to` in `harness/tests/fuzz.rs` checks
/// that the text deserialises to it).
pub fn scenario_file(
    case: &FuzzCase,
    profiles: &Profiles,
    id: &str,
    title: &str,
    description: &str,
    seed: u64,
    verifies: &[&str],
) -> Result<ScenarioFile, String> {
    let r = resolve(case, profiles)?;
    let layer = |thickness: f64, strength: &[f64; 4]| LayerSpec {
        thickness_mm: Some(thickness),
        f_th_n: Some(strength[0]),
        k_f: Some(strength[1]),
        k_t: Some(strength[2]),
        t_fr_nmm: Some(strength[3]),
        f_max_mm_per_rev: None,
    };
    let thickness = |mm: f64| LayerSpec {
        thickness_mm: Some(mm),
        ..LayerSpec::default()
    };
    Ok(ScenarioFile {
        format_version: 1,
        id: id.to_string(),
        title: title.to_string(),
        description: Some(description.to_string()),
        verifies: verifies.iter().map(ToString::to_string).collect(),
        bone: BoneSpec {
            profile: Some(r.profile.to_string()),
            soft_tissue: Some(thickness(r.soft_mm)),
            cortex: Some(layer(r.cortex_mm, &r.cortex)),
            medullary: Some(layer(r.medullary_mm, &r.medullary)),
            far_cortex: Some(thickness(r.far_cortex_mm)),
            ramp_mm: Some(r.ramp_mm),
            cap_mm: Some(r.cap_mm),
            ..BoneSpec::default()
        },
        operator: OperatorSpec {
            push_n: Some(r.push_n),
            oscillation: case
                .oscillation
                .map(|(amplitude, tenth_hz, phase)| OscillationSpec {
                    amplitude_pct: f64::from(amplitude),
                    frequency_hz: f64::from(tenth_hz) / 10.0,
                    phase_deg: Some(f64::from(phase)),
                }),
            steps: case
                .step
                .map(|(change, at_ms, rise_ms)| PushStepSpec {
                    at_s: f64::from(at_ms) / 1000.0,
                    change_pct: f64::from(change),
                    rise_ms: f64::from(rise_ms),
                })
                .into_iter()
                .collect(),
            reaction_ms: f64::from(r.reaction_ms),
            ..OperatorSpec::default()
        },
        battery: case
            .battery
            .map(|(drop_cv, extra_mohm)| BatterySpec {
                open_circuit_v: Some(r3(6.4 - f64::from(drop_cv) / 100.0)),
                internal_resistance_ohm: Some(r3(0.25 + f64::from(extra_mohm) / 1000.0)),
            })
            .unwrap_or_default(),
        motor: MotorSpec {
            temperature_c: Some(f64::from(r.temperature_c)),
        },
        sensor: case
            .sensor
            .map(|(gain, offset, noise)| SensorSpec {
                gain_error_pct: f64::from(gain),
                offset_ma: f64::from(offset),
                noise_ma_rms: f64::from(noise),
            })
            .unwrap_or_default(),
        plant_faults: PlantFaultSpec::default(),
        trials: 1,
        seed,
        duration_s: ScenarioFile::DEFAULT_DURATION_S,
    })
}

/// A case's scenario file as YAML without a header comment (the writer says who wrote it):
/// one line per part and the layers in flow style, in the order a reader checks them. Writes
/// what [`scenario_file`] builds and nothing it leaves at its default.
pub fn scenario_text(f: &ScenarioFile) -> String {
    let num = |v: Option<f64>| v.map_or_else(String::new, |v| v.to_string());
    let mut y = String::new();
    let _ = writeln!(y, "format_version: {}", f.format_version);
    let _ = writeln!(y, "id: {}", f.id);
    let _ = writeln!(y, "title: {}", yaml_string(&f.title));
    if let Some(description) = &f.description {
        let _ = writeln!(y, "description: {}", yaml_string(description));
    }
    let _ = writeln!(y, "verifies: [{}]", f.verifies.join(", "));
    let b = &f.bone;
    let _ = writeln!(y, "bone:");
    if let Some(profile) = &b.profile {
        let _ = writeln!(y, "  profile: {profile}");
    }
    for (name, layer) in [
        ("soft_tissue", &b.soft_tissue),
        ("cortex", &b.cortex),
        ("medullary", &b.medullary),
        ("far_cortex", &b.far_cortex),
    ] {
        let Some(l) = layer else { continue };
        let fields = [
            ("thickness_mm", l.thickness_mm),
            ("f_th_n", l.f_th_n),
            ("k_f", l.k_f),
            ("k_t", l.k_t),
            ("t_fr_nmm", l.t_fr_nmm),
            ("f_max_mm_per_rev", l.f_max_mm_per_rev),
        ];
        let given: Vec<String> = fields
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(key, v)| format!("{key}: {}", num(*v)))
            .collect();
        let _ = writeln!(y, "  {name}: {{ {} }}", given.join(", "));
    }
    for (key, value) in [("ramp_mm", b.ramp_mm), ("cap_mm", b.cap_mm)] {
        if value.is_some() {
            let _ = writeln!(y, "  {key}: {}", num(value));
        }
    }
    let op = &f.operator;
    let _ = writeln!(y, "operator:");
    if op.push_n.is_some() {
        let _ = writeln!(y, "  push_n: {}", num(op.push_n));
    }
    if let Some(osc) = &op.oscillation {
        let _ = writeln!(
            y,
            "  oscillation: {{ amplitude_pct: {}, frequency_hz: {}, phase_deg: {} }}",
            osc.amplitude_pct,
            osc.frequency_hz,
            num(osc.phase_deg)
        );
    }
    if !op.steps.is_empty() {
        let steps: Vec<String> = (op.steps.iter())
            .map(|s| {
                format!(
                    "{{ at_s: {}, change_pct: {}, rise_ms: {} }}",
                    s.at_s, s.change_pct, s.rise_ms
                )
            })
            .collect();
        let _ = writeln!(y, "  steps: [ {} ]", steps.join(", "));
    }
    let _ = writeln!(y, "  reaction_ms: {}", op.reaction_ms);
    let battery = &f.battery;
    if battery.open_circuit_v.is_some() {
        let _ = writeln!(
            y,
            "battery: {{ open_circuit_v: {}, internal_resistance_ohm: {} }}",
            num(battery.open_circuit_v),
            num(battery.internal_resistance_ohm)
        );
    }
    let _ = writeln!(
        y,
        "motor: {{ temperature_c: {} }}",
        num(f.motor.temperature_c)
    );
    if f.sensor != SensorSpec::default() {
        let s = &f.sensor;
        let _ = writeln!(
            y,
            "sensor: {{ gain_error_pct: {}, offset_ma: {}, noise_ma_rms: {} }}",
            s.gain_error_pct, s.offset_ma, s.noise_ma_rms
        );
    }
    let _ = writeln!(y, "trials: {}", f.trials);
    let _ = writeln!(y, "seed: {}", f.seed);
    y
}

fn yaml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The outcome of running one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseRecord {
    /// Case index in the campaign.
    pub index: u64,
    /// Requirements that failed.
    pub failed: Vec<String>,
    /// Requirements that could not be checked (e.g. no breakthrough happened).
    pub inconclusive: Vec<String>,
    /// Whether the push varied (oscillation or step).
    pub push_variation: bool,
    /// Detection latency (the firmware's breakthrough decision after t_bt), ms; `None` when
    /// the motor was stopped by anything else or never (see `never_detected`).
    pub detection_latency_ms: Option<f64>,
    /// Why the motor stopped first (`breakthrough`, `missed_pop`, `over_time`, ...).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// For a breakthrough that was never detected, what happened instead, e.g. `never detected;
    /// stopped by over_time at 9.90 s, 8.9 s after t_bt, 24.6 mm past the inner surface`.
    #[serde(default)]
    pub never_detected: Option<String>,
    /// Time to stop, ms.
    pub time_to_stop_ms: Option<f64>,
    /// Overshoot, mm.
    pub overshoot_mm: Option<f64>,
    /// Overshoot, rev.
    pub overshoot_rev: Option<f64>,
    /// Margin to each checked limit (limit - value, in the limit's unit).
    pub margins: BTreeMap<String, f64>,
    /// Failure explanations.
    pub findings: Vec<String>,
}

/// A failure, shrunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzFailure {
    /// Case index.
    pub index: u64,
    /// Requirements that failed on the original case (the ones the counts count).
    pub requirements: Vec<String>,
    /// Requirements that failed on the minimal case (shrinking keeps at least one of the
    /// original's failing; the minimal case may fail others too).
    #[serde(default)]
    pub minimal_requirements: Vec<String>,
    /// The original case.
    pub original: String,
    /// The minimal case, in engineering terms.
    pub minimal: String,
    /// What failed on the minimal case, with measured value and limit.
    pub findings: Vec<String>,
    /// Shrinking steps tried.
    pub shrink_steps: u32,
    /// The minimal case as scenario YAML.
    pub scenario_yaml: String,
    /// Where the scenario was written, when promoted.
    pub scenario_file: Option<PathBuf>,
    /// The open known anomaly of the suite's register that already keeps this case (its
    /// scenario `fuzz-s<seed>-c<index>` is registered and names every requirement it fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_anomaly: Option<String>,
    /// The minimal case's parameters.
    pub case: FuzzCase,
}

/// Whether failing `failed` is only a premature stop with push variation (`varied`), which
/// counts against SR-05's allowed fraction rather than failing a campaign on its own.
fn within_sr05_allowance(failed: &[String], varied: bool) -> bool {
    varied && failed.iter().all(|r| r == "SR-05")
}

impl FuzzFailure {
    /// Whether this failure fails the campaign on its own: anything but a premature stop with
    /// push variation, which counts against SR-05's allowed fraction instead.
    pub fn counted(&self) -> bool {
        let varied = self.case.oscillation.is_some() || self.case.step.is_some();
        !within_sr05_allowance(&self.requirements, varied)
    }
}

/// Pass/fail/inconclusive counts of one property.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyCounts {
    /// Cases where it held.
    pub pass: u64,
    /// Cases where it failed.
    pub fail: u64,
    /// Cases where it could not be checked.
    pub inconclusive: u64,
}

/// Reads one measured value of a case.
type CaseMetric = fn(&CaseRecord) -> Option<f64>;

/// `fuzz.json`: a campaign or a shard of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuzzResults {
    /// [`FUZZ_FORMAT_VERSION`].
    pub format_version: u32,
    /// Campaign seed.
    pub seed: u64,
    /// Cases in the whole campaign.
    pub cases_planned: u64,
    /// Shards this result covers, as `k` of `n` (1-based); `[1]` of 1 when unsharded.
    pub shards: Vec<u32>,
    /// Number of shards the campaign is split into.
    pub shard_count: u32,
    /// Whether every case of the covered shards ran (false when a time budget stopped it).
    pub complete: bool,
    /// Per-case records, by index.
    pub cases: Vec<CaseRecord>,
    /// Shrunk failures, by index.
    pub failures: Vec<FuzzFailure>,
    /// Counts per property.
    pub properties: BTreeMap<String, PropertyCounts>,
    /// Distributions of measured values.
    pub distributions: BTreeMap<String, Statistics>,
    /// Distributions of the margin to each limit (smaller is closer to failing).
    pub margins: BTreeMap<String, Statistics>,
    /// Fraction of cases with push variation that stopped prematurely (SR-05 allows 2 %).
    pub premature_fraction_with_variation: Option<f64>,
    /// Requirements the campaign failed: any failure of SR-01..SR-04, a premature stop at
    /// nominal push, or premature stops with push variation above SR-05's allowed fraction.
    pub failing_requirements: Vec<String>,
    /// The per-insertion failure probability within the fuzz space: cases failing any
    /// requirement, with its 95 % bound (zero failures: exact one-sided `1 - 0.05^(1/n)`;
    /// otherwise the Clopper-Pearson interval).
    #[serde(default)]
    pub failure_rate: Option<crate::confidence::FailureRate>,
    /// The same for overpenetration alone (HZ-01): cases failing any of SR-01..SR-04.
    #[serde(default)]
    pub overpenetration_rate: Option<crate::confidence::FailureRate>,
    /// Where the harness was built from.
    pub harness: crate::run::HarnessIdentity,
}

impl FuzzResults {
    /// Recomputes the counts and distributions from the case records.
    pub fn summarise(&mut self) {
        self.cases.sort_by_key(|c| c.index);
        self.failures.sort_by_key(|f| f.index);
        self.properties = PROPERTIES
            .iter()
            .map(|p| {
                let mut counts = PropertyCounts::default();
                for case in &self.cases {
                    if case.failed.iter().any(|f| f == p) {
                        counts.fail += 1;
                    } else if case.inconclusive.iter().any(|f| f == p) {
                        counts.inconclusive += 1;
                    } else {
                        counts.pass += 1;
                    }
                }
                ((*p).to_owned(), counts)
            })
            .collect();
        let metrics: [(&str, CaseMetric); 4] = [
            ("detection_latency_ms", |c| c.detection_latency_ms),
            ("time_to_stop_ms", |c| c.time_to_stop_ms),
            ("overshoot_mm", |c| c.overshoot_mm),
            ("overshoot_rev", |c| c.overshoot_rev),
        ];
        self.distributions = metrics
            .iter()
            .filter_map(|(name, get)| {
                let values: Vec<f64> = self.cases.iter().filter_map(get).collect();
                Statistics::of(&values).map(|s| ((*name).to_owned(), s))
            })
            .collect();
        let mut margin_values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for case in &self.cases {
            for (name, margin) in &case.margins {
                margin_values.entry(name.clone()).or_default().push(*margin);
            }
        }
        self.margins = margin_values
            .into_iter()
            .filter_map(|(name, values)| Statistics::of(&values).map(|s| (name, s)))
            .collect();
        let failed_cases = self.cases.iter().filter(|c| !c.failed.is_empty()).count() as u64;
        self.failure_rate =
            crate::confidence::FailureRate::of(failed_cases, self.cases.len() as u64);
        let overpenetrating = self
            .cases
            .iter()
            .filter(|c| {
                c.failed
                    .iter()
                    .any(|f| OVERPENETRATION.contains(&f.as_str()))
            })
            .count() as u64;
        self.overpenetration_rate =
            crate::confidence::FailureRate::of(overpenetrating, self.cases.len() as u64);
        let varied: Vec<&CaseRecord> = self.cases.iter().filter(|c| c.push_variation).collect();
        self.premature_fraction_with_variation = (!varied.is_empty()).then(|| {
            varied
                .iter()
                .filter(|c| c.failed.iter().any(|f| f == "SR-05"))
                .count() as f64
                / varied.len() as f64
        });
    }

    /// Decides which requirements the campaign failed. A premature stop with push variation
    /// is counted against SR-05's allowed fraction rather than failing on its own.
    pub fn assess(&mut self, requirements: &Requirements) {
        let allowed = requirements
            .get("SR-05")
            .and_then(|r| r.limits.get("max_fraction_oscillating"))
            .map_or(0.0, |l| l.value);
        let mut failing: Vec<String> = Vec::new();
        for failure in &self.failures {
            for requirement in &failure.requirements {
                let varied = failure.case.oscillation.is_some() || failure.case.step.is_some();
                let counted = requirement != "SR-05" || !varied;
                if counted && !failing.contains(requirement) {
                    failing.push(requirement.clone());
                }
            }
        }
        if self
            .premature_fraction_with_variation
            .is_some_and(|f| f > allowed)
            && !failing.iter().any(|r| r == "SR-05")
        {
            failing.push("SR-05".to_owned());
        }
        failing.sort();
        self.failing_requirements = failing;
    }

    /// Cases whose breakthrough was never detected.
    pub fn never_detected_count(&self) -> usize {
        self.cases
            .iter()
            .filter(|c| c.never_detected.is_some())
            .count()
    }

    /// Whether the campaign failed any requirement.
    pub fn failed(&self) -> bool {
        !self.failing_requirements.is_empty()
    }

    /// Console summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "fuzz campaign seed {}: {} of {} cases run (shards {:?} of {}){}",
            self.seed,
            self.cases.len(),
            self.cases_planned,
            self.shards,
            self.shard_count,
            if self.complete {
                ""
            } else {
                ", stopped by the time budget"
            }
        );
        for (name, c) in &self.properties {
            let _ = writeln!(
                out,
                "  {name}: {} pass, {} fail, {} not exercised",
                c.pass, c.fail, c.inconclusive
            );
        }
        let never = self.never_detected_count();
        if never > 0 {
            let _ = writeln!(
                out,
                "  breakthrough never detected in {} case(s) (their motor-off is not a detection \
                 latency and is left out of the distribution below)",
                never
            );
        }
        for (name, s) in &self.distributions {
            let _ = writeln!(
                out,
                "  {name}: n {} mean {:.2} sd {:.2} max {:.2} p95 {:.2}",
                s.n, s.mean, s.sd, s.max, s.p95
            );
        }
        for (name, s) in &self.margins {
            let _ = writeln!(
                out,
                "  margin to {name}: min {:.2} mean {:.2}",
                s.min, s.mean
            );
        }
        let _ = writeln!(
            out,
            "  verdict: {}",
            if self.failing_requirements.is_empty() {
                "PASS".to_owned()
            } else {
                format!("FAIL ({})", self.failing_requirements.join(", "))
            }
        );
        if let Some(fraction) = self.premature_fraction_with_variation {
            let _ = writeln!(
                out,
                "  premature stops with push variation: {:.1} % (SR-05 allows 2 %)",
                fraction * 100.0
            );
        }
        if let Some(rate) = &self.overpenetration_rate {
            let _ = writeln!(
                out,
                "  overpenetration (SR-01..SR-04): {}",
                rate.describe("cases")
            );
        }
        if let Some(rate) = &self.failure_rate {
            let _ = writeln!(
                out,
                "  any requirement (SR-01..SR-05): {}",
                rate.describe("cases")
            );
        }
        for f in &self.failures {
            if f.counted() {
                let _ = writeln!(
                    out,
                    "FAIL case {} ({}), shrunk in {} steps to:",
                    f.index,
                    f.requirements.join(", "),
                    f.shrink_steps
                );
            } else {
                let _ = writeln!(
                    out,
                    "premature stop with push variation (counts against the SR-05 allowance): \
                     case {} ({}), as drawn:",
                    f.index,
                    f.requirements.join(", ")
                );
            }
            let _ = writeln!(out, "  {}", f.minimal);
            if !f.minimal_requirements.is_empty() && f.minimal_requirements != f.requirements {
                let _ = writeln!(
                    out,
                    "  (the minimal case fails {}; the counts above count the case as drawn)",
                    f.minimal_requirements.join(", ")
                );
            }
            for finding in &f.findings {
                let _ = writeln!(out, "  {finding}");
            }
            if let Some(path) = &f.scenario_file {
                let _ = writeln!(out, "  regression scenario: {}", path.display());
            }
            if let Some(id) = &f.known_anomaly {
                let _ = writeln!(
                    out,
                    "  known anomaly {id}: kept as scenario {} of its register entry (still a FAIL)",
                    case_scenario_id(self.seed, f.index)
                );
            }
        }
        out
    }
}

/// What a campaign runs against.
pub struct Campaign<'a> {
    /// Requirements (limits).
    pub requirements: &'a Requirements,
    /// Reference profiles.
    pub profiles: &'a Profiles,
    /// The rig (cloned per worker).
    pub rig: SimRig,
    /// Campaign seed.
    pub seed: u64,
    /// Cases in the whole campaign.
    pub cases: u64,
    /// Shard `k` (1-based) of `n`.
    pub shard: (u32, u32),
    /// Worker threads.
    pub jobs: usize,
    /// Stop starting new cases after this long.
    pub time_budget: Option<std::time::Duration>,
}

/// The random stream of case `index`.
fn case_runner(seed: u64, index: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&index.to_le_bytes());
    bytes[16..24].copy_from_slice(b"iohilfzz");
    TestRunner::new_with_rng(
        ProptestConfig::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// Case `index` of the campaign with `seed`, as the campaign draws it (before shrinking).
pub fn case_at(seed: u64, index: u64) -> Result<FuzzCase, String> {
    let mut runner = case_runner(seed, index);
    case_strategy()
        .new_tree(&mut runner)
        .map(|tree| tree.current())
        .map_err(|e| format!("case {index}: {e}"))
}

/// Trial seed of case `index` (its noise stream).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(index)
}

/// One case run and evaluated: its record, the scenario it ran as, the trial's measurements
/// and the verdicts they gave.
pub struct Evaluated {
    /// The case's record.
    pub record: CaseRecord,
    /// The scenario the case ran as.
    pub scenario: Scenario,
    /// The trial's measurements.
    pub measurements: crate::verdict::Measurements,
    /// The verdict of every requirement the scenario verifies.
    pub verdicts: Vec<crate::verdict::RequirementVerdict>,
}

/// Runs one case: writes it as YAML, loads it, runs one trial, evaluates the properties.
pub fn run_case(
    case: &FuzzCase,
    index: u64,
    seed: u64,
    campaign: &Campaign<'_>,
    rig: &mut SimRig,
) -> Result<(CaseRecord, Scenario), String> {
    evaluate_case(
        case,
        index,
        case_seed(seed, index),
        campaign.requirements,
        campaign.profiles,
        rig,
    )
    .map(|e| (e.record, e.scenario))
}

/// Runs `case` as a scenario whose trial noise stream is `trial_seed`, and evaluates it;
/// `index` names it in the record and in errors.
pub fn evaluate_case(
    case: &FuzzCase,
    index: u64,
    trial_seed: u64,
    requirements: &Requirements,
    profiles: &Profiles,
    rig: &mut SimRig,
) -> Result<Evaluated, String> {
    let id = format!("fuzz-case-{index}");
    let (yaml, file) = scenario_text_and_file(case, profiles, &id, trial_seed)?;
    let scenario = load_scenario_parsed(
        Path::new("fuzz-case.yaml"),
        &yaml,
        file,
        requirements,
        profiles,
    )
    .map_err(|e| format!("case {index} does not make a valid scenario: {e}"))?;
    let trace = rig.run_trial(&scenario, 0).map_err(|e| e.to_string())?;
    let stopped_fraction = requirements
        .get("SR-02")
        .and_then(|r| r.limits.get("stopped_speed_fraction"))
        .map_or(0.05, |l| l.value);
    let m = measure(&trace, stopped_fraction);
    let verdicts = evaluate_trial(&trace, &m, &scenario, requirements);
    rig.recycle(trace);
    let mut record = CaseRecord {
        index,
        failed: Vec::new(),
        inconclusive: Vec::new(),
        push_variation: case.oscillation.is_some() || case.step.is_some(),
        detection_latency_ms: m.detection_latency_ms.filter(|_| m.breakthrough_decision()),
        stop_reason: m.stop_reason.clone(),
        never_detected: m.never_detected(),
        time_to_stop_ms: m.time_to_stop_ms,
        overshoot_mm: m.overshoot_mm,
        overshoot_rev: m.overshoot_rev,
        margins: BTreeMap::new(),
        findings: Vec::new(),
    };
    for v in &verdicts {
        match v.verdict {
            Verdict::Fail => {
                record.failed.push(v.requirement.clone());
                record
                    .findings
                    .push(format!("{} ({})", v.detail, v.requirement));
            }
            // A requirement's verdict is never INCOMPLETE; counted as not conclusive if it were.
            Verdict::Inconclusive | Verdict::Incomplete => {
                record.inconclusive.push(v.requirement.clone());
            }
            Verdict::Pass => {}
        }
        if let (Some(measured), Some(limit)) = (v.measured, v.limit) {
            if v.requirement != "SR-04" && v.requirement != "SR-05" {
                record
                    .margins
                    .insert(format!("{} ({})", v.requirement, v.unit), limit - measured);
            }
        }
    }
    if let (Some(text), false) = (&record.never_detected, record.failed.is_empty()) {
        record.findings.insert(0, text.clone());
    }
    Ok(Evaluated {
        record,
        scenario,
        measurements: m,
        verdicts,
    })
}

/// Shrinks a failing case while every requirement it failed keeps failing (so that the minimal
/// case shows the same failure the counts count, not a milder one).
fn shrink(
    original: &FuzzCase,
    index: u64,
    target: &[String],
    campaign: &Campaign<'_>,
    rig: &mut SimRig,
) -> (FuzzCase, CaseRecord, u32) {
    let mut runner = case_runner(campaign.seed, index);
    let strategy = case_strategy();
    let fails = |case: &FuzzCase, rig: &mut SimRig| -> Option<CaseRecord> {
        run_case(case, index, campaign.seed, campaign, rig)
            .ok()
            .map(|(record, _)| record)
            .filter(|record| target.iter().all(|t| record.failed.contains(t)))
    };
    let mut best_case = original.clone();
    let mut best_record = match fails(original, rig) {
        Some(record) => record,
        None => {
            return (
                original.clone(),
                CaseRecord {
                    index,
                    failed: target.to_vec(),
                    inconclusive: Vec::new(),
                    push_variation: false,
                    detection_latency_ms: None,
                    stop_reason: None,
                    never_detected: None,
                    time_to_stop_ms: None,
                    overshoot_mm: None,
                    overshoot_rev: None,
                    margins: BTreeMap::new(),
                    findings: Vec::new(),
                },
                0,
            )
        }
    };
    let Ok(mut tree) = strategy.new_tree(&mut runner) else {
        return (best_case, best_record, 0);
    };
    let mut steps = 0u32;
    if tree.simplify() {
        while steps < MAX_SHRINK_STEPS {
            steps += 1;
            let candidate = tree.current();
            if let Some(record) = fails(&candidate, rig) {
                best_case = candidate;
                best_record = record;
                if !tree.simplify() {
                    break;
                }
            } else if !tree.complicate() {
                break;
            }
        }
    }
    (best_case, best_record, steps)
}

/// Runs the campaign's cases of this shard on `jobs` threads. Results do not depend on `jobs`.
pub fn run_campaign(
    campaign: &Campaign<'_>,
    mut on_case: impl FnMut(&CaseRecord) + Send,
) -> Result<FuzzResults, String> {
    let (k, n) = campaign.shard;
    if n == 0 || k == 0 || k > n {
        return Err(format!(
            "shard {k}/{n} is not valid: K must be between 1 and N"
        ));
    }
    let indices: Vec<u64> = (0..campaign.cases)
        .filter(|i| i % u64::from(n) == u64::from(k - 1))
        .collect();
    let next = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let out_of_time = std::sync::atomic::AtomicBool::new(false);
    let results: Mutex<Vec<(CaseRecord, Option<FuzzFailure>)>> = Mutex::new(Vec::new());
    let error: Mutex<Option<String>> = Mutex::new(None);
    let on_case = Mutex::new(&mut on_case);
    std::thread::scope(|scope| {
        for _ in 0..campaign.jobs.max(1) {
            scope.spawn(|| {
                let mut rig = campaign.rig.clone();
                loop {
                    if campaign.time_budget.is_some_and(|budget| started.elapsed() >= budget) {
                        out_of_time.store(true, Ordering::Relaxed);
                        return;
                    }
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = indices.get(slot as usize) else {
                        return;
                    };
                    let mut runner = case_runner(campaign.seed, index);
                    let case = match case_strategy().new_tree(&mut runner) {
                        Ok(tree) => tree.current(),
                        Err(e) => {
                            *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("case {index}: {e}"));
                            return;
                        }
                    };
                    let outcome = run_case(&case, index, campaign.seed, campaign, &mut rig);
                    let (record, _) = match outcome {
                        Ok(done) => done,
                        Err(e) => {
                            *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            return;
                        }
                    };
                    let failure = (!record.failed.is_empty()).then(|| {
                        // A premature stop with push variation counts against SR-05's allowed
                        // fraction; it is kept as drawn, not shrunk (a third of a campaign's
                        // time went into shrinking cases that fail nothing on their own).
                        let allowed = within_sr05_allowance(&record.failed, record.push_variation);
                        let (minimal, minimal_record, shrink_steps) = if allowed {
                            (case.clone(), record.clone(), 0)
                        } else {
                            shrink(&case, index, &record.failed, campaign, &mut rig)
                        };
                        let how = if allowed {
                            "kept as drawn (a premature stop with push variation, within SR-05's allowance)".to_owned()
                        } else {
                            format!("shrunk in {shrink_steps} steps")
                        };
                        let id = case_scenario_id(campaign.seed, index);
                        let title = format!("{}: {}", describe(&minimal, campaign.profiles), minimal_record.failed.join(", "));
                        let description = format!(
                            "Found by iohil fuzz, seed {}, case {index}, {how}. {}",
                            campaign.seed,
                            minimal_record.findings.join("; ")
                        );
                        FuzzFailure {
                            index,
                            requirements: record.failed.clone(),
                            minimal_requirements: minimal_record.failed.clone(),
                            original: describe(&case, campaign.profiles),
                            minimal: describe(&minimal, campaign.profiles),
                            findings: minimal_record.findings.clone(),
                            shrink_steps,
                            scenario_yaml: scenario_yaml(&minimal, campaign.profiles, &id, &title, &description, case_seed(campaign.seed, index))
                                .unwrap_or_default(),
                            scenario_file: None,
                            known_anomaly: None,
                            case: minimal,
                        }
                    });
                    if let Ok(mut callback) = on_case.lock() {
                        callback(&record);
                    }
                    results.lock().unwrap_or_else(|p| p.into_inner()).push((record, failure));
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let done = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let complete = done.len() == indices.len() && !out_of_time.load(Ordering::Relaxed);
    let mut results = FuzzResults {
        format_version: FUZZ_FORMAT_VERSION,
        seed: campaign.seed,
        cases_planned: campaign.cases,
        shards: vec![k],
        shard_count: n,
        complete,
        cases: Vec::new(),
        failures: Vec::new(),
        properties: BTreeMap::new(),
        distributions: BTreeMap::new(),
        margins: BTreeMap::new(),
        premature_fraction_with_variation: None,
        failing_requirements: Vec::new(),
        failure_rate: None,
        overpenetration_rate: None,
        harness: crate::run::HarnessIdentity::current(),
    };
    for (record, failure) in done {
        results.cases.push(record);
        results.failures.extend(failure);
    }
    results.summarise();
    results.assess(campaign.requirements);
    Ok(results)
}

/// Merges shard results of one campaign into one result.
pub fn merge(parts: Vec<FuzzResults>, requirements: &Requirements) -> Result<FuzzResults, String> {
    let mut parts = parts.into_iter();
    let mut merged = parts.next().ok_or("nothing to merge")?;
    for part in parts {
        if part.seed != merged.seed
            || part.cases_planned != merged.cases_planned
            || part.shard_count != merged.shard_count
        {
            return Err(format!(
                "cannot merge: seed {} / {} cases / {} shards against seed {} / {} cases / {} shards",
                part.seed, part.cases_planned, part.shard_count, merged.seed, merged.cases_planned, merged.shard_count
            ));
        }
        if let Some(shard) = part.shards.iter().find(|s| merged.shards.contains(s)) {
            return Err(format!("cannot merge: shard {shard} appears twice"));
        }
        merged.shards.extend(part.shards);
        merged.complete &= part.complete;
        merged.cases.extend(part.cases);
        merged.failures.extend(part.failures);
    }
    merged.shards.sort_unstable();
    merged.summarise();
    merged.assess(requirements);
    Ok(merged)
}

/// Parses `K/N` (1 <= K <= N).
pub fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not K/N (for example 1/4)"))?;
    let k: u32 = k
        .trim()
        .parse()
        .map_err(|_| format!("`{k}` in `{text}` is not a whole number"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` in `{text}` is not a whole number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("shard `{text}`: K must be between 1 and N"));
    }
    Ok((k, n))
}

/// The scenario ID of case `index` of the campaign with seed `seed` (its regression file is
/// `<id>.yaml`).
pub fn case_scenario_id(seed: u64, index: u64) -> String {
    format!("fuzz-s{seed}-c{index}")
}

/// Labels each failure an open entry of the known anomaly register already keeps: the entry
/// names the case's scenario (`fuzz-s<seed>-c<index>`) and every requirement the case fails.
/// The failure still fails the campaign.
pub fn label_known_anomalies(
    results: &mut FuzzResults,
    anomalies: &[crate::scenario::KnownAnomaly],
) {
    let seed = results.seed;
    for failure in &mut results.failures {
        let id = case_scenario_id(seed, failure.index);
        failure.known_anomaly = anomalies
            .iter()
            .find(|a| a.covers(&id, failure.requirements.iter().map(String::as_str)))
            .map(|a| a.id.clone());
    }
}

/// Writes each counted failure's minimal case as a scenario file under `dir` (atomically) and
/// records the path; premature stops with push variation only when they exceed SR-05's
/// allowance; not a failure a known anomaly already keeps (its scenario is in the suite, and a
/// second file with the same id would make the suite fail to load). Returns the files written.
pub fn promote(results: &mut FuzzResults, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let sr05_failed = results.failing_requirements.iter().any(|r| r == "SR-05");
    for failure in &mut results.failures {
        if (!failure.counted() && !sr05_failed) || failure.known_anomaly.is_some() {
            continue;
        }
        let id = case_scenario_id(results.seed, failure.index);
        let path = dir.join(format!("{id}.yaml"));
        crate::run::write_atomic(&path, failure.scenario_yaml.as_bytes())
            .map_err(|e| e.to_string())?;
        failure.scenario_file = Some(path.clone());
        written.push(path);
    }
    Ok(written)
}

/// Writes `fuzz.json` into `reports_dir/<run_id>/` (atomically) and points `latest` at it.
pub fn write_evidence(
    results: &FuzzResults,
    reports_dir: &Path,
    run_id: &str,
) -> Result<PathBuf, String> {
    crate::run::check_run_id(run_id)?;
    let path = reports_dir.join(run_id).join("fuzz.json");
    let mut bytes = serde_json::to_vec_pretty(results).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    crate::run::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    crate::run::update_latest_link(reports_dir, run_id);
    Ok(path)
}

/// Reads a `fuzz.json` (or the one in a run directory).
pub fn read_results(path: &Path) -> Result<FuzzResults, String> {
    let file = if path.is_dir() {
        path.join("fuzz.json")
    } else {
        path.to_owned()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("failed to read {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a fuzz result: {e}", file.display()))
}
