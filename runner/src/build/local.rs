//! Local kernels: a user's own kernel (`local: {image, modules, headers,
//! source}` in `variants.yaml`), booted as it is built, the way virtme-ng
//! boots any kernel. Nothing is compiled, and the kernel is used where it
//! is, never copied wholesale.
//!
//! In: a [`LocalDecl`]: a bzImage, its `lib/modules/<release>` dir with
//! depmod's output, optionally the build (or headers) dir modules build
//! against and a declared source (its selftests, the livepatch sample).
//! Out: a [`Manifest`] whose `bzimage`, `modules_dir` and `build_dir` are
//! the user's paths, and the entry `<cache>/local/<key>/` with only what
//! is derived or read from outside the declared paths: `manifest.json`,
//! `vmlinux` (the ELF taken out of the image, for its BTF), and copies of
//! the kernel's `config` and `System.map` where found (else empty files).
//!
//! 1. check ([`check`], before anything builds or boots; each error at
//!    its value in `variants.yaml`): the image is a bzImage whose header
//!    names a release, the modules dir is named after that release and
//!    has `modules.dep`, the headers dir has a `Makefile`;
//! 2. key ([`key`]): the content of what is used, so a changed file is a
//!    new key;
//! 3. make the entry ([`prepare`]), published by one rename.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::build::manifest::Manifest;
use crate::build::manifest::PrebuiltInfo;
use crate::build::modules;
use crate::build::prebuilt;
use crate::build::source::{self, SourceId};
use crate::build::variant::{LocalDecl, Variant};
use crate::cache::{Cache, KeyHasher};
use crate::events::EventSink;

/// The files of a headers dir the key covers (not the whole tree): what
/// makes modules built against it fit the kernel.
pub const HEADERS_KEYED: &[&str] = &[".config", "Module.symvers", "include/config/kernel.release"];

/// What the checks found besides the declared paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The kernel release, from the image's header (and the modules dir's
    /// name, which must match).
    pub release: String,
    /// The kernel's config: `<headers>/.config`, `<modules>/build/.config`
    /// or `config-<release>` next to the image, the first there.
    pub config: Option<PathBuf>,
    /// `System.map-<release>` next to the image, `<headers>/System.map` or
    /// `<modules>/build/System.map`, the first there.
    pub system_map: Option<PathBuf>,
}

/// The release a bzImage's boot header names (its `kernel_version`
/// string: "6.1.0-57-amd64 (debian-kernel@...) #1 SMP ..."), from the
/// image's first bytes.
pub fn image_release(head: &[u8]) -> Result<String> {
    if head.get(0x202..0x206) != Some(b"HdrS") {
        bail!("no bzImage boot header (HdrS)");
    }
    let at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let offset = match at(0x20e) {
        Some(0) | None => bail!("its boot header names no kernel version"),
        Some(o) => o as usize + 0x200,
    };
    let text = head
        .get(offset..)
        .context("its kernel version string lies beyond the header")?;
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    let release = String::from_utf8_lossy(text)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if !looks_like_release(&release) {
        bail!("its boot header's kernel version '{release}' is not a kernel release");
    }
    Ok(release)
}

/// "6.1.0-57-amd64", "6.12.0-rc1+": digits first, no path characters.
fn looks_like_release(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit())
        && s.contains('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
}

/// Checks a local kernel's files, each error at its declaration: what a
/// command does before it builds or boots anything.
pub fn check(decl: &LocalDecl) -> Result<Found> {
    let img = &decl.image;
    if !img.is_file() {
        bail!(
            "{}: local: image {} {}",
            decl.image_origin,
            img.display(),
            if img.is_dir() {
                "is a directory: name the kernel image (arch/x86/boot/bzImage, \
                 /boot/vmlinuz-<release>)"
            } else {
                "does not exist"
            }
        );
    }
    let mut head = Vec::new();
    std::fs::File::open(img)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .with_context(|| format!("{}: cannot read {}", decl.image_origin, img.display()))?;
    let release = image_release(&head).map_err(|e| {
        anyhow::anyhow!(
            "{}: local: image {} is not a bzImage: {e} (give arch/x86/boot/bzImage or \
             /boot/vmlinuz-<release>, not vmlinux)",
            decl.image_origin,
            img.display()
        )
    })?;
    let m = &decl.modules;
    if !m.is_dir() {
        bail!(
            "{}: local: modules {} is not a directory (give the lib/modules/{release} dir \
             that make modules_install wrote)",
            decl.modules_origin,
            m.display()
        );
    }
    let name = m
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    if !looks_like_release(&name) {
        bail!(
            "{}: local: modules {} is not named after a kernel release (give the \
             lib/modules/{release} dir of the image's kernel)",
            decl.modules_origin,
            m.display()
        );
    }
    if name != release {
        bail!(
            "{}: local: modules {} are kernel {name}'s, but the image {} is kernel {release}",
            decl.modules_origin,
            m.display(),
            img.display()
        );
    }
    if !m.join("modules.dep").is_file() {
        bail!(
            "{}: local: modules {} has no modules.dep: run depmod (depmod -b <the dir above \
             lib/modules> {release}; make modules_install runs it)",
            decl.modules_origin,
            m.display()
        );
    }
    if let Some(h) = &decl.headers {
        if !h.join("Makefile").is_file() {
            bail!(
                "{}: local: headers {} {}: give the kernel's build dir (the tree, or make's \
                 O= dir) or its headers dir (/usr/src/linux-headers-{release})",
                decl.headers_origin,
                h.display(),
                if h.is_dir() {
                    "has no Makefile"
                } else {
                    "is not a directory"
                }
            );
        }
    }
    let first = |c: Vec<PathBuf>| c.into_iter().find(|p| p.is_file());
    let next_to_image = |f: &str| img.with_file_name(f);
    let in_headers = |f: &str| decl.headers.iter().map(|h| h.join(f)).collect::<Vec<_>>();
    let config = first(
        in_headers(".config")
            .into_iter()
            .chain([
                m.join("build/.config"),
                next_to_image(&format!("config-{release}")),
            ])
            .collect(),
    );
    let system_map = first(
        [next_to_image(&format!("System.map-{release}"))]
            .into_iter()
            .chain(in_headers("System.map"))
            .chain([m.join("build/System.map")])
            .collect(),
    );
    Ok(Found {
        release,
        config,
        system_map,
    })
}

/// The kernel key of a local kernel (16 hex digits, as every kernel key):
/// the release; the image's bytes; each file the image will carry from
/// the modules dir (every `modules.*` index there, `modules.dep` and
/// `modules.builtin` among them, and the `.ko` files of the agent
/// channel's modules with their dependencies), by path and content; the
/// config and System.map found; and, with headers, the content of each
/// of [`HEADERS_KEYED`] (an absent one as absent). Paths are not keyed:
/// the same kernel elsewhere is the same entry.
pub fn key(decl: &LocalDecl, found: &Found) -> Result<String> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut h = KeyHasher::new("local-v1");
    h.part("release", found.release.as_bytes());
    h.part("image", &read(&decl.image)?);
    let carried = modules::preload(&decl.modules, modules::AGENT_CHANNEL_MODULES)
        .map_err(|e| anyhow::anyhow!("{}: local: modules: {e:#}", decl.modules_origin))?;
    for (rel, file) in &carried.files {
        h.part("modules-file", rel.as_bytes());
        h.part("data", &read(file)?);
    }
    for (label, f) in [("config", &found.config), ("system-map", &found.system_map)] {
        match f {
            Some(p) => h.part(label, &read(p)?),
            None => h.part(label, b"absent"),
        };
    }
    if let Some(dir) = &decl.headers {
        for f in HEADERS_KEYED {
            let p = dir.join(f);
            h.part("headers-file", f.as_bytes());
            match p.is_file() {
                true => h.part("data", &read(&p)?),
                false => h.part("absent", b""),
            };
        }
    }
    Ok(h.finish())
}

/// The source identity of a local kernel: its content key, after the
/// checks.
pub fn identify(decl: &LocalDecl) -> Result<SourceId> {
    let found = check(decl)?;
    let key = key(decl, &found)?;
    Ok(SourceId {
        id: key.clone(),
        describe: format!("local {} (content key {key})", decl.image.display()),
        tarball: None,
        origin: Some(format!("local {}", decl.image.display())),
    })
}

/// `<cache>/local/<key>/`.
pub fn entry_dir(cache: &Cache, key: &str) -> PathBuf {
    cache.dir("local").join(key)
}

/// Makes (or finds) a local kernel's entry, its key `key` (from
/// [`identify`]); says whether it was found (a cache hit). The manifest's
/// paths are this declaration's (the same content may have been entered
/// from another path).
pub fn prepare(
    cache: &Cache,
    v: &Variant,
    decl: &LocalDecl,
    key: &str,
    events: &dyn EventSink,
) -> Result<(Manifest, bool)> {
    let found = check(decl)?;
    let entry = entry_dir(cache, key);
    let (mut m, cached) =
        prebuilt::find_or_make(cache, v, "local", key, &entry, events, |st, phase| {
            prebuilt::write_vmlinux(&decl.image, &st.join("vmlinux"), phase)?;
            for (f, to) in [(&found.config, "config"), (&found.system_map, "System.map")] {
                match f {
                    Some(p) => std::fs::copy(p, st.join(to)).map(|_| ())?,
                    None => std::fs::write(st.join(to), b"")?,
                }
            }
            let mut info = PrebuiltInfo::default();
            info.read_config(&std::fs::read_to_string(st.join("config"))?);
            Ok(manifest(v, decl, &entry, key, &found.release, info))
        })?;
    let info = m.prebuilt.take().unwrap_or_default();
    m = Manifest {
        build_seconds: m.build_seconds,
        ..manifest(v, decl, &entry, key, &m.kernel_release, info)
    };
    Ok((m, cached))
}

/// What modules build against, set on a local kernel's manifest:
/// `build_dir` the declared headers, `source_dir` the declared source's
/// tree (unpacked once). Neither declared: both stay empty.
pub fn build_inputs(
    cache: &Cache,
    sources: &source::Sources,
    decl: &LocalDecl,
    m: &mut Manifest,
    note: &dyn Fn(&str),
) -> Result<()> {
    m.build_dir = decl.headers.clone().unwrap_or_default();
    m.source_dir = prebuilt::declared_source_dir(cache, sources, decl.source_decl.as_ref(), note)?;
    Ok(())
}

/// The manifest of a local kernel's entry at `entry`.
pub fn manifest(
    v: &Variant,
    decl: &LocalDecl,
    entry: &Path,
    key: &str,
    release: &str,
    info: PrebuiltInfo,
) -> Manifest {
    let origin = format!("local {}", decl.image.display());
    Manifest {
        variant: v.name.clone(),
        key: key.to_string(),
        source: format!("{origin} (content key {key})"),
        series: Vec::new(),
        fragments: Vec::new(),
        toolchain: String::new(),
        kernel_release: release.to_string(),
        build_seconds: 0.0,
        bzimage: decl.image.clone(),
        vmlinux: entry.join("vmlinux"),
        system_map: entry.join("System.map"),
        config: entry.join("config"),
        modules_dir: decl.modules.clone(),
        source_dir: PathBuf::new(),
        build_dir: PathBuf::new(),
        kernel_version: release.to_string(),
        source_origin: Some(origin),
        already_in_source: Vec::new(),
        prebuilt: Some(PrebuiltInfo {
            local_image: Some(decl.image.clone()),
            ..info
        }),
        build_id: String::new(),
        profiled: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage-shaped file for kernel `release`: the boot header, the
    /// version string it points at, and a gzip payload holding `elf`.
    pub fn bzimage(release: &str, elf: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(elf).unwrap();
        let payload = gz.finish().unwrap();
        let mut b = vec![0u8; 0x400];
        b[0x1f1] = 1; // setup sectors: the payload area starts at 2 * 512
        b[0x202..0x206].copy_from_slice(b"HdrS");
        // The version string at 0x300 (the field is an offset from 0x200).
        b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let v = format!("{release} (me@here) #1 SMP\0");
        b[0x300..0x300 + v.len()].copy_from_slice(v.as_bytes());
        b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&payload);
        b
    }

    /// A local kernel laid out as `make install`/`modules_install` would:
    /// `boot/vmlinuz-<r>`, `boot/config-<r>`, `lib/modules/<r>/` with
    /// depmod's files and the agent channel's modules (plus one more),
    /// and a headers dir.
    fn kernel(dir: &Path, release: &str) -> LocalDecl {
        let w = |p: PathBuf, data: &[u8]| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        w(
            dir.join(format!("boot/vmlinuz-{release}")),
            &bzimage(release, b"\x7fELF kernel"),
        );
        w(
            dir.join(format!("boot/config-{release}")),
            b"CONFIG_LIVEPATCH=y\n",
        );
        let m = dir.join("lib/modules").join(release);
        w(
            m.join("modules.dep"),
            b"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n\
              kernel/drivers/virtio/virtio.ko:\n\
              kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko\n\
              kernel/fs/other.ko:\n",
        );
        w(m.join("modules.builtin"), b"kernel/lib/crc32.ko\n");
        for k in ["virtio/virtio_pci", "virtio/virtio", "char/virtio_console"] {
            w(m.join(format!("kernel/drivers/{k}.ko")), k.as_bytes());
        }
        w(m.join("kernel/fs/other.ko"), b"other");
        let h = dir.join("headers");
        w(h.join("Makefile"), b"include ../src/Makefile\n");
        w(
            h.join(".config"),
            b"CONFIG_LIVEPATCH=y\nCONFIG_DYNAMIC_FTRACE_WITH_ARGS=y\n",
        );
        w(
            h.join("Module.symvers"),
            b"0x1\tsym\tvmlinux\tEXPORT_SYMBOL\n",
        );
        LocalDecl {
            image: dir.join(format!("boot/vmlinuz-{release}")),
            modules: m,
            headers: Some(h),
            image_origin: "v.yaml:1:1".into(),
            modules_origin: "v.yaml:2:2".into(),
            headers_origin: "v.yaml:3:3".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_release_comes_from_the_images_boot_header() {
        let b = bzimage("6.1.0-57-amd64", b"\x7fELF");
        assert_eq!(image_release(&b).unwrap(), "6.1.0-57-amd64");
        let e = image_release(b"\x7fELF not a bzImage").unwrap_err();
        assert!(e.to_string().contains("no bzImage boot header"), "{e}");
        let mut no_version = b.clone();
        no_version[0x20e..0x210].copy_from_slice(&[0, 0]);
        let e = image_release(&no_version).unwrap_err();
        assert!(e.to_string().contains("names no kernel version"), "{e}");
    }

    #[test]
    fn each_bad_file_is_an_error_at_its_declaration() {
        let d = tempfile::tempdir().unwrap();
        let ok = kernel(d.path(), "6.1.0-1-test");
        let found = check(&ok).unwrap();
        assert_eq!(found.release, "6.1.0-1-test");
        // The headers' config first; System.map: none anywhere.
        assert_eq!(
            found.config,
            Some(d.path().join("headers/.config")),
            "{found:?}"
        );
        assert_eq!(found.system_map, None);
        let without_headers = LocalDecl {
            headers: None,
            ..ok.clone()
        };
        assert_eq!(
            check(&without_headers).unwrap().config,
            Some(d.path().join("boot/config-6.1.0-1-test"))
        );
        let err = |decl: LocalDecl| format!("{:#}", check(&decl).unwrap_err());
        let e = err(LocalDecl {
            image: d.path().join("boot/nope"),
            ..ok.clone()
        });
        assert!(
            e.starts_with("v.yaml:1:1: local: image ") && e.ends_with("boot/nope does not exist"),
            "{e}"
        );
        let e = err(LocalDecl {
            image: d.path().join("headers/Makefile"),
            ..ok.clone()
        });
        assert!(
            e.starts_with("v.yaml:1:1: local: image ") && e.contains("is not a bzImage"),
            "{e}"
        );
        let other = d.path().join("lib/modules/6.2.0-other");
        std::fs::create_dir_all(&other).unwrap();
        let e = err(LocalDecl {
            modules: other.clone(),
            ..ok.clone()
        });
        assert!(
            e.starts_with("v.yaml:2:2: local: modules ")
                && e.contains("are kernel 6.2.0-other's, but the image"),
            "{e}"
        );
        let e = err(LocalDecl {
            modules: d.path().join("lib/modules"),
            ..ok.clone()
        });
        assert!(e.contains("is not named after a kernel release"), "{e}");
        std::fs::remove_file(ok.modules.join("modules.dep")).unwrap();
        let e = err(ok.clone());
        assert!(
            e.starts_with("v.yaml:2:2: local: modules ") && e.contains("has no modules.dep"),
            "{e}"
        );
        let e = err(LocalDecl {
            headers: Some(d.path().join("boot")),
            ..kernel(d.path(), "6.1.0-1-test")
        });
        assert!(
            e.starts_with("v.yaml:3:3: local: headers ") && e.contains("has no Makefile"),
            "{e}"
        );
    }

    #[test]
    fn the_key_is_the_content_of_what_is_used() {
        let d = tempfile::tempdir().unwrap();
        let decl = kernel(d.path(), "6.1.0-1-test");
        let key_now = || key(&decl, &check(&decl).unwrap()).unwrap();
        let k0 = key_now();
        assert_eq!(k0.len(), 16);
        assert_eq!(k0, key_now());
        // The same kernel elsewhere: the same key.
        let e = tempfile::tempdir().unwrap();
        let moved = kernel(e.path(), "6.1.0-1-test");
        assert_eq!(key(&moved, &check(&moved).unwrap()).unwrap(), k0);
        // A module the image does not carry: no change.
        std::fs::write(decl.modules.join("kernel/fs/other.ko"), b"changed").unwrap();
        assert_eq!(key_now(), k0);
        // Each file that is used: a new key.
        let mut seen = vec![k0];
        let mut changed = |p: PathBuf, data: &[u8]| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            let k = key_now();
            assert!(
                !seen.contains(&k),
                "{} changed, the key did not",
                p.display()
            );
            seen.push(k);
        };
        changed(
            decl.image.clone(),
            &bzimage("6.1.0-1-test", b"\x7fELF other"),
        );
        changed(
            decl.modules.join("kernel/drivers/virtio/virtio.ko"),
            b"rebuilt",
        );
        changed(decl.modules.join("modules.builtin"), b"");
        let h = decl.headers.clone().unwrap();
        changed(h.join(".config"), b"CONFIG_LIVEPATCH=m\n");
        changed(h.join("Module.symvers"), b"");
        changed(h.join("include/config/kernel.release"), b"6.1.0-1-test\n");
        // A modules dir without the agent channel's modules: at its declaration.
        std::fs::write(decl.modules.join("modules.dep"), b"kernel/fs/other.ko:\n").unwrap();
        let e = format!("{:#}", key(&decl, &check(&decl).unwrap()).unwrap_err());
        assert!(
            e.starts_with("v.yaml:2:2: local: modules: ") && e.contains("virtio_pci"),
            "{e}"
        );
    }

    #[test]
    fn the_entry_holds_what_is_derived_and_the_manifest_the_users_paths() {
        let d = tempfile::tempdir().unwrap();
        let decl = kernel(d.path(), "6.1.0-1-test");
        let cache = Cache::open(d.path().join("cache")).unwrap();
        let v = Variant {
            name: "mine".into(),
            description: String::new(),
            source: crate::build::variant::Source::Local(decl.clone()),
            series: None,
            fragments: Vec::new(),
            coexistence: Default::default(),
            coverage: Vec::new(),
        };
        let id = identify(&decl).unwrap();
        assert_eq!(id.id, key(&decl, &check(&decl).unwrap()).unwrap());
        let ev = crate::events::Null;
        let (m, cached) = prepare(&cache, &v, &decl, &id.id, &ev).unwrap();
        assert!(!cached);
        let entry = entry_dir(&cache, &id.id);
        assert_eq!(entry, d.path().join("cache/local").join(&id.id));
        // Derived: vmlinux out of the image; copied: the config found.
        assert_eq!(
            std::fs::read(entry.join("vmlinux")).unwrap(),
            b"\x7fELF kernel"
        );
        assert_eq!(
            std::fs::read(entry.join("config")).unwrap(),
            std::fs::read(d.path().join("headers/.config")).unwrap()
        );
        assert_eq!(std::fs::read(entry.join("System.map")).unwrap(), b"");
        let mut names: Vec<String> = std::fs::read_dir(&entry)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["System.map", "config", "manifest.json", "vmlinux"]);
        assert_eq!(m.bzimage, decl.image);
        assert_eq!(m.modules_dir, decl.modules);
        assert_eq!(m.kernel_release, "6.1.0-1-test");
        let info = m.prebuilt.clone().unwrap();
        assert_eq!(info.local_image.as_deref(), Some(decl.image.as_path()));
        assert_eq!(info.livepatch.as_deref(), Some("y"));
        assert_eq!(info.dynamic_ftrace_with_args.as_deref(), Some("y"));
        // Found again, with this declaration's paths.
        let e = tempfile::tempdir().unwrap();
        let moved = kernel(e.path(), "6.1.0-1-test");
        let (again, cached) = prepare(&cache, &v, &moved, &id.id, &ev).unwrap();
        assert!(cached);
        assert_eq!(again.bzimage, moved.image);
        assert_eq!(again.modules_dir, moved.modules);
        assert_eq!(again.vmlinux, entry.join("vmlinux"));
        // Modules build against the headers; without them, nothing.
        let sources = source::Sources::default();
        let mut m2 = m.clone();
        build_inputs(&cache, &sources, &decl, &mut m2, &|_| {}).unwrap();
        assert_eq!(m2.build_dir, d.path().join("headers"));
        assert!(m2.source_dir.as_os_str().is_empty());
    }
}
