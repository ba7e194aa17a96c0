//! The project and the cache a command works with, and the helpers every
//! stage needs from them (variants, a kernel builder, a prepared guest).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::build::{source, Builder, Project, Variant};
use crate::cache::Cache;
use crate::events::EventSink;
use crate::image::{self, Prepared};

pub struct Workspace {
    pub project: Project,
    pub cache: Cache,
    /// Every source this workspace (one command, one run) uses, identified
    /// once.
    pub sources: source::Sources,
    setup: std::sync::OnceLock<()>,
    /// The toolchain identity (part of every kernel key), read once, after
    /// setup.
    toolchain: std::sync::OnceLock<String>,
}

/// Parallel jobs by default: the number of cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

impl Workspace {
    /// `root`: the project (default: found from the current directory);
    /// `cache_dir`: the cache (default: `$COEXIST_CACHE`,
    /// `$XDG_CACHE_HOME/coexist` or `~/.cache/coexist`).
    pub fn open(root: Option<PathBuf>, cache_dir: Option<PathBuf>) -> Result<Workspace> {
        let project = Project::locate(root)?;
        let root = match cache_dir {
            Some(d) => d,
            None => Cache::default_root()?,
        };
        Ok(Workspace::new(project, Cache::open(root)?))
    }

    pub fn new(project: Project, cache: Cache) -> Workspace {
        Workspace {
            project,
            cache,
            sources: Default::default(),
            setup: Default::default(),
            toolchain: Default::default(),
        }
    }

    /// The coverage twin of `v` (`Variant::coverage_twin`), with the
    /// profile the project's `kernel-config/area.yaml` declares: what every
    /// command's `--coverage` runs instead of `v`.
    pub fn coverage_twin(&self, v: &Variant) -> Result<Variant> {
        let area = crate::build::area::Area::load(&self.project.root)?;
        v.coverage_twin(&self.project.root, &area)
    }

    /// The declared variants; with a kernel tree, each builds that tree.
    pub fn variants(&self, kernel_tree: Option<&Path>) -> Result<Vec<Variant>> {
        if let Some(t) = kernel_tree {
            if !t.is_dir() {
                bail!("--kernel-tree {}: no such directory", t.display());
            }
        }
        self.project.load_variants(kernel_tree)
    }

    pub fn builder<'a>(&'a self, jobs: usize, events: &'a dyn EventSink) -> Builder<'a> {
        Builder {
            cache: &self.cache,
            jobs: jobs.max(1),
            toolchain: self.toolchain.get_or_init(source::toolchain_id).clone(),
            events,
            sources: &self.sources,
        }
    }

    /// A fresh console log path for a VM booted outside a suite run.
    pub fn console_log(&self, variant: &str) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.cache.dir("logs").join(format!(
            "console-{variant}-{stamp}-{}.log",
            std::process::id()
        ))
    }

    /// Installs what the project needs (once per workspace), before
    /// anything is keyed: see [`crate::setup`].
    pub fn setup(&self, events: &dyn EventSink) -> Result<()> {
        self.setup_with(events, crate::setup::Removals::Refuse)
    }

    /// [`Workspace::setup`], saying whether apt may remove packages.
    pub fn setup_with(
        &self,
        events: &dyn EventSink,
        removals: crate::setup::Removals,
    ) -> Result<()> {
        if self.setup.get().is_some() {
            return Ok(());
        }
        crate::setup::ensure(&self.project, events, removals)?;
        let _ = self.setup.set(());
        Ok(())
    }

    /// Builds (or finds) a variant's kernel, fixtures and image.
    pub fn prepare(&self, v: &Variant, events: &dyn EventSink) -> Result<Prepared> {
        self.setup(events)?;
        let builder = self.builder(default_jobs(), events);
        image::prepare(&self.cache, &self.project, &builder, v, events)
    }
}
