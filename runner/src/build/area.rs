//! The area under test, declared once in `kernel-config/area.yaml`: the
//! functions `mutants` mutates by default, and the files a coverage twin
//! compiles with gcov profiling.
//!
//! In: the project root. Out: an [`Area`]; for a coverage twin's tree,
//! the `GCOV_PROFILE` lines appended to its Makefiles
//! ([`Area::profile_tree`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::input;

/// The area's declaration, relative to the project root.
pub const AREA_FILE: &str = "kernel-config/area.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaFile {
    functions: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    profile: Vec<String>,
}

/// One profiled file, or every object of a directory (`dir/*.c`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profiled {
    /// As declared: `kernel/bpf/trampoline.c`, `kernel/livepatch/*.c`.
    pub pattern: String,
    /// `kernel-config/area.yaml:LINE:COL` of the declaration.
    pub at: String,
}

impl Profiled {
    /// The directory whose Makefile gets the line, and the line:
    /// `GCOV_PROFILE_<obj>.o := y`, or `GCOV_PROFILE := y` for `dir/*.c`.
    pub fn makefile_line(&self) -> (&str, String) {
        let (dir, file) = self.pattern.rsplit_once('/').unwrap_or(("", &self.pattern));
        let stem = file.strip_suffix(".c").unwrap_or(file);
        if stem == "*" {
            (dir, "GCOV_PROFILE := y".to_string())
        } else {
            (dir, format!("GCOV_PROFILE_{stem}.o := y"))
        }
    }
}

#[derive(Clone, Debug)]
pub struct Area {
    pub path: PathBuf,
    /// (file, alternatives `a|b`) in file order.
    pub functions: Vec<(String, Vec<String>)>,
    pub profile: Vec<Profiled>,
}

/// A C identifier.
pub fn is_c_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `p` is a relative `dir/name.c` or `dir/*.c` with no `..`.
fn is_profile_pattern(p: &str) -> bool {
    let Some((dir, file)) = p.rsplit_once('/') else {
        return false;
    };
    let stem = file.strip_suffix(".c").unwrap_or("");
    !dir.is_empty()
        && !p.starts_with('/')
        && dir
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != "." && !c.contains('*'))
        && (stem == "*" || (!stem.is_empty() && !stem.contains('*')))
}

impl Area {
    /// Reads and checks `kernel-config/area.yaml` under `root`.
    pub fn load(root: &Path) -> Result<Area> {
        let path = root.join(AREA_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Area::parse(&text, &path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Area> {
        let f: AreaFile = serde_yaml::from_str(text).map_err(|e| input::yaml_error(path, &e))?;
        let mut functions = Vec::new();
        for (file, names) in f.functions {
            for n in names {
                let alts: Vec<String> = n.split('|').map(|s| s.trim().to_string()).collect();
                if alts.iter().any(|a| !is_c_name(a)) {
                    bail!(
                        "{}: '{n}' under {file} is not a C function name (or a|b)",
                        input::place(path, text, 1, &n)
                    );
                }
                functions.push((file.clone(), alts));
            }
        }
        let from = input::line_of(text, "profile:");
        let mut profile: Vec<Profiled> = Vec::new();
        for p in f.profile {
            let at = input::place(path, text, from, &p);
            if !is_profile_pattern(&p) {
                bail!(
                    "{at}: profile: '{p}' is not a source file of the tree \
                     (dir/name.c) or a directory's objects (dir/*.c)"
                );
            }
            if profile.iter().any(|q| q.pattern == p) {
                bail!("{at}: profile: '{p}' is given twice");
            }
            profile.push(Profiled { pattern: p, at });
        }
        Ok(Area {
            path: path.to_path_buf(),
            functions,
            profile,
        })
    }

    /// The profile's patterns, for cache keys.
    pub fn profile_key(&self) -> Vec<String> {
        self.profile.iter().map(|p| p.pattern.clone()).collect()
    }

    /// Appends each profiled file's `GCOV_PROFILE` line to its directory's
    /// Makefile in `tree` (a new file, never written through a hard link
    /// to the pristine source). Err: a declared file (or a `dir/*.c`
    /// directory) the tree lacks, at its line in the area file.
    pub fn profile_tree(profile: &[Profiled], tree: &Path) -> Result<()> {
        let mut lines: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for p in profile {
            let (dir, line) = p.makefile_line();
            let exists = if p.pattern.ends_with("/*.c") {
                tree.join(dir).join("Makefile").is_file()
            } else {
                tree.join(&p.pattern).is_file()
            };
            if !exists {
                bail!(
                    "{}: profile: the source has no {} (in {})",
                    p.at,
                    p.pattern,
                    tree.display()
                );
            }
            lines.entry(dir).or_default().push(line);
        }
        for (dir, add) in lines {
            let mk = tree.join(dir).join("Makefile");
            let mut text = std::fs::read_to_string(&mk)
                .with_context(|| format!("cannot read {}", mk.display()))?;
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("# coexist: gcov profiling of the area under test\n");
            for l in add {
                text.push_str(&l);
                text.push('\n');
            }
            let tmp = mk.with_extension("coexist-tmp");
            std::fs::write(&tmp, text)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &mk)
                .with_context(|| format!("cannot replace {}", mk.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "functions:\n  kernel/bpf/trampoline.c:\n    - bpf_trampoline_update\n    - a|b\nprofile:\n  - kernel/bpf/trampoline.c\n  - kernel/livepatch/*.c\n";

    #[test]
    fn the_area_reads_functions_and_profile_with_their_lines() {
        let a = Area::parse(GOOD, Path::new("area.yaml")).unwrap();
        assert_eq!(a.functions.len(), 2);
        assert_eq!(a.functions[1].1, vec!["a", "b"]);
        assert_eq!(a.profile[1].at, "area.yaml:7:5");
        assert_eq!(
            a.profile[0].makefile_line(),
            ("kernel/bpf", "GCOV_PROFILE_trampoline.o := y".to_string())
        );
        assert_eq!(
            a.profile[1].makefile_line(),
            ("kernel/livepatch", "GCOV_PROFILE := y".to_string())
        );
    }

    #[test]
    fn bad_profile_entries_are_refused_at_their_line() {
        for (bad, line) in [
            ("/abs/x.c", 6),
            ("../x.c", 6),
            ("kernel/x.h", 6),
            ("x.c", 6),
            ("kernel/*/x.c", 6),
        ] {
            let text =
                format!("functions: {{}}\nprofile:\n  - kernel/bpf/trampoline.c\n\n\n  - {bad}\n");
            let e = Area::parse(&text, Path::new("area.yaml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("area.yaml:{line}:")), "{bad}: {e}");
        }
        let twice = "functions: {}\nprofile:\n  - a/b.c\n  - a/b.c\n";
        let e = Area::parse(twice, Path::new("area.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn profiling_appends_to_a_new_makefile_and_names_a_missing_file() {
        let d = tempfile::tempdir().unwrap();
        let pristine = d.path().join("pristine");
        let tree = d.path().join("tree");
        let t = &pristine;
        std::fs::create_dir_all(t.join("kernel/bpf")).unwrap();
        std::fs::create_dir_all(t.join("kernel/livepatch")).unwrap();
        std::fs::write(t.join("kernel/bpf/Makefile"), "obj-y += trampoline.o\n").unwrap();
        std::fs::write(t.join("kernel/bpf/trampoline.c"), "").unwrap();
        std::fs::write(t.join("kernel/livepatch/Makefile"), "obj-y += core.o").unwrap();
        assert!(std::process::Command::new("cp")
            .arg("-al")
            .arg(&pristine)
            .arg(&tree)
            .status()
            .unwrap()
            .success());
        let a = Area::parse(GOOD, Path::new("area.yaml")).unwrap();
        Area::profile_tree(&a.profile, &tree).unwrap();
        let mk = std::fs::read_to_string(tree.join("kernel/bpf/Makefile")).unwrap();
        assert!(mk.ends_with("GCOV_PROFILE_trampoline.o := y\n"), "{mk}");
        let lp = std::fs::read_to_string(tree.join("kernel/livepatch/Makefile")).unwrap();
        assert!(lp.starts_with("obj-y += core.o\n#"), "{lp}");
        // The pristine source is untouched.
        assert_eq!(
            std::fs::read_to_string(pristine.join("kernel/bpf/Makefile")).unwrap(),
            "obj-y += trampoline.o\n"
        );
        let missing = Area::parse(
            "functions: {}\nprofile:\n  - kernel/bpf/nope.c\n",
            Path::new("area.yaml"),
        )
        .unwrap();
        let e = Area::profile_tree(&missing.profile, &tree)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("area.yaml:3:5: profile: the source has no kernel/bpf/nope.c"),
            "{e}"
        );
    }
}
