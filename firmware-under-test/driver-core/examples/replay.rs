//! Development tool: replays recorded tick inputs (from the harness's `detector_signals`
//! example) through the controller and summarises when it stopped against the true
//! breakthrough instant: premature stops, latencies, misses.
//!
//!     cargo run --release -p driver-core --example replay -- SIGNALS [--list N] [--legacy]
//!         [--windowed-only] [--trace CASE] [tuning options, see `main`]

#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    reason = "a host-only development tool: bad input may stop it with a message"
)]

use driver_core::{event, Config, Controller, Detector, Inputs};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: replay SIGNALS [--list N]");
    let list: usize = args
        .iter()
        .position(|a| a == "--list")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let text = std::fs::read_to_string(path).expect("signals");
    let d = Config::DEFAULT;
    let config = Config {
        detector: if args.iter().any(|a| a == "--legacy") {
            Detector::CurrentDrop
        } else {
            Detector::LoadEstimate
        },
        lead_span_ticks: arg(&args, "--span", d.lead_span_ticks),
        ref_newest_ms: arg(&args, "--newest", d.ref_newest_ms),
        ref_oldest_ms: arg(&args, "--oldest", d.ref_oldest_ms),
        drop_percent: arg(&args, "--pct", d.drop_percent),
        min_drop_ma: arg(&args, "--min-drop", d.min_drop_ma),
        confirm_ticks: arg(&args, "--confirm", d.confirm_ticks),
        engage_ma: arg(&args, "--engage", d.engage_ma),
        trend_percent: arg(&args, "--trend", d.trend_percent),
        load_filter_shift: arg(&args, "--shift", d.load_filter_shift),
        reference_mean: !args.iter().any(|a| a == "--max")
            && (d.reference_mean || args.iter().any(|a| a == "--mean")),
        noise_factor_q4: arg(&args, "--noise", d.noise_factor_q4),
        step_test: !args.iter().any(|a| a == "--windowed-only"),
        ..d
    };
    println!("{config:?}");
    let mut latencies = Vec::new();
    let mut premature = Vec::new();
    let mut missed = Vec::new();
    let mut cases = 0u32;
    let mut varied_cases = 0u32;
    for line in text.lines() {
        let mut fields = line.split(' ');
        let index: u64 = fields.next().unwrap().parse().unwrap();
        let t_bt: f64 = fields.next().unwrap().parse().unwrap();
        let varied = fields.next().unwrap() == "1";
        let profile: u32 = fields.next().unwrap().parse().unwrap();
        cases += 1;
        varied_cases += u32::from(varied);
        let mut controller = Controller::new(config);
        let mut outcome = None;
        let trace = arg(&args, "--trace", u64::MAX) == index;
        for (j, pair) in fields.enumerate() {
            let (current, battery) = pair.split_once(':').unwrap();
            let outputs = controller.step(&Inputs {
                tick: j as u32,
                motor_current_ma: current.parse().unwrap(),
                battery_mv: battery.parse().unwrap(),
                trigger_pressed: true,
            });
            if trace && ((j as f64 - t_bt).abs() < 30.0 || j % 20 == 0) {
                println!(
                    "t{:+6.1} i {current:>5} v {battery:>5} fast {:>5} load {:>5} base {:>4} state {:?}",
                    j as f64 - t_bt,
                    outputs.filtered_current_ma,
                    controller.load_estimate_ma(),
                    outputs.baseline_ma,
                    outputs.state
                );
            }
            if outputs.events & event::MOTOR_OFF != 0 {
                outcome = Some((j as f64 - t_bt, outputs.stop_reason));
                break;
            }
        }
        match outcome {
            Some((latency, reason)) if latency < 0.0 => {
                premature.push((index, latency, reason, varied, profile))
            }
            Some((latency, reason)) => latencies.push((latency, index, reason, profile)),
            None => missed.push((index, profile)),
        }
    }
    latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = latencies.len();
    let pct = |p: f64| {
        latencies
            .get(((n as f64 * p) as usize).min(n.saturating_sub(1)))
            .map(|l| l.0)
    };
    let over = |limit: f64| latencies.iter().filter(|l| l.0 > limit).count();
    println!(
        "cases {cases} (varied {varied_cases}); detected {n}; premature {} (nominal {}); missed {}",
        premature.len(),
        premature.iter().filter(|p| !p.3).count(),
        missed.len()
    );
    println!(
        "latency ms: p50 {:?} p99 {:?} max {:?}; >15 ms {}; >20 ms {}",
        pct(0.5),
        pct(0.99),
        latencies.last().map(|l| l.0),
        over(15.0),
        over(20.0)
    );
    for l in latencies.iter().rev().take(list) {
        println!(
            "  slow: case {} latency {:.1} ms {:?} profile {}",
            l.1, l.0, l.2, l.3
        );
    }
    for p in premature.iter().take(list) {
        println!(
            "  premature: case {} {:.1} ms before t_bt {:?} varied {} profile {}",
            p.0, -p.1, p.2, p.3, p.4
        );
    }
    for m in missed.iter().take(list) {
        println!("  missed: case {} profile {}", m.0, m.1);
    }
}
