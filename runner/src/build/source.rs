//! Kernel sources: Debian's release tarball (installed with apt when
//! missing), unpacked once into the cache; or a developer's own git tree,
//! identified by its commit and local changes, never modified.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::cache::{self, Cache, KeyHasher};
use crate::build::variant::{Source, SourceDecl};
use crate::events::{self, EventSink};

/// A source pinned to its content.
#[derive(Clone, Debug)]
pub struct SourceId {
    /// Cache key of the content.
    pub id: String,
    /// For people: "linux-source-6.1.tar.xz sha256 ab12…" or "git 1234abcd (+local changes)".
    pub describe: String,
}

#[derive(Default, Serialize, Deserialize)]
struct TarballMemo {
    entries: BTreeMap<String, MemoEntry>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct MemoEntry {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Installs Debian packages when running as root; otherwise fails with the
/// exact command to run.
pub fn apt_install(packages: &[&str], why: &str, ev: &dyn EventSink) -> Result<()> {
    let cmd = format!("apt-get install -y {}", packages.join(" "));
    if !is_root() {
        bail!("{why}; run as root:\n  {cmd}");
    }
    events::note(ev, format!("{why}; installing: {cmd}"));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if install().map(|s| s.success()).unwrap_or(false) {
        return Ok(());
    }
    let _ = Command::new("apt-get").args(["update", "-q"]).status();
    match install() {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("{why}, and '{cmd}' failed"),
    }
}

fn ensure_tarball(decl: &SourceDecl, ev: &dyn EventSink) -> Result<()> {
    if decl.tarball.is_file() {
        return Ok(());
    }
    match &decl.debian_package {
        Some(pkg) => {
            apt_install(
                &[pkg.as_str()],
                &format!("kernel source {} is missing", decl.tarball.display()),
                ev,
            )?;
            if !decl.tarball.is_file() {
                bail!(
                    "package {pkg} is installed but {} is still missing",
                    decl.tarball.display()
                );
            }
            Ok(())
        }
        None => bail!(
            "source '{}': {} does not exist",
            decl.name,
            decl.tarball.display()
        ),
    }
}

fn tarball_sha256(cache: &Cache, path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)?;
    let entry_now = |sha256: String| MemoEntry {
        size: meta.len(),
        mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        ino: meta.ino(),
        sha256,
    };
    let memo_path = cache.dir("sources").join("tarball-hashes.json");
    let mut memo: TarballMemo = std::fs::read(&memo_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let key = path.to_string_lossy().into_owned();
    if let Some(e) = memo.entries.get(&key) {
        if *e == entry_now(e.sha256.clone()) {
            return Ok(e.sha256.clone());
        }
    }
    let sha = cache::sha256_file(path)?;
    memo.entries.insert(key, entry_now(sha.clone()));
    cache::write_atomic(&memo_path, &serde_json::to_vec_pretty(&memo)?)?;
    Ok(sha)
}

/// Runs git in `tree`; its stdout, or an error with git's stderr.
pub fn git(tree: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            tree.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// [`git`]'s output as trimmed text.
pub fn git_text(tree: &Path, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&git(tree, args)?)
        .trim()
        .to_string())
}

fn check_kernel_tree(tree: &Path) -> Result<()> {
    if !tree.join("Makefile").is_file() || !tree.join("Kconfig").is_file() {
        bail!(
            "--kernel-tree {}: not a kernel source tree (no Makefile/Kconfig)",
            tree.display()
        );
    }
    if tree.join(".config").exists() || tree.join("include/config").exists() {
        bail!(
            "--kernel-tree {}: the tree has an in-tree build (.config); builds go to a separate \
             output directory, which kbuild refuses next to an in-tree build. Run 'make mrproper' in the tree.",
            tree.display()
        );
    }
    Ok(())
}

/// Identifies a source by content without unpacking or building anything.
pub fn identify(cache: &Cache, source: &Source, ev: &dyn EventSink) -> Result<SourceId> {
    match source {
        Source::Tarball(decl) => {
            ensure_tarball(decl, ev)?;
            let sha = tarball_sha256(cache, &decl.tarball)?;
            let mut h = KeyHasher::new("source-tarball-v1");
            h.part("sha256", sha.as_bytes());
            Ok(SourceId {
                id: h.finish(),
                describe: format!(
                    "{} sha256 {}",
                    decl.tarball
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy(),
                    &sha[..16]
                ),
            })
        }
        Source::Tree(tree) => {
            check_kernel_tree(tree)?;
            let head = git_text(tree, &["rev-parse", "HEAD"])?;
            let status = git(tree, &["status", "--porcelain", "--untracked-files=no"])?;
            let mut h = KeyHasher::new("source-git-v1");
            h.part("head", head.as_bytes());
            let dirty = !status.is_empty();
            if dirty {
                h.part("diff", &git(tree, &["diff", "HEAD", "--binary"])?);
            }
            Ok(SourceId {
                id: h.finish(),
                describe: format!(
                    "git {}{}",
                    &head[..12.min(head.len())],
                    if dirty { " (+local changes)" } else { "" }
                ),
            })
        }
    }
}

/// Unpacks a tarball source into `sources/<id>` once (locked, atomic).
pub fn unpack(
    cache: &Cache,
    decl: &SourceDecl,
    id: &SourceId,
    note: &dyn Fn(&str),
) -> Result<PathBuf> {
    let dest = cache.dir("sources").join(&id.id);
    if dest.is_dir() {
        return Ok(dest);
    }
    let _lock = cache.lock(&format!("source-{}", id.id), || {
        note("waiting for another run unpacking the same source")
    })?;
    if dest.is_dir() {
        return Ok(dest);
    }
    cache::remove_stale_staging(&dest)?;
    note(&format!("unpacking {}", decl.tarball.display()));
    let staging = cache::staging_dir(&dest)?;
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&decl.tarball)
        .arg("-C")
        .arg(staging.path())
        .status()
        .context("cannot run tar")?;
    if !st.success() {
        bail!("cannot unpack {}", decl.tarball.display());
    }
    // The tarball holds one top directory (linux-source-6.1/).
    let tops: Vec<_> = std::fs::read_dir(staging.path())?.collect::<std::io::Result<_>>()?;
    let top = match tops.as_slice() {
        [one] if one.path().join("Makefile").is_file() => one.path(),
        _ if staging.path().join("Makefile").is_file() => staging.path().to_path_buf(),
        _ => bail!("{}: no kernel tree at its top", decl.tarball.display()),
    };
    cache::publish(&top, &dest)?;
    Ok(dest)
}

/// Host tools a kernel build needs, with the Debian package of each.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("pahole", "dwarves"),
    ("patch", "patch"),
    ("tar", "tar"),
    ("xz", "xz-utils"),
    ("depmod", "kmod"),
    ("perl", "perl"),
];

/// Headers the build needs (objtool: libelf; extract-cert/sign-file: libssl).
pub const BUILD_HEADERS: &[(&str, &str)] = &[
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/opensslv.h", "libssl-dev"),
];

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Checks (and as root installs) what a kernel build needs on the host.
pub fn preflight_build_tools(ev: &dyn EventSink) -> Result<()> {
    let mut missing: Vec<&str> = BUILD_TOOLS
        .iter()
        .filter(|(t, _)| which(t).is_none())
        .map(|(_, p)| *p)
        .collect();
    missing.extend(
        BUILD_HEADERS
            .iter()
            .filter(|(h, _)| !Path::new(h).exists())
            .map(|(_, p)| *p),
    );
    missing.dedup();
    if !missing.is_empty() {
        apt_install(&missing, "host tools for kernel builds are missing", ev)?;
    }
    Ok(())
}

/// The first line a command prints (versions), or "<cmd>: not found".
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

/// The versions of what turns source into a kernel: part of every cache key.
pub fn toolchain_id() -> String {
    [
        first_line("gcc", &["--version"]),
        first_line("ld", &["--version"]),
        first_line("pahole", &["--version"]),
    ]
    .join("; ")
}
