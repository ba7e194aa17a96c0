//! Splat detector: scans the kernel console line by line as it streams,
//! recognises kernel error reports, captures each whole block and
//! attributes it to the agent step that was running when it began (the
//! agent brackets every step with `coexist: step <id> begin/end` console
//! markers, so attribution follows the console's own order).

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What kind of kernel report a splat is. It serialises (and displays) as
/// its snake_case name: `warning`, `hung_task`, ...
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplatKind {
    /// `WARNING:`
    Warning,
    /// `BUG:`, `kernel BUG at`, `watchdog: BUG:`
    Bug,
    /// `Oops:`
    Oops,
    /// `general protection fault`
    Gpf,
    /// `Kernel panic - not syncing`
    Panic,
    /// A lockdep (or suspicious RCU usage) report.
    Lockdep,
    /// `INFO: task ... blocked for more than`
    HungTask,
    /// An RCU stall.
    RcuStall,
    /// `BUG: soft lockup`
    SoftLockup,
    /// `BUG: KASAN:` or `BUG: KFENCE:`
    Kasan,
    /// `UBSAN:`
    Ubsan,
    /// Not a report: the runner's marker that later splats were not kept
    /// (see `console::MAX_SPLATS`).
    Truncated,
}

impl SplatKind {
    /// The kind's name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            SplatKind::Warning => "warning",
            SplatKind::Bug => "bug",
            SplatKind::Oops => "oops",
            SplatKind::Gpf => "gpf",
            SplatKind::Panic => "panic",
            SplatKind::Lockdep => "lockdep",
            SplatKind::HungTask => "hung_task",
            SplatKind::RcuStall => "rcu_stall",
            SplatKind::SoftLockup => "soft_lockup",
            SplatKind::Kasan => "kasan",
            SplatKind::Ubsan => "ubsan",
            SplatKind::Truncated => "truncated",
        }
    }
}

impl std::fmt::Display for SplatKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One kernel report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Splat {
    pub kind: SplatKind,
    /// The line that says what happened.
    pub title: String,
    /// The agent step running when the report began (None: between steps, or boot).
    pub step: Option<u64>,
    /// 1-based console line of the block's first line.
    pub line: usize,
    /// The whole block, timestamps kept as printed.
    pub text: Vec<String>,
}

impl Splat {
    /// One line for a splat: `kind splat during step N: title`.
    pub fn line(&self) -> String {
        let at = self
            .step
            .map(|i| format!(" during step {i}"))
            .unwrap_or_else(|| " outside any step".into());
        format!("{} splat{at}: {}", self.kind, self.title)
    }
}

const MAX_BLOCK: usize = 400;

/// Strips the printk timestamp `[   12.345678] ` (and a `<N>` level) from a line.
pub fn message(line: &str) -> &str {
    let mut l = line.trim_end_matches(['\r', '\n']);
    if let Some(rest) = l.strip_prefix('<') {
        if let Some(i) = rest.find('>') {
            if rest[..i].bytes().all(|b| b.is_ascii_digit()) {
                l = &rest[i + 1..];
            }
        }
    }
    if let Some(rest) = l.strip_prefix('[') {
        if let Some(i) = rest.find(']') {
            if rest[..i]
                .trim()
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
            {
                return rest[i + 1..].strip_prefix(' ').unwrap_or(&rest[i + 1..]);
            }
        }
    }
    l
}

/// Classifies a line that starts a report; None for ordinary lines.
pub fn trigger(msg: &str) -> Option<SplatKind> {
    let m = msg.trim_start();
    let lockdep = [
        "possible circular locking dependency",
        "inconsistent lock state",
        "possible recursive locking detected",
        "suspicious RCU usage",
        "bad unlock balance detected",
        "held lock freed",
        "lock held when returning to user space",
        "possible irq lock inversion dependency",
        "lock held at task exit time",
        "BAD LOCKDEP",
    ];
    if lockdep.iter().any(|p| m.contains(p)) {
        return Some(SplatKind::Lockdep);
    }
    if m.contains("BUG: soft lockup") {
        return Some(SplatKind::SoftLockup);
    }
    if m.contains("BUG: KASAN:") || m.starts_with("BUG: KFENCE:") {
        return Some(SplatKind::Kasan);
    }
    if m.starts_with("UBSAN:") {
        return Some(SplatKind::Ubsan);
    }
    if m.starts_with("INFO: task ") && m.contains("blocked for more than") {
        return Some(SplatKind::HungTask);
    }
    if (m.starts_with("rcu: INFO:") || m.starts_with("INFO: rcu"))
        && (m.contains("detected stall") || m.contains("self-detected stall"))
    {
        return Some(SplatKind::RcuStall);
    }
    if m.starts_with("Kernel panic - not syncing") {
        return Some(SplatKind::Panic);
    }
    if m.starts_with("kernel BUG at") {
        return Some(SplatKind::Bug);
    }
    if m.starts_with("general protection fault") {
        return Some(SplatKind::Gpf);
    }
    if m.starts_with("Oops:") || m.starts_with("Oops ") {
        return Some(SplatKind::Oops);
    }
    if m.starts_with("BUG:") || m.starts_with("watchdog: BUG:") {
        return Some(SplatKind::Bug);
    }
    if m.starts_with("WARNING:") {
        return Some(SplatKind::Warning);
    }
    None
}

const CUT_HERE: &str = "------------[ cut here ]------------";

/// Lines that still belong to an Oops/WARN after its `</TASK>`.
fn tail_continuation(msg: &str) -> bool {
    let m = msg.trim_start();
    [
        "---[ end",
        "Modules linked in",
        "CR2:",
        "RIP:",
        "RSP:",
        "RAX:",
        "RDX:",
        "RBP:",
        "R8:",
        "R10:",
        "R13:",
        "FS:",
        "CS:",
        "CR0:",
        "DR0:",
        "DR3:",
        "DR6:",
        "PKRU:",
        "Code:",
        "Kernel Offset",
        "Kernel panic",
        "Rebooting in",
        "Dumping ftrace buffer",
    ]
    .iter()
    .any(|p| m.starts_with(p))
}

#[derive(Debug)]
struct Open {
    splat: Splat,
    saw_task_end: bool,
}

/// Streams console lines in; closed reports come out.
pub struct Detector {
    allow: Vec<Regex>,
    step: Option<u64>,
    line_no: usize,
    open: Option<Open>,
    pending_cut: Option<(usize, String)>,
    found: Vec<Splat>,
}

impl Detector {
    /// `allow`: regexes; a report whose title matches one is set aside
    /// (dropped, not reported).
    pub fn new(allow: &[String]) -> Result<Detector, regex::Error> {
        Ok(Detector {
            allow: allow
                .iter()
                .map(|a| Regex::new(a))
                .collect::<Result<_, _>>()?,
            step: None,
            line_no: 0,
            open: None,
            pending_cut: None,
            found: Vec::new(),
        })
    }

    /// The step the console says is running.
    pub fn current_step(&self) -> Option<u64> {
        self.step
    }

    fn close(&mut self) {
        if let Some(o) = self.open.take() {
            if !self.allow.iter().any(|r| r.is_match(&o.splat.title)) {
                self.found.push(o.splat);
            }
        }
    }

    /// Feeds one console line.
    pub fn feed(&mut self, line: &str) {
        self.line_no += 1;
        let raw = line.trim_end_matches(['\r', '\n']).to_string();
        let msg_owned = message(&raw).to_string();
        let msg = msg_owned.as_str();
        if let Some((id, what)) = coexist_proto::parse_step_marker(msg) {
            // An agent prompt: whatever report was open is over.
            self.close();
            self.pending_cut = None;
            self.step = if what == "begin" { Some(id) } else { None };
            return;
        }
        if msg.trim() == CUT_HERE {
            self.close();
            self.pending_cut = Some((self.line_no, raw));
            return;
        }
        if let Some(kind) = trigger(msg) {
            let continues = match &self.open {
                // A panic that follows an Oops/BUG is part of that report,
                // and so is the Oops line that follows a "BUG:" line.
                Some(o) => {
                    (kind == SplatKind::Panic && o.splat.kind != SplatKind::Panic)
                        || (kind == SplatKind::Oops
                            && o.splat.kind == SplatKind::Bug
                            && !o.saw_task_end)
                }
                None => false,
            };
            if continues {
                self.open.as_mut().unwrap().splat.text.push(raw);
                return;
            }
            self.close();
            let mut text = Vec::new();
            let mut first = self.line_no;
            if let Some((l, cut)) = self.pending_cut.take() {
                first = l;
                text.push(cut);
            }
            text.push(raw.clone());
            self.open = Some(Open {
                splat: Splat {
                    kind,
                    title: msg.trim().to_string(),
                    step: self.step,
                    line: first,
                    text,
                },
                saw_task_end: false,
            });
            return;
        }
        self.pending_cut = None;
        let Some(o) = self.open.as_mut() else {
            return;
        };
        // A hung-task report goes on with the held-locks listing (lockdep)
        // up to its "=====" rule.
        let held_locks = o.splat.kind == SplatKind::HungTask && o.saw_task_end;
        if held_locks {
            o.splat.text.push(raw);
            if msg.trim_start().starts_with("=====") || o.splat.text.len() >= MAX_BLOCK {
                self.close();
            }
            return;
        }
        if o.saw_task_end && !tail_continuation(msg) {
            self.close();
            return;
        }
        o.splat.text.push(raw);
        let m = msg.trim();
        if m.starts_with("---[ end") {
            self.close();
        } else if m == "</TASK>" {
            o.saw_task_end = true;
        } else if o.splat.text.len() >= MAX_BLOCK {
            o.splat.text.push("[coexist: block truncated]".into());
            self.close();
        }
    }

    /// Closes whatever is open (end of the console stream).
    pub fn finish(&mut self) {
        self.close();
        self.pending_cut = None;
    }

    /// Takes the reports closed so far.
    pub fn take(&mut self) -> Vec<Splat> {
        std::mem::take(&mut self.found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a whole recorded log through a detector.
    pub(super) fn scan(log: &str, allow: &[String]) -> Result<Vec<Splat>, regex::Error> {
        let mut d = Detector::new(allow)?;
        for l in log.lines() {
            d.feed(l);
        }
        d.finish();
        Ok(d.take())
    }

    #[test]
    fn strips_timestamps() {
        assert_eq!(message("[    1.234567] WARNING: x"), "WARNING: x");
        assert_eq!(message("<4>[ 12.5] BUG: y"), "BUG: y");
        assert_eq!(message("[not a ts] z"), "[not a ts] z");
    }

    #[test]
    fn kinds_serialise_and_display_as_their_names() {
        use SplatKind::*;
        let kinds = [
            (Warning, "warning"),
            (Bug, "bug"),
            (Oops, "oops"),
            (Gpf, "gpf"),
            (Panic, "panic"),
            (Lockdep, "lockdep"),
            (HungTask, "hung_task"),
            (RcuStall, "rcu_stall"),
            (SoftLockup, "soft_lockup"),
            (Kasan, "kasan"),
            (Ubsan, "ubsan"),
            (Truncated, "truncated"),
        ];
        for (k, name) in kinds {
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::to_string(&k).unwrap(), json);
            assert_eq!(serde_json::from_str::<SplatKind>(&json).unwrap(), k);
            assert_eq!(k.to_string(), name);
        }
    }

    #[test]
    fn triggers() {
        assert_eq!(
            trigger("WARNING: CPU: 0 PID: 1 at lib/x.c:1 f+0x1/0x2"),
            Some(SplatKind::Warning)
        );
        assert_eq!(
            trigger("WARNING: possible circular locking dependency detected"),
            Some(SplatKind::Lockdep)
        );
        assert_eq!(
            trigger("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]"),
            Some(SplatKind::SoftLockup)
        );
        assert_eq!(
            trigger("INFO: task sh:80 blocked for more than 2 seconds."),
            Some(SplatKind::HungTask)
        );
        assert_eq!(
            trigger("rcu: INFO: rcu_preempt self-detected stall on CPU"),
            Some(SplatKind::RcuStall)
        );
        assert_eq!(
            trigger("Kernel panic - not syncing: lkdtm"),
            Some(SplatKind::Panic)
        );
        assert_eq!(
            trigger("general protection fault, probably for non-canonical address"),
            Some(SplatKind::Gpf)
        );
        assert_eq!(trigger("Oops: 0002 [#1] SMP"), Some(SplatKind::Oops));
        assert_eq!(
            trigger("BUG: kernel NULL pointer dereference, address: 0"),
            Some(SplatKind::Bug)
        );
        assert_eq!(
            trigger("UBSAN: shift-out-of-bounds in x.c:1:2"),
            Some(SplatKind::Ubsan)
        );
        assert_eq!(
            trigger("BUG: KASAN: use-after-free in f"),
            Some(SplatKind::Kasan)
        );
        assert_eq!(trigger("lkdtm: Performing direct entry WARNING"), None);
        assert_eq!(trigger("Call Trace:"), None);
    }

    #[test]
    fn block_with_cut_here_end_trace_and_attribution() {
        let log = "\
[    1.0] coexist: step 4 begin
[    1.1] lkdtm: Performing direct entry WARNING
[    1.2] ------------[ cut here ]------------
[    1.3] WARNING: CPU: 1 PID: 1 at drivers/misc/lkdtm/bugs.c:95 lkdtm_WARNING+0x5/0x10
[    1.4] Call Trace:
[    1.5]  <TASK>
[    1.6]  lkdtm_do_action+0x15/0x20
[    1.7]  </TASK>
[    1.8] ---[ end trace 0000000000000000 ]---
[    1.9] ordinary line
[    2.0] coexist: step 4 end
";
        let s = scan(log, &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, SplatKind::Warning);
        assert_eq!(s[0].step, Some(4));
        assert_eq!(s[0].line, 3);
        assert_eq!(s[0].text.len(), 7);
        assert!(s[0].text.last().unwrap().contains("end trace"));
        assert!(s[0].title.starts_with("WARNING: CPU: 1"));
    }

    #[test]
    fn lockdep_block_ends_after_its_trace() {
        let log = "\
======================================================
WARNING: possible circular locking dependency detected
6.1.192 #1 Not tainted
------------------------------------------------------
stack backtrace:
Call Trace:
 <TASK>
 dump_stack_lvl+0x1/0x2
 </TASK>
unrelated message afterwards
";
        let s = scan(log, &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, SplatKind::Lockdep);
        assert_eq!(s[0].step, None);
        assert!(s[0].text.last().unwrap().contains("</TASK>"));
    }

    #[test]
    fn allowlist_sets_reports_aside() {
        let log =
            "WARNING: CPU: 0 PID: 1 at known/place.c:1 f\n---[ end trace 0 ]---\nBUG: other\n";
        let mut d = Detector::new(&["known/place\\.c".to_string()]).unwrap();
        for l in log.lines() {
            d.feed(l);
        }
        d.finish();
        let found = d.take();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].title, "BUG: other");
        assert!(Detector::new(&["(".to_string()]).is_err());
    }

    #[test]
    fn panic_after_oops_stays_one_report() {
        let log = "BUG: kernel NULL pointer dereference, address: 0000000000000000\nOops: 0002 [#1] SMP\nCall Trace:\n <TASK>\n </TASK>\nModules linked in:\nCR2: 0000000000000000\n---[ end trace 0000000000000000 ]---\n";
        let s = scan(log, &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].kind, SplatKind::Bug);
        assert_eq!(s[0].text.len(), 8);
        let log2 =
            "Oops: 0002 [#1] SMP\nRIP: 0010:f\nKernel panic - not syncing: Fatal exception\n";
        let s = scan(log2, &[]).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text.len(), 3);
    }
}

/// Recorded console logs of real boots (LKDTM provoking each kind of
/// report during agent step 1), kept in runner/tests/data/console.
#[cfg(test)]
mod recorded {
    use super::tests::scan;
    use super::*;

    fn log(name: &str) -> Vec<Splat> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/console")
            .join(format!("{name}.log"));
        let text = std::fs::read_to_string(&p).unwrap();
        scan(&text, &[]).unwrap()
    }

    fn kinds(s: &[Splat]) -> Vec<&str> {
        s.iter().map(|s| s.kind.as_str()).collect()
    }

    #[test]
    fn warning() {
        let s = log("lkdtm-warning");
        assert_eq!(kinds(&s), vec!["warning"]);
        assert_eq!(s[0].step, Some(1));
        assert_eq!(s[0].text[0].trim(), CUT_HERE);
        assert!(s[0].title.contains("lkdtm_WARNING"), "{}", s[0].title);
        assert!(s[0].text.last().unwrap().contains("---[ end trace"));
        assert!(s[0].text.iter().any(|l| l.contains("direct_entry")));
    }

    #[test]
    fn kernel_bug() {
        let s = log("lkdtm-bug");
        assert_eq!(kinds(&s), vec!["bug"]);
        assert!(s[0]
            .title
            .starts_with("kernel BUG at drivers/misc/lkdtm/bugs.c"));
        assert_eq!(s[0].step, Some(1));
        assert!(s[0].text.iter().any(|l| l.contains("invalid opcode")));
    }

    #[test]
    fn null_dereference_oops_is_one_report() {
        let s = log("lkdtm-exception");
        assert_eq!(kinds(&s), vec!["bug"]);
        assert!(s[0]
            .title
            .starts_with("BUG: kernel NULL pointer dereference"));
        assert!(s[0].text.iter().any(|l| message(l).starts_with("Oops:")));
        assert!(s[0].text.iter().any(|l| l.contains("---[ end trace")));
        assert_eq!(s[0].step, Some(1));
    }

    #[test]
    fn panic() {
        let s = log("lkdtm-panic");
        assert_eq!(kinds(&s), vec!["panic"]);
        assert_eq!(s[0].title, "Kernel panic - not syncing: dumptest");
        assert_eq!(s[0].step, Some(1));
        assert!(s[0].text.iter().any(|l| l.contains("lkdtm_PANIC")));
    }

    #[test]
    fn soft_lockups() {
        let s = log("lkdtm-softlockup");
        assert!(s.len() >= 3, "{:?}", kinds(&s));
        assert!(
            s.iter()
                .all(|s| s.kind == SplatKind::SoftLockup && s.step == Some(1)),
            "{s:?}"
        );
        assert!(s[0].text.iter().any(|l| l.contains("lkdtm_SOFTLOCKUP")));
    }

    #[test]
    fn hung_tasks() {
        let s = log("lkdtm-hung-task");
        assert!(s.len() >= 3, "{:?}", kinds(&s));
        assert!(
            s.iter()
                .all(|s| s.kind == SplatKind::HungTask && s.step == Some(1)),
            "{s:?}"
        );
        assert!(s[0].text.iter().any(|l| l.contains("state:D")));
        assert!(s[0].text.iter().any(|l| l.contains("direct_entry")));
        // The held-locks listing belongs to the report.
        assert!(
            s[0].text.iter().any(|l| l.contains("lock held by sh/29")),
            "{:#?}",
            s[0].text
        );
        assert!(s[0].text.last().unwrap().starts_with("====="));
    }

    #[test]
    fn lockdep_and_atomic_sleep() {
        let s = log("lkdtm-spinlockup-lockdep");
        assert!(kinds(&s).contains(&"lockdep"), "{:?}", kinds(&s));
        let l = s.iter().find(|s| s.kind == SplatKind::Lockdep).unwrap();
        assert!(l.title.contains("lock held when returning to user space"));
        assert!(
            l.text.iter().any(|t| t.contains("lock_me_up")),
            "{:#?}",
            l.text
        );
        assert!(s.iter().all(|s| s.step == Some(1)));
    }

    #[test]
    fn clean_boots_have_no_splats_before_the_first_step() {
        for name in ["lkdtm-warning", "lkdtm-panic", "lkdtm-hung-task"] {
            assert!(log(name).iter().all(|s| s.step.is_some()), "{name}");
        }
    }
}
