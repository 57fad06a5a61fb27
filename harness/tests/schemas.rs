//! The published JSON Schemas (`harness/schemas/`) match the code, and real files validate.

mod common;
use common::repo;

use std::process::Command;

fn published(name: &str) -> serde_json::Value {
    let path = repo().join("harness/schemas").join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn published_schemas_are_the_generated_ones() {
    let results: serde_json::Value =
        serde_json::from_str(&iohil::run::results_schema_json()).unwrap();
    assert_eq!(
        published("results.schema.json"),
        results,
        "regenerate with: cargo run -p iohil -- schema --results > harness/schemas/results.schema.json"
    );
    let scenario: serde_json::Value =
        serde_json::from_str(&iohil::scenario::load::scenario_schema_json()).unwrap();
    assert_eq!(
        published("scenario.schema.json"),
        scenario,
        "regenerate with: cargo run -p iohil -- schema > harness/schemas/scenario.schema.json"
    );
}

fn validate(schema: serde_json::Value, instance: &serde_json::Value) -> Result<(), String> {
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("mem://schema.json", schema)
        .map_err(|e| e.to_string())?;
    let index = compiler
        .compile("mem://schema.json", &mut schemas)
        .map_err(|e| e.to_string())?;
    schemas.validate(instance, index).map_err(|e| e.to_string())
}

#[test]
fn a_real_results_json_validates_and_a_wrong_one_does_not() {
    let reports = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iohil"))
        .args([
            "run",
            "scenarios/reference/osteoporotic-tibia.yaml",
            "--no-progress",
        ])
        .arg("--reports")
        .arg(reports.path())
        .args(["--run-id", "s"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reports.path().join("s/results.json")).unwrap())
            .unwrap();
    let schema = published("results.schema.json");
    validate(schema.clone(), &results).unwrap();

    let mut wrong = results.clone();
    wrong["scenarios"][0]["verdict"] = serde_json::json!("MAYBE");
    assert!(validate(schema.clone(), &wrong).is_err());
    let mut wrong = results;
    wrong.as_object_mut().unwrap().remove("acceptance");
    assert!(validate(schema, &wrong).is_err());
}
