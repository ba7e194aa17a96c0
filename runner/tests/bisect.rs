//! Bisect end to end: a git repository made from the Debian 6.1 source with
//! a short history (the baseline patch, an unrelated commit, a commit that
//! restores the ops_func wiring, another unrelated commit), bisect-run exit
//! codes on real builds, and `coexist bisect` finding the restoring commit
//! with incremental builds.

mod common;

use coexist::build::variant;
use coexist::Workspace;
use common::{coexist, root, Quiet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=coexist test",
            "-c",
            "user.email=test@coexist.invalid",
        ])
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The pristine unpacked Debian source from the cache (unpacked by a build).
fn pristine() -> PathBuf {
    let r = root();
    let out = coexist(&[
        "kernel",
        "build",
        "--variant",
        "stock",
        "--root",
        r.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let cache = coexist::cache::Cache::default_root().unwrap();
    std::fs::read_dir(cache.join("sources"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("Makefile").is_file())
        .expect("an unpacked source in the cache")
}

fn commit_file(repo: &Path, file: &str, append: &str, msg: &str) -> String {
    let p = repo.join(file);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str(append);
    std::fs::write(&p, text).unwrap();
    git(repo, &["commit", "-q", "-a", "-m", msg]);
    git(repo, &["rev-parse", "HEAD"])
}

#[test]
fn bisect_finds_the_commit_that_restores_ops_func() {
    let src = pristine();
    let d = tempfile::tempdir().unwrap();
    // A fixed place in the cache, and fixed commit dates (see git()): the
    // same path and commits every run, so its build dir and kernels are
    // reused (the first run builds the tree cold).
    let work = coexist::cache::Cache::default_root()
        .unwrap()
        .join("bisect-e2e");
    let repo = work.join("linux");
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&work).unwrap();
    let st = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&repo)
        .status()
        .unwrap();
    assert!(st.success());
    // Debian's tarball ignores everything at its top level (its packaging
    // does not track the kernel in git): drop that stanza.
    let gi = repo.join(".gitignore");
    let text = std::fs::read_to_string(&gi).unwrap();
    let keep = text.split("# Debian packaging").next().unwrap().to_string();
    std::fs::write(&gi, keep).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(
        &repo,
        &[
            "commit",
            "-q",
            "-m",
            "Linux 6.1.192 (Debian linux-source-6.1)",
        ],
    );
    let patch = std::fs::read_dir(root().join("patches/baseline"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "patch"))
        .unwrap();
    git(&repo, &["am", "-q", patch.to_str().unwrap()]);
    let c0 = git(&repo, &["rev-parse", "HEAD"]);
    let _c1 = commit_file(
        &repo,
        "Documentation/bpf/index.rst",
        "\n",
        "docs: unrelated change",
    );
    git(&repo, &["revert", "--no-edit", &c0]);
    let c2 = git(&repo, &["rev-parse", "HEAD"]);
    let c3 = commit_file(
        &repo,
        "Documentation/livepatch/index.rst",
        "\n",
        "docs: another unrelated change",
    );

    let r = root();
    let base = ["--root", r.to_str().unwrap()];
    let tree = repo.to_str().unwrap();
    let case = "cmdline/livepatch-then-fentry";
    let run = |good_if: &str, extra: &[&str]| -> Option<i32> {
        let mut a: Vec<&str> = base.to_vec();
        a.extend([
            "bisect-run",
            "--kernel-tree",
            tree,
            "--case",
            case,
            "--good-if",
            good_if,
            "--accel",
            "tcg",
        ]);
        a.extend(extra);
        coexist(&a).status.code()
    };
    // At c3 the wiring is back: the livepatch and fentry share the function.
    assert_eq!(run("pass", &[]), Some(0));
    cached_kernel_without_its_build_dir(&repo);
    assert_eq!(run("refused:bpf:EBUSY", &[]), Some(1));
    // A case that does not exist is the harness's problem: >= 128, git bisect stops.
    assert_eq!(run("pass", &["--case", "no-such-case"]), Some(128));

    // The whole loop: outcome "refused with EBUSY" is good (old), the first
    // commit where it changes is the revert.
    let log_dir = d.path().join("log");
    std::fs::create_dir_all(&log_dir).unwrap();
    let mut a: Vec<&str> = base.to_vec();
    a.extend([
        "bisect",
        "--kernel-tree",
        tree,
        "--good",
        &c0,
        "--bad",
        &c3,
        "--case",
        case,
        "--good-if",
        "refused:bpf:EBUSY",
        "--accel",
        "tcg",
    ]);
    let out = coexist(&a);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("first commit where the outcome changes: {c2} Revert \"bpf: model the pre-SHARE_IPMODIFY")),
        "{stdout}"
    );
    // Each step built in the same tree's build dir, incrementally.
    assert!(
        stdout.contains("(incremental)") || stdout.contains("(cached)"),
        "{stdout}"
    );
    // The tree is back where it was.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), c3);

    // A commit that does not build is untestable: 125.
    git(&repo, &["checkout", "-q", "-b", "broken"]);
    commit_file(
        &repo,
        "kernel/bpf/trampoline.c",
        "\n#error this commit does not build\n",
        "bpf: break the build",
    );
    assert_eq!(run("pass", &[]), Some(125));
    git(&repo, &["checkout", "-q", &c3]);
}

/// A cached kernel whose build dir is gone (`git clean -xdf`, a fresh
/// clone of the tree) and whose fixtures are not cached (their sources
/// changed): the kernel is built again under its key, with a new build id,
/// and the fixtures are built against that build. Then the case passes on
/// it.
fn cached_kernel_without_its_build_dir(repo: &Path) {
    let ws = Workspace::open(Some(root()), None).unwrap();
    let variants = ws.variants(Some(repo)).unwrap();
    let v = variant::select(&variants, &["stock".to_string()]).unwrap()[0];
    let before = ws.prepare(v, &Quiet).unwrap();
    assert!(before.kernel_cached);
    // Absent already when the kernel came from the cache into this fresh
    // copy of the tree; present when this run built it.
    if before.manifest.build_dir.exists() {
        std::fs::remove_dir_all(&before.manifest.build_dir).unwrap();
    }
    std::fs::remove_dir_all(ws.cache.dir("fixtures").join(&before.fixtures.key)).unwrap();

    let after = ws.prepare(v, &Quiet).unwrap();
    assert!(!after.kernel_cached, "built again");
    assert_eq!(after.manifest.key, before.manifest.key);
    assert_ne!(after.manifest.build_id, before.manifest.build_id);
    assert!(!after.manifest.build_id.is_empty());
    assert_ne!(after.fixtures.key, before.fixtures.key);
    assert_ne!(after.image.key, before.image.key);
    assert!(after.manifest.build_dir.join("Module.symvers").is_file());
    // What later runs find: the new entry, its fixtures cached.
    let again = ws.prepare(v, &Quiet).unwrap();
    assert!(again.kernel_cached);
    assert_eq!(again.manifest.build_id, after.manifest.build_id);
    assert_eq!(again.fixtures.key, after.fixtures.key);
}
