//! The `bench` rig: the real board behind a debug probe, its needle shaft on a programmable
//! load driven over a serial port.

pub mod probe;
pub mod target;
