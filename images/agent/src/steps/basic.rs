//! Programs, files, modules, time and power: exec, read, write, insmod,
//! rmmod, sleep, poweroff, hello (a restored guest's first step), and
//! trigger (a read that makes a known kernel function run).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coexist_proto::{Answer, AnswerData, FileData, FilesData, HelloData, STEP_OUTPUT_MAX};
use nix::errno::Errno;

use super::{errno_of, fail, ok, spawn_piped, with_data, Capped};
use crate::{kernel_release, uptime};

/// Runs a program; stdout and stderr are captured together.
pub fn exec(id: u64, argv: &[String]) -> Answer {
    let Some((prog, args)) = argv.split_first() else {
        return fail(Some(id), None, "exec: empty argv".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args);
    let (mut child, mut r) = match spawn_piped(id, cmd, &format!("exec {prog}")) {
        Ok(x) => x,
        Err(a) => return *a,
    };
    let mut out = Capped::new(STEP_OUTPUT_MAX);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.push(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let status = child.wait();
    let mut a = ok(id, out.text());
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

/// Reads a file as text.
pub fn read(id: u64, path: &str) -> Answer {
    match std::fs::read(path) {
        Ok(b) => ok(id, String::from_utf8_lossy(&b).into_owned()),
        Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
    }
}

/// Every regular file under `dir` whose name ends with `suffix`, as
/// bytes (symlinks are not followed: gcov's debugfs links each `.gcno`).
pub fn read_files(id: u64, dir: &str, suffix: &str) -> Answer {
    fn walk(d: &Path, suffix: &str, out: &mut Vec<FileData>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let t = e.file_type()?;
            let p = e.path();
            if t.is_dir() {
                walk(&p, suffix, out)?;
            } else if t.is_file() && e.file_name().to_string_lossy().ends_with(suffix) {
                out.push(FileData {
                    path: p.display().to_string(),
                    bytes: std::fs::read(&p)?,
                });
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    match walk(Path::new(dir), suffix, &mut files) {
        Ok(()) => with_data(
            ok(id, format!("{} files", files.len())),
            AnswerData::Files(FilesData { files }),
        ),
        Err(e) => fail(Some(id), errno_of(&e), format!("read_files {dir}: {e}")),
    }
}

/// Writes `data` in one write() (sysfs/debugfs friendly).
pub fn write(id: u64, path: &str, data: &str, create: bool) -> Answer {
    let f = OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .open(path);
    match f.and_then(|mut f| f.write(data.as_bytes())) {
        Ok(_) => ok(id, String::new()),
        Err(e) => fail(Some(id), errno_of(&e), format!("write {path}: {e}")),
    }
}

/// A module's .ko: a path as given, else by name in modules.dep, else in
/// extra/.
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

/// Loads a module by name or path; the output is the .ko's path.
pub fn insmod(id: u64, module: &str, params: &str) -> Answer {
    let path = match find_module(module) {
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

/// Unloads a module without waiting for its users (like rmmod).
pub fn rmmod(id: u64, name: &str) -> Answer {
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

pub fn sleep(id: u64, ms: u64) -> Answer {
    std::thread::sleep(Duration::from_millis(ms));
    ok(id, String::new())
}

/// Only answers: the restart happens after the answer has been sent (main).
pub fn poweroff(id: u64) -> Answer {
    ok(id, String::new())
}

/// What userspace reads to make each known function run.
pub fn trigger_path(target: &str) -> Option<&'static str> {
    coexist_proto::TRIGGER_TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, p)| *p)
}

/// Makes `target` run; the output is what userspace read.
pub fn trigger(id: u64, target: &str) -> Answer {
    let Some(path) = trigger_path(target) else {
        return fail(
            Some(id),
            Some(Errno::EINVAL as i32),
            format!(
                "trigger: unknown target '{target}' (known: {})",
                coexist_proto::TRIGGER_TARGETS
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    };
    match std::fs::read(path) {
        Ok(b) => ok(id, String::from_utf8_lossy(&b).into_owned()),
        Err(e) => fail(Some(id), errno_of(&e), format!("read {path}: {e}")),
    }
}

nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);
nix::ioctl_write_ptr!(rnd_add_entropy, b'R', 0x03, [i32; 2]);

/// RNDADDENTROPY with `bytes` credited as full entropy, then RNDRESEEDCRNG.
fn reseed(bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info: Vec<i32> = vec![(bytes.len() * 8) as i32, bytes.len() as i32];
    for c in bytes.chunks(4) {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        info.push(i32::from_ne_bytes(w));
    }
    // SAFETY: `info` is a rand_pool_info with buf_size bytes after its header.
    unsafe { rnd_add_entropy(f.as_raw_fd(), info.as_ptr() as *const [i32; 2]) }
        .map_err(std::io::Error::from)?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    unsafe { rnd_reseed_crng(f.as_raw_fd()) }.map_err(std::io::Error::from)?;
    Ok(())
}

/// Sets the wall clock, mixes the seed into the entropy pool (a restored
/// guest would otherwise repeat its snapshot's random state), and says who
/// this guest is.
pub fn hello(id: u64, now_unix_ns: u64, seed: &str) -> Answer {
    let ts = nix::sys::time::TimeSpec::new(
        (now_unix_ns / 1_000_000_000) as i64,
        (now_unix_ns % 1_000_000_000) as i64,
    );
    if let Err(e) = nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        return fail(Some(id), Some(e as i32), format!("clock_settime: {e}"));
    }
    let bytes: Vec<u8> = (0..seed.len() / 2)
        .filter_map(|i| u8::from_str_radix(seed.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    // Credited to the input pool and the CRNG reseeded from it at once:
    // without that, guests restored from one snapshot would draw the same
    // numbers until the kernel reseeds by itself (and a guest with no
    // entropy source has an uninitialised CRNG until then).
    if let Err(e) = reseed(&bytes) {
        return fail(
            Some(id),
            errno_of(&e),
            format!("reseed the kernel's CRNG: {e}"),
        );
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    with_data(
        ok(id, format!("hello from {boot_id}")),
        AnswerData::Hello(HelloData {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            kernel_release: kernel_release(),
            uptime_s: uptime(),
            boot_id,
        }),
    )
}
