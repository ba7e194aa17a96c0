//! Terminal reporter: consumes stage events and draws them with indicatif.
//! When stderr is not a terminal (CI), it prints plain lines instead,
//! with a progress line at most every 30 seconds.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::kbuild::{BuildEvent, BuildObserver};

pub struct BuildReporter {
    bar: Mutex<Option<ProgressBar>>,
    tty: bool,
    last_plain: Mutex<Instant>,
}

impl Default for BuildReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildReporter {
    pub fn new() -> Self {
        BuildReporter {
            bar: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
            last_plain: Mutex::new(Instant::now()),
        }
    }

    fn println(&self, s: &str) {
        match self.bar.lock().unwrap().as_ref() {
            Some(b) => b.println(s),
            None => eprintln!("{s}"),
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

impl BuildObserver for BuildReporter {
    fn event(&self, e: BuildEvent) {
        match e {
            BuildEvent::Phase { variant, what } => self.println(&format!("  {variant}: {what}")),
            BuildEvent::Progress {
                variant,
                lines,
                expected,
                last,
            } => {
                if !self.tty {
                    let mut t = self.last_plain.lock().unwrap();
                    if t.elapsed() >= Duration::from_secs(30) {
                        *t = Instant::now();
                        let pct = expected
                            .map(|e| format!(" (~{}%)", (lines * 100 / e.max(1)).min(99)))
                            .unwrap_or_default();
                        eprintln!("  {variant}: {lines} build lines{pct}: {}", last.trim());
                    }
                    return;
                }
                let mut g = self.bar.lock().unwrap();
                let bar = g.get_or_insert_with(|| {
                    let b = match expected {
                        Some(n) => ProgressBar::new(n).with_style(
                            ProgressStyle::with_template(
                                "  {prefix} [{elapsed_precise}] {bar:30} {percent:>3}% (eta {eta}) {wide_msg}",
                            )
                            .unwrap(),
                        ),
                        None => ProgressBar::new_spinner().with_style(
                            ProgressStyle::with_template(
                                "  {prefix} [{elapsed_precise}] {spinner} {pos} lines (first build of this config: no estimate) {wide_msg}",
                            )
                            .unwrap(),
                        ),
                    };
                    b.set_prefix(variant.clone());
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
            BuildEvent::Finished {
                variant,
                key,
                cached,
                elapsed,
                entry,
            } => {
                if let Some(b) = self.bar.lock().unwrap().take() {
                    b.finish_and_clear();
                }
                let what = if cached { "cached" } else { "built" };
                eprintln!(
                    "{variant:<24} {key}  {what} in {}  {}",
                    fmt_duration(elapsed),
                    entry.display()
                );
            }
        }
    }
}

/// Matrix reporter: one bar for the matrix, a line per finished case.
pub struct RunReporter {
    bar: Mutex<Option<ProgressBar>>,
    tty: bool,
}

impl Default for RunReporter {
    fn default() -> Self {
        Self::new()
    }
}

impl RunReporter {
    pub fn new() -> Self {
        RunReporter {
            bar: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn println(&self, s: &str) {
        match self.bar.lock().unwrap().as_ref() {
            Some(b) if self.tty => b.println(s),
            _ => eprintln!("{s}"),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap().take() {
            b.finish_and_clear();
        }
    }
}

impl crate::matrix::RunObserver for RunReporter {
    fn event(&self, e: crate::matrix::RunEvent) {
        use crate::matrix::RunEvent;
        match e {
            RunEvent::Started { total } => {
                if self.tty {
                    let b = ProgressBar::new(total as u64).with_style(
                        ProgressStyle::with_template(
                            "[{elapsed_precise}] {bar:30} {pos}/{len} cases {wide_msg}",
                        )
                        .unwrap(),
                    );
                    b.enable_steady_tick(Duration::from_millis(200));
                    *self.bar.lock().unwrap() = Some(b);
                } else {
                    eprintln!("running {total} case(s)");
                }
            }
            RunEvent::CaseStarted { id } => {
                if let Some(b) = self.bar.lock().unwrap().as_ref() {
                    b.set_message(id.to_string());
                }
            }
            RunEvent::CaseFinished(r) => {
                let mark = if r.decision.as_expected { " " } else { "!" };
                self.println(&format!(
                    "{:<5}{mark} {:<60} {:>6.1}s  {}",
                    r.decision.verdict.as_str(),
                    r.id,
                    r.total_s,
                    r.decision.summary
                ));
                if let Some(b) = self.bar.lock().unwrap().as_ref() {
                    b.inc(1);
                }
            }
            RunEvent::Note(s) => self.println(s),
        }
    }
}
