//! Host unit tests of the core on synthetic current signals (no plant model).

#![expect(
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::float_arithmetic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    reason = "host-only tests build signals in floating point and index their own outputs"
)]

extern crate std;

use super::*;
use std::vec::Vec;

const NO_LOAD_MA: f64 = 150.0;

/// Feeds `ms` ticks; `current` and `trigger` are functions of the tick index. Returns every
/// output.
fn drive(
    controller: &mut Controller,
    ms: u32,
    battery_mv: i32,
    current: impl Fn(u32) -> f64,
    trigger: impl Fn(u32) -> bool,
) -> Vec<Outputs> {
    (0..ms)
        .map(|tick| {
            controller.step(&Inputs {
                tick,
                motor_current_ma: current(tick).round() as i32,
                battery_mv,
                trigger_pressed: trigger(tick),
            })
        })
        .collect()
}

/// First tick whose events include `bit`.
fn first_event(outputs: &[Outputs], bit: u16) -> Option<u32> {
    outputs
        .iter()
        .position(|o| o.events & bit != 0)
        .map(|i| i as u32)
}

/// First-order approach from `from` to `to` starting at `t0`, time constant 9 ms (the
/// mechanical time constant of the reference motor).
fn settle(t: u32, t0: u32, from: f64, to: f64) -> f64 {
    if t < t0 {
        from
    } else {
        to + (from - to) * (-(f64::from(t - t0)) / 9.0).exp()
    }
}

/// Soft tissue until 300 ms, cortex load from 300 ms, then `after(t)`.
fn bone_current(t: u32, cortex_ma: f64, pop_at: u32, medullary_ma: f64) -> f64 {
    if t < 300 {
        NO_LOAD_MA + 40.0
    } else if t < pop_at {
        settle(t, 300, NO_LOAD_MA + 40.0, cortex_ma)
    } else {
        settle(t, pop_at, cortex_ma, medullary_ma)
    }
}

/// A 3 s run at 6.2 V with the trigger held: the first breakthrough event and the first
/// motor-off, if any.
fn pop_and_stop(config: Config, current: impl Fn(u32) -> f64) -> (Option<u32>, Option<u32>) {
    let mut controller = Controller::new(config);
    let out = drive(&mut controller, 3000, 6200, current, pressed);
    (
        first_event(&out, event::BREAKTHROUGH),
        first_event(&out, event::MOTOR_OFF),
    )
}

fn pressed(_: u32) -> bool {
    true
}

#[test]
fn adult_pop_is_detected_within_15_ms() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        3000,
        6200,
        |t| bone_current(t, 900.0, 2000, 370.0),
        pressed,
    );
    let armed = first_event(&out, event::ARMED).expect("armed");
    assert!((300..330).contains(&armed), "armed at {armed}");
    let detected = first_event(&out, event::BREAKTHROUGH).expect("pop detected");
    assert!(
        (2000..=2015).contains(&detected),
        "detected {} ms after the pop",
        detected as i64 - 2000
    );
    let off = &out[detected as usize];
    assert_eq!(off.duty_permille, 0);
    assert!(off.brake);
    assert_eq!(off.stop_reason, Some(StopReason::Breakthrough));
    assert_eq!(out[2999].state, State::Done);
}

#[test]
fn weak_osteoporotic_pop_is_detected_within_15_ms() {
    // About 0.2 A of contrast on 0.3 A of load.
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        3000,
        6200,
        |t| bone_current(t, 470.0, 1500, 300.0),
        pressed,
    );
    let detected = first_event(&out, event::BREAKTHROUGH).expect("pop detected");
    assert!((1500..=1515).contains(&detected), "detected at {detected}");
}

#[test]
fn push_oscillation_does_not_stop_the_motor() {
    // Load current +-30 % at 5 Hz around 700 mA of cortex current.
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        4000,
        6200,
        |t| {
            let base = bone_current(t, 700.0, u32::MAX, 0.0);
            if t < 400 {
                base
            } else {
                let load = 700.0 - NO_LOAD_MA;
                base + 0.3
                    * load
                    * (2.0 * core::f64::consts::PI * 5.0 * f64::from(t) / 1000.0).sin()
            }
        },
        pressed,
    );
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
    assert_eq!(out[3999].state, State::Cortex);
}

#[test]
fn a_hand_speed_push_step_does_not_stop_the_motor() {
    // -45 % of the load over 50 ms (the fastest step the scenario format allows).
    let mut controller = Controller::new(Config::DEFAULT);
    let load = 900.0 - NO_LOAD_MA;
    let out = drive(
        &mut controller,
        3000,
        6200,
        |t| {
            let base = bone_current(t, 900.0, u32::MAX, 0.0);
            let ramp = (f64::from(t.saturating_sub(1500)) / 50.0).min(1.0);
            base - 0.45 * load * ramp
        },
        pressed,
    );
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
}

/// A cortex load swinging +-30 % at 3.6 Hz (the operator's push), its trough at 1500 ms.
fn swinging_cortex_current(t: u32) -> f64 {
    let phase = 2.0 * core::f64::consts::PI * 3.6 * (f64::from(t) - 1500.0) / 1000.0;
    NO_LOAD_MA + 40.0 + 330.0 * (1.0 - 0.3 * phase.cos())
}

/// The swinging cortex from 300 ms, with a weak pop of `pop_fraction` of the load at the
/// trough of the swing at 1500 ms (known anomaly KA-01's shape: the medullary load then follows
/// the push at a third of the slope).
fn swinging_bone_current(t: u32, pop_fraction: f64) -> f64 {
    let baseline = NO_LOAD_MA + 40.0;
    if t < 1500 {
        return settle(t, 300, baseline, swinging_cortex_current(t));
    }
    let trough_load = swinging_cortex_current(1500) - baseline;
    let medullary = baseline
        + trough_load * (1.0 - pop_fraction)
        + (swinging_cortex_current(t) - swinging_cortex_current(1500)) / 3.0;
    settle(t, 1500, swinging_cortex_current(1500), medullary)
}

#[test]
fn a_weak_pop_at_the_trough_of_a_push_swing_is_caught_by_the_trend_step_test() {
    // 15 % of the trough load (35 mA): the windowed test alone misses it, because the
    // swing was falling into the pop and rises after it.
    let run = |config: Config| pop_and_stop(config, |t| swinging_bone_current(t, 0.15));
    let (detected, off) = run(Config::DEFAULT);
    let detected = detected.expect("pop detected");
    assert!(
        (1500..=1515).contains(&detected),
        "detected {} ms after the pop",
        i64::from(detected) - 1500
    );
    assert_eq!(off, Some(detected));
    let (windowed, _) = run(Config::WINDOWED_ONLY);
    assert!(
        windowed.is_none_or(|t| t > 1520),
        "the windowed test alone detected at {windowed:?}: the test shows nothing"
    );
}

#[test]
fn the_same_swing_without_a_pop_does_not_stop_the_motor() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        3000,
        6200,
        |t| settle(t, 300, NO_LOAD_MA + 40.0, swinging_cortex_current(t)),
        pressed,
    );
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
    assert_eq!(out[2999].state, State::Cortex);
}

#[test]
fn the_trend_step_weights_are_the_least_squares_fit() {
    // Re-derive the weights from the normal equations of the model
    // x[j] = a + b j - P g[j], g[j] = 1 - (7/8)^(STEP_AGO - j) for j < STEP_AGO (j ticks ago).
    let n = STEP_WINDOW;
    let k = STEP_AGO as usize;
    let row = |j: usize| -> [f64; 3] {
        let g = if j < k {
            -(1.0 - 0.875f64.powi((k - j) as i32))
        } else {
            0.0
        };
        [1.0, j as f64, g]
    };
    let mut ata = [[0.0f64; 3]; 3];
    for j in 0..n {
        let r = row(j);
        for a in 0..3 {
            for b in 0..3 {
                ata[a][b] += r[a] * r[b];
            }
        }
    }
    // Inverse of the symmetric 3x3 by cofactors.
    let m = ata;
    let cof =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let det = m[0][0] * cof(1, 2, 1, 2) - m[0][1] * cof(1, 2, 0, 2) + m[0][2] * cof(1, 2, 0, 1);
    let inv = [
        [
            cof(1, 2, 1, 2) / det,
            -cof(0, 2, 1, 2) / det,
            cof(0, 1, 1, 2) / det,
        ],
        [
            -cof(1, 2, 0, 2) / det,
            cof(0, 2, 0, 2) / det,
            -cof(0, 1, 0, 2) / det,
        ],
        [
            cof(1, 2, 0, 1) / det,
            -cof(0, 2, 0, 1) / det,
            cof(0, 1, 0, 1) / det,
        ],
    ];
    for j in 0..n {
        let r = row(j);
        let weight: f64 = (0..3).map(|b| inv[2][b] * r[b]).sum();
        let level: f64 = (0..3)
            .map(|b| (inv[0][b] + k as f64 * inv[1][b]) * r[b])
            .sum();
        let (w, l) = (
            f64::from(STEP_WEIGHTS_Q16[j]) / 65536.0,
            f64::from(STEP_LEVEL_Q16[j]) / 65536.0,
        );
        assert!(
            (w - weight).abs() < 1e-4,
            "weight {j}: {w} against {weight}"
        );
        assert!((l - level).abs() < 1e-4, "level {j}: {l} against {level}");
    }
    // Exact invariance to a constant and a ramp; the level reproduces the line at the step.
    let moment = |v: &[i32]| -> (i64, i64) {
        v.iter().enumerate().fold((0, 0), |(s, m), (j, &x)| {
            (s + i64::from(x), m + j as i64 * i64::from(x))
        })
    };
    assert_eq!(moment(&STEP_WEIGHTS_Q16), (0, 0));
    assert_eq!(
        moment(&STEP_LEVEL_Q16),
        (65536, i64::from(STEP_AGO) * 65536)
    );
}

#[test]
fn a_drop_in_soft_tissue_is_not_a_pop() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        1000,
        6200,
        |t| if t < 500 { 300.0 } else { 160.0 },
        pressed,
    );
    assert_eq!(first_event(&out, event::BREAKTHROUGH), None);
    assert_eq!(first_event(&out, event::ARMED), None);
}

#[test]
fn detector_is_not_armed_during_blanking_even_on_bone() {
    // Needle already on the cortex at start: inrush then cortex load from the first tick.
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        600,
        6200,
        |t| settle(t, 0, 7000.0, 900.0),
        pressed,
    );
    let armed = first_event(&out, event::ARMED).expect("armed");
    assert!(armed > BLANKING_MS, "armed at {armed}");
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
}

#[test]
fn detection_disabled_never_reports_a_pop() {
    let config = Config {
        detection_enabled: false,
        missed_pop_ms: 0,
        ..Config::DEFAULT
    };
    let mut controller = Controller::new(config);
    let out = drive(
        &mut controller,
        3000,
        6200,
        |t| bone_current(t, 900.0, 2000, 370.0),
        pressed,
    );
    assert_eq!(first_event(&out, event::BREAKTHROUGH), None);
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
}

#[test]
fn gradual_breakthrough_triggers_the_missed_pop_fallback() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        4000,
        6200,
        |t| {
            if t < 1500 {
                bone_current(t, 900.0, u32::MAX, 0.0)
            } else {
                // Linear fade over 600 ms to just above no-load: no pop.
                let x = (f64::from(t - 1500) / 600.0).min(1.0);
                900.0 - x * (900.0 - 200.0)
            }
        },
        pressed,
    );
    assert_eq!(first_event(&out, event::BREAKTHROUGH), None);
    let fallback = first_event(&out, event::MISSED_POP).expect("fallback fired");
    assert_eq!(
        out[fallback as usize].stop_reason,
        Some(StopReason::MissedPop)
    );
    assert_eq!(out[fallback as usize].duty_permille, 0);
}

#[test]
fn stall_stops_with_a_fault_and_does_not_restart_until_re_press() {
    let mut controller = Controller::new(Config::DEFAULT);
    // Locked rotor at 500 ms: current goes to the stall current at 6.0 V.
    let out = drive(
        &mut controller,
        2000,
        6000,
        |t| {
            if t < 500 {
                190.0
            } else {
                settle(t, 500, 190.0, 6800.0)
            }
        },
        |t| !(1500..1600).contains(&t),
    );
    let fault = first_event(&out, event::FAULT).expect("stall fault");
    assert!((500..=650).contains(&fault), "fault at {fault}");
    assert_eq!(out[fault as usize].stop_reason, Some(StopReason::Stall));
    // Held trigger: stays off.
    assert!(out[fault as usize..1500]
        .iter()
        .all(|o| o.duty_permille == 0));
    // Released at 1500, pressed again at 1600: a new run starts.
    let restarts = out[1500..]
        .iter()
        .position(|o| o.events & event::STARTED != 0)
        .expect("restart after re-press");
    assert!(restarts >= 100);
}

#[test]
fn over_time_stops_before_10_s() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        11_000,
        6200,
        |t| bone_current(t, 900.0, u32::MAX, 0.0),
        pressed,
    );
    let fault = first_event(&out, event::FAULT).expect("over-time fault");
    let started = first_event(&out, event::STARTED).expect("started");
    assert!(fault - started <= 10_000);
    assert_eq!(out[fault as usize].stop_reason, Some(StopReason::OverTime));
    assert!(out[fault as usize..].iter().all(|o| o.duty_permille == 0));
}

#[test]
fn trigger_release_de_energises_within_a_few_ticks_and_needs_a_re_press() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        1500,
        6200,
        |t| bone_current(t, 900.0, u32::MAX, 0.0),
        |t| t < 800,
    );
    let off = out[800..]
        .iter()
        .position(|o| o.duty_permille == 0)
        .expect("de-energised");
    assert!(off <= 3, "{off} ms after release");
    assert_eq!(
        out[800 + off].stop_reason,
        Some(StopReason::TriggerReleased)
    );
    assert!(out[800 + off..].iter().all(|o| o.duty_permille == 0));
}

#[test]
fn low_battery_refuses_to_start_and_near_end_of_life_warns() {
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(&mut controller, 300, 4700, |_| 200.0, pressed);
    let fault = first_event(&out, event::FAULT).expect("low-battery fault");
    assert!(fault <= BLANKING_MS + 2);
    assert_eq!(
        out[fault as usize].stop_reason,
        Some(StopReason::LowBattery)
    );

    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(&mut controller, 300, 5000, |_| 200.0, pressed);
    assert!(first_event(&out, event::LOW_BATTERY_WARNING).is_some());
    assert_eq!(first_event(&out, event::FAULT), None);

    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(&mut controller, 300, 6200, |_| 200.0, pressed);
    assert_eq!(first_event(&out, event::LOW_BATTERY_WARNING), None);
}

#[test]
fn extreme_inputs_do_not_panic() {
    let mut controller = Controller::new(Config::DEFAULT);
    for tick in 0..5000u32 {
        let value = match tick % 4 {
            0 => i32::MAX,
            1 => i32::MIN,
            2 => 0,
            _ => -1,
        };
        let out = controller.step(&Inputs {
            tick,
            motor_current_ma: value,
            battery_mv: value.wrapping_neg(),
            trigger_pressed: tick % 7 != 0,
        });
        assert!(out.duty_permille <= DUTY_FULL_SCALE);
    }
}

mod telemetry_format {
    use super::super::telemetry::*;
    use super::super::{sensing, Inputs, Outputs, State, StopReason};

    #[test]
    fn crc16_is_ccitt_false() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc16(b""), 0xFFFF);
    }

    fn sample_id() -> FirmwareId {
        FirmwareId {
            firmware_version: padded("0.1.0"),
            core_version: padded("0.1.0"),
            git_commit: [0xAB; 20],
            flags: id_flags::DIRTY,
            core_source_sha256: [0x5A; 32],
            build_id: [7; 16],
        }
    }

    #[test]
    fn firmware_id_round_trips_and_checks_magic() {
        let id = sample_id();
        let bytes = id.to_bytes();
        assert_eq!(&bytes[..8], b"IOHILFW\x01");
        assert_eq!(&bytes[8..13], b"0.1.0");
        assert_eq!(bytes[13], 0);
        assert_eq!(bytes[60], id_flags::DIRTY);
        assert_eq!(FirmwareId::from_bytes(&bytes), Some(id));
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(FirmwareId::from_bytes(&bad), None);
        // A version longer than the field is truncated, not an overflow.
        assert_eq!(&padded::<4>("123456"), b"1234");
    }

    #[test]
    fn frames_have_the_documented_layout() {
        let inputs = Inputs {
            tick: 0x0102_0304,
            motor_current_ma: 70_000, // saturates
            battery_mv: 6_123,
            trigger_pressed: true,
        };
        let outputs = Outputs {
            duty_permille: 1000,
            brake: false,
            state: State::Cortex,
            stop_reason: Some(StopReason::Stall),
            events: 0x0204,
            filtered_current_ma: -5, // clamps to 0
            baseline_ma: 150,
        };
        let tick = TickRecord::from_step(&inputs, &outputs, fault::ADC_MISSING, 1234);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = encode(0xBEEF, &Frame::Tick(tick), &mut buf);
        assert_eq!(n, HEADER_LEN + TICK_LEN + TRAILER_LEN);
        let f = &buf[..n];
        assert_eq!(f[0], SYNC);
        assert_eq!(f[1], KIND_TICK);
        assert_eq!(usize::from(f[2]), TICK_LEN);
        assert_eq!(&f[3..5], &[0xEF, 0xBE]);
        assert_eq!(&f[5..9], &[4, 3, 2, 1]);
        assert_eq!(f[9], State::Cortex as u8);
        assert_eq!(f[10], StopReason::Stall as u8);
        assert_eq!(f[11], 0b110, "trigger bits set, brake clear");
        assert_eq!(&f[13..15], &0x0204u16.to_le_bytes());
        assert_eq!(&f[15..17], &fault::ADC_MISSING.to_le_bytes());
        assert_eq!(&f[17..19], &u16::MAX.to_le_bytes());
        assert_eq!(&f[19..21], &6123u16.to_le_bytes());
        assert_eq!(&f[21..23], &1000u16.to_le_bytes());
        assert_eq!(&f[23..25], &0u16.to_le_bytes());
        assert_eq!(&f[25..27], &150u16.to_le_bytes());
        assert_eq!(&f[27..31], &1234u32.to_le_bytes());
        let crc = crc16(&f[1..n - 2]);
        assert_eq!(&f[n - 2..], &crc.to_le_bytes());

        let boot = Frame::Boot {
            reset_cause: reset::WATCHDOG,
            tick_hz: 1000,
            id: sample_id(),
        };
        let n = encode(0, &boot, &mut buf);
        assert_eq!(n, MAX_FRAME_LEN);
        assert_eq!(buf[1], KIND_BOOT);
        assert_eq!(buf[5], FORMAT_VERSION);
        assert_eq!(buf[6], reset::WATCHDOG);
        assert_eq!(&buf[9..9 + IDENT_LEN], &sample_id().to_bytes());
    }

    #[test]
    fn fault_record_round_trips_and_rejects_damage() {
        let record = FaultRecord {
            kind: FaultKind::HardFault,
            pc: 0x0800_1234,
            lr: 0xFFFF_FFF9,
            xpsr: 0x6100_0003,
            cfsr: 0x0000_0400,
            hfsr: 0x4000_0000,
            mmfar: 0,
            bfar: 0x4800_1000,
            tick: 77,
            line: 0,
        };
        let bytes = encode_fault_record(&record);
        assert_eq!(&bytes[..4], b"FLT1");
        assert_eq!(decode_fault_record(&bytes), Some(record));
        for i in 0..FAULT_RECORD_LEN {
            let mut damaged = bytes;
            damaged[i] ^= 0x01;
            assert_eq!(decode_fault_record(&damaged), None, "byte {i} flipped");
        }
        assert_eq!(decode_fault_record(&[0; FAULT_RECORD_LEN]), None);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = encode(9, &Frame::Fault(record), &mut buf);
        assert_eq!(n, HEADER_LEN + FAULT_LEN + TRAILER_LEN);
        assert_eq!(
            decode_fault_payload(&buf[HEADER_LEN..HEADER_LEN + FAULT_LEN]),
            Some(record)
        );
    }

    #[test]
    fn sensing_scales_sums_of_counts() {
        // 20 readings of 4096/16.5 A per A: 1 A is 248.24 counts.
        let n = sensing::SAMPLES_PER_TICK;
        assert_eq!(sensing::mean_current_ma(0, n), 0);
        assert_eq!(sensing::mean_current_ma(4096 * n, n), 16_500);
        assert_eq!(sensing::mean_current_ma(4095 * n, n), 16_496);
        // One count is 4.028 mA: 1 count in 20 readings rounds to 0, 3 to 1 (0.604 mA).
        assert_eq!(sensing::mean_current_ma(2, n), 0);
        assert_eq!(sensing::mean_current_ma(3, n), 1);
        assert_eq!(sensing::mean_battery_mv(2482 * n, n), 5999);
        assert_eq!(sensing::mean_battery_mv(u32::MAX, 1), i32::MAX);
        assert_eq!(sensing::mean_current_ma(100, 0), 0);
    }
}

#[test]
fn telemetry_codes_round_trip() {
    for state in [
        State::Idle,
        State::Blanking,
        State::SoftTissue,
        State::Cortex,
        State::Braking,
        State::Done,
        State::Fault,
    ] {
        assert_eq!(State::from_u8(state as u8), Some(state));
    }
    assert_eq!(State::from_u8(7), None);
    for reason in [
        StopReason::Breakthrough,
        StopReason::MissedPop,
        StopReason::TriggerReleased,
        StopReason::Stall,
        StopReason::OverTime,
        StopReason::LowBattery,
    ] {
        assert_eq!(StopReason::from_u8(reason as u8), Some(reason));
    }
    assert_eq!(StopReason::from_u8(0), None);
    assert_eq!(StopReason::from_u8(7), None);
}

/// The load of a weak osteoporotic cortex at a low push: steady at 340 mA of motor current
/// (150 mA of load above the soft tissue), a pop at 1500 ms to 310 mA (20 % of the load: under
/// the windowed test's thresholds as the load estimate sees it). With `push_step`, the push
/// stepped down in the cortex first: 420 mA falling to 340 mA over 600-700 ms.
fn low_push_pop(t: u32, push_step: bool) -> f64 {
    let cortex = match (push_step, t) {
        (false, _) | (true, 700..) => 340.0,
        (true, ..600) => 420.0,
        (true, _) => 420.0 - 80.0 * f64::from(t - 600) / 100.0,
    };
    if t < 300 {
        NO_LOAD_MA + 40.0
    } else if t < 1500 {
        settle(
            t,
            300,
            NO_LOAD_MA + 40.0,
            if push_step { 420.0 } else { 340.0 },
        )
        .min(cortex)
    } else {
        settle(t, 1500, 340.0, 310.0)
    }
}

#[test]
fn a_small_pop_on_a_steady_level_is_caught_by_the_level_shift_test_alone() {
    let run = |config: Config| pop_and_stop(config, |t| low_push_pop(t, false));
    // Shipped: detected once the lower level has held 24 ms, well before any far cortex.
    let (detected, _) = run(Config::DEFAULT);
    let detected = detected.expect("pop detected");
    assert!(
        (1520..=1550).contains(&detected),
        "detected {} ms after the pop",
        detected as i64 - 1500
    );
    // The fast tests do not see it (the plateau-step test's gate is shut: no fall before it),
    // and driver-core 0.3 never stopped.
    let without_level = Config {
        level_test: false,
        ..Config::DEFAULT
    };
    assert_eq!(run(without_level), (None, None));
    assert_eq!(run(Config::DRIVER_CORE_0_3), (None, None));
}

#[test]
fn after_a_push_step_down_a_small_pop_is_caught_by_the_plateau_step_test_within_15_ms() {
    let run = |config: Config| pop_and_stop(config, |t| low_push_pop(t, true)).0;
    let without_level = Config {
        level_test: false,
        ..Config::DEFAULT
    };
    for config in [Config::DEFAULT, without_level] {
        let detected = run(config).expect("pop detected");
        assert!(
            (1500..=1515).contains(&detected),
            "detected {} ms after the pop",
            detected as i64 - 1500
        );
    }
    // Without the plateau-step test only the slow level-shift test sees it; 0.3 never did.
    let without_plateau = Config {
        plateau_test: false,
        ..Config::DEFAULT
    };
    assert!(run(without_plateau).is_some_and(|t| t > 1520));
    assert_eq!(run(Config::DRIVER_CORE_0_3), None);
}

#[test]
fn a_ramp_that_levels_off_at_a_steady_push_is_no_pop() {
    // A pediatric-like cortex whose load rises through its ramp and levels off, then a slow
    // 10 % fade over 400 ms (a weakening cortex): neither is a step.
    let mut controller = Controller::new(Config::DEFAULT);
    let out = drive(
        &mut controller,
        2500,
        6200,
        |t| match t {
            ..300 => NO_LOAD_MA + 40.0,
            300..1000 => settle(t, 300, NO_LOAD_MA + 40.0, 500.0)
                .min(NO_LOAD_MA + 40.0 + 310.0 * f64::from(t - 300) / 400.0),
            1000..1400 => 500.0,
            _ => 500.0 - 35.0 * (f64::from(t - 1400) / 400.0).min(1.0),
        },
        pressed,
    );
    assert_eq!(first_event(&out, event::MOTOR_OFF), None);
    assert_eq!(out[2499].state, State::Cortex);
}

#[test]
fn a_load_that_settles_at_35_percent_of_the_plateau_is_stopped_by_the_fallback() {
    // Cortex 500 mA (310 mA of load over the soft tissue's 190), then a slow 400 ms fade (no step
    // any test sees) to 35 % of that load: where a missed pop leaves the load once the operator
    // eases off (known anomaly KA-02). 0.4's fallback (40 %) stops it; 0.3's (30 %) never did.
    let settles = |t: u32| match t {
        ..300 => NO_LOAD_MA + 40.0,
        300..1500 => settle(t, 300, NO_LOAD_MA + 40.0, 500.0),
        _ => 500.0 - 0.65 * 310.0 * (f64::from(t - 1500) / 400.0).min(1.0),
    };
    let (detected, off) = pop_and_stop(Config::DEFAULT, settles);
    assert_eq!(detected, None);
    assert!(
        off.is_some_and(|t| (1700..2300).contains(&t)),
        "fallback at {off:?}"
    );
    let legacy_fallback = Config {
        missed_pop_percent: LEGACY_MISSED_POP_PERCENT,
        ..Config::DEFAULT
    };
    assert_eq!(pop_and_stop(legacy_fallback, settles), (None, None));
}
