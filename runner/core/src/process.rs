//! Running host commands: quietly with their output kept for an error
//! ([`run_quiet`], in a process group of its own that dies with the
//! runner), a tool's version line ([`first_line`]), a tool on the PATH
//! ([`which`]), git in a tree ([`git`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::teardown;

/// Runs a command, returning its output, or failing with its last lines.
pub fn run_quiet(mut c: Command, what: &str) -> Result<String> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let group = teardown::Group::spawn(&mut c).with_context(|| format!("cannot run {what}"))?;
    let out = group
        .wait_with_output()
        .with_context(|| format!("cannot run {what}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{what} failed:\n{}", tail(&text, 30));
    }
    Ok(text)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where `tool` is on the PATH (or in /usr/sbin, /sbin).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The first line a command prints (versions), or "<cmd>: not found".
pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

/// Runs git in `tree`; its stdout, or an error with git's stderr.
pub fn git(tree: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(args)
        .output()
        .context("cannot run git")?;
    if !out.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            tree.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// [`git`]'s output as trimmed text.
pub fn git_text(tree: &Path, args: &[&str]) -> Result<String> {
    Ok(String::from_utf8_lossy(&git(tree, args)?)
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_commands_fail_with_their_last_lines() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo one; echo two >&2; exit 3"]);
        let e = run_quiet(c, "the script").unwrap_err().to_string();
        assert!(e.starts_with("the script failed:\none\ntwo"), "{e}");
        let mut ok = Command::new("echo");
        ok.arg("hi");
        assert_eq!(run_quiet(ok, "echo").unwrap(), "hi\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(
            first_line("no-such-tool-here", &[]),
            "no-such-tool-here: not found"
        );
        assert!(which("sh").is_some());
    }
}
