//! Confidence bounds on a failure probability from `k` failures in `n` independent trials.
//!
//! - No failure: the exact one-sided 95 % upper bound `1 - 0.05^(1/n)` (about `3/n`, the "rule
//!   of three"): the largest per-trial failure probability that still gives a 5 % chance of
//!   seeing no failure in `n` trials.
//! - One or more failures: the two-sided 95 % Clopper-Pearson ("exact") interval, from the
//!   quantiles of the beta distribution: lower `B(0.025; k, n - k + 1)`, upper
//!   `B(0.975; k + 1, n - k)`. The beta quantile is found by bisection on the regularised
//!   incomplete beta function, which is evaluated by its continued fraction (Lentz's method);
//!   the tests check it against the binomial sums it stands for and against published values.

use serde::{Deserialize, Serialize};

/// Confidence level of every bound here.
pub const CONFIDENCE: f64 = 0.95;

/// A bound on the per-trial failure probability.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FailureRate {
    /// Trials that failed.
    pub failures: u64,
    /// Trials run.
    pub trials: u64,
    /// Observed fraction `failures / trials`.
    pub observed: f64,
    /// Lower end of the interval (0 when no trial failed).
    pub lower: f64,
    /// Upper 95 % bound.
    pub upper: f64,
    /// How the bound was computed.
    pub method: BoundMethod,
}

/// Which bound [`FailureRate`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundMethod {
    /// No failure: exact one-sided upper bound `1 - 0.05^(1/n)`.
    ZeroFailuresOneSided,
    /// Failures seen: two-sided Clopper-Pearson interval.
    ClopperPearson,
}

impl FailureRate {
    /// The bound for `failures` of `trials`, or `None` without any trial.
    pub fn of(failures: u64, trials: u64) -> Option<FailureRate> {
        if trials == 0 || failures > trials {
            return None;
        }
        let n = trials as f64;
        let k = failures as f64;
        let alpha = 1.0 - CONFIDENCE;
        let (lower, upper, method) = if failures == 0 {
            (
                0.0,
                1.0 - alpha.powf(1.0 / n),
                BoundMethod::ZeroFailuresOneSided,
            )
        } else {
            let lower = beta_quantile(alpha / 2.0, k, n - k + 1.0);
            let upper = if failures == trials {
                1.0
            } else {
                beta_quantile(1.0 - alpha / 2.0, k + 1.0, n - k)
            };
            (lower, upper, BoundMethod::ClopperPearson)
        };
        Some(FailureRate {
            failures,
            trials,
            observed: k / n,
            lower,
            upper,
            method,
        })
    }

    /// One line for a console or a report, e.g. `0 of 20000 cases failed; failure probability
    /// per insertion < 1.50e-4 (95 % upper bound, exact one-sided: 1 - 0.05^(1/n))`.
    pub fn describe(&self, what: &str) -> String {
        match self.method {
            BoundMethod::ZeroFailuresOneSided => format!(
                "0 of {} {what} failed; failure probability per insertion < {:.3e} \
                 (95 % upper bound, exact one-sided: 1 - 0.05^(1/n))",
                self.trials, self.upper
            ),
            BoundMethod::ClopperPearson => format!(
                "{} of {} {what} failed ({:.3e}); failure probability per insertion in \
                 [{:.3e}, {:.3e}] (95 % Clopper-Pearson interval)",
                self.failures, self.trials, self.observed, self.lower, self.upper
            ),
        }
    }
}

/// The `p` quantile of the beta distribution with shapes `a`, `b` (both > 0).
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    // 200 halvings reach the limit of f64 resolution near 0 as well as near 1.
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if regularized_incomplete_beta(mid, a, b) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// `I_x(a, b)`, the regularised incomplete beta function.
pub fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry
    // I_x(a, b) = 1 - I_(1-x)(b, a) on the other side.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function, by the modified Lentz method.
fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-15;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One Lentz update with the partial numerator `aa`: returns the factor applied to `h`.
    let mut update = |aa: f64| {
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        d * c
    };
    for m in 1..10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        h *= update(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let delta = update(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// `ln(Gamma(x))` for x > 0 (Lanczos approximation, g = 7, 9 terms; relative error < 1e-13).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// P(X <= k) for X ~ Binomial(n, p), summed directly.
    fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
        let mut term = (1.0 - p).powf(n as f64);
        let mut sum = term;
        for i in 1..=k {
            term *= (n - i + 1) as f64 / i as f64 * p / (1.0 - p);
            sum += term;
        }
        sum
    }

    #[test]
    fn zero_failures_gives_the_exact_one_sided_bound() {
        let r = FailureRate::of(0, 20_000).expect("bound");
        assert!((r.upper - (1.0 - 0.05f64.powf(1.0 / 20_000.0))).abs() < 1e-15);
        // About 3/n.
        assert!((r.upper * 20_000.0 - 3.0).abs() < 0.01, "{}", r.upper);
        // The defining property: P(no failure | p = upper) = 5 %.
        assert!(((1.0 - r.upper).powf(20_000.0) - 0.05).abs() < 1e-9);
        assert_eq!(r.lower, 0.0);
    }

    #[test]
    fn clopper_pearson_ends_solve_their_binomial_tail_equations() {
        for (k, n) in [
            (1u64, 10u64),
            (3, 1000),
            (5, 20),
            (34, 20_000),
            (1, 1_000_000),
        ] {
            let r = FailureRate::of(k, n).expect("bound");
            // Upper: P(X <= k | upper) = 2.5 %; lower: P(X >= k | lower) = 2.5 %.
            let upper_tail = binomial_cdf(k, n, r.upper);
            let lower_tail = 1.0 - binomial_cdf(k - 1, n, r.lower);
            assert!(
                (upper_tail - 0.025).abs() < 1e-7,
                "k {k} n {n}: {upper_tail}"
            );
            assert!(
                (lower_tail - 0.025).abs() < 1e-7,
                "k {k} n {n}: {lower_tail}"
            );
            assert!(r.lower < r.observed && r.observed < r.upper);
        }
    }

    #[test]
    fn clopper_pearson_matches_published_values() {
        // 1 of 10: [0.002529, 0.445016]; 5 of 20: [0.08657, 0.49105] (e.g. R's binom.test).
        let r = FailureRate::of(1, 10).expect("bound");
        assert!((r.lower - 0.002_528_6).abs() < 1e-6, "{}", r.lower);
        assert!((r.upper - 0.445_016_1).abs() < 1e-6, "{}", r.upper);
        let r = FailureRate::of(5, 20).expect("bound");
        assert!((r.lower - 0.086_571_2).abs() < 1e-6, "{}", r.lower);
        assert!((r.upper - 0.491_046_6).abs() < 1e-6, "{}", r.upper);
        let all = FailureRate::of(4, 4).expect("bound");
        assert_eq!(all.upper, 1.0);
        assert!(FailureRate::of(0, 0).is_none());
        assert!(FailureRate::of(2, 1).is_none());
    }
}
