//! A running guest: [`Vm`], booted to the agent's READY or restored from a
//! snapshot and greeted, runs steps, is saved, powered off or killed. The
//! reading of its messages under the watchdogs (boot deadline, stall
//! deadline, per-step timeout, panic) is its [`Link`]'s.
//! A [`Vm`] exists only once the agent said READY.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use coexist_proto::{AnswerData, HelloData, Step};

use super::link::{Link, ReadyInfo, StepOutcome};
use super::qemu::{migrate_uri, VmConfig};
use super::qmp::Qmp;
use super::{FailureKind, Splat, VmFailure};
use coexist_core::text::clip;

/// A guest whose agent is READY.
pub struct Vm {
    link: Link,
    pub ready: ReadyInfo,
    next_id: u64,
    restored: bool,
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
        let mut link = Link::start(cfg, None)?;
        let ready = link.wait_ready()?;
        Ok(Vm {
            link,
            ready,
            next_id: 1,
            restored: false,
        })
    }

    /// Starts QEMU on a saved state (`cfg.incoming`) and greets the
    /// restored agent: its clock is set, its entropy pool re-seeded, and
    /// its boot id must be `boot_id` (the snapshot's guest). `origin` goes
    /// at the top of the console log.
    pub fn restore(cfg: VmConfig, origin: &str, boot_id: &str) -> Result<Vm, VmFailure> {
        let link = Link::start(cfg, Some(origin))?;
        let accel = link.cfg.accel;
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
        vm.handshake(boot_id)?;
        Ok(vm)
    }

    /// The restore handshake of [`Vm::restore`]: a hello (clock, entropy)
    /// whose boot id must be `boot_id`. Fills in [`Vm::ready`]; on failure
    /// QEMU is killed.
    fn handshake(&mut self, boot_id: &str) -> Result<(), VmFailure> {
        // A restored guest answers at once (a tenth of a second here); one
        // that does not within this is not coming back.
        let timeout = self.link.cfg.boot_timeout.min(RESTORE_DEADLINE);
        let h = match self.hello(timeout) {
            Ok(h) => h,
            Err(f) => {
                let msg = format!("the restored guest did not answer a hello: {}", f.message);
                return Err(self.restore_failed(msg));
            }
        };
        if h.boot_id != boot_id {
            let msg = format!(
                "the restored guest is not the snapshot's (boot id {}, expected {boot_id})",
                h.boot_id
            );
            return Err(self.restore_failed(msg));
        }
        self.ready.kernel_release = h.kernel_release;
        self.ready.guest_uptime_s = h.uptime_s;
        self.ready.boot_s = self.link.started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Kills QEMU and builds the failure of a restore.
    fn restore_failed(&mut self, message: String) -> VmFailure {
        let mut f = self
            .link
            .failure(FailureKind::RestoreFailed, message, None, None);
        self.kill();
        f.elapsed_s = self.link.started.elapsed().as_secs_f64();
        f
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
                let msg = clip(&format!("hello: {:?}", out.answer), 1024);
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
        let t0 = Instant::now();
        self.link.send(id, &step)?;
        self.link.read_answer(id, step, t0, timeout)
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
