//! The guest executor: the one way every command gets a guest and runs
//! steps in it (`suite`, `explore`, `run`, `shell`, `bisect`, and what
//! comes next).
//!
//! In: a prepared variant ([`Prepared`]), the [`Machine`] (accelerator,
//! memory, CPUs), the run's READY [`Snapshots`] (or none: fresh boots) and
//! what one job sets itself ([`Job`]: its console log, its splat
//! allowlist, a command line). Out: a READY [`Vm`] from [`start`], or the
//! [`VmFailure`] that kept it from one.
//!
//! - this module: [`Machine`], [`start`], the snapshot of a variant
//!   ([`Machine::prepare_snapshot`]).
//! - `coverage`: a coverage twin's counters zeroed and read back;
//!   `gcov`: those counts read by gcov.
//! - `steps`: the one step loop ([`steps::run_steps`]) with its handle
//!   table, which suite cases and explore sequences both run.

pub mod coverage;
pub mod gcov;
pub mod steps;

use std::path::PathBuf;
use std::time::Duration;

use crate::cache::Cache;
use crate::events::{self, EventSink};
use crate::image::Prepared;
use crate::record::Host;
use crate::vm::snapshot::{self, Snapshots};
use crate::vm::{accel, AccelChoice, Vm, VmConfig, VmFailure};

pub use steps::{run_steps, Answered, Ended, Flow, HandleKey, Planned};

/// The guest machine every job of a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Machine {
    pub accel: AccelChoice,
    pub memory_mb: u32,
    pub cpus: u32,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            accel: AccelChoice::Auto,
            memory_mb: 512,
            cpus: 2,
        }
    }
}

/// What one job sets on its guest, beside the machine.
#[derive(Clone, Debug, Default)]
pub struct Job {
    pub console_log: PathBuf,
    /// Regexes of splat titles to set aside.
    pub allow_splats: Vec<String>,
    /// Appended to the kernel command line (a fresh boot only).
    pub append: String,
    /// Replaces the kernel command line (a fresh boot only).
    pub cmdline: Option<String>,
    /// From QEMU start to READY; None: the VM's default.
    pub boot_timeout: Option<Duration>,
}

impl Job {
    /// A job that sets only its console log.
    pub fn logged(console_log: PathBuf) -> Job {
        Job {
            console_log,
            ..Job::default()
        }
    }
}

impl Machine {
    /// The VM configuration of `job` on this machine.
    pub fn config(&self, p: &Prepared, job: Job) -> VmConfig {
        let mut cfg = p.vm_config(job.console_log);
        cfg.memory_mb = self.memory_mb;
        cfg.cpus = self.cpus;
        cfg.allow = job.allow_splats;
        cfg.append = job.append;
        cfg.cmdline = job.cmdline;
        if let Some(t) = job.boot_timeout {
            cfg.boot_timeout = t;
        }
        cfg
    }

    /// Makes (or finds) the READY snapshot of prepared variant `name` on
    /// this machine in `snaps`, booting it with `job` (its console log).
    /// Err: why there is none (its jobs then boot).
    pub fn prepare_snapshot(
        &self,
        snaps: &Snapshots,
        (name, p): (&str, &Prepared),
        job: Job,
        qemu_version: &str,
        events: &dyn EventSink,
    ) -> Result<(), String> {
        let base = self.config(p, job);
        snaps.prepare(name, &base, self.accel, ident(p, qemu_version), events)
    }
}

/// Where a variant's snapshot is valid: its kernel, its image, the QEMU
/// that saved it.
pub fn ident(p: &Prepared, qemu_version: &str) -> snapshot::Ident {
    snapshot::Ident {
        kernel_key: p.manifest.key.clone(),
        image_key: p.image.key.clone(),
        qemu_version: qemu_version.to_string(),
    }
}

/// The one guest of a command that starts one (`run`, `shell`): restored
/// from the variant's READY snapshot, made first if the cache has none
/// (as `suite` does), or booted with `fresh_boot` or when no snapshot can
/// be had.
pub fn start_one(
    p: &Prepared,
    machine: &Machine,
    cache: &Cache,
    job: Job,
    fresh_boot: bool,
    events: &dyn EventSink,
) -> Result<Vm, VmFailure> {
    if fresh_boot {
        return start(p, machine, None, job, events);
    }
    let snapshots = Snapshots::new(cache);
    let qemu = Host::current().qemu;
    if let Err(e) =
        machine.prepare_snapshot(&snapshots, (&p.variant, p), job.clone(), &qemu, events)
    {
        events::note(
            events,
            format!("no snapshot for {} ({e}); booting", p.variant),
        );
    }
    start(p, machine, Some(&snapshots), job, events)
}

/// A READY guest of `p` for `job`: restored from the variant's snapshot
/// in `snapshots` when it has one (booted when it does not restore), else
/// booted on `machine`'s accelerator.
pub fn start(
    p: &Prepared,
    machine: &Machine,
    snapshots: Option<&Snapshots>,
    job: Job,
    events: &dyn EventSink,
) -> Result<Vm, VmFailure> {
    if let Some(d) = job.console_log.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let cfg = machine.config(p, job);
    match snapshots {
        Some(s) => s.start(&p.variant, cfg, machine.accel, events),
        None => accel::boot(machine.accel, cfg, events),
    }
}
