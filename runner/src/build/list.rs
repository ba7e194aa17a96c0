//! `kernel list`: one typed row per variant, computed without building.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::kbuild::Builder;
use super::manifest::Manifest;
use super::variant::{Source, Variant};
use super::{local, prebuilt};

/// A variant, its cache key, and whether (and where) it is built.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KernelRow {
    pub variant: String,
    pub description: String,
    /// The kernel's cache key (None when it cannot be planned).
    pub key: Option<String>,
    pub cached: bool,
    /// The source as identified ("linux-source-6.1.tar.xz sha256 ...", "git ...").
    pub source: Option<String>,
    pub series: Option<String>,
    pub fragments: Vec<String>,
    pub entry: Option<PathBuf>,
    pub tree: Option<PathBuf>,
    pub build_dir: Option<PathBuf>,
    /// The published manifest, when built.
    pub manifest: Option<Manifest>,
    /// A prebuilt kernel: "Debian <package> <version>, kernel <release>"
    /// (the release from the package name until it is fetched; "(the
    /// newest ABI of the 6.1 line apt knows)" when it tracks one); a local
    /// kernel: "local <image>, kernel <release>".
    pub prebuilt: Option<String>,
    /// Why the variant cannot be planned (with `--kernel-tree`, a variant
    /// with a patch series).
    pub error: Option<String>,
}

/// Rows for `variants`. With `tolerate_errors` (a kernel tree), a variant
/// that cannot be planned is a row with its error instead of a failure.
pub fn rows(
    builder: &Builder,
    variants: &[Variant],
    tolerate_errors: bool,
) -> Result<Vec<KernelRow>> {
    let mut out = Vec::new();
    for v in variants {
        let base = KernelRow {
            variant: v.name.clone(),
            description: v.description.clone(),
            series: v.series.as_ref().map(|s| s.name.clone()),
            fragments: v.fragments.iter().map(|f| f.name.clone()).collect(),
            ..Default::default()
        };
        let plan = match builder.plan(v) {
            Ok(p) => p,
            Err(e) if tolerate_errors => {
                out.push(KernelRow {
                    error: Some(format!("{e:#}")),
                    ..base
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        // A damaged entry lists as not built: the next build replaces it.
        let manifest = plan.cached().unwrap_or(None);
        let not_built_here = match &v.source {
            Source::Prebuilt(d) => Some(prebuilt::release_from_package(&d.debian_package)),
            // Its image's header names it (the plan checked it).
            Source::Local(d) => Some(local::check(d).ok().map(|f| f.release)),
            Source::Tarball(_) | Source::Tree(_) => None,
        };
        if let Some(release) = not_built_here {
            let release = match &manifest {
                Some(m) => Some(m.kernel_release.clone()),
                None => release,
            };
            out.push(KernelRow {
                key: Some(plan.key.clone()),
                cached: manifest.is_some(),
                source: Some(plan.source.describe.clone()),
                entry: Some(plan.entry_dir.clone()),
                prebuilt: Some(format!(
                    "{}, kernel {}{}",
                    plan.source.origin.clone().unwrap_or_default(),
                    release.as_deref().unwrap_or("unknown until fetched"),
                    match &v.source {
                        Source::Prebuilt(d) => d
                            .track
                            .as_ref()
                            .map(|l| format!(" (the newest ABI of the {l} line apt knows)"))
                            .unwrap_or_default(),
                        _ => String::new(),
                    }
                )),
                manifest,
                ..base
            });
            continue;
        }
        out.push(KernelRow {
            key: Some(plan.key.clone()),
            cached: manifest.is_some(),
            source: Some(plan.source.describe.clone()),
            entry: Some(plan.entry_dir.clone()),
            tree: Some(plan.tree_dir.clone()),
            build_dir: Some(plan.build_dir.clone()),
            manifest,
            ..base
        });
    }
    Ok(out)
}
