//! The worker pool: sequences drawn from the run's seed, one guest each,
//! until the budget is spent or a stop; counters for the report and the
//! progress line; each failing sequence handed to [`Findings`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::findings::Findings;
use super::guided::{self, Corpus};
use super::keys::{coverage_key, state_key};
use super::model::{self, Op};
use super::report::ReachedAt;
use super::{exec, gen, Budget, ExploreRequest};
use crate::events::{Event, EventSink, ExploreEvent, SequenceOutcome};
use crate::guest::gcov;
use crate::teardown;

/// The run's workers share this.
pub struct Pool<'a> {
    pub req: &'a ExploreRequest,
    pub events: &'a dyn EventSink,
    pub findings: Findings<'a>,
    /// The next sequence index to run.
    pub next: AtomicU64,
    pub done: AtomicU64,
    pub steps: AtomicU64,
    pub ops: AtomicU64,
    pub failing: AtomicU64,
    pub errors: AtomicU64,
    pub stop: AtomicBool,
    pub first_error: Mutex<Option<String>>,
    pub coverage: Mutex<BTreeMap<String, u64>>,
    /// A coverage twin's run: the corpus and what the run has reached.
    pub corpus: Mutex<Corpus>,
    pub reached: Mutex<Vec<ReachedAt>>,
    pub t0: Instant,
}

impl<'a> Pool<'a> {
    pub fn new(
        req: &'a ExploreRequest,
        events: &'a dyn EventSink,
        findings: Findings<'a>,
    ) -> Pool<'a> {
        Pool {
            req,
            events,
            findings,
            next: AtomicU64::new(0),
            done: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            failing: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            first_error: Mutex::new(None),
            coverage: Mutex::new(BTreeMap::new()),
            corpus: Mutex::new(Corpus::new(req.corpus.clone())),
            reached: Mutex::new(Vec::new()),
            t0: Instant::now(),
        }
    }
}

impl Pool<'_> {
    pub fn budget_left(&self) -> bool {
        if teardown::stopping() || self.stop.load(Ordering::SeqCst) {
            return false;
        }
        match self.req.budget {
            Budget::Time(d) => self.t0.elapsed() < d,
            Budget::Sequences(n) => self.next.load(Ordering::SeqCst) < n,
        }
    }

    pub fn worker(&self) {
        while self.budget_left() {
            let slot = self.next.fetch_add(1, Ordering::SeqCst);
            if let Budget::Sequences(n) = self.req.budget {
                if slot >= n {
                    break;
                }
            }
            // A shard draws every N-th sequence of the run's seed.
            let index = match self.req.shard {
                Some((i, n)) => slot * n + (i - 1),
                None => slot,
            };
            let seed = gen::sequence_seed(self.req.seed, index);
            let model = self.findings.guest.model;
            let ops = if self.req.guided {
                let (entries, weights, uniform) = {
                    let c = self.lock_corpus();
                    (c.entries.clone(), c.weights(), c.uniform_percent())
                };
                guided::sequence(seed, &entries, &weights, uniform, model, self.req.max_len).0
            } else {
                gen::sequence(seed, model, self.req.max_len)
            };
            self.events
                .event(&Event::Explore(ExploreEvent::SequenceStarted {
                    index,
                    seed,
                }));
            let log = self
                .findings
                .dir
                .join("console")
                .join(format!("seq-{index:05}-{seed:016x}.log"));
            let r = exec::run_sequence(self.findings.guest, &ops, log.clone(), self.events);
            if teardown::stopping() {
                break;
            }
            if r.error.is_none() {
                self.feedback(index, seed, &ops, &log);
            }
            self.steps.fetch_add(r.steps as u64, Ordering::SeqCst);
            self.ops.fetch_add(r.ops_done as u64, Ordering::SeqCst);
            self.count_coverage(&ops[..r.ops_done.min(ops.len())]);
            if let Some(e) = &r.error {
                self.errors.fetch_add(1, Ordering::SeqCst);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| format!("sequence {index} (seed {seed:#x}): {e}"));
                self.finished(index, seed, r.steps, SequenceOutcome::Error(e.to_string()));
                self.done.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            self.done.fetch_add(1, Ordering::SeqCst);
            let Some(b) = r.broken else {
                self.finished(index, seed, r.steps, SequenceOutcome::Held);
                continue;
            };
            self.failing.fetch_add(1, Ordering::SeqCst);
            self.finished(
                index,
                seed,
                r.steps,
                SequenceOutcome::Broke {
                    invariant: b.invariant.to_string(),
                    at: b.op.as_deref().unwrap_or("the prologue").to_string(),
                    seen: b.seen.clone(),
                },
            );
            self.findings.found(index, seed, &ops, b, r.console_log);
        }
    }

    fn lock_corpus(&self) -> std::sync::MutexGuard<'_, Corpus> {
        self.corpus.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// On a coverage twin: what the sequence whose console log is `log`
    /// reached (its counts read by gcov), added to the run's; a sequence
    /// that reached a new line or branch joins the corpus (`corpus/`).
    fn feedback(&self, index: u64, seed: u64, ops: &[Op], log: &std::path::Path) {
        let m = &self.findings.guest.prepared.manifest;
        if m.profiled.is_empty() {
            return;
        }
        let files = match gcov::job(&exec::counts_dir(log), &m.build_dir) {
            Ok(f) => f,
            Err(e) => {
                crate::events::note(
                    self.events,
                    format!("sequence {index}: no coverage feedback: {e:#}"),
                );
                return;
            }
        };
        let reached = gcov::Reached::of(&files, &m.profiled, &self.findings.guest.area);
        let mut c = self.lock_corpus();
        let (new_lines, new_branches) = c.add(&reached);
        self.reached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ReachedAt {
                s: self.t0.elapsed().as_secs_f64(),
                sequences: self.done.load(Ordering::SeqCst) + 1,
                lines: c.reached.lines.len(),
                branches: c.reached.branches.len(),
                area_lines: c.reached.area_lines.len(),
                area_branches: c.reached.area_branches.len(),
            });
        if new_lines + new_branches == 0 {
            return;
        }
        let e = guided::Entry {
            ops: ops.to_vec(),
            new_lines,
            new_branches,
            from: format!("sequence {index} (seed {seed:#x})"),
        };
        let path = self
            .findings
            .dir
            .join("corpus")
            .join(format!("{index:05}.json"));
        if let Ok(b) = serde_json::to_vec_pretty(&e) {
            let _ = std::fs::write(path, b);
        }
        c.push(e, &reached);
    }

    /// Counts each completed operation by kind, function and the result
    /// the model gave it (and the kernel showed).
    fn count_coverage(&self, ops: &[Op]) {
        let mut s = model::State::new(self.findings.guest.model);
        let mut c = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        for op in ops {
            *c.entry(coverage_key(&s, op)).or_default() += 1;
            s.apply(op);
            for f in model::FUNCS {
                *c.entry(state_key(&s, f)).or_default() += 1;
            }
        }
    }

    fn finished(&self, index: u64, seed: u64, steps: usize, outcome: SequenceOutcome) {
        self.events
            .event(&Event::Explore(ExploreEvent::SequenceFinished {
                index,
                seed,
                steps,
                outcome,
            }));
    }

    /// Where the run is, as an event.
    pub fn progress_event(&self) -> Event {
        Event::Explore(ExploreEvent::Progress {
            text: self.progress(),
        })
    }

    pub fn progress(&self) -> String {
        let el = self.t0.elapsed().as_secs_f64();
        let left = match self.req.budget {
            Budget::Time(d) => format!("{:.0} s left", (d.as_secs_f64() - el).max(0.0)),
            Budget::Sequences(n) => format!(
                "{} sequence(s) left",
                n.saturating_sub(self.next.load(Ordering::SeqCst))
            ),
        };
        let shrinking = self.findings.shrinking.load(Ordering::SeqCst);
        format!(
            "explore: {} sequence(s) done, {:.1} steps/s, {} finding(s){}, {left}",
            self.done.load(Ordering::SeqCst),
            self.steps.load(Ordering::SeqCst) as f64 / el.max(1e-9),
            self.findings
                .list
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            if shrinking > 0 {
                format!(" ({shrinking} shrinking)")
            } else {
                String::new()
            }
        )
    }
}
