//! Fault tests that boot real kernels (the `share-ipmodify` variant, built
//! or taken from the cache) and provoke failures with LKDTM: a WARN during a
//! step, a panic, a hanging step, a kernel that cannot reach init, the
//! accelerator probe, and the runner dying (and the run dirs it leaves); and
//! a step that prints 32 MiB. After each, no QEMU is left.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::{assert_group_gone, children_of};

use coexist::events::{Collect, Event};
use coexist::image::Prepared;
use coexist::vm::{accel, AccelChoice, FailureKind, SplatKind, Vm, VmConfig};
use coexist_proto::Step;

const DIRECT: &str = "/sys/kernel/debug/provoke-crash/DIRECT";

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| common::prepare("share-ipmodify"))
}

fn config(name: &str) -> (tempfile::TempDir, VmConfig) {
    let d = tempfile::tempdir().unwrap();
    let mut c = prepared().vm_config(d.path().join(format!("{name}.console.log")));
    c.boot_timeout = Duration::from_secs(60);
    (d, c)
}

fn boot(c: VmConfig) -> Vm {
    accel::boot(AccelChoice::Tcg, c, &common::Quiet).unwrap_or_else(|f| panic!("boot failed: {f}"))
}

fn step_ok(vm: &mut Vm, step: Step) -> coexist::vm::StepOutcome {
    let out = vm
        .run(step, Duration::from_secs(30))
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(out.answer.ok, "{:?}", out.answer);
    out
}

#[test]
fn warn_during_a_step_is_captured_and_attributed_to_it() {
    let (_d, c) = config("warn");
    let log = c.console_log.clone();
    let mut vm = boot(c);
    let pid = vm.pid();
    let before = step_ok(
        &mut vm,
        Step::Read {
            path: "/proc/cmdline".into(),
        },
    );
    assert!(before.answer.output.contains("rdinit=/init"));
    let warn = step_ok(
        &mut vm,
        Step::Write {
            path: DIRECT.into(),
            data: "WARNING".into(),
            create: false,
        },
    );
    let after = step_ok(
        &mut vm,
        Step::Read {
            path: "/proc/uptime".into(),
        },
    );
    assert!(before.splats.is_empty() && after.splats.is_empty());
    assert_eq!(warn.splats.len(), 1, "{:#?}", warn.splats);
    let s = &warn.splats[0];
    assert_eq!(s.kind, SplatKind::Warning);
    assert_eq!(s.step, Some(warn.id));
    assert!(s.title.contains("lkdtm_WARNING"), "{}", s.title);
    assert!(s.text.last().unwrap().contains("---[ end trace"));
    assert!(vm.unattributed().is_empty(), "{:#?}", vm.unattributed());
    vm.shutdown().unwrap();
    assert_group_gone(pid);
    // The whole console went to the per-VM log.
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("Linux version") && text.contains("lkdtm_WARNING"));
}

#[test]
fn panic_during_a_step_ends_the_vm_at_once_with_the_panic_text() {
    let (_d, c) = config("panic");
    let mut vm = boot(c);
    let pid = vm.pid();
    step_ok(
        &mut vm,
        Step::Read {
            path: "/proc/cmdline".into(),
        },
    );
    let f = vm
        .run(
            Step::Write {
                path: DIRECT.into(),
                data: "PANIC".into(),
                create: false,
            },
            Duration::from_secs(120),
        )
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::Panic, "{f}");
    assert_eq!(f.step, Some(2));
    assert_eq!(f.message, "Kernel panic - not syncing: dumptest");
    let p = f.panic.as_ref().expect("panic report");
    assert!(
        p.text.iter().any(|l| l.contains("lkdtm_PANIC")),
        "{:#?}",
        p.text
    );
    assert_eq!(f.qemu_pid, Some(pid));
    drop(vm);
    assert_group_gone(pid);
}

#[test]
fn hanging_step_hits_its_timeout() {
    let (_d, c) = config("hang");
    let mut vm = boot(c);
    let pid = vm.pid();
    let f = vm
        .run(
            Step::Write {
                path: DIRECT.into(),
                data: "HUNG_TASK".into(),
                create: false,
            },
            Duration::from_secs(3),
        )
        .unwrap_err();
    assert_eq!(f.kind, FailureKind::StepTimeout, "{f}");
    assert_eq!(f.step, Some(1));
    assert!(
        f.message.contains("did not answer within 3.0 s"),
        "{}",
        f.message
    );
    assert!(
        f.last_console.iter().any(|l| l.contains("HUNG_TASK")),
        "{:#?}",
        f.last_console
    );
    drop(vm);
    assert_group_gone(pid);
}

#[test]
fn kernel_that_cannot_reach_init_is_a_boot_failure_within_the_deadline() {
    let (_d, mut c) = config("noinit");
    // No init in the initramfs and none on a root fs: the kernel cannot start userspace.
    c.cmdline = Some("console=ttyS0 panic=-1 rdinit=/nonexistent init=/nonexistent".into());
    c.boot_timeout = Duration::from_secs(45);
    let f = match accel::boot(AccelChoice::Tcg, c, &common::Quiet) {
        Ok(_) => panic!("a kernel without init booted"),
        Err(f) => f,
    };
    assert_eq!(f.kind, FailureKind::BootFailed, "{f}");
    assert!(
        f.message.contains("kernel panic while booting"),
        "{}",
        f.message
    );
    assert!(f.elapsed_s < 45.0);
    let p = f.panic.as_ref().expect("panic report");
    assert!(
        p.text
            .iter()
            .any(|l| l.contains("Requested init /nonexistent failed")),
        "{:#?}",
        p.text
    );
    assert_group_gone(f.qemu_pid.unwrap());
}

#[test]
fn auto_accel_probes_and_boots() {
    let (_d, c) = config("auto");
    let events = Collect::default();
    let vm = accel::boot(AccelChoice::Auto, c, &events).unwrap_or_else(|f| panic!("{f}"));
    let pid = vm.pid();
    let used = vm.ready.accel;
    assert_eq!(accel::decided(), Some(used));
    let decisions: Vec<String> = events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::AccelDecided { reason } => Some(reason),
            _ => None,
        })
        .collect();
    eprintln!("{decisions:?}");
    // The decision is one event, whatever it was, and names what was used.
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    match used {
        coexist::vm::Accel::Tcg => assert!(decisions[0].contains("TCG"), "{decisions:?}"),
        coexist::vm::Accel::Kvm => assert!(decisions[0].contains("using KVM"), "{decisions:?}"),
    }
    // On a host whose /dev/kvm does not open, auto must have used TCG.
    if accel::kvm_device().is_err() {
        assert_eq!(used, coexist::vm::Accel::Tcg);
    }
    vm.shutdown().unwrap();
    assert_group_gone(pid);
}

/// `coexist run --fresh-boot ... -- sleep 100` (with `TMPDIR`, if given),
/// once its one QEMU is up: the child, the runner's pid and QEMU's. A
/// fresh boot: the QEMU found is the one that runs the step (restoring
/// would first boot another to make the snapshot, when there is none).
fn run_sleeping(tmpdir: Option<&Path>) -> (std::process::Child, u32, Vec<u32>) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"));
    c.args([
        "run",
        "--variant",
        "share-ipmodify",
        "--accel",
        "tcg",
        "--fresh-boot",
    ])
    .args(["--timeout", "120", "--root"])
    .arg(common::root())
    .args(["--", "sleep", "100"])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    if let Some(t) = tmpdir {
        c.env("TMPDIR", t);
    }
    let child = c.spawn().unwrap();
    let runner = child.id();
    let mut qemu = Vec::new();
    for _ in 0..600 {
        qemu = children_of(runner, "qemu-system-x86");
        if !qemu.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(qemu.len(), 1, "no QEMU under the runner");
    (child, runner, qemu)
}

fn runner_dies_and_takes_qemu_along(signal: nix::sys::signal::Signal) {
    // Build/cache first so the runner below only boots.
    let _ = prepared();
    let (mut child, runner, qemu) = run_sleeping(None);
    // Let it boot into the step.
    std::thread::sleep(Duration::from_secs(3));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner as i32), signal).unwrap();
    let status = child.wait().unwrap();
    eprintln!("runner ended with {status}");
    assert_group_gone(qemu[0]);
}

#[test]
fn sigterm_to_the_runner_stops_qemu() {
    runner_dies_and_takes_qemu_along(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn sigkill_to_the_runner_stops_qemu() {
    runner_dies_and_takes_qemu_along(nix::sys::signal::Signal::SIGKILL);
}

/// The `coexist-vm-*` run dirs in `tmp`.
fn run_dirs(tmp: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("coexist-vm-"))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_runner_killed_with_sigkill_leaves_a_run_dir_naming_it() {
    let _ = prepared();
    let tmp = tempfile::tempdir().unwrap();
    let (mut child, runner, qemu) = run_sleeping(Some(tmp.path()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(runner as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_group_gone(qemu[0]);
    // Nothing ran to remove it: the run dir is left, and says whose it was.
    let left = run_dirs(tmp.path());
    assert_eq!(left.len(), 1, "{left:?}");
    let owner = std::fs::read_to_string(left[0].join("owner")).unwrap();
    assert_eq!(
        owner.split_whitespace().next(),
        Some(runner.to_string().as_str()),
        "{owner:?}"
    );
}

#[test]
fn a_later_start_removes_the_run_dirs_whose_owner_is_gone() {
    let _ = prepared();
    let tmp = tempfile::tempdir().unwrap();
    // A process that has exited: its pid owns nothing any more.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let stale = tmp.path().join("coexist-vm-stale");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("owner"), format!("{dead} 1\n")).unwrap();
    std::fs::write(stale.join("agent.sock"), "").unwrap();
    // This test's process is alive: its dir stays.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let live = tmp.path().join("coexist-vm-live");
    std::fs::create_dir(&live).unwrap();
    std::fs::write(
        live.join("owner"),
        format!("{} {start}\n", std::process::id()),
    )
    .unwrap();
    // A dir whose owner is not recorded (yet, or by an older runner) stays.
    let unknown = tmp.path().join("coexist-vm-unknown");
    std::fs::create_dir(&unknown).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args([
            "run",
            "--variant",
            "share-ipmodify",
            "--accel",
            "tcg",
            "--root",
        ])
        .arg(common::root())
        .args(["--", "true"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(run_dirs(tmp.path()), vec![live, unknown]);
}

#[test]
fn a_step_that_prints_32_mib_keeps_its_head_and_tail_and_gets_its_verdict() {
    use coexist::record::Verdict;
    use coexist::run::{run_case, CaseOptions};
    let p = prepared();
    let fx = coexist::image::project_fixtures(&common::root());
    // 32 MiB between a first and a last line, a marker in the middle.
    let print = "echo FIRST-LINE; head -c 16777216 /dev/zero | tr '\\\\0' x; echo MIDDLE-LINE; \
                 head -c 16777216 /dev/zero | tr '\\\\0' y; echo; echo LAST-LINE";
    let text = format!(
        "suite: big\nvariants: [share-ipmodify]\ncases:\n\
         - name: ends\n  steps:\n    - exec: {{argv: [sh, -c, \"{print}\"]}}\n      timeout: 600\n      expect: {{output_contains: LAST-LINE}}\n  expect: {{default: pass}}\n\
         - name: middle\n  steps:\n    - exec: {{argv: [sh, -c, \"{print}\"]}}\n      timeout: 600\n      expect: {{output_contains: MIDDLE-LINE}}\n  expect: {{default: pass}}\n"
    );
    let suite = coexist::suite::parse(
        &text,
        Path::new("big.yaml"),
        &["share-ipmodify".to_string()],
        &fx,
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    let d = tempfile::tempdir().unwrap();
    let opts = CaseOptions {
        machine: coexist::guest::Machine {
            accel: AccelChoice::Tcg,
            ..Default::default()
        },
        results_dir: d.path().to_path_buf(),
        snapshots: None,
    };
    let results: Vec<_> = suite
        .file
        .cases
        .iter()
        .map(|c| run_case(p, &suite, c, &opts, &common::Quiet))
        .collect();
    for r in &results {
        // No text of the case is the output's size: not the failure, not
        // the summary, not a line of evidence.
        if let Some(f) = &r.failure {
            let m = &f.message;
            panic!(
                "{}: {:?} failure, a message of {} bytes: {}...",
                r.case,
                f.kind,
                m.len(),
                &m[..m.len().min(200)]
            );
        }
        assert!(
            r.decision.summary.len() < 2048,
            "{}",
            r.decision.summary.len()
        );
        for e in &r.decision.evidence {
            assert!(e.len() < 2048, "{}: evidence of {} bytes", r.case, e.len());
        }
        let out = &r.steps[0].answer.output;
        // The runner keeps at most 64 KiB of a step's output.
        assert!(out.len() <= 64 * 1024, "{}", out.len());
        assert!(out.starts_with("FIRST-LINE\nxxx"), "{}", &out[..64]);
        assert!(
            out.ends_with("yyy\nLAST-LINE\n"),
            "{}",
            &out[out.len() - 64..]
        );
        assert!(out.contains("bytes of output cut here"));
    }
    // As usual: the end was kept, so it is seen; the middle was cut, so
    // it is not.
    assert_eq!(
        results[0].decision.verdict,
        Verdict::Pass,
        "{:?}",
        results[0].decision
    );
    assert_eq!(
        results[1].decision.verdict,
        Verdict::Fail,
        "{:?}",
        results[1].decision
    );
    assert!(
        results[1]
            .decision
            .evidence
            .iter()
            .any(|e| e.contains("does not contain \"MIDDLE-LINE\"")),
        "{:?}",
        results[1].decision.evidence
    );
}
