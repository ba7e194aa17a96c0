//! What a built (or prebuilt, or local) kernel is, as the cache records
//! it in `kernels/<key>/manifest.json`: the seam between `build` and every
//! stage after it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::kconfig::{self, Value};
use crate::cache::KeyHasher;

/// What `kernels/<key>/manifest.json` records. Paths are absolute.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub variant: String,
    pub key: String,
    pub source: String,
    pub series: Vec<String>,
    pub fragments: Vec<String>,
    pub toolchain: String,
    pub kernel_release: String,
    pub build_seconds: f64,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub system_map: PathBuf,
    pub config: PathBuf,
    /// `lib/modules/<release>` with modules.dep, as modules_install wrote it.
    pub modules_dir: PathBuf,
    /// Source and build dirs, for out-of-tree modules:
    /// `make -C <source_dir> O=<build_dir> M=<module dir>`.
    pub source_dir: PathBuf,
    pub build_dir: PathBuf,
    /// The kernel version of the source ("6.1.192"), from its Makefile.
    #[serde(default)]
    pub kernel_version: String,
    /// Where the source comes from ("Debian linux-source-6.1 6.1.192-3").
    #[serde(default)]
    pub source_origin: Option<String>,
    /// Patches of the series that were already in the source (they
    /// reverse-apply cleanly) and were skipped.
    #[serde(default)]
    pub already_in_source: Vec<String>,
    /// A prebuilt kernel (a distribution's package): what it is. None for
    /// a kernel built here.
    #[serde(default)]
    pub prebuilt: Option<PrebuiltInfo>,
    /// Which publication of this key this is: set when a kernel is built
    /// again under the same key ([`Builder::rebuild`]), so what was built
    /// against the earlier one (fixtures, images) gets other keys. Empty
    /// for a first build.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_id: String,
    /// A coverage twin's files compiled with gcov profiling
    /// (`kernel-config/area.yaml`'s `profile:`); empty for any other kernel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiled: Vec<String>,
}

impl Manifest {
    /// This kernel in the key of anything made for it (fixtures, images,
    /// and through the image its snapshots): its key, and the `build_id`
    /// of a kernel built again under its key, which is another kernel.
    pub fn key_parts<'h>(&self, h: &'h mut KeyHasher) -> &'h mut KeyHasher {
        h.part("kernel", self.key.as_bytes());
        if !self.build_id.is_empty() {
            h.part("build-id", self.build_id.as_bytes());
        }
        h
    }

    /// A published entry's manifest if the entry is sound: it reads back
    /// and every artifact it names is there. `Ok(None)`: no entry; Err:
    /// the entry exists but is damaged (why).
    pub fn load_sound(entry: &Path) -> Result<Option<Manifest>, String> {
        if !entry.exists() {
            return Ok(None);
        }
        let m = Manifest::load(entry).map_err(|e| format!("{e:#}"))?;
        for p in [&m.vmlinux, &m.bzimage, &m.system_map, &m.config] {
            if !p.is_file() {
                return Err(format!("{} is missing", p.display()));
            }
        }
        if !m.modules_dir.join("modules.dep").is_file() {
            return Err(format!(
                "{}/modules.dep is missing",
                m.modules_dir.display()
            ));
        }
        Ok(Some(m))
    }

    pub fn load(entry: &Path) -> Result<Manifest> {
        let p = entry.join("manifest.json");
        let b = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_slice(&b).with_context(|| format!("{}: bad manifest", p.display()))
    }
}

/// What a kernel not built here says about itself besides the paths: a
/// Debian package (`prebuilt:`), or a user's own kernel (`local:`, see
/// [`crate::build::local`]; then the package fields are empty).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrebuiltInfo {
    /// The Debian package (`linux-image-6.1.0-57-amd64-unsigned`).
    pub package: String,
    /// Its Debian version (`6.1.192-3`).
    pub version: String,
    /// sha256 of the `.deb`: the entry's content key.
    pub deb_sha256: String,
    /// A local kernel: its image, as declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_image: Option<PathBuf>,
    /// The options of the kernel's config this project is about, as set
    /// there (`y`, `m`) or `None` when unset.
    pub livepatch: Option<String>,
    pub dynamic_ftrace_with_direct_calls: Option<String>,
    pub dynamic_ftrace_with_args: Option<String>,
    pub dynamic_ftrace_with_regs: Option<String>,
}

impl PrebuiltInfo {
    /// Where the kernel comes from: "Debian <package> <version>", or
    /// "local <image path>".
    pub fn origin(&self) -> String {
        match &self.local_image {
            Some(p) => format!("local {}", p.display()),
            None => format!("Debian {} {}", self.package, self.version),
        }
    }

    /// "Debian <package> <version>; LIVEPATCH=y DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y
    /// DYNAMIC_FTRACE_WITH_ARGS=y DYNAMIC_FTRACE_WITH_REGS=y" (an unset
    /// option as `=n`; "local <image path>; ..." for a local kernel): what
    /// reports show of a kernel not built here.
    pub fn describe(&self) -> String {
        let o = |name: &str, v: &Option<String>| format!("{name}={}", v.as_deref().unwrap_or("n"));
        format!(
            "{}; {} {} {} {}",
            self.origin(),
            o("LIVEPATCH", &self.livepatch),
            o(
                "DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
                &self.dynamic_ftrace_with_direct_calls
            ),
            o("DYNAMIC_FTRACE_WITH_ARGS", &self.dynamic_ftrace_with_args),
            o("DYNAMIC_FTRACE_WITH_REGS", &self.dynamic_ftrace_with_regs)
        )
    }

    /// Reads the options from the kernel's `config`.
    pub fn read_config(&mut self, config_text: &str) {
        let c = kconfig::parse_dotconfig(config_text);
        let get = |o: &str| match c.get(o) {
            Some(Value::Set(v)) => Some(v.clone()),
            _ => None,
        };
        self.livepatch = get("CONFIG_LIVEPATCH");
        self.dynamic_ftrace_with_direct_calls = get("CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS");
        self.dynamic_ftrace_with_args = get("CONFIG_DYNAMIC_FTRACE_WITH_ARGS");
        self.dynamic_ftrace_with_regs = get("CONFIG_DYNAMIC_FTRACE_WITH_REGS");
    }
}
