//! Fault tests that boot real kernels (the `share-ipmodify` variant, built
//! or taken from the cache) and provoke failures with LKDTM: a WARN during a
//! step, a panic, a hanging step, a kernel that cannot reach init, the
//! accelerator probe, and the runner dying. After each, no QEMU is left.

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

fn runner_dies_and_takes_qemu_along(signal: nix::sys::signal::Signal) {
    // Build/cache first so the runner below only boots.
    let _ = prepared();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args([
            "run",
            "--variant",
            "share-ipmodify",
            "--accel",
            "tcg",
            "--timeout",
            "120",
            "--root",
        ])
        .arg(&root)
        .args(["--", "sleep", "100"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
