//! `iohil bench`: speed measured in one run, printed as measured value, target and ratio.
//!
//! Each benchmark runs real work through the same code paths as `iohil run` (no timing
//! assertions in tests; this is where speed targets are checked). Rigs are measured as
//! simulated seconds per wall-clock second on one core: "x real time".

use std::path::Path;
use std::time::Instant;

use crate::rig::{EmuRig, Rig, SimRig};
use crate::scenario::load::load_suite;

/// One benchmark result.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Name (`--only` selects by it).
    pub name: &'static str,
    /// What was measured.
    pub what: String,
    /// Measured value.
    pub measured: f64,
    /// Target (at least).
    pub target: f64,
    /// Unit of both.
    pub unit: &'static str,
}

impl BenchResult {
    /// Measured over target.
    pub fn ratio(&self) -> f64 {
        self.measured / self.target
    }

    /// Whether the target is met.
    pub fn met(&self) -> bool {
        self.measured >= self.target
    }
}

/// The benchmark table.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = format!(
        "{:<6} {:<58} {:>12} {:>10} {:>7}  {}\n",
        "name", "what", "measured", "target", "ratio", "verdict"
    );
    for r in results {
        out.push_str(&format!(
            "{:<6} {:<58} {:>10.1} {unit} {:>8.1} {unit} {:>7.2}  {}\n",
            r.name,
            r.what,
            r.measured,
            r.target,
            r.ratio(),
            if r.met() { "met" } else { "MISSED" },
            unit = r.unit
        ));
    }
    out
}

/// Simulated seconds per wall second of `rig` over every trial of the suite at `scenarios`.
fn real_time_factor(rig: &mut dyn Rig, scenarios: &Path) -> Result<(f64, f64), String> {
    let suite = load_suite(&[scenarios.to_owned()]).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut simulated = 0.0;
    for scenario in &suite.scenarios {
        for trial in 0..scenario.trials {
            let trace = rig.run_trial(scenario, trial).map_err(|e| e.to_string())?;
            if !trace.anomalies.is_empty() {
                return Err(format!(
                    "{} trial {trial}: {}",
                    scenario.id,
                    trace.anomalies.join("; ")
                ));
            }
            simulated += trace.samples.t_s.last().copied().unwrap_or(0.0);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    Ok((simulated / wall, simulated))
}

/// Runs the benchmarks whose name is in `only` (all when empty).
pub fn run(repo_root: &Path, elf: &Path, only: &[String]) -> Result<Vec<BenchResult>, String> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut results = Vec::new();
    if wanted("sim") {
        let mut rig = SimRig::default();
        let path = repo_root.join("scenarios/reference/adult-proximal-tibia.yaml");
        // Warm-up, then the measured run.
        real_time_factor(&mut rig, &path)?;
        let (factor, simulated) = real_time_factor(&mut rig, &path)?;
        results.push(BenchResult {
            name: "sim",
            what: format!("sim rig, adult tibia trial ({simulated:.2} s simulated)"),
            measured: factor,
            target: 1000.0,
            unit: "x",
        });
    }
    if wanted("emu") {
        let mut rig = EmuRig::load(elf).map_err(|e| e.to_string())?;
        let path = repo_root.join("scenarios/reference");
        let (factor, simulated) = real_time_factor(&mut rig, &path)?;
        results.push(BenchResult {
            name: "emu",
            what: format!("emu rig, board ELF, reference scenarios ({simulated:.2} s simulated)"),
            measured: factor,
            target: 1.0,
            unit: "x",
        });
    }
    Ok(results)
}
