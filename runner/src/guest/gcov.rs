//! gcov, the tool that reads gcc's counts: one job's `.gcda` files (read
//! back from the guest) with the `.gcno` notes of the build, as gcov's
//! JSON intermediate format (`gcov --json-format --stdout`).
//!
//! In: a job's gcda directory (the guest's paths below
//! `/sys/kernel/debug/gcov`, which are the build directory's on the host)
//! and the build directory. Out: per source file, its lines with counts and
//! branch counts, and its functions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One source file as gcov reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct GcovFile {
    /// As the compiler saw it (relative to the build directory).
    pub file: String,
    #[serde(default)]
    pub functions: Vec<GcovFunction>,
    #[serde(default)]
    pub lines: Vec<GcovLine>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GcovFunction {
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    pub execution_count: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GcovLine {
    pub line_number: u32,
    pub count: u64,
    #[serde(default)]
    pub branches: Vec<GcovBranch>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GcovBranch {
    pub count: u64,
}

#[derive(Deserialize)]
struct GcovDoc {
    files: Vec<GcovFile>,
}

/// `file` (as the compiler saw it, relative to the build directory, which
/// sits inside the source tree) relative to the source tree.
pub fn source_relative(file: &str) -> &str {
    file.trim_start_matches("../")
}

/// Whether `file` (relative to the tree) is one of the profiled
/// `patterns` (`dir/name.c`, `dir/*.c`).
pub fn profiled(file: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix("*.c") {
        Some(dir) => {
            file.starts_with(dir) && !file[dir.len()..].contains('/') && file.ends_with(".c")
        }
        None => file == p,
    })
}

/// What one job reached of the profiled files: lines `(file, line)` and
/// branches `(file, line, branch)` with a count; and of those, what lies
/// in the area's functions (`area.yaml`'s `functions:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reached {
    pub lines: BTreeSet<(String, u32)>,
    pub branches: BTreeSet<(String, u32, u32)>,
    pub area_lines: BTreeSet<(String, u32)>,
    pub area_branches: BTreeSet<(String, u32, u32)>,
}

impl Reached {
    /// Of the files gcov read, what the `patterns` files reached, and in
    /// them what the functions named in `area` reached.
    pub fn of(files: &[GcovFile], patterns: &[String], area: &[String]) -> Reached {
        let mut r = Reached::default();
        for f in files {
            let rel = source_relative(&f.file);
            if !profiled(rel, patterns) {
                continue;
            }
            let ranges: Vec<(u32, u32)> = f
                .functions
                .iter()
                .filter(|g| area.contains(&g.name))
                .map(|g| (g.start_line, g.end_line))
                .collect();
            for l in f.lines.iter().filter(|l| l.count > 0) {
                let in_area = ranges
                    .iter()
                    .any(|&(a, b)| (a..=b).contains(&l.line_number));
                let line = (rel.to_string(), l.line_number);
                if in_area {
                    r.area_lines.insert(line.clone());
                }
                r.lines.insert(line);
                for (i, b) in l.branches.iter().enumerate() {
                    if b.count > 0 {
                        let br = (rel.to_string(), l.line_number, i as u32);
                        if in_area {
                            r.area_branches.insert(br.clone());
                        }
                        r.branches.insert(br);
                    }
                }
            }
        }
        r
    }
}

/// Every `.gcda` under `dir`.
fn gcda_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if e.file_type()?.is_dir() {
            gcda_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "gcda") {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses gcov's `--stdout --json-format` output: one JSON document per
/// line, one per `.gcda` given.
pub fn parse(stdout: &str) -> Result<Vec<GcovFile>> {
    let mut out = Vec::new();
    for l in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let d: GcovDoc = serde_json::from_str(l).context("gcov's JSON output")?;
        out.extend(d.files);
    }
    Ok(out)
}

/// One job's counts: gcov over every `.gcda` of `gcda_dir`, each read with
/// the `.gcno` the build left beside its object in `build_dir`. Run in the
/// build directory, as the compiler was, so the source paths resolve.
pub fn job(gcda_dir: &Path, build_dir: &Path) -> Result<Vec<GcovFile>> {
    let mut gcdas = Vec::new();
    gcda_files(gcda_dir, &mut gcdas)?;
    if gcdas.is_empty() {
        return Ok(Vec::new());
    }
    // gcov finds each .gcno beside its .gcda: link the build's notes into
    // the job's directory (the guest's path is the build dir's path).
    let build_rel = build_dir.strip_prefix("/").unwrap_or(build_dir);
    for g in &gcdas {
        let rel = g.strip_prefix(gcda_dir).unwrap_or(g);
        let Ok(obj_rel) = rel.strip_prefix(build_rel) else {
            bail!(
                "{}: not a count of this build ({} is not under {})",
                g.display(),
                rel.display(),
                build_dir.display()
            );
        };
        let gcno = build_dir.join(obj_rel).with_extension("gcno");
        let link = g.with_extension("gcno");
        if !link.exists() {
            if !gcno.is_file() {
                bail!(
                    "{}: the build has no notes file {} (was it rebuilt?)",
                    g.display(),
                    gcno.display()
                );
            }
            std::os::unix::fs::symlink(&gcno, &link)
                .with_context(|| format!("cannot link {}", link.display()))?;
        }
    }
    let out = Command::new("gcov")
        .current_dir(build_dir)
        .args(["--json-format", "--stdout", "--branch-probabilities"])
        .args(&gcdas)
        .output()
        .context("cannot run gcov (it comes with gcc)")?;
    if !out.status.success() {
        bail!(
            "gcov failed on {}: {}",
            gcda_dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcov_json_lines_parse_into_files_lines_and_branches() {
        let out = r#"{"format_version": "1", "gcc_version": "12.2.0", "current_working_directory": "/b", "data_file": "x.gcda", "files": [{"file": "../kernel/bpf/trampoline.c", "functions": [{"name": "f", "demangled_name": "f", "start_line": 3, "start_column": 1, "end_line": 9, "end_column": 1, "blocks": 4, "blocks_executed": 2, "execution_count": 5}], "lines": [{"line_number": 4, "function_name": "f", "count": 5, "unexecuted_block": false, "branches": [{"count": 5, "fallthrough": true, "throw": false}, {"count": 0, "fallthrough": false, "throw": false}]}]}]}
{"format_version": "1", "files": []}
"#;
        let f = parse(out).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].file, "../kernel/bpf/trampoline.c");
        assert_eq!(f[0].functions[0].end_line, 9);
        assert_eq!(f[0].lines[0].count, 5);
        assert_eq!(
            f[0].lines[0]
                .branches
                .iter()
                .map(|b| b.count)
                .collect::<Vec<_>>(),
            vec![5, 0]
        );
        assert!(parse("not json {").is_ok_and(|v| v.is_empty()));
        assert!(parse("{ broken").is_err());
        let r = Reached::of(&f, &["kernel/bpf/*.c".to_string()], &["f".to_string()]);
        assert_eq!(r.lines.len(), 1);
        assert_eq!(r.area_lines, r.lines, "line 4 is in f (3-9)");
        assert_eq!(
            r.branches.into_iter().collect::<Vec<_>>(),
            vec![("kernel/bpf/trampoline.c".to_string(), 4, 0)]
        );
        let other = Reached::of(&f, &["kernel/bpf/*.c".to_string()], &["g".to_string()]);
        assert!(other.area_lines.is_empty() && other.area_branches.is_empty());
        assert_eq!(other.lines.len(), 1);
        assert!(Reached::of(&f, &["kernel/trace/ftrace.c".to_string()], &[])
            .lines
            .is_empty());
    }

    #[test]
    fn profiled_files_match_names_and_directories() {
        let p = vec![
            "kernel/bpf/trampoline.c".to_string(),
            "kernel/livepatch/*.c".to_string(),
        ];
        assert!(profiled("kernel/bpf/trampoline.c", &p));
        assert!(profiled("kernel/livepatch/core.c", &p));
        assert!(!profiled("kernel/livepatch/x/core.c", &p));
        assert!(!profiled("include/linux/list.h", &p));
        assert_eq!(
            source_relative("../kernel/bpf/trampoline.c"),
            "kernel/bpf/trampoline.c"
        );
    }
}
