//! The build worker: a copy of the variant's tree and build dir in which
//! one mutant at a time is applied, built (kbuild recompiles the one
//! object and relinks vmlinux) and taken back out.
//!
//! `<cache>/mutants/<kernel key>/` holds:
//! - `src/`: the variant's patched tree as hard links (a mutated file is
//!   written as a new file, never through a link) and a real copy of its
//!   build dir (`src/.build-<config key>`);
//! - `pahole`: pahole without `-j`. pahole 1.24's parallel BTF encoding
//!   is not deterministic (two links of the same objects give different
//!   `.BTF`), and the fixture modules' BTF is split against vmlinux's: with
//!   `-j` no mutant could boot with the fixtures of its base;
//! - a fixed build number and timestamp (`KBUILD_BUILD_VERSION`,
//!   `KBUILD_BUILD_TIMESTAMP`): the version string is an array in vmlinux's
//!   BTF, so `#9` -> `#10` alone changed the BTF of every later mutant;
//! - `base/`: the unmutated kernel built there (vmlinux, modules, the
//!   `.BTF` bytes, `vmlinux.symvers`), the base every mutant is compared
//!   with and the baseline runs on;
//! - `applied.json`: the file a mutant is applied to, while it is
//!   (a run that died leaves it; the next one restores the file first).
//!
//! Restoring writes the variant's own file as a new file with a new
//! mtime, so the next build recompiles it (a ccache hit).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::sites::Mutant;
use crate::build::kbuild::{self, Plan};
use crate::build::Manifest;
use crate::cache::{self, Cache, KeyHasher};
use crate::events::{Event, EventSink};
use crate::teardown;

pub struct Worker {
    pub dir: PathBuf,
    /// The variant's tree (never written).
    pub variant_tree: PathBuf,
    pub tree: PathBuf,
    pub build: PathBuf,
    pub base: Manifest,
    pub jobs: usize,
    cache: Cache,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

#[derive(Serialize, Deserialize)]
struct Applied {
    file: String,
    mutant: String,
}

/// What a mutant's build gave.
pub enum Built {
    /// vmlinux at `vmlinux`, and when its BTF, release or exported symbols
    /// differ from the base's (so the base's modules and fixtures would
    /// not load on it), why, and its own modules (installed under the
    /// `modroot` given to [`Worker::build`]).
    Kernel {
        vmlinux: PathBuf,
        own_modules: Option<(String, PathBuf)>,
    },
    /// It does not compile: the compiler's first error line.
    Unviable(String),
    /// The harness could not build it (not the compiler's doing): why.
    Failed(String),
}

const PAHOLE_WRAPPER: &str = r#"#!/bin/sh
# pahole without -j: parallel BTF encoding is not deterministic in pahole
# 1.24 (written by coexist mutants).
for a in "$@"; do
  shift
  case "$a" in -j|-j[0-9]*|--jobs|--jobs=*) ;; *) set -- "$@" "$a" ;; esac
done
exec pahole "$@"
"#;

/// The version string's parts, fixed for every build in a worker.
const BUILD_VERSION: &str = "1";
const BUILD_TIMESTAMP: &str = "coexist mutants worker";

fn base_key(kernel: &Manifest) -> String {
    let mut h = KeyHasher::new("mutants-base-v2");
    kernel.key_parts(&mut h);
    h.part("pahole-wrapper", PAHOLE_WRAPPER.as_bytes())
        .part("build-version", BUILD_VERSION.as_bytes())
        .part("build-timestamp", BUILD_TIMESTAMP.as_bytes());
    h.finish()
}

impl Worker {
    /// Opens (or makes) the worker of built kernel `kernel` (planned as
    /// `plan`), restoring a file a dead run left mutated. Holds the
    /// worker's lock: one run per worker.
    pub fn open(
        cache: &Cache,
        plan: &Plan,
        kernel: &Manifest,
        jobs: usize,
        events: &dyn EventSink,
    ) -> Result<Worker> {
        let note = |what: String| events.event(&Event::Preparing { what });
        let dir = cache.dir("mutants").join(&kernel.key);
        std::fs::create_dir_all(cache.dir("mutants"))?;
        let lock = cache.lock(&format!("mutants-{}", kernel.key), || {
            note(format!(
                "waiting for another mutants run on kernel {}",
                kernel.key
            ))
        })?;
        let build_name = plan
            .build_dir
            .file_name()
            .context("the build dir has no name")?;
        let tree = dir.join("src");
        let mut w = Worker {
            variant_tree: plan.tree_dir.clone(),
            build: tree.join(build_name),
            tree,
            base: kernel.clone(),
            jobs,
            cache: cache.clone(),
            dir,
            _lock: lock,
        };
        w.restore_leftover()?;
        let key = base_key(kernel);
        if let Ok(Some(m)) = Manifest::load_sound(&w.dir.join("base")) {
            if m.key == key {
                // The build dir holds the last mutant's vmlinux; fixtures
                // built against the base (module BTF is split against it)
                // need the base's back. The next build relinks anyway: the
                // restored file is newer than its object.
                let vmlinux = w.build.join("vmlinux");
                if !kbuild::same_bytes(&vmlinux, &m.vmlinux).unwrap_or(false) {
                    cache::write_atomic(&vmlinux, &std::fs::read(&m.vmlinux)?)?;
                }
                w.base = m;
                return Ok(w);
            }
        }
        note(format!(
            "mutants: making the build worker {} (a copy of the variant's tree and build dir, then one \
             full build of the unmutated kernel with deterministic BTF; once per kernel)",
            w.dir.display()
        ));
        if w.dir.join("src").exists() {
            std::fs::remove_dir_all(w.dir.join("src"))?;
        }
        let _ = std::fs::remove_dir_all(w.dir.join("base"));
        std::fs::create_dir_all(&w.tree)?;
        // The variant's build dir is copied under its lock.
        let _blk = cache.lock(&kbuild::build_dir_lock(&plan.build_dir), || {
            note("waiting for another run using the variant's build dir".into())
        })?;
        kbuild::check_build_dir(kernel).map_err(|e| anyhow::anyhow!("{e}"))?;
        for e in std::fs::read_dir(&plan.tree_dir)? {
            let e = e?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".build-") {
                continue;
            }
            copy(&["-al"], &e.path(), &w.tree.join(&name))?;
        }
        copy(&["-a"], &plan.build_dir, &w.build)?;
        drop(_blk);
        std::fs::write(w.dir.join("pahole"), PAHOLE_WRAPPER)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(w.dir.join("pahole"), std::fs::Permissions::from_mode(0o755))?;
        }
        let log = w.dir.join("base-build.log");
        let t0 = Instant::now();
        if let Err(e) = w.make(&["all"], &log) {
            bail!(
                "mutants: the unmutated kernel does not build in the worker ({e}); log: {}",
                log.display()
            );
        }
        // Published as an entry of its own, like a kernel's.
        let staging = cache::staging_dir(&w.dir.join("base"))?;
        let st = staging.path().join("base");
        std::fs::create_dir(&st)?;
        kbuild::modules_install(w.make_command(), &st.join("modroot"))?;
        kbuild::copy_artifacts(&w.build, &st)?;
        std::fs::write(st.join("btf"), btf(&st.join("vmlinux"))?)?;
        std::fs::write(st.join("symvers"), vmlinux_symvers(&w.build)?)?;
        let e = w.dir.join("base");
        let m = Manifest {
            key,
            build_seconds: t0.elapsed().as_secs_f64(),
            bzimage: e.join("bzImage"),
            vmlinux: e.join("vmlinux"),
            system_map: e.join("System.map"),
            config: e.join("config"),
            modules_dir: e.join("modroot/lib/modules").join(&kernel.kernel_release),
            source_dir: w.tree.clone(),
            build_dir: w.build.clone(),
            build_id: String::new(),
            ..kernel.clone()
        };
        std::fs::write(st.join("manifest.json"), serde_json::to_vec_pretty(&m)?)?;
        cache::publish(&st, &e)?;
        w.base = Manifest::load(&e)?;
        Ok(w)
    }

    /// `make` in the worker: the project's build environment, the fixed
    /// version string, pahole without `-j`.
    fn make_command(&self) -> Command {
        let mut c = kbuild::make_command(&self.cache, &self.tree, &self.build);
        c.env("KBUILD_BUILD_VERSION", BUILD_VERSION)
            .env("KBUILD_BUILD_TIMESTAMP", BUILD_TIMESTAMP)
            .arg(format!("PAHOLE={}", self.dir.join("pahole").display()));
        c
    }

    fn make(&self, targets: &[&str], log: &Path) -> Result<()> {
        let mut c = self.make_command();
        c.arg(format!("-j{}", self.jobs.max(1)))
            .args(targets)
            .stdin(Stdio::null());
        let f = std::fs::File::create(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        c.stdout(f.try_clone()?).stderr(f);
        let mut g = teardown::Group::spawn(&mut c).context("cannot run make")?;
        let st = g.child().wait()?;
        if teardown::stopping() {
            bail!("the build was stopped (the run was interrupted)");
        }
        if !st.success() {
            bail!("make {} failed ({st})", targets.join(" "));
        }
        Ok(())
    }

    /// Applies `m`, builds vmlinux (and, when its BTF or exports differ
    /// from the base's, its modules into `modroot`: `make modules` relinks
    /// vmlinux, so this happens with the mutant still applied), and takes
    /// `m` back out (also when the build fails or is interrupted). The
    /// vmlinux is copied to `out`; the build dir keeps it until the next
    /// build, for fixtures built against it.
    pub fn build(&self, m: &Mutant, (log, modroot): (&Path, &Path), out: &Path) -> Result<Built> {
        let original = std::fs::read_to_string(self.variant_tree.join(&m.file))
            .with_context(|| format!("cannot read {}", m.file))?;
        let mutated = m.apply(&original)?;
        cache::write_atomic(
            &self.dir.join("applied.json"),
            &serde_json::to_vec(&Applied {
                file: m.file.clone(),
                mutant: m.id.clone(),
            })?,
        )?;
        let applied = Restore {
            w: self,
            file: &m.file,
        };
        replace(&self.tree.join(&m.file), mutated.as_bytes())?;
        if let Err(e) = self.make(&["vmlinux"], log) {
            applied.now()?;
            if teardown::stopping() {
                return Err(e);
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let first = text
                .lines()
                .find(|l| l.contains("error:"))
                .or_else(|| text.lines().find(|l| l.contains("Error")))
                .unwrap_or("the build failed without an error line")
                .trim()
                .to_string();
            return Ok(Built::Unviable(first));
        }
        if let Some(d) = out.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::copy(self.build.join("vmlinux"), out)?;
        let own_modules = match self.same_deps(out) {
            Ok(()) => None,
            Err(why) => {
                let dir = self.modules(modroot, log)?;
                Some((why, dir))
            }
        };
        applied.now()?;
        // `make modules` must not have relinked another vmlinux.
        if own_modules.is_some() && !kbuild::same_bytes(&self.build.join("vmlinux"), out)? {
            bail!("mutant {}: the modules build relinked vmlinux", m.id);
        }
        Ok(Built::Kernel {
            vmlinux: out.to_path_buf(),
            own_modules,
        })
    }

    /// Whether what the fixtures and modules depend on is the base's:
    /// vmlinux's BTF (module BTF is split against it), the release
    /// (vermagic) and the exported symbols' versions.
    fn same_deps(&self, vmlinux: &Path) -> Result<(), String> {
        let base = self.dir.join("base");
        let b = btf(vmlinux).map_err(|e| format!("{e:#}"))?;
        if std::fs::read(base.join("btf")).ok().as_deref() != Some(&b[..]) {
            return Err("its vmlinux BTF differs from the base's".into());
        }
        let release = std::fs::read_to_string(self.build.join("include/config/kernel.release"))
            .unwrap_or_default();
        if release.trim() != self.base.kernel_release {
            return Err(format!(
                "its release {} is not the base's {}",
                release.trim(),
                self.base.kernel_release
            ));
        }
        if vmlinux_symvers(&self.build).ok() != std::fs::read_to_string(base.join("symvers")).ok() {
            return Err(
                "the symbols vmlinux exports (and their versions) differ from the base's".into(),
            );
        }
        Ok(())
    }

    /// The modules of the kernel in the build dir, installed under `root`.
    fn modules(&self, root: &Path, log: &Path) -> Result<PathBuf> {
        let mlog = log.with_extension("modules.log");
        self.make(&["modules"], &mlog)?;
        kbuild::modules_install(self.make_command(), root)?;
        Ok(root.join("lib/modules").join(&self.base.kernel_release))
    }

    fn restore(&self, file: &str) -> Result<()> {
        let original = std::fs::read(self.variant_tree.join(file))
            .with_context(|| format!("cannot read the variant's {file}"))?;
        replace(&self.tree.join(file), &original)?;
        let _ = std::fs::remove_file(self.dir.join("applied.json"));
        Ok(())
    }

    fn restore_leftover(&self) -> Result<()> {
        let Ok(b) = std::fs::read(self.dir.join("applied.json")) else {
            return Ok(());
        };
        if let Ok(a) = serde_json::from_slice::<Applied>(&b) {
            self.restore(&a.file)?;
        }
        let _ = std::fs::remove_file(self.dir.join("applied.json"));
        Ok(())
    }
}

/// Takes a mutant back out on every way out of [`Worker::build`].
struct Restore<'a> {
    w: &'a Worker,
    file: &'a str,
}

impl Restore<'_> {
    fn now(self) -> Result<()> {
        let r = self.w.restore(self.file);
        std::mem::forget(self);
        r
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = self.w.restore(self.file);
    }
}

/// Writes `data` as a new file at `path` (a hard link to the pristine
/// tree is replaced, never written through), with a new mtime.
fn replace(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("coexist-mutant-tmp");
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

fn copy(flags: &[&str], from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp")
        .args(flags)
        .arg(from)
        .arg(to)
        .status()
        .context("cannot run cp")?;
    if !st.success() {
        bail!(
            "cp {} {} {} failed",
            flags.join(" "),
            from.display(),
            to.display()
        );
    }
    Ok(())
}

/// What vmlinux exports, as modpost wrote it last in `build`
/// (`vmlinux.symvers` after `make vmlinux`, `Module.symvers` after
/// `make all`): its lines for vmlinux, sorted.
fn vmlinux_symvers(build: &Path) -> Result<String> {
    let v = build.join("vmlinux.symvers");
    let m = build.join("Module.symvers");
    let newest = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let from = match (newest(&v), newest(&m)) {
        (Some(a), Some(b)) if a >= b => v,
        (Some(_), None) => v,
        _ => m,
    };
    let text = std::fs::read_to_string(&from)
        .with_context(|| format!("cannot read {}", from.display()))?;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some("vmlinux"))
        .collect();
    lines.sort();
    Ok(lines.join("\n"))
}

/// vmlinux's `.BTF` section.
pub fn btf(vmlinux: &Path) -> Result<Vec<u8>> {
    let out = tempfile::NamedTempFile::new()?;
    let st = Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.BTF"])
        .arg(vmlinux)
        .arg(out.path())
        .stderr(Stdio::null())
        .status()
        .context("cannot run objcopy")?;
    if !st.success() {
        bail!("objcopy cannot read the .BTF of {}", vmlinux.display());
    }
    Ok(std::fs::read(out.path())?)
}
