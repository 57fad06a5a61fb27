//! Guided falsification: per requirement, an optimiser searches the fuzz space for the case
//! whose margin to the requirement's limit is smallest, and stops at the first case that fails
//! it.
//!
//! Random fuzzing ([`crate::fuzz`]) asks how many random bones pass; falsification asks how
//! close to failing the worst bone one can find is. Each requirement's margin is a robustness
//! value ([`robustness`]): positive while the requirement holds, the larger the safer, and at
//! most zero exactly when its verdict is FAIL. The verdict, computed from the trace as in every
//! run, decides failure; the margin only guides the search. IPOP-CMA-ES ([`cmaes`]) minimises
//! it over the unit box `[0, 1]^27`, decoded ([`decode`]) into the same integer parameters,
//! within the same bounds ([`crate::fuzz::SPACE`]), as the fuzzer draws: profile, bone,
//! operator, battery, motor temperature, sensing. An optional disturbance (push oscillation or
//! step, tired battery, sensor error) is present when its gate coordinate is at least 0.5, as
//! the fuzzer draws it half of the time.
//!
//! Every simulation of the run updates the worst case of every requirement searched, so a case
//! that fails several requirements is attributed to each; a requirement already falsified by an
//! earlier search is not searched again. A failure is shrunk toward the typical case (every
//! requirement it failed still failing) and promoted as a regression scenario like the
//! fuzzer's, named `falsify-s<seed>-sr<nn>-<digest of the case>`.
//!
//! The trial noise stream of every simulation of one requirement's search is the same (common
//! random numbers): the margin is then a deterministic function of the case, which an
//! optimiser needs, and the promoted scenario replays the failure exactly. Generations are
//! evaluated on `--jobs` threads and their values used in the order they were sampled, so a
//! seed gives the same search whatever the number of threads.
//!
//! SR-05 (no premature stop) is searched at nominal push only, where a single premature stop
//! fails it (with push variation SR-05 allows a fraction, which one case cannot show). Its
//! margin is the time from the cap fracture to the firmware's breakthrough decision over
//! SR-01's maximum latency: negative for a stop before the pop. It is flat over cases the
//! detector handles well, so for SR-05 the search is little better than random sampling.

pub mod cmaes;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fuzz::{
    describe, evaluate_case, scenario_file, scenario_text, Bounds, Evaluated, FuzzCase, PROFILES,
    PROPERTIES, SPACE,
};
use crate::rig::SimRig;
use crate::scenario::load::Profiles;
use crate::scenario::Requirements;
use crate::verdict::Verdict;

/// Version of `falsify.json`.
pub const FALSIFY_FORMAT_VERSION: u32 = 1;
/// The falsification record in a run directory.
pub const FALSIFY_FILE: &str = "falsify.json";
/// Coordinates of the searched box (see [`decode`]).
pub const DIMENSIONS: usize = 27;
/// The requirements that can be searched (the fuzzer's properties).
pub const REQUIREMENTS: &[&str] = PROPERTIES;
/// Most shrinking steps per failure.
pub const MAX_SHRINK_STEPS: u32 = 400;
/// A CMA-ES run restarts when its spread is below this in every coordinate: a third of the
/// finest parameter step of the box (the push step's start, 1 ms in 2.9 s), below which the
/// population is one case.
pub const TOL_X: f64 = 1e-4;

/// An integer of `bounds` from a coordinate in [0, 1], each value taking an equal share.
fn pick(u: f64, bounds: Bounds) -> i32 {
    let (lo, hi) = bounds;
    let span = f64::from(hi - lo + 1);
    let offset = (u.clamp(0.0, 1.0) * span).floor();
    // offset is in [0, span], an integer-valued float well inside i32.
    (lo + offset as i32).min(hi)
}

fn pick_u(u: f64, bounds: Bounds) -> u32 {
    pick(u, bounds).unsigned_abs()
}

/// The case at point `u` of the unit box (coordinates past [`DIMENSIONS`] are ignored, missing
/// ones read as 0.5). With `nominal_push` the push neither oscillates nor steps.
pub fn decode(u: &[f64], nominal_push: bool) -> FuzzCase {
    let at = |i: usize| u.get(i).copied().unwrap_or(0.5);
    let s = SPACE;
    let profile_count = i32::try_from(PROFILES.len()).unwrap_or(1);
    let profile = pick(at(0), (0, profile_count - 1)).unsigned_abs() as usize;
    let gate = |i: usize| at(i) >= 0.5 && !(nominal_push && (i == 10 || i == 14));
    FuzzCase {
        profile,
        soft_pct: pick(at(1), s.soft_pct),
        cortex_pct: pick(at(2), s.cortex_pct),
        medullary_pct: pick(at(3), s.medullary_pct),
        far_cortex_pct: pick(at(4), s.far_cortex_pct),
        cortex_strength_pct: pick(at(5), s.cortex_strength_pct),
        medullary_strength_pct: pick(at(6), s.medullary_strength_pct),
        ramp_delta_cmm: pick(at(7), s.ramp_delta_cmm),
        cap_delta_cmm: pick(at(8), s.cap_delta_cmm),
        push_pct: pick(at(9), s.push_pct),
        oscillation: gate(10).then(|| {
            (
                pick_u(at(11), s.oscillation[0]),
                pick_u(at(12), s.oscillation[1]),
                pick_u(at(13), s.oscillation[2]),
            )
        }),
        step: gate(14).then(|| {
            (
                pick(at(15), s.step[0]),
                pick_u(at(16), s.step[1]),
                pick_u(at(17), s.step[2]),
            )
        }),
        reaction_delta_ms: pick(at(18), s.reaction_delta_ms),
        battery: gate(19).then(|| (pick_u(at(20), s.battery[0]), pick_u(at(21), s.battery[1]))),
        temperature_delta_c: pick(at(22), s.temperature_delta_c),
        sensor: gate(23).then(|| {
            (
                pick(at(24), s.sensor[0]),
                pick(at(25), s.sensor[1]),
                pick_u(at(26), s.sensor[2]),
            )
        }),
    }
}

/// What the margin of `requirement` measures, for the output.
pub fn objective(requirement: &str) -> &'static str {
    match requirement {
        "SR-01" => "(maximum latency - detection latency) / maximum latency",
        "SR-02" => "(stop limit - time to stop) / stop limit",
        "SR-03" => "smallest of (limit - overshoot) / limit in mm and in rev",
        "SR-04" => {
            "(medullary width - depth past the inner surface while rotating) / medullary width"
        }
        "SR-05" => {
            "(breakthrough decision - cap fracture) / SR-01's maximum latency, at nominal push"
        }
        _ => "",
    }
}

/// The requirements `evaluated` fails that count for one case: a premature stop with push
/// variation counts against SR-05's allowed fraction, not as a failure of one case.
pub fn counted_failures(evaluated: &Evaluated) -> Vec<String> {
    evaluated
        .record
        .failed
        .iter()
        .filter(|r| !(r.as_str() == "SR-05" && evaluated.record.push_variation))
        .cloned()
        .collect()
}

/// The normalised margin of `requirement` on an evaluated case: positive while it holds, at
/// most zero exactly when it fails (see the module documentation; [`objective`] says what
/// each one measures). A requirement the case did not exercise (no breakthrough) gives 1.
pub fn robustness(requirement: &str, evaluated: &Evaluated, requirements: &Requirements) -> f64 {
    let failed = counted_failures(evaluated).iter().any(|r| r == requirement);
    let verdict = evaluated
        .verdicts
        .iter()
        .find(|v| v.requirement == requirement);
    let m = &evaluated.measurements;
    let max_latency = requirements
        .get("SR-01")
        .and_then(|r| r.limits.get("max_latency_ms"))
        .map_or(20.0, |l| l.value)
        .max(1e-9);
    let normalised = |measured: f64, limit: f64| (limit - measured) / limit.abs().max(1e-9);
    let raw = match requirement {
        "SR-04" => {
            let width = evaluated.scenario.bone.medullary.thickness_mm.max(1e-9);
            m.overshoot_mm.map(|o| (width - o) / width)
        }
        "SR-05" => {
            if evaluated.record.push_variation {
                None
            } else {
                match (m.motor_off_ms, m.t_bt_ms) {
                    (Some(off), Some(bt)) if m.breakthrough_decision() => {
                        Some((off - bt) / max_latency)
                    }
                    _ => None,
                }
            }
        }
        _ => verdict.and_then(|v| {
            let clauses = v
                .clauses
                .iter()
                .filter(|c| c.verdict != Verdict::Inconclusive)
                .filter_map(|c| Some(normalised(c.measured?, c.limit?)))
                .fold(None, |acc: Option<f64>, r| {
                    Some(acc.map_or(r, |a| a.min(r)))
                });
            clauses.or_else(|| Some(normalised(v.measured?, v.limit?)))
        }),
    };
    let r = raw.filter(|r| r.is_finite());
    if failed {
        r.map_or(-1.0, |r| r.min(0.0))
    } else {
        // A requirement that holds keeps a positive margin, however thin.
        r.map_or(1.0, |r| r.max(1e-9))
    }
}

/// The trial noise seed of every simulation of `requirement`'s search.
pub fn trial_seed(seed: u64, requirement: &str) -> u64 {
    let tag = requirement.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ tag
}

/// The scenario id a failure of `requirement` is promoted under: the seed, the requirement and
/// the first 8 hex digits of the SHA-256 of the minimal case and its trial seed. Another
/// requirement list, budget or firmware can make the same seed find another case; the digest
/// keeps such a case from taking the id of one the suite already keeps.
pub fn scenario_id(seed: u64, requirement: &str, case: &FuzzCase, trial_seed: u64) -> String {
    let identity = format!(
        "{}/{trial_seed}",
        serde_json::to_string(case).unwrap_or_default()
    );
    let digest = crate::sha256_hex(identity.as_bytes());
    format!(
        "falsify-s{seed}-{}-{}",
        requirement.to_ascii_lowercase().replace('-', ""),
        digest.get(..8).unwrap_or(&digest)
    )
}

/// One point of a search's convergence history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Simulations of this search so far.
    pub simulations: u64,
    /// The smallest margin of the requirement seen so far in the whole run.
    pub worst_margin: f64,
}

/// The worst case of a requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorstCase {
    /// Normalised margin (at most 0 when the requirement failed).
    pub margin: f64,
    /// The case.
    pub case: FuzzCase,
    /// The case in engineering terms.
    pub description: String,
    /// Trial noise seed it ran with.
    pub trial_seed: u64,
    /// Requirements it failed (counted as for one case).
    pub failed: Vec<String>,
    /// What failed, with measured value and limit; for a passing case, the requirement's
    /// measured value against its limit.
    pub findings: Vec<String>,
    /// Which requirement's search simulated it, and at which of its simulations.
    pub found_by: String,
    /// Simulation of that search (1-based).
    pub at_simulation: u64,
}

/// A failure found, shrunk and (unless `--no-promote`) kept as a regression scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Falsified {
    /// Scenario id (`falsify-s<seed>-sr<nn>-<digest>`, see [`scenario_id`]).
    pub scenario_id: String,
    /// Requirements the case failed as found.
    pub requirements: Vec<String>,
    /// Requirements the minimal case fails (all of the found case's, maybe more).
    pub minimal_requirements: Vec<String>,
    /// The case as found.
    pub original: String,
    /// The minimal case.
    pub minimal: String,
    /// What failed on the minimal case.
    pub findings: Vec<String>,
    /// Shrinking simulations.
    pub shrink_steps: u32,
    /// The minimal case as scenario YAML.
    pub scenario_yaml: String,
    /// Where it was written, when promoted.
    pub scenario_file: Option<PathBuf>,
    /// The open known anomaly of the suite's register that already keeps this case (it names
    /// the scenario id and every requirement the minimal case fails); such a case still fails
    /// the run but is not promoted again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_anomaly: Option<String>,
    /// The minimal case.
    pub case: FuzzCase,
}

/// One requirement's search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequirementSearch {
    /// Requirement.
    pub requirement: String,
    /// What its margin measures.
    pub objective: String,
    /// Simulations this search ran (0 when an earlier search had already falsified it).
    pub simulations: u64,
    /// CMA-ES restarts (each from a new random mean with twice the population).
    pub restarts: u32,
    /// The requirement failed on some case of the run.
    pub falsified: bool,
    /// Simulations of this search up to and including its first failure.
    pub first_failure_at: Option<u64>,
    /// The smallest margin seen over the whole run, and its case.
    pub worst: Option<WorstCase>,
    /// Smallest margin after each generation of this search.
    pub history: Vec<HistoryPoint>,
    /// The shrunk failure, when falsified.
    pub failure: Option<Falsified>,
}

impl RequirementSearch {
    /// The search's outcome in words, as the console and the report give it.
    pub fn outcome(&self) -> String {
        match (&self.worst, self.falsified, self.first_failure_at) {
            (Some(_), true, Some(at)) => format!("FALSIFIED at simulation {at} of its search"),
            (Some(w), true, None) => format!(
                "FALSIFIED by the {} search (simulation {})",
                w.found_by, w.at_simulation
            ),
            (Some(_), false, _) if self.simulations == 0 => {
                "not searched (time budget); worst margin from the other searches".to_owned()
            }
            (Some(_), false, _) => format!(
                "held over {} simulations ({} restarts)",
                self.simulations, self.restarts
            ),
            (None, _, _) => "not assessed (no simulation ran)".to_owned(),
        }
    }
}

/// `falsify.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FalsifyResults {
    /// [`FALSIFY_FORMAT_VERSION`].
    pub format_version: u32,
    /// Seed.
    pub seed: u64,
    /// Most simulations per requirement's search (shrinking not counted).
    pub budget: u64,
    /// Whether every search ran to its end (its budget or its first failure); false when the
    /// time budget cut the run short.
    pub complete: bool,
    /// The searches, in the order run.
    pub searches: Vec<RequirementSearch>,
    /// Requirements falsified.
    pub failing_requirements: Vec<String>,
    /// Where the harness was built from.
    pub harness: crate::run::HarnessIdentity,
    /// Start, UTC, RFC 3339.
    pub started_utc: String,
    /// End (after shrinking), UTC, RFC 3339.
    pub finished_utc: String,
}

fn utc_now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// What a falsification runs against.
pub struct Falsification<'a> {
    /// Requirements (limits).
    pub requirements: &'a Requirements,
    /// Reference profiles.
    pub profiles: &'a Profiles,
    /// The rig (cloned per worker).
    pub rig: SimRig,
    /// Seed.
    pub seed: u64,
    /// Requirements to search, in order.
    pub targets: Vec<String>,
    /// Most simulations per requirement.
    pub budget: u64,
    /// Stop starting new generations after this long.
    pub time_budget: Option<std::time::Duration>,
    /// Worker threads (results do not depend on it).
    pub jobs: usize,
}

/// Runs `cases` (in order, case `k` with trial noise seed `seeds[k]`) on `rigs.len()` threads;
/// results in the order of `cases`.
fn evaluate_all(
    cases: &[FuzzCase],
    seeds: &[u64],
    first_index: u64,
    requirements: &Requirements,
    profiles: &Profiles,
    rigs: &mut [SimRig],
) -> Vec<Result<Evaluated, String>> {
    let jobs = rigs.len().max(1);
    let mut slots: Vec<Option<Result<Evaluated, String>>> =
        (0..cases.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (worker, rig) in rigs.iter_mut().enumerate() {
            handles.push(scope.spawn(move || {
                let mut out = Vec::new();
                for ((k, case), &seed) in cases
                    .iter()
                    .enumerate()
                    .zip(seeds)
                    .skip(worker)
                    .step_by(jobs)
                {
                    let index = first_index + k as u64;
                    out.push((
                        k,
                        evaluate_case(case, index, seed, requirements, profiles, rig),
                    ));
                }
                out
            }));
        }
        for handle in handles {
            if let Ok(out) = handle.join() {
                for (k, result) in out {
                    if let Some(slot) = slots.get_mut(k) {
                        *slot = Some(result);
                    }
                }
            }
        }
    });
    slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err("a worker thread panicked".to_owned())))
        .collect()
}

/// The measured value of `requirement` against its limit, as one finding line.
fn margin_finding(requirement: &str, e: &Evaluated) -> Vec<String> {
    e.verdicts
        .iter()
        .filter(|v| v.requirement == requirement)
        .map(|v| format!("{} ({requirement})", v.detail))
        .collect()
}

/// Candidates one step simpler than `case`, toward the typical case: a disturbance removed, a
/// parameter set to its nominal value or halved toward it, the profile toward the adult tibia.
fn simpler(case: &FuzzCase) -> Vec<FuzzCase> {
    let mut out = Vec::new();
    let mut push = |c: FuzzCase| {
        if &c != case && !out.contains(&c) {
            out.push(c);
        }
    };
    if case.oscillation.is_some() {
        push(FuzzCase {
            oscillation: None,
            ..case.clone()
        });
    }
    if case.step.is_some() {
        push(FuzzCase {
            step: None,
            ..case.clone()
        });
    }
    if case.battery.is_some() {
        push(FuzzCase {
            battery: None,
            ..case.clone()
        });
    }
    if case.sensor.is_some() {
        push(FuzzCase {
            sensor: None,
            ..case.clone()
        });
    }
    if case.profile != 0 {
        push(FuzzCase {
            profile: 0,
            ..case.clone()
        });
    }
    type Field = fn(&mut FuzzCase) -> &mut i32;
    let fields: [Field; 11] = [
        |c| &mut c.soft_pct,
        |c| &mut c.cortex_pct,
        |c| &mut c.medullary_pct,
        |c| &mut c.far_cortex_pct,
        |c| &mut c.cortex_strength_pct,
        |c| &mut c.medullary_strength_pct,
        |c| &mut c.ramp_delta_cmm,
        |c| &mut c.cap_delta_cmm,
        |c| &mut c.push_pct,
        |c| &mut c.reaction_delta_ms,
        |c| &mut c.temperature_delta_c,
    ];
    for field in fields {
        for value in [0, *field(&mut case.clone()) / 2] {
            let mut c = case.clone();
            *field(&mut c) = value;
            push(c);
        }
    }
    if let Some((a, f, p)) = case.oscillation {
        push(FuzzCase {
            oscillation: Some((a / 2, f, p)),
            ..case.clone()
        });
        push(FuzzCase {
            oscillation: Some((a, f, 0)),
            ..case.clone()
        });
    }
    if let Some((change, at, rise)) = case.step {
        push(FuzzCase {
            step: Some((change / 2, at, rise)),
            ..case.clone()
        });
    }
    if let Some((drop, extra)) = case.battery {
        push(FuzzCase {
            battery: Some((drop / 2, extra)),
            ..case.clone()
        });
        push(FuzzCase {
            battery: Some((drop, extra / 2)),
            ..case.clone()
        });
    }
    if let Some((gain, offset, noise)) = case.sensor {
        push(FuzzCase {
            sensor: Some((gain / 2, offset, noise)),
            ..case.clone()
        });
        push(FuzzCase {
            sensor: Some((gain, offset / 2, noise)),
            ..case.clone()
        });
        push(FuzzCase {
            sensor: Some((gain, offset, noise / 2)),
            ..case.clone()
        });
    }
    out
}

/// Shrinks `case` toward the typical one while every requirement of `target` keeps failing
/// (same trial seed); greedy, each accepted step strictly simpler, at most
/// [`MAX_SHRINK_STEPS`] simulations.
fn shrink(
    case: &FuzzCase,
    seed: u64,
    target: &[String],
    f: &Falsification<'_>,
    rig: &mut SimRig,
) -> Result<(FuzzCase, Evaluated, u32), String> {
    let mut best = case.clone();
    let mut best_eval = evaluate_case(case, 0, seed, f.requirements, f.profiles, rig)?;
    let mut steps = 0u32;
    'outer: loop {
        for candidate in simpler(&best) {
            if steps >= MAX_SHRINK_STEPS {
                break 'outer;
            }
            steps += 1;
            let e = evaluate_case(&candidate, 0, seed, f.requirements, f.profiles, rig)?;
            let failed = counted_failures(&e);
            if target.iter().all(|t| failed.contains(t)) {
                best = candidate;
                best_eval = e;
                continue 'outer;
            }
        }
        break;
    }
    Ok((best, best_eval, steps))
}

/// Runs the searches; `on_generation(requirement, simulations, worst margin)` after each
/// generation (for progress). Results do not depend on `jobs`.
pub fn run(
    f: &Falsification<'_>,
    mut on_generation: impl FnMut(&str, u64, f64),
) -> Result<FalsifyResults, String> {
    for t in &f.targets {
        if !REQUIREMENTS.contains(&t.as_str()) {
            return Err(format!(
                "requirement `{t}` cannot be falsified (searchable: {})",
                REQUIREMENTS.join(", ")
            ));
        }
    }
    let started = std::time::Instant::now();
    let started_utc = utc_now();
    let mut rigs: Vec<SimRig> = (0..f.jobs.max(1)).map(|_| f.rig.clone()).collect();
    let mut worst: BTreeMap<String, WorstCase> = BTreeMap::new();
    let mut searches: Vec<RequirementSearch> = Vec::new();
    let mut complete = true;
    for (number, requirement) in f.targets.iter().enumerate() {
        let mut search = RequirementSearch {
            requirement: requirement.clone(),
            objective: objective(requirement).to_owned(),
            simulations: 0,
            restarts: 0,
            falsified: false,
            first_failure_at: None,
            worst: None,
            history: Vec::new(),
            failure: None,
        };
        if worst.get(requirement).is_some_and(|w| w.margin <= 0.0) {
            // An earlier search's case already fails it: attributed, not searched again.
            searches.push(search);
            continue;
        }
        let nominal_push = requirement == "SR-05";
        let seed = trial_seed(f.seed, requirement);
        let mut error = None;
        let mut out_of_time = false;
        let mut simulations = 0u64;
        let minimum = cmaes::minimise(
            DIMENSIONS,
            f.budget,
            0.0,
            TOL_X,
            f.seed.wrapping_add(number as u64),
            |points| {
                if error.is_some() || f.time_budget.is_some_and(|b| started.elapsed() >= b) {
                    out_of_time |= error.is_none();
                    return Vec::new();
                }
                let cases: Vec<FuzzCase> = points.iter().map(|p| decode(p, nominal_push)).collect();
                let mut values = Vec::with_capacity(cases.len());
                let seeds = vec![seed; cases.len()];
                let results = evaluate_all(
                    &cases,
                    &seeds,
                    simulations,
                    f.requirements,
                    f.profiles,
                    &mut rigs,
                );
                for (case, result) in cases.iter().zip(results) {
                    let e = match result {
                        Ok(e) => e,
                        Err(message) => {
                            error = Some(message);
                            return Vec::new();
                        }
                    };
                    simulations += 1;
                    let failed = counted_failures(&e);
                    for t in &f.targets {
                        if t == "SR-05" && e.record.push_variation {
                            continue;
                        }
                        let margin = robustness(t, &e, f.requirements);
                        if worst.get(t).is_none_or(|w| margin < w.margin) {
                            let findings = if failed.contains(t) {
                                e.record.findings.clone()
                            } else {
                                margin_finding(t, &e)
                            };
                            worst.insert(
                                t.clone(),
                                WorstCase {
                                    margin,
                                    case: case.clone(),
                                    description: describe(case, f.profiles),
                                    trial_seed: seed,
                                    failed: failed.clone(),
                                    findings,
                                    found_by: requirement.clone(),
                                    at_simulation: simulations,
                                },
                            );
                        }
                    }
                    let value = robustness(requirement, &e, f.requirements);
                    if value <= 0.0 && search.first_failure_at.is_none() {
                        search.first_failure_at = Some(simulations);
                    }
                    values.push(value);
                }
                let w = worst.get(requirement).map_or(f64::INFINITY, |w| w.margin);
                search.history.push(HistoryPoint {
                    simulations,
                    worst_margin: w,
                });
                on_generation(requirement, simulations, w);
                values
            },
        );
        if let Some(message) = error {
            return Err(message);
        }
        complete &= !out_of_time;
        search.simulations = simulations;
        search.restarts = minimum.restarts;
        searches.push(search);
    }
    let mut failing = Vec::new();
    let mut shrunk: Vec<(FuzzCase, Falsified)> = Vec::new();
    let rig = rigs.first_mut().ok_or("no worker")?;
    for search in &mut searches {
        search.worst = worst.get(&search.requirement).cloned();
        let Some(w) = search.worst.as_ref().filter(|w| w.margin <= 0.0) else {
            continue;
        };
        search.falsified = true;
        failing.push(search.requirement.clone());
        if let Some((_, done)) = shrunk.iter().find(|(c, _)| c == &w.case) {
            search.failure = Some(done.clone());
            continue;
        }
        let (minimal, e, steps) = shrink(&w.case, w.trial_seed, &w.failed, f, rig)?;
        let id = scenario_id(f.seed, &search.requirement, &minimal, w.trial_seed);
        let failed = counted_failures(&e);
        let title = format!("{}: {}", describe(&minimal, f.profiles), failed.join(", "));
        let description = format!(
            "Found by iohil falsify --seed {}, searching {} (simulation {} of that search), \
             shrunk in {steps} steps. {}",
            f.seed,
            w.found_by,
            w.at_simulation,
            e.record.findings.join("; ")
        );
        let falsified = Falsified {
            scenario_id: id.clone(),
            requirements: w.failed.clone(),
            minimal_requirements: failed,
            original: w.description.clone(),
            minimal: describe(&minimal, f.profiles),
            findings: e.record.findings.clone(),
            shrink_steps: steps,
            // It verifies what the minimal case exercises: a premature stop leaves SR-01
            // without a breakthrough to time, and a claim it cannot exercise would be
            // INCONCLUSIVE in every run.
            scenario_yaml: format!(
                "# Written by iohil falsify. Replays the shrunk worst case of a search; edit with care.\n{}",
                scenario_text(&scenario_file(
                    &minimal,
                    f.profiles,
                    &id,
                    &title,
                    &description,
                    w.trial_seed,
                    &REQUIREMENTS
                        .iter()
                        .copied()
                        .filter(|r| !e.record.inconclusive.iter().any(|i| i == r))
                        .collect::<Vec<_>>(),
                )?)
            ),
            scenario_file: None,
            known_anomaly: None,
            case: minimal,
        };
        shrunk.push((w.case.clone(), falsified.clone()));
        search.failure = Some(falsified);
    }
    Ok(FalsifyResults {
        format_version: FALSIFY_FORMAT_VERSION,
        seed: f.seed,
        budget: f.budget,
        complete,
        searches,
        failing_requirements: failing,
        harness: crate::run::HarnessIdentity::current(),
        started_utc,
        finished_utc: utc_now(),
    })
}

impl FalsifyResults {
    /// Whether a requirement was falsified.
    pub fn failed(&self) -> bool {
        !self.failing_requirements.is_empty()
    }

    /// Simulations over all searches (shrinking not counted).
    pub fn simulations(&self) -> u64 {
        self.searches.iter().map(|s| s.simulations).sum()
    }

    /// The summary printed after a run.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ =
            writeln!(
            out,
            "falsification, seed {}: IPOP-CMA-ES over the fuzz space ({DIMENSIONS} coordinates), \
             at most {} simulations per requirement; {} simulations{}",
            self.seed,
            self.budget,
            self.simulations(),
            if self.complete { "" } else { " (INCOMPLETE: the time budget ran out)" }
        );
        let _ = writeln!(out, "requirement  worst margin  simulations  result");
        for s in &self.searches {
            let margin = s
                .worst
                .as_ref()
                .map_or("-".to_owned(), |w| format!("{:+.3}", w.margin));
            let result = s.outcome();
            let _ = writeln!(
                out,
                "{:<12} {margin:>12}  {:>11}  {result}",
                s.requirement, s.simulations
            );
            if let Some(w) = &s.worst {
                let _ = writeln!(out, "  worst case: {}", w.description);
                for finding in &w.findings {
                    let _ = writeln!(out, "    {finding}");
                }
            }
            if let Some(failure) = &s.failure {
                let _ = writeln!(
                    out,
                    "  minimal case ({} shrinking simulations): {}",
                    failure.shrink_steps, failure.minimal
                );
                if let Some(path) = &failure.scenario_file {
                    let _ = writeln!(out, "  kept as {}", path.display());
                }
                if let Some(id) = &failure.known_anomaly {
                    let _ = writeln!(
                        out,
                        "  known anomaly {id}: already kept as scenario {}",
                        failure.scenario_id
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "falsify: {}",
            if self.failed() {
                format!("FAIL ({})", self.failing_requirements.join(", "))
            } else if self.complete {
                "no requirement falsified".to_owned()
            } else {
                "INCOMPLETE, no requirement falsified so far".to_owned()
            }
        );
        out
    }
}

/// Labels each failure an open entry of the known anomaly register already keeps: the entry
/// names its scenario id and every requirement the minimal case fails. It still fails the run.
pub fn label_known_anomalies(
    results: &mut FalsifyResults,
    anomalies: &[crate::scenario::KnownAnomaly],
) {
    for failure in results
        .searches
        .iter_mut()
        .filter_map(|s| s.failure.as_mut())
    {
        failure.known_anomaly = anomalies
            .iter()
            .find(|a| {
                a.covers(
                    &failure.scenario_id,
                    failure.minimal_requirements.iter().map(String::as_str),
                )
            })
            .map(|a| a.id.clone());
    }
}

/// Writes each failure's minimal case as a scenario file under `dir` (atomically), once per
/// scenario id, and records the path; not a failure a known anomaly already keeps (its
/// scenario is in the suite, and a second file with the same id would stop the suite
/// loading). Returns the files written.
pub fn promote(results: &mut FalsifyResults, dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written: Vec<PathBuf> = Vec::new();
    let mut by_id: BTreeMap<String, PathBuf> = BTreeMap::new();
    for search in &mut results.searches {
        let Some(failure) = search
            .failure
            .as_mut()
            .filter(|f| f.known_anomaly.is_none())
        else {
            continue;
        };
        if let Some(path) = by_id.get(&failure.scenario_id) {
            failure.scenario_file = Some(path.clone());
            continue;
        }
        let path = dir.join(format!("{}.yaml", failure.scenario_id));
        crate::run::write_atomic(&path, failure.scenario_yaml.as_bytes())
            .map_err(|e| e.to_string())?;
        failure.scenario_file = Some(path.clone());
        by_id.insert(failure.scenario_id.clone(), path.clone());
        written.push(path);
    }
    Ok(written)
}

/// Writes `falsify.json` into `reports_dir/<run_id>/` (atomically) and points `latest` at it.
pub fn write_evidence(
    results: &FalsifyResults,
    reports_dir: &Path,
    run_id: &str,
) -> Result<PathBuf, String> {
    crate::run::check_run_id(run_id)?;
    let path = reports_dir.join(run_id).join(FALSIFY_FILE);
    let mut bytes = serde_json::to_vec_pretty(results).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    crate::run::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    crate::run::update_latest_link(reports_dir, run_id);
    Ok(path)
}

/// Simulations each method needed to find its first failure of `requirement`, per seed
/// (`None`: none within the budget).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchComparison {
    /// Requirement searched.
    pub requirement: String,
    /// Budget per seed and method.
    pub budget: u64,
    /// Seeds, in order.
    pub seeds: Vec<u64>,
    /// Guided falsification, per seed.
    pub guided: Vec<Option<u64>>,
    /// Random sampling (the fuzz campaign's cases in index order), per seed.
    pub random: Vec<Option<u64>>,
}

/// The median of simulations-to-first-failure, a search that found none counting as more than
/// the budget; `None` when more than half found none.
pub fn median_to_failure(found: &[Option<u64>]) -> Option<u64> {
    let mut sorted: Vec<u64> = found.iter().map(|f| f.unwrap_or(u64::MAX)).collect();
    sorted.sort_unstable();
    // The lower median, so that 5 of 10 seeds failing to find one already counts as censored.
    let middle = sorted.get((sorted.len().max(1) - 1) / 2).copied()?;
    (middle != u64::MAX).then_some(middle)
}

impl SearchComparison {
    /// Seeds on which guided and random search found a failure.
    pub fn found(&self) -> (usize, usize) {
        (
            self.guided.iter().flatten().count(),
            self.random.iter().flatten().count(),
        )
    }
}

/// Runs guided falsification and random sampling of the fuzz space for `requirement` on the
/// firmware of `rig`, `budget` simulations each per seed, and records when each first failed
/// it. Random sampling draws the fuzz campaign's own cases (seed, index 0, 1, ...).
pub fn compare_with_random(
    requirements: &Requirements,
    profiles: &Profiles,
    rig: &SimRig,
    requirement: &str,
    budget: u64,
    seeds: &[u64],
    jobs: usize,
) -> Result<SearchComparison, String> {
    let mut comparison = SearchComparison {
        requirement: requirement.to_owned(),
        budget,
        seeds: seeds.to_vec(),
        guided: Vec::new(),
        random: Vec::new(),
    };
    for &seed in seeds {
        let f = Falsification {
            requirements,
            profiles,
            rig: rig.clone(),
            seed,
            targets: vec![requirement.to_owned()],
            budget,
            time_budget: None,
            jobs,
        };
        let guided = run(&f, |_, _, _| {})?;
        comparison
            .guided
            .push(guided.searches.first().and_then(|s| s.first_failure_at));
        let mut rigs: Vec<SimRig> = (0..jobs.max(1)).map(|_| rig.clone()).collect();
        let mut first = None;
        let mut next = 0u64;
        while first.is_none() && next < budget {
            let chunk: Vec<u64> = (next..(next + 64).min(budget)).collect();
            let cases = chunk
                .iter()
                .map(|&i| crate::fuzz::case_at(seed, i))
                .collect::<Result<Vec<_>, _>>()?;
            // Each random case runs with its campaign noise stream, as `iohil fuzz` runs it.
            let trial_seeds: Vec<u64> = chunk
                .iter()
                .map(|&i| crate::fuzz::case_seed(seed, i))
                .collect();
            let results = evaluate_all(
                &cases,
                &trial_seeds,
                next,
                requirements,
                profiles,
                &mut rigs,
            );
            for (&index, result) in chunk.iter().zip(results) {
                if counted_failures(&result?).iter().any(|r| r == requirement) {
                    first = Some(index + 1);
                    break;
                }
            }
            next += chunk.len() as u64;
        }
        comparison.random.push(first);
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(value: i32, bounds: Bounds) -> bool {
        (bounds.0..=bounds.1).contains(&value)
    }

    #[test]
    fn the_box_corners_and_centre_decode_to_the_bounds_of_the_space() {
        let low = decode(&[0.0; DIMENSIONS], false);
        assert_eq!(low.profile, 0);
        assert_eq!(low.soft_pct, SPACE.soft_pct.0);
        assert_eq!(low.cap_delta_cmm, SPACE.cap_delta_cmm.0);
        assert_eq!(
            (low.oscillation, low.step, low.battery, low.sensor),
            (None, None, None, None)
        );
        let high = decode(&[1.0; DIMENSIONS], false);
        assert_eq!(high.profile, PROFILES.len() - 1);
        assert_eq!(high.soft_pct, SPACE.soft_pct.1);
        assert_eq!(high.temperature_delta_c, SPACE.temperature_delta_c.1);
        assert_eq!(high.oscillation, Some((30, 50, 359)));
        assert_eq!(high.step, Some((40, 3000, 200)));
        assert_eq!(high.battery, Some((110, 350)));
        assert_eq!(high.sensor, Some((10, 60, 40)));
        let nominal = decode(&[1.0; DIMENSIONS], true);
        assert_eq!((nominal.oscillation, nominal.step), (None, None));
        assert!(nominal.battery.is_some());
    }

    #[test]
    fn every_point_decodes_inside_the_space_with_every_value_reachable() {
        let mut rng = cmaes::Xoshiro::new(5);
        let mut seen_soft = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let u: Vec<f64> = (0..DIMENSIONS).map(|_| rng.uniform()).collect();
            let c = decode(&u, false);
            assert!(c.profile < PROFILES.len());
            assert!(within(c.soft_pct, SPACE.soft_pct));
            assert!(within(c.cortex_pct, SPACE.cortex_pct));
            assert!(within(c.medullary_pct, SPACE.medullary_pct));
            assert!(within(c.far_cortex_pct, SPACE.far_cortex_pct));
            assert!(within(c.cortex_strength_pct, SPACE.cortex_strength_pct));
            assert!(within(
                c.medullary_strength_pct,
                SPACE.medullary_strength_pct
            ));
            assert!(within(c.ramp_delta_cmm, SPACE.ramp_delta_cmm));
            assert!(within(c.cap_delta_cmm, SPACE.cap_delta_cmm));
            assert!(within(c.push_pct, SPACE.push_pct));
            assert!(within(c.reaction_delta_ms, SPACE.reaction_delta_ms));
            assert!(within(c.temperature_delta_c, SPACE.temperature_delta_c));
            if let Some((a, fr, p)) = c.oscillation {
                assert!(a <= 30 && (20..=50).contains(&fr) && p < 360);
            }
            if let Some((ch, at, rise)) = c.step {
                assert!(
                    within(ch, SPACE.step[0])
                        && (100..=3000).contains(&at)
                        && (50..=200).contains(&rise)
                );
            }
            if let Some((d, r)) = c.battery {
                assert!(d <= 110 && r <= 350);
            }
            if let Some((g, o, n)) = c.sensor {
                assert!(within(g, SPACE.sensor[0]) && within(o, SPACE.sensor[1]) && n <= 40);
            }
            seen_soft.insert(c.soft_pct);
        }
        assert_eq!(
            seen_soft.len(),
            101,
            "every soft tissue percentage is reachable"
        );
    }

    #[test]
    fn simpler_cases_move_toward_the_typical_case_and_the_typical_case_has_none() {
        let typical = decode(&[0.0; DIMENSIONS], false);
        let typical = FuzzCase {
            soft_pct: 0,
            cortex_pct: 0,
            medullary_pct: 0,
            far_cortex_pct: 0,
            cortex_strength_pct: 0,
            medullary_strength_pct: 0,
            ramp_delta_cmm: 0,
            cap_delta_cmm: 0,
            push_pct: 0,
            reaction_delta_ms: 0,
            temperature_delta_c: 0,
            ..typical
        };
        assert!(simpler(&typical).is_empty());
        let busy = decode(&[0.9; DIMENSIONS], false);
        let candidates = simpler(&busy);
        assert!(candidates
            .iter()
            .any(|c| c.oscillation.is_none() && c.step == busy.step));
        assert!(candidates.iter().any(|c| c.profile == 0));
        assert!(candidates.iter().all(|c| c != &busy));
    }

    #[test]
    fn scenario_ids_name_the_seed_and_the_requirement() {
        let case = decode(&[0.5; DIMENSIONS], false);
        let id = scenario_id(7, "SR-03", &case, 11);
        assert!(id.starts_with("falsify-s7-sr03-") && id.len() == "falsify-s7-sr03-".len() + 8);
        assert_eq!(id, scenario_id(7, "SR-03", &case, 11));
        assert_ne!(id, scenario_id(7, "SR-03", &case, 12));
        let other = FuzzCase {
            push_pct: case.push_pct + 1,
            ..case.clone()
        };
        assert_ne!(id, scenario_id(7, "SR-03", &other, 11));
        assert_ne!(trial_seed(1, "SR-01"), trial_seed(1, "SR-02"));
        assert_eq!(trial_seed(1, "SR-01"), trial_seed(1, "SR-01"));
    }
}
