//! Fixtures built per variant: the out-of-tree modules of
//! `images/fixtures/modules/` (kbuild against the variant's build tree) and
//! the BPF objects of `images/fixtures/bpf/` (clang -target bpf, with a
//! vmlinux.h dumped from the variant's BTF by bpftool), and what the
//! variant's own selftests build out of tree ([`SELFTEST_BUILDS`]: from
//! Linux 6.7 on, the livepatch selftests' `test_klp_*` modules and their
//! helper program). Cached by content under `<cache>/fixtures/<key>/`,
//! published atomically.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::kbuild;
use crate::build::manifest::Manifest;
use crate::build::source;
use crate::build::variant::Project;
use crate::cache::{self, Cache, KeyHasher};
use crate::events::{Event, EventSink};

#[derive(Clone, Debug)]
pub struct Fixtures {
    pub key: String,
    /// `*.ko`
    pub modules: Vec<PathBuf>,
    /// `*.bpf.o`
    pub bpf: Vec<PathBuf>,
    /// Selftest builds: (path below the image's `/selftests`, file).
    pub selftests: Vec<(String, PathBuf)>,
}

/// What a collection of the kernel's selftests builds before it runs, as
/// its Makefile would on a machine with the kernel's build dir: modules
/// (`modules`, every `*.c` in it, kbuild `M=` against the variant's build) and
/// programs (one `*.c` each, linked static for the guest). A source without
/// the directory has nothing to build (up to 6.6 the livepatch modules are
/// in the kernel, `CONFIG_TEST_LIVEPATCH`).
pub struct SelftestBuild {
    /// Below `tools/testing/selftests/`.
    pub collection: &'static str,
    /// Module directory below the collection.
    pub modules: &'static str,
    /// Program sources below the collection.
    pub programs: &'static [&'static str],
}

pub const SELFTEST_BUILDS: &[SelftestBuild] = &[SelftestBuild {
    collection: "livepatch",
    modules: "test_modules",
    programs: &["test_klp-call_getpid.c"],
}];

/// One collection's build in a source: its declaration, its module
/// sources, its program sources.
type SelftestSources = (&'static SelftestBuild, Vec<PathBuf>, Vec<PathBuf>);

/// The selftest builds a source has.
fn selftest_sources(source_dir: &Path) -> Result<Vec<SelftestSources>> {
    let mut v = Vec::new();
    for b in SELFTEST_BUILDS {
        let dir = source_dir
            .join("tools/testing/selftests")
            .join(b.collection);
        let mdir = dir.join(b.modules);
        let mods = if mdir.is_dir() {
            sources(&mdir, |n| n.ends_with(".c"))?
        } else {
            Vec::new()
        };
        let progs: Vec<PathBuf> = b
            .programs
            .iter()
            .map(|p| dir.join(p))
            .filter(|p| p.is_file())
            .collect();
        if !mods.is_empty() || !progs.is_empty() {
            v.push((b, mods, progs));
        }
    }
    Ok(v)
}

/// Where a selftest build's output goes in the entry, below `selftests/`.
fn selftest_outputs(builds: &[SelftestSources]) -> Vec<String> {
    let mut out = Vec::new();
    for (b, mods, progs) in builds {
        for m in mods {
            let stem = m.file_stem().unwrap().to_string_lossy();
            out.push(format!("{}/{}/{stem}.ko", b.collection, b.modules));
        }
        for p in progs {
            let stem = p.file_stem().unwrap().to_string_lossy();
            out.push(format!("{}/{stem}", b.collection));
        }
    }
    out
}

fn sources(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && keep(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    Ok(v)
}

fn listed(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    sources(dir, |n| n.ends_with(suffix))
}

pub fn build(
    cache: &Cache,
    project: &Project,
    kernel: &Manifest,
    events: &dyn EventSink,
) -> Result<Fixtures> {
    if kernel.prebuilt.is_some() {
        return build_prebuilt(cache, project, kernel, events);
    }
    let root = project.root.join("images/fixtures");
    let mod_src = sources(&root.join("modules"), |n| {
        n.ends_with(".c") || n.ends_with(".h") || n == "Kbuild"
    })?;
    let bpf_src = sources(&root.join("bpf"), |n| {
        n.ends_with(".c") || n.ends_with(".h")
    })?;
    let mut h = KeyHasher::new("fixtures-v1");
    kernel.key_parts(&mut h);
    for p in mod_src.iter().chain(&bpf_src) {
        h.part("name", p.file_name().unwrap().to_string_lossy().as_bytes());
        h.part("file", &std::fs::read(p)?);
    }
    h.part(
        "clang",
        crate::process::first_line("clang", &["--version"]).as_bytes(),
    );
    h.part(
        "bpftool",
        crate::process::first_line("bpftool", &["--version"]).as_bytes(),
    );
    // The selftest builds come from the kernel's source (in its key).
    let st_builds = selftest_sources(&kernel.source_dir)?;
    let st_outputs = selftest_outputs(&st_builds);
    if !st_builds.is_empty() {
        h.part(
            "gcc",
            crate::process::first_line("gcc", &["--version"]).as_bytes(),
        );
    }
    let key = h.finish();
    let want = wanted(&mod_src, &[], &bpf_src, &st_outputs);
    // Modules are built in the kernel's build dir: one user at a time.
    let lock = (
        kbuild::build_dir_lock(&kernel.build_dir),
        "waiting for another run using the same kernel build dir",
    );
    let what = format!("building fixtures for {} ({key})", kernel.variant);
    in_entry(
        cache,
        &key,
        &want,
        &st_outputs,
        lock,
        what,
        events,
        |staging, st| {
            // The build dir must still be this kernel's build (a cached
            // kernel's may have been removed or reused by another commit).
            kbuild::check_build_dir(kernel)?;
            // kbuild `M=<dir> modules` in the kernel's build dir.
            let make_modules = |work: &Path, what: &str| -> Result<()> {
                let mut c = kbuild::make_command(cache, &kernel.source_dir, &kernel.build_dir);
                c.arg(format!("M={}", work.display())).arg("modules");
                crate::process::run_quiet(c, what)
                    .map_err(|e| kbuild::KernelDoesNotBuild(format!("{e:#}")))?;
                Ok(())
            };
            if !mod_src.is_empty() {
                let work = staging.join("modsrc");
                std::fs::create_dir_all(&work)?;
                for p in &mod_src {
                    std::fs::copy(p, work.join(p.file_name().unwrap()))?;
                }
                make_modules(&work, "building the fixture modules")?;
                for ko in listed(&work, ".ko")? {
                    std::fs::copy(&ko, st.join("modules").join(ko.file_name().unwrap()))?;
                }
            }

            build_bpf(&root, &bpf_src, &kernel.vmlinux, staging, st)?;
            build_selftests(&st_builds, &kernel.source_dir, staging, st, &make_modules)?;
            Ok(())
        },
    )
}

/// What a fixtures entry must hold: a `.ko` per module source (and per
/// extra module name), a `.bpf.o` per BPF source, each selftest output;
/// an entry without one of them is damaged and built again.
fn wanted(
    mod_src: &[PathBuf],
    extra_modules: &[String],
    bpf_src: &[PathBuf],
    st_outputs: &[String],
) -> Vec<PathBuf> {
    let stem = |p: &PathBuf, suffix: &str| {
        p.file_name()?
            .to_string_lossy()
            .strip_suffix(suffix)
            .map(str::to_string)
    };
    mod_src
        .iter()
        .filter_map(|p| stem(p, ".c"))
        .chain(extra_modules.iter().cloned())
        .map(|m| PathBuf::from("modules").join(format!("{m}.ko")))
        .chain(
            bpf_src
                .iter()
                .filter_map(|p| stem(p, ".bpf.c"))
                .map(|b| PathBuf::from("bpf").join(format!("{b}.bpf.o"))),
        )
        .chain(
            st_outputs
                .iter()
                .map(|rel| PathBuf::from("selftests").join(rel)),
        )
        .collect()
}

/// The fixtures entry `<cache>/fixtures/<key>/`: found when it holds
/// `want`; else, under the lock `(name, what to say while waiting)`, a
/// damaged one is discarded, `build(staging, entry)` fills `entry` (its
/// `modules/` and `bpf/` made) in a staging dir, and it is published by
/// one rename.
#[allow(clippy::too_many_arguments)]
fn in_entry(
    cache: &Cache,
    key: &str,
    want: &[PathBuf],
    st_outputs: &[String],
    (lock, waiting): (String, &str),
    what: String,
    events: &dyn EventSink,
    build: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<Fixtures> {
    let note = |what: String| events.event(&Event::Preparing { what });
    let entry = cache.dir("fixtures").join(key);
    let found = |entry: &Path| -> Result<Fixtures> {
        Ok(Fixtures {
            key: key.to_string(),
            modules: listed(&entry.join("modules"), ".ko")?,
            bpf: listed(&entry.join("bpf"), ".bpf.o")?,
            selftests: st_outputs
                .iter()
                .map(|rel| (rel.clone(), entry.join("selftests").join(rel)))
                .collect(),
        })
    };
    let sound = |entry: &Path| want.iter().all(|w| entry.join(w).is_file());
    if entry.is_dir() && sound(&entry) {
        return found(&entry);
    }
    std::fs::create_dir_all(cache.dir("fixtures"))?;
    let _lock = cache.lock(&lock, || note(waiting.into()))?;
    if entry.is_dir() {
        if sound(&entry) {
            return found(&entry);
        }
        note(format!(
            "fixtures entry {} is damaged; building it again",
            entry.display()
        ));
        cache::discard(&entry)?;
    }
    cache::remove_stale_staging(&entry)?;
    note(what);
    let staging = cache::staging_dir(&entry)?;
    let st = staging.path().join("entry");
    std::fs::create_dir_all(st.join("modules"))?;
    std::fs::create_dir_all(st.join("bpf"))?;
    build(staging.path(), &st)?;
    cache::publish(&st, &entry)?;
    found(&entry)
}

/// The selftests' own builds ([`SELFTEST_BUILDS`]) into `<st>/selftests/`:
/// each collection's modules (its `*.c` and `*.h` copied below `work`, a
/// Kbuild listing them) with `make_modules(dir, what)`, its programs with
/// `gcc -static`.
fn build_selftests(
    builds: &[SelftestSources],
    source_dir: &Path,
    work: &Path,
    st: &Path,
    make_modules: &dyn Fn(&Path, &str) -> Result<()>,
) -> Result<()> {
    for (b, mods, progs) in builds {
        let out = st.join("selftests").join(b.collection);
        if !mods.is_empty() {
            let work = work.join("selftests").join(b.collection).join(b.modules);
            std::fs::create_dir_all(&work)?;
            let headers = sources(
                &source_dir
                    .join("tools/testing/selftests")
                    .join(b.collection)
                    .join(b.modules),
                |n| n.ends_with(".h"),
            )?;
            for p in mods.iter().chain(&headers) {
                std::fs::copy(p, work.join(p.file_name().unwrap()))?;
            }
            let objs: Vec<String> = mods
                .iter()
                .map(|m| format!("{}.o", m.file_stem().unwrap().to_string_lossy()))
                .collect();
            std::fs::write(
                work.join("Kbuild"),
                format!("obj-m += {}\n", objs.join(" ")),
            )?;
            make_modules(
                &work,
                &format!("building the {} selftests' modules", b.collection),
            )?;
            std::fs::create_dir_all(out.join(b.modules))?;
            for ko in listed(&work, ".ko")? {
                std::fs::copy(&ko, out.join(b.modules).join(ko.file_name().unwrap()))?;
            }
        }
        for p in progs {
            std::fs::create_dir_all(&out)?;
            let mut c = Command::new("gcc");
            c.args(["-O2", "-static", "-o"])
                .arg(out.join(p.file_stem().unwrap()))
                .arg(p);
            crate::process::run_quiet(c, &format!("gcc {}", p.display()))?;
        }
    }
    Ok(())
}

/// The BPF objects (`clang -target bpf`) against a `vmlinux.h` dumped
/// from `vmlinux`'s BTF, into `<st>/bpf/`.
fn build_bpf(
    root: &Path,
    bpf_src: &[PathBuf],
    vmlinux: &Path,
    work: &Path,
    st: &Path,
) -> Result<()> {
    if !bpf_src.is_empty() {
        for (tool, pkg) in [("clang", "clang"), ("bpftool", "bpftool")] {
            if crate::process::which(tool).is_none() {
                source::require(&[pkg], &format!("{tool} is needed for the BPF fixtures"))?;
            }
        }
        if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
            source::require(
                &["libbpf-dev"],
                "bpf/bpf_helpers.h is needed for the BPF fixtures",
            )?;
        }
        let gen = work.join("gen");
        std::fs::create_dir_all(&gen)?;
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file"])
            .arg(vmlinux)
            .args(["format", "c"])
            .output()
            .context("cannot run bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool could not dump the BTF of {}: {}",
                vmlinux.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(gen.join("vmlinux.h"), &out.stdout)?;
        for src in bpf_src
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        {
            let name = src
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(".bpf.c", ".bpf.o");
            let mut c = Command::new("clang");
            c.args([
                "-O2",
                "-g",
                "-Wall",
                "-Werror",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
            ])
            .arg("-I")
            .arg(&gen)
            .arg("-I")
            .arg(root.join("bpf"))
            .arg("-c")
            .arg(src)
            .arg("-o")
            .arg(st.join("bpf").join(&name));
            crate::process::run_quiet(c, &format!("clang {}", src.display()))?;
        }
    }
    Ok(())
}

/// What a prebuilt kernel's declared source gives that its packages do
/// not ship built: (directory below the tree, file name prefix, required).
/// Every `<prefix>*.c` there is built out of tree against the headers like
/// the project's modules, and goes to the image's `extra/` as `<stem>.ko`
/// (`-` as `_`): the livepatch sample (the suites' `livepatch-sample`),
/// 6.1's livepatch selftest modules (`lib/livepatch/test_klp_*`, which
/// Debian's config leaves out, `CONFIG_TEST_LIVEPATCH`; from 6.7 on they
/// are not there) and the ftrace-direct samples (ftracetest's direct
/// tests).
pub const PREBUILT_SOURCE_MODULES: &[(&str, &str, bool)] = &[
    ("samples/livepatch", "livepatch-sample", true),
    ("lib/livepatch", "test_klp_", false),
    ("samples/ftrace", "ftrace-direct", false),
];

/// Fixtures for a prebuilt kernel: the project's modules, the
/// [`PREBUILT_SOURCE_MODULES`] and the declared source's
/// [`SELFTEST_BUILDS`] built with kbuild against its headers package
/// (`make -C <headers> M=<dir> modules`), in a copy of the headers dir
/// with the kernel's `vmlinux` placed in it (kbuild makes a module's BTF
/// only when `vmlinux` is in the dir it builds against; `/usr/src` is not
/// written), each `.ko`'s vermagic checked against the kernel's and its
/// `.BTF` section required; the BPF objects against the `vmlinux.h` of
/// the kernel's BTF. Without declared headers: an empty set, said so.
fn build_prebuilt(
    cache: &Cache,
    project: &Project,
    kernel: &Manifest,
    events: &dyn EventSink,
) -> Result<Fixtures> {
    let pkg = kernel.prebuilt.clone().unwrap_or_default();
    if kernel.build_dir.as_os_str().is_empty() {
        events.event(&Event::Note(match pkg.local_image {
            Some(_) => format!(
                "fixtures: none for local {} ({}): it declares no headers (local: {{headers: \
                 <its build dir>}})",
                kernel.variant,
                pkg.origin()
            ),
            None => format!(
                "fixtures: none for prebuilt {} ({}): it declares no headers package \
                 (prebuilt: {{headers: linux-headers-{}}})",
                kernel.variant,
                pkg.origin(),
                kernel.kernel_release
            ),
        }));
        let mut h = KeyHasher::new("fixtures-none-v1");
        kernel.key_parts(&mut h);
        return Ok(Fixtures {
            key: h.finish(),
            modules: Vec::new(),
            bpf: Vec::new(),
            selftests: Vec::new(),
        });
    }
    let headers = &kernel.build_dir;
    let headers_pkg = headers
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let root = project.root.join("images/fixtures");
    let mod_src = sources(&root.join("modules"), |n| {
        n.ends_with(".c") || n.ends_with(".h") || n == "Kbuild"
    })?;
    let bpf_src = sources(&root.join("bpf"), |n| {
        n.ends_with(".c") || n.ends_with(".h")
    })?;
    let mut samples: Vec<(PathBuf, String)> = Vec::new();
    if !kernel.source_dir.as_os_str().is_empty() {
        for (dir, prefix, required) in PREBUILT_SOURCE_MODULES {
            let d = kernel.source_dir.join(dir);
            let found = listed(&d, ".c")?
                .into_iter()
                .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .collect::<Vec<_>>();
            if found.is_empty() && *required {
                bail!(
                    "the source tree {} of prebuilt {} has no {dir}/{prefix}*.c",
                    kernel.source_dir.display(),
                    kernel.variant
                );
            }
            for p in found {
                let name = p.file_stem().unwrap().to_string_lossy().replace('-', "_");
                samples.push((p, name));
            }
        }
    }
    // The declared source's selftests' own builds (6.7 on), as for a build.
    let st_builds = if kernel.source_dir.as_os_str().is_empty() {
        Vec::new()
    } else {
        selftest_sources(&kernel.source_dir)?
    };
    let st_outputs = selftest_outputs(&st_builds);
    let mut h = KeyHasher::new("fixtures-prebuilt-v1");
    kernel.key_parts(&mut h);
    h.part("headers", headers_pkg.as_bytes());
    h.part(
        "headers-version",
        source::debian_version(&headers_pkg)
            .unwrap_or_default()
            .as_bytes(),
    );
    for p in mod_src.iter().chain(&bpf_src) {
        h.part("name", p.file_name().unwrap().to_string_lossy().as_bytes());
        h.part("file", &std::fs::read(p)?);
    }
    for (p, name) in &samples {
        h.part("sample", name.as_bytes());
        h.part("file", &std::fs::read(p)?);
    }
    // (The source is in no key of the kernel's: its files are, here.)
    for (b, mods, progs) in &st_builds {
        h.part("selftests", b.collection.as_bytes());
        for p in mods.iter().chain(progs) {
            h.part("name", p.file_name().unwrap().to_string_lossy().as_bytes());
            h.part("file", &std::fs::read(p)?);
        }
        h.part(
            "gcc",
            crate::process::first_line("gcc", &["--version"]).as_bytes(),
        );
    }
    for (tool, args) in [
        ("clang", &["--version"][..]),
        ("bpftool", &["--version"][..]),
        ("pahole", &["--version"][..]),
    ] {
        h.part(tool, crate::process::first_line(tool, args).as_bytes());
    }
    let key = h.finish();
    let sample_names: Vec<String> = samples.iter().map(|(_, n)| n.clone()).collect();
    let want = wanted(&mod_src, &sample_names, &bpf_src, &st_outputs);
    let lock = (
        format!("fixtures-{key}"),
        "waiting for another run building the same fixtures",
    );
    let what = format!(
        "building fixtures for prebuilt {} against {headers_pkg} ({key})",
        kernel.variant
    );
    in_entry(
        cache,
        &key,
        &want,
        &st_outputs,
        lock,
        what,
        events,
        |staging, st| {
            let hdr = staging.join("headers");
            copy_headers(headers, &hdr)?;
            if std::fs::hard_link(&kernel.vmlinux, hdr.join("vmlinux")).is_err() {
                std::fs::copy(&kernel.vmlinux, hdr.join("vmlinux"))?;
            }
            let vermagic = kernel_vermagic(&kernel.modules_dir)?;
            // (directory, sources, Kbuild text or None to copy the project's,
            // renames of the built modules).
            let mut builds: Vec<(PathBuf, Vec<PathBuf>, Option<String>)> = Vec::new();
            if !mod_src.is_empty() {
                builds.push((staging.join("modsrc"), mod_src.clone(), None));
            }
            if !samples.is_empty() {
                let objs: Vec<String> = samples
                    .iter()
                    .map(|(p, _)| format!("{}.o", p.file_stem().unwrap().to_string_lossy()))
                    .collect();
                builds.push((
                    staging.join("samples"),
                    samples.iter().map(|(p, _)| p.clone()).collect(),
                    Some(format!("obj-m += {}\n", objs.join(" "))),
                ));
            }
            // `make -C <headers copy> M=<dir> modules`, every module it makes
            // checked: made with BTF, the kernel's vermagic, a .BTF section.
            let against_headers = |work: &Path, what: &str| -> Result<()> {
                let mut c = Command::new("make");
                c.arg("-C")
                    .arg(&hdr)
                    .arg(format!("M={}", work.display()))
                    .arg(format!(
                        "-j{}",
                        std::thread::available_parallelism().map_or(1, |n| n.get())
                    ))
                    // The headers package has no resolve_btfids; it fills a
                    // module's .BTF_ids section, which these modules do not have.
                    .arg("RESOLVE_BTFIDS=true")
                    .arg("modules")
                    .env_remove("ARCH")
                    .env_remove("CROSS_COMPILE")
                    .env_remove("KBUILD_OUTPUT");
                let log = crate::process::run_quiet(c, &format!("{what} against {headers_pkg}"))
                    .map_err(|e| kbuild::KernelDoesNotBuild(format!("{e:#}")))?;
                if let Some(l) = log.lines().find(|l| l.contains("Skipping BTF generation")) {
                    bail!("kbuild made a module without BTF: {l}");
                }
                for ko in listed(work, ".ko")? {
                    let got = modinfo_vermagic(&ko)?;
                    if got != vermagic {
                        bail!(
                            "{}: vermagic '{got}', but the kernel's modules have '{vermagic}'",
                            ko.display()
                        );
                    }
                    if !has_section(&ko, ".BTF")? {
                        bail!("{}: no .BTF section (module BTF)", ko.display());
                    }
                }
                Ok(())
            };
            for (work, files, kbuild_text) in &builds {
                std::fs::create_dir_all(work)?;
                for p in files {
                    std::fs::copy(p, work.join(p.file_name().unwrap()))?;
                }
                if let Some(t) = kbuild_text {
                    std::fs::write(work.join("Kbuild"), t)?;
                }
                against_headers(work, &format!("building modules ({})", work.display()))?;
                for ko in listed(work, ".ko")? {
                    let stem = ko.file_stem().unwrap().to_string_lossy().replace('-', "_");
                    std::fs::copy(&ko, st.join("modules").join(format!("{stem}.ko")))?;
                }
            }
            build_bpf(&root, &bpf_src, &kernel.vmlinux, staging, st)?;
            build_selftests(
                &st_builds,
                &kernel.source_dir,
                staging,
                st,
                &against_headers,
            )?;
            Ok(())
        },
    )
}

/// `cp -a` of a Debian headers dir, its relative symlinks (`scripts ->
/// ../../lib/linux-kbuild-6.1/scripts`) made absolute so they still
/// point where they did.
fn copy_headers(from: &Path, to: &Path) -> Result<()> {
    let mut c = Command::new("cp");
    c.arg("-a").arg(from).arg(to);
    crate::process::run_quiet(c, &format!("cp -a {}", from.display()))?;
    fn walk(orig: &Path, copy: &Path) -> Result<()> {
        for e in std::fs::read_dir(copy)? {
            let e = e?;
            let p = e.path();
            let o = orig.join(e.file_name());
            let ft = e.file_type()?;
            if ft.is_symlink() {
                let t = std::fs::read_link(&p)?;
                if t.is_relative() {
                    let abs = orig.join(&t);
                    std::fs::remove_file(&p)?;
                    std::os::unix::fs::symlink(&abs, &p)?;
                }
            } else if ft.is_dir() {
                walk(&o, &p)?;
            }
        }
        Ok(())
    }
    walk(from, to)
}

/// The vermagic of a kernel's modules: that of the first module in its
/// `modules.dep` ([`first_module`]).
fn kernel_vermagic(modules_dir: &Path) -> Result<String> {
    let dep = std::fs::read_to_string(modules_dir.join("modules.dep"))
        .with_context(|| format!("cannot read {}/modules.dep", modules_dir.display()))?;
    let first = first_module(&dep)
        .with_context(|| format!("{}/modules.dep lists no module", modules_dir.display()))?;
    modinfo_vermagic(&modules_dir.join(first))
}

/// The first module a `modules.dep` lists: `.ko`, or compressed as
/// Debian's 6.12 ships them (`.ko.xz`; modinfo reads both).
fn first_module(modules_dep: &str) -> Option<&str> {
    modules_dep.lines().find_map(|l| {
        l.split(':').next().filter(|p| {
            [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| p.ends_with(s))
        })
    })
}

fn modinfo_vermagic(ko: &Path) -> Result<String> {
    let out = Command::new("modinfo")
        .args(["-F", "vermagic"])
        .arg(ko)
        .output()
        .context("cannot run modinfo (kmod)")?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || v.is_empty() {
        bail!("modinfo found no vermagic in {}", ko.display());
    }
    Ok(v)
}

/// Whether an ELF file has a section of that name (`readelf -S`).
fn has_section(file: &Path, name: &str) -> Result<bool> {
    let out = Command::new("readelf")
        .args(["-S", "--wide"])
        .arg(file)
        .output()
        .context("cannot run readelf (binutils)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|w| w == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_module_of_a_modules_dep_plain_or_compressed() {
        assert_eq!(
            first_module("kernel/arch/x86/events/amd/power.ko.xz:\nkernel/b.ko: kernel/c.ko\n"),
            Some("kernel/arch/x86/events/amd/power.ko.xz")
        );
        assert_eq!(
            first_module("\nkernel/drivers/virtio/virtio.ko:\n"),
            Some("kernel/drivers/virtio/virtio.ko")
        );
        assert_eq!(first_module("# nothing\n"), None);
    }

    #[test]
    fn a_headers_copy_keeps_its_links_pointing_where_they_did() {
        let d = tempfile::tempdir().unwrap();
        // Debian's layout: /usr/src/linux-headers-<release>/scripts ->
        // ../../lib/linux-kbuild-6.1/scripts, an absolute link, a file.
        let usr = d.path().join("usr");
        let kbuild = usr.join("lib/linux-kbuild-6.1/scripts");
        std::fs::create_dir_all(&kbuild).unwrap();
        std::fs::write(kbuild.join("Makefile.modfinal"), "x").unwrap();
        let hdr = usr.join("src/linux-headers-6.1.0-57-amd64");
        std::fs::create_dir_all(hdr.join("include/config")).unwrap();
        std::fs::write(hdr.join("Makefile"), "include /elsewhere\n").unwrap();
        std::os::unix::fs::symlink("../../lib/linux-kbuild-6.1/scripts", hdr.join("scripts"))
            .unwrap();
        std::os::unix::fs::symlink("/abs/target", hdr.join("include/config/abs")).unwrap();
        let to = d.path().join("copy");
        copy_headers(&hdr, &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("scripts/Makefile.modfinal")).unwrap(),
            "x"
        );
        assert_eq!(
            std::fs::read_link(to.join("scripts")).unwrap(),
            hdr.join("../../lib/linux-kbuild-6.1/scripts")
        );
        assert_eq!(
            std::fs::read_link(to.join("include/config/abs")).unwrap(),
            Path::new("/abs/target")
        );
        assert_eq!(
            std::fs::read_to_string(to.join("Makefile")).unwrap(),
            "include /elsewhere\n"
        );
        // The original is untouched.
        assert!(std::fs::read_link(hdr.join("scripts"))
            .unwrap()
            .is_relative());
    }

    #[test]
    fn selftest_builds_are_what_the_source_has() {
        let d = tempfile::tempdir().unwrap();
        // A 6.1-like source: the livepatch tests, no test_modules/, no
        // helper program: nothing to build.
        let lp = d.path().join("tools/testing/selftests/livepatch");
        std::fs::create_dir_all(&lp).unwrap();
        std::fs::write(lp.join("test-livepatch.sh"), "").unwrap();
        assert!(selftest_sources(d.path()).unwrap().is_empty());
        // A 6.12-like one: every module source and the helper program.
        let m = lp.join("test_modules");
        std::fs::create_dir_all(&m).unwrap();
        for f in ["test_klp_b.c", "test_klp_a.c", "Makefile", "x.h"] {
            std::fs::write(m.join(f), "").unwrap();
        }
        std::fs::write(lp.join("test_klp-call_getpid.c"), "").unwrap();
        let b = selftest_sources(d.path()).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0.collection, "livepatch");
        assert_eq!(
            selftest_outputs(&b),
            [
                "livepatch/test_modules/test_klp_a.ko",
                "livepatch/test_modules/test_klp_b.ko",
                "livepatch/test_klp-call_getpid",
            ]
        );
    }
}
