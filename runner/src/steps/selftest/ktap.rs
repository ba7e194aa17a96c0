//! The kselftest runner's output: KTAP (TAP 13) from `kselftest/runner.sh`.
//!
//! In: the text the runner printed, e.g. `ok 1 selftests: livepatch:
//! test-livepatch.sh`, `... # SKIP`, `not ok 1 ... # exit=1`,
//! `not ok 1 ... # TIMEOUT 45 seconds`, with the test's own output as `# `
//! diagnostics.
//! Out: its top level ([`parse_ktap`] gives a [`Ktap`] of [`TapResult`]s
//! and diagnostics), and what the test did ([`observe`] gives an
//! [`Observed`]: the last result line decides; none is no result).

use super::Observed;

/// One result line of TAP/KTAP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapResult {
    pub number: u64,
    pub ok: bool,
    pub name: String,
    /// What follows ` # ` (`SKIP ...`, `TIMEOUT 45 seconds`, `exit=1`).
    pub directive: Option<String>,
}

impl TapResult {
    pub fn is_skip(&self) -> bool {
        self.directive
            .as_deref()
            .is_some_and(|d| d.to_ascii_uppercase().starts_with("SKIP"))
    }
}

/// A KTAP (or TAP 13) document's top level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ktap {
    /// `TAP version 13` or `KTAP version 1`.
    pub version: Option<String>,
    /// `1..N`
    pub plan: Option<u64>,
    pub results: Vec<TapResult>,
    /// `# ` lines (the tests' own output, under kselftest), without the `# `.
    pub diagnostics: Vec<String>,
}

fn tap_result(line: &str) -> Option<TapResult> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let number = num.parse().ok()?;
    let (name, directive) = match rest.split_once(" # ") {
        Some((n, d)) => (n, Some(d.trim().to_string())),
        None => match rest.strip_prefix("# ") {
            Some(d) => ("", Some(d.trim().to_string())),
            None => (rest, None),
        },
    };
    Some(TapResult {
        number,
        ok,
        name: name.trim().trim_start_matches("- ").to_string(),
        directive,
    })
}

/// Parses the top level of KTAP/TAP output; indented lines (nested
/// subtests) and anything else are left out, `# ` lines kept as
/// diagnostics.
pub fn parse_ktap(text: &str) -> Ktap {
    let mut k = Ktap::default();
    for line in text.lines() {
        let l = line.trim_end();
        if l.starts_with("TAP version") || l.starts_with("KTAP version") {
            k.version.get_or_insert_with(|| l.to_string());
        } else if let Some(n) = l.strip_prefix("1..") {
            if let Ok(n) = n.trim().parse() {
                k.plan.get_or_insert(n);
            }
        } else if let Some(r) = tap_result(l) {
            k.results.push(r);
        } else if let Some(d) = l.strip_prefix('#') {
            k.diagnostics
                .push(d.strip_prefix(' ').unwrap_or(d).to_string());
        }
    }
    k
}

/// The result of one test run through the kselftest runner: its last
/// result line.
pub fn observe(output: &str) -> Observed {
    let k = parse_ktap(output);
    match k.results.last() {
        None => Observed::NoResult(format!(
            "no KTAP result line ({} line(s) of output)",
            output.lines().count()
        )),
        Some(r) if r.ok && r.is_skip() => Observed::Skip(why_skipped(&k)),
        Some(r) if r.ok => Observed::Pass,
        Some(r) => Observed::Fail(format!(
            "not ok {} {}{}",
            r.number,
            r.name,
            r.directive
                .as_deref()
                .map(|d| format!(" # {d}"))
                .unwrap_or_default()
        )),
    }
}

/// The reason a kselftest gave for skipping (`SKIP: ...` on its output).
fn why_skipped(k: &Ktap) -> String {
    k.diagnostics
        .iter()
        .rev()
        .find(|d| d.contains("SKIP") || d.contains("skip"))
        .cloned()
        .unwrap_or_else(|| "exit code 4 (ksft_skip)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::selftest::recorded::{K_FAIL, K_KILLED, K_PASS, K_SKIP};
    use crate::steps::selftest::{failure_lines, observe};
    use coexist_proto::SelftestRunner;

    const K: SelftestRunner = SelftestRunner::Kselftest;

    #[test]
    fn ktap_of_a_passing_livepatch_test() {
        let k = parse_ktap(K_PASS);
        assert_eq!(k.version.as_deref(), Some("TAP version 13"));
        assert_eq!(k.plan, Some(1));
        assert_eq!(
            k.results,
            [TapResult {
                number: 1,
                ok: true,
                name: "selftests: livepatch: test-livepatch.sh".into(),
                directive: None
            }]
        );
        assert!(k
            .diagnostics
            .contains(&"TEST: atomic replace livepatch ... ok".to_string()));
        assert_eq!(observe(K, K_PASS), Observed::Pass);
    }

    #[test]
    fn ktap_fail_skip_and_a_test_killed_mid_way() {
        assert_eq!(
            observe(K, K_FAIL),
            Observed::Fail("not ok 1 selftests: livepatch: test-livepatch.sh # exit=1".into())
        );
        let why = failure_lines(K, K_FAIL);
        assert!(
            why.iter()
                .any(|l| l.contains("ERROR: module test_klp_livepatch is not a livepatch")),
            "{why:?}"
        );
        match observe(K, K_SKIP) {
            Observed::Skip(w) => assert!(
                w.contains("unable to load module test_klp_livepatch"),
                "{w}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(parse_ktap(K_SKIP).results[0].is_skip());
        match observe(K, K_KILLED) {
            Observed::NoResult(w) => assert!(w.contains("no KTAP result line"), "{w}"),
            other => panic!("{other:?}"),
        }
        // Nothing at all (the guest died before the runner printed).
        assert!(matches!(observe(K, ""), Observed::NoResult(_)));
    }

    #[test]
    fn tap_directives_and_nesting() {
        let t = "KTAP version 1\n1..2\n    KTAP version 1\n    1..1\n    not ok 1 inner\nok 1 first # SKIP no hardware\n#\nnot ok 2 selftests: x: y.sh # TIMEOUT 45 seconds\n";
        let k = parse_ktap(t);
        assert_eq!(k.results.len(), 2, "indented subtests are not top level");
        assert!(k.results[0].is_skip());
        assert_eq!(
            k.results[1].directive.as_deref(),
            Some("TIMEOUT 45 seconds")
        );
        assert_eq!(
            observe(K, t),
            Observed::Fail("not ok 2 selftests: x: y.sh # TIMEOUT 45 seconds".into())
        );
    }
}
