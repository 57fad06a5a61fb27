//! Development tool: runs fuzz cases with several controller tunings at once against one plant
//! per case, to compare breakthrough detectors over a million bones in minutes. driver-core
//! 0.3's trend-step test was found and tuned with it.
//!
//! Until a controller stops the motor it drives exactly as one that never detects (full duty
//! while the trigger is held), so the plant's trajectory up to a tuning's first stop is the same
//! for every tuning: the plant follows a controller with detection and the missed-pop fallback
//! disabled, every tuning is fed the same measured inputs, and each one's first motor-off is
//! recorded against the true breakthrough instant. A case ends 300 ms after `t_bt`, or 16 ms
//! after it once every tuning has stopped. What happens after a stop (braking, overshoot,
//! far-cortex contact) is not simulated here: a tuning that looks right is then confirmed closed
//! loop (`iohil fuzz`, or the `legacy_campaign` example with that tuning).
//!
//!     cargo run --release -p iohil --example detector_sweep -- SEED FROM TO [--jobs J] \
//!         [--list N] [--cases-file F] [--scenarios FILE.yaml...] [--after-ms MS] [--dump DIR] \
//!         TUNING...
//!
//! A TUNING is `NAME[:key=value,...]`: the shipped `Config::DEFAULT` with the fields `set`
//! below names changed (`default` alone is the shipped core); or `NAME:x:key=value,...`: an
//! experimental detector in floating point ([`Experiment`]: a least-squares fit of a polynomial
//! trend plus a low-passed step) beside the shipped state machine, for trying a detector before
//! writing it in integers; with `probe=1` it never stops and only records its largest score
//! before the pop and within 15 ms after it (score 1 = at its thresholds), which shows the
//! margin between nominal insertions and the weakest pops. Per tuning the tool prints premature
//! stops (nominal push, push variation), latencies and their slowest cases with the torque drop
//! at the pop, and the cases not stopped within 300 ms. `--cases-file F` reads the case indices
//! from F instead of FROM..TO; `--scenarios` runs those scenario files instead (case k is the
//! k-th file, SEED FROM TO are then ignored), e.g. the shrunk cases of `iohil falsify`;
//! `--after-ms` runs a case up to that long after `t_bt` (default 300); `--dump DIR` writes one CSV per case (inputs, load estimate,
//! push, torque, depth, speed, and the first experiment's internals) for plotting.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a development tool: bad arguments stop it with a message"
)]

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use driver_core::{event, sensing, Config, Controller, Inputs, StopReason, TICK_HZ};
use iohil::fuzz::{case_at, case_seed, scenario_yaml};
use iohil::plant::{DriveCommand, Plant, TickPlan, SIM_STEP_S};
use iohil::rig::trial_seed;
use iohil::scenario::load::{load_profiles, load_requirements, load_scenario_str};

fn set(config: &mut Config, key: &str, value: &str) {
    let int = || value.parse::<i32>().expect("integer value");
    let small = || value.parse::<u16>().expect("small integer value");
    match key {
        "trend" => config.trend_percent = int(),
        "step" => config.step_test = value == "1",
        "spct" => config.step_drop_percent = int(),
        "smin" => config.step_min_drop_ma = int(),
        "snoise" => config.step_noise_factor_q4 = int(),
        "sconfirm" => config.step_confirm_ticks = small(),
        "swing" => config.swing_percent = int(),
        "plateau" => config.plateau_test = value == "1",
        "ppct" => config.plateau_drop_percent = int(),
        "psteady" => config.plateau_steady_percent = int(),
        "pnoise" => config.plateau_noise_factor_q4 = int(),
        "psnoise" => config.plateau_steady_noise_q4 = int(),
        "pconfirm" => config.plateau_confirm_ticks = small(),
        "psharp" => config.plateau_sharp_percent = int(),
        "pgate" => config.plateau_gate_percent = int(),
        "level" => config.level_test = value == "1",
        "lpct" => config.level_drop_percent = int(),
        "lsteady" => config.level_steady_percent = int(),
        "lsnoise" => config.level_steady_noise_q4 = int(),
        "lnoise" => config.level_noise_factor_q4 = int(),
        "pct" => config.drop_percent = int(),
        "min_drop" => config.min_drop_ma = int(),
        "noise" => config.noise_factor_q4 = int(),
        "confirm" => config.confirm_ticks = small(),
        "span" => config.lead_span_ticks = small(),
        "newest" => config.ref_newest_ms = small(),
        "oldest" => config.ref_oldest_ms = small(),
        "engage" => config.engage_ma = int(),
        "shift" => config.load_filter_shift = value.parse().expect("shift"),
        "missed_ms" => config.missed_pop_ms = small(),
        "missed_pct" => config.missed_pop_percent = int(),
        "mean" => config.reference_mean = value == "1",
        _ => panic!("unknown key `{key}`"),
    }
}

/// An experimental detector in f64 (exploration only): a least-squares fit of a polynomial
/// trend plus a filtered step `k` ticks ago over the last `w` load estimates.
#[derive(Debug, Clone, Copy)]
struct Experiment {
    w: usize,
    k: usize,
    order: usize,
    pct: f64,
    nf: f64,
    min_drop: f64,
    confirm: u32,
    skip: u32,
    decay: f64,
    /// Also fit a slope change this many ticks ago (0: none).
    kink: usize,
    /// Swing gate: the test runs only when the 8-ms means of the load over the last 512 ms
    /// (the newest 16 ms left out) span at least this percent of the reference (0: no gate).
    gate: f64,
    /// Keep the shipped detector running too (either one stops the motor).
    or: bool,
    /// Never stop: only record the scores (margins).
    probe: bool,
}

impl Experiment {
    /// Coefficients h (P = sum h[j] x[n-j]) and the level coefficients (trend value k ago).
    fn coefficients(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let cols = self.order + 2 + usize::from(self.kink > 0);
        let d = self.decay;
        let basis = |j: usize| -> Vec<f64> {
            let mut row: Vec<f64> = (0..=self.order)
                .map(|p| (j as f64).powi(p as i32))
                .collect();
            if self.kink > 0 {
                // A slope change `kink` ticks ago, through the same low-pass.
                let r = if j < self.kink {
                    let m = (self.kink - j) as f64;
                    -(m - d * (1.0 - d.powf(m)) / (1.0 - d))
                } else {
                    0.0
                };
                row.push(r);
            }
            let g = if j < self.k {
                -(1.0 - self.decay.powi((self.k - j) as i32))
            } else {
                0.0
            };
            row.push(g);
            row
        };
        let mut ata = vec![vec![0.0; cols]; cols];
        for j in 0..self.w {
            let r = basis(j);
            for a in 0..cols {
                for b in 0..cols {
                    ata[a][b] += r[a] * r[b];
                }
            }
        }
        // Invert by Gauss-Jordan.
        let mut inv = vec![vec![0.0; cols]; cols];
        for (i, row) in inv.iter_mut().enumerate() {
            row[i] = 1.0;
        }
        for c in 0..cols {
            let p = (c..cols)
                .max_by(|&a, &b| ata[a][c].abs().total_cmp(&ata[b][c].abs()))
                .unwrap();
            ata.swap(c, p);
            inv.swap(c, p);
            let d = ata[c][c];
            for b in 0..cols {
                ata[c][b] /= d;
                inv[c][b] /= d;
            }
            for r in 0..cols {
                if r != c {
                    let f = ata[r][c];
                    for b in 0..cols {
                        ata[r][b] -= f * ata[c][b];
                        inv[r][b] -= f * inv[c][b];
                    }
                }
            }
        }
        let mut h = vec![0.0; self.w];
        let mut level = vec![0.0; self.w];
        let mut slope = vec![0.0; self.w];
        let at_k: Vec<f64> = (0..=self.order)
            .map(|p| (self.k as f64).powi(p as i32))
            .collect();
        for (j, (hj, lj)) in h.iter_mut().zip(level.iter_mut()).enumerate() {
            let r = basis(j);
            *hj = (0..cols).map(|b| inv[cols - 1][b] * r[b]).sum();
            *lj = (0..=self.order)
                .map(|p| at_k[p] * (0..cols).map(|b| inv[p][b] * r[b]).sum::<f64>())
                .sum();
            // Time runs against j: the forward slope is minus the coefficient of j.
            slope[j] = -(0..cols).map(|b| inv[1][b] * r[b]).sum::<f64>();
        }
        (h, level, slope)
    }
}

/// Running state of an [`Experiment`] in one case.
struct ExperimentState {
    h: Vec<f64>,
    level: Vec<f64>,
    slope: Vec<f64>,
    norm: f64,
    history: Vec<f64>,
    cortex_ticks: u32,
    noise: f64,
    last: Option<f64>,
    /// Last estimate, reference load and noise threshold (for the dump).
    debug: (f64, f64, f64),
    /// The last `confirm` scores (detection when all are >= 1).
    scores: std::collections::VecDeque<f64>,
    /// Largest confirmed score before t_bt, and within 15 ms after it.
    pre_max: f64,
    post_max: f64,
    /// Trend slope (mA/ms) and reference load at those two maxima.
    pre_at: (f64, f64),
    post_at: (f64, f64),
}

impl ExperimentState {
    fn new(e: &Experiment) -> Self {
        let (h, level, slope) = e.coefficients();
        // Noise gain from white current noise to P: the load estimate's response g to a unit
        // current impulse (low-pass 1/8, minus 10.25/4 mA per mV of back-EMF change over 4
        // ticks, the back-EMF carrying -0.665 mV per mA), convolved with h.
        let len = e.w + 64;
        let mut lpf = vec![0.0; len];
        let mut y = 0.0;
        for (m, v) in lpf.iter_mut().enumerate() {
            y += ((if m == 0 { 1.0 } else { 0.0 }) - y) / 8.0;
            *v = y;
        }
        let g: Vec<f64> = (0..len)
            .map(|m| {
                let back = if m >= 4 { lpf[m - 4] } else { 0.0 };
                lpf[m] + 10.25 / 4.0 * 0.665 * (lpf[m] - back)
            })
            .collect();
        let norm = (0..len)
            .map(|m| {
                (0..e.w)
                    .filter(|&j| j <= m)
                    .map(|j| h[j] * g[m - j])
                    .sum::<f64>()
            })
            .map(|c| c * c)
            .sum::<f64>()
            .sqrt();
        ExperimentState {
            h,
            level,
            slope,
            norm,
            history: Vec::new(),
            cortex_ticks: 0,
            noise: 0.0,
            last: None,
            debug: (0.0, 0.0, 0.0),
            scores: std::collections::VecDeque::new(),
            pre_max: 0.0,
            post_max: 0.0,
            pre_at: (0.0, 0.0),
            post_at: (0.0, 0.0),
        }
    }

    /// One tick; true when the experiment detects. `since_bt_ms` is the time since the true
    /// breakthrough (None before it).
    fn step(
        &mut self,
        e: &Experiment,
        state: driver_core::State,
        load: f64,
        current: f64,
        baseline: f64,
        since_bt_ms: Option<f64>,
    ) -> bool {
        use driver_core::State;
        if matches!(state, State::SoftTissue | State::Cortex) {
            if let Some(last) = self.last {
                self.noise += ((current - last).abs() - self.noise) / 64.0;
            }
        }
        self.last = Some(current);
        self.history.push(load);
        if state != State::Cortex {
            self.cortex_ticks = 0;
            self.scores.clear();
            return false;
        }
        self.cortex_ticks += 1;
        let n = self.history.len();
        if self.cortex_ticks < self.skip_ticks(e) || n < e.w {
            return false;
        }
        let (mut p, mut level, mut slope) = (0.0, 0.0, 0.0);
        for j in 0..e.w {
            let x = self.history[n - 1 - j];
            p += self.h[j] * x;
            level += self.level[j] * x;
            slope += self.slope[j] * x;
        }
        let reference = level - baseline;
        let gated = e.gate > 0.0 && {
            // 8-tick means, newest first, skipping the newest two blocks.
            let blocks = n / 8;
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            // Only blocks inside the cortex, after the first 24 ms of it (the entry rise).
            let cortex_blocks = (self.cortex_ticks as usize).saturating_sub(24) / 8;
            for b in 2..64.min(blocks).min(cortex_blocks) {
                let end = n - (n % 8) - b * 8;
                let mean = self.history[end - 8..end].iter().sum::<f64>() / 8.0;
                lo = lo.min(mean);
                hi = hi.max(mean);
            }
            let sigma = 0.886 * self.noise;
            !(hi - lo >= e.gate / 100.0 * reference && hi - lo >= 2.0 * sigma)
        };
        let noise_thr = e.nf * 0.886 * self.noise * self.norm;
        self.debug = (p, reference, noise_thr);
        let score = if reference < 60.0 || gated {
            0.0
        } else {
            (p / (e.pct / 100.0 * reference))
                .min(p / e.min_drop)
                .min(if noise_thr > 0.0 {
                    p / noise_thr
                } else {
                    f64::INFINITY
                })
        };
        self.scores.push_back(score);
        while self.scores.len() > e.confirm as usize {
            self.scores.pop_front();
        }
        let confirmed = if self.scores.len() == e.confirm as usize {
            self.scores.iter().copied().fold(f64::INFINITY, f64::min)
        } else {
            0.0
        };
        match since_bt_ms {
            None if confirmed > self.pre_max => {
                self.pre_max = confirmed;
                self.pre_at = (slope, reference);
            }
            Some(ms) if ms <= 15.0 && confirmed > self.post_max => {
                self.post_max = confirmed;
                self.post_at = (slope, reference);
            }
            _ => {}
        }
        confirmed >= 1.0 && !e.probe
    }

    fn skip_ticks(&self, e: &Experiment) -> u32 {
        e.skip
    }
}

fn parse_experiment(fields: &str) -> Experiment {
    let mut e = Experiment {
        w: 32,
        k: 6,
        order: 2,
        pct: 10.0,
        nf: 3.0,
        min_drop: 10.0,
        confirm: 2,
        skip: 0,
        decay: 0.875,
        or: false,
        probe: false,
        kink: 0,
        gate: 0.0,
    };
    for field in fields.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').expect("key=value");
        let f = || value.parse::<f64>().expect("number");
        match key {
            "w" => e.w = f() as usize,
            "k" => e.k = f() as usize,
            "order" => e.order = f() as usize,
            "pct" => e.pct = f(),
            "nf" => e.nf = f(),
            "min" => e.min_drop = f(),
            "confirm" => e.confirm = f() as u32,
            "skip" => e.skip = f() as u32,
            "decay" => e.decay = f(),
            "or" => e.or = f() != 0.0,
            "probe" => e.probe = f() != 0.0,
            "kink" => e.kink = f() as usize,
            "gate" => e.gate = f(),
            _ => panic!("unknown experiment key `{key}`"),
        }
    }
    e
}

fn parse_tuning(spec: &str) -> (String, Config, Option<Experiment>) {
    if let Some((name, fields)) = spec.split_once(":x:") {
        let experiment = parse_experiment(fields);
        let config = Config {
            detection_enabled: experiment.or,
            ..Config::DEFAULT
        };
        return (name.to_owned(), config, Some(experiment));
    }
    let (name, config) = parse_config(spec);
    (name, config, None)
}

fn parse_config(spec: &str) -> (String, Config) {
    let (name, fields) = spec.split_once(':').unwrap_or((spec, ""));
    let mut config = Config::DEFAULT;
    for field in fields.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').expect("key=value");
        set(&mut config, key, value);
    }
    (name.to_owned(), config)
}

/// A fitted trend slope (mA/ms) and reference load (mA).
type SlopeAndReference = (f64, f64);

#[derive(Default, Clone)]
struct Tally {
    cases: u64,
    varied: u64,
    /// (index, ms before t_bt, reason, push varied)
    premature: Vec<(u64, f64, Option<StopReason>, bool)>,
    /// (latency ms, index, reason)
    latencies: Vec<(f64, u64, Option<StopReason>)>,
    /// Not stopped within 300 ms of t_bt.
    missed: Vec<u64>,
    /// Experiment scores: (index, push varied, largest before t_bt, largest within 15 ms).
    scores: Vec<(u64, bool, f64, f64)>,
    /// (slope, reference) at the pre and post maxima, by case.
    at: std::collections::HashMap<u64, (SlopeAndReference, SlopeAndReference)>,
    /// Torque before and after the cap broke, N*mm, by case.
    contrast: std::collections::HashMap<u64, (f64, f64)>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.cases += other.cases;
        self.varied += other.varied;
        self.premature.extend(other.premature);
        self.latencies.extend(other.latencies);
        self.missed.extend(other.missed);
        self.contrast.extend(other.contrast);
        self.scores.extend(other.scores);
        self.at.extend(other.at);
    }
}

struct Shared<'a> {
    seed: u64,
    indices: &'a [u64],
    tunings: &'a [(String, Config, Option<Experiment>)],
    requirements: &'a iohil::scenario::Requirements,
    profiles: &'a iohil::scenario::load::Profiles,
    done: AtomicU64,
    no_breakthrough: AtomicU64,
    /// Write one CSV per case here (tick signals, the first tuning's load estimate).
    dump: Option<std::path::PathBuf>,
    /// Scenario files to run instead of fuzz cases (case `k` is the `k`-th file).
    scenario_files: &'a [std::path::PathBuf],
    /// How long after `t_bt` a case runs at most, s.
    after_s: f64,
}

fn run_case(shared: &Shared<'_>, index: u64, tallies: &mut [Tally]) {
    let (path, yaml) = match usize::try_from(index)
        .ok()
        .and_then(|k| shared.scenario_files.get(k))
    {
        Some(path) => (
            path.clone(),
            std::fs::read_to_string(path).expect("scenario file"),
        ),
        None => {
            let case = case_at(shared.seed, index).expect("case");
            let id = format!("sweep-{index}");
            let yaml = scenario_yaml(
                &case,
                shared.profiles,
                &id,
                &id,
                "sweep",
                case_seed(shared.seed, index),
            )
            .expect("yaml");
            (std::path::PathBuf::from("case.yaml"), yaml)
        }
    };
    let scenario =
        load_scenario_str(&path, &yaml, shared.requirements, shared.profiles).expect("scenario");
    let varied = scenario.operator.oscillation.is_some() || !scenario.operator.steps.is_empty();
    let plan = TickPlan {
        steps_per_tick: 20,
        steps_per_adc: 1,
        adc_step: 0,
        mid_step: true,
    };
    assert!(
        (SIM_STEP_S - 50e-6).abs() < 1e-12,
        "the plan assumes 50 us steps"
    );
    let mut plant = Plant::new(&scenario, trial_seed(scenario.seed, 0), SIM_STEP_S);
    let mut controllers: Vec<Controller> = shared
        .tunings
        .iter()
        .map(|(_, c, _)| Controller::new(*c))
        .collect();
    let mut experiments: Vec<Option<ExperimentState>> = shared
        .tunings
        .iter()
        .map(|(_, _, e)| e.as_ref().map(ExperimentState::new))
        .collect();
    let mut stopped: Vec<Option<(f64, Option<StopReason>)>> = vec![None; controllers.len()];
    // The plant follows a controller that never detects: it drives exactly as every tuning
    // does until that tuning stops.
    let mut open_loop = Controller::new(Config {
        detection_enabled: false,
        missed_pop_ms: 0,
        ..Config::DEFAULT
    });
    let mut command = DriveCommand::default();
    let ticks = (scenario.duration_s * f64::from(TICK_HZ)).round() as u64;
    let mut t_bt = None;
    let mut rows = String::new();
    // Load torque on the tick before the cap broke and on the tick it broke, N*mm.
    let mut torque_before = 0.0;
    let mut contrast = None;
    for tick in 1..=ticks {
        let sums = plant.advance_tick(command, &plan, true);
        let t = tick as f64 / f64::from(TICK_HZ);
        if t_bt.is_none() {
            t_bt = plant.ground_truth().t_bt_s;
            if t_bt.is_some() {
                contrast = Some((torque_before, plant.load_torque_nmm()));
            }
            torque_before = plant.load_torque_nmm();
        }

        let inputs = Inputs {
            tick: u32::try_from(tick).unwrap_or(u32::MAX),
            motor_current_ma: sensing::mean_current_ma(sums.current_counts, sums.samples),
            battery_mv: sensing::mean_battery_mv(sums.voltage_counts, sums.samples),
            trigger_pressed: plant.trigger_pressed_at(t),
        };
        let outputs = open_loop.step(&inputs);
        command = DriveCommand {
            duty: f64::from(outputs.duty_permille) / f64::from(driver_core::DUTY_FULL_SCALE),
            brake: outputs.brake,
        };
        for (((controller, stop), experiment), tuning) in controllers
            .iter_mut()
            .zip(stopped.iter_mut())
            .zip(experiments.iter_mut())
            .zip(shared.tunings)
        {
            if stop.is_some() {
                continue;
            }
            let outputs = controller.step(&inputs);
            if let (Some(state), Some(e)) = (experiment, &tuning.2) {
                if state.step(
                    e,
                    outputs.state,
                    f64::from(controller.load_estimate_ma()),
                    f64::from(inputs.motor_current_ma),
                    f64::from(outputs.baseline_ma),
                    t_bt.map(|bt| (t - bt) * 1000.0),
                ) {
                    *stop = Some((t, Some(StopReason::Breakthrough)));
                    continue;
                }
            }
            if outputs.events & event::MOTOR_OFF != 0 {
                *stop = Some((t, outputs.stop_reason));
            }
        }
        if shared.dump.is_some() {
            use std::fmt::Write as _;
            let _ = writeln!(
                rows,
                "{t:.3},{},{},{},{:.3},{:.4},{:.3},{:.2},{:.1},{:.1},{:.1}",
                inputs.motor_current_ma,
                inputs.battery_mv,
                controllers[0].load_estimate_ma(),
                plant.push_n(),
                plant.load_torque_nmm(),
                plant.depth_mm(),
                plant.output_speed_rpm(),
                experiments[0].as_ref().map_or(0.0, |e| e.debug.0),
                experiments[0].as_ref().map_or(0.0, |e| e.debug.1),
                experiments[0].as_ref().map_or(0.0, |e| e.debug.2),
            );
        }
        let all_stopped = stopped
            .iter()
            .zip(shared.tunings)
            .all(|(stop, tuning)| stop.is_some() || tuning.2.is_some_and(|e| e.probe));
        if t_bt.is_some_and(|bt| (all_stopped && t > bt + 0.016) || t > bt + shared.after_s) {
            break;
        }
    }
    if let Some(dir) = &shared.dump {
        let header = format!(
            "# case {index} t_bt {t_bt:?} stops {stopped:?}\nt,i_ma,v_mv,load_ma,push_n,torque_nmm,depth_mm,rpm,p,ref,noise_thr\n"
        );
        std::fs::write(dir.join(format!("case-{index}.csv")), header + &rows).expect("dump");
    }
    let Some(t_bt) = t_bt else {
        shared.no_breakthrough.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for ((tally, stop), experiment) in tallies.iter_mut().zip(&stopped).zip(&experiments) {
        if let Some(e) = experiment {
            tally.scores.push((index, varied, e.pre_max, e.post_max));
            tally.at.insert(index, (e.pre_at, e.post_at));
        }
        let late = match stop {
            Some((t, _)) => *t > t_bt + 0.012,
            None => true,
        };
        if late || experiment.is_some() {
            tally.contrast.insert(index, contrast.unwrap_or_default());
        }
        tally.cases += 1;
        tally.varied += u64::from(varied);
        match stop {
            Some((t, reason)) if *t < t_bt => {
                tally
                    .premature
                    .push((index, (t_bt - t) * 1000.0, *reason, varied));
            }
            Some((t, reason)) => tally.latencies.push(((t - t_bt) * 1000.0, index, *reason)),
            None => tally.missed.push(index),
        }
    }
}

fn score_summary(tally: &mut Tally, list: usize) {
    let quantile = |v: &[f64], q: f64| -> f64 {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut nominal: Vec<(f64, u64)> = tally
        .scores
        .iter()
        .filter(|s| !s.1)
        .map(|s| (s.2, s.0))
        .collect();
    nominal.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut varied: Vec<f64> = tally.scores.iter().filter(|s| s.1).map(|s| s.2).collect();
    varied.sort_by(|a, b| b.total_cmp(a));
    let over = |v: &[f64], x: f64| v.iter().filter(|&&s| s >= x).count();
    for n in nominal.iter().take(list) {
        let at = tally.at.get(&n.1).map_or((0.0, 0.0), |a| a.0);
        println!(
            "     nominal pre-pop: case {} score {:.2} slope {:+.2} mA/ms ref {:.0} mA",
            n.1, n.0, at.0, at.1
        );
    }
    println!(
        "   pre-pop score, nominal push: max {:.2} (cases {:?}); varied: >=1 {:.3} %, >=0.8 {:.3} %, >=0.67 {:.3} %",
        nominal.first().map_or(f64::NAN, |n| n.0),
        nominal.iter().take(5).map(|n| (n.1, (n.0 * 100.0).round() / 100.0)).collect::<Vec<_>>(),
        100.0 * over(&varied, 1.0) as f64 / varied.len().max(1) as f64,
        100.0 * over(&varied, 0.8) as f64 / varied.len().max(1) as f64,
        100.0 * over(&varied, 0.67) as f64 / varied.len().max(1) as f64,
    );
    let mut post: Vec<(f64, u64)> = tally
        .scores
        .iter()
        .filter(|s| s.2 < 1.0)
        .map(|s| (s.3, s.0))
        .collect();
    post.sort_by(|a, b| a.0.total_cmp(&b.0));
    let values: Vec<f64> = post.iter().map(|p| p.0).collect();
    println!(
        "   post-pop score (15 ms): min {:.2}, 1e-5 {:.2}, 1e-4 {:.2}, 1e-3 {:.2}; <1: {}, <1.25: {}, <1.5: {}",
        quantile(&values, 0.0),
        quantile(&values, 1e-5),
        quantile(&values, 1e-4),
        quantile(&values, 1e-3),
        values.iter().filter(|&&v| v < 1.0).count(),
        values.iter().filter(|&&v| v < 1.25).count(),
        values.iter().filter(|&&v| v < 1.5).count(),
    );
    for p in post.iter().take(list) {
        let at = tally.at.get(&p.1).map_or((0.0, 0.0), |a| a.1);
        println!(
            "     weakest: case {} score {:.2} slope {:+.2} mA/ms ref {:.0} mA {}",
            p.1,
            p.0,
            at.0,
            at.1,
            contrast_text(tally.contrast.get(&p.1))
        );
    }
}

fn contrast_text(contrast: Option<&(f64, f64)>) -> String {
    contrast.map_or(String::new(), |(before, after)| {
        format!(
            "(torque {before:.2} -> {after:.2} N*mm, {:.0} %)",
            100.0 * (before - after) / before
        )
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: detector_sweep SEED FROM TO [--jobs J] [--list N] [--cases-file F] [--scenarios FILE.yaml...] [--after-ms MS] [--dump DIR] TUNING...";
    let mut positional = Vec::new();
    let mut jobs = 2usize;
    let mut list = 10usize;
    let mut cases_file = None;
    let mut dump = None;
    let mut scenario_files = Vec::new();
    let mut after_s = 0.3;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--jobs" => {
                jobs = args[i + 1].parse().expect("jobs");
                i += 1;
            }
            "--list" => {
                list = args[i + 1].parse().expect("list");
                i += 1;
            }
            "--dump" => {
                dump = Some(std::path::PathBuf::from(&args[i + 1]));
                i += 1;
            }
            "--cases-file" => {
                cases_file = Some(args[i + 1].clone());
                i += 1;
            }
            "--scenarios" => {
                while args
                    .get(i + 1)
                    .is_some_and(|a| a.ends_with(".yaml") || a.ends_with(".yml"))
                {
                    scenario_files.push(std::path::PathBuf::from(&args[i + 1]));
                    i += 1;
                }
            }
            "--after-ms" => {
                after_s = args[i + 1].parse::<f64>().expect("after-ms") / 1000.0;
                i += 1;
            }
            other => positional.push(other.to_owned()),
        }
        i += 1;
    }
    if positional.len() < 4 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let seed: u64 = positional[0].parse().expect("seed");
    let (from, to): (u64, u64) = (
        positional[1].parse().expect("from"),
        positional[2].parse().expect("to"),
    );
    let tunings: Vec<(String, Config, Option<Experiment>)> =
        positional[3..].iter().map(|s| parse_tuning(s)).collect();
    let indices: Vec<u64> = match cases_file {
        Some(path) => std::fs::read_to_string(path)
            .expect("cases file")
            .split_whitespace()
            .map(|s| s.parse().expect("case index"))
            .collect(),
        None if !scenario_files.is_empty() => (0..scenario_files.len() as u64).collect(),
        None => (from..to).collect(),
    };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let requirements = load_requirements(&suite.join("requirements.yaml")).expect("requirements");
    let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
    let shared = Shared {
        seed,
        indices: &indices,
        tunings: &tunings,
        requirements: &requirements,
        profiles: &profiles,
        done: AtomicU64::new(0),
        no_breakthrough: AtomicU64::new(0),
        dump,
        scenario_files: &scenario_files,
        after_s,
    };
    let started = std::time::Instant::now();
    let mut tallies = vec![Tally::default(); tunings.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|job| {
                let shared = &shared;
                scope.spawn(move || {
                    let mut tallies = vec![Tally::default(); shared.tunings.len()];
                    for (k, &index) in shared.indices.iter().enumerate() {
                        if k % jobs != job {
                            continue;
                        }
                        run_case(shared, index, &mut tallies);
                        let done = shared.done.fetch_add(1, Ordering::Relaxed) + 1;
                        if done.is_multiple_of(20_000) {
                            eprintln!("{done} cases, {:.0} s", started.elapsed().as_secs_f64());
                        }
                    }
                    tallies
                })
            })
            .collect();
        for handle in handles {
            for (tally, part) in tallies.iter_mut().zip(handle.join().expect("worker")) {
                tally.merge(part);
            }
        }
    });
    println!(
        "seed {seed}, {} cases in {:.1} s; {} without a breakthrough (skipped)",
        indices.len(),
        started.elapsed().as_secs_f64(),
        shared.no_breakthrough.load(Ordering::Relaxed)
    );
    for ((name, config, experiment), tally) in tunings.iter().zip(&mut tallies) {
        tally.latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
        tally.premature.sort_by_key(|p| p.0);
        tally.missed.sort_unstable();
        let n = tally.latencies.len();
        let pct = |p: f64| {
            tally
                .latencies
                .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
                .map_or(f64::NAN, |l| l.0)
        };
        let over = |limit: f64| tally.latencies.iter().filter(|l| l.0 > limit).count();
        let nominal = tally.premature.iter().filter(|p| !p.3).count();
        let varied = tally.premature.len() - nominal;
        match experiment {
            Some(e) => println!("== {name}: {e:?}"),
            None => println!("== {name}: {config:?}"),
        }
        println!(
            "   cases {} (push varied {}); detected {n}; premature: nominal push {nominal}, varied {varied} ({:.3} % of varied); not stopped within 300 ms: {}",
            tally.cases,
            tally.varied,
            100.0 * varied as f64 / tally.varied.max(1) as f64,
            tally.missed.len()
        );
        println!(
            "   latency ms: p50 {:.1} p99 {:.1} p99.99 {:.1} max {:.1}; >12 ms {}; >15 ms {}; >20 ms {}",
            pct(0.5),
            pct(0.99),
            pct(0.9999),
            tally.latencies.last().map_or(f64::NAN, |l| l.0),
            over(12.0),
            over(15.0),
            over(20.0)
        );
        for l in tally.latencies.iter().rev().take(list) {
            println!(
                "     slow: case {} latency {:.1} ms {:?} {}",
                l.1,
                l.0,
                l.2,
                contrast_text(tally.contrast.get(&l.1))
            );
        }
        for p in tally.premature.iter().filter(|p| !p.3).take(list) {
            println!(
                "     premature nominal: case {} {:.1} ms before t_bt {:?}",
                p.0, p.1, p.2
            );
        }
        for p in tally.premature.iter().filter(|p| p.3).take(list / 2) {
            println!(
                "     premature varied: case {} {:.1} ms before t_bt {:?}",
                p.0, p.1, p.2
            );
        }
        if !tally.scores.is_empty() {
            score_summary(tally, list);
        }
        for m in tally.missed.iter().take(list) {
            println!(
                "     missed: case {m} {}",
                contrast_text(tally.contrast.get(m))
            );
        }
    }
}
