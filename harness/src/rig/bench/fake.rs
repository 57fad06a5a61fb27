//! The fake target: what the bench rig tests put where the debug probe and the board would be.
//!
//! It runs this build's control core (`driver-core`) in real time, wrapped the way the board
//! firmware wraps it (trigger held through a reset ignored until released, the ADC sums of the
//! tick converted with the board's own [`driver_core::sensing`], the board's fault bits), and
//! writes the real telemetry frames ([`driver_core::telemetry::encode`]) into a bounded buffer
//! that behaves like the board's RTT channel (2048 bytes, frames that do not fit are dropped and
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
pub const RTT_TELEMETRY_SIZE: usize = 2048;

/// A made-up program counter for an injected HardFault (in the board's flash).
pub const INJECTED_FAULT_PC: u32 = 0x0800_1F2C;

/// Faults the fake target injects, times in ms of the board's clock since its reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FakeFaults {
    /// The core takes a HardFault: drive removed, fault record and fault frame, halted.
    #[serde(default)]
    pub hard_fault_at_ms: Option<u32>,
    /// The core locks up (no record, no frame): the probe sees LOCKUP.
    #[serde(default)]
    pub lockup_at_ms: Option<u32>,
    /// The probe stops answering (the board runs on).
    #[serde(default)]
    pub probe_lost_at_ms: Option<u32>,
    /// The firmware hangs: the core runs but ticks no more (no telemetry, no drive updates).
    #[serde(default)]
    pub hang_at_ms: Option<u32>,
    /// The telemetry channel's size, bytes (small values overflow it).
    #[serde(default)]
    pub rtt_bytes: Option<usize>,
}

#[derive(Debug, Default)]
struct Shared {
    telemetry: VecDeque<u8>,
    log: VecDeque<u8>,
    core: Option<CoreState>,
    fault_record: Option<FaultRecord>,
    probe_lost: bool,
    /// Why the board thread ended, if it did on its own.
    ended: Option<String>,
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
        if let Some(mut board) = self.board.take() {
            board.halt();
        }
        let stream = connect(&self.wires)?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let firmware = FirmwareThread {
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            stream,
            controller: Controller::new(self.config),
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

/// The fake board's firmware, on its own thread.
struct FirmwareThread {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    stream: UnixStream,
    controller: Controller,
    id: FirmwareId,
    period_ns: f64,
    faults: FakeFaults,
    reset_cause: u8,
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
        if s.telemetry.len() + len > capacity {
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
        let capacity = self.faults.rtt_bytes.unwrap_or(RTT_TELEMETRY_SIZE);
        let mut seq = 0u16;
        self.send(
            &mut seq,
            &Frame::Boot {
                reset_cause: self.reset_cause,
                tick_hz: u16::try_from(driver_core::TICK_HZ).unwrap_or(u16::MAX),
                id: self.id,
            },
            capacity,
        );
        self.log(&format!(
            "fake board: core {} reset cause {:#04x}\n",
            driver_core::VERSION,
            self.reset_cause
        ));
        let mut tick: u32 = 0;
        let mut released_since_boot = false;
        let mut pending_faults = 0u16;
        let mut short_ticks = 0u8;
        let mut sensor_fault = false;
        let mut sticky = 0u16;
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
            tick = tick.wrapping_add(1);
            let at_ms = tick;
            if self.faults.probe_lost_at_ms.is_some_and(|t| at_ms >= t) {
                lock(&self.shared).probe_lost = true;
            }
            if self.faults.hang_at_ms == Some(at_ms) {
                // Running, silent, its last drive command left in the bridge.
                while !self.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return "hung (injected)".to_owned();
            }
            if self.faults.lockup_at_ms == Some(at_ms) {
                lock(&self.shared).core = Some(CoreState::LockedUp);
                return "locked up (injected)".to_owned();
            }
            if self.faults.hard_fault_at_ms == Some(at_ms) {
                let record = FaultRecord {
                    kind: FaultKind::HardFault,
                    pc: INJECTED_FAULT_PC,
                    lr: 0xFFFF_FFF9,
                    xpsr: 0x0100_0003,
                    cfsr: 0x0000_0400,
                    hfsr: 0x4000_0000,
                    mmfar: 0,
                    bfar: 0,
                    tick,
                    line: 0,
                };
                {
                    let mut s = lock(&self.shared);
                    s.fault_record = Some(record);
                }
                self.send(&mut seq, &Frame::Fault(record), capacity);
                lock(&self.shared).core = Some(CoreState::Halted {
                    pc: INJECTED_FAULT_PC,
                    reason: "exception: HardFault (injected)".to_owned(),
                });
                return "HardFault (injected)".to_owned();
            }
            if !trigger {
                released_since_boot = true;
            }
            let inputs = Inputs {
                tick,
                motor_current_ma: sensing::mean_current_ma(current_sum, samples),
                battery_mv: sensing::mean_battery_mv(voltage_sum, samples),
                trigger_pressed: trigger && released_since_boot,
            };
            let outputs = self.controller.step(&inputs);
            if samples < sensing::SAMPLES_PER_TICK {
                short_ticks = short_ticks.saturating_add(1);
            } else {
                short_ticks = 0;
            }
            if short_ticks >= 3 {
                sensor_fault = true;
                sticky |= telemetry::fault::ADC_MISSING;
            }
            let drive = if sensor_fault {
                Msg::Drive {
                    duty_permille: 0,
                    brake: false,
                    off: false,
                }
            } else {
                Msg::Drive {
                    duty_permille: outputs.duty_permille,
                    brake: outputs.brake,
                    off: false,
                }
            };
            let mut faults = sticky | pending_faults;
            if samples != sensing::SAMPLES_PER_TICK {
                faults |= telemetry::fault::ADC_MISSING;
            }
            pending_faults = 0;
            // The fake measures no CPU time: 0 cycles, and the bench does not report them.
            let mut record = TickRecord::from_step(&inputs, &outputs, faults, 0);
            record.trigger_raw = trigger;
            if !self.send(&mut seq, &Frame::Tick(record), capacity) {
                pending_faults |= telemetry::fault::TELEMETRY_DROPPED;
            }
            if let Err(e) = wires::send(&mut self.stream, drive) {
                return format!("wires closed: {e}");
            }
        }
        "reset by the probe".to_owned()
    }
}
