//! `junit.xml`: one `<testsuite>` per scenario, one `<testcase>` per requirement it verifies.
//!
//! FAIL is a `<failure>` whose message carries the measured value and the limit; INCONCLUSIVE
//! is an `<error>` of type `inconclusive` (the requirement could not be judged: neither a pass
//! nor a firmware failure); the scenario's measured statistics are `<properties>` of its suite
//! (the common JUnit schema, Jenkins' `junit-10.xsd`, allows properties on suites only). The
//! run's own completeness is a test case too, so an interrupted run never shows green. Written
//! directly (every attribute and text escaped by [`super::escape_xml`]) so that the output
//! stays within that schema; a test validates it with xmllint.

use std::fmt::Write as _;

use super::{escape_xml, Report};
use crate::verdict::{RequirementVerdict, Verdict};

/// A test case's outcome.
enum Outcome {
    Pass,
    Failure { kind: String, message: String },
    Error { kind: String, message: String },
    Skipped { message: String },
}

struct Case {
    name: String,
    classname: String,
    outcome: Outcome,
    system_out: Option<String>,
}

struct Suite {
    name: String,
    properties: Vec<(String, String)>,
    cases: Vec<Case>,
}

impl Suite {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| f(&c.outcome)).count()
    }
}

/// Renders the JUnit view of `report`.
pub fn render(report: &Report) -> String {
    let mut suites = Vec::new();

    let mut run = Suite {
        name: "run".to_owned(),
        properties: Vec::new(),
        cases: vec![Case {
            name: "all planned trials recorded".to_owned(),
            classname: "iohil.run".to_owned(),
            outcome: if report.status.complete {
                Outcome::Pass
            } else {
                Outcome::Error {
                    kind: "incomplete".to_owned(),
                    message: "the run was interrupted before every planned trial was recorded"
                        .to_owned(),
                }
            },
            system_out: None,
        }],
    };
    for t in report
        .traceability
        .iter()
        .filter(|t| t.scenarios.is_empty())
    {
        run.cases.push(Case {
            name: format!("{} verified", t.requirement),
            classname: "iohil.traceability".to_owned(),
            outcome: Outcome::Skipped {
                message: format!(
                    "{} is not verified by any scenario of this run",
                    t.requirement
                ),
            },
            system_out: None,
        });
    }
    suites.push(run);

    for s in &report.scenarios {
        let mut properties = vec![
            ("title".to_owned(), s.title.clone()),
            ("source".to_owned(), s.source.path.display().to_string()),
            ("source_sha256".to_owned(), s.source.sha256.clone()),
            ("seed".to_owned(), s.seed.to_string()),
            (
                "trials".to_owned(),
                format!("{} of {}", s.trials_run, s.trials_planned),
            ),
        ];
        for st in &s.statistics {
            let v = &st.statistics;
            properties.push((
                format!("{} [{}]", st.metric, st.unit),
                format!(
                    "n={} mean={:.4} max={:.4} p95={:.4} p99={:.4}{}",
                    v.n,
                    v.mean,
                    v.max,
                    v.p95,
                    v.p99,
                    v.p99_ucb95
                        .map(|u| format!(" p99_ucb95={u:.4}"))
                        .unwrap_or_default()
                ),
            ));
        }
        suites.push(Suite {
            name: s.id.clone(),
            properties,
            cases: s
                .requirements
                .iter()
                .map(|v| Case {
                    name: v.requirement.clone(),
                    classname: format!("iohil.{}", s.id),
                    outcome: outcome_of(v),
                    system_out: Some(format!("{}: {}", v.verdict, v.detail)),
                })
                .collect(),
        });
    }

    if let Some(fuzz) = &report.fuzz {
        suites.push(Suite {
            name: "fuzz".to_owned(),
            properties: vec![
                ("seed".to_owned(), fuzz.seed.to_string()),
                (
                    "cases".to_owned(),
                    format!("{} of {}", fuzz.cases_run, fuzz.cases_planned),
                ),
            ],
            cases: fuzz
                .properties
                .iter()
                .map(|(property, pass, fail, inconclusive)| Case {
                    name: property.clone(),
                    classname: "iohil.fuzz".to_owned(),
                    outcome: if *fail > 0 {
                        Outcome::Failure {
                            kind: "FAIL".to_owned(),
                            message: format!(
                                "{fail} of {} cases failed {property}",
                                pass + fail + inconclusive
                            ),
                        }
                    } else if *pass == 0 {
                        Outcome::Error {
                            kind: "inconclusive".to_owned(),
                            message: format!(
                                "no case exercised {property} ({inconclusive} inconclusive)"
                            ),
                        }
                    } else {
                        Outcome::Pass
                    },
                    system_out: None,
                })
                .collect(),
        });
    }

    if let Some(falsify) = &report.falsify {
        suites.push(Suite {
            name: "falsify".to_owned(),
            properties: vec![
                ("seed".to_owned(), falsify.seed.to_string()),
                ("budget".to_owned(), falsify.budget.to_string()),
            ],
            cases: falsify
                .rows
                .iter()
                .map(|row| Case {
                    name: row.requirement.clone(),
                    classname: "iohil.falsify".to_owned(),
                    outcome: if row.falsified {
                        Outcome::Failure {
                            kind: "FAIL".to_owned(),
                            message: format!(
                                "{}: {}",
                                row.result,
                                row.minimal
                                    .as_deref()
                                    .or(row.worst_case.as_deref())
                                    .unwrap_or("-")
                            ),
                        }
                    } else if row.worst_margin.is_none() || !falsify.complete {
                        Outcome::Error {
                            kind: "incomplete".to_owned(),
                            message: format!("{} ({} simulations)", row.result, row.simulations),
                        }
                    } else {
                        Outcome::Pass
                    },
                    system_out: Some(format!(
                        "worst margin {}: {}",
                        row.worst_margin
                            .map_or("-".to_owned(), |m| format!("{m:+.3}")),
                        row.worst_case.as_deref().unwrap_or("-")
                    )),
                })
                .collect(),
        });
    }

    let total = |f: &dyn Fn(&Outcome) -> bool| suites.iter().map(|s| s.count(f)).sum::<usize>();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        xml,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">",
        escape_xml(&format!("iohil {}", report.identification.run_id)),
        total(&|_| true),
        total(&|o| matches!(o, Outcome::Failure { .. })),
        total(&|o| matches!(o, Outcome::Error { .. })),
    );
    for suite in &suites {
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">",
            escape_xml(&suite.name),
            suite.cases.len(),
            suite.count(|o| matches!(o, Outcome::Failure { .. })),
            suite.count(|o| matches!(o, Outcome::Error { .. })),
            suite.count(|o| matches!(o, Outcome::Skipped { .. })),
        );
        if !suite.properties.is_empty() {
            xml.push_str("    <properties>\n");
            for (name, value) in &suite.properties {
                let _ = writeln!(
                    xml,
                    "      <property name=\"{}\" value=\"{}\"/>",
                    escape_xml(name),
                    escape_xml(value)
                );
            }
            xml.push_str("    </properties>\n");
        }
        for case in &suite.cases {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\"",
                escape_xml(&case.name),
                escape_xml(&case.classname)
            );
            let element = match &case.outcome {
                Outcome::Pass => None,
                Outcome::Failure { kind, message } => Some(("failure", Some(kind), message)),
                Outcome::Error { kind, message } => Some(("error", Some(kind), message)),
                Outcome::Skipped { message } => Some(("skipped", None, message)),
            };
            if element.is_none() && case.system_out.is_none() {
                xml.push_str("/>\n");
                continue;
            }
            xml.push_str(">\n");
            if let Some((tag, kind, message)) = element {
                let kind = kind
                    .map(|k| format!(" type=\"{}\"", escape_xml(k)))
                    .unwrap_or_default();
                let _ = writeln!(
                    xml,
                    "      <{tag}{kind} message=\"{}\">{}</{tag}>",
                    escape_xml(message),
                    escape_xml(message)
                );
            }
            if let Some(out) = &case.system_out {
                let _ = writeln!(xml, "      <system-out>{}</system-out>", escape_xml(out));
            }
            xml.push_str("    </testcase>\n");
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn outcome_of(v: &RequirementVerdict) -> Outcome {
    let measured = match (v.measured, v.limit) {
        (Some(m), Some(l)) => format!("measured {m:.3} {}, limit {l:.3} {}: ", v.unit, v.unit),
        (Some(m), None) => format!("measured {m:.3} {}: ", v.unit),
        _ => String::new(),
    };
    match v.verdict {
        Verdict::Pass => Outcome::Pass,
        Verdict::Fail => Outcome::Failure {
            kind: "FAIL".to_owned(),
            message: format!("{} FAIL: {measured}{}", v.requirement, v.detail),
        },
        Verdict::Inconclusive | Verdict::Incomplete => Outcome::Error {
            kind: v.verdict.as_str().to_lowercase(),
            message: format!("{} {}: {measured}{}", v.requirement, v.verdict, v.detail),
        },
    }
}
