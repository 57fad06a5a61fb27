//! The bench rig end to end without hardware: `iohil loadsim` (the virtual load controller, a
//! separate process on a real pseudo-terminal) and `iohil run --rig bench` with the fake target
//! (the control core in real time behind the probe trait, emitting the real telemetry frames).
//! Every fault the rig must survive is injected here and must end in the safe state with the
//! evidence of completed trials intact.
//!
//! The fake target stands in for the board firmware whose ELF the rig file names (its identity
//! record goes into the boot frame), so these tests need the board ELF; see `emu_rig.rs` for
//! `IOHIL_BOARD_ELF` and `IOHIL_REQUIRE_BOARD_ELF`.

mod common;
use common::{iohil, repo, text};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iohil::run::RunResults;
use iohil::trace::Trace;
use iohil::verdict::Verdict;

/// The bench tests run in real time, two processes each: one at a time, so that a 2-core
/// runner keeps their timing (and a failing one does not take another with it).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn board_elf() -> Option<PathBuf> {
    common::board_elf("IOHIL_BOARD_ELF", iohil::firmware::DEFAULT_ELF)
}

/// A running `iohil loadsim`, its output collected.
struct Loadsim {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
    rig_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Loadsim {
    fn start(elf: &Path, extra: &[&str]) -> Loadsim {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_iohil"))
            .arg("loadsim")
            .arg("--dir")
            .arg(dir.path())
            .arg("--elf")
            .arg(elf)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("loadsim starts");
        let stdout = child.stdout.take().expect("stdout");
        let output = Arc::new(Mutex::new(Vec::new()));
        {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let rig_file = loop {
            if let Some(line) = output
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.trim_start().starts_with("rig file:"))
            {
                break PathBuf::from(line.split_once(':').unwrap().1.trim());
            }
            assert!(Instant::now() < deadline, "loadsim printed no rig file");
            std::thread::sleep(Duration::from_millis(20));
        };
        Loadsim {
            child,
            output,
            rig_file,
            dir,
        }
    }

    fn printed(&self, needle: &str) -> bool {
        self.output
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Appends `text` to the rig file's `fake:` section (the file ends with it).
    fn inject(&self, text: &str) {
        let mut rig = std::fs::read_to_string(&self.rig_file).unwrap();
        rig.push_str(text);
        std::fs::write(&self.rig_file, rig).unwrap();
    }

    fn reports(&self) -> PathBuf {
        self.dir.path().join("reports")
    }

    fn run_args<'a>(&'a self, scenarios: &[&'a str]) -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            "--rig",
            "bench",
            "--rig-file",
            self.rig_file.to_str().unwrap(),
            "--no-progress",
            "--reports",
            self.reports().to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(scenarios.iter().map(|s| (*s).to_owned()));
        args
    }

    fn run(&self, scenarios: &[&str]) -> Output {
        let args = self.run_args(scenarios);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        iohil(&args)
    }

    fn results(&self) -> RunResults {
        RunResults::read(&self.reports().join("latest/results.json")).expect("results.json")
    }
}

impl Drop for Loadsim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Per scenario, per requirement: the verdicts of a run.
fn verdicts(results: &RunResults) -> Vec<(String, String, Verdict)> {
    results
        .scenarios
        .iter()
        .flat_map(|s| {
            s.verdicts
                .iter()
                .map(move |v| (s.id.clone(), v.requirement.clone(), v.verdict))
        })
        .collect()
}

fn verify_ok(run_dir: &Path) {
    let out = iohil(&["verify", run_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

const SHORT: &str = "scenarios/reference/osteoporotic-tibia.yaml";
const SHORT_2: &str = "scenarios/reference/pediatric-proximal-tibia.yaml";

#[test]
fn reference_scenarios_on_the_virtual_bench_give_the_sim_rig_verdicts() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let sim = tempfile::tempdir().unwrap();
    let out = iohil(&[
        "run",
        "scenarios/reference",
        "--no-progress",
        "--reports",
        sim.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sim_results = RunResults::read(&sim.path().join("latest/results.json")).unwrap();

    let load = Loadsim::start(&elf, &[]);
    let out = load.run(&["scenarios/reference"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let bench = load.results();
    assert!(bench.complete && bench.aborted.is_none());
    assert_eq!(bench.rig.kind, "bench");
    assert_eq!(verdicts(&bench), verdicts(&sim_results));
    for s in &bench.scenarios {
        for t in &s.trials {
            assert!(t.anomalies.is_empty(), "{}: {:?}", s.id, t.anomalies);
            let err = t.clock_error_ms.expect("clock alignment per trial");
            assert!(err > 0.0 && err <= 1.0, "{}: clock error {err} ms", s.id);
            // The bench's detection happens where the sim's does, within a tick or two of
            // phase and alignment.
            let sim_t = sim_results.scenarios.iter().find(|x| x.id == s.id).unwrap();
            let (a, b) = (
                t.measurements.detection_latency_ms,
                sim_t.trials[0].measurements.detection_latency_ms,
            );
            if let (Some(a), Some(b)) = (a, b) {
                assert!(
                    (a - b).abs() <= 2.5,
                    "{}: latency bench {a} ms, sim {b} ms",
                    s.id
                );
            }
        }
    }
    assert!(load.printed("armed") && load.printed("start at"));
    verify_ok(&load.reports().join("latest"));
    let html = std::fs::read_to_string(load.reports().join("latest/report.html")).unwrap();
    assert!(
        html.contains("clock alignment"),
        "the report shows the alignment per trial"
    );
    assert!(
        html.contains("iohil-loadsim"),
        "the report names the load controller"
    );
}

#[test]
fn a_drifting_board_clock_is_aligned_and_measured() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // The longest reference trial (about 3.8 s): two edges 0.75 ms uncertain each give the
    // rate to about +-400 ppm.
    for (drift, tolerance) in [(100.0, 500.0), (8000.0, 500.0)] {
        let load = Loadsim::start(&elf, &["--board-drift-ppm", &format!("{drift}")]);
        let out = load.run(&["scenarios/reference/dense-young-tibia.yaml"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let results = load.results();
        let t = &results.scenarios[0].trials[0];
        let trace: Trace = serde_json::from_slice(
            &std::fs::read(load.reports().join("latest").join(&t.trace_file)).unwrap(),
        )
        .unwrap();
        let clock = trace.clock.expect("alignment recorded");
        assert_eq!(clock.method, "fit");
        assert!(
            (clock.drift_ppm - drift).abs() <= tolerance,
            "injected {drift} ppm, measured {} ppm",
            clock.drift_ppm
        );
        assert!(clock.error_bound_ms <= 1.0, "{clock:?}");
        // The board booted at an arbitrary load time: a real offset was found.
        assert!(clock.offset_us.abs() > 1000.0, "{clock:?}");
    }
}

#[test]
fn no_probe_exits_2_quickly_and_says_what_was_looked_for() {
    let start = Instant::now();
    let out = iohil(&[
        "run",
        "--rig",
        "bench",
        "--rig-file",
        "harness/rigs/example-bench.yaml",
        "scenarios/reference",
    ]);
    let took = start.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(err.contains("0483:374e:002C00283137510A"), "{err}");
    assert!(err.to_lowercase().contains("probe"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_expired_calibration_is_refused_unless_overridden_and_then_inconclusive() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let load = Loadsim::start(&elf, &["--calibration-due", "2020-01-31"]);
    let out = load.run(&[SHORT]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("expired on 2020-01-31"), "{err}");
    assert!(err.contains("--allow-expired-calibration"), "{err}");

    let mut args = load.run_args(&[SHORT]);
    args.push("--allow-expired-calibration".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = iohil(&args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let results = load.results();
    assert!(results
        .rig
        .details
        .iter()
        .any(|(k, v)| k == "load_calibration" && v.contains("EXPIRED")));
    let trial = &results.scenarios[0].trials[0];
    assert!(trial.anomalies.iter().any(|a| a.contains("calibration")));
    assert!(!trial.verdicts.is_empty());
    assert!(trial
        .verdicts
        .iter()
        .all(|v| v.verdict == Verdict::Inconclusive));
}

/// Starts a bench run in the background.
fn spawn_run(load: &Loadsim, scenarios: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args(load.run_args(scenarios))
        .current_dir(repo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts")
}

/// Waits until the run directory holds `n` recorded trials.
fn wait_for_trials(load: &Loadsim, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let done = RunResults::read(&load.reports().join("latest/results.json"))
            .map(|r| r.scenarios.iter().map(|s| s.trials.len()).sum::<usize>())
            .unwrap_or(0);
        if done >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {n} trial(s) within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks an aborted run: exit code, the abort recorded, the completed trial intact, the
/// load emergency-stopped, the report saying so and the manifest verifying.
fn assert_aborted(load: &Loadsim, out: &Output, reason: &str, completed: usize) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("RUN ABORTED"), "{err}");
    let results = load.results();
    assert_eq!(results.summary.verdict, Some(Verdict::Incomplete));
    assert_eq!(results.summary.exit_code, 4);
    let aborted = results.aborted.clone().expect("abort recorded");
    assert!(aborted.contains(reason), "{aborted}");
    assert!(!results.complete);
    let trials: Vec<_> = results.scenarios.iter().flat_map(|s| &s.trials).collect();
    assert_eq!(trials.len(), completed + 1, "{trials:#?}");
    for t in &trials[..completed] {
        assert!(!t.verdicts.is_empty());
        assert!(
            t.verdicts.iter().all(|v| v.verdict == Verdict::Pass),
            "{t:#?}"
        );
        assert!(!t.trace_file.is_empty());
    }
    let last = trials[completed];
    assert!(
        last.anomalies.iter().any(|a| a.contains("aborted")),
        "{last:#?}"
    );
    assert!(!last.verdicts.is_empty());
    assert!(last
        .verdicts
        .iter()
        .all(|v| v.verdict == Verdict::Inconclusive));
    let run_dir = load.reports().join("latest");
    verify_ok(&run_dir);
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("RUN ABORTED"), "the report records the abort");
    assert!(html.contains("Overall verdict: <span class=\"verdict INCOMPLETE\">INCOMPLETE"));
}

#[test]
fn sigterm_and_sigint_stop_the_rig_safely_and_keep_completed_trials() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    for (signal, name) in [("TERM", "SIGTERM"), ("INT", "SIGINT")] {
        let load = Loadsim::start(&elf, &[]);
        let run = spawn_run(&load, &[SHORT, SHORT_2, SHORT]);
        wait_for_trials(&load, 1, Duration::from_secs(30));
        // A second run on the same rig is refused while this one holds it.
        let busy = load.run(&[SHORT]);
        assert_eq!(busy.status.code(), Some(2));
        assert!(
            text(&busy.stderr).contains("is busy"),
            "{}",
            text(&busy.stderr)
        );
        std::thread::sleep(Duration::from_millis(400));
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &run.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = run.wait_with_output().unwrap();
        assert_aborted(&load, &out, name, 1);
        assert!(
            load.printed("EMERGENCY STOP"),
            "the load got its emergency stop"
        );
    }
}

#[test]
fn a_load_fault_a_lost_link_and_a_lost_probe_end_in_the_safe_state() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // The load faults 700 ms into the second trial's playback... of every trial: the first
    // trial (osteoporotic, about 1 s) is too long, so use the fault on the second run only.
    let load = Loadsim::start(&elf, &["--load-fault-after", "600ms"]);
    let out = load.run(&[SHORT]);
    assert_aborted(&load, &out, "load fault", 0);

    // The serial link goes away (the controller is unplugged) during playback: about 16
    // requests set the trial up, then STATUS polls every 100 ms.
    let load = Loadsim::start(&elf, &["--hang-up-after", "20"]);
    let out = load.run(&[SHORT]);
    assert_aborted(&load, &out, "load link lost (STATUS)", 0);

    // The probe stops answering mid-trial: the load still gets its emergency stop.
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    probe_lost_at_ms: 400\n");
    let out = load.run(&[SHORT]);
    assert_aborted(&load, &out, "probe", 0);
    assert!(load.printed("EMERGENCY STOP"));
}

/// The number of a trial's `START` request on the load link, counted from 1 over the run
/// (`HELLO`, `CAL?`, then the trial's `STATUS`, the three profiles' `BEGIN`, `DATA` and `END` of
/// its scenario, `ARM`, `START`).
const START_REQUEST: &str = "14";

#[test]
fn a_hardfault_fails_the_trial_with_its_fault_record_and_the_run_goes_on() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    hard_fault_at_ms: 300\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results = load.results();
    assert!(results.complete && results.aborted.is_none());
    let t = &results.scenarios[0].trials[0];
    assert!(
        t.firmware_faults.iter().any(|f| f.contains("hard_fault")
            && f.contains(&format!(
                "{:#010x}",
                iohil::rig::bench::fake::INJECTED_FAULT_PC
            ))),
        "{:?} (anomalies {:?})",
        t.firmware_faults,
        t.anomalies
    );
    assert!(t.verdicts.iter().all(|v| v.verdict == Verdict::Fail));
    verify_ok(&load.reports().join("latest"));

    // A core that locks up (no record, no frame) fails the same way, from the probe's view.
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    lockup_at_ms: 300\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let t = &load.results().scenarios[0].trials[0];
    assert!(
        t.firmware_faults.iter().any(|f| f.contains("locked up")),
        "{:?}",
        t.firmware_faults
    );
    assert!(!t.verdicts.is_empty());
    assert!(t.verdicts.iter().all(|v| v.verdict == Verdict::Fail));

    // A hung control loop: the board's watchdog resets it, and the restart fails the trial.
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    hang_at_ms: 300\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let t = &load.results().scenarios[0].trials[0];
    assert!(
        t.firmware_faults.iter().any(|f| f.contains("restarted")),
        "{:?}",
        t.firmware_faults
    );
    assert!(!t.verdicts.is_empty());
    assert!(t.verdicts.iter().all(|v| v.verdict == Verdict::Fail));
}

#[test]
fn a_fault_while_start_is_retried_keeps_its_fault_frame() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // START is lost on the way to the load (request START_REQUEST), so the client waits out its
    // timeout (250 ms) and sends it again; meanwhile the board's RTT buffer (made small: 2 KiB, about
    // 60 ticks) must still be read, or the fault frame of the HardFault at 150 ms, and the
    // boot's report of it after the watchdog reset, would be dropped from a full buffer.
    let load = Loadsim::start(&elf, &["--drop-request", START_REQUEST]);
    load.inject("  inject:\n    rtt_bytes: 2048\n    hard_fault_at_ms: 150\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let t = &load.results().scenarios[0].trials[0];
    let pc = format!("{:#010x}", iohil::rig::bench::fake::INJECTED_FAULT_PC);
    assert!(
        t.firmware_faults
            .iter()
            .any(|f| f.starts_with("fault frame: hard_fault") && f.contains(&pc)),
        "{:?} (anomalies {:?})",
        t.firmware_faults,
        t.anomalies
    );
    assert!(
        !t.anomalies.iter().any(|a| a.contains("lost")),
        "{:?}",
        t.anomalies
    );
    assert!(t.verdicts.iter().all(|v| v.verdict == Verdict::Fail));
}

#[test]
fn a_disabled_detector_fails_sr01_on_the_bench_as_on_the_sim() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let suite = iohil::scenario::load::load_suite(&[repo().join(SHORT)]).unwrap();
    let mut sim = iohil::rig::SimRig::with_config(driver_core::Config {
        detection_enabled: false,
        ..driver_core::Config::DEFAULT
    });
    let dir = tempfile::tempdir().unwrap();
    let options = iohil::run::RunOptions {
        reports_dir: dir.path().to_owned(),
        run_id: None,
    };
    let (_, sim_results) = iohil::run::run_suite(&suite, &mut sim, &options, |_, _| {}).unwrap();

    let load = Loadsim::start(&elf, &[]);
    load.inject("  disable_detector: true\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let bench = load.results();
    assert!(!bench.rig.firmware.shipped_config);
    let sr01 = |r: &RunResults| {
        r.scenarios[0]
            .verdicts
            .iter()
            .find(|v| v.requirement == "SR-01")
            .map(|v| v.verdict)
    };
    assert_eq!(sr01(&bench), Some(Verdict::Fail));
    assert_eq!(verdicts(&bench), verdicts(&sim_results));
}

#[test]
fn a_board_that_stops_answering_ends_the_run_in_the_safe_state() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    rtt_stall_at_ms: 400\n");
    let out = load.run(&[SHORT, SHORT_2]);
    assert_aborted(&load, &out, "no telemetry tick", 0);
    assert!(load.printed("EMERGENCY STOP"));
}

#[test]
fn corrupt_readback_is_re_requested_and_a_failed_alignment_is_inconclusive_not_lost() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // Every third READ reply arrives with a bad CRC: re-requested, the evidence complete.
    let load = Loadsim::start(&elf, &["--corrupt-every-nth-read", "3"]);
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = &load.results().scenarios[0].trials[0];
    assert!(t.anomalies.is_empty(), "{:?}", t.anomalies);

    // A tolerance no 2 kHz load can meet: the alignment fails, the trial is INCONCLUSIVE, and
    // its trace (with no alignment recorded) is still readable for the report.
    let load = Loadsim::start(&elf, &[]);
    let mut rig = std::fs::read_to_string(&load.rig_file).unwrap();
    rig.push_str("clock:\n  tolerance_ms: 0.1\n");
    std::fs::write(&load.rig_file, rig).unwrap();
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let results = load.results();
    let t = &results.scenarios[0].trials[0];
    assert!(
        t.anomalies.iter().any(|a| a.contains("clock alignment")),
        "{:?}",
        t.anomalies
    );
    assert_eq!(t.clock_error_ms, None);
    let run_dir = load.reports().join("latest");
    let trace: Trace =
        serde_json::from_slice(&std::fs::read(run_dir.join(&t.trace_file)).unwrap()).unwrap();
    assert!(trace.clock.is_none() && !trace.samples.is_empty());
    verify_ok(&run_dir);
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(!html.contains("trace unreadable"));
}

#[test]
fn sigkill_mid_run_keeps_completed_trials_and_the_load_stops_by_its_watchdog() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let load = Loadsim::start(&elf, &[]);
    let mut run = spawn_run(&load, &[SHORT, SHORT_2, SHORT]);
    wait_for_trials(&load, 1, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    // No handler runs: the process is gone mid-trial.
    run.kill().expect("SIGKILL");
    let _ = run.wait();
    // The load's link watchdog (500 ms without a request) stops it by itself.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !load.printed("EMERGENCY STOP") {
        assert!(
            Instant::now() < deadline,
            "the load never stopped by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let run_dir = std::fs::canonicalize(load.reports().join("latest")).unwrap();
    let results = load.results();
    assert!(!results.complete);
    let recorded: Vec<_> = results.scenarios.iter().flat_map(|s| &s.trials).collect();
    assert!(!recorded.is_empty());
    for t in &recorded {
        // Every recorded trial's trace is on disk with the hash results.json gives it.
        let bytes = std::fs::read(run_dir.join(&t.trace_file)).expect("trace on disk");
        assert_eq!(iohil::sha256_hex(&bytes), t.trace_sha256);
    }
    // The report can still be built, and says what is missing.
    let out = iohil(&["report", run_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("INCOMPLETE RUN"),
        "the report says the run was interrupted"
    );
    verify_ok(&run_dir);
    // The killed run's lock died with it: the rig is free again.
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_short_soak_reports_memory_and_no_loss() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    let load = Loadsim::start(&elf, &[]);
    let out = iohil(&[
        "soak",
        "--rig-file",
        load.rig_file.to_str().unwrap(),
        "--duration",
        "4s",
        "--scenarios",
        SHORT,
        "--reports",
        load.reports().to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("lost samples/frames: 0"), "{stdout}");
    assert!(stdout.contains("soak: PASS"), "{stdout}");
    let csv = std::fs::read_dir(load.reports())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "csv"))
        .expect("soak csv");
    let rows = std::fs::read_to_string(csv).unwrap();
    let lines: Vec<&str> = rows.lines().collect();
    assert!(lines.len() >= 3, "{rows}");
    assert!(lines[0].starts_with("elapsed_s,trial,scenario"));
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells[4], "0", "losses in {row}");
        assert!(
            cells[6].parse::<u64>().unwrap() > 0,
            "memory recorded in {row}"
        );
    }
}

#[test]
fn rtt_overflow_is_inconclusive_and_load_link_noise_is_survived() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // The telemetry buffer overflows at 400 ms: a frame is dropped, the sequence numbers show
    // the gap, and the trial is INCONCLUSIVE (never a silent hole).
    let load = Loadsim::start(&elf, &[]);
    load.inject("  inject:\n    rtt_overflow_at_ms: 400\n");
    let out = load.run(&[SHORT]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let t = &load.results().scenarios[0].trials[0];
    assert!(
        t.anomalies
            .iter()
            .any(|a| a.contains("telemetry frame(s) lost")),
        "{:?}",
        t.anomalies
    );
    assert!(!t.verdicts.is_empty());
    assert!(t
        .verdicts
        .iter()
        .all(|v| v.verdict == Verdict::Inconclusive));
    verify_ok(&load.reports().join("latest"));

    // Garbage bytes before a reply and a reply that never comes (request 25: a STATUS during
    // playback) are absorbed by the client's resynchronisation and retries: the trial passes.
    for flags in [["--garbage-before-reply", "10"], ["--drop-reply", "25"]] {
        let load = Loadsim::start(&elf, &flags);
        let out = load.run(&[SHORT]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        let t = &load.results().scenarios[0].trials[0];
        assert!(t.anomalies.is_empty(), "{flags:?}: {:?}", t.anomalies);
    }
}

#[test]
fn a_load_that_overruns_its_duration_times_the_trial_out_into_the_safe_state() {
    let _serial = one_at_a_time();
    let Some(elf) = board_elf() else { return };
    // A 1 s scenario on the adult tibia (its pop comes at about 2 s), a load that never ends
    // its playback, and a 0.2 s margin: the trial times out while the needle still drills.
    let suite = tempfile::tempdir().unwrap();
    for f in ["requirements.yaml", "profiles.yaml"] {
        std::fs::copy(repo().join("scenarios").join(f), suite.path().join(f)).unwrap();
    }
    let mut scenario =
        std::fs::read_to_string(repo().join("scenarios/reference/adult-proximal-tibia.yaml"))
            .unwrap();
    scenario.push_str("duration_s: 1.0\n");
    let path = suite.path().join("short-tibia.yaml");
    std::fs::write(&path, scenario).unwrap();
    let load = Loadsim::start(&elf, &["--never-end"]);
    let mut rig = std::fs::read_to_string(&load.rig_file).unwrap();
    rig.push_str("trial_timeout_margin_s: 0.2\n");
    std::fs::write(&load.rig_file, rig).unwrap();
    let out = load.run(&[path.to_str().unwrap()]);
    assert_aborted(&load, &out, "timeout", 0);
    assert!(load.printed("EMERGENCY STOP"));
}
