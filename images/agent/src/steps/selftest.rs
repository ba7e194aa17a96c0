//! selftest: one of the kernel's own selftests, from the image's
//! `/selftests` (the variant's `tools/testing/selftests`), run with bash
//! through the kernel's own runner. The host reads the results from the
//! output; here the test only has to run to its end, or be stopped at its
//! timeout.

use std::io::Read;
use std::path::{Component, Path};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coexist_proto::{Answer, SelftestRunner, SELFTESTS_DIR, STEP_OUTPUT_MAX};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::{errno_of, fail, ok, spawn_piped, Capped};

/// The kselftest runner's `run_many`, as `run_kselftest.sh` calls it for
/// one collection: `$1` the selftests, `$2` the collection, `$3` the test.
const KSELFTEST: &str = r#"export BASE_DIR="$1"; . "$BASE_DIR/kselftest/runner.sh" && cd "$BASE_DIR/$2" && run_many "$3""#;

/// ftracetest with its output inline (`-l -`): `$1` its directory, `$2`
/// the test case.
const FTRACETEST: &str = r#"cd "$1" && exec bash ./ftracetest -l - "$2""#;

/// A relative path that stays below its directory.
fn plain_relative(p: &str) -> bool {
    !p.is_empty()
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

pub fn selftest(
    id: u64,
    runner: SelftestRunner,
    collection: &str,
    test: &str,
    timeout_ms: u64,
) -> Answer {
    if !plain_relative(collection) || !plain_relative(test) {
        return fail(
            Some(id),
            Some(Errno::EINVAL as i32),
            format!("selftest: '{collection}' and '{test}' must be relative paths without '..'"),
        );
    }
    let base = Path::new(SELFTESTS_DIR);
    let dir = base.join(collection);
    if !dir.join(test).is_file() {
        return fail(
            Some(id),
            Some(Errno::ENOENT as i32),
            format!(
                "selftest: {} is not in the image (its recipe's `selftests` must list '{collection}')",
                dir.join(test).display()
            ),
        );
    }
    // In a session of its own (busybox setsid execs bash in place), so
    // that everything the test starts can be stopped with its group.
    // (Not `process_group`/`pre_exec`: the static agent's spawn then fails
    // with ENOSYS in the guest.)
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["setsid", "/bin/bash"]);
    match runner {
        SelftestRunner::Kselftest => {
            // From 6.7 on the livepatch tests look for a kernel build dir
            // (KDIR, default /lib/modules/$(uname -r)/build) before they
            // start, to build their modules; the image carries them built
            // (in the collection's test_modules/), so the collection's
            // directory stands in for it.
            cmd.env("KDIR", &dir);
            cmd.args([
                "-c",
                KSELFTEST,
                "kselftest",
                SELFTESTS_DIR,
                collection,
                test,
            ]);
        }
        SelftestRunner::Ftracetest => {
            cmd.args(["-c", FTRACETEST, "ftracetest"])
                .arg(&dir)
                .arg(test);
        }
    }
    let (mut child, mut f) = match spawn_piped(id, cmd, "setsid bash") {
        Ok(x) => x,
        Err(a) => return *a,
    };
    let pgid = Pid::from_raw(child.id() as i32);
    // Read as it comes, so what the test printed before a timeout is kept
    // even if something it started keeps the pipe open.
    let output = Arc::new(Mutex::new(Capped::new(STEP_OUTPUT_MAX)));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(&buf[..n]);
            }
            let _ = done_tx.send(());
        });
    }
    let t0 = Instant::now();
    let limit = Duration::from_millis(timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if t0.elapsed() >= limit => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return fail(Some(id), errno_of(&e), format!("wait: {e}")),
        }
    };
    // Whatever the test left running goes with it: its process group, and
    // every process of its session (the kselftest runner starts each test
    // under `timeout`, which moves to a process group of its own).
    let _ = killpg(pgid, Signal::SIGKILL);
    kill_session(pgid.as_raw());
    if status.is_none() {
        let _ = child.wait();
    }
    let _ = done_rx.recv_timeout(Duration::from_secs(2));
    let text = output.lock().unwrap_or_else(|e| e.into_inner()).text();
    match status {
        Some(s) => {
            use std::os::unix::process::ExitStatusExt;
            let mut a = ok(id, text);
            a.exit_code = s.code().or(s.signal().map(|sig| 128 + sig));
            a
        }
        None => {
            let mut a = fail(
                Some(id),
                Some(Errno::ETIMEDOUT as i32),
                format!(
                    "selftest {collection}/{test} did not finish within {:.1} s; its process group was killed",
                    limit.as_secs_f64()
                ),
            );
            a.output = text;
            a
        }
    }
}

/// The session of a process and whether it is a zombie (dead, not yet
/// reaped), from its `/proc/<pid>/stat` line (field 6, and the state).
fn session_of(stat: &str) -> Option<(i32, bool)> {
    // After the command name in parentheses: state, ppid, pgrp, session.
    let mut f = stat[stat.rfind(')')? + 1..].split_whitespace();
    let zombie = f.next()? == "Z";
    Some((f.nth(2)?.parse().ok()?, zombie))
}

/// SIGKILLs every process of session `sid` and reaps it (the agent is
/// init: what the test left behind was handed to it), until none is left;
/// a few rounds, as one may fork while the first runs.
fn kill_session(sid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    for _ in 0..10 {
        let mut left = false;
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let Some((s, zombie)) = session_of(&stat) else {
                continue;
            };
            if s != sid || pid == std::process::id() as i32 {
                continue;
            }
            left = true;
            if !zombie {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_from_a_stat_line() {
        assert_eq!(
            session_of("195 (timeout) S 191 195 190 0 -1 4194560 ..."),
            Some((190, false))
        );
        assert_eq!(session_of("7 (a) b) c) S 1 7 7 0"), Some((7, false)));
        assert_eq!(session_of("garbage"), None);
        assert_eq!(session_of("9 (x) Z 1 9 8 0"), Some((8, true)), "a zombie");
    }

    #[test]
    fn paths_stay_below_the_selftests() {
        assert!(plain_relative("test.d/direct/ftrace-direct.tc"));
        assert!(plain_relative("livepatch"));
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./x"] {
            assert!(!plain_relative(bad), "{bad}");
        }
    }
}
