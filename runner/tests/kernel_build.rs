//! Integration tests of the kernel-variant stage against the real Debian
//! 6.1 source: a real build, a dropped config option and a patch that does
//! not apply. They use the normal cache ($COEXIST_CACHE, else
//! $XDG_CACHE_HOME/coexist or ~/.cache/coexist), so a cold run builds a
//! kernel (minutes) and later runs reuse it.

mod common;

use common::{coexist, root};
use std::path::{Path, PathBuf};

fn list(root: &Path) -> serde_json::Value {
    let out = coexist(&["kernel", "list", "--json", "--root", root.to_str().unwrap()]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn row<'a>(rows: &'a serde_json::Value, variant: &str) -> &'a serde_json::Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no variant {variant} in {rows}"))
}

/// A throwaway project root: the real fragments plus what a test adds.
fn scratch_project(variants_body: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let kc = d.path().join("kernel-config");
    std::fs::create_dir_all(&kc).unwrap();
    std::fs::create_dir_all(d.path().join(".ci")).unwrap();
    std::fs::copy(root().join(".ci/packages"), d.path().join(".ci/packages")).unwrap();
    for f in ["base.config", "livepatch-bpf.config"] {
        std::fs::copy(root().join("kernel-config").join(f), kc.join(f)).unwrap();
    }
    std::fs::write(
        kc.join("variants.yaml"),
        format!(
            "sources:\n  - name: debian-6.1\n    tarball: /usr/src/linux-source-6.1.tar.xz\n    \
             debian_package: linux-source-6.1\nvariants:\n{variants_body}"
        ),
    )
    .unwrap();
    d
}

#[test]
fn baseline_variant_builds_with_every_fragment_option_and_its_patch() {
    let root = root();
    let out = coexist(&[
        "kernel",
        "build",
        "--variant",
        "baseline",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "build failed");

    let rows = list(&root);
    let r = row(&rows, "baseline");
    assert_eq!(r["cached"], true);
    let m = &r["manifest"];
    for k in ["bzimage", "vmlinux", "system_map", "config"] {
        let p = Path::new(m[k].as_str().unwrap());
        assert!(
            p.is_file() && p.metadata().unwrap().len() > 0,
            "{k}: {}",
            p.display()
        );
    }
    let modules = Path::new(m["modules_dir"].as_str().unwrap());
    for ko in [
        "samples/livepatch/livepatch-sample.ko",
        "samples/ftrace/ftrace-direct.ko",
    ] {
        assert!(
            modules.join("kernel").join(ko).is_file(),
            "missing {ko} in {}",
            modules.display()
        );
    }
    assert!(modules.join("modules.dep").is_file());
    assert!(m["kernel_release"].as_str().unwrap().starts_with("6.1.192"));

    // Every option each fragment asks for is in the final .config.
    let config = std::fs::read_to_string(m["config"].as_str().unwrap()).unwrap();
    let mut checked = 0;
    for frag in ["base", "livepatch-bpf"] {
        let text =
            std::fs::read_to_string(root.join(format!("kernel-config/{frag}.config"))).unwrap();
        for l in text.lines().map(str::trim) {
            if l.starts_with("CONFIG_") {
                assert!(
                    config.lines().any(|c| c == l),
                    "{frag}: '{l}' not in .config"
                );
                checked += 1;
            } else if let Some(opt) = l
                .strip_prefix("# ")
                .and_then(|s| s.strip_suffix(" is not set"))
            {
                assert!(
                    !config.lines().any(|c| c.starts_with(&format!("{opt}="))),
                    "{frag}: {opt} is set"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} options checked");

    // The baseline patch is applied in this variant's tree and nowhere else:
    // the trampoline's ftrace_ops is no longer wired to ops_func.
    let wiring = "tr->fops->ops_func = bpf_tramp_ftrace_ops_func;";
    let tree = Path::new(r["tree"].as_str().unwrap());
    let patched = std::fs::read_to_string(tree.join("kernel/bpf/trampoline.c")).unwrap();
    assert!(!patched.contains(wiring));
    assert!(patched.contains("Baseline model: no ops_func"));
    let stock_tree = PathBuf::from(row(&rows, "stock")["tree"].as_str().unwrap());
    let pristine_src = rows_source_dir(&stock_tree);
    let pristine = std::fs::read_to_string(pristine_src.join("kernel/bpf/trampoline.c")).unwrap();
    assert!(
        pristine.contains(wiring),
        "the pristine source lost the wiring line"
    );

    // A second build is a cache hit.
    let out = coexist(&[
        "kernel",
        "build",
        "--variant",
        "baseline",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cached in"));
}

/// The pristine unpacked source sits in the cache's sources/ dir, next to trees/.
fn rows_source_dir(any_tree: &Path) -> PathBuf {
    let cache = any_tree.parent().unwrap().parent().unwrap();
    let sources = cache.join("sources");
    std::fs::read_dir(&sources)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("Makefile").is_file())
        .unwrap_or_else(|| panic!("no unpacked source in {}", sources.display()))
}

#[test]
fn option_dropped_by_olddefconfig_fails_naming_it() {
    // LIVEPATCH stays off (base does not enable it), so olddefconfig drops
    // the sample that depends on it.
    let d =
        scratch_project("  - name: dropped\n    source: debian-6.1\n    fragments: [base, bad]\n");
    std::fs::write(
        d.path().join("kernel-config/bad.config"),
        "# asks for an option whose dependency is off\nCONFIG_SAMPLES=y\nCONFIG_SAMPLE_LIVEPATCH=m\n",
    )
    .unwrap();
    let root = d.path().to_str().unwrap();
    let out = coexist(&["kernel", "build", "--variant", "dropped", "--root", root]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.config:3"), "{err}");
    assert!(err.contains("CONFIG_SAMPLE_LIVEPATCH=m"), "{err}");
    assert!(err.contains("olddefconfig dropped it"), "{err}");
    let rows = list(d.path());
    let r = row(&rows, "dropped");
    assert_eq!(r["cached"], false);
    assert!(!Path::new(r["entry"].as_str().unwrap()).exists());
}

#[test]
fn patch_that_does_not_apply_fails_naming_it() {
    let d = scratch_project(
        "  - name: broken\n    source: debian-6.1\n    series: broken\n    fragments: [base]\n",
    );
    let pdir = d.path().join("patches/broken");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("series"), "0001-good.patch\n0002-stale.patch\n").unwrap();
    // The first patch applies; the second has context that is not there.
    std::fs::write(
        pdir.join("0001-good.patch"),
        "--- a/kernel/bpf/trampoline.c\n+++ b/kernel/bpf/trampoline.c\n@@ -1,2 +1,3 @@\n \
         // SPDX-License-Identifier: GPL-2.0-only\n+/* coexist test */\n /* Copyright (c) 2019 Facebook */\n",
    )
    .unwrap();
    std::fs::write(
        pdir.join("0002-stale.patch"),
        "--- a/kernel/bpf/trampoline.c\n+++ b/kernel/bpf/trampoline.c\n@@ -494,3 +494,3 @@\n \
         if (err == -EAGAIN) {\n-\t\tno such line here\n+\t\tnor here\n \t}\n",
    )
    .unwrap();
    let root = d.path().to_str().unwrap();
    let out = coexist(&["kernel", "build", "--variant", "broken", "--root", root]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("patch series 'broken'"), "{err}");
    assert!(err.contains("0002-stale.patch does not apply"), "{err}");
    assert!(err.contains("series:2"), "{err}");
    assert!(
        err.contains("kernel/bpf/trampoline.c: Hunk #1 FAILED"),
        "{err}"
    );
    let rows = list(d.path());
    let r = row(&rows, "broken");
    assert_eq!(r["cached"], false);
    assert!(!Path::new(r["entry"].as_str().unwrap()).exists());
    // No half-patched tree is left under its final name either.
    let tree = Path::new(r["tree"].as_str().unwrap());
    assert!(!tree.exists(), "{} was left behind", tree.display());
    let leftovers: Vec<_> = std::fs::read_dir(tree.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(tree.file_name().unwrap().to_str().unwrap())
        })
        .collect();
    assert!(leftovers.is_empty(), "staging left: {leftovers:?}");
}
