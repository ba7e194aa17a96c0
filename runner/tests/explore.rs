//! `explore` on a real `stock` kernel with a fixed seed and a short
//! budget: it finds the known modify-path bug by itself (a livepatch, then
//! fentry, then a program that calls the original function on the same
//! function: the livepatch is bypassed and ftrace WARNs), shrinks it to
//! at most six operations, reproduces it 3/3, and writes a repro suite
//! file that `suite` runs as-is and that fails the same way. Also: bad
//! input is exit 2 before anything boots.

mod common;

use common::{coexist, root};

#[test]
fn stock_finds_the_modify_path_bug_and_its_repro_fails_through_suite() {
    let d = tempfile::tempdir().unwrap();
    let results = d.path().join("explore");
    let out = coexist(&[
        "--root",
        root().to_str().unwrap(),
        "explore",
        "--variant",
        "stock",
        "--seed",
        "2",
        "--sequences",
        "24",
        "-j",
        "2",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "a finding is exit 1");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("explore.json")).unwrap()).unwrap();
    assert_eq!(r["variant"], "stock");
    assert_eq!(r["seed"], 2);
    let findings = r["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    // The bug: the livepatch bypassed after the trampoline is modified.
    let f = findings
        .iter()
        .find(|f| {
            let seq = f["sequence"].as_array().unwrap();
            seq.iter().any(|o| o["op"]["op"] == "livepatch_load")
                && f["splats"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["title"].as_str().unwrap().contains("ftrace.c"))
        })
        .unwrap_or_else(|| panic!("no livepatch finding with the ftrace WARN: {findings:#?}"));
    let seq = f["sequence"].as_array().unwrap();
    assert!(seq.len() <= 6, "{seq:?}");
    assert_eq!(f["reproduced"], "3/3");
    assert_eq!(f["minimal"], true);
    let repro = results.join(f["repro"].as_str().unwrap());
    assert!(repro.is_file());
    let html = std::fs::read_to_string(results.join("index.html")).unwrap();
    assert!(html.contains("<h2>Explore</h2>"));
    // The repro runs as-is through `suite` and fails (exit 1) at the same
    // kind of step with the same splat.
    let sres = d.path().join("suite");
    let out = coexist(&[
        "--root",
        root().to_str().unwrap(),
        "suite",
        repro.to_str().unwrap(),
        "--variant",
        "stock",
        "--results",
        sres.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sres.join("report.json")).unwrap()).unwrap();
    let case = &rep["results"][0];
    assert_eq!(case["verdict"], "FAIL", "{case:#}");
    let text = case.to_string();
    assert!(text.contains("ftrace.c"), "the same WARN: {text}");
}

#[test]
fn bad_input_is_exit_2() {
    for args in [
        vec!["explore", "--variant", "nosuch", "--sequences", "1"],
        vec!["explore", "--variant", "stock", "--max-len", "0"],
        vec!["explore", "--variant", "stock", "--budget", "soon"],
        vec!["explore", "--variant", "stock", "--seed", "x"],
        vec!["explore", "--variant", "stock", "-j", "0"],
    ] {
        let out = coexist(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
