//! The `suite` command before anything boots: suite-file errors with
//! positions and exit 2, job listing, and shard slicing of the real suite.

mod common;

use common::{coexist, copy_dir, root};

/// A project with the real variants and fixtures and one suite file.
fn project_with_suite(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    copy_dir(
        &root().join("kernel-config"),
        &d.path().join("kernel-config"),
    );
    copy_dir(&root().join("patches"), &d.path().join("patches"));
    copy_dir(&root().join(".ci"), &d.path().join(".ci"));
    copy_dir(
        &root().join("images/fixtures"),
        &d.path().join("images/fixtures"),
    );
    std::fs::create_dir_all(d.path().join("suites")).unwrap();
    std::fs::write(d.path().join("suites/t.yaml"), text).unwrap();
    d
}

const SUITE: &str = "suite: t
variants: [baseline, share-ipmodify]
cases:
  - name: c1
    steps:
      - livepatch_load: {module: livepatch-sample}
      - trigger: {target: cmdline_proc_show}
        expect: {output: \"this has been live patched\\n\"}
    expect:
      default: pass
";

fn bad(text: &str) -> String {
    let d = project_with_suite(text);
    let out = coexist(&["suite", "all", "--root", d.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    // Nothing booted: no results directory was made.
    assert!(!d.path().join("results").exists());
    err.replace(d.path().to_str().unwrap(), "ROOT")
}

#[test]
fn suite_file_errors_name_file_line_and_column() {
    let e = bad(&SUITE.replace("- trigger:", "- trigr:"));
    assert!(e.contains("ROOT/suites/t.yaml:7:9: "), "{e}");
    assert!(e.contains("unknown step 'trigr'"), "{e}");
    let e = bad(&SUITE.replace("[baseline, share-ipmodify]", "[baseline, nope]"));
    assert!(e.contains("ROOT/suites/t.yaml:2:"), "{e}");
    assert!(e.contains("unknown variant 'nope'"), "{e}");
    let e = bad(&SUITE.replace("module: livepatch-sample", "module: no-such-fixture"));
    assert!(e.contains("ROOT/suites/t.yaml:6:"), "{e}");
    assert!(e.contains("unknown fixture module"), "{e}");
    let e = bad(&SUITE.replace("{target: cmdline_proc_show}", "{target: [1, 2]}"));
    assert!(e.contains("ROOT/suites/t.yaml:7:"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
}

fn list(args: &[&str]) -> Vec<String> {
    let r = root();
    let mut a = vec!["suite", "--list", "--root", r.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = coexist(&a);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn shards_of_the_real_suite_cover_it_once() {
    let all = list(&[]);
    assert!(all.len() > 50, "{}", all.len());
    assert!(all.contains(&"livepatch-bpf/cmdline/livepatch-then-fexit@baseline".to_string()));
    for n in [2, 3, 4] {
        let mut union = Vec::new();
        for i in 1..=n {
            let s = list(&["--shard", &format!("{i}/{n}")]);
            for j in s {
                assert!(!union.contains(&j), "{j} is in two shards of {n}");
                union.push(j);
            }
        }
        union.sort();
        let mut want = all.clone();
        want.sort();
        assert_eq!(union, want, "shards of {n}");
    }
    let f = list(&["--variant", "baseline", "--case", "cmdline/*"]);
    assert!(
        !f.is_empty()
            && f.iter()
                .all(|j| j.ends_with("@baseline") && j.contains("/cmdline/")),
        "{f:?}"
    );
    let out = coexist(&[
        "suite",
        "--list",
        "--shard",
        "0/2",
        "--root",
        root().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_empty_shard_writes_an_empty_complete_report() {
    // share-ipmodify-lockdep has one job: shard 2/2 of it is empty.
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("r");
    let r = root();
    let out = coexist(&[
        "suite",
        "all",
        "--variant",
        "share-ipmodify-lockdep",
        "--shard",
        "2/2",
        "--root",
        r.to_str().unwrap(),
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["results"].as_array().unwrap().len(), 0);
    assert_eq!(report["complete"], true);
    assert_eq!(report["shard"], serde_json::json!([2, 2]));
    assert!(results.join("junit.xml").is_file() && results.join("results.ktap").is_file());
}
