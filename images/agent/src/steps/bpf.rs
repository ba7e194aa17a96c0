//! BPF trampoline programs (bpf_attach, bpf_detach, bpf_stats), loaded with
//! libbpf-rs from the fixture objects in /fixtures/bpf. Each attachment opens
//! its own copy of the object with only the chosen program loaded, so its
//! maps are its own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use coexist_proto::{Answer, AnswerData, AttachData, BpfKind, BpfStats};
use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder};
use nix::errno::Errno;

use super::{fail, ok, with_data};

pub const FIXTURE_DIR: &str = coexist_proto::BPF_FIXTURE_DIR;
pub const DEFAULT_OBJECT: &str = "coexist.bpf.o";

struct Attached {
    // Field order matters: the link (detach) goes before the object.
    link: Link,
    object: Object,
    program: String,
    target: String,
}

/// Attached programs by handle.
#[derive(Default)]
pub struct Attachments {
    next: u32,
    live: BTreeMap<u32, Attached>,
}

/// libbpf-rs keeps the OS error private; its text ends in "(os error N)".
fn errno_of(e: &libbpf_rs::Error) -> Option<i32> {
    let s = format!("{e:#}");
    let i = s.rfind("(os error ")?;
    s[i + "(os error ".len()..].split(')').next()?.parse().ok()
}

fn bpf_fail(id: u64, what: &str, e: &libbpf_rs::Error) -> Answer {
    fail(Some(id), errno_of(e), format!("{what}: {e:#}"))
}

/// The struct stats layout of coexist.bpf.c.
fn decode_stats(v: &[u8]) -> Option<BpfStats> {
    let u64_at = |o: usize| {
        v.get(o..o + 8)
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
    };
    let hits = u64_at(0)?;
    let arg0 = u64_at(8)?;
    let ret = u64_at(16)? as i64;
    let len = v
        .get(24..28)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))? as usize;
    let seen = v.get(28..28 + len.min(96)).unwrap_or_default();
    Some(BpfStats {
        hits,
        arg0,
        ret,
        seen: String::from_utf8_lossy(seen).into_owned(),
    })
}

impl Attachments {
    pub fn attach(
        &mut self,
        id: u64,
        program: &str,
        kind: BpfKind,
        target: &str,
        object: Option<&str>,
        fmod_ret: i64,
    ) -> Answer {
        let path = PathBuf::from(FIXTURE_DIR).join(object.unwrap_or(DEFAULT_OBJECT));
        let mut open = match ObjectBuilder::default().open_file(&path) {
            Ok(o) => o,
            Err(e) => return bpf_fail(id, &format!("open {}", path.display()), &e),
        };
        let mut found = false;
        for mut p in open.progs_mut() {
            let name = p.name().to_string_lossy().into_owned();
            if name != program {
                p.set_autoload(false);
                continue;
            }
            found = true;
            let section = p.section().to_string_lossy().into_owned();
            if BpfKind::of_section(&section) != Some(kind) {
                return fail(
                    Some(id),
                    Some(Errno::EINVAL as i32),
                    format!(
                        "program {program} is a '{section}' program, not '{}'",
                        kind.section()
                    ),
                );
            }
            if let Err(e) = p.set_attach_target(0, Some(target.to_string())) {
                return bpf_fail(id, &format!("set attach target {target}"), &e);
            }
        }
        if !found {
            return fail(
                Some(id),
                Some(Errno::ENOENT as i32),
                format!("no program '{program}' in {}", path.display()),
            );
        }
        let obj = match open.load() {
            Ok(o) => o,
            Err(e) => return bpf_fail(id, &format!("load {program} for {target}"), &e),
        };
        if fmod_ret != 0 {
            if let Some(cfg) = obj.maps().find(|m| m.name() == "cx_config") {
                if let Err(e) =
                    cfg.update(&0u32.to_ne_bytes(), &fmod_ret.to_ne_bytes(), MapFlags::ANY)
                {
                    return bpf_fail(id, "set fmod_ret value", &e);
                }
            }
        }
        let link = {
            let Some(p) = obj.progs_mut().find(|p| p.name() == program) else {
                return fail(
                    Some(id),
                    Some(Errno::ENOENT as i32),
                    format!("{program} vanished after load"),
                );
            };
            match p.attach_trace() {
                Ok(l) => l,
                Err(e) => return bpf_fail(id, &format!("attach {program} to {target}"), &e),
            }
        };
        self.next += 1;
        let handle = self.next;
        self.live.insert(
            handle,
            Attached {
                link,
                object: obj,
                program: program.to_string(),
                target: target.to_string(),
            },
        );
        with_data(
            ok(id, format!("handle {handle}: {program} on {target}")),
            AnswerData::Attach(AttachData { handle }),
        )
    }

    /// Detaches `handle`, or the most recent attachment when None.
    pub fn detach(&mut self, id: u64, handle: Option<u32>) -> Answer {
        let h = match handle.or_else(|| self.live.keys().next_back().copied()) {
            Some(h) => h,
            None => {
                return fail(
                    Some(id),
                    Some(Errno::ENOENT as i32),
                    "nothing is attached".into(),
                )
            }
        };
        match self.live.remove(&h) {
            Some(a) => {
                let Attached {
                    link,
                    object,
                    program,
                    target,
                } = a;
                // Closing the link fd detaches a tracing program
                // (BPF_LINK_DETACH is not supported for them on 6.1).
                drop(link);
                drop(object);
                ok(id, format!("handle {h}: {program} detached from {target}"))
            }
            None => fail(
                Some(id),
                Some(Errno::ENOENT as i32),
                format!("no BPF handle {h}"),
            ),
        }
    }

    pub fn stats(&self, id: u64, handle: u32) -> Answer {
        let Some(a) = self.live.get(&handle) else {
            return fail(
                Some(id),
                Some(Errno::ENOENT as i32),
                format!("no BPF handle {handle}"),
            );
        };
        let Some(map) = a.object.maps().find(|m| m.name() == "stats") else {
            return fail(
                Some(id),
                Some(Errno::ENOENT as i32),
                "the object has no 'stats' map".into(),
            );
        };
        match map.lookup(&0u32.to_ne_bytes(), MapFlags::ANY) {
            Ok(Some(v)) => match decode_stats(&v) {
                Some(s) => with_data(
                    ok(
                        id,
                        format!(
                            "hits={} arg0={:#x} ret={} seen={:?}",
                            s.hits, s.arg0, s.ret, s.seen
                        ),
                    ),
                    AnswerData::Stats(s),
                ),
                None => fail(
                    Some(id),
                    Some(Errno::EINVAL as i32),
                    format!("stats value of {} bytes", v.len()),
                ),
            },
            Ok(None) => fail(
                Some(id),
                Some(Errno::ENOENT as i32),
                "stats[0] missing".into(),
            ),
            Err(e) => bpf_fail(id, "read stats", &e),
        }
    }

    pub fn detach_all(&mut self) {
        self.live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_layout() {
        let mut v = vec![0u8; 28 + 96];
        v[0..8].copy_from_slice(&3u64.to_ne_bytes());
        v[8..16].copy_from_slice(&41u64.to_ne_bytes());
        v[16..24].copy_from_slice(&(-16i64).to_ne_bytes());
        v[24..28].copy_from_slice(&5u32.to_ne_bytes());
        v[28..33].copy_from_slice(b"hello");
        let s = decode_stats(&v).unwrap();
        assert_eq!(
            (s.hits, s.arg0, s.ret, s.seen.as_str()),
            (3, 41, -16, "hello")
        );
        assert!(decode_stats(&v[..20]).is_none());
    }

    #[test]
    fn errno_from_libbpf_error_text() {
        let e = libbpf_rs::Error::from_raw_os_error(16);
        assert_eq!(errno_of(&e), Some(16));
    }
}
