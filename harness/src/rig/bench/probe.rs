//! The real [`super::target::Target`]: a debug probe, through probe-rs.
