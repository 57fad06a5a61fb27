//! The virtual load controller's [`Playback`]: the plant-backed [`World`] behind the protocol
//! server, so `iohil loadsim` answers like the real controller.

use std::collections::BTreeMap;

use super::world::{ProfileTables, World};
use crate::loadlink::protocol::{Calibration, Identity, ProfileKind, Truth};
use crate::loadlink::server::{Playback, PlaybackPoll};

/// The virtual controller's model name in `HELLO`.
pub const MODEL: &str = "iohil-loadsim";

/// Most samples per second the virtual controller records.
pub const MAX_RATE_HZ: u32 = 10_000;

/// A virtual load controller.
pub struct VirtualLoad {
    world: World,
    calibration: Calibration,
    serial: String,
    on_event: Box<dyn Fn(&str) + Send>,
}

impl std::fmt::Debug for VirtualLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualLoad")
            .field("world", &self.world)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl VirtualLoad {
    /// A controller over `world`, reporting `calibration`.
    pub fn new(world: World, calibration: Calibration, serial: &str) -> VirtualLoad {
        VirtualLoad {
            world,
            calibration,
            serial: serial.to_owned(),
            on_event: Box::new(|_| {}),
        }
    }

    /// Calls `f` with each playback event (armed, started, ended, emergency stop): the
    /// controller's console log.
    pub fn on_event(mut self, f: impl Fn(&str) + Send + 'static) -> VirtualLoad {
        self.on_event = Box::new(f);
        self
    }

    /// The world (board connection, lag).
    pub fn world(&self) -> &World {
        &self.world
    }
}

impl Playback for VirtualLoad {
    fn identity(&self) -> Identity {
        Identity {
            protocol: crate::loadlink::protocol::PROTOCOL_VERSION,
            model: MODEL.to_owned(),
            serial: self.serial.clone(),
            firmware: env!("CARGO_PKG_VERSION").to_owned(),
            max_rate_hz: MAX_RATE_HZ,
        }
    }

    fn calibration(&self) -> Calibration {
        self.calibration.clone()
    }

    fn supports(&self, _kind: ProfileKind) -> bool {
        true
    }

    fn arm(
        &mut self,
        tables: &BTreeMap<ProfileKind, Vec<u8>>,
        rate_hz: u32,
        duration_ms: u32,
    ) -> Result<(), String> {
        let get = |k: ProfileKind| {
            tables
                .get(&k)
                .cloned()
                .ok_or_else(|| format!("table {} was not uploaded", k.as_str()))
        };
        let tables = ProfileTables {
            bone: get(ProfileKind::Bone)?,
            push: get(ProfileKind::Push)?,
            plant: get(ProfileKind::Plant)?,
        };
        let armed = self.world.arm(&tables, rate_hz, duration_ms);
        match &armed {
            Ok(()) => (self.on_event)(&format!("armed: {rate_hz} Hz, {duration_ms} ms")),
            Err(e) => (self.on_event)(&format!("profile refused: {e}")),
        }
        armed
    }

    fn start(&mut self, now_us: u64) -> Result<(), String> {
        (self.on_event)(&format!("start at {now_us} us"));
        self.world.start(now_us)
    }

    fn poll(&mut self, _now_us: u64) -> PlaybackPoll {
        let (samples, running, fault, speed_rpm) = self.world.poll();
        PlaybackPoll {
            samples,
            running,
            fault,
            speed_rpm,
        }
    }

    fn stop(&mut self) {
        (self.on_event)("end: trigger released");
        self.world.stop();
    }

    fn estop(&mut self) {
        (self.on_event)("EMERGENCY STOP: push removed, trigger released");
        self.world.estop();
    }

    fn truth(&self) -> Truth {
        let w = self.world.truth();
        let at = |t: Option<f64>| t.map(|t| w.t0_us + (t * 1e6).round() as u64);
        Truth {
            cortex_contact_us: at(w.truth.cortex_contact_s),
            cap_fracture_us: at(w.truth.t_bt_s),
            far_contact_us: at(w.truth.far_contact_s),
            far_contact_rotating: w.truth.far_contact_rotating,
            inner_surface_mm: w.truth.inner_surface_mm,
            far_cortex_mm: w.truth.far_cortex_mm,
        }
    }
}
