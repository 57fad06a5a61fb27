//! Panics, HardFaults and unexpected interrupts: safe state first, then a record.
//!
//! Every handler removes motor drive before anything else, writes a fault record
//! (`driver_core::telemetry::encode_fault_record`) to `IOHIL_FAULT_RECORD` in RAM that is not
//! cleared at reset, sends a fault frame if RTT still works, and then spins without refreshing
//! the watchdog: the MCU resets within 15 ms, still with all gates off, and the next boot sends
//! the record again in a fault frame. The harness can also read the record directly over the
//! probe (symbol `IOHIL_FAULT_RECORD`) while the core spins in the handler.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};

use cortex_m_rt::{exception, ExceptionFrame};
use driver_core::telemetry::{
    decode_fault_record, encode, encode_fault_record, FaultKind, FaultRecord, Frame,
    FAULT_RECORD_LEN, MAX_FRAME_LEN,
};

use crate::hw;
use crate::regs::scb;

/// Control tick counter, for the record (plain loads and stores only).
pub static TICK: AtomicU32 = AtomicU32::new(0);
/// Next telemetry sequence number, shared by the control tick and the fault handlers.
pub static NEXT_SEQ: AtomicU16 = AtomicU16::new(0);

/// RAM that survives a reset (cortex-m-rt's `.uninit` section is not zeroed).
#[repr(transparent)]
pub struct FaultRecordCell(UnsafeCell<MaybeUninit<[u8; FAULT_RECORD_LEN]>>);

// SAFETY: written only by the fault handlers (which never return) and read/cleared only at boot
// before interrupts are enabled.
unsafe impl Sync for FaultRecordCell {}

/// The fault record the harness reads.
#[no_mangle]
#[link_section = ".uninit.IOHIL_FAULT_RECORD"]
pub static IOHIL_FAULT_RECORD: FaultRecordCell =
    FaultRecordCell(UnsafeCell::new(MaybeUninit::uninit()));

/// The record left by the previous run, if any; clears it so it is reported once.
pub fn take_previous() -> Option<FaultRecord> {
    let cell = IOHIL_FAULT_RECORD.0.get();
    // SAFETY: boot, single context; any bit pattern is a valid `[u8; N]` (stale RAM is
    // rejected by the magic and CRC check).
    let bytes = unsafe { core::ptr::read_volatile(cell.cast::<[u8; FAULT_RECORD_LEN]>()) };
    let record = decode_fault_record(&bytes);
    // SAFETY: as above.
    unsafe {
        core::ptr::write_volatile(cell.cast::<[u8; FAULT_RECORD_LEN]>(), [0; FAULT_RECORD_LEN])
    };
    record
}

/// Sends a fault frame on the telemetry channel, best effort.
pub fn send_fault_frame(record: &FaultRecord) {
    let mut frame = [0u8; MAX_FRAME_LEN];
    let seq = NEXT_SEQ.load(Ordering::Relaxed);
    NEXT_SEQ.store(seq.wrapping_add(1), Ordering::Relaxed);
    let len = encode(seq, &Frame::Fault(*record), &mut frame);
    // SAFETY: channel 0 was initialised by `rtt_init!` at boot (a fault before that finds no
    // control block and `conjure` returns None); the interrupted writer, if any, can no longer
    // run, so this is the only writer.
    if let Some(mut channel) = unsafe { rtt_target::UpChannel::conjure(0) } {
        channel.write(frame.get(..len).unwrap_or(&[]));
    }
}

/// Safe state, record, frame, then wait for the watchdog.
fn fail(kind: FaultKind, pc: u32, lr: u32, xpsr: u32, line: u32) -> ! {
    cortex_m::interrupt::disable();
    hw::remove_drive();
    // First what is known without touching the fault status registers, so that a record
    // exists even if reading them faults (or, on the emulated rig, is not implemented).
    let mut record = FaultRecord {
        kind,
        pc,
        lr,
        xpsr,
        cfsr: 0,
        hfsr: 0,
        mmfar: 0,
        bfar: 0,
        tick: TICK.load(Ordering::Relaxed),
        line,
    };
    store(&record);
    record.cfsr = scb::CFSR.read();
    record.hfsr = scb::HFSR.read();
    record.mmfar = scb::MMFAR.read();
    record.bfar = scb::BFAR.read();
    store(&record);
    send_fault_frame(&record);
    loop {
        // Keep the gates off (nothing else runs) until the watchdog resets the MCU.
        hw::remove_drive();
        cortex_m::asm::nop();
    }
}

/// Writes `record` to the RAM that survives a reset.
fn store(record: &FaultRecord) {
    let bytes = encode_fault_record(record);
    // SAFETY: interrupts are off and the caller never returns: the only access.
    unsafe {
        core::ptr::write_volatile(
            IOHIL_FAULT_RECORD.0.get().cast::<[u8; FAULT_RECORD_LEN]>(),
            bytes,
        )
    };
}

/// A bring-up step failed: never drive, record it (kind `init_failure`, `line` = step).
pub fn init_failed(step: hw::InitError) -> ! {
    fail(FaultKind::InitFailure, 0, 0, 0, step as u32)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let line = info.location().map_or(0, |l| l.line());
    fail(FaultKind::Panic, 0, 0, 0, line)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    fail(
        FaultKind::HardFault,
        frame.pc(),
        frame.lr(),
        frame.xpsr(),
        0,
    )
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    // The exception number (negative for core exceptions) in `line`, as two's complement.
    fail(FaultKind::UnexpectedInterrupt, 0, 0, 0, irqn as i32 as u32)
}
