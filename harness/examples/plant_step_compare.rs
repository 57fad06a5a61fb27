//! Development tool: runs scenarios on the sim rig three ways (the exact tick step, the fine
//! 50 us step alone, and a 5 us fine reference) and prints, per trial, the quantities the
//! verdicts rest on and how far each stepping lands from the reference.
//!
//!     cargo run --release -p iohil --example plant_step_compare -- PATH...
//!
//! PATH is a scenario directory or file inside a suite (requirements.yaml beside it).

use std::path::PathBuf;

use iohil::rig::{Rig, SimRig};
use iohil::scenario::load::load_suite;
use iohil::verdict::{evaluate_trial, measure, Measurements};

fn main() {
    let paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let suite = load_suite(&paths).expect("suite");
    let exact = SimRig::default();
    let mut fine = SimRig::default();
    fine.exact_ticks = false;
    let mut reference = SimRig::default();
    reference.exact_ticks = false;
    reference.step_s = 5e-6;
    let key = |m: &Measurements| {
        [
            m.t_bt_ms,
            m.detection_latency_ms,
            m.time_to_stop_ms,
            m.overshoot_mm,
        ]
    };
    let mut worst = [[0.0f64; 4]; 2];
    for scenario in &suite.scenarios {
        for trial in 0..scenario.trials {
            let mut rows = Vec::new();
            for mut rig in [exact.clone(), fine.clone(), reference.clone()] {
                let trace = rig.run_trial(scenario, trial).expect("trial");
                let m = measure(&trace, 0.05);
                let verdicts = evaluate_trial(&trace, &m, scenario, &suite.requirements);
                let v: Vec<String> = verdicts
                    .iter()
                    .map(|v| format!("{}={:?}", v.requirement, v.verdict))
                    .collect();
                rows.push((key(&m), v.join(" ")));
            }
            let fmt = |k: &[Option<f64>; 4]| {
                k.iter()
                    .map(|v| v.map_or("-".to_owned(), |v| format!("{v:.4}")))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!("{} trial {trial}", scenario.id);
            for (name, (k, v)) in ["exact", "fine", "ref"].iter().zip(&rows) {
                println!(
                    "  {name:5} t_bt/latency/stop ms, overshoot mm: {}  {v}",
                    fmt(k)
                );
            }
            for (w, row) in worst.iter_mut().zip(&rows[..2]) {
                for (i, slot) in w.iter_mut().enumerate() {
                    if let (Some(a), Some(b)) = (row.0[i], rows[2].0[i]) {
                        *slot = slot.max((a - b).abs());
                    }
                }
            }
            if rows[0].1 != rows[1].1 {
                println!("  VERDICTS DIFFER between exact and fine");
            }
        }
    }
    println!("largest |exact - ref|: {:?}", worst[0]);
    println!("largest |fine - ref|:  {:?}", worst[1]);
}
