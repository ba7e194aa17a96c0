//! Draws events: a progress bar per kernel build and one for the matrix on
//! a terminal; on a non-terminal (CI), plain lines, with build progress at
//! most every 30 seconds.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{CaseLine, Event, EventSink, ExploreEvent, MutantsEvent, SequenceOutcome};

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// The line printed for a finished case.
pub fn case_line(r: &CaseLine) -> String {
    let mark = if r.as_expected { " " } else { "!" };
    format!(
        "{:<5}{mark} {:<60} {:>6.1}s  {}",
        r.verdict.as_str(),
        r.id,
        r.total_s,
        crate::text::shown(&r.summary)
    )
}

pub struct Terminal {
    tty: bool,
    build_bar: Mutex<Option<ProgressBar>>,
    run_bar: Mutex<Option<ProgressBar>>,
    last_plain: Mutex<Instant>,
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Terminal {
    pub fn new() -> Self {
        Terminal {
            tty: std::io::stderr().is_terminal(),
            build_bar: Mutex::new(None),
            run_bar: Mutex::new(None),
            last_plain: Mutex::new(Instant::now()),
        }
    }

    /// A line above whatever bar is showing.
    fn println(&self, s: &str) {
        if self.tty {
            for bar in [&self.build_bar, &self.run_bar] {
                if let Some(b) = bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    b.println(s);
                    return;
                }
            }
        }
        eprintln!("{s}");
    }

    fn build_progress(&self, variant: &str, lines: u64, expected: Option<u64>, last: &str) {
        if !self.tty {
            let mut t = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
            if t.elapsed() >= Duration::from_secs(30) {
                *t = Instant::now();
                let pct = expected
                    .map(|e| format!(" (~{}%)", (lines * 100 / e.max(1)).min(99)))
                    .unwrap_or_default();
                eprintln!("  {variant}: {lines} build lines{pct}: {}", last.trim());
            }
            return;
        }
        let mut g = self.build_bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = g.get_or_insert_with(|| {
            let b = match expected {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{elapsed_precise}] {bar:30} {percent:>3}% (eta {eta}) {wide_msg}",
                    )
                    .expect("template"),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "  {prefix} [{elapsed_precise}] {spinner} {pos} lines (first build of this config: no estimate) {wide_msg}",
                    )
                    .expect("template"),
                ),
            };
            b.set_prefix(variant.to_string());
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        if let Some(n) = bar.length() {
            if lines > n {
                bar.set_length(lines + 1);
            }
        }
        bar.set_position(lines);
        bar.set_message(last.trim().to_string());
    }

    /// One of the run's items (a case, a mutant) is done: its line, and
    /// the bar moves on.
    fn finished_one(&self, line: &str) {
        self.println(line);
        if let Some(b) = self
            .run_bar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            b.inc(1);
        }
    }

    /// The bar over a run's `total` items (cases, mutants).
    fn start_run_bar(&self, total: usize, template: &str) {
        let b = ProgressBar::new(total as u64)
            .with_style(ProgressStyle::with_template(template).expect("template"));
        b.enable_steady_tick(Duration::from_millis(200));
        *self.run_bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
    }

    /// `mutants`: a bar over the mutants with an ETA (on a terminal), a
    /// line per mutant.
    fn mutants(&self, m: &MutantsEvent) {
        match m {
            MutantsEvent::Started { about, total } => {
                self.println(about);
                if self.tty {
                    self.start_run_bar(
                        *total,
                        "[{elapsed_precise}] {bar:30} {pos}/{len} mutants (eta {eta}) {wide_msg}",
                    );
                }
            }
            MutantsEvent::Phase { index, id, what } => {
                match self
                    .run_bar
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    Some(b) => b.set_message(format!("{id}: {what}")),
                    None => eprintln!("mutant {} {id}: {what}", index + 1),
                }
            }
            MutantsEvent::Finished { line, .. } => self.finished_one(line),
        }
    }

    fn clear(&self, bar: &Mutex<Option<ProgressBar>>) {
        if let Some(b) = bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
}

impl EventSink for Terminal {
    fn event(&self, e: &Event) {
        match e {
            Event::BuildPhase { variant, what } => self.println(&format!("  {variant}: {what}")),
            Event::BuildProgress {
                variant,
                lines,
                expected,
                last,
            } => self.build_progress(variant, *lines, *expected, last),
            Event::BuildFinished {
                variant,
                key,
                cached,
                elapsed,
                entry,
            } => {
                self.clear(&self.build_bar);
                let what = if *cached { "cached" } else { "built" };
                eprintln!(
                    "{variant:<24} {key}  {what} in {}  {}",
                    fmt_duration(*elapsed),
                    entry.display()
                );
            }
            Event::Preparing { what } => self.println(what),
            Event::Prepared { .. } => {}
            Event::AccelDecided { reason, .. } => self.println(&format!("accel: {reason}")),
            Event::RunStarted { total, .. } => {
                if self.tty {
                    self.start_run_bar(
                        *total,
                        "[{elapsed_precise}] {bar:30} {pos}/{len} cases {wide_msg}",
                    );
                } else {
                    eprintln!("running {total} case(s)");
                }
            }
            Event::CaseStarted { id } => {
                if let Some(b) = self
                    .run_bar
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                {
                    b.set_message(id.clone());
                }
            }
            Event::CaseFinished(r) => self.finished_one(&case_line(r)),
            Event::RunFinished { .. } => self.clear(&self.run_bar),
            Event::Explore(x) => match x {
                ExploreEvent::Started { about } => self.println(about),
                ExploreEvent::SequenceFinished {
                    index,
                    seed,
                    outcome,
                    ..
                } => match outcome {
                    SequenceOutcome::Held => {}
                    SequenceOutcome::Broke {
                        invariant,
                        at,
                        seen,
                    } => self.println(&format!(
                        "explore: sequence {index} (seed {seed:#x}) broke {invariant} at {at}: {seen}"
                    )),
                    SequenceOutcome::Error(e) => self.println(&format!(
                        "explore: sequence {index} (seed {seed:#x}) could not run: {e}"
                    )),
                },
                ExploreEvent::SequenceStarted { .. }
                | ExploreEvent::ShrinkStep { .. }
                | ExploreEvent::Rerun { .. } => {}
                ExploreEvent::Finding { text, .. } | ExploreEvent::Progress { text } => {
                    self.println(text)
                }
            },
            Event::Mutants(m) => self.mutants(m),
            Event::Note(s) => self.println(s),
        }
    }
}
