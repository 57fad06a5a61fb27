//! The harness's telemetry decoder against frames from driver-core's encoder: a controller run
//! encoded frame by frame, delivered in arbitrary pieces, with garbage, damage, losses,
//! sequence wrap-around and restarts.

use driver_core::telemetry::{
    encode, fault, id_flags, padded, reset, FaultKind, FaultRecord, FirmwareId, Frame, TickRecord,
    MAX_FRAME_LEN, SYNC,
};
use driver_core::{Config, Controller, Inputs};
use iohil::telemetry::{Body, BootInfo, Decoder, Event, SkipReason, Stats};
use proptest::prelude::*;

fn id() -> FirmwareId {
    FirmwareId {
        firmware_version: padded("0.1.0"),
        core_version: padded(driver_core::VERSION),
        git_commit: [0x12; 20],
        flags: id_flags::DIRTY,
        core_source_sha256: [0xC0; 32],
        build_id: [0x42; 16],
    }
}

fn frame_bytes(seq: u16, frame: &Frame) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = encode(seq, frame, &mut buf);
    buf[..n].to_vec()
}

/// A boot frame and the tick frames of a real controller run: press at 10 ms, a load step
/// at 200 ms (cortex), a drop at 600 ms (breakthrough).
fn run_frames(ticks: u32) -> Vec<Frame> {
    let mut frames = vec![Frame::Boot {
        reset_cause: reset::POWER_ON,
        tick_hz: 1000,
        id: id(),
    }];
    let mut controller = Controller::new(Config::DEFAULT);
    for tick in 1..=ticks {
        let current = match tick {
            0..=199 => 150,
            200..=599 => 900,
            _ => 300,
        };
        let inputs = Inputs {
            tick,
            motor_current_ma: current,
            battery_mv: 6100,
            trigger_pressed: tick >= 10,
        };
        let outputs = controller.step(&inputs);
        frames.push(Frame::Tick(TickRecord::from_step(
            &inputs,
            &outputs,
            fault::ADC_MISSING * u16::from(tick == 5),
            1000 + tick,
        )));
    }
    frames
}

fn expected_body(frame: &Frame) -> Body {
    match *frame {
        Frame::Boot {
            reset_cause,
            tick_hz,
            id,
        } => Body::Boot(BootInfo {
            format_version: driver_core::telemetry::FORMAT_VERSION,
            reset_cause,
            tick_hz,
            id,
        }),
        Frame::Tick(t) => Body::Tick(t),
        Frame::Fault(f) => Body::Fault(f),
    }
}

fn stream(frames: &[Frame], first_seq: u16) -> Vec<u8> {
    frames
        .iter()
        .enumerate()
        .flat_map(|(i, f)| frame_bytes(first_seq.wrapping_add(i as u16), f))
        .collect()
}

fn decode_in_pieces(bytes: &[u8], piece: usize) -> (Vec<Event>, Stats) {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        decoder.push(chunk);
        events.extend(decoder.drain());
    }
    (events, decoder.stats())
}

fn frames_of(events: &[Event]) -> Vec<(u16, Body)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame { seq, body } => Some((*seq, *body)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_controller_run_round_trips_in_any_piece_size() {
    let frames = run_frames(800);
    // The run really exercised the controller: it armed and stopped on breakthrough.
    let events_seen = frames.iter().fold(0u16, |acc, f| match f {
        Frame::Tick(t) => acc | t.events,
        _ => acc,
    });
    assert_ne!(events_seen & driver_core::event::BREAKTHROUGH, 0);
    let bytes = stream(&frames, 0);
    for piece in [1, 2, 7, 33, 64, 4096, bytes.len()] {
        let (events, stats) = decode_in_pieces(&bytes, piece);
        let decoded = frames_of(&events);
        assert_eq!(decoded.len(), frames.len(), "piece {piece}");
        for (i, ((seq, body), frame)) in decoded.iter().zip(&frames).enumerate() {
            assert_eq!(usize::from(*seq), i);
            assert_eq!(*body, expected_body(frame), "frame {i}, piece {piece}");
        }
        assert_eq!(events.len(), frames.len(), "no other events: {events:?}");
        assert_eq!(
            stats,
            Stats {
                frames: frames.len() as u64,
                ..Stats::default()
            }
        );
    }
}

#[test]
fn garbage_is_skipped_and_counted() {
    let frames = run_frames(20);
    let mut bytes = b"\x00\x01noise".to_vec();
    bytes.extend(frame_bytes(0, &frames[0]));
    bytes.extend([0x11, 0x22, 0x33]);
    bytes.extend(frame_bytes(1, &frames[1]));
    // A sync byte with an unknown kind, then a sync with a known kind but a wrong length.
    bytes.extend([SYNC, 0x7F, 0x10, SYNC, 0x02, 0x05]);
    bytes.extend(frame_bytes(2, &frames[2]));
    let (events, stats) = decode_in_pieces(&bytes, 5);
    assert_eq!(
        events,
        vec![
            Event::Skipped {
                bytes: 7,
                reason: SkipReason::NoSync
            },
            Event::Frame {
                seq: 0,
                body: expected_body(&frames[0])
            },
            Event::Skipped {
                bytes: 3,
                reason: SkipReason::NoSync
            },
            Event::Frame {
                seq: 1,
                body: expected_body(&frames[1])
            },
            Event::Skipped {
                bytes: 6,
                reason: SkipReason::BadHeader
            },
            Event::Frame {
                seq: 2,
                body: expected_body(&frames[2])
            },
        ]
    );
    assert_eq!(stats.skipped_bytes, 16);
    assert_eq!(stats.lost, 0);

    // Garbage at the end of the stream is reported when the stream ends.
    let mut decoder = Decoder::new();
    decoder.push(&frame_bytes(0, &frames[0]));
    decoder.push(b"xyz");
    assert_eq!(frames_of(&decoder.drain()).len(), 1);
    assert_eq!(
        decoder.finish(),
        Some(Event::Skipped {
            bytes: 3,
            reason: SkipReason::NoSync
        })
    );
    assert_eq!(decoder.finish(), None);
}

#[test]
fn a_damaged_frame_is_rejected_and_reported_as_lost() {
    let frames = run_frames(10);
    for flip_at in [1, 3, 6, 20, 31] {
        let mut bytes = Vec::new();
        let mut damaged = frame_bytes(1, &frames[1]);
        damaged[flip_at] ^= 0x04;
        bytes.extend(frame_bytes(0, &frames[0]));
        bytes.extend(&damaged);
        bytes.extend(frame_bytes(2, &frames[2]));
        let (events, stats) = decode_in_pieces(&bytes, 3);
        let decoded = frames_of(&events);
        assert_eq!(
            decoded.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![0, 2],
            "flip at {flip_at}"
        );
        assert!(events.contains(&Event::Lost {
            expected: 1,
            received: 2,
            count: 1
        }));
        assert_eq!(stats.lost, 1);
        assert_eq!(
            stats.skipped_bytes,
            damaged.len() as u64,
            "flip at {flip_at}"
        );
    }
}

#[test]
fn sequence_gaps_wraparound_and_restarts() {
    let frames = run_frames(6);
    // Frames 65534, 65535, 0, 1 wrap without loss; then 1 -> 5 loses three.
    let ticks = &frames[1..];
    let mut bytes = Vec::new();
    for (i, seq) in [65534u16, 65535, 0, 1, 5].iter().enumerate() {
        bytes.extend(frame_bytes(*seq, &ticks[i]));
    }
    // A restart: a boot frame, then ticks from 1 again.
    bytes.extend(frame_bytes(0, &frames[0]));
    bytes.extend(frame_bytes(1, &ticks[0]));
    let (events, stats) = decode_in_pieces(&bytes, 64);
    let others: Vec<_> = events
        .iter()
        .filter(|e| !matches!(e, Event::Frame { .. }))
        .collect();
    assert_eq!(
        others,
        vec![
            &Event::Lost {
                expected: 2,
                received: 5,
                count: 3
            },
            &Event::Restarted
        ]
    );
    assert_eq!(stats.lost, 3);
    assert_eq!(stats.frames, 7);
}

/// Frames written byte by byte from the format's tables, independent of the encoder.
#[test]
fn hand_written_frames_decode_to_the_documented_fields() {
    fn frame(kind: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![SYNC, kind, payload.len() as u8];
        f.extend(seq.to_le_bytes());
        f.extend(payload);
        let crc = driver_core::telemetry::crc16(&f[1..]);
        f.extend(crc.to_le_bytes());
        f
    }
    let mut boot = vec![1, 0x08, 0xE8, 0x03];
    boot.extend(b"IOHILFW\x01");
    boot.extend(b"2.3.4\0\0\0\0\0\0\0\0\0\0\0");
    boot.extend(b"0.1.0\0\0\0\0\0\0\0\0\0\0\0");
    boot.extend([0xC3; 20]);
    boot.extend([0x01, 0, 0, 0]);
    boot.extend([0x77; 32]);
    boot.extend([0x11; 16]);
    let mut fault = vec![2, 0, 0, 0];
    for v in [
        0x0800_1001u32,
        0xFFFF_FFF9,
        0x6100_0000,
        0x400,
        0x4000_0000,
        0,
        0x4800_0000,
        42,
        7,
    ] {
        fault.extend(v.to_le_bytes());
    }
    let mut bytes = frame(1, 0, &boot);
    bytes.extend(frame(3, 1, &fault));
    let (events, stats) = decode_in_pieces(&bytes, 5);
    assert_eq!(stats.frames, 2);
    match &events[0] {
        Event::Frame {
            body: Body::Boot(b),
            seq: 0,
        } => {
            assert_eq!(
                (b.format_version, b.reset_cause, b.tick_hz),
                (1, 0x08, 1000)
            );
            assert_eq!(&b.id.firmware_version[..6], b"2.3.4\0");
            assert_eq!(b.id.git_commit, [0xC3; 20]);
            assert_eq!(b.id.flags, id_flags::DIRTY);
            assert_eq!(b.id.core_source_sha256, [0x77; 32]);
            assert_eq!(b.id.build_id, [0x11; 16]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events[1],
        Event::Frame {
            seq: 1,
            body: Body::Fault(FaultRecord {
                kind: FaultKind::HardFault,
                pc: 0x0800_1001,
                lr: 0xFFFF_FFF9,
                xpsr: 0x6100_0000,
                cfsr: 0x400,
                hfsr: 0x4000_0000,
                mmfar: 0,
                bfar: 0x4800_0000,
                tick: 42,
                line: 7,
            })
        }
    );
}

#[test]
fn a_duplicate_frame_is_out_of_order_not_a_huge_loss() {
    let frames = run_frames(3);
    let mut bytes = Vec::new();
    for (seq, frame) in [
        (0u16, &frames[1]),
        (1, &frames[2]),
        (1, &frames[2]),
        (2, &frames[3]),
    ] {
        bytes.extend(frame_bytes(seq, frame));
    }
    let (events, stats) = decode_in_pieces(&bytes, 9);
    assert!(events.contains(&Event::OutOfOrder {
        expected: 2,
        received: 1
    }));
    assert_eq!(stats.lost, 0);
    assert_eq!(stats.frames, 4);
}

#[test]
fn fault_frames_decode() {
    let record = FaultRecord {
        kind: FaultKind::HardFault,
        pc: 0x0800_04F2,
        lr: 0xFFFF_FFF9,
        xpsr: 0x2100_0000,
        cfsr: 0x0100,
        hfsr: 0x4000_0000,
        mmfar: 0xE000_EDF8,
        bfar: 0xE000_EDF8,
        tick: 4321,
        line: 0,
    };
    let bytes = frame_bytes(3, &Frame::Fault(record));
    let (events, _) = decode_in_pieces(&bytes, 1);
    assert_eq!(
        events,
        vec![Event::Frame {
            seq: 3,
            body: Body::Fault(record)
        }]
    );
}

#[test]
fn an_incomplete_frame_waits_for_more_bytes() {
    let frames = run_frames(1);
    let bytes = frame_bytes(0, &frames[1]);
    let mut decoder = Decoder::new();
    decoder.push(&bytes[..bytes.len() - 1]);
    assert_eq!(decoder.drain(), vec![]);
    assert_eq!(decoder.pending_bytes(), bytes.len() - 1);
    decoder.push(&bytes[bytes.len() - 1..]);
    assert_eq!(frames_of(&decoder.drain()).len(), 1);
    assert_eq!(decoder.pending_bytes(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: iohil::fuzz::property_test_cases(), ..ProptestConfig::default() })]

    /// Any byte sequence decodes without a panic, and every byte is accounted for: decoded,
    /// skipped or still pending.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), piece in 1usize..64) {
        let mut decoder = Decoder::new();
        let mut frame_bytes_total = 0u64;
        for chunk in bytes.chunks(piece) {
            decoder.push(chunk);
            for event in decoder.drain() {
                if let Event::Frame { body, .. } = event {
                    frame_bytes_total += match body {
                        Body::Boot(_) => 123,
                        Body::Tick(_) => 33,
                        Body::Fault(_) => 47,
                    };
                }
            }
        }
        let stats = decoder.stats();
        prop_assert_eq!(
            frame_bytes_total + stats.skipped_bytes + decoder.pending_bytes() as u64,
            bytes.len() as u64
        );
    }

    /// Frames separated by sync-free garbage all come back, in order, with nothing lost.
    #[test]
    fn frames_survive_interleaved_garbage(
        garbage in proptest::collection::vec(proptest::collection::vec(0u8..0xA5, 0..40), 30),
        piece in 1usize..100,
    ) {
        let frames = run_frames(29);
        let mut bytes = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            bytes.extend(&garbage[i]);
            bytes.extend(frame_bytes(i as u16, frame));
        }
        let (events, stats) = decode_in_pieces(&bytes, piece);
        let decoded = frames_of(&events);
        prop_assert_eq!(decoded.len(), frames.len());
        for ((_, body), frame) in decoded.iter().zip(&frames) {
            prop_assert_eq!(*body, expected_body(frame));
        }
        prop_assert_eq!(stats.lost, 0);
        prop_assert_eq!(stats.skipped_bytes, garbage.iter().map(|g| g.len() as u64).sum::<u64>());
    }
}
