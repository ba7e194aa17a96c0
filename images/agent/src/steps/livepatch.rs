//! Livepatch modules: load and wait for the transition, disable and wait
//! for the patch to go away, unload.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use coexist_proto::{Answer, AnswerData, LivepatchData, LivepatchState};
use nix::errno::Errno;

use super::{basic, errno_of, fail, ok, wait_until, with_data};

const LIVEPATCH_SYSFS: &str = "/sys/kernel/livepatch";
const DEFAULT_TRANSITION_TIMEOUT_MS: u64 = 30_000;

/// insmod, then waits until `/sys/kernel/livepatch/<name>/transition`
/// reads 0. The data (name, transition time) comes with a timeout too.
pub fn livepatch_load(id: u64, module: &str, timeout_ms: Option<u64>) -> Answer {
    let a = basic::insmod(id, module, "");
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
    let data = |transition_ms| {
        AnswerData::Livepatch(LivepatchData {
            name: Some(name.clone()),
            transition_ms,
        })
    };
    match waited {
        Ok(ms) => with_data(
            ok(id, format!("{name}: transition done in {ms:.1} ms")),
            data(ms),
        ),
        Err(ms) => with_data(
            fail(
                Some(id),
                Some(Errno::ETIMEDOUT as i32),
                format!(
                    "{name}: transition not done after {ms:.0} ms ({})",
                    transition.display()
                ),
            ),
            data(ms),
        ),
    }
}

/// Writes 0 to `enabled`, then waits until the patch's directory is gone
/// and klp has let go of its module: the sysfs directory goes in
/// `klp_free_patch_start()`, the module reference later, in the work that
/// `klp_free_patch_async()` schedules (`module_put()` in
/// `klp_free_patch_finish()`); a `rmmod` between the two fails with
/// EAGAIN. A patch's name is its module's name.
pub fn livepatch_disable(id: u64, name: &str, timeout_ms: Option<u64>) -> Answer {
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
    let refcnt = Path::new("/sys/module")
        .join(name.replace('-', "_"))
        .join("refcnt");
    let released = || {
        std::fs::read_to_string(&refcnt)
            .map(|r| r.trim() == "0")
            .unwrap_or(true)
    };
    match wait_until(timeout_ms.unwrap_or(DEFAULT_TRANSITION_TIMEOUT_MS), || {
        !dir.exists() && released()
    }) {
        Ok(ms) => with_data(
            ok(id, format!("{name}: disabled in {ms:.1} ms")),
            AnswerData::Livepatch(LivepatchData {
                name: None,
                transition_ms: ms,
            }),
        ),
        Err(ms) => fail(
            Some(id),
            Some(Errno::ETIMEDOUT as i32),
            if dir.exists() {
                format!("{name}: {} still there after {ms:.0} ms", dir.display())
            } else {
                format!(
                    "{name}: disabled, but {} is not 0 after {ms:.0} ms",
                    refcnt.display()
                )
            },
        ),
    }
}

/// rmmod of the livepatch module.
pub fn livepatch_unload(id: u64, name: &str) -> Answer {
    basic::rmmod(id, name)
}

/// Reads `/sys/kernel/livepatch/<name>/{enabled,transition}`. A patch that
/// is not there is an answer (`present: false`), not a failure.
pub fn livepatch_state(id: u64, name: &str) -> Answer {
    let dir = Path::new(LIVEPATCH_SYSFS).join(name);
    if !dir.is_dir() {
        return with_data(
            ok(id, format!("{name}: absent")),
            AnswerData::LivepatchState(LivepatchState::default()),
        );
    }
    let flag = |f: &str| -> Result<bool, (std::io::Error, std::path::PathBuf)> {
        let p = dir.join(f);
        std::fs::read_to_string(&p)
            .map(|s| s.trim() == "1")
            .map_err(|e| (e, p))
    };
    let (enabled, transition) = match (flag("enabled"), flag("transition")) {
        (Ok(e), Ok(t)) => (e, t),
        (Err((e, p)), _) | (_, Err((e, p))) => {
            return fail(Some(id), errno_of(&e), format!("read {}: {e}", p.display()))
        }
    };
    with_data(
        ok(
            id,
            format!(
                "{name}: enabled={} transition={}",
                enabled as u8, transition as u8
            ),
        ),
        AnswerData::LivepatchState(LivepatchState {
            present: true,
            enabled,
            transition,
        }),
    )
}
