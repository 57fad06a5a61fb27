//! The board firmware ELF and `iohil flash --dry-run`.
//!
//! Tests that need the real ELF use `IOHIL_BOARD_ELF` or the default build output of
//! `firmware-under-test/board/build.sh`. Without it they say so and return, unless
//! `IOHIL_REQUIRE_BOARD_ELF=1` (set by `.ci/run`, which builds the ELF first), where a missing
//! ELF fails. Each damaged copy of the ELF must fail exactly the check it targets, so the
//! checks are shown to be able to fail.

mod common;
use common::{iohil, repo, text};

use std::path::{Path, PathBuf};

use iohil::firmware::{inspect, inspect_bytes, FirmwareError, DEFAULT_CHIP, DEFAULT_ELF};
use object::{Object, ObjectSection};

/// The real ELF's path and bytes, or `None` (test skipped) when it was not built here.
fn board_elf() -> Option<(PathBuf, Vec<u8>)> {
    let path = std::env::var_os("IOHIL_BOARD_ELF")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(DEFAULT_ELF));
    match std::fs::read(&path) {
        Ok(bytes) => Some((path, bytes)),
        Err(error) => {
            assert!(
                std::env::var("IOHIL_REQUIRE_BOARD_ELF").as_deref() != Ok("1"),
                "IOHIL_REQUIRE_BOARD_ELF=1 but {} cannot be read: {error}",
                path.display()
            );
            eprintln!(
                "skipped: no board ELF at {} (build it with firmware-under-test/board/build.sh)",
                path.display()
            );
            None
        }
    }
}

/// Names of the failed checks.
fn failed(bytes: &[u8]) -> Vec<&'static str> {
    let report = inspect_bytes(Path::new("test.elf"), bytes, DEFAULT_CHIP).expect("inspectable");
    report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name)
        .collect()
}

fn section_range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let file = object::File::parse(bytes).expect("elf");
    let (offset, size) = file
        .section_by_name(name)
        .and_then(|s| s.file_range())
        .unwrap_or_else(|| panic!("section {name}"));
    offset as usize..(offset + size) as usize
}

fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes[i..i + from.len()].copy_from_slice(to);
            count += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    count
}

#[test]
fn the_board_elf_passes_every_check() {
    let Some((path, _)) = board_elf() else { return };
    let report = inspect(&path, DEFAULT_CHIP).expect("inspect");
    assert!(report.passed(), "{report}");
    let id = report.identity.as_ref().expect("identity");
    assert_eq!(id.core_version, driver_core::VERSION);
    assert_eq!(
        id.core_source_sha256,
        iohil::firmware::SIM_CORE_SOURCE_SHA256
    );
    assert!(
        report.flash_bytes > 1024,
        "a real program, not an empty image"
    );
    assert!(report.rtt_address.is_some() && report.fault_record_address.is_some());
}

#[test]
fn each_damage_fails_its_own_check() {
    let Some((_, original)) = board_elf() else {
        return;
    };
    assert_eq!(failed(&original), Vec::<&str>::new());

    // A core hash that differs from the sim's: the ELF was built from another core.
    let mut other_core = original.clone();
    let id = section_range(&other_core, ".iohil_id");
    other_core[id.start + 64] ^= 0xFF;
    assert_eq!(
        failed(&other_core),
        vec!["driver-core in the ELF is the source the sim rig runs"]
    );

    // No identity record (bad magic).
    let mut no_id = original.clone();
    no_id[id.start] = b'X';
    assert_eq!(
        failed(&no_id),
        vec![
            "firmware identity record present",
            "not a test build",
            "driver-core in the ELF is the source the sim rig runs"
        ]
    );

    // A test build (flag set in the identity record).
    let mut test_build = original.clone();
    test_build[id.start + 60] |= driver_core::telemetry::id_flags::TEST_BUILD;
    assert_eq!(failed(&test_build), vec!["not a test build"]);

    // No RTT control block symbol.
    let mut no_rtt = original.clone();
    assert!(replace_all(&mut no_rtt, b"_SEGGER_RTT\0", b"_SEGGER_XYZ\0") > 0);
    assert_eq!(failed(&no_rtt), vec!["RTT control block present"]);

    // No fault record symbol.
    let mut no_fault = original.clone();
    assert!(
        replace_all(
            &mut no_fault,
            b"IOHIL_FAULT_RECORD\0",
            b"IOHIL_FAULT_RECORX\0"
        ) > 0
    );
    assert_eq!(failed(&no_fault), vec!["fault record present"]);

    // Section headers: (name offset in .shstrtab resolved by the object crate) -> header.
    let section_header = |bytes: &[u8], name: &str| -> usize {
        let file = object::File::parse(bytes).unwrap();
        let index = file.section_by_name(name).unwrap().index().0;
        let shoff = u32::from_le_bytes(bytes[0x20..0x24].try_into().unwrap()) as usize;
        let shentsize = u16::from_le_bytes(bytes[0x2E..0x30].try_into().unwrap()) as usize;
        shoff + index * shentsize
    };

    // .bss grown to 20 KiB: still inside the 32 KiB of RAM, over the 16 KiB budget.
    let mut big_bss = original.clone();
    let bss = section_header(&big_bss, ".bss");
    big_bss[bss + 20..bss + 24].copy_from_slice(&(20 * 1024u32).to_le_bytes());
    assert_eq!(failed(&big_bss), vec!["static RAM use within budget"]);

    // .bss moved out of RAM (0x3000_0000).
    let mut stray_bss = original.clone();
    stray_bss[bss + 12..bss + 16].copy_from_slice(&0x3000_0000u32.to_le_bytes());
    assert_eq!(
        failed(&stray_bss),
        vec!["RAM sections lie in the chip's RAM"]
    );

    // An initial stack pointer outside RAM in the vector table.
    let mut bad_sp = original.clone();
    let vectors = section_range(&bad_sp, ".vector_table");
    bad_sp[vectors.start..vectors.start + 4].copy_from_slice(&0x3000_0000u32.to_le_bytes());
    assert_eq!(
        failed(&bad_sp),
        vec!["vector table: stack in RAM, Thumb reset handler in flash"]
    );

    // 65 KiB more to load: the .data image (linked in RAM) grown and moved to free flash.
    let mut big_image = original.clone();
    let phoff = u32::from_le_bytes(big_image[0x1C..0x20].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(big_image[0x2A..0x2C].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(big_image[0x2C..0x2E].try_into().unwrap()) as usize;
    let data_ph = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| {
            u32::from_le_bytes(big_image[ph..ph + 4].try_into().unwrap()) == 1
                && u32::from_le_bytes(big_image[ph + 8..ph + 12].try_into().unwrap()) == 0x2000_0000
        })
        .expect("the .data PT_LOAD");
    let appended = big_image.len() as u32;
    big_image.resize(big_image.len() + 65 * 1024, 0);
    big_image[data_ph + 4..data_ph + 8].copy_from_slice(&appended.to_le_bytes());
    big_image[data_ph + 12..data_ph + 16].copy_from_slice(&0x0800_4000u32.to_le_bytes());
    big_image[data_ph + 16..data_ph + 20].copy_from_slice(&(65 * 1024u32).to_le_bytes());
    assert_eq!(failed(&big_image), vec!["flash use within budget"]);

    // The first loadable segment moved outside the chip's flash (load address 0x0900_0000).
    let mut moved = original.clone();
    let phoff = u32::from_le_bytes(moved[0x1C..0x20].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes(moved[0x2A..0x2C].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(moved[0x2C..0x2E].try_into().unwrap()) as usize;
    let load = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| u32::from_le_bytes(moved[ph..ph + 4].try_into().unwrap()) == 1)
        .expect("a PT_LOAD header");
    moved[load + 8..load + 12].copy_from_slice(&0x0900_0000u32.to_le_bytes());
    moved[load + 12..load + 16].copy_from_slice(&0x0900_0000u32.to_le_bytes());
    let failures = failed(&moved);
    assert!(
        failures.contains(&"loadable segments lie in the chip's flash"),
        "{failures:?}"
    );
}

#[test]
fn the_budgets_are_the_stated_ones() {
    assert_eq!(iohil::firmware::FLASH_BUDGET, 64 * 1024);
    assert_eq!(iohil::firmware::RAM_BUDGET, 16 * 1024);
}

#[test]
fn flash_dry_run_prints_size_identity_and_checks() {
    let Some((path, original)) = board_elf() else {
        return;
    };
    let out = iohil(&["flash", "--dry-run", "--elf", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("chip      STM32G431CBUx"), "{stdout}");
    assert!(stdout.contains("static RAM"), "{stdout}");
    assert!(
        stdout.contains(&format!("sha256    {}", iohil::sha256_hex(&original))),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");

    let json = iohil(&[
        "flash",
        "--dry-run",
        "--json",
        "--elf",
        path.to_str().unwrap(),
    ]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(value["chip"], "STM32G431CBUx");
    assert!(value["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["passed"] == true));

    // A damaged copy: exit 1, the failed check named.
    let dir = tempfile::tempdir().unwrap();
    let mut damaged = original.clone();
    let id = section_range(&damaged, ".iohil_id");
    damaged[id.start + 64] ^= 0xFF;
    let damaged_path = dir.path().join("damaged.elf");
    std::fs::write(&damaged_path, &damaged).unwrap();
    let out = iohil(&[
        "flash",
        "--dry-run",
        "--elf",
        damaged_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL driver-core in the ELF is the source the sim rig runs")
    );
    assert!(text(&out.stderr).contains("must not be flashed"));
}

#[test]
fn bad_inputs_exit_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.elf");
    let out = iohil(&["flash", "--dry-run", "--elf", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot read firmware ELF"), "{stderr}");
    assert!(stderr.contains("hint: build the firmware"), "{stderr}");

    let garbage = dir.path().join("garbage.elf");
    std::fs::write(&garbage, b"\x7fELF but not really").unwrap();
    let out = iohil(&["flash", "--dry-run", "--elf", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a valid ELF file"));

    // A host executable is an ELF, but not for this chip.
    let host = PathBuf::from(env!("CARGO_BIN_EXE_iohil"));
    match inspect(&host, DEFAULT_CHIP) {
        Err(FirmwareError::WrongArchitecture { .. }) => {}
        other => panic!("expected a wrong-architecture error, got {other:?}"),
    }

    let out = iohil(&[
        "flash",
        "--dry-run",
        "--chip",
        "STM32G4331CBUx",
        "--elf",
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown chip \"STM32G4331CBUx\""),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean STM32G431CB"), "{stderr}");

    // Without --dry-run flashing needs a probe: a malformed selector and a missing probe are
    // usage errors that say what was wrong or looked for.
    let out = iohil(&["flash", "--probe", "st-link"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--probe"),
        "{}",
        text(&out.stderr)
    );
    let elf = repo().join(iohil::firmware::DEFAULT_ELF);
    if elf.is_file() && iohil::rig::bench::probe::list_probes().is_empty() {
        let out = iohil(&[
            "flash",
            "--elf",
            elf.to_str().unwrap(),
            "--probe",
            "1234:5678",
        ]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("1234:5678"), "{stderr}");
        assert!(stderr.contains("no debug probe"), "{stderr}");
    }
}
