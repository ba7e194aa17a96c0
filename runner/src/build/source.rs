//! Kernel sources: Debian's release tarball (installed with apt when
//! missing), unpacked once into the cache; or a developer's own git tree,
//! identified by its commit and local changes, never modified.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::variant::SourceDecl;
use crate::cache::{self, Cache, KeyHasher};
use crate::events::{self, EventSink};
use crate::process::{first_line, git, git_text, which};

/// A source pinned to its content.
#[derive(Clone, Debug)]
pub struct SourceId {
    /// Cache key of the content.
    pub id: String,
    /// For people: "linux-source-6.1.tar.xz sha256 ab12…" or "git 1234abcd (+local changes)".
    pub describe: String,
    /// The tarball as it was when identified: a hard link (or copy) in
    /// the cache, named by its hash, which a later upgrade of the package
    /// does not change. Unpacking reads this one.
    pub tarball: Option<PathBuf>,
    /// Where it comes from, for people: "Debian linux-source-6.1 6.1.192-3".
    pub origin: Option<String>,
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

/// The command a user runs to install `missing` (setup prints it too).
pub fn install_command(missing: &[String]) -> String {
    format!(
        "apt-get update && apt-get install --no-remove -y {}",
        missing.join(" ")
    )
}

/// Fails with the command that installs `packages`: they belong in the
/// project's package list, which `coexist setup` installs before anything
/// runs, so missing here means the list or the machine lacks them.
pub fn require(packages: &[&str], why: &str) -> Result<()> {
    let list: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    bail!(
        "{why}; the Debian package(s) {} are not installed (add them to .ci/packages, which \
         `coexist setup` installs); as root:\n  {}",
        list.join(" "),
        install_command(&list)
    )
}

fn ensure_tarball(decl: &SourceDecl) -> Result<()> {
    if decl.tarball.is_file() {
        return Ok(());
    }
    match &decl.debian_package {
        Some(pkg) => {
            require(
                &[pkg.as_str()],
                &format!("kernel source {} is missing", decl.tarball.display()),
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

/// The sha256 of `file`, memoised under `memo_key` by size, mtime and inode.
fn tarball_sha256(cache: &Cache, memo_key: &Path, file: &Path) -> Result<String> {
    let meta = std::fs::metadata(file)?;
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
    let key = memo_key.to_string_lossy().into_owned();
    if let Some(e) = memo.entries.get(&key) {
        if *e == entry_now(e.sha256.clone()) {
            return Ok(e.sha256.clone());
        }
    }
    let sha = cache::sha256_file(file)?;
    memo.entries.insert(key, entry_now(sha.clone()));
    cache::write_atomic(&memo_path, &serde_json::to_vec_pretty(&memo)?)?;
    Ok(sha)
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

/// The installed version of a Debian package.
pub fn debian_version(package: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// The upstream part of a Debian version: "6.1.192" of "6.1.192-3".
pub fn upstream_version(debian: &str) -> &str {
    let no_epoch = debian.split_once(':').map(|(_, v)| v).unwrap_or(debian);
    no_epoch
        .rsplit_once('-')
        .map(|(v, _)| v)
        .unwrap_or(no_epoch)
}

/// "VERSION.PATCHLEVEL.SUBLEVEL" (and EXTRAVERSION) from a kernel tree's
/// top Makefile.
pub fn makefile_version(tree: &Path) -> Option<String> {
    let text = std::fs::read_to_string(tree.join("Makefile")).ok()?;
    let get = |k: &str| {
        text.lines().find_map(|l| {
            let (name, v) = l.split_once('=')?;
            (name.trim() == k).then(|| v.trim().to_string())
        })
    };
    let mut v = format!(
        "{}.{}.{}",
        get("VERSION")?,
        get("PATCHLEVEL")?,
        get("SUBLEVEL").unwrap_or_else(|| "0".into())
    );
    v.push_str(&get("EXTRAVERSION").unwrap_or_default());
    Some(v)
}

/// Hard-links (or, across filesystems, copies) the tarball into the cache
/// first, then hashes that link: what was hashed is what is unpacked, even
/// if the package is upgraded meanwhile.
fn pin_tarball(cache: &Cache, decl: &SourceDecl) -> Result<(PathBuf, String)> {
    let dir = cache.dir("tarballs");
    std::fs::create_dir_all(&dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-pin-")
        .tempdir_in(&dir)?;
    let link = tmp.path().join("t");
    if std::fs::hard_link(&decl.tarball, &link).is_err() {
        std::fs::copy(&decl.tarball, &link)
            .with_context(|| format!("cannot copy {}", decl.tarball.display()))?;
    }
    let sha = tarball_sha256(cache, &decl.tarball, &link)?;
    let ext = decl
        .tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| n.find(".tar").map(|i| n[i..].to_string()))
        .unwrap_or_else(|| ".tar".into());
    let pinned = dir.join(format!("{sha}{ext}"));
    if !pinned.is_file() {
        std::fs::rename(&link, &pinned)?;
    }
    Ok((pinned, sha))
}

/// Sources identified once per run: every variant of the run that names a
/// source gets the same [`SourceId`] (the same pinned tarball), whatever
/// happens to the tarball on disk meanwhile.
#[derive(Default)]
pub struct Sources(std::sync::Mutex<BTreeMap<String, SourceId>>);

impl Sources {
    /// The identity memoised under `key`, or `f`'s, then memoised.
    pub fn memo(&self, key: String, f: impl FnOnce() -> Result<SourceId>) -> Result<SourceId> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = m.get(&key) {
            return Ok(id.clone());
        }
        let id = f()?;
        m.insert(key, id.clone());
        Ok(id)
    }

    /// A declared source's identity, once per run.
    pub fn tarball(
        &self,
        cache: &Cache,
        decl: &SourceDecl,
        ev: &dyn EventSink,
    ) -> Result<SourceId> {
        self.memo(tarball_key(decl), || identify_tarball(cache, decl, ev))
    }
}

/// The memo key of a declared source.
pub fn tarball_key(decl: &SourceDecl) -> String {
    format!("tarball:{}", decl.name)
}

/// Identifies a declared source (a tarball) by content without unpacking
/// anything. A source that pins a `version` must be that version.
pub fn identify_tarball(cache: &Cache, decl: &SourceDecl, ev: &dyn EventSink) -> Result<SourceId> {
    ensure_tarball(decl)?;
    let package = decl
        .debian_package
        .as_deref()
        .and_then(|p| debian_version(p).map(|v| (p, v)));
    if let (Some(pin), Some((p, v))) = (&decl.version, &package) {
        if upstream_version(v) != pin {
            bail!(
                "{}: source '{}' pins kernel {pin}, but {} is {} (Debian {p} {v}); install \
                 that version (apt-get install {p}=<a {pin} version>; apt-cache policy {p} \
                 lists them) or change the pin",
                decl.origin,
                decl.name,
                decl.tarball.display(),
                upstream_version(v)
            );
        }
    }
    let (pinned, sha) = pin_tarball(cache, decl)?;
    let mut h = KeyHasher::new("source-tarball-v1");
    h.part("sha256", sha.as_bytes());
    let origin = package.map(|(p, v)| format!("Debian {p} {v}"));
    if let Some(o) = &origin {
        events::note(
            ev,
            format!("source '{}': {o}, sha256 {}", decl.name, &sha[..16]),
        );
    }
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
        tarball: Some(pinned),
        origin,
    })
}

/// Identifies a developer's git tree by its HEAD and local changes.
pub fn identify_tree(tree: &Path) -> Result<SourceId> {
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
        tarball: None,
        origin: Some(format!("git tree {}", tree.display())),
    })
}

/// Where [`unpack`] puts a tarball source: `sources/<id>`.
pub fn unpacked_dir(cache: &Cache, id: &SourceId) -> PathBuf {
    cache.dir("sources").join(&id.id)
}

/// The paths under `tools/testing/selftests/` a tarball source holds
/// (without its top directory), listed once into `sources/<id>.selftests`.
pub fn tarball_selftests(
    cache: &Cache,
    decl: &SourceDecl,
    id: &SourceId,
    note: &dyn Fn(&str),
) -> Result<std::collections::BTreeSet<String>> {
    let memo = cache.dir("sources").join(format!("{}.selftests", id.id));
    if !memo.is_file() {
        let tarball = id.tarball.as_deref().unwrap_or(&decl.tarball);
        note(&format!("listing the selftests of {}", tarball.display()));
        let out = Command::new("tar")
            .arg("-tf")
            .arg(tarball)
            .args(["--wildcards", "*tools/testing/selftests/*"])
            .output()
            .context("cannot run tar")?;
        if !out.status.success() {
            bail!(
                "cannot list {}: {}",
                tarball.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::fs::create_dir_all(cache.dir("sources"))?;
        cache::write_atomic(&memo, &out.stdout)?;
    }
    let text = std::fs::read_to_string(&memo)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            // Without the top directory (linux-source-6.1/).
            let i = l.find("tools/testing/selftests/")?;
            Some(l[i..].to_string())
        })
        .collect())
}

/// Unpacks a tarball source into `sources/<id>` once (locked, atomic).
pub fn unpack(
    cache: &Cache,
    decl: &SourceDecl,
    id: &SourceId,
    note: &dyn Fn(&str),
) -> Result<PathBuf> {
    let dest = unpacked_dir(cache, id);
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
    let tarball = id.tarball.as_deref().unwrap_or(&decl.tarball);
    note(&format!(
        "unpacking {} (pinned as {})",
        decl.tarball.display(),
        tarball.display()
    ));
    let staging = cache::staging_dir(&dest)?;
    let st = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
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
    if let (Some(pin), Some(found)) = (&decl.version, makefile_version(&top)) {
        if &found != pin {
            bail!(
                "{}: source '{}' pins kernel {pin}, but {} holds {found}; change the pin or the tarball",
                decl.origin,
                decl.name,
                decl.tarball.display()
            );
        }
    }
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

/// Checks (and as root installs) what a kernel build needs on the host.
pub fn preflight_build_tools() -> Result<()> {
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
        require(&missing, "host tools for kernel builds are missing")?;
    }
    Ok(())
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
