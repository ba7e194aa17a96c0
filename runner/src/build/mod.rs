//! Stage 1: variant -> built kernel.
//!
//! In: `kernel-config/variants.yaml` (each variant: a source, a patch
//! series from `patches/`, config fragments from `kernel-config/`), or a
//! developer's kernel git tree. Out: a [`Manifest`] per variant, naming the
//! published artifacts (`vmlinux` with BTF, `bzImage`, `System.map`,
//! `.config`, `lib/modules/<release>`) in the content-addressed cache.
//!
//! - `variant`: the variants file and the project layout ([`Project`]).
//! - `kconfig`: fragments, conflicts, validation of the final `.config`.
//! - `series`: quilt-style patch series, applied with `patch --fuzz=0`.
//! - `source`: Debian's source tarball or a kernel git tree; host tools.
//! - `cache`: keys, locks, atomic publication.
//! - `kbuild`: the [`Builder`]: plan (keys, paths), tree, configure, make,
//!   publish; progress as [`crate::events::Event`]s.
//! - `prebuilt`: a distribution's kernel package instead of a build:
//!   resolved with apt, downloaded, unpacked, `depmod`, `vmlinux` taken out
//!   of `vmlinuz`; a [`Manifest`] like a build's.
//! - `local`: a user's own kernel (an image, its modules dir, optionally
//!   its headers) instead of a build: checked, keyed by the content used,
//!   `vmlinux` taken out of the image; a [`Manifest`] like a build's.
//! - `modules`: the closure of module names over a kernel's
//!   `modules.dep` (what a modular kernel's image carries).
//! - `list`: one typed row per variant for `kernel list`.

pub mod area;
pub mod caps;
pub mod kbuild;
pub mod kconfig;
pub mod kinds;
pub mod list;
pub mod local;
pub mod manifest;
pub mod modules;
pub mod prebuilt;
pub mod series;
pub mod source;
pub mod variant;

pub use kbuild::{BuildDirStale, Builder, KernelDoesNotBuild, Plan};
pub use list::KernelRow;
pub use manifest::{Manifest, PrebuiltInfo};
pub use variant::{Coexistence, Project, Variant};
