//! The (case, variant) matrix: job lists, shards, and running the jobs on
//! N workers, each in a fresh VM. Emits events; sinks consume them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::case::{run_case, CaseOptions};
use super::estimates::Estimates;
use crate::events::{Event, EventSink};
use crate::image::Prepared;
use crate::record::{CaseResult, RecordSink};
use crate::suite::Suite;
use crate::teardown;
use anyhow::{bail, Result};

/// One cell of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Position in the whole job list (before sharding).
    pub index: usize,
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
                    index: out.len(),
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

/// The order jobs start in: the longest first, by `cost` (what the job
/// took last time here, or its stress duration; see
/// [`super::estimates`]), so no worker is left with a long one at the end
/// while the others wait; equal costs (nothing recorded) keep the job
/// order. Results stay in job order whatever the start order.
fn start_order(jobs: &[Job], cost: impl Fn(&Job) -> f64) -> Vec<(usize, &Job)> {
    let mut order: Vec<(usize, f64, &Job)> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (i, cost(j), j))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order.into_iter().map(|(i, _, j)| (i, j)).collect()
}

/// What the matrix ran: the finished cases in job order, and why it
/// stopped early if it did.
pub struct Outcome {
    pub results: Vec<CaseResult>,
    /// A signal or a runner panic; cases running then are not kept (their
    /// VMs were killed), cases not started are not run.
    pub stopped: Option<String>,
}

/// Runs the jobs on `workers` workers, each case in a fresh VM. Stops
/// taking jobs when the run is interrupted or a worker panics.
pub fn run(
    jobs: &[Job],
    suites: &[Suite],
    prepared: &BTreeMap<String, Prepared>,
    opts: &CaseOptions,
    (workers, estimates): (usize, &Estimates),
    events: &dyn EventSink,
    records: &dyn RecordSink,
) -> Result<Outcome> {
    run_until(
        jobs,
        suites,
        prepared,
        opts,
        (workers, estimates),
        (events, records),
        &|_| false,
    )
}

/// [`run`], which also stops taking jobs once `enough` says so of a
/// finished case (`mutants` stops at the first case that kills a mutant).
pub fn run_until(
    jobs: &[Job],
    suites: &[Suite],
    prepared: &BTreeMap<String, Prepared>,
    opts: &CaseOptions,
    (workers, estimates): (usize, &Estimates),
    (events, records): (&dyn EventSink, &dyn RecordSink),
    enough: &(dyn Fn(&CaseResult) -> bool + Sync),
) -> Result<Outcome> {
    let done = std::sync::atomic::AtomicBool::new(false);
    for j in jobs {
        if !prepared.contains_key(&j.variant) {
            bail!("variant '{}' was not prepared", j.variant);
        }
    }
    let order = start_order(jobs, |j| {
        let fixed = suites[j.suite].file.cases[j.case].fixed_seconds;
        estimates.get(&j.id).copied().unwrap_or(0.0).max(fixed)
    });
    let queue: Mutex<VecDeque<(usize, &Job)>> = Mutex::new(order.into_iter().collect());
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; jobs.len()]);
    let panicked: Mutex<Option<String>> = Mutex::new(None);
    let workers = workers.clamp(1, jobs.len().max(1));
    let t0 = std::time::Instant::now();
    std::thread::scope(|sc| {
        for worker in 0..workers {
            let (queue, results, panicked) = (&queue, &results, &panicked);
            let done = &done;
            sc.spawn(move || loop {
                if teardown::stopping() || done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Some((k, job)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                else {
                    return;
                };
                events.event(&Event::CaseStarted { id: job.id.clone() });
                let started_s = t0.elapsed().as_secs_f64();
                let suite = &suites[job.suite];
                let case = &suite.file.cases[job.case];
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_case(&prepared[&job.variant], suite, case, opts, events)
                }));
                match r {
                    // A case that ended while the run was stopping ended
                    // because its VM was killed: not a result.
                    Ok(_) if teardown::stopping() => return,
                    Ok(mut r) => {
                        r.job = job.index;
                        r.worker = worker;
                        r.started_s = started_s;
                        events.event(&Event::CaseFinished(r.line()));
                        records.case_finished(&r);
                        if enough(&r) {
                            done.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(r);
                    }
                    Err(p) => {
                        let msg = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "a panic".into());
                        panicked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(format!(
                                "the runner panicked running {}: {msg}",
                                job.id
                            ));
                        return;
                    }
                }
            });
        }
    });
    let stopped = match (
        teardown::interrupted(),
        panicked.into_inner().unwrap_or_else(|e| e.into_inner()),
    ) {
        (Some(sig), _) => Some(format!("interrupted by signal {sig}")),
        (None, Some(p)) => Some(p),
        (None, None) if teardown::stopping() => Some("the runner panicked".into()),
        (None, None) => None,
    };
    Ok(Outcome {
        results: results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .flatten()
            .collect(),
        stopped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_jobs(n: usize) -> Vec<Job> {
        (0..n)
            .map(|i| Job {
                index: i,
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
    fn the_longest_jobs_start_first_and_the_rest_keep_their_order() {
        let jobs = fake_jobs(6);
        let cost = |j: &Job| match j.id.as_str() {
            "s/c1@a" => 250.0,
            "s/c0@b" => 30.0,
            _ => 0.0,
        };
        let ids: Vec<&str> = start_order(&jobs, cost)
            .iter()
            .map(|(_, j)| j.id.as_str())
            .collect();
        assert_eq!(
            ids,
            ["s/c1@a", "s/c0@b", "s/c0@a", "s/c0@c", "s/c1@b", "s/c1@c"]
        );
        // Each keeps its position in the job list.
        assert!(start_order(&jobs, cost)
            .iter()
            .all(|(i, j)| jobs[*i].id == j.id));
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["0/4", "5/4", "1/0", "x", "1/", "/2", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
