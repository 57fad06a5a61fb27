//! Development tool: records the firmware's tick inputs (measured current, battery voltage,
//! trigger) for fuzz cases with detection and the missed-pop fallback disabled, so that a
//! detector change can be replayed against thousands of bones without the plant in the loop.
//! Until the detector stops the motor the drive is open loop (full duty), so the inputs up to
//! the stop do not depend on the detector.
//!
//!     cargo run --release -p iohil --example detector_signals -- SEED FROM TO OUT
//!
//! OUT has one line per case: `index t_bt_tick push_varied profile` then `current:battery`
//! pairs per tick (from the press to t_bt + 300 ms), trigger held throughout.

use std::io::Write as _;
use std::path::Path;

use driver_core::Config;
use iohil::fuzz::{case_at, case_seed, scenario_yaml};
use iohil::rig::{Rig, SimRig};
use iohil::scenario::load::{load_profiles, load_requirements, load_scenario_str};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("describe") {
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
        let seed: u64 = args[2].parse().expect("seed");
        for index in &args[3..] {
            let index: u64 = index.parse().expect("index");
            let case = case_at(seed, index).expect("case");
            println!("{index}: {}", iohil::fuzz::describe(&case, &profiles));
        }
        return;
    }
    if args.get(1).map(String::as_str) == Some("yaml") {
        // yaml SEED INDEX: the case as drawn (unshrunk), as a scenario file on stdout.
        let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
        let seed: u64 = args[2].parse().expect("seed");
        let index: u64 = args[3].parse().expect("index");
        let case = case_at(seed, index).expect("case");
        let id = format!("fuzz-s{seed}-c{index}");
        let title = iohil::fuzz::describe(&case, &profiles);
        let description =
            format!("Case {index} of the campaign with seed {seed}, as drawn (not shrunk).");
        print!(
            "{}",
            scenario_yaml(
                &case,
                &profiles,
                &id,
                &title,
                &description,
                case_seed(seed, index)
            )
            .expect("yaml")
        );
        return;
    }
    let [_, seed, from, to, out] = args.as_slice() else {
        eprintln!("usage: detector_signals SEED FROM TO OUT");
        std::process::exit(2);
    };
    let seed: u64 = seed.parse().expect("seed");
    let (from, to): (u64, u64) = (from.parse().expect("from"), to.parse().expect("to"));
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let requirements = load_requirements(&suite.join("requirements.yaml")).expect("requirements");
    let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
    let mut rig = SimRig::with_config(Config {
        detection_enabled: false,
        missed_pop_ms: 0,
        ..Config::DEFAULT
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).expect("out"));
    for index in from..to {
        let case = case_at(seed, index).expect("case");
        let id = format!("sig-{index}");
        let yaml = scenario_yaml(
            &case,
            &profiles,
            &id,
            &id,
            "signals",
            case_seed(seed, index),
        )
        .expect("yaml");
        let scenario = load_scenario_str(Path::new("case.yaml"), &yaml, &requirements, &profiles)
            .expect("scenario");
        let trace = rig.run_trial(&scenario, 0).expect("trial");
        let Some(t_bt) = trace.truth.t_bt_s else {
            continue;
        };
        let s = &trace.samples;
        let press = s.trigger.iter().position(|&t| t).unwrap_or(0);
        let end = ((t_bt + 0.3) * 1000.0).round() as usize;
        let varied = case.oscillation.is_some() || case.step.is_some();
        write!(
            file,
            "{index} {:.4} {} {}",
            (t_bt - s.t_s[press]) * 1000.0,
            u8::from(varied),
            case.profile,
        )
        .unwrap();
        for k in press..end.min(s.len()) {
            write!(
                file,
                " {}:{}",
                s.measured_current_ma[k], s.measured_battery_mv[k]
            )
            .unwrap();
        }
        writeln!(file).unwrap();
    }
}
