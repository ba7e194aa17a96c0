//! selftest: one of the kernel's own selftests (a suite's `kselftest:` and
//! `ftracetest:` sections give one case per test, with one selftest step).
//!
//! What the test must do on a variant (pass, fail or skip) is not written
//! on the step: it follows the case's expectation for that variant
//! (`crate::run::verdict::effective_expect` sets [`SelftestExpect::outcome`]).
//! The results are read from the test's output here, by the runner's own
//! format:
//! - kselftest: KTAP (TAP 13) from `kselftest/runner.sh`: `ok 1 selftests:
//!   livepatch: test-livepatch.sh`, `... # SKIP`, `not ok 1 ... # exit=1`,
//!   `not ok 1 ... # TIMEOUT 45 seconds`, the test's own output as `# `
//!   diagnostics;
//! - ftracetest: `[1] <description>` then, after the test's output when it
//!   is inline (`-l -`), a tab and `[PASS]`, `[FAIL]`, `[UNRESOLVED]`,
//!   `[UNTESTED]`, `[UNSUPPORTED]`, `[XFAIL]` or `[UNDEFINED]`.
//!
//! Output that ends before a result (the guest died, the test was killed)
//! has no result, and is never a pass.

use coexist_proto::{Answer, SelftestRunner, Step};
use serde::{Deserialize, Serialize};

/// What a selftest does, or must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelftestExpect {
    pub runner: SelftestRunner,
    /// Set per variant from the case's expectation.
    pub outcome: Outcome,
}

/// A selftest step's expectation fields: none a suite writes (the case's
/// per-variant expectation says what the test must do).
pub fn expect_fields(_: &Step) -> &'static [&'static str] {
    &[]
}

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

/// One ftracetest test case (a `.tc` may run twice: again on an instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtraceCase {
    pub number: u64,
    pub description: String,
    /// `PASS`, `FAIL`, `UNRESOLVED`, `UNTESTED`, `UNSUPPORTED`, `XFAIL`,
    /// `UNDEFINED`; None when the output ends before it.
    pub result: Option<String>,
}

const FTRACE_RESULTS: &[&str] = &[
    "PASS",
    "FAIL",
    "UNRESOLVED",
    "UNTESTED",
    "UNSUPPORTED",
    "XFAIL",
    "UNDEFINED",
];

/// `...\t[RESULT]` at the end of a line (colour codes allowed).
fn ftrace_result(line: &str) -> Option<&'static str> {
    let plain: String = strip_colour(line);
    let t = plain.trim_end();
    let inner = t.strip_suffix(']')?;
    let open = inner.rfind('[')?;
    if !inner[..open].ends_with('\t') {
        return None;
    }
    FTRACE_RESULTS
        .iter()
        .find(|r| **r == &inner[open + 1..])
        .copied()
}

fn strip_colour(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `[N]...` at the start of a line: the case number and the rest.
fn ftrace_header(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (n, after) = rest.split_once(']')?;
    Some((n.parse().ok()?, after))
}

/// Parses ftracetest's output, inline (`-l -`: the test's output between
/// the case line and its result) or not.
pub fn parse_ftracetest(text: &str) -> Vec<FtraceCase> {
    let mut v: Vec<FtraceCase> = Vec::new();
    for line in text.lines() {
        if let Some((number, after)) = ftrace_header(line) {
            // The description, up to the inline log's "execute: <file>"
            // or the result.
            let mut d = after;
            if let Some(i) = d.find("execute") {
                d = &d[..i];
            }
            if let Some(i) = d.find('\t') {
                d = &d[..i];
            }
            v.push(FtraceCase {
                number,
                description: d.trim().to_string(),
                result: None,
            });
        }
        if let Some(r) = ftrace_result(line) {
            if let Some(c) = v.iter_mut().rev().find(|c| c.result.is_none()) {
                c.result = Some(r.to_string());
            }
        }
    }
    v
}

/// What a selftest did, read from its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    Pass,
    Fail(String),
    Skip(String),
    /// The output ends before a result.
    NoResult(String),
}

impl Observed {
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Observed::Pass => Some(Outcome::Pass),
            Observed::Fail(_) => Some(Outcome::Fail),
            Observed::Skip(_) => Some(Outcome::Skip),
            Observed::NoResult(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Observed::Pass => "passed".into(),
            Observed::Fail(w) => format!("failed: {w}"),
            Observed::Skip(w) => format!("skipped: {w}"),
            Observed::NoResult(w) => format!("gave no result: {w}"),
        }
    }
}

/// The result of one test run through `runner`.
pub fn observe(runner: SelftestRunner, output: &str) -> Observed {
    match runner {
        SelftestRunner::Kselftest => {
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
        SelftestRunner::Ftracetest => {
            let cases = parse_ftracetest(output);
            if cases.is_empty() {
                return Observed::NoResult("no ftracetest test case line".into());
            }
            let line = |c: &FtraceCase| {
                format!(
                    "[{}] {} [{}]",
                    c.number,
                    c.description,
                    c.result.as_deref().unwrap_or("no result")
                )
            };
            if let Some(c) = cases.iter().find(|c| c.result.is_none()) {
                return Observed::NoResult(format!("{} (the output ends inside it)", line(c)));
            }
            let bad: Vec<String> = cases
                .iter()
                .filter(|c| {
                    matches!(
                        c.result.as_deref(),
                        Some("FAIL" | "UNRESOLVED" | "UNDEFINED")
                    )
                })
                .map(line)
                .collect();
            if !bad.is_empty() {
                return Observed::Fail(bad.join("; "));
            }
            if cases
                .iter()
                .all(|c| matches!(c.result.as_deref(), Some("UNSUPPORTED" | "UNTESTED")))
            {
                return Observed::Skip(cases.iter().map(line).collect::<Vec<_>>().join("; "));
            }
            Observed::Pass
        }
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

/// The lines of a failing test's output that say why: errors, `not ok`,
/// a livepatch test's expected/result diff (at most 24).
pub fn failure_lines(runner: SelftestRunner, output: &str) -> Vec<String> {
    let interesting = |l: &str| {
        let t = l.trim_start_matches('#').trim();
        t.starts_with("ERROR")
            || t.contains("not ok")
            || t.starts_with("SKIP")
            || t.starts_with("FAIL")
            || t.starts_with("Error")
            || t.starts_with("@@")
            || t.starts_with("--- ")
            || t.starts_with("+++ ")
            || ((t.starts_with('-') || t.starts_with('+'))
                && t.len() > 1
                && runner == SelftestRunner::Kselftest)
            || t.contains("[FAIL]")
            || t.contains("[UNRESOLVED]")
    };
    output
        .lines()
        .filter(|l| interesting(l))
        .take(24)
        .map(str::to_string)
        .collect()
}

/// Checks a finished selftest against the outcome the variant must show.
pub fn check(e: &SelftestExpect, a: &Answer, m: &mut Vec<String>) {
    let seen = observe(e.runner, &a.output);
    if seen.outcome() == Some(e.outcome) {
        return;
    }
    m.push(format!(
        "the selftest {} (this variant must {})",
        seen.describe(),
        e.outcome.as_str()
    ));
    if !matches!(seen, Observed::Pass) {
        m.extend(
            failure_lines(e.runner, &a.output)
                .into_iter()
                .map(|l| format!("  {l}")),
        );
    }
}

/// The step's runner and outcome, for a selftest step.
pub fn expect_for(step: &Step, outcome: Outcome) -> Option<SelftestExpect> {
    match step {
        Step::Selftest { runner, .. } => Some(SelftestExpect {
            runner: *runner,
            outcome,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outputs recorded from the stock kernel's guest (see
    // runner/tests/data/selftests/README.md for how each was made).
    const K_PASS: &str =
        include_str!("../../tests/data/selftests/kselftest-test-livepatch-pass.txt");
    const K_FAIL: &str =
        include_str!("../../tests/data/selftests/kselftest-test-livepatch-fail-module-missing.txt");
    const K_SKIP: &str =
        include_str!("../../tests/data/selftests/kselftest-test-livepatch-skip-no-module.txt");
    const K_KILLED: &str =
        include_str!("../../tests/data/selftests/kselftest-test-callbacks-killed-mid-test.txt");
    const F_PASS: &str =
        include_str!("../../tests/data/selftests/ftracetest-kprobe-direct-pass.txt");
    const F_FAIL: &str = include_str!("../../tests/data/selftests/ftracetest-fail.txt");
    const F_UNSUP: &str = include_str!("../../tests/data/selftests/ftracetest-unsupported.txt");
    const F_KILLED: &str =
        include_str!("../../tests/data/selftests/ftracetest-ftrace-direct-killed-mid-test.txt");

    const K: SelftestRunner = SelftestRunner::Kselftest;
    const F: SelftestRunner = SelftestRunner::Ftracetest;

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

    #[test]
    fn ftracetest_pass_fail_unsupported_and_killed() {
        let c = parse_ftracetest(F_PASS);
        assert_eq!(
            c,
            [FtraceCase {
                number: 1,
                description: "Test ftrace direct functions against kprobes".into(),
                result: Some("PASS".into())
            }]
        );
        assert_eq!(observe(F, F_PASS), Observed::Pass);
        assert_eq!(
            observe(F, F_FAIL),
            Observed::Fail("[1] a test case that fails on purpose [FAIL]".into())
        );
        assert!(failure_lines(F, F_FAIL)
            .iter()
            .any(|l| l.contains("[FAIL]")));
        match observe(F, F_UNSUP) {
            Observed::Skip(w) => assert!(w.contains("[UNSUPPORTED]"), "{w}"),
            other => panic!("{other:?}"),
        }
        match observe(F, F_KILLED) {
            Observed::NoResult(w) => {
                assert!(
                    w.contains("against tracers") && w.contains("ends inside it"),
                    "{w}"
                )
            }
            other => panic!("{other:?}"),
        }
        // One line per case, as ftracetest prints with a log directory.
        let logged = "=== Ftrace unit tests ===\n[1] Basic trace file check\t[PASS]\n[2] Basic test for tracers\t[\x1b[31mFAIL\x1b[0m]\n[3] (instance)  Basic test for tracers\t[UNRESOLVED]\n";
        let c = parse_ftracetest(logged);
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].result.as_deref(), Some("FAIL"));
        assert_eq!(c[2].description, "(instance)  Basic test for tracers");
        match observe(F, logged) {
            Observed::Fail(w) => assert!(w.contains("[2]") && w.contains("[3]"), "{w}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cut_output_keeps_the_result() {
        // The agent cuts the middle of a long output; the end has the result.
        let mid = F_PASS.len() / 2;
        let cut = format!(
            "{}\n[coexist: 9999 bytes of output cut here]\n{}",
            &F_PASS[..200],
            &F_PASS[mid..]
        );
        assert_eq!(observe(F, &cut), Observed::Pass);
    }

    #[test]
    fn the_variant_outcome_decides() {
        let a = |out: &str| Answer {
            ok: true,
            output: out.into(),
            ..Default::default()
        };
        let want = |runner, outcome| SelftestExpect { runner, outcome };
        let mut m = Vec::new();
        check(&want(K, Outcome::Pass), &a(K_PASS), &mut m);
        check(&want(K, Outcome::Skip), &a(K_SKIP), &mut m);
        check(&want(K, Outcome::Fail), &a(K_FAIL), &mut m);
        check(&want(F, Outcome::Skip), &a(F_UNSUP), &mut m);
        assert!(m.is_empty(), "{m:?}");
        check(&want(K, Outcome::Pass), &a(K_SKIP), &mut m);
        assert!(
            m[0].starts_with("the selftest skipped: ")
                && m[0].ends_with("(this variant must pass)"),
            "{m:?}"
        );
        m.clear();
        check(&want(K, Outcome::Pass), &a(K_FAIL), &mut m);
        assert!(m[0].contains("failed: not ok 1"), "{m:?}");
        assert!(m.iter().any(|l| l.contains("is not a livepatch")), "{m:?}");
        m.clear();
        // A test killed mid-way is never what a variant must do.
        for o in [Outcome::Pass, Outcome::Fail, Outcome::Skip] {
            check(&want(F, o), &a(F_KILLED), &mut m);
        }
        assert_eq!(m.iter().filter(|l| l.contains("gave no result")).count(), 3);
    }
}
