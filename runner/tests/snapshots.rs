//! Snapshot-restored guests on a real kernel (`share-ipmodify`): a restored
//! guest answers steps, has the host's clock and its own random numbers; a
//! WARN during a step is attributed to that step; a panic ends that guest
//! only; a damaged snapshot is made again; and the same under KVM where
//! KVM works. No QEMU is left after any of them.

mod common;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use coexist::cache::Cache;
use coexist::events::Collect;
use coexist::image::Prepared;
use coexist::vm::snapshot::{self, Ident, Snapshot, Snapshots};
use coexist::vm::{accel, AccelChoice, FailureKind, SplatKind, StepOutcome, Vm, VmConfig};
use coexist_proto::Step;
use common::assert_group_gone;

const DIRECT: &str = "/sys/kernel/debug/provoke-crash/DIRECT";

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| common::prepare("share-ipmodify"))
}

fn ident(p: &Prepared) -> Ident {
    Ident {
        kernel_key: p.manifest.key.clone(),
        image_key: p.image.key.clone(),
        qemu_version: coexist::record::Host::current().qemu,
    }
}

/// One snapshot for this test binary, in a cache of its own.
fn snap() -> &'static (tempfile::TempDir, Snapshot) {
    static S: OnceLock<(tempfile::TempDir, Snapshot)> = OnceLock::new();
    S.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path().join("cache")).unwrap();
        let p = prepared();
        let cfg = p.vm_config(d.path().join("unused.log"));
        let s = snapshot::make(&cache, &cfg, AccelChoice::Tcg, &ident(p), &common::Quiet)
            .unwrap_or_else(|e| panic!("{e}"));
        (d, s)
    })
}

fn restore(dir: &Path, name: &str) -> Vm {
    let (_, s) = snap();
    let mut cfg = prepared().vm_config(dir.join(format!("{name}.console.log")));
    cfg.accel = s.accel;
    cfg.incoming = Some(s.state());
    Vm::restore(cfg, &s.origin(), &s.boot_id).unwrap_or_else(|f| panic!("restore: {f}"))
}

fn ok(vm: &mut Vm, step: Step) -> StepOutcome {
    let out = vm
        .run(step, Duration::from_secs(30))
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(out.answer.ok, "{:?}", out.answer);
    out
}

fn sh(vm: &mut Vm, cmd: &str) -> String {
    ok(
        vm,
        Step::Exec {
            argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
        },
    )
    .answer
    .output
}

#[test]
fn a_restored_guest_answers_steps_with_the_hosts_clock_and_its_own_randomness() {
    let d = tempfile::tempdir().unwrap();
    let (_, s) = snap();
    let mut a = restore(d.path(), "a");
    let mut b = restore(d.path(), "b");
    assert!(a.restored() && b.restored());
    assert!(a.ready.boot_s < 5.0, "{}", a.ready.boot_s);
    assert_eq!(a.ready.kernel_release, s.kernel_release);
    // Steps work: a livepatch loads and shows.
    ok(
        &mut a,
        Step::LivepatchLoad {
            module: "livepatch-sample".into(),
            timeout_ms: None,
        },
    );
    let out = ok(
        &mut a,
        Step::Trigger {
            target: "cmdline_proc_show".into(),
        },
    );
    assert_eq!(out.answer.output, "this has been live patched\n");
    // The wall clock is the host's, not the snapshot's.
    let guest: u64 = sh(&mut a, "date +%s").trim().parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(guest.abs_diff(host) <= 5, "guest {guest}, host {host}");
    // Two guests from one snapshot draw different random numbers.
    let ra = sh(&mut a, "head -c 16 /dev/urandom | od -An -tx1");
    let rb = sh(&mut b, "head -c 16 /dev/urandom | od -An -tx1");
    assert_ne!(ra, rb, "the same random numbers in two restored guests");
    // The console log says where the guest came from.
    let log = std::fs::read_to_string(a.console_log()).unwrap();
    assert!(
        log.starts_with("[coexist: restored from snapshot "),
        "{log}"
    );
    let (pa, pb) = (a.pid(), b.pid());
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    assert_group_gone(pa);
    assert_group_gone(pb);
}

#[test]
fn a_warn_in_a_restored_guest_is_attributed_to_its_step() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = restore(d.path(), "warn");
    let before = ok(
        &mut vm,
        Step::Read {
            path: "/proc/cmdline".into(),
        },
    );
    assert!(before.splats.is_empty());
    let out = vm
        .run(
            Step::Write {
                path: DIRECT.into(),
                data: "WARNING".into(),
                create: false,
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(out.splats.len(), 1, "{:#?}", out.splats);
    assert_eq!(out.splats[0].kind, SplatKind::Warning);
    assert_eq!(out.splats[0].step, Some(out.id));
    assert!(vm.unattributed().is_empty(), "{:#?}", vm.unattributed());
    let pid = vm.pid();
    vm.shutdown().unwrap();
    assert_group_gone(pid);
}

#[test]
fn a_panic_in_a_restored_guest_ends_that_guest_only() {
    let d = tempfile::tempdir().unwrap();
    let mut doomed = restore(d.path(), "doomed");
    let mut other = restore(d.path(), "other");
    let pid = doomed.pid();
    let f = doomed
        .run(
            Step::Write {
                path: DIRECT.into(),
                data: "PANIC".into(),
                create: false,
            },
            Duration::from_secs(30),
        )
        .expect_err("the panic ends the guest");
    assert_eq!(f.kind, FailureKind::Panic, "{f}");
    assert!(f.panic.is_some());
    assert_group_gone(pid);
    // The other guest from the same snapshot goes on.
    let out = ok(
        &mut other,
        Step::Trigger {
            target: "cmdline_proc_show".into(),
        },
    );
    assert!(out.answer.output.contains("rdinit=/init"));
    let pid = other.pid();
    other.shutdown().unwrap();
    assert_group_gone(pid);
}

#[test]
fn a_damaged_snapshot_is_made_again_once() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(d.path().join("cache")).unwrap();
    let p = prepared();
    let base = p.vm_config(d.path().join("base.log"));
    let events = Collect::default();
    let set = Snapshots::new(&cache);
    set.prepare("share-ipmodify", &base, AccelChoice::Tcg, ident(p), &events)
        .unwrap();
    let first = set.get("share-ipmodify").unwrap();
    // Cut the state in half: QEMU cannot load it.
    let state = first.state();
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let cfg = p.vm_config(d.path().join("job.log"));
    let mut vm = set
        .start("share-ipmodify", cfg, AccelChoice::Tcg, &events)
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(vm.restored(), "restored from the snapshot made again");
    ok(
        &mut vm,
        Step::Trigger {
            target: "cmdline_proc_show".into(),
        },
    );
    let notes = events.notes();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("did not restore") && n.contains("making it again")),
        "{notes:?}"
    );
    let again = set.get("share-ipmodify").unwrap();
    assert_eq!(
        std::fs::metadata(again.state()).unwrap().len(),
        again.state_bytes
    );
    assert!(set.off().is_empty(), "{:?}", set.off());
    let pid = vm.pid();
    vm.shutdown().unwrap();
    assert_group_gone(pid);
}

/// KVM works here when a guest under it gets to READY.
fn kvm_works(cfg: &VmConfig) -> Result<(), String> {
    accel::kvm_device()?;
    let mut c = cfg.clone();
    c.banner_timeout = Some(accel::KVM_BANNER_DEADLINE);
    match accel::boot(AccelChoice::Kvm, c, &common::Quiet) {
        Ok(vm) => vm.shutdown().map_err(|f| f.to_string()),
        Err(f) => Err(f.message),
    }
}

/// Snapshots are per accelerator; under KVM the same save and restore
/// work. Where KVM does not work (this project's development machine), the
/// test says so and checks that no KVM snapshot can be mistaken for a TCG
/// one.
#[test]
fn snapshots_under_kvm_where_kvm_works() {
    let d = tempfile::tempdir().unwrap();
    let cache = Cache::open(d.path().join("cache")).unwrap();
    let p = prepared();
    let cfg = p.vm_config(d.path().join("kvm.log"));
    let id = ident(p);
    assert_ne!(
        snapshot::key(&cfg, coexist::vm::Accel::Kvm, &id),
        snapshot::key(&cfg, coexist::vm::Accel::Tcg, &id)
    );
    if let Err(why) = kvm_works(&cfg) {
        eprintln!("KVM does not work here ({why}): the KVM snapshot path runs on KVM hosts");
        return;
    }
    let s = snapshot::make(&cache, &cfg, AccelChoice::Kvm, &id, &common::Quiet).unwrap();
    assert_eq!(s.accel, coexist::vm::Accel::Kvm);
    let mut c = p.vm_config(d.path().join("kvm-job.log"));
    c.accel = s.accel;
    c.incoming = Some(s.state());
    let mut vm = Vm::restore(c, &s.origin(), &s.boot_id).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(vm.ready.accel, coexist::vm::Accel::Kvm);
    ok(
        &mut vm,
        Step::Trigger {
            target: "cmdline_proc_show".into(),
        },
    );
    let pid = vm.pid();
    vm.shutdown().unwrap();
    assert_group_gone(pid);
}

/// The developer's loop: `run` restores the variant's READY snapshot
/// (`--fresh-boot` boots), and `--accel auto`'s verdict is remembered for
/// this host, so the second command neither probes nor boots.
#[test]
fn run_restores_and_auto_is_remembered_across_commands() {
    let _ = prepared();
    let root = common::root();
    let root = root.to_str().unwrap();
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let run = |extra: &[&str]| {
        let mut args = vec!["--root", root, "run", "--variant", "share-ipmodify"];
        args.extend_from_slice(extra);
        args.extend(["--", "cat", "/proc/sys/kernel/random/boot_id"]);
        common::coexist(&args)
    };
    let first = run(&[]);
    assert!(first.status.success());
    let e = stderr(&first);
    assert!(e.contains("\naccel: "), "the accelerator line: {e}");
    // The verdict is now remembered for this host.
    let setup = common::coexist(&["--root", root, "setup"]);
    let s = stderr(&setup);
    assert!(s.contains("accel: remembered for this host: "), "{s}");
    let again = run(&[]);
    assert!(again.status.success());
    let e = stderr(&again);
    assert!(e.contains("accel: remembered for this host: "), "{e}");
    assert!(e.contains("restored from the READY snapshot"), "{e}");
    // The restored guest is the snapshot's boot (its boot id), the
    // first command's too.
    assert_eq!(first.stdout, again.stdout);
    let fresh = run(&["--fresh-boot"]);
    assert!(fresh.status.success());
    let e = stderr(&fresh);
    assert!(e.contains("s from QEMU start"), "{e}");
    assert!(!e.contains("restored from"), "{e}");
}
