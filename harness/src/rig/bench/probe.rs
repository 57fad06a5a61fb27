//! The real [`super::target::Target`]: a debug probe, through probe-rs.
//!
//! This module owns the probe: finding it ([`list_probes`], [`ProbeSelector`]), attaching to the
//! chip, flashing, reading RTT and the fault record, and the reset that is the motor's safe
//! state. It does not decide anything about a trial: the bench rig above the [`Target`] trait
//! does, and is tested with a fake target. What can be checked without hardware (selector
//! parsing, choosing a probe, close chip names, reading symbols and loadable segments from the
//! ELF, mapping flash progress) is in plain functions with unit tests; the methods that talk to
//! probe-rs are kept thin.
//!
//! Flashing does not use probe-rs's built-in image formats (that feature pulls in Intel HEX and
//! UF2 readers the harness never needs): the ELF's loadable segments are handed to the probe-rs
//! flash loader at their load addresses, exactly as `iohil flash --dry-run` checks them.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use driver_core::telemetry::{decode_fault_record, FaultRecord, FAULT_RECORD_LEN};
use object::read::elf::{ElfFile32, ProgramHeader as _};
use object::{Object, ObjectSymbol};
use probe_rs::config::{Registry, TargetSelector};
use probe_rs::flashing::{DownloadOptions, ProgressEvent, ProgressOperation};
use probe_rs::probe::list::{Accessibility, Lister};
use probe_rs::probe::DebugProbeInfo;
use probe_rs::rtt::{Rtt, ScanRegion};
use probe_rs::{CoreStatus, MemoryInterface, Permissions, Session};

use super::target::{CoreState, FlashProgress, Target, TargetError, TargetPoll};
use crate::firmware::{FAULT_RECORD_SYMBOL, RTT_SYMBOL};

/// The probe-rs version this module is written against (pinned `=0.32.0` in the workspace).
pub const PROBE_RS_VERSION: &str = "0.32.0";

/// The probe-rs version this module is written against, for reports.
pub fn probe_rs_version() -> &'static str {
    PROBE_RS_VERSION
}

/// A selector in the form error messages show as an example.
const SELECTOR_EXAMPLE: &str = "0483:374e:002C00283137510A";

/// What to check when no probe is found.
const NO_PROBE_HINT: &str = "check the probe's USB cable and that the probe is powered; on Linux, \
     check that udev rules give this user access to it (see the README's bench section)";

/// How long a reset-and-halt may take before the probe reports a timeout.
const RESET_HALT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the firmware has, after reset, to set its RTT control block up.
const RTT_ATTACH_WINDOW: Duration = Duration::from_millis(500);

/// Pause between RTT attach attempts.
const RTT_ATTACH_RETRY: Duration = Duration::from_millis(10);

/// RTT up channel numbers and the names the board firmware gives them.
const TELEMETRY_CHANNEL: (usize, &str) = (0, "telemetry");
const LOG_CHANNEL: (usize, &str) = (1, "log");

/// Read chunks of one RTT poll, and how many at most: a poll drains what is there without
/// waiting, and cannot spin forever on a channel the firmware fills as fast as it is read.
const RTT_CHUNK_BYTES: usize = 4096;
const RTT_MAX_CHUNKS_PER_POLL: usize = 16;

/// `VID:PID[:SERIAL]` in hex, as in the rig file and `--probe`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeSelector {
    /// USB vendor ID.
    pub vendor_id: u16,
    /// USB product ID.
    pub product_id: u16,
    /// USB serial number; `None` matches any.
    pub serial: Option<String>,
}

/// A probe selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid probe selector {input:?}: {problem}; expected VID:PID[:SERIAL] in hex, \
     e.g. \"{SELECTOR_EXAMPLE}\""
)]
pub struct ProbeSelectorError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub problem: String,
}

impl FromStr for ProbeSelector {
    type Err = ProbeSelectorError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| ProbeSelectorError {
            input: input.to_owned(),
            problem,
        };
        let parts: Vec<&str> = input.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(error(format!(
                "found {} colon-separated part(s), expected 2 or 3",
                parts.len()
            )));
        }
        let id = |text: &str, what: &str| {
            if text.len() == 4 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                u16::from_str_radix(text, 16).map_err(|e| error(format!("{what}: {e}")))
            } else {
                Err(error(format!(
                    "the {what} must be exactly 4 hex digits, found {text:?}"
                )))
            }
        };
        let vendor_id = id(parts[0], "vendor ID")?;
        let product_id = id(parts[1], "product ID")?;
        let serial = match parts.get(2) {
            None => None,
            Some(serial) => {
                let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
                if serial.is_empty() || serial.len() > 64 || !serial.chars().all(allowed) {
                    return Err(error(format!(
                        "the serial must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-', \
                         found {serial:?}"
                    )));
                }
                Some((*serial).to_owned())
            }
        };
        Ok(ProbeSelector {
            vendor_id,
            product_id,
            serial,
        })
    }
}

impl fmt::Display for ProbeSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vendor_id, self.product_id)?;
        if let Some(serial) = &self.serial {
            write!(f, ":{serial}")?;
        }
        Ok(())
    }
}

impl ProbeSelector {
    /// Whether `probe` is one this selector names. Serials compare without regard to ASCII
    /// case (they are hex on the probes in use, and users type them either way).
    pub fn matches(&self, probe: &ProbeListing) -> bool {
        self.vendor_id == probe.vendor_id
            && self.product_id == probe.product_id
            && match (&self.serial, &probe.serial) {
                (None, _) => true,
                (Some(wanted), Some(found)) => wanted.eq_ignore_ascii_case(found),
                (Some(_), None) => false,
            }
    }
}

/// One attached probe, for `iohil probes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeListing {
    /// The probe's name (e.g. `STLINK-V3`).
    pub identifier: String,
    /// USB vendor ID.
    pub vendor_id: u16,
    /// USB product ID.
    pub product_id: u16,
    /// USB serial number, when the probe has one.
    pub serial: Option<String>,
    /// The probe-rs driver that handles it (e.g. `ST-LINK`).
    pub kind: String,
}

impl ProbeListing {
    /// The selector that names exactly this probe (with its serial, when it has one).
    pub fn selector(&self) -> ProbeSelector {
        ProbeSelector {
            vendor_id: self.vendor_id,
            product_id: self.product_id,
            serial: self.serial.clone(),
        }
    }

    fn from_info(info: &DebugProbeInfo) -> Self {
        ProbeListing {
            identifier: info.identifier.clone(),
            vendor_id: info.vendor_id,
            product_id: info.product_id,
            serial: info.serial_number.clone(),
            kind: info.probe_type(),
        }
    }
}

impl fmt::Display for ProbeListing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({})",
            self.identifier,
            self.selector(),
            self.kind
        )
    }
}

/// Every probe probe-rs can see now. Empty when none is attached (or USB cannot be read).
pub fn list_probes() -> Vec<ProbeListing> {
    Lister::new()
        .list_all()
        .iter()
        .map(ProbeListing::from_info)
        .collect()
}

/// Which of `probes` to open for `selector` (`None`: the only one attached), or the
/// [`TargetError::NoProbe`] message that says what was looked for and what was found.
pub fn choose_probe(
    selector: Option<&ProbeSelector>,
    probes: &[ProbeListing],
) -> Result<usize, String> {
    let wanted = match selector {
        Some(selector) => format!("probe {selector}"),
        None => "any probe".to_owned(),
    };
    let list = |indices: &[usize]| {
        indices
            .iter()
            .map(|&i| probes[i].to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if probes.is_empty() {
        return Err(format!(
            "looked for {wanted}, found no probes attached; {NO_PROBE_HINT}"
        ));
    }
    let matching: Vec<usize> = (0..probes.len())
        .filter(|&i| selector.is_none_or(|s| s.matches(&probes[i])))
        .collect();
    match matching.as_slice() {
        [only] => Ok(*only),
        [] => {
            let all: Vec<usize> = (0..probes.len()).collect();
            Err(format!(
                "looked for {wanted}, found only {}; {NO_PROBE_HINT}",
                list(&all)
            ))
        }
        several => Err(format!(
            "looked for {wanted}, found {} {}: {}; name one by its serial \
             (VID:PID:SERIAL, e.g. \"{}\") in the rig file or with --probe",
            several.len(),
            if selector.is_some() {
                "that match"
            } else {
                "attached"
            },
            list(several),
            probes[several[0]].selector()
        )),
    }
}

/// Up to three chip names from `known` that look like `chip`, closest first.
pub fn close_chip_names<'a>(chip: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let wanted = chip.to_lowercase();
    let mut scored: Vec<(f64, &str)> = known
        .into_iter()
        .map(|name| (strsim::jaro_winkler(&name.to_lowercase(), &wanted), name))
        .filter(|(score, _)| *score > 0.85)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, name)| name.to_owned())
        .collect()
}

/// The addresses the probe needs from the firmware ELF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfSymbols {
    /// The RTT control block ([`RTT_SYMBOL`]).
    pub rtt_control_block: Option<u64>,
    /// The fault record ([`FAULT_RECORD_SYMBOL`]).
    pub fault_record: Option<u64>,
}

/// Reads the RTT control block and fault record addresses from an ELF's symbol table. Only
/// defined symbols count.
pub fn elf_symbols(bytes: &[u8]) -> Result<ElfSymbols, String> {
    let file = object::File::parse(bytes).map_err(|e| format!("not a valid ELF file: {e}"))?;
    let address = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name) && s.section_index().is_some())
            .map(|s| s.address())
    };
    Ok(ElfSymbols {
        rtt_control_block: address(RTT_SYMBOL),
        fault_record: address(FAULT_RECORD_SYMBOL),
    })
}

/// The data to write to flash: each loadable segment with file content, at its load
/// (physical) address, as `(address, bytes)`.
pub fn loadable_segments(bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let elf = ElfFile32::<object::Endianness>::parse(bytes)
        .map_err(|e| format!("not a valid 32-bit ELF file: {e}"))?;
    let endian = elf.endian();
    let mut segments = Vec::new();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) != object::elf::PT_LOAD {
            continue;
        }
        let data = header
            .data(endian, bytes)
            .map_err(|()| "a loadable segment lies outside the file".to_owned())?;
        if !data.is_empty() {
            segments.push((u64::from(header.p_paddr(endian)), data));
        }
    }
    if segments.is_empty() {
        return Err("no loadable segment with content".to_owned());
    }
    Ok(segments)
}

/// Turns probe-rs's flash events into [`FlashProgress`]: bytes done of the total, per phase.
#[derive(Debug, Default)]
pub struct FlashProgressTally {
    erase: (u64, u64),
    program: (u64, u64),
    verifying: bool,
}

impl FlashProgressTally {
    /// The progress to report after `event`, if it changes anything a user sees.
    pub fn on_event(&mut self, event: &ProgressEvent) -> Option<FlashProgress> {
        match event {
            ProgressEvent::AddProgressBar {
                operation,
                total: Some(total),
            } => match operation {
                // One bar per flash algorithm: totals add up.
                ProgressOperation::Erase => self.erase.1 += total,
                ProgressOperation::Program => self.program.1 += total,
                _ => {}
            },
            ProgressEvent::Started(ProgressOperation::Erase) => {
                return Some(FlashProgress::Erasing(self.erase.0, self.erase.1));
            }
            ProgressEvent::Started(ProgressOperation::Program) => {
                return Some(FlashProgress::Programming(self.program.0, self.program.1));
            }
            ProgressEvent::Progress {
                operation, size, ..
            } => match operation {
                ProgressOperation::Erase => {
                    self.erase.0 += size;
                    return Some(FlashProgress::Erasing(self.erase.0, self.erase.1));
                }
                ProgressOperation::Program => {
                    self.program.0 += size;
                    return Some(FlashProgress::Programming(self.program.0, self.program.1));
                }
                ProgressOperation::Verify => return self.verifying(),
                ProgressOperation::Fill => {}
            },
            ProgressEvent::Started(ProgressOperation::Verify) => return self.verifying(),
            _ => {}
        }
        None
    }

    fn verifying(&mut self) -> Option<FlashProgress> {
        (!std::mem::replace(&mut self.verifying, true)).then_some(FlashProgress::Verifying)
    }
}

/// The board behind a debug probe, through probe-rs.
///
/// Holds one probe-rs session for its whole life. When it is dropped while the core is held in
/// reset-halt (after [`Target::safe_state`] or [`Target::flash`]), the session is deliberately
/// leaked rather than closed: closing a probe-rs session clears `DHCSR.C_DEBUGEN`, which
/// releases a halted Cortex-M core, and the firmware would run again with nobody watching. The
/// probe then stays claimed until the process exits, so a process opens one `ProbeTarget` per
/// probe and keeps it.
pub struct ProbeTarget {
    /// `None` after the session was lost and could not be reopened.
    session: Option<Session>,
    probe: ProbeListing,
    /// The chip as the probe-rs database describes it (for reattaching).
    chip: probe_rs::Target,
    rtt_control_block: u64,
    fault_record: Option<u64>,
    rtt: Option<Rtt>,
    /// Whether the core was last left reset and halted by this target.
    held_halted: bool,
}

impl fmt::Debug for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeTarget")
            .field("probe", &self.probe)
            .field("chip", &self.chip.name)
            .field("session_open", &self.session.is_some())
            .field("rtt_attached", &self.rtt.is_some())
            .finish_non_exhaustive()
    }
}

impl ProbeTarget {
    /// Opens the probe matching `selector` (`None`: the only probe attached), attaches to
    /// `chip` (a probe-rs chip name, e.g. `STM32G431CBUx`) and reads the RTT control block and
    /// fault record addresses from `elf`.
    ///
    /// The chip name and the ELF are checked before any probe is looked for. An unknown chip
    /// is [`TargetError::Attach`] with close names; an unreadable ELF or one without
    /// [`RTT_SYMBOL`] is [`TargetError::Rtt`]; an ELF without [`FAULT_RECORD_SYMBOL`] is
    /// accepted ([`Target::fault_record`] is then always `None`).
    pub fn open(
        selector: Option<&ProbeSelector>,
        chip: &str,
        elf: &Path,
    ) -> Result<ProbeTarget, TargetError> {
        let registry = Registry::from_builtin_families();
        let chip_target = registry.get_target_by_name(chip).map_err(|e| {
            if !matches!(e, probe_rs::config::RegistryError::ChipNotFound(_)) {
                // probe-rs's message already lists the candidates (an ambiguous prefix).
                return TargetError::Attach(format!("unknown chip {chip:?}: {e}"));
            }
            let known = registry
                .families()
                .iter()
                .flat_map(|family| family.variants.iter().map(|v| v.name.as_str()));
            let close = close_chip_names(chip, known);
            let suggestion = if close.is_empty() {
                String::new()
            } else {
                format!(" (did you mean {}?)", close.join(", "))
            };
            TargetError::Attach(format!("unknown chip {chip:?}: {e}{suggestion}"))
        })?;
        // The probe first: without one nothing else matters, and the operator hears that.
        let lister = Lister::new();
        let found = lister.list_with_access(None);
        let listings: Vec<ProbeListing> = found
            .iter()
            .map(|item| ProbeListing::from_info(&item.info))
            .collect();
        let index = choose_probe(selector, &listings).map_err(TargetError::NoProbe)?;
        let (symbols, rtt_control_block) = checked_elf_symbols(elf)?;
        let probe = listings[index].clone();
        if found[index].accessibility == Accessibility::PermissionDenied {
            return Err(TargetError::Attach(format!(
                "cannot open probe {probe}: permission denied; install the udev rules for it \
                 (see the README's bench section)"
            )));
        }
        let session = attach(&found[index].info, &probe, &chip_target)?;
        Ok(ProbeTarget {
            session: Some(session),
            probe,
            chip: chip_target,
            rtt_control_block,
            fault_record: symbols.fault_record,
            rtt: None,
            held_halted: false,
        })
    }

    /// The probe in use.
    pub fn probe(&self) -> &ProbeListing {
        &self.probe
    }

    /// The chip, as probe-rs names it.
    pub fn chip(&self) -> &str {
        &self.chip.name
    }

    fn session(&mut self) -> Result<&mut Session, TargetError> {
        self.session.as_mut().ok_or_else(|| {
            TargetError::Lost(format!(
                "the session with probe {} was lost and could not be reopened",
                self.probe
            ))
        })
    }

    fn lost(&self, what: &str, error: impl fmt::Display) -> TargetError {
        TargetError::Lost(format!("{what} through probe {}: {error}", self.probe))
    }

    /// Drops the session (if any) and attaches again to the same probe, by its USB identity.
    fn reopen(&mut self) -> Result<(), TargetError> {
        self.rtt = None;
        self.session = None;
        let found = Lister::new().list_all();
        let listings: Vec<ProbeListing> = found.iter().map(ProbeListing::from_info).collect();
        let index =
            choose_probe(Some(&self.probe.selector()), &listings).map_err(TargetError::NoProbe)?;
        self.session = Some(attach(&found[index], &self.probe, &self.chip)?);
        Ok(())
    }

    fn reset_and_halt(&mut self) -> Result<(), TargetError> {
        let result = self
            .session()?
            .core(0)
            .and_then(|mut core| core.reset_and_halt(RESET_HALT_TIMEOUT).map(drop));
        result.map_err(|e| self.lost("reset and halt failed", e))?;
        self.held_halted = true;
        Ok(())
    }
}

/// Opens `info`'s probe and attaches to `chip`; if the core does not answer, once more with
/// the reset line held (a core that sleeps, or has its SWD pins taken, answers only then).
fn attach(
    info: &DebugProbeInfo,
    probe: &ProbeListing,
    chip: &probe_rs::Target,
) -> Result<Session, TargetError> {
    let open = || {
        info.open().map_err(|e| {
            TargetError::Attach(format!(
                "cannot open probe {probe}: {e} (is another debugger using it?)"
            ))
        })
    };
    let selector = || TargetSelector::Specified(chip.clone());
    match open()?.attach(selector(), Permissions::default()) {
        Ok(session) => Ok(session),
        Err(first) => open()?
            .attach_under_reset(selector(), Permissions::default())
            .map_err(|second| {
                TargetError::Attach(format!(
                    "probe {probe} cannot attach to {}: {first}; under reset: {second} \
                     (is the board powered, the SWD cable connected and the chip a {}?)",
                    chip.name, chip.name
                ))
            }),
    }
}

/// The ELF's symbols, with the RTT control block's address that the bench cannot do without.
fn checked_elf_symbols(elf: &Path) -> Result<(ElfSymbols, u64), TargetError> {
    let symbols = read_elf_symbols(elf)?;
    let rtt_control_block = symbols.rtt_control_block.ok_or_else(|| {
        TargetError::Rtt(format!(
            "symbol {RTT_SYMBOL} not found in {}: the firmware has no RTT control block",
            elf.display()
        ))
    })?;
    Ok((symbols, rtt_control_block))
}

fn read_elf_symbols(elf: &Path) -> Result<ElfSymbols, TargetError> {
    let bytes = std::fs::read(elf).map_err(|e| {
        TargetError::Rtt(format!("cannot read firmware ELF {}: {e}", elf.display()))
    })?;
    elf_symbols(&bytes).map_err(|e| TargetError::Rtt(format!("{}: {e}", elf.display())))
}

/// Drains up channel `number` (at most [`RTT_MAX_CHUNKS_PER_POLL`] chunks).
fn drain(
    rtt: &mut Rtt,
    core: &mut probe_rs::Core<'_>,
    number: usize,
) -> Result<Vec<u8>, probe_rs::rtt::Error> {
    let mut out = Vec::new();
    let Some(channel) = rtt.up_channels().iter_mut().find(|c| c.number() == number) else {
        return Ok(out);
    };
    let mut chunk = [0u8; RTT_CHUNK_BYTES];
    for _ in 0..RTT_MAX_CHUNKS_PER_POLL {
        let read = channel.read(core, &mut chunk)?;
        out.extend_from_slice(&chunk[..read]);
        if read < chunk.len() {
            break;
        }
    }
    Ok(out)
}

/// The RTT channel layout the board firmware declares, or what differs.
fn check_channels(rtt: &mut Rtt) -> Result<(), String> {
    for (number, expected) in [TELEMETRY_CHANNEL, LOG_CHANNEL] {
        match rtt.up_channels().iter().find(|c| c.number() == number) {
            None => return Err(format!("up channel {number} ({expected}) is not set up")),
            Some(channel) => match channel.name() {
                Some(name) if name != expected => {
                    return Err(format!(
                        "up channel {number} is named {name:?}, expected {expected:?}: \
                         is this the iohil board firmware?"
                    ))
                }
                _ => {}
            },
        }
    }
    Ok(())
}

impl Target for ProbeTarget {
    fn describe(&self) -> Vec<(String, String)> {
        vec![
            ("probe".to_owned(), self.probe.identifier.clone()),
            ("probe kind".to_owned(), self.probe.kind.clone()),
            (
                "probe VID:PID".to_owned(),
                format!("{:04x}:{:04x}", self.probe.vendor_id, self.probe.product_id),
            ),
            (
                "probe serial".to_owned(),
                self.probe
                    .serial
                    .clone()
                    .unwrap_or_else(|| "none".to_owned()),
            ),
            ("chip".to_owned(), self.chip.name.clone()),
            ("probe-rs".to_owned(), PROBE_RS_VERSION.to_owned()),
        ]
    }

    /// Writes the ELF's loadable segments, verifies them, then resets and halts the core. The
    /// RTT and fault record addresses are taken from this ELF from now on (it is what runs).
    fn flash(
        &mut self,
        elf: &Path,
        progress: &mut dyn FnMut(FlashProgress),
    ) -> Result<(), TargetError> {
        let flash_error =
            |detail: String| TargetError::Flash(format!("{}: {detail}", elf.display()));
        let bytes = std::fs::read(elf).map_err(|e| flash_error(format!("cannot read: {e}")))?;
        let segments = loadable_segments(&bytes).map_err(flash_error)?;
        let symbols = elf_symbols(&bytes).map_err(flash_error)?;
        let rtt_control_block = symbols
            .rtt_control_block
            .ok_or_else(|| flash_error(format!("symbol {RTT_SYMBOL} not found")))?;

        self.rtt = None;
        self.held_halted = false;
        let probe = self.probe.to_string();
        let session = self.session()?;
        let mut loader = session.target().flash_loader();
        for (address, data) in segments {
            loader.add_data(address, data).map_err(|e| {
                flash_error(format!(
                    "{} B at {address:#010x} do not fit the chip's memory: {e}",
                    data.len()
                ))
            })?;
        }
        let mut tally = FlashProgressTally::default();
        let mut options = DownloadOptions::default();
        options.verify = true;
        options.progress = probe_rs::flashing::FlashProgress::new(|event| {
            if let Some(update) = tally.on_event(&event) {
                progress(update);
            }
        });
        loader
            .commit(session, options)
            .map_err(|e| flash_error(format!("through probe {probe}: {e}")))?;
        session
            .core(0)
            .and_then(|mut core| core.reset_and_halt(RESET_HALT_TIMEOUT).map(drop))
            .map_err(|e| flash_error(format!("written, but reset and halt failed: {e}")))?;
        self.held_halted = true;
        self.rtt_control_block = rtt_control_block;
        self.fault_record = symbols.fault_record;
        Ok(())
    }

    /// Resets and halts the core, clears the RTT control block left in RAM by the previous run
    /// (so that a stale one is never read), lets the core run, then attaches RTT at the ELF's
    /// `_SEGGER_RTT` address once the firmware has written it (up to 500 ms).
    fn reset_and_run(&mut self) -> Result<(), TargetError> {
        self.rtt = None;
        let address = self.rtt_control_block;
        let result = self
            .session()?
            .core(0)
            .map_err(|e| e.to_string())
            .and_then(|mut core| {
                core.reset_and_halt(RESET_HALT_TIMEOUT)
                    .map_err(|e| e.to_string())?;
                Rtt::clear_control_block(&mut core, &ScanRegion::Exact(address))
                    .map_err(|e| format!("clearing the old RTT control block: {e}"))?;
                core.run().map_err(|e| e.to_string())
            });
        result.map_err(|e| self.lost("reset and run failed", e))?;
        self.held_halted = false;

        let deadline = Instant::now() + RTT_ATTACH_WINDOW;
        loop {
            let attempt = self
                .session()?
                .core(0)
                .map_err(probe_rs::rtt::Error::from)
                .and_then(|mut core| Rtt::attach_region(&mut core, &ScanRegion::Exact(address)));
            match attempt {
                Ok(mut rtt) => {
                    check_channels(&mut rtt).map_err(|e| {
                        TargetError::Rtt(format!("control block at {address:#010x}: {e}"))
                    })?;
                    self.rtt = Some(rtt);
                    return Ok(());
                }
                Err(probe_rs::rtt::Error::Probe(e)) => {
                    return Err(self.lost("reading the RTT control block failed", e));
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(TargetError::Rtt(format!(
                        "no valid control block at {address:#010x} ({RTT_SYMBOL}) within {} ms \
                         of reset: {e} (did the firmware start?)",
                        RTT_ATTACH_WINDOW.as_millis()
                    )));
                }
                Err(_) => std::thread::sleep(RTT_ATTACH_RETRY),
            }
        }
    }

    /// Reads the core's state first, then drains the channels, so that everything a faulting
    /// firmware wrote before it stopped is in the same poll as the fault.
    fn poll(&mut self) -> Result<TargetPoll, TargetError> {
        let Some(mut rtt) = self.rtt.take() else {
            return Err(TargetError::Rtt(
                "not attached: the target was not started with reset_and_run".to_owned(),
            ));
        };
        let result = self
            .session()?
            .core(0)
            .map_err(|e| e.to_string())
            .and_then(|mut core| {
                let fault = match core.status().map_err(|e| e.to_string())? {
                    // `Unknown` is only the state of a core probe-rs has not asked yet.
                    CoreStatus::Running | CoreStatus::Sleeping | CoreStatus::Unknown => None,
                    CoreStatus::LockedUp => Some(CoreState::LockedUp),
                    CoreStatus::Halted(reason) => {
                        let pc: u32 = core
                            .read_core_reg(core.program_counter())
                            .map_err(|e| format!("reading PC: {e}"))?;
                        Some(CoreState::Halted {
                            pc,
                            reason: format!("{reason:?}"),
                        })
                    }
                };
                let telemetry = drain(&mut rtt, &mut core, TELEMETRY_CHANNEL.0)
                    .map_err(|e| format!("reading RTT up channel 0: {e}"))?;
                let log = drain(&mut rtt, &mut core, LOG_CHANNEL.0)
                    .map_err(|e| format!("reading RTT up channel 1: {e}"))?;
                Ok(TargetPoll {
                    telemetry,
                    log,
                    fault,
                })
            });
        self.rtt = Some(rtt);
        result.map_err(|e| self.lost("polling the core and RTT failed", e))
    }

    /// Reads the record through the memory access port, which works while the core runs.
    fn fault_record(&mut self) -> Result<Option<FaultRecord>, TargetError> {
        let Some(address) = self.fault_record else {
            return Ok(None);
        };
        let mut bytes = [0u8; FAULT_RECORD_LEN];
        let result = self
            .session()?
            .core(0)
            .and_then(|mut core| core.read(address, &mut bytes));
        result.map_err(|e| {
            self.lost(
                &format!("reading the fault record at {address:#010x} failed"),
                e,
            )
        })?;
        Ok(decode_fault_record(&bytes))
    }

    fn clear_fault_record(&mut self) -> Result<(), TargetError> {
        let Some(address) = self.fault_record else {
            return Ok(());
        };
        let zeros = [0u8; FAULT_RECORD_LEN];
        let result = self
            .session()?
            .core(0)
            .and_then(|mut core| core.write(address, &zeros));
        result.map_err(|e| {
            self.lost(
                &format!("erasing the fault record at {address:#010x} failed"),
                e,
            )
        })
    }

    /// Resets the core and holds it halted at the reset vector.
    ///
    /// Why a reset and not a halt: a halted core stops executing, but TIM1 keeps generating PWM
    /// on the bridge gates unless `DBGMCU_APB2FZR.DBG_TIM1_STOP` is set, and whether it is set
    /// is up to the firmware under test (which may have faulted before setting it, or be the
    /// very thing that is wrong). A system reset returns TIM1 and every GPIO to its reset state
    /// whatever the firmware did, and the halt keeps the firmware from starting the motor
    /// again. If the session is gone (or the reset fails), the probe is reopened and the reset
    /// tried once more; an error means the core could not be put in reset-halt.
    fn safe_state(&mut self) -> Result<(), TargetError> {
        self.rtt = None;
        let first = match self.reset_and_halt() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        self.reopen()
            .and_then(|()| self.reset_and_halt())
            .map_err(|second| {
                TargetError::Lost(format!(
                    "the motor's safe state (reset and halt) could not be reached: {first}; \
                     after reopening the probe: {second}"
                ))
            })
    }
}

impl Drop for ProbeTarget {
    fn drop(&mut self) {
        if self.held_halted {
            // Closing the session would let the halted core run again (see the type's docs).
            std::mem::forget(self.session.take());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 32-bit Arm ELF: one loadable segment linked at `0x2000_0100` and loaded at
    /// `0x0800_0100` (as `.data` is), a `.bss` section in RAM, and `symbols` defined in it.
    fn test_elf(symbols: &[(&str, u32)]) -> Vec<u8> {
        const SEGMENT: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
        let u16le = |out: &mut Vec<u8>, v: u16| out.extend_from_slice(&v.to_le_bytes());
        let u32le = |out: &mut Vec<u8>, v: u32| out.extend_from_slice(&v.to_le_bytes());

        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 16];
        for (name, address) in symbols {
            let name_offset = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            u32le(&mut symtab, name_offset);
            u32le(&mut symtab, *address);
            u32le(&mut symtab, 4);
            symtab.push(0x11); // STB_GLOBAL, STT_OBJECT.
            symtab.push(0);
            u16le(&mut symtab, 2); // .bss
        }
        let shstrtab = b"\0.data\0.bss\0.symtab\0.strtab\0.shstrtab\0";

        let data_offset = 52 + 32;
        let symtab_offset = data_offset + SEGMENT.len();
        let strtab_offset = symtab_offset + symtab.len();
        let shstrtab_offset = strtab_offset + strtab.len();
        let sections_offset = (shstrtab_offset + shstrtab.len()).next_multiple_of(4);

        let mut out = Vec::new();
        out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]);
        out.extend_from_slice(&[0; 8]);
        u16le(&mut out, 2); // ET_EXEC
        u16le(&mut out, 40); // EM_ARM
        u32le(&mut out, 1);
        u32le(&mut out, 0x0800_0101);
        u32le(&mut out, 52);
        u32le(&mut out, sections_offset as u32);
        u32le(&mut out, 0x0500_0000);
        for v in [52, 32, 1, 40, 6, 5] {
            u16le(&mut out, v);
        }
        // PT_LOAD: offset, vaddr, paddr, filesz, memsz, flags, align.
        for v in [1, data_offset as u32, 0x2000_0100, 0x0800_0100, 8, 8, 6, 4] {
            u32le(&mut out, v);
        }
        out.extend_from_slice(&SEGMENT);
        out.extend_from_slice(&symtab);
        out.extend_from_slice(&strtab);
        out.extend_from_slice(shstrtab);
        out.resize(sections_offset, 0);
        // name, type, flags, addr, offset, size, link, info, addralign, entsize.
        let sections: [[u32; 10]; 6] = [
            [0; 10],
            [1, 1, 3, 0x2000_0100, data_offset as u32, 8, 0, 0, 4, 0],
            [7, 8, 3, 0x2000_0200, 0, 0x100, 0, 0, 4, 0],
            [
                12,
                2,
                0,
                0,
                symtab_offset as u32,
                symtab.len() as u32,
                4,
                1,
                4,
                16,
            ],
            [
                20,
                3,
                0,
                0,
                strtab_offset as u32,
                strtab.len() as u32,
                0,
                0,
                1,
                0,
            ],
            [
                28,
                3,
                0,
                0,
                shstrtab_offset as u32,
                shstrtab.len() as u32,
                0,
                0,
                1,
                0,
            ],
        ];
        for section in sections {
            for v in section {
                u32le(&mut out, v);
            }
        }
        out
    }

    fn board_like_elf() -> Vec<u8> {
        test_elf(&[
            (RTT_SYMBOL, 0x2000_0200),
            (FAULT_RECORD_SYMBOL, 0x2000_0280),
        ])
    }

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("temp file");
        path
    }

    fn listing(identifier: &str, vid: u16, pid: u16, serial: Option<&str>) -> ProbeListing {
        ProbeListing {
            identifier: identifier.to_owned(),
            vendor_id: vid,
            product_id: pid,
            serial: serial.map(str::to_owned),
            kind: "ST-LINK".to_owned(),
        }
    }

    fn selector(text: &str) -> ProbeSelector {
        text.parse().expect("valid selector")
    }

    #[test]
    fn selectors_parse_with_and_without_serial_and_print_back() {
        assert_eq!(
            selector("0483:374E:002C00283137510A"),
            ProbeSelector {
                vendor_id: 0x0483,
                product_id: 0x374e,
                serial: Some("002C00283137510A".to_owned()),
            }
        );
        assert_eq!(selector("0483:374e").serial, None);
        assert_eq!(selector("0483:374E").to_string(), "0483:374e");
        assert_eq!(
            selector("1366:0101:my_probe-2").to_string(),
            "1366:0101:my_probe-2"
        );
        let long_serial = "A".repeat(64);
        assert_eq!(
            selector(&format!("0483:374e:{long_serial}")).serial,
            Some(long_serial)
        );
    }

    #[test]
    fn malformed_selectors_say_what_is_wrong_and_show_the_form() {
        let cases = [
            (
                "483:374e",
                "vendor ID must be exactly 4 hex digits, found \"483\"",
            ),
            ("0483:374e0", "product ID must be exactly 4 hex digits"),
            ("0x83:374e", "vendor ID must be exactly 4 hex digits"),
            ("+483:374e", "vendor ID must be exactly 4 hex digits"),
            ("0483", "found 1 colon-separated part(s)"),
            ("0483:374e:ab:cd", "found 4 colon-separated part(s)"),
            ("0483:374e:", "serial must be 1 to 64 characters"),
            ("0483:374e:ab cd", "serial must be 1 to 64 characters"),
            ("", "found 1 colon-separated part(s)"),
        ];
        for (input, problem) in cases {
            let message = input.parse::<ProbeSelector>().expect_err(input).to_string();
            assert!(message.contains(problem), "{input:?}: {message}");
            assert!(
                message.contains("VID:PID[:SERIAL]") && message.contains(SELECTOR_EXAMPLE),
                "{input:?}: {message}"
            );
        }
        let too_long = format!("0483:374e:{}", "A".repeat(65));
        assert!(too_long.parse::<ProbeSelector>().is_err());
    }

    #[test]
    fn selectors_match_on_ids_and_serial_ignoring_its_case() {
        let probe = listing("STLINK-V3", 0x0483, 0x374e, Some("002C00283137510A"));
        assert!(selector("0483:374e").matches(&probe));
        assert!(selector("0483:374e:002c00283137510a").matches(&probe));
        assert!(!selector("0483:374e:002C00283137510B").matches(&probe));
        assert!(!selector("0483:374f").matches(&probe));
        assert!(!selector("0484:374e").matches(&probe));
        let no_serial = listing("J-Link", 0x1366, 0x0101, None);
        assert!(selector("1366:0101").matches(&no_serial));
        assert!(!selector("1366:0101:123").matches(&no_serial));
        assert_eq!(probe.selector().to_string(), "0483:374e:002C00283137510A");
    }

    #[test]
    fn the_only_probe_is_chosen_without_a_selector() {
        let probes = [listing("STLINK-V3", 0x0483, 0x374e, Some("A1"))];
        assert_eq!(choose_probe(None, &probes), Ok(0));
        assert_eq!(
            choose_probe(Some(&selector("0483:374e:A1")), &probes),
            Ok(0)
        );
    }

    #[test]
    fn no_probe_attached_says_what_was_looked_for() {
        let any = choose_probe(None, &[]).expect_err("none attached");
        assert!(any.contains("looked for any probe"), "{any}");
        assert!(any.contains("no probes attached"), "{any}");
        assert!(any.contains("udev") && any.contains("README"), "{any}");
        let named = choose_probe(Some(&selector("0483:374e:A1")), &[]).expect_err("none");
        assert!(named.contains("looked for probe 0483:374e:A1"), "{named}");
    }

    #[test]
    fn a_selector_matching_nothing_lists_what_is_attached() {
        let probes = [
            listing("STLINK-V3", 0x0483, 0x374e, Some("A1")),
            listing("J-Link", 0x1366, 0x0101, Some("123")),
        ];
        let message = choose_probe(Some(&selector("0483:374e:B2")), &probes).expect_err("none");
        assert!(
            message.contains("looked for probe 0483:374e:B2"),
            "{message}"
        );
        assert!(
            message.contains("STLINK-V3 [0483:374e:A1] (ST-LINK)")
                && message.contains("J-Link [1366:0101:123]"),
            "{message}"
        );
        assert!(message.contains("udev"), "{message}");
        assert_eq!(
            choose_probe(Some(&selector("1366:0101")), &probes),
            Ok(1),
            "the selector picks among several"
        );
    }

    #[test]
    fn several_candidates_are_listed_rather_than_guessed() {
        let probes = [
            listing("STLINK-V3", 0x0483, 0x374e, Some("A1")),
            listing("STLINK-V3", 0x0483, 0x374e, Some("B2")),
        ];
        for (selected, found) in [
            (None, "found 2 attached"),
            (Some(selector("0483:374e")), "found 2 that match"),
        ] {
            let message = choose_probe(selected.as_ref(), &probes).expect_err("ambiguous");
            assert!(
                message.contains(found)
                    && message.contains("[0483:374e:A1]")
                    && message.contains("[0483:374e:B2]")
                    && message.contains("--probe"),
                "{message}"
            );
        }
        assert_eq!(
            choose_probe(Some(&selector("0483:374e:b2")), &probes),
            Ok(1)
        );
    }

    #[test]
    fn close_chip_names_put_the_closest_first() {
        let known = [
            "STM32G431CBUx",
            "STM32G431CBTx",
            "STM32G474RETx",
            "nRF52840_xxAA",
        ];
        let close = close_chip_names("stm32g431cbux", known);
        assert_eq!(close.first().map(String::as_str), Some("STM32G431CBUx"));
        assert!(close.len() <= 3);
        assert!(!close.iter().any(|n| n.starts_with("nRF")));
        assert!(close_chip_names("ESP32-C3", known).is_empty());
    }

    #[test]
    fn symbols_and_segments_come_from_the_elf() {
        let elf = board_like_elf();
        assert_eq!(
            elf_symbols(&elf),
            Ok(ElfSymbols {
                rtt_control_block: Some(0x2000_0200),
                fault_record: Some(0x2000_0280),
            })
        );
        assert_eq!(
            loadable_segments(&elf),
            Ok(vec![(0x0800_0100, &[1u8, 2, 3, 4, 5, 6, 7, 8][..])]),
            "a segment is written at its load address, not where it is linked"
        );
        let bare = test_elf(&[("something_else", 0x2000_0200)]);
        assert_eq!(
            elf_symbols(&bare),
            Ok(ElfSymbols {
                rtt_control_block: None,
                fault_record: None,
            })
        );
        let garbage = b"not an elf at all";
        assert!(elf_symbols(garbage).is_err());
        assert!(loadable_segments(garbage)
            .expect_err("garbage")
            .contains("not a valid 32-bit ELF"));
    }

    #[test]
    fn flash_events_become_byte_progress_per_phase() {
        use ProgressOperation::{Erase, Fill, Program, Verify};
        let time = Duration::from_millis(1);
        let progress = |operation, size| ProgressEvent::Progress {
            operation,
            size,
            time,
        };
        let events = [
            ProgressEvent::AddProgressBar {
                operation: Erase,
                total: Some(4096),
            },
            ProgressEvent::AddProgressBar {
                operation: Program,
                total: Some(3000),
            },
            ProgressEvent::AddProgressBar {
                operation: Verify,
                total: Some(3000),
            },
            ProgressEvent::Started(Fill),
            progress(Fill, 100),
            ProgressEvent::Started(Erase),
            progress(Erase, 2048),
            progress(Erase, 2048),
            ProgressEvent::Finished(Erase),
            ProgressEvent::Started(Program),
            progress(Program, 2048),
            progress(Program, 952),
            ProgressEvent::Started(Verify),
            progress(Verify, 3000),
            ProgressEvent::Finished(Verify),
        ];
        let mut tally = FlashProgressTally::default();
        let seen: Vec<FlashProgress> = events.iter().filter_map(|e| tally.on_event(e)).collect();
        assert_eq!(
            seen,
            [
                FlashProgress::Erasing(0, 4096),
                FlashProgress::Erasing(2048, 4096),
                FlashProgress::Erasing(4096, 4096),
                FlashProgress::Programming(0, 3000),
                FlashProgress::Programming(2048, 3000),
                FlashProgress::Programming(3000, 3000),
                FlashProgress::Verifying,
            ]
        );
    }

    /// These expect no probe on the machine; with one attached they have nothing to show.
    fn no_probe_here() -> bool {
        let probes = list_probes();
        if !probes.is_empty() {
            eprintln!("skipped: probes are attached here: {probes:?}");
        }
        probes.is_empty()
    }

    #[test]
    fn opening_without_a_probe_says_what_was_looked_for_promptly() {
        if !no_probe_here() {
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let elf = write(&dir, "board.elf", &board_like_elf());
        let started = Instant::now();
        let any =
            ProbeTarget::open(None, crate::firmware::DEFAULT_CHIP, &elf).expect_err("no probe");
        // A hang here would stall `iohil run` on every machine without a probe.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        match any {
            TargetError::NoProbe(message) => {
                assert!(message.contains("looked for any probe"), "{message}");
                assert!(message.contains("no probes attached"), "{message}");
            }
            other => panic!("expected NoProbe, got {other:?}"),
        }
        let wanted = selector("0483:374e:002C00283137510A");
        match ProbeTarget::open(Some(&wanted), "STM32G431CBUx", &elf) {
            Err(TargetError::NoProbe(message)) => {
                assert!(
                    message.contains("looked for probe 0483:374e:002C00283137510A"),
                    "{message}"
                );
            }
            other => panic!("expected NoProbe, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_chip_is_an_attach_error_with_close_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elf = write(&dir, "board.elf", &board_like_elf());
        match ProbeTarget::open(None, "STM32G413CBUx", &elf) {
            Err(TargetError::Attach(message)) => {
                assert!(
                    message.contains("unknown chip \"STM32G413CBUx\""),
                    "{message}"
                );
                assert!(message.contains("did you mean STM32G431CB"), "{message}");
            }
            other => panic!("expected Attach, got {other:?}"),
        }
        match ProbeTarget::open(None, "STM32G431", &elf) {
            Err(TargetError::Attach(message)) => {
                assert!(message.contains("STM32G431CBUx"), "{message}");
            }
            other => panic!("expected Attach, got {other:?}"),
        }
    }

    #[test]
    fn an_elf_without_an_rtt_control_block_is_refused_before_attaching() {
        let dir = tempfile::tempdir().expect("temp dir");
        let elf = write(
            &dir,
            "bare.elf",
            &test_elf(&[(FAULT_RECORD_SYMBOL, 0x2000_0280)]),
        );
        match checked_elf_symbols(&elf) {
            Err(TargetError::Rtt(message)) => {
                assert!(message.contains("_SEGGER_RTT not found"), "{message}");
                assert!(message.contains("bare.elf"), "{message}");
            }
            other => panic!("expected Rtt, got {other:?}"),
        }
        let missing = dir.path().join("missing.elf");
        match checked_elf_symbols(&missing) {
            Err(TargetError::Rtt(message)) => {
                assert!(message.contains("cannot read firmware ELF"), "{message}");
            }
            other => panic!("expected Rtt, got {other:?}"),
        }
    }

    /// The board ELF, when it was built here (`firmware-under-test/board/build.sh`).
    fn board_elf() -> Option<std::path::PathBuf> {
        let path = std::env::var_os("IOHIL_BOARD_ELF")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(crate::firmware::DEFAULT_ELF)
            });
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipped: no board ELF at {}", path.display());
            None
        }
    }

    #[test]
    fn the_board_elf_is_flashed_and_read_where_the_dry_run_checked_it() {
        let Some(path) = board_elf() else {
            return;
        };
        let bytes = std::fs::read(&path).expect("board ELF");
        let report = crate::firmware::inspect_bytes(&path, &bytes, crate::firmware::DEFAULT_CHIP)
            .expect("inspectable");
        let segments = loadable_segments(&bytes).expect("segments");
        let written: u64 = segments.iter().map(|(_, data)| data.len() as u64).sum();
        assert_eq!(written, report.flash_bytes);
        let symbols = elf_symbols(&bytes).expect("symbols");
        assert_eq!(symbols.rtt_control_block, report.rtt_address);
        assert_eq!(symbols.fault_record, report.fault_record_address);
        assert!(symbols.rtt_control_block.is_some());
    }

    #[test]
    fn the_probe_rs_version_is_the_pinned_one() {
        let manifest = include_str!("../../../../Cargo.toml");
        assert!(
            manifest.contains(&format!(
                "probe-rs = {{ version = \"={}\"",
                probe_rs_version()
            )),
            "PROBE_RS_VERSION differs from the workspace pin"
        );
    }
}
