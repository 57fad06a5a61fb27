//! Rigs: what runs a trial of a scenario and returns its [`Trace`].
//!
//! One trait, several implementations; the rest of the harness does not care which it has.
//! This module owns the trait and the rig registry. Physics lives in [`crate::plant`],
//! requirement checks in [`crate::verdict`].

pub mod bench;
pub mod emu;
pub mod record;
pub mod sim;

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::trace::{FirmwareIdentity, Trace};

pub use emu::EmuRig;
pub use sim::SimRig;

/// What a rig says about itself for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RigIdentity {
    /// Rig kind: `sim`, `emu`, `bench`.
    pub kind: String,
    /// Rig instance ID.
    pub id: String,
    /// Firmware it runs.
    pub firmware: FirmwareIdentity,
    /// Free-form details (integration step, probe serial, ...).
    pub details: Vec<(String, String)>,
}

/// A rig fault: the trial could not be run or completed. Reported as INCONCLUSIVE, never as a
/// firmware verdict.
#[derive(Debug, thiserror::Error)]
#[error("rig {rig} failed on scenario {scenario} trial {trial}: {message}")]
pub struct RigError {
    /// Rig kind.
    pub rig: String,
    /// Scenario ID.
    pub scenario: String,
    /// Trial index.
    pub trial: u32,
    /// What went wrong.
    pub message: String,
}

/// A test rig.
pub trait Rig {
    /// Identity for the report.
    fn identity(&self) -> RigIdentity;

    /// Runs trial `trial` of `scenario`.
    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError>;

    /// Takes back a trace the caller is done with, so that the rig can record its next trial
    /// into the same memory (a trial's columns are a few hundred KiB; allocating and faulting
    /// them in afresh costs the sim rig a fifth of its time). The default drops it.
    fn recycle(&mut self, trace: Trace) {
        drop(trace);
    }

    /// Why the rig stopped the run (a signal, a timeout, a lost link, a load fault), once it
    /// has; the run then records no further trial.
    fn aborted(&self) -> Option<String> {
        None
    }
}

/// A simulated or emulated rig whose run also ends between two trials when `abort` is
/// requested (SIGINT, SIGTERM, SIGHUP). Such a rig has no hardware to bring to a safe state:
/// the trial under way completes, nothing further runs, and the run's results say INCOMPLETE.
pub struct Interruptible {
    /// The rig that runs the trials.
    pub inner: Box<dyn Rig>,
    /// Set by the signal handlers.
    pub abort: std::sync::Arc<crate::safety::Abort>,
}

impl Rig for Interruptible {
    fn identity(&self) -> RigIdentity {
        self.inner.identity()
    }

    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError> {
        self.inner.run_trial(scenario, trial)
    }

    fn recycle(&mut self, trace: Trace) {
        self.inner.recycle(trace);
    }

    fn aborted(&self) -> Option<String> {
        self.inner.aborted().or_else(|| self.abort.reason())
    }
}

/// Rig kinds the command line accepts.
pub const RIG_KINDS: &[&str] = &["sim", "emu", "bench"];

/// Seed of trial `trial` of a scenario with base seed `seed`.
pub fn trial_seed(seed: u64, trial: u32) -> u64 {
    seed.wrapping_add(u64::from(trial))
}
