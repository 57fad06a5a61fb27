//! One clock for a bench trial: the board's telemetry is timed by its control tick (its own
//! oscillator), the load's samples by the load controller's clock. Both see the trigger line:
//! the load drives it and records its level in every sample, the board reports the raw level in
//! every tick frame. Each edge seen by both is a shared event; a straight-line fit through them
//! gives the offset and the rate difference (drift), and the fit's residuals plus the sampling
//! quantisation of both sides give a bound on the alignment error.
//!
//! A trial has at least two edges: the press, and the release (the operator's, or the load's at
//! the end of the trial). With one edge only the offset is measured and the rate is taken as
//! nominal; the bound then grows by the largest plausible drift over the trial.

use serde::{Deserialize, Serialize};

/// An edge of the trigger line as one side saw it: it happened after `after` and at or before
/// `at` (that side's sampling instants), and the line went to `level`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// Last sample before the edge (load: us; board: ticks).
    pub after: f64,
    /// First sample after the edge.
    pub at: f64,
    /// New level.
    pub level: bool,
}

/// Edges in a sampled level series `(time, level)`; the first sample sets the initial level.
pub fn edges(samples: impl IntoIterator<Item = (f64, bool)>) -> Vec<Edge> {
    let mut out = Vec::new();
    let mut previous: Option<(f64, bool)> = None;
    for (t, level) in samples {
        if let Some((tp, lp)) = previous {
            if level != lp {
                out.push(Edge {
                    after: tp,
                    at: t,
                    level,
                });
            }
        }
        previous = Some((t, level));
    }
    out
}

/// The mapping from board ticks to load time, and how good it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alignment {
    /// Load time of board tick 0, us.
    pub offset_us: f64,
    /// Load microseconds per board tick.
    pub us_per_tick: f64,
    /// Board clock rate relative to the load's, ppm (positive: the board's tick is longer).
    pub drift_ppm: f64,
    /// Shared edges used.
    pub edges: usize,
    /// Largest fit residual, ms.
    pub residual_ms: f64,
    /// Bound on the alignment error of any board event between the first and last edge, ms.
    pub error_bound_ms: f64,
    /// How the rate was found: `fit` (two or more edges) or `nominal` (one edge).
    pub method: String,
}

impl Alignment {
    /// Load time of board tick `tick`, us.
    pub fn load_us(&self, tick: f64) -> f64 {
        self.offset_us + self.us_per_tick * tick
    }
}

/// Why a trial's clocks could not be aligned within the limits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("clock alignment: {0}")]
pub struct AlignError(pub String);

/// Aligns the board's tick clock to the load clock from the edges both saw.
/// `nominal_us_per_tick` is the board's tick period; `span_us` the trial's length (for the
/// one-edge bound); limits from the rig file.
pub fn align(
    load: &[Edge],
    board: &[Edge],
    nominal_us_per_tick: f64,
    span_us: f64,
    max_drift_ppm: f64,
    tolerance_ms: f64,
) -> Result<Alignment, AlignError> {
    if load.len() != board.len() {
        return Err(AlignError(format!(
            "the load drove {} trigger edge(s) but the board reported {}",
            load.len(),
            board.len()
        )));
    }
    if let Some(i) = (0..load.len()).find(|&i| load[i].level != board[i].level) {
        return Err(AlignError(format!(
            "trigger edge {i} goes {} on the load but {} on the board",
            level_name(load[i].level),
            level_name(board[i].level)
        )));
    }
    let pairs: Vec<(f64, f64, f64, f64)> = load
        .iter()
        .zip(board)
        .map(|(l, b)| {
            // (board mid tick, board half-width ticks, load mid us, load half-width us)
            (
                (b.after + b.at) / 2.0,
                (b.at - b.after) / 2.0,
                (l.after + l.at) / 2.0,
                (l.at - l.after) / 2.0,
            )
        })
        .collect();
    let (us_per_tick, offset_us, method) = match pairs.as_slice() {
        [] => {
            return Err(AlignError(
                "no trigger edge was seen by both the load and the board".to_owned(),
            ))
        }
        [(d, _, l, _)] => (nominal_us_per_tick, l - nominal_us_per_tick * d, "nominal"),
        _ => {
            let n = pairs.len() as f64;
            let md = pairs.iter().map(|p| p.0).sum::<f64>() / n;
            let ml = pairs.iter().map(|p| p.2).sum::<f64>() / n;
            let sdd: f64 = pairs.iter().map(|p| (p.0 - md).powi(2)).sum();
            let sdl: f64 = pairs.iter().map(|p| (p.0 - md) * (p.2 - ml)).sum();
            if sdd <= 0.0 {
                return Err(AlignError(
                    "the board reported every trigger edge at the same tick".to_owned(),
                ));
            }
            let b = sdl / sdd;
            (b, ml - b * md, "fit")
        }
    };
    let drift_ppm = (us_per_tick / nominal_us_per_tick - 1.0) * 1e6;
    let residual_us = pairs
        .iter()
        .map(|(d, _, l, _)| (l - (offset_us + us_per_tick * d)).abs())
        .fold(0.0, f64::max);
    let quantisation_us = pairs
        .iter()
        // Each side's edge is known to half its bracketing interval (wider when frames or
        // samples around it were lost).
        .map(|(_, hb, _, hl)| hl + hb * us_per_tick)
        .fold(0.0, f64::max);
    let mut error_us = residual_us + quantisation_us;
    if method == "nominal" {
        error_us += max_drift_ppm * 1e-6 * span_us;
    } else {
        // The fitted rate itself is uncertain by the quantisation over the edges' span.
        let first = pairs.first().map_or(0.0, |p| p.0);
        let last = pairs.last().map_or(0.0, |p| p.0);
        let span_ticks = (last - first).abs().max(1.0);
        let rate_uncertainty_ppm = 2.0 * quantisation_us / (span_ticks * us_per_tick) * 1e6;
        if drift_ppm.abs() > max_drift_ppm + rate_uncertainty_ppm {
            return Err(AlignError(format!(
                "the clocks' rates differ by {drift_ppm:.0} ppm, more than the {max_drift_ppm} ppm the rig file allows (clock.max_drift_ppm)"
            )));
        }
    }
    let error_bound_ms = error_us / 1000.0;
    if !error_bound_ms.is_finite() || error_bound_ms > tolerance_ms {
        return Err(AlignError(format!(
            "error bound {error_bound_ms:.3} ms exceeds the {tolerance_ms} ms tolerance (clock.tolerance_ms) with {} shared edge(s)",
            pairs.len()
        )));
    }
    Ok(Alignment {
        offset_us,
        us_per_tick,
        drift_ppm,
        edges: pairs.len(),
        residual_ms: residual_us / 1000.0,
        error_bound_ms,
        method: method.to_owned(),
    })
}

fn level_name(level: bool) -> &'static str {
    if level {
        "pressed"
    } else {
        "released"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trigger that is pressed at `press_us` and released at `release_us` (true time), seen
    /// by a load sampling every `load_period_us` with its clock `load_offset_us` ahead, and by
    /// a board ticking every `1000 * (1 + drift)` us that booted at `boot_us`.
    fn scene(
        press_us: f64,
        release_us: f64,
        load_offset_us: f64,
        load_period_us: f64,
        drift_ppm: f64,
        boot_us: f64,
    ) -> (Vec<Edge>, Vec<Edge>) {
        let level = |t: f64| t >= press_us && t < release_us;
        let end = if release_us.is_finite() {
            release_us + 50_000.0
        } else {
            press_us + 1e6
        };
        let load = edges(
            (0..)
                .map(|i| f64::from(i) * load_period_us)
                .take_while(|t| *t < end)
                .map(|t| (t + load_offset_us, level(t))),
        );
        let tick_us = 1000.0 * (1.0 + drift_ppm * 1e-6);
        let board = edges(
            (0..)
                .map(|k| (f64::from(k), boot_us + f64::from(k) * tick_us))
                .take_while(|(_, t)| *t < end)
                .map(|(k, t)| (k, level(t))),
        );
        (load, board)
    }

    #[test]
    fn offset_and_100_ppm_drift_are_recovered_within_the_bound() {
        let (load, board) = scene(200_000.0, 3_200_000.0, 1.234e9, 500.0, 100.0, 37_123.0);
        let a = align(&load, &board, 1000.0, 3.3e6, 20_000.0, 1.0).expect("aligns");
        assert_eq!(a.edges, 2);
        assert_eq!(a.method, "fit");
        assert!(a.error_bound_ms <= 1.0, "{a:?}");
        // Every board tick maps to the true load time within the bound.
        for k in [200.0, 1000.0, 2500.0, 3100.0] {
            let truth = 1.234e9 + 37_123.0 + k * 1000.0 * (1.0 + 100e-6);
            let err_ms = (a.load_us(k) - truth).abs() / 1000.0;
            assert!(err_ms <= a.error_bound_ms, "tick {k}: {err_ms} ms > {a:?}");
        }
    }

    #[test]
    fn one_edge_uses_the_nominal_rate_and_a_drift_bound() {
        let (load, board) = scene(200_000.0, f64::INFINITY, 5e6, 500.0, 0.0, 1_000.0);
        assert_eq!(load.len(), 1);
        let a = align(&load, &board, 1000.0, 1e6, 100.0, 1.0).expect("aligns");
        assert_eq!(a.method, "nominal");
        assert!(a.error_bound_ms > 0.75 && a.error_bound_ms < 0.86, "{a:?}");
        // With the default +-2 % drift allowance one edge cannot meet a 1 ms tolerance.
        let e = align(&load, &board, 1000.0, 1e6, 20_000.0, 1.0).unwrap_err();
        assert!(e.0.contains("exceeds"), "{e}");
    }

    #[test]
    fn mismatched_edges_and_implausible_drift_are_refused() {
        let (load, board) = scene(200_000.0, 3_200_000.0, 0.0, 500.0, 0.0, 0.0);
        let e = align(&load, &board[..1], 1000.0, 3e6, 20_000.0, 1.0).unwrap_err();
        assert!(
            e.0.contains("2 trigger edge(s) but the board reported 1"),
            "{e}"
        );
        let e = align(&load[..0], &board[..0], 1000.0, 3e6, 20_000.0, 1.0).unwrap_err();
        assert!(e.0.contains("no trigger edge"), "{e}");
        let mut flipped = board.clone();
        flipped[0].level = false;
        let e = align(&load, &flipped, 1000.0, 3e6, 20_000.0, 1.0).unwrap_err();
        assert!(e.0.contains("edge 0"), "{e}");
        // A board clock 5 % off is not a crystal's drift: refused.
        let (load, board) = scene(200_000.0, 3_200_000.0, 0.0, 500.0, 50_000.0, 0.0);
        let e = align(&load, &board, 1000.0, 3e6, 20_000.0, 1.0).unwrap_err();
        assert!(e.0.contains("ppm"), "{e}");
        // A coarse load (10 ms samples) cannot meet a 1 ms tolerance.
        let (load, board) = scene(200_000.0, 3_200_000.0, 0.0, 10_000.0, 0.0, 0.0);
        let e = align(&load, &board, 1000.0, 3e6, 20_000.0, 1.0).unwrap_err();
        assert!(e.0.contains("exceeds"), "{e}");
    }
}
