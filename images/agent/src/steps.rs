//! The steps the agent runs. Each returns one [`Answer`]; failures carry
//! the errno the kernel returned.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coexist_proto::{Answer, Step};
use nix::errno::Errno;

use crate::kernel_release;

/// What outlives one step: attached BPF programs, by handle.
#[derive(Default)]
pub struct State {
    pub bpf: crate::bpf::Attachments,
}

pub fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

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

pub fn ok(id: u64, output: String) -> Answer {
    Answer {
        id: Some(id),
        ok: true,
        output,
        ..Default::default()
    }
}

fn find_module(name: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let dir = Path::new("/lib/modules").join(kernel_release());
    let dep = std::fs::read_to_string(dir.join("modules.dep"))
        .map_err(|e| format!("{}: {e}", dir.join("modules.dep").display()))?;
    let want = name.replace('_', "-");
    for l in dep.lines() {
        let path = l.split(':').next().unwrap_or("");
        let base = Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().replace('_', "-"))
            .unwrap_or_default();
        if base == format!("{want}.ko") {
            return Ok(dir.join(path));
        }
    }
    // Fixture modules live in extra/ (not indexed by depmod).
    let extra = dir
        .join("extra")
        .join(format!("{}.ko", name.replace('-', "_")));
    if extra.is_file() {
        return Ok(extra);
    }
    Err(format!(
        "module '{name}' is not in {} nor in extra/",
        dir.join("modules.dep").display()
    ))
}

pub fn run_step(state: &mut State, id: u64, step: Step) -> Answer {
    match step {
        Step::Exec { argv } => {
            let Some((prog, args)) = argv.split_first() else {
                return fail(Some(id), None, "exec: empty argv".into());
            };
            let (r, w) = match nix::unistd::pipe() {
                Ok(p) => p,
                Err(e) => return fail(Some(id), Some(e as i32), format!("pipe: {e}")),
            };
            let w2: OwnedFd = match w.try_clone() {
                Ok(f) => f,
                Err(e) => return fail(Some(id), errno_of(&e), format!("dup: {e}")),
            };
            let mut cmd = Command::new(prog);
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::from(w))
                .stderr(Stdio::from(w2));
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => return fail(Some(id), errno_of(&e), format!("exec {prog}: {e}")),
            };
            drop(cmd); // closes our copies of the write ends
            let mut out = Vec::new();
            let _ = File::from(r).read_to_end(&mut out);
            let status = child.wait();
            let mut a = ok(id, String::from_utf8_lossy(&out).into_owned());
            match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    a.exit_code = s.code().or(s.signal().map(|sig| 128 + sig));
                    if !s.success() {
                        a.ok = false;
                        a.error = Some(format!("{prog} exited with {s}"));
                    }
                }
                Err(e) => return fail(Some(id), errno_of(&e), format!("wait: {e}")),
            }
            a
        }
        Step::Read { path } => match std::fs::read(&path) {
            Ok(b) => ok(id, String::from_utf8_lossy(&b).into_owned()),
            Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
        },
        Step::Write { path, data, create } => {
            let f = OpenOptions::new()
                .write(true)
                .create(create)
                .truncate(create)
                .open(&path);
            match f.and_then(|mut f| f.write(data.as_bytes())) {
                Ok(_) => ok(id, String::new()),
                Err(e) => fail(Some(id), errno_of(&e), format!("write {path}: {e}")),
            }
        }
        Step::Insmod { module, params } => {
            let path = match find_module(&module) {
                Ok(p) => p,
                Err(e) => return fail(Some(id), Some(Errno::ENOENT as i32), e),
            };
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) => return fail(Some(id), errno_of(&e), format!("{}: {e}", path.display())),
            };
            let params = std::ffi::CString::new(params).unwrap_or_default();
            match nix::kmod::finit_module(&f, &params, nix::kmod::ModuleInitFlags::empty()) {
                Ok(()) => ok(id, path.display().to_string()),
                Err(e) => fail(
                    Some(id),
                    Some(e as i32),
                    format!("insmod {}: {}", path.display(), e.desc()),
                ),
            }
        }
        Step::Rmmod { name } => {
            let c = std::ffi::CString::new(name.replace('-', "_")).unwrap_or_default();
            match nix::kmod::delete_module(&c, nix::kmod::DeleteModuleFlags::O_NONBLOCK) {
                Ok(()) => ok(id, String::new()),
                Err(e) => fail(
                    Some(id),
                    Some(e as i32),
                    format!("rmmod {name}: {}", e.desc()),
                ),
            }
        }
        Step::Sleep { ms } => {
            std::thread::sleep(Duration::from_millis(ms));
            ok(id, String::new())
        }
        Step::Poweroff => ok(id, String::new()),
        Step::LivepatchLoad { module, timeout_ms } => {
            livepatch_load(state, id, &module, timeout_ms)
        }
        Step::LivepatchDisable { name, timeout_ms } => livepatch_disable(id, &name, timeout_ms),
        Step::LivepatchUnload { name } => run_step(state, id, Step::Rmmod { name }),
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
        Step::Trigger { target } => trigger(id, &target),
        Step::FtraceState { function } => ftrace_state(id, &function),
        Step::Repeat { times, steps } => repeat(state, id, times, &steps),
        Step::Concurrently { duration_ms, lists } => concurrently(id, duration_ms, lists),
    }
}

fn with_data(mut a: Answer, data: serde_json::Value) -> Answer {
    a.data = Some(data);
    a
}

const LIVEPATCH_SYSFS: &str = "/sys/kernel/livepatch";
const DEFAULT_TRANSITION_TIMEOUT_MS: u64 = 30_000;

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

fn livepatch_load(state: &mut State, id: u64, module: &str, timeout_ms: Option<u64>) -> Answer {
    let a = run_step(
        state,
        id,
        Step::Insmod {
            module: module.to_string(),
            params: String::new(),
        },
    );
    if !a.ok {
        return a;
    }
    let name = Path::new(module)
        .file_stem()
        .map(|s| s.to_string_lossy().replace('-', "_"))
        .unwrap_or_default();
    let transition = Path::new(LIVEPATCH_SYSFS).join(&name).join("transition");
    let waited = wait_until(timeout_ms.unwrap_or(DEFAULT_TRANSITION_TIMEOUT_MS), || {
        std::fs::read_to_string(&transition)
            .map(|s| s.trim() == "0")
            .unwrap_or(false)
    });
    match waited {
        Ok(ms) => with_data(
            ok(id, format!("{name}: transition done in {ms:.1} ms")),
            serde_json::json!({"name": name, "transition_ms": ms}),
        ),
        Err(ms) => {
            let mut a = fail(
                Some(id),
                Some(Errno::ETIMEDOUT as i32),
                format!(
                    "{name}: transition not done after {ms:.0} ms ({})",
                    transition.display()
                ),
            );
            a.data = Some(serde_json::json!({"name": name, "transition_ms": ms}));
            a
        }
    }
}

fn livepatch_disable(id: u64, name: &str, timeout_ms: Option<u64>) -> Answer {
    let dir = Path::new(LIVEPATCH_SYSFS).join(name);
    let enabled = dir.join("enabled");
    if let Err(e) = OpenOptions::new()
        .write(true)
        .open(&enabled)
        .and_then(|mut f| f.write(b"0"))
    {
        return fail(
            Some(id),
            errno_of(&e),
            format!("write 0 to {}: {e}", enabled.display()),
        );
    }
    match wait_until(timeout_ms.unwrap_or(DEFAULT_TRANSITION_TIMEOUT_MS), || {
        !dir.exists()
    }) {
        Ok(ms) => with_data(
            ok(id, format!("{name}: disabled in {ms:.1} ms")),
            serde_json::json!({"transition_ms": ms}),
        ),
        Err(ms) => fail(
            Some(id),
            Some(Errno::ETIMEDOUT as i32),
            format!("{name}: {} still there after {ms:.0} ms", dir.display()),
        ),
    }
}

/// What userspace reads to make each known function run.
pub fn trigger_path(target: &str) -> Option<&'static str> {
    match target {
        "cmdline_proc_show" => Some("/proc/cmdline"),
        "coexist_target_value" => Some("/sys/kernel/debug/coexist_target/value"),
        _ => None,
    }
}

fn trigger(id: u64, target: &str) -> Answer {
    let Some(path) = trigger_path(target) else {
        return fail(
            Some(id),
            Some(Errno::EINVAL as i32),
            format!("trigger: unknown target '{target}' (known: cmdline_proc_show, coexist_target_value)"),
        );
    };
    match std::fs::read(path) {
        Ok(b) => ok(id, String::from_utf8_lossy(&b).into_owned()),
        Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
    }
}

fn ftrace_state(id: u64, function: &str) -> Answer {
    let path = "/sys/kernel/tracing/enabled_functions";
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let st = coexist_proto::parse_enabled_functions(&text, function);
            let out = if st.present {
                st.raw.clone()
            } else {
                format!("{function}: absent")
            };
            with_data(ok(id, out), serde_json::to_value(&st).unwrap_or_default())
        }
        Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
    }
}

fn repeat(state: &mut State, id: u64, times: u32, steps: &[Step]) -> Answer {
    let mut failures = Vec::new();
    let mut failed = 0u64;
    let mut first: Option<Answer> = None;
    for i in 0..times {
        for (j, s) in steps.iter().enumerate() {
            let a = run_step(state, id, s.clone());
            if !a.ok {
                failed += 1;
                if failures.len() < 20 {
                    failures.push(serde_json::json!({
                        "iteration": i, "index": j, "errno_name": a.errno_name, "error": a.error,
                    }));
                }
                first.get_or_insert(a);
            }
        }
    }
    let mut a = match first {
        None => ok(id, String::new()),
        // The first failure's errno is the repeat's.
        Some(f) => fail(
            Some(id),
            f.errno,
            format!(
                "{failed} step(s) failed in {times} iterations; first: {}",
                f.error.unwrap_or_default()
            ),
        ),
    };
    a.data = Some(serde_json::json!({"iterations": times, "failed": failed, "failures": failures}));
    a
}

fn concurrently(id: u64, duration_ms: u64, lists: Vec<Vec<Step>>) -> Answer {
    let deadline = Instant::now() + Duration::from_millis(duration_ms);
    let handles: Vec<_> = lists
        .into_iter()
        .map(|list| {
            std::thread::spawn(move || {
                let mut st = State::default();
                let (mut iterations, mut okc, mut failed) = (0u64, 0u64, 0u64);
                let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
                while Instant::now() < deadline && !list.is_empty() {
                    for s in &list {
                        let a = run_step(&mut st, id, s.clone());
                        if a.ok {
                            okc += 1;
                        } else {
                            // The rest of this iteration builds on this step:
                            // start the next one.
                            failed += 1;
                            let k = a.errno_name.clone().unwrap_or_else(|| "other".into());
                            *errnos.entry(k).or_default() += 1;
                            break;
                        }
                    }
                    iterations += 1;
                }
                // Leave nothing attached behind this thread.
                st.bpf.detach_all();
                serde_json::json!({"iterations": iterations, "ok": okc, "failed": failed, "errnos": errnos})
            })
        })
        .collect();
    let threads: Vec<serde_json::Value> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| serde_json::json!({"panicked": true}))
        })
        .collect();
    with_data(
        ok(id, String::new()),
        serde_json::json!({ "threads": threads }),
    )
}
