//! Stage 2: built kernel -> bootable guest.
//!
//! In: a variant's [`crate::build::Manifest`] and the project's
//! `images/` (the agent crate, fixture sources, image recipes). Out: a
//! [`Prepared`] guest: the kernel, its [`Fixtures`] (out-of-tree modules
//! and BPF objects built against that kernel) and an initramfs [`Image`],
//! each cached by content; `Prepared::vm_config` turns it into a
//! [`crate::vm::VmConfig`].
//!
//! - `fixtures`: modules (kbuild against the variant's build dir) and BPF
//!   objects (clang, vmlinux.h from the variant's BTF).
//! - `initramfs`: recipes, the static agent, the cpio archive.
//! - `host`: host programs with the shared libraries they load (as
//!   mkinitramfs' copy_exec does), for the selftests' GNU tools.
//! - `modules` (in `crate::build`, which keys local kernels by them): the
//!   modules a modular kernel's guest loads before its agent greets the
//!   host, in `modules.dep` order.
//! - `prepare`: the three together for one variant.
//! - `inventory`: the fixture names a guest will have, read from the
//!   sources before anything builds (for the suite checks).

pub mod entry;
pub mod fixtures;
pub mod host;
pub mod initramfs;
pub mod inventory;
pub mod prepare;

pub use crate::build::modules;

pub use entry::Entry;
pub use fixtures::Fixtures;
pub use initramfs::Image;
pub use inventory::{project_fixtures, BpfProgram, FixtureNames};
pub use prepare::{prepare, Prepared};
