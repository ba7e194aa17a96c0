//! KTAP v1, as the kernel's own tools read it (`kunit.py parse`).

use std::fmt::Write as _;

use super::grid::{by_variant, case_key};
use super::{failure_text, shown, RunReport};
use crate::record::Verdict;

/// KTAP v1: the run is a test with a subtest per variant, each with a
/// result line per case. XFAIL carries the `# XFAIL` directive; lines
/// starting with `#` hold diagnostics for unexpected outcomes.
pub fn ktap(report: &RunReport) -> String {
    let variants = by_variant(&report.results);
    let mut s = String::new();
    s.push_str("KTAP version 1\n");
    let _ = writeln!(s, "1..{}", variants.len());
    for (vi, (v, cases)) in variants.iter().enumerate() {
        s.push_str("    KTAP version 1\n");
        let _ = writeln!(s, "    # Subtest: {v}");
        let _ = writeln!(s, "    1..{}", cases.len());
        for (ci, r) in cases.iter().enumerate() {
            let name = case_key(r).replace('#', "_");
            if !r.decision.as_expected {
                for l in failure_text(r).lines().take(60) {
                    let _ = writeln!(s, "    # {l}");
                }
            }
            let line = match (r.decision.verdict, r.decision.as_expected) {
                (Verdict::Xfail, _) => format!(
                    "ok {} {name} # XFAIL {}",
                    ci + 1,
                    one_line(&shown(&r.decision.summary))
                ),
                (Verdict::Skip, true) => format!(
                    "ok {} {name} # SKIP {}",
                    ci + 1,
                    one_line(&shown(&r.decision.summary))
                ),
                (_, true) => format!("ok {} {name}", ci + 1),
                (Verdict::Error, false) => format!(
                    "not ok {} {name} # ERROR {}",
                    ci + 1,
                    one_line(&shown(&r.decision.summary))
                ),
                (_, false) => format!("not ok {} {name}", ci + 1),
            };
            let _ = writeln!(s, "    {line}");
        }
        let ok = cases.iter().all(|r| r.decision.as_expected);
        let _ = writeln!(s, "{} {} {v}", if ok { "ok" } else { "not ok" }, vi + 1);
    }
    s
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '#'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::*;
    use std::path::Path;

    /// KTAP checked by the kernel's own parser (tools/testing/kunit), taken
    /// from the Debian source tarball.
    #[test]
    fn ktap_parses_with_the_kernels_kunit_parser() {
        let k = ktap(&sample());
        assert!(
            k.starts_with(
                "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: v1\n    1..2\n"
            ),
            "{k}"
        );
        assert!(k.contains("    ok 2 s/a/fail # XFAIL "), "{k}");
        assert!(k.contains("    not ok 1 s/a/pass # ERROR "), "{k}");
        let tarball = Path::new("/usr/src/linux-source-6.1.tar.xz");
        let d = tempfile::tempdir().unwrap();
        let st = std::process::Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(d.path())
            .arg("linux-source-6.1/tools/testing/kunit")
            .status()
            .expect("tar");
        assert!(
            st.success(),
            "cannot extract kunit.py from {}",
            tarball.display()
        );
        let f = d.path().join("results.ktap");
        std::fs::write(&f, &k).unwrap();
        let out = std::process::Command::new("python3")
            .arg(
                d.path()
                    .join("linux-source-6.1/tools/testing/kunit/kunit.py"),
            )
            .arg("parse")
            .arg(&f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // 4 results: the pass and the xfail are ok, the fail and the error are not.
        assert!(text.contains("Ran 4 tests"), "{text}");
        assert!(text.contains("failed: 2"), "{text}");
        assert!(
            !text.contains("CRASHED") && !text.contains("Could not find"),
            "{text}"
        );
    }
}
