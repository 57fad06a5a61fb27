//! End-to-end tests of the sim rig: the shipped suite passes, the harness can fail, results
//! are deterministic, the integration step is converged, and evidence survives rig faults.

use std::path::{Path, PathBuf};

use driver_core::Config;
use iohil::plant::{DriveCommand, Plant, TickPlan, SIM_STEP_S};
use iohil::rig::{Rig, RigError, RigIdentity, SimRig};
use iohil::run::{run_suite, RunOptions, RunResults};
use iohil::scenario::load::{load_suite, Suite};
use iohil::scenario::Scenario;
use iohil::trace::{EventSource, Trace};
use iohil::verdict::{
    evaluate_trial, interpolate, measure, Measurements, RequirementVerdict, Verdict,
};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn suite(relative: &[&str]) -> Suite {
    let paths: Vec<PathBuf> = relative.iter().map(|p| scenarios_dir().join(p)).collect();
    match load_suite(&paths) {
        Ok(suite) => suite,
        Err(error) => panic!("shipped scenarios must load: {error}"),
    }
}

fn run(suite: &Suite, rig: &mut dyn Rig, reports: &Path, run_id: &str) -> RunResults {
    let options = RunOptions {
        reports_dir: reports.to_owned(),
        run_id: Some(run_id.to_owned()),
    };
    run_suite(suite, rig, &options, |_, _| {})
        .expect("run writes its evidence")
        .1
}

/// One trial of `scenario` on `rig`, evaluated.
fn trial(
    rig: &mut dyn Rig,
    suite: &Suite,
    scenario: &Scenario,
    index: u32,
) -> (Trace, Measurements, Vec<RequirementVerdict>) {
    let trace = rig.run_trial(scenario, index).expect("sim trial runs");
    let m = measure(&trace, 0.05);
    let verdicts = evaluate_trial(&trace, &m, scenario, &suite.requirements);
    (trace, m, verdicts)
}

fn verdict_of(verdicts: &[RequirementVerdict], id: &str) -> RequirementVerdict {
    verdicts
        .iter()
        .find(|v| v.requirement == id)
        .cloned()
        .unwrap_or_else(|| panic!("no verdict for {id}"))
}

fn scenario<'a>(suite: &'a Suite, id: &str) -> &'a Scenario {
    suite
        .scenarios
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("scenario {id} not in suite"))
}

#[test]
fn shipped_suite_passes_on_the_sim_rig_and_writes_evidence() {
    let suite = suite(&["."]);
    assert!(
        suite.scenarios.len() >= 20,
        "{} scenarios",
        suite.scenarios.len()
    );
    let reports = tempfile::tempdir().expect("tempdir");
    let results = run(&suite, &mut SimRig::default(), reports.path(), "suite");
    for s in &results.scenarios {
        if s.known_anomaly.is_some() {
            // A registered FAIL (known_anomalies.rs holds it to its entry).
            assert!(s.source.path.starts_with("known-anomalies"), "{}", s.id);
            continue;
        }
        for v in &s.verdicts {
            assert_eq!(
                v.verdict,
                Verdict::Pass,
                "{} {}: {}",
                s.id,
                v.requirement,
                v.detail
            );
        }
        assert_eq!(s.trials.len() as u32, s.trials_planned);
    }
    // Exit code 1 only for the registered FAILs (0 with --accept-known-anomalies).
    let expected = if results.summary.known_anomaly_fails > 0 {
        1
    } else {
        0
    };
    assert_eq!(results.summary.exit_code, expected);
    assert!(results.summary.stale_anomalies.is_empty());
    assert!(results.complete);
    // Every trial's trace is on disk with the recorded hash.
    let run_dir = reports.path().join("suite");
    for s in &results.scenarios {
        for t in &s.trials {
            let bytes = std::fs::read(run_dir.join(&t.trace_file)).expect("trace file");
            assert_eq!(iohil::sha256_hex(&bytes), t.trace_sha256);
        }
    }
    let on_disk = RunResults::read(&run_dir.join("results.json")).expect("results.json");
    assert!(
        on_disk == results,
        "results.json on disk differs from the returned results"
    );
    // Every requirement but the watchdog (not verifiable on sim) is verified by some scenario.
    let unverified: Vec<&str> = results
        .traceability
        .iter()
        .filter(|r| r.scenarios.is_empty())
        .map(|r| r.requirement.as_str())
        .collect();
    assert_eq!(unverified, ["SR-12"]);
}

/// DESIGN.md's expected ranges for the reference profiles at nominal push. Its estimates leave
/// out two effects the plant models (the shaft friction of the cortical wall and the faster
/// feed over the weakening ramp); where that moves a value, the bound is widened here by the
/// size of that effect, computed in the comment.
#[test]
fn reference_profiles_fall_in_design_ranges() {
    let suite = suite(&["reference"]);
    let mut rig = SimRig::default();
    for s in &suite.scenarios {
        let (_, m, _) = trial(&mut rig, &suite, s, 0);
        let torque = m.cortex_torque_nmm.expect("cortex torque");
        let time_in_cortex = m.time_in_cortex_s.expect("time in cortex");
        let drop = m.torque_drop_pct.expect("torque drop");
        // DESIGN: 12-38 N*mm; the wall friction adds up to 0.8 N*mm/mm x 4.5 mm = 3.6 N*mm.
        assert!(
            (12.0..=38.0 + 3.6).contains(&torque),
            "{}: cortex torque {torque}",
            s.id
        );
        // DESIGN: 0.45-3.9 s; the ramp more than doubles the feed over up to 1.5 mm, which
        // halves the time in the thinnest cortices (1.2-1.5 mm).
        assert!(
            (0.45 / 2.0..=3.9).contains(&time_in_cortex),
            "{}: time in cortex {time_in_cortex}",
            s.id
        );
        // DESIGN: 63-78 %; in the osteoporotic tibia the wall friction (1.2 N*mm) is a large
        // part of the 5.6 N*mm medullary torque, which lowers the drop to about 51 %.
        let low = if s.id.starts_with("osteoporotic") {
            48.0
        } else {
            63.0
        };
        assert!((low..=78.0).contains(&drop), "{}: torque drop {drop}", s.id);
        println!("{}: cortex torque {torque:.1} N*mm, time in cortex {time_in_cortex:.2} s, drop {drop:.0} %", s.id);
    }
}

#[test]
fn same_seed_gives_identical_results_and_another_seed_does_not() {
    let suite = suite(&["sensing/osteoporotic-sensor-errors.yaml"]);
    let reports = tempfile::tempdir().expect("tempdir");
    let first = run(&suite, &mut SimRig::default(), reports.path(), "a");
    let second = run(&suite, &mut SimRig::default(), reports.path(), "b");
    let normalise = |mut r: RunResults| {
        r.run_id.clear();
        r.started_utc.clear();
        r.finished_utc = None;
        serde_json::to_string(&r).expect("serialise")
    };
    assert_eq!(normalise(first.clone()), normalise(second));
    for t in &first.scenarios[0].trials {
        let a = std::fs::read(reports.path().join("a").join(&t.trace_file)).expect("trace a");
        let b = std::fs::read(reports.path().join("b").join(&t.trace_file)).expect("trace b");
        assert!(
            a == b,
            "trace {} differs between identical runs",
            t.trace_file
        );
    }
    // The noise really is seeded: another seed changes the measured current.
    let mut other = suite.scenarios[0].clone();
    other.seed += 1000;
    let mut rig = SimRig::default();
    let (a, ..) = trial(&mut rig, &suite, &suite.scenarios[0], 0);
    let (b, ..) = trial(&mut rig, &suite, &other, 0);
    assert_ne!(a.samples.measured_current_ma, b.samples.measured_current_ma);
}

/// One control tick taken as an exact step against the same tick taken step by step from the
/// same state, tick after tick through a whole drilling (soft tissue, cortex, the pop, the
/// marrow, braking, rest): the state and the ADC sums agree to within what freezing the load
/// per step (the step-by-step path) rather than at mid-tick (the exact path) moves them, and
/// most ticks are exact.
#[test]
fn an_exact_tick_agrees_with_its_integration_steps() {
    let suite = suite(&["reference/adult-proximal-tibia.yaml"]);
    let scenario = &suite.scenarios[0];
    let plan = TickPlan {
        steps_per_tick: 20,
        steps_per_adc: 1,
        adc_step: 0,
        mid_step: true,
    };
    let mut plant = Plant::new(scenario, 7, SIM_STEP_S);
    let (mut exact_ticks, mut ticks) = (0, 0);
    // Full drive from the press until 5 ms after the pop, then the brake, then the bridge off.
    let press = scenario.operator.press_s;
    let mut braked_at = None;
    while plant.time_s() < 3.0 {
        let t = plant.time_s();
        let t_bt = plant.ground_truth().t_bt_s;
        let command = match (t >= press, t_bt) {
            (false, _) => DriveCommand::default(),
            (true, Some(t_bt)) if t > t_bt + 0.005 => {
                let at = *braked_at.get_or_insert(t);
                DriveCommand {
                    duty: 0.0,
                    brake: t < at + 0.2,
                }
            }
            (true, _) => DriveCommand {
                duty: 1.0,
                brake: false,
            },
        };
        let mut stepped = plant.clone();
        let e = plant.advance_tick(command, &plan, true);
        let s = stepped.advance_tick(command, &plan, false);
        assert!(!s.exact);
        ticks += 1;
        if e.exact {
            exact_ticks += 1;
        }
        let at = format!("tick ending {:.3} s ({command:?})", plant.time_s());
        let close = |a: f64, b: f64, tolerance: f64, what: &str| {
            assert!((a - b).abs() <= tolerance, "{at}: {what} {a} against {b}");
        };
        close(plant.time_s(), stepped.time_s(), 1e-12, "time");
        close(plant.current_a(), stepped.current_a(), 1e-4, "current A");
        close(
            plant.output_speed_rpm(),
            stepped.output_speed_rpm(),
            0.01,
            "speed rpm",
        );
        close(plant.depth_mm(), stepped.depth_mm(), 1e-5, "depth mm");
        close(
            plant.load_torque_nmm(),
            stepped.load_torque_nmm(),
            0.05,
            "load N*mm",
        );
        close(
            e.mean_current_a,
            s.mean_current_a,
            1e-4,
            "tick-mean current A",
        );
        assert_eq!(e.samples, s.samples, "{at}");
        close(
            f64::from(e.current_counts),
            f64::from(s.current_counts),
            2.0,
            "current counts",
        );
        close(
            f64::from(e.voltage_counts),
            f64::from(s.voltage_counts),
            2.0,
            "voltage counts",
        );
        // From here on both continue from the exact state.
    }
    assert!(braked_at.is_some(), "the pop came within the test");
    assert!(
        exact_ticks * 10 >= ticks * 9,
        "only {exact_ticks} of {ticks} ticks were exact"
    );
}

/// Times in ms: t_bt, motor-off, stop; depths in mm: at motor-off and at the stop.
fn stop_key(trace: &Trace, m: &Measurements) -> (f64, f64, f64, f64, f64) {
    let t_bt = trace.truth.t_bt_s.expect("pop") * 1000.0;
    let off = m.motor_off_ms.expect("motor off");
    let stop = t_bt + m.time_to_stop_ms.expect("stop");
    let depth_off = interpolate(&trace.samples.t_s, &trace.samples.depth_mm, off / 1000.0);
    let depth_stop = trace.truth.inner_surface_mm + m.overshoot_mm.expect("overshoot");
    (t_bt, off, stop, depth_off, depth_stop)
}

/// The exact tick step (one closed-form step per control tick where the plant is linear,
/// `harness/src/plant/tick.rs`) against a 5 us reference that takes every integration step:
/// it lands as close to the reference as the 50 us integration step does (t_bt within the
/// 50 us step's own error plus 0.02 ms, and within 0.1 ms), brakes the same (braking time and
/// travel within 0.1 ms / 0.01 mm), and every verdict is the reference's. The reference and
/// operator scenarios cover the layer boundaries, the cap fracture, push oscillations and
/// steps (the step's kinks) and the braking.
#[test]
fn the_exact_tick_step_is_as_close_to_a_fine_reference_as_the_integration_step() {
    let suite = suite(&["reference", "operator"]);
    let mut exact = SimRig::default();
    assert!(
        exact.exact_ticks,
        "the shipped sim rig takes exact tick steps"
    );
    let mut stepped = SimRig::default();
    stepped.exact_ticks = false;
    let mut reference = SimRig::default();
    reference.exact_ticks = false;
    reference.step_s = 5e-6;
    for s in &suite.scenarios {
        let (trace_e, e, verdicts_e) = trial(&mut exact, &suite, s, 0);
        let (trace_s, st, _) = trial(&mut stepped, &suite, s, 0);
        let (trace_r, r, verdicts_r) = trial(&mut reference, &suite, s, 0);
        let (bt_e, off_e, stop_e, doff_e, dstop_e) = stop_key(&trace_e, &e);
        let (bt_s, ..) = stop_key(&trace_s, &st);
        let (bt_r, off_r, stop_r, doff_r, dstop_r) = stop_key(&trace_r, &r);
        println!(
            "{}: t_bt exact {bt_e:.4} / 50 us {bt_s:.4} / 5 us {bt_r:.4} ms",
            s.id
        );
        let (error_e, error_s) = ((bt_e - bt_r).abs(), (bt_s - bt_r).abs());
        assert!(
            error_e <= error_s + 0.02 && error_e < 0.1,
            "{}: t_bt {error_e} ms from the reference (the 50 us step: {error_s} ms)",
            s.id
        );
        let braking = ((stop_e - off_e) - (stop_r - off_r)).abs();
        assert!(braking < 0.1, "{}: braking time moved {braking} ms", s.id);
        let travel = ((dstop_e - doff_e) - (dstop_r - doff_r)).abs();
        assert!(travel < 0.01, "{}: braking travel moved {travel} mm", s.id);
        let verdicts = |v: &[RequirementVerdict]| -> Vec<(String, Verdict)> {
            v.iter()
                .map(|v| (v.requirement.clone(), v.verdict))
                .collect()
        };
        assert_eq!(verdicts(&verdicts_e), verdicts(&verdicts_r), "{}", s.id);
    }
}

/// The plant's integration step is converged: halving it moves the breakthrough instant, the
/// stop and the overshoot by less than 0.1 ms / 0.01 mm. The firmware samples on a 1 ms tick,
/// so a t_bt that moves by microseconds across a tick boundary moves its motor-off command by
/// a whole tick; that is the firmware's sampling, which the evidence must show, not integration
/// error. The stop and the overshoot are therefore compared from the motor-off command on
/// (the plant's braking), and also absolutely whenever both runs stop the motor on the same tick.
#[test]
fn halving_the_integration_step_moves_results_less_than_the_resolution() {
    let suite = suite(&["reference"]);
    let mut coarse = SimRig::default();
    let mut fine = SimRig::default();
    fine.step_s = coarse.step_s / 2.0;
    let mut same_tick = 0;
    for s in &suite.scenarios {
        let (trace_c, c, _) = trial(&mut coarse, &suite, s, 0);
        let (trace_f, f, _) = trial(&mut fine, &suite, s, 0);
        let (bt_c, off_c, stop_c, doff_c, dstop_c) = stop_key(&trace_c, &c);
        let (bt_f, off_f, stop_f, doff_f, dstop_f) = stop_key(&trace_f, &f);
        println!(
            "{}: t_bt {bt_c:.4}/{bt_f:.4} ms, motor off {off_c}/{off_f} ms, stop {stop_c:.4}/{stop_f:.4} ms, depth at stop {dstop_c:.5}/{dstop_f:.5} mm",
            s.id
        );
        assert!(
            (bt_c - bt_f).abs() < 0.1,
            "{}: t_bt moved {} ms",
            s.id,
            bt_c - bt_f
        );
        let braking_c = stop_c - off_c;
        let braking_f = stop_f - off_f;
        assert!(
            (braking_c - braking_f).abs() < 0.1,
            "{}: braking time moved {} ms",
            s.id,
            braking_c - braking_f
        );
        let travel_c = dstop_c - doff_c;
        let travel_f = dstop_f - doff_f;
        assert!(
            (travel_c - travel_f).abs() < 0.01,
            "{}: braking travel moved {} mm",
            s.id,
            travel_c - travel_f
        );
        if off_c == off_f {
            same_tick += 1;
            assert!(
                (stop_c - stop_f).abs() < 0.1,
                "{}: stop moved {} ms",
                s.id,
                stop_c - stop_f
            );
            assert!(
                (dstop_c - dstop_f).abs() < 0.01,
                "{}: overshoot moved {} mm",
                s.id,
                dstop_c - dstop_f
            );
        }
    }
    assert!(
        same_tick >= 3,
        "only {same_tick} profiles stopped on the same tick at both steps"
    );
}

#[test]
fn detection_disabled_fails_latency_overshoot_and_far_cortex() {
    let suite = suite(&["reference/adult-proximal-tibia.yaml"]);
    let mut rig = SimRig::with_config(Config {
        detection_enabled: false,
        missed_pop_ms: 0,
        ..Config::DEFAULT
    });
    let (trace, m, verdicts) = trial(&mut rig, &suite, &suite.scenarios[0], 0);
    assert!(!trace.firmware.shipped_config);
    assert!(m.far_cortex_contact_rotating);
    let sr01 = verdict_of(&verdicts, "SR-01");
    assert_eq!(sr01.verdict, Verdict::Fail, "{}", sr01.detail);
    // The far cortex stalls the needle eventually; no stop may come within 20 ms of the pop.
    assert!(
        sr01.measured.is_none_or(|latency| latency > 20.0),
        "{}",
        sr01.detail
    );
    let sr03 = verdict_of(&verdicts, "SR-03");
    assert_eq!(sr03.verdict, Verdict::Fail, "{}", sr03.detail);
    let sr04 = verdict_of(&verdicts, "SR-04");
    assert_eq!(sr04.verdict, Verdict::Fail, "{}", sr04.detail);
    assert!(sr04.detail.contains("far cortex"), "{}", sr04.detail);
    // The premature-stop check is unaffected: the firmware did not stop early.
    assert_eq!(verdict_of(&verdicts, "SR-05").verdict, Verdict::Pass);
}

#[test]
fn a_threshold_set_far_off_detects_late_and_fails_on_latency() {
    let suite = suite(&["reference/adult-proximal-tibia.yaml"]);
    // A 95 % drop is never reached at the pop. With the slow tests off, only the missed-pop
    // fallback stops the motor; with them on, the level-shift test stops it, late: SR-01 fails
    // either way.
    let far_off = Config {
        drop_percent: 95,
        ..Config::DEFAULT
    };
    let without_nets = Config {
        plateau_test: false,
        level_test: false,
        ..far_off
    };
    let mut rig = SimRig::with_config(without_nets);
    let (_, m, verdicts) = trial(&mut rig, &suite, &suite.scenarios[0], 0);
    let sr01 = verdict_of(&verdicts, "SR-01");
    assert_eq!(sr01.verdict, Verdict::Fail, "{}", sr01.detail);
    assert!(
        m.stop_reason.as_deref() != Some("breakthrough"),
        "{:?}",
        m.stop_reason
    );
    let sr03 = verdict_of(&verdicts, "SR-03");
    assert_eq!(sr03.verdict, Verdict::Fail, "{}", sr03.detail);

    let mut rig = SimRig::with_config(far_off);
    let (_, m, verdicts) = trial(&mut rig, &suite, &suite.scenarios[0], 0);
    let sr01 = verdict_of(&verdicts, "SR-01");
    assert_eq!(sr01.verdict, Verdict::Fail, "{}", sr01.detail);
    assert!(
        sr01.measured.is_some_and(|latency| latency > 20.0),
        "{}",
        sr01.detail
    );
    assert_eq!(m.stop_reason.as_deref(), Some("breakthrough"));
    assert_eq!(verdict_of(&verdicts, "SR-04").verdict, Verdict::Pass);
}

#[test]
fn an_over_eager_detector_stops_prematurely_and_fails_sr05() {
    let suite = suite(&["operator/osteoporotic-tibia-oscillation.yaml"]);
    let mut rig = SimRig::with_config(Config {
        drop_percent: 4,
        min_drop_ma: 5,
        confirm_ticks: 1,
        ..Config::DEFAULT
    });
    let reports = tempfile::tempdir().expect("tempdir");
    let results = run(&suite, &mut rig, reports.path(), "eager");
    let s = &results.scenarios[0];
    let sr05 = s
        .verdicts
        .iter()
        .find(|v| v.requirement == "SR-05")
        .expect("SR-05");
    assert_eq!(sr05.verdict, Verdict::Fail, "{}", sr05.detail);
    assert!(
        sr05.measured.is_some_and(|fraction| fraction > 0.02),
        "{}",
        sr05.detail
    );
    assert!(s.trials.iter().any(|t| t.measurements.premature_stop));
    assert_eq!(results.summary.exit_code, 1);
}

#[test]
fn protections_fail_when_disabled() {
    let suite = suite(&["protections"]);
    // Over-time limit beyond the requirement: the run goes past 10 s.
    let mut rig = SimRig::with_config(Config {
        max_run_ms: 11_500,
        ..Config::DEFAULT
    });
    let (_, _, verdicts) = trial(
        &mut rig,
        &suite,
        scenario(&suite, "endless-cortex-over-time"),
        0,
    );
    let sr08 = verdict_of(&verdicts, "SR-08");
    assert_eq!(sr08.verdict, Verdict::Fail, "{}", sr08.detail);
    // Stall confirmation far too slow: the stall fault comes after 300 ms.
    let mut rig = SimRig::with_config(Config {
        stall_confirm_ms: 500,
        ..Config::DEFAULT
    });
    let (_, _, verdicts) = trial(&mut rig, &suite, scenario(&suite, "stall-locked-rotor"), 0);
    let sr07 = verdict_of(&verdicts, "SR-07");
    assert_eq!(sr07.verdict, Verdict::Fail, "{}", sr07.detail);
    // A low-battery threshold below the requirement lets the drill start.
    let mut rig = SimRig::with_config(Config {
        min_loaded_mv: 4000,
        ..Config::DEFAULT
    });
    let (_, _, verdicts) = trial(&mut rig, &suite, scenario(&suite, "low-battery-start"), 0);
    let sr11 = verdict_of(&verdicts, "SR-11");
    assert_eq!(sr11.verdict, Verdict::Fail, "{}", sr11.detail);
    // No fallback and no detector on a gradual breakthrough: the far cortex is reached.
    let mut rig = SimRig::with_config(Config {
        detection_enabled: false,
        missed_pop_ms: 0,
        ..Config::DEFAULT
    });
    let (_, _, verdicts) = trial(
        &mut rig,
        &suite,
        scenario(&suite, "missed-pop-gradual-breakthrough"),
        0,
    );
    assert_eq!(verdict_of(&verdicts, "SR-10").verdict, Verdict::Fail);
    assert_eq!(verdict_of(&verdicts, "SR-04").verdict, Verdict::Fail);
}

#[test]
fn a_protective_stop_without_a_latched_fault_fails_its_fault_clause() {
    let suite = suite(&["protections"]);
    let mut rig = SimRig::default();
    for (id, requirement, clause) in [
        ("stall-locked-rotor", "SR-07", "SR-07.b"),
        ("endless-cortex-over-time", "SR-08", "SR-08.b"),
        ("low-battery-start", "SR-11", "SR-11.a"),
    ] {
        let scenario = scenario(&suite, id);
        let (mut trace, m, verdicts) = trial(&mut rig, &suite, scenario, 0);
        assert!(m.fault_latched, "{id}: the shipped core latches a fault");
        let shipped = verdict_of(&verdicts, requirement);
        assert_eq!(shipped.verdict, Verdict::Pass, "{id}: {}", shipped.detail);
        // The same stop, reported as a plain stop (the firmware's `fault` event gone, Braking
        // instead of Fault), as a core whose `StopReason::is_fault` said no would report it.
        trace
            .events
            .retain(|e| !(e.source == EventSource::Firmware && e.kind == "fault"));
        for state in &mut trace.samples.state {
            if *state == driver_core::State::Fault as u8 {
                *state = driver_core::State::Braking as u8;
            }
        }
        assert!(iohil::consistency::contradictions(&trace).is_empty());
        let m = measure(&trace, 0.05);
        assert!(!m.fault_latched);
        let verdicts = evaluate_trial(&trace, &m, scenario, &suite.requirements);
        let v = verdict_of(&verdicts, requirement);
        assert_eq!(v.verdict, Verdict::Fail, "{id}: {}", v.detail);
        let c = v
            .clauses
            .iter()
            .find(|c| c.clause == clause)
            .unwrap_or_else(|| panic!("{id}: no clause {clause}"));
        assert_eq!(c.verdict, Verdict::Fail, "{id}: {}", c.detail);
        assert!(c.detail.contains("fault"), "{id}: {}", c.detail);
    }
}

#[test]
fn firmware_events_that_contradict_its_own_states_make_the_trial_inconclusive() {
    let suite = suite(&["operator"]);
    let mut rig = SimRig::default();
    let scenario = scenario(&suite, "adult-release-after-stop");
    let (trace, _, verdicts) = trial(&mut rig, &suite, scenario, 0);
    assert_eq!(
        iohil::consistency::contradictions(&trace),
        Vec::<String>::new()
    );
    for v in &verdicts {
        assert_eq!(v.verdict, Verdict::Pass, "{}: {}", v.requirement, v.detail);
    }
    let firmware = |t: &Trace, kind: &str| {
        t.events
            .iter()
            .position(|e| e.source == EventSource::Firmware && e.kind == kind)
            .unwrap_or_else(|| panic!("no `{kind}` event"))
    };
    let period = trace.sample_period_s;
    type Edit = fn(&mut Trace, usize, f64);
    fn dropped(t: &mut Trace, k: usize, _: f64) {
        t.events.remove(k);
    }
    let cases: [(&str, &str, Edit); 7] = [
        // A detection whose own event is not reported.
        (
            "breakthrough",
            "a motor-off for `breakthrough` without the `breakthrough` event",
            dropped,
        ),
        // A start, and a stop, that the core does not report.
        (
            "started",
            "idle -> blanking without the `started` event",
            dropped,
        ),
        (
            "motor_off",
            "cortex -> braking without the `motor_off` event",
            dropped,
        ),
        // A core that never reports `done`.
        ("done", "braking -> done without the `done` event", dropped),
        // The release after the stop, outside a run, unreported.
        (
            "trigger_released",
            "without the `trigger_released` event",
            dropped,
        ),
        // The release reported on two ticks in a row.
        (
            "trigger_released",
            "reported again with no press since the last",
            |t, k, period| {
                let mut again = t.events[k].clone();
                again.t_s += period;
                t.events.insert(k + 1, again);
            },
        ),
        // The release reported a tick before the trigger was let go.
        (
            "trigger_released",
            "reported with the trigger pressed",
            |t, k, _| {
                let released = t.samples.trigger.iter().rposition(|&p| p).unwrap();
                t.events[k].t_s = t.samples.t_s[released];
            },
        ),
    ];
    for (kind, expected, edit) in cases {
        let mut tampered = trace.clone();
        let k = firmware(&tampered, kind);
        edit(&mut tampered, k, period);
        tampered.events.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
        let found = iohil::consistency::contradictions(&tampered);
        assert!(
            found.iter().any(|c| c.contains(expected)),
            "{kind}: {found:?}"
        );
        let m = measure(&tampered, 0.05);
        for v in evaluate_trial(&tampered, &m, scenario, &suite.requirements) {
            assert_eq!(v.verdict, Verdict::Inconclusive, "{kind}: {}", v.detail);
            assert!(
                v.detail.contains("telemetry contradicts itself"),
                "{kind}: {}",
                v.detail
            );
        }
    }
}

/// A rig that fails on a chosen trial, to check that evidence already recorded survives.
struct FaultyRig {
    inner: SimRig,
    fail_on_call: usize,
    calls: usize,
}

impl Rig for FaultyRig {
    fn identity(&self) -> RigIdentity {
        self.inner.identity()
    }

    fn run_trial(&mut self, scenario: &Scenario, trial: u32) -> Result<Trace, RigError> {
        self.calls += 1;
        if self.calls == self.fail_on_call {
            return Err(RigError {
                rig: "sim".to_owned(),
                scenario: scenario.id.clone(),
                trial,
                message: "load controller link lost".to_owned(),
            });
        }
        self.inner.run_trial(scenario, trial)
    }
}

#[test]
fn a_rig_fault_makes_the_trial_inconclusive_and_keeps_earlier_evidence() {
    let suite = suite(&[
        "reference/adult-proximal-tibia.yaml",
        "reference/osteoporotic-tibia.yaml",
    ]);
    let reports = tempfile::tempdir().expect("tempdir");
    let mut rig = FaultyRig {
        inner: SimRig::default(),
        fail_on_call: 2,
        calls: 0,
    };
    let results = run(&suite, &mut rig, reports.path(), "faulty");
    let first = &results.scenarios[0];
    assert_eq!(first.verdict, Some(Verdict::Pass));
    let second = &results.scenarios[1];
    assert_eq!(second.verdict, Some(Verdict::Inconclusive));
    assert!(second
        .verdicts
        .iter()
        .all(|v| v.detail.contains("load controller link lost")));
    assert_eq!(results.summary.exit_code, 3);
    let trace = reports
        .path()
        .join("faulty")
        .join(&first.trials[0].trace_file);
    assert!(trace.exists());
}

#[test]
fn results_are_on_disk_after_every_trial() {
    let suite = suite(&["operator/dense-young-tibia-oscillation.yaml"]);
    let reports = tempfile::tempdir().expect("tempdir");
    let results_path = reports.path().join("progressive").join("results.json");
    let mut seen = Vec::new();
    let options = RunOptions {
        reports_dir: reports.path().to_owned(),
        run_id: Some("progressive".to_owned()),
    };
    run_suite(&suite, &mut SimRig::default(), &options, |_, trial| {
        // Called after the trial is evaluated; its predecessors are already on disk.
        let on_disk = RunResults::read(&results_path).expect("results.json readable mid-run");
        assert!(!on_disk.complete);
        let recorded = on_disk.scenarios.first().map_or(0, |s| s.trials.len());
        seen.push((trial.trial, recorded));
    })
    .expect("run");
    for (trial, recorded) in seen {
        assert_eq!(
            recorded as u32, trial,
            "trials on disk when trial {trial} finished"
        );
    }
    assert!(RunResults::read(&results_path).expect("final").complete);
}

/// One test per shipped scenario file: it loads, runs on the sim rig, and every verdict passes.
/// The known residual anomalies (`scenarios/known-anomalies/`, which must keep failing under
/// their register entry) are `known_anomalies.rs`'s.
#[rstest::rstest]
fn each_shipped_scenario_passes(
    #[files("../scenarios/**/*.yaml")]
    #[exclude("requirements.yaml|profiles.yaml|tolerances.yaml|anomalies.yaml|known-anomalies/")]
    path: PathBuf,
) {
    let suite = match load_suite(std::slice::from_ref(&path)) {
        Ok(suite) => suite,
        Err(error) => panic!("{}: {error}", path.display()),
    };
    let reports = tempfile::tempdir().expect("tempdir");
    let results = run(&suite, &mut SimRig::default(), reports.path(), "file");
    for s in &results.scenarios {
        for v in &s.verdicts {
            assert_eq!(
                v.verdict,
                Verdict::Pass,
                "{} {}: {}",
                s.id,
                v.requirement,
                v.detail
            );
        }
    }
}
