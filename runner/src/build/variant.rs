//! Kernel variants: `kernel-config/variants.yaml` names each variant's
//! source, patch series and config fragments. Suites refer to variants by name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::build::area::{Area, Profiled};
use crate::build::kconfig::{self, Fragment};
use crate::build::series::Series;
use crate::input::{self, yaml_error};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantsFile {
    pub sources: Vec<SourceDecl>,
    pub variants: Vec<VariantDecl>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDecl {
    pub name: String,
    /// A release tarball, e.g. Debian's `/usr/src/linux-source-6.1.tar.xz`.
    pub tarball: PathBuf,
    /// The Debian package that ships the tarball (installed by setup).
    pub debian_package: Option<String>,
    /// The kernel version the tarball must hold ("6.1.192"); a different
    /// one is an error, never a silent mix.
    #[serde(default)]
    pub version: Option<String>,
    /// Where it is declared ("variants.yaml:2:5"), for errors.
    #[serde(skip)]
    pub origin: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantDecl {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The declared source the kernel is built from (not with `prebuilt`).
    #[serde(default)]
    pub source: Option<String>,
    /// A directory under `patches/` holding a quilt `series` file.
    pub series: Option<String>,
    /// Fragment names: `kernel-config/<name>.config`, merged in order.
    #[serde(default)]
    pub fragments: Option<Vec<String>>,
    /// A kernel as a distribution ships it, instead of `source`, `series`
    /// and `fragments`.
    #[serde(default)]
    pub prebuilt: Option<PrebuiltDecl>,
    /// A user's own kernel (an image, its modules dir, its headers),
    /// instead of `source`, `series`, `fragments` and `prebuilt`.
    #[serde(default)]
    pub local: Option<LocalDecl>,
    /// The rule this kernel is meant to follow for a livepatch and a BPF
    /// trampoline on one function (default `shared`).
    #[serde(default)]
    pub coexistence: Coexistence,
}

/// A prebuilt kernel: a Debian kernel image package, downloaded (never
/// installed) and unpacked into the cache.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrebuiltDecl {
    /// E.g. `linux-image-6.1.0-57-amd64-unsigned`; with `track`, the
    /// package the run pinned.
    #[serde(default)]
    pub debian_package: String,
    /// Instead of `debian_package` and `headers`: a Debian kernel line
    /// (`"6.1"`, `"6.12"`) whose newest ABI apt knows is used, its amd64
    /// image and the headers of the same ABI (`prebuilt::track`), pinned
    /// once per run.
    #[serde(default)]
    pub track: Option<String>,
    /// Why `track` resolved to nothing (apt knows no ABI of the line, or
    /// could not be asked): the error a command that needs the kernel
    /// gives, at the declaration.
    #[serde(skip)]
    pub track_error: Option<String>,
    /// The headers package modules build against
    /// (`linux-headers-6.1.0-57-amd64`; installed by setup).
    #[serde(default)]
    pub headers: Option<String>,
    /// The declared source (under `sources:`) whose tree gives what the
    /// packages do not ship built (the livepatch sample).
    #[serde(default)]
    pub source: Option<String>,
    /// Where it is declared ("variants.yaml:40:16", at the package name),
    /// for errors.
    #[serde(skip)]
    pub origin: String,
    /// Where `headers` is declared, for errors.
    #[serde(skip)]
    pub headers_origin: String,
    /// `source`, resolved.
    #[serde(skip)]
    pub source_decl: Option<SourceDecl>,
}

/// A user's own kernel, used where it is (nothing is copied but what must
/// be derived): `local: {image, modules, headers, source}`. Relative
/// paths are relative to the project root; after parsing they are
/// absolute.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDecl {
    /// The kernel image (a bzImage: `arch/x86/boot/bzImage`,
    /// `/boot/vmlinuz-<release>`).
    pub image: PathBuf,
    /// Its modules: a `lib/modules/<release>` dir with depmod's output.
    pub modules: PathBuf,
    /// The build (or headers) dir modules build against: a dir with the
    /// kernel's `Makefile`, `.config` and `Module.symvers`.
    #[serde(default)]
    pub headers: Option<PathBuf>,
    /// The declared source (under `sources:`) whose tree gives the
    /// selftests and the livepatch sample, as for a prebuilt kernel.
    #[serde(default)]
    pub source: Option<String>,
    /// Where each is declared ("variants.yaml:40:14", at the value), for
    /// errors.
    #[serde(skip)]
    pub image_origin: String,
    #[serde(skip)]
    pub modules_origin: String,
    #[serde(skip)]
    pub headers_origin: String,
    /// `source`, resolved.
    #[serde(skip)]
    pub source_decl: Option<SourceDecl>,
}

/// What a variant's kernel is meant to do with a livepatch (an IPMODIFY
/// ftrace_ops) and a BPF trampoline (a DIRECT ftrace_ops with ops_func) on
/// one function. `explore`'s model takes its rule from here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Coexistence {
    /// The post-series rule (Linux 6.0, ftrace_ops->ops_func): both share it.
    #[default]
    Shared,
    /// The pre-series rule: the second of the two is refused with EBUSY.
    Exclusive,
}

/// Where a variant's source comes from, once resolved.
#[derive(Clone, Debug)]
pub enum Source {
    Tarball(SourceDecl),
    /// A developer's own kernel tree, built as it is checked out.
    Tree(PathBuf),
    /// A kernel built by a distribution: nothing is compiled.
    Prebuilt(PrebuiltDecl),
    /// A user's own kernel, used where it is: nothing is compiled.
    Local(LocalDecl),
}

/// A variant with every file it names loaded and checked.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub description: String,
    pub source: Source,
    pub series: Option<Series>,
    pub fragments: Vec<Fragment>,
    pub coexistence: Coexistence,
    /// A coverage twin's profiled files (empty: the plain variant).
    pub coverage: Vec<Profiled>,
}

/// The fragment a coverage twin adds (`kernel-config/coverage.config`).
pub const COVERAGE_FRAGMENT: &str = "coverage";

impl Variant {
    /// Whether this is a coverage twin ([`Variant::coverage_twin`]).
    pub fn is_coverage_twin(&self) -> bool {
        !self.coverage.is_empty()
    }

    /// The coverage twin of this variant: the same source, series and
    /// fragments, plus `kernel-config/coverage.config` (gcov, debugfs),
    /// with the area's `profile:` files compiled with gcov profiling. Its
    /// own kernel (its own key), under the same name, so the suites'
    /// expectations for the variant are its expectations. Err: a variant
    /// that is not built here (prebuilt, local): there is nothing to
    /// compile with profiling.
    pub fn coverage_twin(&self, root: &Path, area: &Area) -> Result<Variant> {
        if !self.source.builds_here() {
            bail!(
                "--coverage: variant '{}' is a {} kernel; a coverage twin compiles the kernel \
                 with gcov profiling, so it needs a variant built here from a source",
                self.name,
                self.source.name()
            );
        }
        if area.profile.is_empty() {
            bail!(
                "--coverage: {} declares no file under 'profile:'",
                area.path.display()
            );
        }
        let mut twin = self.clone();
        let path = root
            .join("kernel-config")
            .join(format!("{COVERAGE_FRAGMENT}.config"));
        twin.fragments
            .push(Fragment::load(COVERAGE_FRAGMENT, &path)?);
        kconfig::check_conflicts(&twin.fragments)
            .with_context(|| format!("variant '{}' with {}", self.name, path.display()))?;
        twin.coverage = area.profile.clone();
        twin.description = format!("{} (coverage twin)", self.description);
        Ok(twin)
    }
}

/// The project's declarative inputs: `kernel-config/`, `patches/`.
#[derive(Clone, Debug)]
pub struct Project {
    pub root: PathBuf,
}

impl Project {
    pub fn variants_file(&self) -> PathBuf {
        self.root.join("kernel-config/variants.yaml")
    }

    /// The project root: `--root`, or the nearest ancestor of the current
    /// directory holding `kernel-config/variants.yaml`, or this source tree.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Project> {
        if let Some(r) = explicit {
            let p = Project { root: r };
            if !p.variants_file().is_file() {
                bail!(
                    "--root {}: no kernel-config/variants.yaml there",
                    p.root.display()
                );
            }
            return Ok(p);
        }
        let mut dir = std::env::current_dir()?;
        loop {
            if dir.join("kernel-config/variants.yaml").is_file() {
                return Ok(Project { root: dir });
            }
            if !dir.pop() {
                break;
            }
        }
        let built_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if built_in.join("kernel-config/variants.yaml").is_file() {
            return Ok(Project {
                root: built_in.canonicalize()?,
            });
        }
        bail!("cannot find kernel-config/variants.yaml above the current directory: pass --root")
    }

    /// The variants as declared (`build::kinds` has `load_variants`,
    /// which also pins what a `track:` resolves to).
    pub fn parse_variants_file(&self, kernel_tree: Option<&Path>) -> Result<Vec<Variant>> {
        let path = self.variants_file();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        parse_variants(&text, &path, &self.root, kernel_tree)
    }
}

/// The ABI names of a Debian kernel line (`"6.1"`): `6.1.0-57` (the
/// 6.1 line's form) or `6.12.118+deb12` (6.12's); `None` when `line` is
/// not `<major>.<minor>`.
pub fn abi_pattern(line: &str) -> Option<regex::Regex> {
    let (a, b) = line.split_once('.')?;
    let num = |x: &str| !x.is_empty() && x.len() <= 3 && x.bytes().all(|c| c.is_ascii_digit());
    if !num(a) || !num(b) {
        return None;
    }
    regex::Regex::new(&format!(r"^{a}\.{b}\.(\d+)(?:-(\d+)|\+deb(\d+))$")).ok()
}

/// Names a variant may not have: `default` (a suite's expectation for the
/// other variants) and `all` (every suite, on the command line).
pub const RESERVED: &[&str] = &["default", "all"];

pub fn parse_variants(
    text: &str,
    path: &Path,
    root: &Path,
    kernel_tree: Option<&Path>,
) -> Result<Vec<Variant>> {
    let mut file: VariantsFile = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let at = |needle: &str| input::place(path, text, 1, needle);
    if file.variants.is_empty() {
        bail!(
            "{}: no variants are declared under 'variants:'",
            at("variants")
        );
    }
    let mut out: Vec<Variant> = Vec::new();
    for i in 0..file.sources.len() {
        let s = &file.sources[i];
        if file.sources[..i].iter().any(|o| o.name == s.name) {
            bail!(
                "{}: source '{}' is declared twice",
                at(&format!("name: {}", s.name)),
                s.name
            );
        }
        let origin = at(&format!("name: {}", s.name));
        if let Some(v) = &s.version {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
            {
                bail!(
                    "{origin}: source '{}': version '{v}' is not a kernel version (e.g. 6.1.192)",
                    s.name
                );
            }
        }
        file.sources[i].origin = origin;
    }
    // Each declaration is looked for after the previous one, so a name
    // declared twice is placed at its second declaration.
    let mut from = 1;
    for (i, v) in file.variants.iter().enumerate() {
        let (here, here_line) = match input::find_from(text, from, &format!("name: {}", v.name)) {
            Some((l, c)) => {
                from = l + 1;
                (format!("{}:{l}:{c}", path.display()), l)
            }
            None => (at(&format!("name: {}", v.name)), 1),
        };
        // The next declaration's line: a key looked for in this one must
        // come before it.
        let next_decl = file.variants.get(i + 1).and_then(|n| {
            input::find_from(text, here_line + 1, &format!("name: {}", n.name)).map(|p| p.0)
        });
        if out.iter().any(|o| o.name == v.name) {
            bail!("{here}: variant '{}' is declared twice", v.name);
        }
        input::check_name("variant", &v.name).map_err(|m| anyhow::anyhow!("{here}: {m}"))?;
        if RESERVED.contains(&v.name.as_str()) {
            bail!(
                "{here}: '{}' is reserved (suites use it for the other variants; the CLI for every \
                 suite); name the variant otherwise",
                v.name
            );
        }
        // A key of this declaration: its position, if it is before the next.
        let pat = |k: &str| {
            input::find_from(text, here_line, &format!("{k}:"))
                .filter(|(l, _)| next_decl.is_none_or(|n| *l < n))
                .map(|(l, c)| format!("{}:{l}:{c}", path.display()))
        };
        // The position of a key's value (`key: value`), else of the key.
        let value_at = |k: &str, value: &str| {
            input::find_from(text, here_line, &format!("{k}: {value}"))
                .filter(|(l, _)| next_decl.is_none_or(|n| *l < n))
                .map(|(l, c)| format!("{}:{l}:{}", path.display(), c + k.len() + 2))
                .or_else(|| pat(k))
                .unwrap_or_else(|| here.clone())
        };
        let declared_source = |sname: &str| -> Result<SourceDecl> {
            match file.sources.iter().find(|s| s.name == sname) {
                Some(s) => Ok(s.clone()),
                None => bail!(
                    "{}: variant '{}' names source '{sname}', which is not declared under \
                     'sources:' (known: {})",
                    input::find_from(text, here_line, &format!("source: {sname}"))
                        .filter(|(l, _)| next_decl.is_none_or(|n| *l < n))
                        .map(|(l, c)| format!("{}:{l}:{c}", path.display()))
                        .unwrap_or_else(|| here.clone()),
                    v.name,
                    file.sources
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        };
        let kind = match (&v.prebuilt, &v.local) {
            (Some(_), Some(_)) => bail!(
                "{}: variant '{}' is both prebuilt and local: give one of 'prebuilt:' (a \
                 distribution's package) and 'local:' (your own kernel)",
                pat("local").unwrap_or_else(|| here.clone()),
                v.name
            ),
            (Some(_), None) => Some(("prebuilt", "its package built it")),
            (None, Some(_)) => Some(("local", "you built it")),
            (None, None) => None,
        };
        if let Some((kind, as_built)) = kind {
            // The kernel is there already: nothing to build it from.
            for (key, given) in [
                ("source", v.source.is_some()),
                ("series", v.series.is_some()),
                ("fragments", v.fragments.is_some()),
            ] {
                if given {
                    bail!(
                        "{}: variant '{}' is {kind}: '{key}' does not apply (a {kind} kernel \
                         comes as {as_built}; declare another variant to build one)",
                        pat(key).unwrap_or_else(|| here.clone()),
                        v.name
                    );
                }
            }
        }
        if let Some(l) = &v.local {
            let abs = |p: &Path| root.join(p);
            let shown = |p: &Path| p.display().to_string();
            let headers_origin = match &l.headers {
                Some(h) => value_at("headers", &shown(h)),
                None => here.clone(),
            };
            out.push(Variant {
                name: v.name.clone(),
                description: v.description.clone(),
                source: Source::Local(LocalDecl {
                    image: abs(&l.image),
                    modules: abs(&l.modules),
                    headers: l.headers.as_deref().map(abs),
                    source: l.source.clone(),
                    image_origin: value_at("image", &shown(&l.image)),
                    modules_origin: value_at("modules", &shown(&l.modules)),
                    headers_origin,
                    source_decl: l.source.as_deref().map(declared_source).transpose()?,
                }),
                series: None,
                fragments: Vec::new(),
                coexistence: v.coexistence,
                coverage: Vec::new(),
            });
            continue;
        }
        if let Some(p) = &v.prebuilt {
            let origin = match &p.track {
                Some(line) => {
                    let at_t = value_at("track", line);
                    if !p.debian_package.is_empty() || p.headers.is_some() {
                        bail!(
                            "{at_t}: variant '{}': 'track:' picks the package and its headers; \
                             give either 'track:' or 'debian_package:' (with 'headers:')",
                            v.name
                        );
                    }
                    if abi_pattern(line).is_none() {
                        bail!(
                            "{at_t}: track '{line}' is not a kernel line: give its major and \
                             minor version, such as \"6.1\" or \"6.12\""
                        );
                    }
                    at_t
                }
                None => {
                    input::check_debian_package("Debian package", &p.debian_package).map_err(
                        |m| {
                            anyhow::anyhow!(
                                "{}: {m}",
                                pat("debian_package").unwrap_or(here.clone())
                            )
                        },
                    )?;
                    input::find_from(text, here_line, &p.debian_package)
                        .map(|(l, c)| format!("{}:{l}:{c}", path.display()))
                        .unwrap_or_else(|| here.clone())
                }
            };
            let mut headers_origin = match &p.track {
                Some(_) => origin.clone(),
                None => here.clone(),
            };
            if let Some(h) = &p.headers {
                let at_h = value_at("headers", h);
                input::check_debian_package("Debian package", h)
                    .map_err(|m| anyhow::anyhow!("{at_h}: {m}"))?;
                headers_origin = at_h;
            }
            out.push(Variant {
                name: v.name.clone(),
                description: v.description.clone(),
                source: Source::Prebuilt(PrebuiltDecl {
                    debian_package: p.debian_package.clone(),
                    track: p.track.clone(),
                    track_error: None,
                    headers: p.headers.clone(),
                    source: p.source.clone(),
                    origin,
                    headers_origin,
                    source_decl: p.source.as_deref().map(declared_source).transpose()?,
                }),
                series: None,
                fragments: Vec::new(),
                coexistence: v.coexistence,
                coverage: Vec::new(),
            });
            continue;
        }
        let Some(source_name) = &v.source else {
            bail!(
                "{here}: variant '{}' names no source: give 'source:' (with 'fragments:') to build \
                 a kernel, 'prebuilt:' for a distribution's, or 'local:' for your own",
                v.name
            );
        };
        let source = match kernel_tree {
            // Building a variant with a series from a user tree is refused
            // when that variant is built (kbuild::Builder::plan).
            Some(t) => Source::Tree(t.to_path_buf()),
            None => match file.sources.iter().find(|s| &s.name == source_name) {
                Some(s) => Source::Tarball(s.clone()),
                None => bail!(
                    "{}: variant '{}' names source '{}', which is not declared under 'sources:' (known: {})",
                    at(&format!("source: {source_name}")),
                    v.name,
                    source_name,
                    file.sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        let series = match &v.series {
            None => None,
            Some(name) => {
                input::check_name("patch series", name)
                    .map_err(|m| anyhow::anyhow!("{}: {m}", at(&format!("series: {name}"))))?;
                let dir = root.join("patches").join(name);
                if !dir.join("series").is_file() {
                    bail!(
                        "{}: variant '{}' names patch series '{name}', but {} does not exist",
                        at(&format!("series: {name}")),
                        v.name,
                        dir.join("series").display()
                    );
                }
                Some(Series::load(name, &dir)?)
            }
        };
        let frags = v.fragments.as_deref().unwrap_or_default();
        if frags.is_empty() {
            bail!("{here}: variant '{}' lists no config fragment", v.name);
        }
        let mut fragments = Vec::new();
        for f in frags {
            input::check_name("config fragment", f)
                .map_err(|m| anyhow::anyhow!("{}: {m}", at(f)))?;
            let fp = root.join("kernel-config").join(format!("{f}.config"));
            if !fp.is_file() {
                bail!(
                    "{}: variant '{}' names config fragment '{f}', but {} does not exist",
                    at(f),
                    v.name,
                    fp.display()
                );
            }
            fragments.push(Fragment::load(f, &fp)?);
        }
        kconfig::check_conflicts(&fragments)
            .with_context(|| format!("variant '{}' ({here})", v.name))?;
        out.push(Variant {
            name: v.name.clone(),
            description: v.description.clone(),
            source,
            series,
            fragments,
            coexistence: v.coexistence,
            coverage: Vec::new(),
        });
    }
    Ok(out)
}

/// Picks variants by name, in the order given; unknown names are an error
/// that lists the known ones.
pub fn select<'a>(all: &'a [Variant], names: &[String]) -> Result<Vec<&'a Variant>> {
    names
        .iter()
        .map(|n| {
            all.iter().find(|v| &v.name == n).with_context(|| {
                format!(
                    "unknown variant '{n}' (known: {})",
                    all.iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        std::fs::create_dir_all(root.join("kernel-config")).unwrap();
        std::fs::create_dir_all(root.join("patches/p")).unwrap();
        std::fs::write(root.join("kernel-config/a.config"), "CONFIG_A=y\n").unwrap();
        std::fs::write(
            root.join("kernel-config/b.config"),
            "# CONFIG_A is not set\n",
        )
        .unwrap();
        std::fs::write(root.join("patches/p/series"), "x.patch\n").unwrap();
        std::fs::write(
            root.join("patches/p/x.patch"),
            "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n",
        )
        .unwrap();
        (d, root)
    }

    const HEAD: &str = "sources:\n  - name: deb\n    tarball: /nonexistent.tar.xz\nvariants:\n";

    fn parse(root: &Path, body: &str) -> Result<Vec<Variant>> {
        let text = format!("{HEAD}{body}");
        parse_variants(&text, Path::new("variants.yaml"), root, None)
    }

    #[test]
    fn a_prebuilt_variant_may_track_a_debian_line_instead_of_a_package() {
        let (_d, root) = project();
        // Parsing asks apt nothing: the package is pinned when the
        // project's variants load (`prebuilt::pin_track`).
        let v = parse(
            &root,
            "  - name: img\n    prebuilt: {track: \"6.1\", source: deb}\n",
        )
        .unwrap();
        let Source::Prebuilt(p) = &v[0].source else {
            panic!("{:?}", v[0].source)
        };
        assert_eq!(p.track.as_deref(), Some("6.1"));
        assert!(p.debian_package.is_empty() && p.headers.is_none());
        assert_eq!(p.origin, "variants.yaml:6:16");
        // Both forms at once, and a line that is not one: at the track.
        for (line, want) in [
            (
                "{track: \"6.1\", debian_package: linux-image-x}",
                "variants.yaml:6:16: variant 'img': 'track:' picks the package and its headers",
            ),
            (
                "{track: \"6.1\", headers: linux-headers-x}",
                "variants.yaml:6:16: variant 'img': 'track:' picks",
            ),
            (
                "{track: latest}",
                "variants.yaml:6:23: track 'latest' is not a kernel line",
            ),
        ] {
            let e = parse(&root, &format!("  - name: img\n    prebuilt: {line}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(want), "{line}: {e}");
        }
    }

    #[test]
    fn a_prebuilt_variant_declares_its_headers_and_a_source_tree() {
        let (_d, root) = project();
        let v = parse(
            &root,
            "  - name: img\n    prebuilt: {debian_package: linux-image-6.1.0-57-amd64-unsigned, \
             headers: linux-headers-6.1.0-57-amd64, source: deb}\n",
        )
        .unwrap();
        let Source::Prebuilt(p) = &v[0].source else {
            panic!("{:?}", v[0].source)
        };
        assert_eq!(p.headers.as_deref(), Some("linux-headers-6.1.0-57-amd64"));
        // At the headers package's name, for apt's verdict later.
        assert_eq!(p.headers_origin, "variants.yaml:6:78");
        let sd = p.source_decl.as_ref().unwrap();
        assert_eq!(sd.name, "deb");
        assert_eq!(sd.tarball, Path::new("/nonexistent.tar.xz"));
        // Neither: nothing to build modules against, and no error.
        let v = parse(
            &root,
            "  - name: img\n    prebuilt: {debian_package: linux-image-x}\n",
        )
        .unwrap();
        let Source::Prebuilt(p) = &v[0].source else {
            panic!()
        };
        assert!(p.headers.is_none() && p.source_decl.is_none());
        // A source that is not declared: at its name.
        let e = parse(
            &root,
            "  - name: img\n    prebuilt:\n      debian_package: linux-image-x\n      \
             source: nope\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "variants.yaml:8:7: variant 'img' names source 'nope', which is not declared \
                 under 'sources:' (known: deb)"
            ),
            "{e}"
        );
        // A headers package that is not a name: at it.
        let e = parse(
            &root,
            "  - name: img\n    prebuilt:\n      debian_package: linux-image-x\n      \
             headers: \"linux headers\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("variants.yaml:8:7: Debian package 'linux headers'"),
            "{e}"
        );
    }

    #[test]
    fn a_local_variant_names_its_files_and_nothing_to_build() {
        let (_d, root) = project();
        let v = parse(
            &root,
            "  - name: mine\n    local:\n      image: k/bzImage\n      modules: \
             /lib/modules/6.1.0-1\n      headers: k/build\n      source: deb\n",
        )
        .unwrap();
        let Source::Local(l) = &v[0].source else {
            panic!("{:?}", v[0].source)
        };
        // Relative to the project root; absolute ones as they are.
        assert_eq!(l.image, root.join("k/bzImage"));
        assert_eq!(l.modules, Path::new("/lib/modules/6.1.0-1"));
        assert_eq!(l.headers.as_deref(), Some(root.join("k/build").as_path()));
        assert_eq!(l.source_decl.as_ref().unwrap().name, "deb");
        // Each placed at its value, for the checks later.
        assert_eq!(l.image_origin, "variants.yaml:7:14");
        assert_eq!(l.modules_origin, "variants.yaml:8:16");
        assert_eq!(l.headers_origin, "variants.yaml:9:16");
        assert!(v[0].fragments.is_empty() && v[0].series.is_none());
        // Flow style, no headers.
        let v = parse(
            &root,
            "  - name: mine\n    local: {image: /b, modules: /m/6.1.0}\n",
        )
        .unwrap();
        let Source::Local(l) = &v[0].source else {
            panic!()
        };
        assert!(l.headers.is_none() && l.source_decl.is_none());
        assert_eq!(l.image_origin, "variants.yaml:6:20");
        // Fragments, both kinds, an unknown source, an unknown key.
        let e = parse(
            &root,
            "  - name: mine\n    local: {image: /b, modules: /m}\n    fragments: [a]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("variants.yaml:7:5: variant 'mine' is local: 'fragments' does not apply"),
            "{e}"
        );
        let e = parse(
            &root,
            "  - name: mine\n    prebuilt: {debian_package: linux-image-x}\n    \
             local: {image: /b, modules: /m}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("variants.yaml:7:5: variant 'mine' is both prebuilt and local"),
            "{e}"
        );
        let e = parse(
            &root,
            "  - name: mine\n    local:\n      image: /b\n      modules: /m\n      source: nope\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("variants.yaml:9:7: variant 'mine' names source 'nope'"),
            "{e}"
        );
        let e = parse(
            &root,
            "  - name: mine\n    local: {image: /b, modules: /m, config: /c}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("variants.yaml:6:") && e.contains("unknown field `config`"),
            "{e}"
        );
    }

    #[test]
    fn loads_series_and_fragments() {
        let (_d, root) = project();
        let v = parse(
            &root,
            "  - name: v1\n    source: deb\n    series: p\n    fragments: [a]\n",
        )
        .unwrap();
        assert_eq!(v[0].name, "v1");
        assert_eq!(v[0].series.as_ref().unwrap().patches.len(), 1);
        assert_eq!(v[0].fragments[0].requests.len(), 1);
    }

    #[test]
    fn errors_point_at_lines() {
        let (_d, root) = project();
        let e = parse(
            &root,
            "  - name: v1\n    source: nope\n    fragments: [a]\n",
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("variants.yaml:6:"), "{e}");
        let e = parse(
            &root,
            "  - name: v1\n    source: deb\n    fragments: [a, missing]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("variants.yaml:7:") && e.to_string().contains("missing.config"),
            "{e}"
        );
        let e = parse(
            &root,
            "  - name: v1\n    source: deb\n    series: q\n    fragments: [a]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("variants.yaml:7:") && e.to_string().contains("patches/q"),
            "{e}"
        );
        let e = parse(&root, "  - name: v1\n    source: deb\n    fragmnts: [a]\n").unwrap_err();
        assert!(e.to_string().starts_with("variants.yaml:7:5: "), "{e}");
        assert!(e.to_string().contains("unknown field `fragmnts`"), "{e}");
        assert!(
            !e.to_string().contains("at line"),
            "position given twice: {e}"
        );
        let e = parse(
            &root,
            "  - name: v1\n    source: deb\n    fragments: [a, b]\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("disagree on CONFIG_A"), "{e:#}");
        let e = parse(
            &root,
            "  - name: v1\n    source: deb\n    fragments: [a]\n  - name: v1\n    source: deb\n    fragments: [a]\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
    }

    #[test]
    fn a_prebuilt_variant_names_a_package_and_nothing_to_build() {
        let (_d, root) = project();
        let v = parse(
            &root,
            "  - name: img\n    prebuilt: {debian_package: linux-image-6.1.0-57-amd64-unsigned}\n",
        )
        .unwrap();
        let Source::Prebuilt(p) = &v[0].source else {
            panic!("{:?}", v[0].source)
        };
        assert_eq!(p.debian_package, "linux-image-6.1.0-57-amd64-unsigned");
        // Placed at the package name, for resolution errors later.
        assert_eq!(p.origin, "variants.yaml:6:32");
        assert!(v[0].fragments.is_empty() && v[0].series.is_none());
        // With source, series or fragments: an error at that key.
        for (key, line) in [
            ("source: deb", "    source: deb\n"),
            ("series: p", "    series: p\n"),
            ("fragments: [a]", "    fragments: [a]\n"),
        ] {
            let e = parse(
                &root,
                &format!("  - name: img\n    prebuilt: {{debian_package: linux-image-x}}\n{line}"),
            )
            .unwrap_err()
            .to_string();
            let k = key.split(':').next().unwrap();
            assert!(
                e.starts_with("variants.yaml:7:5: variant 'img' is prebuilt: ")
                    && e.contains(&format!("'{k}' does not apply")),
                "{key}: {e}"
            );
        }
        // A key of the next variant is not this one's.
        parse(
            &root,
            "  - name: img\n    prebuilt: {debian_package: linux-image-x}\n  - name: v1\n    source: deb\n    fragments: [a]\n",
        )
        .unwrap();
        // Unknown keys, a package that is not a name, neither source nor prebuilt.
        let e = parse(&root, "  - name: img\n    prebuilt: {debian_pkg: x}\n").unwrap_err();
        assert!(
            e.to_string().starts_with("variants.yaml:6:")
                && e.to_string().contains("unknown field `debian_pkg`"),
            "{e}"
        );
        let e = parse(
            &root,
            "  - name: img\n    prebuilt:\n      debian_package: \"linux image\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("variants.yaml:7:7: Debian package 'linux image'"),
            "{e}"
        );
        let e = parse(&root, "  - name: img\n    fragments: [a]\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("variants.yaml:5:5: variant 'img' names no source"),
            "{e}"
        );
    }

    #[test]
    fn kernel_tree_replaces_the_source() {
        let (_d, root) = project();
        let text =
            format!("{HEAD}  - name: v1\n    source: deb\n    series: p\n    fragments: [a]\n");
        let v = parse_variants(
            &text,
            Path::new("v.yaml"),
            &root,
            Some(Path::new("/src/linux")),
        )
        .unwrap();
        assert!(matches!(v[0].source, Source::Tree(_)));
        assert!(v[0].series.is_some());
    }

    #[test]
    fn project_variants_file_is_valid() {
        let p = Project::locate(Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))).unwrap();
        let v = p.load_variants(None).unwrap();
        let names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
        for n in [
            "stock",
            "baseline",
            "share-ipmodify",
            "share-ipmodify-lockdep",
            "debian-6.1-image",
        ] {
            assert!(names.contains(&n), "{names:?}");
        }
        assert!(select(&v, &["nope".into()])
            .unwrap_err()
            .to_string()
            .contains("known: stock"));
    }
}
