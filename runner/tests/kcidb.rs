//! `report kcidb`: a real run (stock, where the unload cases meet the
//! known modify-path bug, and share-ipmodify, where they pass) in KCIDB
//! form, validated by kcidb-io's newest schema (`.ci/kcidb-validate`,
//! which installs kcidb-io once under the cache); the validator is shown
//! to refuse a document that is wrong; a bad origin exits 2.

mod common;

use std::path::Path;
use std::process::Command;

use common::{coexist, root, text};

fn validate(f: &Path) -> std::process::Output {
    let out = Command::new(root().join(".ci/kcidb-validate"))
        .arg(f)
        .output()
        .expect("run .ci/kcidb-validate");
    eprintln!("$ .ci/kcidb-validate {}\n{}", f.display(), text(&out));
    out
}

#[test]
fn a_real_run_in_kcidb_form_validates_with_kcidb_io() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("run");
    let out = coexist(&[
        "suite",
        "livepatch-bpf",
        "--variant",
        "stock",
        "--variant",
        "share-ipmodify",
        "--case",
        "cmdline/unload-*",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("report.json")).unwrap()).unwrap();
    let results_n = report["results"].as_array().unwrap().len();
    assert_eq!(results_n, 4, "two cases on two variants");

    let doc_path = dir.path().join("kcidb.json");
    let out = coexist(&[
        "report",
        "kcidb",
        results.to_str().unwrap(),
        "--origin",
        "coexist_test",
        "--out",
        doc_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = validate(&doc_path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // What it says: one checkout (both variants build linux-source-6.1),
    // a build per variant, a test per result; on stock the bug shows
    // (XFAIL: a FAIL, with an incident of the issue), on share-ipmodify
    // the cases pass.
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&doc_path).unwrap()).unwrap();
    let list = |k: &str| doc[k].as_array().unwrap().clone();
    assert_eq!(list("checkouts").len(), 1);
    assert_eq!(list("builds").len(), 2);
    let tests = list("tests");
    assert_eq!(tests.len(), results_n);
    for t in &tests {
        assert!(t["id"].as_str().unwrap().starts_with("coexist_test:"));
        assert!(
            t["path"]
                .as_str()
                .unwrap()
                .starts_with("coexist.livepatch-bpf.cmdline.unload-"),
            "{t}"
        );
        let stock = t["build_id"].as_str().unwrap().ends_with("/build/stock");
        let verdict = t["misc"]["verdict"].as_str().unwrap();
        assert_eq!(verdict, if stock { "XFAIL" } else { "PASS" }, "{t}");
        assert_eq!(t["status"], if stock { "FAIL" } else { "PASS" }, "{t}");
        assert_eq!(t["log_excerpt"].is_string(), stock, "{t}");
    }
    let issues = list("issues");
    assert_eq!(issues.len(), 1, "one known bug");
    assert!(issues[0]["report_subject"]
        .as_str()
        .unwrap()
        .contains("56b3c85e153b"));
    let incidents = list("incidents");
    assert_eq!(incidents.len(), 2, "the two stock results");
    for i in &incidents {
        assert_eq!(i["issue_id"], issues[0]["id"]);
        assert_eq!(i["present"], true);
        assert!(tests.iter().any(|t| t["id"] == i["test_id"]));
    }

    // The validator refuses what KCIDB does not take: our own verdict
    // name as a status.
    let mut bad = doc.clone();
    bad["tests"][0]["status"] = "XFAIL".into();
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out = validate(&bad_path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("tests/0/status"), "{}", text(&out));

    // A bad origin: exit 2, nothing written.
    let none = dir.path().join("none.json");
    let out = coexist(&[
        "report",
        "kcidb",
        results.to_str().unwrap(),
        "--origin",
        "Not-Valid",
        "--out",
        none.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--origin"), "{}", text(&out));
    assert!(!none.exists());
}
