//! Verdicts: what each step showed against what it must show, and the
//! case's outcome against what the variant is meant to do. Pure functions
//! over recorded answers, tested without a VM.

use coexist_proto::{Answer, BpfStats, FtraceState, Step};
use serde::{Deserialize, Serialize};

use crate::splat::Splat;
use crate::suite::{Expected, StepExpect, StepRef};
use crate::vm::{FailureKind, VmFailure};

/// One executed step, as recorded in reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based position in the case.
    pub index: usize,
    pub label: Option<String>,
    pub request: Step,
    pub expect: StepExpect,
    pub answer: Answer,
    pub splats: Vec<Splat>,
    pub host_s: f64,
    /// What the step showed that it must not have (empty: as required).
    pub mismatches: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
    Xfail,
    Xpass,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
            Verdict::Xfail => "XFAIL",
            Verdict::Xpass => "XPASS",
        }
    }
}

/// The case's result on one variant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whether this is the outcome the suite expects on this variant.
    pub as_expected: bool,
    /// One line for people.
    pub summary: String,
    /// Evidence for unexpected outcomes: mismatches, splats, errors.
    pub evidence: Vec<String>,
}

fn stats_of(a: &Answer) -> Option<BpfStats> {
    a.data.clone().and_then(|d| serde_json::from_value(d).ok())
}

fn ftrace_of(a: &Answer) -> Option<FtraceState> {
    a.data.clone().and_then(|d| serde_json::from_value(d).ok())
}

fn describe_failure(a: &Answer) -> String {
    match (&a.errno_name, &a.error) {
        (Some(n), Some(e)) => format!("{n}: {e}"),
        (Some(n), None) => n.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => "failed".into(),
    }
}

/// Checks one answer against what the step must show.
pub fn check_step(e: &StepExpect, a: &Answer) -> Vec<String> {
    let mut m = Vec::new();
    match &e.errno {
        Some(want) => {
            if a.ok {
                m.push(format!(
                    "expected the kernel to refuse with {want}, but the step succeeded"
                ));
            } else if a.errno_name.as_deref() != Some(want.as_str()) {
                m.push(format!("expected {want}, got {}", describe_failure(a)));
            }
            return m;
        }
        None => {
            if !a.ok {
                m.push(format!("the step failed: {}", describe_failure(a)));
                return m;
            }
        }
    }
    if let Some(o) = &e.output {
        if &a.output != o {
            m.push(format!("output {:?}, expected {:?}", a.output, o));
        }
    }
    if let Some(o) = &e.output_contains {
        if !a.output.contains(o.as_str()) {
            m.push(format!("output {:?} does not contain {:?}", a.output, o));
        }
    }
    if let Some(o) = &e.output_not_contains {
        if a.output.contains(o.as_str()) {
            m.push(format!("output {:?} contains {:?}", a.output, o));
        }
    }
    let wants_stats = e.hits.is_some()
        || e.hits_min.is_some()
        || e.ret.is_some()
        || e.arg0.is_some()
        || e.seen.is_some();
    if wants_stats {
        match stats_of(a) {
            None => m.push("no BPF counters in the answer".into()),
            Some(s) => {
                if let Some(h) = e.hits {
                    if s.hits != h {
                        m.push(format!("BPF program ran {} time(s), expected {h}", s.hits));
                    }
                }
                if let Some(h) = e.hits_min {
                    if s.hits < h {
                        m.push(format!(
                            "BPF program ran {} time(s), expected at least {h}",
                            s.hits
                        ));
                    }
                }
                if let Some(r) = e.ret {
                    if s.ret != r {
                        m.push(format!("fexit saw return value {}, expected {r}", s.ret));
                    }
                }
                if let Some(x) = e.arg0 {
                    if s.arg0 != x {
                        m.push(format!("first argument {}, expected {x}", s.arg0));
                    }
                }
                if let Some(x) = &e.seen {
                    if &s.seen != x {
                        m.push(format!(
                            "fexit saw the function produce {:?}, expected {:?}",
                            s.seen, x
                        ));
                    }
                }
            }
        }
    }
    let wants_ftrace = e.present.is_some() || e.flags.is_some() || e.refs.is_some();
    if wants_ftrace {
        match ftrace_of(a) {
            None => m.push("no ftrace state in the answer".into()),
            Some(f) => {
                if let Some(p) = e.present {
                    if f.present != p {
                        m.push(format!(
                            "{} is {} enabled_functions, expected {}",
                            f.function,
                            if f.present { "in" } else { "absent from" },
                            if p { "present" } else { "absent" }
                        ));
                    }
                }
                if let Some(fl) = &e.flags {
                    if f.present && &f.flags != fl {
                        m.push(format!(
                            "ftrace flags '{}', expected '{fl}' ({})",
                            f.flags, f.raw
                        ));
                    } else if !f.present {
                        m.push(format!(
                            "ftrace flags: {} is not in enabled_functions, expected '{fl}'",
                            f.function
                        ));
                    }
                }
                if let Some(r) = e.refs {
                    if f.present && f.refs != r {
                        m.push(format!(
                            "ftrace ref count {}, expected {r} ({})",
                            f.refs, f.raw
                        ));
                    }
                }
            }
        }
    }
    if let Some(n) = e.failed {
        let failed = a.data.as_ref().and_then(|d| {
            d.get("failed").and_then(|v| v.as_u64()).or_else(|| {
                d.get("threads").and_then(|t| t.as_array()).map(|ts| {
                    ts.iter()
                        .filter_map(|t| t.get("failed").and_then(|v| v.as_u64()))
                        .sum()
                })
            })
        });
        match failed {
            Some(f) if f != n => m.push(format!(
                "{f} inner step(s) failed, expected {n}: {}",
                a.data.as_ref().unwrap()
            )),
            None => m.push("no failure count in the answer".into()),
            _ => {}
        }
    }
    if let Some(allowed) = &e.errnos_allowed {
        // repeat: {"failures": [{"errno_name"}]}; concurrently: {"threads": [{"errnos": {name: n}}]}
        let mut seen: Vec<String> = Vec::new();
        if let Some(d) = &a.data {
            for f in d
                .get("failures")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                seen.push(
                    f.get("errno_name")
                        .and_then(|v| v.as_str())
                        .unwrap_or("other")
                        .to_string(),
                );
            }
            for t in d
                .get("threads")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(m) = t.get("errnos").and_then(|v| v.as_object()) {
                    seen.extend(m.keys().cloned());
                }
            }
        }
        let bad: Vec<&String> = seen.iter().filter(|e| !allowed.contains(e)).collect();
        if !bad.is_empty() {
            m.push(format!(
                "inner steps failed with {bad:?}, only {allowed:?} allowed: {}",
                a.data.as_ref().unwrap()
            ));
        }
    }
    if let Some(n) = e.min_iterations {
        let its: Vec<u64> = a
            .data
            .as_ref()
            .and_then(|d| d.get("threads"))
            .and_then(|t| t.as_array())
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| t.get("iterations").and_then(|v| v.as_u64()))
                    .collect()
            })
            .unwrap_or_default();
        if its.is_empty() || its.iter().any(|i| *i < n) {
            m.push(format!(
                "iterations per thread {its:?}, expected at least {n} each"
            ));
        }
    }
    m
}

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
/// variant's expected refusal replaces the step's own.
pub fn effective_expect(
    step_index: usize,
    own: &StepExpect,
    expected: &Expected,
    labels: &[Option<String>],
) -> StepExpect {
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

fn splat_line(s: &Splat) -> String {
    let at = s
        .step
        .map(|i| format!(" during step {i}"))
        .unwrap_or_else(|| " outside any step".into());
    format!("{} splat{at}: {}", s.kind, s.title)
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
        RefusedAsExpected(usize, String),
        Failed(String),
        Errored(String),
    }
    let mut happened = Happened::Clean;
    for r in records {
        for s in &r.splats {
            evidence.push(splat_line(s));
        }
        for mm in &r.mismatches {
            evidence.push(format!("step {} ({}): {mm}", r.index, r.request.kind()));
        }
    }
    for s in unattributed {
        evidence.push(splat_line(s));
    }
    if let Some(f) = failure {
        let msg = format!(
            "{:?} at step {}: {}",
            f.kind,
            f.step.map(|s| s.to_string()).unwrap_or("-".into()),
            f.message
        );
        if let Some(p) = &f.panic {
            evidence.push(splat_line(p));
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
                splat_line(&r.splats[0])
            ),
        });
    } else if !unattributed.is_empty() {
        happened = Happened::Failed(splat_line(&unattributed[0]));
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
        (Expected::Xfail { reason, reference }, Happened::Errored(w)) => (
            Verdict::Xfail,
            true,
            format!("known failure ({reason}; {reference}): {w}"),
        ),
        (Expected::Xfail { reason, .. }, _) => (
            Verdict::Xpass,
            false,
            format!("expected to fail ({reason}) but passed: the xfail can go"),
        ),
        (_, Happened::Errored(w)) => (Verdict::Error, false, w),
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
        (Expected::Pass, Happened::RefusedAsExpected(..))
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
    use std::path::PathBuf;

    fn answer(
        ok: bool,
        errno: Option<&str>,
        output: &str,
        data: Option<serde_json::Value>,
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
        let mismatches = check_step(&e, &a);
        StepRecord {
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
            kind: "warning".into(),
            title: "WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:2000".into(),
            step: Some(step),
            line: 100,
            text: vec!["WARNING: ...".into()],
        }
    }

    #[test]
    fn checks_output_counters_and_ftrace_state() {
        let e = StepExpect {
            output: Some("this has been live patched\n".into()),
            ..Default::default()
        };
        assert!(check_step(
            &e,
            &answer(true, None, "this has been live patched\n", None)
        )
        .is_empty());
        assert_eq!(
            check_step(&e, &answer(true, None, "console=ttyS0\n", None)).len(),
            1
        );
        let e = StepExpect {
            hits: Some(2),
            seen: Some("x".into()),
            ..Default::default()
        };
        let a = answer(
            true,
            None,
            "",
            Some(serde_json::json!({"hits": 1, "arg0": 0, "ret": 0, "seen": "x"})),
        );
        let m = check_step(&e, &a);
        assert_eq!(m.len(), 1);
        assert!(m[0].contains("ran 1 time(s), expected 2"));
        let e = StepExpect {
            flags: Some("RID".into()),
            refs: Some(2),
            ..Default::default()
        };
        let a = answer(
            true,
            None,
            "",
            Some(
                serde_json::json!({"present": true, "function": "f", "module": null, "refs": 1, "flags": "I", "tramp": null, "direct": null, "raw": "f (1)   I  "}),
            ),
        );
        assert_eq!(check_step(&e, &a).len(), 2);
    }

    #[test]
    fn stress_answers() {
        let d = serde_json::json!({"threads": [
            {"iterations": 112, "ok": 336, "failed": 0, "errnos": {}},
            {"iterations": 86, "ok": 323, "failed": 7, "errnos": {"EAGAIN": 7}}]});
        let a = answer(true, None, "", Some(d));
        let e = StepExpect {
            errnos_allowed: Some(vec!["EAGAIN".into()]),
            min_iterations: Some(3),
            ..Default::default()
        };
        assert!(check_step(&e, &a).is_empty(), "{:?}", check_step(&e, &a));
        let e = StepExpect {
            errnos_allowed: Some(vec![]),
            ..Default::default()
        };
        assert!(check_step(&e, &a)[0].contains("EAGAIN"));
        let e = StepExpect {
            failed: Some(0),
            ..Default::default()
        };
        assert!(check_step(&e, &a)[0].contains("7 inner step(s) failed"));
        let e = StepExpect {
            min_iterations: Some(100),
            ..Default::default()
        };
        assert!(check_step(&e, &a)[0].contains("[112, 86]"));
    }

    #[test]
    fn errno_expectations() {
        let e = StepExpect {
            errno: Some("EBUSY".into()),
            ..Default::default()
        };
        assert!(check_step(&e, &answer(false, Some("EBUSY"), "", None)).is_empty());
        assert!(check_step(&e, &answer(true, None, "", None))[0].contains("but the step succeeded"));
        assert!(check_step(&e, &answer(false, Some("EINVAL"), "", None))[0]
            .contains("expected EBUSY, got EINVAL"));
        // Without an errno expectation, a failed step is a mismatch.
        assert!(check_step(
            &StepExpect::default(),
            &answer(false, Some("EBUSY"), "", None)
        )[0]
        .contains("EBUSY"));
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
            errno: "EBUSY".into(),
        };
        let labels = vec![None, Some("bpf".to_string())];
        let e2 = effective_expect(2, &StepExpect::default(), &exp, &labels);
        assert_eq!(e2.errno.as_deref(), Some("EBUSY"));
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
        let ok = vec![ok_rec(1)];
        let d = decide(&x, &ok, 1, None, &[]);
        assert_eq!((d.verdict, d.as_expected), (Verdict::Xpass, false));
    }
}
