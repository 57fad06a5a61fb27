//! Box-Muller normals without libm: the natural logarithm and the sine and cosine of a turn
//! fraction in plain IEEE 754 arithmetic, branch-free so that a batch of draws vectorises.
//!
//! Why: the sensor noise draws twenty normals per control tick, and with glibc's `log` and
//! `sincos` they were 30 % of a fuzz campaign's time (`perf record` of `iohil fuzz --cases 5000
//! --jobs 1`, 2026-12-08: `sincos` 17 %, `log` 6 %, the square root about 5 %). Here the ten
//! pairs of a tick are computed side by side. Being plain arithmetic (Rust never contracts
//! `a * b + c` into a fused multiply-add), a draw is bit-identical whether it is computed alone
//! or in a batch, on every platform, where libm's results depend on the C library.
//!
//! Accuracy (`tests`, a million uniform draws each): the logarithm is within 1 ulp (2.2e-16
//! relative) of libm's, the sine and cosine within 2 ulps of libm's evaluated at the angle
//! carried to twice double precision. A noise sample that differs from
//! libm's by an ulp moves a 12-bit ADC reading only if the reading lies within about 1e-16 A of
//! a rounding boundary.
//!
//! The methods are the classic ones: the logarithm reduces `x = 2^e m` with `m` in
//! [sqrt(1/2), sqrt(2)), writes `ln m = 2 atanh(s)` with `s = (m - 1) / (m + 1)` and evaluates
//! the odd series' tail as a degree-14 minimax polynomial in `s` (the coefficients of fdlibm's
//! `e_log.c`, Sun Microsystems 1993); the sine and cosine reduce the turn fraction exactly (a
//! multiple of 2^-53 times 4 minus the nearest integer is exact) to a quarter turn `q` and an
//! angle in [-pi/4, pi/4], evaluated with fdlibm's `k_sin.c`/`k_cos.c` minimax polynomials.

use std::f64::consts::FRAC_PI_2;

/// `ln 2`, split so that `e * LN2_HI` is exact for |e| < 2^11.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// The tail of `ln((1 + s) / (1 - s)) = 2 s + s R(s^2)`, `R(z) = LG1 z + LG2 z^2 + ...`.
const LG1: f64 = 6.666_666_666_666_735e-1;
const LG2: f64 = 3.999_999_999_940_942e-1;
const LG3: f64 = 2.857_142_874_366_239e-1;
const LG4: f64 = 2.222_219_843_214_978_4e-1;
const LG5: f64 = 1.818_357_216_161_805e-1;
const LG6: f64 = 1.531_383_769_920_937_3e-1;
const LG7: f64 = 1.479_819_860_511_658_6e-1;
/// `sin x = x + x^3 S(x^2)` on [-pi/4, pi/4].
const S1: f64 = -1.666_666_666_666_663_2e-1;
const S2: f64 = 8.333_333_333_322_49e-3;
const S3: f64 = -1.984_126_982_985_795e-4;
const S4: f64 = 2.755_731_370_707_006_8e-6;
const S5: f64 = -2.505_076_025_340_686_3e-8;
const S6: f64 = 1.589_690_995_211_55e-10;
/// `cos x = 1 - x^2 / 2 + x^4 C(x^2)` on [-pi/4, pi/4].
const C1: f64 = 4.166_666_666_666_66e-2;
const C2: f64 = -1.388_888_888_887_411e-3;
const C3: f64 = 2.480_158_728_947_673e-5;
const C4: f64 = -2.755_731_435_139_066_3e-7;
const C5: f64 = 2.087_572_321_298_175e-9;
const C6: f64 = -1.135_964_755_778_819_5e-11;

/// 2^52: adding it to a non-negative double below 2^52 leaves no fraction bits.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// Natural logarithm of a positive normal `x` (the callers pass a uniform draw in
/// [2^-1022, 1)). Branch-free.
#[inline]
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    // The exponent as a double without an integer conversion: the biased exponent (11 bits)
    // placed in the mantissa of 2^52.
    let biased = f64::from_bits((bits >> 52) | TWO_52.to_bits()) - TWO_52;
    // m in [1, 2).
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // Above sqrt(2): halve m (exact) and count one more in the exponent.
    let high = m > std::f64::consts::SQRT_2;
    let m = if high { 0.5 * m } else { m };
    let e = biased - 1023.0 + if high { 1.0 } else { 0.0 };
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let odd = w * (LG2 + w * (LG4 + w * LG6));
    let even = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = odd + even;
    let hfsq = 0.5 * f * f;
    e * LN2_HI - ((hfsq - (s * (hfsq + r) + e * LN2_LO)) - f)
}

/// `(sin, cos)` of the angle `2 pi turn`, for `turn` in [0, 1). Branch-free.
#[inline]
pub fn sin_cos_turn(turn: f64) -> (f64, f64) {
    let quarters = 4.0 * turn;
    // Nearest whole quarter turn (ties to even), and the rest in [-1/2, 1/2] quarter: exact.
    let q = (quarters + TWO_52) - TWO_52;
    let x = (quarters - q) * FRAC_PI_2;
    let z = x * x;
    let sin = x + x * z * (S1 + z * (S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)))));
    let r = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    let hz = 0.5 * z;
    let one_minus_hz = 1.0 - hz;
    let cos = one_minus_hz + (((1.0 - one_minus_hz) - hz) + z * r);
    // The angle is q quarter turns plus x (q in 0..=4; 4 is a whole turn): rotate
    // (cos x, sin x) by q quarters.
    let odd = q == 1.0 || q == 3.0;
    let (s, c) = if odd { (cos, sin) } else { (sin, cos) };
    let sin_negative = q == 2.0 || q == 3.0;
    let cos_negative = q == 1.0 || q == 2.0;
    (
        if sin_negative { -s } else { s },
        if cos_negative { -c } else { c },
    )
}

/// The Box-Muller pair for uniforms `u1` in (0, 1) and `u2` in [0, 1): radius
/// `sqrt(-2 ln u1)`, angle `2 pi u2`; `(r cos, r sin)`.
#[inline]
pub fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let radius = (-2.0 * ln(u1)).sqrt();
    let (sin, cos) = sin_cos_turn(u2);
    (radius * cos, radius * sin)
}

/// Box-Muller pairs for `u1[k]`, `u2[k]`, written to `out[2k]` (the cosine draw) and
/// `out[2k + 1]` (the sine draw); the same values as [`box_muller`] one pair at a time.
#[inline]
pub fn box_muller_batch<const N: usize>(u1: &[f64; N], u2: &[f64; N], out: &mut [[f64; 2]; N]) {
    for ((u1, u2), out) in u1.iter().zip(u2).zip(out.iter_mut()) {
        let (a, b) = box_muller(*u1, *u2);
        *out = [a, b];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two doubles of the same sign.
    fn ulps(a: f64, b: f64) -> u64 {
        if a == b {
            return 0;
        }
        let key = |x: f64| {
            let bits = x.to_bits() as i64;
            if bits < 0 {
                i64::MIN - bits
            } else {
                bits
            }
        };
        key(a).abs_diff(key(b))
    }

    fn uniforms(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = crate::plant::Rng::new(seed);
        (0..n).map(|_| rng.uniform()).collect()
    }

    #[test]
    fn ln_is_within_one_ulp_of_libm() {
        let mut worst = 0;
        let mut args = uniforms(1_000_000, 7);
        args.extend([
            f64::MIN_POSITIVE,
            1.0 / (1u64 << 53) as f64,
            0.5,
            std::f64::consts::FRAC_1_SQRT_2,
            1.0 - f64::EPSILON / 2.0,
            0.75,
        ]);
        for x in args.into_iter().map(|x| x.max(f64::MIN_POSITIVE)) {
            let d = ulps(ln(x), x.ln());
            assert!(d <= 1, "ln({x:e}) = {:e}, libm {:e}", ln(x), x.ln());
            worst = worst.max(d);
        }
        assert_eq!(ln(0.5), -std::f64::consts::LN_2);
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn sin_cos_of_a_turn_fraction_is_within_one_ulp_of_libm() {
        let tau = 2.0 * std::f64::consts::PI;
        let mut args = uniforms(1_000_000, 11);
        // Every quarter and eighth of a turn, and their neighbours.
        for k in 0..8 {
            let t = f64::from(k) / 8.0;
            args.extend([t, t + f64::EPSILON, (t - f64::EPSILON).max(0.0)]);
        }
        // The reference: libm at the angle 2 pi t carried to twice double precision
        // (a + b, with b from a fused multiply-add and the low part of 2 pi), so that its only
        // error is libm's own.
        let tau_lo = 2.449_293_598_294_706_4e-16;
        for t in args {
            let (s, c) = sin_cos_turn(t);
            let a = tau * t;
            let b = tau.mul_add(t, -a) + tau_lo * t;
            let (sa, ca) = a.sin_cos();
            let (ls, lc) = (sa + b * ca, ca - b * sa);
            for (mine, reference) in [(s, ls), (c, lc)] {
                // Where the result is zero the reference's own resolution is about 1e-32.
                assert!(
                    ulps(mine, reference) <= 2 || (mine - reference).abs() < 1e-30,
                    "turn {t:e}: {mine:e}, reference {reference:e}"
                );
            }
            assert!(
                (s * s + c * c - 1.0).abs() < 4.0 * f64::EPSILON,
                "turn {t:e}"
            );
        }
        assert_eq!(sin_cos_turn(0.0), (0.0, 1.0));
        assert_eq!(sin_cos_turn(0.25), (1.0, 0.0));
        assert_eq!(sin_cos_turn(0.5), (0.0, -1.0));
        assert_eq!(sin_cos_turn(0.75), (-1.0, 0.0));
    }

    #[test]
    fn a_batch_gives_the_values_of_single_draws() {
        let u = uniforms(20, 3);
        let u1: [f64; 10] = std::array::from_fn(|k| u[2 * k]);
        let u2: [f64; 10] = std::array::from_fn(|k| u[2 * k + 1]);
        let mut out = [[0.0; 2]; 10];
        box_muller_batch(&u1, &u2, &mut out);
        for k in 0..10 {
            let (a, b) = box_muller(u1[k], u2[k]);
            assert_eq!(out[k].map(f64::to_bits), [a.to_bits(), b.to_bits()]);
        }
    }
}
