//! `git bisect run` support: judge the checked-out commit of a kernel tree
//! by running suite cases on it, with exit codes git bisect understands.
//!
//! 0 good, 1 bad, 125 untestable (the kernel does not configure or build,
//! or does not boot for reasons of its own), 128 harness error (git bisect
//! stops instead of being misled).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{run_case, CaseOptions};
use crate::build::{variant, KernelDoesNotBuild};
use crate::events::{self, EventSink};
use crate::process::git_text;
use crate::record::{CaseResult, Verdict};
use crate::suite::{self, Expected, StepRef};
use crate::vm::{AccelChoice, Blame};
use crate::workspace::Workspace;

pub const GOOD: u8 = 0;
pub const BAD: u8 = 1;
pub const SKIP: u8 = 125;
pub const HARNESS: u8 = 128;

/// `--good-if`: `pass`, or `refused:<step label or index>:<ERRNO>`.
pub fn parse_good_if(s: &str) -> Result<Expected> {
    if s == "pass" {
        return Ok(Expected::Pass);
    }
    if let Some(rest) = s.strip_prefix("refused:") {
        if let Some((step, errno)) = rest.rsplit_once(':') {
            if let (false, Ok(errno)) = (step.is_empty(), crate::input::Errno::parse(errno)) {
                let step = match step.parse::<usize>() {
                    Ok(i) => StepRef::Index(i),
                    Err(_) => StepRef::Label(step.to_string()),
                };
                return Ok(Expected::Fail { step, errno });
            }
        }
    }
    bail!("--good-if {s}: expected 'pass' or 'refused:<step>:<ERRNO>' (e.g. refused:bpf:EBUSY)")
}

/// What one case says about the commit.
pub fn judge(r: &CaseResult) -> u8 {
    if let Some(f) = &r.failure {
        match f.kind.blame() {
            // The kernel did not come up at all: nothing to say about the case.
            Blame::Host | Blame::Boot => return SKIP,
            Blame::Harness => return HARNESS,
            Blame::Kernel => {}
        }
    }
    match (r.decision.verdict, r.decision.as_expected) {
        (Verdict::Pass, true) => GOOD,
        // A selftest that skips says nothing about the commit.
        (Verdict::Skip, true) => SKIP,
        _ => BAD,
    }
}

/// The commit's overall answer: untestable or harness trouble wins, then bad.
pub fn combine(codes: &[u8]) -> u8 {
    if codes.contains(&HARNESS) {
        HARNESS
    } else if codes.contains(&SKIP) {
        SKIP
    } else if codes.contains(&BAD) {
        BAD
    } else {
        GOOD
    }
}

/// One bisect step, as appended to the bisect log (JSON lines).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLog {
    pub commit: String,
    pub subject: String,
    pub kernel_key: Option<String>,
    pub build_s: f64,
    pub kernel_cached: bool,
    pub exit: u8,
    pub verdict: String,
    pub cases: Vec<CaseVerdict>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseVerdict {
    pub case: String,
    pub verdict: String,
    pub summary: String,
}

pub fn exit_word(code: u8) -> &'static str {
    match code {
        GOOD => "good",
        BAD => "bad",
        SKIP => "skip",
        _ => "harness-error",
    }
}

/// `<sha> is the first bad commit` from `git bisect run` output.
pub fn first_bad(output: &str) -> Option<String> {
    output.lines().find_map(|l| {
        l.strip_suffix(" is the first bad commit")
            .map(|sha| sha.trim().to_string())
    })
}

pub fn read_log(path: &Path) -> Vec<StepLog> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn append_log(path: &Path, s: &StepLog) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(s)?)?;
    Ok(())
}

/// What to judge a commit by.
#[derive(Clone, Debug)]
pub struct BisectRequest {
    /// The kernel git tree (canonical path).
    pub tree: PathBuf,
    /// The variant whose fragments to build with (no patch series).
    pub variant: String,
    pub suite: String,
    pub cases: Vec<String>,
    /// `pass`, or `refused:<step>:<ERRNO>`.
    pub good_if: String,
    /// Append each step's verdict to this JSON-lines file.
    pub log: Option<PathBuf>,
    pub accel: AccelChoice,
}

/// The tree to bisect: the given one, or the current directory.
pub fn resolve_tree(t: Option<&Path>) -> Result<PathBuf> {
    let t = match t {
        Some(t) => t.to_path_buf(),
        None => std::env::current_dir()?,
    };
    t.canonicalize()
        .with_context(|| format!("--kernel-tree {}: no such directory", t.display()))
}

/// `bisect-run`: judges the checked-out commit. Every way of failing to
/// judge it is an exit code in the returned log (125 untestable), or an
/// error the caller turns into 128, so git bisect never mistakes a
/// harness problem for "bad".
pub fn judge_commit(ws: &Workspace, req: &BisectRequest, ev: &dyn EventSink) -> Result<StepLog> {
    let expected = parse_good_if(&req.good_if)?;
    let variants = ws.variants(Some(&req.tree))?;
    let v = variant::select(&variants, std::slice::from_ref(&req.variant))?[0];
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let fx = crate::image::project_fixtures(&ws.project.root);
    let path = ws
        .project
        .root
        .join("suites")
        .join(format!("{}.yaml", req.suite));
    let mut s = suite::load(&path, &names, &fx)?;
    let mut cases = Vec::new();
    for name in &req.cases {
        let mut c = s
            .file
            .cases
            .iter()
            .find(|c| &c.name == name)
            .cloned()
            .with_context(|| format!("suite '{}' has no case '{name}'", req.suite))?;
        c.expect = [(suite::ExpectKey::Default, expected.clone())]
            .into_iter()
            .collect();
        cases.push(c);
    }
    s.file.cases = cases;
    let commit = git_text(&req.tree, &["rev-parse", "HEAD"])?;
    let subject = git_text(&req.tree, &["log", "-1", "--format=%s"])?;
    let short = commit[..12.min(commit.len())].to_string();
    events::note(ev, format!("bisect-run: {short} {subject}"));
    let mut step = StepLog {
        commit,
        subject,
        kernel_key: None,
        build_s: 0.0,
        kernel_cached: false,
        exit: SKIP,
        verdict: String::new(),
        cases: Vec::new(),
    };
    let p = match ws.prepare(v, ev) {
        Ok(p) => p,
        Err(e) if e.downcast_ref::<KernelDoesNotBuild>().is_some() => {
            step.verdict = format!(
                "untestable: {}",
                format!("{e:#}").lines().next().unwrap_or("")
            );
            events::note(ev, format!("{e:#}"));
            return record(req, step, ev);
        }
        Err(e) => return Err(e),
    };
    step.kernel_key = Some(p.manifest.key.clone());
    step.build_s = p.build_s;
    step.kernel_cached = p.kernel_cached;
    let opts = CaseOptions {
        machine: crate::guest::Machine {
            accel: req.accel,
            ..Default::default()
        },
        results_dir: ws
            .project
            .root
            .join("results")
            .join(format!("bisect-{short}-{}", std::process::id())),
        snapshots: None,
    };
    let mut codes = Vec::new();
    for c in &s.file.cases {
        let r = run_case(&p, &s, c, &opts, ev);
        let code = judge(&r);
        events::note(
            ev,
            format!(
                "  {}: {} ({}): {}",
                c.name,
                r.decision.verdict.as_str(),
                exit_word(code),
                r.decision.summary
            ),
        );
        step.cases.push(CaseVerdict {
            case: c.name.clone(),
            verdict: r.decision.verdict.as_str().into(),
            summary: r.decision.summary.clone(),
        });
        codes.push(code);
    }
    step.exit = combine(&codes);
    step.verdict = exit_word(step.exit).into();
    record(req, step, ev)
}

fn record(req: &BisectRequest, step: StepLog, ev: &dyn EventSink) -> Result<StepLog> {
    events::note(
        ev,
        format!(
            "bisect-run: {}: {} ({})",
            &step.commit[..12.min(step.commit.len())],
            exit_word(step.exit),
            step.verdict
        ),
    );
    if let Some(l) = &req.log {
        append_log(l, &step)?;
    }
    Ok(step)
}

/// The arguments after the runner's executable that `git bisect run` gets:
/// `bisect-run` with the same project, cache and request.
pub fn bisect_run_args(ws: &Workspace, req: &BisectRequest, log: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--root".into(),
        ws.project.root.clone().into(),
        "--cache-dir".into(),
        ws.cache.root.clone().into(),
        "bisect-run".into(),
        "--kernel-tree".into(),
        req.tree.clone().into(),
    ];
    for (k, v) in [
        ("--variant", &req.variant),
        ("--suite", &req.suite),
        ("--good-if", &req.good_if),
    ] {
        a.push(k.into());
        a.push(v.into());
    }
    for c in &req.cases {
        a.push("--case".into());
        a.push(c.into());
    }
    a.push("--log".into());
    a.push(log.into());
    a.push("--accel".into());
    a.push(format!("{:?}", req.accel).to_lowercase().into());
    a
}

/// What a whole bisection found (`bisect.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BisectSummary {
    pub good: String,
    pub bad: String,
    pub good_if: String,
    pub cases: Vec<String>,
    pub first_bad: Option<String>,
    pub first_bad_subject: Option<String>,
    pub steps: Vec<StepLog>,
    /// What `git bisect run` printed.
    #[serde(skip)]
    pub git_output: String,
    #[serde(skip)]
    pub git_exit: Option<i32>,
    #[serde(skip)]
    pub elapsed_s: f64,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Drives `git bisect start/run/reset` with `bisect-run` as the judge, and
/// writes `results/bisect-<run-id>/bisect.json` and `steps.jsonl`.
pub fn drive(ws: &Workspace, good: &str, bad: &str, req: &BisectRequest) -> Result<BisectSummary> {
    parse_good_if(&req.good_if)?;
    let status = git_text(
        &req.tree,
        &["status", "--porcelain", "--untracked-files=no"],
    )?;
    if !status.is_empty() {
        bail!(
            "{}: the tree has local changes; git bisect needs a clean checkout",
            req.tree.display()
        );
    }
    let dir = ws
        .project
        .root
        .join("results")
        .join(format!("bisect-{}", super::run_id()));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("steps.jsonl");
    let exe = std::env::current_exe()?;
    git_text(&req.tree, &["bisect", "start", bad, good])?;
    let t0 = Instant::now();
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&req.tree)
        .args(["bisect", "run"])
        .arg(&exe)
        .args(bisect_run_args(ws, req, &log))
        .stderr(std::process::Stdio::inherit())
        .output();
    let reset = git_text(&req.tree, &["bisect", "reset"]);
    let out = out.context("cannot run git bisect run")?;
    reset?;
    let git_output = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = first_bad(&git_output);
    let summary = BisectSummary {
        good: good.into(),
        bad: bad.into(),
        good_if: req.good_if.clone(),
        cases: req.cases.clone(),
        first_bad_subject: first
            .as_ref()
            .and_then(|c| git_text(&req.tree, &["log", "-1", "--format=%s", c]).ok()),
        first_bad: first,
        steps: read_log(&log),
        git_output,
        git_exit: out.status.code(),
        elapsed_s: t0.elapsed().as_secs_f64(),
        dir: dir.clone(),
    };
    crate::cache::write_atomic(
        &dir.join("bisect.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Errno;

    #[test]
    fn git_bisect_run_gets_the_same_project_cache_and_request() {
        let d = tempfile::tempdir().unwrap();
        let ws = Workspace::new(
            crate::build::Project {
                root: "/proj".into(),
            },
            crate::cache::Cache::open(d.path().join("cache")).unwrap(),
        );
        let req = BisectRequest {
            tree: "/src/linux".into(),
            variant: "stock".into(),
            suite: "livepatch-bpf".into(),
            cases: vec!["a/b".into(), "c".into()],
            good_if: "refused:bpf:EBUSY".into(),
            log: None,
            accel: AccelChoice::Tcg,
        };
        let a: Vec<String> = bisect_run_args(&ws, &req, Path::new("/r/steps.jsonl"))
            .into_iter()
            .map(|x| x.to_string_lossy().into_owned())
            .collect();
        let cache = d.path().join("cache").display().to_string();
        let want = [
            "--root",
            "/proj",
            "--cache-dir",
            &cache,
            "bisect-run",
            "--kernel-tree",
            "/src/linux",
            "--variant",
            "stock",
            "--suite",
            "livepatch-bpf",
            "--good-if",
            "refused:bpf:EBUSY",
            "--case",
            "a/b",
            "--case",
            "c",
            "--log",
            "/r/steps.jsonl",
            "--accel",
            "tcg",
        ];
        assert_eq!(a, want);
    }

    #[test]
    fn good_if_forms() {
        assert_eq!(parse_good_if("pass").unwrap(), Expected::Pass);
        assert_eq!(
            parse_good_if("refused:bpf:EBUSY").unwrap(),
            Expected::Fail {
                step: StepRef::Label("bpf".into()),
                errno: Errno::parse("EBUSY").unwrap()
            }
        );
        assert_eq!(
            parse_good_if("refused:2:EAGAIN").unwrap(),
            Expected::Fail {
                step: StepRef::Index(2),
                errno: Errno::parse("EAGAIN").unwrap()
            }
        );
        for bad in [
            "",
            "passed",
            "refused:bpf",
            "refused::EBUSY",
            "refused:bpf:EBUZY",
        ] {
            assert!(parse_good_if(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn combining_step_answers() {
        assert_eq!(combine(&[GOOD, GOOD]), GOOD);
        assert_eq!(combine(&[GOOD, BAD]), BAD);
        assert_eq!(combine(&[BAD, SKIP]), SKIP);
        assert_eq!(combine(&[SKIP, HARNESS]), HARNESS);
    }

    #[test]
    fn first_bad_from_git_output() {
        let out =
            "running  ./x\nBisecting: 0 revisions left to test after this (roughly 0 steps)\n\
4f2c1e0d9a is the first bad commit\ncommit 4f2c1e0d9a\nAuthor: x\n";
        assert_eq!(first_bad(out).as_deref(), Some("4f2c1e0d9a"));
        assert_eq!(first_bad("nothing"), None);
    }
}
