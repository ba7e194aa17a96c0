//! Accelerator choice. `auto` uses KVM when /dev/kvm opens read-write AND
//! a guest shows kernel output within a short deadline; otherwise it says
//! why in one line and uses TCG. The decision is made once per run.

use std::sync::Mutex;
use std::time::Duration;

use crate::vm::{Accel, FailureKind, Vm, VmConfig, VmFailure};

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

/// Boots with the chosen accelerator; `note` hears the one-line decision.
pub fn boot(choice: AccelChoice, mut cfg: VmConfig, note: &dyn Fn(&str)) -> Result<Vm, VmFailure> {
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
            if let Err(why) = kvm_device() {
                note(&format!("accel: KVM unavailable ({why}); using TCG"));
                *d = Some(Accel::Tcg);
                drop(d);
                cfg.accel = Accel::Tcg;
                return Vm::boot(cfg);
            }
            let mut probe = cfg.clone();
            probe.accel = Accel::Kvm;
            probe.banner_timeout = Some(KVM_BANNER_DEADLINE);
            match Vm::boot(probe) {
                Ok(vm) => {
                    note("accel: KVM works here; using KVM");
                    *d = Some(Accel::Kvm);
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
                    note(&format!(
                        "accel: KVM unusable here ({why}); falling back to TCG"
                    ));
                    *d = Some(Accel::Tcg);
                    drop(d);
                    cfg.accel = Accel::Tcg;
                    Vm::boot(cfg)
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
