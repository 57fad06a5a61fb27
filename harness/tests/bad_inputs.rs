//! The bad-input corpus: every kind of broken input a user can hand `iohil` is refused through
//! the command line with exit code 2, a message naming the file (with line and column where
//! the problem is inside it) and never a panic. The committed files are in
//! `harness/tests/corpus/bad/`; the ones too big or too odd to commit (a 50 MB file, binary
//! garbage, non-UTF-8, deep nesting, links out of the suite) are made here. How fast each is
//! refused is measured by `iohil bench --only reject` (target: under a second), not asserted.

mod common;
use common::{iohil, repo, text};

use std::path::{Path, PathBuf};

/// A scratch suite: the shipped requirements and profiles, and whatever a test adds.
fn suite() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["requirements.yaml", "profiles.yaml"] {
        std::fs::copy(repo().join("scenarios").join(f), dir.path().join(f)).expect("copy");
    }
    dir
}

/// Runs `iohil <command> <path>`: exit 2, no panic, `expected` in stderr; the stderr.
fn refused(command: &str, path: &Path, expected: &[&str]) -> String {
    let out = iohil(&[command, path.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}: {err}", path.display());
    assert!(!err.contains("panicked"), "{err}");
    for e in expected {
        assert!(
            err.contains(e),
            "{}: expected {e:?} in\n{err}",
            path.display()
        );
    }
    assert!(
        text(&out.stdout).is_empty() || command != "run" || !text(&out.stdout).contains("PASS"),
        "nothing runs"
    );
    err
}

/// The committed corpus: file, its line:column, a fragment of the message.
const CORPUS: &[(&str, &str, &str)] = &[
    ("syntax-error.yaml", "5:5", "yaml syntax error"),
    ("tab-indent.yaml", "6:2", "tabs disallowed"),
    ("unknown-key.yaml", "7:3", "unknown field `hardness`"),
    ("wrong-type.yaml", "7:9", "expected a whole number"),
    ("out-of-range.yaml", "8:11", "out of range"),
    ("non-physical.yaml", "8:19", "out of range (must be > 0"),
    ("duplicate-key.yaml", "8:1", "duplicate key `trials`"),
    ("billion-laughs.yaml", "7:20", "expected a single value"),
    ("empty.yaml", "1:1", "the file is empty"),
    (
        "unknown-requirement.yaml",
        "4:19",
        "unknown requirement `SR-99`",
    ),
];

#[test]
fn every_corpus_file_is_refused_with_its_location() {
    let corpus = repo().join("harness/tests/corpus/bad");
    let listed: Vec<&str> = CORPUS.iter().map(|c| c.0).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(on_disk, sorted, "every corpus file has an expectation here");
    for (file, location, message) in CORPUS {
        let dir = suite();
        let path = dir.path().join(file);
        std::fs::copy(corpus.join(file), &path).unwrap();
        for command in ["check", "run"] {
            refused(command, &path, &[&format!("{file}:{location}:"), message]);
        }
    }
}

#[test]
fn files_too_big_binary_or_not_text_are_refused() {
    let dir = suite();
    // 50 MB of YAML-looking text: refused by its size before any parsing.
    let big = dir.path().join("big.yaml");
    let line = "- padding: 0123456789012345678901234567890123456789\n";
    std::fs::write(&big, line.repeat(50 * 1024 * 1024 / line.len() + 1)).unwrap();
    refused(
        "check",
        &big,
        &["big.yaml", "more than the 1048576-byte limit"],
    );
    // Binary garbage (NUL and control bytes in valid UTF-8), and bytes that are not UTF-8.
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, b"format_version: 1\nid: \x00\x01\x02\x1b[31m\n").unwrap();
    refused("check", &garbage, &["garbage.yaml:2:"]);
    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"format_version: 1\ntitle: caf\xe9\n").unwrap();
    refused("check", &latin1, &["latin1.yaml:2:", "not valid utf-8"]);
    // Deeply nested, both styles.
    let flow = dir.path().join("deep-flow.yaml");
    std::fs::write(&flow, format!("bone: {}\n", "[".repeat(100_000))).unwrap();
    refused("check", &flow, &["deep-flow.yaml:1:"]);
    let block = dir.path().join("deep-block.yaml");
    let nested: String = (0..2000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    std::fs::write(&block, nested).unwrap();
    refused("check", &block, &["deep-block.yaml:"]);
}

#[test]
fn paths_that_leave_the_suite_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("harness/tests/corpus/bad/unknown-key.yaml"),
        outside.path().join("stray.yaml"),
    )
    .unwrap();
    let dir = suite();
    std::fs::create_dir(dir.path().join("scenarios")).unwrap();
    // `..` out of the suite: the file is not in any suite.
    let escaping: PathBuf = dir
        .path()
        .join("scenarios")
        .join("..")
        .join("..")
        .join(outside.path().file_name().unwrap())
        .join("stray.yaml");
    refused(
        "check",
        &escaping,
        &["stray.yaml", "no `requirements.yaml` found"],
    );
    // A link inside the suite to a file outside it.
    let link = dir.path().join("scenarios").join("linked.yaml");
    std::os::unix::fs::symlink(outside.path().join("stray.yaml"), &link).unwrap();
    refused(
        "check",
        &dir.path().join("scenarios"),
        &["linked.yaml", "outside the suite"],
    );
    std::fs::remove_file(&link).unwrap();
    // A link to a device that never ends: it leads out of any suite.
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    refused(
        "check",
        &link,
        &["linked.yaml", "no `requirements.yaml` found"],
    );
    std::fs::remove_file(&link).unwrap();
    // A FIFO in the suite (opening it would wait for a writer for ever).
    let fifo = dir.path().join("scenarios").join("fifo.yaml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        refused("check", &fifo, &["fifo.yaml", "not a regular file"]);
        std::fs::remove_file(&fifo).unwrap();
    }
    // A directory without scenarios.
    refused(
        "check",
        &dir.path().join("scenarios"),
        &["scenarios", "no scenario files"],
    );
}

#[test]
fn run_ids_and_rig_files_are_validated() {
    for id in ["../escape", "/tmp/abs", "a/b", ".hidden", ""] {
        let out = iohil(&["run", "scenarios/reference", "--run-id", id]);
        assert_eq!(out.status.code(), Some(2), "run id {id:?}");
        assert!(
            text(&out.stderr).contains("run ID"),
            "{}",
            text(&out.stderr)
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let rig = dir.path().join("rig.yaml");
    let example = std::fs::read_to_string(repo().join("harness/rigs/example-bench.yaml")).unwrap();
    for (from, to, expected) in [
        (
            "\"0483:374e:002C00283137510A\"",
            "\"st-link\"",
            "rig.yaml:7:",
        ),
        (
            "dut_serial: IOD-000123",
            "dut_serial: \"IOD 123; rm -rf\"",
            "rig.yaml:10:",
        ),
        (
            "port: /dev/serial/by-id/usb-iohil_load-controller_LC0042-if00",
            "port: \"ttyUSB0\"",
            "rig.yaml:12:",
        ),
        (
            "calibration_due: \"2027-08-15\"",
            "calibration_due: \"next year\"",
            "rig.yaml:16:",
        ),
        (
            "sample_rate_hz: 2000",
            "sample_rate_hz: 50000",
            "rig.yaml:14:",
        ),
        (
            "rig_id: bench-01",
            "rig_id: bench-01\nrig_id: bench-02",
            "duplicate key",
        ),
    ] {
        assert!(example.contains(from), "{from}");
        std::fs::write(&rig, example.replace(from, to)).unwrap();
        let out = iohil(&[
            "run",
            "--rig",
            "bench",
            "--rig-file",
            rig.to_str().unwrap(),
            "scenarios/reference",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(expected), "{to}: expected {expected} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// One edit of a scenario's text.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    DuplicateLine(usize),
    SwapLines(usize, usize),
}

fn edit_strategy() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    let token = prop_oneof![
        Just(":".to_owned()),
        Just("- ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("[".to_owned()),
        Just("{".to_owned()),
        Just("\t".to_owned()),
        Just("\n  ".to_owned()),
        Just("!!binary ".to_owned()),
        Just("1e999".to_owned()),
        Just("-0.0".to_owned()),
        Just("~".to_owned()),
        Just("<<: *a\n".to_owned()),
        "[ -~]{0,12}".prop_map(|s| s),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), token).prop_map(|(at, t)| Edit::Insert(at, t)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let boundary = |at: usize| {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    match edit {
        Edit::Delete(at, n) => {
            let a = boundary(*at);
            let b = boundary(a.saturating_add(*n).min(text.len()));
            format!("{}{}", &text[..a], &text[b.max(a)..])
        }
        Edit::Insert(at, t) => {
            let a = boundary(*at);
            format!("{}{t}{}", &text[..a], &text[a..])
        }
        Edit::DuplicateLine(i) => {
            let lines: Vec<&str> = text.lines().collect();
            let i = i % lines.len().max(1);
            let mut out: Vec<&str> = lines.clone();
            if let Some(l) = lines.get(i) {
                out.insert(i, l);
            }
            out.join("\n")
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.lines().collect();
            let n = lines.len().max(1);
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: iohil::fuzz::property_test_cases(),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Scenario files damaged by random edits (deleted spans, YAML tokens, tabs, aliases,
    /// merge keys, huge numbers, duplicated and swapped lines) are loaded or refused, never a
    /// panic, and every refusal points at a line and column of the file.
    #[test]
    fn damaged_scenarios_are_refused_with_a_location(
        which in 0usize..6,
        edits in proptest::collection::vec(edit_strategy(), 1..6),
    ) {
        let files = [
            "scenarios/reference/adult-proximal-tibia.yaml",
            "scenarios/reference/osteoporotic-tibia.yaml",
            "scenarios/operator/adult-proximal-tibia-oscillation.yaml",
            "scenarios/operator/adult-push-step-down.yaml",
            "scenarios/protections/stall-locked-rotor.yaml",
            "scenarios/sensing/osteoporotic-sensor-errors.yaml",
        ];
        let root = repo().join("scenarios");
        let requirements = iohil::scenario::load::load_requirements(&root.join("requirements.yaml")).unwrap();
        let profiles = iohil::scenario::load::load_profiles(&root.join("profiles.yaml")).unwrap();
        let path = repo().join(files[which]);
        let mut text = std::fs::read_to_string(&path).unwrap();
        for e in &edits {
            text = apply(&text, e);
        }
        if let Err(error) = iohil::scenario::load::load_scenario_str(&path, &text, &requirements, &profiles) {
            for p in error.problems() {
                proptest::prop_assert!(p.line >= 1 && p.column >= 1, "{p:?} for\n{text}");
            }
        }
    }
}
