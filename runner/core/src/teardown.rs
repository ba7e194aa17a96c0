//! Teardown: every child that could outlive the runner (QEMU, kernel
//! builds) runs in its own process group, dies with the runner
//! (PR_SET_PDEATHSIG), and is killed on timeouts, Ctrl-C, SIGTERM, SIGHUP
//! and panics. Run directories registered here are removed too. QEMU gets
//! SIGKILL at once; a build ([`Group`]) gets SIGTERM first and up to
//! [`BUILD_GRACE`] to stop, so that make deletes the file it was writing
//! (a linker killed outright leaves a half-written tool, such as
//! `fixdep`, that the next build in the same directory would take as
//! made), then SIGKILL.
//!
//! While a [`Graceful`] guard is alive (a suite run), the first signal
//! kills every registered group and sets [`stopping`], so the run can
//! write a report of what finished before it exits with 128 + the signal;
//! a second signal, or 20 s without exit, ends the process at once.
//! Without a guard, a signal ends the process at once.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Registered process groups: (pgid, whether it is a build that gets
/// SIGTERM and [`BUILD_GRACE`] before SIGKILL).
static GROUPS: Mutex<Vec<(i32, bool)>> = Mutex::new(Vec::new());

/// How long a build's process group has, after SIGTERM, to clean up.
pub const BUILD_GRACE: Duration = Duration::from_secs(5);
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
static PANICKED: AtomicBool = AtomicBool::new(false);
static GRACEFUL: AtomicUsize = AtomicUsize::new(0);

/// Makes `cmd` start in a new process group and get SIGKILL when the
/// thread that spawned it (the runner) dies.
pub fn isolate(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (setpgid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
}

pub fn register_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pgid, false));
}

pub fn unregister_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(g, _)| *g != pgid);
}

/// Whether a process of group `pgid` is still running (zombies, which
/// only wait to be reaped, do not count).
pub fn group_running(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid pgrp ...
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<&str> = after.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid)
        })
}

/// SIGTERM to a build's group, up to [`BUILD_GRACE`] for it to stop, then
/// SIGKILL for whatever is left.
fn stop_build(pgid: i32) {
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let deadline = std::time::Instant::now() + BUILD_GRACE;
    while group_running(pgid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    // SIGKILL is delivered, not yet acted on: a loaded machine can take a
    // moment to end the group's members.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while group_running(pgid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn register_dir(p: PathBuf) {
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(p);
}

pub fn unregister_dir(p: &PathBuf) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != p);
}

/// A child in its own registered process group: killed with its group
/// when dropped, on every path (errors, panics); the signal thread kills
/// it too.
pub struct Group {
    child: Child,
    pgid: i32,
}

impl Group {
    /// Spawns `cmd` isolated ([`isolate`]) and registered.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Group> {
        install_handlers();
        if stopping() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "the run is stopping",
            ));
        }
        isolate(cmd);
        let child = cmd.spawn()?;
        let pgid = child.id() as i32;
        GROUPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pgid, true));
        Ok(Group { child, pgid })
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Collects stdout and stderr (both piped) and waits.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        use std::io::Read;
        let mut err = self.child.stderr.take();
        let reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut b);
            }
            b
        });
        let mut stdout = Vec::new();
        if let Some(mut o) = self.child.stdout.take() {
            o.read_to_end(&mut stdout)?;
        }
        let stderr = reader.join().unwrap_or_default();
        let status = self.child.wait()?;
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            stop_build(self.pgid);
        } else {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        unregister_group(self.pgid);
    }
}

/// Kills every registered process group (VMs at once, builds after
/// their grace) and removes registered dirs.
pub fn kill_all() {
    let groups: Vec<(i32, bool)> = GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for (g, _) in groups.iter().filter(|(_, build)| !build) {
        let _ = killpg(Pid::from_raw(*g), Signal::SIGKILL);
    }
    let builds: Vec<std::thread::JoinHandle<()>> = groups
        .iter()
        .filter(|(_, build)| *build)
        .map(|(g, _)| {
            let g = *g;
            std::thread::spawn(move || stop_build(g))
        })
        .collect();
    for b in builds {
        let _ = b.join();
    }
    let dirs: Vec<PathBuf> = DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The signal that interrupted the run, if one did.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Whether the run must stop taking work: a signal came, or a thread of
/// the runner panicked (its panic hook killed every VM).
pub fn stopping() -> bool {
    interrupted().is_some() || PANICKED.load(Ordering::SeqCst)
}

/// While alive, a signal lets the run finish its report (see the module doc).
pub struct Graceful(());

pub fn graceful() -> Graceful {
    install_handlers();
    GRACEFUL.fetch_add(1, Ordering::SeqCst);
    Graceful(())
}

impl Drop for Graceful {
    fn drop(&mut self) {
        GRACEFUL.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Installs the signal thread and panic hook (idempotent).
pub fn install_handlers() {
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    let again = interrupted().is_some();
                    INTERRUPTED.store(sig, Ordering::SeqCst);
                    kill_all();
                    if again || GRACEFUL.load(Ordering::SeqCst) == 0 {
                        eprintln!("coexist: interrupted (signal {sig}); virtual machines and builds stopped");
                        std::process::exit(128 + sig);
                    }
                    eprintln!(
                        "coexist: interrupted (signal {sig}); virtual machines and builds stopped, \
                         writing the report of what finished (again to quit at once)"
                    );
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(20));
                        eprintln!("coexist: the report was not written within 20 s; quitting");
                        std::process::exit(128 + sig);
                    });
                }
            });
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            kill_all();
            prev(info);
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Group {
        Group::spawn(Command::new("sh").args(["-c", script])).unwrap()
    }

    /// Until the script has set its trap (a loaded machine can take far
    /// longer than any fixed sleep to start a shell).
    fn wait_for(marker: &std::path::Path) {
        let t0 = std::time::Instant::now();
        while !marker.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the script never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_dropped_build_gets_sigterm_to_clean_up_then_sigkill() {
        let d = tempfile::tempdir().unwrap();
        let done = d.path().join("cleaned-up");
        // Like make: on SIGTERM it removes what it was writing, then exits.
        let ready = d.path().join("ready");
        let g = sh(&format!(
            "trap 'touch {}; exit 1' TERM; touch {}; while :; do sleep 0.05; done",
            done.display(),
            ready.display()
        ));
        let pgid = g.pgid;
        wait_for(&ready);
        drop(g);
        assert!(done.is_file(), "the group did not get SIGTERM first");
        assert!(!group_running(pgid));

        // One that ignores SIGTERM is killed after the grace.
        let ignoring = d.path().join("ignoring");
        let g = sh(&format!(
            "trap '' TERM; touch {}; while :; do sleep 0.05; done",
            ignoring.display()
        ));
        let pgid = g.pgid;
        wait_for(&ignoring);
        let t0 = std::time::Instant::now();
        drop(g);
        assert!(!group_running(pgid));
        let took = t0.elapsed();
        assert!(took >= BUILD_GRACE, "killed before its grace: {took:?}");
    }
}
