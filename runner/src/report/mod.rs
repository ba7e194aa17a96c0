//! Stage 5: case results -> reports.
//!
//! In: a [`RunReport`] (`crate::record`: built by `crate::run`, or read
//! back from `report.json` files). Out, in `results/<run-id>/`:
//! `report.json` (the [`RunReport`] itself, schema
//! [`crate::record::SCHEMA`]), `junit.xml`, `results.ktap`,
//! `index.html` (the page people look at),
//! and, written while the run goes, `results.jsonl` (one finished case a
//! line); console logs are written by the VMs next to them. Also the
//! terminal summary table and the merge of shard reports.
//!
//! One module per output format: `junit`, `ktap`, `html`, `table`,
//! `stream` (an event sink), `merge`, `diff` (two runs, or two variants of
//! one), `bench` (figures of a run); `grid` holds the shapes they share
//! (the case x variant grid, the `suite/case` key, the totals line).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::record::{CaseResult, Expected, RunReport};

pub mod bench;
pub mod diff;
pub mod explore_html;
pub mod grid;
pub mod html;
pub mod junit;
pub mod kcidb;
pub mod ktap;
pub mod merge;
pub mod mutants_html;
pub mod stream;
pub mod table;

pub use crate::text::shown;
pub use html::html;
pub use junit::junit;
pub use ktap::ktap;
pub use merge::merge;
pub use table::table;

/// Everything known about an unexpected outcome, for people (shown).
pub fn failure_text(r: &CaseResult) -> String {
    let mut s = format!("{}\n", r.decision.summary);
    for e in &r.decision.evidence {
        let _ = writeln!(s, "{e}");
    }
    for st in &r.steps {
        for sp in &st.splats {
            let _ = writeln!(s, "--- {} splat during step {}:", sp.kind, st.index);
            for l in &sp.text {
                let _ = writeln!(s, "{l}");
            }
        }
    }
    if let Some(f) = &r.failure {
        if let Some(p) = &f.panic {
            let _ = writeln!(s, "--- panic:");
            for l in &p.text {
                let _ = writeln!(s, "{l}");
            }
        } else {
            let _ = writeln!(s, "--- last console lines:");
            for l in &f.last_console {
                let _ = writeln!(s, "{l}");
            }
        }
    }
    let _ = writeln!(s, "console log: {}", r.console_log.display());
    shown(&s)
}

pub fn expected_text(e: &Expected) -> String {
    match e {
        Expected::Pass => "pass".into(),
        Expected::Fail { step, errno } => format!("refused at {step} with {errno}"),
        Expected::Xfail { reason, reference } => format!("xfail: {reason} ({reference})"),
        Expected::TestFails => "the selftest fails".into(),
        Expected::Skip => "the selftest skips".into(),
    }
}

/// Writes report.json, junit.xml, results.ktap and index.html into `dir`.
pub fn write_all(dir: &Path, report: &RunReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, data) in [
        ("report.json", serde_json::to_string_pretty(report)?),
        ("junit.xml", junit(report)?),
        ("results.ktap", ktap(report)),
        ("index.html", html(report, Some(dir))),
    ] {
        let p = dir.join(name);
        crate::cache::write_atomic(&p, data.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
pub(crate) mod testdata {
    //! A small report with one case of each kind, for the format tests.
    use super::*;
    use crate::record::{Decision, Host, PlanInfo, StepRecord, Timings, Verdict, SCHEMA};
    use crate::vm::{Splat, SplatKind};
    use coexist_proto::{Answer, Step};

    pub fn result(
        case: &str,
        variant: &str,
        verdict: Verdict,
        as_expected: bool,
        expected: Expected,
    ) -> CaseResult {
        let splat = Splat {
            kind: SplatKind::Warning,
            title: "WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:2000 x".into(),
            step: Some(2),
            line: 10,
            text: vec![
                "------------[ cut here ]------------".into(),
                "WARNING: <&> \"q\"".into(),
            ],
        };
        CaseResult {
            job: 0,
            worker: 0,
            started_s: 0.0,
            id: format!("s/{case}@{variant}"),
            suite: "s".into(),
            case: case.into(),
            description: String::new(),
            variant: variant.into(),
            expected,
            decision: Decision {
                verdict,
                as_expected,
                summary: format!("{} <summary> & \"quotes\" # hash", verdict.as_str()),
                evidence: if as_expected {
                    vec![]
                } else {
                    vec!["step 2 (trigger): output \"x\"".into()]
                },
            },
            steps: vec![StepRecord {
                vm_step: 2,
                index: 2,
                label: None,
                request: Step::Trigger {
                    target: "cmdline_proc_show".into(),
                },
                expect: Default::default(),
                answer: Answer {
                    id: Some(2),
                    ok: true,
                    ..Default::default()
                },
                splats: if verdict == Verdict::Fail {
                    vec![splat]
                } else {
                    vec![]
                },
                host_s: 0.1,
                mismatches: vec![],
            }],
            steps_total: 3,
            failure: None,
            unattributed_splats: vec![],
            console_log: PathBuf::from(format!("/r/console/{variant}/{case}.log")),
            accel: None,
            boot_s: Some(1.0),
            restored: false,
            total_s: 2.0,
            fixed_s: 0.0,
        }
    }

    pub fn sample() -> RunReport {
        let x = Expected::Xfail {
            reason: "known bug".into(),
            reference: "https://lore.kernel.org/r/x".into(),
        };
        let mut results = vec![
            result("a/pass", "v1", Verdict::Pass, true, Expected::Pass),
            result("a/fail", "v1", Verdict::Fail, false, Expected::Pass),
            result("a/pass", "v2", Verdict::Error, false, Expected::Pass),
            result("a/fail", "v2", Verdict::Xfail, true, x),
        ];
        for (i, r) in results.iter_mut().enumerate() {
            r.job = i;
        }
        RunReport {
            schema: SCHEMA.into(),
            run_id: "r1".into(),
            started: "2026-11-26T00:00:00Z".into(),
            coexist_version: "0".into(),
            host: Host::default(),
            accel: Some("tcg".into()),
            shard: None,
            plan: PlanInfo {
                key: "p1".into(),
                jobs: 4,
            },
            jobs: 4,
            complete: true,
            incomplete: None,
            suites: vec!["s".into()],
            variants: vec![],
            totals: crate::record::totals(&results),
            results,
            timings: Timings::default(),
        }
    }

    pub fn python(script: &str, input: &str) -> String {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("in");
        std::fs::write(&f, input).unwrap();
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn exit_codes_say_unexpected_infrastructure_and_incomplete_apart() {
        let mut r = sample();
        assert_eq!(r.exit_code(), 1, "unexpected outcomes");
        for c in &mut r.results {
            c.decision.as_expected = true;
        }
        r.totals = crate::record::totals(&r.results);
        assert_eq!(r.exit_code(), 0);
        let mut infra = r.clone();
        infra.results[0].failure = Some(crate::vm::VmFailure {
            kind: crate::vm::FailureKind::QemuFailed,
            message: "cannot start qemu-system-x86_64".into(),
            step: None,
            elapsed_s: 0.0,
            panic: None,
            last_console: vec![],
            console_log: "c.log".into(),
            qemu_pid: None,
            saw_banner: false,
        });
        assert_eq!(
            infra.exit_code(),
            2,
            "QEMU did not start: the harness's failure"
        );
        let mut cut = r.clone();
        cut.complete = false;
        cut.incomplete = Some("interrupted by signal 15".into());
        assert_eq!(cut.exit_code(), 2);
    }

    #[test]
    fn guest_control_characters_are_escaped_wherever_shown() {
        let mut r = sample();
        let evil = "\u{1b}[2J\u{7}bell\u{0}nul\u{9b}c1";
        for c in &mut r.results {
            c.decision.summary = format!("{} {evil}", c.decision.summary);
            c.decision.evidence.push(evil.into());
            for st in &mut c.steps {
                for sp in &mut st.splats {
                    sp.text.push(evil.into());
                }
            }
        }
        assert_eq!(shown("a\tb\nc"), "a\tb\nc");
        assert_eq!(shown("\u{1b}[2J"), "\\u{1b}[2J");
        let outputs = [
            junit(&r).unwrap(),
            ktap(&r),
            table(&r),
            crate::ui::terminal::case_line(&r.results[1].line()),
        ];
        for out in &outputs {
            assert!(
                !out.chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{out}"
            );
            assert!(out.contains("\\u{1b}[2J"), "{out}");
        }
        // The XML still parses, with the escaped text in it.
        let got = python(
            "import sys, xml.etree.ElementTree as ET\nprint(len(ET.parse(sys.argv[1]).getroot().findall('testsuite')))",
            &outputs[0],
        );
        assert_eq!(got.trim(), "2");
    }

    #[test]
    fn totals_and_exit_code() {
        let r = sample();
        assert_eq!(r.totals.unexpected, 2);
        assert_eq!(
            (r.totals.pass, r.totals.fail, r.totals.error, r.totals.xfail),
            (1, 1, 1, 1)
        );
        assert_eq!(r.exit_code(), 1);
    }
}
