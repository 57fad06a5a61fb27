//! iohil: hardware-in-the-loop verification harness for powered intraosseous needle driver
//! firmware.
//!
//! The engine is this library; the `iohil` binary parses arguments and calls it. Data flow of
//! one trial: [`scenario`] (YAML, validated) -> [`rig`] (runs firmware against a [`plant`]) ->
//! [`trace`] -> [`verdict`] (measurements and per-requirement verdicts) -> [`run`] (evidence on
//! disk, console tables).

pub mod plant;
pub mod rig;
pub mod run;
pub mod scenario;
pub mod trace;
pub mod verdict;
