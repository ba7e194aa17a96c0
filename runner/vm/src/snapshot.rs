//! Snapshot-restored guests. Per (kernel, image, machine size, command
//! line, accelerator, QEMU version) one guest is booted to READY, greeted,
//! stopped and saved through QMP; the state is cached by that content key
//! next to the images (`<cache>/snapshots/<key>/`: `state`, the console log
//! of its boot `boot-console.log`, `meta.json`), published atomically.
//! Each job then starts a new QEMU on that state (`-incoming`), greets the
//! restored agent (clock, entropy, identity: the boot id must be the
//! snapshot's) and runs its case; one VM per job, as with fresh boots.
//!
//! A snapshot that does not restore is made again once; if that does not
//! restore either, the run goes on with fresh boots for that variant and
//! says so.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{accel, Accel, AccelChoice, FailureKind, Vm, VmConfig, VmFailure};
use coexist_core::cache::{self, Cache, KeyHasher};
use coexist_core::events::{self, Event, EventSink};

/// What identifies the guest besides its VM config.
#[derive(Clone, Debug)]
pub struct Ident {
    pub kernel_key: String,
    pub image_key: String,
    pub qemu_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub key: String,
    #[serde(skip)]
    pub dir: PathBuf,
    pub accel: Accel,
    pub boot_id: String,
    pub kernel_release: String,
    /// The boot that was saved: QEMU start to READY, and the save itself.
    pub boot_s: f64,
    pub save_s: f64,
    pub state_bytes: u64,
}

impl Snapshot {
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn boot_console(&self) -> PathBuf {
        self.dir.join("boot-console.log")
    }

    /// For the top of each job's console log.
    pub fn origin(&self) -> String {
        format!(
            "snapshot {} (the boot it was taken from: {})",
            self.key,
            self.boot_console().display()
        )
    }
}

/// The content key of a snapshot.
pub fn key(cfg: &VmConfig, accel: Accel, id: &Ident) -> String {
    let mut h = KeyHasher::new("snapshot-v1");
    h.part("kernel", id.kernel_key.as_bytes())
        .part("image", id.image_key.as_bytes())
        .part("memory", &cfg.memory_mb.to_le_bytes())
        .part("cpus", &cfg.cpus.to_le_bytes())
        .part("cmdline", cfg.kernel_cmdline().as_bytes())
        .part("accel", accel.to_string().as_bytes())
        .part("qemu", id.qemu_version.as_bytes());
    h.finish()
}

fn dir_of(cache: &Cache, key: &str) -> PathBuf {
    cache.dir("snapshots").join(key)
}

/// A published, sound snapshot (its meta reads back, its state is there).
pub fn lookup(cache: &Cache, key: &str) -> Option<Snapshot> {
    let dir = dir_of(cache, key);
    let mut s: Snapshot =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
    s.dir = dir;
    let len = std::fs::metadata(s.state()).ok()?.len();
    (len > 0 && len == s.state_bytes).then_some(s)
}

/// Finds or makes the snapshot of the guest `cfg` boots. `choice` picks
/// the accelerator (auto decides by booting, if not decided yet).
pub fn ensure(
    cache: &Cache,
    cfg: &VmConfig,
    choice: AccelChoice,
    id: &Ident,
    events: &dyn EventSink,
) -> Result<Snapshot, String> {
    let known = match choice {
        AccelChoice::Kvm => Some(Accel::Kvm),
        AccelChoice::Tcg => Some(Accel::Tcg),
        AccelChoice::Auto => accel::resolve(cfg.accel_memory.as_deref(), events),
    };
    if let Some(a) = known {
        if let Some(s) = lookup(cache, &key(cfg, a, id)) {
            return Ok(s);
        }
    }
    make(cache, cfg, choice, id, events)
}

/// Boots, greets, saves and publishes a snapshot (under its lock).
pub fn make(
    cache: &Cache,
    cfg: &VmConfig,
    choice: AccelChoice,
    id: &Ident,
    events: &dyn EventSink,
) -> Result<Snapshot, String> {
    std::fs::create_dir_all(cache.dir("snapshots")).map_err(|e| e.to_string())?;
    let staging = tempfile::Builder::new()
        .prefix(".tmp-snapshot-")
        .tempdir_in(cache.dir("snapshots"))
        .map_err(|e| e.to_string())?;
    let mut boot_cfg = cfg.clone();
    boot_cfg.qmp = true;
    boot_cfg.incoming = None;
    boot_cfg.console_log = staging.path().join("boot-console.log");
    let t0 = Instant::now();
    let mut vm = accel::boot(choice, boot_cfg, events).map_err(|f| format!("{f}"))?;
    let boot_s = vm.ready.boot_s;
    let accel = vm.ready.accel;
    let key = key(cfg, accel, id);
    let dir = dir_of(cache, &key);
    let _lock = cache
        .lock(&format!("snapshot-{key}"), || {
            events.event(&Event::Preparing {
                what: format!("waiting for another run saving snapshot {key}"),
            })
        })
        .map_err(|e| format!("{e:#}"))?;
    if let Some(s) = lookup(cache, &key) {
        return Ok(s);
    }
    events.event(&Event::Preparing {
        what: format!("saving a READY snapshot ({key})"),
    });
    let hello = vm.hello(cfg.boot_timeout).map_err(|f| format!("{f}"))?;
    let t_save = Instant::now();
    let state = staging.path().join("state");
    vm.save(&state)?;
    let snap = Snapshot {
        key: key.clone(),
        dir: dir.clone(),
        accel,
        boot_id: hello.boot_id,
        kernel_release: hello.kernel_release,
        boot_s,
        save_s: t_save.elapsed().as_secs_f64(),
        state_bytes: std::fs::metadata(&state).map(|m| m.len()).unwrap_or(0),
    };
    std::fs::write(
        staging.path().join("meta.json"),
        serde_json::to_vec_pretty(&snap).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    if dir.exists() {
        cache::discard(&dir).map_err(|e| format!("{e:#}"))?;
    }
    let staged = staging.keep();
    cache::publish(&staged, &dir).map_err(|e| format!("{e:#}"))?;
    events::note(
        events,
        format!(
            "snapshot {key}: booted in {boot_s:.2} s, saved in {:.2} s ({:.0} MB), {:.1} s in all",
            snap.save_s,
            snap.state_bytes as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        ),
    );
    lookup(cache, &key).ok_or_else(|| format!("snapshot {key} did not read back"))
}

enum Slot {
    Ready {
        snap: Snapshot,
        remade: bool,
    },
    /// Fresh boots for this variant, and why.
    Off(String),
}

/// The run's snapshots, by variant, shared by its workers.
pub struct Snapshots {
    cache: Cache,
    slots: Mutex<BTreeMap<String, (Slot, VmConfig, Ident)>>,
}

impl Snapshots {
    pub fn new(cache: &Cache) -> Snapshots {
        Snapshots {
            cache: cache.clone(),
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// Makes (or finds) the variant's snapshot from its base config (no
    /// console log of its own, no allowlist: the job sets those).
    pub fn prepare(
        &self,
        variant: &str,
        base: &VmConfig,
        choice: AccelChoice,
        id: Ident,
        events: &dyn EventSink,
    ) -> Result<(), String> {
        let snap = ensure(&self.cache, base, choice, &id, events)?;
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).insert(
            variant.to_string(),
            (
                Slot::Ready {
                    snap,
                    remade: false,
                },
                base.clone(),
                id,
            ),
        );
        Ok(())
    }

    /// The snapshot a job of `variant` restores, if any.
    pub fn get(&self, variant: &str) -> Option<Snapshot> {
        match self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(variant)
        {
            Some((Slot::Ready { snap, .. }, _, _)) => Some(snap.clone()),
            _ => None,
        }
    }

    /// Starts a job's guest: restored from the variant's snapshot, or
    /// booted fresh when it has none or it does not restore (after one
    /// remake). `cfg` is the job's (console log, allowlist).
    pub fn start(
        &self,
        variant: &str,
        cfg: VmConfig,
        choice: AccelChoice,
        events: &dyn EventSink,
    ) -> Result<Vm, VmFailure> {
        for _ in 0..2 {
            let Some(snap) = self.get(variant) else {
                return accel::boot(choice, cfg, events);
            };
            let mut c = cfg.clone();
            c.accel = snap.accel;
            c.incoming = Some(snap.state());
            c.qmp = false;
            match Vm::restore(c, &snap.origin(), &snap.boot_id) {
                Err(f) if f.kind == FailureKind::RestoreFailed => {
                    self.restore_failed(variant, &snap, &f, choice, events)
                }
                r => return r,
            }
        }
        accel::boot(choice, cfg, events)
    }

    /// A snapshot did not restore: made again once, then fresh boots.
    fn restore_failed(
        &self,
        variant: &str,
        bad: &Snapshot,
        f: &VmFailure,
        choice: AccelChoice,
        events: &dyn EventSink,
    ) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some((slot, base, id)) = slots.get_mut(variant) else {
            return;
        };
        let remade = match slot {
            // Another worker already replaced it: use the new one.
            Slot::Ready { snap, .. } if snap.key != bad.key || snap.boot_id != bad.boot_id => {
                return
            }
            Slot::Ready { remade, .. } => *remade,
            Slot::Off(_) => return,
        };
        let first = f.message.lines().next().unwrap_or("").to_string();
        if remade {
            let why = format!(
                "snapshot {} of {variant} did not restore after it was made again ({first})",
                bad.key
            );
            events::note(
                events,
                format!("{why}; fresh boots for {variant} from now on"),
            );
            *slot = Slot::Off(why);
            return;
        }
        events::note(
            events,
            format!(
                "snapshot {} of {variant} did not restore ({first}); making it again",
                bad.key
            ),
        );
        let _ = cache::discard(&bad.dir);
        let remake = make(&self.cache, base, choice, id, events);
        *slot = match remake {
            Ok(snap) => Slot::Ready { snap, remade: true },
            Err(e) => {
                events::note(
                    events,
                    format!(
                        "snapshot of {variant} cannot be made ({e}); fresh boots for {variant}"
                    ),
                );
                Slot::Off(e)
            }
        };
    }

    /// Variants on fresh boots, and why.
    pub fn off(&self) -> Vec<(String, String)> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(v, (s, _, _))| match s {
                Slot::Off(why) => Some((v.clone(), why.clone())),
                Slot::Ready { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_covers_every_input() {
        let cfg = VmConfig::new("/k".into(), "/i".into(), "/l".into());
        let id = Ident {
            kernel_key: "k1".into(),
            image_key: "i1".into(),
            qemu_version: "QEMU 7.2".into(),
        };
        let k = key(&cfg, Accel::Tcg, &id);
        assert_eq!(k, key(&cfg, Accel::Tcg, &id), "stable");
        let mut other = Vec::new();
        other.push(key(&cfg, Accel::Kvm, &id));
        let mut c = cfg.clone();
        c.memory_mb = 768;
        other.push(key(&c, Accel::Tcg, &id));
        let mut c = cfg.clone();
        c.cpus = 1;
        other.push(key(&c, Accel::Tcg, &id));
        let mut c = cfg.clone();
        c.append = "x=1".into();
        other.push(key(&c, Accel::Tcg, &id));
        for (f, v) in [("kernel", "k2"), ("image", "i2"), ("qemu", "QEMU 8.0")] {
            let mut i = id.clone();
            match f {
                "kernel" => i.kernel_key = v.into(),
                "image" => i.image_key = v.into(),
                _ => i.qemu_version = v.into(),
            }
            other.push(key(&cfg, Accel::Tcg, &i));
        }
        for o in &other {
            assert_ne!(&k, o);
        }
        // The console log path and the allowlist are the job's, not the guest's.
        let mut c = cfg.clone();
        c.console_log = "/other".into();
        c.allow = vec!["x".into()];
        assert_eq!(key(&c, Accel::Tcg, &id), k);
    }
}
