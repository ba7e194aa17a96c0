//! The guest's serial console as the runner keeps it: every line goes to
//! the console log file (a line at a time, so nothing is lost if the runner
//! is killed), to a short tail for failure messages, and to the splat
//! detector; the console also says whether the kernel banner and a panic
//! went by. Splats come out split by whether a step was running.

use std::collections::VecDeque;
use std::io::{LineWriter, Write};
use std::path::Path;

use super::splat::{self, Detector, Splat, SplatKind};

/// Lines kept for failure messages.
pub const TAIL: usize = 40;
/// The most a console log file gets; the rest is not written (but still
/// watched for splats and panics).
pub const MAX_LOG_BYTES: u64 = 32 * 1024 * 1024;
/// The most splats kept per VM; one more marks the cut.
pub const MAX_SPLATS: usize = 100;

pub struct Console {
    log: LineWriter<std::fs::File>,
    tail: VecDeque<String>,
    detector: Detector,
    saw_banner: bool,
    saw_panic: bool,
    /// The console stream ended (QEMU closed it).
    pub eof: bool,
    /// Splats outside any step (boot, between steps).
    unattributed: Vec<Splat>,
    /// Splats of a step not yet handed out.
    pending: Vec<Splat>,
    logged: u64,
    splats: usize,
}

impl Console {
    /// Creates the log file; `allow` are the regexes of splat titles to
    /// set aside. Errors are for people.
    pub fn create(path: &Path, allow: &[String]) -> Result<Console, String> {
        let detector = Detector::new(allow).map_err(|e| format!("bad splat allowlist: {e}"))?;
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let f = std::fs::File::create(path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Console {
            log: LineWriter::new(f),
            tail: VecDeque::new(),
            detector,
            saw_banner: false,
            saw_panic: false,
            eof: false,
            unattributed: Vec::new(),
            pending: Vec::new(),
            logged: 0,
            splats: 0,
        })
    }

    /// A line of the runner's own in the log (not from the guest).
    pub fn mark(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    /// Splats that belong to no step of the case (a restored guest's hello).
    pub fn add_unattributed(&mut self, splats: Vec<Splat>) {
        self.unattributed.extend(splats);
    }

    /// Takes one console line.
    pub fn feed(&mut self, line: &str) {
        let n = line.len() as u64 + 1;
        if self.logged + n <= MAX_LOG_BYTES {
            let _ = writeln!(self.log, "{line}");
        } else if self.logged <= MAX_LOG_BYTES {
            let _ = writeln!(
                self.log,
                "[coexist: console log truncated at {MAX_LOG_BYTES} bytes]"
            );
            self.logged = MAX_LOG_BYTES + 1;
        }
        self.logged = self.logged.saturating_add(n);
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if line.contains("Linux version") {
            self.saw_banner = true;
        }
        if splat::trigger(splat::message(line)) == Some(SplatKind::Panic) {
            self.saw_panic = true;
        }
        self.detector.feed(line);
        self.sort_closed();
    }

    fn sort_closed(&mut self) {
        for mut s in self.detector.take() {
            self.splats += 1;
            if self.splats > MAX_SPLATS + 1 {
                continue;
            }
            if self.splats == MAX_SPLATS + 1 {
                s = Splat {
                    kind: SplatKind::Truncated,
                    title: format!(
                        "[coexist: more than {MAX_SPLATS} splats; the rest are not kept]"
                    ),
                    text: Vec::new(),
                    ..s
                };
            }
            match s.step {
                None => self.unattributed.push(s),
                Some(_) => self.pending.push(s),
            }
        }
    }

    /// The kernel printed its banner.
    pub fn saw_banner(&self) -> bool {
        self.saw_banner
    }

    /// A `Kernel panic` line went by.
    pub fn saw_panic(&self) -> bool {
        self.saw_panic
    }

    /// The step the console markers say is running.
    pub fn current_step(&self) -> Option<u64> {
        self.detector.current_step()
    }

    /// Takes the closed splats of step `id`.
    pub fn take_step_splats(&mut self, id: u64) -> Vec<Splat> {
        let mut mine = Vec::new();
        self.pending.retain(|s| {
            if s.step == Some(id) {
                mine.push(s.clone());
                false
            } else {
                true
            }
        });
        mine
    }

    /// Takes every closed splat of any step.
    pub fn take_pending(&mut self) -> Vec<Splat> {
        std::mem::take(&mut self.pending)
    }

    /// Splats outside any step so far.
    pub fn unattributed(&self) -> &[Splat] {
        &self.unattributed
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// The console is over (or a panic report is complete): closes what is
    /// open and returns the panic report with its one-line title.
    pub fn panic_report(&mut self) -> (Option<Box<Splat>>, String) {
        self.detector.finish();
        self.sort_closed();
        let all = self.pending.iter().chain(&self.unattributed);
        let panic = all
            .rev()
            .find(|s| {
                s.kind == SplatKind::Panic || s.text.iter().any(|l| l.contains("Kernel panic"))
            })
            .cloned()
            .map(Box::new);
        let title = panic
            .as_ref()
            .and_then(|p| {
                p.text
                    .iter()
                    .find(|l| l.contains("Kernel panic"))
                    .map(|l| splat::message(l).trim().to_string())
            })
            .unwrap_or_else(|| "Kernel panic".into());
        (panic, title)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn recorded(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/console")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A console fed `text`, and the log file it writes.
    fn feed_all(text: &str) -> (tempfile::TempDir, PathBuf, Console) {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("sub/console.log");
        let mut c = Console::create(&log, &[]).unwrap();
        for l in text.lines() {
            c.feed(l);
        }
        (d, log, c)
    }

    #[test]
    fn a_recorded_warning_boot_is_logged_and_its_splat_attributed_to_its_step() {
        let text = recorded("lkdtm-warning.log");
        let (_d, log, mut c) = feed_all(&text);
        assert!(c.saw_banner());
        assert!(!c.saw_panic());
        // Every line reached the log file.
        let logged = std::fs::read_to_string(&log).unwrap();
        assert_eq!(logged.lines().count(), text.lines().count());
        assert_eq!(c.tail().len(), TAIL.min(text.lines().count()));
        assert_eq!(c.tail().last().map(String::as_str), text.lines().last());
        let step = c
            .pending
            .first()
            .and_then(|s| s.step)
            .expect("the WARNING happened during a step");
        let mine = c.take_step_splats(step);
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert_eq!(mine[0].kind, SplatKind::Warning);
        assert!(c.take_step_splats(step).is_empty(), "taken once");
    }

    #[test]
    fn a_recorded_panic_sets_the_panic_state_and_gives_its_title() {
        let (_d, _, mut c) = feed_all(&recorded("lkdtm-panic.log"));
        assert!(c.saw_panic());
        let (report, title) = c.panic_report();
        assert!(title.starts_with("Kernel panic"), "{title}");
        let report = report.expect("the panic block");
        assert!(report.text.iter().any(|l| l.contains("Kernel panic")));
    }

    #[test]
    fn quiet_console_has_no_splats_and_a_generic_panic_title() {
        let (_d, _, mut c) = feed_all("[    0.000000] Linux version 6.1.0\n[    0.1] hello\n");
        assert!(c.saw_banner());
        assert!(c.unattributed().is_empty());
        assert!(c.take_pending().is_empty());
        let (report, title) = c.panic_report();
        assert!(report.is_none());
        assert_eq!(title, "Kernel panic");
    }

    #[test]
    fn log_size_and_splat_count_are_capped_with_a_marker() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("c.log");
        let mut c = Console::create(&log, &[]).unwrap();
        let line = "y".repeat(1023);
        for _ in 0..(MAX_LOG_BYTES / 1024 + 10) {
            c.feed(&line);
        }
        let size = std::fs::metadata(&log).unwrap().len();
        assert!(size <= MAX_LOG_BYTES + 100, "{size}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.ends_with(&format!(
            "[coexist: console log truncated at {MAX_LOG_BYTES} bytes]\n"
        )));
        // Lines still reach the tail (and the detector) after the cut.
        c.feed("after the cut");
        assert_eq!(c.tail().last().map(String::as_str), Some("after the cut"));
        for i in 0..(MAX_SPLATS + 20) {
            c.feed(&format!(
                "[    1.0] WARNING: CPU: 0 PID: 1 at x.c:{i} f+0x0/0x10"
            ));
            c.feed("[    1.0] ---[ end trace 0000000000000000 ]---");
        }
        let u = c.unattributed();
        assert_eq!(u.len(), MAX_SPLATS + 1);
        assert_eq!(u[MAX_SPLATS].kind, SplatKind::Truncated);
        assert!(u[MAX_SPLATS].title.contains("more than 100 splats"));
    }

    #[test]
    fn a_bad_allowlist_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let e = Console::create(&d.path().join("c.log"), &["(".into()])
            .err()
            .unwrap();
        assert!(e.contains("bad splat allowlist"), "{e}");
    }
}
