//! `bench loop`: the developer's loop as they see it, whole commands
//! timed from the outside. The runner binary runs itself, one command at a
//! time, in the same workspace (project, cache):
//!
//! - one case with the default `--accel auto`, and the same case with
//!   `--accel tcg` (target: auto takes at most 1.5x tcg, so a host where
//!   KVM does not work pays for that discovery once, not per command);
//! - `run -- true` with the default accelerator (target: at most 1.0 s on
//!   a cached kernel).
//!
//! Every command runs `n` times after one warm-up (which builds or finds
//! the kernel, image and snapshot); the figures are medians.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// What to time.
#[derive(Clone, Debug)]
pub struct LoopRequest {
    /// The runner binary (normally this one).
    pub exe: PathBuf,
    pub root: PathBuf,
    pub cache: PathBuf,
    pub suite: String,
    pub variant: String,
    pub case: String,
    /// Timed runs of each command.
    pub n: usize,
    /// Results of the timed suite runs go below here.
    pub results: PathBuf,
}

/// One command's timings.
#[derive(Clone, Debug, Serialize)]
pub struct Timed {
    pub command: String,
    pub runs_s: Vec<f64>,
    pub median_s: f64,
}

/// The loop's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LoopFigures {
    pub case_auto: Timed,
    pub case_tcg: Timed,
    pub run_true: Timed,
    /// case_auto / case_tcg (target: at most 1.5).
    pub auto_over_tcg: f64,
    pub targets_met: bool,
}

pub const AUTO_OVER_TCG_TARGET: f64 = 1.5;
pub const RUN_TRUE_TARGET_S: f64 = 1.0;

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn run_once(r: &LoopRequest, args: &[String]) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new(&r.exe)
        .arg("--root")
        .arg(&r.root)
        .arg("--cache-dir")
        .arg(&r.cache)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", r.exe.display()))?;
    let s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`coexist {}` exited with {}:\n{}",
            args.join(" "),
            out.status,
            crate::text::shown(&tail(&String::from_utf8_lossy(&out.stderr), 20))
        );
    }
    Ok(s)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn timed(r: &LoopRequest, label: &str, args: Vec<String>) -> Result<Timed> {
    // Warm-up: builds or finds what the command needs, makes its snapshot.
    run_once(r, &args)?;
    let mut runs = Vec::new();
    for _ in 0..r.n.max(1) {
        runs.push(run_once(r, &args)?);
    }
    Ok(Timed {
        command: format!("{label}: coexist {}", args.join(" ")),
        median_s: median(&runs),
        runs_s: runs,
    })
}

fn case_args(r: &LoopRequest, results: &Path, accel: Option<&str>) -> Vec<String> {
    let mut a = vec![
        "suite".to_string(),
        r.suite.clone(),
        "--variant".into(),
        r.variant.clone(),
        "--case".into(),
        r.case.clone(),
        "--results".into(),
        results.to_string_lossy().into_owned(),
    ];
    if let Some(x) = accel {
        a.push("--accel".into());
        a.push(x.into());
    }
    a
}

/// Times the loop. The auto and tcg case runs alternate with nothing in
/// between, so both see the same machine.
pub fn measure(r: &LoopRequest) -> Result<LoopFigures> {
    let case_auto = timed(
        r,
        "one case, --accel auto",
        case_args(r, &r.results.join("auto"), None),
    )?;
    let case_tcg = timed(
        r,
        "one case, --accel tcg",
        case_args(r, &r.results.join("tcg"), Some("tcg")),
    )?;
    let run_true = timed(
        r,
        "run -- true",
        vec![
            "run".into(),
            "--variant".into(),
            r.variant.clone(),
            "--".into(),
            "true".into(),
        ],
    )?;
    let auto_over_tcg = case_auto.median_s / case_tcg.median_s.max(1e-9);
    Ok(LoopFigures {
        targets_met: auto_over_tcg <= AUTO_OVER_TCG_TARGET
            && run_true.median_s <= RUN_TRUE_TARGET_S,
        case_auto,
        case_tcg,
        run_true,
        auto_over_tcg,
    })
}

impl LoopFigures {
    pub fn text(&self) -> String {
        let line = |t: &Timed| {
            format!(
                "{}\n    median {:.2} s over {} run(s): {}",
                t.command,
                t.median_s,
                t.runs_s.len(),
                t.runs_s
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        };
        format!(
            "{}\n{}\n{}\nauto / tcg: {:.2}x (target at most {AUTO_OVER_TCG_TARGET}x); run -- true: {:.2} s (target at most {RUN_TRUE_TARGET_S} s); targets {}",
            line(&self.case_auto),
            line(&self.case_tcg),
            line(&self.run_true),
            self.auto_over_tcg,
            self.run_true.median_s,
            if self.targets_met { "met" } else { "NOT met" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_the_targets_line() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let t = |s: f64| Timed {
            command: "c".into(),
            runs_s: vec![s],
            median_s: s,
        };
        let f = LoopFigures {
            case_auto: t(1.2),
            case_tcg: t(1.0),
            run_true: t(0.8),
            auto_over_tcg: 1.2,
            targets_met: true,
        };
        assert!(f.text().ends_with("auto / tcg: 1.20x (target at most 1.5x); run -- true: 0.80 s (target at most 1 s); targets met"), "{}", f.text());
    }
}
