//! The host side of the load link: [`LoadClient`].
//!
//! One request is outstanding at a time. Idempotent requests are re-sent on a timeout or a
//! corrupt reply; non-idempotent ones are resolved with `STATUS` instead (see "Timing and
//! retries" in `harness/docs/load-protocol.md`). Every error names the request it concerns.

use std::ops::Range;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::protocol::{
    crc32, decode_line, parse_read_reply, parse_reply, Calibration, Fields, Identity, LoadSample,
    LoadState, Outcome, ProfileKind, Request, Status, Truth, MAX_DATA_CHUNK, MAX_LINE_LEN,
    MAX_READ_COUNT, PROTOCOL_VERSION,
};

/// Timeouts and retries of a [`LoadClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Reply timeout of ordinary requests (controller deadline 20 ms; default 250 ms).
    pub timeout: Duration,
    /// Reply timeout of `ARM` and `PROFILE END` (controller deadline 200 ms; default 1 s).
    pub long_timeout: Duration,
    /// Re-sends of an idempotent request, and re-requests of a readback block (default 3).
    pub retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_millis(250),
            long_timeout: Duration::from_millis(1000),
            retries: 3,
        }
    }
}

/// Counters of what happened on the link (for the run's evidence).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Request lines sent, re-sends included.
    pub requests: u64,
    /// Re-sends and re-requests (of any cause).
    pub retries: u64,
    /// Received lines discarded as corrupt (CRC, framing, syntax).
    pub corrupt_lines: u64,
    /// Requests that saw no usable reply before their timeout.
    pub timeouts: u64,
    /// Well-formed replies discarded because their tag was not the awaited one.
    pub stale_lines: u64,
    /// Profile uploads repeated after a CRC mismatch or a lost `PROFILE END` reply.
    pub reuploads: u64,
}

/// A load-link failure; each variant says which request it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinkError {
    /// The serial port could not be opened, read or written.
    #[error("load link i/o error: {0}")]
    Io(String),
    /// No reply within the timeout, re-sends included.
    #[error("no reply from the load controller to `{request}` within {} ms", after.as_millis())]
    Timeout {
        /// The request.
        request: String,
        /// Timeout of each attempt.
        after: Duration,
    },
    /// Replies arrived but were corrupt, re-sends included.
    #[error("corrupt reply from the load controller to `{request}`: {detail}")]
    Corrupt {
        /// The request.
        request: String,
        /// What was wrong with the last one.
        detail: String,
    },
    /// The controller answered `ERR`.
    #[error("load controller refused `{request}`: {code} {text}")]
    Refused {
        /// The request.
        request: String,
        /// Error code (`STATE`, `RANGE`, ...).
        code: String,
        /// The controller's explanation.
        text: String,
    },
    /// The controller answered `ERR UNSUPPORTED` (a real controller has no `plant` table).
    #[error("load controller does not support `{request}`: {text}")]
    Unsupported {
        /// The request.
        request: String,
        /// The controller's explanation.
        text: String,
    },
    /// A well-formed reply that breaks the protocol (wrong fields, wrong version).
    #[error("load link protocol error: {0}")]
    Protocol(String),
    /// The controller's copy of an uploaded profile differed from what was sent, twice.
    #[error(
        "upload of the {kind} profile failed: sent {sent_len} bytes with crc32 {sent_crc:08X}, \
         the controller received {received_len} bytes with crc32 {received_crc:08X} (after one re-upload)"
    )]
    UploadMismatch {
        /// Profile kind.
        kind: ProfileKind,
        /// Bytes sent.
        sent_len: u32,
        /// CRC-32 of the bytes sent.
        sent_crc: u32,
        /// Bytes the controller says it received.
        received_len: u32,
        /// CRC-32 the controller computed.
        received_crc: u32,
    },
    /// A non-idempotent request got no usable reply and `STATUS` could not settle whether it
    /// took effect (or it did, but the reply's content is lost).
    #[error("no usable reply to `{request}`: {detail}")]
    Unresolved {
        /// The request.
        request: String,
        /// What is known.
        detail: String,
    },
    /// The controller closed the link (end of file or hang-up).
    #[error("load controller disconnected (serial link closed)")]
    Disconnected,
}

/// Samples read back after a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Readback {
    /// The samples that arrived intact, in index order (`missing` ranges left out).
    pub samples: Vec<LoadSample>,
    /// Index ranges that could not be read after all re-requests.
    pub missing: Vec<Range<u32>>,
    /// Blocks re-requested.
    pub retries: u32,
}

/// Anything the client can talk over.
trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkStream for T {}

/// Why one attempt produced no answer.
enum Failure {
    /// Nothing usable before the deadline.
    Timeout,
    /// A corrupt line arrived instead of the reply.
    Corrupt(String),
    /// The controller answered `ERR CRC`: the request was damaged and not executed.
    RequestCorrupted(String),
    /// Final: refused, disconnected, i/o.
    Final(LinkError),
}

/// What `STATUS` says about a non-idempotent request whose reply was lost.
enum Effect {
    Applied,
    NotApplied,
    Unknown,
}

/// Result of a non-idempotent request.
enum Answer {
    Reply(Fields),
    Resolved(Status),
}

/// Host side of the load link.
pub struct LoadClient {
    stream: Box<dyn LinkStream>,
    options: ClientOptions,
    next_tag: u16,
    pending: Vec<u8>,
    discarding: bool,
    stats: LinkStats,
}

impl std::fmt::Debug for LoadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadClient")
            .field("options", &self.options)
            .field("next_tag", &self.next_tag)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn io_error(error: &std::io::Error) -> LinkError {
    use std::io::ErrorKind;
    // EIO is how a tty reports that the other side hung up.
    let hung_up = error.raw_os_error() == Some(5)
        || matches!(
            error.kind(),
            ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
        );
    if hung_up {
        LinkError::Disconnected
    } else {
        LinkError::Io(error.to_string())
    }
}

impl LoadClient {
    /// Opens the serial port `port` at `baud` (input the port had buffered is discarded).
    pub async fn open(
        port: &str,
        baud: u32,
        options: ClientOptions,
    ) -> Result<LoadClient, LinkError> {
        use tokio_serial::{SerialPort, SerialPortBuilderExt};
        let stream = tokio_serial::new(port, baud)
            .timeout(options.timeout)
            .open_native_async()
            .map_err(|e| LinkError::Io(format!("failed to open load controller at {port}: {e}")))?;
        // Best effort: leftovers of an earlier session would only be discarded as stale lines.
        let _ = stream.clear(tokio_serial::ClearBuffer::Input);
        Ok(LoadClient::from_stream(stream, options))
    }

    /// A client over any byte stream (tests, sockets).
    pub fn from_stream<S>(stream: S, options: ClientOptions) -> LoadClient
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        LoadClient {
            stream: Box::new(stream),
            options,
            next_tag: 1,
            pending: Vec::new(),
            discarding: false,
            stats: LinkStats::default(),
        }
    }

    /// Link counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats.clone()
    }

    /// `HELLO`: identifies the controller; fails unless it speaks [`PROTOCOL_VERSION`].
    pub async fn hello(&mut self) -> Result<Identity, LinkError> {
        let fields = self.request(&Request::Hello).await?;
        let identity = Identity::from_fields(&fields).map_err(|e| protocol("HELLO", &e))?;
        if identity.protocol != PROTOCOL_VERSION {
            return Err(LinkError::Protocol(format!(
                "unsupported protocol version {} (model {}, serial {}); this harness speaks {}",
                identity.protocol, identity.model, identity.serial, PROTOCOL_VERSION
            )));
        }
        Ok(identity)
    }

    /// `CAL?`: the load's calibration.
    pub async fn calibration(&mut self) -> Result<Calibration, LinkError> {
        let fields = self.request(&Request::CalQuery).await?;
        Calibration::from_fields(&fields).map_err(|e| protocol("CAL?", &e))
    }

    /// `STATUS`.
    pub async fn status(&mut self) -> Result<Status, LinkError> {
        let fields = self.request(&Request::Status).await?;
        Status::from_fields(&fields).map_err(|e| protocol("STATUS", &e))
    }

    /// `TRUTH?`: what the controller observed.
    pub async fn truth(&mut self) -> Result<Truth, LinkError> {
        let fields = self.request(&Request::TruthQuery).await?;
        Truth::from_fields(&fields).map_err(|e| protocol("TRUTH?", &e))
    }

    /// `ESTOP` (re-sent on a lost reply: it is idempotent).
    pub async fn estop(&mut self) -> Result<(), LinkError> {
        self.request(&Request::EStop).await.map(drop)
    }

    /// Uploads one profile table (`PROFILE BEGIN`, `DATA`..., `END`) and checks the
    /// controller's length and CRC-32 of what it received; on a mismatch (or a lost `END`
    /// reply) the whole table is uploaded once more.
    pub async fn upload(&mut self, kind: ProfileKind, bytes: &[u8]) -> Result<(), LinkError> {
        let sent_len = u32::try_from(bytes.len()).map_err(|_| {
            LinkError::Protocol(format!(
                "the {kind} profile has {} bytes, more than a u32 length",
                bytes.len()
            ))
        })?;
        let sent_crc = crc32(bytes);
        let mut last_error = None;
        for round in 0..2 {
            if round > 0 {
                self.stats.reuploads += 1;
            }
            match self.upload_once(kind, bytes, sent_len, sent_crc).await? {
                Ok(()) => return Ok(()),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(LinkError::Protocol(format!(
            "upload of the {kind} profile did not complete"
        ))))
    }

    /// One upload; the inner error is one a re-upload may cure.
    async fn upload_once(
        &mut self,
        kind: ProfileKind,
        bytes: &[u8],
        sent_len: u32,
        sent_crc: u32,
    ) -> Result<Result<(), LinkError>, LinkError> {
        let begin = Request::ProfileBegin {
            kind,
            len: sent_len,
            crc32: sent_crc,
        };
        // A BEGIN restarts the upload of its kind, so re-sending it is safe whenever the state
        // allows uploads at all.
        self.command(&begin, |s| match s.state {
            LoadState::Idle | LoadState::Loaded => Effect::NotApplied,
            _ => Effect::Unknown,
        })
        .await?;
        let mut offset = 0u32;
        for chunk in bytes.chunks(MAX_DATA_CHUNK) {
            let data = Request::ProfileData {
                kind,
                offset,
                data: chunk.to_vec(),
            };
            self.request(&data).await?;
            // Cannot overflow: the chunks sum to `sent_len`, a u32.
            offset = offset.saturating_add(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
        }
        let end = Request::ProfileEnd { kind };
        let fields = match self.request(&end).await {
            Ok(fields) => fields,
            // STATUS cannot tell whether END loaded the table; uploading it again settles it.
            Err(error @ (LinkError::Timeout { .. } | LinkError::Corrupt { .. })) => {
                return Ok(Err(error))
            }
            Err(error) => return Err(error),
        };
        let what = end.summary();
        let received_len = fields.u32("len").map_err(|e| protocol(&what, &e))?;
        let received_crc = fields.hex_u32("crc32").map_err(|e| protocol(&what, &e))?;
        if received_len == sent_len && received_crc == sent_crc {
            Ok(Ok(()))
        } else {
            Ok(Err(LinkError::UploadMismatch {
                kind,
                sent_len,
                sent_crc,
                received_len,
                received_crc,
            }))
        }
    }

    /// `ARM <rate_hz> <duration_ms>`.
    pub async fn arm(&mut self, rate_hz: u32, duration_ms: u32) -> Result<(), LinkError> {
        let request = Request::Arm {
            rate_hz,
            duration_ms,
        };
        self.command(&request, |s| match s.state {
            LoadState::Armed => Effect::Applied,
            LoadState::Idle | LoadState::Loaded => Effect::NotApplied,
            _ => Effect::Unknown,
        })
        .await
        .map(drop)
    }

    /// `START`: returns `t0_us`, the controller clock at the start of playback.
    pub async fn start(&mut self) -> Result<u64, LinkError> {
        let answer = self
            .command(&Request::Start, |s| match s.state {
                LoadState::Armed => Effect::NotApplied,
                LoadState::Running | LoadState::Done => Effect::Applied,
                _ => Effect::Unknown,
            })
            .await?;
        match answer {
            Answer::Reply(fields) => fields.u64("t0_us").map_err(|e| protocol("START", &e)),
            Answer::Resolved(status) => Err(LinkError::Unresolved {
                request: "START".into(),
                detail: format!(
                    "STATUS shows the controller {}, so START took effect, but its reply \
                     carrying t0_us was lost (sample 0 is recorded at t0)",
                    status.state
                ),
            }),
        }
    }

    /// `END`: stops playback; returns the number of samples recorded.
    pub async fn end(&mut self) -> Result<u32, LinkError> {
        let answer = self
            .command(&Request::End, |s| match s.state {
                LoadState::Done => Effect::Applied,
                LoadState::Running | LoadState::Armed => Effect::NotApplied,
                _ => Effect::Unknown,
            })
            .await?;
        match answer {
            Answer::Reply(fields) => fields.u32("samples").map_err(|e| protocol("END", &e)),
            Answer::Resolved(status) => Ok(status.samples),
        }
    }

    /// `CLEAR`: back to idle (or loaded) from done, estop or fault.
    pub async fn clear(&mut self) -> Result<(), LinkError> {
        self.command(&Request::Clear, |s| match s.state {
            LoadState::Idle | LoadState::Loaded => Effect::Applied,
            LoadState::Done | LoadState::EStop | LoadState::Fault => Effect::NotApplied,
            _ => Effect::Unknown,
        })
        .await
        .map(drop)
    }

    /// Reads samples `0..total` in blocks of [`MAX_READ_COUNT`]. A block that times out, is
    /// corrupt, or whose records do not carry their own index as `seq` is re-requested up to
    /// `retries` times; blocks still bad then (or refused with `RANGE`) are listed in
    /// `missing`, never left out silently. Fails only when the link itself fails.
    pub async fn read_samples(&mut self, total: u32) -> Result<Readback, LinkError> {
        let mut readback = Readback {
            samples: Vec::new(),
            missing: Vec::new(),
            retries: 0,
        };
        let timeout = self.options.timeout;
        let mut first = 0u32;
        while first < total {
            let count = MAX_READ_COUNT.min(total - first);
            let request = Request::Read { first, count };
            let mut tries = 0;
            let block = loop {
                match self.attempt(&request, timeout).await {
                    Ok(fields) => match parse_read_reply(&fields, first, count) {
                        Ok(samples)
                            if samples
                                .iter()
                                .zip(first..)
                                .all(|(sample, index)| sample.seq == index) =>
                        {
                            break Some(samples)
                        }
                        // A valid CRC over wrong content: a controller fault; count it as such.
                        _ => self.stats.corrupt_lines += 1,
                    },
                    Err(Failure::Final(LinkError::Refused { code, .. })) if code == "RANGE" => {
                        break None
                    }
                    Err(Failure::Final(error)) => return Err(error),
                    Err(Failure::Timeout | Failure::Corrupt(_) | Failure::RequestCorrupted(_)) => {}
                }
                if tries >= self.options.retries {
                    break None;
                }
                tries += 1;
                readback.retries += 1;
                self.stats.retries += 1;
            };
            match block {
                Some(samples) => readback.samples.extend(samples),
                None => match readback.missing.last_mut() {
                    Some(last) if last.end == first => last.end = first + count,
                    _ => readback.missing.push(first..first + count),
                },
            }
            first += count;
        }
        Ok(readback)
    }

    fn timeout_for(&self, request: &Request) -> Duration {
        if request.slow() {
            self.options.long_timeout
        } else {
            self.options.timeout
        }
    }

    fn take_tag(&mut self) -> u16 {
        let tag = self.next_tag;
        self.next_tag = if tag == u16::MAX { 1 } else { tag + 1 };
        tag
    }

    /// Sends `request`, re-sending idempotent ones (and any the controller received corrupt).
    async fn request(&mut self, request: &Request) -> Result<Fields, LinkError> {
        let timeout = self.timeout_for(request);
        let mut resent = 0;
        loop {
            let failure = match self.attempt(request, timeout).await {
                Ok(fields) => return Ok(fields),
                Err(failure) => failure,
            };
            let retry = match &failure {
                Failure::Final(_) => false,
                // `ERR CRC` guarantees the request was not executed: re-sending is safe.
                Failure::RequestCorrupted(_) => true,
                Failure::Timeout | Failure::Corrupt(_) => request.idempotent(),
            };
            if retry && resent < self.options.retries {
                resent += 1;
                self.stats.retries += 1;
                continue;
            }
            let name = request.summary();
            return Err(match failure {
                Failure::Timeout => LinkError::Timeout {
                    request: name,
                    after: timeout,
                },
                Failure::Corrupt(detail) => LinkError::Corrupt {
                    request: name,
                    detail,
                },
                Failure::RequestCorrupted(text) => LinkError::Corrupt {
                    request: name,
                    detail: format!(
                        "the controller received it corrupt on every attempt (ERR CRC {text}); \
                         it was not executed"
                    ),
                },
                Failure::Final(error) => error,
            });
        }
    }

    /// A non-idempotent request: when its reply is lost, `STATUS` decides whether it took
    /// effect (done), did not (sent once more), or cannot tell (error).
    async fn command(
        &mut self,
        request: &Request,
        effect: impl Fn(&Status) -> Effect,
    ) -> Result<Answer, LinkError> {
        let mut sent_again = false;
        loop {
            let error = match self.request(request).await {
                Ok(fields) => return Ok(Answer::Reply(fields)),
                Err(error @ (LinkError::Timeout { .. } | LinkError::Corrupt { .. })) => error,
                Err(error) => return Err(error),
            };
            let status = match self.status().await {
                Ok(status) => status,
                Err(status_error) => {
                    return Err(LinkError::Unresolved {
                        request: request.summary(),
                        detail: format!("{error}; STATUS failed too: {status_error}"),
                    })
                }
            };
            match effect(&status) {
                Effect::Applied => return Ok(Answer::Resolved(status)),
                Effect::NotApplied if !sent_again => {
                    sent_again = true;
                    self.stats.retries += 1;
                }
                Effect::NotApplied => return Err(error),
                Effect::Unknown => {
                    return Err(LinkError::Unresolved {
                        request: request.summary(),
                        detail: format!(
                            "{error}; STATUS shows state {} (fault {}), which does not tell \
                             whether it took effect",
                            status.state,
                            status.fault.as_deref().unwrap_or("-")
                        ),
                    })
                }
            }
        }
    }

    /// Sends `request` once with a fresh tag and waits for its reply.
    async fn attempt(&mut self, request: &Request, timeout: Duration) -> Result<Fields, Failure> {
        let tag = self.take_tag();
        let line = request.to_line(tag);
        self.stats.requests += 1;
        let now = Instant::now();
        // A configured timeout too large for the clock means: wait a day.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        match tokio::time::timeout_at(deadline, self.write_line(line.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Failure::Final(error)),
            Err(_) => {
                self.stats.timeouts += 1;
                return Err(Failure::Timeout);
            }
        }
        let mut corrupt_seen = None;
        loop {
            let raw = match self.read_line(deadline).await {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    self.stats.timeouts += 1;
                    return Err(corrupt_seen.map_or(Failure::Timeout, Failure::Corrupt));
                }
                Err(error) => return Err(Failure::Final(error)),
            };
            let reply = decode_line(&raw)
                .map_err(|e| e.to_string())
                .and_then(|body| parse_reply(body).map_err(|e| format!("unreadable reply: {e}")));
            let reply = match reply {
                Ok(reply) => reply,
                Err(detail) => {
                    self.stats.corrupt_lines += 1;
                    // An idempotent request is simply asked again; any other waits for its
                    // deadline (the real reply may still come) and is then resolved.
                    if request.idempotent() {
                        return Err(Failure::Corrupt(detail));
                    }
                    corrupt_seen = Some(detail);
                    continue;
                }
            };
            if reply.tag != tag {
                self.stats.stale_lines += 1;
                continue;
            }
            return match reply.outcome {
                Outcome::Ok(fields) => Ok(fields),
                Outcome::Err { code, text } if code == "CRC" => {
                    Err(Failure::RequestCorrupted(text))
                }
                Outcome::Err { code, text } if code == "UNSUPPORTED" => {
                    Err(Failure::Final(LinkError::Unsupported {
                        request: request.summary(),
                        text,
                    }))
                }
                Outcome::Err { code, text } => Err(Failure::Final(LinkError::Refused {
                    request: request.summary(),
                    code,
                    text,
                })),
            };
        }
    }

    async fn write_line(&mut self, line: &[u8]) -> Result<(), LinkError> {
        self.stream
            .write_all(line)
            .await
            .map_err(|e| io_error(&e))?;
        self.stream.flush().await.map_err(|e| io_error(&e))
    }

    /// The next received line without its `\n`; `None` at the deadline. Lines longer than
    /// the limit are dropped whole (counted as corrupt).
    async fn read_line(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, LinkError> {
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(newline) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=newline).collect();
                line.pop();
                if self.discarding {
                    self.discarding = false;
                    self.stats.corrupt_lines += 1;
                    continue;
                }
                return Ok(Some(line));
            }
            if self.pending.len() > MAX_LINE_LEN + 1 {
                self.pending.clear();
                self.discarding = true;
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await;
            match read {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err(LinkError::Disconnected),
                Ok(Ok(n)) => self
                    .pending
                    .extend_from_slice(buffer.get(..n).unwrap_or_default()),
                Ok(Err(error)) => return Err(io_error(&error)),
            }
        }
    }
}

fn protocol(request: &str, error: &super::protocol::FieldError) -> LinkError {
    LinkError::Protocol(format!("reply to `{request}`: {error}"))
}
