//! The CI files fit together: the GitHub workflow is valid YAML whose suite
//! shards cover 1..N with the same N the run lines use, and whose report
//! job merges them; both install scripts read the one package list.

mod common;

use common::root;

#[test]
fn workflow_shards_and_merge_fit_together() {
    let text = std::fs::read_to_string(root().join(".github/workflows/ci.yml")).unwrap();
    let w: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    let jobs = &w["jobs"];
    for j in ["build", "tests", "suite", "report"] {
        assert!(jobs.get(j).is_some(), "no job {j}");
    }
    let n: u64 = w["env"]["SHARDS"].as_u64().unwrap();
    let shards: Vec<u64> = jobs["suite"]["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(shards, (1..=n).collect::<Vec<_>>());
    let runs = |job: &str| -> String {
        jobs[job]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|s| s.get("run").and_then(|r| r.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(runs("suite").contains("suite all --shard ${{ matrix.shard }}/$SHARDS"));
    assert!(runs("report").contains("report merge results/shard-*"));
    // The job summary: the diff against the base branch's report, and what
    // the patch variant changes; the page people look at is uploaded.
    assert!(runs("report").contains(
        "report diff previous/report.json results/merged --markdown >> \"$GITHUB_STEP_SUMMARY\""
    ));
    assert!(runs("report").contains("--variants stock,share-ipmodify --markdown"));
    assert!(runs("tests").contains("cargo test --workspace"));
    assert_eq!(
        jobs["suite"]["container"]["options"].as_str(),
        Some("--device /dev/kvm")
    );
    // One package list: the runner's setup reads it (and .ci/run calls
    // that setup); the workflow's container setup reads it too.
    let run = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        run.contains("cargo run -q -- setup"),
        ".ci/run does not run setup"
    );
    let gh = std::fs::read_to_string(root().join(".github/setup.sh")).unwrap();
    assert!(
        gh.contains(".ci/packages"),
        ".github/setup.sh does not read .ci/packages"
    );
    let setup = std::fs::read_to_string(root().join("runner/src/setup.rs")).unwrap();
    assert!(
        setup.contains("\".ci/packages\""),
        "setup does not read .ci/packages"
    );
    let pkgs = std::fs::read_to_string(root().join(".ci/packages")).unwrap();
    for p in [
        "qemu-system-x86",
        "linux-source-6.1",
        "busybox-static",
        "dwarves",
        "libbpf-dev",
    ] {
        assert!(
            pkgs.lines().any(|l| l == p),
            "{p} missing from .ci/packages"
        );
    }
}
