//! Every class of bad input is refused before anything builds or boots:
//! exit 2, and a message that names the file, the line and the column.
//! One file per class under tests/data/bad-suites/ and bad-variants/; each
//! says what it is and what the error must say, and marks the offending
//! line with `# <-`.

mod common;

use std::path::{Path, PathBuf};

use common::{coexist, root};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the project's inputs (no results, no target dir).
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for sub in [
        ".ci",
        "kernel-config",
        "patches",
        "suites",
        "images/fixtures",
    ] {
        copy_dir(&root().join(sub), &d.path().join(sub));
    }
    d
}

struct Bad {
    file: PathBuf,
    what: String,
    error: String,
    line: usize,
}

fn cases(dir: &str) -> Vec<Bad> {
    let dir = root().join("runner/tests/data").join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            let header = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or_else(|| panic!("{}: no '{k}' line", file.display()))
                    .trim()
                    .to_string()
            };
            let line = text
                .lines()
                .position(|l| l.ends_with("# <-"))
                .unwrap_or_else(|| panic!("{}: no line marked '# <-'", file.display()))
                + 1;
            Bad {
                what: header("# bad input:"),
                error: header("# error:"),
                line,
                file,
            }
        })
        .collect()
}

/// Runs `coexist <args> --root <project>`; asserts exit 2, nothing on
/// stdout, no results dir, and returns stderr with the project as ROOT.
fn refused(project: &Path, args: &[&str]) -> String {
    let mut a = args.to_vec();
    a.extend(["--root", project.to_str().unwrap()]);
    let out = coexist(&a);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!project.join("results").exists(), "a results dir was made");
    String::from_utf8_lossy(&out.stderr).replace(project.to_str().unwrap(), "ROOT")
}

fn has_position(err: &str, file: &str, line: usize) -> bool {
    let want = format!("{file}:{line}:");
    err.match_indices(&want).any(|(i, _)| {
        err[i + want.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[test]
fn each_bad_suite_is_refused_with_its_position() {
    let all = cases("bad-suites");
    assert!(all.len() >= 20, "{} classes", all.len());
    let mut failures = Vec::new();
    for b in &all {
        let p = scratch();
        std::fs::remove_dir_all(p.path().join("suites")).unwrap();
        std::fs::create_dir_all(p.path().join("suites")).unwrap();
        std::fs::copy(&b.file, p.path().join("suites/t.yaml")).unwrap();
        for args in [&["suite", "all", "--list"][..], &["suite", "all"][..]] {
            let err = refused(p.path(), args);
            if !has_position(&err, "ROOT/suites/t.yaml", b.line) || !err.contains(&b.error) {
                failures.push(format!(
                    "{} ({}): want ROOT/suites/t.yaml:{}:<col> and {:?}, got:\n{err}",
                    b.file.display(),
                    b.what,
                    b.line,
                    b.error
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_bad_variants_file_is_refused_with_its_position() {
    let all = cases("bad-variants");
    let mut failures = Vec::new();
    for b in &all {
        let p = scratch();
        std::fs::copy(&b.file, p.path().join("kernel-config/variants.yaml")).unwrap();
        for args in [&["kernel", "list"][..], &["suite", "all", "--list"][..]] {
            let err = refused(p.path(), args);
            if !has_position(&err, "ROOT/kernel-config/variants.yaml", b.line)
                || !err.contains(&b.error)
            {
                failures.push(format!(
                    "{} ({}): want line {} and {:?}, got:\n{err}",
                    b.file.display(),
                    b.what,
                    b.line,
                    b.error
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_suite_saved_as_yml_is_refused_not_skipped() {
    let p = scratch();
    std::fs::copy(
        root().join("suites/livepatch-bpf.yaml"),
        p.path().join("suites/extra.yml"),
    )
    .unwrap();
    let err = refused(p.path(), &["suite", "all", "--list"]);
    assert!(
        err.contains("ROOT/suites/extra.yml: suites are read from *.yaml"),
        "{err}"
    );
}

#[test]
fn out_of_range_options_are_usage_errors() {
    let p = scratch();
    for args in [
        &["suite", "all", "--list", "-j", "0"][..],
        &["suite", "all", "--list", "--cpus", "0"][..],
        &["suite", "all", "--list", "--memory", "16"][..],
        &["kernel", "build", "--all", "-j", "0"][..],
        &["boot", "--variant", "stock", "--boot-timeout=-1"][..],
        &[
            "run",
            "--variant",
            "stock",
            "--timeout",
            "nan",
            "--",
            "true",
        ][..],
    ] {
        let err = refused(p.path(), args);
        assert!(err.contains("error: invalid value"), "{args:?}: {err}");
    }
}
