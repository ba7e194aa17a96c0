//! The one event stream. Every stage tells what it is doing through an
//! [`EventSink`]: the kernel build (phases, progress, the result), the
//! preparation of fixtures and images, the accelerator decision, the
//! matrix (run start, each case's start and finish) and free-form notes.
//!
//! Consumers: the terminal UI (`ui::Terminal`) and tests (`Collect`).
//! Nothing in the library prints; stages emit events, sinks decide what to
//! show or keep. This module sits below every stage and imports none: a
//! finished case travels as a [`CaseLine`] here, and as its whole record
//! through `record::RecordSink` (`results.jsonl`).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Event {
    /// A step of a kernel build ("applying patch series", "configuring", ...).
    BuildPhase {
        variant: String,
        what: String,
    },
    /// Compilation progress: lines of build output so far, and how many the
    /// previous build of this configuration printed (an estimate of the end).
    BuildProgress {
        variant: String,
        lines: u64,
        expected: Option<u64>,
        last: String,
    },
    /// A kernel is ready: built now, or found in the cache.
    BuildFinished {
        variant: String,
        key: String,
        cached: bool,
        elapsed: Duration,
        entry: PathBuf,
    },
    /// Fixtures, images or the agent being built or waited for.
    Preparing {
        what: String,
    },
    /// A variant's kernel, fixtures and image are ready to boot.
    Prepared {
        variant: String,
        kernel_release: String,
        image_key: String,
    },
    /// What `--accel auto` decided, and why (once per run).
    AccelDecided {
        reason: String,
    },
    /// The matrix starts: `total` jobs, reports in `results_dir`.
    RunStarted {
        run_id: String,
        total: usize,
        results_dir: PathBuf,
    },
    CaseStarted {
        id: String,
    },
    CaseFinished(CaseLine),
    /// The matrix is over; `complete` is false when it stopped early.
    RunFinished {
        complete: bool,
    },
    /// What `explore` does as it goes.
    Explore(ExploreEvent),
    /// What `mutants` does as it goes.
    Mutants(MutantsEvent),
    /// Anything else worth a line.
    Note(String),
}

/// `mutants`' progress, typed: the terminal draws a bar with an ETA.
#[derive(Clone, Debug)]
pub enum MutantsEvent {
    /// The mutants start (after the baseline): `total` of them.
    Started { about: String, total: usize },
    /// Mutant `index` (0-based) `id` is at `what` (building, running ...).
    Phase {
        index: usize,
        id: String,
        what: String,
    },
    /// Mutant `index` ended; `line` says how, in one line.
    Finished {
        index: usize,
        id: String,
        line: String,
    },
}

/// `explore`'s progress, typed: the terminal draws it, a writer may keep
/// it. Invariants, operations and evidence come as text (the model is a
/// stage above this layer).
#[derive(Clone, Debug)]
pub enum ExploreEvent {
    /// The run starts; `about` says what it explores, in one line.
    Started { about: String },
    /// A worker starts sequence `index` (seeded `seed`).
    SequenceStarted { index: u64, seed: u64 },
    /// Sequence `index` ended.
    SequenceFinished {
        index: u64,
        seed: u64,
        /// Agent steps answered.
        steps: usize,
        outcome: SequenceOutcome,
    },
    /// One replay of a shrink of sequence `index`: a candidate of `len`
    /// operations, which failed at an operation (`failed`; the shrinker
    /// keeps it if that is the same failure) or held.
    ShrinkStep {
        index: u64,
        replay: usize,
        len: usize,
        failed: bool,
    },
    /// Rerun `run` of `runs` of the minimal sequence of sequence `index`.
    Rerun {
        index: u64,
        run: usize,
        runs: usize,
        same: bool,
    },
    /// A new finding; `text` is its one line for people.
    Finding { id: usize, text: String },
    /// Where the run is, every few seconds and at the end.
    Progress { text: String },
}

/// How a sequence ended.
#[derive(Clone, Debug, PartialEq)]
pub enum SequenceOutcome {
    /// Every check held.
    Held,
    /// It broke `invariant` at `at` (an operation, or the prologue).
    Broke {
        invariant: String,
        at: String,
        seen: String,
    },
    /// The harness could not run it (no verdict).
    Error(String),
}

/// A case's outcome on one variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
    Xfail,
    Xpass,
    /// A selftest skipped, as the suite expects on this variant.
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
            Verdict::Xfail => "XFAIL",
            Verdict::Xpass => "XPASS",
            Verdict::Skip => "SKIP",
        }
    }
}

/// A finished job, as one line for people. The whole record goes to the
/// run's `record::RecordSink`s.
#[derive(Clone, Debug)]
pub struct CaseLine {
    /// `suite/case@variant`.
    pub id: String,
    pub verdict: Verdict,
    /// Whether that is what the suite expects on this variant.
    pub as_expected: bool,
    pub total_s: f64,
    pub summary: String,
}

/// Something that consumes events. Sinks are shared by the workers of a
/// run, so they take `&self`.
pub trait EventSink: Sync {
    fn event(&self, e: &Event);
}

/// Sends every event to each of its sinks, in order.
pub struct Fanout<'a>(pub Vec<&'a dyn EventSink>);

impl EventSink for Fanout<'_> {
    fn event(&self, e: &Event) {
        for s in &self.0 {
            s.event(e);
        }
    }
}

/// Drops every event.
pub struct Null;

impl EventSink for Null {
    fn event(&self, _: &Event) {}
}

/// Keeps every event (tests, and callers that want to look afterwards).
#[derive(Default)]
pub struct Collect(Mutex<Vec<Event>>);

impl Collect {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The text of every `Note` so far.
    pub fn notes(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|e| match e {
                Event::Note(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

impl EventSink for Collect {
    fn event(&self, e: &Event) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e.clone());
    }
}

/// Sends a `Note`: for stage code that has a message for people.
pub fn note(sink: &dyn EventSink, s: impl Into<String>) {
    sink.event(&Event::Note(s.into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_delivers_every_event_to_every_sink_in_order() {
        let a = Collect::default();
        let b = Collect::default();
        let f = Fanout(vec![&a, &Null, &b]);
        f.event(&Event::Note("one".into()));
        f.event(&Event::CaseStarted { id: "s/c@v".into() });
        note(&f, "two");
        for c in [&a, &b] {
            let got = c.take();
            assert_eq!(got.len(), 3);
            assert!(matches!(&got[0], Event::Note(s) if s == "one"));
            assert!(matches!(&got[1], Event::CaseStarted { id } if id == "s/c@v"));
            assert!(matches!(&got[2], Event::Note(s) if s == "two"));
        }
        assert!(a.take().is_empty(), "take empties the collector");
    }

    #[test]
    fn notes_filters_notes_only() {
        let c = Collect::default();
        c.event(&Event::Preparing { what: "x".into() });
        note(&c, "n");
        assert_eq!(c.notes(), vec!["n".to_string()]);
    }
}
