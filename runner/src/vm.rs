//! Stage 3: image -> running guest. Launches QEMU (PVH vmlinux + initramfs,
//! no network, no host share), streams the kernel console to a log file and
//! the splat detector, drives the agent over virtio-serial, and enforces the
//! watchdogs: boot deadline, stall deadline, per-step timeout, panic.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use coexist_proto::{AgentMsg, Answer, Request, Step, PORT_NAME};
use serde::{Deserialize, Serialize};

use crate::procs;
use crate::splat::{self, Detector, Splat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

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
}

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
        }
    }

    pub fn kernel_cmdline(&self) -> String {
        match &self.cmdline {
            Some(c) => c.clone(),
            None => {
                let mut c = String::from(
                    "console=ttyS0 panic=-1 printk.devkmsg=on rdinit=/init loglevel=7 \
                     printk.time=1 tsc=unstable no_hash_pointers",
                );
                if !self.append.is_empty() {
                    c.push(' ');
                    c.push_str(&self.append);
                }
                c
            }
        }
    }
}

/// How a VM ended badly. ERROR in reports, never FAIL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// QEMU could not start, or exited before the guest booted.
    QemuFailed,
    /// No kernel output under KVM within the banner deadline.
    KvmNoProgress,
    /// The guest did not become READY (boot deadline, or it died booting).
    BootFailed,
    /// The kernel panicked (the VM ends at once: panic=-1, -no-reboot).
    Panic,
    /// No console output and no agent message for the stall deadline.
    Stall,
    /// A step did not answer within its timeout.
    StepTimeout,
    /// QEMU exited while a step was running, without a panic.
    Died,
    /// The agent answered something that is not the protocol.
    Protocol,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmFailure {
    pub kind: FailureKind,
    pub message: String,
    /// The step running when it happened.
    pub step: Option<u64>,
    pub elapsed_s: f64,
    /// The panic report, for panics.
    pub panic: Option<Box<Splat>>,
    pub last_console: Vec<String>,
    pub console_log: PathBuf,
    /// QEMU's pid (and process group), when it was started.
    pub qemu_pid: Option<u32>,
}

impl fmt::Display for VmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?}: {} (after {:.1}s",
            self.kind, self.message, self.elapsed_s
        )?;
        if let Some(s) = self.step {
            write!(f, ", step {s}")?;
        }
        writeln!(f, "; console log {})", self.console_log.display())?;
        if let Some(p) = &self.panic {
            writeln!(f, "panic report:")?;
            for l in &p.text {
                writeln!(f, "  {l}")?;
            }
        } else if !self.last_console.is_empty() {
            writeln!(f, "last console lines:")?;
            for l in &self.last_console {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for VmFailure {}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub kernel_release: String,
    /// Guest uptime when the agent announced itself.
    pub guest_uptime_s: f64,
    /// From QEMU start to READY on the host.
    pub boot_s: f64,
    pub accel: Accel,
    pub warnings: Vec<String>,
}

/// One step's result, with the splats the console attributed to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepOutcome {
    pub id: u64,
    pub step: Step,
    pub answer: Answer,
    pub splats: Vec<Splat>,
    pub host_s: f64,
}

enum Msg {
    Console(String),
    ConsoleEof,
    Agent(String),
    AgentEof,
}

const TAIL: usize = 40;

pub struct Vm {
    cfg: VmConfig,
    console: std::io::LineWriter<std::fs::File>,
    child: Child,
    pgid: i32,
    rx: Receiver<Msg>,
    agent: UnixStream,
    detector: Detector,
    tail: VecDeque<String>,
    next_id: u64,
    started: Instant,
    last_activity: Instant,
    console_eof: bool,
    /// Splats outside any step (boot, between steps).
    pub unattributed: Vec<Splat>,
    /// Splats of a step not yet handed out.
    pending: Vec<Splat>,
    pub ready: Option<ReadyInfo>,
    run_dir: PathBuf,
    qemu_stderr: std::sync::Arc<std::sync::Mutex<String>>,
    saw_banner: bool,
    /// A `Kernel panic` line went by on the console.
    saw_panic: bool,
}

fn spawn_lines<R: Read + Send + 'static>(r: R, tx: Sender<Msg>, wrap: fn(String) -> Msg, eof: Msg) {
    std::thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match br.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send(wrap(l)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(eof);
    });
}

/// Kills a QEMU that never became a [`Vm`], and removes its run dir.
fn abandon(child: &mut Child, pgid: i32, run_dir: &Path) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
    procs::unregister_group(pgid);
    let _ = std::fs::remove_dir_all(run_dir);
    procs::unregister_dir(&run_dir.to_path_buf());
}

impl Vm {
    /// Starts QEMU and waits until the agent is READY.
    pub fn boot(cfg: VmConfig) -> Result<Vm, VmFailure> {
        procs::install_handlers();
        let started = Instant::now();
        let early = |kind, message: String| VmFailure {
            kind,
            message,
            step: None,
            elapsed_s: started.elapsed().as_secs_f64(),
            panic: None,
            last_console: Vec::new(),
            console_log: cfg.console_log.clone(),
            qemu_pid: None,
        };
        let detector = Detector::new(&cfg.allow)
            .map_err(|e| early(FailureKind::QemuFailed, format!("bad splat allowlist: {e}")))?;
        let run_dir = tempfile::Builder::new()
            .prefix("coexist-vm-")
            .tempdir()
            .map_err(|e| {
                early(
                    FailureKind::QemuFailed,
                    format!("cannot create a run dir: {e}"),
                )
            })?
            .keep();
        procs::register_dir(run_dir.clone());
        let sock = run_dir.join("agent.sock");
        let listener = UnixListener::bind(&sock).map_err(|e| {
            early(
                FailureKind::QemuFailed,
                format!("cannot listen on {}: {e}", sock.display()),
            )
        })?;
        if let Some(p) = cfg.console_log.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", "coexist"])
            .args(["-accel", &cfg.accel.to_string()])
            .args(["-m", &cfg.memory_mb.to_string()])
            .args(["-smp", &cfg.cpus.to_string()])
            .args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-serial", "stdio", "-monitor", "none", "-nic", "none"])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&cfg.initrd)
            .args(["-append", &cfg.kernel_cmdline()])
            .args(["-device", "virtio-serial-pci,id=vser"])
            .arg("-chardev")
            .arg(format!("socket,id=agent,path={}", sock.display()))
            .args([
                "-device",
                &format!("virtserialport,bus=vser.0,chardev=agent,name={PORT_NAME}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        procs::isolate(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            early(
                FailureKind::QemuFailed,
                format!("cannot start qemu-system-x86_64 ({e}); install the Debian package qemu-system-x86"),
            )
        })?;
        let pgid = child.id() as i32;
        procs::register_group(pgid);
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_lines(
            child.stdout.take().unwrap(),
            tx.clone(),
            Msg::Console,
            Msg::ConsoleEof,
        );
        let qemu_stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let buf = qemu_stderr.clone();
            let mut err = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                buf.lock().unwrap().push_str(&s);
            });
        }
        // QEMU connects to us at start-up.
        listener.set_nonblocking(true).ok();
        let agent = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(st)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(50));
                        let err = qemu_stderr.lock().unwrap().clone();
                        abandon(&mut child, pgid, &run_dir);
                        return Err(early(
                            FailureKind::QemuFailed,
                            format!(
                                "QEMU exited ({st}) before connecting the agent channel: {}",
                                err.trim()
                            ),
                        ));
                    }
                    if started.elapsed() > Duration::from_secs(20) {
                        abandon(&mut child, pgid, &run_dir);
                        return Err(early(
                            FailureKind::QemuFailed,
                            "QEMU did not connect the agent channel within 20 s".into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    abandon(&mut child, pgid, &run_dir);
                    return Err(early(FailureKind::QemuFailed, format!("accept: {e}")));
                }
            }
        };
        agent.set_nonblocking(false).ok();
        // A blocking line reader: answers arrive as soon as they are written
        // (rexpect's reader polls every 100 ms, which cost 0.1 s per step).
        match agent.try_clone() {
            Ok(r) => spawn_lines(r, tx, Msg::Agent, Msg::AgentEof),
            Err(e) => {
                abandon(&mut child, pgid, &run_dir);
                return Err(early(
                    FailureKind::QemuFailed,
                    format!("agent channel: {e}"),
                ));
            }
        }
        // The console log, written a line at a time (nothing is lost if
        // the runner is killed).
        let console = match std::fs::File::create(&cfg.console_log) {
            Ok(f) => std::io::LineWriter::new(f),
            Err(e) => {
                abandon(&mut child, pgid, &run_dir);
                let msg = format!("cannot write {}: {e}", cfg.console_log.display());
                return Err(early(FailureKind::QemuFailed, msg));
            }
        };
        let mut vm = Vm {
            cfg,
            console,
            child,
            pgid,
            rx,
            agent,
            detector,
            tail: VecDeque::new(),
            next_id: 1,
            started,
            last_activity: Instant::now(),
            console_eof: false,
            unattributed: Vec::new(),
            pending: Vec::new(),
            ready: None,
            run_dir,
            qemu_stderr,
            saw_banner: false,
            saw_panic: false,
        };
        vm.wait_ready()?;
        Ok(vm)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn console_log(&self) -> &Path {
        &self.cfg.console_log
    }

    fn failure(
        &mut self,
        kind: FailureKind,
        message: String,
        step: Option<u64>,
        panic: Option<Box<Splat>>,
    ) -> VmFailure {
        VmFailure {
            kind,
            message,
            step,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            panic,
            last_console: self.tail.iter().cloned().collect(),
            console_log: self.cfg.console_log.clone(),
            qemu_pid: Some(self.child.id()),
        }
    }

    fn log_console(&mut self, line: &str) {
        let _ = writeln!(self.console, "{line}");
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_string());
        if line.contains("Linux version") {
            self.saw_banner = true;
        }
        if splat::trigger(splat::message(line)) == Some("panic") {
            self.saw_panic = true;
        }
        self.detector.feed(line);
        for s in self.detector.take() {
            match s.step {
                None => self.unattributed.push(s),
                Some(_) => self.pending.push(s),
            }
        }
    }

    /// QEMU is going away: takes in what is still queued, up to the end of
    /// the console (the agent socket may close before the last console
    /// lines are read). Returns the agent lines that were still queued.
    fn drain_to_console_eof(&mut self, max: Duration) -> Vec<String> {
        let deadline = Instant::now() + max;
        let mut agent = Vec::new();
        while !self.console_eof && Instant::now() < deadline {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Console(l)) => self.log_console(&l),
                Ok(Msg::ConsoleEof) => self.console_eof = true,
                Ok(Msg::Agent(l)) => agent.push(l),
                Ok(Msg::AgentEof) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        agent
    }

    /// After a panic line: gathers the rest of the report until QEMU exits
    /// (it does at once: panic=-1 with -no-reboot), then builds the failure.
    fn panic_failure(&mut self, step: Option<u64>) -> VmFailure {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.console_eof && Instant::now() < deadline {
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Console(l)) => self.log_console(&l),
                Ok(Msg::ConsoleEof) => self.console_eof = true,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.detector.finish();
        let mut all: Vec<Splat> = self.detector.take();
        all.append(&mut self.pending);
        all.append(&mut self.unattributed.clone());
        let panic = all
            .iter()
            .rev()
            .find(|s| s.kind == "panic" || s.text.iter().any(|l| l.contains("Kernel panic")))
            .cloned()
            .map(Box::new);
        let title = panic
            .as_ref()
            .and_then(|p| {
                p.text
                    .iter()
                    .find(|l| l.contains("Kernel panic"))
                    .map(|l| splat::message(l).trim().to_string())
            })
            .unwrap_or_else(|| "Kernel panic".into());
        self.kill();
        self.failure(FailureKind::Panic, title, step, panic)
    }

    /// A panic before READY is a boot failure, with the panic report.
    fn boot_panic_failure(&mut self) -> VmFailure {
        let mut f = self.panic_failure(None);
        f.kind = FailureKind::BootFailed;
        f.message = format!("kernel panic while booting: {}", f.message);
        f
    }

    fn wait_ready(&mut self) -> Result<(), VmFailure> {
        let deadline = self.started + self.cfg.boot_timeout;
        loop {
            let now = Instant::now();
            if let Some(b) = self.cfg.banner_timeout {
                if !self.saw_banner && now >= self.started + b {
                    self.kill();
                    let msg = format!("no kernel output {:.1} s after QEMU start", b.as_secs_f64());
                    return Err(self.failure(FailureKind::KvmNoProgress, msg, None, None));
                }
            }
            if now >= deadline {
                self.kill();
                let msg = format!(
                    "the agent was not READY within {:.0} s",
                    self.cfg.boot_timeout.as_secs_f64()
                );
                return Err(self.failure(FailureKind::BootFailed, msg, None, None));
            }
            let wait = (deadline - now).min(Duration::from_millis(250));
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Console(l)) => {
                    self.log_console(&l);
                    if self.saw_panic {
                        return Err(self.boot_panic_failure());
                    }
                }
                Ok(Msg::Agent(l)) => match serde_json::from_str::<AgentMsg>(&l) {
                    Ok(AgentMsg::Ready {
                        kernel_release,
                        uptime_s,
                        warnings,
                        ..
                    }) => {
                        self.ready = Some(ReadyInfo {
                            kernel_release,
                            guest_uptime_s: uptime_s,
                            boot_s: self.started.elapsed().as_secs_f64(),
                            accel: self.cfg.accel,
                            warnings,
                        });
                        self.last_activity = Instant::now();
                        return Ok(());
                    }
                    _ => {
                        let msg = format!("expected READY from the agent, got: {l}");
                        return Err(self.failure(FailureKind::Protocol, msg, None, None));
                    }
                },
                Ok(m @ (Msg::ConsoleEof | Msg::AgentEof)) => {
                    self.console_eof |= matches!(m, Msg::ConsoleEof);
                    self.drain_to_console_eof(Duration::from_secs(3));
                    if self.saw_panic {
                        return Err(self.boot_panic_failure());
                    }
                    self.kill();
                    std::thread::sleep(Duration::from_millis(50));
                    let err = self.qemu_stderr.lock().unwrap().trim().to_string();
                    let (kind, msg) = if self.saw_banner {
                        (
                            FailureKind::BootFailed,
                            "the guest stopped before the agent was READY".to_string(),
                        )
                    } else {
                        (
                            FailureKind::QemuFailed,
                            format!("QEMU exited before the kernel printed anything: {err}"),
                        )
                    };
                    self.kill();
                    return Err(self.failure(kind, msg, None, None));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.kill();
                    return Err(self.failure(
                        FailureKind::Died,
                        "console closed".into(),
                        None,
                        None,
                    ));
                }
            }
        }
    }

    /// Runs one step; `timeout` bounds it on the host (the agent cannot
    /// time out a step stuck in the kernel).
    pub fn run(&mut self, step: Step, timeout: Duration) -> Result<StepOutcome, VmFailure> {
        let id = self.next_id;
        self.next_id += 1;
        let t0 = Instant::now();
        let req = serde_json::to_string(&Request {
            id,
            step: step.clone(),
        })
        .expect("serialisable");
        if let Err(e) = writeln!(self.agent, "{req}") {
            return Err(self.failure(
                FailureKind::Died,
                format!("cannot send step: {e}"),
                Some(id),
                None,
            ));
        }
        self.last_activity = Instant::now();
        let deadline = t0 + timeout;
        let mut answer: Option<Answer> = None;
        let mut end_marker_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(a) = &answer {
                let end_seen = self.detector.current_step() != Some(id);
                if end_seen || end_marker_deadline.is_some_and(|d| now >= d) {
                    let mut splats: Vec<Splat> = Vec::new();
                    self.pending.retain(|s| {
                        if s.step == Some(id) {
                            splats.push(s.clone());
                            false
                        } else {
                            true
                        }
                    });
                    return Ok(StepOutcome {
                        id,
                        step,
                        answer: a.clone(),
                        splats,
                        host_s: t0.elapsed().as_secs_f64(),
                    });
                }
            }
            if answer.is_none() && now >= deadline {
                let msg = format!(
                    "step {} ({}) did not answer within {:.1} s",
                    id,
                    step.kind(),
                    timeout.as_secs_f64()
                );
                self.kill();
                return Err(self.failure(FailureKind::StepTimeout, msg, Some(id), None));
            }
            if now >= self.last_activity + self.cfg.stall_timeout {
                let msg = format!(
                    "no console output and no agent message for {:.0} s",
                    self.cfg.stall_timeout.as_secs_f64()
                );
                self.kill();
                return Err(self.failure(FailureKind::Stall, msg, Some(id), None));
            }
            let mut wait = Duration::from_millis(200);
            if answer.is_none() {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Console(l)) => {
                    self.last_activity = Instant::now();
                    self.log_console(&l);
                    if self.saw_panic {
                        return Err(self.panic_failure(Some(id)));
                    }
                }
                Ok(Msg::Agent(l)) => {
                    self.last_activity = Instant::now();
                    match serde_json::from_str::<AgentMsg>(&l) {
                        Ok(AgentMsg::Answer(a)) if a.id == Some(id) => {
                            if matches!(step, Step::Poweroff) {
                                // Tell the agent its answer arrived.
                                let _ = self.agent.shutdown(std::net::Shutdown::Write);
                            }
                            answer = Some(a);
                            end_marker_deadline = Some(Instant::now() + Duration::from_secs(2));
                        }
                        Ok(AgentMsg::Ready { .. }) => {
                            let msg = "the agent restarted its channel (READY again) during a step"
                                .to_string();
                            return Err(self.failure(FailureKind::Protocol, msg, Some(id), None));
                        }
                        _ => {
                            let msg = format!("unexpected agent message during step {id}: {l}");
                            return Err(self.failure(FailureKind::Protocol, msg, Some(id), None));
                        }
                    }
                }
                Ok(m @ (Msg::ConsoleEof | Msg::AgentEof)) => {
                    self.console_eof |= matches!(m, Msg::ConsoleEof);
                    let queued = self.drain_to_console_eof(Duration::from_secs(3));
                    if answer.is_none() {
                        answer = queued
                            .iter()
                            .filter_map(|l| match serde_json::from_str::<AgentMsg>(l) {
                                Ok(AgentMsg::Answer(a)) if a.id == Some(id) => Some(a),
                                _ => None,
                            })
                            .next();
                    }
                    if matches!(step, Step::Poweroff) {
                        if let Some(a) = answer {
                            return Ok(StepOutcome {
                                id,
                                step,
                                answer: a,
                                splats: std::mem::take(&mut self.pending),
                                host_s: t0.elapsed().as_secs_f64(),
                            });
                        }
                    }
                    if self.saw_panic {
                        return Err(self.panic_failure(Some(id)));
                    }
                    self.kill();
                    let msg = "QEMU exited while the step was running".to_string();
                    return Err(self.failure(FailureKind::Died, msg, Some(id), None));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.kill();
                    return Err(self.failure(
                        FailureKind::Died,
                        "channels closed".into(),
                        Some(id),
                        None,
                    ));
                }
            }
        }
    }

    /// Asks the guest to power off and waits for QEMU to exit (kills it
    /// after 10 s).
    pub fn shutdown(mut self) -> Result<(), VmFailure> {
        let r = self.run(Step::Poweroff, Duration::from_secs(10));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        r.map(|_| ())
    }

    /// Kills QEMU's process group and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        procs::unregister_group(self.pgid);
        let _ = std::fs::remove_dir_all(&self.run_dir);
        procs::unregister_dir(&self.run_dir);
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
