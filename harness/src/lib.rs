//! iohil: hardware-in-the-loop verification harness for powered intraosseous needle driver
//! firmware.
//!
//! The engine is this library; the `iohil` binary parses arguments and calls it. Data flow of
//! one trial: [`scenario`] (YAML, validated) -> [`rig`] (runs firmware against a [`plant`]) ->
//! [`trace`] -> [`verdict`] (measurements and per-requirement verdicts) -> [`run`] (evidence on
//! disk, console tables).

pub mod baseline;
pub mod bench;
pub mod confidence;
pub mod consistency;
pub mod falsify;
pub mod firmware;
pub mod fuzz;
pub mod loadlink;
pub mod plant;
pub mod report;
pub mod rig;
pub mod run;
pub mod safety;
pub mod scenario;
pub mod snapshot;
pub mod telemetry;
pub mod trace;
pub mod validate;
pub mod verdict;

use sha2::{Digest, Sha256};

/// SHA-256 of bytes, lowercase hex: the hash every evidence file and input is named by.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
