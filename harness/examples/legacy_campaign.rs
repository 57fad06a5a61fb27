//! Development tool: runs a fuzz campaign against a controller tuning other than the shipped
//! one (default: [`driver_core::Config::LEGACY`], the detector of driver-core 0.1) and writes
//! every shrunk failure as a scenario file, so that what an older firmware failed is kept as a
//! regression scenario for the current one.
//!
//!     cargo run --release -p iohil --example legacy_campaign -- SEED CASES OUT_DIR

use std::path::{Path, PathBuf};

use driver_core::Config;
use iohil::fuzz::{promote, run_campaign, Campaign};
use iohil::rig::SimRig;
use iohil::scenario::load::{load_profiles, load_requirements};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, seed, cases, out] = args.as_slice() else {
        eprintln!("usage: legacy_campaign SEED CASES OUT_DIR");
        std::process::exit(2);
    };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let requirements = load_requirements(&suite.join("requirements.yaml")).expect("requirements");
    let profiles = load_profiles(&suite.join("profiles.yaml")).expect("profiles");
    let campaign = Campaign {
        requirements: &requirements,
        profiles: &profiles,
        rig: SimRig::with_config(Config::LEGACY),
        seed: seed.parse().expect("seed"),
        cases: cases.parse().expect("cases"),
        shard: (1, 1),
        jobs: 2,
        time_budget: None,
    };
    let mut results = run_campaign(&campaign, |_| {}).expect("campaign");
    let dir = PathBuf::from(out);
    std::fs::create_dir_all(&dir).expect("out dir");
    promote(&mut results, &dir).expect("promote");
    print!("{}", results.text());
}
