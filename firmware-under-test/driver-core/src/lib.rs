//! Control core of the powered intraosseous needle driver.
//!
//! `#![no_std]`, allocation-free, panic-free and integer-only, so that the host build (the
//! `sim` rig), the emulated ELF and the board compute bit-identical results. The board
//! firmware calls [`Controller::step`] once per control tick ([`TICK_HZ`]) with the mean
//! motor current and the battery terminal voltage measured over that tick, and applies the
//! returned PWM duty and brake command.
//!
//! # State machine
//!
//! ```text
//! Idle --press--> Blanking --50 ms--> SoftTissue --engaged--> Cortex --pop--> Braking --> Done
//!                    |                                          |   \--missed pop fallback--^
//!                    +-- low battery --> Fault                 any running state:
//!                                                              release -> Idle (braked)
//!                                                              stall / over-time -> Fault
//! ```
//! Every stop shorts the winding (brake), which stops the needle in about 17 ms instead of
//! about 200 ms of coasting. Faults and stops latch until the trigger is released; a new run
//! needs a fresh press (SR-07 no auto-restart, SR-09).
//!
//! # Breakthrough detector
//!
//! Current is the signal: at the pop the load torque falls by 50-78 % while the shaft speed
//! rises only 8-15 %. The motor current then falls towards its new level with the mechanical
//! time constant (about 9 ms). The detector works on the *load current*: the filtered current
//! minus a baseline learnt while free-running in soft tissue, so that the no-load current and
//! a current-sensor offset cancel, and a gain error scales both sides of every comparison.
//!
//! - `fast`: first-order low-pass of the current, alpha 1/4 (time constant about 3.5 ms),
//!   enough to take the per-tick noise down without hiding a 9 ms fall.
//! - reference: the largest `fast` value between [`REF_WINDOW_NEWEST_MS`] and
//!   [`REF_WINDOW_OLDEST_MS`] ago, i.e. the level just before a fall that started up to 16 ms ago.
//! - a pop candidate is a tick where the load current has fallen by at least [`DROP_PERCENT`]
//!   of the reference load and by at least [`MIN_DROP_MA`]; [`CONFIRM_TICKS`] consecutive
//!   candidates detect breakthrough.
//!
//! Tuning. The weakest pop of the reference profiles (osteoporotic tibia) is a fall of about
//! 50 % of the load current; with the 9 ms mechanical time constant a 25 % fall is reached
//! about 6 ms after the fracture, so detection (with filter lag and confirmation) lands about
//! 10-12 ms after `t_bt`, inside SR-01's 15 ms P99. What must *not* trigger: a +-30 %
//! push oscillation at up to 5 Hz moves the load current by at most about 15 % within the
//! 16 ms window, and a -40 % push step made by a hand (rise time 50 ms or more) by at most
//! about 20 %. The 25 % threshold sits between the two. A step faster than a hand can make
//! would be indistinguishable from a pop on current alone; the scenario format bounds it.
//!
//! Arming (SR-06): detection runs only in `Cortex`, entered when the load current has stayed
//! [`ENGAGE_MA`] above the baseline for [`ENGAGE_TICKS`], and never before the
//! [`BLANKING_MS`] start-up blanking has ended.
//!
//! Missed-pop fallback (SR-10): in `Cortex`, the largest slow-filtered load current is the
//! plateau; if the slow-filtered load current stays below [`MISSED_POP_PERCENT`] of it for
//! [`MISSED_POP_MS`], the motor is stopped.
//!
//! Protections: stall (current above [`STALL_PERCENT`] of the stall current estimated from
//! the measured battery voltage, for [`STALL_CONFIRM_MS`]); over-time ([`MAX_RUN_MS`] per
//! press); low battery (terminal voltage under load at the end of blanking below
//! [`MIN_LOADED_MV`]: fault; below [`WARN_LOADED_MV`]: warning event).

#![no_std]

pub mod sensing;
pub mod telemetry;

/// Version of this core, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Control tick rate, Hz. One [`Controller::step`] per tick.
pub const TICK_HZ: u32 = 1000;
/// PWM duty full scale.
pub const DUTY_FULL_SCALE: u16 = 1000;
/// Start-up blanking after motor start, ms (SR-06).
pub const BLANKING_MS: u32 = 50;
/// Start of the window over which the loaded battery voltage is averaged, ms after start.
pub const BATTERY_WINDOW_START_MS: u32 = 30;
/// Minimum terminal voltage under load to drill, mV (SR-11 limit 4.8 V plus 50 mV for the
/// voltage measurement error).
pub const MIN_LOADED_MV: i32 = 4850;
/// Below this loaded voltage a low-battery warning is raised, mV.
pub const WARN_LOADED_MV: i32 = 5200;
/// Load current above baseline that counts as cortical engagement, mA. The baseline follows
/// the slow filter until then, and the fast filter leads it by at most about half of a
/// current step, so this must stay below half of the weakest cortex's step (about 180 mA in
/// the weakest bones the fuzzer explores); soft tissue adds under 40 mA over 25 mm.
pub const ENGAGE_MA: i32 = 60;

/// Consecutive ticks above [`ENGAGE_MA`] needed to arm the detector.
pub const ENGAGE_TICKS: u16 = 10;
/// Largest plausible free-running baseline, mA (no-load current is about 150 mA).
pub const MAX_BASELINE_MA: i32 = 400;
/// Newest sample of the reference window, ms ago.
pub const REF_WINDOW_NEWEST_MS: u32 = 10;
/// Oldest sample of the reference window, ms ago.
pub const REF_WINDOW_OLDEST_MS: u32 = 16;
/// Fall of the load current, percent of the reference load, that makes a pop candidate.
pub const DROP_PERCENT: i32 = 25;
/// Smallest fall that makes a pop candidate, mA (rejects noise on a light load).
pub const MIN_DROP_MA: i32 = 30;
/// Smallest reference load for which the pop detector runs, mA.
pub const MIN_REF_LOAD_MA: i32 = 60;
/// Consecutive candidate ticks that detect the pop.
pub const CONFIRM_TICKS: u16 = 3;
/// Missed-pop fallback: slow load below this percent of the plateau ...
pub const MISSED_POP_PERCENT: i32 = 30;
/// ... for this long, ms.
pub const MISSED_POP_MS: u16 = 150;
/// Stall: current above this percent of the estimated stall current ...
pub const STALL_PERCENT: i32 = 60;
/// ... for this long, ms.
pub const STALL_CONFIRM_MS: u16 = 100;
/// Winding plus H-bridge resistance used to estimate the stall current, milliohm.
pub const STALL_RESISTANCE_MOHM: i32 = 630;
/// Longest run per trigger press, ms (SR-08 limit 10 s, less a margin).
pub const MAX_RUN_MS: u32 = 9_900;
/// Time the brake is held before the run counts as done, ms.
pub const BRAKE_HOLD_MS: u32 = 200;
/// Ticks a trigger level must be stable to count (debounce).
pub const TRIGGER_DEBOUNCE_TICKS: u8 = 2;

const HISTORY_LEN: usize = 32;

/// Controller state, as reported in telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Trigger released, motor off.
    Idle = 0,
    /// Start-up blanking: motor driven, nothing detected.
    Blanking = 1,
    /// Driving through soft tissue; baseline current being learnt.
    SoftTissue = 2,
    /// Cortical engagement: breakthrough detection armed.
    Cortex = 3,
    /// Winding shorted to stop the needle.
    Braking = 4,
    /// Run complete, brake held until the trigger is released.
    Done = 5,
    /// Protective stop, latched until the trigger is released.
    Fault = 6,
}

impl State {
    /// The state with this telemetry value.
    pub const fn from_u8(value: u8) -> Option<State> {
        match value {
            0 => Some(State::Idle),
            1 => Some(State::Blanking),
            2 => Some(State::SoftTissue),
            3 => Some(State::Cortex),
            4 => Some(State::Braking),
            5 => Some(State::Done),
            6 => Some(State::Fault),
            _ => None,
        }
    }

    /// Stable lower-case name, for logs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Blanking => "blanking",
            State::SoftTissue => "soft_tissue",
            State::Cortex => "cortex",
            State::Braking => "braking",
            State::Done => "done",
            State::Fault => "fault",
        }
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// Breakthrough detected from the current drop.
    Breakthrough = 1,
    /// Missed-pop fallback.
    MissedPop = 2,
    /// The operator released the trigger.
    TriggerReleased = 3,
    /// Stall fault.
    Stall = 4,
    /// Over-time fault.
    OverTime = 5,
    /// Low battery at start.
    LowBattery = 6,
}

impl StopReason {
    /// Whether this stop is a fault (latched in [`State::Fault`]).
    pub const fn is_fault(self) -> bool {
        matches!(
            self,
            StopReason::Stall | StopReason::OverTime | StopReason::LowBattery
        )
    }

    /// The stop reason with this telemetry value (0 is "none", so `None`).
    pub const fn from_u8(value: u8) -> Option<StopReason> {
        match value {
            1 => Some(StopReason::Breakthrough),
            2 => Some(StopReason::MissedPop),
            3 => Some(StopReason::TriggerReleased),
            4 => Some(StopReason::Stall),
            5 => Some(StopReason::OverTime),
            6 => Some(StopReason::LowBattery),
            _ => None,
        }
    }

    /// Stable lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            StopReason::Breakthrough => "breakthrough",
            StopReason::MissedPop => "missed_pop",
            StopReason::TriggerReleased => "trigger_released",
            StopReason::Stall => "stall",
            StopReason::OverTime => "over_time",
            StopReason::LowBattery => "low_battery",
        }
    }
}

/// Telemetry event bits set in [`Outputs::events`] on the tick they happen.
pub mod event {
    /// Motor started (trigger press accepted).
    pub const STARTED: u16 = 1 << 0;
    /// Blanking over, soft tissue.
    pub const BLANKING_DONE: u16 = 1 << 1;
    /// Cortical engagement: detector armed.
    pub const ARMED: u16 = 1 << 2;
    /// Breakthrough detected.
    pub const BREAKTHROUGH: u16 = 1 << 3;
    /// Missed-pop fallback fired.
    pub const MISSED_POP: u16 = 1 << 4;
    /// Motor-off command (any reason).
    pub const MOTOR_OFF: u16 = 1 << 5;
    /// Trigger release seen.
    pub const TRIGGER_RELEASED: u16 = 1 << 6;
    /// A fault latched.
    pub const FAULT: u16 = 1 << 7;
    /// Low-battery warning.
    pub const LOW_BATTERY_WARNING: u16 = 1 << 8;
    /// Run done (brake hold over).
    pub const DONE: u16 = 1 << 9;
}

/// Measurements for one control tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inputs {
    /// Tick counter of the caller (informational; the core counts its own ticks).
    pub tick: u32,
    /// Mean motor current over the tick, mA.
    pub motor_current_ma: i32,
    /// Battery terminal voltage, mV.
    pub battery_mv: i32,
    /// Trigger pressed (raw level).
    pub trigger_pressed: bool,
}

/// Commands and telemetry for one control tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outputs {
    /// PWM duty, 0..=[`DUTY_FULL_SCALE`].
    pub duty_permille: u16,
    /// Short the winding.
    pub brake: bool,
    /// State after this tick.
    pub state: State,
    /// Why the current or last run stopped, latched until the next start.
    pub stop_reason: Option<StopReason>,
    /// Event bits ([`event`]).
    pub events: u16,
    /// Filtered current, mA (detector internals, for telemetry).
    pub filtered_current_ma: i32,
    /// Learnt baseline current, mA.
    pub baseline_ma: i32,
}

/// Tunables of the controller. [`Config::DEFAULT`] is what ships; tests build weakened or
/// over-eager variants to prove the harness can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Breakthrough detection enabled.
    pub detection_enabled: bool,
    /// See [`DROP_PERCENT`].
    pub drop_percent: i32,
    /// See [`MIN_DROP_MA`].
    pub min_drop_ma: i32,
    /// See [`CONFIRM_TICKS`].
    pub confirm_ticks: u16,
    /// See [`MISSED_POP_MS`]; 0 disables the fallback.
    pub missed_pop_ms: u16,
    /// See [`STALL_CONFIRM_MS`].
    pub stall_confirm_ms: u16,
    /// See [`MAX_RUN_MS`].
    pub max_run_ms: u32,
    /// See [`MIN_LOADED_MV`].
    pub min_loaded_mv: i32,
}

impl Config {
    /// The shipped tuning.
    pub const DEFAULT: Config = Config {
        detection_enabled: true,
        drop_percent: DROP_PERCENT,
        min_drop_ma: MIN_DROP_MA,
        confirm_ticks: CONFIRM_TICKS,
        missed_pop_ms: MISSED_POP_MS,
        stall_confirm_ms: STALL_CONFIRM_MS,
        max_run_ms: MAX_RUN_MS,
        min_loaded_mv: MIN_LOADED_MV,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// The controller: all state of the core, a few hundred bytes, no heap.
#[derive(Debug, Clone)]
pub struct Controller {
    config: Config,
    state: State,
    stop_reason: Option<StopReason>,
    /// Debounced trigger level.
    trigger: bool,
    trigger_raw_count: u8,
    /// A release has been seen since the last run ended (restart needs release + press).
    rearmed: bool,
    /// Ticks since motor start.
    run_ticks: u32,
    /// Ticks in the current state.
    state_ticks: u32,
    fast_q4: i32,
    slow_q5: i32,
    history: [i32; HISTORY_LEN],
    history_pos: usize,
    baseline_ma: i32,
    battery_sum_mv: i32,
    battery_samples: i32,
    engage_count: u16,
    candidate_count: u16,
    plateau_ma: i32,
    missed_pop_count: u16,
    stall_count: u16,
}

impl Controller {
    /// A controller in [`State::Idle`], waiting for a trigger press.
    pub const fn new(config: Config) -> Self {
        Controller {
            config,
            state: State::Idle,
            stop_reason: None,
            trigger: false,
            trigger_raw_count: 0,
            rearmed: true,
            run_ticks: 0,
            state_ticks: 0,
            fast_q4: 0,
            slow_q5: 0,
            history: [0; HISTORY_LEN],
            history_pos: 0,
            baseline_ma: 0,
            battery_sum_mv: 0,
            battery_samples: 0,
            engage_count: 0,
            candidate_count: 0,
            plateau_ma: 0,
            missed_pop_count: 0,
            stall_count: 0,
        }
    }

    /// Current state.
    pub const fn state(&self) -> State {
        self.state
    }

    /// The configuration in force.
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// One control tick.
    pub fn step(&mut self, inputs: &Inputs) -> Outputs {
        let mut events = 0u16;
        let released_edge = self.debounce_trigger(inputs.trigger_pressed);
        self.filter(inputs.motor_current_ma);
        self.state_ticks = self.state_ticks.saturating_add(1);

        match self.state {
            State::Idle => {
                if !self.trigger {
                    self.rearmed = true;
                } else if self.rearmed {
                    self.start();
                    events |= event::STARTED;
                }
            }
            State::Blanking | State::SoftTissue | State::Cortex => {
                self.run_ticks = self.run_ticks.saturating_add(1);
                if released_edge || !self.trigger {
                    events |= event::TRIGGER_RELEASED;
                    self.stop(StopReason::TriggerReleased, &mut events);
                    // Released already: the next press may start a new run.
                    self.state = State::Idle;
                    self.rearmed = true;
                } else {
                    self.run(inputs, &mut events);
                }
            }
            State::Braking => {
                if self.state_ticks >= BRAKE_HOLD_MS {
                    self.enter(State::Done);
                    events |= event::DONE;
                }
            }
            State::Done | State::Fault => {
                if !self.trigger {
                    self.enter(State::Idle);
                    self.rearmed = true;
                }
            }
        }
        if released_edge && events & event::TRIGGER_RELEASED == 0 {
            events |= event::TRIGGER_RELEASED;
        }
        self.outputs(events)
    }

    fn outputs(&self, events: u16) -> Outputs {
        let driving = matches!(
            self.state,
            State::Blanking | State::SoftTissue | State::Cortex
        );
        Outputs {
            duty_permille: if driving { DUTY_FULL_SCALE } else { 0 },
            // Hold the winding shorted after any run until the next start.
            brake: !driving && self.stop_reason.is_some(),
            state: self.state,
            stop_reason: self.stop_reason,
            events,
            filtered_current_ma: self.fast_q4 >> 4,
            baseline_ma: self.baseline_ma,
        }
    }

    /// Returns true on a debounced release edge.
    fn debounce_trigger(&mut self, raw: bool) -> bool {
        if raw == self.trigger {
            self.trigger_raw_count = 0;
            return false;
        }
        self.trigger_raw_count = self.trigger_raw_count.saturating_add(1);
        if self.trigger_raw_count < TRIGGER_DEBOUNCE_TICKS {
            return false;
        }
        self.trigger_raw_count = 0;
        self.trigger = raw;
        !raw
    }

    fn filter(&mut self, current_ma: i32) {
        let sample_q4 = current_ma.saturating_mul(16);
        self.fast_q4 = self
            .fast_q4
            .saturating_add(sample_q4.saturating_sub(self.fast_q4) >> 2);
        let sample_q5 = current_ma.saturating_mul(32);
        self.slow_q5 = self
            .slow_q5
            .saturating_add(sample_q5.saturating_sub(self.slow_q5) >> 5);
        self.history_pos = (self.history_pos.wrapping_add(1)) % HISTORY_LEN;
        if let Some(slot) = self.history.get_mut(self.history_pos) {
            *slot = self.fast_q4 >> 4;
        }
    }

    /// `fast` value `ago` ticks back (0 = this tick).
    fn history_ago(&self, ago: u32) -> i32 {
        let ago = (ago as usize) % HISTORY_LEN;
        let index = (self.history_pos.wrapping_add(HISTORY_LEN).wrapping_sub(ago)) % HISTORY_LEN;
        self.history.get(index).copied().unwrap_or(0)
    }

    fn start(&mut self) {
        self.enter(State::Blanking);
        self.stop_reason = None;
        self.rearmed = false;
        self.run_ticks = 0;
        self.baseline_ma = 0;
        self.battery_sum_mv = 0;
        self.battery_samples = 0;
        self.engage_count = 0;
        self.candidate_count = 0;
        self.plateau_ma = 0;
        self.missed_pop_count = 0;
        self.stall_count = 0;
    }

    fn enter(&mut self, state: State) {
        self.state = state;
        self.state_ticks = 0;
    }

    fn stop(&mut self, reason: StopReason, events: &mut u16) {
        self.stop_reason = Some(reason);
        *events |= event::MOTOR_OFF;
        if reason.is_fault() {
            *events |= event::FAULT;
            self.enter(State::Fault);
        } else {
            self.enter(State::Braking);
        }
    }

    fn run(&mut self, inputs: &Inputs, events: &mut u16) {
        if self.run_ticks >= self.config.max_run_ms {
            self.stop(StopReason::OverTime, events);
            return;
        }
        if self.run_ticks > BLANKING_MS && self.stalled(inputs) {
            self.stop(StopReason::Stall, events);
            return;
        }
        let fast = self.fast_q4 >> 4;
        let slow = self.slow_q5 >> 5;
        match self.state {
            State::Blanking => {
                if self.run_ticks > BATTERY_WINDOW_START_MS {
                    self.battery_sum_mv = self.battery_sum_mv.saturating_add(inputs.battery_mv);
                    self.battery_samples = self.battery_samples.saturating_add(1);
                }
                if self.run_ticks >= BLANKING_MS {
                    let loaded_mv = self
                        .battery_sum_mv
                        .checked_div(self.battery_samples)
                        .unwrap_or(inputs.battery_mv);
                    if loaded_mv < self.config.min_loaded_mv {
                        self.stop(StopReason::LowBattery, events);
                        return;
                    }
                    if loaded_mv < WARN_LOADED_MV {
                        *events |= event::LOW_BATTERY_WARNING;
                    }
                    self.baseline_ma = slow.clamp(0, MAX_BASELINE_MA);
                    self.enter(State::SoftTissue);
                    *events |= event::BLANKING_DONE;
                }
            }
            State::SoftTissue => {
                if fast.saturating_sub(self.baseline_ma) >= ENGAGE_MA {
                    self.engage_count = self.engage_count.saturating_add(1);
                    if self.engage_count >= ENGAGE_TICKS {
                        self.enter(State::Cortex);
                        *events |= event::ARMED;
                    }
                } else {
                    self.engage_count = 0;
                    self.track_baseline(slow);
                }
            }
            State::Cortex => {
                let slow_load = slow.saturating_sub(self.baseline_ma);
                self.plateau_ma = self.plateau_ma.max(slow_load);
                if self.config.detection_enabled && self.pop_detected(fast) {
                    *events |= event::BREAKTHROUGH;
                    self.stop(StopReason::Breakthrough, events);
                    return;
                }
                if self.missed_pop(slow_load) {
                    *events |= event::MISSED_POP;
                    self.stop(StopReason::MissedPop, events);
                }
            }
            _ => {}
        }
    }

    /// Follows the free-running current in soft tissue (soft-tissue friction grows with depth).
    /// It stops following as soon as the load current is [`ENGAGE_MA`] above it, which a
    /// cortical contact reaches within a few ms; the slow filter lags that rise by tens of ms.
    fn track_baseline(&mut self, slow: i32) {
        self.baseline_ma = slow.clamp(0, MAX_BASELINE_MA);
    }

    fn pop_detected(&mut self, fast: i32) -> bool {
        let mut reference = i32::MIN;
        let mut ago = REF_WINDOW_NEWEST_MS;
        while ago <= REF_WINDOW_OLDEST_MS {
            reference = reference.max(self.history_ago(ago));
            ago = ago.saturating_add(1);
        }
        let reference_load = reference.saturating_sub(self.baseline_ma);
        let load = fast.saturating_sub(self.baseline_ma);
        let drop = reference_load.saturating_sub(load);
        let candidate = reference_load >= MIN_REF_LOAD_MA
            && drop >= self.config.min_drop_ma
            && drop.saturating_mul(100) >= reference_load.saturating_mul(self.config.drop_percent);
        if candidate {
            self.candidate_count = self.candidate_count.saturating_add(1);
        } else {
            self.candidate_count = 0;
        }
        self.candidate_count >= self.config.confirm_ticks
    }

    fn missed_pop(&mut self, slow_load: i32) -> bool {
        if self.config.missed_pop_ms == 0 || self.plateau_ma < MIN_REF_LOAD_MA {
            return false;
        }
        if slow_load.saturating_mul(100) < self.plateau_ma.saturating_mul(MISSED_POP_PERCENT) {
            self.missed_pop_count = self.missed_pop_count.saturating_add(1);
        } else {
            self.missed_pop_count = 0;
        }
        self.missed_pop_count >= self.config.missed_pop_ms
    }

    fn stalled(&mut self, inputs: &Inputs) -> bool {
        // Stall current estimated from the measured terminal voltage at full duty.
        let stall_ma = inputs
            .battery_mv
            .saturating_mul(1000)
            .checked_div(STALL_RESISTANCE_MOHM)
            .unwrap_or(i32::MAX);
        let fast = self.fast_q4 >> 4;
        if fast.saturating_mul(100) >= stall_ma.saturating_mul(STALL_PERCENT) {
            self.stall_count = self.stall_count.saturating_add(1);
        } else {
            self.stall_count = 0;
        }
        self.stall_count >= self.config.stall_confirm_ms
    }
}

#[cfg(test)]
mod tests;
