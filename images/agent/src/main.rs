//! PID 1 of the test guest. Mounts the pseudo filesystems, installs
//! busybox applets, finds its virtio-serial port, announces READY, then runs
//! one step per request line and answers with one JSON line.
//!
//! As PID 1 it must never exit (the kernel would panic): every step runs
//! under catch_unwind, bad input gets an error answer, and a lost channel
//! is reopened.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod steps;

use coexist_proto::{step_marker, AgentMsg, Answer, Request, Step, PORT_NAME, PRELOAD_MODULES};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

const PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

/// Console messages go to /dev/kmsg only when running as the guest's init
/// (never into a host's kernel log when the agent is tested on the host).
static IS_INIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn kmsg(line: &str) {
    if !IS_INIT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("<5>{line}\n").as_bytes());
    }
}

fn console(msg: &str) {
    kmsg(&format!("coexist-agent: {msg}"));
}

fn kmsg_marker(id: u64, what: &str) {
    kmsg(&step_marker(id, what));
}

fn setup(warnings: &mut Vec<String>) {
    let mounts: &[(&str, &str, &str)] = &[
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("debugfs", "/sys/kernel/debug", "debugfs"),
        ("tracefs", "/sys/kernel/tracing", "tracefs"),
        ("bpf", "/sys/fs/bpf", "bpf"),
        ("devpts", "/dev/pts", "devpts"),
    ];
    for (src, target, fstype) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = mount(
            Some(*src),
            *target,
            Some(*fstype),
            MsFlags::empty(),
            None::<&str>,
        ) {
            // devtmpfs may be automounted already (DEVTMPFS_MOUNT).
            if e != Errno::EBUSY {
                warnings.push(format!("mount {fstype} on {target}: {e}"));
            }
        }
    }
    // What udev and init scripts make: without them `>>/dev/stdout` (the
    // kselftest runner's log) creates a plain file, and bash has no
    // /dev/fd for process substitution.
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                warnings.push(format!("symlink {link}: {e}"))
            }
            _ => {}
        }
    }
    preload_modules(Path::new(PRELOAD_MODULES), &kernel_release(), warnings);
    for d in ["/bin", "/sbin", "/usr/bin", "/usr/sbin"] {
        let _ = std::fs::create_dir_all(d);
    }
    match Command::new("/bin/busybox")
        .args(["--install", "-s"])
        .status()
    {
        Ok(s) if s.success() => {}
        other => warnings.push(format!("busybox --install: {other:?}")),
    }
    std::env::set_var("PATH", PATH);
    std::env::set_var("HOME", "/");
}

/// Loads the modules `list` names (a modular kernel's image: the agent's
/// channel is a module there), in order, each a path relative to
/// `/lib/modules/<release>/`. No list: nothing to load. A module already
/// there (EEXIST) is fine; any other failure is a warning, and the rest
/// are still tried.
fn preload_modules(list: &Path, release: &str, warnings: &mut Vec<String>) {
    let Ok(text) = std::fs::read_to_string(list) else {
        return;
    };
    let dir = Path::new("/lib/modules").join(release);
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(rel);
        let loaded =
            File::open(&path).map_err(|e| e.to_string()).and_then(
                |f| match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
                    Ok(()) | Err(Errno::EEXIST) => Ok(()),
                    Err(e) => Err(e.desc().to_string()),
                },
            );
        if let Err(e) = loaded {
            warnings.push(format!("loading module {}: {e}", path.display()));
        }
    }
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Finds /dev/vportNpM whose name is PORT_NAME, waiting for it to appear.
fn find_port() -> Option<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(rd) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in rd.flatten() {
                let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim() == PORT_NAME {
                    let dev = Path::new("/dev").join(e.file_name());
                    if dev.exists() {
                        return Some(dev);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn handle_line(state: &mut steps::State, line: &str) -> (Answer, bool) {
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            return (
                steps::fail(None, None, format!("malformed request: {e}")),
                false,
            )
        }
    };
    let id = req.id;
    let poweroff = matches!(req.step, Step::Poweroff);
    kmsg_marker(id, "begin");
    let t0 = Instant::now();
    let step = req.step;
    let run = std::panic::AssertUnwindSafe(|| steps::run_step(state, id, step));
    let mut a = match std::panic::catch_unwind(run) {
        Ok(a) => a,
        Err(_) => steps::fail(
            Some(id),
            None,
            "the agent panicked running this step".into(),
        ),
    };
    a.duration_us = t0.elapsed().as_micros() as u64;
    kmsg_marker(id, "end");
    (a, poweroff)
}

fn send(port: &mut File, msg: &AgentMsg) -> std::io::Result<()> {
    let mut s = serde_json::to_string(msg).map_err(std::io::Error::other)?;
    s.push('\n');
    port.write_all(s.as_bytes())?;
    port.flush()
}

fn wait_for_hangup(port: &File, max: Duration) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + max;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u16;
        let mut fds = [PollFd::new(port.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(left)) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let ev = fds[0].revents().unwrap_or(PollFlags::empty());
                if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    return;
                }
                match nix::unistd::read(port, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        }
    }
}

fn serve(port_path: &Path, warnings: &[String]) -> std::io::Result<()> {
    let mut port = OpenOptions::new().read(true).write(true).open(port_path)?;
    send(
        &mut port,
        &AgentMsg::Ready {
            kernel_release: kernel_release(),
            uptime_s: uptime(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            warnings: warnings.to_vec(),
        },
    )?;
    console("ready");
    let mut state = steps::State::default();
    let mut reader = BufReader::new(port.try_clone()?);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(()); // host closed the channel
        }
        if line.trim().is_empty() {
            continue;
        }
        let (answer, poweroff) = handle_line(&mut state, line.trim());
        send(&mut port, &AgentMsg::Answer(answer))?;
        if poweroff {
            // Give the answer time to leave: the host hangs up when it has
            // read it (or 2 s pass).
            wait_for_hangup(&port, Duration::from_secs(2));
            nix::unistd::sync();
            let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        }
    }
}

fn main() {
    let mut warnings = Vec::new();
    if std::process::id() == 1 {
        IS_INIT.store(true, std::sync::atomic::Ordering::Relaxed);
        setup(&mut warnings);
    }
    for w in &warnings {
        console(&format!("warning: {w}"));
    }
    loop {
        match find_port() {
            Some(p) => {
                if let Err(e) = serve(&p, &warnings) {
                    console(&format!("channel error: {e}"));
                }
            }
            None => console(&format!("no virtio port named {PORT_NAME}")),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(line: &str) -> (Answer, bool) {
        handle_line(&mut steps::State::default(), line)
    }

    #[test]
    fn malformed_requests_get_error_answers() {
        for bad in [
            "",
            "{",
            "[1,2]",
            r#"{"id":1,"step":"frobnicate"}"#,
            r#"{"id":1,"step":"read"}"#,
            "\u{0}\u{1}",
        ] {
            let (a, poweroff) = h(bad);
            assert!(!a.ok, "{bad}");
            assert_eq!(a.id, None);
            assert!(a.error.unwrap().starts_with("malformed request"));
            assert!(!poweroff);
        }
    }

    #[test]
    fn steps_report_errno() {
        let (a, _) = h(r#"{"id":7,"step":"read","path":"/nonexistent/x"}"#);
        assert_eq!(a.id, Some(7));
        assert!(!a.ok);
        assert_eq!(a.errno, Some(2));
        assert_eq!(a.errno_name.as_deref(), Some("ENOENT"));

        let (a, _) =
            h(r#"{"id":8,"step":"exec","argv":["/bin/sh","-c","echo out; echo err >&2; exit 3"]}"#);
        assert_eq!(a.exit_code, Some(3));
        assert!(!a.ok);
        assert!(
            a.output.contains("out") && a.output.contains("err"),
            "{}",
            a.output
        );

        let (a, _) = h(r#"{"id":9,"step":"exec","argv":["/nonexistent-program"]}"#);
        assert_eq!(a.errno_name.as_deref(), Some("ENOENT"));

        let (a, _) = h(r#"{"id":10,"step":"exec","argv":[]}"#);
        assert!(!a.ok);

        let d = std::env::temp_dir().join(format!("agent-test-{}", std::process::id()));
        let p = d.to_str().unwrap();
        let (a, _) = h(&format!(
            r#"{{"id":11,"step":"write","path":"{p}","data":"hi","create":true}}"#
        ));
        assert!(a.ok, "{a:?}");
        let (a, _) = h(&format!(r#"{{"id":12,"step":"read","path":"{p}"}}"#));
        assert_eq!(a.output, "hi");
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn every_steps_output_keeps_its_head_and_tail_within_the_cap() {
        // The host keeps 64 KiB of a step's output; the agent sends less.
        let cap = coexist_proto::STEP_OUTPUT_MAX;
        let (a, _) = h(
            r#"{"id":13,"step":"exec","argv":["/bin/sh","-c","echo first; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo last"]}"#,
        );
        assert!(a.ok, "{:?}", a.error);
        assert!(a.output.len() <= cap, "{}", a.output.len());
        assert!(a.output.starts_with("first\nxxx"), "{}", &a.output[..20]);
        assert!(
            a.output.ends_with("xxx\nlast\n"),
            "{}",
            &a.output[a.output.len() - 20..]
        );
        assert!(a.output.contains("bytes of output cut here"));
        // A file read is cut the same way.
        let d = std::env::temp_dir().join(format!("agent-big-{}", std::process::id()));
        std::fs::write(&d, format!("top\n{}\nbottom\n", "y".repeat(500_000))).unwrap();
        let (a, _) = h(&format!(
            r#"{{"id":14,"step":"read","path":"{}"}}"#,
            d.display()
        ));
        std::fs::remove_file(&d).unwrap();
        assert!(a.output.len() <= cap, "{}", a.output.len());
        assert!(a.output.starts_with("top\ny") && a.output.ends_with("y\nbottom\n"));
    }

    #[test]
    fn preload_warns_for_each_module_it_cannot_load_and_goes_on() {
        let d = std::env::temp_dir().join(format!("agent-preload-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let mut w = Vec::new();
        // No list (a kernel built here): nothing to do, nothing to say.
        preload_modules(&d.join("none"), "6.1.0-x", &mut w);
        assert!(w.is_empty(), "{w:?}");
        let list = d.join("preload");
        std::fs::write(
            &list,
            "kernel/a/missing-one.ko\n\nkernel/b/missing-two.ko\n",
        )
        .unwrap();
        preload_modules(&list, "6.1.0-x", &mut w);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("loading module /lib/modules/6.1.0-x/kernel/a/missing-one.ko: ")
                && w[1].contains("missing-two.ko"),
            "{w:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn poweroff_is_flagged() {
        let (a, poweroff) = h(r#"{"id":1,"step":"poweroff"}"#);
        assert!(a.ok && poweroff);
    }
}
