//! The rig description: which probe, chip, firmware, load controller and calibration make up
//! one bench rig. One YAML file per rig (`harness/rigs/example-bench.yaml`), read with the same
//! diagnostics as scenario files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::probe::ProbeSelector;
use crate::scenario::load::{load_yaml_file, LoadError};

/// Version of the rig file format.
pub const RIG_FILE_VERSION: u32 = 1;

/// The `probe` value that selects the fake target (the control core in real time, coupled to a
/// virtual load controller's wires) instead of a debug probe.
pub const FAKE_PROBE: &str = "fake";

/// A rig file as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RigFile {
    /// Must be 1.
    pub format_version: u32,
    /// Rig identifier, in reports and in the lock that keeps one run per rig.
    pub rig_id: String,
    /// Debug probe, `VID:PID[:SERIAL]` in hex (see `iohil probes`), or `fake` for the virtual
    /// bench.
    pub probe: String,
    /// probe-rs chip name.
    #[serde(default = "default_chip")]
    pub chip: String,
    /// Firmware ELF, relative to the rig file's directory.
    pub firmware: PathBuf,
    /// Serial number of the driver board under test.
    pub dut_serial: String,
    /// The programmable load.
    pub load: LoadSpec,
    /// Clock alignment between the board's telemetry and the load's samples.
    #[serde(default)]
    pub clock: ClockSpec,
    /// A trial still playing this long past its scenario's duration is aborted (the load did
    /// not end its playback), s.
    #[serde(default = "default_trial_timeout_margin")]
    pub trial_timeout_margin_s: f64,
    /// The fake target (only with `probe: fake`).
    #[serde(default)]
    pub fake: Option<FakeSpec>,
}

fn default_trial_timeout_margin() -> f64 {
    5.0
}

fn default_chip() -> String {
    crate::firmware::DEFAULT_CHIP.to_owned()
}

/// The load controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// Serial port (`/dev/serial/by-id/...`, or the pty `iohil loadsim` printed).
    pub port: String,
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Rate the load records its samples at, Hz.
    #[serde(default = "default_sample_rate")]
    pub sample_rate_hz: u32,
    /// Calibration certificate the load must report.
    pub calibration_id: String,
    /// Calibration due date, `YYYY-MM-DD`.
    pub calibration_due: String,
}

fn default_baud() -> u32 {
    921_600
}

fn default_sample_rate() -> u32 {
    2000
}

/// Clock alignment limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClockSpec {
    /// Largest alignment error bound a trial may have, ms; above it the trial is INCONCLUSIVE.
    #[serde(default = "default_tolerance")]
    pub tolerance_ms: f64,
    /// Largest plausible rate difference between the two clocks, ppm (the board runs from its
    /// internal RC oscillator, +-1 %); a fit outside it is INCONCLUSIVE.
    #[serde(default = "default_max_drift")]
    pub max_drift_ppm: f64,
}

impl Default for ClockSpec {
    fn default() -> Self {
        ClockSpec {
            tolerance_ms: default_tolerance(),
            max_drift_ppm: default_max_drift(),
        }
    }
}

fn default_tolerance() -> f64 {
    1.0
}

fn default_max_drift() -> f64 {
    20_000.0
}

/// The fake target's wiring to the virtual load controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FakeSpec {
    /// The wires socket `iohil loadsim` printed.
    pub wires: PathBuf,
    /// Rate error of the fake board's clock, ppm (tests inject drift with it).
    #[serde(default)]
    pub clock_drift_ppm: f64,
    /// Faults the fake target injects (fault-injection tests).
    #[serde(default)]
    pub inject: super::fake::FakeFaults,
    /// Run the core with its breakthrough detector disabled (the `--broken-detector` test
    /// build's tuning): the verdicts must then fail, and the report marks the firmware as not
    /// the shipped configuration.
    #[serde(default)]
    pub disable_detector: bool,
}

/// A checked rig description.
#[derive(Debug, Clone, PartialEq)]
pub struct RigDescription {
    /// As written.
    pub file: RigFile,
    /// Where it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The probe selector (`None` with `probe: fake`).
    pub probe: Option<ProbeSelector>,
    /// The firmware path, resolved against the rig file's directory.
    pub firmware: PathBuf,
}

impl RigDescription {
    /// Whether this rig uses the fake target.
    pub fn is_fake(&self) -> bool {
        self.probe.is_none()
    }
}

/// Whether `text` is a `YYYY-MM-DD` date with a plausible month and day.
pub fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !digits(0..4)
        || !digits(5..7)
        || !digits(8..10)
    {
        return false;
    }
    let month: u32 = text[5..7].parse().unwrap_or(0);
    let day: u32 = text[8..10].parse().unwrap_or(0);
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Today's UTC date, `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.get(..10).unwrap_or("").to_owned()
}

/// Whether a calibration due on `due` has expired on `today` (both `YYYY-MM-DD`; due on the day
/// itself still counts as valid).
pub fn calibration_expired(due: &str, today: &str) -> bool {
    due < today
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// Reads and checks a rig file.
pub fn load_rig_file(path: &Path) -> Result<RigDescription, LoadError> {
    let file: RigFile = load_yaml_file(path, "rig file", |f: &RigFile, problem| {
        if f.format_version != RIG_FILE_VERSION {
            problem(
                "format_version",
                format!("unsupported rig file format_version {}", f.format_version),
                Some(format!(
                    "this iohil reads format_version {RIG_FILE_VERSION}"
                )),
            );
        }
        for (key, value) in [
            ("rig_id", &f.rig_id),
            ("dut_serial", &f.dut_serial),
            ("load.calibration_id", &f.load.calibration_id),
        ] {
            if !is_token(value) {
                problem(
                    key,
                    format!("{key} {value:?} is not a plain identifier"),
                    Some("use 1 to 64 characters of A-Z a-z 0-9 - _ .".into()),
                );
            }
        }
        if f.probe != FAKE_PROBE {
            if let Err(e) = f.probe.parse::<ProbeSelector>() {
                problem(
                    "probe",
                    format!("probe {:?}: {e}", f.probe),
                    Some("`iohil probes` lists the attached probes with their selectors".into()),
                );
            }
        }
        if f.probe == FAKE_PROBE && f.fake.is_none() {
            problem(
                "probe",
                "probe: fake needs a `fake:` section with the wires socket".into(),
                Some("`iohil loadsim` prints the socket path and a complete rig file".into()),
            );
        }
        if f.probe != FAKE_PROBE && f.fake.is_some() {
            problem(
                "fake",
                "a `fake:` section is only read with probe: fake".into(),
                Some("remove it, or set probe: fake".into()),
            );
        }
        if !f.load.port.starts_with('/')
            || f.load.port.len() > 4096
            || f.load.port.chars().any(char::is_control)
        {
            problem(
                "load.port",
                format!("load.port {:?} is not an absolute device path", f.load.port),
                Some("e.g. /dev/serial/by-id/usb-..., /dev/ttyACM0, or the pty `iohil loadsim` printed".into()),
            );
        }
        if !(1200..=12_000_000).contains(&f.load.baud) {
            problem(
                "load.baud",
                format!("baud {} is out of range", f.load.baud),
                Some("1200 to 12000000".into()),
            );
        }
        if !(100..=10_000).contains(&f.load.sample_rate_hz) {
            problem(
                "load.sample_rate_hz",
                format!("sample rate {} Hz is out of range", f.load.sample_rate_hz),
                Some("100 to 10000 Hz (the load's closed loop runs at 1-10 kHz)".into()),
            );
        }
        if !is_date(&f.load.calibration_due) {
            problem(
                "load.calibration_due",
                format!("{:?} is not a date", f.load.calibration_due),
                Some("write it as YYYY-MM-DD".into()),
            );
        }
        if !(f.clock.tolerance_ms > 0.0 && f.clock.tolerance_ms <= 10.0) {
            problem(
                "clock.tolerance_ms",
                format!("tolerance {} ms is out of range", f.clock.tolerance_ms),
                Some("(0, 10] ms: SR-01's latency is a few ms".into()),
            );
        }
        if !(f.clock.max_drift_ppm >= 0.0 && f.clock.max_drift_ppm <= 100_000.0) {
            problem(
                "clock.max_drift_ppm",
                format!("{} ppm is out of range", f.clock.max_drift_ppm),
                Some("0 to 100000 ppm".into()),
            );
        }
        if !(f.trial_timeout_margin_s > 0.0 && f.trial_timeout_margin_s <= 600.0) {
            problem(
                "trial_timeout_margin_s",
                format!("{} s is out of range", f.trial_timeout_margin_s),
                Some("(0, 600] s".into()),
            );
        }
        if let Some(fake) = &f.fake {
            if fake.clock_drift_ppm.is_nan() || fake.clock_drift_ppm.abs() > 50_000.0 {
                problem(
                    "fake.clock_drift_ppm",
                    format!("{} ppm is out of range", fake.clock_drift_ppm),
                    Some("-50000 to 50000 ppm".into()),
                );
            }
        }
    })?;
    let bytes = std::fs::read(path).unwrap_or_default();
    let base = path.parent().unwrap_or(Path::new("."));
    let firmware = base.join(&file.firmware);
    let probe = file.probe.parse::<ProbeSelector>().ok();
    Ok(RigDescription {
        sha256: crate::sha256_hex(&bytes),
        path: path.to_path_buf(),
        firmware,
        probe: if file.probe == FAKE_PROBE {
            None
        } else {
            probe
        },
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(is_date("2027-08-15"));
        for bad in [
            "2027-8-15",
            "2027-13-01",
            "2027-00-10",
            "20270815xx",
            "2027-08-32",
            "",
            "2027-08-1é",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
        assert!(calibration_expired("2026-11-23", "2026-11-24"));
        assert!(!calibration_expired("2026-11-24", "2026-11-24"));
        assert!(!calibration_expired("2027-01-01", "2026-12-31"));
        assert_eq!(today_utc().len(), 10);
        assert!(is_date(&today_utc()));
    }
}
