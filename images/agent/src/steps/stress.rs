//! Steps that run other steps: `repeat` (a list, n times, in order) and
//! `concurrently` (lists in their own threads until a deadline).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use coexist_proto::{
    Answer, AnswerData, ConcurrentlyData, InnerFailure, RepeatData, Step, ThreadData,
};

use super::{fail, ok, run_step, with_data, State};

/// How many inner failures a `repeat` answer lists (all are counted).
const KEPT_FAILURES: usize = 20;

/// Runs `steps` `times` times. ok only if every step was; otherwise the
/// first failure's errno is the repeat's.
pub fn repeat(state: &mut State, id: u64, times: u32, steps: &[Step]) -> Answer {
    let mut failures = Vec::new();
    let mut failed = 0u64;
    let mut first: Option<Answer> = None;
    for i in 0..times {
        for (j, s) in steps.iter().enumerate() {
            let a = run_step(state, id, s.clone());
            if !a.ok {
                failed += 1;
                if failures.len() < KEPT_FAILURES {
                    failures.push(InnerFailure {
                        iteration: i,
                        index: j,
                        errno_name: a.errno_name.clone(),
                        error: a.error.clone(),
                    });
                }
                first.get_or_insert(a);
            }
        }
    }
    let a = match first {
        None => ok(id, String::new()),
        // The first failure's errno is the repeat's.
        Some(f) => fail(
            Some(id),
            f.errno,
            format!(
                "{failed} step(s) failed in {times} iterations; first: {}",
                f.error.unwrap_or_default()
            ),
        ),
    };
    with_data(
        a,
        AnswerData::Repeat(RepeatData {
            iterations: times,
            failed,
            failures,
        }),
    )
}

/// Runs each list in its own thread (with its own [`State`]) until
/// `duration_ms` has passed; an iteration stops at its first failing step.
/// Always ok: the counts are the result.
pub fn concurrently(id: u64, duration_ms: u64, lists: Vec<Vec<Step>>) -> Answer {
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    let handles: Vec<_> = lists
        .into_iter()
        .map(|list| std::thread::spawn(move || run_list(id, deadline, &list)))
        .collect();
    let threads = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| ThreadData {
                panicked: true,
                ..Default::default()
            })
        })
        .collect();
    with_data(
        ok(id, String::new()),
        AnswerData::Concurrently(ConcurrentlyData { threads }),
    )
}

/// One thread of `concurrently`.
fn run_list(id: u64, deadline: Instant, list: &[Step]) -> ThreadData {
    let mut st = State::default();
    let (mut iterations, mut okc, mut failed) = (0u64, 0u64, 0u64);
    let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < deadline && !list.is_empty() {
        for s in list {
            let a = run_step(&mut st, id, s.clone());
            if a.ok {
                okc += 1;
            } else {
                // The rest of this iteration builds on this step:
                // start the next one.
                failed += 1;
                let k = a.errno_name.clone().unwrap_or_else(|| "other".into());
                *errnos.entry(k).or_default() += 1;
                break;
            }
        }
        iterations += 1;
    }
    // Leave nothing attached behind this thread.
    st.bpf.detach_all();
    ThreadData {
        iterations,
        ok: okc,
        failed,
        errnos,
        panicked: false,
    }
}
