//! Glue from a variant to a bootable guest: kernel build (cached), image
//! build (cached), and the VM configuration for it.

use std::path::PathBuf;

use anyhow::Result;

use crate::cache::Cache;
use crate::fixtures::{self, Fixtures};
use crate::image::{self, Image};
use crate::kbuild::{Builder, Manifest};
use crate::variant::{Project, Variant};
use crate::vm::VmConfig;

/// The default image recipe (`images/base.yaml`).
pub const DEFAULT_RECIPE: &str = "base";

#[derive(Clone, Debug)]
pub struct Prepared {
    pub variant: String,
    pub manifest: Manifest,
    pub fixtures: Fixtures,
    pub image: Image,
    /// Time to get the kernel (build or cache hit), and whether it was cached.
    pub build_s: f64,
    pub kernel_cached: bool,
    /// Time for fixtures and image (build or cache hit).
    pub image_s: f64,
}

pub fn prepare(
    cache: &Cache,
    project: &Project,
    builder: &Builder,
    v: &Variant,
    note: &dyn Fn(&str),
) -> Result<Prepared> {
    if crate::source::which("qemu-system-x86_64").is_none() {
        crate::source::apt_install(&["qemu-system-x86"], "qemu-system-x86_64 is missing")?;
    }
    let t0 = std::time::Instant::now();
    let (manifest, kernel_cached) = builder.build(v)?;
    let build_s = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let fixtures = fixtures::build(cache, project, &manifest, note)?;
    let image = image::build(
        cache,
        project,
        DEFAULT_RECIPE,
        &manifest,
        Some(&fixtures),
        note,
    )?;
    Ok(Prepared {
        variant: v.name.clone(),
        manifest,
        fixtures,
        image,
        build_s,
        kernel_cached,
        image_s: t1.elapsed().as_secs_f64(),
    })
}

impl Prepared {
    /// Boots the PVH vmlinux directly: no decompression, the fastest start.
    pub fn vm_config(&self, console_log: PathBuf) -> VmConfig {
        VmConfig::new(
            self.manifest.vmlinux.clone(),
            self.image.path.clone(),
            console_log,
        )
    }
}
