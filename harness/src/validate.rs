//! Tool validation (`iohil validate`): the harness is run against firmware with known,
//! deliberate defects, and each defect must be caught by the requirement expected to catch it.
//! The evidence a quality system asks for before it trusts a test tool (ISO 13485 4.1.6,
//! IEC 62304 5.1): each known defect, the requirement expected to catch it, the verdict obtained,
//! and whether the harness behaved as specified.
//!
//! A defect counts as caught only against a control: the same scenarios on the shipped firmware
//! (the default `Config` on sim, the release ELF on emu) must not fail, and the defective
//! firmware must fail every expected requirement. A defect that stops being caught, or a
//! control that fails, makes the validation fail.

use std::path::{Path, PathBuf};

use driver_core::Config;
use serde::{Deserialize, Serialize};

use crate::rig::{EmuRig, Rig, SimRig};
use crate::run::{run_suite, RunOptions, RunResults};
use crate::scenario::load::load_suite;
use crate::verdict::Verdict;

/// The firmware a validation run executes.
#[derive(Debug, Clone)]
pub enum Firmware {
    /// The control core on the sim rig with this tuning.
    Sim(Config),
    /// A board ELF on the emu rig.
    Elf(PathBuf),
}

impl Firmware {
    fn rig(&self) -> Result<Box<dyn Rig>, String> {
        match self {
            Firmware::Sim(config) => Ok(Box::new(SimRig::with_config(*config))),
            Firmware::Elf(path) => EmuRig::load(path)
                .map(|rig| Box::new(rig) as Box<dyn Rig>)
                .map_err(|e| e.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Firmware::Sim(_) => "sim".to_owned(),
            Firmware::Elf(path) => format!("emu ({})", path.display()),
        }
    }
}

/// One known defect and what must catch it.
#[derive(Debug, Clone)]
pub struct Defect {
    /// Short ID.
    pub id: String,
    /// What is wrong with the firmware.
    pub what: String,
    /// The defective firmware.
    pub defective: Firmware,
    /// The shipped firmware on the same rig (the control).
    pub shipped: Firmware,
    /// Scenario files, relative to the suite root.
    pub scenarios: Vec<PathBuf>,
    /// Requirements expected to FAIL on the defective firmware.
    pub expected: Vec<String>,
}

/// What one defect's validation showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefectResult {
    /// Defect ID.
    pub id: String,
    /// What is wrong with the firmware.
    pub what: String,
    /// Rig and firmware.
    pub rig: String,
    /// Scenario IDs run.
    pub scenarios: Vec<String>,
    /// Requirements expected to FAIL.
    pub expected: Vec<String>,
    /// Requirements that failed on the defective firmware.
    pub failed_with_defect: Vec<String>,
    /// Requirements that failed on the shipped firmware (the control; should be none).
    pub failed_shipped: Vec<String>,
    /// Every expected requirement failed with the defect and none failed on the control.
    pub caught: bool,
    /// Both runs completed every planned trial (a rig fault would make this false).
    pub harness_ok: bool,
    /// Why it was not caught, if it was not.
    pub detail: String,
}

/// `validation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Format version (1).
    pub format_version: u32,
    /// Where the harness was built from.
    pub harness: crate::run::HarnessIdentity,
    /// One row per known defect.
    pub defects: Vec<DefectResult>,
    /// Every defect caught and the harness behaved as specified.
    pub passed: bool,
}

/// The project's known defects: the weakened tunings kept in driver-core, seeded defects of
/// each protection, and (given their ELFs) the board's test builds on emu.
pub fn known_defects(
    elf: Option<&Path>,
    broken: Option<&Path>,
    panic: Option<&Path>,
) -> Vec<Defect> {
    let sim =
        |id: &str, what: &str, config: Config, scenarios: &[&str], expected: &[&str]| Defect {
            id: id.to_owned(),
            what: what.to_owned(),
            defective: Firmware::Sim(config),
            shipped: Firmware::Sim(Config::DEFAULT),
            scenarios: scenarios.iter().map(PathBuf::from).collect(),
            expected: expected.iter().map(|s| (*s).to_owned()).collect(),
        };
    let mut defects = vec![
        sim(
            "DET-OFF",
            "breakthrough detection disabled (only the missed-pop fallback and the limits stop the motor)",
            Config {
                detection_enabled: false,
                ..Config::DEFAULT
            },
            &["reference/adult-proximal-tibia.yaml"],
            &["SR-01"],
        ),
        sim(
            "DET-0.1",
            "driver-core 0.1's current-drop detector (Config::LEGACY)",
            Config::LEGACY,
            &[
                "regressions/fuzz-s5-c120.yaml",
                "regressions/fuzz-s1-c790.yaml",
                "regressions/fuzz-s1-c841.yaml",
                "regressions/fuzz-s1-c865.yaml",
            ],
            &["SR-01"],
        ),
        sim(
            "DET-0.2",
            "driver-core 0.2's windowed test without the trend-step test (Config::WINDOWED_ONLY)",
            Config::WINDOWED_ONLY,
            &[
                "regressions/fuzz-s1-c268545.yaml",
                "regressions/fuzz-s1-c347474.yaml",
                "regressions/fuzz-s1-c919477.yaml",
            ],
            &["SR-01"],
        ),
        sim(
            "DET-0.3",
            "driver-core 0.3: the windowed and trend-step tests, no plateau-step or level-shift test (Config::DRIVER_CORE_0_3)",
            Config::DRIVER_CORE_0_3,
            &[
                "regressions/falsify-s2-sr01-c6d81f3c.yaml",
                "regressions/falsify-s3-sr01-faf17286.yaml",
                "regressions/falsify-s5-sr01-99ae516d.yaml",
            ],
            &["SR-01", "SR-04"],
        ),
        sim(
            "DET-EAGER",
            "an over-eager detector: any 3 % fall of 2 mA over one tick is a pop",
            Config {
                drop_percent: 3,
                min_drop_ma: 2,
                confirm_ticks: 1,
                noise_factor_q4: 0,
                step_test: false,
                ..Config::DEFAULT
            },
            &["operator/adult-proximal-tibia-oscillation.yaml"],
            &["SR-05"],
        ),
        sim(
            "NO-FALLBACK",
            "missed-pop fallback disabled",
            Config {
                missed_pop_ms: 0,
                ..Config::DEFAULT
            },
            &["protections/missed-pop-gradual.yaml"],
            &["SR-10"],
        ),
        sim(
            "NO-STALL",
            "stall protection never confirms a stall",
            Config {
                stall_confirm_ms: u16::MAX,
                ..Config::DEFAULT
            },
            &["protections/stall-locked-rotor.yaml"],
            &["SR-07"],
        ),
        sim(
            "NO-OVERTIME",
            "over-time limit disabled",
            Config {
                max_run_ms: u32::MAX,
                ..Config::DEFAULT
            },
            &["protections/endless-cortex.yaml"],
            &["SR-08"],
        ),
        sim(
            "NO-LOWBATT",
            "low-battery refusal disabled",
            Config {
                min_loaded_mv: 0,
                ..Config::DEFAULT
            },
            &["protections/low-battery-start.yaml"],
            &["SR-11"],
        ),
    ];
    if let Some(shipped) = elf {
        let emu = |id: &str, what: &str, path: &Path| Defect {
            id: id.to_owned(),
            what: what.to_owned(),
            defective: Firmware::Elf(path.to_owned()),
            shipped: Firmware::Elf(shipped.to_owned()),
            scenarios: vec![PathBuf::from("reference/adult-proximal-tibia.yaml")],
            expected: vec!["SR-01".to_owned()],
        };
        if let Some(path) = broken {
            defects.push(emu(
                "ELF-BROKEN",
                "board test build with the detector disabled (build.sh --broken-detector)",
                path,
            ));
        }
        if let Some(path) = panic {
            defects.push(emu(
                "ELF-PANIC",
                "board test build that panics in the control tick at 300 ms (build.sh --test-panic)",
                path,
            ));
        }
    }
    defects
}

/// Requirements that failed in `results`, sorted and unique.
fn failed(results: &RunResults) -> Vec<String> {
    let mut ids: Vec<String> = results
        .scenarios
        .iter()
        .flat_map(|s| s.verdicts.iter())
        .filter(|v| v.verdict == Verdict::Fail)
        .map(|v| v.requirement.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Runs every defect (and its control) with evidence under `dir/runs/`, and returns the
/// validation. An error is an input or rig-setup problem (nothing to conclude).
pub fn validate(suite_root: &Path, defects: &[Defect], dir: &Path) -> Result<Validation, String> {
    let mut rows = Vec::new();
    for defect in defects {
        let paths: Vec<PathBuf> = defect
            .scenarios
            .iter()
            .map(|p| suite_root.join(p))
            .collect();
        let suite = load_suite(&paths).map_err(|e| format!("{}: {e}", defect.id))?;
        let options = |which: &str| RunOptions {
            reports_dir: dir.join("runs"),
            run_id: Some(format!("{}-{which}", defect.id)),
        };
        let run = |firmware: &Firmware, which: &str| -> Result<RunResults, String> {
            let mut rig = firmware.rig().map_err(|e| format!("{}: {e}", defect.id))?;
            run_suite(&suite, rig.as_mut(), &options(which), |_, _| {})
                .map(|(_, results)| results)
                .map_err(|e| format!("{}: {e}", defect.id))
        };
        let with_defect = run(&defect.defective, "defect")?;
        let shipped = run(&defect.shipped, "shipped")?;
        let failed_with_defect = failed(&with_defect);
        let failed_shipped = failed(&shipped);
        let missing: Vec<&String> = defect
            .expected
            .iter()
            .filter(|r| !failed_with_defect.contains(r))
            .collect();
        let caught = missing.is_empty() && failed_shipped.is_empty();
        let harness_ok = with_defect.complete && shipped.complete;
        let detail = if !failed_shipped.is_empty() {
            format!(
                "the shipped firmware fails {} on these scenarios: no control",
                failed_shipped.join(", ")
            )
        } else if !missing.is_empty() {
            format!(
                "NOT CAUGHT: {} did not fail with the defect",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        rows.push(DefectResult {
            id: defect.id.clone(),
            what: defect.what.clone(),
            rig: defect.defective.describe(),
            scenarios: suite.scenarios.iter().map(|s| s.id.clone()).collect(),
            expected: defect.expected.clone(),
            failed_with_defect,
            failed_shipped,
            caught,
            harness_ok,
            detail,
        });
    }
    let passed = rows.iter().all(|r| r.caught && r.harness_ok);
    Ok(Validation {
        format_version: 1,
        harness: crate::run::HarnessIdentity::current(),
        defects: rows,
        passed,
    })
}

impl Validation {
    /// The tool-validation report as Markdown (also printed).
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "## iohil tool validation: {}\n\nHarness {} {}. Each known defect is run on the scenarios \
             listed and must FAIL every expected requirement, while the shipped firmware passes \
             the same scenarios.\n\n",
            if self.passed { "PASS" } else { "FAIL" },
            self.harness.version,
            self.harness.git_commit
        );
        out.push_str(
            "| defect | what is wrong | rig | scenarios | expected FAIL | failed with defect | \
             shipped fails | caught | harness as specified |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.defects {
            let yes_no = |b: bool| if b { "yes" } else { "**NO**" };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {}{} | {} |\n",
                r.id,
                r.what,
                r.rig,
                r.scenarios.join(", "),
                r.expected.join(", "),
                r.failed_with_defect.join(", "),
                if r.failed_shipped.is_empty() {
                    "none".to_owned()
                } else {
                    r.failed_shipped.join(", ")
                },
                yes_no(r.caught),
                if r.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.detail)
                },
                yes_no(r.harness_ok)
            ));
        }
        out
    }
}
