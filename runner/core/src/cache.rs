//! The content-addressed cache: keys, locks, and atomic publication.
//!
//! Layout under the cache root (`--cache-dir`, `$COEXIST_CACHE`,
//! `$XDG_CACHE_HOME/coexist` or `~/.cache/coexist`):
//!
//! ```text
//! sources/<id>/             unpacked pristine kernel source
//! trees/<tree-key>/         source + patch series (hard-link farm of the pristine tree)
//! trees/<tree-key>/.build-<config-key>/   the O= build dir (kept: incremental, out-of-tree modules)
//! kernels/<key>/            published artifacts + manifest.json
//! ccache/  locks/  logs/  stats/
//! ```
//!
//! Every entry is made in a `.tmp-*` sibling and renamed into place, so a
//! killed run never leaves a half entry under its final name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug)]
pub struct Cache {
    pub root: PathBuf,
}

impl Cache {
    pub fn default_root() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("COEXIST_CACHE").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(p).join("coexist"));
        }
        let home = std::env::var_os("HOME")
            .context("neither COEXIST_CACHE, XDG_CACHE_HOME nor HOME is set: pass --cache-dir")?;
        Ok(PathBuf::from(home).join(".cache/coexist"))
    }

    pub fn open(root: PathBuf) -> Result<Cache> {
        for sub in [
            "sources", "trees", "kernels", "locks", "logs", "stats", "ccache",
        ] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create cache directory {}", d.display()))?;
        }
        Ok(Cache { root })
    }

    pub fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    /// Takes an exclusive lock named `name`, telling `waiting` if someone
    /// else holds it (another run building the same thing).
    pub fn lock(&self, name: &str, waiting: impl FnOnce()) -> Result<Flock<File>> {
        lock_file(
            &self.root.join("locks").join(format!("{name}.lock")),
            waiting,
        )
    }
}

/// Takes an exclusive lock on the file at `path` (made if missing),
/// telling `waiting` if another process holds it. For what is shared
/// beyond one cache (the host's apt lists), [`Cache::lock`] otherwise.
pub fn lock_file(path: &Path, waiting: impl FnOnce()) -> Result<Flock<File>> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((f, _)) => {
            waiting();
            Flock::lock(f, FlockArg::LockExclusive)
                .map_err(|(_, e)| anyhow::anyhow!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// Makes a staging directory next to `final_path`, named so that
/// [`remove_stale_staging`] can find it after a killed run.
pub fn staging_dir(final_path: &Path) -> Result<tempfile::TempDir> {
    let parent = final_path.parent().context("entry has no parent")?;
    let name = final_path.file_name().unwrap().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".tmp-{name}-"))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a staging directory in {}", parent.display()))
}

/// Removes staging directories that a killed run left for `final_path`.
/// Call with the entry's lock held.
pub fn remove_stale_staging(final_path: &Path) -> Result<()> {
    let parent = final_path.parent().context("entry has no parent")?;
    let prefix = format!(
        ".tmp-{}-",
        final_path.file_name().unwrap().to_string_lossy()
    );
    for e in std::fs::read_dir(parent)? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

/// Removes a published entry: renamed aside first (atomic), then deleted,
/// so nobody sees it half removed.
pub fn discard(entry: &Path) -> Result<()> {
    let parent = entry.parent().context("entry has no parent")?;
    let aside = tempfile::Builder::new()
        .prefix(&format!(
            ".tmp-{}-discard-",
            entry.file_name().unwrap_or_default().to_string_lossy()
        ))
        .tempdir_in(parent)?;
    let to = aside.path().join("old");
    std::fs::rename(entry, &to)
        .with_context(|| format!("cannot move {} aside", entry.display()))?;
    drop(aside);
    Ok(())
}

/// Moves `from` (inside a staging dir) to `to` atomically.
pub fn publish(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to)
        .with_context(|| format!("cannot publish {} as {}", from.display(), to.display()))
}

/// Writes a file atomically (temp file + rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let parent = path.parent().context("no parent")?;
    let mut t = tempfile::NamedTempFile::new_in(parent)?;
    t.write_all(data)?;
    // Readable like any other file written here (tempfile makes it 0600).
    use std::os::unix::fs::PermissionsExt;
    t.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    t.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A content hash over labelled parts. Labels and lengths are hashed too, so
/// moving bytes between parts changes the key.
#[derive(Default)]
pub struct KeyHasher(Sha256);

impl KeyHasher {
    pub fn new(domain: &str) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.part("domain", domain.as_bytes());
        h
    }
    pub fn part(&mut self, label: &str, data: &[u8]) -> &mut Self {
        self.0.update((label.len() as u64).to_le_bytes());
        self.0.update(label.as_bytes());
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
        self
    }
    /// 16 hex digits: short enough for paths, long enough for a cache.
    pub fn finish(self) -> String {
        let d = self.0.finalize();
        d.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: &[(&str, &str)]) -> String {
        let mut h = KeyHasher::new("t");
        for (l, d) in parts {
            h.part(l, d.as_bytes());
        }
        h.finish()
    }

    #[test]
    fn keys_are_stable_and_sensitive() {
        let a = key(&[("a", "xy"), ("b", "z")]);
        assert_eq!(a.len(), 16);
        assert_eq!(a, key(&[("a", "xy"), ("b", "z")]));
        // Moving a byte across parts changes the key.
        assert_ne!(a, key(&[("a", "x"), ("b", "yz")]));
        assert_ne!(a, key(&[("a", "xy"), ("b", "Z")]));
        assert_ne!(a, key(&[("b", "z"), ("a", "xy")]));
        let mut other = KeyHasher::new("u");
        other.part("a", b"xy").part("b", b"z");
        assert_ne!(a, other.finish());
    }

    #[test]
    fn staging_is_cleaned_and_published_atomically() {
        let d = tempfile::tempdir().unwrap();
        let fin = d.path().join("entry");
        let st = staging_dir(&fin).unwrap();
        std::fs::write(st.path().join("f"), "x").unwrap();
        // Simulate a killed run: the staging dir stays behind.
        let leaked = st.keep();
        assert!(leaked.exists());
        assert!(!fin.exists());
        remove_stale_staging(&fin).unwrap();
        assert!(!leaked.exists());

        let st = staging_dir(&fin).unwrap();
        std::fs::create_dir(st.path().join("content")).unwrap();
        publish(&st.path().join("content"), &fin).unwrap();
        assert!(fin.is_dir());
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path().to_path_buf()).unwrap();
        let held = c.lock("x", || panic!("free lock reported busy")).unwrap();
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w2 = waited.clone();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            let _l = c2
                .lock("x", || w2.store(true, std::sync::atomic::Ordering::SeqCst))
                .unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
        t.join().unwrap();
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
    }
}
