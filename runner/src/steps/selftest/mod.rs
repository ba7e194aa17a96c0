//! selftest: one of the kernel's own selftests (a suite's `kselftest:` and
//! `ftracetest:` sections give one case per test, with one selftest step).
//!
//! In: the step's expectation ([`SelftestExpect`]: its runner, and the
//! outcome the variant must show) and the agent's answer (the test's
//! output). Out: mismatches ([`check`]), from what the test did
//! ([`observe`] gives an [`Observed`]).
//!
//! What the test must do on a variant (pass, fail or skip) is not written
//! on the step: it follows the case's expectation for that variant
//! (`crate::run::verdict::effective_expect` sets [`SelftestExpect::outcome`]).
//! The results are read from the test's output by the runner's own format:
//! [`ktap`] for kselftest (KTAP/TAP 13 from `kselftest/runner.sh`),
//! [`ftracetest`] for ftracetest (`[1] <description>` ... `\t[PASS]`).
//!
//! Output that ends before a result (the guest died, the test was killed)
//! has no result, and is never a pass.

pub mod ftracetest;
pub mod ktap;
pub mod sources;

pub use sources::{source_path, test_name, SelftestsByVariant, Wanted};

pub use ftracetest::{parse_ftracetest, FtraceCase, FtraceResult};
pub use ktap::{parse_ktap, Ktap, TapResult};

use coexist_proto::{Answer, SelftestRunner, Step};
use serde::{Deserialize, Serialize};

use super::StepExpect;
use crate::image::FixtureNames;

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
        SelftestRunner::Kselftest => ktap::observe(output),
        SelftestRunner::Ftracetest => ftracetest::observe(output),
    }
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
/// The time a selftest's agent gets before it stops the test itself,
/// inside the host's step timeout, so the output so far comes back.
pub fn agent_timeout_ms(step_timeout_s: f64) -> u64 {
    let margin = (step_timeout_s * 0.1).clamp(1.0, 10.0);
    ((step_timeout_s - margin).max(0.5) * 1000.0) as u64
}

/// A kselftest collection a suite may name: a directory name of
/// tools/testing/selftests that the image has.
pub fn check_collection(c: &str, fx: &FixtureNames) -> Result<(), String> {
    if !crate::image::initramfs::is_selftest_dir(c) {
        return Err(format!(
            "kselftest collection '{c}' is not a directory name of tools/testing/selftests"
        ));
    }
    if !fx.selftests.iter().any(|s| s == c) {
        return Err(format!(
            "kselftest collection '{c}' is not in the image (images/{}.yaml `selftests`: {})",
            crate::image::prepare::DEFAULT_RECIPE,
            fx.selftests.join(", ")
        ));
    }
    Ok(())
}

/// ftracetest needs the image to have the ftrace selftests.
pub fn check_ftracetest(fx: &FixtureNames) -> Result<(), String> {
    if fx.selftests.iter().any(|s| s == "ftrace") {
        Ok(())
    } else {
        Err(format!(
            "ftracetest needs 'ftrace' in the image (images/{}.yaml `selftests`: {})",
            crate::image::prepare::DEFAULT_RECIPE,
            fx.selftests.join(", ")
        ))
    }
}

/// The case a test becomes: `kselftest/<collection>/<file>` for a file
/// name of the collection, `ftracetest/<path>` for a `.tc` file under
/// `test.d/`; never a path that leaves its directory.
pub fn case_name(runner: SelftestRunner, collection: &str, name: &str) -> Result<String, String> {
    let parts_ok = !name.is_empty()
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
    match runner {
        SelftestRunner::Kselftest if parts_ok && !name.contains('/') => {
            Ok(format!("kselftest/{collection}/{name}"))
        }
        SelftestRunner::Ftracetest if parts_ok && name.ends_with(".tc") => {
            match name.strip_prefix("test.d/") {
                Some(rest) => Ok(format!("ftracetest/{rest}")),
                None => Err(format!(
                    "ftracetest test '{name}' must be a path under test.d/ (test.d/direct/ftrace-direct.tc)"
                )),
            }
        }
        SelftestRunner::Kselftest => Err(format!(
            "kselftest test '{name}' must be a file name in tools/testing/selftests/{collection}"
        )),
        SelftestRunner::Ftracetest => Err(format!(
            "ftracetest test '{name}' must be a .tc file under test.d/"
        )),
    }
}

/// A selftest step's expectation on one variant: the variant's expected
/// outcome replaces the step's own (an xfail one is checked for a pass).
/// None for a step that runs no selftest.
pub fn on_variant(own: &StepExpect, outcome: Outcome) -> Option<StepExpect> {
    let st = own.selftest.as_ref()?;
    let mut e = own.clone();
    e.selftest = Some(SelftestExpect {
        outcome,
        ..st.clone()
    });
    Some(e)
}

pub fn expect_for(step: &Step, outcome: Outcome) -> Option<SelftestExpect> {
    match step {
        Step::Selftest { runner, .. } => Some(SelftestExpect {
            runner: *runner,
            outcome,
        }),
        _ => None,
    }
}

/// Outputs recorded from the stock kernel's guest (see
/// runner/tests/data/selftests/README.md for how each was made), for the
/// tests here and in the parsers' modules.
#[cfg(test)]
mod recorded {
    pub const K_PASS: &str =
        include_str!("../../../tests/data/selftests/kselftest-test-livepatch-pass.txt");
    pub const K_FAIL: &str = include_str!(
        "../../../tests/data/selftests/kselftest-test-livepatch-fail-module-missing.txt"
    );
    pub const K_SKIP: &str =
        include_str!("../../../tests/data/selftests/kselftest-test-livepatch-skip-no-module.txt");
    pub const K_KILLED: &str =
        include_str!("../../../tests/data/selftests/kselftest-test-callbacks-killed-mid-test.txt");
    pub const F_PASS: &str =
        include_str!("../../../tests/data/selftests/ftracetest-kprobe-direct-pass.txt");
    pub const F_FAIL: &str = include_str!("../../../tests/data/selftests/ftracetest-fail.txt");
    pub const F_UNSUP: &str =
        include_str!("../../../tests/data/selftests/ftracetest-unsupported.txt");
    pub const F_KILLED: &str =
        include_str!("../../../tests/data/selftests/ftracetest-ftrace-direct-killed-mid-test.txt");
}

#[cfg(test)]
mod tests {
    use super::recorded::{F_KILLED, F_UNSUP, K_FAIL, K_PASS, K_SKIP};
    use super::*;

    const K: SelftestRunner = SelftestRunner::Kselftest;
    const F: SelftestRunner = SelftestRunner::Ftracetest;

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
