//! `report.html`: one self-contained file (inline CSS and SVG, no script, no external fetch)
//! that a browser shows and prints to PDF. Rendered with minijinja, whose HTML auto-escaping
//! turns every string from the evidence (scenario titles, details, paths) into text; the only
//! markup inserted unescaped is the plot SVG built by [`super::plot`], which escapes its own
//! labels.

use std::collections::BTreeMap;

use minijinja::value::Value;
use minijinja::{Environment, Error, ErrorKind};

use super::{Report, ReportError, REPORT_HTML};

/// Trial rows shown per scenario (every trial that did not pass is shown in addition).
pub const MAX_TRIAL_ROWS: usize = 30;

const TEMPLATE: &str = include_str!("report.html.j2");

/// Renders the HTML view of `report`.
pub fn render(report: &Report) -> Result<String, ReportError> {
    let fail = |e: Error| ReportError::Render {
        view: REPORT_HTML,
        message: format!("{e:#}"),
    };
    let mut env = Environment::new();
    env.add_filter("num", num);
    // The name ends in .html: auto-escaping is on.
    env.add_template("report.html", TEMPLATE).map_err(fail)?;
    let plots: BTreeMap<&str, String> = report
        .scenarios
        .iter()
        .filter_map(|s| s.plot.as_ref().map(|p| (s.id.as_str(), p.to_svg())))
        .collect();
    let falsify_plot = report.falsify.as_ref().map(|f| {
        let series: Vec<(String, Vec<(u64, f64)>)> = f
            .rows
            .iter()
            .filter(|row| !row.history.is_empty())
            .map(|row| (row.requirement.clone(), row.history.clone()))
            .collect();
        super::plot::margin_history_svg(&series)
    });
    let template = env.get_template("report.html").map_err(fail)?;
    template
        .render(minijinja::context! {
            r => Value::from(minijinja::value::Serde(report)),
            plots => Value::from(minijinja::value::Serde(&plots)),
            falsify_plot => falsify_plot,
            max_trial_rows => MAX_TRIAL_ROWS,
        })
        .map_err(fail)
}

/// `{{ value|num(3) }}`: a number with that many decimals, `-` for none.
fn num(value: Value, decimals: Option<usize>) -> Result<String, Error> {
    if value.is_none() || value.is_undefined() {
        return Ok("-".to_owned());
    }
    let number = f64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("num: {value} is not a number"),
        )
    })?;
    let decimals = decimals.unwrap_or(2);
    Ok(if number.is_finite() {
        format!("{number:.decimals$}")
    } else {
        "-".to_owned()
    })
}
