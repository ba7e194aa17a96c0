//! The (variant, case) matrix: job lists, shards, and running cases in
//! fresh VMs on N workers. Emits events; reporters consume them.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use coexist_proto::Step;
use serde::{Deserialize, Serialize};

use crate::accel::{self, AccelChoice};
use crate::guest::Prepared;
use crate::splat::Splat;
use crate::suite::{Case, Expected, Suite};
use crate::verdict::{self, Decision, StepRecord, Verdict};
use crate::vm::{Accel, VmFailure};

/// One cell of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub suite: usize,
    pub case: usize,
    pub variant: String,
    /// `suite/case@variant`: stable, unique.
    pub id: String,
}

/// Every (case, variant) of the suites, in file order, filtered.
pub fn jobs(
    suites: &[Suite],
    only_variants: &[String],
    case_glob: Option<&glob::Pattern>,
) -> Vec<Job> {
    let mut out = Vec::new();
    for (si, s) in suites.iter().enumerate() {
        for (ci, c) in s.file.cases.iter().enumerate() {
            if let Some(g) = case_glob {
                if !g.matches(&c.name) {
                    continue;
                }
            }
            for v in s.case_variants(c) {
                if !only_variants.is_empty() && !only_variants.contains(v) {
                    continue;
                }
                out.push(Job {
                    suite: si,
                    case: ci,
                    variant: v.clone(),
                    id: format!("{}/{}@{}", s.file.suite, c.name, v),
                });
            }
        }
    }
    out
}

/// Parses `I/N` (1 <= I <= N).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shard {s}: expected I/N with 1 <= I <= N (e.g. 2/4)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// A stable 1/N slice: every N-th job of the full list, starting at I.
/// The same list gives the same slices on every runner.
pub fn shard(jobs: Vec<Job>, i: usize, n: usize) -> Vec<Job> {
    jobs.into_iter()
        .enumerate()
        .filter(|(k, _)| k % n == i - 1)
        .map(|(_, j)| j)
        .collect()
}

/// A case's result on one variant: everything the reports need.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    pub id: String,
    pub suite: String,
    pub case: String,
    pub description: String,
    pub variant: String,
    pub expected: Expected,
    #[serde(flatten)]
    pub decision: Decision,
    pub steps: Vec<StepRecord>,
    /// Steps the case has (fewer ran when it stopped early).
    pub steps_total: usize,
    pub failure: Option<VmFailure>,
    /// Splats outside any step (boot, between steps).
    pub unattributed_splats: Vec<Splat>,
    pub console_log: PathBuf,
    pub accel: Option<Accel>,
    /// QEMU start to READY.
    pub boot_s: Option<f64>,
    /// Boot, steps and shutdown.
    pub total_s: f64,
    /// Time the case spends on purpose (stress durations).
    pub fixed_s: f64,
}

pub enum RunEvent<'a> {
    Started { total: usize },
    CaseStarted { id: &'a str },
    CaseFinished(&'a CaseResult),
    Note(&'a str),
}

pub trait RunObserver: Sync {
    fn event(&self, e: RunEvent);
}

pub struct RunOptions {
    pub jobs: usize,
    pub accel: AccelChoice,
    /// Console logs go to `<dir>/console/<variant>/<case>.log`.
    pub results_dir: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
}

pub fn console_path(results_dir: &Path, suite: &str, case: &str, variant: &str) -> PathBuf {
    results_dir
        .join("console")
        .join(variant)
        .join(format!("{suite}__{}.log", case.replace('/', "__")))
}

fn set_handle(step: &mut Step, h: u32) {
    match step {
        Step::BpfStats { handle } => *handle = h,
        Step::BpfDetach { handle } => *handle = Some(h),
        _ => {}
    }
}

/// Runs one case in a fresh VM.
pub fn run_case(
    p: &Prepared,
    suite: &Suite,
    case: &Case,
    opts: &RunOptions,
    note: &dyn Fn(&str),
) -> CaseResult {
    let variant = p.variant.clone();
    let expected = suite.expected(case, &variant);
    let log = console_path(&opts.results_dir, &suite.file.suite, &case.name, &variant);
    let t0 = Instant::now();
    let mut cfg = p.vm_config(log.clone());
    cfg.allow = suite.file.allow_splats.clone();
    cfg.memory_mb = opts.memory_mb;
    cfg.cpus = opts.cpus;
    let mut records: Vec<StepRecord> = Vec::new();
    let mut failure = None;
    let mut unattributed = Vec::new();
    let mut boot_s = None;
    let mut used_accel = None;
    match accel::boot(opts.accel, cfg, note) {
        Err(f) => failure = Some(f),
        Ok(mut vm) => {
            boot_s = vm.ready.as_ref().map(|r| r.boot_s);
            used_accel = vm.ready.as_ref().map(|r| r.accel);
            let labels: Vec<Option<String>> = case.steps.iter().map(|s| s.label.clone()).collect();
            let mut handles: BTreeMap<String, u32> = BTreeMap::new();
            for (i, s) in case.steps.iter().enumerate() {
                let index = i + 1;
                let mut step = s.step.clone();
                if let Some(r) = &s.handle_ref {
                    match handles.get(r) {
                        Some(h) => set_handle(&mut step, *h),
                        None => {
                            // The attach it names did not give a handle: it
                            // failed, and the case stopped there.
                            break;
                        }
                    }
                }
                let eff = verdict::effective_expect(index, &s.expect, &expected, &labels);
                let timeout = Duration::from_secs_f64(s.timeout.unwrap_or(suite.file.timeout));
                match vm.run(step.clone(), timeout) {
                    Ok(out) => {
                        if let (Some(l), Some(h)) = (
                            &s.label,
                            out.answer
                                .data
                                .as_ref()
                                .and_then(|d| d.get("handle"))
                                .and_then(|h| h.as_u64()),
                        ) {
                            handles.insert(l.clone(), h as u32);
                        }
                        let mismatches = verdict::check_step(&eff, &out.answer);
                        let refused_as_expected = eff.errno.is_some()
                            && s.expect.errno.is_none()
                            && mismatches.is_empty();
                        let stop =
                            !mismatches.is_empty() || !out.splats.is_empty() || refused_as_expected;
                        records.push(StepRecord {
                            index,
                            label: s.label.clone(),
                            request: step,
                            expect: eff,
                            answer: out.answer,
                            splats: out.splats,
                            host_s: out.host_s,
                            mismatches,
                        });
                        if stop {
                            break;
                        }
                    }
                    Err(f) => {
                        failure = Some(f);
                        break;
                    }
                }
            }
            unattributed = vm.unattributed.clone();
            if failure.is_none() {
                if let Err(f) = vm.shutdown() {
                    failure = Some(f);
                }
            }
        }
    }
    let decision = verdict::decide(
        &expected,
        &records,
        case.steps.len(),
        failure.as_ref(),
        &unattributed,
    );
    CaseResult {
        id: format!("{}/{}@{}", suite.file.suite, case.name, variant),
        suite: suite.file.suite.clone(),
        case: case.name.clone(),
        description: case.description.clone(),
        variant,
        expected,
        decision,
        steps: records,
        steps_total: case.steps.len(),
        failure,
        unattributed_splats: unattributed,
        console_log: log,
        accel: used_accel,
        boot_s,
        total_s: t0.elapsed().as_secs_f64(),
        fixed_s: case.fixed_seconds,
    }
}

/// Runs the jobs on `opts.jobs` workers; results come back in job order.
pub fn run(
    jobs: &[Job],
    suites: &[Suite],
    prepared: &BTreeMap<String, Prepared>,
    opts: &RunOptions,
    observer: &dyn RunObserver,
) -> Result<Vec<CaseResult>> {
    for j in jobs {
        if !prepared.contains_key(&j.variant) {
            bail!("variant '{}' was not prepared", j.variant);
        }
    }
    observer.event(RunEvent::Started { total: jobs.len() });
    let queue: Mutex<VecDeque<(usize, &Job)>> = Mutex::new(jobs.iter().enumerate().collect());
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; jobs.len()]);
    let workers = opts.jobs.clamp(1, jobs.len().max(1));
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| loop {
                let Some((k, job)) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                observer.event(RunEvent::CaseStarted { id: &job.id });
                let suite = &suites[job.suite];
                let case = &suite.file.cases[job.case];
                let r = run_case(&prepared[&job.variant], suite, case, opts, &|s| {
                    observer.event(RunEvent::Note(s))
                });
                observer.event(RunEvent::CaseFinished(&r));
                results.lock().unwrap()[k] = Some(r);
            });
        }
    });
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .flatten()
        .collect())
}

/// Counts of verdicts, and of outcomes that are not the expected ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub cases: usize,
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub xfail: usize,
    pub xpass: usize,
    pub unexpected: usize,
}

pub fn totals(results: &[CaseResult]) -> Totals {
    let mut t = Totals {
        cases: results.len(),
        ..Default::default()
    };
    for r in results {
        match r.decision.verdict {
            Verdict::Pass => t.pass += 1,
            Verdict::Fail => t.fail += 1,
            Verdict::Error => t.error += 1,
            Verdict::Xfail => t.xfail += 1,
            Verdict::Xpass => t.xpass += 1,
        }
        if !r.decision.as_expected {
            t.unexpected += 1;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_jobs(n: usize) -> Vec<Job> {
        (0..n)
            .map(|i| Job {
                suite: 0,
                case: i / 3,
                variant: ["a", "b", "c"][i % 3].into(),
                id: format!("s/c{}@{}", i / 3, ["a", "b", "c"][i % 3]),
            })
            .collect()
    }

    #[test]
    fn shards_cover_the_list_once() {
        for total in [0, 1, 5, 37, 108] {
            let all = fake_jobs(total);
            for n in 1..=7 {
                let mut seen: Vec<String> = Vec::new();
                for i in 1..=n {
                    let s = shard(all.clone(), i, n);
                    // Balanced: sizes differ by at most one.
                    assert!(s.len() >= total / n && s.len() <= total / n + 1);
                    for j in s {
                        assert!(!seen.contains(&j.id), "{} in two shards", j.id);
                        seen.push(j.id);
                    }
                }
                let mut want: Vec<String> = all.iter().map(|j| j.id.clone()).collect();
                want.sort();
                seen.sort();
                assert_eq!(seen, want, "n={n}");
            }
        }
        // Stable: the same slice twice.
        assert_eq!(shard(fake_jobs(20), 2, 3), shard(fake_jobs(20), 2, 3));
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["0/4", "5/4", "1/0", "x", "1/", "/2", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
