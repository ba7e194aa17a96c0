//! A variant -> a bootable guest: kernel build (cached), fixtures and
//! image (cached), and the VM configuration for it.

use std::path::PathBuf;

use anyhow::Result;

use super::fixtures::{self, Fixtures};
use super::initramfs::{self, Image};
use crate::build::{source, BuildDirStale, Builder, Manifest, Project, Variant};
use crate::cache::Cache;
use crate::events::{Event, EventSink};
use crate::vm::VmConfig;

/// The default image recipe (`images/base.yaml`).
pub const DEFAULT_RECIPE: &str = "base";

#[derive(Clone, Debug)]
pub struct Prepared {
    pub variant: String,
    /// The name of the variant's source (`debian-6.12`; for a kernel tree
    /// `tree <path>`): what the reports group variants by.
    pub source_name: String,
    pub manifest: Manifest,
    pub fixtures: Fixtures,
    pub image: Image,
    /// Time to get the kernel (build or cache hit), and whether it was cached.
    pub build_s: f64,
    pub kernel_cached: bool,
    /// Time for fixtures and image (build or cache hit).
    pub image_s: f64,
    /// Where `--accel auto`'s verdict is remembered (the cache's `accel/`).
    pub accel_memory: PathBuf,
}

pub fn prepare(
    cache: &Cache,
    project: &Project,
    builder: &Builder,
    v: &Variant,
    events: &dyn EventSink,
) -> Result<Prepared> {
    // The recipe is input too: checked before the kernel builds.
    initramfs::check_recipe(project, DEFAULT_RECIPE)?;
    if crate::process::which("qemu-system-x86_64").is_none() {
        source::require(&["qemu-system-x86"], "qemu-system-x86_64 is missing")?;
    }
    let t0 = std::time::Instant::now();
    let (mut manifest, mut kernel_cached) = builder.build(v)?;
    let mut build_s = t0.elapsed().as_secs_f64();
    let mut t1 = std::time::Instant::now();
    let fixtures = match fixtures::build(cache, project, &manifest, events) {
        // A cached kernel whose build dir is gone or holds another build:
        // built again (a new build_id), then its fixtures.
        Err(e) if e.downcast_ref::<BuildDirStale>().is_some() => {
            events.event(&Event::Preparing {
                what: format!("{e:#}"),
            });
            (manifest, kernel_cached) = builder.rebuild(v, &manifest.build_id)?;
            build_s += t1.elapsed().as_secs_f64();
            t1 = std::time::Instant::now();
            fixtures::build(cache, project, &manifest, events)?
        }
        r => r?,
    };
    let image = image_of(cache, project, &manifest, &fixtures, events)?;
    events.event(&Event::Prepared {
        variant: v.name.clone(),
        kernel_release: manifest.kernel_release.clone(),
        image_key: image.key.clone(),
    });
    Ok(Prepared {
        variant: v.name.clone(),
        source_name: v.source.name(),
        manifest,
        fixtures,
        image,
        build_s,
        kernel_cached,
        image_s: t1.elapsed().as_secs_f64(),
        accel_memory: cache.dir("accel"),
    })
}

/// The default recipe's image of a kernel with its fixtures.
fn image_of(
    cache: &Cache,
    project: &Project,
    manifest: &Manifest,
    fixtures: &Fixtures,
    events: &dyn EventSink,
) -> Result<Image> {
    initramfs::build(
        cache,
        project,
        DEFAULT_RECIPE,
        manifest,
        Some(fixtures),
        events,
    )
}

/// Fixtures and image for a kernel built by the caller (`mutants`' own
/// builds): nothing is rebuilt when its build dir is stale, that is an
/// error.
pub fn prepare_built(
    cache: &Cache,
    project: &Project,
    (variant, source_name): (&str, String),
    manifest: Manifest,
    events: &dyn EventSink,
) -> Result<Prepared> {
    initramfs::check_recipe(project, DEFAULT_RECIPE)?;
    let t1 = std::time::Instant::now();
    let fixtures = fixtures::build(cache, project, &manifest, events)?;
    let image = image_of(cache, project, &manifest, &fixtures, events)?;
    Ok(Prepared {
        variant: variant.to_string(),
        source_name,
        manifest,
        fixtures,
        image,
        build_s: 0.0,
        kernel_cached: true,
        image_s: t1.elapsed().as_secs_f64(),
        accel_memory: cache.dir("accel"),
    })
}

impl Prepared {
    /// Boots the PVH vmlinux directly (no decompression, the fastest
    /// start); a prebuilt or local kernel boots as it is, its bzImage.
    pub fn vm_config(&self, console_log: PathBuf) -> VmConfig {
        let kernel = match &self.manifest.prebuilt {
            None => &self.manifest.vmlinux,
            Some(_) => &self.manifest.bzimage,
        };
        VmConfig {
            accel_memory: Some(self.accel_memory.clone()),
            ..VmConfig::new(kernel.clone(), self.image.path.clone(), console_log)
        }
    }
}
