//! Fixtures built per variant: the out-of-tree modules of
//! `images/fixtures/modules/` (kbuild against the variant's build tree) and
//! the BPF objects of `images/fixtures/bpf/` (clang -target bpf, with a
//! vmlinux.h dumped from the variant's BTF by bpftool). Cached by content
//! under `<cache>/fixtures/<key>/`, published atomically.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::cache::{self, Cache, KeyHasher};
use crate::build::kbuild::{self, Manifest};
use crate::build::source;
use crate::build::variant::Project;
use crate::events::{Event, EventSink};

#[derive(Clone, Debug)]
pub struct Fixtures {
    pub key: String,
    /// `*.ko`
    pub modules: Vec<PathBuf>,
    /// `*.bpf.o`
    pub bpf: Vec<PathBuf>,
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
    let note = |what: String| events.event(&Event::Preparing { what });
    let root = project.root.join("images/fixtures");
    let mod_src = sources(&root.join("modules"), |n| {
        n.ends_with(".c") || n.ends_with(".h") || n == "Kbuild"
    })?;
    let bpf_src = sources(&root.join("bpf"), |n| {
        n.ends_with(".c") || n.ends_with(".h")
    })?;
    let mut h = KeyHasher::new("fixtures-v1");
    h.part("kernel", kernel.key.as_bytes());
    for p in mod_src.iter().chain(&bpf_src) {
        h.part("name", p.file_name().unwrap().to_string_lossy().as_bytes());
        h.part("file", &std::fs::read(p)?);
    }
    h.part(
        "clang",
        source::first_line("clang", &["--version"]).as_bytes(),
    );
    h.part(
        "bpftool",
        source::first_line("bpftool", &["--version"]).as_bytes(),
    );
    let key = h.finish();
    let entry = cache.dir("fixtures").join(&key);
    let found = |entry: &Path| -> Result<Fixtures> {
        Ok(Fixtures {
            key: key.clone(),
            modules: listed(&entry.join("modules"), ".ko")?,
            bpf: listed(&entry.join("bpf"), ".bpf.o")?,
        })
    };
    // Every module source gives a .ko and every BPF source a .bpf.o; an
    // entry without them is damaged and built again.
    let want: Vec<PathBuf> = mod_src
        .iter()
        .filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            n.strip_suffix(".c")
                .map(|stem| PathBuf::from("modules").join(format!("{stem}.ko")))
        })
        .chain(bpf_src.iter().filter_map(|p| {
            let n = p.file_name()?.to_string_lossy().into_owned();
            n.strip_suffix(".bpf.c")
                .map(|stem| PathBuf::from("bpf").join(format!("{stem}.bpf.o")))
        }))
        .collect();
    let sound = |entry: &Path| want.iter().all(|w| entry.join(w).is_file());
    if entry.is_dir() && sound(&entry) {
        return found(&entry);
    }
    std::fs::create_dir_all(cache.dir("fixtures"))?;
    // Modules are built in the kernel's build dir: one user at a time.
    let _lock = cache.lock(&kbuild::build_dir_lock(&kernel.build_dir), || {
        note("waiting for another run using the same kernel build dir".into())
    })?;
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
    note(format!("building fixtures for {} ({key})", kernel.variant));
    let staging = cache::staging_dir(&entry)?;
    let st = staging.path().join("entry");
    std::fs::create_dir_all(st.join("modules"))?;
    std::fs::create_dir_all(st.join("bpf"))?;

    if !mod_src.is_empty() {
        let work = staging.path().join("modsrc");
        std::fs::create_dir_all(&work)?;
        for p in &mod_src {
            std::fs::copy(p, work.join(p.file_name().unwrap()))?;
        }
        let mut c = kbuild::make_command(cache, &kernel.source_dir, &kernel.build_dir);
        c.arg(format!("M={}", work.display())).arg("modules");
        kbuild::run_quiet(c, "building the fixture modules")
            .map_err(|e| kbuild::KernelDoesNotBuild(format!("{e:#}")))?;
        for ko in listed(&work, ".ko")? {
            std::fs::copy(&ko, st.join("modules").join(ko.file_name().unwrap()))?;
        }
    }

    if !bpf_src.is_empty() {
        for (tool, pkg) in [("clang", "clang"), ("bpftool", "bpftool")] {
            if source::which(tool).is_none() {
                source::require(&[pkg], &format!("{tool} is needed for the BPF fixtures"))?;
            }
        }
        if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
            source::require(
                &["libbpf-dev"],
                "bpf/bpf_helpers.h is needed for the BPF fixtures",
            )?;
        }
        let gen = staging.path().join("gen");
        std::fs::create_dir_all(&gen)?;
        let out = Command::new("bpftool")
            .args(["btf", "dump", "file"])
            .arg(&kernel.vmlinux)
            .args(["format", "c"])
            .output()
            .context("cannot run bpftool")?;
        if !out.status.success() {
            bail!(
                "bpftool could not dump the BTF of {}: {}",
                kernel.vmlinux.display(),
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
            kbuild::run_quiet(c, &format!("clang {}", src.display()))?;
        }
    }
    cache::publish(&st, &entry)?;
    found(&entry)
}
