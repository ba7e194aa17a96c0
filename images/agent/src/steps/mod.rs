//! The steps the agent runs.
//!
//! What goes in: one [`Step`], as parsed from a request line, with the
//! request's id and the [`State`] that outlives steps. What comes out: one
//! [`Answer`] for that id. A failure carries the errno the kernel returned
//! (`errno`, `errno_name`) and a text for people (`error`); a step with a
//! structured result puts it in `data` as its [`AnswerData`] variant.
//!
//! Every answer's output is cut to [`STEP_OUTPUT_MAX`] by [`cap_middle`],
//! keeping its head and its tail.
//!
//! Each family of steps has one home, and [`run_step`] sends every [`Step`]
//! variant to it with an exhaustive match, so a new variant does not compile
//! until it has one:
//!
//! - exec, read, write, insmod, rmmod, sleep, poweroff, trigger: [`basic`];
//! - livepatch_load, livepatch_disable, livepatch_unload: [`livepatch`];
//! - bpf_attach, bpf_detach, bpf_stats: [`bpf`];
//! - ftrace_state: [`ftrace`];
//! - repeat, concurrently (steps that run other steps): [`stress`];
//! - selftest (the kernel's own selftests): [`selftest`].

use std::time::{Duration, Instant};

use coexist_proto::{Answer, AnswerData, Step, STEP_OUTPUT_MAX};
use nix::errno::Errno;

mod basic;
mod bpf;
mod ftrace;
mod livepatch;
mod selftest;
mod stress;

/// What outlives one step: attached BPF programs, by handle.
#[derive(Default)]
pub struct State {
    pub bpf: bpf::Attachments,
}

/// Runs one step to its answer, its output within [`STEP_OUTPUT_MAX`].
pub fn run_step(state: &mut State, id: u64, step: Step) -> Answer {
    let mut a = run_kind(state, id, step);
    if a.output.len() > STEP_OUTPUT_MAX {
        a.output = cap_middle(a.output.as_bytes(), STEP_OUTPUT_MAX);
    }
    a
}

/// Runs one step, by its family.
fn run_kind(state: &mut State, id: u64, step: Step) -> Answer {
    match step {
        Step::Exec { argv } => basic::exec(id, &argv),
        Step::Read { path } => basic::read(id, &path),
        Step::Write { path, data, create } => basic::write(id, &path, &data, create),
        Step::Insmod { module, params } => basic::insmod(id, &module, &params),
        Step::Rmmod { name } => basic::rmmod(id, &name),
        Step::Sleep { ms } => basic::sleep(id, ms),
        Step::Poweroff => basic::poweroff(id),
        Step::Hello { now_unix_ns, seed } => basic::hello(id, now_unix_ns, &seed),
        Step::Trigger { target } => basic::trigger(id, &target),
        Step::ReadFiles { dir, suffix } => basic::read_files(id, &dir, &suffix),
        Step::LivepatchLoad { module, timeout_ms } => {
            livepatch::livepatch_load(id, &module, timeout_ms)
        }
        Step::LivepatchDisable { name, timeout_ms } => {
            livepatch::livepatch_disable(id, &name, timeout_ms)
        }
        Step::LivepatchUnload { name } => livepatch::livepatch_unload(id, &name),
        Step::LivepatchState { name } => livepatch::livepatch_state(id, &name),
        Step::BpfAttach {
            program,
            kind,
            target,
            object,
            fmod_ret,
        } => state
            .bpf
            .attach(id, &program, kind, &target, object.as_deref(), fmod_ret),
        Step::BpfDetach { handle } => state.bpf.detach(id, handle),
        Step::BpfStats { handle } => state.bpf.stats(id, handle),
        Step::FtraceState { function } => ftrace::ftrace_state(id, &function),
        Step::Repeat { times, steps } => stress::repeat(state, id, times, &steps),
        Step::Concurrently { duration_ms, lists } => stress::concurrently(id, duration_ms, lists),
        Step::Selftest {
            runner,
            collection,
            test,
            timeout_ms,
        } => selftest::selftest(id, runner, &collection, &test, timeout_ms),
    }
}

/// A step's output kept within a number of bytes as it is read: its head
/// and its tail (where the results are), the middle cut with a marker
/// that says how many bytes went. Every step's output goes through it
/// ([`cap_middle`]); steps that read a program's output feed it as they
/// read, so a program that prints a lot costs no more memory than this.
pub struct Capped {
    max: usize,
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    total: usize,
}

/// Room kept for the marker of a cut.
const MARKER_ROOM: usize = 64;

impl Capped {
    pub fn new(max: usize) -> Capped {
        Capped {
            max,
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            total: 0,
        }
    }

    /// The head's share of the bytes kept.
    fn head_max(&self) -> usize {
        self.max / 5
    }

    pub fn push(&mut self, b: &[u8]) {
        self.total += b.len();
        let n = self.head_max().saturating_sub(self.head.len()).min(b.len());
        self.head.extend_from_slice(&b[..n]);
        let rest = &b[n..];
        let tail_max = self.max - self.head_max();
        let rest = &rest[rest.len().saturating_sub(tail_max)..];
        let over = (self.tail.len() + rest.len()).saturating_sub(tail_max);
        self.tail.drain(..over);
        self.tail.extend(rest);
    }

    /// The output as text, at most `max` bytes (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let cut = self.total - self.head.len() - tail.len();
        if cut == 0 {
            let mut all = self.head.clone();
            all.extend_from_slice(&tail);
            let s = String::from_utf8_lossy(&all);
            if s.len() <= self.max {
                return s.into_owned();
            }
            // Replacement characters made it longer: cut the text.
            let mid = char_floor(&s, s.len() / 2);
            return join(&s[..mid], &s[mid..], 0, self.max);
        }
        join(
            &String::from_utf8_lossy(&self.head),
            &String::from_utf8_lossy(&tail),
            cut,
            self.max,
        )
    }
}

/// The greatest char boundary of `s` at or below `i`.
fn char_floor(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `head`, the marker for `cut` bytes (and whatever of `head` and `tail`
/// does not fit), `tail`: at most `max` bytes.
fn join(head: &str, tail: &str, cut: usize, max: usize) -> String {
    let room = max.saturating_sub(MARKER_ROOM);
    let h = char_floor(head, head.len().min(room / 5));
    let keep_tail = tail.len().min(room - h);
    let mut t = tail.len() - keep_tail;
    while !tail.is_char_boundary(t) {
        t += 1;
    }
    let cut = cut + (head.len() - h) + t;
    format!(
        "{}\n[coexist: {cut} bytes of output cut here]\n{}",
        &head[..h],
        &tail[t..]
    )
}

/// `out` cut to at most `max` bytes: its head and, after a marker, its
/// tail (see [`Capped`]).
pub fn cap_middle(out: &[u8], max: usize) -> String {
    let mut c = Capped::new(max);
    c.push(out);
    c.text()
}

/// Starts `cmd` with stdin from /dev/null and stdout and stderr into one
/// pipe; returns the child and the pipe's read end, or the step's failed
/// answer. `what` names the program in the failure.
fn spawn_piped(
    id: u64,
    mut cmd: std::process::Command,
    what: &str,
) -> Result<(std::process::Child, std::fs::File), Box<Answer>> {
    use std::process::Stdio;
    let failed = |errno: Option<i32>, what: String| Box::new(fail(Some(id), errno, what));
    let (r, w) = nix::unistd::pipe().map_err(|e| failed(Some(e as i32), format!("pipe: {e}")))?;
    let w2 = w
        .try_clone()
        .map_err(|e| failed(errno_of(&e), format!("dup: {e}")))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    let child = cmd
        .spawn()
        .map_err(|e| failed(errno_of(&e), format!("{what}: {e}")))?;
    drop(cmd); // closes our copies of the write ends
    Ok((child, std::fs::File::from(r)))
}

/// The errno of a failed system call, when it has one.
fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// A failed step; `id` is None for a request that could not be parsed.
pub fn fail(id: Option<u64>, errno: Option<i32>, error: String) -> Answer {
    Answer {
        id,
        ok: false,
        errno,
        errno_name: errno.map(|e| format!("{:?}", Errno::from_raw(e))),
        error: Some(error),
        ..Default::default()
    }
}

/// A successful step with its output.
fn ok(id: u64, output: String) -> Answer {
    Answer {
        id: Some(id),
        ok: true,
        output,
        ..Default::default()
    }
}

/// `a` with its structured result.
fn with_data(mut a: Answer, data: AnswerData) -> Answer {
    a.data = Some(data);
    a
}

/// Waits until `done()` or the timeout; returns the elapsed milliseconds.
fn wait_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> Result<f64, f64> {
    let t0 = Instant::now();
    let limit = Duration::from_millis(timeout_ms);
    loop {
        if done() {
            return Ok(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if t0.elapsed() >= limit {
            return Err(t0.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_keeps_its_head_and_tail_within_the_cap() {
        let out: Vec<u8> = (0..1000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let c = cap_middle(&out, 2000);
        assert!(c.starts_with("line 0\n"), "{c}");
        assert!(c.ends_with("line 999\n"), "{c}");
        assert!(c.contains("bytes of output cut here"));
        assert!(c.len() <= 2000, "{}", c.len());
        assert_eq!(cap_middle(b"short", 2000), "short");
        // Fed in pieces, as a program's output is read: the same text.
        let mut p = Capped::new(2000);
        for chunk in out.chunks(7) {
            p.push(chunk);
        }
        assert_eq!(p.text(), c);
        // The count of cut bytes is exact.
        let n: usize = c
            .split("[coexist: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let kept = c.len() - format!("\n[coexist: {n} bytes of output cut here]\n").len();
        assert_eq!(n + kept, out.len());
    }

    #[test]
    fn output_stays_within_the_cap_whatever_its_bytes() {
        // Invalid UTF-8 (replaced by 3-byte characters) and multi-byte
        // characters cut anywhere: never above the cap, always valid.
        for out in [
            vec![0xffu8; 10_000],
            "é".repeat(5000).into_bytes(),
            vec![0xffu8; 1500],
            "日本".repeat(400).into_bytes(),
        ] {
            for max in [100, 1000, 2000, 4096] {
                let c = cap_middle(&out, max);
                assert!(c.len() <= max, "{} > {max}", c.len());
            }
        }
    }
}
