//! KCIDB, KernelCI's reporting schema (v5.3): a run as checkouts, builds,
//! tests, issues and incidents (`report kcidb RUN`).
//!
//! In: a [`RunReport`] and the origin's name. Out: one JSON document.
//! - a checkout per kernel source (its pinned version in `misc`);
//! - a build per variant: architecture, the variant as config name, its
//!   fragments and series, compiler, duration of the kernel's build,
//!   status (PASS: the kernel was built or fetched; the run has no record
//!   of a variant whose kernel failed, it stops before its matrix);
//! - a test per (case, variant): path `coexist.<suite>.<case>` (`/` of a
//!   case name becomes `.`), status (PASS, FAIL, ERROR, SKIP; an XFAIL is
//!   a FAIL and an XPASS a PASS, both with our verdict in `misc`),
//!   duration, the QEMU environment, and for what did not pass the
//!   evidence as log excerpt;
//! - an issue per known kernel bug the suites mark xfail (its reference),
//!   and an incident per XFAIL (present) or XPASS (absent) of it.
//!
//! Ids are `<origin>:<run id>/...`, except issues: `<origin>:issue-<hash
//! of the reference>`, the same in every run. kcidb-io's validator checks
//! the shape (`.ci/kcidb-validate`); the links between objects are this
//! module's to get right.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{expected_text, failure_text, RunReport};
use crate::record::{CaseResult, Expected, Verdict};

/// The schema version the document states.
pub const VERSION: (u32, u32) = (5, 3);

/// KCIDB's limit on a log excerpt, in characters.
const LOG_EXCERPT_MAX: usize = 16384;

/// Whether `origin` is a name KCIDB accepts (`[a-z0-9_]+`).
pub fn check_origin(origin: &str) -> Result<()> {
    if origin.is_empty()
        || !origin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        bail!("--origin {origin:?}: KCIDB takes lowercase letters, digits and _ only");
    }
    Ok(())
}

/// A KCIDB test path of a case: `coexist.<suite>.<case>`, a `/` of the
/// case name a `.`, any other character KCIDB refuses a `_`.
pub fn test_path(suite: &str, case: &str) -> String {
    let part = |s: &str| -> String {
        s.split('/')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    format!("coexist.{}.{}", part(suite), part(case))
}

/// KCIDB's status of a verdict.
pub fn status(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass | Verdict::Xpass => "PASS",
        Verdict::Fail | Verdict::Xfail => "FAIL",
        Verdict::Error => "ERROR",
        Verdict::Skip => "SKIP",
    }
}

/// The id of the issue of a known bug's reference.
pub fn issue_id(origin: &str, reference: &str) -> String {
    let h = Sha256::digest(reference.as_bytes());
    let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{origin}:issue-{hex}")
}

/// At most [`LOG_EXCERPT_MAX`] characters of `s` (its start).
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(LOG_EXCERPT_MAX) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `started` (RFC 3339) plus `s` seconds, in RFC 3339 (UTC).
fn at(started: &str, s: f64) -> Option<String> {
    let t0 = humantime::parse_rfc3339(started).ok()?;
    let t = t0 + Duration::from_secs_f64(s.max(0.0));
    Some(humantime::format_rfc3339_millis(t).to_string())
}

/// The first `https://` address in `s`, if any.
fn url_in(s: &str) -> Option<String> {
    let i = s.find("https://")?;
    let u: String = s[i..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ')' | ']' | '>' | '"' | ','))
        .collect();
    (u.len() > "https://".len()).then_some(u)
}

fn put(m: &mut Map<String, Value>, k: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(k.into(), v);
    }
}

/// The run as a KCIDB document (schema [`VERSION`]).
pub fn document(report: &RunReport, origin: &str) -> Result<Value> {
    check_origin(origin)?;
    let run = &report.run_id;
    let started = at(&report.started, 0.0);
    // Checkouts: one per source, in the order the variants name them.
    let mut checkouts: BTreeMap<String, Value> = BTreeMap::new();
    let checkout_of = |v: &crate::record::VariantInfo| -> String {
        let name = if v.source_name.is_empty() {
            &v.source
        } else {
            &v.source_name
        };
        format!("{origin}:{run}/checkout/{name}")
    };
    let mut builds = Vec::new();
    for v in &report.variants {
        let cid = checkout_of(v);
        if !checkouts.contains_key(&cid) {
            let mut c = Map::new();
            c.insert("id".into(), json!(cid));
            c.insert("origin".into(), json!(origin));
            if !v.source_name.is_empty() {
                c.insert("tree_name".into(), json!(v.source_name));
            }
            put(&mut c, "start_time", started.clone().map(Value::from));
            c.insert(
                "comment".into(),
                json!(format!("{} ({})", v.kernel_version, v.source)),
            );
            c.insert("valid".into(), json!(true));
            c.insert(
                "misc".into(),
                json!({
                    "source": v.source,
                    "kernel_version": v.kernel_version,
                    "prebuilt": v.prebuilt.as_ref().map(|p| json!({
                        "package": p.package,
                        "version": p.version,
                        "deb_sha256": p.deb_sha256,
                    })),
                }),
            );
            checkouts.insert(cid.clone(), Value::Object(c));
        }
        let mut b = Map::new();
        b.insert(
            "id".into(),
            json!(format!("{origin}:{run}/build/{}", v.name)),
        );
        b.insert("origin".into(), json!(origin));
        b.insert("checkout_id".into(), json!(cid));
        b.insert("architecture".into(), json!("x86_64"));
        b.insert("config_name".into(), json!(v.name));
        put(&mut b, "start_time", started.clone().map(Value::from));
        if let Some(cc) = v
            .toolchain
            .split(';')
            .next()
            .filter(|c| !c.trim().is_empty())
        {
            b.insert("compiler".into(), json!(cc.trim()));
        }
        if v.prebuilt.is_none() && v.build_seconds > 0.0 {
            b.insert("duration".into(), json!(v.build_seconds));
        }
        b.insert("status".into(), json!("PASS"));
        let mut comment = format!("{} {}", v.name, v.kernel_release);
        if let Some(p) = &v.prebuilt {
            let _ = write!(comment, " ({})", p.origin());
        }
        b.insert("comment".into(), json!(comment));
        b.insert(
            "misc".into(),
            json!({
                "fragments": v.fragments,
                "series": v.series,
                "already_in_source": v.already_in_source,
                "kernel_key": v.kernel_key,
                "kernel_release": v.kernel_release,
                "toolchain": v.toolchain,
                "coverage_profiled": v.profiled,
                "cached": v.kernel_cached,
            }),
        );
        builds.push(Value::Object(b));
    }
    // Tests, and the known bugs they show or do not.
    let mut tests = Vec::new();
    let mut issues: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut incidents = Vec::new();
    for r in &report.results {
        let tid = format!("{origin}:{run}/test/{}", r.id);
        tests.push(test(report, origin, &tid, r));
        if let Expected::Xfail { reason, reference } = &r.expected {
            let iid = issue_id(origin, reference);
            let e = issues
                .entry(iid.clone())
                .or_insert_with(|| (reference.clone(), Vec::new()));
            if !e.1.contains(reason) {
                e.1.push(reason.clone());
            }
            // Present when the bug showed (XFAIL); absent when the case
            // passed (XPASS); an ERROR or SKIP says neither.
            let present = match r.decision.verdict {
                Verdict::Xfail => Some(true),
                Verdict::Xpass => Some(false),
                _ => None,
            };
            if let Some(present) = present {
                incidents.push(json!({
                    "id": format!("{tid}/incident"),
                    "origin": origin,
                    "issue_id": iid,
                    "issue_version": 1,
                    "test_id": tid,
                    "present": present,
                    "comment": r.decision.summary,
                }));
            }
        }
    }
    let issues: Vec<Value> = issues
        .into_iter()
        .map(|(id, (reference, reasons))| {
            let mut i = Map::new();
            i.insert("id".into(), json!(id));
            i.insert("version".into(), json!(1));
            i.insert("origin".into(), json!(origin));
            put(&mut i, "report_url", url_in(&reference).map(Value::from));
            i.insert("report_subject".into(), json!(reference));
            i.insert(
                "culprit".into(),
                json!({"code": true, "tool": false, "harness": false}),
            );
            i.insert("comment".into(), json!(reasons.join("\n")));
            i.insert(
                "misc".into(),
                json!({"reference": reference, "reasons": reasons}),
            );
            Value::Object(i)
        })
        .collect();
    Ok(json!({
        "version": {"major": VERSION.0, "minor": VERSION.1},
        "checkouts": checkouts.into_values().collect::<Vec<_>>(),
        "builds": builds,
        "tests": tests,
        "issues": issues,
        "incidents": incidents,
    }))
}

fn test(report: &RunReport, origin: &str, tid: &str, r: &CaseResult) -> Value {
    let mut t = Map::new();
    t.insert("id".into(), json!(tid));
    t.insert("origin".into(), json!(origin));
    t.insert(
        "build_id".into(),
        json!(format!("{origin}:{}/build/{}", report.run_id, r.variant)),
    );
    t.insert("path".into(), json!(test_path(&r.suite, &r.case)));
    t.insert("status".into(), json!(status(r.decision.verdict)));
    t.insert("comment".into(), json!(r.description));
    put(
        &mut t,
        "start_time",
        at(&report.started, report.timings.prepare_s + r.started_s).map(Value::from),
    );
    t.insert("duration".into(), json!(r.total_s));
    let accel = r.accel.map(|a| a.to_string());
    t.insert(
        "environment".into(),
        json!({
            "comment": format!(
                "QEMU x86_64 ({})",
                accel.as_deref().or(report.accel.as_deref()).unwrap_or("did not start")
            ),
            "misc": {
                "qemu": report.host.qemu,
                "host_kernel": report.host.kernel,
                "host_cpus": report.host.cpus,
                "accel": accel,
                "restored": r.restored,
                "boot_s": r.boot_s,
            },
        }),
    );
    if r.decision.verdict != Verdict::Pass {
        t.insert("log_excerpt".into(), json!(excerpt(&failure_text(r))));
    }
    let mut misc = json!({
        "verdict": r.decision.verdict.as_str(),
        "as_expected": r.decision.as_expected,
        "expected": expected_text(&r.expected),
        "summary": r.decision.summary,
        "suite": r.suite,
        "case": r.case,
        "variant": r.variant,
        "steps": r.steps.len(),
        "steps_total": r.steps_total,
        "console_log": r.console_log.display().to_string(),
    });
    if let Expected::Xfail { reason, reference } = &r.expected {
        misc["known_issue"] = json!({
            "id": issue_id(origin, reference),
            "reference": reference,
            "reason": reason,
        });
    }
    t.insert("misc".into(), misc);
    Value::Object(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_statuses_and_origins_are_what_kcidb_takes() {
        assert_eq!(
            test_path("livepatch-bpf", "cmdline/unload-livepatch-first"),
            "coexist.livepatch-bpf.cmdline.unload-livepatch-first"
        );
        assert_eq!(test_path("s", "a b/c+d"), "coexist.s.a_b.c_d");
        assert_eq!(status(Verdict::Xfail), "FAIL");
        assert_eq!(status(Verdict::Xpass), "PASS");
        assert_eq!(status(Verdict::Error), "ERROR");
        assert_eq!(status(Verdict::Skip), "SKIP");
        assert!(check_origin("coexist_ci").is_ok());
        for bad in ["", "Coexist", "co-exist", "a:b"] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
        assert_eq!(issue_id("o", "ref a"), issue_id("o", "ref a"));
        assert_ne!(issue_id("o", "ref a"), issue_id("o", "ref b"));
        assert_eq!(
            url_in("upstream x (https://lore.kernel.org/a/b), more").as_deref(),
            Some("https://lore.kernel.org/a/b")
        );
        assert_eq!(url_in("upstream 56b3c85e153b"), None);
        assert_eq!(
            at("2026-12-01T18:41:34Z", 1.5).as_deref(),
            Some("2026-12-01T18:41:35.500Z")
        );
        let long = "é".repeat(LOG_EXCERPT_MAX + 5);
        assert_eq!(excerpt(&long).chars().count(), LOG_EXCERPT_MAX);
    }
}
