//! Host programs for the guest, with the shared libraries they load.
//!
//! In: program names (`bash`, `sysctl`, `modprobe`). Out: image entries:
//! each program's file at its real host path (`/usr/bin/kmod`), a link
//! from the name it was found under (`/usr/sbin/modprobe -> /usr/bin/kmod`)
//! and from the merged-/usr name (`/sbin/modprobe`), and every library
//! `ldd` lists, at the path the loader will look for it. This is what
//! mkinitramfs' `copy_exec` and dracut's `inst_binary` do; the guest then
//! runs the host's own tools with their GNU options (`sysctl --values`,
//! `stat --format`, `mktemp --tmpdir`), which busybox lacks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::entry::Entry;

/// Where programs are looked up on the host, in order.
const SEARCH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Names the guest's own init and shell own.
const RESERVED: &[&str] = &["init", "sh", "busybox"];

/// A program as found on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Where the name was found (`/usr/sbin/modprobe`).
    pub path: PathBuf,
    /// The file it is (`/usr/bin/kmod`).
    pub real: PathBuf,
}

pub fn find(name: &str) -> Result<Found> {
    if name.is_empty() || name.contains('/') || RESERVED.contains(&name) {
        bail!(
            "'{name}' cannot be copied from the host (a program name, not a path; not one of {})",
            RESERVED.join(", ")
        );
    }
    for dir in SEARCH {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            let real = p
                .canonicalize()
                .with_context(|| format!("cannot resolve {}", p.display()))?;
            return Ok(Found { path: p, real });
        }
    }
    bail!(
        "program '{name}' is not on this machine (looked in {}); install the package that has it (`dpkg -S bin/{name}` on a machine that has it)",
        SEARCH.join(", ")
    )
}

/// The libraries in `ldd` output, as the loader will look for them
/// (including the loader itself). A library ldd cannot find is an error.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut v = Vec::new();
    for l in text.lines().map(str::trim) {
        if l.is_empty() || l.contains("statically linked") || l == "not a dynamic executable" {
            continue;
        }
        if let Some((name, rest)) = l.split_once(" => ") {
            let rest = rest.trim();
            if rest.starts_with("not found") {
                return Err(format!("library {name} not found"));
            }
            let path = rest.split(" (").next().unwrap_or("").trim();
            if path.starts_with('/') {
                v.push(PathBuf::from(path));
            }
            // `linux-vdso.so.1 => (0x...)` on old glibc: provided by the kernel.
        } else if l.starts_with('/') {
            // The loader: `/lib64/ld-linux-x86-64.so.2 (0x...)`.
            v.push(PathBuf::from(l.split(" (").next().unwrap_or("").trim()));
        }
        // `linux-vdso.so.1 (0x...)`: provided by the kernel.
    }
    Ok(v)
}

/// The libraries of `real`: `ldd`'s answer, remembered in `memo` (a
/// directory) under the program file's identity (path, inode, size,
/// mtime, ctime), so a command that makes no new image runs no `ldd`. A
/// remembered library that is gone asks `ldd` again.
fn libraries(real: &Path, memo: Option<&Path>) -> Result<Vec<PathBuf>> {
    let Some(dir) = memo else {
        return ldd(real);
    };
    let file = dir.join(identity(real)?);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let libs: Vec<PathBuf> = text.lines().map(PathBuf::from).collect();
        if libs.iter().all(|l| l.is_file()) {
            return Ok(libs);
        }
    }
    let libs = ldd(real)?;
    let text: String = libs.iter().map(|l| format!("{}\n", l.display())).collect();
    // Best effort: a memo that is not written is asked again next time.
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = crate::cache::write_atomic(&file, text.as_bytes());
    }
    Ok(libs)
}

/// A name for what a program file is now.
fn identity(real: &Path) -> Result<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(real).with_context(|| format!("cannot stat {}", real.display()))?;
    let d = sha2::Sha256::digest(
        format!(
            "{}\0{}\0{}\0{}.{}\0{}.{}",
            real.display(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        )
        .as_bytes(),
    );
    Ok(d.iter().take(16).map(|b| format!("{b:02x}")).collect())
}

fn ldd(real: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(real)
        .output()
        .context("cannot run ldd (Debian package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // ldd exits 1 for a static program ("not a dynamic executable").
    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("not a dynamic") {
        bail!(
            "ldd {}: {}",
            real.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_ldd(&text).map_err(|e| anyhow::anyhow!("ldd {}: {e}", real.display()))
}

/// The merged-/usr twin of a path: `/usr/bin/x` <-> `/bin/x`.
fn merged_twin(p: &str) -> Option<String> {
    for (usr, root) in [("/usr/bin/", "/bin/"), ("/usr/sbin/", "/sbin/")] {
        if let Some(rest) = p.strip_prefix(usr) {
            return Some(format!("{root}{rest}"));
        }
        if let Some(rest) = p.strip_prefix(root) {
            return Some(format!("{usr}{rest}"));
        }
    }
    None
}

/// The image entries for `names`, sorted and without repeats. `memo`: a
/// directory that remembers `ldd`'s answers (see [`libraries`]).
pub fn program_entries(names: &[String], memo: Option<&Path>) -> Result<Vec<Entry>> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    // guest path -> entry
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            bail!("program '{n}' is listed twice");
        }
        let f = find(n)?;
        let real = f.real.to_string_lossy().into_owned();
        if !files.contains_key(&real) {
            let mode = std::fs::metadata(&f.real)?.permissions().mode() & 0o7777;
            files.insert(
                real.clone(),
                Entry::File {
                    path: real.clone(),
                    mode,
                    data: std::fs::read(&f.real)
                        .with_context(|| format!("cannot read {}", f.real.display()))?,
                },
            );
            for lib in libraries(&f.real, memo)? {
                let key = lib.to_string_lossy().into_owned();
                if files.contains_key(&key) {
                    continue;
                }
                let data = std::fs::read(&lib)
                    .with_context(|| format!("cannot read {}", lib.display()))?;
                files.insert(
                    key.clone(),
                    Entry::File {
                        path: key,
                        mode: 0o755,
                        data,
                    },
                );
            }
        }
        let found = f.path.to_string_lossy().into_owned();
        for name in std::iter::once(found.clone()).chain(merged_twin(&found)) {
            if name != real {
                links.insert(name, real.clone());
            }
        }
    }
    let links: Vec<Entry> = links
        .into_iter()
        .filter(|(p, _)| !files.contains_key(p))
        .map(|(path, target)| Entry::Symlink { path, target })
        .collect();
    let mut v: Vec<Entry> = files.into_values().collect();
    v.extend(links);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ldd /usr/bin/kmod` on Debian 12.
    const KMOD: &str = "\tlinux-vdso.so.1 (0x00007f8d9c056000)
\tlibzstd.so.1 => /lib/x86_64-linux-gnu/libzstd.so.1 (0x00007f8d9bf59000)
\tliblzma.so.5 => /lib/x86_64-linux-gnu/liblzma.so.5 (0x00007f8d9bf2a000)
\tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007f8d9ba00000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8d9b81e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f8d9c058000)
";

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let v = parse_ldd(KMOD).unwrap();
        assert_eq!(v.len(), 5, "{v:?}");
        assert_eq!(v[0], PathBuf::from("/lib/x86_64-linux-gnu/libzstd.so.1"));
        assert_eq!(v[4], PathBuf::from("/lib64/ld-linux-x86-64.so.2"));
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let e = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(e.contains("libfoo.so.1 not found"), "{e}");
    }

    #[test]
    fn twins() {
        assert_eq!(
            merged_twin("/usr/sbin/modprobe").as_deref(),
            Some("/sbin/modprobe")
        );
        assert_eq!(merged_twin("/bin/bash").as_deref(), Some("/usr/bin/bash"));
        assert_eq!(merged_twin("/usr/local/bin/x"), None);
    }

    #[test]
    fn programs_come_with_their_libraries_and_names() {
        // bash and sh are on every Debian machine.
        let e = program_entries(&["bash".into()], None).unwrap();
        let paths: Vec<&str> = e
            .iter()
            .map(|x| match x {
                Entry::File { path, .. }
                | Entry::Symlink { path, .. }
                | Entry::Dir { path, .. } => path.as_str(),
            })
            .collect();
        let real = find("bash").unwrap().real;
        assert!(paths.contains(&real.to_str().unwrap()), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
        assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
        // The merged-/usr twin, so `#!/bin/bash` works.
        assert!(
            paths.contains(&"/bin/bash") || paths.contains(&"/usr/bin/bash"),
            "{paths:?}"
        );
        let err = format!("{:#}", program_entries(&["sh".into()], None).unwrap_err());
        assert!(err.contains("cannot be copied"), "{err}");
        let err = format!(
            "{:#}",
            program_entries(&["no-such-program-x".into()], None).unwrap_err()
        );
        assert!(err.contains("is not on this machine"), "{err}");
        let err = format!(
            "{:#}",
            program_entries(&["bash".into(), "bash".into()], None).unwrap_err()
        );
        assert!(err.contains("listed twice"), "{err}");
    }

    #[test]
    fn ldd_answers_are_remembered_by_the_program_file() {
        let d = tempfile::tempdir().unwrap();
        let real = find("bash").unwrap().real;
        let asked = libraries(&real, Some(d.path())).unwrap();
        assert_eq!(asked, ldd(&real).unwrap());
        let file = d.path().join(identity(&real).unwrap());
        assert!(file.is_file());
        // The memo is what is used: a remembered list comes back as it is.
        let libc = asked
            .iter()
            .find(|l| l.to_string_lossy().contains("libc.so"))
            .unwrap();
        std::fs::write(&file, format!("{}\n", libc.display())).unwrap();
        assert_eq!(
            libraries(&real, Some(d.path())).unwrap(),
            vec![libc.clone()]
        );
        // A remembered library that is gone is asked for again.
        std::fs::write(&file, "/no/such/lib.so\n").unwrap();
        assert_eq!(libraries(&real, Some(d.path())).unwrap(), asked);
        // The same entries with and without a memo.
        let with = program_entries(&["bash".into()], Some(d.path())).unwrap();
        let without = program_entries(&["bash".into()], None).unwrap();
        assert_eq!(with, without);
    }
}
