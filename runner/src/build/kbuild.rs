//! Stage 1: variant -> built kernel. Plans cache keys, prepares the patched
//! tree, configures (tinyconfig + fragments + olddefconfig, then validates),
//! builds out of tree with ccache, and publishes the artifacts.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::kconfig;
use crate::build::local;
use crate::build::manifest::Manifest;
use crate::build::prebuilt;
use crate::build::series;
use crate::build::source::{self, SourceId};
use crate::build::variant::{Source, Variant};
use crate::cache::{self, Cache, KeyHasher};
use crate::events::{Event, EventSink};
use crate::process::run_quiet;
use crate::teardown;

/// The kernel at hand cannot be configured or built (as opposed to a
/// problem of the harness): bisect reports such a commit as untestable.
#[derive(Debug)]
pub struct KernelDoesNotBuild(pub String);

impl std::fmt::Display for KernelDoesNotBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelDoesNotBuild {}

/// A cached kernel whose build dir no longer is the build of that kernel
/// (removed, cleaned, or rebuilt for another commit of the same tree):
/// out-of-tree modules cannot be built against it. The caller rebuilds
/// the kernel ([`Builder::rebuild`]) and tries again.
#[derive(Debug)]
pub struct BuildDirStale(pub String);

impl std::fmt::Display for BuildDirStale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildDirStale {}

/// Checks that `m.build_dir` is the build of the kernel `m` describes,
/// ready for `M=` module builds: configured and prepared, its
/// Module.symvers written, its vmlinux the entry's (byte for byte: module
/// BTF is split against it, and a tree's build dir is shared by every
/// commit built in it). Call it holding the build dir's lock.
pub fn check_build_dir(m: &Manifest) -> Result<(), BuildDirStale> {
    let b = &m.build_dir;
    for need in ["include/config/auto.conf", "Module.symvers", "vmlinux"] {
        if !b.join(need).is_file() {
            return Err(BuildDirStale(format!(
                "the build dir {} of kernel {} has no {need}",
                b.display(),
                m.key
            )));
        }
    }
    let same = same_bytes(&b.join("vmlinux"), &m.vmlinux)
        .map_err(|e| BuildDirStale(format!("cannot compare {}/vmlinux: {e}", b.display())))?;
    if !same {
        return Err(BuildDirStale(format!(
            "the build dir {} holds another build than kernel {} (its vmlinux differs)",
            b.display(),
            m.key
        )));
    }
    Ok(())
}

/// Whether two files hold the same bytes (read a MiB at a time).
pub fn same_bytes(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    if std::fs::metadata(a)?.len() != std::fs::metadata(b)?.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Where a variant's build lives and what its cache key is; computed
/// without building anything.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: SourceId,
    /// Key of source + series (the patched tree).
    pub tree_key: String,
    /// Key of fragments + toolchain (the configuration).
    pub config_key: String,
    /// Key of the built kernel: tree + configuration.
    pub key: String,
    pub tree_dir: PathBuf,
    pub build_dir: PathBuf,
    pub entry_dir: PathBuf,
}

impl Plan {
    /// The published entry, if there is a sound one: its manifest reads
    /// back and every artifact it names is there. Err: the entry exists
    /// but is damaged (why).
    pub fn cached(&self) -> Result<Option<Manifest>, String> {
        Manifest::load_sound(&self.entry_dir)
    }
}

/// The file in a prepared tree that lists the patches skipped as already
/// in the source.
const ALREADY_APPLIED: &str = ".coexist-already-in-source";

#[derive(Default, Serialize, Deserialize)]
struct BuildStats {
    lines: u64,
    seconds: f64,
}

pub struct Builder<'a> {
    pub cache: &'a Cache,
    pub jobs: usize,
    pub toolchain: String,
    /// Where phases, progress and the result go.
    pub events: &'a dyn EventSink,
    /// The run's sources, identified once.
    pub sources: &'a source::Sources,
}

fn tree_key(src: &SourceId, v: &Variant) -> String {
    let mut h = KeyHasher::new("tree-v1");
    h.part("source", src.id.as_bytes());
    if let Some(s) = &v.series {
        for p in &s.patches {
            h.part("patch-name", p.r.file.as_bytes());
            h.part("strip", &p.r.strip.to_le_bytes());
            h.part("patch", &p.contents);
        }
    }
    // A coverage twin's Makefiles profile these (none: the plain key).
    for p in &v.coverage {
        h.part("gcov-profile", p.pattern.as_bytes());
    }
    h.finish()
}

fn config_key(v: &Variant, toolchain: &str) -> String {
    let mut h = KeyHasher::new("config-v1");
    h.part("base", b"tinyconfig");
    for f in &v.fragments {
        h.part("fragment-name", f.name.as_bytes());
        h.part("fragment", &f.contents);
    }
    h.part("toolchain", toolchain.as_bytes());
    h.finish()
}

impl Builder<'_> {
    fn phase(&self, v: &str, what: impl Into<String>) {
        self.events.event(&Event::BuildPhase {
            variant: v.to_string(),
            what: what.into(),
        });
    }

    pub fn plan(&self, v: &Variant) -> Result<Plan> {
        if let (Source::Tree(_), Some(s)) = (&v.source, &v.series) {
            bail!(
                "variant '{}' applies patch series '{}', but --kernel-tree builds a tree as it is \
                 checked out (the tree is never modified): commit the patches to the tree, or \
                 pick a variant without a series",
                v.name,
                s.name
            );
        }
        let src = v.source.identify(self.cache, self.sources, self.events)?;
        let tree_key = tree_key(&src, v);
        let config_key = config_key(v, &self.toolchain);
        let mut h = KeyHasher::new("kernel-v1");
        h.part("tree", tree_key.as_bytes())
            .part("config", config_key.as_bytes());
        let key = h.finish();
        let (tree_dir, build_dir) = match &v.source {
            Source::Tarball(_) => {
                let t = self.cache.dir("trees").join(&tree_key);
                let b = t.join(format!(".build-{config_key}"));
                (t, b)
            }
            // The tree's own build output dir, the only thing written in
            // a user's tree: kbuild's .gitignore ignores dot-dirs (git
            // bisect leaves it alone), it persists across commits
            // (incremental builds), and being inside the tree gives
            // relative paths, so ccache hits what the variants compiled.
            Source::Tree(t) => {
                let t = t.canonicalize()?;
                let b = t.join(format!(".coexist-build-{config_key}"));
                (t, b)
            }
            // Nothing is built: no tree, no build dir; the key is the
            // content of the package, or of the local kernel's files.
            s @ (Source::Prebuilt(_) | Source::Local(_)) => {
                let (key, entry_dir) = if let Source::Local(_) = s {
                    (src.id.clone(), local::entry_dir(self.cache, &src.id))
                } else {
                    (
                        prebuilt::key(&src.id),
                        prebuilt::entry_dir(self.cache, &src.id),
                    )
                };
                return Ok(Plan {
                    key,
                    entry_dir,
                    source: src,
                    tree_key: String::new(),
                    config_key: String::new(),
                    tree_dir: PathBuf::new(),
                    build_dir: PathBuf::new(),
                });
            }
        };
        Ok(Plan {
            source: src,
            tree_key,
            config_key,
            entry_dir: self.cache.dir("kernels").join(&key),
            key,
            tree_dir,
            build_dir,
        })
    }

    /// The variant's patched source tree, prepared (unpacked, the series
    /// applied) without building anything; for a built-here variant only.
    pub fn prepare_source(&self, v: &Variant) -> Result<Plan> {
        let plan = self.plan(v)?;
        self.prepare_tree(v, &plan)?;
        Ok(plan)
    }

    /// Builds the variant unless its entry is already published; says
    /// whether it was (a cache hit).
    pub fn build(&self, v: &Variant) -> Result<(Manifest, bool)> {
        // Every kind is named: a new one is a compile error here.
        match &v.source {
            Source::Prebuilt(d) => {
                let (mut m, cached) = prebuilt::fetch(self.cache, v, d, self.events)?;
                prebuilt::build_inputs(self.cache, self.sources, d, &mut m, &|w: &str| {
                    self.phase(&v.name, w)
                })?;
                Ok((m, cached))
            }
            Source::Local(d) => {
                let plan = self.plan(v)?;
                let (mut m, cached) = local::prepare(self.cache, v, d, &plan.key, self.events)?;
                local::build_inputs(self.cache, self.sources, d, &mut m, &|w: &str| {
                    self.phase(&v.name, w)
                })?;
                Ok((m, cached))
            }
            Source::Tarball(_) | Source::Tree(_) => self.build_tree(v, None),
        }
    }

    /// Builds a built-here variant again, under its key, though its entry
    /// is published: its build dir no longer holds it ([`BuildDirStale`]).
    /// The new entry gets a new `build_id`. `stale` is the build_id of the
    /// entry found stale: if another run has republished it meanwhile,
    /// that one is taken.
    pub fn rebuild(&self, v: &Variant, stale: &str) -> Result<(Manifest, bool)> {
        self.build_tree(v, Some(stale))
    }

    fn build_tree(&self, v: &Variant, stale: Option<&str>) -> Result<(Manifest, bool)> {
        let t0 = Instant::now();
        let plan = self.plan(v)?;
        let finished = |cached| {
            self.events.event(&Event::BuildFinished {
                variant: v.name.clone(),
                key: plan.key.clone(),
                cached,
                elapsed: t0.elapsed(),
                entry: plan.entry_dir.clone(),
            })
        };
        // An entry that is not the stale one (when rebuilding) is taken.
        let usable = |m: &Manifest| stale.is_none_or(|s| m.build_id != s);
        if let Ok(Some(mut m)) = plan.cached() {
            if usable(&m) {
                self.describe_source(&mut m, &plan);
                finished(true);
                return Ok((m, true));
            }
        }
        source::preflight_build_tools()?;
        // One build per build dir at a time; a second run waits, then
        // finds the entry published.
        let lock_name = build_dir_lock(&plan.build_dir);
        let _lock = self.cache.lock(&lock_name, || {
            self.phase(&v.name, "waiting for another run building the same kernel")
        })?;
        let mut build_id = String::new();
        match plan.cached() {
            Ok(Some(mut m)) if usable(&m) => {
                self.describe_source(&mut m, &plan);
                finished(true);
                return Ok((m, true));
            }
            Ok(Some(_)) => {
                self.phase(
                    &v.name,
                    format!(
                        "kernel {} is cached, but its build dir {} no longer holds its build \
                         (modules are built there): building it again",
                        plan.key,
                        plan.build_dir.display()
                    ),
                );
                // The entry stays until the new one replaces it (publish).
                let mut h = KeyHasher::new("build-id");
                h.part("key", plan.key.as_bytes()).part(
                    "when",
                    format!("{:?} {}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
                );
                build_id = h.finish();
            }
            Ok(None) => {}
            // A damaged entry (a truncated manifest, a missing artifact) is
            // set aside under the lock and built again.
            Err(why) => {
                self.phase(
                    &v.name,
                    format!(
                        "cache entry {} is damaged ({why}); building it again",
                        plan.entry_dir.display()
                    ),
                );
                cache::discard(&plan.entry_dir)?;
            }
        }
        cache::remove_stale_staging(&plan.entry_dir)?;
        self.prepare_tree(v, &plan)?;
        self.configure(v, &plan)?;
        let log = self
            .cache
            .dir("logs")
            .join(format!("{}-{}.build.log", v.name, plan.key));
        let built = Instant::now();
        let lines = self.make(v, &plan, &log)?;
        let stats = BuildStats {
            lines,
            seconds: built.elapsed().as_secs_f64(),
        };
        let manifest = self.publish(v, &plan, &log, t0, build_id)?;
        let _ = cache::write_atomic(
            &self.stats_path(&plan),
            &serde_json::to_vec(&stats).unwrap_or_default(),
        );
        finished(false);
        Ok((manifest, false))
    }

    fn stats_path(&self, plan: &Plan) -> PathBuf {
        self.cache
            .dir("stats")
            .join(format!("{}.json", plan.config_key))
    }

    /// The patched source tree: a hard-link farm of the pristine tree with
    /// the series applied (patched files get their own copies).
    fn prepare_tree(&self, v: &Variant, plan: &Plan) -> Result<()> {
        let decl = match &v.source {
            Source::Tree(_) | Source::Prebuilt(_) | Source::Local(_) => return Ok(()),
            Source::Tarball(d) => d,
        };
        if plan.tree_dir.join("Makefile").is_file() {
            return Ok(());
        }
        let note = |s: &str| self.phase(&v.name, s);
        let pristine = source::unpack(self.cache, decl, &plan.source, &note)?;
        let _lock = self.cache.lock(&format!("tree-{}", plan.tree_key), || {
            note("waiting for another run preparing the same tree")
        })?;
        if plan.tree_dir.join("Makefile").is_file() {
            return Ok(());
        }
        cache::remove_stale_staging(&plan.tree_dir)?;
        let staging = cache::staging_dir(&plan.tree_dir)?;
        let tree = staging.path().join("src");
        let st = Command::new("cp")
            .arg("-al")
            .arg(&pristine)
            .arg(&tree)
            .status()
            .context("cannot run cp")?;
        if !st.success() {
            bail!("cannot link {} into {}", pristine.display(), tree.display());
        }
        if let Some(s) = &v.series {
            note(&format!(
                "applying patch series '{}' ({} patches)",
                s.name,
                s.patches.len()
            ));
            let already = series::apply(s, &tree)?;
            for p in &already {
                note(&format!(
                    "patch {p} is already in this source (it reverse-applies cleanly): skipped"
                ));
            }
            std::fs::write(tree.join(ALREADY_APPLIED), already.join("\n"))?;
        }
        if v.is_coverage_twin() {
            note(&format!(
                "profiling with gcov: {}",
                v.coverage
                    .iter()
                    .map(|p| p.pattern.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            crate::build::area::Area::profile_tree(&v.coverage, &tree)?;
        }
        cache::publish(&tree, &plan.tree_dir)
    }

    /// What a manifest says about its source, also for entries published
    /// before it said so: the version from the tree, the origin from the
    /// run's source identity, the patches found already in the source.
    fn describe_source(&self, m: &mut Manifest, plan: &Plan) {
        if m.kernel_version.is_empty() {
            m.kernel_version = source::makefile_version(&plan.tree_dir).unwrap_or_default();
        }
        if m.source_origin.is_none() {
            m.source_origin = plan.source.origin.clone();
        }
        if m.already_in_source.is_empty() {
            m.already_in_source = std::fs::read_to_string(plan.tree_dir.join(ALREADY_APPLIED))
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect();
        }
    }

    fn make_cmd(&self, plan: &Plan) -> Command {
        make_command(self.cache, &plan.tree_dir, &plan.build_dir)
    }

    fn configure(&self, v: &Variant, plan: &Plan) -> Result<()> {
        // The same Kconfig inputs and fragments in this build dir give the
        // same .config: an incremental build of a commit that touched no
        // Kconfig keeps it (make's syncconfig still runs in `all`).
        let inputs = kconfig_inputs(&plan.tree_dir, &v.fragments)?;
        let memo = plan.build_dir.join(".coexist-config-inputs");
        let dotconfig = plan.build_dir.join(".config");
        if dotconfig.is_file() && std::fs::read_to_string(&memo).ok().as_deref() == Some(&inputs) {
            self.phase(
                &v.name,
                "configuration kept: its Kconfig inputs and fragments are unchanged",
            );
            return self.validate_config(v, plan);
        }
        let _ = std::fs::remove_file(&memo);
        self.phase(
            &v.name,
            format!(
                "configuring: tinyconfig + {}",
                v.fragments
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
        );
        std::fs::create_dir_all(&plan.build_dir)?;
        let mut c = self.make_cmd(plan);
        c.arg("tinyconfig");
        run_quiet(c, "make tinyconfig").map_err(|e| KernelDoesNotBuild(format!("{e:#}")))?;
        let mut c = Command::new(plan.tree_dir.join("scripts/kconfig/merge_config.sh"));
        c.current_dir(&plan.tree_dir)
            .args(["-m", "-O"])
            .arg(&plan.build_dir)
            .arg(plan.build_dir.join(".config"));
        for f in &v.fragments {
            c.arg(&f.path);
        }
        run_quiet(c, "merge_config.sh").map_err(|e| KernelDoesNotBuild(format!("{e:#}")))?;
        let mut c = self.make_cmd(plan);
        c.arg("olddefconfig");
        run_quiet(c, "make olddefconfig").map_err(|e| KernelDoesNotBuild(format!("{e:#}")))?;
        self.validate_config(v, plan)?;
        std::fs::write(&memo, inputs)?;
        Ok(())
    }

    /// The requested options took.
    fn validate_config(&self, v: &Variant, plan: &Plan) -> Result<()> {
        let dotconfig = std::fs::read_to_string(plan.build_dir.join(".config"))?;
        let mismatches = kconfig::validate(&v.fragments, &kconfig::parse_dotconfig(&dotconfig));
        if !mismatches.is_empty() {
            return Err(KernelDoesNotBuild(format!(
                "variant '{}': {} requested config option(s) did not take:\n  {}",
                v.name,
                mismatches.len(),
                mismatches
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ))
            .into());
        }
        Ok(())
    }

    /// Runs the build, streaming its output to the log and as progress events.
    fn make(&self, v: &Variant, plan: &Plan, log: &Path) -> Result<u64> {
        let expected = std::fs::read(self.stats_path(plan))
            .ok()
            .and_then(|b| serde_json::from_slice::<BuildStats>(&b).ok())
            .map(|s| s.lines);
        self.phase(
            &v.name,
            format!("compiling with -j{} (log: {})", self.jobs, log.display()),
        );
        let mut logf = std::fs::File::create(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        let mut c = self.make_cmd(plan);
        c.arg(format!("-j{}", self.jobs))
            .arg("all")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: killed on every way out of here, and by
        // the signal thread.
        let mut group = teardown::Group::spawn(&mut c).context("cannot run make")?;
        let child = group.child();
        // stderr is merged into the same stream by a reader thread.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let err = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        let t = std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
                let _ = tx2.send(l);
            }
        });
        let out = child.stdout.take().unwrap();
        let t2 = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = tx.send(l);
            }
        });
        let mut lines = 0u64;
        for l in rx {
            lines += 1;
            writeln!(logf, "{l}")?;
            self.events.event(&Event::BuildProgress {
                variant: v.name.clone(),
                lines,
                expected,
                last: l,
            });
        }
        let _ = t.join();
        let _ = t2.join();
        let st = child.wait()?;
        if teardown::stopping() {
            bail!(
                "variant '{}': the build was stopped (the run was interrupted)",
                v.name
            );
        }
        if !st.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(KernelDoesNotBuild(format!(
                "variant '{}': the kernel build failed ({st}); last lines of {}:\n{}",
                v.name,
                log.display(),
                crate::process::tail(&text, 25)
            ))
            .into());
        }
        Ok(lines)
    }

    fn publish(
        &self,
        v: &Variant,
        plan: &Plan,
        log: &Path,
        t0: Instant,
        build_id: String,
    ) -> Result<Manifest> {
        self.phase(&v.name, "installing modules and publishing artifacts");
        let staging = cache::staging_dir(&plan.entry_dir)?;
        let st = staging.path().join("entry");
        std::fs::create_dir(&st)?;
        let b = &plan.build_dir;
        let release = std::fs::read_to_string(b.join("include/config/kernel.release"))
            .context("the build wrote no include/config/kernel.release")?
            .trim()
            .to_string();
        let out = modules_install(self.make_cmd(plan), &st.join("modroot"))?;
        let mut logf = std::fs::OpenOptions::new().append(true).open(log)?;
        logf.write_all(out.as_bytes())?;
        copy_artifacts(b, &st)?;
        let e = &plan.entry_dir;
        let mut manifest = Manifest {
            variant: v.name.clone(),
            key: plan.key.clone(),
            source: plan.source.describe.clone(),
            series: v
                .series
                .iter()
                .flat_map(|s| s.patches.iter().map(|p| format!("{}/{}", s.name, p.r.file)))
                .collect(),
            fragments: v.fragments.iter().map(|f| f.name.clone()).collect(),
            toolchain: self.toolchain.clone(),
            kernel_release: release.clone(),
            build_seconds: t0.elapsed().as_secs_f64(),
            bzimage: e.join("bzImage"),
            vmlinux: e.join("vmlinux"),
            system_map: e.join("System.map"),
            config: e.join("config"),
            modules_dir: e.join("modroot/lib/modules").join(&release),
            source_dir: plan.tree_dir.clone(),
            build_dir: plan.build_dir.clone(),
            kernel_version: String::new(),
            source_origin: None,
            already_in_source: Vec::new(),
            prebuilt: None,
            build_id,
            profiled: v.coverage.iter().map(|p| p.pattern.clone()).collect(),
        };
        self.describe_source(&mut manifest, plan);
        std::fs::write(
            st.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        // Built again under its key: the stale entry goes only now.
        if !manifest.build_id.is_empty() && e.exists() {
            cache::discard(e)?;
        }
        cache::publish(&st, e)?;
        Ok(manifest)
    }
}

/// `make -C <tree> O=<build>` with the project's build environment. O= is
/// relative when the build dir sits directly inside the tree, so kbuild
/// uses relative paths and ccache hits across trees.
pub fn make_command(cache: &Cache, tree: &Path, build: &Path) -> Command {
    let o = build.strip_prefix(tree).unwrap_or(build);
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(tree)
        .arg(format!("O={}", o.display()))
        .env("KBUILD_BUILD_USER", "coexist")
        .env("KBUILD_BUILD_HOST", "coexist")
        .env_remove("ARCH")
        .env_remove("CROSS_COMPILE")
        .env_remove("KBUILD_OUTPUT");
    if crate::process::which("ccache").is_some() {
        c.arg("CC=ccache gcc")
            .arg("HOSTCC=ccache gcc")
            .env("CCACHE_DIR", cache.dir("ccache"))
            .env("CCACHE_NOHASHDIR", "1")
            .env("CCACHE_BASEDIR", tree)
            .env("CCACHE_MAXSIZE", "8G");
    }
    c
}

/// `make modules_install` with `c` (a [`make_command`]) into `root`,
/// stripped, with the host's depmod; its output.
pub fn modules_install(mut c: Command, root: &Path) -> Result<String> {
    c.arg("modules_install")
        .arg(format!("INSTALL_MOD_PATH={}", root.display()))
        .arg("INSTALL_MOD_STRIP=1");
    if let Some(d) = crate::process::which("depmod") {
        c.arg(format!("DEPMOD={}", d.display()));
    }
    run_quiet(c, "make modules_install")
}

/// A kernel entry's artifacts, from build dir `b` into `to`: bzImage,
/// vmlinux, System.map, config.
pub fn copy_artifacts(b: &Path, to: &Path) -> Result<()> {
    for (from, name) in [
        ("arch/x86/boot/bzImage", "bzImage"),
        ("vmlinux", "vmlinux"),
        ("System.map", "System.map"),
        (".config", "config"),
    ] {
        std::fs::copy(b.join(from), to.join(name))
            .with_context(|| format!("cannot copy {} from {}", from, b.display()))?;
    }
    Ok(())
}

/// The name of the lock that serialises builds in one build dir.
pub fn build_dir_lock(build_dir: &Path) -> String {
    let mut h = KeyHasher::new("build-dir-lock");
    h.part("dir", build_dir.to_string_lossy().as_bytes());
    format!("build-{}", h.finish())
}

/// A digest of what `make tinyconfig` + the fragments + `olddefconfig`
/// read: every `Kconfig*` file of the tree, the tiny configs
/// (`kernel/configs`, `arch/x86/configs`), the kconfig scripts, and the
/// fragments. The toolchain, which Kconfig also asks, is in the build
/// dir's key.
pub fn kconfig_inputs(
    tree: &Path,
    fragments: &[crate::build::kconfig::Fragment],
) -> Result<String> {
    use sha2::Digest;
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                // Build output and VCS dirs hold no Kconfig input.
                if !name.starts_with('.') {
                    walk(&e.path(), out);
                }
            } else if name.starts_with("Kconfig") {
                out.push(e.path());
            }
        }
    }
    let mut files = Vec::new();
    walk(tree, &mut files);
    for d in ["kernel/configs", "arch/x86/configs", "scripts/kconfig"] {
        if let Ok(rd) = std::fs::read_dir(tree.join(d)) {
            files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    files.sort();
    let mut h = sha2::Sha256::new();
    for f in &files {
        h.update(
            f.strip_prefix(tree)
                .unwrap_or(f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?);
        h.update([0]);
    }
    for f in fragments {
        h.update(f.name.as_bytes());
        h.update([0]);
        h.update(&f.contents);
        h.update([0]);
    }
    Ok(format!(
        "{} files, sha256 {:x}\n",
        files.len(),
        h.finalize()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_dir_counts_only_while_it_holds_the_entrys_build() {
        let d = tempfile::tempdir().unwrap();
        let (entry, b) = (d.path().join("entry"), d.path().join("build"));
        std::fs::create_dir_all(&entry).unwrap();
        std::fs::create_dir_all(b.join("include/config")).unwrap();
        let vmlinux: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(entry.join("vmlinux"), &vmlinux).unwrap();
        let m = Manifest {
            variant: "v".into(),
            key: "k".into(),
            source: String::new(),
            series: vec![],
            fragments: vec![],
            toolchain: String::new(),
            kernel_release: "r".into(),
            build_seconds: 0.0,
            bzimage: entry.join("bzImage"),
            vmlinux: entry.join("vmlinux"),
            system_map: entry.join("System.map"),
            config: entry.join("config"),
            modules_dir: entry.join("modroot"),
            source_dir: d.path().join("src"),
            build_dir: b.clone(),
            kernel_version: String::new(),
            source_origin: None,
            already_in_source: vec![],
            prebuilt: None,
            build_id: String::new(),
            profiled: Vec::new(),
        };
        let why = |m: &Manifest| check_build_dir(m).unwrap_err().0;
        // Removed (or never prepared): each missing file is named.
        assert!(
            why(&m).contains("has no include/config/auto.conf"),
            "{}",
            why(&m)
        );
        std::fs::write(b.join("include/config/auto.conf"), "").unwrap();
        assert!(why(&m).contains("has no Module.symvers"));
        std::fs::write(b.join("Module.symvers"), "").unwrap();
        assert!(why(&m).contains("has no vmlinux"));
        // Another build: one byte differs past the first chunk, or the length.
        let mut other = vmlinux.clone();
        other[2_500_000] ^= 1;
        std::fs::write(b.join("vmlinux"), &other).unwrap();
        assert!(
            why(&m).contains("holds another build than kernel k"),
            "{}",
            why(&m)
        );
        std::fs::write(b.join("vmlinux"), &vmlinux[1..]).unwrap();
        assert!(why(&m).contains("holds another build"));
        std::fs::write(b.join("vmlinux"), &vmlinux).unwrap();
        assert!(check_build_dir(&m).is_ok());
    }

    #[test]
    fn kconfig_inputs_change_with_kconfig_and_fragments_only() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        let w = |p: &str, s: &str| {
            let f = t.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w("Kconfig", "source \"kernel/Kconfig.x\"\n");
        w("kernel/Kconfig.x", "config X\n\tbool \"x\"\n");
        w("kernel/configs/tiny.config", "CONFIG_X=y\n");
        w("kernel/bpf/trampoline.c", "int a;\n");
        let frag = |s: &str| crate::build::kconfig::Fragment {
            name: "f".into(),
            path: t.join("f.config"),
            requests: vec![],
            contents: s.as_bytes().to_vec(),
        };
        let base = kconfig_inputs(t, &[frag("CONFIG_X=y\n")]).unwrap();
        assert!(base.starts_with("3 files, sha256 "), "{base}");
        // A source change (the developer's edit) keeps the configuration.
        w("kernel/bpf/trampoline.c", "int a; int b;\n");
        w(".coexist-build-1/Kconfig.generated", "ignored\n");
        assert_eq!(kconfig_inputs(t, &[frag("CONFIG_X=y\n")]).unwrap(), base);
        // A Kconfig change, a tiny config change or a fragment change does not.
        w("kernel/Kconfig.x", "config X\n\tbool \"x\"\n\tdefault y\n");
        let k = kconfig_inputs(t, &[frag("CONFIG_X=y\n")]).unwrap();
        assert_ne!(k, base);
        w("kernel/configs/tiny.config", "# CONFIG_X is not set\n");
        let c = kconfig_inputs(t, &[frag("CONFIG_X=y\n")]).unwrap();
        assert_ne!(c, k);
        assert_ne!(kconfig_inputs(t, &[frag("CONFIG_Y=y\n")]).unwrap(), c);
    }
}
