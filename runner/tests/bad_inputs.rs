//! Every class of bad input is refused before anything builds or boots:
//! exit 2, and a message that names the file, the line and the column.
//! One file per class under tests/data/bad-suites/ and bad-variants/ (and
//! bad-suite-sets/, for a suite that is bad next to the project's own);
//! each says what it is and what the error must say, and marks the
//! offending line with `# <-`.

mod common;

use std::path::{Path, PathBuf};

use common::{coexist, copy_dir, root};

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
    // The image recipe says which selftests the image has.
    std::fs::copy(
        root().join("images/base.yaml"),
        d.path().join("images/base.yaml"),
    )
    .unwrap();
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

/// Puts each bad file in place in a scratch project (`place` returns the
/// path it goes to, relative to the project), runs each command line, and
/// checks exit 2, the position and the message. Every failure is listed.
fn check_each(bad: &[Bad], place: impl Fn(&Path) -> PathBuf, commands: &[&[&str]]) {
    let mut failures = Vec::new();
    for b in bad {
        let p = scratch();
        let to = place(p.path());
        std::fs::copy(&b.file, p.path().join(&to)).unwrap();
        let shown = format!("ROOT/{}", to.display());
        for args in commands {
            let err = refused(p.path(), args);
            if !has_position(&err, &shown, b.line) || !err.contains(&b.error) {
                failures.push(format!(
                    "{} ({}): want {shown}:{}:<col> and {:?}, got:\n{err}",
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
fn each_bad_suite_is_refused_with_its_position() {
    let all = cases("bad-suites");
    assert!(all.len() >= 20, "{} classes", all.len());
    let only_it = |p: &Path| {
        std::fs::remove_dir_all(p.join("suites")).unwrap();
        std::fs::create_dir_all(p.join("suites")).unwrap();
        PathBuf::from("suites/t.yaml")
    };
    check_each(
        &all,
        only_it,
        &[&["suite", "all", "--list"], &["suite", "all"]],
    );
}

#[test]
fn each_bad_suite_next_to_the_projects_suites_is_refused_with_its_position() {
    let all = cases("bad-suite-sets");
    assert!(!all.is_empty());
    for b in &all {
        let name = b.file.file_name().unwrap().to_owned();
        check_each(
            std::slice::from_ref(b),
            |_| PathBuf::from("suites").join(&name),
            &[&["suite", "all", "--list"], &["suite", "all"]],
        );
    }
}

#[test]
fn a_case_filter_that_matches_no_case_names_itself_and_the_nearest_cases() {
    let p = scratch();
    // A typo: the nearest names are listed, the real one first.
    let err = refused(
        p.path(),
        &[
            "suite",
            "all",
            "--list",
            "--case",
            "cmdline/livepatch-then-fexti",
        ],
    );
    assert!(
        err.contains("--case 'cmdline/livepatch-then-fexti' matches no case")
            && err.contains("nearest: cmdline/livepatch-then-fexit,"),
        "{err}"
    );
    // The example, as a run: refused before anything is made.
    let err = refused(p.path(), &["suite", "all", "--case", "no-such-case-*"]);
    assert!(
        err.contains(
            "--case 'no-such-case-*' matches no case of the suites livepatch-bpf, selftests"
        ) && err.contains("nearest: "),
        "{err}"
    );
    // Cases that match but run on none of the --variant filter's variants.
    let err = refused(
        p.path(),
        &[
            "suite",
            "all",
            "--case",
            "cmdline/livepatch-then-fexit",
            "--variant",
            "share-ipmodify-lockdep",
        ],
    );
    assert!(
        err.contains("--case 'cmdline/livepatch-then-fexit' matches 1 case, which runs on none of --variant share-ipmodify-lockdep")
            && err.contains("(it runs on stock, baseline, share-ipmodify, stock-6.12, debian-6.1-image, debian-6.12-image)"),
        "{err}"
    );
}

#[test]
fn each_bad_variants_file_is_refused_with_its_position() {
    let all = cases("bad-variants");
    assert!(all.len() >= 5, "{} classes", all.len());
    check_each(
        &all,
        |_| PathBuf::from("kernel-config/variants.yaml"),
        &[&["kernel", "list"], &["suite", "all", "--list"]],
    );
}

#[test]
fn a_prebuilt_package_apt_does_not_know_is_refused_before_anything_builds() {
    let all = cases("bad-prebuilt");
    assert!(!all.is_empty());
    // A scratch cache: nothing may be built, fetched or booted in it.
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    check_each(
        &all,
        |_| PathBuf::from("kernel-config/variants.yaml"),
        &[
            &["kernel", "list", "--cache-dir", c],
            &[
                "kernel",
                "build",
                "--variant",
                "stock",
                "--variant",
                "image",
                "--cache-dir",
                c,
            ],
            &["boot", "--variant", "image", "--cache-dir", c],
        ],
    );
    for d in ["kernels", "trees", "prebuilt", "images"] {
        let n = std::fs::read_dir(cache.path().join(d))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{d}/ is not empty: something was made");
    }
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
fn a_selftest_missing_from_the_source_is_refused_before_any_build() {
    let p = scratch();
    std::fs::write(
        p.path().join("suites/t.yaml"),
        "suite: t\nvariants: [baseline]\nkselftest:\n  collection: livepatch\n  tests:\n    - test-livepatch.sh\n    - test-nope.sh\n",
    )
    .unwrap();
    // It lists: the names are well formed.
    let out = coexist(&["suite", "t", "--list", "--root", p.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Running it stops before any kernel is built (a scratch cache that
    // holds no kernel stays without one).
    let cache = tempfile::tempdir().unwrap();
    let err = refused(
        p.path(),
        &["suite", "t", "--cache-dir", cache.path().to_str().unwrap()],
    );
    assert!(
        has_position(&err, "ROOT/suites/t.yaml", 7)
            && err.contains("test-nope.sh of case 'kselftest/livepatch/test-nope.sh' is not in the source of variant 'baseline'"),
        "{err}"
    );
    for d in ["kernels", "trees"] {
        let n = std::fs::read_dir(cache.path().join(d))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{d}/ is not empty: something was built");
    }
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

/// The files a scratch project's local variants name: a bzImage-shaped
/// `local/boot/vmlinuz-6.1.0-0-test` (a boot header naming that release),
/// its modules dir with a `modules.dep`, the same release's modules dir
/// without one, and another release's.
fn local_kernel_files(project: &Path) {
    let mut bz = vec![0u8; 0x400];
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
    let v = b"6.1.0-0-test (me@here) #1 SMP\0";
    bz[0x300..0x300 + v.len()].copy_from_slice(v);
    let l = project.join("local");
    for d in [
        "boot",
        "lib/modules/6.1.0-0-test",
        "lib/modules/6.2.0-0-other",
        "nodep/lib/modules/6.1.0-0-test",
    ] {
        std::fs::create_dir_all(l.join(d)).unwrap();
    }
    std::fs::write(l.join("boot/vmlinuz-6.1.0-0-test"), bz).unwrap();
    for r in ["6.1.0-0-test", "6.2.0-0-other"] {
        std::fs::write(l.join("lib/modules").join(r).join("modules.dep"), "").unwrap();
    }
}

#[test]
fn a_bad_local_kernel_is_refused_before_anything_builds() {
    let all = cases("bad-local");
    assert!(all.len() >= 9, "{} classes", all.len());
    // A scratch cache: nothing may be built, made or booted in it.
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    check_each(
        &all,
        |p| {
            local_kernel_files(p);
            PathBuf::from("kernel-config/variants.yaml")
        },
        &[
            &["kernel", "list", "--cache-dir", c],
            &[
                "kernel",
                "build",
                "--variant",
                "stock",
                "--variant",
                "mine",
                "--cache-dir",
                c,
            ],
            &["boot", "--variant", "mine", "--cache-dir", c],
        ],
    );
    for d in [
        "kernels", "trees", "prebuilt", "local", "images", "fixtures",
    ] {
        let n = std::fs::read_dir(cache.path().join(d))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(n, 0, "{d}/ is not empty: something was made");
    }
}
