//! The controller side of the load link: the protocol state machine ([`Controller`]) over any
//! byte stream, generic over what actually plays the load ([`Playback`]).
//!
//! `iohil loadsim` serves a plant-backed playback on a pseudo-terminal ([`open_pty`]);
//! [`ScriptedPlayback`] is a deterministic stand-in that needs no plant. The state machine
//! follows `harness/docs/load-protocol.md`; [`InjectedFaults`] break it on purpose for tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::protocol::{
    crc32, decode_line, encode_line, parse_request, peek_tag, read_reply_fields, token,
    Calibration, ErrorCode, Fields, Identity, LoadSample, LoadState, ProfileKind, Reply, Request,
    Status, Truth, MAX_LINE_LEN, MAX_READ_COUNT, PROTOCOL_VERSION,
};

/// Longest profile table the virtual controller accepts at `PROFILE BEGIN`, bytes.
pub const MAX_PROFILE_LEN: u32 = 4 * 1024 * 1024;
/// Longest a reply may wait for the host to accept it before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_millis(100);
/// Most samples one run may record (`ARM` with more is refused with `RANGE`).
pub const MAX_RECORDED_SAMPLES: u64 = 2_000_000;

/// What plays the load: a plant model (virtual controller) or a script (tests).
pub trait Playback: Send {
    /// What the controller reports for `HELLO`.
    fn identity(&self) -> Identity;
    /// What the controller reports for `CAL?`.
    fn calibration(&self) -> Calibration;
    /// Whether this controller plays `kind` (a real one has no Plant).
    fn supports(&self, kind: ProfileKind) -> bool;
    /// Validates the uploaded tables at ARM; Err(why) -> ERR BADPROFILE.
    fn arm(
        &mut self,
        tables: &BTreeMap<ProfileKind, Vec<u8>>,
        rate_hz: u32,
        duration_ms: u32,
    ) -> Result<(), String>;
    /// Starts playing now (controller clock `now_us`).
    fn start(&mut self, now_us: u64) -> Result<(), String>;
    /// Called often by the server loop (at least every few ms): new samples since the last
    /// call, whether playback is still running, a fault if the load faulted, the latest speed.
    /// The server numbers the samples (`seq`) itself.
    fn poll(&mut self, now_us: u64) -> PlaybackPoll;
    /// Ends playback: trigger released, push removed.
    fn stop(&mut self);
    /// Emergency stop: push removed, trigger released, load braked.
    fn estop(&mut self);
    /// What the playback observed so far.
    fn truth(&self) -> Truth;
}

/// What one [`Playback::poll`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybackPoll {
    /// Samples taken since the last poll, in time order.
    pub samples: Vec<LoadSample>,
    /// Whether playback continues (false: it reached its end).
    pub running: bool,
    /// A load fault token, if the load faulted.
    pub fault: Option<String>,
    /// Latest shaft speed, rpm.
    pub speed_rpm: f64,
}

/// Faults a controller injects on purpose (tests; `iohil loadsim` flags). Requests are
/// counted from 1 over every line with a valid CRC.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InjectedFaults {
    /// Corrupt the CRC of every Nth `READ` reply.
    pub corrupt_every_nth_read: Option<u32>,
    /// Corrupt the CRC of every `READ` reply whose block starts at this index.
    pub corrupt_read_at: Option<u32>,
    /// Ignore the Nth request: neither execute nor answer it (lost on the way).
    pub drop_request: Option<u64>,
    /// Execute the Nth request but do not send its reply (lost on the way back).
    pub drop_reply: Option<u64>,
    /// Send a line of garbage bytes (non-ASCII, no CRC) before the reply to the Nth request.
    pub garbage_before_reply: Option<u64>,
    /// Close the link after answering this many requests.
    pub hang_up_after: Option<u64>,
    /// Report a load fault this long after `START`.
    pub load_fault_after: Option<Duration>,
    /// Flip one received byte in this many profile uploads (the first ones).
    pub corrupt_uploads: u32,
}

/// How a controller serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeOptions {
    /// While running, silence from the host this long puts the controller in estop (500 ms).
    pub link_watchdog: Duration,
    /// Faults to inject (none by default).
    pub faults: InjectedFaults,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            link_watchdog: Duration::from_millis(500),
            faults: InjectedFaults::default(),
        }
    }
}

/// Why [`Controller::serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// The host side closed (end of file, or `EIO` on a pty master).
    HostClosed,
    /// [`InjectedFaults::hang_up_after`] was reached.
    InjectedHangUp,
}

/// The controller's clock: microseconds since an origin, plus a fixed offset (so a test can
/// make it differ from the host's clock).
#[derive(Debug, Clone, Copy)]
pub struct ControllerClock {
    origin: Instant,
    offset_us: u64,
}

impl ControllerClock {
    /// A clock reading 0 now.
    pub fn new() -> ControllerClock {
        ControllerClock::starting_at(0)
    }

    /// A clock reading `offset_us` now.
    pub fn starting_at(offset_us: u64) -> ControllerClock {
        ControllerClock {
            origin: Instant::now(),
            offset_us,
        }
    }

    /// Current reading, µs.
    pub fn now_us(&self) -> u64 {
        let elapsed = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.offset_us.saturating_add(elapsed)
    }
}

impl Default for ControllerClock {
    fn default() -> Self {
        ControllerClock::new()
    }
}

/// An upload in progress.
#[derive(Debug)]
struct Upload {
    declared_len: u32,
    declared_crc: u32,
    data: Vec<u8>,
    /// Offset and length of the last accepted chunk (a repeat of it is acknowledged).
    last_chunk: Option<(u32, usize)>,
}

/// The protocol state machine of a load controller. Its state outlives one connection, so a
/// new host connection continues where the last one left off.
#[derive(Debug)]
pub struct Controller {
    clock: ControllerClock,
    options: ServeOptions,
    state: LoadState,
    tables: BTreeMap<ProfileKind, Vec<u8>>,
    uploads: BTreeMap<ProfileKind, Upload>,
    samples: Vec<LoadSample>,
    fault: Option<String>,
    speed_rpm: f64,
    started_us: Option<u64>,
    last_request: Instant,
    requests_seen: u64,
    read_replies: u64,
    uploads_corrupted: u32,
}

/// Serves one connection with a fresh [`Controller`]; returns when the stream closes.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    playback: &mut dyn Playback,
    clock: ControllerClock,
    options: ServeOptions,
) -> Result<ServeEnd, std::io::Error> {
    Controller::new(clock, options)
        .serve(stream, playback)
        .await
}

fn is_hang_up(error: &std::io::Error) -> bool {
    // EIO: the slave side of a pty has no open file left.
    error.raw_os_error() == Some(5)
        || matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
}

impl Controller {
    /// An idle controller with no tables.
    pub fn new(clock: ControllerClock, options: ServeOptions) -> Controller {
        Controller {
            clock,
            options,
            state: LoadState::Idle,
            tables: BTreeMap::new(),
            uploads: BTreeMap::new(),
            samples: Vec::new(),
            fault: None,
            speed_rpm: 0.0,
            started_us: None,
            last_request: Instant::now(),
            requests_seen: 0,
            read_replies: 0,
            uploads_corrupted: 0,
        }
    }

    /// Current state.
    pub fn state(&self) -> LoadState {
        self.state
    }

    /// Samples recorded in the current run.
    pub fn samples(&self) -> &[LoadSample] {
        &self.samples
    }

    /// Serves one connection until the stream closes (or an injected hang-up). Playback is
    /// polled every 2 ms and the link watchdog checked while waiting for requests.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        playback: &mut dyn Playback,
    ) -> Result<ServeEnd, std::io::Error> {
        let mut buffer = [0u8; 4096];
        let mut pending: Vec<u8> = Vec::new();
        let mut discarding = false;
        let mut ticker = tokio::time::interval(Duration::from_millis(2));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A new host gets the full watchdog period.
        self.last_request = Instant::now();
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => {
                    let received = match read {
                        Ok(0) => return Ok(ServeEnd::HostClosed),
                        Ok(n) => buffer.get(..n).unwrap_or_default(),
                        Err(error) if is_hang_up(&error) => return Ok(ServeEnd::HostClosed),
                        Err(error) => return Err(error),
                    };
                    pending.extend_from_slice(received);
                    while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
                        let mut line: Vec<u8> = pending.drain(..=newline).collect();
                        line.pop();
                        if discarding {
                            // The tail of an overlong line.
                            discarding = false;
                            continue;
                        }
                        let output = self.handle_line(&line, playback);
                        if !output.is_empty() {
                            // Bounded, so a host that stops reading cannot stall the
                            // playback polling and the link watchdog; the reply is dropped.
                            let written = tokio::time::timeout(WRITE_TIMEOUT, async {
                                stream.write_all(&output).await?;
                                stream.flush().await
                            })
                            .await
                            .unwrap_or(Ok(()));
                            match written {
                                Ok(()) => {}
                                Err(error) if is_hang_up(&error) => {
                                    return Ok(ServeEnd::HostClosed)
                                }
                                Err(error) => return Err(error),
                            }
                        }
                        if self
                            .options
                            .faults
                            .hang_up_after
                            .is_some_and(|n| self.requests_seen >= n)
                        {
                            // Let the host read the last reply: closing a pty master
                            // discards what the slave has not read yet.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            return Ok(ServeEnd::InjectedHangUp);
                        }
                    }
                    if pending.len() > MAX_LINE_LEN + 1 {
                        // Overlong: nothing of it can be trusted; drop it up to its newline.
                        pending.clear();
                        discarding = true;
                    }
                }
                _ = ticker.tick() => self.tick(playback),
            }
        }
    }

    /// Periodic work: collect samples, notice the end of playback, a load fault, an injected
    /// fault or a silent host (link watchdog).
    pub fn tick(&mut self, playback: &mut dyn Playback) {
        if self.state != LoadState::Running {
            return;
        }
        self.poll(playback);
        if self.state != LoadState::Running {
            return;
        }
        if self.last_request.elapsed() > self.options.link_watchdog {
            playback.estop();
            self.state = LoadState::EStop;
            self.fault = Some("link_watchdog".into());
            return;
        }
        let injected = self.options.faults.load_fault_after.and_then(|after| {
            let started = self.started_us?;
            let after_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
            (self.clock.now_us().saturating_sub(started) >= after_us).then_some(())
        });
        if injected.is_some() {
            playback.estop();
            self.state = LoadState::Fault;
            self.fault = Some("injected_load_fault".into());
        }
    }

    fn poll(&mut self, playback: &mut dyn Playback) {
        let poll = playback.poll(self.clock.now_us());
        if poll.speed_rpm.is_finite() {
            self.speed_rpm = poll.speed_rpm;
        }
        for mut sample in poll.samples {
            let seq = u32::try_from(self.samples.len()).ok();
            match seq {
                Some(seq) if (self.samples.len() as u64) < MAX_RECORDED_SAMPLES => {
                    sample.seq = seq;
                    self.samples.push(sample);
                }
                _ => {
                    playback.estop();
                    self.state = LoadState::Fault;
                    self.fault = Some("recording_full".into());
                    return;
                }
            }
        }
        if let Some(fault) = poll.fault {
            playback.estop();
            self.state = LoadState::Fault;
            self.fault = Some(token(&fault));
        } else if !poll.running {
            playback.stop();
            self.state = LoadState::Done;
        }
    }

    /// Handles one received line (without `\n`): returns the bytes to send back (empty:
    /// silence). Never panics, whatever the line holds.
    pub fn handle_line(&mut self, line: &[u8], playback: &mut dyn Playback) -> Vec<u8> {
        let body = match decode_line(line) {
            Ok(body) => body,
            Err(super::protocol::LineError::TooLong { .. }) => return Vec::new(),
            Err(error) => {
                // Answer only if a tag can be read; the request is not executed.
                return match peek_tag(line) {
                    Some(tag) => Reply::err(tag, ErrorCode::Crc, &error.to_string())
                        .to_line()
                        .into_bytes(),
                    None => Vec::new(),
                };
            }
        };
        // Catch up on playback before the link watchdog is fed, so a late request cannot
        // hide a watchdog expiry.
        self.tick(playback);
        self.last_request = Instant::now();
        self.requests_seen += 1;
        let n = self.requests_seen;
        let faults = self.options.faults.clone();
        if faults.drop_request == Some(n) {
            return Vec::new();
        }
        let (reply, read_first) = match parse_request(body) {
            Ok((tag, request)) => {
                let read_first = match request {
                    Request::Read { first, .. } => Some(first),
                    _ => None,
                };
                (self.execute(tag, request, playback), read_first)
            }
            Err(error) => match error.tag {
                Some(tag) => (Reply::err(tag, error.code, &error.text), None),
                None => return Vec::new(),
            },
        };
        if faults.drop_reply == Some(n) {
            return Vec::new();
        }
        let mut line = reply.to_line();
        if let Some(first) = read_first {
            if matches!(reply.outcome, super::protocol::Outcome::Ok(_)) {
                self.read_replies += 1;
                let nth = faults.corrupt_every_nth_read.is_some_and(|every| {
                    every > 0 && self.read_replies.is_multiple_of(u64::from(every))
                });
                if nth || faults.corrupt_read_at == Some(first) {
                    line = corrupt_crc(&line);
                }
            }
        }
        let mut output = Vec::new();
        if faults.garbage_before_reply == Some(n) {
            output.extend_from_slice(b"\xFF\xFE\x00garbage\x1B[2J\x80 no crc here * \xC3\x28\n");
        }
        output.extend_from_slice(line.as_bytes());
        output
    }

    fn status(&self) -> Status {
        Status {
            state: self.state,
            clock_us: self.clock.now_us(),
            samples: u32::try_from(self.samples.len()).unwrap_or(u32::MAX),
            speed_rpm: self.speed_rpm,
            fault: self.fault.clone(),
        }
    }

    /// Idle or loaded, by which tables are complete.
    fn resting_state(&self) -> LoadState {
        if self.tables.contains_key(&ProfileKind::Bone)
            && self.tables.contains_key(&ProfileKind::Push)
        {
            LoadState::Loaded
        } else {
            LoadState::Idle
        }
    }

    /// The state machine: one request in, one reply out.
    fn execute(&mut self, tag: u16, request: Request, playback: &mut dyn Playback) -> Reply {
        let state = self.state;
        let refuse_state = |verb: &str| {
            Reply::err(
                tag,
                ErrorCode::State,
                &format!("{verb} not allowed in state {state}"),
            )
        };
        let ok = |fields: Fields| Reply::ok(tag, fields);
        let err = |code: ErrorCode, text: &str| Reply::err(tag, code, text);
        let uploading = matches!(state, LoadState::Idle | LoadState::Loaded);
        match request {
            Request::Hello => {
                let mut identity = playback.identity();
                identity.protocol = PROTOCOL_VERSION;
                ok(identity.to_fields())
            }
            Request::CalQuery => ok(playback.calibration().to_fields()),
            Request::Status => ok(self.status().to_fields()),
            Request::TruthQuery => ok(playback.truth().to_fields()),
            Request::ProfileBegin { kind, len, crc32 } => {
                if !uploading {
                    return refuse_state("PROFILE BEGIN");
                }
                if !playback.supports(kind) {
                    return err(
                        ErrorCode::Unsupported,
                        &format!("this controller does not play a {kind} table"),
                    );
                }
                if len > MAX_PROFILE_LEN {
                    return err(
                        ErrorCode::Range,
                        &format!("{len} bytes exceeds the {MAX_PROFILE_LEN}-byte limit"),
                    );
                }
                self.tables.remove(&kind);
                self.uploads.insert(
                    kind,
                    Upload {
                        declared_len: len,
                        declared_crc: crc32,
                        data: Vec::new(),
                        last_chunk: None,
                    },
                );
                self.state = self.resting_state();
                ok(Fields::default())
            }
            Request::ProfileData { kind, offset, data } => {
                if !uploading {
                    return refuse_state("PROFILE DATA");
                }
                let Some(upload) = self.uploads.get_mut(&kind) else {
                    return err(ErrorCode::Sequence, &format!("no PROFILE BEGIN {kind}"));
                };
                let expected = upload.data.len();
                let offset_usize = usize::try_from(offset).unwrap_or(usize::MAX);
                if offset_usize == expected {
                    if expected.saturating_add(data.len())
                        > usize::try_from(upload.declared_len).unwrap_or(usize::MAX)
                    {
                        return err(
                            ErrorCode::Range,
                            &format!(
                                "chunk ends at {} beyond the declared {} bytes",
                                expected.saturating_add(data.len()),
                                upload.declared_len
                            ),
                        );
                    }
                    upload.data.extend_from_slice(&data);
                    upload.last_chunk = Some((offset, data.len()));
                    return ok(Fields::default());
                }
                // A repeat of the last chunk (its reply was lost) is acknowledged, not appended.
                let repeat = upload.last_chunk == Some((offset, data.len()))
                    && upload
                        .data
                        .get(offset_usize..offset_usize.saturating_add(data.len()))
                        .is_some_and(|held| held == data.as_slice());
                if repeat {
                    return ok(Fields::default());
                }
                err(
                    ErrorCode::Sequence,
                    &format!("chunk at offset {offset}, expected offset {expected}"),
                )
            }
            Request::ProfileEnd { kind } => {
                if !uploading {
                    return refuse_state("PROFILE END");
                }
                let Some(mut upload) = self.uploads.remove(&kind) else {
                    return err(ErrorCode::Sequence, &format!("no PROFILE BEGIN {kind}"));
                };
                if self.uploads_corrupted < self.options.faults.corrupt_uploads {
                    // Injected: as if one byte had been damaged on the way in.
                    if let Some(byte) = upload.data.first_mut() {
                        *byte ^= 0x01;
                        self.uploads_corrupted += 1;
                    }
                }
                let received_crc = crc32(&upload.data);
                let received_len = upload.data.len();
                // Loaded only if it is what BEGIN announced; the host compares too.
                if u32::try_from(received_len).ok() == Some(upload.declared_len)
                    && received_crc == upload.declared_crc
                {
                    self.tables.insert(kind, upload.data);
                }
                self.state = self.resting_state();
                let mut fields = Fields::default();
                fields
                    .push("len", received_len)
                    .push("crc32", format!("{received_crc:08X}"));
                ok(fields)
            }
            Request::Arm {
                rate_hz,
                duration_ms,
            } => {
                if !uploading {
                    return refuse_state("ARM");
                }
                if let Some(kind) = self.uploads.keys().next() {
                    return err(
                        ErrorCode::NoProfile,
                        &format!("upload of the {kind} table is not finished"),
                    );
                }
                if self.state != LoadState::Loaded {
                    return err(ErrorCode::NoProfile, "bone and push tables are needed");
                }
                let max_rate_hz = playback.identity().max_rate_hz;
                if rate_hz == 0 || rate_hz > max_rate_hz {
                    return err(
                        ErrorCode::Range,
                        &format!("rate {rate_hz} Hz outside 1..={max_rate_hz}"),
                    );
                }
                let samples = u64::from(rate_hz) * u64::from(duration_ms) / 1000;
                if duration_ms == 0 || samples > MAX_RECORDED_SAMPLES {
                    return err(
                        ErrorCode::Range,
                        &format!(
                            "duration {duration_ms} ms: 1 ms to {MAX_RECORDED_SAMPLES} samples"
                        ),
                    );
                }
                if let Err(why) = playback.arm(&self.tables, rate_hz, duration_ms) {
                    return err(ErrorCode::BadProfile, &why);
                }
                self.samples.clear();
                self.fault = None;
                self.started_us = None;
                self.state = LoadState::Armed;
                ok(Fields::default())
            }
            Request::Start => {
                if state != LoadState::Armed {
                    return refuse_state("START");
                }
                let t0_us = self.clock.now_us();
                if let Err(why) = playback.start(t0_us) {
                    playback.estop();
                    self.state = LoadState::Fault;
                    self.fault = Some(token(&why));
                    return err(ErrorCode::Fault, &why);
                }
                self.started_us = Some(t0_us);
                self.state = LoadState::Running;
                let mut fields = Fields::default();
                fields.push("t0_us", t0_us);
                ok(fields)
            }
            Request::End => {
                match state {
                    LoadState::Running => {
                        self.poll(playback);
                        if self.state == LoadState::Running {
                            playback.stop();
                            self.state = LoadState::Done;
                            // The samples taken while stopping (the trigger's release, which
                            // the host aligns its clocks by) belong to the recording.
                            self.poll(playback);
                        }
                    }
                    LoadState::Armed => {
                        playback.stop();
                        self.state = LoadState::Done;
                    }
                    LoadState::Done => {}
                    _ => return refuse_state("END"),
                }
                let mut fields = Fields::default();
                fields.push("samples", self.samples.len());
                ok(fields)
            }
            Request::Read { first, count } => {
                if !matches!(state, LoadState::Done | LoadState::EStop | LoadState::Fault) {
                    return refuse_state("READ");
                }
                if count == 0 || count > MAX_READ_COUNT {
                    return err(
                        ErrorCode::Range,
                        &format!("count {count} outside 1..={MAX_READ_COUNT}"),
                    );
                }
                let start = usize::try_from(first).unwrap_or(usize::MAX);
                let end = start.saturating_add(usize::try_from(count).unwrap_or(usize::MAX));
                match self.samples.get(start..end) {
                    Some(block) => ok(read_reply_fields(first, block)),
                    None => err(
                        ErrorCode::Range,
                        &format!(
                            "samples {first}..{end} past the {} recorded",
                            self.samples.len()
                        ),
                    ),
                }
            }
            Request::EStop => {
                if state == LoadState::Running {
                    self.poll(playback);
                }
                playback.estop();
                self.state = LoadState::EStop;
                ok(Fields::default())
            }
            Request::Clear => {
                if !matches!(state, LoadState::Done | LoadState::EStop | LoadState::Fault) {
                    return refuse_state("CLEAR");
                }
                self.samples.clear();
                self.fault = None;
                self.started_us = None;
                self.speed_rpm = 0.0;
                self.state = self.resting_state();
                ok(Fields::default())
            }
        }
    }
}

/// The same line with its CRC deliberately wrong.
fn corrupt_crc(line: &str) -> String {
    let body = line.trim_end_matches('\n');
    match body.rsplit_once('*') {
        Some((content, crc)) => {
            let flipped = u16::from_str_radix(crc, 16).map_or(0, |c| c ^ 0x5A5A);
            format!("{content}*{flipped:04X}\n")
        }
        None => encode_line(body),
    }
}

/// Opens a pseudo-terminal pair for a virtual controller: the master (serve on it), the
/// slave's path (the host opens it by name, like a real port), and the slave itself, kept
/// open so the master never sees a hang-up between host connections. The slave is not
/// locked exclusively, so the host can open its path; the host's own open then locks it.
#[cfg(unix)]
pub fn open_pty() -> std::io::Result<(
    tokio_serial::SerialStream,
    String,
    tokio_serial::SerialStream,
)> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::from)?;
    let path = slave.name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the pseudo-terminal's slave has no path",
        )
    })?;
    Ok((master, path, slave))
}

/// A deterministic [`Playback`] that needs no plant: samples in real time at the armed rate
/// (depth ramps at 5 mm/s, constant speed and push, a saw-tooth torque; values on the
/// record's quantisation grid), fixed ground truth
/// relative to the start. It is a fake of the real controller, used by tests and demos.
#[derive(Debug, Clone)]
pub struct ScriptedPlayback {
    /// What `HELLO` reports.
    pub identity: Identity,
    /// What `CAL?` reports.
    pub calibration: Calibration,
    /// Whether it accepts a `plant` table (false: behaves like a real controller).
    pub plays_plant: bool,
    armed: Option<(u32, u32)>,
    t0_us: Option<u64>,
    next_index: u64,
    stopped: bool,
}

impl Default for ScriptedPlayback {
    fn default() -> Self {
        ScriptedPlayback::new()
    }
}

impl ScriptedPlayback {
    /// A virtual controller (plays all three kinds, up to 10 kHz).
    pub fn new() -> ScriptedPlayback {
        ScriptedPlayback {
            identity: Identity {
                protocol: PROTOCOL_VERSION,
                model: "iohil-scripted-load".into(),
                serial: "SIM-0001".into(),
                firmware: env!("CARGO_PKG_VERSION").into(),
                max_rate_hz: 10_000,
            },
            calibration: Calibration {
                id: "virtual".into(),
                due: "2099-12-31".into(),
                torque_full_scale_nmm: 500.0,
            },
            plays_plant: true,
            armed: None,
            t0_us: None,
            next_index: 0,
            stopped: false,
        }
    }

    /// Like a real controller: no `plant` table.
    pub fn without_plant() -> ScriptedPlayback {
        ScriptedPlayback {
            plays_plant: false,
            ..ScriptedPlayback::new()
        }
    }

    /// Sample `index` of a run that started at `t0_us` at `rate_hz`.
    pub fn sample_at(t0_us: u64, rate_hz: u32, index: u64) -> LoadSample {
        let rate = u64::from(rate_hz.max(1));
        let offset_us = index.saturating_mul(1_000_000) / rate;
        LoadSample {
            seq: u32::try_from(index).unwrap_or(u32::MAX),
            t_us: t0_us.saturating_add(offset_us),
            // On the record's quantisation grid (whole µm and 0.001 N·mm), so a sample read
            // back equals the one generated.
            depth_mm: (offset_us / 200) as f64 / 1000.0,
            speed_rpm: 1000.0,
            load_torque_nmm: (10_000 + (index % 100) * 100) as f64 / 1000.0,
            push_n: 30.0,
            trigger: true,
            supply_current_a: (500 + index % 50) as f64 / 1000.0,
            supply_v: 6.2,
        }
    }

    fn total_samples(&self) -> u64 {
        self.armed.map_or(0, |(rate, duration_ms)| {
            u64::from(rate) * u64::from(duration_ms) / 1000
        })
    }
}

impl Playback for ScriptedPlayback {
    fn identity(&self) -> Identity {
        self.identity.clone()
    }

    fn calibration(&self) -> Calibration {
        self.calibration.clone()
    }

    fn supports(&self, kind: ProfileKind) -> bool {
        kind != ProfileKind::Plant || self.plays_plant
    }

    fn arm(
        &mut self,
        tables: &BTreeMap<ProfileKind, Vec<u8>>,
        rate_hz: u32,
        duration_ms: u32,
    ) -> Result<(), String> {
        for kind in [ProfileKind::Bone, ProfileKind::Push] {
            if tables.get(&kind).is_none_or(Vec::is_empty) {
                return Err(format!("the {kind} table is empty"));
            }
        }
        self.armed = Some((rate_hz, duration_ms));
        self.t0_us = None;
        self.next_index = 0;
        self.stopped = false;
        Ok(())
    }

    fn start(&mut self, now_us: u64) -> Result<(), String> {
        if self.armed.is_none() {
            return Err("not armed".into());
        }
        self.t0_us = Some(now_us);
        Ok(())
    }

    fn poll(&mut self, now_us: u64) -> PlaybackPoll {
        let (Some(t0_us), Some((rate_hz, _))) = (self.t0_us, self.armed) else {
            return PlaybackPoll {
                samples: Vec::new(),
                running: false,
                fault: None,
                speed_rpm: 0.0,
            };
        };
        let total = self.total_samples();
        if self.stopped {
            return PlaybackPoll {
                samples: Vec::new(),
                running: false,
                fault: None,
                speed_rpm: 0.0,
            };
        }
        // Samples due by now: index k is due at t0 + k / rate.
        let elapsed_us = now_us.saturating_sub(t0_us);
        let due = (elapsed_us.saturating_mul(u64::from(rate_hz)) / 1_000_000)
            .saturating_add(1)
            .min(total);
        let samples: Vec<LoadSample> = (self.next_index..due)
            .map(|index| ScriptedPlayback::sample_at(t0_us, rate_hz, index))
            .collect();
        self.next_index = self.next_index.max(due);
        PlaybackPoll {
            samples,
            running: self.next_index < total,
            fault: None,
            speed_rpm: 1000.0,
        }
    }

    fn stop(&mut self) {
        self.stopped = true;
    }

    fn estop(&mut self) {
        self.stopped = true;
    }

    fn truth(&self) -> Truth {
        let at = |offset_us: u64| self.t0_us.map(|t0| t0.saturating_add(offset_us));
        Truth {
            cortex_contact_us: at(50_000),
            cap_fracture_us: at(150_000),
            far_contact_us: None,
            far_contact_rotating: false,
            inner_surface_mm: 18.0,
            far_cortex_mm: 43.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadlink::protocol::{parse_reply, Outcome};

    struct Bench {
        controller: Controller,
        playback: ScriptedPlayback,
        tag: u16,
    }

    impl Bench {
        fn new(options: ServeOptions) -> Bench {
            Bench {
                controller: Controller::new(ControllerClock::starting_at(1_000_000), options),
                playback: ScriptedPlayback::new(),
                tag: 0,
            }
        }

        fn raw(&mut self, line: &[u8]) -> Vec<u8> {
            self.controller.handle_line(line, &mut self.playback)
        }

        /// Sends `request` and returns (code or "OK", fields or text).
        fn send(&mut self, request: &str) -> (String, String) {
            self.tag += 1;
            let line = encode_line(&format!("{} {request}", self.tag));
            let out = self.raw(line.trim_end().as_bytes());
            let text = String::from_utf8(out).unwrap_or_default();
            let body = decode_line(text.trim_end().as_bytes()).unwrap_or_default();
            match parse_reply(body) {
                Ok(reply) if reply.tag == self.tag => match reply.outcome {
                    Outcome::Ok(fields) => ("OK".into(), fields.encode()),
                    Outcome::Err { code, text } => (code, text),
                },
                other => panic!("{request}: {text:?} {other:?}"),
            }
        }

        fn code(&mut self, request: &str) -> String {
            self.send(request).0
        }

        fn upload(&mut self, kind: &str, bytes: &[u8]) -> (String, String) {
            assert_eq!(
                self.code(&format!(
                    "PROFILE BEGIN {kind} {} {:08X}",
                    bytes.len(),
                    crc32(bytes)
                )),
                "OK"
            );
            for (i, chunk) in bytes.chunks(1024).enumerate() {
                let request = format!("PROFILE DATA {kind} {} {}", i * 1024, hex(chunk));
                assert_eq!(self.code(&request), "OK");
            }
            self.send(&format!("PROFILE END {kind}"))
        }

        fn state(&self) -> LoadState {
            self.controller.state()
        }
    }

    fn hex(bytes: &[u8]) -> String {
        crate::loadlink::protocol::hex_upper(bytes)
    }

    #[test]
    fn upload_arm_start_end_read_clear() {
        let mut b = Bench::new(ServeOptions::default());
        assert_eq!(b.state(), LoadState::Idle);
        assert_eq!(b.code("ARM 1000 100"), "NOPROFILE");
        let bone = vec![7u8; 3000];
        assert_eq!(
            b.upload("bone", &bone),
            ("OK".into(), format!("len=3000 crc32={:08X}", crc32(&bone)))
        );
        assert_eq!(b.state(), LoadState::Idle);
        b.upload("push", b"{\"push_n\":35}");
        assert_eq!(b.state(), LoadState::Loaded);
        assert_eq!(b.code("START"), "STATE");
        assert_eq!(b.code("READ 0 1"), "STATE");
        assert_eq!(b.code("ARM 20000 100"), "RANGE");
        assert_eq!(b.code("ARM 1000 0"), "RANGE");
        assert_eq!(b.code("ARM 1000 100"), "OK");
        assert_eq!(b.state(), LoadState::Armed);
        assert_eq!(b.code("PROFILE BEGIN bone 1 00000000"), "STATE");
        let (code, fields) = b.send("START");
        assert_eq!(code, "OK");
        assert!(fields.starts_with("t0_us="), "{fields}");
        std::thread::sleep(Duration::from_millis(20));
        let (_, status) = b.send("STATUS");
        assert!(status.starts_with("state=running"), "{status}");
        let (code, samples) = b.send("END");
        assert_eq!(code, "OK");
        let recorded = b.controller.samples().len();
        assert!(recorded >= 20, "{recorded} samples after 20 ms at 1 kHz");
        assert_eq!(samples, format!("samples={recorded}"));
        assert_eq!(b.code("END"), "OK", "END in done is a no-op");
        assert!(b
            .controller
            .samples()
            .iter()
            .enumerate()
            .all(|(i, s)| s.seq as usize == i));
        assert_eq!(b.code("READ 0 0"), "RANGE");
        assert_eq!(b.code("READ 0 61"), "RANGE");
        assert_eq!(b.code(&format!("READ {} 1", recorded)), "RANGE");
        assert_eq!(b.code("READ 0 10"), "OK");
        assert_eq!(b.code("CLEAR"), "OK");
        assert_eq!(b.state(), LoadState::Loaded);
        assert_eq!(b.code("CLEAR"), "STATE");
    }

    #[test]
    fn profile_data_sequence_and_repeats() {
        let mut b = Bench::new(ServeOptions::default());
        assert_eq!(b.code("PROFILE DATA bone 0 00"), "SEQUENCE");
        assert_eq!(b.code("PROFILE BEGIN bone 4 00000000"), "OK");
        assert_eq!(b.code("PROFILE DATA bone 2 0102"), "SEQUENCE");
        assert_eq!(b.code("PROFILE DATA bone 0 0102"), "OK");
        // The same chunk again (its reply was lost) is acknowledged, not appended.
        assert_eq!(b.code("PROFILE DATA bone 0 0102"), "OK");
        assert_eq!(b.code("PROFILE DATA bone 0 0103"), "SEQUENCE");
        assert_eq!(b.code("PROFILE DATA bone 2 030405"), "RANGE");
        assert_eq!(b.code("PROFILE DATA bone 2 0304"), "OK");
        let (code, fields) = b.send("PROFILE END bone");
        assert_eq!(code, "OK");
        assert_eq!(fields, format!("len=4 crc32={:08X}", crc32(&[1, 2, 3, 4])));
        // The declared CRC was 0, so the table is not loaded.
        assert_eq!(b.code("PROFILE END bone"), "SEQUENCE");
        assert!(!b.controller.tables.contains_key(&ProfileKind::Bone));
        assert_eq!(b.code("PROFILE BEGIN bone 99999999 00000000"), "RANGE");
    }

    #[test]
    fn unsupported_badprofile_and_unfinished_uploads() {
        let mut b = Bench::new(ServeOptions::default());
        b.playback = ScriptedPlayback::without_plant();
        assert_eq!(b.code("PROFILE BEGIN plant 10 00000000"), "UNSUPPORTED");
        b.upload("bone", b"bone");
        b.upload("push", b"");
        assert_eq!(b.state(), LoadState::Loaded);
        let (code, text) = b.send("ARM 1000 100");
        assert_eq!(
            (code.as_str(), text.as_str()),
            ("BADPROFILE", "the push table is empty")
        );
        b.upload("push", b"push");
        assert_eq!(b.code("PROFILE BEGIN bone 4 00000000"), "OK");
        assert_eq!(b.code("ARM 1000 100"), "NOPROFILE");
    }

    #[test]
    fn estop_everywhere_and_watchdog() {
        let mut b = Bench::new(ServeOptions {
            link_watchdog: Duration::from_millis(30),
            ..ServeOptions::default()
        });
        assert_eq!(b.code("ESTOP"), "OK");
        assert_eq!(b.state(), LoadState::EStop);
        assert_eq!(b.code("ESTOP"), "OK");
        assert_eq!(b.code("CLEAR"), "OK");
        b.upload("bone", b"bone");
        b.upload("push", b"push");
        assert_eq!(b.code("ARM 1000 10000"), "OK");
        assert_eq!(b.code("START"), "OK");
        std::thread::sleep(Duration::from_millis(40));
        // The tick that runs before the late request sees the silence first.
        let (_, status) = b.send("STATUS");
        assert!(status.starts_with("state=estop"), "{status}");
        assert!(status.ends_with("fault=link_watchdog"), "{status}");
        assert!(b.playback.stopped);
        assert_eq!(b.code("READ 0 5"), "OK");
        assert_eq!(b.code("START"), "STATE");
    }

    #[test]
    fn an_injected_load_fault_stops_the_run() {
        let mut b = Bench::new(ServeOptions {
            faults: InjectedFaults {
                load_fault_after: Some(Duration::from_millis(10)),
                ..InjectedFaults::default()
            },
            ..ServeOptions::default()
        });
        b.upload("bone", b"bone");
        b.upload("push", b"push");
        assert_eq!(b.code("ARM 1000 10000"), "OK");
        assert_eq!(b.code("START"), "OK");
        std::thread::sleep(Duration::from_millis(15));
        let (_, status) = b.send("STATUS");
        assert!(status.starts_with("state=fault"), "{status}");
        assert!(status.ends_with("fault=injected_load_fault"), "{status}");
        assert!(b.playback.stopped);
        assert_eq!(b.code("READ 0 5"), "OK");
        assert_eq!(b.code("ESTOP"), "OK");
        let (_, status) = b.send("STATUS");
        assert!(status.starts_with("state=estop"), "{status}");
        assert!(
            status.ends_with("fault=injected_load_fault"),
            "the fault stays: {status}"
        );
        assert_eq!(b.code("CLEAR"), "OK");
        let (_, status) = b.send("STATUS");
        assert!(status.starts_with("state=loaded"), "{status}");
        assert!(status.ends_with("fault=-"), "{status}");
    }

    #[test]
    fn bad_lines_get_crc_error_or_silence() {
        let mut b = Bench::new(ServeOptions::default());
        let reply = String::from_utf8(b.raw(b"12 HELLO*0000")).unwrap_or_default();
        assert!(reply.starts_with("12 ERR CRC "), "{reply}");
        assert!(decode_line(reply.trim_end().as_bytes()).is_ok());
        assert!(b.raw(b"12 HELLO").starts_with(b"12 ERR CRC"));
        assert!(b.raw(b"\xFF\xFE garbage").is_empty());
        assert!(b.raw(b"").is_empty());
        assert!(b.raw(encode_line("HELLO").trim_end().as_bytes()).is_empty());
        let long = vec![b'1'; MAX_LINE_LEN + 10];
        assert!(b.raw(&long).is_empty());
        assert_eq!(b.code("FLY"), "UNKNOWN");
        assert_eq!(b.code("ARM x 1"), "SYNTAX");
        let (code, hello) = b.send("HELLO");
        assert_eq!(code, "OK");
        assert!(
            hello.starts_with("proto=1 model=iohil-scripted-load"),
            "{hello}"
        );
    }

    #[test]
    fn random_lines_never_panic_the_state_machine() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let verbs = prop_oneof![
            Just("HELLO"),
            Just("STATUS"),
            Just("ARM 1000 5"),
            Just("START"),
            Just("END"),
            Just("READ 0 3"),
            Just("ESTOP"),
            Just("CLEAR"),
            Just("PROFILE BEGIN bone 2 00000000"),
            Just("PROFILE DATA bone 0 0102"),
            Just("PROFILE END bone"),
            Just("TRUTH?"),
        ];
        let line = prop_oneof![
            verbs.prop_map(|v| encode_line(&format!("3 {v}")).into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..200),
        ];
        let result = runner.run(&proptest::collection::vec(line, 1..40), |lines| {
            let mut b = Bench::new(ServeOptions::default());
            b.upload("push", b"push");
            for line in lines {
                let out = b.raw(line.strip_suffix(b"\n").unwrap_or(&line));
                prop_assert!(out.is_empty() || out.ends_with(b"\n"));
                b.controller.tick(&mut b.playback);
            }
            Ok(())
        });
        assert!(result.is_ok(), "{result:?}");
    }
}
