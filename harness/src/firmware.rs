//! The board firmware ELF: identity, memory use, and validation against a chip's memory map
//! from probe-rs's target database, without a probe (`iohil flash --dry-run`).
//!
//! Every check is computed from the file: loadable segments must lie in the chip's flash (a
//! probe-rs flash loader accepts them), RAM sections in its RAM, flash and static RAM use
//! within the budgets below, the vector table must point into RAM and flash, the RTT control
//! block and fault record symbols must be present, the identity record (`.iohil_id`,
//! `driver_core::telemetry::FirmwareId`) must parse, and the driver-core source compiled into
//! the ELF must be the one this harness's `sim` rig runs (same SHA-256, see
//! `firmware-under-test/driver-core/source_hash.rs`).

use std::fmt;
use std::path::{Path, PathBuf};

use driver_core::telemetry::{id_flags, FirmwareId, IDENT_LEN};
use object::read::elf::ProgramHeader as _;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionFlags};
use probe_rs::config::{MemoryRegion, Registry};
use serde::Serialize;

use crate::hex;

/// The driver board's MCU, as probe-rs names it.
pub const DEFAULT_CHIP: &str = "STM32G431CBUx";
/// Flash budget of the firmware, bytes (half of the part's 128 KiB, room to grow and to keep
/// a second image).
pub const FLASH_BUDGET: u64 = 64 * 1024;
/// Static RAM budget (.data + .bss + .uninit), bytes; the rest of the 32 KiB is stack.
pub const RAM_BUDGET: u64 = 16 * 1024;
/// The RTT control block symbol.
pub const RTT_SYMBOL: &str = "_SEGGER_RTT";
/// The fault record symbol (`driver_core::telemetry::encode_fault_record` layout).
pub const FAULT_RECORD_SYMBOL: &str = "IOHIL_FAULT_RECORD";
/// The identity record's section.
pub const ID_SECTION: &str = ".iohil_id";
/// SHA-256 of the driver-core source this harness (and so its `sim` rig) was built with.
pub const SIM_CORE_SOURCE_SHA256: &str = env!("IOHIL_CORE_SOURCE_SHA256");
/// Where `firmware-under-test/board/build.sh` writes the release ELF, relative to the
/// repository root.
pub const DEFAULT_ELF: &str =
    "firmware-under-test/board/target/thumbv7m-none-eabi/release/iohil-board";

/// A firmware file that cannot be inspected (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// Not readable.
    #[error("cannot read firmware ELF {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not an ELF, or a damaged one.
    #[error("{path} is not a valid ELF file: {detail}")]
    NotElf {
        /// File.
        path: PathBuf,
        /// Parser message.
        detail: String,
    },
    /// Not a 32-bit little-endian Arm ELF.
    #[error("{path} is a {found} ELF, not 32-bit Arm: it cannot run on {chip}")]
    WrongArchitecture {
        /// File.
        path: PathBuf,
        /// What it is.
        found: String,
        /// Chip.
        chip: String,
    },
    /// Chip not in probe-rs's database.
    #[error("unknown chip {chip:?}: {detail}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s}?)")).unwrap_or_default())]
    UnknownChip {
        /// Name given.
        chip: String,
        /// probe-rs's message.
        detail: String,
        /// Closest known name.
        suggestion: Option<String>,
    },
}

/// One check of the ELF and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// The measured facts.
    pub detail: String,
}

/// The firmware identity, readable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Identity {
    /// Board firmware version.
    pub firmware_version: String,
    /// driver-core version.
    pub core_version: String,
    /// Git commit (hex), `unknown`, with `-dirty` when built from a modified tree.
    pub git_commit: String,
    /// SHA-256 of the driver-core sources (hex).
    pub core_source_sha256: String,
    /// Build id (hex).
    pub build_id: String,
}

impl Identity {
    /// The readable form of a record.
    pub fn from_record(id: &FirmwareId) -> Self {
        let text = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let git_commit = if id.flags & id_flags::COMMIT_UNKNOWN != 0 {
            "unknown".to_owned()
        } else {
            let dirty = if id.flags & id_flags::DIRTY != 0 {
                "-dirty"
            } else {
                ""
            };
            format!("{}{dirty}", hex(&id.git_commit))
        };
        Identity {
            firmware_version: text(&id.firmware_version),
            core_version: text(&id.core_version),
            git_commit,
            core_source_sha256: hex(&id.core_source_sha256),
            build_id: hex(&id.build_id),
        }
    }
}

/// What an ELF holds and whether it passes every check.
#[derive(Debug, Clone, Serialize)]
pub struct ElfReport {
    /// File inspected.
    pub path: PathBuf,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Chip validated against.
    pub chip: String,
    /// Identity, when the record parsed.
    pub identity: Option<Identity>,
    /// Flash used: loadable bytes (code, read-only data, initialised-data image).
    pub flash_bytes: u64,
    /// Static RAM: .data + .bss + .uninit.
    pub ram_bytes: u64,
    /// Address of the RTT control block.
    pub rtt_address: Option<u64>,
    /// Address of the fault record.
    pub fault_record_address: Option<u64>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Facts that do not stop a dry run but must be read (a build from uncommitted sources).
    pub warnings: Vec<String>,
}

impl ElfReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

impl fmt::Display for ElfReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "firmware  {}", self.path.display())?;
        writeln!(f, "sha256    {}", self.sha256)?;
        writeln!(f, "chip      {}", self.chip)?;
        if let Some(id) = &self.identity {
            writeln!(
                f,
                "identity  iohil-board {} / driver-core {}, commit {}, build {}",
                id.firmware_version, id.core_version, id.git_commit, id.build_id
            )?;
        }
        writeln!(
            f,
            "size      flash {} B of {} B budget ({:.1} %), static RAM {} B of {} B budget ({:.1} %)",
            self.flash_bytes,
            FLASH_BUDGET,
            percent(self.flash_bytes, FLASH_BUDGET),
            self.ram_bytes,
            RAM_BUDGET,
            percent(self.ram_bytes, RAM_BUDGET)
        )?;
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            writeln!(f, "  {mark} {}: {}", check.name, check.detail)?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        Ok(())
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole as f64
}

/// Reads `path` and checks it against `chip`'s memory map.
pub fn inspect(path: &Path, chip: &str) -> Result<ElfReport, FirmwareError> {
    let bytes = std::fs::read(path).map_err(|source| FirmwareError::Read {
        path: path.to_owned(),
        source,
    })?;
    inspect_bytes(path, &bytes, chip)
}

/// As [`inspect`], for bytes already read.
pub fn inspect_bytes(path: &Path, bytes: &[u8], chip: &str) -> Result<ElfReport, FirmwareError> {
    let registry = Registry::from_builtin_families();
    let target = registry.get_target_by_name(chip).map_err(|e| {
        let suggestion = registry
            .families()
            .iter()
            .flat_map(|family| family.variants.iter().map(|v| v.name.clone()))
            .map(|name| {
                (
                    strsim::jaro_winkler(&name.to_lowercase(), &chip.to_lowercase()),
                    name,
                )
            })
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, name)| name);
        FirmwareError::UnknownChip {
            chip: chip.to_owned(),
            detail: e.to_string(),
            suggestion,
        }
    })?;
    let file = object::File::parse(bytes).map_err(|e| FirmwareError::NotElf {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    if file.format() != object::BinaryFormat::Elf
        || file.architecture() != object::Architecture::Arm
        || file.is_64()
        || !file.is_little_endian()
    {
        return Err(FirmwareError::WrongArchitecture {
            path: path.to_owned(),
            found: format!(
                "{:?} {:?} {}-bit",
                file.format(),
                file.architecture(),
                if file.is_64() { 64 } else { 32 }
            ),
            chip: chip.to_owned(),
        });
    }

    let flash: Vec<_> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Nvm(n) if !n.is_alias => Some(n.range.clone()),
            _ => None,
        })
        .collect();
    let ram: Vec<_> = target
        .memory_map
        .iter()
        .filter_map(|r| match r {
            MemoryRegion::Ram(m) => Some(m.range.clone()),
            _ => None,
        })
        .collect();
    // Adjacent RAM regions (SRAM1, SRAM2, CCM alias) form one block for a section.
    let in_ram = |start: u64, len: u64| {
        let mut at = start;
        let end = start + len;
        while at < end {
            match ram.iter().find(|r| r.contains(&at)) {
                Some(r) => at = r.end,
                None => return false,
            }
        }
        true
    };
    let in_flash = |start: u64, len: u64| {
        flash
            .iter()
            .any(|r| r.start <= start && start + len <= r.end)
    };

    let mut checks = Vec::new();

    // Loadable segments, at their load (physical) addresses, through probe-rs's flash loader.
    let mut loader = target.flash_loader();
    let mut flash_bytes = 0;
    let mut misplaced = Vec::new();
    let mut segments = 0;
    for segment in file.segments() {
        let data = segment.data().map_err(|e| FirmwareError::NotElf {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        if data.is_empty() {
            continue;
        }
        segments += 1;
        let load = physical_address(&file, segment.address()).unwrap_or(segment.address());
        let len = data.len() as u64;
        if !in_flash(load, len) {
            misplaced.push(format!("{load:#010x}..{:#010x}", load + len));
            continue;
        }
        match loader.add_data(load, data) {
            Ok(()) => flash_bytes += len,
            Err(e) => misplaced.push(format!("{load:#010x}..{:#010x} ({e})", load + len)),
        }
    }
    checks.push(Check {
        name: "loadable segments lie in the chip's flash",
        passed: misplaced.is_empty() && segments > 0,
        detail: if segments == 0 {
            "no loadable segment".to_owned()
        } else if misplaced.is_empty() {
            format!(
                "{segments} segment(s), {flash_bytes} B, accepted by the probe-rs flash loader for {chip}"
            )
        } else {
            format!("outside flash: {}", misplaced.join(", "))
        },
    });

    // Static RAM: allocated sections that live in RAM.
    let mut ram_bytes = 0;
    let mut outside_ram = Vec::new();
    for section in file.sections() {
        let alloc = match section.flags() {
            SectionFlags::Elf { sh_flags } => sh_flags & u64::from(object::elf::SHF_ALLOC) != 0,
            _ => false,
        };
        let (address, size) = (section.address(), section.size());
        if !alloc || size == 0 || in_flash(address, size) {
            continue;
        }
        if in_ram(address, size) {
            ram_bytes += size;
        } else {
            outside_ram.push(format!(
                "{} at {address:#010x}+{size}",
                section.name().unwrap_or("?")
            ));
        }
    }
    checks.push(Check {
        name: "RAM sections lie in the chip's RAM",
        passed: outside_ram.is_empty(),
        detail: if outside_ram.is_empty() {
            format!("{ram_bytes} B of static RAM")
        } else {
            format!("neither flash nor RAM: {}", outside_ram.join(", "))
        },
    });
    let against = |used: u64, budget: u64| {
        let sign = if used <= budget { "<=" } else { ">" };
        format!("{used} B {sign} {budget} B")
    };
    checks.push(Check {
        name: "flash use within budget",
        passed: flash_bytes <= FLASH_BUDGET,
        detail: against(flash_bytes, FLASH_BUDGET),
    });
    checks.push(Check {
        name: "static RAM use within budget",
        passed: ram_bytes <= RAM_BUDGET,
        detail: against(ram_bytes, RAM_BUDGET),
    });

    // Vector table at the start of flash: initial stack pointer in RAM, reset vector in flash.
    let vectors = flash.first().and_then(|r| read_at(&file, r.start, 8));
    let vector_check = match vectors {
        Some(v) => {
            let sp = u64::from(u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            let reset = u64::from(u32::from_le_bytes([v[4], v[5], v[6], v[7]]));
            let thumb = reset & 1 == 1;
            let ok = in_ram(sp.saturating_sub(4), 4) && thumb && in_flash(reset & !1, 2);
            Check {
                name: "vector table: stack in RAM, Thumb reset handler in flash",
                passed: ok,
                detail: format!("initial SP {sp:#010x}, reset vector {reset:#010x}"),
            }
        }
        None => Check {
            name: "vector table: stack in RAM, Thumb reset handler in flash",
            passed: false,
            detail: "no data at the start of flash".to_owned(),
        },
    };
    checks.push(vector_check);

    let symbol = |name: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| (s.address(), s.size()))
    };
    let rtt = symbol(RTT_SYMBOL);
    checks.push(Check {
        name: "RTT control block present",
        passed: rtt.is_some_and(|(a, s)| in_ram(a, s.max(1))),
        detail: match rtt {
            Some((a, s)) => format!("{RTT_SYMBOL} at {a:#010x} ({s} B)"),
            None => format!("symbol {RTT_SYMBOL} not found"),
        },
    });
    let fault_record = symbol(FAULT_RECORD_SYMBOL);
    let fault_len = driver_core::telemetry::FAULT_RECORD_LEN as u64;
    checks.push(Check {
        name: "fault record present",
        passed: fault_record.is_some_and(|(a, s)| s == fault_len && in_ram(a, s)),
        detail: match fault_record {
            Some((a, s)) => {
                format!("{FAULT_RECORD_SYMBOL} at {a:#010x} ({s} B, expected {fault_len})")
            }
            None => format!("symbol {FAULT_RECORD_SYMBOL} not found"),
        },
    });

    let record = identity_record(&file);
    let identity = record.as_ref().map(Identity::from_record);
    checks.push(Check {
        name: "firmware identity record present",
        passed: identity.is_some(),
        detail: match &identity {
            Some(id) => format!(
                "version {}, commit {}, build {}",
                id.firmware_version, id.git_commit, id.build_id
            ),
            None => format!("section {ID_SECTION} missing, wrong size or bad magic"),
        },
    });
    checks.push(Check {
        name: "not a test build",
        passed: record.is_some_and(|r| r.flags & id_flags::TEST_BUILD == 0),
        detail: match record {
            Some(r) if r.flags & id_flags::TEST_BUILD != 0 => {
                "built with a test-only feature (deliberately broken): never flash it".to_owned()
            }
            Some(_) => "release feature set".to_owned(),
            None => "no identity record".to_owned(),
        },
    });
    checks.push(match &identity {
        Some(id) => Check {
            name: "driver-core in the ELF is the source the sim rig runs",
            passed: id.core_source_sha256 == SIM_CORE_SOURCE_SHA256
                && id.core_version == driver_core::VERSION,
            detail: format!(
                "ELF core {} sha256 {}; sim core {} sha256 {SIM_CORE_SOURCE_SHA256}",
                id.core_version,
                id.core_source_sha256,
                driver_core::VERSION
            ),
        },
        None => Check {
            name: "driver-core in the ELF is the source the sim rig runs",
            passed: false,
            detail: "no identity record to compare".to_owned(),
        },
    });

    let mut warnings = Vec::new();
    if let Some(r) = &record {
        if r.flags & id_flags::DIRTY != 0 {
            warnings.push(
                "built from a working tree with uncommitted changes to the board or core sources: \
                 its commit does not identify it; build verification firmware from a commit"
                    .to_owned(),
            );
        }
        if r.flags & id_flags::COMMIT_UNKNOWN != 0 {
            warnings.push("built outside a git checkout: no commit identifies it".to_owned());
        }
    }
    Ok(ElfReport {
        warnings,
        path: path.to_owned(),
        sha256: crate::sha256_hex(bytes),
        chip: target.name.clone(),
        identity,
        flash_bytes,
        ram_bytes,
        rtt_address: rtt.map(|(a, _)| a),
        fault_record_address: fault_record.map(|(a, _)| a),
        checks,
    })
}

/// The load address of the segment whose virtual address is `vaddr` (an ELF's `.data` is
/// linked in RAM and loaded from flash); `vaddr` itself when no program header says otherwise.
pub fn load_address(file: &object::File<'_>, vaddr: u64) -> u64 {
    physical_address(file, vaddr).unwrap_or(vaddr)
}

/// The firmware identity record of an ELF (section [`ID_SECTION`]), if present and valid.
pub fn identity_record(file: &object::File<'_>) -> Option<FirmwareId> {
    file.section_by_name(ID_SECTION)
        .and_then(|s| s.data().ok())
        .and_then(|d| <&[u8; IDENT_LEN]>::try_from(d).ok())
        .and_then(FirmwareId::from_bytes)
}

fn physical_address(file: &object::File<'_>, vaddr: u64) -> Option<u64> {
    let object::File::Elf32(elf) = file else {
        return None;
    };
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .find(|ph| {
            ph.p_type(endian) == object::elf::PT_LOAD && u64::from(ph.p_vaddr(endian)) == vaddr
        })
        .map(|ph| u64::from(ph.p_paddr(endian)))
}

/// `len` bytes of loadable content at load address `address`.
fn read_at(file: &object::File<'_>, address: u64, len: u64) -> Option<Vec<u8>> {
    file.segments().find_map(|segment| {
        let load = physical_address(file, segment.address())?;
        let data = segment.data().ok()?;
        let offset = address.checked_sub(load)?;
        let end = offset.checked_add(len)?;
        data.get(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
            .map(<[u8]>::to_vec)
    })
}
