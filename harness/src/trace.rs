//! The trace of one trial: what every rig produces, on one time base.
//!
//! Two kinds of content are kept apart: ground truth from the plant (or the load's own
//! sensors on the bench) and what the firmware said (its state, commands and events). Verdicts
//! are computed from both by [`crate::verdict`]; this module only holds and stores them.
//! The on-disk form is versioned by [`TRACE_FORMAT_VERSION`].

use serde::{Deserialize, Serialize};

use crate::plant::GroundTruth;

/// Version of the trace file format.
pub const TRACE_FORMAT_VERSION: u32 = 1;

/// Who reported an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    /// The firmware (its telemetry).
    Firmware,
    /// The plant or load (ground truth).
    Plant,
    /// The harness or rig itself.
    Rig,
}

/// One time-stamped event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Time, s.
    pub t_s: f64,
    /// Reporter.
    pub source: EventSource,
    /// Event name (`breakthrough`, `motor_off`, `state`, `t_bt`, ...).
    pub kind: String,
    /// Detail (new state name, stop reason, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Samples at the control tick rate, one column per quantity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Time, s.
    pub t_s: Vec<f64>,
    /// Needle tip depth, mm (truth).
    pub depth_mm: Vec<f64>,
    /// Output shaft speed, rpm (truth).
    pub speed_rpm: Vec<f64>,
    /// Output shaft revolutions since start (truth).
    pub revolutions: Vec<f64>,
    /// Load torque on the output shaft, N*mm (truth).
    pub load_torque_nmm: Vec<f64>,
    /// Mean motor current over the tick, A (truth).
    pub current_a: Vec<f64>,
    /// Battery terminal voltage, V (truth).
    pub battery_v: Vec<f64>,
    /// Operator push force, N (truth).
    pub push_n: Vec<f64>,
    /// Trigger level at the firmware input.
    pub trigger: Vec<bool>,
    /// Motor current the firmware measured, mA.
    pub measured_current_ma: Vec<i32>,
    /// Battery voltage the firmware measured, mV.
    pub measured_battery_mv: Vec<i32>,
    /// PWM duty commanded, per mille.
    pub duty_permille: Vec<u16>,
    /// Brake commanded.
    pub brake: Vec<bool>,
    /// Firmware state code.
    pub state: Vec<u8>,
    /// CPU cycles of the firmware's previous control interrupt, as its telemetry reports them
    /// (rigs that run the board firmware; empty on `sim`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isr_cycles: Vec<u32>,
}

impl Samples {
    /// Empties every column, keeping its memory.
    pub fn clear(&mut self) {
        self.columns(|c| c.clear());
        self.isr_cycles.clear();
    }

    /// Makes room for `ticks` more samples in every column (`isr_cycles` excepted: only the
    /// rigs that run the board fill it). Untouched room costs address space, not memory.
    pub fn reserve(&mut self, ticks: usize) {
        self.columns(|c| c.reserve(ticks));
    }

    /// Applies `f` to every column but `isr_cycles`.
    fn columns(&mut self, mut f: impl FnMut(&mut dyn Column)) {
        let Samples {
            t_s,
            depth_mm,
            speed_rpm,
            revolutions,
            load_torque_nmm,
            current_a,
            battery_v,
            push_n,
            trigger,
            measured_current_ma,
            measured_battery_mv,
            duty_permille,
            brake,
            state,
            isr_cycles: _,
        } = self;
        for c in [
            t_s,
            depth_mm,
            speed_rpm,
            revolutions,
            load_torque_nmm,
            current_a,
            battery_v,
            push_n,
        ] {
            f(c);
        }
        f(trigger);
        f(brake);
        f(measured_current_ma);
        f(measured_battery_mv);
        f(duty_permille);
        f(state);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.t_s.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.t_s.is_empty()
    }
}

/// What [`Samples::columns`] does to a column, whatever its element type.
trait Column {
    fn clear(&mut self);
    fn reserve(&mut self, additional: usize);
}

impl<T> Column for Vec<T> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn reserve(&mut self, additional: usize) {
        Vec::reserve(self, additional);
    }
}

/// Identity of the firmware that produced a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FirmwareIdentity {
    /// What ran: `driver-core (host build)` on the sim rig, the ELF path elsewhere.
    pub kind: String,
    /// Version.
    pub version: String,
    /// Whether the shipped tuning ran (false for deliberately modified controllers in tests).
    pub shipped_config: bool,
}

/// The trace of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// [`TRACE_FORMAT_VERSION`].
    pub format_version: u32,
    /// Scenario ID.
    pub scenario_id: String,
    /// Trial index (0-based).
    pub trial: u32,
    /// Seed of this trial's random streams.
    pub seed: u64,
    /// Rig that produced it.
    pub rig: String,
    /// Firmware that ran.
    pub firmware: FirmwareIdentity,
    /// Sample period, s.
    pub sample_period_s: f64,
    /// Plant integration step, s (sim only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration_step_s: Option<f64>,
    /// Samples.
    pub samples: Samples,
    /// Events in time order.
    pub events: Vec<TraceEvent>,
    /// Ground truth summary.
    pub truth: GroundTruth,
    /// Rig anomalies (lost samples, link faults); any makes the trial's verdicts INCONCLUSIVE.
    pub anomalies: Vec<String>,
    /// Faults the firmware itself recorded (panic, HardFault: its fault record or fault frame);
    /// any makes every verdict of the trial FAIL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub firmware_faults: Vec<String>,
    /// How the board's clock was mapped onto the load's (bench rig only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<crate::rig::bench::align::Alignment>,
}

impl Trace {
    /// Events of `kind` from `source`.
    pub fn events_of<'a>(
        &'a self,
        source: EventSource,
        kind: &'a str,
    ) -> impl Iterator<Item = &'a TraceEvent> + 'a {
        self.events
            .iter()
            .filter(move |e| e.source == source && e.kind == kind)
    }

    /// Time of the first event of `kind` from `source`, s.
    pub fn first_event(&self, source: EventSource, kind: &str) -> Option<f64> {
        self.events_of(source, kind).next().map(|e| e.t_s)
    }
}
