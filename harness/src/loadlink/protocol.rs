//! The load-link codec: lines, checksums, requests, replies and sample records. No IO.
//!
//! Everything here follows `harness/docs/load-protocol.md`; the constants below are the numbers
//! of that specification. Decoding never panics, whatever bytes arrive.

use std::fmt;

use serde::Serialize;

/// Protocol version this harness speaks (`HELLO` reply `proto=`).
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest line, in bytes, counting the `*CRC` suffix but not the `\n` terminator.
pub const MAX_LINE_LEN: usize = 4096;
/// Most payload bytes in one `PROFILE DATA` line.
pub const MAX_DATA_CHUNK: usize = 1024;
/// Most records in one `READ` reply (48 records of 40 bytes are 3840 hex digits: the longest
/// reply stays under [`MAX_LINE_LEN`]).
pub const MAX_READ_COUNT: u32 = 48;
/// Bytes in one packed sample record.
pub const RECORD_LEN: usize = 40;

/// CRC-32 (IEEE 802.3: reflected polynomial 0xEDB88320, initial value and final XOR
/// 0xFFFFFFFF), bitwise without a table. Check value over `b"123456789"`: `0xCBF43926`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0xFFFF_FFFF;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// CRC-16/CCITT-FALSE of a line body (the firmware telemetry's CRC; check value `0x29B1`).
pub fn line_crc(body: &[u8]) -> u16 {
    driver_core::telemetry::crc16(body)
}

/// Why a received line was discarded before its content was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line exceeds [`MAX_LINE_LEN`].
    #[error("line of {len} bytes exceeds the {MAX_LINE_LEN}-byte limit")]
    TooLong {
        /// Bytes received before the limit was noticed.
        len: usize,
    },
    /// A byte that is not printable ASCII.
    #[error("byte 0x{byte:02X} at offset {offset} is not printable ASCII")]
    NotAscii {
        /// Offset in the line.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// No `*` before the CRC.
    #[error("line has no `*CRC` suffix")]
    MissingCrc,
    /// The text after the last `*` is not 4 hex digits.
    #[error("CRC field `{0}` is not 4 hex digits")]
    BadCrcField(String),
    /// The CRC does not match the body.
    #[error("CRC mismatch: line says {stated:04X}, body has {computed:04X}")]
    CrcMismatch {
        /// CRC written in the line.
        stated: u16,
        /// CRC computed over the body.
        computed: u16,
    },
}

/// Frames a body: `<body>*<CRC>\n`.
pub fn encode_line(body: &str) -> String {
    format!("{body}*{:04X}\n", line_crc(body.as_bytes()))
}

/// Checks one received line (without its `\n`; a trailing `\r` is tolerated) and returns its
/// body.
pub fn decode_line(line: &[u8]) -> Result<&str, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return Err(LineError::TooLong { len: line.len() });
    }
    if let Some(offset) = line.iter().position(|&b| !(b' '..=b'~').contains(&b)) {
        let byte = line.get(offset).copied().unwrap_or(0);
        return Err(LineError::NotAscii { offset, byte });
    }
    let star = line
        .iter()
        .rposition(|&b| b == b'*')
        .ok_or(LineError::MissingCrc)?;
    let (body, crc_field) = line.split_at(star);
    let crc_field = crc_field.get(1..).unwrap_or_default();
    // Printable ASCII was checked above, so both halves are valid UTF-8.
    let body = std::str::from_utf8(body).map_err(|_| LineError::MissingCrc)?;
    let crc_text = String::from_utf8_lossy(crc_field).into_owned();
    if crc_field.len() != 4 || !crc_field.iter().all(u8::is_ascii_hexdigit) {
        return Err(LineError::BadCrcField(crc_text));
    }
    let stated =
        u16::from_str_radix(&crc_text, 16).map_err(|_| LineError::BadCrcField(crc_text))?;
    let computed = line_crc(body.as_bytes());
    if stated != computed {
        return Err(LineError::CrcMismatch { stated, computed });
    }
    Ok(body)
}

/// The tag at the start of a line, if it can be read (used to answer `ERR CRC`).
pub fn peek_tag(line: &[u8]) -> Option<u16> {
    let end = line.iter().position(|&b| b == b' ')?;
    let text = std::str::from_utf8(line.get(..end)?).ok()?;
    parse_tag(text).ok()
}

/// A profile table the controller plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileKind {
    /// The compiled bone profile table (resistance the load plays).
    Bone,
    /// The operator's push force and trigger schedule.
    Push,
    /// DUT-side physics; only a virtual controller plays it.
    Plant,
}

impl ProfileKind {
    /// Every kind, in upload order.
    pub const ALL: [ProfileKind; 3] = [ProfileKind::Bone, ProfileKind::Push, ProfileKind::Plant];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileKind::Bone => "bone",
            ProfileKind::Push => "push",
            ProfileKind::Plant => "plant",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<ProfileKind> {
        ProfileKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the controller says it is (`HELLO`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Protocol version it speaks.
    pub protocol: u32,
    /// Model token.
    pub model: String,
    /// Serial-number token.
    pub serial: String,
    /// Firmware version token.
    pub firmware: String,
    /// Highest sample/playback rate it accepts at `ARM`, Hz.
    pub max_rate_hz: u32,
}

/// The load's torque calibration (`CAL?`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Calibration certificate id token.
    pub id: String,
    /// Due date, `YYYY-MM-DD`.
    pub due: String,
    /// Torque sensor full scale, N·mm.
    pub torque_full_scale_nmm: f64,
}

/// Controller state (see the state diagram in the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadState {
    /// No complete bone and push tables.
    Idle,
    /// Bone and push tables loaded; ready to arm.
    Loaded,
    /// Armed with a rate and duration; waits for `START`.
    Armed,
    /// Playing and recording.
    Running,
    /// Playback ended (by `END` or by its duration); samples readable.
    Done,
    /// Emergency stop (host `ESTOP` or link watchdog); samples readable.
    EStop,
    /// The load faulted; samples readable.
    Fault,
}

impl LoadState {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadState::Idle => "idle",
            LoadState::Loaded => "loaded",
            LoadState::Armed => "armed",
            LoadState::Running => "running",
            LoadState::Done => "done",
            LoadState::EStop => "estop",
            LoadState::Fault => "fault",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<LoadState> {
        [
            LoadState::Idle,
            LoadState::Loaded,
            LoadState::Armed,
            LoadState::Running,
            LoadState::Done,
            LoadState::EStop,
            LoadState::Fault,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl fmt::Display for LoadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `STATUS` reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Controller state.
    pub state: LoadState,
    /// Controller clock, µs.
    pub clock_us: u64,
    /// Samples recorded in the current run.
    pub samples: u32,
    /// Latest measured shaft speed, rpm.
    pub speed_rpm: f64,
    /// Latest fault token (`None` is `-` on the wire).
    pub fault: Option<String>,
}

/// One recorded sample, in engineering units.
///
/// On the wire it is a 40-byte little-endian record (see [`LoadSample::to_record`]); the
/// integer fields quantise depth to 1 µm, speed to 0.001 rpm, torque to 0.001 N·mm, push to
/// 1 mN, the board's supply current to 1 mA and its voltage to 1 mV (rounded to nearest;
/// values outside `i32` saturate, NaN becomes 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSample {
    /// Sequence number: index in the run's recording, from 0.
    pub seq: u32,
    /// Controller clock, µs.
    pub t_us: u64,
    /// Needle depth, mm.
    pub depth_mm: f64,
    /// Shaft speed, rpm.
    pub speed_rpm: f64,
    /// Load torque, N·mm.
    pub load_torque_nmm: f64,
    /// Operator push force, N.
    pub push_n: f64,
    /// Trigger line level (true: pressed).
    pub trigger: bool,
    /// The board's supply current (the bench's power channel feeds the board), A.
    pub supply_current_a: f64,
    /// The board's supply voltage at its battery terminals, V.
    pub supply_v: f64,
}

fn quantise(value: f64, per_unit: f64) -> i32 {
    // `as` saturates out-of-range values and maps NaN to 0, as the record format documents.
    (value * per_unit).round() as i32
}

impl LoadSample {
    /// Packs the sample: seq u32, t_us u64, depth_um i32, speed_mrpm i32, torque_unmm i32
    /// (0.001 N·mm), push_mn i32, flags u8 (bit 0 trigger), 3 zero bytes, supply_ma i32,
    /// supply_mv i32; little-endian.
    pub fn to_record(&self) -> [u8; RECORD_LEN] {
        let mut record = [0u8; RECORD_LEN];
        let fields: [&[u8]; 6] = [
            &self.seq.to_le_bytes(),
            &self.t_us.to_le_bytes(),
            &quantise(self.depth_mm, 1000.0).to_le_bytes(),
            &quantise(self.speed_rpm, 1000.0).to_le_bytes(),
            &quantise(self.load_torque_nmm, 1000.0).to_le_bytes(),
            &quantise(self.push_n, 1000.0).to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            for (slot, byte) in record.iter_mut().skip(at).zip(field) {
                *slot = *byte;
            }
            at += field.len();
        }
        if let Some(flags) = record.get_mut(at) {
            *flags = u8::from(self.trigger);
        }
        let supply = [
            quantise(self.supply_current_a, 1000.0).to_le_bytes(),
            quantise(self.supply_v, 1000.0).to_le_bytes(),
        ];
        for (slot, byte) in record.iter_mut().skip(32).zip(supply.iter().flatten()) {
            *slot = *byte;
        }
        record
    }

    /// Unpacks a record; `None` if it is not [`RECORD_LEN`] bytes or its reserved bits are set.
    pub fn from_record(record: &[u8]) -> Option<LoadSample> {
        if record.len() != RECORD_LEN {
            return None;
        }
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(record.get(at..at + 4)?.try_into().ok()?))
        };
        let i32_at = |at: usize| -> Option<f64> {
            Some(f64::from(i32::from_le_bytes(record.get(at..at + 4)?.try_into().ok()?)) / 1000.0)
        };
        let t_us = u64::from_le_bytes(record.get(4..12)?.try_into().ok()?);
        let flags = *record.get(28)?;
        if flags & !1 != 0 || record.get(29..32)? != [0, 0, 0] {
            return None;
        }
        Some(LoadSample {
            seq: u32_at(0)?,
            t_us,
            depth_mm: i32_at(12)?,
            speed_rpm: i32_at(16)?,
            load_torque_nmm: i32_at(20)?,
            push_n: i32_at(24)?,
            trigger: flags & 1 == 1,
            supply_current_a: i32_at(32)?,
            supply_v: i32_at(36)?,
        })
    }
}

/// Ground truth the controller observed (`TRUTH?`); instants on the controller clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Truth {
    /// Needle first touched the near cortex, µs.
    pub cortex_contact_us: Option<u64>,
    /// The near cortex's cap fractured (breakthrough, `t_bt`), µs.
    pub cap_fracture_us: Option<u64>,
    /// Needle touched the far cortex, µs.
    pub far_contact_us: Option<u64>,
    /// Whether the needle was still rotating at far-cortex contact.
    pub far_contact_rotating: bool,
    /// Depth of the near cortex's inner surface, mm (1 µm resolution on the wire).
    pub inner_surface_mm: f64,
    /// Depth of the far cortex, mm (1 µm resolution on the wire).
    pub far_cortex_mm: f64,
}

/// Error codes of `ERR` replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// The request's CRC did not match; it was not executed.
    Crc,
    /// Malformed request (missing or bad argument).
    Syntax,
    /// Unknown verb.
    Unknown,
    /// Not allowed in the current state.
    State,
    /// `ARM` without complete bone and push tables.
    NoProfile,
    /// Profile chunk out of order, or no upload in progress.
    Sequence,
    /// A number outside its allowed range.
    Range,
    /// Playback rejected the uploaded tables at `ARM`.
    BadProfile,
    /// The controller does not play this profile kind.
    Unsupported,
    /// The load faulted while executing the request.
    Fault,
}

impl ErrorCode {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Crc => "CRC",
            ErrorCode::Syntax => "SYNTAX",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::State => "STATE",
            ErrorCode::NoProfile => "NOPROFILE",
            ErrorCode::Sequence => "SEQUENCE",
            ErrorCode::Range => "RANGE",
            ErrorCode::BadProfile => "BADPROFILE",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::Fault => "FAULT",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<ErrorCode> {
        [
            ErrorCode::Crc,
            ErrorCode::Syntax,
            ErrorCode::Unknown,
            ErrorCode::State,
            ErrorCode::NoProfile,
            ErrorCode::Sequence,
            ErrorCode::Range,
            ErrorCode::BadProfile,
            ErrorCode::Unsupported,
            ErrorCode::Fault,
        ]
        .into_iter()
        .find(|c| c.as_str() == text)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host request (the part after the tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `HELLO`.
    Hello,
    /// `CAL?`.
    CalQuery,
    /// `PROFILE BEGIN <kind> <len> <crc32>`.
    ProfileBegin {
        /// Table kind.
        kind: ProfileKind,
        /// Total length, bytes.
        len: u32,
        /// CRC-32 of the whole table.
        crc32: u32,
    },
    /// `PROFILE DATA <kind> <offset> <hex>`.
    ProfileData {
        /// Table kind.
        kind: ProfileKind,
        /// Offset of the first byte in the table.
        offset: u32,
        /// 1 to [`MAX_DATA_CHUNK`] bytes.
        data: Vec<u8>,
    },
    /// `PROFILE END <kind>`.
    ProfileEnd {
        /// Table kind.
        kind: ProfileKind,
    },
    /// `ARM <rate_hz> <duration_ms>`.
    Arm {
        /// Playback and recording rate, Hz.
        rate_hz: u32,
        /// Longest playback, ms.
        duration_ms: u32,
    },
    /// `START`.
    Start,
    /// `STATUS`.
    Status,
    /// `END`.
    End,
    /// `READ <first> <count>`.
    Read {
        /// First sample index.
        first: u32,
        /// Number of samples, 1 to [`MAX_READ_COUNT`].
        count: u32,
    },
    /// `TRUTH?`.
    TruthQuery,
    /// `ESTOP`.
    EStop,
    /// `CLEAR`.
    Clear,
}

impl Request {
    /// Whether re-sending the request after a lost reply is harmless (the client retries only
    /// these blindly).
    pub fn idempotent(&self) -> bool {
        matches!(
            self,
            Request::Hello
                | Request::CalQuery
                | Request::Status
                | Request::Read { .. }
                | Request::TruthQuery
                | Request::EStop
                | Request::ProfileData { .. }
        )
    }

    /// Whether the controller may take up to 200 ms to answer.
    pub fn slow(&self) -> bool {
        matches!(self, Request::Arm { .. } | Request::ProfileEnd { .. })
    }

    /// The request body without its tag.
    pub fn encode(&self) -> String {
        match self {
            Request::Hello => "HELLO".into(),
            Request::CalQuery => "CAL?".into(),
            Request::ProfileBegin { kind, len, crc32 } => {
                format!("PROFILE BEGIN {kind} {len} {crc32:08X}")
            }
            Request::ProfileData { kind, offset, data } => {
                format!("PROFILE DATA {kind} {offset} {}", hex_upper(data))
            }
            Request::ProfileEnd { kind } => format!("PROFILE END {kind}"),
            Request::Arm {
                rate_hz,
                duration_ms,
            } => format!("ARM {rate_hz} {duration_ms}"),
            Request::Start => "START".into(),
            Request::Status => "STATUS".into(),
            Request::End => "END".into(),
            Request::Read { first, count } => format!("READ {first} {count}"),
            Request::TruthQuery => "TRUTH?".into(),
            Request::EStop => "ESTOP".into(),
            Request::Clear => "CLEAR".into(),
        }
    }

    /// A short human-readable form for error messages (payloads summarised, not dumped).
    pub fn summary(&self) -> String {
        match self {
            Request::ProfileData { kind, offset, data } => {
                format!("PROFILE DATA {kind} {offset} ({} bytes)", data.len())
            }
            other => other.encode(),
        }
    }

    /// The full framed line with `tag`.
    pub fn to_line(&self, tag: u16) -> String {
        encode_line(&format!("{tag} {}", self.encode()))
    }
}

/// A request the controller cannot execute as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The tag, if it could be read (no tag: the controller stays silent).
    pub tag: Option<u16>,
    /// Error code to answer with.
    pub code: ErrorCode,
    /// Free text.
    pub text: String,
}

/// Parses a request body (CRC already checked) into its tag and request.
pub fn parse_request(body: &str) -> Result<(u16, Request), RequestError> {
    let mut words = body.split(' ');
    let tag = words.next().and_then(|t| parse_tag(t).ok());
    let Some(tag) = tag else {
        return Err(RequestError {
            tag: None,
            code: ErrorCode::Syntax,
            text: "missing or bad tag".into(),
        });
    };
    let fail = |code: ErrorCode, text: String| RequestError {
        tag: Some(tag),
        code,
        text,
    };
    let args: Vec<&str> = words.collect();
    let syntax = |text: &str| fail(ErrorCode::Syntax, text.to_string());
    let expect_args = |n: usize, usage: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(fail(ErrorCode::Syntax, format!("usage: {usage}")))
        }
    };
    let number = |index: usize, what: &str| -> Result<u32, RequestError> {
        args.get(index)
            .and_then(|t| parse_u32(t))
            .ok_or_else(|| fail(ErrorCode::Syntax, format!("{what} is not a decimal number")))
    };
    let Some((verb, rest)) = args.split_first() else {
        return Err(syntax("missing verb"));
    };
    let request = match *verb {
        "HELLO" => expect_args(1, "HELLO").map(|()| Request::Hello)?,
        "CAL?" => expect_args(1, "CAL?").map(|()| Request::CalQuery)?,
        "START" => expect_args(1, "START").map(|()| Request::Start)?,
        "STATUS" => expect_args(1, "STATUS").map(|()| Request::Status)?,
        "END" => expect_args(1, "END").map(|()| Request::End)?,
        "TRUTH?" => expect_args(1, "TRUTH?").map(|()| Request::TruthQuery)?,
        "ESTOP" => expect_args(1, "ESTOP").map(|()| Request::EStop)?,
        "CLEAR" => expect_args(1, "CLEAR").map(|()| Request::Clear)?,
        "ARM" => {
            expect_args(3, "ARM <rate_hz> <duration_ms>")?;
            Request::Arm {
                rate_hz: number(1, "rate_hz")?,
                duration_ms: number(2, "duration_ms")?,
            }
        }
        "READ" => {
            expect_args(3, "READ <first> <count>")?;
            Request::Read {
                first: number(1, "first")?,
                count: number(2, "count")?,
            }
        }
        "PROFILE" => {
            let sub = rest.first().copied().unwrap_or_default();
            let kind = match rest.get(1) {
                Some(text) => ProfileKind::parse(text).ok_or_else(|| {
                    fail(
                        ErrorCode::Syntax,
                        format!("unknown profile kind `{text}` (bone, push or plant)"),
                    )
                })?,
                None => return Err(syntax("usage: PROFILE BEGIN|DATA|END <kind> ...")),
            };
            match sub {
                "BEGIN" => {
                    expect_args(5, "PROFILE BEGIN <kind> <len> <crc32>")?;
                    let crc_text = args.get(4).copied().unwrap_or_default();
                    let crc32 = parse_hex_u32(crc_text)
                        .ok_or_else(|| syntax("crc32 is not 8 hex digits"))?;
                    Request::ProfileBegin {
                        kind,
                        len: number(3, "len")?,
                        crc32,
                    }
                }
                "DATA" => {
                    expect_args(5, "PROFILE DATA <kind> <offset> <hex>")?;
                    let data = parse_hex_bytes(args.get(4).copied().unwrap_or_default())
                        .ok_or_else(|| syntax("data is not an even number of hex digits"))?;
                    if data.is_empty() || data.len() > MAX_DATA_CHUNK {
                        return Err(fail(
                            ErrorCode::Range,
                            format!("chunk of {} bytes (1 to {MAX_DATA_CHUNK})", data.len()),
                        ));
                    }
                    Request::ProfileData {
                        kind,
                        offset: number(3, "offset")?,
                        data,
                    }
                }
                "END" => {
                    expect_args(3, "PROFILE END <kind>")?;
                    Request::ProfileEnd { kind }
                }
                _ => return Err(syntax("usage: PROFILE BEGIN|DATA|END <kind> ...")),
            }
        }
        other => {
            return Err(fail(
                ErrorCode::Unknown,
                format!("unknown verb `{}`", sanitize_text(other)),
            ))
        }
    };
    Ok((tag, request))
}

/// `key=value` pairs of an `OK` reply, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

/// Why a reply's fields do not make the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub String);

impl Fields {
    /// Appends a pair; `value` is made a token (see [`token`]).
    pub fn push(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        self.0.push((key.to_string(), token(&value.to_string())));
        self
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Result<&str, FieldError> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| FieldError(format!("missing field `{key}`")))
    }

    fn parsed<T>(
        &self,
        key: &str,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, FieldError> {
        let text = self.get(key)?;
        parse(text).ok_or_else(|| FieldError(format!("field `{key}={text}` is not {what}")))
    }

    /// A `u32` field.
    pub fn u32(&self, key: &str) -> Result<u32, FieldError> {
        self.parsed(key, "a decimal u32", parse_u32)
    }

    /// A `u64` field.
    pub fn u64(&self, key: &str) -> Result<u64, FieldError> {
        self.parsed(key, "a decimal u64", parse_u64)
    }

    /// An `i64` field.
    pub fn i64(&self, key: &str) -> Result<i64, FieldError> {
        self.parsed(key, "a decimal i64", parse_i64)
    }

    /// A finite decimal number.
    pub fn f64(&self, key: &str) -> Result<f64, FieldError> {
        self.parsed(key, "a finite decimal number", parse_f64)
    }

    /// An 8-digit hex `u32` field (a CRC-32).
    pub fn hex_u32(&self, key: &str) -> Result<u32, FieldError> {
        self.parsed(key, "8 hex digits", parse_hex_u32)
    }

    /// A `u64` or `-` (absent).
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, FieldError> {
        self.parsed(key, "a decimal u64 or `-`", |t| {
            if t == "-" {
                Some(None)
            } else {
                parse_u64(t).map(Some)
            }
        })
    }

    /// Encodes as the part of an `OK` line after `OK`.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Outcome carried by a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `OK` with its fields.
    Ok(Fields),
    /// `ERR <code> <text>`; the code is kept as text (a newer controller may send codes this
    /// harness does not know).
    Err {
        /// Error code.
        code: String,
        /// Free text.
        text: String,
    },
}

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Tag of the request it answers.
    pub tag: u16,
    /// What it says.
    pub outcome: Outcome,
}

impl Reply {
    /// `<tag> OK ...` body.
    pub fn ok(tag: u16, fields: Fields) -> Reply {
        Reply {
            tag,
            outcome: Outcome::Ok(fields),
        }
    }

    /// `<tag> ERR <code> <text>` body.
    pub fn err(tag: u16, code: ErrorCode, text: &str) -> Reply {
        Reply {
            tag,
            outcome: Outcome::Err {
                code: code.as_str().to_string(),
                text: sanitize_text(text),
            },
        }
    }

    /// The body (no CRC).
    pub fn encode(&self) -> String {
        match &self.outcome {
            Outcome::Ok(fields) if fields.0.is_empty() => format!("{} OK", self.tag),
            Outcome::Ok(fields) => format!("{} OK {}", self.tag, fields.encode()),
            Outcome::Err { code, text } if text.is_empty() => format!("{} ERR {code}", self.tag),
            Outcome::Err { code, text } => format!("{} ERR {code} {text}", self.tag),
        }
    }

    /// The framed line.
    pub fn to_line(&self) -> String {
        encode_line(&self.encode())
    }
}

/// Parses a reply body (CRC already checked).
pub fn parse_reply(body: &str) -> Result<Reply, FieldError> {
    let (tag_text, rest) = body.split_once(' ').unwrap_or((body, ""));
    let tag = parse_tag(tag_text)?;
    let (word, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let outcome = match word {
        "OK" => {
            let mut fields = Fields::default();
            for pair in rest.split(' ').filter(|p| !p.is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| FieldError(format!("`{pair}` is not key=value")))?;
                if key.is_empty() || value.is_empty() {
                    return Err(FieldError(format!("`{pair}` has an empty key or value")));
                }
                fields.0.push((key.to_string(), value.to_string()));
            }
            Outcome::Ok(fields)
        }
        "ERR" => {
            let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if code.is_empty() {
                return Err(FieldError("ERR without a code".into()));
            }
            Outcome::Err {
                code: code.to_string(),
                text: text.trim().to_string(),
            }
        }
        other => return Err(FieldError(format!("`{other}` is neither OK nor ERR"))),
    };
    Ok(Reply { tag, outcome })
}

impl Identity {
    /// `HELLO` reply fields.
    pub fn to_fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("proto", self.protocol)
            .push("model", &self.model)
            .push("serial", &self.serial)
            .push("fw", &self.firmware)
            .push("max_rate_hz", self.max_rate_hz);
        f
    }

    /// From `HELLO` reply fields.
    pub fn from_fields(f: &Fields) -> Result<Identity, FieldError> {
        Ok(Identity {
            protocol: f.u32("proto")?,
            model: f.get("model")?.to_string(),
            serial: f.get("serial")?.to_string(),
            firmware: f.get("fw")?.to_string(),
            max_rate_hz: f.u32("max_rate_hz")?,
        })
    }
}

impl Calibration {
    /// `CAL?` reply fields.
    pub fn to_fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("cal_id", &self.id)
            .push("due", &self.due)
            .push("torque_fs_nmm", self.torque_full_scale_nmm);
        f
    }

    /// From `CAL?` reply fields.
    pub fn from_fields(f: &Fields) -> Result<Calibration, FieldError> {
        let due = f.get("due")?;
        if !is_iso_date(due) {
            return Err(FieldError(format!("field `due={due}` is not YYYY-MM-DD")));
        }
        Ok(Calibration {
            id: f.get("cal_id")?.to_string(),
            due: due.to_string(),
            torque_full_scale_nmm: f.f64("torque_fs_nmm")?,
        })
    }
}

impl Status {
    /// `STATUS` reply fields.
    pub fn to_fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("state", self.state)
            .push("clock_us", self.clock_us)
            .push("samples", self.samples)
            .push("speed_rpm", self.speed_rpm)
            .push("fault", self.fault.as_deref().unwrap_or("-"));
        f
    }

    /// From `STATUS` reply fields.
    pub fn from_fields(f: &Fields) -> Result<Status, FieldError> {
        let fault = f.get("fault")?;
        Ok(Status {
            state: f.parsed("state", "a state", LoadState::parse)?,
            clock_us: f.u64("clock_us")?,
            samples: f.u32("samples")?,
            speed_rpm: f.f64("speed_rpm")?,
            fault: (fault != "-").then(|| fault.to_string()),
        })
    }
}

fn opt_text(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl Truth {
    /// `TRUTH?` reply fields (depths rounded to 1 µm).
    pub fn to_fields(&self) -> Fields {
        let mut f = Fields::default();
        f.push("cortex_contact_us", opt_text(self.cortex_contact_us))
            .push("cap_fracture_us", opt_text(self.cap_fracture_us))
            .push("far_contact_us", opt_text(self.far_contact_us))
            .push("far_rotating", u8::from(self.far_contact_rotating))
            .push("inner_surface_um", mm_to_um(self.inner_surface_mm))
            .push("far_cortex_um", mm_to_um(self.far_cortex_mm));
        f
    }

    /// From `TRUTH?` reply fields.
    pub fn from_fields(f: &Fields) -> Result<Truth, FieldError> {
        let rotating = f.get("far_rotating")?;
        let far_contact_rotating = match rotating {
            "0" => false,
            "1" => true,
            other => {
                return Err(FieldError(format!(
                    "field `far_rotating={other}` is not 0 or 1"
                )))
            }
        };
        Ok(Truth {
            cortex_contact_us: f.opt_u64("cortex_contact_us")?,
            cap_fracture_us: f.opt_u64("cap_fracture_us")?,
            far_contact_us: f.opt_u64("far_contact_us")?,
            far_contact_rotating,
            inner_surface_mm: f.i64("inner_surface_um")? as f64 / 1000.0,
            far_cortex_mm: f.i64("far_cortex_um")? as f64 / 1000.0,
        })
    }
}

fn mm_to_um(mm: f64) -> i64 {
    // Saturating float-to-int conversion; NaN becomes 0.
    (mm * 1000.0).round() as i64
}

/// `READ` reply fields for `samples` starting at index `first`.
pub fn read_reply_fields(first: u32, samples: &[LoadSample]) -> Fields {
    let mut data = Vec::with_capacity(samples.len() * RECORD_LEN);
    for sample in samples {
        data.extend_from_slice(&sample.to_record());
    }
    let mut f = Fields::default();
    f.push("first", first)
        .push("count", samples.len())
        .push("data", hex_upper(&data));
    f
}

/// Parses a `READ` reply: checks `first`, `count` and the record count against what was asked.
pub fn parse_read_reply(f: &Fields, first: u32, count: u32) -> Result<Vec<LoadSample>, FieldError> {
    let got_first = f.u32("first")?;
    let got_count = f.u32("count")?;
    if got_first != first || got_count != count {
        return Err(FieldError(format!(
            "asked for {count} samples from {first}, reply says {got_count} from {got_first}"
        )));
    }
    let data = parse_hex_bytes(f.get("data")?)
        .ok_or_else(|| FieldError("field `data` is not an even number of hex digits".into()))?;
    let expected = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .saturating_mul(RECORD_LEN);
    if data.len() != expected {
        return Err(FieldError(format!(
            "data has {} bytes, {count} records need {expected}",
            data.len()
        )));
    }
    data.chunks_exact(RECORD_LEN)
        .enumerate()
        .map(|(i, record)| {
            LoadSample::from_record(record)
                .ok_or_else(|| FieldError(format!("record {i} has reserved bits set")))
        })
        .collect()
}

/// Makes `text` a field token: printable ASCII without space, `=` or `*` (others become `_`);
/// empty becomes `-`.
pub fn token(text: &str) -> String {
    if text.is_empty() {
        return "-".into();
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '=' && c != '*' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Makes `text` safe for an `ERR` free text: printable ASCII only (others become `?`), at most
/// 200 characters.
pub fn sanitize_text(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Bytes as uppercase hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len() * 2);
    // A nibble is below 16, so both indexings are in range.
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    out
}

/// Hex digits (either case) to bytes; `None` on odd length or a non-hex character.
pub fn parse_hex_bytes(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |d: u8| -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            b'A'..=b'F' => Some(d - b'A' + 10),
            _ => None,
        }
    };
    digits
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => None,
        })
        .collect()
}

fn parse_hex_u32(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

fn parse_u32(text: &str) -> Option<u32> {
    all_digits(text).then(|| text.parse().ok()).flatten()
}

fn parse_u64(text: &str) -> Option<u64> {
    all_digits(text).then(|| text.parse().ok()).flatten()
}

fn parse_i64(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    all_digits(digits).then(|| text.parse().ok()).flatten()
}

fn parse_f64(text: &str) -> Option<f64> {
    // Plain decimal notation only (Rust's `{}` of an f64 writes that); no inf/NaN.
    let ok_chars = text
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
    let value: f64 = if ok_chars && text.bytes().any(|b| b.is_ascii_digit()) {
        text.parse().ok()?
    } else {
        return None;
    };
    value.is_finite().then_some(value)
}

fn parse_tag(text: &str) -> Result<u16, FieldError> {
    let tag = (text.len() <= 5)
        .then(|| parse_u32(text))
        .flatten()
        .and_then(|t| u16::try_from(t).ok())
        .filter(|&t| t != 0);
    tag.ok_or_else(|| {
        FieldError(format!(
            "`{}` is not a tag (1..=65535)",
            sanitize_text(text)
        ))
    })
}

fn is_iso_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        assert_eq!(line_crc(b"123456789"), 0x29B1);
    }

    #[test]
    fn line_round_trip_and_known_crc() {
        let line = encode_line("7 HELLO");
        assert!(line.ends_with('\n'));
        let bare = line.trim_end_matches('\n');
        assert_eq!(decode_line(bare.as_bytes()), Ok("7 HELLO"));
        let crlf = format!("{bare}\r");
        assert_eq!(decode_line(crlf.as_bytes()), Ok("7 HELLO"));
        // The CRC suffix is four uppercase hex digits of CRC-16/CCITT-FALSE over the body.
        assert_eq!(
            &bare[bare.len() - 5..],
            &format!("*{:04X}", line_crc(b"7 HELLO"))
        );
        // Lowercase CRC digits are accepted too.
        let lower = bare.to_ascii_lowercase().replace("hello", "HELLO");
        assert_eq!(decode_line(lower.as_bytes()), Ok("7 HELLO"));
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(decode_line(b"7 HELLO"), Err(LineError::MissingCrc));
        assert!(matches!(
            decode_line(b"7 HELLO*12"),
            Err(LineError::BadCrcField(_))
        ));
        assert!(matches!(
            decode_line(b"7 HELLO*XYZW"),
            Err(LineError::BadCrcField(_))
        ));
        let good = encode_line("7 HELLO");
        let flipped = good.trim_end().replace("HELLO", "HELLP");
        assert!(matches!(
            decode_line(flipped.as_bytes()),
            Err(LineError::CrcMismatch { .. })
        ));
        assert_eq!(
            decode_line(b"7 H\xC3\xA9LLO*0000"),
            Err(LineError::NotAscii {
                offset: 3,
                byte: 0xC3
            })
        );
        assert!(matches!(
            decode_line(b"7 HEL\tLO*0000"),
            Err(LineError::NotAscii { offset: 5, .. })
        ));
        let long = encode_line(&format!("7 {}", "A".repeat(MAX_LINE_LEN)));
        assert!(matches!(
            decode_line(long.trim_end().as_bytes()),
            Err(LineError::TooLong { .. })
        ));
        // Exactly at the limit is fine.
        let body = format!("7 {}", "A".repeat(MAX_LINE_LEN - 7));
        let at_limit = encode_line(&body);
        assert_eq!(at_limit.trim_end().len(), MAX_LINE_LEN);
        assert_eq!(
            decode_line(at_limit.trim_end().as_bytes()),
            Ok(body.as_str())
        );
    }

    #[test]
    fn every_request_round_trips() {
        let requests = [
            Request::Hello,
            Request::CalQuery,
            Request::ProfileBegin {
                kind: ProfileKind::Bone,
                len: 51_200,
                crc32: 0x0012_ABCD,
            },
            Request::ProfileData {
                kind: ProfileKind::Plant,
                offset: 1024,
                data: (0..=255).collect(),
            },
            Request::ProfileEnd {
                kind: ProfileKind::Push,
            },
            Request::Arm {
                rate_hz: 10_000,
                duration_ms: 300,
            },
            Request::Start,
            Request::Status,
            Request::End,
            Request::Read {
                first: 120,
                count: 60,
            },
            Request::TruthQuery,
            Request::EStop,
            Request::Clear,
        ];
        for (i, request) in requests.into_iter().enumerate() {
            let tag = u16::try_from(i + 1).unwrap_or(1);
            let line = request.to_line(tag);
            let body = decode_line(line.trim_end().as_bytes());
            assert_eq!(
                body.map(parse_request),
                Ok(Ok((tag, request.clone()))),
                "{line}"
            );
        }
        assert_eq!(Request::Start.to_line(65535), encode_line("65535 START"));
    }

    #[test]
    fn bad_requests_name_their_code() {
        let code = |body: &str| parse_request(body).map_err(|e| (e.tag, e.code));
        assert_eq!(code("HELLO"), Err((None, ErrorCode::Syntax)));
        assert_eq!(code("0 HELLO"), Err((None, ErrorCode::Syntax)));
        assert_eq!(code("65536 HELLO"), Err((None, ErrorCode::Syntax)));
        assert_eq!(code("+5 HELLO"), Err((None, ErrorCode::Syntax)));
        assert_eq!(code("5 FLY"), Err((Some(5), ErrorCode::Unknown)));
        assert_eq!(code("5"), Err((Some(5), ErrorCode::Syntax)));
        assert_eq!(code("5 HELLO x"), Err((Some(5), ErrorCode::Syntax)));
        assert_eq!(code("5 ARM 10000"), Err((Some(5), ErrorCode::Syntax)));
        assert_eq!(code("5 ARM -1 300"), Err((Some(5), ErrorCode::Syntax)));
        assert_eq!(
            code("5 ARM 99999999999 3"),
            Err((Some(5), ErrorCode::Syntax))
        );
        assert_eq!(code("5 READ 0 x"), Err((Some(5), ErrorCode::Syntax)));
        assert_eq!(
            code("5 PROFILE BEGIN bone 10 ABC"),
            Err((Some(5), ErrorCode::Syntax))
        );
        assert_eq!(
            code("5 PROFILE BEGIN wood 10 00000000"),
            Err((Some(5), ErrorCode::Syntax))
        );
        assert_eq!(
            code("5 PROFILE DATA bone 0 ABC"),
            Err((Some(5), ErrorCode::Syntax))
        );
        assert_eq!(
            code("5 PROFILE DATA bone 0 GG"),
            Err((Some(5), ErrorCode::Syntax))
        );
        let big = format!("5 PROFILE DATA bone 0 {}", "00".repeat(MAX_DATA_CHUNK + 1));
        assert_eq!(code(&big), Err((Some(5), ErrorCode::Range)));
        assert_eq!(
            code("5 PROFILE STIR bone"),
            Err((Some(5), ErrorCode::Syntax))
        );
        assert_eq!(code("5 PROFILE"), Err((Some(5), ErrorCode::Syntax)));
    }

    #[test]
    fn every_reply_parses() {
        let identity = Identity {
            protocol: 1,
            model: "LC-10k".into(),
            serial: "SN0042".into(),
            firmware: "2.3.1".into(),
            max_rate_hz: 10_000,
        };
        let calibration = Calibration {
            id: "CAL-2026-117".into(),
            due: "2027-03-31".into(),
            torque_full_scale_nmm: 500.25,
        };
        let status = Status {
            state: LoadState::Running,
            clock_us: 18_446_744_073_709_551_615,
            samples: 3000,
            speed_rpm: 1012.5,
            fault: Some("link_watchdog".into()),
        };
        let truth = Truth {
            cortex_contact_us: Some(1_000_000),
            cap_fracture_us: None,
            far_contact_us: Some(2_500_000),
            far_contact_rotating: true,
            inner_surface_mm: 18.0,
            far_cortex_mm: -0.001,
        };
        let roundtrip = |fields: Fields| -> Fields {
            let line = Reply::ok(9, fields).to_line();
            let body = decode_line(line.trim_end().as_bytes()).unwrap_or_default();
            match parse_reply(body) {
                Ok(Reply {
                    tag: 9,
                    outcome: Outcome::Ok(f),
                }) => f,
                other => panic!("{line}: {other:?}"),
            }
        };
        assert_eq!(
            Identity::from_fields(&roundtrip(identity.to_fields())),
            Ok(identity)
        );
        assert_eq!(
            Calibration::from_fields(&roundtrip(calibration.to_fields())),
            Ok(calibration)
        );
        assert_eq!(
            Status::from_fields(&roundtrip(status.to_fields())),
            Ok(status.clone())
        );
        let idle = Status {
            state: LoadState::Idle,
            fault: None,
            ..status
        };
        assert_eq!(Status::from_fields(&roundtrip(idle.to_fields())), Ok(idle));
        assert_eq!(Truth::from_fields(&roundtrip(truth.to_fields())), Ok(truth));

        let samples: Vec<LoadSample> = (0..MAX_READ_COUNT)
            .map(|i| LoadSample {
                seq: 100 + i,
                t_us: 5_000_000 + u64::from(i) * 100,
                depth_mm: f64::from(i * 13) / 1000.0,
                speed_rpm: -1170.125,
                load_torque_nmm: 37.5,
                push_n: 35.0,
                trigger: i % 2 == 0,
                supply_current_a: f64::from(i * 11) / 1000.0,
                supply_v: 6.125,
            })
            .collect();
        let fields = roundtrip(read_reply_fields(100, &samples));
        assert_eq!(
            parse_read_reply(&fields, 100, MAX_READ_COUNT),
            Ok(samples.clone())
        );
        assert!(parse_read_reply(&fields, 101, MAX_READ_COUNT).is_err());
        let worst = Reply::ok(65535, read_reply_fields(u32::MAX - 100, &samples)).to_line();
        assert!(worst.trim_end().len() <= MAX_LINE_LEN, "{}", worst.len());

        let err = Reply::err(3, ErrorCode::BadProfile, "bone table: layer 2 has K_f <= 0");
        let line = err.to_line();
        assert_eq!(
            line,
            encode_line("3 ERR BADPROFILE bone table: layer 2 has K_f <= 0")
        );
        let body = decode_line(line.trim_end().as_bytes()).unwrap_or_default();
        assert_eq!(parse_reply(body), Ok(err));
        assert_eq!(
            parse_reply("4 ERR CRC"),
            Ok(Reply {
                tag: 4,
                outcome: Outcome::Err {
                    code: "CRC".into(),
                    text: String::new()
                }
            })
        );
        assert_eq!(parse_reply("4 OK"), Ok(Reply::ok(4, Fields::default())));
    }

    #[test]
    fn bad_reply_fields_are_errors() {
        assert!(parse_reply("4 MAYBE").is_err());
        assert!(parse_reply("x OK").is_err());
        assert!(parse_reply("4 OK a").is_err());
        assert!(parse_reply("4 OK a=").is_err());
        assert!(parse_reply("4 ERR").is_err());
        let fields = |body: &str| match parse_reply(body) {
            Ok(Reply {
                outcome: Outcome::Ok(f),
                ..
            }) => f,
            other => panic!("{body}: {other:?}"),
        };
        let f = fields("4 OK state=flying clock_us=1 samples=0 speed_rpm=0 fault=-");
        assert!(Status::from_fields(&f).is_err());
        let f = fields("4 OK state=idle clock_us=1 samples=0 speed_rpm=NaN fault=-");
        assert!(Status::from_fields(&f).is_err());
        let f = fields("4 OK state=idle clock_us=1 samples=0 speed_rpm=inf fault=-");
        assert!(Status::from_fields(&f).is_err());
        let f = fields("4 OK state=idle clock_us=-1 samples=0 speed_rpm=0 fault=-");
        assert!(Status::from_fields(&f).is_err());
        let f = fields("4 OK state=idle samples=0 speed_rpm=0 fault=-");
        assert_eq!(
            Status::from_fields(&f),
            Err(FieldError("missing field `clock_us`".into()))
        );
        let f = fields("4 OK cal_id=A due=2027-3-31 torque_fs_nmm=500");
        assert!(Calibration::from_fields(&f).is_err());
        let f = fields("4 OK proto=one model=a serial=b fw=c max_rate_hz=1");
        assert!(Identity::from_fields(&f).is_err());
        let f = fields(
            "4 OK cortex_contact_us=- cap_fracture_us=- far_contact_us=- far_rotating=2 \
             inner_surface_um=1 far_cortex_um=2",
        );
        assert!(Truth::from_fields(&f).is_err());
        let f = fields("4 OK first=0 count=1 data=00");
        assert!(parse_read_reply(&f, 0, 1).is_err());
        let mut record = LoadSample {
            seq: 0,
            t_us: 0,
            depth_mm: 0.0,
            speed_rpm: 0.0,
            load_torque_nmm: 0.0,
            push_n: 0.0,
            trigger: true,
            supply_current_a: 0.0,
            supply_v: 0.0,
        }
        .to_record();
        record[30] = 1;
        assert_eq!(LoadSample::from_record(&record), None);
    }

    #[test]
    fn sample_record_layout_and_quantisation() {
        let sample = LoadSample {
            seq: 0x0403_0201,
            t_us: 0x0C0B_0A09_0807_0605,
            depth_mm: 1.0,
            speed_rpm: -0.001,
            load_torque_nmm: 0.0004,
            push_n: 1e12,
            trigger: true,
            supply_current_a: 1.2345,
            supply_v: -0.0004,
        };
        let record = sample.to_record();
        assert_eq!(&record[0..12], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&record[12..16], &1000i32.to_le_bytes());
        assert_eq!(&record[16..20], &(-1i32).to_le_bytes());
        assert_eq!(&record[20..24], &0i32.to_le_bytes());
        assert_eq!(&record[24..28], &i32::MAX.to_le_bytes());
        assert_eq!(&record[28..32], &[1, 0, 0, 0]);
        assert_eq!(&record[32..36], &1235i32.to_le_bytes());
        assert_eq!(&record[36..40], &0i32.to_le_bytes());
        let back = LoadSample::from_record(&record);
        assert_eq!(
            back.as_ref().map(|s| s.push_n),
            Some(f64::from(i32::MAX) / 1000.0)
        );
        assert_eq!(back.map(|s| s.load_torque_nmm), Some(0.0));
        assert_eq!(LoadSample::from_record(&record[..31]), None);
    }

    #[test]
    fn tokens_and_text_are_sanitised() {
        assert_eq!(token("a b=c*d\u{e9}"), "a_b_c_d_");
        assert_eq!(token(""), "-");
        assert_eq!(sanitize_text("bad\nline\u{0}"), "bad?line?");
        assert_eq!(peek_tag(b"42 HELLO*0000"), Some(42));
        assert_eq!(peek_tag(b"\xFF2 HELLO"), None);
        assert_eq!(peek_tag(b"HELLO"), None);
    }

    /// Every line of the specification's example transcripts decodes, and parses as a
    /// request (`>`) or a reply (`<`), so the document cannot drift from the codec.
    #[test]
    fn specification_transcript_is_valid() {
        let spec = include_str!("../../docs/load-protocol.md");
        let mut checked = 0;
        for line in spec.lines() {
            let (direction, line) = match line.split_at_checked(2) {
                Some(("> ", rest)) => ('>', rest),
                Some(("< ", rest)) => ('<', rest),
                _ => continue,
            };
            if line.ends_with("*0000") {
                // The deliberately damaged request.
                assert!(matches!(
                    decode_line(line.as_bytes()),
                    Err(LineError::CrcMismatch { .. })
                ));
                continue;
            }
            let body = decode_line(line.as_bytes());
            assert!(body.is_ok(), "{line}: {body:?}");
            let body = body.unwrap_or_default();
            if direction == '>' {
                assert!(parse_request(body).is_ok(), "{line}");
            } else {
                let reply = parse_reply(body);
                assert!(reply.is_ok(), "{line}: {reply:?}");
                if let Ok(Reply {
                    outcome: Outcome::Ok(f),
                    ..
                }) = reply
                {
                    if body.contains(" data=") {
                        assert_eq!(parse_read_reply(&f, 0, 2).map(|s| s.len()), Ok(2));
                    }
                    if body.contains(" state=") {
                        assert!(Status::from_fields(&f).is_ok());
                    }
                    if body.contains(" cap_fracture_us=") {
                        assert!(Truth::from_fields(&f).is_ok());
                    }
                }
            }
            checked += 1;
        }
        assert!(checked >= 35, "{checked} transcript lines");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: crate::fuzz::property_test_cases(), ..ProptestConfig::default() })]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            if let Ok(body) = decode_line(&bytes) {
                let _ = parse_request(body);
                if let Ok(Reply { outcome: Outcome::Ok(f), .. }) = parse_reply(body) {
                    let _ = Status::from_fields(&f);
                    let _ = Truth::from_fields(&f);
                    let _ = parse_read_reply(&f, 0, 1);
                }
            }
            let _ = peek_tag(&bytes);
        }

        #[test]
        fn random_bodies_with_valid_crc_never_panic(body in "[ -~]{0,300}") {
            let line = encode_line(&body);
            let decoded = decode_line(line.trim_end_matches('\n').as_bytes());
            prop_assert_eq!(decoded, Ok(body.as_str()));
            let _ = parse_request(&body);
            if let Ok(Reply { outcome: Outcome::Ok(f), .. }) = parse_reply(&body) {
                let _ = Identity::from_fields(&f);
                let _ = Calibration::from_fields(&f);
                let _ = Status::from_fields(&f);
                let _ = Truth::from_fields(&f);
                let _ = parse_read_reply(&f, 0, 2);
            }
        }

        #[test]
        fn structured_requests_round_trip(
            tag in 1u16..,
            offset in any::<u32>(),
            data in proptest::collection::vec(any::<u8>(), 1..=MAX_DATA_CHUNK),
        ) {
            let request = Request::ProfileData { kind: ProfileKind::Bone, offset, data };
            let line = request.to_line(tag);
            let body = decode_line(line.trim_end().as_bytes());
            prop_assert_eq!(body.map(parse_request), Ok(Ok((tag, request))));
        }
    }
}
