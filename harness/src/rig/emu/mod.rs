//! The `emu` rig: the board firmware ELF (the file `iohil flash` would write) executed by the
//! armagnac ARMv7-M instruction-set emulator, in lockstep with the plant model.
//!
//! - Memory: the ELF's loadable segments at their load addresses in a 128 KiB flash image,
//!   32 KiB of RAM; the core starts from the vector table like after a reset.
//! - Peripherals: register-level models of exactly the registers the firmware uses
//!   ([`stm32`]); any other access stops the trial with the address and the PC.
//! - Time: the CPU clock follows the firmware's RCC setup (170 MHz after its PLL setup); one
//!   executed instruction counts as one cycle (armagnac has no cycle model). TIM1 runs from the
//!   moment the firmware sets CEN, which is plant time 0 (the plant is frozen during boot).
//!   Each PWM period the CH4 compare converts the plant's current and battery voltage through
//!   the board's 12-bit ADC model into JDR1/JDR2 and raises the ADC interrupt; every RCR + 1
//!   periods the update event raises the control interrupt. The firmware then runs until it
//!   sleeps again (WFI), and the drive it leaves in TIM1 (MOE, CCR1) and PB5 reaches the motor
//!   after the instructions it took. While it sleeps the rig skips ahead: no instruction runs.
//! - Telemetry and logs: read from the RTT control block in emulated RAM the way a probe does
//!   (the up-buffers drained, their read offsets advanced), decoded by [`crate::telemetry`].
//! - Faults, never answered silently: what the firmware did wrong (a fault record or frame, a
//!   hang, a watchdog expiry, a reset request, its own fault bits, an interrupt raised while it
//!   sleeps with interrupts masked, no watchdog started) makes the trial FAIL; what the rig
//!   cannot do (an unmodelled register, an unsupported instruction, a panic inside armagnac,
//!   caught; lost or damaged telemetry; a missing boot frame) makes it INCONCLUSIVE. Each
//!   carries its cause, the address and the PC.
//! - The peripheral models keep the silicon's rules the firmware relies on: a peripheral
//!   without its RCC clock ignores writes and reads zero, the watchdog's registers need the
//!   unlock key, the drive reaches the motor only through pins set to their timer function
//!   with active-high polarity, a CCR4 beyond the period never triggers the ADC; an interrupt
//!   that arrives while another runs waits for it, and one that waits over a PWM period is an
//!   overrun.
//!
//! Known simplifications, stated in the README: interrupts are raised only while the core
//! sleeps and run to completion one after another (the firmware's ISRs take a few percent of
//! a period, so no preemption occurs); an interrupt's instructions are counted as cycles; the
//! NVIC enable bits are not checked (armagnac 0.3 keeps ISER as a plain register where the
//! last write wins, so it cannot tell which interrupts the firmware unmasked; a firmware that
//! forgot one shows it in its own telemetry: ADC_MISSING, or no ticks).

pub mod stm32;

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use armagnac::core::{
    ArmVersion, Config as CoreConfig, Emulator, Event, Irq, ItState, Processor, RunError,
};
use armagnac::decoder::{
    InstructionDecode, InstructionDecodeError, Lut16AndGrouped32InstructionDecoder,
};
use armagnac::instructions::{Instruction, InstructionSize};
use armagnac::memory::RamMemory;
use driver_core::telemetry::{decode_fault_record, FirmwareId, FAULT_RECORD_LEN};
use object::{Object, ObjectSegment, ObjectSymbol};

use self::stm32::*;
use super::record::{describe_fault, note_board_fault_bits, tick_io, TickRecorder};
use super::{trial_seed, Rig, RigError, RigIdentity};
use crate::firmware::Identity;
use crate::plant::{DriveCommand, Plant, DEFAULT_STEP_S};
use crate::scenario::Scenario;
use crate::telemetry::{Body, Decoder, Event as TelemetryEvent};
use crate::trace::{FirmwareIdentity, Trace, TRACE_FORMAT_VERSION};

const FLASH_BASE: u32 = 0x0800_0000;
const FLASH_LEN: usize = 128 * 1024;
const RAM_BASE: u32 = 0x2000_0000;
const RAM_LEN: u32 = 32 * 1024;
const HSI16_HZ: f64 = 16e6;
const LSI_HZ: f64 = 32_000.0;
const IRQ_ADC1_2: u16 = 18;
const IRQ_TIM1_UP: u16 = 25;
/// Instructions allowed from reset to the first WFI.
const BOOT_BUDGET: u64 = 20_000_000;
/// Instructions allowed for one interrupt before the firmware counts as hung: two control
/// periods' worth at 170 MHz (the watchdog would have reset the MCU long before).
const ISR_BUDGET: u64 = 340_000;

/// A board ELF that cannot be run (exit code 2 before anything runs).
#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    /// Unreadable or not a usable ELF.
    #[error("cannot use firmware ELF {path}: {message}")]
    Elf {
        /// File.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// The loaded firmware image.
#[derive(Debug, Clone)]
pub struct FirmwareImage {
    /// Path it was loaded from.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: String,
    flash: Vec<u8>,
    rtt: u32,
    fault_record: Option<u32>,
    /// Identity record, if present.
    pub identity: Option<Identity>,
    id_record: Option<FirmwareId>,
    /// Built with a test-only feature.
    pub test_build: bool,
}

impl FirmwareImage {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, EmuError> {
        let fail = |message: String| EmuError::Elf {
            path: path.to_owned(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| {
            fail(format!(
                "{e} (hint: build it with firmware-under-test/board/build.sh, or name one with --elf)"
            ))
        })?;
        let file = object::File::parse(&*bytes).map_err(|e| fail(e.to_string()))?;
        if file.architecture() != object::Architecture::Arm || file.is_64() {
            return Err(fail(format!(
                "a {:?} ELF, not 32-bit Arm",
                file.architecture()
            )));
        }
        let mut flash = vec![0xFF; FLASH_LEN];
        for segment in file.segments() {
            let data = segment.data().map_err(|e| fail(e.to_string()))?;
            if data.is_empty() {
                continue;
            }
            let load = crate::firmware::load_address(&file, segment.address());
            let offset = load
                .checked_sub(u64::from(FLASH_BASE))
                .and_then(|o| usize::try_from(o).ok())
                .filter(|o| o + data.len() <= FLASH_LEN)
                .ok_or_else(|| {
                    fail(format!(
                        "segment at {load:#010x} ({} bytes) is outside the 128 KiB flash",
                        data.len()
                    ))
                })?;
            flash[offset..offset + data.len()].copy_from_slice(data);
        }
        let symbol = |name: &str| {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .and_then(|s| u32::try_from(s.address()).ok())
        };
        let rtt = symbol(crate::firmware::RTT_SYMBOL).ok_or_else(|| {
            fail(format!(
                "no RTT control block ({}): telemetry cannot be read",
                crate::firmware::RTT_SYMBOL
            ))
        })?;
        // The control block header and two channel descriptors must lie in RAM.
        if !(RAM_BASE..RAM_BASE + RAM_LEN - 72).contains(&rtt) {
            return Err(fail(format!(
                "the RTT control block at {rtt:#010x} is not in RAM ({RAM_BASE:#010x}, {} KiB)",
                RAM_LEN / 1024
            )));
        }
        let id_record = crate::firmware::identity_record(&file);
        Ok(FirmwareImage {
            path: path.to_owned(),
            sha256: crate::sha256_hex(&bytes),
            flash,
            rtt,
            fault_record: symbol(crate::firmware::FAULT_RECORD_SYMBOL),
            identity: id_record.as_ref().map(Identity::from_record),
            test_build: id_record
                .is_some_and(|r| r.flags & driver_core::telemetry::id_flags::TEST_BUILD != 0),
            id_record,
        })
    }
}

/// The emulated rig.
#[derive(Debug, Clone)]
pub struct EmuRig {
    /// The firmware.
    pub image: FirmwareImage,
    /// Plant integration step, s.
    pub step_s: f64,
    /// Test knob: leave this register out of the peripheral model.
    pub unmodelled: Option<u32>,
    /// Test knob: from this time on, s, the control interrupt is no longer raised (as if the
    /// firmware's tick had hung), so that the watchdog model has to catch it.
    pub hang_control_at_s: Option<f64>,
    /// Test knob: from this time on, s, the ADC converts nothing (a failed current sense).
    pub adc_stops_at_s: Option<f64>,
    /// Instructions the emulated core has executed in every trial so far (for `iohil bench`).
    pub instructions: u64,
}

impl EmuRig {
    /// A rig running the ELF at `path`.
    pub fn load(path: &Path) -> Result<Self, EmuError> {
        Ok(EmuRig {
            image: FirmwareImage::load(path)?,
            step_s: DEFAULT_STEP_S,
            unmodelled: None,
            hang_control_at_s: None,
            adc_stops_at_s: None,
            instructions: 0,
        })
    }

    fn firmware(&self) -> FirmwareIdentity {
        let version = match &self.image.identity {
            Some(id) => format!(
                "iohil-board {} (driver-core {}, commit {}, build {}), ELF sha256 {}",
                id.firmware_version, id.core_version, id.git_commit, id.build_id, self.image.sha256
            ),
            None => format!("unidentified ELF, sha256 {}", self.image.sha256),
        };
        FirmwareIdentity {
            kind: format!("board ELF {} (emulated)", self.image.path.display()),
            version,
            shipped_config: !self.image.test_build,
        }
    }
}

impl Rig for EmuRig {
    fn identity(&self) -> RigIdentity {
        let mut details = vec![
            ("emulator".to_owned(), "armagnac 0.3.0 (ARMv7-M)".to_owned()),
            ("elf".to_owned(), self.image.path.display().to_string()),
            ("elf_sha256".to_owned(), self.image.sha256.clone()),
            ("integration_step_s".to_owned(), format!("{}", self.step_s)),
            (
                "cycle_model".to_owned(),
                "one cycle per instruction; CPU clock from the firmware's RCC setup".to_owned(),
            ),
        ];
        if self.image.test_build {
            details.push((
                "test_build".to_owned(),
                "yes: built with a test-only feature, not the shipped firmware".to_owned(),
            ));
        }
        RigIdentity {
            kind: "emu".to_owned(),
            id: "emu".to_owned(),
            firmware: self.firmware(),
            details,
        }
    }

    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError> {
        let rig_error = |message: String| RigError {
            rig: "emu".to_owned(),
            scenario: scenario.id.clone(),
            trial,
            message,
        };
        let peripherals = match self.unmodelled {
            Some(address) => Peripherals::without(address),
            None => Peripherals::default(),
        };
        let mut machine = Machine::new(&self.image, peripherals).map_err(rig_error)?;
        let seed = trial_seed(scenario.seed, trial);
        let mut plant = Plant::new(scenario, seed, self.step_s);
        let mut run = TrialRun {
            recorder: TickRecorder::new(scenario),
            decoder: Decoder::new(),
            anomalies: Vec::new(),
            log: String::new(),
            updates: 0,
            isr_cycles: Vec::new(),
            id_record: self.image.id_record,
            hang_control_at_s: self.hang_control_at_s,
            adc_stops_at_s: self.adc_stops_at_s,
            firmware_faults: Vec::new(),
            boot_seen: false,
        };
        run.execute(&mut machine, &mut plant, scenario, self.step_s);
        self.instructions = self.instructions.saturating_add(machine.executed);
        let truth = plant.ground_truth();
        let TrialRun {
            recorder,
            mut anomalies,
            isr_cycles,
            firmware_faults,
            ..
        } = run;
        let (mut samples, events) = recorder.finish(&plant);
        samples.isr_cycles = isr_cycles;
        if samples.is_empty() && anomalies.is_empty() {
            anomalies.push("no telemetry tick was received".to_owned());
        }
        Ok(Trace {
            format_version: TRACE_FORMAT_VERSION,
            scenario_id: scenario.id.clone(),
            trial,
            seed,
            rig: "emu".to_owned(),
            firmware: self.firmware(),
            sample_period_s: 1.0 / f64::from(driver_core::TICK_HZ),
            integration_step_s: Some(self.step_s),
            samples,
            events,
            truth,
            anomalies,
            firmware_faults,
            clock: None,
        })
    }
}

/// One trial's state around the machine and the plant.
struct TrialRun {
    recorder: TickRecorder,
    decoder: Decoder,
    anomalies: Vec<String>,
    log: String,
    updates: u32,
    isr_cycles: Vec<u32>,
    id_record: Option<FirmwareId>,
    hang_control_at_s: Option<f64>,
    adc_stops_at_s: Option<f64>,
    firmware_faults: Vec<String>,
    boot_seen: bool,
}

/// Why the emulation stopped early.
#[derive(Debug)]
enum Stop {
    /// The firmware failed (hang, reset, watchdog, wrong configuration): the trial FAILs.
    Firmware(String),
    /// The rig cannot go on (unmodelled register, emulator limitation): INCONCLUSIVE.
    Rig(String),
}

impl TrialRun {
    fn execute(&mut self, m: &mut Machine, plant: &mut Plant, scenario: &Scenario, step_s: f64) {
        let outcome = self.run_events(m, plant, scenario, step_s);
        let t = f64::from(self.updates) / f64::from(driver_core::TICK_HZ);
        // Whatever ended the trial, read what the firmware still had in RTT (a fault frame
        // written on its way down) and account for every byte.
        let mean = 0.0;
        self.drain(m, t, plant, mean, false);
        if let Some(event) = self.decoder.finish() {
            self.anomalies
                .push(format!("telemetry ended with unreadable bytes: {event:?}"));
        }
        if self.decoder.pending_bytes() > 0 {
            self.anomalies.push(format!(
                "telemetry ended inside a frame ({} bytes)",
                self.decoder.pending_bytes()
            ));
        }
        self.note_fault_record(m);
        match outcome {
            Err(Stop::Firmware(message)) => self.firmware_faults.push(message),
            Err(Stop::Rig(message)) => self.anomalies.push(message),
            Ok(()) => {
                // Every control tick must have produced its frame, after a boot frame.
                if !self.boot_seen {
                    self.anomalies
                        .push("no boot frame: the firmware identity was not confirmed".to_owned());
                }
                let recorded = self.recorder.samples.len() as u64;
                if recorded != u64::from(self.updates) {
                    self.anomalies.push(format!(
                        "{} control ticks ran but {recorded} tick frames arrived",
                        self.updates
                    ));
                }
            }
        }
    }

    /// The boot and the trial's peripheral events, until the scenario ends, the firmware
    /// settles, or something stops the emulation.
    fn run_events(
        &mut self,
        m: &mut Machine,
        plant: &mut Plant,
        scenario: &Scenario,
        step_s: f64,
    ) -> Result<(), Stop> {
        // Boot: the plant is frozen until the firmware starts its PWM timer.
        m.periph.borrow_mut().trigger_pressed = plant.trigger_pressed_at(0.0);
        m.run_to_sleep(BOOT_BUDGET, "boot")?;
        self.drain(m, 0.0, plant, 0.0, true);
        let p = m.periph.borrow();
        if p.get(TIM1_CR1) & 1 == 0 {
            return Err(Stop::Firmware(format!(
                "the firmware went to sleep without starting TIM1 (PC {:#010x})",
                m.last_pc
            )));
        }
        if !p.iwdg_started {
            return Err(Stop::Firmware(
                "the firmware finished its bring-up without starting the independent watchdog (SR-12)"
                    .to_owned(),
            ));
        }
        let cpu_hz = sysclk_hz(&p);
        let prescale = u64::from(p.get(TIM1_PSC) & 0xFFFF) + 1;
        let period = prescale * (u64::from(p.get(TIM1_ARR) & 0xFFFF) + 1);
        let ccr4 = u64::from(p.get(TIM1_CCR4) & 0xFFFF);
        // A compare value beyond the period never matches: no ADC trigger at all.
        let cc4_at = (ccr4 * prescale < period).then_some(prescale * ccr4);
        let periods_per_update = u64::from(p.get(TIM1_RCR) & 0xFFFF) + 1;
        drop(p);
        let step_cycles = step_s * cpu_hz;
        let ticks = (scenario.duration_s * f64::from(driver_core::TICK_HZ)).round() as u64;
        let end_cycles = (scenario.duration_s * cpu_hz).round() as u64;

        let mut command = DriveCommand::default();
        let mut pending: Option<(u64, DriveCommand)> = None;
        let mut next_cc4 = cc4_at.unwrap_or(u64::MAX);
        let mut next_update = period * periods_per_update;
        // The CPU is busy with an interrupt until then; a later event waits for it.
        let mut busy_until = 0u64;
        let mut true_current_sum = 0.0;
        let mut true_current_steps = 0u64;
        let mut step = 0u64;
        loop {
            let now = (step as f64 * step_cycles).round() as u64;
            if now > end_cycles || u64::from(self.updates) >= ticks {
                return Ok(());
            }
            // Peripheral events due by now, in time order.
            while next_cc4.min(next_update) <= now {
                let nominal = next_cc4.min(next_update);
                let is_update = next_update < next_cc4;
                if is_update {
                    next_update += period * periods_per_update;
                } else {
                    next_cc4 += period;
                }
                if busy_until > nominal + period {
                    return Err(Stop::Firmware(format!(
                        "interrupt overrun: an event at t = {:.4} s waited more than a PWM period                          for the previous interrupt to finish",
                        nominal as f64 / cpu_hz
                    )));
                }
                let at = nominal.max(busy_until);
                let t = at as f64 / cpu_hz;
                {
                    let mut p = m.periph.borrow_mut();
                    p.trigger_pressed = plant.trigger_pressed_at(t);
                    p.now = at;
                }
                let used = if is_update {
                    if self.hang_control_at_s.is_some_and(|h| t >= h) {
                        0
                    } else {
                        self.update_event(m)?
                    }
                } else if self.adc_stops_at_s.is_some_and(|s| t >= s) {
                    0
                } else {
                    self.adc_conversion(m, plant)?
                };
                busy_until = at + used;
                if let Some(expired) = watchdog_expired(&m.periph.borrow(), at, cpu_hz) {
                    return Err(Stop::Firmware(format!(
                        "at t = {t:.4} s: independent watchdog reset ({expired}); the firmware \
                         stopped refreshing it (last PC {:#010x})",
                        m.last_pc
                    )));
                }
                pending = Some((busy_until, drive_command(&m.periph.borrow())));
                if is_update {
                    // The control tick just ran: record it against the plant now.
                    let mean = if true_current_steps > 0 {
                        true_current_sum / true_current_steps as f64
                    } else {
                        0.0
                    };
                    true_current_sum = 0.0;
                    true_current_steps = 0;
                    if !self.drain(m, t, plant, mean, true) {
                        return Ok(());
                    }
                    if self.recorder.settled(t, plant) {
                        return Ok(());
                    }
                }
            }
            if let Some((at, next)) = pending {
                if at <= now {
                    command = next;
                    pending = None;
                }
            }
            plant.step(command);
            true_current_sum += plant.current_a();
            true_current_steps += 1;
            step += 1;
        }
    }

    /// TIM1 CH4 compare: an injected conversion of the plant, and the ADC interrupt.
    fn adc_conversion(&mut self, m: &mut Machine, plant: &mut Plant) -> Result<u64, Stop> {
        let (enabled, jsqr, ier) = {
            let p = m.periph.borrow();
            (
                p.get(ADC1_CR) & 0b1001 == 0b1001 && p.get(ADC1_ISR) & 1 != 0,
                p.get(ADC1_JSQR),
                p.get(ADC1_IER),
            )
        };
        // Triggered by TIM1_CC4 (JEXTSEL 1) on the rising edge (JEXTEN 01).
        let triggered = (jsqr >> 2) & 0x1F == 1 && (jsqr >> 7) & 0b11 == 0b01;
        if !enabled || !triggered {
            return Ok(0);
        }
        let current = plant.sample_current_counts();
        let battery = plant.sample_voltage_counts();
        let channel_value = |channel: u32| {
            match channel {
            1 => Ok(u32::from(current)),
            2 => Ok(u32::from(battery)),
            other => Err(Stop::Firmware(format!(
                "ADC1 injected channel IN{other} is not wired on the board (IN1 current, IN2 battery)"
            ))),
        }
        };
        let length = (jsqr & 0b11) + 1;
        {
            let mut p = m.periph.borrow_mut();
            p.set(ADC1_JDR1, channel_value((jsqr >> 9) & 0x1F)?);
            if length >= 2 {
                p.set(ADC1_JDR2, channel_value((jsqr >> 15) & 0x1F)?);
            }
            p.set_bits(ADC1_ISR, (1 << 5) | (1 << 6));
        }
        if ier & (1 << 6) != 0 {
            m.interrupt(IRQ_ADC1_2);
            return m.run_to_sleep(ISR_BUDGET, "the ADC interrupt");
        }
        Ok(0)
    }

    /// TIM1 update event: the control interrupt.
    fn update_event(&mut self, m: &mut Machine) -> Result<u64, Stop> {
        let uie = {
            let mut p = m.periph.borrow_mut();
            p.set_bits(TIM1_SR, 1);
            p.get(TIM1_DIER) & 1 != 0
        };
        self.updates += 1;
        if uie {
            m.interrupt(IRQ_TIM1_UP);
            return m.run_to_sleep(ISR_BUDGET, "the control interrupt");
        }
        Ok(0)
    }

    /// Reads telemetry and log from RTT and records them at `t`; false when the trial must
    /// stop (unreadable RTT, a firmware fault). `live`: called at a control tick (not at the
    /// end of the trial).
    fn drain(
        &mut self,
        m: &mut Machine,
        t: f64,
        plant: &Plant,
        true_current: f64,
        live: bool,
    ) -> bool {
        let (telemetry, log) = match (m.rtt_drain(0), m.rtt_drain(1)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                self.anomalies.push(format!("RTT unreadable: {e}"));
                return false;
            }
        };
        self.log.push_str(&String::from_utf8_lossy(&log));
        while let Some(end) = self.log.find('\n') {
            let line: String = self.log.drain(..=end).collect();
            self.recorder
                .event(t, "log", Some(line.trim_end().to_owned()));
        }
        self.decoder.push(&telemetry);
        while let Some(event) = self.decoder.next_event() {
            match event {
                TelemetryEvent::Frame {
                    body: Body::Boot(boot),
                    seq,
                } => {
                    self.boot_seen = true;
                    if Some(boot.id) != self.id_record {
                        self.anomalies.push(
                            "the boot frame's firmware identity differs from the ELF's".to_owned(),
                        );
                    }
                    if seq != 0
                        || boot.format_version != driver_core::telemetry::FORMAT_VERSION
                        || u32::from(boot.tick_hz) != driver_core::TICK_HZ
                    {
                        self.anomalies.push(format!(
                            "boot frame: sequence {seq}, format {}, tick rate {} Hz (expected 0, {}, {} Hz)",
                            boot.format_version,
                            boot.tick_hz,
                            driver_core::telemetry::FORMAT_VERSION,
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
                    if live && record.tick != self.updates {
                        self.anomalies.push(format!(
                            "telemetry tick {} arrived at control tick {}",
                            record.tick, self.updates
                        ));
                    }
                    let (inputs, outputs) = match tick_io(&record) {
                        Ok(io) => io,
                        Err(anomaly) => {
                            self.anomalies.push(anomaly);
                            continue;
                        }
                    };
                    let trigger = plant.trigger_pressed_at(t);
                    self.recorder
                        .record(t, plant, true_current, trigger, &inputs, &outputs);
                    self.isr_cycles.push(record.isr_cycles);
                    note_board_fault_bits(&record, &mut self.firmware_faults);
                }
                TelemetryEvent::Frame {
                    body: Body::Fault(fault),
                    ..
                } => {
                    self.recorder
                        .event(t, "fault_record", Some(describe_fault(&fault)));
                    self.firmware_faults
                        .push(format!("fault frame: {}", describe_fault(&fault)));
                }
                TelemetryEvent::Lost { count, .. } => {
                    self.anomalies.push(format!(
                        "{count} telemetry frame(s) lost before t = {t:.4} s"
                    ));
                }
                TelemetryEvent::OutOfOrder { expected, received } => {
                    self.anomalies.push(format!(
                        "telemetry frame {received} arrived where {expected} was expected (duplicate or out of order) before t = {t:.4} s"
                    ));
                }
                TelemetryEvent::Skipped { bytes, reason } => {
                    self.anomalies.push(format!(
                        "{bytes} telemetry byte(s) skipped ({reason:?}) before t = {t:.4} s"
                    ));
                }
                TelemetryEvent::Restarted => {
                    self.anomalies.push(format!(
                        "the firmware restarted (boot frame) at t = {t:.4} s"
                    ));
                }
            }
        }
        // A fault record left in RAM (the handler may have stopped the emulator first) ends
        // the trial; other firmware faults are recorded and the trial goes on, so the trace
        // shows what the firmware did about them.
        !self.note_fault_record(m)
    }

    /// Records the firmware's fault record from RAM, if it left one; whether it did.
    fn note_fault_record(&mut self, m: &Machine) -> bool {
        match m.fault_record() {
            Some(record) => {
                let text = format!("fault record in RAM: {}", describe_fault(&record));
                if !self.firmware_faults.contains(&text) {
                    self.firmware_faults.push(text);
                }
                true
            }
            None => false,
        }
    }
}

/// The CPU clock the firmware configured: HSI16 until it switches to the PLL.
fn sysclk_hz(p: &Peripherals) -> f64 {
    let cfgr = p.get(RCC_CFGR);
    if cfgr & 0b11 != 0b11 {
        return HSI16_HZ;
    }
    let pll = p.get(RCC_PLLCFGR);
    let m = f64::from(((pll >> 4) & 0xF) + 1);
    let n = f64::from((pll >> 8) & 0x7F);
    let r = f64::from((((pll >> 25) & 0b11) + 1) * 2);
    let ahb = match (cfgr >> 4) & 0xF {
        d if d < 8 => 1.0,
        d => f64::from(2u32 << (d - 8)),
    };
    HSI16_HZ / m * n / r / ahb
}

/// The drive TIM1 and PB5 put on the motor, through the pins as the firmware configured
/// them: PA8 TIM1_CH1 (AF6) and PC13 TIM1_CH1N (AF4) leg A, PB5 output leg B low side. A pin
/// not in that function, or inverted channel polarity, drives nothing here (on the board it
/// would leave a gate undriven or inverted: the model refuses to guess).
fn drive_command(p: &Peripherals) -> DriveCommand {
    let running = p.get(TIM1_CR1) & 1 != 0;
    let moe = p.get(TIM1_BDTR) & (1 << 15) != 0;
    // CC1E and CC1NE on, CC1P and CC1NP off (active high).
    let outputs = p.get(TIM1_CCER) & 0b1111 == 0b0101;
    let pwm1 = (p.get(TIM1_CCMR1) >> 4) & 0b111 == 0b110 && p.get(TIM1_CCMR1) & (1 << 16) == 0;
    let pins = (p.get(GPIOA + MODER) >> 16) & 0b11 == 0b10
        && p.get(GPIOA + AFRH) & 0xF == 6
        && (p.get(GPIOC + MODER) >> 26) & 0b11 == 0b10
        && (p.get(GPIOC + AFRH) >> 20) & 0xF == 4
        && (p.get(GPIOB + MODER) >> 10) & 0b11 == 0b01;
    let leg_b_low = p.gpiob_odr & (1 << 5) != 0;
    if !(running && moe && outputs && pwm1 && pins && leg_b_low) {
        return DriveCommand::default();
    }
    let period = f64::from((p.get(TIM1_ARR) & 0xFFFF) + 1);
    let ccr1 = f64::from(p.get(TIM1_CCR1) & 0xFFFF);
    if ccr1 == 0.0 {
        DriveCommand {
            duty: 0.0,
            brake: true,
        }
    } else {
        DriveCommand {
            duty: (ccr1 / period).min(1.0),
            brake: false,
        }
    }
}

/// The watchdog timeout, when it expired by `now` cycles.
fn watchdog_expired(p: &Peripherals, now: u64, cpu_hz: f64) -> Option<String> {
    let refreshed = p.iwdg_refreshed_at?;
    if !p.iwdg_started {
        return None;
    }
    let divider = f64::from(4u32 << (p.get(IWDG_PR) & 0b111).min(6));
    let timeout_s = f64::from((p.get(IWDG_RLR) & 0xFFF) + 1) * divider / LSI_HZ;
    let idle_s = now.saturating_sub(refreshed) as f64 / cpu_hz;
    (idle_s > timeout_s).then(|| {
        format!(
            "{:.1} ms since the last refresh, timeout {:.1} ms",
            idle_s * 1e3,
            timeout_s * 1e3
        )
    })
}

/// Decoder wrapper that notices WFI (armagnac reports no event for it and would spin) and
/// caches decoded instructions.
///
/// armagnac decodes every instruction each time it executes it, and allocates the decoded
/// instruction anew (an `Rc`): about a fifth of the emulated rig's time before this cache
/// (`perf record` of `iohil bench --only emu`). Decoding is a pure function of the instruction's
/// bits, its size and the IT state, so a decoded instruction is kept in a direct-mapped table
/// keyed by exactly those and shared on every later execution. Decode errors are not cached.
struct WfiSpy {
    inner: Lut16AndGrouped32InstructionDecoder,
    wfi: Rc<Cell<bool>>,
    cache: RefCell<Vec<Option<CachedInstruction>>>,
}

/// One decoded instruction in [`WfiSpy`]'s table.
struct CachedInstruction {
    bits: u32,
    wide: bool,
    it_state: u8,
    instruction: Rc<dyn Instruction>,
}

/// Entries of the decode cache (a power of two); the board firmware has a few thousand
/// distinct instructions.
const DECODE_CACHE_ENTRIES: usize = 1 << 13;

impl WfiSpy {
    fn new(inner: Lut16AndGrouped32InstructionDecoder, wfi: Rc<Cell<bool>>) -> Self {
        WfiSpy {
            inner,
            wfi,
            cache: RefCell::new((0..DECODE_CACHE_ENTRIES).map(|_| None).collect()),
        }
    }
}

impl InstructionDecode for WfiSpy {
    fn try_decode(
        &self,
        ins: u32,
        size: InstructionSize,
        state: ItState,
    ) -> Result<Rc<dyn Instruction>, InstructionDecodeError> {
        let wide = size == InstructionSize::Ins32;
        if (!wide && ins == 0xBF30) || (wide && ins == 0xF3AF_8003) {
            self.wfi.set(true);
        }
        let slot =
            (ins ^ (ins >> 13) ^ (u32::from(state.0) << 5)) as usize & (DECODE_CACHE_ENTRIES - 1);
        let mut cache = self.cache.borrow_mut();
        if let Some(Some(hit)) = cache.get(slot) {
            if hit.bits == ins && hit.wide == wide && hit.it_state == state.0 {
                return Ok(hit.instruction.clone());
            }
        }
        let instruction = self.inner.try_decode(ins, size, state)?;
        if let Some(entry) = cache.get_mut(slot) {
            *entry = Some(CachedInstruction {
                bits: ins,
                wide,
                it_state: state.0,
                instruction: instruction.clone(),
            });
        }
        Ok(instruction)
    }
}

/// The emulated MCU.
struct Machine {
    proc: Processor,
    periph: Rc<RefCell<Peripherals>>,
    ram: Rc<RefCell<RamMemory>>,
    wfi: Rc<Cell<bool>>,
    rtt: u32,
    fault_record: Option<u32>,
    last_pc: u32,
    /// Instructions executed so far.
    executed: u64,
}

impl Machine {
    fn new(image: &FirmwareImage, peripherals: Peripherals) -> Result<Self, String> {
        let mut proc = Processor::new(CoreConfig::v7m().external_exceptions(stm32_irq_count()));
        let conflict = |what: &str| format!("emulator memory map conflict at {what}");
        proc.map_iface(
            FLASH_BASE,
            Rc::new(RefCell::new(
                RamMemory::new_from_slice(&image.flash).read_only(),
            )),
        )
        .map_err(|_| conflict("flash"))?;
        let ram = proc
            .map_ram(RAM_BASE, RAM_LEN)
            .map_err(|_| conflict("RAM"))?;
        let periph = Rc::new(RefCell::new(peripherals));
        for &(base, size) in WINDOWS {
            proc.map_iface(
                base,
                Rc::new(RefCell::new(Window {
                    base,
                    size,
                    model: periph.clone(),
                })),
            )
            .map_err(|_| conflict(&format!("{base:#010x}")))?;
        }
        let wfi = Rc::new(Cell::new(false));
        proc.instruction_decoder = Box::new(WfiSpy::new(
            Lut16AndGrouped32InstructionDecoder::new(ArmVersion::V7M),
            wfi.clone(),
        ));
        // Reset: vector table at the start of flash (VTOR; armagnac resets it to 0).
        let reset = |proc: &mut Processor| -> Result<(), RunError> {
            proc.write_u32le_iface(0xE000_ED08, FLASH_BASE)?;
            let sp = proc.read_u32le_iface(FLASH_BASE)?;
            let pc = proc.read_u32le_iface(FLASH_BASE + 4)?;
            proc.set_sp(sp);
            proc.registers.psr.set_t(true);
            proc.set_pc(pc & !1);
            Ok(())
        };
        reset(&mut proc).map_err(|e| format!("cannot reset the emulated core: {e:?}"))?;
        Ok(Machine {
            proc,
            periph,
            ram,
            wfi,
            rtt: image.rtt,
            fault_record: image.fault_record,
            last_pc: 0,
            executed: 0,
        })
    }

    fn interrupt(&mut self, irq: u16) {
        self.proc.request_interrupt(Irq::External(irq));
    }

    /// Runs until the core executes WFI; the instructions it took. Every other ending is an
    /// error naming what happened, the address where relevant, and the PC.
    fn run_to_sleep(&mut self, budget: u64, what: &str) -> Result<u64, Stop> {
        // armagnac takes a requested interrupt whatever PRIMASK says; the MCU would not.
        if self.proc.registers.primask.pm() {
            return Err(Stop::Firmware(format!(
                "{what} was raised while the firmware sleeps with interrupts masked (PRIMASK set, \
                 PC {:#010x}): it would never run on the MCU",
                self.proc.pc()
            )));
        }
        let proc = &mut self.proc;
        let wfi = &self.wfi;
        let last_pc = &mut self.last_pc;
        let executed = &mut self.executed;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut count = 0u64;
            loop {
                if count >= budget {
                    return Err(Stop::Firmware(format!(
                        "{what} did not return to sleep within {budget} instructions (PC {:#010x}): hung",
                        proc.pc()
                    )));
                }
                let pc = proc.pc();
                *last_pc = pc;
                match proc.next_event() {
                    Ok(Event::Instruction { .. }) => {
                        count += 1;
                        *executed += 1;
                        if wfi.replace(false) {
                            return Ok(count);
                        }
                    }
                    Ok(Event::Reset) => {
                        return Err(Stop::Firmware(format!(
                            "the firmware requested a reset at PC {pc:#010x}"
                        )))
                    }
                    Ok(Event::Break(n)) => {
                        return Err(Stop::Firmware(format!(
                            "breakpoint (BKPT {n}) at PC {pc:#010x}"
                        )))
                    }
                    Ok(Event::Hook { address }) => {
                        return Err(Stop::Rig(format!(
                            "unexpected emulator hook at {address:#010x} (PC {pc:#010x})"
                        )))
                    }
                    Ok(Event::DebugHint(_)) => {
                        count += 1;
                        *executed += 1;
                    }
                    Err(error) => return Err(Stop::Rig(describe(&error, pc))),
                }
            }
        }));
        outcome.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Stop::Rig(format!(
                "emulator limitation (armagnac: {message}) at PC {:#010x}",
                self.last_pc
            )))
        })
    }

    fn ram_u32(&self, address: u32) -> Result<u32, String> {
        let ram = self.ram.borrow();
        let offset = address
            .checked_sub(RAM_BASE)
            .map(|o| o as usize)
            .filter(|o| o + 4 <= ram.data.len())
            .ok_or_else(|| format!("address {address:#010x} is outside RAM"))?;
        Ok(u32::from_le_bytes(
            ram.data[offset..offset + 4].try_into().unwrap_or([0; 4]),
        ))
    }

    /// Drains RTT up-channel `channel` as a probe does: bytes between the read and write
    /// offsets, then the read offset moved to the write offset.
    fn rtt_drain(&mut self, channel: u32) -> Result<Vec<u8>, String> {
        let id: Vec<u8> = {
            let ram = self.ram.borrow();
            let offset = (self.rtt - RAM_BASE) as usize;
            ram.data.get(offset..offset + 10).unwrap_or(&[]).to_vec()
        };
        if id != b"SEGGER RTT" {
            return Err(format!("no RTT control block at {:#010x}", self.rtt));
        }
        let max_up = self.ram_u32(self.rtt + 16)?;
        if channel >= max_up {
            return Err(format!(
                "RTT has {max_up} up-channels, channel {channel} wanted"
            ));
        }
        let descriptor = self.rtt + 24 + 24 * channel;
        let buffer = self.ram_u32(descriptor + 4)?;
        let size = self.ram_u32(descriptor + 8)?;
        let write = self.ram_u32(descriptor + 12)?;
        let read = self.ram_u32(descriptor + 16)?;
        if size == 0 || write >= size || read >= size {
            return Err(format!(
                "RTT up-channel {channel} descriptor is inconsistent (size {size}, write {write}, read {read})"
            ));
        }
        let mut ram = self.ram.borrow_mut();
        let start = buffer
            .checked_sub(RAM_BASE)
            .map(|o| o as usize)
            .filter(|o| o + size as usize <= ram.data.len())
            .ok_or_else(|| format!("RTT buffer at {buffer:#010x} is outside RAM"))?;
        let mut out = Vec::new();
        let mut at = read;
        while at != write {
            out.push(ram.data[start + at as usize]);
            at = (at + 1) % size;
        }
        let read_offset = (descriptor + 16 - RAM_BASE) as usize;
        ram.data[read_offset..read_offset + 4].copy_from_slice(&write.to_le_bytes());
        Ok(out)
    }

    /// A valid fault record in RAM, if the firmware left one.
    fn fault_record(&self) -> Option<driver_core::telemetry::FaultRecord> {
        let address = self.fault_record?;
        let ram = self.ram.borrow();
        let offset = address.checked_sub(RAM_BASE)? as usize;
        let bytes: &[u8; FAULT_RECORD_LEN] = ram
            .data
            .get(offset..offset + FAULT_RECORD_LEN)?
            .try_into()
            .ok()?;
        decode_fault_record(bytes)
    }
}

fn stm32_irq_count() -> usize {
    102
}

/// A readable account of an emulator error at `pc`.
fn describe(error: &RunError, pc: u32) -> String {
    let name = |address: u32| {
        REGISTERS
            .iter()
            .find(|(a, _, _)| *a == address)
            .map(|(_, n, _)| format!(" ({n})"))
            .unwrap_or_default()
    };
    match error {
        RunError::MemRead {
            address,
            size,
            cause,
        } => format!(
            "read of {size} byte(s) at {address:#010x}{} refused ({cause:?}): not modelled; PC {pc:#010x}",
            name(*address)
        ),
        RunError::MemWrite {
            address,
            size,
            value,
            cause,
        } => format!(
            "write of {value:#x} ({size} byte(s)) at {address:#010x}{} refused ({cause:?}): not modelled; PC {pc:#010x}",
            name(*address)
        ),
        RunError::InstructionUnknown => {
            format!("unsupported or unknown instruction at PC {pc:#010x}")
        }
        other => format!("{other:?} at PC {pc:#010x}"),
    }
}
