//! The steps the agent runs.
//!
//! What goes in: one [`Step`], as parsed from a request line, with the
//! request's id and the [`State`] that outlives steps. What comes out: one
//! [`Answer`] for that id. A failure carries the errno the kernel returned
//! (`errno`, `errno_name`) and a text for people (`error`); a step with a
//! structured result puts it in `data` as its [`AnswerData`] variant.
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

use coexist_proto::{Answer, AnswerData, Step};
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

/// Runs one step to its answer.
pub fn run_step(state: &mut State, id: u64, step: Step) -> Answer {
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
