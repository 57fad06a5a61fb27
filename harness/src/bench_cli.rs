//! The command-line side of the bench rig: `iohil probes`, `iohil flash` with a probe, the
//! bench set-up of `iohil run --rig bench`, and `iohil loadsim`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use iohil::loadlink::protocol::Calibration;
use iohil::loadlink::server::{self, ControllerClock, InjectedFaults, ServeEnd, ServeOptions};
use iohil::rig::bench::probe::{list_probes, ProbeSelector, ProbeTarget};
use iohil::rig::bench::rigfile::load_rig_file;
use iohil::rig::bench::target::{FlashProgress, Target};
use iohil::rig::bench::virtual_load::VirtualLoad;
use iohil::rig::bench::world::World;
use iohil::rig::bench::{open_target, BenchOptions, BenchRig};
use iohil::run::EXIT_USAGE;
use iohil::safety::{install_signal_handlers, Abort, RigLock};

/// `iohil probes`.
pub fn probes(json: bool) -> i32 {
    let probes = list_probes();
    if json {
        let rows: Vec<_> = probes
            .iter()
            .map(|p| {
                serde_json::json!({
                    "selector": p.selector().to_string(),
                    "identifier": p.identifier,
                    "kind": p.kind,
                    "serial": p.serial,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return 0;
    }
    if probes.is_empty() {
        println!("no debug probes attached");
        println!("hint: check the USB cable and the udev rules (README, section \"Bench rig\")");
        return 0;
    }
    println!(
        "{:<32} {:<12} identifier",
        "selector (rig file `probe:`)", "kind"
    );
    for p in &probes {
        println!("{:<32} {:<12} {}", p.selector(), p.kind, p.identifier);
    }
    0
}

fn flash_bar(no_progress: bool) -> (ProgressBar, impl FnMut(FlashProgress)) {
    let bar = if no_progress {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} {bar:30} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let handle = bar.clone();
    let update = move |p: FlashProgress| match p {
        FlashProgress::Erasing(done, total) => {
            handle.set_message("erasing");
            handle.set_length(total);
            handle.set_position(done);
        }
        FlashProgress::Programming(done, total) => {
            handle.set_message("writing");
            handle.set_length(total);
            handle.set_position(done);
        }
        FlashProgress::Verifying => handle.set_message("verifying"),
    };
    (bar, update)
}

/// `iohil flash` with a probe: the dry-run checks, then flash, verify, reset and run.
pub fn flash(elf: &Path, chip: &str, probe: Option<&str>, no_progress: bool) -> i32 {
    let selector = match probe.map(str::parse::<ProbeSelector>).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --probe: {e}");
            return EXIT_USAGE;
        }
    };
    match iohil::firmware::inspect(elf, chip) {
        Ok(report) if report.passed() => {}
        Ok(report) => {
            print!("{report}");
            eprintln!("error: the ELF fails the dry-run checks above: not flashed");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let mut target = match ProbeTarget::open(selector.as_ref(), chip, elf) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let (bar, mut update) = flash_bar(no_progress);
    let flashed = target.flash(elf, &mut update);
    bar.finish_and_clear();
    if let Err(e) = flashed.and_then(|()| target.reset_and_run()) {
        eprintln!("error: {e}");
        return EXIT_USAGE;
    }
    for (k, v) in target.describe() {
        println!("{k}: {v}");
    }
    println!("flashed and verified {}; the core runs", elf.display());
    0
}

/// What `iohil run --rig bench` holds for the run's length.
pub struct Bench {
    /// The rig.
    pub rig: BenchRig,
    /// One run per rig.
    pub _lock: RigLock,
}

/// Sets the bench up for `iohil run --rig bench`: rig file, lock, signals, probe, flash, load.
/// Errors are printed; the exit code is returned.
pub fn setup(
    rig_file: &Path,
    allow_expired_calibration: bool,
    no_progress: bool,
) -> Result<Bench, i32> {
    let desc = match load_rig_file(rig_file) {
        Ok(d) => d,
        Err(e) => {
            crate::report_diagnostic(&e);
            return Err(EXIT_USAGE);
        }
    };
    let lock = RigLock::acquire(&desc.file.rig_id).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let abort = Abort::new();
    if let Err(e) = install_signal_handlers(std::sync::Arc::clone(&abort)) {
        eprintln!("error: cannot watch for Ctrl-C and SIGTERM ({e}): refusing to drive a rig without a way to stop it");
        return Err(EXIT_USAGE);
    }
    let target = open_target(&desc).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    let (bar, mut update) = flash_bar(no_progress);
    let options = BenchOptions {
        allow_expired_calibration,
        abort,
        flash: true,
    };
    let rig = BenchRig::connect(desc, target, &options, &mut update);
    bar.finish_and_clear();
    match rig {
        Ok(rig) => Ok(Bench { rig, _lock: lock }),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was run");
            Err(EXIT_USAGE)
        }
    }
}

/// `iohil loadsim` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadsimArgs {
    /// Serve on this serial port instead of a new pseudo-terminal.
    #[arg(long)]
    port: Option<String>,
    /// Directory for the wires socket and the example rig file (default: a new temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Board firmware ELF the example rig file names.
    #[arg(long, default_value = iohil::firmware::DEFAULT_ELF)]
    elf: PathBuf,
    /// Serial number the controller reports.
    #[arg(long, default_value = "VIRTUAL-0001")]
    serial: String,
    /// Calibration certificate the controller reports.
    #[arg(long, default_value = "VIRTUAL-CAL")]
    calibration_id: String,
    /// Calibration due date the controller reports (YYYY-MM-DD).
    #[arg(long, default_value = "2099-12-31")]
    calibration_due: String,
    /// The fake board's clock error written into the example rig file, ppm.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    board_drift_ppm: f64,
    /// Inject: corrupt the CRC of every Nth READ reply.
    #[arg(long)]
    corrupt_every_nth_read: Option<u32>,
    /// Inject: ignore the Nth request, as if it were lost on the way (neither executed nor
    /// answered).
    #[arg(long)]
    drop_request: Option<u64>,
    /// Inject: execute the Nth request but do not answer it (the reply lost on the way back).
    #[arg(long)]
    drop_reply: Option<u64>,
    /// Inject: send garbage before the Nth reply.
    #[arg(long)]
    garbage_before_reply: Option<u64>,
    /// Inject: hang up (exit, as if unplugged) after N requests.
    #[arg(long)]
    hang_up_after: Option<u64>,
    /// Inject: the load faults this long after a START (e.g. 800ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    load_fault_after: Option<Duration>,
    /// Inject: playback ignores its duration and never ends by itself.
    #[arg(long)]
    never_end: bool,
}

/// `iohil loadsim`: a virtual load controller on a pty (or a port), its world on a wires
/// socket, and a rig file to try the bench path with.
pub fn loadsim(args: LoadsimArgs) -> i32 {
    match loadsim_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

fn loadsim_inner(args: LoadsimArgs) -> Result<i32, String> {
    if !iohil::rig::bench::rigfile::is_date(&args.calibration_due) {
        return Err(format!(
            "--calibration-due {:?} is not a YYYY-MM-DD date",
            args.calibration_due
        ));
    }
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("iohil-loadsim-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let wires = dir.join("wires.sock");
    let _ = std::fs::remove_file(&wires);
    let listener = std::os::unix::net::UnixListener::bind(&wires)
        .map_err(|e| format!("cannot listen on {}: {e}", wires.display()))?;
    let world = World::spawn(listener).map_err(|e| format!("world: {e}"))?;
    world.set_endless(args.never_end);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("async runtime: {e}"))?;
    let _guard = runtime.enter();
    let (stream, port, _slave) = match &args.port {
        Some(port) => {
            let stream = tokio_serial::SerialStream::open(&tokio_serial::new(port, 921_600))
                .map_err(|e| format!("cannot open {port}: {e}"))?;
            (stream, port.clone(), None)
        }
        None => {
            let (master, path, slave) =
                server::open_pty().map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
            (master, path, Some(slave))
        }
    };
    let elf = std::path::absolute(&args.elf).unwrap_or_else(|_| args.elf.clone());
    let rig_file = dir.join("rig.yaml");
    let rig_text = format!(
        "# Written by `iohil loadsim` (pid {pid}): the virtual bench. Edit freely.\n\
         format_version: 1\n\
         rig_id: loadsim-{pid}\n\
         probe: fake\n\
         firmware: {elf:?}\n\
         dut_serial: FAKE-BOARD\n\
         load:\n  port: {port:?}\n  baud: 921600\n  sample_rate_hz: 2000\n  calibration_id: {cal_id}\n  calibration_due: \"{cal_due}\"\n\
         fake:\n  wires: {wires:?}\n  clock_drift_ppm: {drift}\n",
        pid = std::process::id(),
        elf = elf.display().to_string(),
        cal_id = args.calibration_id,
        cal_due = args.calibration_due,
        wires = wires.display().to_string(),
        drift = args.board_drift_ppm,
    );
    std::fs::write(&rig_file, rig_text)
        .map_err(|e| format!("cannot write {}: {e}", rig_file.display()))?;
    println!("iohil loadsim: virtual load controller (plant model in real time)");
    println!("  serial port: {port}");
    println!("  wires:       {}", wires.display());
    println!("  rig file:    {}", rig_file.display());
    println!(
        "  try:         iohil run --rig bench --rig-file {} scenarios/reference",
        rig_file.display()
    );
    let _ = std::io::stdout().flush();
    let calibration = Calibration {
        id: args.calibration_id.clone(),
        due: args.calibration_due.clone(),
        torque_full_scale_nmm: 2000.0,
    };
    let mut playback = VirtualLoad::new(world, calibration, &args.serial).on_event(|e| {
        println!("loadsim: {e}");
        let _ = std::io::stdout().flush();
    });
    let options = ServeOptions {
        faults: InjectedFaults {
            corrupt_every_nth_read: args.corrupt_every_nth_read,
            drop_request: args.drop_request,
            drop_reply: args.drop_reply,
            garbage_before_reply: args.garbage_before_reply,
            hang_up_after: args.hang_up_after,
            load_fault_after: args.load_fault_after,
            ..InjectedFaults::default()
        },
        ..ServeOptions::default()
    };
    let clock = ControllerClock::new();
    let code = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            end = server::serve(stream, &mut playback, clock, options) => match end {
                Ok(ServeEnd::InjectedHangUp) => {
                    println!("loadsim: hung up (injected)");
                    Ok(0)
                }
                Ok(ServeEnd::HostClosed) => Ok(0),
                Err(e) => Err(format!("serial: {e}")),
            },
            _ = tokio::signal::ctrl_c() => Ok(0),
            _ = term.recv() => Ok(0),
        }
    })?;
    let _ = std::fs::remove_file(&wires);
    Ok(code)
}

/// `iohil soak` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// Rig description (e.g. the one `iohil loadsim` writes).
    #[arg(long)]
    rig_file: PathBuf,
    /// How long to soak (e.g. 90s, 30m, 8h).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Scenarios to cycle through.
    #[arg(long, default_value = "scenarios/reference")]
    scenarios: PathBuf,
    /// Directory that receives soak-<time>.csv (one row per trial, written as it goes).
    #[arg(long, default_value = "reports")]
    reports: PathBuf,
    /// Memory growth (resident set, after the first 10 trials) above which the soak fails, MB.
    #[arg(long, default_value_t = 16.0)]
    max_growth_mb: f64,
    /// Run on a load whose calibration has expired.
    #[arg(long)]
    allow_expired_calibration: bool,
}

/// Resident memory of this process now, KiB (Linux `VmRSS`).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Losses a trial's evidence records: lost or skipped telemetry frames, load samples that
/// could not be read back.
fn losses(anomalies: &[String]) -> usize {
    anomalies
        .iter()
        .filter(|a| {
            a.contains("lost")
                || a.contains("skipped")
                || a.contains("could not be read back")
                || a.contains("arrived where")
        })
        .count()
}

/// `iohil soak`.
pub fn soak(args: SoakArgs) -> i32 {
    use iohil::rig::Rig;
    let suite = match iohil::scenario::load::load_suite(std::slice::from_ref(&args.scenarios)) {
        Ok(s) => s,
        Err(e) => {
            crate::report_diagnostic(&e);
            return EXIT_USAGE;
        }
    };
    let mut bench = match setup(&args.rig_file, args.allow_expired_calibration, true) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if let Err(e) = std::fs::create_dir_all(&args.reports) {
        eprintln!("error: cannot create {}: {e}", args.reports.display());
        return EXIT_USAGE;
    }
    let stamp = iohil::run::new_run_id();
    let csv_path = args.reports.join(format!("soak-{stamp}.csv"));
    let mut csv = match std::fs::File::create(&csv_path) {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            eprintln!("error: cannot create {}: {e}", csv_path.display());
            return EXIT_USAGE;
        }
    };
    let header = "elapsed_s,trial,scenario,verdict_anomalies,losses,firmware_faults,rss_kib";
    let _ = writeln!(csv, "{header}");
    println!(
        "iohil soak: {} on rig {} for {}, rows in {}",
        args.scenarios.display(),
        bench.rig.identity().id,
        humantime::format_duration(args.duration),
        csv_path.display()
    );
    let start = std::time::Instant::now();
    let (mut trials, mut lost, mut anomalous, mut faulted) = (0u64, 0usize, 0u64, 0u64);
    let mut baseline_rss: Option<u64> = None;
    let mut peak_rss = 0u64;
    let mut aborted = None;
    'soak: loop {
        for scenario in &suite.scenarios {
            if start.elapsed() >= args.duration {
                break 'soak;
            }
            let (anomalies, faults) = match bench.rig.run_trial(scenario, 0) {
                Ok(trace) => (trace.anomalies, trace.firmware_faults.len()),
                Err(e) => (vec![e.to_string()], 0),
            };
            trials += 1;
            let trial_losses = losses(&anomalies);
            lost += trial_losses;
            anomalous += u64::from(!anomalies.is_empty());
            faulted += u64::from(faults > 0);
            let rss = rss_kib().unwrap_or(0);
            peak_rss = peak_rss.max(rss);
            if trials == 10 {
                baseline_rss = Some(rss);
            }
            let _ = writeln!(
                csv,
                "{:.1},{trials},{},{},{trial_losses},{faults},{rss}",
                start.elapsed().as_secs_f64(),
                scenario.id,
                anomalies.len()
            );
            let _ = csv.flush();
            if trials.is_power_of_two() || trials % 100 == 0 {
                println!(
                    "{:>8.0} s  trial {trials:>6}  rss {:>7.1} MB  lost {lost}  anomalous trials {anomalous}",
                    start.elapsed().as_secs_f64(),
                    rss as f64 / 1024.0
                );
            }
            if let Some(reason) = bench.rig.aborted() {
                aborted = Some(reason);
                break 'soak;
            }
        }
    }
    let final_rss = rss_kib().unwrap_or(0);
    let growth_mb = baseline_rss.map(|b| (final_rss.saturating_sub(b)) as f64 / 1024.0);
    println!(
        "soak: {trials} trials in {:.0} s; lost samples/frames: {lost}; anomalous trials: {anomalous}; firmware faults: {faulted}; resident memory {:.1} MB (peak {:.1} MB{})",
        start.elapsed().as_secs_f64(),
        final_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        growth_mb.map_or_else(
            || ", too few trials to judge growth".to_owned(),
            |g| format!(", {g:+.1} MB since trial 10")
        )
    );
    if let Some(reason) = aborted {
        eprintln!("SOAK ABORTED: {reason}; the rig was put in its safe state");
        return 1;
    }
    let flat = growth_mb.is_none_or(|g| g <= args.max_growth_mb);
    if lost == 0 && anomalous == 0 && faulted == 0 && flat && trials > 0 {
        println!("soak: PASS");
        0
    } else {
        println!("soak: FAIL");
        1
    }
}
