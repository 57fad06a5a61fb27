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
    /// Inject: do not answer the Nth request.
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
