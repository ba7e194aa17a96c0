//! A running guest: the QEMU process, its console, the agent channel and
//! the watchdogs (boot deadline, stall deadline, per-step timeout, panic).
//! A [`Vm`] exists only once the agent said READY.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use coexist_proto::{AgentMsg, Answer, AnswerData, HelloData, Request, Step};
use serde::{Deserialize, Serialize};

use super::console::Console;
use super::qemu::{migrate_uri, QemuProcess, Started, VmConfig};
use super::qmp::Qmp;
use super::{Accel, FailureKind, Splat, VmFailure};

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

/// The longest console line kept; the rest of the line is dropped.
pub const MAX_CONSOLE_LINE: usize = 16 * 1024;
/// The longest agent line read (an answer with its output).
pub const MAX_AGENT_LINE: usize = 1024 * 1024;
/// The most of a step's output kept in its outcome.
pub const MAX_OUTPUT: usize = 64 * 1024;

/// Reads one line of at most `max` bytes into `buf` (without the newline)
/// and skips the rest of it. Ok(None) at the end of the stream; the bool
/// says whether the line was cut, the usize how long it was.
pub fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<(usize, bool)>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some((total, total > max)));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = max.saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        total += part.len();
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() {
            return Ok(Some((total, total > max)));
        }
    }
}

fn spawn_lines<R: Read + Send + 'static>(
    r: R,
    tx: Sender<Msg>,
    max: usize,
    wrap: fn(String) -> Msg,
    eof: Msg,
) {
    std::thread::spawn(move || {
        let mut br = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(Some((len, cut))) = read_line_capped(&mut br, &mut buf, max) {
            let mut l = String::from_utf8_lossy(&buf)
                .trim_end_matches('\r')
                .to_string();
            if cut {
                l.push_str(&format!(" [coexist: line truncated, {len} bytes]"));
            }
            if tx.send(wrap(l)).is_err() {
                return;
            }
        }
        let _ = tx.send(eof);
    });
}

/// Cuts a step's output to [`MAX_OUTPUT`] bytes, with a marker.
fn cap_output(a: &mut Answer) {
    if a.output.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !a.output.is_char_boundary(cut) {
            cut -= 1;
        }
        let total = a.output.len();
        a.output.truncate(cut);
        a.output
            .push_str(&format!("\n[coexist: output truncated, {total} bytes]"));
    }
}

/// The guest's process, console and agent channel, with the clocks the
/// watchdogs read.
struct Link {
    cfg: VmConfig,
    qemu: QemuProcess,
    console: Console,
    rx: Receiver<Msg>,
    agent: UnixStream,
    started: Instant,
    last_activity: Instant,
}

/// A guest whose agent is READY.
pub struct Vm {
    link: Link,
    pub ready: ReadyInfo,
    next_id: u64,
    restored: bool,
}

impl Link {
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
            last_console: self.console.tail(),
            console_log: self.cfg.console_log.clone(),
            qemu_pid: Some(self.qemu.pid()),
            saw_banner: self.console.saw_banner(),
        }
    }

    /// Kills QEMU and builds the failure.
    fn fail(&mut self, kind: FailureKind, message: String, step: Option<u64>) -> VmFailure {
        self.qemu.kill();
        self.failure(kind, message, step, None)
    }

    /// QEMU is going away: takes in what is still queued, up to the end of
    /// the console (the agent socket may close before the last console
    /// lines are read). Returns the agent lines that were still queued.
    fn drain_to_console_eof(&mut self, max: Duration) -> Vec<String> {
        let deadline = Instant::now() + max;
        let mut agent = Vec::new();
        while !self.console.eof && Instant::now() < deadline {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Msg::Console(l)) => self.console.feed(&l),
                Ok(Msg::ConsoleEof) => self.console.eof = true,
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
        self.drain_to_console_eof(Duration::from_secs(5));
        let (panic, title) = self.console.panic_report();
        self.qemu.kill();
        self.failure(FailureKind::Panic, title, step, panic)
    }

    /// A panic before READY is a boot failure, with the panic report.
    fn boot_panic_failure(&mut self) -> VmFailure {
        let mut f = self.panic_failure(None);
        f.kind = FailureKind::BootFailed;
        f.message = format!("kernel panic while booting: {}", f.message);
        f
    }

    fn wait_ready(&mut self) -> Result<ReadyInfo, VmFailure> {
        let deadline = self.started + self.cfg.boot_timeout;
        loop {
            let now = Instant::now();
            if let Some(b) = self.cfg.banner_timeout {
                if !self.console.saw_banner() && now >= self.started + b {
                    let msg = format!("no kernel output {:.1} s after QEMU start", b.as_secs_f64());
                    return Err(self.fail(FailureKind::KvmNoProgress, msg, None));
                }
            }
            if now >= deadline {
                let msg = format!(
                    "the agent was not READY within {:.0} s",
                    self.cfg.boot_timeout.as_secs_f64()
                );
                return Err(self.fail(FailureKind::BootFailed, msg, None));
            }
            let wait = (deadline - now).min(Duration::from_millis(250));
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Console(l)) => {
                    self.console.feed(&l);
                    if self.console.saw_panic() {
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
                        self.last_activity = Instant::now();
                        return Ok(ReadyInfo {
                            kernel_release,
                            guest_uptime_s: uptime_s,
                            boot_s: self.started.elapsed().as_secs_f64(),
                            accel: self.cfg.accel,
                            warnings,
                        });
                    }
                    _ => {
                        let msg = format!("expected READY from the agent, got: {l}");
                        return Err(self.fail(FailureKind::Protocol, msg, None));
                    }
                },
                Ok(m @ (Msg::ConsoleEof | Msg::AgentEof)) => {
                    self.console.eof |= matches!(m, Msg::ConsoleEof);
                    self.drain_to_console_eof(Duration::from_secs(3));
                    if self.console.saw_panic() {
                        return Err(self.boot_panic_failure());
                    }
                    self.qemu.kill();
                    std::thread::sleep(Duration::from_millis(50));
                    let (kind, msg) = if self.console.saw_banner() {
                        (
                            FailureKind::BootFailed,
                            "the guest stopped before the agent was READY".to_string(),
                        )
                    } else {
                        (
                            FailureKind::QemuFailed,
                            format!(
                                "QEMU exited before the kernel printed anything: {}",
                                self.qemu.stderr_text()
                            ),
                        )
                    };
                    return Err(self.fail(kind, msg, None));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.fail(FailureKind::Died, "console closed".into(), None));
                }
            }
        }
    }
}

/// How long a restored guest may take to answer its hello.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(15);

/// 32 random bytes as hex, for a restored guest's entropy pool.
fn seed() -> String {
    let mut b = [0u8; 32];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Vm {
    /// Starts QEMU and waits until the agent is READY.
    pub fn boot(cfg: VmConfig) -> Result<Vm, VmFailure> {
        Vm::start(cfg, None)
    }

    /// Starts QEMU on a saved state (`cfg.incoming`) and greets the
    /// restored agent: its clock is set, its entropy pool re-seeded, and
    /// its boot id must be `boot_id` (the snapshot's guest). `origin` goes
    /// at the top of the console log.
    pub fn restore(cfg: VmConfig, origin: &str, boot_id: &str) -> Result<Vm, VmFailure> {
        Vm::start(cfg, Some((origin, boot_id)))
    }

    fn start(cfg: VmConfig, restore: Option<(&str, &str)>) -> Result<Vm, VmFailure> {
        let started = Instant::now();
        let early = |message: String| VmFailure {
            kind: FailureKind::QemuFailed,
            message,
            step: None,
            elapsed_s: started.elapsed().as_secs_f64(),
            panic: None,
            last_console: Vec::new(),
            console_log: cfg.console_log.clone(),
            qemu_pid: None,
            saw_banner: false,
        };
        let mut console = Console::create(&cfg.console_log, &cfg.allow).map_err(early)?;
        if let Some((origin, _)) = restore {
            console.mark(&format!("[coexist: restored from {origin}]"));
        }
        let Started {
            qemu,
            console: serial,
            agent,
        } = QemuProcess::start(&cfg).map_err(early)?;
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_lines(
            serial,
            tx.clone(),
            MAX_CONSOLE_LINE,
            Msg::Console,
            Msg::ConsoleEof,
        );
        // A blocking line reader: answers arrive as soon as they are written
        // (rexpect's reader polls every 100 ms, which cost 0.1 s per step).
        let reader = agent
            .try_clone()
            .map_err(|e| early(format!("agent channel: {e}")))?;
        spawn_lines(reader, tx, MAX_AGENT_LINE, Msg::Agent, Msg::AgentEof);
        let mut link = Link {
            cfg,
            qemu,
            console,
            rx,
            agent,
            started,
            last_activity: Instant::now(),
        };
        let Some((_, boot_id)) = restore else {
            let ready = link.wait_ready()?;
            return Ok(Vm {
                link,
                ready,
                next_id: 1,
                restored: false,
            });
        };
        let accel = link.cfg.accel;
        // A restored guest answers at once (a tenth of a second here); one
        // that does not within this is not coming back.
        let timeout = link.cfg.boot_timeout.min(RESTORE_DEADLINE);
        let mut vm = Vm {
            link,
            ready: ReadyInfo {
                kernel_release: String::new(),
                guest_uptime_s: 0.0,
                boot_s: 0.0,
                accel,
                warnings: Vec::new(),
            },
            next_id: 1,
            restored: true,
        };
        let restore_failed = |vm: &mut Vm, message: String| {
            let mut f = vm
                .link
                .failure(FailureKind::RestoreFailed, message, None, None);
            vm.kill();
            f.elapsed_s = started.elapsed().as_secs_f64();
            f
        };
        let h = match vm.hello(timeout) {
            Ok(h) => h,
            Err(f) => {
                let msg = format!("the restored guest did not answer a hello: {}", f.message);
                return Err(restore_failed(&mut vm, msg));
            }
        };
        if h.boot_id != boot_id {
            let msg = format!(
                "the restored guest is not the snapshot's (boot id {}, expected {boot_id})",
                h.boot_id
            );
            return Err(restore_failed(&mut vm, msg));
        }
        vm.ready.kernel_release = h.kernel_release;
        vm.ready.guest_uptime_s = h.uptime_s;
        vm.ready.boot_s = started.elapsed().as_secs_f64();
        Ok(vm)
    }

    /// Greets the agent: sets its clock, seeds its entropy pool, and says
    /// who it is. Splats during it belong to no step of a case.
    pub fn hello(&mut self, timeout: Duration) -> Result<HelloData, VmFailure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let out = self.run(
            Step::Hello {
                now_unix_ns: now,
                seed: seed(),
            },
            timeout,
        )?;
        self.link.console.add_unattributed(out.splats);
        match out.answer.data {
            Some(AnswerData::Hello(h)) if out.answer.ok => Ok(h),
            _ => {
                let msg = format!("hello: {:?}", out.answer);
                Err(self
                    .link
                    .failure(FailureKind::Protocol, msg, Some(out.id), None))
            }
        }
    }

    /// Saves the whole guest (stopped) to `state` through QMP, then ends
    /// QEMU. The config must have asked for QMP.
    pub fn save(mut self, state: &Path) -> Result<(), String> {
        let sock = self.link.qemu.qmp_socket();
        let mut q = Qmp::connect(&sock, Duration::from_secs(5))?;
        q.save(&migrate_uri(state), Duration::from_secs(120))?;
        self.kill();
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.link.qemu.pid()
    }

    /// Whether this guest was restored from a snapshot.
    pub fn restored(&self) -> bool {
        self.restored
    }

    pub fn console_log(&self) -> &Path {
        &self.link.cfg.console_log
    }

    /// Splats outside any step so far (boot, between steps).
    pub fn unattributed(&self) -> &[Splat] {
        self.link.console.unattributed()
    }

    /// Runs one step; `timeout` bounds it on the host (the agent cannot
    /// time out a step stuck in the kernel).
    pub fn run(&mut self, step: Step, timeout: Duration) -> Result<StepOutcome, VmFailure> {
        let id = self.next_id;
        self.next_id += 1;
        let l = &mut self.link;
        let t0 = Instant::now();
        let req = serde_json::to_string(&Request {
            id,
            step: step.clone(),
        })
        .expect("serialisable");
        if let Err(e) = writeln!(l.agent, "{req}") {
            let msg = format!("cannot send step: {e}");
            return Err(l.failure(FailureKind::Died, msg, Some(id), None));
        }
        l.last_activity = Instant::now();
        let deadline = t0 + timeout;
        // A step may run quietly for as long as its timeout allows.
        let stall = l.cfg.stall_timeout.max(timeout);
        let mut answer: Option<Answer> = None;
        let mut end_marker_deadline: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if let Some(a) = &answer {
                let end_seen = l.console.current_step() != Some(id);
                if end_seen || end_marker_deadline.is_some_and(|d| now >= d) {
                    return Ok(StepOutcome {
                        id,
                        step,
                        answer: a.clone(),
                        splats: l.console.take_step_splats(id),
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
                return Err(l.fail(FailureKind::StepTimeout, msg, Some(id)));
            }
            if now >= l.last_activity + stall {
                let msg = format!(
                    "no console output and no agent message for {:.0} s",
                    stall.as_secs_f64()
                );
                return Err(l.fail(FailureKind::Stall, msg, Some(id)));
            }
            let mut wait = Duration::from_millis(200);
            if answer.is_none() {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match l.rx.recv_timeout(wait) {
                Ok(Msg::Console(line)) => {
                    l.last_activity = Instant::now();
                    l.console.feed(&line);
                    if l.console.saw_panic() {
                        return Err(l.panic_failure(Some(id)));
                    }
                }
                Ok(Msg::Agent(line)) => {
                    l.last_activity = Instant::now();
                    match serde_json::from_str::<AgentMsg>(&line) {
                        Ok(AgentMsg::Answer(mut a)) if a.id == Some(id) => {
                            cap_output(&mut a);
                            if matches!(step, Step::Poweroff) {
                                // Tell the agent its answer arrived.
                                let _ = l.agent.shutdown(std::net::Shutdown::Write);
                            }
                            answer = Some(a);
                            end_marker_deadline = Some(Instant::now() + Duration::from_secs(2));
                        }
                        Ok(AgentMsg::Ready { .. }) => {
                            let msg = "the agent restarted its channel (READY again) during a step"
                                .to_string();
                            return Err(l.failure(FailureKind::Protocol, msg, Some(id), None));
                        }
                        _ => {
                            let msg = format!("unexpected agent message during step {id}: {line}");
                            return Err(l.failure(FailureKind::Protocol, msg, Some(id), None));
                        }
                    }
                }
                Ok(m @ (Msg::ConsoleEof | Msg::AgentEof)) => {
                    l.console.eof |= matches!(m, Msg::ConsoleEof);
                    let queued = l.drain_to_console_eof(Duration::from_secs(3));
                    if answer.is_none() {
                        answer = queued
                            .iter()
                            .filter_map(|q| match serde_json::from_str::<AgentMsg>(q) {
                                Ok(AgentMsg::Answer(a)) if a.id == Some(id) => Some(a),
                                _ => None,
                            })
                            .next();
                        if let Some(a) = answer.as_mut() {
                            cap_output(a);
                        }
                    }
                    if matches!(step, Step::Poweroff) {
                        if let Some(a) = answer {
                            return Ok(StepOutcome {
                                id,
                                step,
                                answer: a,
                                splats: l.console.take_pending(),
                                host_s: t0.elapsed().as_secs_f64(),
                            });
                        }
                    }
                    if l.console.saw_panic() {
                        return Err(l.panic_failure(Some(id)));
                    }
                    let msg = "QEMU exited while the step was running".to_string();
                    return Err(l.fail(FailureKind::Died, msg, Some(id)));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(l.fail(FailureKind::Died, "channels closed".into(), Some(id)));
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
            if self.link.qemu.exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        r.map(|_| ())
    }

    /// Kills QEMU's process group and reaps it. Idempotent; dropping the
    /// `Vm` does the same.
    pub fn kill(&mut self) {
        self.link.qemu.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_capped_and_the_rest_of_a_long_line_is_skipped() {
        let long = "x".repeat(100);
        let input = format!("short\r\n{long}\nnext\nlast-without-newline");
        let mut r = std::io::BufReader::with_capacity(7, input.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some((len, cut)) = read_line_capped(&mut r, &mut buf, 10).unwrap() {
            got.push((String::from_utf8(buf.clone()).unwrap(), len, cut));
        }
        assert_eq!(
            got,
            vec![
                ("short\r".to_string(), 6, false),
                ("x".repeat(10), 100, true),
                ("next".to_string(), 4, false),
                ("last-witho".to_string(), 20, true),
            ]
        );
    }

    #[test]
    fn output_is_capped_on_a_char_boundary_with_a_marker() {
        let mut a = Answer {
            output: "é".repeat(MAX_OUTPUT),
            ..Default::default()
        };
        cap_output(&mut a);
        assert!(a.output.len() < MAX_OUTPUT + 100);
        assert!(a.output.ends_with(&format!(
            "[coexist: output truncated, {} bytes]",
            2 * MAX_OUTPUT
        )));
        let mut small = Answer {
            output: "ok\n".into(),
            ..Default::default()
        };
        cap_output(&mut small);
        assert_eq!(small.output, "ok\n");
    }
}
