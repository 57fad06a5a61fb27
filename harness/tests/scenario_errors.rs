//! Scenario loading: every class of input error is reported with its message, file, line,
//! column and YAML path; valid files resolve to the expected values.

use std::fs;
use std::path::{Path, PathBuf};

use iohil::scenario::load::{
    load_profiles, load_requirements, load_scenario_str, load_suite, scenario_schema_json,
    LoadError, Problem,
};
use iohil::scenario::{Population, Ramp};
use rstest::rstest;
use sha2::Digest;
use tempfile::TempDir;

/// The repository's scenario suite root.
fn repo_scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// A temporary suite: copies of the real requirements and profiles files.
struct TempSuite {
    dir: TempDir,
}

impl TempSuite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in ["requirements.yaml", "profiles.yaml"] {
            fs::copy(repo_scenarios().join(name), dir.path().join(name)).unwrap();
        }
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    /// Rewrites a suite file, replacing `from` (which must occur) with `to` once.
    fn edit(&self, name: &str, from: &str, to: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{from:?} not in {name}");
        fs::write(&path, text.replacen(from, to, 1)).unwrap();
        path
    }

    fn errors(&self, paths: &[PathBuf]) -> Vec<Problem> {
        match load_suite(paths) {
            Ok(suite) => panic!(
                "expected errors, loaded {} scenarios",
                suite.scenarios.len()
            ),
            Err(e) => e.problems().to_vec(),
        }
    }

    /// Writes `s.yaml` and loads the suite, expecting exactly one problem.
    fn one(&self, text: &str) -> Problem {
        let file = self.write("s.yaml", text);
        let problems = self.errors(&[self.path().to_path_buf()]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let p = problems.into_iter().next().unwrap();
        assert_eq!(p.file, file);
        p
    }
}

/// Lines 1-6 of a valid scenario; a test appends its lines from line 7 on.
const BASE: &str = "format_version: 1
id: t
title: test
verifies: [SR-01]
bone:
  profile: adult-proximal-tibia
";

fn with_base(tail: &str) -> String {
    format!("{BASE}{tail}")
}

fn at(p: &Problem) -> (usize, usize, &str, &str) {
    (p.line, p.column, p.yaml_path.as_str(), p.message.as_str())
}

// ---------------------------------------------------------------------------------------------
// 1. Unknown keys
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_key_suggests_the_field_meant() {
    let s = TempSuite::new();
    let p = s.one(&with_base("operator:\n  pushn: 30\n"));
    assert_eq!(at(&p), (8, 3, "operator.pushn", "unknown field `pushn`"));
    assert_eq!(p.help.as_deref(), Some("did you mean `push_n`?"));
}

#[test]
fn unknown_key_in_a_list_item_has_its_index_in_the_path() {
    let s = TempSuite::new();
    let p = s.one(&with_base(
        "operator:\n  steps:\n    - {at_s: 1, change_pct: -10}\n    - {at_s: 2, chnge_pct: 5}\n",
    ));
    assert_eq!(
        at(&p),
        (
            10,
            17,
            "operator.steps[1].chnge_pct",
            "unknown field `chnge_pct`"
        )
    );
    assert_eq!(p.help.as_deref(), Some("did you mean `change_pct`?"));
}

#[test]
fn unknown_key_without_a_close_match_lists_the_fields() {
    let s = TempSuite::new();
    let p = s.one(&with_base("colour: red\n"));
    assert_eq!(at(&p), (7, 1, "colour", "unknown field `colour`"));
    let help = p.help.unwrap();
    assert!(
        help.starts_with("expected one of `format_version`, `id`"),
        "{help}"
    );
}

#[test]
fn unknown_key_in_the_profiles_file() {
    let s = TempSuite::new();
    // The first profile in the file is adult-proximal-tibia; its punch_through_n is line 26.
    let profiles = s.edit(
        "profiles.yaml",
        "    punch_through_n: 150\n",
        "    punch_thru_n: 150\n",
    );
    s.write("s.yaml", BASE);
    let problems = s.errors(&[s.path().to_path_buf()]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.file, profiles);
    assert_eq!(
        at(p),
        (
            26,
            5,
            "profiles.adult-proximal-tibia.punch_thru_n",
            "unknown field `punch_thru_n`"
        )
    );
    assert_eq!(p.help.as_deref(), Some("did you mean `punch_through_n`?"));
}

#[test]
fn unknown_key_in_the_requirements_file() {
    let s = TempSuite::new();
    let requirements = s.edit(
        "requirements.yaml",
        "    statistic: >-\n",
        "    statistc: >-\n",
    );
    let p = load_requirements(&requirements).unwrap_err().problems()[0].clone();
    assert_eq!(p.file, requirements);
    assert_eq!(
        at(&p),
        (
            20,
            5,
            "requirements[0].statistc",
            "unknown field `statistc`"
        )
    );
    assert_eq!(p.help.as_deref(), Some("did you mean `statistic`?"));
}

// ---------------------------------------------------------------------------------------------
// 2. Wrong types
// ---------------------------------------------------------------------------------------------

#[rstest]
#[case::text_for_number("operator:\n  push_n: hard\n", (8, 11, "operator.push_n", "expected a number, found `hard`"))]
#[case::text_for_count("trials: many\n", (7, 9, "trials", "expected a whole number >= 0 (u32), found `many`"))]
#[case::too_large_count("trials: 99999999999\n", (7, 9, "trials", "`99999999999` is too large (at most 4294967295)"))]
#[case::negative_count("seed: -1\n", (7, 7, "seed", "expected a whole number >= 0 (u64), found `-1`"))]
#[case::list_for_number("operator:\n  push_n: [30]\n", (8, 11, "operator.push_n", "expected a single value, found a sequence"))]
#[case::overflowing_number("operator:\n  push_n: 1e999\n", (8, 11, "operator.push_n", "`1e999` is not a finite number"))]
#[case::scalar_for_mapping("battery: full\n", (7, 10, "battery", "expected a mapping, found `full`"))]
fn wrong_type(#[case] tail: &str, #[case] expected: (usize, usize, &str, &str)) {
    let s = TempSuite::new();
    let p = s.one(&with_base(tail));
    assert_eq!(at(&p), expected);
}

#[test]
fn wrong_enum_value_suggests_the_value_meant() {
    let s = TempSuite::new();
    let p = s.one(&with_base("  population: adlt\n"));
    assert_eq!(at(&p), (7, 15, "bone.population", "unknown value `adlt`"));
    assert_eq!(
        p.help.as_deref(),
        Some("did you mean `adult`? expected one of `adult`, `child`")
    );
}

#[test]
fn wrong_ramp_target_suggests_medullary() {
    let s = TempSuite::new();
    let p = s.one(&with_base("  ramp_to: medulary\n"));
    assert_eq!(
        at(&p),
        (
            7,
            12,
            "bone.ramp_to",
            "expected a fraction (0 to 1) or `medullary`, found `medulary`"
        )
    );
    assert_eq!(p.help.as_deref(), Some("did you mean `medullary`?"));
}

// ---------------------------------------------------------------------------------------------
// 3. Out-of-range and impossible values
// ---------------------------------------------------------------------------------------------

#[rstest]
#[case::push_10_kn(
    "operator:\n  push_n: 10000\n",
    (8, 11, "operator.push_n", "`push_n` = 10000 N is out of range (must be > 0 and <= 300 N)")
)]
#[case::zero_thickness(
    "  soft_tissue: {thickness_mm: 0}\n",
    (7, 31, "bone.soft_tissue.thickness_mm", "`thickness_mm` = 0 mm is out of range (must be > 0 and <= 100 mm)")
)]
#[case::negative_cortex(
    "  cortex: {thickness_mm: -1}\n",
    (7, 26, "bone.cortex.thickness_mm", "`thickness_mm` = -1 mm is out of range (must be > 0 and <= 500 mm)")
)]
#[case::zero_frequency(
    "operator:\n  oscillation: {amplitude_pct: 10, frequency_hz: 0}\n",
    (8, 50, "operator.oscillation.frequency_hz", "`frequency_hz` = 0 Hz is out of range (must be >= 0.1 and <= 20 Hz)")
)]
#[case::zero_trials(
    "trials: 0\n",
    (7, 9, "trials", "`trials` = 0 is out of range (must be >= 1 and <= 10000)")
)]
#[case::nan(
    "operator:\n  push_n: .nan\n",
    (8, 11, "operator.push_n", "`push_n` is not a finite number (NaN)")
)]
#[case::infinite(
    "duration_s: .inf\n",
    (7, 13, "duration_s", "`duration_s` is not a finite number (inf)")
)]
#[case::negative_reaction(
    "operator:\n  reaction_ms: -5\n",
    (8, 16, "operator.reaction_ms", "`reaction_ms` = -5 ms is out of range (must be >= 0 and <= 2000 ms)")
)]
#[case::release_before_press(
    "operator:\n  trigger: {press_s: 0.5, release_s: 0.2}\n",
    (8, 38, "operator.trigger.release_s", "trigger release at 0.2 s is not after the press at 0.5 s")
)]
#[case::step_too_fast(
    "operator:\n  steps:\n    - {at_s: 1, change_pct: -40, rise_ms: 10}\n",
    (9, 43, "operator.steps[0].rise_ms", "`rise_ms` = 10 ms is out of range (must be >= 50 and <= 2000 ms)")
)]
#[case::step_too_deep(
    "operator:\n  steps:\n    - {at_s: 1, change_pct: -95}\n",
    (9, 29, "operator.steps[0].change_pct", "`change_pct` = -95 % is out of range (must be >= -90 and <= 100 %)")
)]
#[case::ramp_fraction(
    "  ramp_to: 1.5\n",
    (7, 12, "bone.ramp_to", "`ramp_to` = 1.5 is out of range (must be >= 0 and <= 1)")
)]
#[case::punch_through(
    "  punch_through_n: 5\n",
    (7, 20, "bone.punch_through_n", "`punch_through_n` = 5 N is out of range (must be >= 10 and <= 1000 N)")
)]
#[case::battery(
    "battery:\n  open_circuit_v: 12\n",
    (8, 19, "battery.open_circuit_v", "`open_circuit_v` = 12 V is out of range (must be >= 3 and <= 9 V)")
)]
#[case::motor(
    "motor: {temperature_c: 200}\n",
    (7, 24, "motor.temperature_c", "`temperature_c` = 200 degC is out of range (must be >= -20 and <= 120 degC)")
)]
#[case::sensor(
    "sensor: {gain_error_pct: 30}\n",
    (7, 26, "sensor.gain_error_pct", "`gain_error_pct` = 30 % is out of range (must be >= -20 and <= 20 %)")
)]
#[case::negative_k_t(
    "  cortex: {k_t: -1}\n",
    (7, 17, "bone.cortex.k_t", "`k_t` = -1 N*mm*rev/mm is out of range (must be >= 0 N*mm*rev/mm)")
)]
#[case::cap_not_below_cortex(
    "  cap_mm: 3\n",
    (7, 11, "bone.cap_mm", "`cap_mm` = 3 mm is not less than the cortex thickness 3 mm")
)]
#[case::lock_after_end(
    "plant_faults: {lock_rotor_at_s: 20}\n",
    (7, 33, "plant_faults.lock_rotor_at_s", "rotor lock at 20 s is after the end of the trial (duration_s 12 s)")
)]
fn out_of_range(#[case] tail: &str, #[case] expected: (usize, usize, &str, &str)) {
    let s = TempSuite::new();
    let p = s.one(&with_base(tail));
    assert_eq!(at(&p), expected);
    assert!(p.help.is_some(), "{p}");
}

#[test]
fn out_of_range_help_says_where_the_bound_comes_from() {
    let s = TempSuite::new();
    let p = s.one(&with_base("operator:\n  push_n: 10000\n"));
    assert!(p
        .help
        .unwrap()
        .contains("punch-through forces are 100-250 N"));
}

#[test]
fn inherited_value_clashing_with_an_override_points_at_the_override() {
    let s = TempSuite::new();
    // The profile's cap (0.3 mm) is thicker than the overridden cortex.
    let p = s.one(&with_base("  cortex:\n    thickness_mm: 0.2\n"));
    assert_eq!(
        at(&p),
        (
            8,
            19,
            "bone.cortex.thickness_mm",
            "`cap_mm` = 0.3 mm is not less than the cortex thickness 0.2 mm (`cap_mm` from profile `adult-proximal-tibia`)"
        )
    );
    // A ramp shorter than the profile's cap.
    let p = s.one(&with_base("  ramp_mm: 0.1\n"));
    assert_eq!(
        at(&p),
        (
            7,
            12,
            "bone.ramp_mm",
            "`cap_mm` = 0.3 mm is larger than the ramp length 0.1 mm (`cap_mm` from profile `adult-proximal-tibia`)"
        )
    );
}

#[test]
fn all_semantic_problems_of_a_file_are_reported() {
    let s = TempSuite::new();
    s.write(
        "s.yaml",
        &with_base("operator:\n  push_n: 0\n  relaxed_fraction: 2\ntrials: 0\n"),
    );
    let problems = s.errors(&[s.path().to_path_buf()]);
    let paths: Vec<_> = problems.iter().map(|p| p.yaml_path.as_str()).collect();
    assert_eq!(
        paths,
        ["operator.push_n", "operator.relaxed_fraction", "trials"]
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Duplicate keys
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_key_points_at_the_second() {
    let s = TempSuite::new();
    let p = s.one(&with_base("operator:\n  push_n: 30\n  push_n: 40\n"));
    assert_eq!(at(&p), (9, 3, "operator.push_n", "duplicate key `push_n`"));
    assert_eq!(
        p.help.as_deref(),
        Some("already given at line 8, column 3; a key may appear only once in a mapping")
    );
}

#[test]
fn duplicate_top_level_key() {
    let s = TempSuite::new();
    let p = s.one(&with_base("id: u\n"));
    assert_eq!(at(&p), (7, 1, "id", "duplicate key `id`"));
}

#[test]
fn duplicate_profile_name_in_the_profiles_file() {
    let s = TempSuite::new();
    let text = fs::read_to_string(s.path().join("profiles.yaml")).unwrap();
    let lines = text.lines().count();
    let profiles = s.write(
        "profiles.yaml",
        &format!("{text}  adult-proximal-tibia:\n    population: adult\n"),
    );
    let p = load_profiles(&profiles).unwrap_err().problems()[0].clone();
    assert_eq!(
        at(&p),
        (
            lines + 1,
            3,
            "profiles.adult-proximal-tibia",
            "duplicate key `adult-proximal-tibia`"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Unknown profile
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_profile_lists_the_profiles() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("adult-proximal-tibia", "adult-tibia"));
    assert_eq!(
        at(&p),
        (6, 12, "bone.profile", "unknown profile `adult-tibia`")
    );
    assert_eq!(
        p.help.as_deref(),
        Some(
            "did you mean `adult-proximal-tibia`? valid profiles: `adult-proximal-humerus`, \
             `adult-proximal-tibia`, `dense-young-tibia`, `osteoporotic-tibia`, \
             `pediatric-proximal-tibia`"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Requirements verified
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_requirement_lists_the_ids() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("[SR-01]", "[SR-01, SR-02, SR-13]"));
    assert_eq!(
        at(&p),
        (4, 26, "verifies[2]", "unknown requirement `SR-13`")
    );
    let help = p.help.unwrap();
    assert!(
        help.ends_with("valid requirement IDs: `SR-01`, `SR-02`, `SR-03`, `SR-04`, `SR-05`, `SR-06`, `SR-07`, `SR-08`, `SR-09`, `SR-10`, `SR-11`, `SR-12`"),
        "{help}"
    );
}

#[test]
fn empty_verifies_is_an_error() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("[SR-01]", "[]"));
    assert_eq!(at(&p), (4, 1, "verifies", "`verifies` is empty"));
}

#[test]
fn duplicate_requirement_points_at_the_second() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("[SR-01]", "[SR-01, SR-02, SR-01]"));
    assert_eq!(
        at(&p),
        (4, 26, "verifies[2]", "duplicate requirement `SR-01`")
    );
    assert_eq!(
        p.help.as_deref(),
        Some("first given at verifies[0] (line 4, column 12)")
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Missing fields, format version, custom bones
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_required_field() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("title: test\n", ""));
    assert_eq!(at(&p), (1, 1, "title", "missing required field `title`"));
}

#[test]
fn missing_nested_required_field() {
    let s = TempSuite::new();
    let p = s.one(&with_base(
        "operator:\n  oscillation:\n    amplitude_pct: 10\n",
    ));
    assert_eq!(
        at(&p),
        (
            8,
            3,
            "operator.oscillation.frequency_hz",
            "missing required field `frequency_hz`"
        )
    );
}

#[test]
fn unsupported_format_version() {
    let s = TempSuite::new();
    let p = s.one(&BASE.replace("format_version: 1", "format_version: 2"));
    assert_eq!(
        at(&p),
        (1, 17, "format_version", "unsupported format_version 2")
    );
    assert_eq!(p.help.as_deref(), Some("only format_version 1 exists"));
}

/// A complete custom bone (lines 5-14) and push (lines 15-16).
const CUSTOM: &str = "format_version: 1
id: custom
title: custom bone
verifies: [SR-01]
bone:
  population: child
  soft_tissue: { thickness_mm: 5, f_th_n: 0.5, k_f: 5, k_t: 0.5, t_fr_nmm: 0.5, f_max_mm_per_rev: 2 }
  cortex: { thickness_mm: 2, f_th_n: 8, k_f: 190, k_t: 160, t_fr_nmm: 3, f_max_mm_per_rev: 0.5 }
  medullary: { thickness_mm: 10, f_th_n: 2, k_f: 15, k_t: 1.5, t_fr_nmm: 2, f_max_mm_per_rev: 2 }
  far_cortex: { thickness_mm: 1.5, k_f: 100 }
  ramp_mm: 1.0
  ramp_to: medullary
  cap_mm: 0.2
  punch_through_n: 100
operator:
  push_n: 25
";

#[test]
fn custom_bone_missing_a_layer_parameter() {
    let s = TempSuite::new();
    let p = s.one(&CUSTOM.replace("k_t: 160, ", ""));
    assert_eq!(
        at(&p),
        (8, 3, "bone.cortex.k_t", "missing field `bone.cortex.k_t`")
    );
    assert!(p
        .help
        .unwrap()
        .starts_with("a bone without `profile` must give every parameter"));
}

#[test]
fn custom_bone_requires_population_and_push() {
    let s = TempSuite::new();
    s.write(
        "s.yaml",
        &CUSTOM
            .replace("  population: child\n", "")
            .replace("operator:\n  push_n: 25\n", ""),
    );
    let problems = s.errors(&[s.path().to_path_buf()]);
    let found: Vec<_> = problems.iter().map(at).collect();
    assert_eq!(
        found,
        [
            (5, 1, "bone.population", "missing field `bone.population`"),
            (5, 1, "operator.push_n", "missing field `operator.push_n`"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Duplicate scenario ids
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_scenario_id_points_at_the_second_file() {
    let s = TempSuite::new();
    let first = s.write("a/first.yaml", BASE);
    let second = s.write("b/second.yaml", BASE);
    let problems = s.errors(&[s.path().to_path_buf()]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.file, second);
    assert_eq!(at(p), (2, 5, "id", "duplicate scenario id `t`"));
    assert_eq!(
        p.help.clone().unwrap(),
        format!(
            "first used at {}:2:5; scenario ids must be unique in a suite",
            first.display()
        )
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Syntax, encoding, paths
// ---------------------------------------------------------------------------------------------

#[test]
fn yaml_syntax_error() {
    let s = TempSuite::new();
    let p = s.one(&with_base("  cap_mm: 'thin\n"));
    assert_eq!(at(&p), (7, 11, "", "yaml syntax error: unclosed quote"));
}

#[test]
fn yaml_syntax_error_tab_indentation() {
    let s = TempSuite::new();
    let p = s.one("format_version: 1\nbone:\n\tprofile: x\n");
    // The parser reports the position after the tab.
    assert_eq!(
        at(&p),
        (
            3,
            2,
            "",
            "yaml syntax error: tabs disallowed within this context (block indentation)"
        )
    );
}

#[test]
fn file_that_is_not_utf8() {
    let s = TempSuite::new();
    let file = s.dir.path().join("s.yaml");
    fs::write(&file, b"format_version: 1\nid: caf\xe9\n").unwrap();
    let problems = s.errors(std::slice::from_ref(&file));
    assert_eq!(problems.len(), 1);
    let p = &problems[0];
    assert_eq!(p.file, file);
    assert_eq!(at(p), (2, 8, "", "file is not valid utf-8 (byte 0xe9)"));
}

#[test]
fn path_that_does_not_exist() {
    let s = TempSuite::new();
    let missing = s.path().join("nope.yaml");
    let problems = s.errors(std::slice::from_ref(&missing));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(p.file, missing);
    assert_eq!(at(p), (0, 0, "", "path does not exist"));
}

#[test]
fn directory_without_scenarios() {
    let s = TempSuite::new();
    let empty = s.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let problems = s.errors(std::slice::from_ref(&empty));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, empty);
    assert_eq!(
        problems[0].message,
        "no scenario files (*.yaml, *.yml) in this directory"
    );
}

#[test]
fn no_requirements_file_above_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.yaml");
    fs::write(&file, BASE).unwrap();
    let problems = load_suite(std::slice::from_ref(&file))
        .unwrap_err()
        .problems()
        .to_vec();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, file);
    assert_eq!(
        problems[0].message,
        "no `requirements.yaml` found in this directory or any parent"
    );
    assert_eq!(
        problems[0].help.as_deref(),
        Some("run from the repository or pass a path under scenarios/")
    );
}

#[test]
fn paths_from_two_suites() {
    let a = TempSuite::new();
    let b = TempSuite::new();
    let fa = a.write("s.yaml", BASE);
    let fb = b.write("s.yaml", BASE);
    let problems = a.errors(&[fa, fb.clone()]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, fb);
    assert!(problems[0]
        .message
        .starts_with("path belongs to the suite at"));
}

#[test]
fn suite_without_profiles_file() {
    let s = TempSuite::new();
    fs::remove_file(s.path().join("profiles.yaml")).unwrap();
    s.write("s.yaml", BASE);
    let problems = s.errors(&[s.path().to_path_buf()]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].file, s.path().join("profiles.yaml"));
    assert_eq!(
        problems[0].message,
        "the suite root has `requirements.yaml` but no `profiles.yaml`"
    );
}

#[test]
fn problems_of_all_files_are_reported() {
    let s = TempSuite::new();
    s.write("a.yaml", &with_base("trials: 0\n"));
    s.write(
        "b.yaml",
        &BASE.replace("id: t", "id: u").replace("[SR-01]", "[SR-99]"),
    );
    let problems = s.errors(&[s.path().to_path_buf()]);
    let files: Vec<_> = problems
        .iter()
        .map(|p| p.file.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(files, ["a.yaml", "b.yaml"]);
}

// ---------------------------------------------------------------------------------------------
// Requirements file
// ---------------------------------------------------------------------------------------------

#[test]
fn requirement_with_undefined_hazard() {
    let s = TempSuite::new();
    let requirements = s.edit(
        "requirements.yaml",
        "    hazard: HZ-02\n",
        "    hazard: HZ-05\n",
    );
    let problems = load_requirements(&requirements)
        .unwrap_err()
        .problems()
        .to_vec();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        at(&problems[0]),
        (68, 13, "requirements[4].hazard", "unknown hazard `HZ-05`")
    );
    assert_eq!(
        problems[0].help.as_deref(),
        Some("hazards defined in this file: `HZ-01`, `HZ-02`, `HZ-03`, `HZ-04`")
    );
}

#[test]
fn duplicate_requirement_id() {
    let s = TempSuite::new();
    let requirements = s.edit("requirements.yaml", "  - id: SR-02\n", "  - id: SR-01\n");
    let problems = load_requirements(&requirements)
        .unwrap_err()
        .problems()
        .to_vec();
    // SR-02's limits under the ID SR-01 are reported too (not SR-01's); the duplicate first.
    let duplicate = problems
        .iter()
        .find(|p| p.yaml_path == "requirements[1].id")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert_eq!(
        at(duplicate),
        (
            31,
            9,
            "requirements[1].id",
            "duplicate requirement id `SR-01`"
        )
    );
}

/// Each nonsense limit of issue 17 is refused where it is written, with a hint.
#[rstest]
#[case::negative_latency(
    "max_latency_ms: { value: 20, unit: ms }",
    "max_latency_ms: { value: -20, unit: ms }",
    "requirements[0].limits.max_latency_ms.value",
    "limit `max_latency_ms` must be > 0 (it is -20)"
)]
#[case::seconds_for_milliseconds(
    "max_latency_ms: { value: 20, unit: ms }",
    "max_latency_ms: { value: 20, unit: s }",
    "requirements[0].limits.max_latency_ms.unit",
    "limit `max_latency_ms` is in `s`, the evaluator reads it in `ms`"
)]
#[case::fraction_above_one(
    "stopped_speed_fraction: { value: 0.05,",
    "stopped_speed_fraction: { value: 5,",
    "requirements[1].limits.stopped_speed_fraction.value",
    "limit `stopped_speed_fraction` is a fraction, in [0, 1] (it is 5)"
)]
#[case::negative_count(
    "max_far_contacts: { value: 0,",
    "max_far_contacts: { value: -1,",
    "requirements[3].limits.max_far_contacts.value",
    "limit `max_far_contacts` is a count, a whole number >= 0 (it is -1)"
)]
#[case::p99_above_max(
    "p99_latency_ms: { value: 15, unit: ms }",
    "p99_latency_ms: { value: 25, unit: ms }",
    "requirements[0].limits.p99_latency_ms.value",
    "`p99_latency_ms` (25) is above `max_latency_ms` (20)"
)]
#[case::misspelt(
    "min_blanking_ms: { value: 50, unit: ms }",
    "min_blankng_ms: { value: 50, unit: ms }",
    "requirements[5].limits",
    "SR-06 has no limit `min_blanking_ms`"
)]
#[case::unknown_requirement(
    "  - id: SR-12\n",
    "  - id: SR-13\n",
    "requirements[11].id",
    "the harness has no check for requirement `SR-13`"
)]
#[case::missing_clause(
    "      c: The motor does not restart by itself.\n",
    "",
    "requirements[6].clauses",
    "SR-07 has no clause `c`"
)]
#[case::unknown_clause(
    "      b: The stop carries a stall fault.",
    "      d: The stop carries a stall fault.",
    "requirements[6].clauses.d",
    "unknown clause `d` for SR-07"
)]
#[case::empty_clause(
    "      b: The stop carries a stall fault.",
    "      b: \"\"",
    "requirements[6].clauses.b",
    "clause SR-07.b has no text"
)]
fn nonsense_limits_are_refused_with_their_location(
    #[case] from: &str,
    #[case] to: &str,
    #[case] yaml_path: &str,
    #[case] message: &str,
) {
    let s = TempSuite::new();
    let requirements = s.edit("requirements.yaml", from, to);
    let problems = load_requirements(&requirements)
        .unwrap_err()
        .problems()
        .to_vec();
    let p = problems
        .iter()
        .find(|p| p.yaml_path == yaml_path)
        .unwrap_or_else(|| panic!("no problem at {yaml_path}: {problems:#?}"));
    assert_eq!(p.message, message);
    assert!(p.line > 0 && p.column > 0, "{p:?}");
    assert_eq!(p.file, requirements);
    // A misspelt limit is also reported as unknown, with the name it was meant to be.
    if yaml_path == "requirements[5].limits" {
        let unknown = problems
            .iter()
            .find(|p| p.yaml_path == "requirements[5].limits.min_blankng_ms")
            .expect("unknown limit reported");
        assert!(unknown
            .help
            .as_deref()
            .is_some_and(|h| h.contains("did you mean `min_blanking_ms`?")));
    }
}

/// Every clause the evaluator checks is in the shipped requirements file, with its text, and
/// nothing else is.
#[test]
fn the_shipped_requirements_split_every_requirement_into_the_evaluated_clauses() {
    let requirements = load_requirements(&repo_scenarios().join("requirements.yaml")).unwrap();
    let listed: Vec<&str> = requirements
        .requirements
        .iter()
        .flat_map(|r| r.clauses.iter())
        .inspect(|c| assert!(!c.text.trim().is_empty(), "{}", c.id))
        .map(|c| c.id.as_str())
        .collect();
    let evaluated: Vec<&str> = iohil::verdict::CLAUSE_RULES.iter().map(|r| r.id).collect();
    assert_eq!(listed, evaluated);
}

#[test]
fn the_shipped_requirements_give_every_limit_the_evaluator_reads() {
    let requirements = load_requirements(&repo_scenarios().join("requirements.yaml")).unwrap();
    for rule in iohil::verdict::LIMIT_RULES {
        let req = requirements.get(rule.requirement).expect(rule.requirement);
        let limit = req.limits.get(rule.name).expect(rule.name);
        assert_eq!(limit.unit, rule.unit, "{}", rule.name);
    }
}

/// `tolerances.yaml` is validated like a scenario: file, line, column, YAML path and a hint.
#[test]
fn nonsense_tolerances_are_refused_with_their_location() {
    let s = TempSuite::new();
    fs::copy(
        repo_scenarios().join("tolerances.yaml"),
        s.path().join("tolerances.yaml"),
    )
    .unwrap();
    let path = s.edit(
        "tolerances.yaml",
        "detection_latency_ms: { abs: 0.5, rel: 0.05, better: lower, requirement: SR-01, unit: ms }",
        "detection_latncy_ms: { abs: 0.5, rel: 0.05, better: lower, requirement: SR-01, unit: ms }",
    );
    s.edit(
        "tolerances.yaml",
        "overshoot_mm:         { abs: 0.05,",
        "overshoot_mm:         { abs: -0.05,",
    );
    s.edit(
        "tolerances.yaml",
        "requirement: SR-02, unit: ms",
        "requirement: SR-2, unit: s",
    );
    let error = match iohil::baseline::load_tolerances(&path) {
        Err(iohil::baseline::BaselineError::Input(error)) => error,
        other => panic!("expected located problems, got {other:?}"),
    };
    let problems: Vec<(String, String)> = error
        .problems()
        .iter()
        .map(|p| {
            assert!(p.line > 0 && p.column > 0 && p.help.is_some(), "{p:?}");
            (p.yaml_path.clone(), p.message.clone())
        })
        .collect();
    let expected = [
        (
            "metrics.detection_latncy_ms",
            "unknown metric `detection_latncy_ms`",
        ),
        (
            "metrics.overshoot_mm.abs",
            "tolerance `abs` of `overshoot_mm` must be a finite number >= 0 (it is -0.05)",
        ),
        (
            "metrics.time_to_stop_ms.requirement",
            "unknown requirement `SR-2`",
        ),
        (
            "metrics.time_to_stop_ms.unit",
            "`time_to_stop_ms` is measured in `ms`, not `s`",
        ),
    ];
    for (at, message) in expected {
        assert!(
            problems.iter().any(|(a, m)| a == at && m == message),
            "{at}: {message} not in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn scenario_error(text: &str) -> LoadError {
    let root = repo_scenarios();
    let requirements = load_requirements(&root.join("requirements.yaml")).unwrap();
    let profiles = load_profiles(&root.join("profiles.yaml")).unwrap();
    load_scenario_str(Path::new("x.yaml"), text, &requirements, &profiles).unwrap_err()
}

#[test]
fn display_has_file_line_and_column() {
    let err = scenario_error(&with_base("operator:\n  pushn: 30\n"));
    assert_eq!(
        err.problems()[0].to_string(),
        "x.yaml:8:3: operator.pushn: unknown field `pushn` (help: did you mean `push_n`?)"
    );
    assert_eq!(
        err.to_string(),
        "1 problem in scenario files:\n  x.yaml:8:3: operator.pushn: unknown field `pushn`"
    );
}

#[test]
fn fancy_rendering_underlines_the_yaml() {
    let err = scenario_error(&with_base("operator:\n  pushn: 30\n"));
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &err)
        .unwrap();
    assert!(out.contains("[x.yaml:8:3]"), "{out}");
    assert!(out.contains("  pushn: 30"), "{out}");
    assert!(out.contains("did you mean `push_n`?"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------

#[test]
fn reference_suite_loads() {
    let suite = load_suite(&[repo_scenarios()]).unwrap_or_else(|e| panic!("{e}"));
    let s = suite
        .scenarios
        .iter()
        .find(|s| s.id == "adult-proximal-tibia-nominal")
        .unwrap();
    assert_eq!(
        s.verifies,
        ["SR-01", "SR-02", "SR-03", "SR-04", "SR-05", "SR-06"]
    );
    assert_eq!(s.bone.profile.as_deref(), Some("adult-proximal-tibia"));
    assert_eq!(s.bone.population, Population::Adult);
    assert_eq!(s.bone.soft_tissue.thickness_mm, 15.0);
    assert_eq!(
        s.bone.soft_tissue.f_th_n, 0.5,
        "merged from the `&soft` anchor"
    );
    assert_eq!(s.bone.cortex.k_f, 311.0);
    assert_eq!(s.bone.far_cortex.thickness_mm, 3.0);
    assert_eq!(
        s.bone.far_cortex.k_t, 270.0,
        "far cortex strength is the near cortex's"
    );
    assert_eq!(s.bone.ramp_to, Ramp::Fraction(0.4));
    assert_eq!(s.operator.push_n, 35.0);
    assert_eq!(s.operator.press_s, 0.01);
    assert_eq!(s.operator.reaction_s, 0.2);
    assert_eq!(s.battery.open_circuit_v, 6.4);
    assert_eq!(s.battery.internal_resistance_ohm, 0.25);
    assert_eq!(s.motor_temperature_c, 20.0);
    assert_eq!((s.trials, s.seed, s.duration_s), (1, 0, 12.0));
    let bytes = fs::read(&s.source.path).unwrap();
    assert_eq!(
        s.source.sha256,
        format!("{:x}", sha2::Sha256::digest(&bytes))
    );
    assert!(suite.root.join("requirements.yaml").is_file());
    assert_eq!(suite.requirements.requirements.len(), 12);
    assert_eq!(
        suite.requirements.get("SR-01").unwrap().limits["max_latency_ms"].value,
        20.0
    );
}

#[test]
fn humerus_ramp_longer_than_cortex_is_clipped() {
    let profiles = load_profiles(&repo_scenarios().join("profiles.yaml")).unwrap();
    let bone = &profiles.get("adult-proximal-humerus").unwrap().bone;
    assert_eq!(bone.cortex.thickness_mm, 1.2);
    assert_eq!(bone.ramp_mm, 1.2);
}

#[test]
fn profile_with_overrides_resolves() {
    let root = repo_scenarios();
    let requirements = load_requirements(&root.join("requirements.yaml")).unwrap();
    let profiles = load_profiles(&root.join("profiles.yaml")).unwrap();
    let text = "format_version: 1
id: over
title: overrides
verifies: [SR-03, SR-05]
bone:
  profile: pediatric-proximal-tibia
  population: adult
  cortex: { k_f: 250 }
  far_cortex: { thickness_mm: 2.5 }
  ramp_to: medullary
operator:
  oscillation: { amplitude_pct: 20, frequency_hz: 2, phase_deg: 90 }
  steps:
    - { at_s: 3, change_pct: 50 }
    - { at_s: 1, change_pct: -40, rise_ms: 200 }
  reaction_ms: 300
  trigger: { press_s: 0.1, release_s: 5 }
battery: { open_circuit_v: 5.5 }
motor: { temperature_c: 60 }
sensor: { gain_error_pct: -5, offset_ma: 20, noise_ma_rms: 10 }
plant_faults: { lock_rotor_at_s: 4 }
trials: 100
seed: 7
duration_s: 8
";
    let s = load_scenario_str(Path::new("over.yaml"), text, &requirements, &profiles)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.bone.population, Population::Adult);
    assert_eq!(s.bone.cortex.k_f, 250.0);
    assert_eq!(s.bone.cortex.k_t, 160.0, "other fields from the profile");
    assert_eq!(s.bone.far_cortex.thickness_mm, 2.5);
    assert_eq!(
        s.bone.far_cortex.k_f, 250.0,
        "far cortex follows the overridden cortex"
    );
    assert_eq!(s.bone.ramp_to, Ramp::Medullary);
    assert_eq!(s.operator.push_n, 25.0, "profile's push");
    let osc = s.operator.oscillation.unwrap();
    assert_eq!(osc.amplitude_fraction, 0.2);
    assert_eq!(osc.frequency_hz, 2.0);
    assert_eq!(osc.phase_rad, Some(std::f64::consts::FRAC_PI_2));
    let steps: Vec<_> = s
        .operator
        .steps
        .iter()
        .map(|st| (st.at_s, st.change_fraction, st.rise_s))
        .collect();
    assert_eq!(steps, [(1.0, -0.4, 0.2), (3.0, 0.5, 0.08)]);
    assert_eq!(s.operator.reaction_s, 0.3);
    assert_eq!((s.operator.press_s, s.operator.release_s), (0.1, Some(5.0)));
    assert_eq!(s.battery.open_circuit_v, 5.5);
    assert_eq!(s.battery.internal_resistance_ohm, 0.25);
    assert_eq!(s.motor_temperature_c, 60.0);
    assert_eq!(s.sensor.gain_error, -0.05);
    assert_eq!(s.sensor.offset_a, 0.02);
    assert_eq!(s.sensor.noise_a_rms, 0.01);
    assert_eq!(s.lock_rotor_at_s, Some(4.0));
    assert_eq!((s.trials, s.seed, s.duration_s), (100, 7, 8.0));
    assert_eq!(s.source.path, Path::new("over.yaml"));
    assert_eq!(
        s.source.sha256,
        format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
    );
}

#[test]
fn oscillation_without_phase_leaves_it_to_the_trial() {
    let root = repo_scenarios();
    let requirements = load_requirements(&root.join("requirements.yaml")).unwrap();
    let profiles = load_profiles(&root.join("profiles.yaml")).unwrap();
    let text = with_base("operator:\n  oscillation: { amplitude_pct: 20, frequency_hz: 2 }\n");
    let s = load_scenario_str(Path::new("x.yaml"), &text, &requirements, &profiles).unwrap();
    assert_eq!(s.operator.oscillation.unwrap().phase_rad, None);
}

#[test]
fn custom_bone_resolves() {
    let s = TempSuite::new();
    s.write("custom.yaml", CUSTOM);
    let suite = load_suite(&[s.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    let b = &suite.scenarios[0].bone;
    assert_eq!(b.profile, None);
    assert_eq!(b.population, Population::Child);
    assert_eq!(b.cortex.thickness_mm, 2.0);
    assert_eq!(b.far_cortex.k_f, 100.0);
    assert_eq!(
        b.far_cortex.k_t, 160.0,
        "far cortex strength defaults to the cortex's"
    );
    assert_eq!(b.ramp_to, Ramp::Medullary);
    assert_eq!((b.ramp_mm, b.cap_mm, b.punch_through_n), (1.0, 0.2, 100.0));
    assert_eq!(suite.scenarios[0].operator.push_n, 25.0);
}

#[test]
fn ramp_to_accepts_a_fraction_or_medullary() {
    let root = repo_scenarios();
    let requirements = load_requirements(&root.join("requirements.yaml")).unwrap();
    let profiles = load_profiles(&root.join("profiles.yaml")).unwrap();
    for (value, expected) in [
        ("0.4", Ramp::Fraction(0.4)),
        ("1", Ramp::Fraction(1.0)),
        ("medullary", Ramp::Medullary),
    ] {
        let text = with_base(&format!("  ramp_to: {value}\n"));
        let s = load_scenario_str(Path::new("x.yaml"), &text, &requirements, &profiles).unwrap();
        assert_eq!(s.bone.ramp_to, expected);
    }
}

#[test]
fn scenarios_are_sorted_by_path() {
    let s = TempSuite::new();
    s.write("z.yaml", &BASE.replace("id: t", "id: z"));
    s.write("a/b.yml", &BASE.replace("id: t", "id: b"));
    s.write("a.yaml", &BASE.replace("id: t", "id: a"));
    let suite = load_suite(&[s.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<_> = suite.scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["b", "a", "z"]);
}

#[test]
fn schema_is_json_and_describes_the_format() {
    let schema = scenario_schema_json();
    let value: serde_json::Value = serde_json::from_str(&schema).unwrap();
    assert!(value.is_object());
    assert!(schema.contains("push_n"));
    assert!(schema.contains("medullary"));
}

#[test]
fn garbage_is_reported_not_panicked_on() {
    let root = repo_scenarios();
    let requirements = load_requirements(&root.join("requirements.yaml")).unwrap();
    let profiles = load_profiles(&root.join("profiles.yaml")).unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let inputs = [
        "",
        "~",
        "[]",
        "just text",
        "---\na: 1\n---\nb: 2\n",
        "a: &x [*x]\n",
        "? [a]\n: b\n",
        "<<: 5\n",
        "\u{feff}format_version: 1\n",
        "format_version: 1\r\nid: x\r\ntitle: t\r\nverifies: [SR-01]\r\nbone: {profile: adult-proximal-tibia}\r\ntrials: 99999999999\r\n",
        "bone: {profile: *nope}\n",
        deep.as_str(),
    ];
    for text in inputs {
        let err =
            load_scenario_str(Path::new("g.yaml"), text, &requirements, &profiles).expect_err(text);
        assert!(!err.problems().is_empty());
        for p in err.problems() {
            assert!(p.line >= 1 && p.column >= 1, "{p}");
            assert!(!p.message.is_empty());
        }
    }
}

#[test]
fn profile_value_out_of_range_points_through_the_merge_key() {
    let s = TempSuite::new();
    // The shared `&soft` anchor (line 11) is merged into every profile.
    let profiles = s.edit("profiles.yaml", "  k_f: 5.0\n", "  k_f: 0\n");
    let problems = load_profiles(&profiles).unwrap_err().problems().to_vec();
    let found: Vec<_> = problems.iter().map(at).collect();
    let message = "`k_f` = 0 N*rev/mm is out of range (must be > 0 N*rev/mm)";
    assert_eq!(
        found,
        [
            (
                11,
                8,
                "profiles.adult-proximal-humerus.soft_tissue.k_f",
                message
            ),
            (
                11,
                8,
                "profiles.adult-proximal-tibia.soft_tissue.k_f",
                message
            ),
            (11, 8, "profiles.dense-young-tibia.soft_tissue.k_f", message),
            (
                11,
                8,
                "profiles.osteoporotic-tibia.soft_tissue.k_f",
                message
            ),
            (
                11,
                8,
                "profiles.pediatric-proximal-tibia.soft_tissue.k_f",
                message
            ),
        ]
    );
}

#[test]
fn profile_missing_a_parameter() {
    let s = TempSuite::new();
    let profiles = s.edit(
        "profiles.yaml",
        "    cortex: { thickness_mm: 3.0, f_th_n: 12, k_f: 311, k_t: 270, t_fr_nmm: 6, f_max_mm_per_rev: 0.5 }\n",
        "    cortex: { thickness_mm: 3.0, f_th_n: 12, k_f: 311, t_fr_nmm: 6, f_max_mm_per_rev: 0.5 }\n",
    );
    let problems = load_profiles(&profiles).unwrap_err().problems().to_vec();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        at(&problems[0]),
        (
            20,
            5,
            "profiles.adult-proximal-tibia.cortex.k_t",
            "missing field `profiles.adult-proximal-tibia.cortex.k_t`"
        )
    );
}
