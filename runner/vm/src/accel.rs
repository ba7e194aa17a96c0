//! Accelerators. Each [`Accel`] owns its QEMU arguments; `auto` uses KVM
//! when /dev/kvm opens read-write AND a guest shows kernel output within a
//! short deadline; otherwise it says why (an [`Event::AccelDecided`]) and
//! uses TCG. The decision is made once per run.
//!
//! `auto`'s verdict is also remembered across commands
//! (`VmConfig::accel_memory`: `<cache>/accel/verdict.json`), keyed on this host as it is now
//! ([`HostKey`]: the boot, the /dev/kvm device, the QEMU binary and
//! version, the CPU model). A remembered verdict is used only while the
//! key is the same, so "KVM works" is never trusted across a reboot; a
//! remembered KVM that fails at boot is probed again once. `--accel kvm`
//! and `--accel tcg` never read or write it.
//!
//! A new accelerator is a variant here: its `qemu_args`, its `probe`, and
//! its place in [`boot`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{FailureKind, Vm, VmConfig, VmFailure};
use coexist_core::events::{Event, EventSink};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    /// What QEMU needs to use this accelerator.
    ///
    /// TCG runs every vCPU on one host thread, in turn (`thread=single`).
    /// With a thread per vCPU (MTTCG, QEMU's default for an x86 guest on an
    /// x86 host), QEMU 7.2 let a vCPU run a stale translation of kernel
    /// text another vCPU had just patched and synchronised (an int3 of
    /// `text_poke_bp`, executed after the sync IPI, where memory already
    /// held the new byte): Debian's 6.12 kernel died with "Oops: int3" in
    /// `irqentry_exit` about once in 240 livepatch transitions, never in
    /// 1,040 with one thread, which was also about three times faster on a
    /// loaded two-core host. See docs/vm.md.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            Accel::Kvm => vec!["-accel".into(), "kvm".into()],
            Accel::Tcg => vec!["-accel".into(), "tcg,thread=single".into()],
        }
    }

    /// Whether this accelerator can be tried here at all (before a boot
    /// tells whether it works).
    pub fn probe(self) -> Result<(), String> {
        match self {
            Accel::Kvm => kvm_device(),
            Accel::Tcg => Ok(()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

/// How long a KVM guest may take to print the kernel banner before KVM is
/// judged unusable here (a working KVM guest prints it well under a second).
pub const KVM_BANNER_DEADLINE: Duration = Duration::from_secs(5);

/// `auto`'s decision in this process, and whether it was remembered (not
/// probed here).
static DECIDED: Mutex<Option<(Accel, bool)>> = Mutex::new(None);

/// The file that remembers the verdict, in the memory dir.
fn memory_file(dir: Option<&Path>) -> Option<PathBuf> {
    dir.map(|d| d.join("verdict.json"))
}

/// What a remembered verdict holds for: this host as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostKey {
    /// /proc/sys/kernel/random/boot_id: a reboot makes a new one.
    pub boot_id: String,
    /// /dev/kvm: its device number and mode, and whether it opens.
    pub kvm: String,
    /// The QEMU binary (path, size, mtime) and its version line.
    pub qemu: String,
    /// The CPU model and its flags (a digest).
    pub cpu: String,
}

impl HostKey {
    pub fn current() -> HostKey {
        use std::os::unix::fs::MetadataExt;
        let kvm = match std::fs::metadata("/dev/kvm") {
            Ok(m) => format!(
                "rdev {:#x} mode {:o} {}",
                m.rdev(),
                m.mode(),
                kvm_device()
                    .map(|_| "opens".to_string())
                    .unwrap_or_else(|e| e)
            ),
            Err(e) => format!("absent ({e})"),
        };
        let qemu_path = std::env::var_os("PATH")
            .and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("qemu-system-x86_64"))
                    .find(|f| f.is_file())
            })
            .and_then(|f| f.canonicalize().ok());
        let qemu = match &qemu_path {
            Some(p) => {
                let m = std::fs::metadata(p).ok();
                format!(
                    "{} {} bytes mtime {}; {}",
                    p.display(),
                    m.as_ref().map(|m| m.len()).unwrap_or(0),
                    m.as_ref()
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    coexist_core::process::first_line(&p.to_string_lossy(), &["--version"])
                )
            }
            None => "not found".into(),
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.split(':').next().map(str::trim) == Some(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let flags = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(field("flags").as_bytes());
            d.iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        HostKey {
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .unwrap_or_default()
                .trim()
                .to_string(),
            kvm,
            qemu,
            cpu: format!("{}; flags {flags}", field("model name")),
        }
    }
}

/// A verdict as remembered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Remembered {
    pub key: HostKey,
    pub accel: Accel,
    /// Why it was decided.
    pub reason: String,
    /// When, in seconds since the epoch.
    pub decided_at: u64,
}

impl Remembered {
    /// "tcg (KVM unusable here (...); falling back to TCG), decided 3m 5s ago".
    pub fn describe(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let age = Duration::from_secs(now.saturating_sub(self.decided_at));
        format!(
            "{} ({}), decided {} ago",
            self.accel,
            self.reason,
            humantime::format_duration(age)
        )
    }
}

/// The verdict remembered in `dir` (the cache's `accel/`) for this host
/// as it is now, if any.
pub fn remembered(dir: &Path) -> Option<Remembered> {
    remembered_in(&memory_file(Some(dir))?, &HostKey::current())
}

/// The verdict in `file`, if it was decided for `key`.
fn remembered_in(file: &std::path::Path, key: &HostKey) -> Option<Remembered> {
    let r: Remembered = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    (&r.key == key).then_some(r)
}

fn remember(dir: Option<&Path>, accel: Accel, reason: &str) {
    if let Some(f) = memory_file(dir) {
        remember_in_file(&f, HostKey::current(), accel, reason);
    }
}

fn remember_in_file(f: &std::path::Path, key: HostKey, accel: Accel, reason: &str) {
    let r = Remembered {
        key,
        accel,
        reason: reason.to_string(),
        decided_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    // Best effort: a verdict that is not kept is probed again next time.
    if let (Some(dir), Ok(json)) = (f.parent(), serde_json::to_vec_pretty(&r)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = coexist_core::cache::write_atomic(f, &json);
    }
}

fn forget(dir: Option<&Path>) {
    if let Some(f) = memory_file(dir) {
        let _ = std::fs::remove_file(f);
    }
}

/// `auto`'s accelerator without booting: decided earlier in this process,
/// or remembered in `memory` for this host (then said once, with its age).
pub fn resolve(memory: Option<&Path>, events: &dyn EventSink) -> Option<Accel> {
    let mut d = DECIDED.lock().unwrap_or_else(|e| e.into_inner());
    resolve_locked(&mut d, memory, events)
}

fn resolve_locked(
    d: &mut Option<(Accel, bool)>,
    memory: Option<&Path>,
    events: &dyn EventSink,
) -> Option<Accel> {
    if let Some((a, _)) = *d {
        return Some(a);
    }
    let r = remembered(memory?)?;
    *d = Some((r.accel, true));
    events.event(&Event::AccelDecided {
        reason: format!("remembered for this host: {}", r.describe()),
    });
    Some(r.accel)
}

/// Checks that /dev/kvm opens read-write.
pub fn kvm_device() -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_| ())
        .map_err(|e| format!("/dev/kvm: {e}"))
}

/// What `auto` decided earlier in this run, if it did.
pub fn decided() -> Option<Accel> {
    DECIDED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|(a, _)| a)
}

/// Keeps `auto`'s decision for the run and the host, and says why.
fn decide(
    d: &mut Option<(Accel, bool)>,
    memory: Option<&Path>,
    events: &dyn EventSink,
    accel: Accel,
    reason: String,
) {
    *d = Some((accel, false));
    remember(memory, accel, &reason);
    events.event(&Event::AccelDecided { reason });
}

/// Boots with the chosen accelerator; `auto` reports its decision once.
pub fn boot(
    choice: AccelChoice,
    mut cfg: VmConfig,
    events: &dyn EventSink,
) -> Result<Vm, VmFailure> {
    match choice {
        AccelChoice::Kvm => {
            cfg.accel = Accel::Kvm;
            Vm::boot(cfg)
        }
        AccelChoice::Tcg => {
            cfg.accel = Accel::Tcg;
            Vm::boot(cfg)
        }
        AccelChoice::Auto => {
            // Concurrent boots wait here while the first one probes.
            let memory = cfg.accel_memory.clone();
            let memory = memory.as_deref();
            let mut d = DECIDED.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = resolve_locked(&mut d, memory, events) {
                let remembered_kvm = a == Accel::Kvm && d.is_some_and(|(_, r)| r);
                if !remembered_kvm {
                    drop(d);
                    cfg.accel = a;
                    return Vm::boot(cfg);
                }
                // A remembered KVM is trusted until it fails at boot; then
                // it is probed again, once.
                cfg.accel = Accel::Kvm;
                match Vm::boot(cfg.clone()) {
                    Err(f)
                        if matches!(
                            f.kind,
                            FailureKind::KvmNoProgress | FailureKind::QemuFailed
                        ) =>
                    {
                        events.event(&Event::Note(format!(
                            "the remembered KVM verdict failed at boot ({}); probing again",
                            first_line(&f.message)
                        )));
                        forget(memory);
                        *d = None;
                    }
                    r => {
                        *d = Some((Accel::Kvm, false));
                        return r;
                    }
                }
            }
            if let Err(why) = Accel::Kvm.probe() {
                decide(
                    &mut d,
                    memory,
                    events,
                    Accel::Tcg,
                    format!("KVM unavailable ({why}); using TCG"),
                );
                drop(d);
                cfg.accel = Accel::Tcg;
                return Vm::boot(cfg);
            }
            let mut probe = cfg.clone();
            probe.accel = Accel::Kvm;
            probe.banner_timeout = Some(KVM_BANNER_DEADLINE);
            match Vm::boot(probe) {
                Ok(vm) => {
                    decide(
                        &mut d,
                        memory,
                        events,
                        Accel::Kvm,
                        "KVM works here; using KVM".into(),
                    );
                    Ok(vm)
                }
                Err(f)
                    if matches!(f.kind, FailureKind::KvmNoProgress | FailureKind::QemuFailed) =>
                {
                    let why = match f.kind {
                        FailureKind::KvmNoProgress => format!(
                            "the guest printed nothing {:.0} s after start under KVM",
                            KVM_BANNER_DEADLINE.as_secs_f64()
                        ),
                        _ => first_line(&f.message),
                    };
                    // KVM is to blame only if the same guest gets further
                    // without it: a QEMU that cannot start at all, or a
                    // guest that prints nothing under TCG either, is not
                    // KVM's failure, and nothing is decided.
                    cfg.accel = Accel::Tcg;
                    match Vm::boot(cfg) {
                        Ok(vm) => {
                            decide(
                                &mut d,
                                memory,
                                events,
                                Accel::Tcg,
                                format!("KVM unusable here ({why}); falling back to TCG"),
                            );
                            Ok(vm)
                        }
                        Err(t) if t.kind == FailureKind::QemuFailed || !t.kernel_ran() => Err(t),
                        Err(t) => {
                            decide(
                                &mut d,
                                memory,
                                events,
                                Accel::Tcg,
                                format!("KVM unusable here ({why}); falling back to TCG"),
                            );
                            Err(t)
                        }
                    }
                }
                // The kernel ran under KVM and failed on its own: KVM works,
                // and the failure is the kernel's to report.
                Err(f) => {
                    decide(
                        &mut d,
                        memory,
                        events,
                        Accel::Kvm,
                        "KVM works here (the kernel ran under it); using KVM".into(),
                    );
                    Err(f)
                }
            }
        }
    }
}

fn first_line(s: &str) -> String {
    let l = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if l.chars().count() > 160 {
        format!("{}...", l.chars().take(160).collect::<String>())
    } else {
        l.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_remembered_only_for_the_same_host() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("accel").join("verdict.json");
        let key = HostKey::current();
        assert!(!key.boot_id.is_empty() && !key.cpu.is_empty(), "{key:?}");
        assert_eq!(key, HostKey::current(), "the key is stable");
        assert!(remembered_in(&f, &key).is_none(), "nothing yet");
        remember_in_file(&f, key.clone(), Accel::Tcg, "KVM unusable here (x)");
        let r = remembered_in(&f, &key).unwrap();
        assert_eq!(r.accel, Accel::Tcg);
        assert!(
            r.describe()
                .starts_with("tcg (KVM unusable here (x)), decided "),
            "{}",
            r.describe()
        );
        // Any change of the host's key: nothing is remembered for it.
        for change in [
            |k: &mut HostKey| k.boot_id.push('x'),
            |k: &mut HostKey| k.kvm.push('x'),
            |k: &mut HostKey| k.qemu.push('x'),
            |k: &mut HostKey| k.cpu.push('x'),
        ] {
            let mut other = key.clone();
            change(&mut other);
            assert!(remembered_in(&f, &other).is_none(), "{other:?}");
        }
        // A damaged file is no verdict.
        std::fs::write(&f, "{").unwrap();
        assert!(remembered_in(&f, &key).is_none());
    }

    #[test]
    fn each_accelerator_owns_its_arguments() {
        assert_eq!(Accel::Kvm.qemu_args(), ["-accel", "kvm"]);
        assert_eq!(Accel::Tcg.qemu_args(), ["-accel", "tcg,thread=single"]);
        assert!(Accel::Tcg.probe().is_ok());
    }

    #[test]
    fn fallback_reason_is_one_short_line() {
        let long = format!("\n  qemu: {}\nmore", "x".repeat(300));
        let l = first_line(&long);
        assert!(l.starts_with("qemu: x"));
        assert!(l.ends_with("..."));
        assert!(!l.contains('\n'));
    }
}
