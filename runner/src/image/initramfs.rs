//! Stage 2: built kernel -> guest image. An image recipe (`images/*.yaml`)
//! names what goes into the initramfs besides the agent (PID 1): busybox,
//! the variant's modules, host programs with the shared libraries they
//! load (`host`), the variant's selftests, extra files. The result is a
//! cpio (newc) archive, cached by the content hash of its inputs and
//! published atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::build::manifest::Manifest;
use crate::build::source;
use crate::build::variant::Project;
use crate::cache::{Cache, KeyHasher};
use crate::events::{Event, EventSink};
use crate::image::fixtures::Fixtures;
use crate::input::yaml_error;

pub use super::entry::Entry;
use super::host;
use crate::build::modules::{self, Preload};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// A static busybox on the host.
    pub busybox: PathBuf,
    /// The Debian package that ships it (installed when missing).
    pub busybox_package: Option<String>,
    /// Include the variant's `lib/modules/<release>` tree.
    #[serde(default = "yes")]
    pub modules: bool,
    /// Include the variant's fixtures: modules in
    /// `/lib/modules/<release>/extra/`, BPF objects in `/fixtures/bpf/`,
    /// the selftests' own builds below `/selftests/<collection>/`.
    #[serde(default = "yes")]
    pub fixtures: bool,
    /// Extra files: project-relative source -> guest path.
    #[serde(default)]
    pub files: Vec<ExtraFile>,
    /// Host programs (names looked up in the host's PATH) copied with the
    /// shared libraries they load, at their host paths; they take the
    /// place of busybox's applets of the same name.
    #[serde(default)]
    pub host_programs: Vec<String>,
    /// Directories of the variant's `tools/testing/selftests` to put at
    /// `/selftests/<dir>` (with the kselftest runner, `kselftest/`).
    #[serde(default)]
    pub selftests: Vec<String>,
    /// `none` (the default: the fastest boot) or `gzip`.
    #[serde(default)]
    pub compression: Compression,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    pub from: PathBuf,
    pub to: String,
    #[serde(default = "default_mode")]
    pub mode: u32,
}

fn default_mode() -> u32 {
    0o644
}

/// How the archive is stored. Uncompressed boots faster under TCG (the
/// kernel does not inflate it); gzip is a third of the size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// Writes entries as a newc cpio archive (parents must come first),
/// compressed as asked.
pub fn write_initramfs(entries: &[Entry], out: impl Write, c: Compression) -> Result<()> {
    match c {
        Compression::None => write_cpio(entries, out)?.flush()?,
        Compression::Gzip => write_cpio(
            entries,
            flate2::write::GzEncoder::new(out, flate2::Compression::fast()),
        )?
        .finish()
        .map(|_| ())?,
    }
    Ok(())
}

fn write_cpio<W: Write>(entries: &[Entry], out: W) -> Result<W> {
    use cpio::newc::{Builder, ModeFileType};
    let mut w = out;
    for (i, e) in entries.iter().enumerate() {
        let name = e.path().trim_start_matches('/');
        let b = Builder::new(name).ino(i as u32 + 1).uid(0).gid(0).mtime(0);
        w = match e {
            Entry::Dir { mode, .. } => b
                .mode(*mode)
                .set_mode_file_type(ModeFileType::Directory)
                .nlink(2)
                .write(w, 0)
                .finish()?,
            Entry::File { mode, data, .. } => {
                let mut fw = b
                    .mode(*mode)
                    .set_mode_file_type(ModeFileType::Regular)
                    .nlink(1)
                    .write(w, data.len() as u32);
                fw.write_all(data)?;
                fw.finish()?
            }
            Entry::Symlink { target, .. } => {
                let mut fw = b
                    .mode(0o777)
                    .set_mode_file_type(ModeFileType::Symlink)
                    .nlink(1)
                    .write(w, target.len() as u32);
                fw.write_all(target.as_bytes())?;
                fw.finish()?
            }
        };
    }
    Ok(cpio::newc::trailer(w)?)
}

/// Adds `dir` and its parents (once each).
fn push_dirs(entries: &mut Vec<Entry>, dir: &str) {
    let mut cur = String::new();
    for part in dir.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        if !entries.iter().any(|e| e.path() == cur) {
            entries.push(Entry::Dir {
                path: cur.clone(),
                mode: 0o755,
            });
        }
    }
}

fn push_file(entries: &mut Vec<Entry>, path: &str, mode: u32, data: Vec<u8>) {
    if entries.iter().any(|e| e.path() == path) {
        return;
    }
    if let Some((parent, _)) = path.rsplit_once('/') {
        push_dirs(entries, parent);
    }
    entries.push(Entry::File {
        path: path.to_string(),
        mode,
        data,
    });
}

/// Adds a host directory tree under `guest` (files and symlinks).
fn push_tree(entries: &mut Vec<Entry>, host: &Path, guest: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    push_dirs(entries, guest);
    let mut items: Vec<_> = std::fs::read_dir(host)
        .with_context(|| format!("cannot read {}", host.display()))?
        .collect::<std::io::Result<_>>()?;
    items.sort_by_key(|e| e.file_name());
    for e in items {
        let name = e.file_name().to_string_lossy().into_owned();
        let gp = format!("{guest}/{name}");
        let ft = e.file_type()?;
        if ft.is_dir() {
            push_tree(entries, &e.path(), &gp)?;
        } else if ft.is_symlink() {
            let t = std::fs::read_link(e.path())?;
            entries.push(Entry::Symlink {
                path: gp,
                target: t.to_string_lossy().into_owned(),
            });
        } else if ft.is_file() {
            let mode = e.metadata()?.permissions().mode() & 0o7777;
            entries.push(Entry::File {
                path: gp,
                mode,
                data: std::fs::read(e.path())?,
            });
        }
    }
    Ok(())
}

/// Whether `d` names a directory of `tools/testing/selftests` (one path
/// part, not hidden).
pub fn is_selftest_dir(d: &str) -> bool {
    !d.is_empty() && !d.contains('/') && !d.starts_with('.')
}

/// The variant's selftests: `tools/testing/selftests/<dir>` of its source
/// at `/selftests/<dir>` for each `dir`, and the kselftest runner.
pub fn selftest_entries(source_dir: &Path, dirs: &[String]) -> Result<Vec<Entry>> {
    let mut e = Vec::new();
    if dirs.is_empty() {
        return Ok(e);
    }
    let root = source_dir.join("tools/testing/selftests");
    for d in std::iter::once("kselftest").chain(dirs.iter().map(String::as_str)) {
        if !is_selftest_dir(d) {
            bail!("'{d}' is not a directory name of tools/testing/selftests");
        }
        let host = root.join(d);
        if !host.is_dir() {
            bail!("{} does not exist in the variant's source", host.display());
        }
        push_tree(
            &mut e,
            &host,
            &format!("{}/{d}", coexist_proto::SELFTESTS_DIR),
        )?;
    }
    Ok(e)
}

/// depmod over the modules a prebuilt kernel's image carries: the preload
/// modules and `extra/<fixture>.ko`, under `<work>/lib/modules/<release>/`
/// with the kernel's `modules.builtin*` and `modules.order`; the preload's
/// index files are replaced by the result.
fn reindex(
    modules_dir: &Path,
    release: &str,
    p: &mut Preload,
    fixture_modules: &[PathBuf],
    work: &Path,
) -> Result<()> {
    let dir = work.join("lib/modules").join(release);
    std::fs::create_dir_all(dir.join("extra"))?;
    for rel in &p.order {
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::copy(modules_dir.join(rel), &to)?;
    }
    for m in fixture_modules {
        std::fs::copy(m, dir.join("extra").join(m.file_name().unwrap()))?;
    }
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if modules_dir.join(f).is_file() {
            std::fs::copy(modules_dir.join(f), dir.join(f))?;
        }
    }
    let mut c = std::process::Command::new(
        crate::process::which("depmod").unwrap_or_else(|| "depmod".into()),
    );
    c.arg("-b").arg(work).arg(release);
    crate::process::run_quiet(c, "depmod over the image's modules")?;
    for (rel, host) in p.files.iter_mut() {
        if rel.starts_with("modules.") {
            let new = dir.join(&*rel);
            if new.is_file() {
                *host = new;
            }
        }
    }
    Ok(())
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    pub key: String,
    pub path: PathBuf,
}

/// Builds the static guest agent with cargo (crt-static, the host target).
pub fn build_agent(project: &Project, events: &dyn EventSink) -> Result<PathBuf> {
    // Once per run: every variant's image uses the same agent.
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return Ok(p.clone());
    }
    let p = cargo_build_agent(project, events)?;
    *built = Some(p.clone());
    Ok(p)
}

fn cargo_build_agent(project: &Project, events: &dyn EventSink) -> Result<PathBuf> {
    let target = "x86_64-unknown-linux-gnu";
    let target_dir = project.root.join("target/agent");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    events.event(&Event::Preparing {
        what: "building the guest agent (static)".into(),
    });
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&project.root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "coexist-agent",
            "--target",
            target,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = crate::teardown::Group::spawn(&mut cmd)
        .and_then(|g| g.wait_with_output())
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "building the guest agent failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(target_dir.join(target).join("release/coexist-agent"))
}

pub fn load_recipe(project: &Project, name: &str) -> Result<(Recipe, Vec<u8>)> {
    let path = project.root.join("images").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("image recipe '{name}': cannot read {}", path.display()))?;
    let r: Recipe = serde_yaml::from_str(&text).map_err(|e| yaml_error(&path, &e))?;
    Ok((r, text.into_bytes()))
}

/// Checks a recipe before anything is built: it parses, its host
/// programs are on this machine, its selftest directories are names.
/// Errors name the recipe file, and the line of the entry.
pub fn check_recipe(project: &Project, name: &str) -> Result<Recipe> {
    let (recipe, bytes) = load_recipe(project, name)?;
    let path = project.root.join("images").join(format!("{name}.yaml"));
    let text = String::from_utf8_lossy(&bytes);
    let at = |needle: &str| crate::input::place(&path, &text, 1, needle);
    for (i, p) in recipe.host_programs.iter().enumerate() {
        if recipe.host_programs[..i].contains(p) {
            bail!("{}: host program '{p}' is listed twice", at(p));
        }
        host::find(p).map_err(|e| anyhow::anyhow!("{}: {e:#}", at(p)))?;
    }
    for d in &recipe.selftests {
        if !is_selftest_dir(d) || d == "kselftest" {
            bail!(
                "{}: selftests: '{d}' is not a directory name of tools/testing/selftests (kselftest/ comes along by itself)",
                at(d)
            );
        }
    }
    Ok(recipe)
}

/// The archive's entries for a recipe, agent and kernel. With `preload`
/// (a modular kernel), the image has those modules of the kernel's tree
/// and the list of them to load instead of the whole tree.
#[allow(clippy::too_many_arguments)]
pub fn entries(
    project: &Project,
    recipe: &Recipe,
    agent: &[u8],
    busybox: &[u8],
    kernel: &Manifest,
    fixtures: Option<&Fixtures>,
    extra: &[Entry],
    preload: Option<&Preload>,
) -> Result<Vec<Entry>> {
    let mut e = Vec::new();
    for d in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/dev",
        "/proc",
        "/sys",
        "/tmp",
        "/run",
        "/root",
        "/etc",
        "/lib/modules",
    ] {
        push_dirs(&mut e, d);
    }
    push_file(&mut e, "/init", 0o755, agent.to_vec());
    // Host programs and selftests: before busybox's links, which give way.
    for x in extra {
        match x {
            Entry::Dir { path, .. } => push_dirs(&mut e, path),
            Entry::File { path, mode, data } => push_file(&mut e, path, *mode, data.clone()),
            Entry::Symlink { path, .. } => {
                if let Some((parent, _)) = path.rsplit_once('/') {
                    push_dirs(&mut e, parent);
                }
                if !e.iter().any(|y| y.path() == path) {
                    e.push(x.clone());
                }
            }
        }
    }
    push_file(&mut e, "/bin/busybox", 0o755, busybox.to_vec());
    e.push(Entry::Symlink {
        path: "/bin/sh".into(),
        target: "busybox".into(),
    });
    let guest_modules = format!("/lib/modules/{}", kernel.kernel_release);
    match (recipe.modules, preload) {
        (false, _) => {}
        (true, None) => push_tree(&mut e, &kernel.modules_dir, &guest_modules)?,
        // A distribution's tree is hundreds of MB: only what the guest
        // loads to reach READY, its depmod indexes, and the list in order.
        (true, Some(p)) => {
            for (rel, host) in &p.files {
                let data = std::fs::read(host)
                    .with_context(|| format!("cannot read {}", host.display()))?;
                push_file(&mut e, &format!("{guest_modules}/{rel}"), 0o644, data);
            }
            let mut list = p.order.join("\n");
            list.push('\n');
            push_file(
                &mut e,
                coexist_proto::PRELOAD_MODULES,
                0o644,
                list.into_bytes(),
            );
        }
    }
    if let (true, Some(fx)) = (recipe.fixtures, fixtures) {
        let extra = format!("/lib/modules/{}/extra", kernel.kernel_release);
        for (dir, files) in [
            (extra.as_str(), &fx.modules),
            (coexist_proto::BPF_FIXTURE_DIR, &fx.bpf),
        ] {
            for f in files {
                let name = f.file_name().unwrap().to_string_lossy();
                push_file(&mut e, &format!("{dir}/{name}"), 0o644, std::fs::read(f)?);
            }
        }
        // Next to the selftests that load or run them.
        for (rel, f) in &fx.selftests {
            let mode = if rel.ends_with(".ko") { 0o644 } else { 0o755 };
            let guest = format!("{}/{rel}", coexist_proto::SELFTESTS_DIR);
            push_file(&mut e, &guest, mode, std::fs::read(f)?);
        }
    }
    for f in &recipe.files {
        let from = project.root.join(&f.from);
        let data =
            std::fs::read(&from).with_context(|| format!("image file {}", from.display()))?;
        if !f.to.starts_with('/') {
            bail!("image file '{}': guest path must be absolute", f.to);
        }
        push_file(&mut e, &f.to, f.mode, data);
    }
    Ok(e)
}

/// Builds (or finds) the image for a recipe and a built kernel.
pub fn build(
    cache: &Cache,
    project: &Project,
    recipe_name: &str,
    kernel: &Manifest,
    fixtures: Option<&Fixtures>,
    events: &dyn EventSink,
) -> Result<Image> {
    let (recipe, recipe_bytes) = load_recipe(project, recipe_name)?;
    if !recipe.busybox.is_file() {
        match &recipe.busybox_package {
            Some(p) => source::require(&[p], &format!("{} is missing", recipe.busybox.display()))?,
            None => bail!(
                "image recipe '{recipe_name}': {} does not exist",
                recipe.busybox.display()
            ),
        }
    }
    let agent_path = build_agent(project, events)?;
    let agent = std::fs::read(&agent_path)?;
    let busybox = std::fs::read(&recipe.busybox)?;
    let recipe_path = project
        .root
        .join("images")
        .join(format!("{recipe_name}.yaml"));
    let memo = cache.dir("host-ldd");
    let mut extra = host::program_entries(&recipe.host_programs, Some(&memo))
        .map_err(|e| anyhow::anyhow!("{}: host_programs: {e:#}", recipe_path.display()))?;
    let preload = match &kernel.prebuilt {
        None => {
            extra.extend(
                selftest_entries(&kernel.source_dir, &recipe.selftests)
                    .map_err(|e| anyhow::anyhow!("{}: selftests: {e:#}", recipe_path.display()))?,
            );
            None
        }
        Some(p) => {
            // The declared source's selftests, as for a build.
            if !kernel.source_dir.as_os_str().is_empty() {
                extra.extend(
                    selftest_entries(&kernel.source_dir, &recipe.selftests).map_err(|e| {
                        anyhow::anyhow!("{}: selftests: {e:#}", recipe_path.display())
                    })?,
                );
            }
            let pre = modules::preload(&kernel.modules_dir, modules::AGENT_CHANNEL_MODULES)
                .with_context(|| format!("the modules the agent needs from {}", p.origin()))?;
            events.event(&Event::Note(format!(
                "image for {} {}: {} module(s) to load before READY ({}){}; {}",
                if p.local_image.is_some() {
                    "local"
                } else {
                    "prebuilt"
                },
                kernel.variant,
                pre.order.len(),
                pre.order
                    .iter()
                    .map(|m| modules::module_name(m))
                    .collect::<Vec<_>>()
                    .join(", "),
                if pre.builtin.is_empty() {
                    String::new()
                } else {
                    format!("; built in: {}", pre.builtin.join(", "))
                },
                if kernel.source_dir.as_os_str().is_empty() {
                    "no selftests (it declares no source)"
                } else {
                    "selftests from its declared source"
                }
            )));
            Some(pre)
        }
    };
    // A prebuilt kernel's fixture modules are indexed with the modules the
    // image carries (depmod over just those), so modprobe finds them (the
    // selftests load theirs by name).
    let _depmod_dir;
    let mut preload = preload;
    if let (Some(p), Some(fx)) = (preload.as_mut(), fixtures) {
        if recipe.fixtures && !fx.modules.is_empty() {
            let d = tempfile::tempdir()?;
            reindex(
                &kernel.modules_dir,
                &kernel.kernel_release,
                p,
                &fx.modules,
                d.path(),
            )?;
            _depmod_dir = d;
        }
    }
    let mut h = KeyHasher::new("image-v2");
    h.part("recipe", &recipe_bytes)
        .part("agent", &agent)
        .part("busybox", &busybox);
    kernel.key_parts(&mut h).part(
        "fixtures",
        fixtures.map(|f| f.key.as_bytes()).unwrap_or_default(),
    );
    for x in &extra {
        match x {
            Entry::Dir { path, .. } => h.part("dir", path.as_bytes()),
            Entry::File { path, data, .. } => h.part("path", path.as_bytes()).part("data", data),
            Entry::Symlink { path, target } => h
                .part("link", path.as_bytes())
                .part("target", target.as_bytes()),
        };
    }
    if let Some(p) = &preload {
        for m in &p.order {
            h.part("preload", m.as_bytes());
        }
    }
    for f in &recipe.files {
        h.part(
            "file",
            &std::fs::read(project.root.join(&f.from)).unwrap_or_default(),
        );
    }
    let key = h.finish();
    let dir = cache.dir("images");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(match recipe.compression {
        Compression::None => format!("{key}.cpio"),
        Compression::Gzip => format!("{key}.cpio.gz"),
    });
    if path.is_file() {
        return Ok(Image { key, path });
    }
    events.event(&Event::Preparing {
        what: format!("building image '{recipe_name}' ({key})"),
    });
    let entries = entries(
        project,
        &recipe,
        &agent,
        &busybox,
        kernel,
        fixtures,
        &extra,
        preload.as_ref(),
    )?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    write_initramfs(
        &entries,
        std::io::BufWriter::new(tmp.as_file_mut()),
        recipe.compression,
    )?;
    tmp.persist(&path)
        .with_context(|| format!("cannot publish {}", path.display()))?;
    Ok(Image { key, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_is_checked_before_anything_builds() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("images")).unwrap();
        let project = Project {
            root: d.path().to_path_buf(),
        };
        let write = |text: &str| std::fs::write(d.path().join("images/t.yaml"), text).unwrap();
        let err = |text: &str| {
            write(text);
            format!("{:#}", check_recipe(&project, "t").unwrap_err())
        };
        let head = "busybox: /bin/busybox\n";
        write(&format!(
            "{head}host_programs: [bash, sed]\nselftests: [livepatch]\n"
        ));
        let r = check_recipe(&project, "t").unwrap();
        assert_eq!(r.host_programs, ["bash", "sed"]);
        let e = err(&format!("{head}host_programs: [bash,\n  no-such-tool-x]\n"));
        assert!(
            e.contains("images/t.yaml:3:3: ")
                && e.contains("'no-such-tool-x' is not on this machine"),
            "{e}"
        );
        let e = err(&format!("{head}host_programs: [bash, bash]\n"));
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&format!("{head}selftests: [../net]\n"));
        assert!(
            e.contains("images/t.yaml:2:") && e.contains("not a directory name"),
            "{e}"
        );
        let e = err(&format!("{head}host_program: [bash]\n"));
        assert!(e.contains("unknown field `host_program`"), "{e}");
    }

    #[test]
    fn archive_reads_back() {
        let mut e = Vec::new();
        push_file(&mut e, "/lib/modules/x/a.ko", 0o644, b"abc".to_vec());
        push_file(&mut e, "/init", 0o755, b"\x7fELF".to_vec());
        e.push(Entry::Symlink {
            path: "/bin/sh".into(),
            target: "busybox".into(),
        });
        // Parents come first and once.
        assert_eq!(
            e[0],
            Entry::Dir {
                path: "/lib".into(),
                mode: 0o755
            }
        );
        assert_eq!(e.iter().filter(|x| x.path() == "/lib/modules").count(), 1);
        let mut buf = Vec::new();
        write_initramfs(&e, &mut buf, Compression::Gzip).unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&buf[..]), &mut raw).unwrap();
        let mut plain = Vec::new();
        write_initramfs(&e, &mut plain, Compression::None).unwrap();
        assert_eq!(plain, raw, "the same archive, uncompressed");
        let mut rd = &raw[..];
        let mut seen = Vec::new();
        loop {
            let r = cpio::NewcReader::new(rd).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let name = r.entry().name().to_string();
            let mode = r.entry().mode();
            let size = r.entry().file_size();
            seen.push((name, mode, size));
            rd = r.finish().unwrap();
        }
        assert!(
            seen.contains(&("lib/modules/x/a.ko".into(), 0o100644, 3)),
            "{seen:?}"
        );
        assert!(seen.contains(&("init".into(), 0o100755, 4)), "{seen:?}");
        assert!(seen.contains(&("bin/sh".into(), 0o120777, 7)), "{seen:?}");
        assert!(seen.contains(&("lib".into(), 0o040755, 0)), "{seen:?}");
    }
}
