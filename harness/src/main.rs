//! `iohil`: the command-line front end. Parses arguments and calls the library.

mod bench_cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use iohil::baseline::{compare, load_baseline, load_tolerances, Acceptance, Baseline, Tolerances};
use iohil::rig::{SimRig, RIG_KINDS};
use iohil::run::{
    record_comparison, run_suite, scenario_table, summary_text, RunOptions, EXIT_USAGE,
};
use iohil::scenario::load::{load_suite, scenario_schema_json};

/// Hardware-in-the-loop verification harness for powered intraosseous needle driver firmware.
#[derive(Debug, Parser)]
#[command(name = "iohil", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios on a rig, print measured values and verdicts, write evidence.
    ///
    /// Exit codes: 0 all PASS, 1 any FAIL, 2 input or usage error (nothing run),
    /// 3 any INCONCLUSIVE and no FAIL.
    Run {
        /// Scenario files or directories (searched recursively for *.yaml).
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// Rig to run on: `sim` (the control core on the host), `emu` (the board ELF in an
        /// instruction-set emulator) or `bench` (the board on a probe and the programmable
        /// load, described by --rig-file).
        #[arg(long, default_value = "sim", value_parser = clap::builder::PossibleValuesParser::new(RIG_KINDS))]
        rig: String,
        /// Board firmware ELF for `--rig emu` (default: the release build of
        /// firmware-under-test/board/build.sh).
        #[arg(long)]
        elf: Option<PathBuf>,
        /// Rig description for `--rig bench` (e.g. harness/rigs/example-bench.yaml, or the one
        /// `iohil loadsim` writes).
        #[arg(long)]
        rig_file: Option<PathBuf>,
        /// Run on a load whose calibration has expired; every verdict is then INCONCLUSIVE
        /// and the report says why.
        #[arg(long)]
        allow_expired_calibration: bool,
        #[command(flatten)]
        evidence: EvidenceArgs,
        /// Do not show a progress bar.
        #[arg(long)]
        no_progress: bool,
        /// Compare with a baseline: a baseline file, a results.json or a run directory.
        /// A regression beyond tolerance makes the exit code 1.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// Tolerance file for --baseline (default: tolerances.yaml at the suite root).
        #[arg(long, requires = "baseline")]
        tolerances: Option<PathBuf>,
        /// Report baseline regressions without changing the exit code.
        #[arg(long, requires = "baseline")]
        informational: bool,
        /// Let the exit code ignore the FAILs the suite's open known anomalies
        /// (anomalies.yaml) cover, and nothing else; the verdicts stay FAIL.
        #[arg(long)]
        accept_known_anomalies: bool,
    },
    /// Manage baselines.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Search bones, operators, batteries and sensors for cases that violate SR-01..SR-05;
    /// shrink each failure and keep it as a regression scenario.
    ///
    /// Exit codes: 0 no requirement failed, 1 a requirement failed (or the time budget cut the
    /// campaign short), 2 usage error.
    Fuzz {
        /// Cases in the whole campaign (at least 1: an empty campaign proves nothing).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
        cases: u64,
        /// Campaign seed; the same seed gives the same cases and results.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rig to run on.
        #[arg(long, default_value = "sim", value_parser = clap::builder::PossibleValuesParser::new(["sim"]))]
        rig: String,
        /// Worker threads (results do not depend on it).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
        /// Run only shard K of N (cases whose index is K-1 modulo N), e.g. 2/4.
        #[arg(long, value_parser = iohil::fuzz::parse_shard)]
        shard: Option<(u32, u32)>,
        /// Stop starting new cases after this long (e.g. 90s, 10m); the result says so.
        #[arg(long, value_parser = humantime::parse_duration)]
        time_budget: Option<std::time::Duration>,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Guided falsification: per requirement, minimise its margin over the fuzz space with
    /// IPOP-CMA-ES, stop at its first failure, shrink it and keep it as a regression scenario;
    /// writes falsify.json and the report ("Worst cases found").
    ///
    /// Exit codes: 0 no requirement falsified, 1 a requirement falsified (or the time budget
    /// cut the run short), 2 usage error.
    Falsify {
        /// Requirement to search (repeatable; default SR-01..SR-05 in order).
        #[arg(long = "requirement", value_name = "SR-xx", value_parser = clap::builder::PossibleValuesParser::new(iohil::falsify::REQUIREMENTS))]
        requirements: Vec<String>,
        /// Most simulations per requirement (shrinking not counted).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
        budget: u64,
        /// Stop starting new generations after this long (e.g. 90s, 10m); the result says so.
        #[arg(long, value_parser = humantime::parse_duration)]
        time_budget: Option<std::time::Duration>,
        /// Seed; the same seed gives the same search and results whatever --jobs is.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Worker threads (results do not depend on it).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: u16,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Tool validation: run firmware with known defects and check that each is caught by the
    /// requirement expected to catch it, against the shipped firmware as control; writes
    /// validation.json and validation.md (exit 0 every defect caught, 1 not, 2 bad input).
    Validate {
        /// Suite whose scenarios the defects run on.
        #[arg(long, default_value = "scenarios")]
        suite: PathBuf,
        /// The shipped board ELF (the control of the emu defects); without it, sim only.
        #[arg(long)]
        elf: Option<PathBuf>,
        /// The broken-detector test build (build.sh --broken-detector).
        #[arg(long, requires = "elf")]
        elf_broken: Option<PathBuf>,
        /// The panicking test build (build.sh --test-panic).
        #[arg(long, requires = "elf")]
        elf_panic: Option<PathBuf>,
        #[command(flatten)]
        evidence: EvidenceArgs,
    },
    /// Merge the fuzz.json of the shards of one campaign into one result.
    FuzzMerge {
        /// fuzz.json files or run directories, one per shard.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        /// Suite whose requirements judge the merged campaign.
        #[arg(long, default_value = "scenarios")]
        suite: PathBuf,
        #[command(flatten)]
        evidence: EvidenceArgs,
    },
    /// Validate scenario files without running them (exit 0 valid, 2 invalid).
    Check {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the scenario file format (for editors), or with --results the
    /// schema of results.json.
    Schema {
        /// The schema of results.json instead.
        #[arg(long)]
        results: bool,
    },
    /// Measure speed: each benchmark's measured value, target and ratio, in one run.
    ///
    /// Exit codes: 0 printed (with --check: every target met), 1 with --check a target missed,
    /// 2 a benchmark could not run (e.g. no ELF for `emu`).
    Bench {
        /// Only these benchmarks (`sim`, `emu`, `fuzz`, `fuzzmem`, `report`, `decode`, `link`,
        /// `reject`, `falsify`); default all.
        #[arg(long)]
        only: Vec<String>,
        /// Board firmware ELF for the `emu` benchmark.
        #[arg(long, default_value = iohil::firmware::DEFAULT_ELF)]
        elf: PathBuf,
        /// Exit 1 when a target is missed.
        #[arg(long)]
        check: bool,
    },
    /// Regenerate report.html, junit.xml, summary.md, report.json and manifest.json of a run
    /// directory from its stored evidence.
    ///
    /// Exit codes: 0 written, 2 no evidence or unreadable evidence.
    Report {
        /// Run directory (e.g. reports/latest).
        run_dir: PathBuf,
    },
    /// Recompute the SHA-256 of every file of a run directory and compare with its
    /// manifest.json; name every file that changed, disappeared or appeared.
    ///
    /// Exit codes: 0 intact, 1 a file differs, 2 no manifest or unreadable.
    Verify {
        /// Run directory (e.g. reports/latest).
        run_dir: PathBuf,
    },
    /// Check a board firmware ELF against the chip's memory map (--dry-run), or check it and
    /// then flash, verify, reset and run it through a debug probe.
    ///
    /// Exit codes: 0 every check passed (and flashed), 1 a check failed (nothing flashed),
    /// 2 unreadable ELF, unknown chip, no probe or a probe error.
    Flash {
        /// Firmware ELF (default: the release build of firmware-under-test/board/build.sh).
        #[arg(long, default_value = iohil::firmware::DEFAULT_ELF)]
        elf: PathBuf,
        /// Chip, as probe-rs names it.
        #[arg(long, default_value = iohil::firmware::DEFAULT_CHIP)]
        chip: String,
        /// Validate without a probe: load the ELF against the chip's memory map, check the
        /// flash and RAM budgets, the RTT control block, the fault record and the firmware
        /// identity, and that its driver-core is the one the sim rig runs.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Debug probe, VID:PID[:SERIAL] (see `iohil probes`); default: the only one attached.
        #[arg(long, conflicts_with = "dry_run")]
        probe: Option<String>,
        /// Do not show a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// List the attached debug probes with the selector a rig file names them by.
    Probes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A virtual load controller: speaks the load protocol on a new pseudo-terminal (printed),
    /// plays profiles in real time with the plant model, and writes a rig file to try
    /// `iohil run --rig bench` without hardware.
    Loadsim(bench_cli::LoadsimArgs),
    /// Soak a bench rig: trials back to back for a duration (e.g. 8h) against the rig file's
    /// load (typically `iohil loadsim`), recording memory over time and every lost sample.
    ///
    /// Exit codes: 0 no loss, no anomaly and flat memory; 1 otherwise; 2 set-up error.
    Soak(bench_cli::SoakArgs),
}

/// Where a command writes its evidence.
#[derive(Debug, Clone, clap::Args)]
struct EvidenceArgs {
    /// Directory that receives `<run-id>/` (results.json and traces, or fuzz.json) and the
    /// `latest` link.
    #[arg(long, default_value = "reports")]
    reports: PathBuf,
    /// Run ID (default: UTC time and a random suffix); a plain name, it never leaves --reports.
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<String>,
}

/// What `fuzz` and `falsify` share: where failures are kept, the suite, the evidence, progress.
#[derive(Debug, clap::Args)]
struct SearchArgs {
    /// Directory that receives the minimal failing cases as scenario files.
    #[arg(long, default_value = "scenarios/regressions")]
    promote: PathBuf,
    /// Do not write regression scenarios.
    #[arg(long)]
    no_promote: bool,
    /// Suite whose requirements and profiles the search uses.
    #[arg(long, default_value = "scenarios")]
    suite: PathBuf,
    #[command(flatten)]
    evidence: EvidenceArgs,
    /// Do not show progress.
    #[arg(long)]
    no_progress: bool,
}

fn parse_run_id(text: &str) -> Result<String, String> {
    iohil::run::check_run_id(text).map(|()| text.to_owned())
}

#[derive(Debug, Subcommand)]
enum BaselineCommand {
    /// Promote a complete run to the baseline, recording who accepted it, when and why.
    Accept {
        /// Run directory (or its results.json).
        run: PathBuf,
        /// Why this run becomes the baseline (kept in the baseline file).
        #[arg(long)]
        reason: String,
        /// Who accepts it (default: $USER, else git's user.name).
        #[arg(long)]
        by: Option<String>,
        /// Baseline file to write (default: scenarios/baselines/<rig>.json).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            paths,
            rig,
            elf,
            rig_file,
            allow_expired_calibration,
            evidence,
            no_progress,
            baseline,
            tolerances,
            informational,
            accept_known_anomalies,
        } => {
            let baseline = baseline.map(|path| BaselineOptions {
                path,
                tolerances,
                informational,
            });
            let rig = RigChoice {
                kind: rig,
                elf,
                rig_file,
                allow_expired_calibration,
            };
            run(
                paths,
                &rig,
                evidence,
                no_progress,
                baseline,
                accept_known_anomalies,
            )
        }
        Command::Baseline(BaselineCommand::Accept {
            run,
            reason,
            by,
            output,
        }) => accept(&run, reason, by, output),
        Command::Check { paths } => check(paths),
        Command::Validate {
            suite,
            elf,
            elf_broken,
            elf_panic,
            evidence,
        } => validate(
            &suite,
            elf.as_deref(),
            elf_broken.as_deref(),
            elf_panic.as_deref(),
            evidence,
        ),
        Command::Fuzz {
            cases,
            seed,
            rig: _,
            jobs,
            shard,
            time_budget,
            search,
        } => fuzz(FuzzOptions {
            cases,
            seed,
            jobs: usize::from(jobs),
            shard: shard.unwrap_or((1, 1)),
            time_budget,
            promote: (!search.no_promote).then_some(search.promote),
            suite: search.suite,
            evidence: search.evidence,
            no_progress: search.no_progress,
        }),
        Command::Falsify {
            requirements,
            budget,
            time_budget,
            seed,
            jobs,
            search,
        } => falsify(FalsifyOptions {
            requirements,
            budget,
            time_budget,
            seed,
            jobs: usize::from(jobs),
            promote: (!search.no_promote).then_some(search.promote),
            suite: search.suite,
            evidence: search.evidence,
            no_progress: search.no_progress,
        }),
        Command::FuzzMerge {
            parts,
            suite,
            evidence,
        } => fuzz_merge(&parts, &suite, evidence),
        Command::Schema { results: false } => {
            println!("{}", scenario_schema_json());
            0
        }
        Command::Schema { results: true } => {
            println!("{}", iohil::run::results_schema_json());
            0
        }
        Command::Report { run_dir } => {
            if write_reports(&run_dir) {
                0
            } else {
                EXIT_USAGE
            }
        }
        Command::Verify { run_dir } => verify(&run_dir),
        Command::Bench { only, elf, check } => {
            for name in &only {
                if !iohil::bench::BENCHMARKS.contains(&name.as_str()) {
                    eprintln!(
                        "error: unknown benchmark `{name}` (available: {})",
                        iohil::bench::BENCHMARKS.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
            match iohil::bench::run(std::path::Path::new("."), &elf, &only) {
                Ok(results) => {
                    print!("{}", iohil::bench::table(&results));
                    i32::from(check && !results.iter().all(|r| r.met()))
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    EXIT_USAGE
                }
            }
        }
        Command::Flash {
            elf,
            chip,
            dry_run: false,
            probe,
            no_progress,
            ..
        } => bench_cli::flash(&elf, &chip, probe.as_deref(), no_progress),
        Command::Flash {
            elf, chip, json, ..
        } => flash(&elf, &chip, json),
        Command::Probes { json } => bench_cli::probes(json),
        Command::Loadsim(args) => bench_cli::loadsim(args),
        Command::Soak(args) => bench_cli::soak(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn prepare_baseline(
    options: BaselineOptions,
    suite_root: &std::path::Path,
) -> Result<(Baseline, PathBuf, Tolerances, bool), iohil::baseline::BaselineError> {
    let baseline = load_baseline(&options.path)?;
    let tolerances_path = options
        .tolerances
        .unwrap_or_else(|| suite_root.join(iohil::scenario::TOLERANCES_FILE));
    let tolerances = load_tolerances(&tolerances_path)?;
    Ok((baseline, options.path, tolerances, options.informational))
}

pub(crate) fn report_diagnostic(error: &dyn miette::Diagnostic) {
    let handler =
        miette::GraphicalReportHandler::new().with_theme(if std::io::stderr().is_terminal() {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        });
    let mut out = String::new();
    if handler.render_report(&mut out, error).is_err() {
        out = error.to_string();
    }
    eprintln!("{out}");
}

/// Prints a baseline or tolerance-file error: located problems with their source lines and
/// hints, anything else on one line.
fn report_baseline_error(error: &iohil::baseline::BaselineError) {
    match error {
        iohil::baseline::BaselineError::Input(problems) => report_diagnostic(problems),
        other => eprintln!("error: {other}"),
    }
}

fn check(paths: Vec<PathBuf>) -> i32 {
    match load_suite(&paths) {
        Ok(suite) => {
            // The suite's baseline tolerances, when it has them, are an input like the rest.
            let tolerances = suite.root.join(iohil::scenario::TOLERANCES_FILE);
            if tolerances.is_file() {
                if let Err(error) = load_tolerances(&tolerances) {
                    report_baseline_error(&error);
                    return EXIT_USAGE;
                }
            }
            println!(
                "{} scenario{} valid (suite {})",
                suite.scenarios.len(),
                if suite.scenarios.len() == 1 { "" } else { "s" },
                suite.root.display()
            );
            0
        }
        Err(error) => {
            report_diagnostic(&error);
            EXIT_USAGE
        }
    }
}

/// Writes the report views and manifest of `run_dir`, printing where; false on failure.
fn write_reports(run_dir: &std::path::Path) -> bool {
    match iohil::report::write_all(run_dir) {
        Ok(written) => {
            println!(
                "report: {}   junit: {}   summary: {}",
                run_dir.join(iohil::report::REPORT_HTML).display(),
                run_dir.join(iohil::report::JUNIT_XML).display(),
                run_dir.join(iohil::report::SUMMARY_MD).display()
            );
            println!(
                "manifest: {} ({} files) sha256 {}",
                run_dir
                    .join(iohil::report::manifest::MANIFEST_FILE)
                    .display(),
                written.report.evidence.len() + 4,
                written.manifest_sha256
            );
            true
        }
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!(
                "the evidence in {} is kept; no report was written",
                run_dir.display()
            );
            false
        }
    }
}

fn verify(run_dir: &std::path::Path) -> i32 {
    match iohil::report::manifest::verify(run_dir) {
        Ok(v) => {
            for (path, recorded, now) in &v.changed {
                println!("CHANGED  {path}\n         recorded {recorded}\n         now      {now}");
            }
            for path in &v.missing {
                println!("MISSING  {path}");
            }
            for path in &v.unlisted {
                println!("UNLISTED {path}");
            }
            for path in &v.incomplete_writes {
                println!("PARTIAL  {path} (an atomic write that never completed)");
            }
            for path in &v.links {
                println!("LINK     {path} (a symbolic link in the evidence)");
            }
            println!(
                "{}: {} unchanged, {} changed, {} missing, {} unlisted, {} partial, {} links (manifest sha256 {})",
                if v.intact() { "INTACT" } else { "TAMPERED" },
                v.unchanged,
                v.changed.len(),
                v.missing.len(),
                v.unlisted.len(),
                v.incomplete_writes.len(),
                v.links.len(),
                v.manifest_sha256
            );
            if v.intact() {
                0
            } else {
                1
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

fn flash(elf: &std::path::Path, chip: &str, json: bool) -> i32 {
    let report = match iohil::firmware::inspect(elf, chip) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            if matches!(error, iohil::firmware::FirmwareError::Read { .. }) {
                eprintln!(
                    "hint: build the firmware with firmware-under-test/board/build.sh, or name an ELF with --elf"
                );
            }
            return EXIT_USAGE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_USAGE;
            }
        }
    } else {
        print!("{report}");
    }
    if report.passed() {
        0
    } else {
        let failed = report.checks.iter().filter(|c| !c.passed).count();
        eprintln!("{failed} check(s) failed: this ELF must not be flashed");
        1
    }
}

struct BaselineOptions {
    path: PathBuf,
    tolerances: Option<PathBuf>,
    informational: bool,
}

fn accept(
    run: &std::path::Path,
    reason: String,
    by: Option<String>,
    output: Option<PathBuf>,
) -> i32 {
    if reason.trim().is_empty() {
        eprintln!("error: --reason must say why this run becomes the baseline");
        return EXIT_USAGE;
    }
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .or_else(git_user_name)
        .unwrap_or_else(|| "unknown".to_owned());
    let rig = load_baseline(run).map(|b| b.rig.kind);
    let output = output.unwrap_or_else(|| {
        PathBuf::from("scenarios/baselines")
            .join(format!("{}.json", rig.as_deref().unwrap_or("sim")))
    });
    let acceptance = Acceptance {
        by,
        utc: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        reason,
    };
    match iohil::baseline::accept(run, &output, acceptance) {
        Ok(baseline) => {
            println!(
                "run {} ({} scenarios) is now the baseline in {}",
                baseline.run_id,
                baseline.scenarios.len(),
                output.display()
            );
            0
        }
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

struct FuzzOptions {
    cases: u64,
    seed: u64,
    jobs: usize,
    shard: (u32, u32),
    time_budget: Option<std::time::Duration>,
    promote: Option<PathBuf>,
    suite: PathBuf,
    evidence: EvidenceArgs,
    no_progress: bool,
}

/// Requirements and profiles of the suite at `root`, or a diagnostic.
fn suite_data(
    root: &std::path::Path,
) -> Result<
    (
        iohil::scenario::Requirements,
        iohil::scenario::load::Profiles,
    ),
    i32,
> {
    let requirements =
        iohil::scenario::load::load_requirements(&root.join(iohil::scenario::REQUIREMENTS_FILE));
    let profiles = iohil::scenario::load::load_profiles(&root.join(iohil::scenario::PROFILES_FILE));
    match (requirements, profiles) {
        (Ok(r), Ok(p)) => Ok((r, p)),
        (Err(e), _) | (_, Err(e)) => {
            report_diagnostic(&e);
            eprintln!(
                "hint: --suite names the directory holding requirements.yaml and profiles.yaml"
            );
            Err(EXIT_USAGE)
        }
    }
}

fn validate(
    suite: &std::path::Path,
    elf: Option<&std::path::Path>,
    broken: Option<&std::path::Path>,
    panic: Option<&std::path::Path>,
    evidence: EvidenceArgs,
) -> i32 {
    let defects = iohil::validate::known_defects(elf, broken, panic);
    let run_id = evidence.run_id.unwrap_or_else(iohil::run::new_run_id);
    let dir = evidence.reports.join(&run_id);
    let validation = match iohil::validate::validate(suite, &defects, &dir) {
        Ok(v) => v,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("hint: --suite names the scenario suite root (default scenarios/); ELFs come from firmware-under-test/board/build.sh");
            return EXIT_USAGE;
        }
    };
    let markdown = validation.markdown();
    print!("{markdown}");
    let json = match serde_json::to_vec_pretty(&validation) {
        Ok(json) => json,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    for (name, bytes) in [
        ("validation.json", json.as_slice()),
        ("validation.md", markdown.as_bytes()),
    ] {
        if let Err(error) = iohil::run::write_atomic(&dir.join(name), bytes) {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    }
    println!("evidence: {}", dir.display());
    i32::from(!validation.passed)
}

/// What a fuzz campaign or a falsification reads from the suite: requirements, profiles and
/// the known anomaly register, all checked before the search starts.
fn search_inputs(
    root: &std::path::Path,
) -> Result<
    (
        iohil::scenario::Requirements,
        iohil::scenario::load::Profiles,
        Vec<iohil::scenario::KnownAnomaly>,
    ),
    i32,
> {
    let (requirements, profiles) = suite_data(root)?;
    let anomalies = known_anomalies(root, &requirements)?;
    Ok((requirements, profiles, anomalies))
}

/// The suite's known anomaly register (empty without one).
fn known_anomalies(
    root: &std::path::Path,
    requirements: &iohil::scenario::Requirements,
) -> Result<Vec<iohil::scenario::KnownAnomaly>, i32> {
    let path = root.join(iohil::scenario::ANOMALIES_FILE);
    if !path.is_file() {
        return Ok(Vec::new());
    }
    iohil::scenario::load::load_anomalies(&path, requirements).map_err(|e| {
        report_diagnostic(&e);
        EXIT_USAGE
    })
}

fn fuzz(options: FuzzOptions) -> i32 {
    let (requirements, profiles, anomalies) = match search_inputs(&options.suite) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let campaign = iohil::fuzz::Campaign {
        requirements: &requirements,
        profiles: &profiles,
        rig: SimRig::default(),
        seed: options.seed,
        cases: options.cases,
        shard: options.shard,
        jobs: options.jobs.max(1),
        time_budget: options.time_budget,
    };
    let (k, n) = options.shard;
    let in_shard = (options.cases + u64::from(n) - u64::from(k)) / u64::from(n);
    let progress = if options.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(in_shard), ProgressDrawTarget::stderr())
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} cases {per_sec} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let failures = std::sync::atomic::AtomicU64::new(0);
    let started = std::time::Instant::now();
    let outcome = iohil::fuzz::run_campaign(&campaign, |record| {
        if !record.failed.is_empty() {
            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        progress.inc(1);
        progress.set_message(format!(
            "failures so far: {}",
            failures.load(std::sync::atomic::Ordering::Relaxed)
        ));
    });
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut results = match outcome {
        Ok(results) => results,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    println!(
        "ran {} cases in {elapsed:.1} s: {:.0} cases/s with --jobs {} (shrinking included)",
        results.cases.len(),
        results.cases.len() as f64 / elapsed.max(1e-9),
        campaign.jobs
    );
    iohil::fuzz::label_known_anomalies(&mut results, &anomalies);
    if !promoted(options.promote.as_deref(), |dir| {
        iohil::fuzz::promote(&mut results, dir)
    }) {
        return EXIT_USAGE;
    }
    let run_id = options
        .evidence
        .run_id
        .unwrap_or_else(iohil::run::new_run_id);
    let code = report_fuzz(&results, &options.evidence.reports, &run_id);
    if std::env::var_os(iohil::bench::PEAK_RSS_ENV).is_some() {
        if let Some(kib) = iohil::bench::peak_rss_kib() {
            eprintln!("peak_rss_kib={kib}");
        }
    }
    code
}

struct FalsifyOptions {
    requirements: Vec<String>,
    budget: u64,
    time_budget: Option<std::time::Duration>,
    seed: u64,
    jobs: usize,
    promote: Option<PathBuf>,
    suite: PathBuf,
    evidence: EvidenceArgs,
    no_progress: bool,
}

fn falsify(options: FalsifyOptions) -> i32 {
    let (requirements, profiles, anomalies) = match search_inputs(&options.suite) {
        Ok(inputs) => inputs,
        Err(code) => return code,
    };
    let mut targets = options.requirements;
    if targets.is_empty() {
        targets = iohil::falsify::REQUIREMENTS
            .iter()
            .map(|r| (*r).to_owned())
            .collect();
    }
    targets.dedup();
    let falsification = iohil::falsify::Falsification {
        requirements: &requirements,
        profiles: &profiles,
        rig: SimRig::default(),
        seed: options.seed,
        targets,
        budget: options.budget,
        time_budget: options.time_budget,
        jobs: options.jobs.max(1),
    };
    let started = std::time::Instant::now();
    let progress = if options.no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let outcome = iohil::falsify::run(&falsification, |requirement, simulations, worst| {
        progress.set_message(format!(
            "{requirement}: {simulations} simulations, worst margin {worst:+.3}"
        ));
        progress.tick();
    });
    progress.finish_and_clear();
    let mut results = match outcome {
        Ok(results) => results,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ran {} simulations in {elapsed:.1} s with --jobs {} (shrinking included in the time)",
        results.simulations(),
        falsification.jobs
    );
    iohil::falsify::label_known_anomalies(&mut results, &anomalies);
    if !promoted(options.promote.as_deref(), |dir| {
        iohil::falsify::promote(&mut results, dir)
    }) {
        return EXIT_USAGE;
    }
    print!("{}", results.text());
    let run_id = options
        .evidence
        .run_id
        .unwrap_or_else(iohil::run::new_run_id);
    if !evidence_and_reports(iohil::falsify::write_evidence(
        &results,
        &options.evidence.reports,
        &run_id,
    )) {
        return EXIT_USAGE;
    }
    i32::from(results.failed() || !results.complete)
}

/// Writes a search's failures as scenario files under `dir` (none without one); false, with
/// the error printed, when that failed.
fn promoted(
    dir: Option<&std::path::Path>,
    promote: impl FnOnce(&std::path::Path) -> Result<Vec<PathBuf>, String>,
) -> bool {
    let Some(dir) = dir else {
        return true;
    };
    promote(dir)
        .map_err(|error| {
            eprintln!(
                "error: failed to write regression scenarios to {}: {error}",
                dir.display()
            );
        })
        .is_ok()
}

/// After a search wrote its record (`written`): prints where, and writes the run directory's
/// reports. False when either failed (the error is printed).
fn evidence_and_reports(written: Result<PathBuf, String>) -> bool {
    match written {
        Ok(path) => {
            println!("evidence: {}", path.display());
            path.parent().is_none_or(write_reports)
        }
        Err(error) => {
            eprintln!("error: {error}");
            false
        }
    }
}

/// Prints a campaign, writes its evidence, and returns the exit code.
fn report_fuzz(results: &iohil::fuzz::FuzzResults, reports: &std::path::Path, run_id: &str) -> i32 {
    print!("{}", results.text());
    if !evidence_and_reports(iohil::fuzz::write_evidence(results, reports, run_id)) {
        return EXIT_USAGE;
    }
    // A campaign the time budget cut short is not a pass (its report says INCOMPLETE).
    i32::from(results.failed() || !results.complete)
}

fn fuzz_merge(parts: &[PathBuf], suite: &std::path::Path, evidence: EvidenceArgs) -> i32 {
    let (requirements, _) = match suite_data(suite) {
        Ok(data) => data,
        Err(code) => return code,
    };
    let mut loaded = Vec::new();
    for part in parts {
        match iohil::fuzz::read_results(part) {
            Ok(results) => loaded.push(results),
            Err(error) => {
                eprintln!("error: {error}");
                return EXIT_USAGE;
            }
        }
    }
    let mut merged = match iohil::fuzz::merge(loaded, &requirements) {
        Ok(merged) => merged,
        Err(error) => {
            eprintln!("error: {error}");
            return EXIT_USAGE;
        }
    };
    match known_anomalies(suite, &requirements) {
        Ok(anomalies) => iohil::fuzz::label_known_anomalies(&mut merged, &anomalies),
        Err(code) => return code,
    }
    let run_id = evidence.run_id.unwrap_or_else(iohil::run::new_run_id);
    report_fuzz(&merged, &evidence.reports, &run_id)
}

/// `git config user.name`, if git knows one.
fn git_user_name() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["config", "user.name"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !name.is_empty()).then_some(name)
}

/// The rig options of `iohil run`.
struct RigChoice {
    kind: String,
    elf: Option<PathBuf>,
    rig_file: Option<PathBuf>,
    allow_expired_calibration: bool,
}

fn run(
    paths: Vec<PathBuf>,
    choice: &RigChoice,
    evidence: EvidenceArgs,
    no_progress: bool,
    baseline: Option<BaselineOptions>,
    accept_known_anomalies: bool,
) -> i32 {
    let suite = match load_suite(&paths) {
        Ok(suite) => suite,
        Err(error) => {
            report_diagnostic(&error);
            eprintln!("nothing was run");
            return EXIT_USAGE;
        }
    };
    // The baseline and its tolerances are checked before anything runs.
    let baseline = match baseline
        .map(|b| prepare_baseline(b, &suite.root))
        .transpose()
    {
        Ok(baseline) => baseline,
        Err(error) => {
            report_baseline_error(&error);
            eprintln!("nothing was run");
            return EXIT_USAGE;
        }
    };
    let rig_kind = choice.kind.as_str();
    if choice.elf.is_some() && rig_kind != "emu" {
        eprintln!(
            "error: --elf is for --rig emu (the {rig_kind} rig {})",
            if rig_kind == "bench" {
                "flashes the ELF its rig file names"
            } else {
                "runs no ELF"
            }
        );
        return EXIT_USAGE;
    }
    if (choice.rig_file.is_some() || choice.allow_expired_calibration) && rig_kind != "bench" {
        eprintln!("error: --rig-file and --allow-expired-calibration are for --rig bench");
        return EXIT_USAGE;
    }
    // Held for the whole run: one run per bench rig.
    let mut _bench_lock = None;
    let mut rig: Box<dyn iohil::rig::Rig> = match rig_kind {
        "sim" => Box::new(SimRig::default()),
        "bench" => {
            let Some(rig_file) = &choice.rig_file else {
                eprintln!(
                    "error: --rig bench needs --rig-file (see harness/rigs/example-bench.yaml, or run `iohil loadsim` for a virtual bench)"
                );
                return EXIT_USAGE;
            };
            match bench_cli::setup(rig_file, choice.allow_expired_calibration, no_progress) {
                Ok(bench) => {
                    _bench_lock = Some(bench._lock);
                    Box::new(bench.rig)
                }
                Err(code) => return code,
            }
        }
        "emu" => {
            let path = choice
                .elf
                .clone()
                .unwrap_or_else(|| PathBuf::from(iohil::firmware::DEFAULT_ELF));
            match iohil::rig::EmuRig::load(&path) {
                Ok(rig) => {
                    if rig.image.test_build {
                        eprintln!(
                            "warning: {} is a test build (deliberately broken), not the shipped firmware",
                            path.display()
                        );
                    }
                    Box::new(rig)
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    eprintln!("nothing was run");
                    return EXIT_USAGE;
                }
            }
        }
        other => {
            eprintln!(
                "error: rig `{other}` is not available in this build (available: {})",
                RIG_KINDS.join(", ")
            );
            return EXIT_USAGE;
        }
    };
    if rig_kind != "bench" {
        // The bench rig installs its own handlers (they bring the board and the load to their
        // safe state); the sim and emu rigs end the run after the trial under way.
        let abort = iohil::safety::Abort::new();
        if let Err(error) = iohil::safety::install_signal_handlers(std::sync::Arc::clone(&abort)) {
            eprintln!("error: cannot install the signal handlers: {error}");
            eprintln!("nothing was run");
            return EXIT_USAGE;
        }
        rig = Box::new(iohil::rig::Interruptible { inner: rig, abort });
    }
    let total: u64 = suite.scenarios.iter().map(|s| u64::from(s.trials)).sum();
    let progress = if no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} trials {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    println!(
        "iohil {}: {} scenarios, {total} trials on the {rig_kind} rig",
        env!("CARGO_PKG_VERSION"),
        suite.scenarios.len()
    );
    let options = RunOptions {
        reports_dir: evidence.reports,
        run_id: evidence.run_id,
    };
    let outcome = run_suite(&suite, rig.as_mut(), &options, |scenario, trial| {
        progress.inc(1);
        progress.set_message(scenario.id.clone());
        if trial.trial + 1 == scenario.trials_planned {
            progress.suspend(|| print!("{}", scenario_table(scenario)));
        }
    });
    progress.finish_and_clear();
    match outcome {
        Ok((run_dir, mut results)) => {
            if accept_known_anomalies {
                if let Err(error) =
                    iohil::run::accept_known_anomalies(&run_dir, &mut results, &suite.requirements)
                {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            }
            if let Some((baseline, path, tolerances, informational)) = baseline {
                let comparison = compare(&results, &baseline, &path, &tolerances, informational);
                print!("{}", comparison.text());
                if let Err(error) =
                    record_comparison(&run_dir, &mut results, &suite.requirements, comparison)
                {
                    eprintln!("error: {error}");
                    return EXIT_USAGE;
                }
            }
            print!("{}", summary_text(&results, &run_dir));
            if let Some(reason) = &results.aborted {
                let safe_state = if rig_kind == "bench" {
                    "the rig was put in its safe state and "
                } else {
                    ""
                };
                eprintln!(
                    "RUN ABORTED: {reason}; {safe_state}the trials recorded before it are kept (overall verdict INCOMPLETE)"
                );
            }
            if !write_reports(&run_dir) {
                return EXIT_USAGE;
            }
            // An aborted run's summary is INCOMPLETE (exit code 4), never 0.
            results.summary.exit_code
        }
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("evidence recorded before the error is kept in the run directory");
            EXIT_USAGE
        }
    }
}
