//! The virtual bench's physical world, owned by the virtual load controller: the plant model
//! (battery, bridge, motor, gearbox, needle, bone, operator) stepped in real time, the board's
//! pins reached over the [`super::wires`], and the load's recorder.
//!
//! A real load controller plays only the bone and the operator push; the board's battery and
//! motor are real. The virtual one plays all of it from three uploaded tables (see
//! [`ProfileTables`]) so the whole bench path runs without hardware.

use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::wires::{self, Msg};
use crate::loadlink::protocol::LoadSample;
use crate::plant::{DriveCommand, GroundTruth, Plant, DEFAULT_STEP_S};
use crate::scenario::{Battery, Bone, Operator, Scenario, Sensor, Source};

/// Integration step of the world, ns (the sim rig's default step).
pub const STEP_NS: u64 = (DEFAULT_STEP_S * 1e9) as u64;

/// How long the world waits for the board's reply to a tick before it takes the board for
/// gone (its drive is then removed: a board that does not answer is in reset or unpowered).
pub const BOARD_REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// The board-side physics of a scenario that only a virtual controller plays (table `plant`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardPhysics {
    /// Battery.
    pub battery: Battery,
    /// Motor winding temperature, degC.
    pub motor_temperature_c: f64,
    /// Current and voltage sensors.
    pub sensor: Sensor,
    /// The output shaft locks at this time, s.
    pub lock_rotor_at_s: Option<f64>,
    /// The trial's seed (sensor noise, push phase).
    pub trial_seed: u64,
}

/// The three tables a trial uploads, as JSON: `bone` (the compiled bone profile), `push` (the
/// operator: push force, its variation, the trigger schedule), `plant` (board-side physics).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileTables {
    /// `bone`.
    pub bone: Vec<u8>,
    /// `push`.
    pub push: Vec<u8>,
    /// `plant`.
    pub plant: Vec<u8>,
}

impl ProfileTables {
    /// The tables of trial `trial` of `scenario`.
    pub fn of(scenario: &Scenario, trial: u32) -> ProfileTables {
        let physics = BoardPhysics {
            battery: scenario.battery,
            motor_temperature_c: scenario.motor_temperature_c,
            sensor: scenario.sensor,
            lock_rotor_at_s: scenario.lock_rotor_at_s,
            trial_seed: crate::rig::trial_seed(scenario.seed, trial),
        };
        // Serializing plain data structs cannot fail; an empty table would be refused at ARM.
        ProfileTables {
            bone: serde_json::to_vec(&scenario.bone).unwrap_or_default(),
            push: serde_json::to_vec(&scenario.operator).unwrap_or_default(),
            plant: serde_json::to_vec(&physics).unwrap_or_default(),
        }
    }

    /// The scenario these tables describe (ID and title are placeholders), and the trial seed.
    pub fn scenario(&self, duration_ms: u32) -> Result<(Scenario, u64), String> {
        let bone: Bone =
            serde_json::from_slice(&self.bone).map_err(|e| format!("bone table: {e}"))?;
        let operator: Operator =
            serde_json::from_slice(&self.push).map_err(|e| format!("push table: {e}"))?;
        let physics: BoardPhysics =
            serde_json::from_slice(&self.plant).map_err(|e| format!("plant table: {e}"))?;
        let finite = [
            bone.cortex.thickness_mm,
            operator.push_n,
            operator.press_s,
            physics.battery.open_circuit_v,
            physics.motor_temperature_c,
        ];
        if finite.iter().any(|v| !v.is_finite()) || physics.battery.open_circuit_v <= 0.0 {
            return Err("non-physical values in the profile tables".to_owned());
        }
        Ok((
            Scenario {
                id: "loadsim".to_owned(),
                title: "uploaded profile".to_owned(),
                description: None,
                verifies: Vec::new(),
                bone,
                operator,
                battery: physics.battery,
                motor_temperature_c: physics.motor_temperature_c,
                sensor: physics.sensor,
                lock_rotor_at_s: physics.lock_rotor_at_s,
                trials: 1,
                seed: physics.trial_seed,
                duration_s: f64::from(duration_ms) / 1000.0,
                source: Source {
                    path: "uploaded".into(),
                    sha256: String::new(),
                },
            },
            physics.trial_seed,
        ))
    }
}

/// Ground-truth instants on the controller clock.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorldTruth {
    /// Plant ground truth (times in s from the start).
    pub truth: GroundTruth,
    /// Controller clock at the start, us.
    pub t0_us: u64,
}

#[derive(Debug, Default)]
struct State {
    plant: Option<Plant>,
    running: bool,
    /// Controller clock at START, us.
    t0_us: u64,
    plant_steps: u64,
    duration_steps: u64,
    steps_per_sample: u64,
    drive: DriveCommand,
    new_samples: Vec<LoadSample>,
    /// Mean current over the steps since the last recorded sample.
    current_sum: f64,
    current_steps: u64,
    fault: Option<String>,
    /// Plant step of the last recorded sample.
    last_record_step: Option<u64>,
    /// Fault injection: playback never ends by itself (a load that overruns its duration).
    endless: bool,
    board_connected: bool,
    max_lag: Duration,
    /// World time, ns.
    world_ns: u64,
}

impl State {
    fn trigger(&self) -> bool {
        match (&self.plant, self.running) {
            (Some(plant), true) => plant.trigger_pressed_at(plant.time_s()),
            _ => false,
        }
    }

    fn record(&mut self) {
        let Some(plant) = &self.plant else { return };
        let trigger = self.running && plant.trigger_pressed_at(plant.time_s());
        let current = if self.current_steps > 0 {
            self.current_sum / self.current_steps as f64
        } else {
            plant.current_a()
        };
        self.new_samples.push(LoadSample {
            // The controller numbers its recording itself.
            seq: 0,
            t_us: self.t0_us + self.plant_steps * STEP_NS / 1000,
            depth_mm: plant.depth_mm(),
            speed_rpm: plant.output_speed_rpm(),
            load_torque_nmm: plant.load_torque_nmm(),
            push_n: if self.running { plant.push_n() } else { 0.0 },
            trigger,
            supply_current_a: current,
            supply_v: plant.terminal_v(),
        });
        self.current_sum = 0.0;
        self.current_steps = 0;
        self.last_record_step = Some(self.plant_steps);
    }

    /// Ends playback and records the trigger's release: one step after the last sample when
    /// that was taken at this very step, so that sample times stay strictly increasing.
    fn end_playback(&mut self) {
        self.running = false;
        if self.last_record_step == Some(self.plant_steps) {
            self.plant_steps += 1;
        }
        self.record();
    }

    /// One world step.
    fn step(&mut self) {
        self.world_ns += STEP_NS;
        if !self.running {
            return;
        }
        let Some(plant) = &mut self.plant else { return };
        plant.step(self.drive);
        self.current_sum += plant.current_a();
        self.current_steps += 1;
        self.plant_steps += 1;
        if self
            .plant_steps
            .is_multiple_of(self.steps_per_sample.max(1))
        {
            self.record();
        }
        if self.plant_steps >= self.duration_steps {
            // The profile's end: trigger released, push removed, recorded.
            self.end_playback();
        }
    }

    fn advance_to(&mut self, target_ns: u64) {
        while self.world_ns < target_ns {
            self.step();
        }
    }

    fn adc(&mut self) -> (u32, u32) {
        match &mut self.plant {
            Some(plant) => (
                u32::from(plant.sample_current_counts()),
                u32::from(plant.sample_voltage_counts()),
            ),
            None => (0, 0),
        }
    }
}

/// The running world: a thread stepping the plant in real time, the board's wires listener,
/// and the controls the load controller's protocol server calls.
#[derive(Debug)]
pub struct World {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in the world thread would poison the lock; the state is still the best record.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl World {
    /// Starts the world; the board connects to `listener`.
    pub fn spawn(listener: UnixListener) -> std::io::Result<World> {
        listener.set_nonblocking(true)?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("loadsim-world".into())
                .spawn(move || run(&state, &listener, &stop))?
        };
        Ok(World {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Loads a trial: validates the tables and puts a plant at rest.
    pub fn arm(
        &self,
        tables: &ProfileTables,
        rate_hz: u32,
        duration_ms: u32,
    ) -> Result<(), String> {
        let (scenario, seed) = tables.scenario(duration_ms)?;
        if !(1..=100_000).contains(&rate_hz) {
            return Err(format!("sample rate {rate_hz} Hz"));
        }
        let plant = Plant::new(&scenario, seed, STEP_NS as f64 * 1e-9);
        let mut st = lock(&self.state);
        st.plant = Some(plant);
        st.running = false;
        st.plant_steps = 0;
        st.duration_steps = if st.endless {
            u64::MAX
        } else {
            u64::from(duration_ms) * 1_000_000 / STEP_NS
        };
        st.steps_per_sample = (1e9 / f64::from(rate_hz) / STEP_NS as f64).round().max(1.0) as u64;
        st.new_samples.clear();
        st.fault = None;
        st.last_record_step = None;
        Ok(())
    }

    /// Starts playback; the controller clock reads `now_us`.
    pub fn start(&self, now_us: u64) -> Result<(), String> {
        let mut st = lock(&self.state);
        if st.plant.is_none() {
            return Err("no profile armed".to_owned());
        }
        st.t0_us = now_us;
        st.running = true;
        // The first sample is the state at the start.
        st.record();
        Ok(())
    }

    /// Samples recorded since the last call; whether playback runs; a load fault; the speed.
    pub fn poll(&self) -> (Vec<LoadSample>, bool, Option<String>, f64) {
        let mut st = lock(&self.state);
        let samples = std::mem::take(&mut st.new_samples);
        let speed = st.plant.as_ref().map_or(0.0, Plant::output_speed_rpm);
        (samples, st.running, st.fault.clone(), speed)
    }

    /// Ends playback: trigger released and push removed, and one last sample records it.
    pub fn stop(&self) {
        let mut st = lock(&self.state);
        if st.running {
            // Not running: the sample records the trigger released and no push.
            st.end_playback();
        }
    }

    /// Emergency stop: as [`World::stop`] (the plant has no model of the load's shaft brake;
    /// the board's drive is the board's).
    pub fn estop(&self) {
        self.stop();
    }

    /// Fault injection: playback ignores the armed duration and never ends by itself.
    pub fn set_endless(&self, endless: bool) {
        lock(&self.state).endless = endless;
    }

    /// Ground truth so far.
    pub fn truth(&self) -> WorldTruth {
        let st = lock(&self.state);
        WorldTruth {
            truth: st
                .plant
                .as_ref()
                .map(Plant::ground_truth)
                .unwrap_or_default(),
            t0_us: st.t0_us,
        }
    }

    /// Whether a board is on the wires, and the largest lag behind real time so far.
    pub fn board_connected(&self) -> (bool, Duration) {
        let st = lock(&self.state);
        (st.board_connected, st.max_lag)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Controller clock (us since `origin`).
pub fn clock_us(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

struct Board {
    stream: UnixStream,
    period_ns: f64,
    /// World time of the board's tick 0 (its connection), ns.
    origin_ns: u64,
    ticks: u64,
}

impl Board {
    fn tick_at(&self, k: u64) -> u64 {
        self.origin_ns + (k as f64 * self.period_ns).round() as u64
    }
}

fn accept(listener: &UnixListener, st: &Mutex<State>) -> Option<Board> {
    let (mut stream, _) = listener.accept().ok()?;
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(BOARD_REPLY_TIMEOUT)).ok()?;
    match wires::recv(&mut stream) {
        Ok(Msg::Hello { tick_period_ns }) => {
            let mut st = lock(st);
            st.board_connected = true;
            Some(Board {
                stream,
                period_ns: tick_period_ns,
                origin_ns: st.world_ns,
                ticks: 0,
            })
        }
        _ => None,
    }
}

fn run(state: &Mutex<State>, listener: &UnixListener, stop: &AtomicBool) {
    let mut wall_origin = Instant::now();
    let mut board: Option<Board> = None;
    while !stop.load(Ordering::Relaxed) {
        if board.is_none() {
            board = accept(listener, state);
        }
        let Some(b) = &mut board else {
            // No board: the world runs on in 1 ms steps.
            let world_ns = {
                let mut st = lock(state);
                let target = st.world_ns + 1_000_000;
                st.advance_to(target);
                st.world_ns
            };
            pace(state, &mut wall_origin, world_ns);
            continue;
        };
        let start = b.tick_at(b.ticks);
        let end = b.tick_at(b.ticks + 1);
        let n = driver_core::sensing::SAMPLES_PER_TICK;
        let (mut current_sum, mut voltage_sum) = (0u32, 0u32);
        let (trigger, world_ns) = {
            let mut st = lock(state);
            for j in 0..n {
                // Mid-period of each PWM period of the board's clock (its CH4 compare).
                let at =
                    start + ((f64::from(j) + 0.5) * (end - start) as f64 / f64::from(n)) as u64;
                st.advance_to(at);
                let (c, v) = st.adc();
                current_sum = current_sum.saturating_add(c);
                voltage_sum = voltage_sum.saturating_add(v);
            }
            st.advance_to(end);
            (st.trigger(), st.world_ns)
        };
        b.ticks += 1;
        pace(state, &mut wall_origin, world_ns);
        let tick = Msg::Tick {
            current_sum,
            voltage_sum,
            samples: n,
            trigger,
        };
        let reply = wires::send(&mut b.stream, tick).and_then(|()| wires::recv(&mut b.stream));
        let mut st = lock(state);
        match reply {
            Ok(Msg::Drive {
                duty_permille,
                brake,
                off,
            }) => {
                st.drive = if off {
                    DriveCommand::default()
                } else {
                    DriveCommand {
                        duty: f64::from(duty_permille) / f64::from(driver_core::DUTY_FULL_SCALE),
                        brake,
                    }
                };
                if off {
                    st.board_connected = false;
                    board = None;
                }
            }
            _ => {
                // The board is gone (reset, halted, unplugged): its pins float, the bridge is off.
                st.drive = DriveCommand::default();
                st.board_connected = false;
                board = None;
            }
        }
    }
}

/// How far the world may fall behind the wall clock before it stops trying to catch up.
pub const MAX_CATCH_UP: Duration = Duration::from_millis(20);

/// Sleeps until the wall clock catches up with world time; records how far behind it fell.
/// Further behind than [`MAX_CATCH_UP`] (an overloaded host), the world's time base moves
/// instead: catching up would mean a burst of ticks with the state's lock held back to back,
/// starving the protocol server, and the physics does not depend on the wall clock (the board
/// is in lockstep with it).
fn pace(state: &Mutex<State>, wall_origin: &mut Instant, world_ns: u64) {
    let due = *wall_origin + Duration::from_nanos(world_ns);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
        return;
    }
    let behind = now - due;
    {
        let mut st = lock(state);
        st.max_lag = st.max_lag.max(behind);
    }
    if behind > MAX_CATCH_UP {
        *wall_origin += behind;
    }
    std::thread::yield_now();
}
