//! `--coverage`: a real boot of share-ipmodify's coverage twin shows what
//! each case reached (a case that attaches fexit reaches the
//! `BPF_TRAMP_F_CALL_ORIG` branch of `bpf_trampoline_update`; a case that
//! never loads a livepatch never enters
//! `prepare_direct_functions_for_ipmodify`), and coverage asked of a
//! kernel that is not built here, or of a file the source lacks, is
//! refused with exit 2 at the right place.

mod common;

use std::path::Path;

use coexist::coverage::{CoverageReport, FileCoverage, JobKind};
use common::{coexist, copy_dir, root, text};

const VARIANT: &str = "share-ipmodify";
const FEXIT_CASE: &str = "livepatch-bpf/target/fexit-then-livepatch@share-ipmodify";
const NO_LIVEPATCH_CASE: &str = "livepatch-bpf/target/trampoline-images-freed@share-ipmodify";

const PREBUILT_REFUSED: &str = "--coverage: variant 'debian-6.1-image' is a prebuilt";

/// `coexist <args>` exits 2 saying `want`.
fn refused(args: &[&str], want: &str) {
    let out = coexist(args);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(want), "want {want}\n{}", text(&out));
}

fn file<'r>(r: &'r CoverageReport, name: &str) -> &'r FileCoverage {
    r.files
        .iter()
        .find(|f| f.file == name)
        .unwrap_or_else(|| panic!("no {name} in coverage.json"))
}

/// The 1-based lines of `file` in the twin's source tree holding `needle`.
fn lines_with(source_dir: &Path, file: &str, needle: &str) -> Vec<u32> {
    std::fs::read_to_string(source_dir.join(file))
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i as u32 + 1)
        .collect()
}

#[test]
fn a_coverage_twin_shows_which_case_reached_which_line() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("run");
    let out = coexist(&[
        "suite",
        "livepatch-bpf",
        "--variant",
        VARIANT,
        "--case",
        "target/[ft]*",
        "--coverage",
        "-j",
        "2",
        "--results",
        results.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The table of the area's functions.
    assert!(text(&out).contains("trampoline.c:bpf_trampoline_update"));
    let cov = results.join("coverage").join(VARIANT);
    let r: CoverageReport =
        serde_json::from_slice(&std::fs::read(cov.join("coverage.json")).unwrap()).unwrap();
    assert!(cov.join("html/index.html").is_file(), "genhtml's page");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join("report.json")).unwrap()).unwrap();
    let v = &report["variants"][0];
    // The twin is its own kernel, and says what it profiles.
    assert_eq!(v["profiled"][0], "kernel/bpf/trampoline.c");
    assert_eq!(v["kernel_key"], r.kernel_key.as_str());
    assert!(v["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "coverage"));
    let ids: Vec<&str> = r.jobs.iter().map(|j| j.id.as_str()).collect();
    assert!(r.jobs.iter().all(|j| j.kind == JobKind::Case));
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    let fexit = ids.iter().position(|i| *i == FEXIT_CASE).unwrap() as u32;
    let no_lp = ids.iter().position(|i| *i == NO_LIVEPATCH_CASE).unwrap() as u32;
    let source_dir = r.source_dir.as_path();

    // bpf_trampoline_update: the fexit case takes the branch that sets
    // BPF_TRAMP_F_CALL_ORIG.
    let tramp = file(&r, "kernel/bpf/trampoline.c");
    let update = tramp
        .functions
        .iter()
        .find(|f| f.name == "bpf_trampoline_update")
        .unwrap();
    assert!(update.area);
    let orig: Vec<u32> = lines_with(
        source_dir,
        "kernel/bpf/trampoline.c",
        "BPF_TRAMP_F_CALL_ORIG",
    )
    .into_iter()
    .filter(|l| (update.start_line..=update.end_line).contains(l))
    .collect();
    assert!(
        !orig.is_empty(),
        "bpf_trampoline_update sets BPF_TRAMP_F_CALL_ORIG"
    );
    let reached = |f: &FileCoverage, line: u32, job: u32| {
        f.per_line
            .iter()
            .find(|l| l.line == line)
            .is_some_and(|l| l.reached_by.contains(&job))
    };
    assert!(
        orig.iter().any(|&l| reached(tramp, l, fexit)),
        "{FEXIT_CASE} reaches BPF_TRAMP_F_CALL_ORIG (lines {orig:?})"
    );

    // prepare_direct_functions_for_ipmodify: entered when a livepatch
    // (an IPMODIFY ftrace_ops) registers, never by BPF alone.
    let ftrace = file(&r, "kernel/trace/ftrace.c");
    let prep = ftrace
        .functions
        .iter()
        .find(|f| f.name == "prepare_direct_functions_for_ipmodify")
        .unwrap();
    let in_prep = |job: u32| {
        ftrace
            .per_line
            .iter()
            .filter(|l| (prep.start_line..=prep.end_line).contains(&l.line))
            .any(|l| l.reached_by.contains(&job))
    };
    assert!(in_prep(fexit), "{FEXIT_CASE} loads a livepatch after fexit");
    assert!(!in_prep(no_lp), "{NO_LIVEPATCH_CASE} loads no livepatch");
    assert!(prep.lines.hit > 0 && prep.lines.hit <= prep.lines.total);
}

#[test]
fn coverage_of_a_kernel_not_built_here_or_of_a_missing_file_is_refused() {
    // A prebuilt kernel: nothing to compile with profiling.
    refused(
        &[
            "suite",
            "livepatch-bpf",
            "--variant",
            "debian-6.1-image",
            "--coverage",
            "--list",
        ],
        PREBUILT_REFUSED,
    );
    // A profiled file the source lacks: named at its line in area.yaml,
    // before anything compiles.
    let d = tempfile::tempdir().unwrap();
    for sub in [".ci", "kernel-config", "patches", "suites", "images"] {
        copy_dir(&root().join(sub), &d.path().join(sub));
    }
    let area = d.path().join("kernel-config/area.yaml");
    let text_before = std::fs::read_to_string(&area).unwrap();
    std::fs::write(
        &area,
        text_before.replace(
            "  - kernel/trace/ftrace.c\n",
            "  - kernel/trace/no-such-file.c\n",
        ),
    )
    .unwrap();
    let line = std::fs::read_to_string(&area)
        .unwrap()
        .lines()
        .position(|l| l.contains("no-such-file.c"))
        .unwrap()
        + 1;
    let out = coexist(&[
        "kernel",
        "build",
        "--variant",
        VARIANT,
        "--coverage",
        "--root",
        d.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let want = format!(
        "kernel-config/area.yaml:{line}:5: profile: the source has no kernel/trace/no-such-file.c"
    );
    assert!(text(&out).contains(&want), "want {want}\n{}", text(&out));
    assert!(!text(&out).contains("compiling"), "nothing compiled");
}

/// `explore --guided` on the twin: exit 0, its explore.json.
fn guided_explore(
    seed: &str,
    sequences: &str,
    results: &Path,
    more: &[&str],
) -> coexist::explore::ExploreReport {
    let mut args = vec![
        "explore",
        "--variant",
        VARIANT,
        "--guided",
        "--seed",
        seed,
        "--sequences",
        sequences,
        "-j",
        "2",
        "--results",
        results.to_str().unwrap(),
    ];
    args.extend(more);
    let out = coexist(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&std::fs::read(results.join("explore.json")).unwrap()).unwrap()
}

#[test]
fn a_guided_explore_keeps_a_corpus_that_a_later_run_starts_from() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let r = guided_explore("5", "6", &first, &[]);
    assert!(r.guided);
    assert_eq!(r.profiled[0], "kernel/bpf/trampoline.c");
    // What the run reached grows with each sequence, and the first
    // sequence reached something new: it is in the corpus.
    assert_eq!(r.reached.len() as u64, r.sequences, "{:?}", r.reached);
    assert!(r.reached.windows(2).all(|w| w[0].lines <= w[1].lines));
    assert!(r.reached[0].lines > 0);
    let corpus = coexist::explore::guided::Corpus::load(&first.join("corpus")).unwrap();
    assert_eq!(corpus.len(), r.corpus);
    assert!(!corpus.is_empty() && corpus.iter().all(|e| e.new_lines + e.new_branches > 0));
    // The explore run's own coverage page, sequences only.
    let c: CoverageReport = serde_json::from_slice(
        &std::fs::read(first.join("coverage").join(VARIANT).join("coverage.json")).unwrap(),
    )
    .unwrap();
    assert!(c.jobs.iter().all(|j| j.kind == JobKind::Sequence));
    assert!(c.jobs.len() as u64 >= r.sequences);
    // A later run starts from that corpus.
    let second = dir.path().join("second");
    let r2 = guided_explore(
        "6",
        "2",
        &second,
        &["--corpus", first.join("corpus").to_str().unwrap()],
    );
    assert!(
        r2.corpus >= corpus.len(),
        "the loaded entries stay in the corpus"
    );
    // Bad input, before anything runs: a corpus that is not there, and
    // guidance on a kernel that cannot be profiled.
    refused(
        &[
            "explore",
            "--variant",
            VARIANT,
            "--guided",
            "--corpus",
            "/nonexistent/corpus",
        ],
        "--corpus /nonexistent/corpus",
    );
    refused(
        &[
            "explore",
            "--variant",
            "debian-6.1-image",
            "--guided",
            "--sequences",
            "1",
        ],
        PREBUILT_REFUSED,
    );
}
