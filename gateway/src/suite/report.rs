//! Writes the outcome of `wasmgate test`: the table people read (one row per case, then what
//! differed) and JUnit XML for CI systems. Formats only; the caller writes the text where it
//! goes.

use std::fmt::Write as _;
use std::time::Duration;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::judge::count;
use super::{CaseOutcome, SuiteOutcome, Verdict};

/// The widest EXPECTED or GOT cell; the whole text is in the details below the table.
const CELL: usize = 60;

/// The table: a header, one row per case (and one per suite that could not run), then each
/// failure and error with its file:line and every difference, then the totals.
pub fn table(outcomes: &[SuiteOutcome]) -> String {
    let mut rows = vec![[
        "RESULT".to_owned(),
        "SUITE".into(),
        "CASE".into(),
        "EXPECTED".into(),
        "GOT".into(),
        "TIME".into(),
    ]];
    for suite in outcomes {
        if suite.error.is_some() {
            rows.push([
                "ERROR".into(),
                suite.name.clone(),
                "-".into(),
                "-".into(),
                "not run".into(),
                millis(suite.elapsed),
            ]);
        }
        for case in &suite.cases {
            let result = match case.verdict {
                Verdict::Pass => "ok",
                Verdict::Fail(_) => "FAIL",
                Verdict::Error(_) => "ERROR",
            };
            rows.push([
                result.into(),
                suite.name.clone(),
                case.name.clone(),
                cell(&case.expected),
                cell(&case.got),
                millis(case.elapsed),
            ]);
        }
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (w, c)) in widths.iter().zip(row).enumerate() {
            if i == row.len() - 1 {
                let _ = write!(line, "{c:>w$}");
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let (mut passed, mut failed, mut errors) = (0, 0, 0);
    for suite in outcomes {
        if let Some(e) = &suite.error {
            errors += 1;
            // The suite's own file:line, or the suite then its policy file's.
            if e.file == suite.file {
                let _ = write!(out, "\nERROR {e}\n");
            } else {
                let _ = write!(out, "\nERROR {}: {e}\n", suite.file.display());
            }
        }
        for case in &suite.cases {
            match &case.verdict {
                Verdict::Pass => passed += 1,
                Verdict::Fail(misses) => {
                    failed += 1;
                    let _ = writeln!(out, "\nFAIL {}", place(suite, case));
                    for miss in misses {
                        let _ = writeln!(out, "  {miss}");
                    }
                }
                Verdict::Error(e) => {
                    errors += 1;
                    let _ = write!(out, "\nERROR {}: {e}\n", place(suite, case));
                }
            }
        }
    }
    let cases = outcomes.iter().map(|s| s.cases.len()).sum::<usize>();
    let _ = write!(
        out,
        "\n{}, {}: {passed} passed, {failed} failed, {}\n",
        count(outcomes.len(), "suite"),
        count(cases, "case"),
        count(errors, "error")
    );
    out
}

/// `suite.yaml:12: case "name"`.
fn place(suite: &SuiteOutcome, case: &CaseOutcome) -> String {
    format!(
        "{}{}: case {:?}",
        suite.file.display(),
        case.line.map(|l| format!(":{l}")).unwrap_or_default(),
        case.name
    )
}

fn cell(text: &str) -> String {
    let text = text.replace('\n', " ");
    if text.chars().count() <= CELL {
        return text;
    }
    let mut cut: String = text.chars().take(CELL - 3).collect();
    cut.push_str("...");
    cut
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn seconds(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// JUnit XML as Jenkins, GitLab and GitHub reporters read it: a `testsuite` per suite, a
/// `testcase` per case (classname: the suite) with a `failure` listing every difference or an
/// `error`; a suite that could not run is one `testcase` named `(load)` with its error.
pub fn junit(outcomes: &[SuiteOutcome]) -> std::io::Result<Vec<u8>> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let count = |suite: &SuiteOutcome, f: fn(&Verdict) -> bool| {
        suite.cases.iter().filter(|c| f(&c.verdict)).count()
    };
    let is_failure: fn(&Verdict) -> bool = |v| matches!(v, Verdict::Fail(_));
    let is_error: fn(&Verdict) -> bool = |v| matches!(v, Verdict::Error(_));
    let tests = |s: &SuiteOutcome| s.cases.len() + usize::from(s.error.is_some());
    let errors = |s: &SuiteOutcome| count(s, is_error) + usize::from(s.error.is_some());
    let total = |f: &dyn Fn(&SuiteOutcome) -> usize| outcomes.iter().map(f).sum::<usize>();
    let time: Duration = outcomes.iter().map(|s| s.elapsed).sum();
    w.create_element("testsuites")
        .with_attributes([
            ("name", "wasmgate test"),
            ("tests", &total(&tests).to_string()),
            ("failures", &total(&|s| count(s, is_failure)).to_string()),
            ("errors", &total(&errors).to_string()),
            ("time", &seconds(time)),
        ])
        .write_inner_content(|w| {
            for suite in outcomes {
                let file = suite.file.display().to_string();
                w.create_element("testsuite")
                    .with_attributes([
                        ("name", suite.name.as_str()),
                        ("tests", &tests(suite).to_string()),
                        ("failures", &count(suite, is_failure).to_string()),
                        ("errors", &errors(suite).to_string()),
                        ("time", &seconds(suite.elapsed)),
                        ("file", &file),
                    ])
                    .write_inner_content(|w| {
                        if let Some(e) = &suite.error {
                            let message = e.to_string();
                            w.create_element("testcase")
                                .with_attributes([
                                    ("name", "(load)"),
                                    ("classname", suite.name.as_str()),
                                    ("time", "0"),
                                ])
                                .write_inner_content(|w| {
                                    w.create_element("error")
                                        .with_attribute(("message", message.as_str()))
                                        .write_text_content(BytesText::new(&message))?;
                                    Ok(())
                                })?;
                        }
                        for case in &suite.cases {
                            let line = case.line.map(|l| l.to_string()).unwrap_or_default();
                            let element = w.create_element("testcase").with_attributes([
                                ("name", case.name.as_str()),
                                ("classname", suite.name.as_str()),
                                ("time", &seconds(case.elapsed)),
                                ("file", &file),
                                ("line", &line),
                            ]);
                            match &case.verdict {
                                Verdict::Pass => {
                                    element.write_empty()?;
                                }
                                Verdict::Fail(misses) => {
                                    let message =
                                        format!("expected {}, got {}", case.expected, case.got);
                                    let text = misses.join("\n");
                                    element.write_inner_content(|w| {
                                        w.create_element("failure")
                                            .with_attribute(("message", message.as_str()))
                                            .write_text_content(BytesText::new(&text))?;
                                        Ok(())
                                    })?;
                                }
                                Verdict::Error(e) => {
                                    element.write_inner_content(|w| {
                                        w.create_element("error")
                                            .with_attribute(("message", e.as_str()))
                                            .write_text_content(BytesText::new(e))?;
                                        Ok(())
                                    })?;
                                }
                            }
                        }
                        Ok(())
                    })?;
            }
            Ok(())
        })?;
    let mut xml = w.into_inner();
    xml.push(b'\n');
    Ok(xml)
}
