//! Verdicts: the case's outcome against what the variant is meant to do.
//! Pure functions over recorded steps (each already checked by its step
//! family, `crate::steps`), tested without a VM.

use crate::input::Errno;
use crate::record::{Decision, StepRecord, Verdict};
use crate::steps::StepExpect;
use crate::suite::{Expected, StepRef};
use crate::vm::splat::Splat;
use crate::vm::{FailureKind, VmFailure};

/// The 1-based index of the step an expected failure names.
pub fn resolve_step(r: &StepRef, labels: &[Option<String>]) -> Option<usize> {
    match r {
        StepRef::Index(i) => Some(*i),
        StepRef::Label(l) => labels
            .iter()
            .position(|x| x.as_deref() == Some(l.as_str()))
            .map(|i| i + 1),
    }
}

/// The expectation a step is checked against on this variant: the
/// variant's expected refusal replaces the step's own; a selftest must
/// show the variant's expected outcome (an xfail one is checked for a
/// pass).
pub fn effective_expect(
    step_index: usize,
    own: &StepExpect,
    expected: &Expected,
    labels: &[Option<String>],
) -> StepExpect {
    if let Some(e) = crate::steps::selftest::on_variant(own, expected.selftest_outcome()) {
        return e;
    }
    if let Expected::Fail { step, errno } = expected {
        if resolve_step(step, labels) == Some(step_index) {
            return StepExpect {
                errno: Some(errno.clone()),
                ..Default::default()
            };
        }
    }
    own.clone()
}

/// Decides a case from its records, the VM failure (if any) and splats
/// seen outside steps.
pub fn decide(
    expected: &Expected,
    records: &[StepRecord],
    n_steps: usize,
    failure: Option<&VmFailure>,
    unattributed: &[Splat],
) -> Decision {
    let labels: Vec<Option<String>> = records.iter().map(|r| r.label.clone()).collect();
    let mut evidence = Vec::new();
    // What happened, ignoring expectations.
    enum Happened {
        Clean,
        /// The step the variant is expected to have refused was refused as expected.
        RefusedAsExpected(usize, Errno),
        Failed(String),
        Errored(String),
    }
    let mut happened = Happened::Clean;
    for r in records {
        for s in &r.splats {
            evidence.push(s.line());
        }
        for mm in &r.mismatches {
            evidence.push(format!("step {} ({}): {mm}", r.index, r.request.kind()));
        }
    }
    for s in unattributed {
        evidence.push(s.line());
    }
    if let Some(f) = failure {
        let msg = format!(
            "{:?} at step {}: {}",
            f.kind,
            f.step.map(|s| s.to_string()).unwrap_or("-".into()),
            f.message
        );
        if let Some(p) = &f.panic {
            evidence.push(p.line());
        }
        evidence.push(msg.clone());
        happened = if f.kind == FailureKind::Panic {
            Happened::Failed(format!("kernel panic: {}", f.message))
        } else {
            Happened::Errored(msg)
        };
    } else if let Some(r) = records
        .iter()
        .find(|r| !r.mismatches.is_empty() || !r.splats.is_empty())
    {
        happened = Happened::Failed(match r.mismatches.first() {
            Some(m) => format!("step {} ({}): {m}", r.index, r.request.kind()),
            None => format!(
                "step {} ({}): {}",
                r.index,
                r.request.kind(),
                r.splats[0].line()
            ),
        });
    } else if !unattributed.is_empty() {
        happened = Happened::Failed(unattributed[0].line());
    } else if let Expected::Fail { step, errno } = expected {
        match resolve_step(step, &labels) {
            Some(i) if i <= records.len() => {
                happened = Happened::RefusedAsExpected(i, errno.clone())
            }
            _ => {
                happened = Happened::Errored(format!(
                    "the case ended before {step} ({} of {n_steps} steps ran)",
                    records.len()
                ))
            }
        }
    } else if records.len() < n_steps {
        happened = Happened::Errored(format!("only {} of {n_steps} steps ran", records.len()));
    }

    let (verdict, as_expected, summary) = match (expected, happened) {
        (Expected::Xfail { reason, reference }, Happened::Failed(w)) => (
            Verdict::Xfail,
            true,
            format!("known failure ({reason}; {reference}): {w}"),
        ),
        // Harness trouble says nothing about the known bug: ERROR, also
        // in an xfail case.
        (_, Happened::Errored(w)) => (Verdict::Error, false, w),
        (Expected::Xfail { reason, .. }, _) => (
            Verdict::Xpass,
            false,
            format!("expected to fail ({reason}) but passed: the xfail can go"),
        ),
        (_, Happened::Failed(w)) => (Verdict::Fail, false, w),
        (Expected::Pass, Happened::Clean) => (
            Verdict::Pass,
            true,
            "all steps as required, no splat".into(),
        ),
        (Expected::Fail { .. }, Happened::RefusedAsExpected(i, e)) => (
            Verdict::Pass,
            true,
            format!("refused at step {i} with {e}, as this variant must; no splat"),
        ),
        // A selftest's step was checked for the variant's outcome.
        (Expected::TestFails, Happened::Clean) => (
            Verdict::Pass,
            true,
            "the selftest failed, as it must on this variant; no splat".into(),
        ),
        (Expected::Skip, Happened::Clean) => (
            Verdict::Skip,
            true,
            "the selftest skipped, as it must on this variant; no splat".into(),
        ),
        (Expected::Pass, Happened::RefusedAsExpected(..))
        | (Expected::TestFails | Expected::Skip, Happened::RefusedAsExpected(..))
        | (Expected::Fail { .. }, Happened::Clean) => {
            (Verdict::Error, false, "inconsistent expectation".into())
        }
    };
    if as_expected {
        evidence.clear();
    }
    Decision {
        verdict,
        as_expected,
        summary,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::SplatKind;
    use coexist_proto::{Answer, Step};
    use std::path::PathBuf;

    fn answer(
        ok: bool,
        errno: Option<&str>,
        output: &str,
        data: Option<coexist_proto::AnswerData>,
    ) -> Answer {
        Answer {
            id: Some(1),
            ok,
            errno: errno.map(|_| 16),
            errno_name: errno.map(str::to_string),
            error: if ok { None } else { Some("refused".into()) },
            output: output.into(),
            exit_code: None,
            data,
            duration_us: 10,
        }
    }

    fn rec(
        i: usize,
        label: Option<&str>,
        e: StepExpect,
        a: Answer,
        splats: Vec<Splat>,
    ) -> StepRecord {
        let mismatches = crate::steps::check(&e, &a);
        StepRecord {
            vm_step: i as u64,
            index: i,
            label: label.map(str::to_string),
            request: Step::Trigger {
                target: "cmdline_proc_show".into(),
            },
            expect: e,
            answer: a,
            splats,
            host_s: 0.1,
            mismatches,
        }
    }

    /// A step that succeeded and was required to.
    fn ok_rec(i: usize) -> StepRecord {
        rec(
            i,
            None,
            StepExpect::default(),
            answer(true, None, "", None),
            vec![],
        )
    }

    fn warn(step: u64) -> Splat {
        Splat {
            kind: SplatKind::Warning,
            title: "WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:2000".into(),
            step: Some(step),
            line: 100,
            text: vec!["WARNING: ...".into()],
        }
    }

    #[test]
    fn splat_fails_a_case_whose_assertions_all_held() {
        let r = vec![
            ok_rec(1),
            rec(
                2,
                None,
                StepExpect::default(),
                answer(true, None, "", None),
                vec![warn(2)],
            ),
        ];
        assert!(r.iter().all(|r| r.mismatches.is_empty()));
        let d = decide(&Expected::Pass, &r, 2, None, &[]);
        assert_eq!(d.verdict, Verdict::Fail);
        assert!(!d.as_expected);
        assert!(
            d.summary.contains("warning splat during step 2"),
            "{}",
            d.summary
        );
        assert!(d.evidence.iter().any(|e| e.contains("ftrace.c:2000")));
        // A splat between steps fails it too.
        let r1 = vec![ok_rec(1)];
        let mut s = warn(0);
        s.step = None;
        assert_eq!(
            decide(&Expected::Pass, &r1, 1, None, &[s]).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn expected_refusal_passes_only_where_it_is_expected() {
        let exp = Expected::Fail {
            step: StepRef::Label("bpf".into()),
            errno: Errno::parse("EBUSY").unwrap(),
        };
        let labels = vec![None, Some("bpf".to_string())];
        let e2 = effective_expect(2, &StepExpect::default(), &exp, &labels);
        assert_eq!(e2.errno.as_ref().map(Errno::as_str), Some("EBUSY"));
        let r = vec![
            ok_rec(1),
            rec(
                2,
                Some("bpf"),
                e2.clone(),
                answer(false, Some("EBUSY"), "", None),
                vec![],
            ),
        ];
        let d = decide(&exp, &r, 5, None, &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Pass, true), "{d:?}");
        assert!(d.summary.contains("refused at step 2 with EBUSY"));
        // The same refusal where success is expected is a FAIL with the errno as evidence.
        let r = vec![
            ok_rec(1),
            rec(
                2,
                Some("bpf"),
                StepExpect::default(),
                answer(false, Some("EBUSY"), "", None),
                vec![],
            ),
        ];
        let d = decide(&Expected::Pass, &r, 5, None, &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Fail, false));
        assert!(d.summary.contains("EBUSY"));
        // Where EBUSY is expected but the attach succeeds: FAIL.
        let r = vec![
            ok_rec(1),
            rec(2, Some("bpf"), e2, answer(true, None, "", None), vec![]),
        ];
        let d = decide(&exp, &r, 5, None, &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Fail, false));
        assert!(d.summary.contains("succeeded"));
    }

    #[test]
    fn a_selftest_is_checked_for_the_outcome_of_its_variant() {
        use crate::steps::selftest::{Outcome, SelftestExpect};
        use coexist_proto::SelftestRunner;
        let own = StepExpect {
            selftest: Some(SelftestExpect {
                runner: SelftestRunner::Kselftest,
                outcome: Outcome::Pass,
            }),
            ..Default::default()
        };
        let outcome = |e: &Expected| {
            effective_expect(1, &own, e, &[None])
                .selftest
                .unwrap()
                .outcome
        };
        assert_eq!(outcome(&Expected::Skip), Outcome::Skip);
        assert_eq!(outcome(&Expected::TestFails), Outcome::Fail);
        assert_eq!(outcome(&Expected::Pass), Outcome::Pass);
        let x = Expected::Xfail {
            reason: "known".into(),
            reference: "https://lore.kernel.org/x".into(),
        };
        assert_eq!(outcome(&x), Outcome::Pass, "an xfail is checked for a pass");
        let skip = "TAP version 13\n1..1\nok 1 selftests: livepatch: t.sh # SKIP\n";
        let fail = "TAP version 13\n1..1\nnot ok 1 selftests: livepatch: t.sh # exit=1\n";
        let run = |e: &Expected, out: &str| {
            let eff = effective_expect(1, &own, e, &[None]);
            let r = vec![rec(1, None, eff, answer(true, None, out, None), vec![])];
            decide(e, &r, 1, None, &[])
        };
        let d = run(&Expected::Skip, skip);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Skip, true), "{d:?}");
        let d = run(&Expected::TestFails, fail);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Pass, true), "{d:?}");
        // Skipping where it must pass is a FAIL that says so.
        let d = run(&Expected::Pass, skip);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Fail, false));
        assert!(d.summary.contains("skipped"), "{}", d.summary);
        let d = run(&x, fail);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Xfail, true));
        let d = run(&Expected::Skip, fail);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Fail, false));
    }

    #[test]
    fn harness_errors_are_errors_and_panics_are_failures() {
        let f = VmFailure {
            kind: FailureKind::StepTimeout,
            message: "step 3 (trigger) did not answer within 60.0 s".into(),
            step: Some(3),
            elapsed_s: 61.0,
            panic: None,
            last_console: vec![],
            console_log: PathBuf::from("c.log"),
            qemu_pid: None,
            saw_banner: true,
        };
        let d = decide(&Expected::Pass, &[], 3, Some(&f), &[]);
        assert_eq!(d.verdict, Verdict::Error);
        let mut p = f.clone();
        p.kind = FailureKind::Panic;
        p.message = "Kernel panic - not syncing: x".into();
        assert_eq!(
            decide(&Expected::Pass, &[], 3, Some(&p), &[]).verdict,
            Verdict::Fail
        );
        let x = Expected::Xfail {
            reason: "known".into(),
            reference: "https://lore.kernel.org/x".into(),
        };
        let d = decide(&x, &[], 3, Some(&p), &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Xfail, true));
        // A harness error in an xfail case is an ERROR, not the known bug.
        let d = decide(&x, &[], 3, Some(&f), &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Error, false));
        let ok = vec![ok_rec(1)];
        let d = decide(&x, &ok, 1, None, &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Xpass, false));
    }
}
