//! Telemetry frames: the one definition of the binary format the board sends over RTT.
//!
//! The board firmware writes these frames to RTT up-channel 0 (`telemetry`); the emulated rig
//! reads them from emulated RAM and the bench from the probe; both decode them with
//! `iohil::telemetry` in the harness. This module is the format's specification: the harness
//! decoder is written from the tables below and tested against this encoder.
//!
//! # Frame
//!
//! All multi-byte fields are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | [`SYNC`] (`0xA5`) |
//! | 1 | 1 | kind: [`KIND_BOOT`], [`KIND_TICK`], [`KIND_FAULT`] |
//! | 2 | 1 | payload length `N` (fixed per kind: [`BOOT_LEN`], [`TICK_LEN`], [`FAULT_LEN`]) |
//! | 3 | 2 | sequence number, +1 per frame of any kind, wrapping; 0 is the boot frame |
//! | 5 | N | payload |
//! | 5 + N | 2 | CRC-16/CCITT-FALSE ([`crc16`]) of bytes 1 .. 5 + N |
//!
//! A frame is never split by the firmware (RTT writes of a whole frame or nothing), but a
//! reader may start mid-stream or lose bytes: it resynchronises on the next [`SYNC`] whose
//! length and CRC check, and a jump in the sequence number tells it how many frames were lost.
//!
//! # Boot payload ([`KIND_BOOT`], [`BOOT_LEN`] bytes), sent once after reset
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | telemetry format version ([`FORMAT_VERSION`]) |
//! | 1 | 1 | reset cause bits ([`reset`]) |
//! | 2 | 2 | control tick rate, Hz |
//! | 4 | [`IDENT_LEN`] | firmware identity ([`FirmwareId`], the same bytes as the ELF's `.iohil_id` section) |
//!
//! # Tick payload ([`KIND_TICK`], [`TICK_LEN`] bytes), one per control tick
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | tick number (the board's control-interrupt count) |
//! | 4 | 1 | state ([`crate::State`] as `u8`) |
//! | 5 | 1 | stop reason ([`crate::StopReason`] as `u8`, 0 = none) |
//! | 6 | 1 | flags: bit 0 brake, bit 1 trigger as given to the core, bit 2 raw trigger input (the board ignores a press until it has seen a release after reset) |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 2 | event bits ([`crate::event`]) |
//! | 10 | 2 | board fault bits ([`fault`]) |
//! | 12 | 2 | measured motor current, mean over the tick, mA |
//! | 14 | 2 | measured battery voltage, mean over the tick, mV |
//! | 16 | 2 | PWM duty, per mille |
//! | 18 | 2 | filtered current, mA (detector internals) |
//! | 20 | 2 | baseline current, mA (detector internals) |
//! | 22 | 4 | CPU cycles the previous control interrupt took (0 = not measured) |
//!
//! Values that do not fit a field saturate (currents and voltages are unsigned in range).
//!
//! # Fault payload ([`KIND_FAULT`], [`FAULT_LEN`] bytes)
//!
//! Sent when a panic, HardFault, unexpected interrupt or bring-up failure is caught (if RTT still works) and after a reset that found
//! a valid fault record left in RAM by the previous run. The same payload, framed by
//! [`FAULT_RECORD_MAGIC`] and a CRC, is the fault record the harness reads from RAM
//! ([`encode_fault_record`]).
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind ([`FaultKind`]) |
//! | 1 | 3 | reserved, 0 |
//! | 4 | 4 | PC of the faulting instruction (HardFault) or 0 |
//! | 8 | 4 | LR |
//! | 12 | 4 | xPSR |
//! | 16 | 4 | CFSR (SCB configurable fault status) |
//! | 20 | 4 | HFSR (SCB HardFault status) |
//! | 24 | 4 | MMFAR |
//! | 28 | 4 | BFAR |
//! | 32 | 4 | control tick at the fault |
//! | 36 | 4 | panic: source line; unexpected interrupt: its number; bring-up failure: the step; else 0 |

/// First byte of every frame.
pub const SYNC: u8 = 0xA5;
/// Version of this format, sent in the boot frame.
pub const FORMAT_VERSION: u8 = 1;
/// Boot frame kind.
pub const KIND_BOOT: u8 = 0x01;
/// Tick frame kind.
pub const KIND_TICK: u8 = 0x02;
/// Fault frame kind.
pub const KIND_FAULT: u8 = 0x03;
/// Bytes before the payload: sync, kind, length, sequence.
pub const HEADER_LEN: usize = 5;
/// Bytes after the payload: CRC.
pub const TRAILER_LEN: usize = 2;
/// Length of the [`FirmwareId`] record.
pub const IDENT_LEN: usize = 112;
/// Boot payload length.
pub const BOOT_LEN: usize = 4 + IDENT_LEN;
/// Tick payload length.
pub const TICK_LEN: usize = 26;
/// Fault payload length.
pub const FAULT_LEN: usize = 40;
/// Longest frame (the boot frame).
pub const MAX_FRAME_LEN: usize = HEADER_LEN + BOOT_LEN + TRAILER_LEN;
/// Magic at the start of the firmware identity record (`.iohil_id` section).
pub const IDENT_MAGIC: [u8; 8] = *b"IOHILFW\x01";
/// Magic at the start of the fault record left in RAM.
pub const FAULT_RECORD_MAGIC: [u8; 4] = *b"FLT1";
/// Length of the RAM fault record: magic, payload, CRC of the payload.
pub const FAULT_RECORD_LEN: usize = 4 + FAULT_LEN + TRAILER_LEN;

/// Reset cause bits of the boot frame (from the MCU's reset flags).
pub mod reset {
    /// Power-on / brown-out reset.
    pub const POWER_ON: u8 = 1 << 0;
    /// Reset pin (or the debug probe's reset line).
    pub const PIN: u8 = 1 << 1;
    /// Software reset (SYSRESETREQ, also used by probes).
    pub const SOFTWARE: u8 = 1 << 2;
    /// Independent watchdog reset: the previous run hung (SR-12).
    pub const WATCHDOG: u8 = 1 << 3;
    /// Any other cause (window watchdog, low-power, option bytes).
    pub const OTHER: u8 = 1 << 4;
}

/// Board fault bits of the tick frame.
pub mod fault {
    /// The previous control interrupt had not finished when this one was due.
    pub const CONTROL_OVERRUN: u16 = 1 << 0;
    /// Fewer ADC readings than expected arrived during the tick.
    pub const ADC_MISSING: u16 = 1 << 1;
    /// A telemetry frame could not be written (RTT buffer full); the sequence number shows
    /// how many.
    pub const TELEMETRY_DROPPED: u16 = 1 << 2;
    /// The last reset was caused by the independent watchdog.
    pub const WATCHDOG_RESET: u16 = 1 << 3;
    /// A fault record of a previous run was found at boot.
    pub const PREVIOUS_FAULT: u16 = 1 << 4;
}

/// Why the fault record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FaultKind {
    /// A Rust panic in the board firmware (the core has no panicking paths).
    Panic = 1,
    /// A HardFault (or escalated MemManage/BusFault/UsageFault).
    HardFault = 2,
    /// An interrupt or exception with no handler fired; `line` holds its number.
    UnexpectedInterrupt = 3,
    /// Board bring-up failed (clock, watchdog, ADC); `line` holds the step. Nothing was driven.
    InitFailure = 4,
}

impl FaultKind {
    /// The kind with this wire value.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(FaultKind::Panic),
            2 => Some(FaultKind::HardFault),
            3 => Some(FaultKind::UnexpectedInterrupt),
            4 => Some(FaultKind::InitFailure),
            _ => None,
        }
    }

    /// Stable lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::HardFault => "hard_fault",
            FaultKind::UnexpectedInterrupt => "unexpected_interrupt",
            FaultKind::InitFailure => "init_failure",
        }
    }
}

/// What the firmware was built from. Embedded in the ELF (section `.iohil_id`, symbol
/// `IOHIL_FIRMWARE_ID`) and sent in the boot frame, so a report names exactly what ran.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | [`IDENT_MAGIC`] |
/// | 8 | 16 | firmware (board crate) version, ASCII, NUL-padded |
/// | 24 | 16 | driver-core version, ASCII, NUL-padded |
/// | 40 | 20 | git commit (SHA-1), all zero when unknown |
/// | 60 | 1 | flags: bit 0 working tree had uncommitted changes, bit 1 commit unknown, bit 2 test build |
/// | 61 | 3 | reserved, 0 |
/// | 64 | 32 | SHA-256 of the driver-core sources compiled in (see the board's build script) |
/// | 96 | 16 | build id: the first 16 bytes of the SHA-256 of every firmware input |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareId {
    /// Firmware version, ASCII NUL-padded.
    pub firmware_version: [u8; 16],
    /// Core version, ASCII NUL-padded.
    pub core_version: [u8; 16],
    /// Git commit, raw SHA-1.
    pub git_commit: [u8; 20],
    /// [`id_flags`].
    pub flags: u8,
    /// SHA-256 of the driver-core sources.
    pub core_source_sha256: [u8; 32],
    /// Build id.
    pub build_id: [u8; 16],
}

/// Flags of [`FirmwareId::flags`].
pub mod id_flags {
    /// Built from a working tree with uncommitted changes.
    pub const DIRTY: u8 = 1 << 0;
    /// Not built from a git checkout: the commit is unknown.
    pub const COMMIT_UNKNOWN: u8 = 1 << 1;
    /// Built with a test-only feature (e.g. a deliberately broken detector): never to be
    /// flashed on a device; `iohil flash --dry-run` fails it.
    pub const TEST_BUILD: u8 = 1 << 2;
}

impl FirmwareId {
    /// The record's bytes.
    pub const fn to_bytes(&self) -> [u8; IDENT_LEN] {
        let mut out = [0u8; IDENT_LEN];
        out = copy_into(out, 0, &IDENT_MAGIC);
        out = copy_into(out, 8, &self.firmware_version);
        out = copy_into(out, 24, &self.core_version);
        out = copy_into(out, 40, &self.git_commit);
        out = copy_into(out, 60, &[self.flags]);
        out = copy_into(out, 64, &self.core_source_sha256);
        copy_into(out, 96, &self.build_id)
    }

    /// Parses a record; `None` when the magic is wrong.
    pub fn from_bytes(bytes: &[u8; IDENT_LEN]) -> Option<Self> {
        let mut r = Reader::new(bytes);
        if r.array::<8>()? != IDENT_MAGIC {
            return None;
        }
        let firmware_version = r.array()?;
        let core_version = r.array()?;
        let git_commit = r.array()?;
        let flags = r.u8()?;
        r.array::<3>()?;
        Some(FirmwareId {
            firmware_version,
            core_version,
            git_commit,
            flags,
            core_source_sha256: r.array()?,
            build_id: r.array()?,
        })
    }
}

/// `text` as a NUL-padded ASCII field (truncated to `N` bytes), usable in a `const`.
pub const fn padded<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N && i < bytes.len() {
        // `i` is below both lengths (loop condition).
        #[expect(
            clippy::indexing_slicing,
            reason = "bounds checked by the loop condition"
        )]
        {
            out[i] = bytes[i];
        }
        i = i.saturating_add(1);
    }
    out
}

/// Copies `src` into `out` at `at`, in a `const` context; bytes past the end are dropped.
const fn copy_into<const N: usize>(mut out: [u8; N], at: usize, src: &[u8]) -> [u8; N] {
    let mut i = 0;
    while i < src.len() && at.saturating_add(i) < N {
        #[expect(
            clippy::indexing_slicing,
            reason = "bounds checked by the loop condition"
        )]
        {
            out[at.saturating_add(i)] = src[i];
        }
        i = i.saturating_add(1);
    }
    out
}

/// One control tick as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickRecord {
    /// Tick number.
    pub tick: u32,
    /// [`crate::State`] as `u8`.
    pub state: u8,
    /// [`crate::StopReason`] as `u8`, 0 = none.
    pub stop_reason: u8,
    /// Brake commanded.
    pub brake: bool,
    /// Trigger as given to the core.
    pub trigger_pressed: bool,
    /// Raw trigger input (differs from `trigger_pressed` while the board ignores a trigger
    /// held through a reset).
    pub trigger_raw: bool,
    /// [`crate::event`] bits.
    pub events: u16,
    /// [`fault`] bits.
    pub faults: u16,
    /// Measured current, mA.
    pub current_ma: u16,
    /// Measured battery voltage, mV.
    pub battery_mv: u16,
    /// Duty, per mille.
    pub duty_permille: u16,
    /// Filtered current, mA.
    pub filtered_ma: u16,
    /// Baseline current, mA.
    pub baseline_ma: u16,
    /// Cycles of the previous control interrupt.
    pub isr_cycles: u32,
}

impl TickRecord {
    /// The record of one [`crate::Controller::step`].
    pub fn from_step(
        inputs: &crate::Inputs,
        outputs: &crate::Outputs,
        faults: u16,
        isr_cycles: u32,
    ) -> Self {
        TickRecord {
            tick: inputs.tick,
            state: outputs.state as u8,
            stop_reason: match outputs.stop_reason {
                Some(reason) => reason as u8,
                None => 0,
            },
            brake: outputs.brake,
            trigger_pressed: inputs.trigger_pressed,
            trigger_raw: inputs.trigger_pressed,
            events: outputs.events,
            faults,
            current_ma: saturate_u16(inputs.motor_current_ma),
            battery_mv: saturate_u16(inputs.battery_mv),
            duty_permille: outputs.duty_permille,
            filtered_ma: saturate_u16(outputs.filtered_current_ma),
            baseline_ma: saturate_u16(outputs.baseline_ma),
            isr_cycles,
        }
    }
}

/// A caught panic or HardFault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// What happened.
    pub kind: FaultKind,
    /// Faulting PC (HardFault), or 0.
    pub pc: u32,
    /// LR.
    pub lr: u32,
    /// xPSR.
    pub xpsr: u32,
    /// CFSR.
    pub cfsr: u32,
    /// HFSR.
    pub hfsr: u32,
    /// MMFAR.
    pub mmfar: u32,
    /// BFAR.
    pub bfar: u32,
    /// Control tick at the fault.
    pub tick: u32,
    /// Panic source line, or 0.
    pub line: u32,
}

/// A frame to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// After reset: format version, reset cause, tick rate, identity.
    Boot {
        /// [`reset`] bits.
        reset_cause: u8,
        /// Control tick rate, Hz.
        tick_hz: u16,
        /// Identity.
        id: FirmwareId,
    },
    /// One control tick.
    Tick(TickRecord),
    /// A caught fault.
    Fault(FaultRecord),
}

/// CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR
/// (check value over `b"123456789"`: `0x29B1`).
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Encodes `frame` with sequence number `seq` into `out`; returns the frame length.
pub fn encode(seq: u16, frame: &Frame, out: &mut [u8; MAX_FRAME_LEN]) -> usize {
    encode_inner(seq, frame, out).unwrap_or(0)
}

fn encode_inner(seq: u16, frame: &Frame, out: &mut [u8; MAX_FRAME_LEN]) -> Option<usize> {
    let mut w = Writer::new(out);
    let (kind, len) = match frame {
        Frame::Boot { .. } => (KIND_BOOT, BOOT_LEN),
        Frame::Tick(_) => (KIND_TICK, TICK_LEN),
        Frame::Fault(_) => (KIND_FAULT, FAULT_LEN),
    };
    w.u8(SYNC)?;
    w.u8(kind)?;
    w.u8(u8::try_from(len).ok()?)?;
    w.u16(seq)?;
    match frame {
        Frame::Boot {
            reset_cause,
            tick_hz,
            id,
        } => {
            w.u8(FORMAT_VERSION)?;
            w.u8(*reset_cause)?;
            w.u16(*tick_hz)?;
            w.bytes(&id.to_bytes())?;
        }
        Frame::Tick(t) => {
            w.u32(t.tick)?;
            w.u8(t.state)?;
            w.u8(t.stop_reason)?;
            w.u8(u8::from(t.brake)
                | (u8::from(t.trigger_pressed) << 1)
                | (u8::from(t.trigger_raw) << 2))?;
            w.u8(0)?;
            w.u16(t.events)?;
            w.u16(t.faults)?;
            w.u16(t.current_ma)?;
            w.u16(t.battery_mv)?;
            w.u16(t.duty_permille)?;
            w.u16(t.filtered_ma)?;
            w.u16(t.baseline_ma)?;
            w.u32(t.isr_cycles)?;
        }
        Frame::Fault(f) => write_fault(&mut w, f)?,
    }
    let end = w.pos;
    let crc = crc16(w.buf.get(1..end)?);
    w.u16(crc)?;
    Some(w.pos)
}

/// The fault record as left in RAM for the harness: [`FAULT_RECORD_MAGIC`], the fault
/// payload, and the CRC of the payload.
pub fn encode_fault_record(record: &FaultRecord) -> [u8; FAULT_RECORD_LEN] {
    let mut out = [0u8; FAULT_RECORD_LEN];
    let mut w = Writer::new(&mut out);
    // Cannot fail: the buffer is exactly as long as the record (the tests check the layout).
    let _written: Option<()> = (|| {
        w.bytes(&FAULT_RECORD_MAGIC)?;
        write_fault(&mut w, record)?;
        let crc = crc16(w.buf.get(4..4 + FAULT_LEN)?);
        w.u16(crc)
    })();
    out
}

/// Parses a RAM fault record; `None` when the magic, the CRC or the kind is wrong (no record,
/// or RAM content left by something else).
pub fn decode_fault_record(bytes: &[u8; FAULT_RECORD_LEN]) -> Option<FaultRecord> {
    let mut r = Reader::new(bytes);
    if r.array::<4>()? != FAULT_RECORD_MAGIC {
        return None;
    }
    let payload = bytes.get(4..4 + FAULT_LEN)?;
    let record = decode_fault_payload(payload)?;
    let crc_bytes = bytes.get(4 + FAULT_LEN..)?;
    let mut c = Reader::new(crc_bytes);
    (c.u16()? == crc16(payload)).then_some(record)
}

/// Parses a fault payload ([`FAULT_LEN`] bytes).
pub fn decode_fault_payload(payload: &[u8]) -> Option<FaultRecord> {
    let mut r = Reader::new(payload);
    let kind = FaultKind::from_u8(r.u8()?)?;
    r.array::<3>()?;
    Some(FaultRecord {
        kind,
        pc: r.u32()?,
        lr: r.u32()?,
        xpsr: r.u32()?,
        cfsr: r.u32()?,
        hfsr: r.u32()?,
        mmfar: r.u32()?,
        bfar: r.u32()?,
        tick: r.u32()?,
        line: r.u32()?,
    })
}

fn write_fault(w: &mut Writer<'_>, f: &FaultRecord) -> Option<()> {
    w.u8(f.kind as u8)?;
    w.bytes(&[0, 0, 0])?;
    for value in [
        f.pc, f.lr, f.xpsr, f.cfsr, f.hfsr, f.mmfar, f.bfar, f.tick, f.line,
    ] {
        w.u32(value)?;
    }
    Some(())
}

fn saturate_u16(value: i32) -> u16 {
    u16::try_from(value.max(0)).unwrap_or(u16::MAX)
}

/// Little-endian writer that never panics: every write past the end returns `None`.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }

    fn bytes(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    fn u8(&mut self, value: u8) -> Option<()> {
        self.bytes(&[value])
    }

    fn u16(&mut self, value: u16) -> Option<()> {
        self.bytes(&value.to_le_bytes())
    }

    fn u32(&mut self, value: u32) -> Option<()> {
        self.bytes(&value.to_le_bytes())
    }
}

/// Little-endian reader that never panics.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        bytes.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(u8::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }
}
