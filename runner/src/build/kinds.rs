//! The one place that knows every kind of kernel source: built from a
//! declared tarball (`source.rs`) or a developer's git tree, a
//! distribution's prebuilt package (`prebuilt.rs`), a user's own kernel
//! (`local.rs`). Every stage outside build/ asks a [`Source`] through the
//! methods here and never matches on its kind; a new kind is one more arm
//! in each `match` below (the compiler lists them) and its own file.

use std::path::Path;

use anyhow::Result;

use crate::build::source::{self, SourceId, Sources};
use crate::build::variant::{Project, Source, SourceDecl, Variant};
use crate::build::{local, prebuilt};
use crate::cache::Cache;
use crate::events::EventSink;

/// Where a variant's kernel selftests come from.
pub enum SelftestTree<'a> {
    /// A tree on disk (a developer's git tree).
    Dir(&'a Path),
    /// A declared source's tarball.
    Declared(&'a SourceDecl),
    /// None (a kernel not built here that names no source).
    None,
}

impl Source {
    /// What the source is, in a few words: `debian-6.1`, `tree <path>`,
    /// `prebuilt <package>` (`prebuilt <package> (newest of 6.1)` when it
    /// tracks a line), `local <image>`.
    pub fn name(&self) -> String {
        match self {
            Source::Tarball(d) => d.name.clone(),
            Source::Tree(p) => format!("tree {}", p.display()),
            Source::Prebuilt(p) => match &p.track {
                Some(line) if p.debian_package.is_empty() => {
                    format!("prebuilt (newest of {line}: none)")
                }
                Some(line) => format!("prebuilt {} (newest of {line})", p.debian_package),
                None => format!("prebuilt {}", p.debian_package),
            },
            Source::Local(l) => format!("local {}", l.image.display()),
        }
    }

    /// Identifies the source by content without building anything, once
    /// per run (`sources` memoises it).
    pub fn identify(
        &self,
        cache: &Cache,
        sources: &Sources,
        ev: &dyn EventSink,
    ) -> Result<SourceId> {
        match self {
            Source::Tarball(d) => sources.tarball(cache, d, ev),
            Source::Tree(t) => {
                sources.memo(format!("tree:{}", t.display()), || source::identify_tree(t))
            }
            Source::Prebuilt(p) => sources.memo(format!("prebuilt:{}", p.debian_package), || {
                prebuilt::identify(p)
            }),
            Source::Local(l) => sources.memo(
                format!(
                    "local:{}:{}:{}",
                    l.image.display(),
                    l.modules.display(),
                    l.headers.as_deref().unwrap_or(Path::new("")).display()
                ),
                || local::identify(l),
            ),
        }
    }

    /// Whether the kernel is compiled here (from a tarball or a tree), so
    /// it can be compiled again differently (a mutant, a coverage twin).
    pub fn builds_here(&self) -> bool {
        match self {
            Source::Tarball(_) | Source::Tree(_) => true,
            Source::Prebuilt(_) | Source::Local(_) => false,
        }
    }

    /// Where its kernel selftests come from.
    pub fn selftest_tree(&self) -> SelftestTree<'_> {
        match self {
            Source::Tree(t) => SelftestTree::Dir(t),
            Source::Tarball(d) => SelftestTree::Declared(d),
            Source::Prebuilt(crate::build::variant::PrebuiltDecl { source_decl, .. })
            | Source::Local(crate::build::variant::LocalDecl { source_decl, .. }) => {
                match source_decl {
                    Some(d) => SelftestTree::Declared(d),
                    None => SelftestTree::None,
                }
            }
        }
    }

    /// The Debian headers package out-of-tree modules build against, when
    /// the kernel is a package's.
    pub fn headers_package(&self) -> Option<&str> {
        match self {
            Source::Prebuilt(d) => d.headers.as_deref(),
            Source::Tarball(_) | Source::Tree(_) | Source::Local(_) => None,
        }
    }

    /// What can be checked before anything builds or boots: a package apt
    /// knows, a local kernel's files. An error names the declaration.
    pub fn check(&self) -> Result<()> {
        match self {
            Source::Prebuilt(d) => {
                prebuilt::resolve(d)?;
                prebuilt::resolve_headers(d)?;
            }
            Source::Local(d) => {
                local::check(d)?;
            }
            Source::Tarball(_) | Source::Tree(_) => {}
        }
        Ok(())
    }

    /// The Debian packages apt must know for this source (not installed:
    /// fetched), beside the headers.
    fn apt_packages(&self) -> Vec<String> {
        match self {
            Source::Prebuilt(d) => std::iter::once(d.debian_package.clone())
                .chain(d.headers.clone())
                .collect(),
            Source::Tarball(_) | Source::Tree(_) | Source::Local(_) => Vec::new(),
        }
    }
}

/// Checks every variant's source (see [`Source::check`]), asking apt about
/// all their packages in one call first: what a command does before it
/// builds or boots anything.
pub fn check_all<'a>(variants: impl IntoIterator<Item = &'a Variant>) -> Result<()> {
    let variants: Vec<&Variant> = variants.into_iter().collect();
    let pkgs: Vec<String> = variants
        .iter()
        .flat_map(|v| v.source.apt_packages())
        .collect();
    prebuilt::resolve_packages(&pkgs)?;
    for v in variants {
        v.source.check()?;
    }
    Ok(())
}

impl Project {
    /// The project's variants (`kernel-config/variants.yaml`), a `track:`
    /// pinned to its line's newest ABI (`prebuilt::pin_track`, once per
    /// run).
    pub fn load_variants(&self, kernel_tree: Option<&Path>) -> Result<Vec<Variant>> {
        let mut variants = self.parse_variants_file(kernel_tree)?;
        for v in &mut variants {
            if let Source::Prebuilt(p) = &mut v.source {
                prebuilt::pin_track(p);
            }
        }
        Ok(variants)
    }
}
