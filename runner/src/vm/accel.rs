//! Accelerators. Each [`Accel`] owns its QEMU arguments; `auto` uses KVM
//! when /dev/kvm opens read-write AND a guest shows kernel output within a
//! short deadline; otherwise it says why (an [`Event::AccelDecided`]) and
//! uses TCG. The decision is made once per run.
//!
//! A new accelerator is a variant here: its `qemu_args`, its `probe`, and
//! its place in [`boot`].

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{FailureKind, Vm, VmConfig, VmFailure};
use crate::events::{Event, EventSink};

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
    pub fn qemu_args(self) -> Vec<String> {
        vec!["-accel".into(), self.to_string()]
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

static DECIDED: Mutex<Option<Accel>> = Mutex::new(None);

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
    *DECIDED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remembers `auto`'s decision for the run and says why.
fn decide(d: &mut Option<Accel>, events: &dyn EventSink, accel: Accel, reason: String) {
    *d = Some(accel);
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
            let mut d = DECIDED.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = *d {
                drop(d);
                cfg.accel = a;
                return Vm::boot(cfg);
            }
            if let Err(why) = Accel::Kvm.probe() {
                decide(
                    &mut d,
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
                    *d = Some(Accel::Kvm);
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
    fn each_accelerator_owns_its_arguments() {
        assert_eq!(Accel::Kvm.qemu_args(), ["-accel", "kvm"]);
        assert_eq!(Accel::Tcg.qemu_args(), ["-accel", "tcg"]);
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
