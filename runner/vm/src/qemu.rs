//! The QEMU command line and the QEMU process.
//!
//! [`argv`] builds the whole command line from a [`VmConfig`] with small
//! pure helpers (unit-tested below). [`QemuProcess`] starts it in its own
//! process group, accepts the agent channel, and kills the group and
//! removes its run directory on [`Drop`], on every path.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coexist_proto::PORT_NAME;

use super::accel::Accel;
use coexist_core::teardown;
use coexist_core::text::clip;

/// Everything that decides how a guest is started and watched.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// PVH-bootable vmlinux (or a bzImage).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// Appended to the default command line.
    pub append: String,
    /// Replaces the whole kernel command line (fault tests).
    pub cmdline: Option<String>,
    pub console_log: PathBuf,
    pub boot_timeout: Duration,
    /// No console output and no agent message for this long ends the VM.
    pub stall_timeout: Duration,
    /// With KVM probing: no kernel banner within this long means KVM does
    /// not work here.
    pub banner_timeout: Option<Duration>,
    /// Regexes of splat titles to set aside.
    pub allow: Vec<String>,
    /// A QMP socket in the run dir (to save a snapshot).
    pub qmp: bool,
    /// Restore this saved state instead of booting (`-incoming`).
    pub incoming: Option<PathBuf>,
    /// Where `--accel auto`'s verdict is remembered across commands (the
    /// cache's `accel/`); None: in this process only.
    pub accel_memory: Option<PathBuf>,
}

/// The kernel command line every guest gets unless replaced.
pub const BASE_CMDLINE: &str = "console=ttyS0 panic=-1 printk.devkmsg=on rdinit=/init loglevel=7 \
     printk.time=1 tsc=unstable no_hash_pointers";

impl VmConfig {
    pub fn new(kernel: PathBuf, initrd: PathBuf, console_log: PathBuf) -> VmConfig {
        VmConfig {
            kernel,
            initrd,
            memory_mb: 512,
            cpus: 2,
            accel: Accel::Tcg,
            append: String::new(),
            cmdline: None,
            console_log,
            boot_timeout: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(60),
            banner_timeout: None,
            allow: Vec::new(),
            qmp: false,
            incoming: None,
            accel_memory: None,
        }
    }

    pub fn kernel_cmdline(&self) -> String {
        match &self.cmdline {
            Some(c) => c.clone(),
            None if self.append.is_empty() => BASE_CMDLINE.to_string(),
            None => format!("{BASE_CMDLINE} {}", self.append),
        }
    }
}

/// Machine size and the fixed device model: no network, no default
/// devices, no reboot (a panic or poweroff ends QEMU).
pub fn machine_args(cfg: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = vec!["-name".into(), "coexist".into()];
    a.extend(cfg.accel.qemu_args());
    a.extend(["-m".into(), cfg.memory_mb.to_string()]);
    a.extend(["-smp".into(), cfg.cpus.to_string()]);
    for s in [
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-nic",
        "none",
    ] {
        a.push(s.into());
    }
    a
}

/// The kernel, initramfs and command line.
pub fn boot_args(cfg: &VmConfig) -> Vec<String> {
    vec![
        "-kernel".into(),
        cfg.kernel.display().to_string(),
        "-initrd".into(),
        cfg.initrd.display().to_string(),
        "-append".into(),
        cfg.kernel_cmdline(),
    ]
}

/// The agent's virtio-serial port, backed by a unix socket QEMU connects to.
pub fn agent_args(sock: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci,id=vser".into(),
        "-chardev".into(),
        format!("socket,id=agent,path={}", sock.display()),
        "-device".into(),
        format!("virtserialport,bus=vser.0,chardev=agent,name={PORT_NAME}"),
    ]
}

/// Quotes a path for the shell QEMU runs `exec:` migration commands with.
pub fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A QMP monitor on a unix socket QEMU listens on.
pub fn qmp_args(sock: &Path) -> Vec<String> {
    vec![
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", sock.display()),
    ]
}

/// Restore saved state: QEMU reads it at start and runs the guest from
/// where it was saved.
pub fn incoming_args(state: &Path) -> Vec<String> {
    vec![
        "-incoming".into(),
        format!("exec:cat {}", shell_quote(state)),
    ]
}

/// Where `migrate` writes the state.
pub fn migrate_uri(state: &Path) -> String {
    format!("exec:cat > {}", shell_quote(state))
}

/// The whole argument list after `qemu-system-x86_64`. A restore has the
/// same machine, kernel and devices as the boot it was saved from.
pub fn argv(cfg: &VmConfig, agent_sock: &Path, qmp_sock: &Path) -> Vec<String> {
    let mut a = machine_args(cfg);
    a.extend(boot_args(cfg));
    a.extend(agent_args(agent_sock));
    if cfg.qmp {
        a.extend(qmp_args(qmp_sock));
    }
    if let Some(state) = &cfg.incoming {
        a.extend(incoming_args(state));
    }
    a
}

pub const QEMU: &str = "qemu-system-x86_64";

/// A run dir's name starts with this (in the temp dir).
pub const RUN_DIR_PREFIX: &str = "coexist-vm-";

/// The file in a run dir that names its owner: `<pid> <start time>\n`,
/// the runner's pid and its start time (clock ticks after boot, field 22
/// of `/proc/<pid>/stat`), so that another process given the same pid
/// later does not pass for the owner.
pub const OWNER_FILE: &str = "owner";

/// A process's start time (clock ticks after boot); None when there is no
/// such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces): fields 3 onwards.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Whether the owner an owner file names is gone (no such process, or
/// another one with its pid); None when the file names no owner.
fn owner_gone(owner: &str) -> Option<bool> {
    let mut it = owner.split_whitespace();
    let pid: u32 = it.next()?.parse().ok()?;
    let start: u64 = it.next()?.parse().ok()?;
    Some(start_time(pid) != Some(start))
}

/// Removes the run dirs in `tmp` whose owner is gone: those of a runner
/// that was killed with SIGKILL, which removed nothing. A dir that names
/// no owner (one being made, or an older runner's), another user's, and
/// anything that is not a directory are left. Returns the dirs removed.
pub fn remove_stale_run_dirs(tmp: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(RUN_DIR_PREFIX) {
            continue;
        }
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !md.is_dir() || md.uid() != uid {
            continue;
        }
        let Ok(owner) = std::fs::read_to_string(p.join(OWNER_FILE)) else {
            continue;
        };
        if owner_gone(&owner) == Some(true) && std::fs::remove_dir_all(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// This process, as an owner file names it.
fn owner_line() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", start_time(pid).unwrap_or(0))
}

/// Makes this run's dir in the temp dir, with its owner recorded (this
/// process). The first call in a process first removes the run dirs of
/// runners that are gone.
fn make_run_dir() -> Result<PathBuf, String> {
    static STALE_REMOVED: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    STALE_REMOVED.call_once(|| {
        remove_stale_run_dirs(&tmp);
    });
    let dir = tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .tempdir_in(&tmp)
        .map_err(|e| format!("cannot create a run dir: {e}"))?
        .keep();
    if let Err(e) = std::fs::write(dir.join(OWNER_FILE), owner_line()) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(format!(
            "cannot write {}: {e}",
            dir.join(OWNER_FILE).display()
        ));
    }
    Ok(dir)
}

/// A started QEMU: its process group, its run dir (the agent socket), and
/// what it wrote on stderr. Dropping it kills the group and removes the
/// run dir.
pub struct QemuProcess {
    child: Child,
    pgid: i32,
    run_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

/// What [`QemuProcess::start`] hands over besides the process.
pub struct Started {
    pub qemu: QemuProcess,
    /// The serial console (QEMU's stdout).
    pub console: ChildStdout,
    /// The agent channel, connected.
    pub agent: UnixStream,
}

impl QemuProcess {
    /// Starts QEMU and waits (up to 20 s) for it to connect the agent
    /// socket. Errors are for people; nothing is left running.
    pub fn start(cfg: &VmConfig) -> Result<Started, String> {
        teardown::install_handlers();
        if teardown::stopping() {
            return Err("not started: the run is stopping".into());
        }
        let started = Instant::now();
        let run_dir = make_run_dir()?;
        teardown::register_dir(run_dir.clone());
        let sock = run_dir.join("agent.sock");
        let listener = match UnixListener::bind(&sock) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                teardown::unregister_dir(&run_dir);
                return Err(format!("cannot listen on {}: {e}", sock.display()));
            }
        };
        let mut cmd = Command::new(QEMU);
        cmd.args(argv(cfg, &sock, &run_dir.join("qmp.sock")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        teardown::isolate(&mut cmd);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                teardown::unregister_dir(&run_dir);
                return Err(format!(
                    "cannot start {QEMU} ({e}); install the Debian package qemu-system-x86"
                ));
            }
        };
        let pgid = child.id() as i32;
        teardown::register_group(pgid);
        let console = child.stdout.take().expect("piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let buf = stderr.clone();
            let mut err = child.stderr.take().expect("piped");
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                buf.lock().unwrap_or_else(|e| e.into_inner()).push_str(&s);
            });
        }
        // From here on, dropping `qemu` cleans up.
        let mut qemu = QemuProcess {
            child,
            pgid,
            run_dir,
            stderr,
        };
        listener.set_nonblocking(true).ok();
        let agent = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(st)) = qemu.child.try_wait() {
                        std::thread::sleep(Duration::from_millis(50));
                        return Err(format!(
                            "QEMU exited ({st}) before connecting the agent channel: {}",
                            qemu.stderr_text()
                        ));
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        return Err("QEMU did not connect the agent channel within 20 s".into());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        agent.set_nonblocking(false).ok();
        Ok(Started {
            qemu,
            console,
            agent,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The QMP socket (with [`VmConfig::qmp`]).
    pub fn qmp_socket(&self) -> PathBuf {
        self.run_dir.join("qmp.sock")
    }

    /// Whether QEMU has exited (and reaps it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What QEMU wrote on stderr so far, trimmed, and clipped for a
    /// message (its head and tail).
    pub fn stderr_text(&self) -> String {
        clip(
            self.stderr.lock().unwrap_or_else(|e| e.into_inner()).trim(),
            2048,
        )
    }

    /// Kills the process group, reaps QEMU and removes the run dir. Idempotent.
    pub fn kill(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        teardown::unregister_group(self.pgid);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        teardown::unregister_dir(&self.run_dir);
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dirs_whose_owner_is_gone_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = |name: &str, owner: Option<String>| {
            let d = tmp.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(o) = owner {
                std::fs::write(d.join(OWNER_FILE), o).unwrap();
            }
            d
        };
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        gone.wait().unwrap();
        let me = std::process::id();
        let my_start = start_time(me).unwrap();
        let dead = dir("coexist-vm-dead", Some(format!("{} 5\n", gone.id())));
        // The pid is alive, but it is another process than the owner.
        let reused = dir(
            "coexist-vm-reused",
            Some(format!("{me} {}\n", my_start + 1)),
        );
        let live = dir("coexist-vm-live", Some(format!("{me} {my_start}\n")));
        let unknown = dir("coexist-vm-unknown", None);
        let garbled = dir("coexist-vm-garbled", Some("who knows".into()));
        let other = dir("not-a-run-dir", Some(format!("{} 5\n", gone.id())));
        std::os::unix::fs::symlink(&dead, tmp.path().join("coexist-vm-link")).unwrap();
        let mut removed = remove_stale_run_dirs(tmp.path());
        removed.sort();
        assert_eq!(removed, vec![dead.clone(), reused.clone()]);
        assert!(!dead.exists() && !reused.exists());
        for kept in [live, unknown, garbled, other] {
            assert!(kept.is_dir(), "{}", kept.display());
        }
        // The dirs this process makes name it, and are not stale.
        assert_eq!(owner_line(), format!("{me} {my_start}\n"));
        assert_eq!(owner_gone(&owner_line()), Some(false));
    }

    fn cfg() -> VmConfig {
        VmConfig::new(
            "/k/vmlinux".into(),
            "/k/initrd.gz".into(),
            "/l/console.log".into(),
        )
    }

    fn value_after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn argv_has_the_machine_the_kernel_and_the_agent_port() {
        let mut c = cfg();
        c.memory_mb = 768;
        c.cpus = 3;
        let a = argv(
            &c,
            Path::new("/run/x/agent.sock"),
            Path::new("/run/x/qmp.sock"),
        );
        assert!(!a.iter().any(|x| x == "-qmp" || x == "-incoming"), "{a:?}");
        assert_eq!(value_after(&a, "-accel"), ["tcg,thread=single"]);
        assert_eq!(value_after(&a, "-m"), ["768"]);
        assert_eq!(value_after(&a, "-smp"), ["3"]);
        assert_eq!(value_after(&a, "-kernel"), ["/k/vmlinux"]);
        assert_eq!(value_after(&a, "-initrd"), ["/k/initrd.gz"]);
        assert_eq!(value_after(&a, "-append"), [BASE_CMDLINE]);
        assert_eq!(value_after(&a, "-nic"), ["none"]);
        assert_eq!(
            value_after(&a, "-chardev"),
            ["socket,id=agent,path=/run/x/agent.sock"]
        );
        assert!(value_after(&a, "-device")
            .contains(&"virtserialport,bus=vser.0,chardev=agent,name=coexist.agent"));
        for flag in ["-no-reboot", "-nodefaults", "-nographic", "-no-user-config"] {
            assert!(a.iter().any(|x| x == flag), "{flag} missing: {a:?}");
        }
        // The serial console is QEMU's stdout: the runner reads it there.
        assert_eq!(value_after(&a, "-serial"), ["stdio"]);
    }

    #[test]
    fn accelerator_arguments_come_from_the_accelerator() {
        let mut c = cfg();
        c.accel = Accel::Kvm;
        let a = argv(&c, Path::new("/s"), Path::new("/q"));
        assert_eq!(value_after(&a, "-accel"), ["kvm"]);
        assert_eq!(
            a.iter().filter(|x| *x == "-accel").count(),
            1,
            "one accelerator: {a:?}"
        );
    }

    #[test]
    fn command_line_append_and_replace() {
        let mut c = cfg();
        assert_eq!(c.kernel_cmdline(), BASE_CMDLINE);
        c.append = "lockdep.prove=1".into();
        assert_eq!(
            c.kernel_cmdline(),
            format!("{BASE_CMDLINE} lockdep.prove=1")
        );
        assert!(c.kernel_cmdline().contains("panic=-1"));
        c.cmdline = Some("console=ttyS0 init=/nonexistent".into());
        assert_eq!(c.kernel_cmdline(), "console=ttyS0 init=/nonexistent");
        let a = argv(&c, Path::new("/s"), Path::new("/q"));
        assert_eq!(
            value_after(&a, "-append"),
            ["console=ttyS0 init=/nonexistent"]
        );
    }

    #[test]
    fn a_restore_is_the_same_machine_plus_incoming_and_qmp() {
        let mut c = cfg();
        let boot = argv(&c, Path::new("/s"), Path::new("/q"));
        c.qmp = true;
        c.incoming = Some("/cache/snapshots/k/it's state".into());
        let a = argv(&c, Path::new("/s"), Path::new("/q"));
        assert_eq!(
            &a[..boot.len()],
            &boot[..],
            "same machine, kernel and devices"
        );
        assert_eq!(value_after(&a, "-qmp"), ["unix:/q,server=on,wait=off"]);
        assert_eq!(
            value_after(&a, "-incoming"),
            ["exec:cat '/cache/snapshots/k/it'\\''s state'"]
        );
        assert_eq!(migrate_uri(Path::new("/x/state")), "exec:cat > '/x/state'");
    }
}
