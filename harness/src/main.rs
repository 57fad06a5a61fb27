//! `iohil`: the command-line front end. Parses arguments and calls the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use iohil::rig::{SimRig, RIG_KINDS};
use iohil::run::{run_suite, scenario_table, summary_text, RunOptions, EXIT_USAGE};
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
        /// Rig to run on.
        #[arg(long, default_value = "sim", value_parser = clap::builder::PossibleValuesParser::new(RIG_KINDS))]
        rig: String,
        /// Directory that receives `<run-id>/` and the `latest` link.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Run ID (default: UTC time and a random suffix).
        #[arg(long)]
        run_id: Option<String>,
        /// Do not show a progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Validate scenario files without running them (exit 0 valid, 2 invalid).
    Check {
        /// Scenario files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the scenario file format (for editors).
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            paths,
            rig,
            reports,
            run_id,
            no_progress,
        } => run(paths, &rig, reports, run_id, no_progress),
        Command::Check { paths } => check(paths),
        Command::Schema => {
            println!("{}", scenario_schema_json());
            0
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

fn report_diagnostic(error: &dyn miette::Diagnostic) {
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

fn check(paths: Vec<PathBuf>) -> i32 {
    match load_suite(&paths) {
        Ok(suite) => {
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

fn run(
    paths: Vec<PathBuf>,
    rig_kind: &str,
    reports: PathBuf,
    run_id: Option<String>,
    no_progress: bool,
) -> i32 {
    let suite = match load_suite(&paths) {
        Ok(suite) => suite,
        Err(error) => {
            report_diagnostic(&error);
            eprintln!("nothing was run");
            return EXIT_USAGE;
        }
    };
    let mut rig = match rig_kind {
        "sim" => SimRig::default(),
        other => {
            eprintln!(
                "error: rig `{other}` is not available in this build (available: {})",
                RIG_KINDS.join(", ")
            );
            return EXIT_USAGE;
        }
    };
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
        reports_dir: reports,
        run_id,
    };
    let outcome = run_suite(&suite, &mut rig, &options, |scenario, trial| {
        progress.inc(1);
        progress.set_message(scenario.id.clone());
        if trial.trial + 1 == scenario.trials_planned {
            progress.suspend(|| print!("{}", scenario_table(scenario)));
        }
    });
    progress.finish_and_clear();
    match outcome {
        Ok((run_dir, results)) => {
            print!("{}", summary_text(&results, &run_dir));
            results.summary.exit_code
        }
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!("evidence recorded before the error is kept in the run directory");
            EXIT_USAGE
        }
    }
}
