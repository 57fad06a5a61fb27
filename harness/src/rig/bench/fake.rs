//! The fake target: what the bench rig tests put where the debug probe and the board would be.
//!
//! It runs this build's control core (`driver-core`) in real time, wrapped the way the board
//! firmware wraps it (trigger held through a reset ignored until released, the ADC sums of the
//! tick converted with the board's own [`driver_core::sensing`], the board's fault bits), and
//! writes the real telemetry frames ([`driver_core::telemetry::encode`]) into a bounded buffer
//! that behaves like the board's RTT channel (8 KiB, frames that do not fit are dropped and
//! their sequence numbers skipped). Its pins are the [`super::wires`] to a virtual load
//! controller. Faults can be injected: a HardFault (fault record and frame, core halted), a
//! lock-up, and the probe's loss.
//!
//! What it cannot show: anything of the board's own code around the core (register setup,
//! interrupt timing, the ADC trigger), which the `emu` rig and the real board cover. Reports
//! say which target ran.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use driver_core::telemetry::{self, FaultKind, FaultRecord, FirmwareId, Frame, TickRecord};
use driver_core::{sensing, Config, Controller, Inputs};
use serde::{Deserialize, Serialize};

use super::target::{CoreState, FlashProgress, Target, TargetError, TargetPoll};
use super::wires::{self, Msg};

/// Size of the board's telemetry RTT channel, bytes.
pub const RTT_TELEMETRY_SIZE: usize = 8192;

/// A made-up program counter for an injected HardFault (in the board's flash).
pub const INJECTED_FAULT_PC: u32 = 0x0800_1F2C;

/// Faults the fake target injects, times in ms of the board's clock since its reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FakeFaults {
    /// The core takes a HardFault: drive removed, fault record and fault frame, then the
    /// handler spins until the watchdog resets the board, which boots again and reports the
    /// previous fault.
    #[serde(default)]
    pub hard_fault_at_ms: Option<u32>,
    /// The core locks up (no record, no frame, the PWM left running): the probe sees LOCKUP
    /// until the watchdog resets the board.
    #[serde(default)]
    pub lockup_at_ms: Option<u32>,
    /// The probe stops answering (the board runs on).
    #[serde(default)]
    pub probe_lost_at_ms: Option<u32>,
    /// The firmware hangs: the core runs but ticks no more (no telemetry, the PWM left as it
    /// was) until the watchdog resets it.
    #[serde(default)]
    pub hang_at_ms: Option<u32>,
    /// The telemetry RTT buffer stops taking frames while the firmware runs on (a stalled
    /// link: the harness sees silence).
    #[serde(default)]
    pub rtt_stall_at_ms: Option<u32>,
    /// The telemetry channel's size, bytes (small values overflow it).
    #[serde(default)]
    pub rtt_bytes: Option<usize>,
    /// The tick frame of this ms finds the telemetry buffer full (an RTT overflow: the frame
    /// is dropped, its sequence number skipped, the next frame flags TELEMETRY_DROPPED).
    #[serde(default)]
    pub rtt_overflow_at_ms: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    telemetry: VecDeque<u8>,
    log: VecDeque<u8>,
    core: Option<CoreState>,
    fault_record: Option<FaultRecord>,
    probe_lost: bool,
    /// The RTT buffer no longer takes frames (injected).
    rtt_stalled: bool,
    /// The drive the board last left in the bridge.
    last_drive: Msg,
    /// Why the board thread ended, if it did on its own.
    ended: Option<String>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            telemetry: VecDeque::new(),
            log: VecDeque::new(),
            core: None,
            fault_record: None,
            probe_lost: false,
            rtt_stalled: false,
            last_drive: IDLE,
            ended: None,
        }
    }
}

#[derive(Debug)]
struct Board {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Board {
    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The fake target.
#[derive(Debug)]
pub struct FakeTarget {
    wires: PathBuf,
    drift_ppm: f64,
    faults: FakeFaults,
    config: Config,
    id: Option<FirmwareId>,
    board: Option<Board>,
    resets: u32,
}

impl FakeTarget {
    /// A fake board wired to the virtual load controller's socket `wires`, its clock off by
    /// `drift_ppm`.
    pub fn new(wires: &Path, drift_ppm: f64, faults: FakeFaults) -> FakeTarget {
        FakeTarget {
            wires: wires.to_path_buf(),
            drift_ppm,
            faults,
            config: Config::DEFAULT,
            id: None,
            board: None,
            resets: 0,
        }
    }

    /// Runs `config` instead of the shipped tuning (tests weaken the detector with it).
    pub fn with_config(mut self, config: Config) -> FakeTarget {
        self.config = config;
        self
    }
}

impl Target for FakeTarget {
    fn describe(&self) -> Vec<(String, String)> {
        vec![
            (
                "target".to_owned(),
                "fake: this harness's driver-core in real time (no probe, no board)".to_owned(),
            ),
            ("wires".to_owned(), self.wires.display().to_string()),
            (
                "target_clock_drift_ppm".to_owned(),
                format!("{}", self.drift_ppm),
            ),
        ]
    }

    fn flash(
        &mut self,
        elf: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<(), TargetError> {
        let bytes = std::fs::read(elf)
            .map_err(|e| TargetError::Flash(format!("cannot read {}: {e}", elf.display())))?;
        let file = object::File::parse(&*bytes)
            .map_err(|e| TargetError::Flash(format!("{} is not an ELF: {e}", elf.display())))?;
        let id = crate::firmware::identity_record(&file).ok_or_else(|| {
            TargetError::Flash(format!(
                "{} has no firmware identity record ({})",
                elf.display(),
                crate::firmware::ID_SECTION
            ))
        })?;
        // The fake runs this harness's core: it may stand in only for a firmware built from the
        // same core sources.
        let core = crate::hex(&id.core_source_sha256);
        if core != crate::firmware::SIM_CORE_SOURCE_SHA256 {
            return Err(TargetError::Flash(format!(
                "the fake target runs driver-core sources {} but {} was built from {core}",
                crate::firmware::SIM_CORE_SOURCE_SHA256,
                elf.display()
            )));
        }
        let size = bytes.len() as u64;
        progress(FlashProgress::Erasing(size, size));
        progress(FlashProgress::Programming(size, size));
        progress(FlashProgress::Verifying);
        if let Some(mut board) = self.board.take() {
            board.halt();
        }
        self.id = Some(id);
        Ok(())
    }

    fn reset_and_run(&mut self) -> Result<(), TargetError> {
        let Some(id) = self.id else {
            return Err(TargetError::Attach(
                "fake target: nothing flashed yet".to_owned(),
            ));
        };
        // The fault record is in uninitialised RAM: it survives the reset.
        let mut ram = None;
        if let Some(mut board) = self.board.take() {
            board.halt();
            ram = lock(&board.shared).fault_record;
        }
        let stream = connect(&self.wires)?;
        let shared = Arc::new(Mutex::new(Shared {
            fault_record: ram,
            ..Shared::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let firmware = FirmwareThread {
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            stream,
            controller: Controller::new(self.config),
            config: self.config,
            id,
            period_ns: 1e6 * (1.0 + self.drift_ppm * 1e-6),
            faults: self.faults.clone(),
            reset_cause: if self.resets == 0 {
                telemetry::reset::POWER_ON
            } else {
                telemetry::reset::SOFTWARE
            },
        };
        self.resets += 1;
        let thread = std::thread::Builder::new()
            .name("fake-board".into())
            .spawn(move || firmware.run())
            .map_err(|e| TargetError::Attach(format!("fake target thread: {e}")))?;
        self.board = Some(Board {
            shared,
            stop,
            thread: Some(thread),
        });
        Ok(())
    }

    fn poll(&mut self) -> Result<TargetPoll, TargetError> {
        let Some(board) = &self.board else {
            return Err(TargetError::Lost("fake target is not running".to_owned()));
        };
        let mut s = lock(&board.shared);
        if s.probe_lost {
            return Err(TargetError::Lost(
                "probe stopped answering (injected)".to_owned(),
            ));
        }
        Ok(TargetPoll {
            telemetry: s.telemetry.drain(..).collect(),
            log: s.log.drain(..).collect(),
            fault: s.core.clone(),
        })
    }

    fn fault_record(&mut self) -> Result<Option<FaultRecord>, TargetError> {
        Ok(self
            .board
            .as_ref()
            .and_then(|b| lock(&b.shared).fault_record))
    }

    fn clear_fault_record(&mut self) -> Result<(), TargetError> {
        if let Some(b) = &self.board {
            lock(&b.shared).fault_record = None;
        }
        Ok(())
    }

    fn safe_state(&mut self) -> Result<(), TargetError> {
        // Reset and hold: the thread ends and tells the world its pins float.
        if let Some(board) = &mut self.board {
            board.halt();
        }
        Ok(())
    }
}

fn connect(path: &Path) -> Result<UnixStream, TargetError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match UnixStream::connect(path) {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= deadline => {
                return Err(TargetError::Attach(format!(
                    "fake target: cannot reach the virtual load's wires at {}: {e} (is `iohil loadsim` running?)",
                    path.display()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The board's watchdog period, in its control ticks (the IWDG's 15 ms).
pub const WATCHDOG_TICKS: u32 = 15;

/// The fake board's firmware, on its own thread.
struct FirmwareThread {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    stream: UnixStream,
    controller: Controller,
    config: Config,
    id: FirmwareId,
    period_ns: f64,
    faults: FakeFaults,
    reset_cause: u8,
}

/// What the firmware does after a tick.
enum Next {
    /// Keep ticking.
    Run,
    /// Stuck (fault handler, lock-up, hang): the drive to hold (the fault handler's gates off,
    /// or whatever PWM a locked-up or hung core left running) until the watchdog resets it.
    Stuck(Msg),
}

/// Per-boot state of the firmware around the core (as `board/src/main.rs` keeps it).
struct Boot {
    seq: u16,
    tick: u32,
    released_since_boot: bool,
    pending_faults: u16,
    short_ticks: u8,
    sensor_fault: bool,
    sticky: u16,
    /// Board ticks since power-up (the injected faults' time base, across watchdog resets).
    uptime: u32,
}

impl FirmwareThread {
    fn run(mut self) {
        let ended = self.serve();
        // Reset or halt: the pins float. Tell the world (it may already be gone).
        let _ = wires::send(
            &mut self.stream,
            Msg::Drive {
                duty_permille: 0,
                brake: false,
                off: true,
            },
        );
        lock(&self.shared).ended = Some(ended);
    }

    fn send(&self, seq: &mut u16, frame: &Frame, capacity: usize) -> bool {
        let mut buf = [0u8; telemetry::MAX_FRAME_LEN];
        let len = telemetry::encode(*seq, frame, &mut buf);
        *seq = seq.wrapping_add(1);
        let mut s = lock(&self.shared);
        if s.rtt_stalled || s.telemetry.len() + len > capacity {
            return false;
        }
        s.telemetry.extend(buf.get(..len).unwrap_or(&[]));
        true
    }

    fn log(&self, line: &str) {
        let mut s = lock(&self.shared);
        // The log channel is 1024 bytes and drops what does not fit, like the board's.
        if s.log.len() + line.len() < 1024 {
            s.log.extend(line.bytes());
        }
    }

    fn capacity(&self) -> usize {
        self.faults.rtt_bytes.unwrap_or(RTT_TELEMETRY_SIZE)
    }

    /// Boot: the boot frame, the previous run's fault (taken from RAM), the log line.
    fn boot(&mut self, reset_cause: u8, uptime: u32) -> Boot {
        let mut b = Boot {
            seq: 0,
            tick: 0,
            released_since_boot: false,
            pending_faults: 0,
            short_ticks: 0,
            sensor_fault: false,
            sticky: 0,
            uptime,
        };
        if reset_cause & telemetry::reset::WATCHDOG != 0 {
            b.sticky |= telemetry::fault::WATCHDOG_RESET;
        }
        self.controller = Controller::new(self.config);
        let capacity = self.capacity();
        self.send(
            &mut b.seq,
            &Frame::Boot {
                reset_cause,
                tick_hz: u16::try_from(driver_core::TICK_HZ).unwrap_or(u16::MAX),
                id: self.id,
            },
            capacity,
        );
        self.log(&format!(
            "fake board: core {} reset cause {reset_cause:#04x}\n",
            driver_core::VERSION
        ));
        let previous = lock(&self.shared).fault_record.take();
        if let Some(previous) = previous {
            b.sticky |= telemetry::fault::PREVIOUS_FAULT;
            self.send(&mut b.seq, &Frame::Fault(previous), capacity);
            self.log(&format!(
                "previous run ended in {} at pc {:#010x} (tick {})\n",
                previous.kind.name(),
                previous.pc,
                previous.tick
            ));
        }
        b
    }

    fn serve(&mut self) -> String {
        if let Err(e) = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(100)))
        {
            return format!("wires: {e}");
        }
        if let Err(e) = wires::send(
            &mut self.stream,
            Msg::Hello {
                tick_period_ns: self.period_ns,
            },
        ) {
            return format!("wires: {e}");
        }
        let mut b = self.boot(self.reset_cause, 0);
        let mut stuck: Option<(Msg, u32)> = None;
        while !self.stop.load(Ordering::Relaxed) {
            let msg = match wires::recv(&mut self.stream) {
                Ok(msg) => msg,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return format!("wires closed: {e}"),
            };
            let Msg::Tick {
                current_sum,
                voltage_sum,
                samples,
                trigger,
            } = msg
            else {
                return format!("unexpected wires message {msg:?}");
            };
            b.uptime = b.uptime.saturating_add(1);
            if self.faults.probe_lost_at_ms.is_some_and(|t| b.uptime >= t) {
                lock(&self.shared).probe_lost = true;
            }
            if self.faults.rtt_stall_at_ms.is_some_and(|t| b.uptime >= t) {
                lock(&self.shared).rtt_stalled = true;
            }
            let reply = match stuck {
                Some((drive, since)) if b.uptime.saturating_sub(since) >= WATCHDOG_TICKS => {
                    // The watchdog was not refreshed: reset, and boot again.
                    lock(&self.shared).core = None;
                    let uptime = b.uptime;
                    b = self.boot(telemetry::reset::WATCHDOG, uptime);
                    stuck = None;
                    let _ = drive;
                    IDLE
                }
                Some((drive, _)) => drive,
                None => match self.tick(&mut b, current_sum, voltage_sum, samples, trigger) {
                    (drive, Next::Run) => drive,
                    (drive, Next::Stuck(hold)) => {
                        stuck = Some((hold, b.uptime));
                        drive
                    }
                },
            };
            if let Err(e) = wires::send(&mut self.stream, reply) {
                return format!("wires closed: {e}");
            }
        }
        "reset by the probe".to_owned()
    }

    /// One control tick as `control_isr` runs it; the drive it leaves in the bridge.
    fn tick(
        &mut self,
        b: &mut Boot,
        current_sum: u32,
        voltage_sum: u32,
        samples: u32,
        trigger: bool,
    ) -> (Msg, Next) {
        let capacity = self.capacity();
        b.tick = b.tick.wrapping_add(1);
        let last = lock(&self.shared).last_drive;
        if self.faults.hang_at_ms == Some(b.uptime) {
            // The control loop stops; the PWM keeps its last duty until the watchdog.
            return (last, Next::Stuck(last));
        }
        if self.faults.lockup_at_ms == Some(b.uptime) {
            lock(&self.shared).core = Some(CoreState::LockedUp);
            return (last, Next::Stuck(last));
        }
        if self.faults.hard_fault_at_ms == Some(b.uptime) {
            // `fault::fail`: drive off first, the record in RAM, the fault frame, then the
            // handler spins with the gates off until the watchdog resets the MCU.
            let record = FaultRecord {
                kind: FaultKind::HardFault,
                pc: INJECTED_FAULT_PC,
                lr: 0xFFFF_FFF9,
                xpsr: 0x0100_0003,
                cfsr: 0x0000_0400,
                hfsr: 0x4000_0000,
                mmfar: 0,
                bfar: 0,
                tick: b.tick,
                line: 0,
            };
            lock(&self.shared).fault_record = Some(record);
            self.send(&mut b.seq, &Frame::Fault(record), capacity);
            return (IDLE, Next::Stuck(IDLE));
        }
        if !trigger {
            b.released_since_boot = true;
        }
        let inputs = Inputs {
            tick: b.tick,
            motor_current_ma: sensing::mean_current_ma(current_sum, samples),
            battery_mv: sensing::mean_battery_mv(voltage_sum, samples),
            trigger_pressed: trigger && b.released_since_boot,
        };
        let outputs = self.controller.step(&inputs);
        if samples < sensing::SAMPLES_PER_TICK {
            b.short_ticks = b.short_ticks.saturating_add(1);
        } else {
            b.short_ticks = 0;
        }
        if b.short_ticks >= 3 {
            b.sensor_fault = true;
            b.sticky |= telemetry::fault::ADC_MISSING;
        }
        let drive = if b.sensor_fault {
            IDLE
        } else {
            Msg::Drive {
                duty_permille: outputs.duty_permille,
                brake: outputs.brake,
                off: false,
            }
        };
        lock(&self.shared).last_drive = drive;
        let mut faults = b.sticky | b.pending_faults;
        if samples != sensing::SAMPLES_PER_TICK {
            faults |= telemetry::fault::ADC_MISSING;
        }
        b.pending_faults = 0;
        // The fake measures no CPU time: 0 cycles, and the bench does not report them.
        let mut record = TickRecord::from_step(&inputs, &outputs, faults, 0);
        record.trigger_raw = trigger;
        let overflow = self.faults.rtt_overflow_at_ms == Some(b.uptime);
        let sent = if overflow {
            b.seq = b.seq.wrapping_add(1);
            false
        } else {
            self.send(&mut b.seq, &Frame::Tick(record), capacity)
        };
        if !sent {
            b.pending_faults |= telemetry::fault::TELEMETRY_DROPPED;
        }
        (drive, Next::Run)
    }
}

/// Every gate off (the fault handler's and the sensor fault's drive).
const IDLE: Msg = Msg::Drive {
    duty_permille: 0,
    brake: false,
    off: false,
};
