//! Conversion of the board's ADC readings into the engineering units [`crate::Inputs`] carries.
//!
//! The driver board samples the motor current and the battery voltage once per PWM period
//! (20 kHz), i.e. [`SAMPLES_PER_TICK`] times per control tick, and passes the *sum* of the raw
//! 12-bit readings of a tick to these functions. The `sim` rig's plant model produces the same
//! raw counts and calls the same functions, so the board, the emulated ELF and the host compute
//! bit-identical inputs for the controller.
//!
//! Scaling (board schematic, see `firmware-under-test/board/README.md`):
//! - current: 10 mOhm in-line shunt, amplifier gain 20 (INA240A1), 3.3 V ADC reference:
//!   full scale [`CURRENT_FULL_SCALE_MA`];
//! - battery: divider 1:3 into the same 3.3 V reference: full scale [`VOLTAGE_FULL_SCALE_MV`].

/// ADC resolution, bits.
pub const ADC_BITS: u32 = 12;
/// Largest ADC reading.
pub const ADC_MAX: u16 = 4095;
/// ADC readings per control tick (20 kHz PWM, 1 kHz control).
pub const SAMPLES_PER_TICK: u32 = 20;
/// Current at 4096 counts, mA (10 mOhm x 20 = 0.2 V/A over 3.3 V).
pub const CURRENT_FULL_SCALE_MA: u32 = 16_500;
/// Voltage at 4096 counts, mV (divider 1:3 over 3.3 V).
pub const VOLTAGE_FULL_SCALE_MV: u32 = 9_900;

/// Mean of `samples` current readings whose raw counts sum to `sum_counts`, in mA, rounded
/// to nearest. `samples == 0` gives 0 (no reading is no current seen, and the stall
/// protection will not act on it; the board flags the missing samples as a fault).
pub fn mean_current_ma(sum_counts: u32, samples: u32) -> i32 {
    scale_mean(sum_counts, samples, CURRENT_FULL_SCALE_MA)
}

/// Mean battery voltage of `samples` readings summing to `sum_counts`, mV, rounded to nearest.
pub fn mean_battery_mv(sum_counts: u32, samples: u32) -> i32 {
    scale_mean(sum_counts, samples, VOLTAGE_FULL_SCALE_MV)
}

/// `round(sum * full_scale / (4096 * samples))` in 64-bit integers (no overflow for any
/// `u32` sum: 2^32 * 2^14 < 2^63; the saturating operations only keep clippy's proof simple).
fn scale_mean(sum_counts: u32, samples: u32, full_scale: u32) -> i32 {
    let denominator = u64::from(samples) << ADC_BITS;
    let half = denominator >> 1;
    let numerator = u64::from(sum_counts)
        .saturating_mul(u64::from(full_scale))
        .saturating_add(half);
    match numerator.checked_div(denominator) {
        Some(value) => i32::try_from(value).unwrap_or(i32::MAX),
        None => 0,
    }
}
