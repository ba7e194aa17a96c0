//! `explore` on a real `stock` kernel with a fixed seed and a short
//! budget: it finds the known modify-path bug by itself (a livepatch, then
//! fentry, then a program that calls the original function on the same
//! function: the livepatch is bypassed and ftrace WARNs), shrinks it to
//! at most six operations, reproduces it 3/3, and writes a repro suite
//! file that `suite` runs as-is and that fails the same way. It runs as
//! two shards of one seed (disjoint sequences) merged into one report,
//! where `--known kernel-config/known-findings.yaml` marks the finding as the
//! known bug. Also: bad input is exit 2 before anything boots.

mod common;

use common::{coexist, root};

/// One shard of explore's 24 sequences of seed 2 (`--shard I/2`).
fn shard(results: &std::path::Path, i: u32) -> (Option<i32>, serde_json::Value) {
    let out = coexist(&[
        "--root",
        root().to_str().unwrap(),
        "explore",
        "--variant",
        "stock",
        "--seed",
        "2",
        "--sequences",
        "12",
        "--shard",
        &format!("{i}/2"),
        "-j",
        "2",
        "--results",
        results.to_str().unwrap(),
    ]);
    let r = serde_json::from_slice(&std::fs::read(results.join("explore.json")).unwrap()).unwrap();
    (out.status.code(), r)
}

#[test]
fn stock_finds_the_modify_path_bug_and_its_repro_fails_through_suite() {
    let d = tempfile::tempdir().unwrap();
    // Two shards of the seed's 24 sequences: each draws its own half.
    let dirs = [d.path().join("explore-1"), d.path().join("explore-2")];
    let mut codes = Vec::new();
    let mut reports = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let (code, r) = shard(dir, i as u32 + 1);
        assert_eq!(r["variant"], "stock");
        assert_eq!(r["seed"], 2);
        assert_eq!(r["shard"], serde_json::json!([i + 1, 2]));
        assert_eq!(r["sequences"], 12);
        codes.push(code);
        reports.push(r);
    }
    // Disjoint halves: shard 1 ran the even sequences, shard 2 the odd.
    for (i, dir) in dirs.iter().enumerate() {
        let logs: Vec<String> = std::fs::read_dir(dir.join("console"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("seq-"))
            .collect();
        assert!(!logs.is_empty());
        for n in &logs {
            let index: u64 = n[4..9].parse().unwrap();
            assert_eq!(index % 2, i as u64, "shard {}: {n}", i + 1);
        }
    }
    // The shards merge into one report; the bug is a finding (exit 1),
    // and a known one with the known findings (exit 0).
    let merged = d.path().join("merged");
    let project = root();
    let mut args = vec!["--root", project.to_str().unwrap(), "report", "merge"];
    args.extend(dirs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    assert_eq!(coexist(&args).status.code(), Some(1), "a finding is exit 1");
    let known = root().join("kernel-config/known-findings.yaml");
    args.extend(["--known", known.to_str().unwrap()]);
    let out = coexist(&args);
    assert_eq!(out.status.code(), Some(0), "the finding is the known bug");
    assert!(String::from_utf8_lossy(&out.stdout).contains("the known bug 'modify-path'"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(merged.join("explore.json")).unwrap()).unwrap();
    assert_eq!(m["sequences"], 24);
    assert!(m.get("shard").is_none(), "a merge is no shard");
    assert!(m["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["known"]["name"] == "modify-path"));
    // The shard that found it: exit 1, its finding shrunk and replayable.
    let at = codes
        .iter()
        .position(|c| *c == Some(1))
        .expect("a shard finds the bug");
    assert!(
        codes.iter().all(|c| matches!(c, Some(0) | Some(1))),
        "{codes:?}"
    );
    let results = &dirs[at];
    let r = &reports[at];
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
        vec!["explore", "--variant", "stock", "--shard", "3/2"],
        vec!["explore", "--variant", "stock", "--shard", "x"],
    ] {
        let out = coexist(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
