//! The load link end to end over a real pseudo-terminal: the virtual controller serves the
//! pty master in a task, the client opens the slave by its path with tokio-serial, as the
//! bench rig opens a real port. Every await is bounded, so a hang fails instead of stalling.
#![cfg(unix)]

use std::future::Future;
use std::time::Duration;

use iohil::loadlink::protocol::{crc32, MAX_READ_COUNT};
use iohil::loadlink::server::open_pty;
use iohil::loadlink::{
    serve, ClientOptions, Controller, ControllerClock, InjectedFaults, LinkError, LoadClient,
    LoadState, ProfileKind, ScriptedPlayback, ServeEnd, ServeOptions,
};
use tokio::task::JoinHandle;

/// The controller clock reads this at the start of each test (unlike the host's clock).
const CLOCK_OFFSET_US: u64 = 5_000_000;

async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(5), future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within 5 s"),
    }
}

struct VirtualLoad {
    path: String,
    server: JoinHandle<std::io::Result<ServeEnd>>,
    _slave: tokio_serial::SerialStream,
}

fn virtual_load(playback: ScriptedPlayback, options: ServeOptions) -> VirtualLoad {
    let (master, path, slave) = open_pty().expect("a pseudo-terminal pair");
    let server = tokio::spawn(async move {
        let mut playback = playback;
        serve(
            master,
            &mut playback,
            ControllerClock::starting_at(CLOCK_OFFSET_US),
            options,
        )
        .await
    });
    VirtualLoad {
        path,
        server,
        _slave: slave,
    }
}

fn with_faults(faults: InjectedFaults) -> ServeOptions {
    ServeOptions {
        faults,
        ..ServeOptions::default()
    }
}

async fn connect(load: &VirtualLoad) -> LoadClient {
    bounded(
        "open",
        LoadClient::open(&load.path, 115_200, ClientOptions::default()),
    )
    .await
    .expect("the client opens the pty slave by its path")
}

fn bone_table() -> Vec<u8> {
    // About 50 kB of JSON-like bytes, different at every offset.
    let mut table = b"{\"layers\":[".to_vec();
    let mut i = 0u32;
    while table.len() < 50_000 {
        table.extend_from_slice(format!("{{\"i\":{i},\"k\":{}}},", i * 7919 % 1000).as_bytes());
        i += 1;
    }
    table.extend_from_slice(b"{}]}");
    table
}

/// Uploads small bone and push tables (3 requests each).
async fn load_tables(client: &mut LoadClient) {
    bounded(
        "upload bone",
        client.upload(ProfileKind::Bone, b"{\"bone\":1}"),
    )
    .await
    .expect("bone upload");
    bounded(
        "upload push",
        client.upload(ProfileKind::Push, b"{\"push\":1}"),
    )
    .await
    .expect("push upload");
}

/// Uploads, arms at `rate_hz` for `duration_ms`, starts; returns t0.
async fn start_run(client: &mut LoadClient, rate_hz: u32, duration_ms: u32) -> u64 {
    load_tables(client).await;
    bounded("arm", client.arm(rate_hz, duration_ms))
        .await
        .expect("arm");
    bounded("start", client.start()).await.expect("start")
}

/// Runs 100 ms at 1 kHz to completion; returns the number of samples.
async fn short_run(client: &mut LoadClient) -> u32 {
    start_run(client, 1000, 100).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Done, "{status:?}");
    assert_eq!(status.samples, 100);
    bounded("end", client.end()).await.expect("end")
}

#[tokio::test(flavor = "current_thread")]
async fn full_session_at_10_khz() {
    let load = virtual_load(ScriptedPlayback::new(), ServeOptions::default());
    let mut client = connect(&load).await;

    let identity = bounded("hello", client.hello()).await.expect("hello");
    assert_eq!(identity.protocol, 1);
    assert_eq!(identity.model, "iohil-scripted-load");
    assert_eq!(identity.max_rate_hz, 10_000);
    let calibration = bounded("cal", client.calibration()).await.expect("cal");
    assert_eq!(calibration.due, "2099-12-31");
    assert_eq!(calibration.torque_full_scale_nmm, 500.0);

    let bone = bone_table();
    assert!(bone.len() >= 50_000);
    bounded("bone", client.upload(ProfileKind::Bone, &bone))
        .await
        .expect("50 kB bone upload");
    bounded("push", client.upload(ProfileKind::Push, b"{\"push_n\":35}"))
        .await
        .expect("push upload");
    bounded(
        "plant",
        client.upload(ProfileKind::Plant, b"{\"motor\":\"x\"}"),
    )
    .await
    .expect("plant upload");
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Loaded);

    bounded("arm", client.arm(10_000, 2_000))
        .await
        .expect("arm");
    let t0 = bounded("start", client.start()).await.expect("start");
    assert!(t0 >= CLOCK_OFFSET_US, "t0 {t0} is on the controller clock");

    // Poll as the bench rig does (at least every 200 ms), for about 300 ms.
    let mut last_samples = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = bounded("status", client.status()).await.expect("status");
        assert_eq!(status.state, LoadState::Running);
        assert!(status.samples >= last_samples);
        assert!(status.clock_us > t0);
        last_samples = status.samples;
    }
    assert!(last_samples > 0);
    let total = bounded("end", client.end()).await.expect("end");
    assert!(total >= last_samples && total >= 2_000, "{total} samples");
    assert!(total < 20_000, "{total} samples");
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!((status.state, status.samples), (LoadState::Done, total));

    let readback = bounded("read", client.read_samples(total))
        .await
        .expect("readback");
    assert_eq!(readback.missing, Vec::new());
    assert_eq!(readback.retries, 0);
    assert_eq!(readback.samples.len(), total as usize);
    for (index, sample) in readback.samples.iter().enumerate() {
        let expected = ScriptedPlayback::sample_at(t0, 10_000, index as u64);
        assert_eq!(sample.seq as usize, index);
        assert_eq!(sample.t_us, t0 + index as u64 * 100, "10 kHz spacing");
        assert_eq!(sample, &expected);
    }

    let truth = bounded("truth", client.truth()).await.expect("truth");
    assert_eq!(truth.cap_fracture_us, Some(t0 + 150_000));
    assert_eq!(truth.far_contact_us, None);
    assert_eq!(truth.inner_surface_mm, 18.0);

    bounded("estop", client.estop()).await.expect("estop");
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::EStop);
    let stats = client.stats();
    assert_eq!(
        (stats.retries, stats.corrupt_lines, stats.timeouts),
        (0, 0, 0)
    );
    assert!(!load.server.is_finished());
}

#[tokio::test(flavor = "current_thread")]
async fn corrupt_read_replies_are_requested_again() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            corrupt_every_nth_read: Some(2),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    let total = short_run(&mut client).await;
    let readback = bounded("read", client.read_samples(total))
        .await
        .expect("readback");
    assert_eq!(readback.missing, Vec::new());
    assert!(readback.retries > 0);
    assert_eq!(readback.samples.len(), 100);
    assert!(readback
        .samples
        .iter()
        .enumerate()
        .all(|(i, s)| s.seq as usize == i));
    assert!(client.stats().corrupt_lines > 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_block_that_stays_corrupt_is_reported_missing() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            corrupt_read_at: Some(MAX_READ_COUNT),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    let total = short_run(&mut client).await;
    let readback = bounded("read", client.read_samples(total))
        .await
        .expect("readback");
    assert_eq!(readback.missing, vec![MAX_READ_COUNT..2 * MAX_READ_COUNT]);
    assert_eq!(readback.retries, ClientOptions::default().retries);
    assert_eq!(readback.samples.len(), 100 - MAX_READ_COUNT as usize);
    // Asking past the end is also reported, not silently shortened.
    let readback = bounded("read", client.read_samples(110))
        .await
        .expect("readback");
    assert_eq!(readback.missing, vec![MAX_READ_COUNT..110]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lost_status_reply_or_request_is_retried() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            drop_reply: Some(2),
            drop_request: Some(4),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    bounded("hello", client.hello()).await.expect("hello");
    // Request 2 is executed but its reply is lost; request 3 is the re-send.
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Idle);
    assert_eq!((client.stats().retries, client.stats().timeouts), (1, 1));
    // Request 4 never arrives; request 5 is the re-send.
    bounded("cal", client.calibration()).await.expect("cal");
    assert_eq!(client.stats().retries, 2);
}

#[tokio::test(flavor = "current_thread")]
async fn lost_replies_to_commands_are_resolved_with_status() {
    // Requests: 1-3 bone upload, 4-6 push upload, 7 ARM (reply lost), 8 STATUS, 9 START
    // (reply lost), 10 STATUS.
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            drop_reply: Some(7),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    load_tables(&mut client).await;
    bounded("arm", client.arm(1000, 100))
        .await
        .expect("a lost ARM reply is resolved: STATUS shows armed");
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Armed);
    assert_eq!(client.stats().timeouts, 1);
    assert_eq!(client.stats().retries, 0, "ARM was not sent twice");

    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            drop_reply: Some(8),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    load_tables(&mut client).await;
    bounded("arm", client.arm(1000, 100)).await.expect("arm");
    let error = bounded("start", client.start())
        .await
        .expect_err("t0 of a START whose reply was lost is unknown");
    assert!(matches!(error, LinkError::Unresolved { .. }), "{error:?}");
    assert!(error.to_string().contains("START took effect"), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn the_link_watchdog_stops_a_run_when_the_host_goes_quiet() {
    let load = virtual_load(ScriptedPlayback::new(), ServeOptions::default());
    let mut client = connect(&load).await;
    start_run(&mut client, 1000, 5_000).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::EStop, "{status:?}");
    assert_eq!(status.fault.as_deref(), Some("link_watchdog"));
    // Stopped at about 500 ms of silence, not at the end of the 5 s run.
    assert!(
        status.samples >= 300 && status.samples <= 1_000,
        "{status:?}"
    );
    let readback = bounded("read", client.read_samples(status.samples))
        .await
        .expect("samples stay readable after the watchdog");
    assert_eq!(readback.samples.len(), status.samples as usize);
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_from_the_controller_does_not_break_the_client() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            garbage_before_reply: Some(1),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    let identity = bounded("hello", client.hello()).await.expect("hello");
    assert_eq!(identity.protocol, 1);
    assert!(client.stats().corrupt_lines >= 1);
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Idle);
}

#[tokio::test(flavor = "current_thread")]
async fn a_hang_up_is_reported_promptly() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            hang_up_after: Some(1),
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    bounded("hello", client.hello()).await.expect("hello");
    let end = bounded("server", load.server).await.expect("server task");
    assert_eq!(end.expect("served"), ServeEnd::InjectedHangUp);
    let started = std::time::Instant::now();
    let error = bounded("status", client.status())
        .await
        .expect_err("the controller is gone");
    assert!(
        matches!(error, LinkError::Disconnected | LinkError::Io(_)),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1), "{error}");
}

#[tokio::test(flavor = "current_thread")]
async fn refusals_map_to_their_codes() {
    let load = virtual_load(ScriptedPlayback::without_plant(), ServeOptions::default());
    let mut client = connect(&load).await;
    let error = bounded("start", client.start())
        .await
        .expect_err("START in idle");
    match &error {
        LinkError::Refused { request, code, .. } => {
            assert_eq!((request.as_str(), code.as_str()), ("START", "STATE"));
        }
        other => panic!("{other:?}"),
    }
    assert!(error
        .to_string()
        .starts_with("load controller refused `START`: STATE"));
    let error = bounded("plant", client.upload(ProfileKind::Plant, b"{}"))
        .await
        .expect_err("a real-like controller has no plant");
    assert!(matches!(error, LinkError::Unsupported { .. }), "{error:?}");
    let error = bounded("arm", client.arm(1000, 100))
        .await
        .expect_err("ARM without tables");
    assert!(
        matches!(&error, LinkError::Refused { code, .. } if code == "NOPROFILE"),
        "{error:?}"
    );
    load_tables(&mut client).await;
    let error = bounded("arm", client.arm(50_000, 100))
        .await
        .expect_err("ARM above max rate");
    assert!(
        matches!(&error, LinkError::Refused { code, .. } if code == "RANGE"),
        "{error:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_corrupted_upload_is_detected_and_sent_again() {
    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            corrupt_uploads: 1,
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    let bone = bone_table();
    bounded("bone", client.upload(ProfileKind::Bone, &bone))
        .await
        .expect("the re-upload succeeds");
    assert_eq!(client.stats().reuploads, 1);

    let load = virtual_load(
        ScriptedPlayback::new(),
        with_faults(InjectedFaults {
            corrupt_uploads: 2,
            ..InjectedFaults::default()
        }),
    );
    let mut client = connect(&load).await;
    let error = bounded("push", client.upload(ProfileKind::Push, b"{\"push_n\":35}"))
        .await
        .expect_err("two corrupted uploads fail");
    match error {
        LinkError::UploadMismatch {
            kind,
            sent_crc,
            received_crc,
            ..
        } => {
            assert_eq!(kind, ProfileKind::Push);
            assert_eq!(sent_crc, crc32(b"{\"push_n\":35}"));
            assert_ne!(received_crc, sent_crc);
        }
        other => panic!("{other:?}"),
    }
    let status = bounded("status", client.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Idle, "a bad table is not loaded");
}

#[tokio::test(flavor = "current_thread")]
async fn a_second_host_connection_continues_where_the_first_left_off() {
    let (master, path, _slave) = open_pty().expect("pty");
    let server = tokio::spawn(async move {
        let mut controller = Controller::new(ControllerClock::new(), ServeOptions::default());
        let mut playback = ScriptedPlayback::new();
        controller.serve(master, &mut playback).await
    });
    let options = ClientOptions::default();
    let mut first = bounded("open", LoadClient::open(&path, 115_200, options.clone()))
        .await
        .expect("first host");
    load_tables(&mut first).await;
    drop(first);
    let mut second = bounded("open", LoadClient::open(&path, 115_200, options))
        .await
        .expect("second host opens the same path");
    let status = bounded("status", second.status()).await.expect("status");
    assert_eq!(status.state, LoadState::Loaded);
    assert!(!server.is_finished());
}

#[tokio::test(flavor = "current_thread")]
async fn a_missing_port_is_an_io_error_naming_it() {
    let error = bounded(
        "open",
        LoadClient::open("/dev/iohil-no-such-load", 115_200, ClientOptions::default()),
    )
    .await
    .expect_err("no such port");
    assert!(matches!(error, LinkError::Io(_)), "{error:?}");
    assert!(
        error.to_string().contains("/dev/iohil-no-such-load"),
        "{error}"
    );
}

/// Environment variable that turns [`child_process_says_hello`] into the child half of
/// [`a_second_process_opens_the_pty_by_path`].
const CHILD_PTY_VAR: &str = "IOHIL_LOADLINK_CHILD_PTY";

#[tokio::test(flavor = "current_thread")]
async fn a_second_process_opens_the_pty_by_path() {
    // `iohil loadsim` serves in one process and the bench rig opens the port in another.
    let load = virtual_load(ScriptedPlayback::new(), ServeOptions::default());
    let exe = std::env::current_exe().expect("test binary path");
    let path = load.path.clone();
    let child = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args([
                "--exact",
                "child_process_says_hello",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_PTY_VAR, path)
            .output()
    });
    let output = bounded("child process", child)
        .await
        .expect("join")
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("child hello: iohil-scripted-load"),
        "{stdout}"
    );
}

#[test]
#[ignore = "the child half of a_second_process_opens_the_pty_by_path"]
fn child_process_says_hello() {
    let path = std::env::var(CHILD_PTY_VAR).expect("run by a_second_process_opens_the_pty_by_path");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = bounded(
            "open",
            LoadClient::open(&path, 115_200, ClientOptions::default()),
        )
        .await
        .expect("the child opens the pty slave by its path");
        let identity = bounded("hello", client.hello()).await.expect("hello");
        println!("child hello: {}", identity.model);
    });
}
