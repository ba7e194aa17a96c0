//! The link to a started guest: its QEMU process, console and agent
//! channel, read under the watchdogs.
//!
//! In: a [`VmConfig`] to start QEMU with. Out: the agent's READY
//! ([`Link::wait_ready`]) or its answer to a step ([`Link::read_answer`]),
//! or a [`VmFailure`] when a watchdog fires (boot deadline, no banner, step
//! timeout, stall), the kernel panics, the agent breaks the protocol, or
//! QEMU goes away. Both readers take the guest's messages through
//! [`Link::hear`] and end on [`Link::ended`], so the end of the streams
//! (agent EOF, console EOF, QEMU exit, panic) is handled in one place.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use coexist_proto::{AgentMsg, Answer, Request, Step};
use serde::{Deserialize, Serialize};

use super::console::Console;
use super::lines::{self, Msg};
use super::qemu::{QemuProcess, Started, VmConfig};
use super::{Accel, FailureKind, Splat, VmFailure};
use coexist_core::text::clip;

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

/// The most of a step's output kept in its outcome. The agent cuts every
/// step's output below it (`coexist_proto::STEP_OUTPUT_MAX`, keeping the
/// head and the tail); this cut is for an agent that does not.
pub const MAX_OUTPUT: usize = 64 * 1024;
const _: () = assert!(coexist_proto::STEP_OUTPUT_MAX < MAX_OUTPUT);

/// The most of an agent line a failure's message quotes.
const MAX_QUOTED: usize = 512;

/// An agent line as a failure's message quotes it: clipped to
/// [`MAX_QUOTED`] bytes (its head and tail), with its length.
fn quoted(line: &str) -> String {
    if line.len() <= MAX_QUOTED {
        return line.to_string();
    }
    format!("({} bytes) {}", line.len(), clip(line, MAX_QUOTED))
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

/// `line` as the agent's answer to step `id`, its output capped; None for
/// any other line.
fn answer_to(line: &str, id: u64) -> Option<Answer> {
    match serde_json::from_str::<AgentMsg>(line) {
        Ok(AgentMsg::Answer(mut a)) if a.id == Some(id) => {
            cap_output(&mut a);
            Some(a)
        }
        _ => None,
    }
}

/// What the guest is doing while its messages are read; the failures at
/// the end of its streams differ by it.
#[derive(Clone, Copy)]
enum Phase {
    /// Booting towards the agent's READY.
    Boot,
    /// Running the step with this id.
    Step(u64),
}

impl Phase {
    fn step(self) -> Option<u64> {
        match self {
            Phase::Boot => None,
            Phase::Step(id) => Some(id),
        }
    }
}

/// One wait on the guest's messages, console lines taken in.
enum Heard {
    /// No agent line within the wait (console lines may have come).
    Nothing,
    /// One agent line.
    Agent(String),
    /// A stream ended: QEMU is going away. The console has been read to
    /// its end; these are the agent lines that were still queued. The
    /// reader ends with [`Link::ended`] (unless a queued line is all it
    /// waited for).
    Ended(Vec<String>),
}

/// The guest's process, console and agent channel, with the clocks the
/// watchdogs read.
pub struct Link {
    pub cfg: VmConfig,
    pub qemu: QemuProcess,
    pub console: Console,
    rx: Receiver<Msg>,
    agent: UnixStream,
    pub started: Instant,
    last_activity: Instant,
}

impl Link {
    /// Creates the console log (`origin`, for a restored guest, marked at
    /// its top), starts QEMU and the readers of its console and agent
    /// channel.
    pub fn start(cfg: VmConfig, origin: Option<&str>) -> Result<Link, VmFailure> {
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
        if let Some(origin) = origin {
            console.mark(&format!("[coexist: restored from {origin}]"));
        }
        let Started {
            qemu,
            console: serial,
            agent,
        } = QemuProcess::start(&cfg).map_err(early)?;
        let rx = lines::spawn(serial, &agent).map_err(|e| early(format!("agent channel: {e}")))?;
        Ok(Link {
            cfg,
            qemu,
            console,
            rx,
            agent,
            started,
            last_activity: Instant::now(),
        })
    }

    pub fn failure(
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
    /// A panic before READY is a boot failure, with the panic report.
    fn panic_failure(&mut self, phase: Phase) -> VmFailure {
        self.drain_to_console_eof(Duration::from_secs(5));
        let (panic, title) = self.console.panic_report();
        self.qemu.kill();
        let mut f = self.failure(FailureKind::Panic, title, phase.step(), panic);
        if let Phase::Boot = phase {
            f.kind = FailureKind::BootFailed;
            f.message = format!("kernel panic while booting: {}", f.message);
        }
        f
    }

    /// Waits up to `wait` for the guest's next message. Any message is
    /// activity for the stall watchdog; a console line goes to the console,
    /// and one that completes a panic ends the guest with the panic's
    /// failure. The end of a stream is [`Heard::Ended`]; channels closed
    /// without it end the guest as died.
    fn hear(&mut self, wait: Duration, phase: Phase) -> Result<Heard, VmFailure> {
        match self.rx.recv_timeout(wait) {
            Ok(Msg::Console(l)) => {
                self.last_activity = Instant::now();
                self.console.feed(&l);
                if self.console.saw_panic() {
                    return Err(self.panic_failure(phase));
                }
                Ok(Heard::Nothing)
            }
            Ok(Msg::Agent(l)) => {
                self.last_activity = Instant::now();
                Ok(Heard::Agent(l))
            }
            Ok(m @ (Msg::ConsoleEof | Msg::AgentEof)) => {
                self.console.eof |= matches!(m, Msg::ConsoleEof);
                let queued = self.drain_to_console_eof(Duration::from_secs(3));
                Ok(Heard::Ended(queued))
            }
            Err(RecvTimeoutError::Timeout) => Ok(Heard::Nothing),
            Err(RecvTimeoutError::Disconnected) => {
                let msg = match phase {
                    Phase::Boot => "console closed",
                    Phase::Step(_) => "channels closed",
                };
                Err(self.fail(FailureKind::Died, msg.into(), phase.step()))
            }
        }
    }

    /// The failure of a guest whose streams ended ([`Heard::Ended`]): its
    /// panic if the console showed one, else QEMU's exit (before READY: a
    /// boot failure if the kernel had started, else QEMU's own).
    fn ended(&mut self, phase: Phase) -> VmFailure {
        if self.console.saw_panic() {
            return self.panic_failure(phase);
        }
        let Phase::Step(id) = phase else {
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
            return self.fail(kind, msg, None);
        };
        let msg = "QEMU exited while the step was running".to_string();
        self.fail(FailureKind::Died, msg, Some(id))
    }

    /// Reads the guest's messages until the agent says READY, within the
    /// boot deadline (and the banner deadline, if any).
    pub fn wait_ready(&mut self) -> Result<ReadyInfo, VmFailure> {
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
            match self.hear(wait, Phase::Boot)? {
                Heard::Nothing => {}
                Heard::Agent(l) => match serde_json::from_str::<AgentMsg>(&l) {
                    Ok(AgentMsg::Ready {
                        kernel_release,
                        uptime_s,
                        warnings,
                        ..
                    }) => {
                        return Ok(ReadyInfo {
                            kernel_release,
                            guest_uptime_s: uptime_s,
                            boot_s: self.started.elapsed().as_secs_f64(),
                            accel: self.cfg.accel,
                            warnings,
                        });
                    }
                    _ => {
                        let msg = format!("expected READY from the agent, got: {}", quoted(&l));
                        return Err(self.fail(FailureKind::Protocol, msg, None));
                    }
                },
                Heard::Ended(_) => return Err(self.ended(Phase::Boot)),
            }
        }
    }

    /// Sends step `id` to the agent.
    pub fn send(&mut self, id: u64, step: &Step) -> Result<(), VmFailure> {
        let req = serde_json::to_string(&Request {
            id,
            step: step.clone(),
        })
        .expect("serialisable");
        if let Err(e) = writeln!(self.agent, "{req}") {
            let msg = format!("cannot send step: {e}");
            return Err(self.failure(FailureKind::Died, msg, Some(id), None));
        }
        self.last_activity = Instant::now();
        Ok(())
    }

    /// Reads the guest's messages until the agent's answer to step `id`
    /// (sent at `t0`) is in and the console marked the step's end (or 2 s
    /// passed), then hands out the step's splats with it. Fails when no
    /// answer comes within `timeout`, nothing at all comes for the stall
    /// timeout (at least `timeout`), the agent says anything else, the
    /// kernel panics, or QEMU exits (a poweroff whose answer was still
    /// queued succeeds).
    pub fn read_answer(
        &mut self,
        id: u64,
        step: Step,
        t0: Instant,
        timeout: Duration,
    ) -> Result<StepOutcome, VmFailure> {
        let phase = Phase::Step(id);
        let deadline = t0 + timeout;
        // A step may run quietly for as long as its timeout allows.
        let stall = self.cfg.stall_timeout.max(timeout);
        // The answer, and when to stop waiting for the console's end marker.
        let mut answer: Option<(Answer, Instant)> = None;
        loop {
            let now = Instant::now();
            if let Some((a, end_marker_deadline)) = &answer {
                let end_seen = self.console.current_step() != Some(id);
                if end_seen || now >= *end_marker_deadline {
                    return Ok(StepOutcome {
                        id,
                        step,
                        answer: a.clone(),
                        splats: self.console.take_step_splats(id),
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
                return Err(self.fail(FailureKind::StepTimeout, msg, Some(id)));
            }
            if now >= self.last_activity + stall {
                let msg = format!(
                    "no console output and no agent message for {:.0} s",
                    stall.as_secs_f64()
                );
                return Err(self.fail(FailureKind::Stall, msg, Some(id)));
            }
            let mut wait = Duration::from_millis(200);
            if answer.is_none() {
                wait = wait.min(deadline.saturating_duration_since(now));
            }
            match self.hear(wait, phase)? {
                Heard::Nothing => {}
                Heard::Agent(line) => {
                    let Some(a) = answer_to(&line, id) else {
                        return Err(self.unexpected(id, &line));
                    };
                    if matches!(step, Step::Poweroff) {
                        // Tell the agent its answer arrived.
                        let _ = self.agent.shutdown(std::net::Shutdown::Write);
                    }
                    answer = Some((a, Instant::now() + Duration::from_secs(2)));
                }
                Heard::Ended(queued) => {
                    let answer = match answer {
                        Some((a, _)) => Some(a),
                        None => queued.iter().find_map(|q| answer_to(q, id)),
                    };
                    if let (Step::Poweroff, Some(a)) = (&step, answer) {
                        return Ok(StepOutcome {
                            id,
                            step,
                            answer: a,
                            splats: self.console.take_pending(),
                            host_s: t0.elapsed().as_secs_f64(),
                        });
                    }
                    return Err(self.ended(phase));
                }
            }
        }
    }

    /// The failure for an agent line during step `id` that is not its
    /// answer. QEMU is left to the caller.
    fn unexpected(&mut self, id: u64, line: &str) -> VmFailure {
        let msg = unexpected_message(id, line);
        self.failure(FailureKind::Protocol, msg, Some(id), None)
    }
}

/// What the failure for an unexpected agent line says: the line is the
/// guest's, of any length up to the reader's cap, so only its head and
/// tail are quoted.
fn unexpected_message(id: u64, line: &str) -> String {
    match serde_json::from_str::<AgentMsg>(line) {
        Ok(AgentMsg::Ready { .. }) => {
            "the agent restarted its channel (READY again) during a step".to_string()
        }
        _ => format!(
            "unexpected agent message during step {id}: {}",
            quoted(line)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_errors_quote_a_bounded_part_of_the_line() {
        // A line as the reader hands over one longer than its cap.
        let line = format!(
            "{{\"kind\":\"answer\",\"id\":1,\"output\":\"{} [coexist: line truncated, 33554500 bytes]",
            "x".repeat(crate::lines::MAX_AGENT_LINE)
        );
        let m = unexpected_message(1, &line);
        assert!(m.len() < 2 * MAX_QUOTED, "{} bytes", m.len());
        let head = format!(
            "unexpected agent message during step 1: ({} bytes) {{\"kind\":\"answer\"",
            line.len()
        );
        assert!(m.starts_with(&head), "{m}");
        assert!(
            m.ends_with("[coexist: line truncated, 33554500 bytes]"),
            "{m}"
        );
        assert_eq!(
            unexpected_message(2, "{}"),
            "unexpected agent message during step 2: {}"
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
