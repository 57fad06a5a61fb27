//! Decoder of the board's RTT telemetry stream.
//!
//! The format is specified once, in `driver_core::telemetry` (frame layout, payload tables,
//! CRC). This decoder is written from that specification, field by field, without driver-core's
//! own parsers (only its types and the CRC function, whose check value is tested), and tested
//! against the encoder's frames and against bytes written out by hand. It accepts a byte stream in arbitrary pieces (as RTT reads
//! deliver it), resynchronises after garbage or a damaged frame, and reports every frame lost
//! (a jump in sequence numbers) instead of hiding it: the rigs turn a loss into an
//! INCONCLUSIVE trial.

use driver_core::telemetry::{
    crc16, FaultKind, FaultRecord, FirmwareId, TickRecord, BOOT_LEN, FAULT_LEN, HEADER_LEN,
    IDENT_LEN, KIND_BOOT, KIND_FAULT, KIND_TICK, SYNC, TICK_LEN, TRAILER_LEN,
};

/// The boot frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// Telemetry format version.
    pub format_version: u8,
    /// `driver_core::telemetry::reset` bits.
    pub reset_cause: u8,
    /// Control tick rate, Hz.
    pub tick_hz: u16,
    /// Firmware identity.
    pub id: FirmwareId,
}

/// A decoded frame body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// Boot frame.
    Boot(BootInfo),
    /// Control tick.
    Tick(TickRecord),
    /// Caught fault.
    Fault(FaultRecord),
}

/// What the decoder found in the stream, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A valid frame.
    Frame {
        /// Sequence number.
        seq: u16,
        /// Payload.
        body: Body,
    },
    /// Frames missing between the previous frame and this one (sequence jump).
    Lost {
        /// Sequence number expected.
        expected: u16,
        /// Sequence number received.
        received: u16,
        /// Frames missing (`received - expected`, wrapping).
        count: u16,
    },
    /// A frame whose sequence number is behind the expected one (a duplicate or a frame out
    /// of order): not counted as a loss of 65 000 frames.
    OutOfOrder {
        /// Sequence number expected.
        expected: u16,
        /// Sequence number received.
        received: u16,
    },
    /// Bytes skipped because they were not part of a valid frame.
    Skipped {
        /// Number of bytes.
        bytes: usize,
        /// Why the first of them was rejected.
        reason: SkipReason,
    },
    /// A boot frame: the firmware restarted (a reset mid-trial is itself a finding).
    Restarted,
}

/// Why bytes were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No sync byte.
    NoSync,
    /// A sync byte followed by an unknown kind or a length that does not match the kind.
    BadHeader,
    /// A complete frame whose CRC did not match.
    BadCrc,
    /// The CRC matched but a field held an impossible value (e.g. an unknown fault kind).
    BadPayload,
}

/// Totals over a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Valid frames.
    pub frames: u64,
    /// Frames known lost from sequence jumps.
    pub lost: u64,
    /// Bytes skipped.
    pub skipped_bytes: u64,
    /// Frames rejected for a bad CRC.
    pub crc_errors: u64,
}

/// Streaming decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    expected_seq: Option<u16>,
    stats: Stats,
    pending_skip: Option<(usize, SkipReason)>,
    queued: std::collections::VecDeque<Event>,
}

impl Decoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Totals so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes received but not yet decoded (an incomplete frame at the end of the stream).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Decodes every complete event in the bytes pushed so far.
    pub fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// At the end of the stream: the skipped bytes not yet reported (a run of garbage is
    /// reported as one event when the next frame starts, or here).
    pub fn finish(&mut self) -> Option<Event> {
        self.flush_skip()
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<Event> {
        if let Some(event) = self.queued.pop_front() {
            return Some(event);
        }
        loop {
            let data = &self.buf[self.start..];
            let &first = data.first()?;
            if first != SYNC {
                let run = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
                self.skip(run, SkipReason::NoSync);
                continue;
            }
            if data.len() < HEADER_LEN {
                return None;
            }
            let kind = data[1];
            let len = usize::from(data[2]);
            let expected_len = match kind {
                KIND_BOOT => BOOT_LEN,
                KIND_TICK => TICK_LEN,
                KIND_FAULT => FAULT_LEN,
                _ => usize::MAX,
            };
            if len != expected_len {
                self.skip(1, SkipReason::BadHeader);
                continue;
            }
            let total = HEADER_LEN + len + TRAILER_LEN;
            if data.len() < total {
                return None;
            }
            let crc = u16::from_le_bytes([data[total - 2], data[total - 1]]);
            if crc16(&data[1..total - 2]) != crc {
                self.stats.crc_errors += 1;
                self.skip(1, SkipReason::BadCrc);
                continue;
            }
            let seq = u16::from_le_bytes([data[3], data[4]]);
            let Some(body) = parse_body(kind, &data[HEADER_LEN..HEADER_LEN + len]) else {
                self.skip(1, SkipReason::BadPayload);
                continue;
            };
            self.start += total;
            self.stats.frames += 1;
            if let Some(skipped) = self.flush_skip() {
                self.queued.push_back(skipped);
            }
            if matches!(body, Body::Boot(_)) {
                // A boot frame starts a new sequence; it is a restart unless it is the first.
                if self.expected_seq.is_some() {
                    self.queued.push_back(Event::Restarted);
                }
            } else if let Some(expected) = self.expected_seq {
                let count = seq.wrapping_sub(expected);
                if count >= 0x8000 {
                    self.queued.push_back(Event::OutOfOrder {
                        expected,
                        received: seq,
                    });
                } else if count != 0 {
                    self.stats.lost += u64::from(count);
                    self.queued.push_back(Event::Lost {
                        expected,
                        received: seq,
                        count,
                    });
                }
            }
            self.expected_seq = Some(seq.wrapping_add(1));
            self.queued.push_back(Event::Frame { seq, body });
            return self.queued.pop_front();
        }
    }

    fn skip(&mut self, bytes: usize, reason: SkipReason) {
        self.start += bytes;
        self.stats.skipped_bytes += bytes as u64;
        self.pending_skip = Some(match self.pending_skip {
            Some((n, first_reason)) => (n + bytes, first_reason),
            None => (bytes, reason),
        });
    }

    fn flush_skip(&mut self) -> Option<Event> {
        self.pending_skip
            .take()
            .map(|(bytes, reason)| Event::Skipped { bytes, reason })
    }
}

fn parse_body(kind: u8, payload: &[u8]) -> Option<Body> {
    let u16_at = |at: usize| u16::from_le_bytes([payload[at], payload[at + 1]]);
    let u32_at = |at: usize| {
        u32::from_le_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    match kind {
        KIND_BOOT => {
            // The identity record, field by field from its table (not through driver-core's own
            // parser, so that a layout error on one side shows).
            let id = &payload[4..4 + IDENT_LEN];
            if &id[0..8] != b"IOHILFW\x01" {
                return None;
            }
            Some(Body::Boot(BootInfo {
                format_version: payload[0],
                reset_cause: payload[1],
                tick_hz: u16_at(2),
                id: FirmwareId {
                    firmware_version: field(id, 8),
                    core_version: field(id, 24),
                    git_commit: field(id, 40),
                    flags: id[60],
                    core_source_sha256: field(id, 64),
                    build_id: field(id, 96),
                },
            }))
        }
        KIND_TICK => Some(Body::Tick(TickRecord {
            tick: u32_at(0),
            state: payload[4],
            stop_reason: payload[5],
            brake: payload[6] & 1 != 0,
            trigger_pressed: payload[6] & 2 != 0,
            trigger_raw: payload[6] & 4 != 0,
            events: u16_at(8),
            faults: u16_at(10),
            current_ma: u16_at(12),
            battery_mv: u16_at(14),
            duty_permille: u16_at(16),
            filtered_ma: u16_at(18),
            baseline_ma: u16_at(20),
            isr_cycles: u32_at(22),
        })),
        KIND_FAULT => Some(Body::Fault(FaultRecord {
            kind: match payload[0] {
                1 => FaultKind::Panic,
                2 => FaultKind::HardFault,
                3 => FaultKind::UnexpectedInterrupt,
                4 => FaultKind::InitFailure,
                _ => return None,
            },
            pc: u32_at(4),
            lr: u32_at(8),
            xpsr: u32_at(12),
            cfsr: u32_at(16),
            hfsr: u32_at(20),
            mmfar: u32_at(24),
            bfar: u32_at(28),
            tick: u32_at(32),
            line: u32_at(36),
        })),
        _ => None,
    }
}

/// `N` bytes of `bytes` from `from` (the caller's fixed layout keeps it in bounds).
fn field<const N: usize>(bytes: &[u8], from: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(from..from + N) {
        out.copy_from_slice(src);
    }
    out
}
