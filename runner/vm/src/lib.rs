//! Stage 3: image -> running guest -> step outcomes.
//!
//! In: a [`VmConfig`] (kernel, initramfs, machine size, accelerator, command
//! line, deadlines, splat allowlist) and agent [`coexist_proto::Step`]s.
//! Out: a [`Vm`] that is READY ([`ReadyInfo`]), one [`StepOutcome`] per
//! step (the agent's answer plus the splats the console attributed to it),
//! or a typed [`VmFailure`].
//!
//! - `qemu`: the QEMU command line, built by pure functions from the
//!   config, and the QEMU process, killed with its process group on drop.
//! - `accel`: each accelerator's QEMU arguments and the `auto` probe.
//! - `console`: the console log file, its tail, the splat detector and the
//!   banner / panic state.
//! - `splat`: recognising kernel reports in console lines.
//! - `lines`: the console and the agent socket as one channel of capped
//!   lines, read by a thread each.
//! - `link`: a started guest's QEMU, console and agent channel, read under
//!   the watchdogs (boot deadline, stall, step timeout, panic) until READY
//!   or a step's answer; the end of its streams handled in one place.
//! - `machine`: [`Vm`]: booting to READY, restoring a snapshot and its
//!   handshake, steps, saving a READY guest, power-off.
//! - `qmp`: the QEMU monitor protocol, to save a guest's state.
//! - `snapshot`: READY guests saved once per (kernel, image, machine,
//!   accelerator, QEMU) and restored for each job.
//!
//! Every QEMU runs in a process group registered with [`coexist_core::teardown`],
//! so it never outlives the runner.

pub mod accel;
pub mod console;
mod failure;
mod lines;
mod link;
mod machine;
pub mod qemu;
pub mod qmp;
pub mod snapshot;
pub mod splat;

pub use accel::{Accel, AccelChoice};
pub use failure::{Blame, FailureKind, VmFailure};
pub use link::{ReadyInfo, StepOutcome};
pub use machine::Vm;
pub use qemu::VmConfig;
pub use splat::{Splat, SplatKind};
