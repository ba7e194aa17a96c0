//! ftracetest's output.
//!
//! In: the text `ftracetest` printed, inline (`-l -`: `[1] <description>`,
//! the test's output, then a tab and the result, e.g. `[PASS]`) or one
//! line per case (with a log directory); colour codes allowed.
//! Out: its cases ([`parse_ftracetest`] gives [`FtraceCase`]s, each with
//! its [`FtraceResult`] or none when the output ends before it), and what
//! the run did ([`observe`] gives an [`Observed`]; each result word counts
//! as a pass, a skip or a failure by [`FtraceResult::outcome`]).

use super::{Observed, Outcome};

/// A result word ftracetest prints for a case, as `\t[WORD]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FtraceResult {
    Pass,
    Fail,
    Unresolved,
    Untested,
    Unsupported,
    Xfail,
    Undefined,
}

impl FtraceResult {
    pub const ALL: [FtraceResult; 7] = [
        FtraceResult::Pass,
        FtraceResult::Fail,
        FtraceResult::Unresolved,
        FtraceResult::Untested,
        FtraceResult::Unsupported,
        FtraceResult::Xfail,
        FtraceResult::Undefined,
    ];

    /// The result of a word as ftracetest prints it (upper case, no
    /// brackets); None for any other word.
    pub fn parse(word: &str) -> Option<FtraceResult> {
        Some(match word {
            "PASS" => FtraceResult::Pass,
            "FAIL" => FtraceResult::Fail,
            "UNRESOLVED" => FtraceResult::Unresolved,
            "UNTESTED" => FtraceResult::Untested,
            "UNSUPPORTED" => FtraceResult::Unsupported,
            "XFAIL" => FtraceResult::Xfail,
            "UNDEFINED" => FtraceResult::Undefined,
            _ => return None,
        })
    }

    /// The word as ftracetest prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            FtraceResult::Pass => "PASS",
            FtraceResult::Fail => "FAIL",
            FtraceResult::Unresolved => "UNRESOLVED",
            FtraceResult::Untested => "UNTESTED",
            FtraceResult::Unsupported => "UNSUPPORTED",
            FtraceResult::Xfail => "XFAIL",
            FtraceResult::Undefined => "UNDEFINED",
        }
    }

    /// What a case with this result counts as: an expected failure is a
    /// pass, a test that could not run a skip, anything unresolved a
    /// failure.
    pub fn outcome(self) -> Outcome {
        match self {
            FtraceResult::Pass | FtraceResult::Xfail => Outcome::Pass,
            FtraceResult::Untested | FtraceResult::Unsupported => Outcome::Skip,
            FtraceResult::Fail | FtraceResult::Unresolved | FtraceResult::Undefined => {
                Outcome::Fail
            }
        }
    }
}

/// One ftracetest test case (a `.tc` may run twice: again on an instance).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FtraceCase {
    pub number: u64,
    pub description: String,
    /// None when the output ends before it.
    pub result: Option<FtraceResult>,
}

impl FtraceCase {
    /// `[N] <description> [RESULT]`, or `[no result]`.
    fn line(&self) -> String {
        format!(
            "[{}] {} [{}]",
            self.number,
            self.description,
            self.result.map_or("no result", FtraceResult::as_str)
        )
    }
}

/// `...\t[RESULT]` at the end of a line (colour codes allowed).
fn ftrace_result(line: &str) -> Option<FtraceResult> {
    let plain: String = strip_colour(line);
    let t = plain.trim_end();
    let inner = t.strip_suffix(']')?;
    let open = inner.rfind('[')?;
    if !inner[..open].ends_with('\t') {
        return None;
    }
    FtraceResult::parse(&inner[open + 1..])
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
                c.result = Some(r);
            }
        }
    }
    v
}

/// The result of one test run through ftracetest: no result when a case
/// has none, else a failure when a case failed, a skip when every case
/// skipped, a pass otherwise.
pub fn observe(output: &str) -> Observed {
    let cases = parse_ftracetest(output);
    if cases.is_empty() {
        return Observed::NoResult("no ftracetest test case line".into());
    }
    if let Some(c) = cases.iter().find(|c| c.result.is_none()) {
        return Observed::NoResult(format!("{} (the output ends inside it)", c.line()));
    }
    let counts_as = |c: &FtraceCase, o: Outcome| c.result.map(FtraceResult::outcome) == Some(o);
    let bad: Vec<String> = cases
        .iter()
        .filter(|c| counts_as(c, Outcome::Fail))
        .map(FtraceCase::line)
        .collect();
    if !bad.is_empty() {
        return Observed::Fail(bad.join("; "));
    }
    if cases.iter().all(|c| counts_as(c, Outcome::Skip)) {
        return Observed::Skip(
            cases
                .iter()
                .map(FtraceCase::line)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    Observed::Pass
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::selftest::recorded::{F_FAIL, F_KILLED, F_PASS, F_UNSUP};
    use crate::steps::selftest::{failure_lines, observe};
    use coexist_proto::SelftestRunner;

    const F: SelftestRunner = SelftestRunner::Ftracetest;

    #[test]
    fn ftracetest_pass_fail_unsupported_and_killed() {
        let c = parse_ftracetest(F_PASS);
        assert_eq!(
            c,
            [FtraceCase {
                number: 1,
                description: "Test ftrace direct functions against kprobes".into(),
                result: Some(FtraceResult::Pass)
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
        assert_eq!(c[1].result.map(FtraceResult::as_str), Some("FAIL"));
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
    fn result_words_parse_and_count() {
        for r in FtraceResult::ALL {
            assert_eq!(FtraceResult::parse(r.as_str()), Some(r));
        }
        let word = |w| FtraceResult::parse(w).map(FtraceResult::outcome);
        assert_eq!(word("PASS"), Some(Outcome::Pass));
        assert_eq!(word("XFAIL"), Some(Outcome::Pass));
        assert_eq!(word("UNSUPPORTED"), Some(Outcome::Skip));
        assert_eq!(word("UNTESTED"), Some(Outcome::Skip));
        assert_eq!(word("FAIL"), Some(Outcome::Fail));
        assert_eq!(word("UNRESOLVED"), Some(Outcome::Fail));
        assert_eq!(word("UNDEFINED"), Some(Outcome::Fail));
        // Exactly the printed word: no other case, no brackets, no spaces.
        for w in ["pass", "Pass", "[PASS]", " PASS", "PASS ", "", "OK", "SKIP"] {
            assert_eq!(FtraceResult::parse(w), None, "{w:?}");
        }
        // A word ftracetest does not print is no result on the line.
        assert_eq!(
            parse_ftracetest("[1] a case\t[MAYBE]\n")[0].result,
            None,
            "an unknown word leaves the case open"
        );
    }

    #[test]
    fn xfail_passes_and_a_mixed_skip_is_a_pass() {
        let o = |t| observe(F, t);
        assert_eq!(o("[1] a\t[XFAIL]\n"), Observed::Pass);
        assert_eq!(o("[1] a\t[UNSUPPORTED]\n[2] b\t[PASS]\n"), Observed::Pass);
        assert_eq!(
            o("[1] a\t[UNSUPPORTED]\n[2] b\t[UNTESTED]\n"),
            Observed::Skip("[1] a [UNSUPPORTED]; [2] b [UNTESTED]".into())
        );
        assert_eq!(
            o("[1] a\t[UNDEFINED]\n[2] b\t[XFAIL]\n"),
            Observed::Fail("[1] a [UNDEFINED]".into())
        );
    }
}
