//! How a VM ended badly: always ERROR in reports (a panic is the kernel's
//! FAIL, decided by the verdicts), never silently.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::splat::Splat;
use coexist_core::text::shown;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// QEMU could not start, or exited before the guest booted.
    QemuFailed,
    /// No kernel output under KVM within the banner deadline.
    KvmNoProgress,
    /// The guest did not become READY (boot deadline, or it died booting).
    BootFailed,
    /// The kernel panicked (the VM ends at once: panic=-1, -no-reboot).
    Panic,
    /// No console output and no agent message for the stall deadline.
    Stall,
    /// A step did not answer within its timeout.
    StepTimeout,
    /// QEMU exited while a step was running, without a panic.
    Died,
    /// The agent answered something that is not the protocol.
    Protocol,
    /// A guest restored from a snapshot did not come back as that guest
    /// (QEMU could not load the state, no hello, another boot id).
    RestoreFailed,
}

/// Whose fault a failure is: decided here once, for every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// The host: QEMU could not start, or exited before the guest booted.
    Host,
    /// The harness: the agent broke the protocol, or a saved guest did not
    /// come back as that guest.
    Harness,
    /// The kernel under test never came up (boot deadline, no progress
    /// under KVM): nothing is known of what the job meant to check.
    Boot,
    /// The kernel under test, running steps: it panicked, stalled, did not
    /// answer a step, or died.
    Kernel,
}

impl FailureKind {
    /// Whose fault it is. `suite` reports Host and Harness as the run's
    /// trouble (exit 2), `bisect` skips a commit on Host and Boot and
    /// aborts on Harness, `explore` gives no verdict on Host and Harness
    /// and counts Boot and Kernel against `guest_alive` (for a failure while
    /// steps run; a sequence whose guest cannot be had at all gets no
    /// verdict).
    pub fn blame(&self) -> Blame {
        match self {
            FailureKind::QemuFailed => Blame::Host,
            FailureKind::Protocol | FailureKind::RestoreFailed => Blame::Harness,
            FailureKind::KvmNoProgress | FailureKind::BootFailed => Blame::Boot,
            FailureKind::Panic
            | FailureKind::Stall
            | FailureKind::StepTimeout
            | FailureKind::Died => Blame::Kernel,
        }
    }

    /// Failures of the host or the harness, not of the kernel under test.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self.blame(), Blame::Host | Blame::Harness)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmFailure {
    pub kind: FailureKind,
    pub message: String,
    /// The step running when it happened.
    pub step: Option<u64>,
    pub elapsed_s: f64,
    /// The panic report, for panics.
    pub panic: Option<Box<Splat>>,
    pub last_console: Vec<String>,
    pub console_log: PathBuf,
    /// QEMU's pid (and process group), when it was started.
    pub qemu_pid: Option<u32>,
    /// The kernel printed its banner before the failure.
    #[serde(default)]
    pub saw_banner: bool,
}

impl VmFailure {
    /// Whether the kernel got as far as printing its banner.
    pub fn kernel_ran(&self) -> bool {
        self.saw_banner
    }
}

impl fmt::Display for VmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {} (after {:.1}s",
            self.kind,
            shown(&self.message),
            self.elapsed_s
        )?;
        if let Some(s) = self.step {
            write!(f, ", step {s}")?;
        }
        writeln!(f, "; console log {})", self.console_log.display())?;
        if let Some(p) = &self.panic {
            writeln!(f, "panic report:")?;
            for l in &p.text {
                writeln!(f, "  {}", shown(l))?;
            }
        } else if !self.last_console.is_empty() {
            writeln!(f, "last console lines:")?;
            for l in &self.last_console {
                writeln!(f, "  {}", shown(l))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VmFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_sorts_every_kind_once() {
        use FailureKind as K;
        let all = [
            K::QemuFailed,
            K::KvmNoProgress,
            K::BootFailed,
            K::Panic,
            K::Stall,
            K::StepTimeout,
            K::Died,
            K::Protocol,
            K::RestoreFailed,
        ];
        let of = |b: Blame| -> Vec<FailureKind> {
            all.iter().filter(|k| k.blame() == b).cloned().collect()
        };
        assert_eq!(of(Blame::Host), [K::QemuFailed]);
        assert_eq!(of(Blame::Harness), [K::Protocol, K::RestoreFailed]);
        assert_eq!(of(Blame::Boot), [K::KvmNoProgress, K::BootFailed]);
        assert_eq!(
            of(Blame::Kernel),
            [K::Panic, K::Stall, K::StepTimeout, K::Died]
        );
        // The run's own trouble (exit 2) is the host's and the harness's.
        let infra: Vec<_> = all.iter().filter(|k| k.is_infrastructure()).collect();
        assert_eq!(infra, [&K::QemuFailed, &K::Protocol, &K::RestoreFailed]);
    }
}
