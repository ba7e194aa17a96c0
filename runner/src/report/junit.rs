//! JUnit XML (quick-junit): a testsuite per variant, a testcase per case.

use anyhow::{Context, Result};

use super::grid::by_variant;
use super::{expected_text, failure_text, shown, RunReport};
use crate::record::Verdict;

/// JUnit XML: a testsuite per variant, a testcase per case. Unexpected
/// outcomes are failures (FAIL, XPASS) or errors (ERROR) with the evidence;
/// XFAIL and a selftest's expected SKIP are reported as skipped with
/// their reason.
pub fn junit(report: &RunReport) -> Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut rep = Report::new(format!("coexist {}", report.run_id));
    for (v, cases) in by_variant(&report.results) {
        let mut ts = TestSuite::new(v.clone());
        for r in cases {
            let status = match (r.decision.verdict, r.decision.as_expected) {
                (Verdict::Xfail, _) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!("XFAIL: {}", shown(&r.decision.summary)));
                    s
                }
                (Verdict::Skip, true) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!("SKIP: {}", shown(&r.decision.summary)));
                    s
                }
                (_, true) => TestCaseStatus::success(),
                (Verdict::Error, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(shown(&r.decision.summary));
                    s.set_type("ERROR");
                    s.set_description(failure_text(r));
                    s
                }
                (v, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(shown(&r.decision.summary));
                    s.set_type(v.as_str());
                    s.set_description(failure_text(r));
                    s
                }
            };
            let mut tc = TestCase::new(r.case.clone(), status);
            tc.set_classname(format!("{}.{}", r.suite, v));
            tc.set_time(std::time::Duration::from_secs_f64(r.total_s));
            tc.set_system_out(format!(
                "expected: {}\nverdict: {} ({})\nconsole log: {}\n",
                expected_text(&r.expected),
                r.decision.verdict.as_str(),
                shown(&r.decision.summary),
                r.console_log.display()
            ));
            ts.add_test_case(tc);
        }
        rep.add_test_suite(ts);
    }
    rep.to_string().context("cannot render JUnit XML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::*;

    #[test]
    fn junit_is_well_formed_and_carries_the_evidence() {
        let x = junit(&sample()).unwrap();
        // Parse it with a real XML parser and read the structure back.
        let got = python(
            r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
for ts in root.findall("testsuite"):
    for tc in ts.findall("testcase"):
        kind = [c.tag for c in tc if c.tag in ("failure", "error", "skipped")]
        text = "".join((c.text or "") for c in tc if c.tag in ("failure", "error"))
        print(ts.get("name"), tc.get("name"), kind[0] if kind else "ok", "splat" if "cut here" in text else "")
"#,
            &x,
        );
        let lines: Vec<&str> = got.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            vec![
                "v1 a/pass ok",
                "v1 a/fail failure splat",
                "v2 a/pass error",
                "v2 a/fail skipped"
            ],
            "{x}"
        );
    }
}
