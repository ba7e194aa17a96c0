//! Runtime faults of a real run, on real kernels: an interrupted run keeps
//! what finished (a partial report), a killed build leaves no `make`
//! behind and the next build is fine, a damaged cache entry is built
//! again, and oversize or hostile guest output is cut and escaped while
//! the run goes on.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_group_gone, children_of, coexist, root};

fn coexist_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coexist"))
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn an_interrupted_run_writes_a_partial_report_of_what_finished() {
    // Build and cache first, so the run below only boots.
    common::prepare("share-ipmodify");
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("results");
    let child = coexist_cmd()
        .args(["suite", "livepatch-bpf", "--variant", "share-ipmodify"])
        // Fresh boots: long enough jobs to be interrupted in the middle.
        .args(["-j", "1", "--accel", "tcg", "--fresh-boot", "--root"])
        .arg(root())
        .arg("--results")
        .arg(&results)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runner = child.id();
    let jsonl = results.join("results.jsonl");
    wait_for("two finished cases", Duration::from_secs(300), || {
        lines(&jsonl) >= 2
    });
    // A case is running: its QEMU is a child of the runner.
    let mut qemu = Vec::new();
    wait_for("a running QEMU", Duration::from_secs(60), || {
        qemu = children_of(runner, "qemu-system-x86");
        !qemu.is_empty()
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(130), "128 + SIGINT");
    for q in qemu {
        assert_group_gone(q);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["complete"], false);
    assert_eq!(report["incomplete"], "interrupted by signal 2");
    let finished = report["results"].as_array().unwrap().len();
    assert!(finished >= 2, "{finished}");
    assert!(finished < report["jobs"].as_u64().unwrap() as usize);
    // What the report holds is what was streamed: no case cut short by
    // the signal is in either.
    assert_eq!(lines(&jsonl), finished);
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["verdict"], "PASS", "{r}");
    }
    assert!(results.join("junit.xml").is_file());
    assert!(results.join("results.ktap").is_file());
    assert!(
        stdout.contains("INCOMPLETE: interrupted by signal 2"),
        "{stdout}"
    );
}

/// A scratch project whose `stock` variant has its own configuration key
/// (a fragment with one more comment line), so it builds on its own entry
/// and build dir; the compiler cache makes the build quick.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let r = root();
        for sub in [".ci", "kernel-config", "patches", "suites", "images"] {
            let st = Command::new("cp")
                .arg("-r")
                .arg(r.join(sub))
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("kernel-config/base.config"))
            .unwrap();
        writeln!(f, "# run_faults scratch configuration {stamp}").unwrap();
        Scratch { dir }
    }

    fn root(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn row(&self) -> serde_json::Value {
        let out = coexist(&["kernel", "list", "--json", "--root", self.root()]);
        assert!(out.status.success());
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["variant"] == "stock")
            .unwrap()
            .clone()
    }
}

impl Drop for Scratch {
    /// The entry and the build dir are this test's own: not left in the cache.
    fn drop(&mut self) {
        let r = self.row();
        for k in ["entry", "build_dir"] {
            if let Some(p) = r[k].as_str() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
}

fn build(s: &Scratch) -> std::process::Output {
    coexist(&["kernel", "build", "--variant", "stock", "--root", s.root()])
}

#[test]
fn a_killed_build_leaves_no_make_and_damaged_entries_are_rebuilt() {
    let s = Scratch::new();
    assert_eq!(s.row()["cached"], false);
    let mut child = coexist_cmd()
        .args(["kernel", "build", "--variant", "stock", "--root", s.root()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runner = child.id();
    // `make ... all` is the runner's child once compiling has started.
    let mut make = Vec::new();
    wait_for("make", Duration::from_secs(300), || {
        make = children_of(runner, "make");
        make.len() == 1 && {
            let cmd = std::fs::read(format!("/proc/{}/cmdline", make[0])).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("all")
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(128 + 15), "{st}");
    // make and everything it started are gone.
    assert_group_gone(make[0]);
    assert_eq!(s.row()["cached"], false, "nothing published");

    // The next build finishes in the same build dir.
    let out = build(&s);
    assert!(out.status.success());
    let row = s.row();
    assert_eq!(row["cached"], true);
    let entry = PathBuf::from(row["entry"].as_str().unwrap());

    // A truncated manifest: listed as not built, then built again.
    let manifest = entry.join("manifest.json");
    let text = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, &text[..text.len() / 2]).unwrap();
    assert_eq!(s.row()["cached"], false);
    let out = build(&s);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is damaged") && err.contains("building it again"),
        "{err}"
    );
    assert_eq!(s.row()["cached"], true);

    // A missing vmlinux: the same.
    std::fs::remove_file(entry.join("vmlinux")).unwrap();
    let out = build(&s);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vmlinux is missing"), "{err}");
    assert!(entry.join("vmlinux").is_file());
}

#[test]
fn oversize_and_hostile_guest_output_is_cut_and_escaped() {
    common::prepare("share-ipmodify");
    let r = root();
    // 32 MiB of output, then an escape sequence that would clear a terminal.
    let out = coexist(&[
        "run",
        "--variant",
        "share-ipmodify",
        "--accel",
        "tcg",
        "--timeout",
        "600",
        "--root",
        r.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo first; head -c 33554432 /dev/zero | tr '\\0' x; echo; printf '\\033[2J\\007done'",
    ]);
    assert!(
        out.status.success(),
        "{:?}, {} bytes on stderr",
        out.status,
        out.stderr.len()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The agent kept the head and the tail, and marked the cut.
    assert!(stdout.len() < 70_000, "{}", stdout.len());
    assert!(stdout.starts_with("first\nxxx"), "{}", &stdout[..40]);
    assert!(stdout.contains("bytes of output cut here"));
    // The escape sequence, in the tail, is shown escaped.
    assert!(
        stdout.contains("xxx\n\\u{1b}[2J\\u{7}done"),
        "{}",
        &stdout[stdout.len().saturating_sub(200)..]
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "a raw escape reached the terminal"
    );
    // Nothing of the output's size went to the terminal as a message.
    assert!(stderr.len() < 4096, "{} bytes on stderr", stderr.len());
}

#[test]
fn auto_does_not_blame_kvm_for_a_qemu_that_cannot_start_at_all() {
    use coexist::events::{Collect, Event};
    use coexist::vm::{accel, AccelChoice, FailureKind, VmConfig};
    let d = tempfile::tempdir().unwrap();
    // No such kernel: QEMU fails the same way with or without KVM.
    let cfg = VmConfig::new(
        d.path().join("no-such-vmlinux"),
        d.path().join("no-such-initrd"),
        d.path().join("console.log"),
    );
    let events = Collect::default();
    let f = match accel::boot(AccelChoice::Auto, cfg, &events) {
        Ok(_) => panic!("booted without a kernel"),
        Err(f) => f,
    };
    assert_eq!(f.kind, FailureKind::QemuFailed, "{f}");
    let decided: Vec<Event> = events
        .take()
        .into_iter()
        .filter(|e| matches!(e, Event::AccelDecided { .. }))
        .collect();
    assert!(decided.is_empty(), "KVM was blamed: {decided:?}");
    assert_eq!(accel::decided(), None, "nothing was decided");
}
