//! Plots of one trial: current, shaft speed, needle depth and load torque against time, over
//! the whole trial and zoomed on the breakthrough, with `t_bt`, detection, motor-off and stop
//! marked. Decimated (min/max per bucket, so a 1 ms current drop survives) and drawn as inline
//! SVG written here: no plotting library, no fonts, no scripts, the same bytes every time.

use serde::{Deserialize, Serialize};

use super::escape_xml as escape;
use crate::trace::{EventSource, Trace};
use crate::verdict::Measurements;

/// Points per series of the whole-trial view (two per bucket).
pub const FULL_POINTS: usize = 480;
/// Zoom window around `t_bt`: before, after, ms.
pub const ZOOM_BEFORE_MS: f64 = 60.0;
/// ... after.
pub const ZOOM_AFTER_MS: f64 = 140.0;

/// One series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend.
    pub name: String,
    /// Stroke colour.
    pub color: String,
    /// Whole trial, `[t_ms, value]`.
    pub full: Vec<[f64; 2]>,
    /// Zoom window, `[t_ms, value]`, full resolution.
    pub zoom: Vec<[f64; 2]>,
}

/// One panel: a quantity with its unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Panel {
    /// Quantity.
    pub title: String,
    /// Unit.
    pub unit: String,
    /// Series.
    pub series: Vec<Series>,
    /// Horizontal reference lines: (label, value).
    pub references: Vec<(String, f64)>,
}

/// A marked instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// Label.
    pub label: String,
    /// Time, ms.
    pub t_ms: f64,
    /// Colour.
    pub color: String,
}

/// The plots of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialPlot {
    /// Trial index.
    pub trial: u32,
    /// Whole-trial window, ms.
    pub full_window: [f64; 2],
    /// Zoom window, ms, when the trial has a breakthrough or a motor-off.
    pub zoom_window: Option<[f64; 2]>,
    /// Current, speed, depth, torque.
    pub panels: Vec<Panel>,
    /// Instants.
    pub markers: Vec<Marker>,
}

impl TrialPlot {
    /// The plots of `trace`; `None` when it has no samples.
    pub fn of(trace: &Trace, m: &Measurements) -> Option<TrialPlot> {
        let s = &trace.samples;
        // Columns of unequal length (a damaged trace) are cut to the shortest.
        let n = [
            s.t_s.len(),
            s.current_a.len(),
            s.measured_current_ma.len(),
            s.speed_rpm.len(),
            s.depth_mm.len(),
            s.load_torque_nmm.len(),
        ]
        .into_iter()
        .min()
        .unwrap_or(0);
        if n == 0 {
            return None;
        }
        let t: Vec<f64> = s.t_s[..n].iter().map(|t| t * 1000.0).collect();
        let full_window = [t[0], t[n - 1]];
        let centre = trace.truth.t_bt_s.map(|t| t * 1000.0).or(m.motor_off_ms);
        let zoom_window = centre.map(|c| [c - ZOOM_BEFORE_MS, c + ZOOM_AFTER_MS]);
        let series = |name: &str, color: &str, values: Vec<f64>| Series {
            name: name.to_owned(),
            color: color.to_owned(),
            full: decimate(&t, &values, full_window, FULL_POINTS),
            zoom: zoom_window.map_or_else(Vec::new, |w| decimate(&t, &values, w, usize::MAX)),
        };
        let panels = vec![
            Panel {
                title: "motor current".to_owned(),
                unit: "A".to_owned(),
                series: vec![
                    series("true", "#1f77b4", s.current_a[..n].to_vec()),
                    series(
                        "measured by firmware",
                        "#ff7f0e",
                        s.measured_current_ma[..n]
                            .iter()
                            .map(|ma| f64::from(*ma) / 1000.0)
                            .collect(),
                    ),
                ],
                references: Vec::new(),
            },
            Panel {
                title: "shaft speed".to_owned(),
                unit: "rpm".to_owned(),
                series: vec![series("output shaft", "#2ca02c", s.speed_rpm[..n].to_vec())],
                references: Vec::new(),
            },
            Panel {
                title: "needle depth".to_owned(),
                unit: "mm".to_owned(),
                series: vec![series("tip", "#9467bd", s.depth_mm[..n].to_vec())],
                references: vec![
                    ("inner surface".to_owned(), trace.truth.inner_surface_mm),
                    ("far cortex".to_owned(), trace.truth.far_cortex_mm),
                ],
            },
            Panel {
                title: "load torque".to_owned(),
                unit: "N*mm".to_owned(),
                series: vec![series(
                    "on output shaft",
                    "#8c564b",
                    s.load_torque_nmm[..n].to_vec(),
                )],
                references: Vec::new(),
            },
        ];
        let mut markers = Vec::new();
        let mut mark = |label: &str, t_ms: Option<f64>, color: &str| {
            if let Some(t_ms) = t_ms {
                markers.push(Marker {
                    label: label.to_owned(),
                    t_ms,
                    color: color.to_owned(),
                });
            }
        };
        mark("t_bt", trace.truth.t_bt_s.map(|t| t * 1000.0), "#d62728");
        mark(
            "detection",
            trace
                .first_event(EventSource::Firmware, "breakthrough")
                .map(|t| t * 1000.0),
            "#e377c2",
        );
        mark("motor-off", m.motor_off_ms, "#17becf");
        mark(
            "stopped",
            m.t_bt_ms.zip(m.time_to_stop_ms).map(|(a, b)| a + b),
            "#7f7f7f",
        );
        mark(
            "far cortex",
            trace.truth.far_contact_s.map(|t| t * 1000.0),
            "#000000",
        );
        Some(TrialPlot {
            trial: trace.trial,
            full_window,
            zoom_window,
            panels,
            markers,
        })
    }

    /// The plots as one inline SVG (panels in rows, whole trial left, zoom right).
    pub fn to_svg(&self) -> String {
        let columns: Vec<([f64; 2], bool)> = std::iter::once((self.full_window, false))
            .chain(self.zoom_window.map(|w| (w, true)))
            .collect();
        let panel_w = 440.0;
        let panel_h = 120.0;
        let margin_l = 64.0;
        let margin_t = 34.0;
        let gap_x = 90.0;
        let gap_y = 46.0;
        let width = margin_l + columns.len() as f64 * (panel_w + gap_x);
        let height = margin_t + self.panels.len() as f64 * (panel_h + gap_y) + 10.0;
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11">"#
        );
        // Legend of the markers.
        let mut x = margin_l;
        for m in &self.markers {
            svg.push_str(&format!(
                r#"<line x1="{x:.1}" y1="12" x2="{:.1}" y2="12" stroke="{}" stroke-width="2" stroke-dasharray="4 2"/><text x="{:.1}" y="16">{}</text>"#,
                x + 18.0,
                escape(&m.color),
                x + 22.0,
                escape(&format!("{} {:.1} ms", m.label, m.t_ms))
            ));
            x += 150.0;
        }
        for (row, panel) in self.panels.iter().enumerate() {
            let y0 = margin_t + row as f64 * (panel_h + gap_y);
            for (col, (window, zoom)) in columns.iter().enumerate() {
                let x0 = margin_l + col as f64 * (panel_w + gap_x);
                let points = |s: &Series| {
                    if *zoom {
                        s.zoom.clone()
                    } else {
                        s.full.clone()
                    }
                };
                let values: Vec<f64> = panel
                    .series
                    .iter()
                    .flat_map(|s| points(s).into_iter().map(|p| p[1]))
                    .chain(panel.references.iter().map(|r| r.1))
                    .filter(|v| v.is_finite())
                    .collect();
                let (lo, hi) = nice_range(&values);
                let sx =
                    |t: f64| x0 + (t - window[0]) / (window[1] - window[0]).max(1e-9) * panel_w;
                let sy = |v: f64| y0 + panel_h - (v - lo) / (hi - lo) * panel_h;
                svg.push_str(&format!(
                    r##"<rect x="{x0:.1}" y="{y0:.1}" width="{panel_w}" height="{panel_h}" fill="#fbfbfb" stroke="#999"/>"##
                ));
                if col == 0 {
                    let spans: Vec<String> = panel
                        .series
                        .iter()
                        .enumerate()
                        .map(|(i, s)| {
                            format!(
                                r#"<tspan dx="{}" fill="{}">{}</tspan>"#,
                                if i == 0 { 0 } else { 12 },
                                escape(&s.color),
                                escape(&s.name)
                            )
                        })
                        .collect();
                    svg.push_str(&format!(
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                        x0 + panel_w,
                        y0 - 6.0,
                        spans.concat()
                    ));
                }
                let title = format!(
                    "{} [{}]{}",
                    panel.title,
                    panel.unit,
                    if *zoom {
                        " - around breakthrough"
                    } else {
                        " - whole trial"
                    }
                );
                svg.push_str(&format!(
                    r#"<text x="{x0:.1}" y="{:.1}" font-weight="bold">{}</text>"#,
                    y0 - 6.0,
                    escape(&title)
                ));
                for tick in ticks(lo, hi) {
                    let y = sy(tick);
                    svg.push_str(&format!(
                        r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                        x0 + panel_w,
                        x0 - 4.0,
                        y + 4.0,
                        fmt_tick(tick)
                    ));
                }
                for tick in ticks(window[0], window[1]) {
                    let x = sx(tick);
                    svg.push_str(&format!(
                        r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eeeeee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                        y0 + panel_h,
                        y0 + panel_h + 13.0,
                        fmt_tick(tick)
                    ));
                }
                if row + 1 == self.panels.len() {
                    svg.push_str(&format!(
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time [ms]</text>"#,
                        x0 + panel_w / 2.0,
                        y0 + panel_h + 27.0
                    ));
                }
                for (label, value) in &panel.references {
                    if *value >= lo && *value <= hi {
                        let y = sy(*value);
                        svg.push_str(&format!(
                            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#555" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
                            x0 + panel_w,
                            x0 + 4.0,
                            y - 3.0,
                            escape(label)
                        ));
                    }
                }
                for m in &self.markers {
                    if m.t_ms >= window[0] && m.t_ms <= window[1] {
                        let x = sx(m.t_ms);
                        svg.push_str(&format!(
                            r#"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="{}" stroke-width="1.5" stroke-dasharray="4 2"/>"#,
                            y0 + panel_h,
                            escape(&m.color)
                        ));
                    }
                }
                for s in &panel.series {
                    let pts = points(s);
                    let path: Vec<String> = pts
                        .iter()
                        .filter(|p| p[1].is_finite())
                        .map(|p| format!("{:.1},{:.1}", sx(p[0]), sy(p[1])))
                        .collect();
                    if !path.is_empty() {
                        svg.push_str(&format!(
                            r#"<polyline fill="none" stroke="{}" stroke-width="1.2" points="{}"/>"#,
                            escape(&s.color),
                            path.join(" ")
                        ));
                    }
                }
            }
        }
        svg.push_str("</svg>");
        svg
    }
}

/// Points of `(t, v)` inside `window`; above `max_points`, the minimum and maximum of each of
/// `max_points / 2` equal time buckets, in time order.
pub fn decimate(t: &[f64], v: &[f64], window: [f64; 2], max_points: usize) -> Vec<[f64; 2]> {
    let inside: Vec<usize> = (0..t.len().min(v.len()))
        .filter(|&i| t[i] >= window[0] && t[i] <= window[1])
        .collect();
    // Rounded: 1 us and 1e-4 units are far below what a plot shows, and keep report.json small.
    let point = |i: usize| [round_to(t[i], 1e3), round_to(v[i], 1e4)];
    if inside.len() <= max_points {
        return inside.iter().map(|&i| point(i)).collect();
    }
    let buckets = (max_points / 2).max(1);
    let span = (window[1] - window[0]).max(1e-12);
    let mut out = Vec::with_capacity(buckets * 2);
    let mut current: Option<(usize, usize, usize)> = None; // bucket, argmin, argmax
    let flush = |out: &mut Vec<[f64; 2]>, (_, lo, hi): (usize, usize, usize)| {
        let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        out.push(point(a));
        if b != a {
            out.push(point(b));
        }
    };
    for &i in &inside {
        let bucket = (((t[i] - window[0]) / span * buckets as f64) as usize).min(buckets - 1);
        current = match current {
            Some((b, lo, hi)) if b == bucket => Some((
                b,
                if v[i] < v[lo] { i } else { lo },
                if v[i] > v[hi] { i } else { hi },
            )),
            Some(done) => {
                flush(&mut out, done);
                Some((bucket, i, i))
            }
            None => Some((bucket, i, i)),
        };
    }
    if let Some(done) = current {
        flush(&mut out, done);
    }
    out
}

fn round_to(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}

/// A range that contains `values` with round ends (a flat signal gets a unit-wide range).
fn nice_range(values: &[f64]) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let step = nice_step((hi - lo) / 4.0);
    ((lo / step).floor() * step, (hi / step).ceil() * step)
}

fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.abs().max(1e-12).log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return Vec::new();
    }
    let step = nice_step((hi - lo) / 5.0);
    let first = (lo / step).ceil() * step;
    (0..=12)
        .map(|k| first + k as f64 * step)
        .take_while(|t| *t <= hi + step * 1e-6)
        .collect()
}

fn fmt_tick(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// The falsification's convergence: per requirement, the smallest normalised margin found
/// against the simulations of its search, a step line, with the failure boundary (margin 0)
/// marked. Margins are clipped to [-1, 1] for display (the table gives the values).
pub fn margin_history_svg(series: &[(String, Vec<(u64, f64)>)]) -> String {
    const COLORS: [&str; 6] = [
        "#1f5fbf", "#c0392b", "#1e8449", "#8e44ad", "#d35400", "#555",
    ];
    let (panel_w, panel_h, margin_l, margin_t) = (640.0, 220.0, 64.0, 30.0);
    let width = margin_l + panel_w + 150.0;
    let height = margin_t + panel_h + 46.0;
    let max_x = series
        .iter()
        .flat_map(|(_, h)| h.iter().map(|p| p.0 as f64))
        .fold(1.0, f64::max);
    let clip = |v: f64| v.clamp(-1.0, 1.0);
    let values: Vec<f64> = series
        .iter()
        .flat_map(|(_, h)| h.iter().map(|p| clip(p.1)))
        .filter(|v| v.is_finite())
        .chain([0.0])
        .collect();
    let (lo, hi) = nice_range(&values);
    let sx = |x: f64| margin_l + x / max_x * panel_w;
    let sy = |v: f64| margin_t + panel_h - (v - lo) / (hi - lo) * panel_h;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {width:.0} {height:.0}" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="11"><text x="{margin_l}" y="16">smallest normalised margin found (below 0: requirement falsified)</text><rect x="{margin_l}" y="{margin_t}" width="{panel_w}" height="{panel_h}" fill="#fbfbfb" stroke="#999"/>"##
    );
    for t in ticks(lo, hi) {
        svg.push_str(&format!(
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e2e2e2"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            margin_l,
            margin_l + panel_w,
            margin_l - 4.0,
            sy(t) + 4.0,
            fmt_tick(t),
            y = sy(t)
        ));
    }
    for t in ticks(0.0, max_x) {
        svg.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            sx(t),
            margin_t + panel_h + 14.0,
            fmt_tick(t)
        ));
    }
    svg.push_str(&format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulations of the search</text>"#,
        margin_l + panel_w / 2.0,
        margin_t + panel_h + 32.0
    ));
    svg.push_str(&format!(
        r##"<line x1="{margin_l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#8b0000" stroke-width="1.5" stroke-dasharray="5 3"/>"##,
        margin_l + panel_w,
        y = sy(0.0)
    ));
    for (k, (name, history)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let mut path = String::new();
        let mut last: Option<f64> = None;
        for &(x, v) in history.iter().filter(|p| p.1.is_finite()) {
            let (px, py) = (sx(x as f64), sy(clip(v)));
            if let Some(previous) = last {
                path.push_str(&format!(" L{px:.1},{previous:.1} L{px:.1},{py:.1}"));
            } else {
                path.push_str(&format!("M{:.1},{py:.1} L{px:.1},{py:.1}", sx(0.0)));
            }
            last = Some(py);
        }
        if !path.is_empty() {
            svg.push_str(&format!(
                r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>"#
            ));
        }
        svg.push_str(&format!(
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            margin_l + panel_w + 12.0,
            margin_l + panel_w + 30.0,
            margin_l + panel_w + 34.0,
            margin_t + 14.0 + 16.0 * k as f64 + 4.0,
            escape(name),
            y = margin_t + 14.0 + 16.0 * k as f64
        ));
    }
    svg.push_str("</svg>");
    svg
}
