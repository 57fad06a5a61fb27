//! The virtual bench's wiring: what on a real bench is copper and a shaft between the driver
//! board and the load.
//!
//! The virtual load controller (`iohil loadsim`) owns the physical world: the plant model, the
//! board's battery and motor, the needle and the bone. The fake target (the control core behind
//! the [`super::target::Target`] trait) connects to it over a Unix socket and exchanges, once per
//! control tick of the board's own clock, what the board's pins see and drive:
//!
//! - on connect, board to world: [`Msg::Hello`] with the board's tick period (its oscillator's
//!   rate error included);
//! - world to board, at each of the board's ticks: [`Msg::Tick`], the tick's ADC sums (the
//!   board's ADC is triggered by its own PWM timer, so every tick has exactly
//!   [`driver_core::sensing::SAMPLES_PER_TICK`] readings) and the trigger line;
//! - board to world: [`Msg::Drive`], the bridge command for the next tick.
//!
//! The world waits for each reply (lockstep), so the control core's run time does not enter the
//! physics; the world paces itself against the wall clock, so the whole bench runs in real
//! time. This is a test fixture's protocol, not a product interface: both ends are in this
//! crate and it is versioned by [`WIRES_VERSION`].

use std::io::{Read, Write};

/// Version of this message format.
pub const WIRES_VERSION: u8 = 1;

/// Length of every message, bytes.
pub const MSG_LEN: usize = 16;

/// One message on the wires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Msg {
    /// Board to world on connect: format version and the board's control tick period.
    Hello {
        /// The board's tick period in world nanoseconds (1 ms times its clock's rate error).
        tick_period_ns: f64,
    },
    /// World to board: one control tick.
    Tick {
        /// Sum of the tick's current ADC readings, counts.
        current_sum: u32,
        /// Sum of the tick's battery ADC readings, counts.
        voltage_sum: u32,
        /// Readings summed.
        samples: u32,
        /// Trigger line level.
        trigger: bool,
    },
    /// Board to world: the bridge command until the next tick.
    Drive {
        /// Duty, per mille.
        duty_permille: u16,
        /// Brake.
        brake: bool,
        /// The drive is removed (core in reset: pins high impedance).
        off: bool,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_TICK: u8 = 2;
const KIND_DRIVE: u8 = 3;

impl Msg {
    /// The message's bytes.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[1] = WIRES_VERSION;
        match *self {
            Msg::Hello { tick_period_ns } => {
                b[0] = KIND_HELLO;
                b[8..16].copy_from_slice(&tick_period_ns.to_le_bytes());
            }
            Msg::Tick {
                current_sum,
                voltage_sum,
                samples,
                trigger,
            } => {
                b[0] = KIND_TICK;
                b[2] = u8::from(trigger);
                b[4..8].copy_from_slice(&current_sum.to_le_bytes());
                b[8..12].copy_from_slice(&voltage_sum.to_le_bytes());
                b[12..16].copy_from_slice(&samples.to_le_bytes());
            }
            Msg::Drive {
                duty_permille,
                brake,
                off,
            } => {
                b[0] = KIND_DRIVE;
                b[2] = u8::from(brake);
                b[3] = u8::from(off);
                b[4..6].copy_from_slice(&duty_permille.to_le_bytes());
            }
        }
        b
    }

    /// Decodes a message.
    pub fn decode(b: &[u8; MSG_LEN]) -> Result<Msg, String> {
        if b[1] != WIRES_VERSION {
            return Err(format!(
                "wires message version {} (this end speaks {WIRES_VERSION})",
                b[1]
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        match b[0] {
            KIND_HELLO => {
                let mut f = [0u8; 8];
                f.copy_from_slice(&b[8..16]);
                let tick_period_ns = f64::from_le_bytes(f);
                if !(tick_period_ns > 1e5 && tick_period_ns < 1e7) {
                    return Err(format!("implausible tick period {tick_period_ns} ns"));
                }
                Ok(Msg::Hello { tick_period_ns })
            }
            KIND_TICK => Ok(Msg::Tick {
                current_sum: u32_at(4),
                voltage_sum: u32_at(8),
                samples: u32_at(12),
                trigger: b[2] != 0,
            }),
            KIND_DRIVE => Ok(Msg::Drive {
                duty_permille: u16::from_le_bytes([b[4], b[5]]).min(driver_core::DUTY_FULL_SCALE),
                brake: b[2] != 0,
                off: b[3] != 0,
            }),
            other => Err(format!("unknown wires message kind {other}")),
        }
    }
}

/// Writes one message.
pub fn send(w: &mut impl Write, msg: Msg) -> std::io::Result<()> {
    w.write_all(&msg.encode())
}

/// Reads one message (blocking, up to the stream's read timeout).
pub fn recv(r: &mut impl Read) -> std::io::Result<Msg> {
    let mut b = [0u8; MSG_LEN];
    r.read_exact(&mut b)?;
    Msg::decode(&b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_ones_are_refused() {
        for msg in [
            Msg::Hello {
                tick_period_ns: 1_000_100.0,
            },
            Msg::Tick {
                current_sum: 12345,
                voltage_sum: 67890,
                samples: 20,
                trigger: true,
            },
            Msg::Drive {
                duty_permille: 750,
                brake: false,
                off: false,
            },
        ] {
            assert_eq!(Msg::decode(&msg.encode()), Ok(msg));
        }
        let mut b = Msg::Hello {
            tick_period_ns: 1e6,
        }
        .encode();
        b[1] = 9;
        assert!(Msg::decode(&b).unwrap_err().contains("version 9"));
        let mut b = [0u8; MSG_LEN];
        b[1] = WIRES_VERSION;
        b[0] = 77;
        assert!(Msg::decode(&b).unwrap_err().contains("kind 77"));
        let b = Msg::Hello {
            tick_period_ns: f64::NAN,
        }
        .encode();
        assert!(Msg::decode(&b).is_err());
    }
}
