//! The `bench` rig: the real board behind a debug probe, its needle shaft on a programmable
//! load driven over a serial port.

pub mod align;
pub mod fake;
pub mod probe;
pub mod rigfile;
pub mod target;
pub mod wires;
pub mod world;
