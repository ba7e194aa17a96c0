//! Prebuilt kernels: a Debian kernel image package (`prebuilt:
//! {debian_package: linux-image-...}` in `variants.yaml`) instead of a
//! build. Nothing is compiled and the host's `/boot` is never touched:
//!
//! 1. resolve: `apt-cache show` gives the candidate's version and the
//!    SHA256 of its `.deb`, the content key (before anything builds; a
//!    package apt does not know is an error at its declaration);
//! 2. fetch: `apt-get download <pkg>=<version>` into a staging dir, the
//!    `.deb` checked against that SHA256, `dpkg-deb -x` beside it,
//!    `depmod -b` (the package has no `modules.dep`), the ELF `vmlinux`
//!    taken out of `vmlinuz` (for its BTF), and a [`Manifest`]; the entry
//!    `<cache>/prebuilt/<sha256 of the .deb>/` is published by one rename.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::build::manifest::{Manifest, PrebuiltInfo};
use crate::build::source::{self, SourceId};
use crate::build::variant::{PrebuiltDecl, SourceDecl, Variant};
use crate::cache::{self, Cache, KeyHasher};
use crate::events::{Event, EventSink};
use crate::process::run_quiet;

/// The candidate apt would download for a package.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AptCandidate {
    pub package: String,
    pub version: String,
    /// sha256 of the `.deb`, from the archive's index.
    pub sha256: String,
}

/// The first record of `apt-cache show --no-all-versions` output.
pub fn parse_apt_show(text: &str) -> Option<AptCandidate> {
    let mut fields = BTreeMap::new();
    for l in text.lines() {
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(": ") {
            if !k.starts_with(' ') {
                fields.insert(k, v.trim());
            }
        }
    }
    let sha = fields.get("SHA256")?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(AptCandidate {
        package: fields.get("Package")?.to_string(),
        version: fields.get("Version")?.to_string(),
        sha256: sha.to_ascii_lowercase(),
    })
}

/// Resolves the package with apt (memoised: once per process). An
/// unknown package is an error at its declaration in `variants.yaml`.
pub fn resolve(decl: &PrebuiltDecl) -> Result<AptCandidate> {
    if let Some(e) = &decl.track_error {
        bail!("{}: prebuilt: track: {e}", decl.origin);
    }
    resolve_package(&decl.debian_package, &decl.origin, "prebuilt")
}

/// Resolves the headers package a prebuilt variant declares, if any: one
/// apt does not know is an error at its declaration.
pub fn resolve_headers(decl: &PrebuiltDecl) -> Result<Option<AptCandidate>> {
    match &decl.headers {
        None => Ok(None),
        Some(h) => resolve_package(h, &decl.headers_origin, "prebuilt: headers").map(Some),
    }
}

/// What apt resolved in this process, by package.
static MEMO: std::sync::Mutex<BTreeMap<String, AptCandidate>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Every record of `apt-cache show --no-all-versions` output (one per
/// package apt knows).
pub fn parse_apt_show_all(text: &str) -> Vec<AptCandidate> {
    text.split("\n\n").filter_map(parse_apt_show).collect()
}

/// Resolves `pkgs` with one `apt-cache` call (memoised: once per process
/// each); returns those apt does not know.
pub fn resolve_packages(pkgs: &[String]) -> Result<Vec<String>> {
    let todo: Vec<&str> = {
        let memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
        pkgs.iter()
            .map(String::as_str)
            .filter(|p| !memo.contains_key(*p))
            .collect()
    };
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    Ok(ask_apt(&todo)?.0)
}

/// What apt answered, remembered across commands while its lists and
/// configuration stay as they were ([`apt_state`]): `apt-cache` reads
/// every list each time (about 2 s here), so each command no longer pays
/// it. Host-wide, as apt's lists are.
const APT_MEMO: &str = "/var/tmp/coexist-apt-candidates.json";

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct AptMemo {
    state: String,
    known: BTreeMap<String, AptCandidate>,
    /// Packages apt did not know, with the first line it said.
    unknown: BTreeMap<String, String>,
    /// `apt-cache pkgnames <prefix>`: the names apt knows, by prefix.
    #[serde(default)]
    names: BTreeMap<String, Vec<String>>,
}

/// apt's lists and configuration as they are: the name, size and mtime of
/// every file that decides what `apt-cache show` answers.
pub fn apt_state() -> String {
    state_of(&[
        "/var/lib/apt/lists",
        "/etc/apt",
        "/etc/apt/sources.list.d",
        "/etc/apt/preferences.d",
        "/etc/apt/apt.conf.d",
    ])
}

/// The name, size and mtime of every file directly in `dirs`, hashed.
fn state_of(dirs: &[&str]) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut h = crate::cache::KeyHasher::new("apt-state-v1");
    for dir in dirs {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.flatten().collect())
            .unwrap_or_default();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if let Ok(m) = e.metadata() {
                if m.is_file() {
                    h.part("file", e.path().to_string_lossy().as_bytes());
                    h.part("size", &m.size().to_le_bytes());
                    h.part("mtime", &m.mtime_nsec().to_le_bytes());
                    h.part("mtime-s", &m.mtime().to_le_bytes());
                }
            }
        }
    }
    h.finish()
}

/// Writes what apt answered under `state`, only if apt's state did not
/// move while it was asked.
fn save_memo(m: &AptMemo, state: &str) {
    if apt_state() == state {
        if let Ok(b) = serde_json::to_vec(m) {
            let _ = crate::cache::write_atomic(Path::new(APT_MEMO), &b);
        }
    }
}

fn load_memo(state: &str) -> AptMemo {
    std::fs::read(APT_MEMO)
        .ok()
        .and_then(|b| serde_json::from_slice::<AptMemo>(&b).ok())
        .filter(|m| m.state == state)
        .unwrap_or_else(|| AptMemo {
            state: state.to_string(),
            ..Default::default()
        })
}

/// The one `apt-cache` call: memoises the candidate of each of `pkgs` apt
/// knows; returns those it does not know, and the first line apt said
/// about them on stderr. What apt answered under the same lists before
/// ([`APT_MEMO`]) is not asked again.
fn ask_apt(pkgs: &[&str]) -> Result<(Vec<String>, String)> {
    let state = apt_state();
    let mut remembered = load_memo(&state);
    let ask: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !remembered.known.contains_key(*p) && !remembered.unknown.contains_key(*p))
        .collect();
    if !ask.is_empty() {
        let out = Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(&ask)
            .stdin(Stdio::null())
            .output()
            .context("cannot run apt-cache (a prebuilt kernel needs a Debian system)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().next().unwrap_or("").trim().to_string();
        for c in parse_apt_show_all(&String::from_utf8_lossy(&out.stdout)) {
            if ask.contains(&c.package.as_str()) {
                remembered.known.insert(c.package.clone(), c);
            }
        }
        for p in &ask {
            if !remembered.known.contains_key(*p) {
                remembered.unknown.insert(p.to_string(), why.clone());
            }
        }
        save_memo(&remembered, &state);
    }
    let mut memo = MEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut unknown = Vec::new();
    let mut why = String::new();
    for p in pkgs {
        match remembered.known.get(*p) {
            Some(c) => {
                memo.insert(c.package.clone(), c.clone());
            }
            None => {
                unknown.push(p.to_string());
                if why.is_empty() {
                    why = remembered.unknown.get(*p).cloned().unwrap_or_default();
                }
            }
        }
    }
    Ok((unknown, why))
}

/// Forgets what apt resolved (its lists were just refreshed).
pub fn forget_resolved() {
    MEMO.lock().unwrap_or_else(|e| e.into_inner()).clear();
    TRACKED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// The names of the packages apt knows that start with `prefix`
/// (`apt-cache pkgnames`), remembered like its other answers
/// ([`APT_MEMO`]).
fn apt_names(prefix: &str) -> Result<Vec<String>> {
    let state = apt_state();
    let mut remembered = load_memo(&state);
    if let Some(n) = remembered.names.get(prefix) {
        return Ok(n.clone());
    }
    let out = Command::new("apt-cache")
        .args(["pkgnames", prefix])
        .stdin(Stdio::null())
        .output()
        .context("cannot run apt-cache (a prebuilt kernel needs a Debian system)")?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    names.sort();
    remembered.names.insert(prefix.to_string(), names.clone());
    save_memo(&remembered, &state);
    Ok(names)
}

pub use crate::build::variant::abi_pattern;

/// The image and headers packages of an ABI (amd64).
pub fn abi_packages(abi: &str) -> (String, String) {
    (
        format!("linux-image-{abi}-amd64-unsigned"),
        format!("linux-headers-{abi}-amd64"),
    )
}

/// The ABIs of `line` among package `names` that have both an amd64
/// image and its headers, newest first (by their numbers: `6.1.0-57`
/// after `6.1.0-9`). Other flavours (`cloud-amd64`, `rt-amd64`) are not
/// ABIs of their own.
pub fn tracked_abis(names: &[String], line: &str) -> Vec<String> {
    let Some(re) = abi_pattern(line) else {
        return Vec::new();
    };
    let known: std::collections::BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut abis: Vec<(Vec<u64>, String)> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("linux-image-")?
                .strip_suffix("-amd64-unsigned")
        })
        .filter_map(|abi| {
            let c = re.captures(abi)?;
            let (_, headers) = abi_packages(abi);
            if !known.contains(headers.as_str()) {
                return None;
            }
            let key = c
                .iter()
                .skip(1)
                .map(|m| m.and_then(|m| m.as_str().parse().ok()).unwrap_or(0))
                .collect();
            Some((key, abi.to_string()))
        })
        .collect();
    abis.sort();
    abis.dedup();
    abis.into_iter().rev().map(|(_, a)| a).collect()
}

/// What each tracked line resolved to in this process: the run's pin.
static TRACKED: std::sync::Mutex<BTreeMap<String, std::result::Result<String, String>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The newest ABI of `line` whose image and headers apt can download
/// (both have a candidate); once per process.
pub fn track(line: &str) -> Result<String> {
    if let Some(r) = TRACKED.lock().unwrap_or_else(|e| e.into_inner()).get(line) {
        return r.clone().map_err(anyhow::Error::msg);
    }
    let r = (|| -> Result<String> {
        let mut names = apt_names(&format!("linux-image-{line}"))?;
        names.extend(apt_names(&format!("linux-headers-{line}"))?);
        let abis = tracked_abis(&names, line);
        if abis.is_empty() {
            bail!(
                "apt knows no amd64 kernel of the {line} line (linux-image-{line}.*-amd64-unsigned \
                 with its linux-headers-{line}.*-amd64); refresh the package lists (apt-get update)"
            );
        }
        // apt may list a name it cannot download (no candidate): the
        // newest that it can.
        for abi in abis.iter().take(4) {
            let (img, hdr) = abi_packages(abi);
            let (unknown, _) = ask_apt(&[img.as_str(), hdr.as_str()])?;
            if unknown.is_empty() {
                return Ok(abi.clone());
            }
        }
        bail!(
            "apt lists {} ABIs of the {line} line but can download none of the newest: {}",
            abis.len(),
            abis.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
        )
    })();
    let r = r.map_err(|e| format!("{e:#}"));
    TRACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(line.to_string(), r.clone());
    r.map_err(anyhow::Error::msg)
}

/// Pins a `track:` declaration to the packages of its line's newest ABI
/// ([`track`]); when that fails, the reason stays in the declaration
/// for the first command that needs the kernel ([`resolve`]).
pub fn pin_track(decl: &mut PrebuiltDecl) {
    let Some(line) = decl.track.clone() else {
        return;
    };
    match track(&line) {
        Ok(abi) => {
            let (img, hdr) = abi_packages(&abi);
            decl.debian_package = img;
            decl.headers = Some(hdr);
            decl.track_error = None;
        }
        Err(e) => decl.track_error = Some(format!("{e:#}")),
    }
}

fn resolve_package(pkg: &str, origin: &str, what: &str) -> Result<AptCandidate> {
    if let Some(c) = MEMO.lock().unwrap_or_else(|e| e.into_inner()).get(pkg) {
        return Ok(c.clone());
    }
    let (unknown, why) = ask_apt(&[pkg])?;
    if !unknown.is_empty() {
        bail!(
            "{origin}: {what}: apt does not know the Debian package '{pkg}'{}; check the name \
             (apt-cache search --names-only '^linux-image-' lists the kernels, \
             '^linux-headers-' their headers), or refresh the package lists (apt-get update)",
            match why.as_str() {
                "" => String::new(),
                w => format!(" ({w})"),
            }
        );
    }
    Ok(MEMO.lock().unwrap_or_else(|e| e.into_inner())[pkg].clone())
}

/// The source identity of a prebuilt kernel: its `.deb`'s content.
pub fn identify(decl: &PrebuiltDecl) -> Result<SourceId> {
    let c = resolve(decl)?;
    resolve_headers(decl)?;
    Ok(SourceId {
        id: c.sha256.clone(),
        describe: format!("{}_{}.deb sha256 {}", c.package, c.version, &c.sha256[..16]),
        tarball: None,
        origin: Some(format!("Debian {} {}", c.package, c.version)),
    })
}

/// The kernel key of a prebuilt entry (16 hex digits, as every kernel
/// key): the `.deb`'s sha256 and the layout of the entry.
pub fn key(deb_sha256: &str) -> String {
    let mut h = KeyHasher::new("prebuilt-v1");
    h.part("deb-sha256", deb_sha256.as_bytes());
    h.finish()
}

/// `<cache>/prebuilt/<sha256 of the .deb>/`.
pub fn entry_dir(cache: &Cache, deb_sha256: &str) -> PathBuf {
    cache.dir("prebuilt").join(deb_sha256)
}

/// The kernel release a Debian image package is for, from its name
/// (`linux-image-6.1.0-57-amd64-unsigned` -> `6.1.0-57-amd64`), before it
/// is fetched.
pub fn release_from_package(pkg: &str) -> Option<String> {
    let r = pkg.strip_prefix("linux-image-")?;
    let r = r.strip_suffix("-unsigned").unwrap_or(r);
    r.starts_with(|c: char| c.is_ascii_digit())
        .then(|| r.to_string())
}

/// Takes the ELF kernel out of a bzImage (what the kernel's
/// `scripts/extract-vmlinux` does, but at the payload the boot protocol
/// header points at): gzip in process, xz and zstd through their tools.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    let u32_at = |o: usize| -> Result<usize> {
        let b = bzimage
            .get(o..o + 4)
            .context("the file is too short for a bzImage header")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS boot protocol header)");
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let (off, len) = (u32_at(0x248)?, u32_at(0x24c)?);
    let start = (setup_sects + 1) * 512 + off;
    let payload = bzimage
        .get(start..start + len)
        .context("the bzImage's payload lies outside the file")?;
    // xz and zstd payloads end with the decompressed size (4 bytes, LE),
    // which their tools do not read.
    let sized = |p: &[u8]| -> Result<(Vec<u8>, usize)> {
        let n = p.len().checked_sub(4).context("payload too short")?;
        let size = u32::from_le_bytes([p[n], p[n + 1], p[n + 2], p[n + 3]]) as usize;
        Ok((p[..n].to_vec(), size))
    };
    let elf = if payload.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload).read_to_end(&mut out)?;
        out
    } else if payload.starts_with(b"\xfd7zXZ\x00") {
        let (stream, size) = sized(payload)?;
        let out = decompress_with("xz", &stream)?;
        if out.len() != size {
            bail!("xz gave {} bytes, the bzImage says {size}", out.len());
        }
        out
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let (stream, size) = sized(payload)?;
        let out = decompress_with("zstd", &stream)?;
        if out.len() != size {
            bail!("zstd gave {} bytes, the bzImage says {size}", out.len());
        }
        out
    } else {
        bail!(
            "the bzImage's payload is compressed in a way this does not read (magic {:02x?}; \
             gzip, xz and zstd are read)",
            &payload[..payload.len().min(6)]
        );
    };
    if !elf.starts_with(b"\x7fELF") {
        bail!("the bzImage's payload is not an ELF image");
    }
    Ok(elf)
}

fn decompress_with(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut c = Command::new(tool);
    c.arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .with_context(|| format!("cannot run {tool} (the package {tool} has it)"))?;
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        bail!(
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Finds the sound entry `entry` (a cache hit), or makes it: under a lock
/// named `<kind>-<key>`, a damaged entry set aside, `make` fills a staging
/// dir (given it and a phase reporter) and returns the manifest, which is
/// written there with its `build_seconds` before the dir is published by
/// one rename. Emits `BuildPhase` and `BuildFinished` as a build. What
/// prebuilt and local kernels share.
pub fn find_or_make(
    cache: &Cache,
    v: &Variant,
    kind: &str,
    key: &str,
    entry: &Path,
    events: &dyn EventSink,
    make: impl FnOnce(&Path, &dyn Fn(String)) -> Result<Manifest>,
) -> Result<(Manifest, bool)> {
    let t0 = Instant::now();
    let phase = |what: String| {
        events.event(&Event::BuildPhase {
            variant: v.name.clone(),
            what,
        })
    };
    let finished = |cached| {
        events.event(&Event::BuildFinished {
            variant: v.name.clone(),
            key: key.to_string(),
            cached,
            elapsed: t0.elapsed(),
            entry: entry.to_path_buf(),
        })
    };
    if let Ok(Some(m)) = Manifest::load_sound(entry) {
        finished(true);
        return Ok((m, true));
    }
    std::fs::create_dir_all(cache.dir(kind))?;
    let _lock = cache.lock(&format!("{kind}-{key}"), || {
        phase("waiting for another run making the same kernel entry".into())
    })?;
    match Manifest::load_sound(entry) {
        Ok(Some(m)) => {
            finished(true);
            return Ok((m, true));
        }
        Ok(None) => {}
        Err(why) => {
            phase(format!(
                "cache entry {} is damaged ({why}); making it again",
                entry.display()
            ));
            cache::discard(entry)?;
        }
    }
    cache::remove_stale_staging(entry)?;
    let staging = cache::staging_dir(entry)?;
    let st = staging.path().join("entry");
    std::fs::create_dir_all(&st)?;
    let mut manifest = make(&st, &phase)?;
    manifest.build_seconds = t0.elapsed().as_secs_f64();
    std::fs::write(
        st.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    cache::publish(&st, entry)?;
    finished(false);
    Ok((manifest, false))
}

/// Fetches (or finds) a prebuilt variant's kernel; says whether it was
/// found (a cache hit). Emits `BuildPhase` and `BuildFinished` as a build.
pub fn fetch(
    cache: &Cache,
    v: &Variant,
    decl: &PrebuiltDecl,
    events: &dyn EventSink,
) -> Result<(Manifest, bool)> {
    let c = resolve(decl)?;
    let entry = entry_dir(cache, &c.sha256);
    let key = key(&c.sha256);
    find_or_make(cache, v, "prebuilt", &key, &entry, events, |st, phase| {
        for (tool, pkg) in [("apt-get", "apt"), ("dpkg-deb", "dpkg"), ("depmod", "kmod")] {
            if crate::process::which(tool).is_none() {
                source::require(&[pkg], &format!("{tool} is missing"))?;
            }
        }
        let dl = st.with_file_name("download");
        std::fs::create_dir_all(&dl)?;
        phase(format!(
            "downloading {} {} (apt-get download; nothing is installed)",
            c.package, c.version
        ));
        // As root, apt downloads as its sandbox user _apt where that user may
        // write, else as root: the cache is root's, so root it is.
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(&dl)
            .args(["-q", "-o", "APT::Sandbox::User=root", "download"])
            .arg(format!("{}={}", c.package, c.version));
        run_quiet(
            cmd,
            &format!("apt-get download {}={}", c.package, c.version),
        )?;
        let deb = std::fs::read_dir(&dl)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        let sha = cache::sha256_file(&deb)?;
        if sha != c.sha256 {
            bail!(
                "{}: the downloaded {} has sha256 {sha}, but apt's index says {}",
                decl.origin,
                deb.display(),
                c.sha256
            );
        }
        phase(format!(
            "unpacking {} (dpkg-deb -x into the cache)",
            deb.file_name().unwrap_or_default().to_string_lossy()
        ));
        let root = st.join("root");
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(&deb).arg(&root);
        run_quiet(cmd, "dpkg-deb -x")?;
        std::fs::remove_file(&deb)?;
        let release = only_release(&root.join("lib/modules"))?;
        phase(format!("depmod for {release}"));
        let mut cmd =
            Command::new(crate::process::which("depmod").unwrap_or_else(|| "depmod".into()));
        cmd.arg("-b").arg(&root).arg(&release);
        run_quiet(cmd, "depmod")?;
        let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
        write_vmlinux(&vmlinuz, &st.join("vmlinux"), phase)?;
        let config_rel = format!("root/boot/config-{release}");
        let mut info = PrebuiltInfo {
            package: c.package.clone(),
            version: c.version.clone(),
            deb_sha256: c.sha256.clone(),
            ..Default::default()
        };
        info.read_config(
            &std::fs::read_to_string(st.join(&config_rel))
                .with_context(|| format!("the package has no boot/config-{release}"))?,
        );
        Ok(manifest(v, &entry, &key, &release, info, 0.0))
    })
}

/// Writes the ELF `vmlinux` taken out of the bzImage `image` to `to`.
pub fn write_vmlinux(image: &Path, to: &Path, phase: &dyn Fn(String)) -> Result<()> {
    phase(format!(
        "taking vmlinux out of {}",
        image.file_name().unwrap_or_default().to_string_lossy()
    ));
    let bz = std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    let elf = extract_vmlinux(&bz).with_context(|| format!("{}", image.display()))?;
    std::fs::write(to, elf)?;
    Ok(())
}

/// Where a Debian headers package puts its build dir:
/// `/usr/src/linux-headers-<release>`.
pub fn headers_dir(package: &str) -> PathBuf {
    Path::new("/usr/src").join(package)
}

/// What modules build against, set on a prebuilt kernel's manifest (not
/// stored in the entry: they are the host's): `build_dir` the declared
/// headers package's dir (installed by setup, the same Debian version as
/// the image), `source_dir` the declared source's tree (unpacked once).
/// Neither declared: both stay empty.
pub fn build_inputs(
    cache: &Cache,
    sources: &source::Sources,
    decl: &PrebuiltDecl,
    m: &mut Manifest,
    note: &dyn Fn(&str),
) -> Result<()> {
    if let Some(h) = &decl.headers {
        let want = format!("linux-headers-{}", m.kernel_release);
        if h != &want {
            bail!(
                "{}: prebuilt: headers '{h}' are not the headers of kernel {} (that is {want})",
                decl.headers_origin,
                m.kernel_release
            );
        }
        let dir = headers_dir(h);
        let installed = source::debian_version(h);
        if installed.is_none() || !dir.join("Makefile").is_file() {
            source::require(
                &[h.as_str()],
                &format!(
                    "{}: the headers of prebuilt {} are not installed ({} is missing)",
                    decl.headers_origin,
                    decl.debian_package,
                    dir.display()
                ),
            )?;
        }
        let image_version = m.prebuilt.as_ref().map(|p| p.version.clone());
        if installed != image_version {
            bail!(
                "{}: {h} {} is installed, but the image {} is {}: install the same version \
                 (apt-get install {h}={})",
                decl.headers_origin,
                installed.unwrap_or_default(),
                decl.debian_package,
                image_version.clone().unwrap_or_default(),
                image_version.unwrap_or_default()
            );
        }
        m.build_dir = dir;
    }
    m.source_dir = declared_source_dir(cache, sources, decl.source_decl.as_ref(), note)?;
    Ok(())
}

/// The tree of a declared source a kernel not built here names (unpacked
/// once), or an empty path when it names none.
pub fn declared_source_dir(
    cache: &Cache,
    sources: &source::Sources,
    decl: Option<&SourceDecl>,
    note: &dyn Fn(&str),
) -> Result<PathBuf> {
    let Some(sd) = decl else {
        return Ok(PathBuf::new());
    };
    let id = sources.tarball(cache, sd, &crate::events::Null)?;
    source::unpack(cache, sd, &id, note)
}

/// The one directory under `lib/modules/`: the kernel release.
fn only_release(dir: &Path) -> Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("the package has no {}", dir.display()))?
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => {
            bail!("the package should have one kernel release under lib/modules, it has {names:?}")
        }
    }
}

/// The manifest of an entry at `entry` (paths as published).
pub fn manifest(
    v: &Variant,
    entry: &Path,
    key: &str,
    release: &str,
    info: PrebuiltInfo,
    seconds: f64,
) -> Manifest {
    let root = entry.join("root");
    Manifest {
        variant: v.name.clone(),
        key: key.to_string(),
        source: format!(
            "{}_{}.deb sha256 {}",
            info.package,
            info.version,
            &info.deb_sha256[..16.min(info.deb_sha256.len())]
        ),
        series: Vec::new(),
        fragments: Vec::new(),
        toolchain: String::new(),
        kernel_release: release.to_string(),
        build_seconds: seconds,
        bzimage: root.join(format!("boot/vmlinuz-{release}")),
        vmlinux: entry.join("vmlinux"),
        // Debian's is a placeholder line: the real one is in the -dbg package.
        system_map: root.join(format!("boot/System.map-{release}")),
        config: root.join(format!("boot/config-{release}")),
        modules_dir: root.join("lib/modules").join(release),
        // No source and no build tree: nothing builds against it yet.
        source_dir: PathBuf::new(),
        build_dir: PathBuf::new(),
        kernel_version: source::upstream_version(&info.version).to_string(),
        source_origin: Some(format!("Debian {} {}", info.package, info.version)),
        already_in_source: Vec::new(),
        prebuilt: Some(info),
        build_id: String::new(),
        profiled: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apts_state_moves_when_a_list_changes_and_only_then() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        std::fs::write(d.path().join("x_Packages"), "a").unwrap();
        std::fs::create_dir(d.path().join("partial")).unwrap();
        let before = state_of(&[dir, "/nonexistent"]);
        assert_eq!(state_of(&[dir, "/nonexistent"]), before);
        std::fs::write(d.path().join("x_Packages"), "ab").unwrap();
        assert_ne!(state_of(&[dir]), before, "a list of another size");
        let after = state_of(&[dir]);
        std::fs::write(d.path().join("y_InRelease"), "").unwrap();
        assert_ne!(state_of(&[dir]), after, "a new list");
    }

    const SHOW: &str = "\
Package: linux-image-6.1.0-57-amd64-unsigned
Source: linux-signed-amd64 (6.1.192+3)
Version: 6.1.192-3
Installed-Size: 408265
Depends: kmod, linux-base (>= 4.3~)
Description-en: Linux 6.1 for 64-bit PCs
 The Linux kernel 6.1 and modules for use on PCs with AMD64, Intel 64 or
 VIA Nano processors.
Filename: pool/main/l/linux/linux-image-6.1.0-57-amd64-unsigned_6.1.192-3_amd64.deb
Size: 70584724
SHA256: 6C2B9A0D5E6D4C07E8B1AE2EA1DCC1A0B4C6F9E2D1E5B4A3C2D1E0F9A8B7C6D5

Package: other
Version: 1
SHA256: 0000000000000000000000000000000000000000000000000000000000000000
";

    #[test]
    fn the_newest_abi_of_a_line_from_recorded_apt_names() {
        // `apt-cache pkgnames linux-image-6.1` and `linux-headers-6.1` on
        // the development machine, 2026-12-07 (6.12's names are in it too).
        let names: Vec<String> = include_str!("../../tests/data/apt/pkgnames-6.1.txt")
            .lines()
            .map(String::from)
            .collect();
        let abis = tracked_abis(&names, "6.1");
        assert_eq!(
            abis.first().map(String::as_str),
            Some("6.1.0-57"),
            "{abis:?}"
        );
        assert!(abis.iter().all(|a| a.starts_with("6.1.0-")), "{abis:?}");
        assert_eq!(
            abi_packages(&abis[0]),
            (
                "linux-image-6.1.0-57-amd64-unsigned".to_string(),
                "linux-headers-6.1.0-57-amd64".to_string()
            )
        );
        let abis = tracked_abis(&names, "6.12");
        assert_eq!(
            abis.first().map(String::as_str),
            Some("6.12.118+deb12"),
            "{abis:?}"
        );
        assert!(abis.iter().all(|a| a.starts_with("6.12.")), "{abis:?}");
        assert!(tracked_abis(&names, "5.10").is_empty());
        // Numbers, not text: 10 is newer than 9; an image without its
        // headers, or of another flavour, is no ABI.
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let two = n(&[
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-headers-6.1.0-9-amd64",
            "linux-image-6.1.0-10-amd64-unsigned",
            "linux-headers-6.1.0-10-amd64",
            "linux-image-6.1.0-11-amd64-unsigned",
            "linux-image-6.1.0-12-cloud-amd64-unsigned",
            "linux-headers-6.1.0-12-cloud-amd64",
        ]);
        assert_eq!(tracked_abis(&two, "6.1"), vec!["6.1.0-10", "6.1.0-9"]);
        for bad in ["6", "6.x", "6.1.2", "", "a.b"] {
            assert!(abi_pattern(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn apt_show_gives_version_and_deb_sha256() {
        let c = parse_apt_show(SHOW).unwrap();
        assert_eq!(c.package, "linux-image-6.1.0-57-amd64-unsigned");
        assert_eq!(c.version, "6.1.192-3");
        assert_eq!(
            c.sha256,
            "6c2b9a0d5e6d4c07e8b1ae2ea1dcc1a0b4c6f9e2d1e5b4a3c2d1e0f9a8b7c6d5"
        );
        // No record, or one without a usable SHA256: nothing resolved.
        assert_eq!(parse_apt_show(""), None);
        assert_eq!(
            parse_apt_show("Package: x\nVersion: 1\nSHA256: abc\n"),
            None
        );
        assert_eq!(
            release_from_package("linux-image-6.1.0-57-amd64-unsigned").as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(
            release_from_package("linux-image-6.12.38+deb13-cloud-amd64").as_deref(),
            Some("6.12.38+deb13-cloud-amd64")
        );
        assert_eq!(release_from_package("linux-image-amd64"), None);
        // Every record, for one apt-cache call of many packages.
        let all = parse_apt_show_all(SHOW);
        assert_eq!(
            all.iter().map(|c| c.package.as_str()).collect::<Vec<_>>(),
            ["linux-image-6.1.0-57-amd64-unsigned", "other"]
        );
    }

    #[test]
    fn an_unknown_package_is_an_error_at_its_declaration() {
        let decl = PrebuiltDecl {
            debian_package: "linux-image-0.0.0-no-such-kernel".into(),
            origin: "variants.yaml:9:30".into(),
            ..Default::default()
        };
        let e = format!("{:#}", resolve(&decl).unwrap_err());
        assert!(
            e.starts_with(
                "variants.yaml:9:30: prebuilt: apt does not know the Debian package \
                           'linux-image-0.0.0-no-such-kernel'"
            ),
            "{e}"
        );
    }

    #[test]
    fn config_options_of_a_prebuilt_kernel() {
        let mut i = PrebuiltInfo::default();
        i.read_config(
            "CONFIG_LIVEPATCH=y\nCONFIG_DYNAMIC_FTRACE_WITH_REGS=y\n\
             CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y\n# CONFIG_DYNAMIC_FTRACE_WITH_ARGS is not set\n",
        );
        assert_eq!(i.livepatch.as_deref(), Some("y"));
        assert_eq!(i.dynamic_ftrace_with_regs.as_deref(), Some("y"));
        assert_eq!(i.dynamic_ftrace_with_direct_calls.as_deref(), Some("y"));
        assert_eq!(i.dynamic_ftrace_with_args, None);
        let mut j = PrebuiltInfo::default();
        j.read_config("# CONFIG_LIVEPATCH is not set\n");
        assert_eq!(j.livepatch, None);
        i.package = "linux-image-6.1.0-57-amd64-unsigned".into();
        i.version = "6.1.192-3".into();
        assert_eq!(
            i.describe(),
            "Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3; LIVEPATCH=y \
             DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y DYNAMIC_FTRACE_WITH_ARGS=n DYNAMIC_FTRACE_WITH_REGS=y"
        );
        // A local kernel: its image, and no package fields in the record.
        let l = PrebuiltInfo {
            local_image: Some("/k/boot/vmlinuz-6.1.0-1".into()),
            livepatch: Some("y".into()),
            ..Default::default()
        };
        assert_eq!(l.origin(), "local /k/boot/vmlinuz-6.1.0-1");
        assert_eq!(
            l.describe(),
            "local /k/boot/vmlinuz-6.1.0-1; LIVEPATCH=y DYNAMIC_FTRACE_WITH_DIRECT_CALLS=n \
             DYNAMIC_FTRACE_WITH_ARGS=n DYNAMIC_FTRACE_WITH_REGS=n"
        );
        let back: PrebuiltInfo = serde_json::from_slice(&serde_json::to_vec(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        // A Debian package's record has no local_image field, and reads back.
        let j = serde_json::to_value(&i).unwrap();
        assert!(j.get("local_image").is_none(), "{j}");
        assert_eq!(serde_json::from_value::<PrebuiltInfo>(j).unwrap(), i);
    }

    /// A bzImage-shaped file: the boot header fields the extraction
    /// reads, and `payload` where they point.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x1f1] = 1; // setup sectors: the payload area starts at 2 * 512
        b[0x202..0x206].copy_from_slice(b"HdrS");
        let off = 0x30u32;
        b[0x248..0x24c].copy_from_slice(&off.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.resize(0x400 + off as usize, 0xaa);
        b.extend_from_slice(payload);
        b.extend_from_slice(b"trailing code and data");
        b
    }

    #[test]
    fn vmlinux_comes_out_of_a_gzip_or_xz_bzimage() {
        let elf: Vec<u8> = b"\x7fELF\x02\x01\x01"
            .iter()
            .copied()
            .chain((0..5000u32).flat_map(|i| i.to_le_bytes()))
            .collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(extract_vmlinux(&bzimage(&gz)).unwrap(), elf);
        // xz as the kernel writes it: the stream, then the size.
        let mut xz = Command::new("xz")
            .args(["-c", "--check=crc32"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        xz.stdin.take().unwrap().write_all(&elf).unwrap();
        let mut payload = xz.wait_with_output().unwrap().stdout;
        payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        assert_eq!(extract_vmlinux(&bzimage(&payload)).unwrap(), elf);
        // A wrong size trailer, an unknown compression, no header.
        let n = payload.len();
        payload[n - 4..].copy_from_slice(&7u32.to_le_bytes());
        let e = format!("{}", extract_vmlinux(&bzimage(&payload)).unwrap_err());
        assert!(e.contains("the bzImage says 7"), "{e}");
        let e = format!("{}", extract_vmlinux(&bzimage(b"BZh91AY&SY")).unwrap_err());
        assert!(e.contains("gzip, xz and zstd are read"), "{e}");
        let e = format!("{}", extract_vmlinux(&elf).unwrap_err());
        assert!(e.contains("no HdrS"), "{e}");
        // A payload that is not a kernel.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"not an ELF").unwrap();
        let e = format!(
            "{}",
            extract_vmlinux(&bzimage(&gz.finish().unwrap())).unwrap_err()
        );
        assert!(e.contains("not an ELF"), "{e}");
    }

    #[test]
    fn the_manifest_of_a_prebuilt_entry() {
        let v = Variant {
            name: "debian-6.1-image".into(),
            description: String::new(),
            source: crate::build::variant::Source::Prebuilt(PrebuiltDecl {
                debian_package: "linux-image-6.1.0-57-amd64-unsigned".into(),
                ..Default::default()
            }),
            series: None,
            fragments: Vec::new(),
            coexistence: Default::default(),
            coverage: Vec::new(),
        };
        let info = PrebuiltInfo {
            package: "linux-image-6.1.0-57-amd64-unsigned".into(),
            version: "6.1.192-3".into(),
            deb_sha256: "ab".repeat(32),
            livepatch: Some("y".into()),
            ..Default::default()
        };
        let e = Path::new("/c/prebuilt/x");
        let m = manifest(&v, e, "k", "6.1.0-57-amd64", info.clone(), 1.5);
        assert_eq!(m.bzimage, e.join("root/boot/vmlinuz-6.1.0-57-amd64"));
        assert_eq!(m.vmlinux, e.join("vmlinux"));
        assert_eq!(m.config, e.join("root/boot/config-6.1.0-57-amd64"));
        assert_eq!(m.modules_dir, e.join("root/lib/modules/6.1.0-57-amd64"));
        assert_eq!(m.kernel_version, "6.1.192");
        assert_eq!(
            m.source_origin.as_deref(),
            Some("Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3")
        );
        // It reads back, and a manifest from before `prebuilt` existed
        // reads as a built kernel.
        let back: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back.prebuilt, Some(info));
        let mut j = serde_json::to_value(&m).unwrap();
        j.as_object_mut().unwrap().remove("prebuilt");
        let old: Manifest = serde_json::from_value(j).unwrap();
        assert_eq!(old.prebuilt, None);
        assert_ne!(key("a"), key("b"));
        assert_eq!(key("a").len(), 16);
    }
}
