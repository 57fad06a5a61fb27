//! The `emu` rig: the board ELF in the instruction-set emulator, against the `sim` rig.
//!
//! The ELF tests use `IOHIL_BOARD_ELF` (default: the release build of
//! `firmware-under-test/board/build.sh`), `IOHIL_BOARD_ELF_BROKEN` and `IOHIL_BOARD_ELF_PANIC`
//! (default: the `--broken-detector` and `--test-panic` test builds). Without them they say `skipped` and return, unless
//! `IOHIL_REQUIRE_BOARD_ELF=1` (set by `.ci/run`, which builds both first).

mod common;
use common::repo;

use std::path::PathBuf;
use std::process::Command;

use iohil::rig::emu::stm32::TIM1_BDTR;
use iohil::rig::{EmuRig, Rig, SimRig};
use iohil::run::{run_suite, RunOptions, RunResults};
use iohil::scenario::load::load_suite;
use iohil::trace::{EventSource, Trace};
use iohil::verdict::Verdict;

fn elf(variable: &str, default: &str) -> Option<PathBuf> {
    common::board_elf(variable, default)
}

fn shipped_elf() -> Option<PathBuf> {
    elf("IOHIL_BOARD_ELF", iohil::firmware::DEFAULT_ELF)
}

fn broken_elf() -> Option<PathBuf> {
    elf(
        "IOHIL_BOARD_ELF_BROKEN",
        "firmware-under-test/board/target/test-builds/iohil-board-broken-detector-release.elf",
    )
}

fn run(rig: &mut dyn Rig, scenarios: &str) -> (tempfile::TempDir, RunResults) {
    let suite = load_suite(&[repo().join(scenarios)]).expect("suite");
    let dir = tempfile::tempdir().unwrap();
    let options = RunOptions {
        reports_dir: dir.path().to_owned(),
        run_id: Some("r".to_owned()),
    };
    let (_, results) = run_suite(&suite, rig, &options, |_, _| {}).expect("run");
    (dir, results)
}

fn trace(dir: &tempfile::TempDir, file: &str) -> Trace {
    iohil::snapshot::read_trace(&dir.path().join("r"), file).expect("trace")
}

fn detection_ms(trace: &Trace) -> Option<f64> {
    trace
        .first_event(EventSource::Firmware, "breakthrough")
        .map(|t| (t * 1000.0).round())
}

#[test]
fn reference_scenarios_get_the_verdicts_of_sim_and_the_elf_computes_as_the_host_core() {
    let Some(path) = shipped_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    let (emu_dir, emu_results) = run(&mut emu, "scenarios/reference");
    let (sim_dir, sim_results) = run(&mut SimRig::default(), "scenarios/reference");
    assert_eq!(emu_results.scenarios.len(), 5);
    for (e, s) in emu_results.scenarios.iter().zip(&sim_results.scenarios) {
        assert_eq!(e.id, s.id);
        let verdicts = |r: &iohil::run::ScenarioResult| {
            r.verdicts
                .iter()
                .map(|v| (v.requirement.clone(), v.verdict))
                .collect::<Vec<_>>()
        };
        assert_eq!(verdicts(e), verdicts(s), "{}", e.id);
        assert_eq!(e.verdict, Some(Verdict::Pass), "{}: {:?}", e.id, e.verdicts);
        for (te, ts) in e.trials.iter().zip(&s.trials) {
            assert!(te.anomalies.is_empty(), "{}: {:?}", e.id, te.anomalies);
            let (emu_trace, sim_trace) = (
                trace(&emu_dir, &te.trace_file),
                trace(&sim_dir, &ts.trace_file),
            );
            // Bit-identical core: the host build of driver-core, fed the inputs the emulated
            // board measured, commands exactly what the ELF commanded, tick by tick.
            let es = &emu_trace.samples;
            let mut host = driver_core::Controller::new(driver_core::Config::DEFAULT);
            for k in 0..es.len() {
                let out = host.step(&driver_core::Inputs {
                    tick: k as u32,
                    motor_current_ma: es.measured_current_ma[k],
                    battery_mv: es.measured_battery_mv[k],
                    trigger_pressed: es.trigger[k],
                });
                assert_eq!(
                    (out.state as u8, out.duty_permille, out.brake),
                    (es.state[k], es.duty_permille[k], es.brake[k]),
                    "{}: tick {k}: the host core and the ELF disagree",
                    e.id
                );
            }
            // Across rigs the inputs differ a little (the emulated board meets the plant at its
            // own ADC instants, see below), so the decision may move by one control tick.
            let tick = detection_ms(&emu_trace);
            assert!(tick.is_some(), "{}: no detection on emu", e.id);
            let sim_tick = detection_ms(&sim_trace).expect("detection on sim");
            assert!(
                (tick.unwrap_or(0.0) - sim_tick).abs() <= 1.0,
                "{}: emu {tick:?} ms, sim {sim_tick} ms",
                e.id
            );
            // What the firmware measured differs by at most 25 mA (about 6 ADC counts, 3 % of
            // a cortex load current; 16 mA seen) except in the ticks
            // right after a drive change (start, brake), where the few microseconds the control
            // interrupt takes on the emulated board before its command reaches the motor shift
            // a 6 A inrush or a braking current.
            let s = &sim_trace.samples;
            let settled = |i: usize| {
                (i.saturating_sub(3)..=i).all(|k| {
                    k == 0
                        || (s.duty_permille[k] == s.duty_permille[k - 1]
                            && s.brake[k] == s.brake[k - 1])
                })
            };
            let worst = emu_trace
                .samples
                .measured_current_ma
                .iter()
                .zip(&s.measured_current_ma)
                .enumerate()
                .filter(|(i, _)| settled(*i))
                .map(|(_, (a, b))| (a - b).abs())
                .max()
                .unwrap_or(0);
            assert!(
                worst <= 25,
                "{}: settled inputs differ by up to {worst} mA",
                e.id
            );
        }
    }
}

#[test]
fn the_emulated_trace_carries_identity_logs_and_cpu_time() {
    let Some(path) = shipped_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    let (dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let trial = &results.scenarios[0].trials[0];
    let t = trace(&dir, &trial.trace_file);
    assert_eq!(t.rig, "emu");
    assert!(t.firmware.version.contains(&emu.image.sha256));
    assert!(t.firmware.shipped_config);
    // The firmware's own log lines (RTT channel 1) are in the trace.
    let logs: Vec<&str> = t
        .events
        .iter()
        .filter(|e| e.kind == "log")
        .filter_map(|e| e.detail.as_deref())
        .collect();
    assert!(logs[0].starts_with("iohil-board 0.1.0 core"), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("cortex -> braking (breakthrough)")),
        "{logs:?}"
    );
    // CPU time per control interrupt, against its 170 000-cycle budget.
    let max = trial.measurements.control_isr_cycles_max.expect("measured");
    let p99 = trial.measurements.control_isr_cycles_p99.expect("measured");
    assert!(
        p99 <= max && max > 500.0 && max < 17_000.0,
        "p99 {p99} max {max}"
    );
    assert_eq!(t.samples.isr_cycles.len(), t.samples.len());
    // Deterministic: the same trial again gives the same trace.
    let (dir2, results2) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    assert_eq!(
        std::fs::read(dir.path().join("r").join(&trial.trace_file)).unwrap(),
        std::fs::read(
            dir2.path()
                .join("r")
                .join(&results2.scenarios[0].trials[0].trace_file)
        )
        .unwrap()
    );
}

#[test]
fn a_firmware_with_a_broken_detector_fails_on_emu() {
    let Some(path) = broken_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    assert!(emu.image.test_build);
    assert!(!emu.identity().firmware.shipped_config);
    let (_dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let scenario = &results.scenarios[0];
    let sr01 = scenario
        .verdicts
        .iter()
        .find(|v| v.requirement == "SR-01")
        .unwrap();
    assert_eq!(sr01.verdict, Verdict::Fail, "{sr01:?}");
    assert!(scenario.trials[0].anomalies.is_empty());
}

#[test]
fn an_unmodelled_register_stops_the_trial_with_address_and_pc() {
    let Some(path) = shipped_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    emu.unmodelled = Some(TIM1_BDTR);
    let (_dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let trial = &results.scenarios[0].trials[0];
    let anomaly = trial.anomalies.join("; ");
    assert!(anomaly.contains("at 0x40012c44"), "{anomaly}");
    assert!(anomaly.contains("not modelled; PC 0x080"), "{anomaly}");
    assert!(trial
        .verdicts
        .iter()
        .all(|v| v.verdict == Verdict::Inconclusive));
    assert!(trial.firmware_faults.is_empty());
}

#[test]
fn a_firmware_panic_is_a_fail_with_its_fault_record() {
    let Some(path) = elf(
        "IOHIL_BOARD_ELF_PANIC",
        "firmware-under-test/board/target/test-builds/iohil-board-test-panic-release.elf",
    ) else {
        return;
    };
    let mut emu = EmuRig::load(&path).expect("ELF");
    let (dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let trial = &results.scenarios[0].trials[0];
    let t = trace(&dir, &trial.trace_file);
    // The fault path ran on the emulated MCU: drive off, record written with the tick.
    assert_eq!(
        t.firmware_faults.len(),
        1,
        "{:?} / {:?}",
        t.firmware_faults,
        t.anomalies
    );
    let fault = &t.firmware_faults[0];
    assert!(
        fault.starts_with("fault record in RAM: panic at PC"),
        "{fault}"
    );
    assert!(fault.contains("tick 300"), "{fault}");
    for v in &trial.verdicts {
        assert_eq!(v.verdict, Verdict::Fail, "{v:?}");
        assert!(v.detail.starts_with("firmware fault: "), "{v:?}");
    }
    // The report lists it with the anomalies a reviewer must read.
    let model = iohil::report::build(&dir.path().join("r")).expect("report");
    assert!(model.anomalies.iter().any(|a| a
        .cause
        .starts_with("firmware fault (the trial FAILs): fault record in RAM: panic")));
}

#[test]
fn lost_current_sensing_latches_a_fault_that_removes_drive() {
    let Some(path) = shipped_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    emu.adc_stops_at_s = Some(0.3);
    let (dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let trial = &results.scenarios[0].trials[0];
    let t = trace(&dir, &trial.trace_file);
    assert!(
        trial
            .firmware_faults
            .iter()
            .any(|f| f.starts_with("board fault bits 0x0002")),
        "{:?}",
        trial.firmware_faults
    );
    assert!(trial.verdicts.iter().all(|v| v.verdict == Verdict::Fail));
    // Driving before the fault, at rest 300 ms after it although the trigger is still held.
    let speed_at = |s: f64| {
        let i = t.samples.t_s.iter().position(|&x| x >= s).unwrap();
        t.samples.speed_rpm[i]
    };
    assert!(speed_at(0.29) > 500.0, "{}", speed_at(0.29));
    assert!(speed_at(0.65) < 1.0, "{}", speed_at(0.65));
    assert!(t.samples.trigger[t.samples.len() - 1]);
}

#[test]
fn a_hung_control_tick_is_caught_by_the_watchdog_model() {
    let Some(path) = shipped_elf() else { return };
    let mut emu = EmuRig::load(&path).expect("ELF");
    emu.hang_control_at_s = Some(0.2);
    let (_dir, results) = run(&mut emu, "scenarios/reference/adult-proximal-tibia.yaml");
    let trial = &results.scenarios[0].trials[0];
    let fault = trial.firmware_faults.join("; ");
    // The firmware refreshes at every tick; the last one ran at 199 ms, the 15 ms timeout
    // expires between the events at 214 and 215 ms.
    assert!(fault.contains("independent watchdog reset"), "{fault}");
    assert!(fault.contains("timeout 15.0 ms"), "{fault}");
    assert!(
        fault.starts_with("at t = 0.214") || fault.starts_with("at t = 0.215"),
        "{fault}"
    );
    // A hung firmware is a firmware failure, not a rig anomaly.
    assert!(trial.anomalies.is_empty(), "{:?}", trial.anomalies);
    assert!(trial.verdicts.iter().all(|v| v.verdict == Verdict::Fail));
}

#[test]
fn emu_without_an_elf_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args([
            "run",
            "scenarios/reference",
            "--rig",
            "emu",
            "--elf",
            "/nonexistent/iohil-board",
            "--no-progress",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot use firmware ELF /nonexistent/iohil-board"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: build it with firmware-under-test/board/build.sh"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(["run", "scenarios/reference", "--elf", "x.elf"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
