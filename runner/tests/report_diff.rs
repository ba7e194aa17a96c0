//! `report diff` on a recorded report (a real run: stock and
//! share-ipmodify, the two unload cases) and copies of it changed the way
//! a later run would change: exit codes, and the kind of each change in
//! every output format.

mod common;

use std::path::{Path, PathBuf};

use common::{coexist, root};

fn recorded() -> PathBuf {
    root().join("runner/tests/data/reports/stock-vs-share-ipmodify.json")
}

fn read(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// A copy of the recorded report with `f` applied, as `<dir>/<name>/report.json`.
fn changed(dir: &Path, name: &str, f: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let mut r = read(&recorded());
    r["run_id"] = name.into();
    f(&mut r);
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("report.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    d
}

fn case<'a>(r: &'a mut serde_json::Value, id: &str) -> &'a mut serde_json::Value {
    r["results"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["id"] == id)
        .unwrap()
}

fn diff(args: &[&Path], extra: &[&str]) -> (Option<i32>, String) {
    let mut a: Vec<String> = vec!["report".into(), "diff".into()];
    a.extend(args.iter().map(|p| p.display().to_string()));
    a.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = coexist(&refs);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_run_against_itself_changes_nothing() {
    let (code, out) = diff(&[&recorded(), &recorded()], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("4 cell(s) compared; no changes"), "{out}");
}

#[test]
fn a_regression_a_fix_a_new_and_a_removed_case_and_a_slowdown() {
    let d = tempfile::tempdir().unwrap();
    let new = changed(d.path(), "later", |r| {
        let c = case(r, "livepatch-bpf/cmdline/unload-bpf-first@share-ipmodify");
        c["verdict"] = "FAIL".into();
        c["as_expected"] = false.into();
        c["summary"] = "step 4 (trigger): output \"x\"".into();
        let c = case(r, "livepatch-bpf/cmdline/unload-bpf-first@stock");
        c["total_s"] = (c["total_s"].as_f64().unwrap() * 3.0 + 1.0).into();
        let mut added = case(r, "livepatch-bpf/cmdline/unload-bpf-first@stock").clone();
        added["id"] = "livepatch-bpf/cmdline/brand-new@stock".into();
        let results = r["results"].as_array_mut().unwrap();
        results.retain(|c| c["id"] != "livepatch-bpf/cmdline/unload-livepatch-first@stock");
        results.push(added);
    });
    let (code, out) = diff(&[&recorded(), &new], &[]);
    assert_eq!(code, Some(1), "a regression exits 1: {out}");
    assert!(out.contains("1 REGRESSION"), "{out}");
    assert!(out.contains("now: step 4 (trigger)"), "{out}");
    let (code, json) = diff(&[&recorded(), &new], &["--json"]);
    assert_eq!(code, Some(1));
    let j: serde_json::Value = serde_json::from_str(&json).unwrap();
    let changes = |key: &str| -> Vec<String> {
        j["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| {
                r["changes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        changes("livepatch-bpf/cmdline/unload-bpf-first@share-ipmodify"),
        ["regression"]
    );
    assert_eq!(
        changes("livepatch-bpf/cmdline/unload-bpf-first@stock"),
        ["slower"]
    );
    assert_eq!(changes("livepatch-bpf/cmdline/brand-new@stock"), ["new"]);
    assert_eq!(
        changes("livepatch-bpf/cmdline/unload-livepatch-first@stock"),
        ["removed"]
    );
    // Back again: the regression is a fix.
    let (code, out) = diff(&[&new, &recorded()], &["--markdown"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("### coexist: `later` -> `"), "{out}");
    assert!(out.contains("| fixed |"), "{out}");
}

#[test]
fn what_a_patch_changes_between_two_variants_of_one_run() {
    let (code, out) = diff(&[&recorded()], &["--variants", "stock,share-ipmodify"]);
    assert_eq!(code, Some(0), "{out}");
    // stock carries a known bug there (xfail), share-ipmodify must pass.
    assert!(
        out.contains("livepatch-bpf/cmdline/unload-livepatch-first"),
        "{out}"
    );
    assert!(out.contains("expectation changed"), "{out}");
    assert!(out.contains("expected: xfail: "), "{out}");
}

#[test]
fn bad_input_is_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk.json");
    std::fs::write(&junk, "{}").unwrap();
    for (args, extra) in [
        (vec![d.path().join("missing")], vec![]),
        (vec![recorded(), junk.clone()], vec![]),
        (
            vec![recorded(), recorded()],
            vec!["--variants", "stock,share-ipmodify"],
        ),
        (vec![recorded()], vec!["--variants", "stock,nope"]),
        (vec![recorded()], vec![]),
    ] {
        let refs: Vec<&Path> = args.iter().map(PathBuf::as_path).collect();
        let (code, out) = diff(&refs, &extra);
        assert_eq!(code, Some(2), "{args:?} {extra:?}: {out}");
    }
}
