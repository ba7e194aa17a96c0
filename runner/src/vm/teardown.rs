//! Teardown: every QEMU runs in its own process group, dies with the
//! runner (PR_SET_PDEATHSIG), and is killed on timeouts, Ctrl-C, SIGTERM,
//! SIGHUP and panics. Run directories registered here are removed too.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, Once};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

static GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

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
    GROUPS.lock().unwrap_or_else(|e| e.into_inner()).push(pgid);
}

pub fn unregister_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|g| *g != pgid);
}

pub fn register_dir(p: PathBuf) {
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(p);
}

pub fn unregister_dir(p: &PathBuf) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|d| d != p);
}

/// Kills every registered process group and removes registered dirs.
pub fn kill_all() {
    let groups: Vec<i32> = GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
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

/// Installs the signal thread and panic hook (idempotent).
pub fn install_handlers() {
    INSTALL.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        if let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    kill_all();
                    eprintln!("coexist: interrupted (signal {sig}); virtual machines stopped");
                    std::process::exit(128 + sig);
                }
            });
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            kill_all();
            prev(info);
        }));
    });
}
