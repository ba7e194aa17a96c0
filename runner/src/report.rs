//! Reports of a run, in `results/<run-id>/`: `report.json` (the
//! [`RunReport`] struct, schema `coexist-report/1`), `junit.xml` (one
//! testsuite per variant), `results.ktap` (KTAP v1, a subtest per variant)
//! and one console log per VM. Also the terminal summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::matrix::{self, CaseResult, Totals};
use crate::suite::Expected;
use crate::verdict::Verdict;

pub const SCHEMA: &str = "coexist-report/1";

/// A variant as it was used in the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VariantInfo {
    pub name: String,
    pub kernel_key: String,
    pub kernel_release: String,
    pub source: String,
    pub series: Vec<String>,
    pub fragments: Vec<String>,
    pub fixtures_key: String,
    pub image_key: String,
    /// Time to get the kernel (a build, or the cache hit).
    pub build_s: f64,
    pub kernel_cached: bool,
    /// Fixtures and image (build or cache hit).
    pub image_s: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    pub qemu: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Kernels, fixtures and images.
    pub prepare_s: f64,
    /// The matrix, wall clock.
    pub matrix_s: f64,
    pub jobs: usize,
    /// CPU seconds of the runner itself during the matrix.
    #[serde(default)]
    pub runner_cpu_s: f64,
    /// CPU seconds of its QEMU processes during the matrix.
    #[serde(default)]
    pub qemu_cpu_s: f64,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub schema: String,
    pub run_id: String,
    pub started: String,
    pub coexist_version: String,
    pub host: Host,
    /// The accelerator the VMs used ("kvm", "tcg"), or null if none booted.
    pub accel: Option<String>,
    pub shard: Option<(usize, usize)>,
    pub suites: Vec<String>,
    pub variants: Vec<VariantInfo>,
    pub results: Vec<CaseResult>,
    pub totals: Totals,
    pub timings: Timings,
}

impl RunReport {
    pub fn exit_code(&self) -> u8 {
        if self.totals.unexpected > 0 {
            1
        } else {
            0
        }
    }
}

pub fn host() -> Host {
    Host {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .into(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .into(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        qemu: crate::source::first_line("qemu-system-x86_64", &["--version"]),
    }
}

/// Variants in the order they first appear in the results.
pub fn variant_order(results: &[CaseResult]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in results {
        if !v.contains(&r.variant) {
            v.push(r.variant.clone());
        }
    }
    v
}

fn failure_text(r: &CaseResult) -> String {
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
    s
}

/// JUnit XML: a testsuite per variant, a testcase per case. Unexpected
/// outcomes are failures (FAIL, XPASS) or errors (ERROR) with the evidence;
/// XFAIL is reported as skipped with its reason.
pub fn junit(report: &RunReport) -> Result<String> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut rep = Report::new(format!("coexist {}", report.run_id));
    for v in variant_order(&report.results) {
        let mut ts = TestSuite::new(v.clone());
        for r in report.results.iter().filter(|r| r.variant == v) {
            let status = match (r.decision.verdict, r.decision.as_expected) {
                (Verdict::Xfail, _) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(format!("XFAIL: {}", r.decision.summary));
                    s
                }
                (_, true) => TestCaseStatus::success(),
                (Verdict::Error, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(r.decision.summary.clone());
                    s.set_type("ERROR");
                    s.set_description(failure_text(r));
                    s
                }
                (v, false) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(r.decision.summary.clone());
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
                r.decision.summary,
                r.console_log.display()
            ));
            ts.add_test_case(tc);
        }
        rep.add_test_suite(ts);
    }
    rep.to_string().context("cannot render JUnit XML")
}

pub fn expected_text(e: &Expected) -> String {
    match e {
        Expected::Pass => "pass".into(),
        Expected::Fail { step, errno } => format!("refused at {step} with {errno}"),
        Expected::Xfail { reason, reference } => format!("xfail: {reason} ({reference})"),
    }
}

/// KTAP v1: the run is a test with a subtest per variant, each with a
/// result line per case. XFAIL carries the `# XFAIL` directive; lines
/// starting with `#` hold diagnostics for unexpected outcomes.
pub fn ktap(report: &RunReport) -> String {
    let variants = variant_order(&report.results);
    let mut s = String::new();
    s.push_str("KTAP version 1\n");
    let _ = writeln!(s, "1..{}", variants.len());
    for (vi, v) in variants.iter().enumerate() {
        let cases: Vec<&CaseResult> = report.results.iter().filter(|r| &r.variant == v).collect();
        s.push_str("    KTAP version 1\n");
        let _ = writeln!(s, "    # Subtest: {v}");
        let _ = writeln!(s, "    1..{}", cases.len());
        for (ci, r) in cases.iter().enumerate() {
            let name = format!("{}/{}", r.suite, r.case).replace('#', "_");
            if !r.decision.as_expected {
                for l in failure_text(r).lines().take(60) {
                    let _ = writeln!(s, "    # {l}");
                }
            }
            let line = match (r.decision.verdict, r.decision.as_expected) {
                (Verdict::Xfail, _) => format!(
                    "ok {} {name} # XFAIL {}",
                    ci + 1,
                    one_line(&r.decision.summary)
                ),
                (_, true) => format!("ok {} {name}", ci + 1),
                (Verdict::Error, false) => format!(
                    "not ok {} {name} # ERROR {}",
                    ci + 1,
                    one_line(&r.decision.summary)
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

/// Writes report.json, junit.xml and results.ktap into `dir`.
pub fn write_all(dir: &Path, report: &RunReport) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, data) in [
        ("report.json", serde_json::to_string_pretty(report)?),
        ("junit.xml", junit(report)?),
        ("results.ktap", ktap(report)),
    ] {
        let p = dir.join(name);
        crate::cache::write_atomic(&p, data.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}

fn cell(r: &CaseResult) -> String {
    let mark = if r.decision.as_expected { "" } else { "!" };
    let extra = match (&r.expected, r.decision.verdict) {
        (Expected::Fail { errno, .. }, Verdict::Pass) => format!("({errno})"),
        _ => String::new(),
    };
    format!(
        "{}{extra}{mark} {:.1}s",
        r.decision.verdict.as_str(),
        r.total_s
    )
}

/// The terminal summary: case rows x variant columns, then the unexpected
/// outcomes with their evidence.
pub fn table(report: &RunReport) -> String {
    let variants = variant_order(&report.results);
    let mut rows: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), &CaseResult> = BTreeMap::new();
    for r in &report.results {
        let row = format!("{}/{}", r.suite, r.case);
        if !rows.contains(&row) {
            rows.push(row.clone());
        }
        by.insert((row, r.variant.clone()), r);
    }
    let w0 = rows.iter().map(|r| r.len()).max().unwrap_or(4).max(4);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            variants
                .iter()
                .map(|v| {
                    by.get(&(row.clone(), v.clone()))
                        .map(|r| cell(r))
                        .unwrap_or_else(|| "-".into())
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            cells
                .iter()
                .map(|c| c[i].len())
                .max()
                .unwrap_or(0)
                .max(v.len())
        })
        .collect();
    let mut s = String::new();
    let _ = write!(s, "{:<w0$}", "CASE");
    for (v, w) in variants.iter().zip(&widths) {
        let _ = write!(s, "  {v:<w$}");
    }
    s.push('\n');
    for (row, cs) in rows.iter().zip(&cells) {
        let _ = write!(s, "{row:<w0$}");
        for (c, w) in cs.iter().zip(&widths) {
            let _ = write!(s, "  {c:<w$}");
        }
        s.push('\n');
    }
    let t = &report.totals;
    let _ = writeln!(
        s,
        "\n{} results: {} pass, {} fail, {} error, {} xfail, {} xpass; {} unexpected ('!')",
        t.cases, t.pass, t.fail, t.error, t.xfail, t.xpass, t.unexpected
    );
    let unexpected: Vec<&CaseResult> = report
        .results
        .iter()
        .filter(|r| !r.decision.as_expected)
        .collect();
    if !unexpected.is_empty() {
        s.push_str("\nUnexpected outcomes:\n");
        for r in unexpected {
            let _ = writeln!(
                s,
                "  {} on {}: {} (expected {})",
                r.case,
                r.variant,
                r.decision.verdict.as_str(),
                expected_text(&r.expected)
            );
            let _ = writeln!(s, "    {}", r.decision.summary);
            for e in r.decision.evidence.iter().take(8) {
                let _ = writeln!(s, "    - {e}");
            }
            let _ = writeln!(s, "    console: {}", r.console_log.display());
        }
    }
    let xf: Vec<&CaseResult> = report
        .results
        .iter()
        .filter(|r| r.decision.verdict == Verdict::Xfail)
        .collect();
    if !xf.is_empty() {
        s.push_str("\nKnown failures (xfail):\n");
        for r in xf {
            let _ = writeln!(s, "  {} on {}: {}", r.case, r.variant, r.decision.summary);
        }
    }
    s
}

/// Merges shard reports into one, as if the run had not been sharded:
/// results in the order of the full job list (shard slices interleave).
pub fn merge(mut parts: Vec<RunReport>) -> Result<RunReport> {
    anyhow::ensure!(!parts.is_empty(), "no reports to merge");
    for p in &parts {
        anyhow::ensure!(
            p.schema == SCHEMA,
            "{}: unknown report schema '{}'",
            p.run_id,
            p.schema
        );
    }
    parts.sort_by_key(|p| p.shard.map(|s| s.0).unwrap_or(0));
    let n = parts.len();
    // Shard I of N holds jobs I-1, I-1+N, ...: all N shards must be here.
    let shards: Vec<Option<(usize, usize)>> = parts.iter().map(|p| p.shard).collect();
    let complete = shards
        .iter()
        .enumerate()
        .all(|(k, s)| *s == Some((k + 1, n)));
    anyhow::ensure!(
        n == 1 || complete,
        "the reports are not shards 1..{n} of {n} of one run: {shards:?}"
    );
    let mut results = Vec::new();
    // Shard I holds jobs I-1, I-1+N, ...: take them round-robin.
    let mut iters: Vec<std::vec::IntoIter<CaseResult>> = parts
        .iter()
        .map(|p| p.results.clone().into_iter())
        .collect();
    'outer: loop {
        let mut any = false;
        for it in iters.iter_mut() {
            match it.next() {
                Some(r) => {
                    results.push(r);
                    any = true;
                }
                None => continue,
            }
        }
        if !any {
            break 'outer;
        }
    }
    let first = parts[0].clone();
    let mut variants: Vec<VariantInfo> = Vec::new();
    for p in &parts {
        for v in &p.variants {
            if !variants.iter().any(|x| x.name == v.name) {
                variants.push(v.clone());
            }
        }
    }
    Ok(RunReport {
        schema: SCHEMA.into(),
        run_id: first.run_id.clone(),
        started: first.started.clone(),
        coexist_version: first.coexist_version.clone(),
        host: first.host.clone(),
        accel: first.accel.clone(),
        shard: None,
        suites: first.suites.clone(),
        variants,
        totals: matrix::totals(&results),
        results,
        timings: Timings {
            prepare_s: parts
                .iter()
                .map(|p| p.timings.prepare_s)
                .fold(0.0, f64::max),
            matrix_s: parts.iter().map(|p| p.timings.matrix_s).fold(0.0, f64::max),
            jobs: parts.iter().map(|p| p.timings.jobs).sum(),
            runner_cpu_s: parts.iter().map(|p| p.timings.runner_cpu_s).sum(),
            qemu_cpu_s: parts.iter().map(|p| p.timings.qemu_cpu_s).sum(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::splat::Splat;
    use crate::verdict::{Decision, StepRecord};
    use coexist_proto::{Answer, Step};

    fn result(
        case: &str,
        variant: &str,
        verdict: Verdict,
        as_expected: bool,
        expected: Expected,
    ) -> CaseResult {
        let splat = Splat {
            kind: "warning".into(),
            title: "WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:2000 x".into(),
            step: Some(2),
            line: 10,
            text: vec![
                "------------[ cut here ]------------".into(),
                "WARNING: <&> \"q\"".into(),
            ],
        };
        CaseResult {
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
            total_s: 2.0,
            fixed_s: 0.0,
        }
    }

    fn sample() -> RunReport {
        let x = Expected::Xfail {
            reason: "known bug".into(),
            reference: "https://lore.kernel.org/r/x".into(),
        };
        let results = vec![
            result("a/pass", "v1", Verdict::Pass, true, Expected::Pass),
            result("a/fail", "v1", Verdict::Fail, false, Expected::Pass),
            result("a/pass", "v2", Verdict::Error, false, Expected::Pass),
            result("a/fail", "v2", Verdict::Xfail, true, x),
        ];
        RunReport {
            schema: SCHEMA.into(),
            run_id: "r1".into(),
            started: "2026-11-26T00:00:00Z".into(),
            coexist_version: "0".into(),
            host: Host::default(),
            accel: Some("tcg".into()),
            shard: None,
            suites: vec!["s".into()],
            variants: vec![],
            totals: crate::matrix::totals(&results),
            results,
            timings: Timings::default(),
        }
    }

    fn python(script: &str, input: &str) -> String {
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

    #[test]
    fn table_marks_unexpected_and_lists_evidence() {
        let t = table(&sample());
        assert!(t.lines().next().unwrap().starts_with("CASE"));
        assert!(
            t.contains("s/a/fail") && t.contains("FAIL! 2.0s") && t.contains("XFAIL 2.0s"),
            "{t}"
        );
        assert!(t.contains("Unexpected outcomes:"));
        assert!(t.contains("step 2 (trigger): output"));
        assert!(t.contains("Known failures (xfail):"));
    }

    #[test]
    fn merge_of_shards_equals_the_whole() {
        let whole = sample();
        let jobs = whole.results.clone();
        let n = 3;
        let parts: Vec<RunReport> = (1..=n)
            .map(|i| {
                let mut p = whole.clone();
                p.shard = Some((i, n));
                p.results = jobs
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % n == i - 1)
                    .map(|(_, r)| r.clone())
                    .collect();
                p.totals = crate::matrix::totals(&p.results);
                p
            })
            .collect();
        // In any order.
        let mut shuffled = parts.clone();
        shuffled.reverse();
        let m = merge(shuffled).unwrap();
        assert_eq!(
            serde_json::to_value(&m.results).unwrap(),
            serde_json::to_value(&whole.results).unwrap()
        );
        assert_eq!(m.totals, whole.totals);
        assert_eq!(table(&m), table(&whole));
        assert!(
            merge(parts[..2].to_vec()).is_err(),
            "an incomplete set of shards must not merge"
        );
    }
}
