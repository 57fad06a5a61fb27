//! `summary.md`: a short Markdown summary for a PR comment or a CI job summary.
//!
//! Text from the evidence is escaped for Markdown table cells (pipes, newlines, and angle
//! brackets so that no HTML reaches a renderer that allows it).

use super::{verdict_name, Report};
use crate::verdict::Verdict;

/// Renders the Markdown view of `report`.
pub fn render(report: &Report) -> String {
    let id = &report.identification;
    let mut md = format!(
        "## iohil verification: {}\n\nRun {}",
        verdict_name(report.status.verdict),
        cell(&id.run_id)
    );
    if let Some(rig) = &id.rig {
        md.push_str(&format!(
            " on rig {} ({}), firmware {} {}",
            cell(&rig.id),
            cell(&rig.kind),
            cell(&rig.firmware.kind),
            cell(&rig.firmware.version)
        ));
    }
    md.push_str(&format!(
        ", harness {} {}.\n\n",
        cell(&id.harness.version),
        cell(&id.harness.git_commit)
    ));
    for note in &report.status.notes {
        md.push_str(&format!("- **{}**\n", cell(note)));
    }
    if !report.status.notes.is_empty() {
        md.push('\n');
    }
    let s = &report.summary;
    if !report.scenarios.is_empty() {
        md.push_str(&format!(
            "{} scenarios, {} requirement verdicts: {} PASS, {} FAIL, {} INCONCLUSIVE.\n\n",
            report.scenarios.len(),
            s.pass + s.fail + s.inconclusive,
            s.pass,
            s.fail,
            s.inconclusive
        ));
        md.push_str("| scenario | trials | verdict | max detection latency | not passed |\n");
        md.push_str("|---|---:|---|---:|---|\n");
        for sc in &report.scenarios {
            let latency = sc
                .statistics
                .iter()
                .find(|st| st.metric == "detection_latency_ms")
                .map_or("-".to_owned(), |st| format!("{:.1} ms", st.statistics.max));
            let not_passed: Vec<String> = sc
                .requirements
                .iter()
                .filter(|v| v.verdict != Verdict::Pass)
                .map(|v| format!("{} {}", v.requirement, v.verdict))
                .collect();
            md.push_str(&format!(
                "| {} | {}/{} | {} | {} | {} |\n",
                cell(&sc.id),
                sc.trials_run,
                sc.trials_planned,
                match &sc.known_anomaly {
                    Some(id) => format!("{} ({})", verdict_name(sc.verdict), cell(id)),
                    None => verdict_name(sc.verdict).to_owned(),
                },
                latency,
                cell(&not_passed.join(", "))
            ));
        }
        md.push('\n');
    }
    if !report.known_anomalies.is_empty() {
        md.push_str("Known residual anomalies (`anomalies.yaml`):\n\n");
        for k in &report.known_anomalies {
            md.push_str(&format!(
                "- {} ({:?}, {}, {}): {}{}\n",
                cell(&k.anomaly.id),
                k.anomaly.status,
                cell(&k.anomaly.hazard),
                cell(&k.anomaly.requirements.join(", ")),
                cell(&k.anomaly.title),
                if k.stale {
                    " **NO LONGER REPRODUCES: close it**"
                } else {
                    ""
                }
            ));
        }
        md.push('\n');
    }
    if !report.traceability.is_empty() {
        md.push_str("| requirement | hazard | scenarios | verdict |\n|---|---|---:|---|\n");
        for t in &report.traceability {
            md.push_str(&format!(
                "| {} {} | {} | {} | {} |\n",
                cell(&t.requirement),
                cell(&t.title),
                cell(&t.hazard),
                t.scenarios.len(),
                t.verdict.map_or("NOT VERIFIED", Verdict::as_str)
            ));
        }
        md.push('\n');
        md.push_str(&clause_table(report));
        md.push('\n');
    }
    if let Some(fuzz) = &report.fuzz {
        md.push_str(&format!(
            "Fuzz campaign seed {}: {} of {} cases{}; failing requirements: {}.\n\n",
            fuzz.seed,
            fuzz.cases_run,
            fuzz.cases_planned,
            if fuzz.complete { "" } else { " (INCOMPLETE)" },
            if fuzz.failing_requirements.is_empty() {
                "none".to_owned()
            } else {
                cell(&fuzz.failing_requirements.join(", "))
            }
        ));
        if let Some(rate) = &fuzz.failure_rate {
            md.push_str(&format!("{}.\n\n", cell(rate)));
        }
    }
    if let Some(falsify) = &report.falsify {
        md.push_str(&format!(
            "## Worst cases found\n\nGuided falsification seed {}, at most {} simulations per \
             requirement, {} in all{}. A margin at or below 0 is a FAIL.\n\n\
             | requirement | worst margin | simulations | result | worst case found |\n\
             |---|---|---|---|---|\n",
            falsify.seed,
            falsify.budget,
            falsify.simulations,
            if falsify.complete {
                ""
            } else {
                " (INCOMPLETE: time budget)"
            },
        ));
        for row in &falsify.rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell(&row.requirement),
                row.worst_margin
                    .map_or("-".to_owned(), |m| format!("{m:+.3}")),
                row.simulations,
                cell(&row.result),
                cell(row.worst_case.as_deref().unwrap_or("-"))
            ));
        }
        md.push('\n');
    }
    if !report.anomalies.is_empty() {
        md.push_str(&format!(
            "{} anomalies or INCONCLUSIVE verdicts, first: {}\n\n",
            report.anomalies.len(),
            cell(&report.anomalies[0].cause)
        ));
    }
    md.push_str(&format!(
        "Full report: `report.html`; machine-readable: `{}`, `report.json`; integrity: \
         `iohil verify <run-dir>`.\n",
        if !report.scenarios.is_empty() || (report.fuzz.is_none() && report.falsify.is_none()) {
            "results.json"
        } else if report.falsify.is_some() {
            "falsify.json"
        } else {
            "fuzz.json"
        }
    ));
    md
}

/// The clause table: each requirement's clauses with their text, the evaluator's check and the
/// scenarios of the run that exercised them ("not verified" where none did). No verdicts: the
/// table from the shipped suite on `sim` is `docs/clauses.md`, which `.ci/run` compares with
/// the main job's summary.
pub fn clause_table(report: &Report) -> String {
    let mut md = String::from(
        "## Clauses\n\n| clause | text | check | scenarios that exercised it |\n|---|---|---|---|\n",
    );
    for c in report.traceability.iter().flat_map(|t| t.clauses.iter()) {
        let scenarios = if c.scenarios.is_empty() {
            "NOT VERIFIED: no scenario exercised it".to_owned()
        } else {
            c.scenarios
                .iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            cell(&c.clause),
            cell(&c.text),
            cell(&c.check),
            cell(&scenarios)
        ));
    }
    md
}

/// Escapes text from the evidence for Markdown (table cells and running text): every
/// Markdown punctuation character is backslash-escaped, so no link, image, code span or
/// emphasis can be formed; `&`, `<` and `>` become entities, so no HTML either.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|'
            | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}
