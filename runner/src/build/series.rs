//! Quilt-style patch series: `patches/<name>/series` lists patch files in
//! order, one per line, with an optional `-pN`; `#` starts a comment.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchRef {
    pub file: String,
    pub strip: u32,
    /// Line of the series file that names it.
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Patch {
    pub r: PatchRef,
    pub path: PathBuf,
    pub contents: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub series_file: PathBuf,
    pub patches: Vec<Patch>,
}

/// Parses the text of a `series` file; errors carry the 1-based line.
pub fn parse_series(text: &str) -> std::result::Result<Vec<PatchRef>, (usize, String)> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let l = match raw.split_once('#') {
            Some((before, _)) => before,
            None => raw,
        }
        .trim();
        if l.is_empty() {
            continue;
        }
        let mut words = l.split_whitespace();
        let file = words.next().unwrap().to_string();
        if file.contains("..") || file.starts_with('/') {
            return Err((
                line,
                format!("'{file}': patch names must stay inside the series directory"),
            ));
        }
        let mut strip = 1;
        for w in words {
            match w.strip_prefix("-p").map(str::parse::<u32>) {
                Some(Ok(n)) => strip = n,
                _ => {
                    return Err((
                        line,
                        format!("'{w}': unknown option (only -pN is supported)"),
                    ))
                }
            }
        }
        out.push(PatchRef { file, strip, line });
    }
    Ok(out)
}

impl Series {
    /// Loads `dir/series` and every patch it names.
    pub fn load(name: &str, dir: &Path) -> Result<Series> {
        let series_file = dir.join("series");
        let text = std::fs::read_to_string(&series_file).with_context(|| {
            format!(
                "patch series '{name}': cannot read {}",
                series_file.display()
            )
        })?;
        let refs = parse_series(&text)
            .map_err(|(line, msg)| anyhow::anyhow!("{}:{line}: {msg}", series_file.display()))?;
        if refs.is_empty() {
            bail!("{}: the series names no patch", series_file.display());
        }
        let mut patches = Vec::new();
        for r in refs {
            let path = dir.join(&r.file);
            let contents = std::fs::read(&path).with_context(|| {
                format!(
                    "{}:{}: patch '{}' cannot be read ({})",
                    series_file.display(),
                    r.line,
                    r.file,
                    path.display()
                )
            })?;
            if touched_files(&String::from_utf8_lossy(&contents), r.strip).is_empty() {
                bail!(
                    "{}:{}: '{}' holds no unified diff (no '+++ ' lines)",
                    series_file.display(),
                    r.line,
                    r.file
                );
            }
            patches.push(Patch { r, path, contents });
        }
        Ok(Series {
            name: name.to_string(),
            series_file,
            patches,
        })
    }
}

fn strip_components(path: &str, strip: u32) -> Option<String> {
    let path = path.split('\t').next().unwrap_or(path).trim();
    if path == "/dev/null" {
        return None;
    }
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    for _ in 0..strip {
        parts.next()?;
    }
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() {
        None
    } else {
        Some(rest.join("/"))
    }
}

/// Files a unified diff modifies, after stripping `strip` components (the
/// `---` side for deletions, the `+++` side otherwise).
pub fn touched_files(diff: &str, strip: u32) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut minus: Option<String> = None;
    for l in diff.lines() {
        if let Some(p) = l.strip_prefix("--- ") {
            minus = strip_components(p, strip);
        } else if let Some(p) = l.strip_prefix("+++ ") {
            if let Some(f) = strip_components(p, strip).or(minus.take()) {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
    }
    out
}

/// Turns GNU patch's output into the lines that say what failed:
/// "file: Hunk #N FAILED at L", "can't find file", "reversed".
pub fn patch_failures(output: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for l in output.lines() {
        if let Some(f) = l
            .strip_prefix("checking file ")
            .or_else(|| l.strip_prefix("patching file "))
        {
            current = Some(f.trim());
        } else if l.starts_with("Hunk #") && l.contains("FAILED") {
            let hunk = l.split(" (").next().unwrap_or(l).trim_end_matches('.');
            out.push(format!("{}: {hunk}", current.unwrap_or("?")));
        } else if l.starts_with("can't find file to patch") {
            out.push(l.trim_end_matches(':').to_string());
        } else if l.contains("Reversed (or previously applied) patch detected") {
            out.push(format!(
                "{}: already applied (reversed or previously applied patch)",
                current.unwrap_or("?")
            ));
        } else if l.contains("malformed patch") || l.contains("Only garbage") {
            out.push(l.trim().to_string());
        }
    }
    out
}

/// Breaks hard links of `rel` inside `tree` so that patching it cannot
/// change a shared (pristine) copy.
fn break_hardlink(tree: &Path, rel: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let p = tree.join(rel);
    let meta = match std::fs::symlink_metadata(&p) {
        Ok(m) => m,
        Err(_) => return Ok(()), // created by the patch
    };
    if meta.is_file() && meta.nlink() > 1 {
        let data = std::fs::read(&p)?;
        std::fs::remove_file(&p)?;
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, meta.permissions())?;
    }
    Ok(())
}

fn run_patch(tree: &Path, patch: &Patch, dry_run: bool) -> Result<(bool, String)> {
    patch_cmd(tree, patch, dry_run, false)
}

/// Whether the patch is already in the tree: it reverse-applies cleanly.
fn already_applied(tree: &Path, patch: &Patch) -> Result<bool> {
    Ok(patch_cmd(tree, patch, true, true)?.0)
}

fn patch_cmd(tree: &Path, patch: &Patch, dry_run: bool, reverse: bool) -> Result<(bool, String)> {
    let mut cmd = Command::new("patch");
    cmd.arg("-d")
        .arg(tree)
        .arg(format!("-p{}", patch.r.strip))
        .arg(if reverse { "--reverse" } else { "--forward" })
        .args(["--batch", "--fuzz=0", "--no-backup-if-mismatch", "-r", "-"])
        .arg("-i")
        .arg(&patch.path);
    if dry_run {
        cmd.arg("--dry-run");
    }
    let out = cmd
        .output()
        .context("cannot run 'patch' (install the Debian package 'patch')")?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// Applies the series to `tree` in order. Each patch is checked with a dry
/// run first, so a failing patch leaves the tree as the previous one left it.
/// A patch that does not apply but reverse-applies cleanly is already in
/// this source (a newer release carries the fix): it is skipped, and its
/// file name is returned.
pub fn apply(series: &Series, tree: &Path) -> Result<Vec<String>> {
    let mut already = Vec::new();
    for p in &series.patches {
        let (ok, out) = run_patch(tree, p, true)?;
        if !ok && already_applied(tree, p)? {
            already.push(p.r.file.clone());
            continue;
        }
        if !ok {
            let mut why = patch_failures(&out);
            if why.is_empty() {
                why = out.lines().map(str::to_string).collect();
            }
            bail!(
                "patch series '{}': {} does not apply ({}:{}):\n  {}",
                series.name,
                p.r.file,
                series.series_file.display(),
                p.r.line,
                why.join("\n  ")
            );
        }
        let text = String::from_utf8_lossy(&p.contents);
        for f in touched_files(&text, p.r.strip) {
            break_hardlink(tree, &f)?;
        }
        let (ok, out) = run_patch(tree, p, false)?;
        if !ok {
            bail!(
                "patch series '{}': {} passed its dry run but failed to apply:\n{out}",
                series.name,
                p.r.file
            );
        }
    }
    Ok(already)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_already_in_the_source_is_skipped_and_said() {
        let d = tempfile::tempdir().unwrap();
        let pdir = d.path().join("patches");
        let tree = d.path().join("tree");
        std::fs::create_dir_all(&pdir).unwrap();
        std::fs::create_dir_all(tree.join("kernel")).unwrap();
        std::fs::write(tree.join("kernel/a.c"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(
            pdir.join("0001-fix.patch"),
            "--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n",
        )
        .unwrap();
        std::fs::write(pdir.join("series"), "0001-fix.patch\n").unwrap();
        let s = Series::load("fix", &pdir).unwrap();
        assert!(
            apply(&s, &tree).unwrap().is_empty(),
            "applied the first time"
        );
        assert_eq!(
            std::fs::read_to_string(tree.join("kernel/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        // A newer source that carries the fix: skipped, and said so.
        assert_eq!(apply(&s, &tree).unwrap(), ["0001-fix.patch"]);
        assert_eq!(
            std::fs::read_to_string(tree.join("kernel/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        // A patch that neither applies nor reverse-applies still fails.
        std::fs::write(tree.join("kernel/a.c"), "other\n").unwrap();
        let e = format!("{:#}", apply(&s, &tree).unwrap_err());
        assert!(e.contains("0001-fix.patch does not apply"), "{e}");
    }

    #[test]
    fn series_lines_comments_and_strip() {
        let r = parse_series("# header\n\n0001-a.patch\n0002-b.patch -p0 # note\n").unwrap();
        assert_eq!(
            r,
            vec![
                PatchRef {
                    file: "0001-a.patch".into(),
                    strip: 1,
                    line: 3
                },
                PatchRef {
                    file: "0002-b.patch".into(),
                    strip: 0,
                    line: 4
                },
            ]
        );
    }

    #[test]
    fn series_errors_name_the_line() {
        assert_eq!(parse_series("a.patch\nb.patch -R\n").unwrap_err().0, 2);
        assert_eq!(parse_series("../x.patch\n").unwrap_err().0, 1);
    }

    #[test]
    fn touched_files_from_git_format_patch() {
        let diff =
            "From abc Mon Sep 17 00:00:00 2001\nSubject: [PATCH] x\n---\n kernel/a.c | 2 +-\n\
diff --git a/kernel/a.c b/kernel/a.c\n--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1 +1 @@\n-x\n+y\n\
diff --git a/new.c b/new.c\n--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+z\n\
diff --git a/old.c b/old.c\n--- a/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-z\n";
        assert_eq!(touched_files(diff, 1), vec!["kernel/a.c", "new.c", "old.c"]);
        assert_eq!(touched_files("--- x/a/b.c\n+++ y/a/b.c\n", 2), vec!["b.c"]);
    }

    #[test]
    fn failures_from_recorded_patch_output() {
        let out = "checking file kernel/bpf/trampoline.c\nHunk #1 FAILED at 494.\nHunk #2 succeeded at 520 (offset 3 lines).\n1 out of 2 hunks FAILED\nchecking file include/linux/ftrace.h\n";
        assert_eq!(
            patch_failures(out),
            vec!["kernel/bpf/trampoline.c: Hunk #1 FAILED at 494"]
        );
        let out = "can't find file to patch at input line 5\nPerhaps you used the wrong -p or --strip option?\n";
        assert_eq!(
            patch_failures(out),
            vec!["can't find file to patch at input line 5"]
        );
        let out = "checking file a.c\nReversed (or previously applied) patch detected!  Skipping patch.\n";
        assert!(patch_failures(out)[0].starts_with("a.c: already applied"));
    }

    #[test]
    fn apply_keeps_pristine_hardlinks_intact_and_names_failing_hunk() {
        let d = tempfile::tempdir().unwrap();
        let pristine = d.path().join("pristine");
        std::fs::create_dir_all(pristine.join("k")).unwrap();
        std::fs::write(pristine.join("k/a.c"), "one\ntwo\nthree\n").unwrap();
        let tree = d.path().join("tree");
        let st = Command::new("cp")
            .arg("-al")
            .arg(&pristine)
            .arg(&tree)
            .status()
            .unwrap();
        assert!(st.success());
        let sdir = d.path().join("s");
        std::fs::create_dir_all(&sdir).unwrap();
        std::fs::write(
            sdir.join("good.patch"),
            "--- a/k/a.c\n+++ b/k/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n",
        )
        .unwrap();
        std::fs::write(sdir.join("series"), "good.patch\n").unwrap();
        let s = Series::load("t", &sdir).unwrap();
        apply(&s, &tree).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("k/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        assert_eq!(
            std::fs::read_to_string(pristine.join("k/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );

        // Applying it again: it is already in the tree, so it is skipped.
        assert_eq!(apply(&s, &tree).unwrap(), ["good.patch"]);

        std::fs::write(
            sdir.join("bad.patch"),
            "--- a/k/a.c\n+++ b/k/a.c\n@@ -1,3 +1,3 @@\n uno\n-dos\n+DOS\n tres\n",
        )
        .unwrap();
        std::fs::write(sdir.join("series"), "bad.patch\n").unwrap();
        let s = Series::load("t", &sdir).unwrap();
        let err = apply(&s, &pristine).unwrap_err().to_string();
        assert!(
            err.contains("bad.patch") && err.contains("k/a.c: Hunk #1 FAILED at 1"),
            "{err}"
        );
        assert!(err.contains("series:1"), "{err}");
        assert_eq!(
            std::fs::read_to_string(pristine.join("k/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
    }
}
