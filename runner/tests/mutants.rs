//! `mutants`: the list (nothing built), bad inputs refused before
//! anything builds, and real runs on share-ipmodify's kernel: a mutant
//! killed by named cases, an unviable one, the baseline's refusal, and
//! Ctrl-C keeping what finished with no mutated file left behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use coexist::mutants::{self, results, MutantsRequest, Operator, Outcome, ScopeKind};
use coexist::Workspace;
use common::{coexist, root, Quiet};

const VARIANT: &str = "share-ipmodify";
const FUNC: &str = "kernel/bpf/trampoline.c:bpf_tramp_ftrace_ops_func";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_default_scope_lists_many_mutants_of_many_operators_with_stable_ids() {
    let out = coexist(&["mutants", "--variant", VARIANT, "--list"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert!(lines.len() >= 40, "{} mutants", lines.len());
    let mut ops: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    ops.sort();
    ops.dedup();
    assert!(ops.len() >= 5, "operators {ops:?}");
    // id, operator, file:line:col, a one-line diff.
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert!(f[0].starts_with('m') && f[0].len() == 9, "{l}");
        assert!(Operator::ALL.iter().any(|o| o.name() == f[1]), "{l}");
        assert_eq!(f[2].split(':').count(), 3, "{l}");
        assert!(f[3].starts_with('-') && l.contains(" +"), "{l}");
    }
    // The series' function is in the default scope, and the area's.
    assert!(stdout(&out).contains("kernel/bpf/trampoline.c:"));
    assert!(stdout(&out).contains("kernel/trace/ftrace.c:"));
    assert!(stdout(&out).contains("kernel/livepatch/patch.c:"));
    let again = coexist(&["mutants", "--variant", VARIANT, "--list"]);
    assert_eq!(stdout(&again), stdout(&out), "ids and order are stable");
    // --scope series is the series' one function, bpf_trampoline_update.
    let series = coexist(&[
        "mutants",
        "--variant",
        VARIANT,
        "--scope",
        "series",
        "--list",
    ]);
    assert_eq!(series.status.code(), Some(0));
    assert!(
        stderr(&series).contains("in 1 function(s)"),
        "{}",
        stderr(&series)
    );
    let series_lines = stdout(&series);
    assert!(!series_lines.is_empty());
    for l in series_lines.lines() {
        assert!(
            lines.contains(&l.to_string()),
            "{l} not in the default scope"
        );
    }
    // Shards split the list once.
    let mut sharded: Vec<String> = (1..=3)
        .flat_map(|i| {
            let o = coexist(&[
                "mutants",
                "--variant",
                VARIANT,
                "--list",
                "--shard",
                &format!("{i}/3"),
            ]);
            assert_eq!(o.status.code(), Some(0));
            stdout(&o).lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    sharded.sort();
    let mut all = lines.clone();
    all.sort();
    assert_eq!(sharded, all);
}

#[test]
fn bad_inputs_are_refused_with_exit_2_before_anything_builds() {
    let results = tempfile::tempdir().unwrap();
    let r = results.path().join("r");
    let rs = r.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--function", "kernel/bpf/trampoline.c:no_such_function"],
            "defines no function no_such_function",
        ),
        (
            vec!["--function", "kernel/bpf/no_such_file.c:f"],
            "has no file kernel/bpf/no_such_file.c",
        ),
        (vec!["--function", "trampoline"], "is not FILE:FUNCTION"),
        (vec!["--operator", "no-such-op"], "no-such-op"),
        (vec!["--shard", "0/2"], "0/2"),
        (
            // No `true`/`false` argument in that function.
            vec![
                "--function",
                "kernel/livepatch/patch.c:klp_unpatch_func",
                "--operator",
                "bool-flip",
            ],
            "has no mutation site",
        ),
        (
            vec!["--suite", "no-such-suite"],
            "unknown suite 'no-such-suite'",
        ),
    ] {
        let mut a = vec!["mutants", "--variant", VARIANT, "--results", rs];
        a.extend(args.iter().copied());
        let out = coexist(&a);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!r.exists(), "{args:?} made the results dir");
    }
    let out = coexist(&["mutants", "--variant", "debian-6.1-image", "--results", rs]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("there is no source build to redo"),
        "{}",
        stderr(&out)
    );
    assert!(!r.exists());
}

fn request(suites: Vec<String>, ops: Vec<Operator>) -> MutantsRequest {
    MutantsRequest {
        variant: VARIANT.into(),
        scope: ScopeKind::Functions,
        functions: vec![mutants::scope::parse_function(FUNC).unwrap()],
        operators: ops,
        suites,
        case_glob: None,
        explore: None,
        seed: 1,
        workers: 2,
        shard: None,
        machine: Default::default(),
        results_dir: None,
        limit: None,
        ids: Vec::new(),
        coverage: false,
    }
}

/// A suite file of one case of livepatch-bpf, its expectation as written
/// (`wrong`: an output the kernel does not print).
fn small_suite(dir: &Path, wrong: bool) -> PathBuf {
    let want = if wrong {
        "this was never printed\\n"
    } else {
        "this has been live patched\\n"
    };
    let text = format!(
        r#"suite: mutants-test
description: one case for the mutants tests
variants: [share-ipmodify]
timeout: 60
cases:
  - name: livepatch-then-fexit
    description: livepatch first, then fexit on cmdline_proc_show
    steps:
      - livepatch_load: {{module: livepatch-sample}}
        as: lp
      - trigger: {{target: cmdline_proc_show}}
        expect: {{output: "{want}"}}
      - bpf_attach: {{program: cx_fexit, kind: fexit, target: cmdline_proc_show}}
        as: bpf
      - trigger: {{target: cmdline_proc_show}}
        expect: {{output: "{want}"}}
    expect:
      default: pass
"#
    );
    let p = dir.join(if wrong { "wrong.yaml" } else { "small.yaml" });
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_real_scope_kills_the_share_ipmodify_self_mutant_and_reports_an_unviable_one() {
    let ws = Workspace::open(Some(root()), None).unwrap();
    // The project's suite, its cases with fexit (the program that makes
    // the trampoline call the function, which SHARE_IPMODIFY_SELF is
    // about): a third of it, to keep the test short.
    let req = MutantsRequest {
        case_glob: Some("*fexit*".into()),
        ..request(vec!["livepatch-bpf".into()], vec![Operator::ReturnValue])
    };
    let mut planned = mutants::plan(&ws, &req, &Quiet).unwrap();
    // ENABLE_SHARE_IPMODIFY_SELF answers -EAGAIN (rebuild the trampoline
    // with ORIG_STACK, then retry); the mutant answers 0.
    let self_zero = planned
        .mutants
        .iter()
        .find(|m| m.original == "-EAGAIN" && m.replacement == "0" && m.line < 70)
        .cloned()
        .expect("the SHARE_IPMODIFY_SELF return -EAGAIN site");
    let mut unviable = self_zero.clone();
    unviable.id = "munviable".into();
    unviable.replacement = "no_such_identifier_coexist".into();
    // A mutant that adds a function vmlinux's BTF lists: its modules and
    // fixtures must be rebuilt against it, or they would not load.
    let mut new_func = self_zero.clone();
    new_func.id = "mnewfunc".into();
    // Right after the function (its closing brace is the first at column 0).
    let src = std::fs::read_to_string(planned.plan.tree_dir.join(&self_zero.file)).unwrap();
    let end = self_zero.start + src[self_zero.start..].find("\n}\n").unwrap() + 3;
    (new_func.start, new_func.end) = (end, end);
    new_func.original = String::new();
    new_func.replacement = "\nnoinline int coexist_mutants_btf_probe(void) { return 1; }\n".into();
    planned.mutants = vec![self_zero.clone(), unviable, new_func];
    let dir = tempfile::tempdir().unwrap();
    let r = mutants::run(&ws, &req, &planned, (dir.path(), "test"), &Quiet).unwrap();
    assert!(r.complete, "{:?}", r.incomplete);
    let b = r.baseline.as_ref().unwrap();
    assert_eq!(b.cases, b.as_expected);
    assert!(b.cases >= 10, "the suite's fexit cases ran on the baseline");
    let killed = &r.mutants[0];
    assert_eq!(killed.outcome, Outcome::Killed, "{killed:#?}");
    assert!(killed.killed_by_suite);
    // Named cases, with their evidence.
    assert!(
        killed
            .killers
            .iter()
            .any(|k| k.by.starts_with("livepatch-bpf/") && k.by.contains("fexit")),
        "{:#?}",
        killed.killers
    );
    assert!(killed.killers.iter().all(|k| !k.evidence.is_empty()));
    assert!(killed.build_s > 0.0 && killed.run_s > 0.0);
    // A change inside a function body leaves vmlinux's BTF, release and
    // exports as the base's: the base's modules and fixtures are used.
    assert_eq!(killed.rebuilt_fixtures, None);
    let u = &r.mutants[1];
    assert_eq!(u.outcome, Outcome::Unviable);
    assert!(
        u.unviable
            .as_deref()
            .unwrap()
            .contains("no_such_identifier_coexist"),
        "{:?}",
        u.unviable
    );
    let nf = &r.mutants[2];
    assert_eq!(nf.outcome, Outcome::Survived, "{nf:#?}");
    assert!(
        nf.rebuilt_fixtures
            .as_deref()
            .unwrap()
            .contains("BTF differs"),
        "{:?}",
        nf.rebuilt_fixtures
    );
    assert_eq!(nf.cases_run, b.cases, "every case ran, its modules loaded");
    // Written as it went, and read back.
    let back = results::load(&dir.path().join(results::FILE)).unwrap();
    assert_eq!(back.mutants.len(), 3);
    let rows = back.rows();
    let total = rows.last().unwrap();
    assert_eq!((total.killed, total.unviable, total.survived), (1, 1, 1));
    assert_eq!(total.score(), Some(0.5));
}

#[test]
fn a_baseline_that_fails_refuses_the_run_with_exit_2_naming_the_case() {
    let d = tempfile::tempdir().unwrap();
    let suite = small_suite(d.path(), true);
    let r = d.path().join("r");
    let out = coexist(&small_run(&suite, &r));
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("baseline:"), "{e}");
    assert!(
        e.contains("mutants-test/livepatch-then-fexit@share-ipmodify is FAIL"),
        "{e}"
    );
    // No mutant was built.
    let report = results::load(&r.join(results::FILE));
    assert!(report.map(|r| r.mutants.is_empty()).unwrap_or(true));
}

/// `mutants` of the function's return values, with suite file `suite`,
/// results in `r`.
fn small_run<'a>(suite: &'a Path, r: &'a Path) -> Vec<&'a str> {
    vec![
        "mutants",
        "--variant",
        VARIANT,
        "--function",
        FUNC,
        "--operator",
        "return-value",
        "--suite",
        suite.to_str().unwrap(),
        "--results",
        r.to_str().unwrap(),
    ]
}

fn worker_dirs() -> Vec<PathBuf> {
    let cache = coexist::cache::Cache::default_root().unwrap();
    std::fs::read_dir(cache.join("mutants"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn ctrl_c_keeps_what_finished_and_leaves_no_mutated_file() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let d = tempfile::tempdir().unwrap();
    let suite = small_suite(d.path(), false);
    let r = d.path().join("r");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args(small_run(&suite, &r))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The first mutant finishes, then Ctrl-C while the second builds (its
    // file is mutated in the worker then).
    let t0 = Instant::now();
    let report = r.join(results::FILE);
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(1500),
            "no mutant finished in 25 minutes"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        let done = results::load(&report).map(|x| x.mutants.len()).unwrap_or(0);
        let building = worker_dirs()
            .iter()
            .any(|w| w.join("applied.json").is_file());
        if done >= 1 && building {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(130));
    let back = results::load(&report).unwrap();
    assert!(!back.complete);
    assert!(
        back.incomplete
            .as_deref()
            .unwrap_or("")
            .contains("signal 2"),
        "{:?}, {} mutant(s)",
        back.incomplete,
        back.mutants.len()
    );
    assert_eq!(back.mutants.len(), 1, "what finished is kept");
    for w in worker_dirs() {
        assert!(
            !w.join("applied.json").exists(),
            "{} left a mutant applied",
            w.display()
        );
        // The worker's file reads as the variant's (the one mutated).
        let ws = Workspace::open(Some(root()), None).unwrap();
        let variants = ws.variants(None).unwrap();
        let v = coexist::build::variant::select(&variants, &[VARIANT.to_string()]).unwrap()[0];
        let plan = ws.builder(1, &Quiet).plan(v).unwrap();
        if w.file_name().unwrap().to_string_lossy() != plan.key {
            continue;
        }
        let file = "kernel/bpf/trampoline.c";
        assert_eq!(
            std::fs::read(w.join("src").join(file)).unwrap(),
            std::fs::read(plan.tree_dir.join(file)).unwrap(),
            "the worker's {file} is still mutated"
        );
    }
}
