//! The `bench` rig: the real board behind a debug probe, its needle shaft on a programmable
//! load driven over a serial port ([`crate::loadlink`]).
//!
//! One trial:
//! 1. the load is cleared, the trial's tables (bone, push, board physics) are uploaded with
//!    their checksums echoed, and it is armed;
//! 2. the board is reset and runs; its boot frame must carry the flashed ELF's identity, and it
//!    must tick with the trigger released before the load starts;
//! 3. the load plays the profile (it drives the trigger line, the push and the resistance in
//!    closed loop, and records its own sensors) while the rig reads RTT every 2 ms and polls the
//!    load's status every 100 ms (the load's link watchdog stops it if the host goes silent);
//! 4. the trial ends when the firmware has stopped the motor and the shaft has been at rest for
//!    [`SETTLE_AFTER_STOP_S`], or at the scenario's duration; the load releases the trigger
//!    (an edge both sides see, for the clock alignment) and the board is put in its safe state;
//! 5. the load's samples are read back (gaps re-requested; a gap that cannot be filled makes the
//!    trial INCONCLUSIVE), the clocks are aligned ([`align`]), and the trace is built on the
//!    load's time base, truth from the load, firmware columns from the telemetry.
//!
//! Any abort (Ctrl-C, SIGTERM, a timeout, a lost link or probe, a load fault) sends the load its
//! emergency stop and puts the board in reset, records the trial as a rig fault, and stops the
//! run; trials already recorded stay on disk.

pub mod align;
pub mod fake;
pub mod probe;
pub mod rigfile;
pub mod target;
pub mod virtual_load;
pub mod wires;
pub mod world;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver_core::telemetry::{FaultRecord, FirmwareId, TickRecord};

use self::align::{align, edges, Alignment};
use self::rigfile::{calibration_expired, today_utc, RigDescription};
use self::target::{CoreState, FlashProgress, Target, TargetError, TargetPoll};
use self::world::ProfileTables;
use super::record::{
    describe_fault, note_board_fault_bits, tick_io, TickRecorder, TruthSample, SETTLE_AFTER_STOP_S,
};
use super::{trial_seed, Rig, RigError, RigIdentity};
use crate::loadlink::client::{ClientOptions, LinkError, LoadClient};
use crate::loadlink::protocol::{Calibration, Identity, LoadSample, LoadState, ProfileKind, Truth};
use crate::plant::{GroundTruth, Plant};
use crate::safety::Abort;
use crate::scenario::Scenario;
use crate::telemetry::{Body, Decoder, Event as TelemetryEvent};
use crate::trace::{FirmwareIdentity, Trace, TRACE_FORMAT_VERSION};

/// How often the rig reads RTT.
pub const POLL_PERIOD: Duration = Duration::from_millis(2);
/// How often the rig polls the load's status (and so feeds its link watchdog).
pub const STATUS_PERIOD: Duration = Duration::from_millis(100);
/// How long the board has to boot and tick before the load starts.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(2);
/// Board ticks with the trigger released required before the load starts.
pub const IDLE_TICKS_BEFORE_START: usize = 20;
/// After a firmware fault ends a trial, how long RTT is still read for what the board reports
/// about it (a watchdog reset after 15 ms, and the boot's report of the fault record).
pub const FAULT_REPORT_GRACE: Duration = Duration::from_millis(100);
/// How long the rig reads on after the load's end, for the release edge.
pub const AFTER_END: Duration = Duration::from_millis(30);
/// Below this the load's shaft counts as at rest, rpm (its speed sensor's noise floor).
pub const SETTLED_SPEED_RPM: f64 = 1.0;
/// A board that sends no tick frame for this long during playback has stopped answering.
pub const TELEMETRY_SILENCE: Duration = Duration::from_millis(500);

/// Why a bench could not be set up (before any trial: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The probe or the target.
    #[error("{0}")]
    Target(#[from] TargetError),
    /// The load link.
    #[error("load controller on {port}: {error}")]
    Link {
        /// Serial port.
        port: String,
        /// Cause.
        error: LinkError,
    },
    /// The rig's state forbids the run (calibration, identity).
    #[error("{0}")]
    Refused(String),
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Run even though the load's calibration has expired (every trial is then INCONCLUSIVE
    /// and the report says why).
    pub allow_expired_calibration: bool,
    /// The run's abort request.
    pub abort: Arc<Abort>,
    /// Flash the firmware before the first trial.
    pub flash: bool,
}

/// The bench rig.
pub struct BenchRig {
    desc: RigDescription,
    target: Box<dyn Target>,
    runtime: tokio::runtime::Runtime,
    link: LoadClient,
    load: Identity,
    calibration: Calibration,
    calibration_expired: bool,
    elf_id: FirmwareId,
    elf_sha256: String,
    abort: Arc<Abort>,
    aborted: Option<String>,
}

impl std::fmt::Debug for BenchRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchRig")
            .field("rig_id", &self.desc.file.rig_id)
            .finish_non_exhaustive()
    }
}

fn link_error(port: &str) -> impl Fn(LinkError) -> BenchError + '_ {
    move |error| BenchError::Link {
        port: port.to_owned(),
        error,
    }
}

impl BenchRig {
    /// Sets the bench up: reads the ELF, opens the load link and checks the controller's
    /// identity and calibration, then flashes and verifies the board (with a progress bar
    /// through `progress`).
    pub fn connect(
        desc: RigDescription,
        mut target: Box<dyn Target>,
        options: &BenchOptions,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<BenchRig, BenchError> {
        let elf = std::fs::read(&desc.firmware).map_err(|e| {
            BenchError::Refused(format!(
                "cannot read the firmware {} named by the rig file: {e}",
                desc.firmware.display()
            ))
        })?;
        let elf_id = object::File::parse(&*elf)
            .ok()
            .as_ref()
            .and_then(crate::firmware::identity_record)
            .ok_or_else(|| {
                BenchError::Refused(format!(
                    "{} is not a board firmware ELF with an identity record",
                    desc.firmware.display()
                ))
            })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BenchError::Refused(format!("async runtime: {e}")))?;
        let port = desc.file.load.port.clone();
        let mut link = runtime
            .block_on(LoadClient::open(
                &port,
                desc.file.load.baud,
                ClientOptions::default(),
            ))
            .map_err(link_error(&port))?;
        let load = runtime.block_on(link.hello()).map_err(link_error(&port))?;
        let calibration = runtime
            .block_on(link.calibration())
            .map_err(link_error(&port))?;
        if calibration.id != desc.file.load.calibration_id
            || calibration.due != desc.file.load.calibration_due
        {
            return Err(BenchError::Refused(format!(
                "the load controller reports calibration {} due {}, but the rig file {} says {} due {}: update the rig file from the calibration certificate",
                calibration.id,
                calibration.due,
                desc.path.display(),
                desc.file.load.calibration_id,
                desc.file.load.calibration_due
            )));
        }
        if load.max_rate_hz < desc.file.load.sample_rate_hz {
            return Err(BenchError::Refused(format!(
                "load.sample_rate_hz {} Hz is above the controller's maximum {} Hz",
                desc.file.load.sample_rate_hz, load.max_rate_hz
            )));
        }
        let today = today_utc();
        let calibration_expired = calibration_expired(&calibration.due, &today);
        if calibration_expired && !options.allow_expired_calibration {
            return Err(BenchError::Refused(format!(
                "the load's calibration {} expired on {} (today is {today}): recalibrate the load, or pass --allow-expired-calibration to run anyway (every verdict is then INCONCLUSIVE)",
                calibration.id, calibration.due
            )));
        }
        if options.flash {
            target.flash(&desc.firmware, progress)?;
        }
        Ok(BenchRig {
            elf_sha256: crate::sha256_hex(&elf),
            desc,
            target,
            runtime,
            link,
            load,
            calibration,
            calibration_expired,
            elf_id,
            abort: Arc::clone(&options.abort),
            aborted: None,
        })
    }

    fn firmware(&self) -> FirmwareIdentity {
        let id = crate::firmware::Identity::from_record(&self.elf_id);
        FirmwareIdentity {
            kind: format!(
                "{} (commit {}, sha256 {})",
                self.desc.firmware.display(),
                id.git_commit,
                &self.elf_sha256
            ),
            version: id.firmware_version,
            shipped_config: self.elf_id.flags & driver_core::telemetry::id_flags::TEST_BUILD == 0
                && !self
                    .desc
                    .file
                    .fake
                    .as_ref()
                    .is_some_and(|f| f.disable_detector),
        }
    }

    /// The rig's safe state: the board reset and held (its drive off at once, whatever its
    /// firmware does), then the load's emergency stop (the client retries it within about a
    /// second); best effort both, and what failed.
    fn safe_state(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.target.safe_state() {
            problems.push(format!("board safe state: {e}"));
        }
        if let Err(e) = self.runtime.block_on(self.link.estop()) {
            problems.push(format!("load emergency stop: {e}"));
        }
        problems
    }
}

/// One trial's telemetry, collected while it runs.
#[derive(Debug, Default)]
struct Telemetry {
    decoder: Decoder,
    ticks: Vec<TickRecord>,
    boot_seen: bool,
    /// Ticks received before the load started.
    ticks_before_start: usize,
    log: String,
    log_lines: Vec<(u32, String)>,
    anomalies: Vec<String>,
    firmware_faults: Vec<String>,
    fault_frames: Vec<(u32, FaultRecord)>,
    /// The boot frame named other firmware than the flashed ELF.
    foreign_firmware: bool,
    /// Restarts seen (boot frames after the first); ticks after one are not recorded.
    restarts: usize,
}

impl Telemetry {
    fn push(&mut self, telemetry: &[u8], log: &[u8], expected_id: &FirmwareId) {
        self.log.push_str(&String::from_utf8_lossy(log));
        while let Some(end) = self.log.find('\n') {
            let line: String = self.log.drain(..=end).collect();
            let tick = self.ticks.last().map_or(0, |t| t.tick);
            self.log_lines.push((tick, line.trim_end().to_owned()));
        }
        self.decoder.push(telemetry);
        while let Some(event) = self.decoder.next_event() {
            let tick = self.ticks.last().map_or(0, |t| t.tick);
            match event {
                TelemetryEvent::Frame {
                    body: Body::Boot(boot),
                    seq,
                } => {
                    self.boot_seen = true;
                    if boot.id != *expected_id {
                        self.foreign_firmware = true;
                    }
                    if seq != 0 || u32::from(boot.tick_hz) != driver_core::TICK_HZ {
                        self.anomalies.push(format!(
                            "boot frame: sequence {seq}, tick rate {} Hz (expected 0, {} Hz)",
                            boot.tick_hz,
                            driver_core::TICK_HZ
                        ));
                    }
                }
                TelemetryEvent::Frame {
                    body: Body::Tick(record),
                    ..
                } => {
                    if !self.boot_seen {
                        self.anomalies
                            .push(format!("tick frame {} before any boot frame", record.tick));
                    }
                    if self.restarts == 0 && record.tick <= tick && !self.ticks.is_empty() {
                        // The board's tick count went back: it restarted, and its boot frame
                        // was lost (a full RTT buffer). Never mix two boots' ticks in a trace.
                        self.restarts += 1;
                        self.firmware_faults.push(format!(
                            "the board restarted by itself (its tick count went back from {tick} to {}; the boot frame was lost)",
                            record.tick
                        ));
                    }
                    if self.restarts > 0 {
                        // Another boot's clock: the trial's trace ends at the restart.
                        continue;
                    }
                    note_board_fault_bits(&record, &mut self.firmware_faults);
                    self.ticks.push(record);
                }
                TelemetryEvent::Frame {
                    body: Body::Fault(fault),
                    ..
                } => {
                    self.fault_frames.push((tick, fault));
                    self.firmware_faults
                        .push(format!("fault frame: {}", describe_fault(&fault)));
                }
                TelemetryEvent::Lost { count, .. } => self.anomalies.push(format!(
                    "{count} telemetry frame(s) lost after board tick {tick} (RTT overflow or link)"
                )),
                TelemetryEvent::OutOfOrder { expected, received } => self.anomalies.push(format!(
                    "telemetry frame {received} arrived where {expected} was expected, after board tick {tick}"
                )),
                TelemetryEvent::Skipped { bytes, reason } => self.anomalies.push(format!(
                    "{bytes} telemetry byte(s) skipped ({reason:?}) after board tick {tick}"
                )),
                TelemetryEvent::Restarted => {
                    self.restarts += 1;
                    self.firmware_faults.push(format!(
                        "the board restarted by itself (boot frame) after tick {tick}"
                    ));
                }
            }
        }
    }
}

/// How the running phase of a trial ended.
#[derive(Debug)]
enum Ending {
    /// The firmware stopped and the shaft settled, or the profile ended.
    Completed,
    /// The firmware faulted (HardFault, lock-up): the trial FAILs.
    FirmwareFault(String),
    /// The run must stop (signal, timeout, link, probe, load fault): safe state.
    Abort(String),
}

impl Rig for BenchRig {
    fn identity(&self) -> RigIdentity {
        let f = &self.desc.file;
        let mut details = vec![
            ("rig_file".to_owned(), self.desc.path.display().to_string()),
            ("rig_file_sha256".to_owned(), self.desc.sha256.clone()),
            (
                "probe".to_owned(),
                self.desc
                    .probe
                    .as_ref()
                    .map_or_else(|| "fake".to_owned(), ToString::to_string),
            ),
            ("chip".to_owned(), f.chip.clone()),
            ("dut_serial".to_owned(), f.dut_serial.clone()),
            ("firmware_sha256".to_owned(), self.elf_sha256.clone()),
            (
                "load_controller".to_owned(),
                format!(
                    "{} serial {} firmware {} protocol {}",
                    self.load.model, self.load.serial, self.load.firmware, self.load.protocol
                ),
            ),
            ("load_port".to_owned(), f.load.port.clone()),
            (
                "load_calibration".to_owned(),
                format!(
                    "{} due {}{}",
                    self.calibration.id,
                    self.calibration.due,
                    if self.calibration_expired {
                        " (EXPIRED: run with --allow-expired-calibration, every verdict INCONCLUSIVE)"
                    } else {
                        ""
                    }
                ),
            ),
            (
                "load_sample_rate_hz".to_owned(),
                f.load.sample_rate_hz.to_string(),
            ),
            (
                "clock_tolerance_ms".to_owned(),
                format!("{}", f.clock.tolerance_ms),
            ),
            (
                "clock_max_drift_ppm".to_owned(),
                format!("{}", f.clock.max_drift_ppm),
            ),
        ];
        details.extend(self.target.describe());
        RigIdentity {
            kind: "bench".to_owned(),
            id: f.rig_id.clone(),
            firmware: self.firmware(),
            details,
        }
    }

    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError> {
        let rig_error = |message: String| RigError {
            rig: "bench".to_owned(),
            scenario: scenario.id.clone(),
            trial,
            message,
        };
        if let Some(reason) = self.aborted.clone().or_else(|| self.abort.reason()) {
            self.aborted = Some(reason.clone());
            return Err(rig_error(format!(
                "not run: the run was aborted ({reason})"
            )));
        }
        match self.trial(scenario, trial) {
            Ok(trace) => Ok(trace),
            Err(TrialAbort(reason)) => {
                let problems = self.safe_state();
                let mut message =
                    format!("aborted: {reason}; load emergency-stopped and board reset");
                if !problems.is_empty() {
                    message = format!(
                        "aborted: {reason}; SAFE STATE INCOMPLETE: {}",
                        problems.join("; ")
                    );
                }
                self.aborted = Some(reason);
                Err(rig_error(message))
            }
        }
    }

    fn aborted(&self) -> Option<String> {
        self.aborted.clone().or_else(|| self.abort.reason())
    }
}

/// A trial that could not complete; the run stops.
#[derive(Debug)]
struct TrialAbort(String);

impl BenchRig {
    fn link<T>(
        &mut self,
        what: &str,
        f: impl AsyncFnOnce(&mut LoadClient) -> Result<T, LinkError>,
    ) -> Result<T, TrialAbort> {
        self.runtime
            .block_on(f(&mut self.link))
            .map_err(|e| TrialAbort(format!("load link lost ({what}): {e}")))
    }

    fn trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, TrialAbort> {
        let mut anomalies = Vec::new();
        if self.calibration_expired {
            anomalies.push(format!(
                "the load's calibration {} expired on {}; run with --allow-expired-calibration",
                self.calibration.id, self.calibration.due
            ));
        }
        // 1. The load: cleared, tables uploaded, armed.
        let status = self.link("STATUS", async |l| l.status().await)?;
        if matches!(status.state, LoadState::Running | LoadState::Armed) {
            self.link("ESTOP", async |l| l.estop().await)?;
        }
        if !matches!(status.state, LoadState::Idle | LoadState::Loaded) {
            self.link("CLEAR", async |l| l.clear().await)?;
        }
        let tables = ProfileTables::of(scenario, trial);
        self.link("PROFILE bone", async |l| {
            l.upload(ProfileKind::Bone, &tables.bone).await
        })?;
        self.link("PROFILE push", async |l| {
            l.upload(ProfileKind::Push, &tables.push).await
        })?;
        match self
            .runtime
            .block_on(self.link.upload(ProfileKind::Plant, &tables.plant))
        {
            Ok(()) => {}
            Err(LinkError::Unsupported { .. }) => anomalies.push(
                "the load controller cannot play the board-side physics (battery, motor temperature, sensor errors): the scenario's values were not applied".to_owned(),
            ),
            Err(e) => return Err(TrialAbort(format!("load link lost (PROFILE plant): {e}"))),
        }
        let duration_ms = (scenario.duration_s * 1000.0).round().clamp(1.0, 600_000.0) as u32;
        let rate = self.desc.file.load.sample_rate_hz;
        self.link("ARM", async |l| l.arm(rate, duration_ms).await)?;

        // 2. The board: a fault record left in its RAM from before this trial is reported and
        // erased (the next boot would report it as its own), then reset, booted, ticking with
        // the trigger released.
        match self.target.fault_record() {
            Ok(Some(record)) => {
                anomalies.push(format!(
                    "a fault record from before this trial was in the board's RAM (erased): {}",
                    describe_fault(&record)
                ));
                self.target
                    .clear_fault_record()
                    .map_err(|e| TrialAbort(format!("erasing the old fault record: {e}")))?;
            }
            Ok(None) => {}
            Err(e) => return Err(TrialAbort(format!("probe: {e}"))),
        }
        self.target
            .reset_and_run()
            .map_err(|e| TrialAbort(format!("board reset: {e}")))?;
        let mut tm = Telemetry::default();
        let boot_deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            self.check_abort()?;
            let poll = self
                .target
                .poll()
                .map_err(|e| TrialAbort(format!("probe: {e}")))?;
            tm.push(&poll.telemetry, &poll.log, &self.elf_id);
            if tm.foreign_firmware {
                return Err(TrialAbort(
                    "the board's boot frame names other firmware than the flashed ELF (is another firmware on the board?)".to_owned(),
                ));
            }
            let idle = tm.ticks.iter().rev().take(IDLE_TICKS_BEFORE_START);
            if tm.boot_seen
                && tm.ticks.len() >= IDLE_TICKS_BEFORE_START
                && idle.clone().all(|t| !t.trigger_raw && t.duty_permille == 0)
            {
                break;
            }
            if let Some(fault) = poll.fault {
                return self.firmware_fault_before_start(scenario, trial, tm, fault, anomalies);
            }
            if Instant::now() > boot_deadline {
                return Err(TrialAbort(format!(
                    "the board did not boot and idle within {} s (boot frame {}, {} tick(s))",
                    BOOT_TIMEOUT.as_secs(),
                    if tm.boot_seen { "seen" } else { "missing" },
                    tm.ticks.len()
                )));
            }
            std::thread::sleep(POLL_PERIOD);
        }
        tm.ticks_before_start = tm.ticks.len();

        // 3. The load plays the profile.
        let timeout_margin_s = self.desc.file.trial_timeout_margin_s;
        let (faults_before, restarts_before) = (tm.fault_frames.len(), tm.restarts);
        // The operator's last scheduled trigger change, s from the start (the sim's rule).
        let last_change_s = scenario
            .operator
            .release_s
            .unwrap_or(scenario.operator.press_s)
            .max(scenario.operator.press_s);
        // RTT is read on its own thread from `START` to the end of playback, so that a slow
        // load request (a reply retried after its timeout, `START`'s included) never leaves the
        // board's buffer undrained: a full buffer drops frames, a fault frame among them.
        let stop_polling = AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel::<Result<TargetPoll, TargetError>>();
        let target = &mut self.target;
        let (runtime, link, abort, elf_id) =
            (&self.runtime, &mut self.link, &self.abort, self.elf_id);
        let (ending, t0_us) = std::thread::scope(|scope| {
            let stop = &stop_polling;
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let polled = target.poll();
                    let failed = polled.is_err();
                    if tx.send(polled).is_err() || failed {
                        break;
                    }
                    std::thread::sleep(POLL_PERIOD);
                }
            });
            let t0_us = match runtime.block_on(link.start()) {
                Ok(t0_us) => t0_us,
                Err(e) => {
                    stop_polling.store(true, Ordering::Relaxed);
                    return (Ending::Abort(format!("load link lost (START): {e}")), 0);
                }
            };
            let started = Instant::now();
            let deadline =
                started + Duration::from_secs_f64(scenario.duration_s + timeout_margin_s);
            let mut next_status = started + STATUS_PERIOD;
            let mut at_rest_since: Option<Instant> = None;
            let mut last_tick_at = (tm.ticks.len(), started);
            let ending = 'play: loop {
                if let Some(reason) = abort.reason() {
                    break Ending::Abort(reason);
                }
                let mut core_fault = None;
                for polled in rx.try_iter() {
                    match polled {
                        Ok(poll) => {
                            tm.push(&poll.telemetry, &poll.log, &elf_id);
                            if poll.fault.is_some() {
                                core_fault = poll.fault;
                            }
                        }
                        Err(e) => break 'play Ending::Abort(format!("probe: {e}")),
                    }
                }
                if tm.ticks.len() > last_tick_at.0 {
                    last_tick_at = (tm.ticks.len(), Instant::now());
                } else if last_tick_at.1.elapsed() > TELEMETRY_SILENCE && core_fault.is_none() {
                    break Ending::Abort(format!(
                        "the board sent no telemetry tick for {} ms although its core runs (hung firmware or a stalled RTT link)",
                        TELEMETRY_SILENCE.as_millis()
                    ));
                }
                if let Some((_, record)) = tm.fault_frames.get(faults_before) {
                    break Ending::FirmwareFault(format!(
                        "the firmware reported a fault: {}",
                        describe_fault(record)
                    ));
                }
                if tm.restarts > restarts_before {
                    break Ending::FirmwareFault("the board restarted during the trial".to_owned());
                }
                if let Some(fault) = core_fault {
                    break Ending::FirmwareFault(match fault {
                        CoreState::LockedUp => "the core locked up".to_owned(),
                        CoreState::Halted { pc, reason } => {
                            format!("the core halted at pc {pc:#010x}: {reason}")
                        }
                        CoreState::Running => "the core stopped".to_owned(),
                    });
                }
                let now = Instant::now();
                if now >= next_status {
                    next_status = now + STATUS_PERIOD;
                    match runtime.block_on(link.status()) {
                        Ok(status) => {
                            if status.speed_rpm.abs() < SETTLED_SPEED_RPM {
                                at_rest_since.get_or_insert(now);
                            } else {
                                at_rest_since = None;
                            }
                            match status.state {
                                LoadState::Running => {}
                                LoadState::Done => break Ending::Completed,
                                LoadState::EStop | LoadState::Fault => {
                                    break Ending::Abort(format!(
                                        "load fault: state {}, {}",
                                        status.state,
                                        status
                                            .fault
                                            .unwrap_or_else(|| "no reason given".to_owned())
                                    ))
                                }
                                other => {
                                    break Ending::Abort(format!(
                                        "the load left playback unasked (state {other})"
                                    ))
                                }
                            }
                        }
                        Err(e) => break Ending::Abort(format!("load link lost (STATUS): {e}")),
                    }
                    let at_rest = at_rest_since.is_some_and(|t| {
                        now.duration_since(t).as_secs_f64() >= SETTLE_AFTER_STOP_S
                    });
                    let operator_done =
                        started.elapsed().as_secs_f64() > last_change_s + SETTLE_AFTER_STOP_S;
                    if at_rest && operator_done && settled(&tm.ticks, tm.ticks_before_start) {
                        break Ending::Completed;
                    }
                }
                if now > deadline {
                    break Ending::Abort(format!(
                        "timeout: the trial ran {:.1} s past its {} s duration",
                        timeout_margin_s, scenario.duration_s
                    ));
                }
                std::thread::sleep(POLL_PERIOD);
            };
            if matches!(ending, Ending::FirmwareFault(_)) {
                // What the board reports next is evidence of the same fault: the watchdog's
                // reset, then the boot's report of the record the fault left in RAM (which the
                // boot erases). The poller reads on for a while so that it is not left unread.
                std::thread::sleep(FAULT_REPORT_GRACE);
            }
            stop_polling.store(true, Ordering::Relaxed);
            (ending, t0_us)
        });
        // What the poller read after the loop's last look.
        for poll in rx.try_iter().flatten() {
            tm.push(&poll.telemetry, &poll.log, &self.elf_id);
        }
        let mut firmware_faults = Vec::new();
        match ending {
            Ending::Abort(reason) => return Err(TrialAbort(reason)),
            Ending::FirmwareFault(what) => {
                // The firmware failed: the load stops, then the evidence, then the board's reset.
                if let Err(e) = self.runtime.block_on(self.link.estop()) {
                    return Err(TrialAbort(format!(
                        "load emergency stop after the firmware's fault ({what}) failed: {e}"
                    )));
                }
                firmware_faults.push(what);
                self.take_fault_record(&mut firmware_faults, &mut anomalies);
                if let Err(e) = self.target.safe_state() {
                    return Err(TrialAbort(format!("board safe state after its fault: {e}")));
                }
            }
            Ending::Completed => {
                // 4. The load releases the trigger; the board reports it; then its safe state.
                self.link("END", async |l| l.end().await)?;
                let until = Instant::now() + AFTER_END;
                while Instant::now() < until {
                    match self.target.poll() {
                        Ok(poll) => tm.push(&poll.telemetry, &poll.log, &self.elf_id),
                        Err(e) => return Err(TrialAbort(format!("probe: {e}"))),
                    }
                    std::thread::sleep(POLL_PERIOD);
                }
                if let Err(e) = self.target.safe_state() {
                    return Err(TrialAbort(format!("board safe state: {e}")));
                }
            }
        }
        if let Some(event) = tm.decoder.finish() {
            anomalies.push(format!("telemetry ended with unreadable bytes: {event:?}"));
        }

        // 5. Readback, alignment, trace.
        let status = self.link("STATUS", async |l| l.status().await)?;
        let readback = self.link("READ", async |l| l.read_samples(status.samples).await)?;
        for gap in &readback.missing {
            anomalies.push(format!(
                "load samples {}..{} could not be read back (corrupt or missing after retries)",
                gap.start, gap.end
            ));
        }
        let truth = self.link("TRUTH?", async |l| l.truth().await)?;
        let seed = trial_seed(scenario.seed, trial);
        let model = Plant::new(scenario, seed, crate::plant::DEFAULT_STEP_S).ground_truth();
        let mut trace = self.build_trace(
            scenario,
            trial,
            &tm,
            &readback.samples,
            &truth,
            t0_us,
            &model,
            &mut anomalies,
        );
        anomalies.append(&mut tm.anomalies.clone());
        firmware_faults.splice(0..0, tm.firmware_faults.iter().cloned());
        trace.anomalies = anomalies;
        trace.firmware_faults = firmware_faults;
        Ok(trace)
    }

    /// After a firmware fault: its record from RAM into the trial's firmware faults, then
    /// erased, so that the next boot does not report it as its own.
    fn take_fault_record(
        &mut self,
        firmware_faults: &mut Vec<String>,
        anomalies: &mut Vec<String>,
    ) {
        match self.target.fault_record() {
            Ok(Some(record)) => {
                firmware_faults.push(format!("fault record in RAM: {}", describe_fault(&record)));
                if let Err(e) = self.target.clear_fault_record() {
                    anomalies.push(format!("fault record not erased: {e}"));
                }
            }
            Ok(None) => {}
            Err(e) => anomalies.push(format!("fault record unreadable: {e}")),
        }
    }

    fn check_abort(&self) -> Result<(), TrialAbort> {
        match self.abort.reason() {
            Some(reason) => Err(TrialAbort(reason)),
            None => Ok(()),
        }
    }

    /// A trial whose firmware faulted before the load started: FAIL with what is known.
    fn firmware_fault_before_start(
        &mut self,
        scenario: &Scenario,
        trial: u32,
        tm: Telemetry,
        fault: CoreState,
        mut anomalies: Vec<String>,
    ) -> Result<Trace, TrialAbort> {
        let mut firmware_faults = tm.firmware_faults.clone();
        firmware_faults.push(format!(
            "the core stopped before the load started: {fault:?}"
        ));
        self.take_fault_record(&mut firmware_faults, &mut anomalies);
        self.target
            .safe_state()
            .map_err(|e| TrialAbort(format!("board safe state after its fault: {e}")))?;
        // The load was armed, never started: disarmed and cleared.
        self.link("ESTOP", async |l| l.estop().await)?;
        self.link("CLEAR", async |l| l.clear().await)?;
        anomalies.extend(tm.anomalies);
        Ok(Trace {
            format_version: TRACE_FORMAT_VERSION,
            scenario_id: scenario.id.clone(),
            trial,
            seed: trial_seed(scenario.seed, trial),
            rig: "bench".to_owned(),
            firmware: self.firmware(),
            sample_period_s: 1.0 / f64::from(driver_core::TICK_HZ),
            integration_step_s: None,
            samples: Default::default(),
            events: Vec::new(),
            truth: GroundTruth::default(),
            anomalies,
            firmware_faults,
            clock: None,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn build_trace(
        &self,
        scenario: &Scenario,
        trial: u32,
        tm: &Telemetry,
        load: &[LoadSample],
        truth: &Truth,
        t0_us: u64,
        model: &GroundTruth,
        anomalies: &mut Vec<String>,
    ) -> Trace {
        let clock = &self.desc.file.clock;
        // While armed the load held the trigger released: a press at the start is an edge.
        let period_us = 1e6 / f64::from(self.desc.file.load.sample_rate_hz);
        let load_edges = edges(
            std::iter::once((t0_us as f64 - period_us, false))
                .chain(load.iter().map(|s| (s.t_us as f64, s.trigger))),
        );
        if load.windows(2).any(|w| w[1].t_us <= w[0].t_us) {
            anomalies.push("the load's sample times are not increasing".to_owned());
        }
        // Only the board's ticks from the load's start on (before it, the line was released).
        let board_edges = edges(
            tm.ticks
                .iter()
                .skip(tm.ticks_before_start.saturating_sub(1))
                .map(|t| (f64::from(t.tick), t.trigger_raw)),
        );
        let span_us = load
            .last()
            .map_or(0.0, |s| s.t_us.saturating_sub(t0_us) as f64);
        let nominal = 1e6 / f64::from(driver_core::TICK_HZ);
        let mut aligned = true;
        let alignment = match align(
            &load_edges,
            &board_edges,
            nominal,
            span_us,
            clock.max_drift_ppm,
            clock.tolerance_ms,
        ) {
            Ok(a) => a,
            Err(e) => {
                anomalies.push(e.to_string());
                aligned = false;
                // A stand-in so the trace can still be plotted; the trial is INCONCLUSIVE.
                let start_tick = tm
                    .ticks
                    .get(tm.ticks_before_start)
                    .map_or(0.0, |t| f64::from(t.tick));
                Alignment {
                    offset_us: t0_us as f64 - start_tick * nominal,
                    us_per_tick: nominal,
                    drift_ppm: 0.0,
                    edges: 0,
                    residual_ms: 0.0,
                    error_bound_ms: 0.0,
                    method: "none (start of the load's playback)".to_owned(),
                }
            }
        };
        let rel = |us: f64| (us - t0_us as f64) / 1e6;
        let series = LoadSeries::new(load, t0_us);
        let mut recorder = TickRecorder::new(scenario);
        let mut isr_cycles = Vec::new();
        let last_load_s = load.last().map_or(0.0, |s| rel(s.t_us as f64));
        for record in tm.ticks.iter().skip(tm.ticks_before_start) {
            let t = rel(alignment.load_us(f64::from(record.tick)));
            if t < 0.0 || t > last_load_s {
                continue;
            }
            let (inputs, outputs) = match tick_io(record) {
                Ok(io) => io,
                Err(anomaly) => {
                    anomalies.push(anomaly);
                    continue;
                }
            };
            recorder.record_truth(&series.at(t));
            recorder.record_firmware(t, record.trigger_raw, &inputs, &outputs);
            if !self.desc.is_fake() {
                isr_cycles.push(record.isr_cycles);
            }
        }
        for (tick, line) in &tm.log_lines {
            let t = rel(alignment.load_us(f64::from(*tick)));
            recorder.event(t.max(0.0), "log", Some(line.clone()));
        }
        for (tick, fault) in &tm.fault_frames {
            let t = rel(alignment.load_us(f64::from(*tick)));
            recorder.event(t.max(0.0), "fault_record", Some(describe_fault(fault)));
        }
        let at = |us: Option<u64>| us.map(|u| rel(u as f64));
        let ground = GroundTruth {
            t_bt_s: at(truth.cap_fracture_us),
            cortex_contact_s: at(truth.cortex_contact_us),
            far_contact_s: at(truth.far_contact_us),
            far_contact_rotating: truth.far_contact_rotating,
            inner_surface_mm: truth.inner_surface_mm,
            far_cortex_mm: truth.far_cortex_mm,
            // The drive's own constants (no load sensor measures them): from its model at the
            // scenario's battery and temperature.
            no_load_speed_rpm: model.no_load_speed_rpm,
            stall_current_a: model.stall_current_a,
        };
        let (mut samples, events) = recorder.finish_with(&ground);
        samples.isr_cycles = isr_cycles;
        if samples.is_empty() {
            anomalies.push("no telemetry tick falls within the load's recording".to_owned());
        }
        Trace {
            format_version: TRACE_FORMAT_VERSION,
            scenario_id: scenario.id.clone(),
            trial,
            seed: trial_seed(scenario.seed, trial),
            rig: "bench".to_owned(),
            firmware: self.firmware(),
            sample_period_s: alignment.us_per_tick / 1e6,
            integration_step_s: None,
            samples,
            events,
            truth: ground,
            anomalies: Vec::new(),
            firmware_faults: Vec::new(),
            clock: aligned.then_some(alignment),
        }
    }
}

/// The firmware's half of the settle rule: it stopped the motor at least
/// [`SETTLE_AFTER_STOP_S`] ago and the trigger has not changed for as long (the load's half,
/// its shaft at rest as long, is checked on its status).
fn settled(ticks: &[TickRecord], from: usize) -> bool {
    let Some(last) = ticks.last() else {
        return false;
    };
    let settle_ticks = (SETTLE_AFTER_STOP_S * f64::from(driver_core::TICK_HZ)) as u32;
    let run = ticks.get(from..).unwrap_or(&[]);
    let motor_off = run
        .iter()
        .rev()
        .find(|t| t.events & (driver_core::event::MOTOR_OFF | driver_core::event::STARTED) != 0)
        .filter(|t| t.events & driver_core::event::MOTOR_OFF != 0)
        .map(|t| t.tick);
    let trigger_change = run
        .windows(2)
        .rev()
        .find(|w| w[0].trigger_raw != w[1].trigger_raw)
        .map_or(run.first().map_or(0, |t| t.tick), |w| w[1].tick);
    motor_off.is_some_and(|off| last.tick.saturating_sub(off) >= settle_ticks)
        && last.tick.saturating_sub(trigger_change) >= settle_ticks
}

/// The load's samples as functions of trial time (linear interpolation; revolutions integrated
/// from speed).
struct LoadSeries<'a> {
    samples: &'a [LoadSample],
    t_s: Vec<f64>,
    revolutions: Vec<f64>,
}

impl<'a> LoadSeries<'a> {
    fn new(samples: &'a [LoadSample], t0_us: u64) -> Self {
        let t_s: Vec<f64> = samples
            .iter()
            .map(|s| (s.t_us as f64 - t0_us as f64) / 1e6)
            .collect();
        let mut revolutions = Vec::with_capacity(samples.len());
        let mut total = 0.0;
        for (i, s) in samples.iter().enumerate() {
            if i > 0 {
                let dt = t_s[i] - t_s[i - 1];
                total += (s.speed_rpm + samples[i - 1].speed_rpm) / 2.0 / 60.0 * dt;
            }
            revolutions.push(total);
        }
        LoadSeries {
            samples,
            t_s,
            revolutions,
        }
    }

    fn at(&self, t: f64) -> TruthSample {
        let i = self.t_s.partition_point(|&x| x < t);
        let (a, b, w) = match (i.checked_sub(1), self.t_s.get(i)) {
            (Some(a), Some(&tb)) => {
                let ta = self.t_s[a];
                (a, i, if tb > ta { (t - ta) / (tb - ta) } else { 0.0 })
            }
            (None, _) => (0, 0, 0.0),
            (Some(a), None) => (a, a, 0.0),
        };
        let (Some(sa), Some(sb)) = (self.samples.get(a), self.samples.get(b)) else {
            return TruthSample::default();
        };
        let lerp = |x: f64, y: f64| x + (y - x) * w;
        TruthSample {
            depth_mm: lerp(sa.depth_mm, sb.depth_mm),
            speed_rpm: lerp(sa.speed_rpm, sb.speed_rpm),
            revolutions: lerp(self.revolutions[a], self.revolutions[b]),
            load_torque_nmm: lerp(sa.load_torque_nmm, sb.load_torque_nmm),
            current_a: lerp(sa.supply_current_a, sb.supply_current_a),
            battery_v: lerp(sa.supply_v, sb.supply_v),
            push_n: lerp(sa.push_n, sb.push_n),
        }
    }
}

/// Opens the target a rig description names: the fake (with `probe: fake`) or a probe.
pub fn open_target(desc: &RigDescription) -> Result<Box<dyn Target>, TargetError> {
    match (&desc.probe, &desc.file.fake) {
        (None, Some(fake)) => Ok(Box::new(
            fake::FakeTarget::new(&fake.wires, fake.clock_drift_ppm, fake.inject.clone())
                .with_config(driver_core::Config {
                    detection_enabled: !fake.disable_detector,
                    ..driver_core::Config::DEFAULT
                }),
        )),
        (None, None) => Err(TargetError::NoProbe(
            "probe: fake without a fake section".to_owned(),
        )),
        (Some(selector), _) => Ok(Box::new(probe::ProbeTarget::open(
            Some(selector),
            &desc.file.chip,
            &desc.firmware,
        )?)),
    }
}

/// Whether `path` looks like a serial device or pty this user can open (for early errors).
pub fn port_exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[cfg(test)]
mod tests {
    use driver_core::telemetry::{encode, Frame, TickRecord, MAX_FRAME_LEN};

    use super::*;

    fn frame(seq: u16, frame: &Frame) -> Vec<u8> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let len = encode(seq, frame, &mut buf);
        buf[..len].to_vec()
    }

    fn tick(tick: u32) -> Frame {
        Frame::Tick(TickRecord {
            tick,
            ..TickRecord::default()
        })
    }

    #[test]
    fn a_restart_whose_boot_frame_was_lost_ends_the_trace_at_the_restart() {
        let id = FirmwareId {
            firmware_version: [0; 16],
            core_version: [0; 16],
            git_commit: [0; 20],
            flags: 0,
            core_source_sha256: [0; 32],
            build_id: [0; 16],
        };
        let boot = Frame::Boot {
            reset_cause: 0,
            tick_hz: u16::try_from(driver_core::TICK_HZ).unwrap(),
            id,
        };
        let mut bytes = frame(0, &boot);
        bytes.extend(frame(1, &tick(1)));
        bytes.extend(frame(2, &tick(2)));
        // The next boot's frames 0 (boot) and 1 (its first tick) were dropped.
        bytes.extend(frame(2, &tick(2)));
        bytes.extend(frame(3, &tick(3)));
        let mut tm = Telemetry::default();
        tm.push(&bytes, &[], &id);
        assert_eq!(tm.ticks.iter().map(|t| t.tick).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(tm.restarts, 1);
        assert!(
            tm.firmware_faults
                .iter()
                .any(|f| f.contains("tick count went back from 2 to 2")),
            "{:?}",
            tm.firmware_faults
        );
    }
}
