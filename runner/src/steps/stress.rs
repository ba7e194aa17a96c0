//! repeat and concurrently: inner steps run in a loop, or in threads for a
//! while. Expectation fields: `failed` (how many inner steps may fail),
//! `errnos_allowed` (the errnos they may fail with), and for concurrently
//! `min_iterations` (every thread ran at least this many times).

use coexist_proto::{Answer, Step};
use serde::{Deserialize, Serialize};

use super::{data_of, data_text};
use crate::input::Errno;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StressExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_iterations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errnos_allowed: Option<Vec<Errno>>,
}

pub fn expect_fields(step: &Step) -> &'static [&'static str] {
    match step {
        Step::Repeat { .. } => &["failed", "errnos_allowed"],
        Step::Concurrently { .. } => &["failed", "errnos_allowed", "min_iterations"],
        _ => &[],
    }
}

/// The most iterations a `repeat` may ask for.
pub const MAX_TIMES: u64 = 100_000;

pub fn check_args(step: &Step) -> Result<(), (String, String)> {
    match step {
        Step::Repeat { times, steps } => {
            super::check_range("times", u64::from(*times), false, MAX_TIMES)?;
            if steps.is_empty() {
                return Err(("repeat".into(), "repeat has no steps".into()));
            }
            Ok(())
        }
        Step::Concurrently { duration_ms, lists } => {
            super::check_range("duration_ms", *duration_ms, false, super::MAX_MS)?;
            if lists.is_empty() || lists.iter().any(|l| l.is_empty()) {
                return Err((
                    "lists".into(),
                    "concurrently needs lists, each with at least one step".into(),
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The steps a stress step runs.
pub fn inner_steps(step: &Step) -> Vec<&Step> {
    match step {
        Step::Repeat { steps, .. } => steps.iter().collect(),
        Step::Concurrently { lists, .. } => lists.iter().flatten().collect(),
        _ => Vec::new(),
    }
}

/// Failed inner steps and the errno names they failed with.
fn failures(a: &Answer) -> Option<(u64, Vec<String>)> {
    if let Some(r) = data_of!(a, Repeat) {
        let names = r
            .failures
            .iter()
            .map(|f| f.errno_name.clone().unwrap_or_else(|| "other".into()))
            .collect();
        return Some((r.failed, names));
    }
    if let Some(c) = data_of!(a, Concurrently) {
        let failed = c.threads.iter().map(|t| t.failed).sum();
        let names = c
            .threads
            .iter()
            .flat_map(|t| t.errnos.keys().cloned())
            .collect();
        return Some((failed, names));
    }
    None
}

pub fn check(e: &StressExpect, a: &Answer, m: &mut Vec<String>) {
    let got = failures(a);
    if let Some(n) = e.failed {
        match &got {
            Some((f, _)) if *f != n => m.push(format!(
                "{f} inner step(s) failed, expected {n}: {}",
                data_text(a)
            )),
            None => m.push("no failure count in the answer".into()),
            _ => {}
        }
    }
    if let Some(allowed) = &e.errnos_allowed {
        let allowed: Vec<&str> = allowed.iter().map(Errno::as_str).collect();
        let seen = got.map(|g| g.1).unwrap_or_default();
        let bad: Vec<&String> = seen
            .iter()
            .filter(|e| !allowed.contains(&e.as_str()))
            .collect();
        if !bad.is_empty() {
            m.push(format!(
                "inner steps failed with {bad:?}, only {allowed:?} allowed: {}",
                data_text(a)
            ));
        }
    }
    if let Some(n) = e.min_iterations {
        let its: Vec<u64> = data_of!(a, Concurrently)
            .map(|c| c.threads.iter().map(|t| t.iterations).collect())
            .unwrap_or_default();
        if its.is_empty() || its.iter().any(|i| *i < n) {
            m.push(format!(
                "iterations per thread {its:?}, expected at least {n} each"
            ));
        }
    }
    if let Some(c) = data_of!(a, Concurrently) {
        if c.threads.iter().any(|t| t.panicked) {
            m.push(format!("an agent thread panicked: {}", data_text(a)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, ConcurrentlyData, InnerFailure, RepeatData, ThreadData};

    fn conc(threads: Vec<ThreadData>) -> Answer {
        Answer {
            ok: true,
            data: Some(AnswerData::Concurrently(ConcurrentlyData { threads })),
            ..Default::default()
        }
    }

    fn thread(iterations: u64, errnos: &[(&str, u64)]) -> ThreadData {
        ThreadData {
            iterations,
            failed: errnos.iter().map(|e| e.1).sum(),
            errnos: errnos.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn concurrently_counts_failures_errnos_and_iterations() {
        let e = StressExpect {
            errnos_allowed: Some(vec![Errno::parse("EAGAIN").unwrap()]),
            min_iterations: Some(5),
            ..Default::default()
        };
        let mut m = Vec::new();
        check(
            &e,
            &conc(vec![thread(9, &[("EAGAIN", 2)]), thread(6, &[])]),
            &mut m,
        );
        assert!(m.is_empty(), "{m:?}");
        check(
            &e,
            &conc(vec![thread(9, &[("EBUSY", 1)]), thread(2, &[])]),
            &mut m,
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("\"EBUSY\""), "{m:?}");
        assert!(m[1].contains("[9, 2]"), "{m:?}");
        let mut m = Vec::new();
        let mut t = thread(9, &[]);
        t.panicked = true;
        check(&StressExpect::default(), &conc(vec![t]), &mut m);
        assert!(m[0].contains("panicked"), "{m:?}");
    }

    #[test]
    fn repeat_failures_against_the_allowed_count() {
        let a = Answer {
            ok: false,
            data: Some(AnswerData::Repeat(RepeatData {
                iterations: 3,
                failed: 1,
                failures: vec![InnerFailure {
                    errno_name: Some("EBUSY".into()),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        let mut m = Vec::new();
        check(
            &StressExpect {
                failed: Some(1),
                errnos_allowed: Some(vec![Errno::parse("EBUSY").unwrap()]),
                ..Default::default()
            },
            &a,
            &mut m,
        );
        assert!(m.is_empty(), "{m:?}");
        check(
            &StressExpect {
                failed: Some(0),
                ..Default::default()
            },
            &a,
            &mut m,
        );
        assert!(
            m[0].starts_with("1 inner step(s) failed, expected 0"),
            "{m:?}"
        );
        let mut m = Vec::new();
        check(
            &StressExpect {
                failed: Some(0),
                ..Default::default()
            },
            &Answer::default(),
            &mut m,
        );
        assert_eq!(m, ["no failure count in the answer"]);
    }
}
