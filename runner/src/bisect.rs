//! `git bisect run` support: judge the checked-out commit of a kernel tree
//! by running suite cases on it, with exit codes git bisect understands.
//!
//! 0 good, 1 bad, 125 untestable (the kernel does not configure or build,
//! or does not boot for reasons of its own), 128 harness error (git bisect
//! stops instead of being misled).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::matrix::CaseResult;
use crate::suite::{Expected, StepRef};
use crate::verdict::Verdict;
use crate::vm::FailureKind;

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
            if !step.is_empty() && crate::suite::ERRNOS.contains(&errno) {
                let step = match step.parse::<usize>() {
                    Ok(i) => StepRef::Index(i),
                    Err(_) => StepRef::Label(step.to_string()),
                };
                return Ok(Expected::Fail {
                    step,
                    errno: errno.to_string(),
                });
            }
        }
    }
    bail!("--good-if {s}: expected 'pass' or 'refused:<step>:<ERRNO>' (e.g. refused:bpf:EBUSY)")
}

/// What one case says about the commit.
pub fn judge(r: &CaseResult) -> u8 {
    if let Some(f) = &r.failure {
        // The kernel did not come up at all: nothing to say about the case.
        if matches!(
            f.kind,
            FailureKind::BootFailed | FailureKind::QemuFailed | FailureKind::KvmNoProgress
        ) {
            return SKIP;
        }
        if f.kind == FailureKind::Protocol {
            return HARNESS;
        }
    }
    match (r.decision.verdict, r.decision.as_expected) {
        (Verdict::Pass, true) => GOOD,
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

/// git in `tree`, its output as trimmed text.
pub fn git(tree: &Path, args: &[&str]) -> Result<String> {
    let out = crate::source::git(tree, args)?;
    Ok(String::from_utf8_lossy(&out).trim().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_if_forms() {
        assert_eq!(parse_good_if("pass").unwrap(), Expected::Pass);
        assert_eq!(
            parse_good_if("refused:bpf:EBUSY").unwrap(),
            Expected::Fail {
                step: StepRef::Label("bpf".into()),
                errno: "EBUSY".into()
            }
        );
        assert_eq!(
            parse_good_if("refused:2:EAGAIN").unwrap(),
            Expected::Fail {
                step: StepRef::Index(2),
                errno: "EAGAIN".into()
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
