//! The device under test as the bench rig sees it: a core behind a debug probe.
//!
//! The bench talks to the board only through [`Target`], so that tests can put a fake target
//! (the control core running in real time, emitting the real telemetry frames) where the probe
//! would be. The real implementation ([`super::probe::ProbeTarget`]) is a thin layer over
//! probe-rs; everything that decides a verdict lives above this trait and is tested with the
//! fake.

use std::path::Path;

use driver_core::telemetry::FaultRecord;

/// What went wrong talking to the target. Before a run: exit code 2. During a trial: the trial
/// is INCONCLUSIVE (a rig fault), unless the firmware itself faulted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    /// No probe matches the selector (or none is attached at all).
    #[error("no debug probe found: {0}")]
    NoProbe(String),
    /// The probe could not be opened or attached to the chip.
    #[error("cannot attach to the target: {0}")]
    Attach(String),
    /// Flashing or verifying failed.
    #[error("flashing failed: {0}")]
    Flash(String),
    /// The RTT control block was not found or could not be read.
    #[error("RTT: {0}")]
    Rtt(String),
    /// The probe or the target stopped answering during a run.
    #[error("target lost: {0}")]
    Lost(String),
}

/// The core's state as the probe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreState {
    /// Running (or sleeping between interrupts).
    Running,
    /// Halted: by a breakpoint, a debugger request, or in an exception handler the probe
    /// recognises. `pc` is the program counter.
    Halted {
        /// Program counter.
        pc: u32,
        /// Why, as the probe reports it.
        reason: String,
    },
    /// Locked up (a fault inside the HardFault handler).
    LockedUp,
}

/// What one [`Target::poll`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetPoll {
    /// Bytes from RTT up channel 0 (`telemetry`).
    pub telemetry: Vec<u8>,
    /// Bytes from RTT up channel 1 (`log`).
    pub log: Vec<u8>,
    /// The core's state, when it is not running.
    pub fault: Option<CoreState>,
}

/// Flash progress, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashProgress {
    /// Erasing, bytes done of total.
    Erasing(u64, u64),
    /// Programming, bytes done of total.
    Programming(u64, u64),
    /// Verifying the written image.
    Verifying,
}

/// The device under test behind a debug probe.
pub trait Target: Send {
    /// Identification for the report: probe, probe serial, chip, and so on.
    fn describe(&self) -> Vec<(String, String)>;

    /// Writes `elf` to flash and verifies it. Leaves the core halted.
    fn flash(
        &mut self,
        elf: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<(), TargetError>;

    /// Resets the core and lets it run, then attaches RTT once the firmware has set its control
    /// block up. The firmware's boot frame follows in the next polls.
    fn reset_and_run(&mut self) -> Result<(), TargetError>;

    /// Reads what the RTT up channels hold now, and whether the core still runs.
    fn poll(&mut self) -> Result<TargetPoll, TargetError>;

    /// The firmware's fault record in RAM, if it left a valid one. The record survives
    /// resets (it is in uninitialised RAM) until the firmware's next boot takes it.
    fn fault_record(&mut self) -> Result<Option<FaultRecord>, TargetError>;

    /// Erases the fault record (after the rig has read it), so that the next boot does not
    /// report, as its own, a fault that belongs to an earlier trial.
    fn clear_fault_record(&mut self) -> Result<(), TargetError>;

    /// The rig's safe state for the motor: the core is reset and held halted, so every pin,
    /// the PWM outputs included, returns to its reset state (high impedance; the board's
    /// gate-driver pull-downs keep the bridge off).
    fn safe_state(&mut self) -> Result<(), TargetError>;
}
