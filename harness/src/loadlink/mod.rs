//! The bench rig's serial link to the programmable load controller.
//!
//! The specification of the wire protocol is `harness/docs/load-protocol.md`; this module is
//! its host-side implementation and its virtual controller. It owns:
//! - [`protocol`]: the pure codec (line framing and CRCs, requests, replies, sample records);
//! - [`client`]: [`client::LoadClient`], the async host side with timeouts, retries, the
//!   resolution of lost replies to non-idempotent commands, and block readback;
//! - [`server`]: the controller's state machine ([`server::Controller`]) over any byte stream,
//!   driven by a [`server::Playback`] (the virtual controller behind `iohil loadsim`, and
//!   [`server::ScriptedPlayback`] for tests), plus pseudo-terminal plumbing.
//!
//! It does not own the bench trial (arming sequence, clock alignment, safe state on abort):
//! that is the bench rig's; nor the plant-backed playback.
#![deny(missing_docs)]

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{ClientOptions, LinkError, LinkStats, LoadClient, Readback};
pub use protocol::{
    Calibration, Identity, LoadSample, LoadState, ProfileKind, Status, Truth, PROTOCOL_VERSION,
};
pub use server::{
    serve, Controller, ControllerClock, InjectedFaults, Playback, PlaybackPoll, ScriptedPlayback,
    ServeEnd, ServeOptions,
};
