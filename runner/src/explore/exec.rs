//! The executor: one sequence in one guest restored from the variant's
//! READY snapshot. Each operation becomes the model's probes (the
//! operation's step, then the checks of every function), each sent to the
//! agent and checked by its step family (`steps::check`); a splat
//! attributed to a step (or seen between steps) breaks `no_splat`; a VM
//! that dies, hangs or panics breaks `guest_alive`. The first broken
//! invariant ends the sequence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coexist_proto::Step;
use serde::{Deserialize, Serialize};

use super::model::{Invariant, Model, Op, State};
use super::probes::{prologue, Probe};
use super::shrink::{normalize_title, Replay, Signature, System};
use crate::events::{self, Event, EventSink, ExploreEvent};
use crate::guest::steps::Missing;
use crate::guest::{self, run_steps, Flow, HandleKey, Job, Machine, Planned};
use crate::image::Prepared;
use crate::steps;
use crate::vm::snapshot::Snapshots;
use crate::vm::{Blame, Splat, VmFailure};

/// Each step's host-side timeout.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What sequences run on: the prepared variant, its machine and
/// snapshots, and the rule the model holds it to.
#[derive(Clone)]
pub struct Target {
    pub prepared: Arc<Prepared>,
    pub snapshots: Option<Arc<Snapshots>>,
    pub machine: Machine,
    pub model: Model,
    /// The area's function names (`area.yaml`), for what a coverage
    /// twin's sequences reached of them.
    pub area: Vec<String>,
}

/// A broken invariant, with its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Broken {
    pub invariant: Invariant,
    /// The operation it broke at (index into the sequence); None: the prologue.
    pub op_index: Option<usize>,
    pub op: Option<String>,
    /// The step that showed it, as sent.
    pub step: Step,
    /// What the model required of that step.
    pub expected: String,
    /// What the step showed, and the mismatches.
    pub seen: String,
    pub splats: Vec<Splat>,
}

impl Broken {
    pub fn signature(&self) -> Signature {
        Signature {
            invariant: self.invariant,
            splat: self.splats.first().map(|s| normalize_title(&s.title)),
        }
    }
}

/// Harness trouble in a sequence (see [`crate::vm::Blame`]): no verdict.
#[derive(Clone, Debug)]
pub enum SeqError {
    /// No guest could be had.
    Start(VmFailure),
    /// The host or the harness failed during a step.
    Step(VmFailure),
    /// The guest did not power off after the sequence held.
    Shutdown(VmFailure),
}

impl std::fmt::Display for SeqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (prefix, e) = match self {
            SeqError::Start(e) | SeqError::Step(e) => ("", e),
            SeqError::Shutdown(e) => ("shutdown: ", e),
        };
        write!(f, "{prefix}{:?}: {}", e.kind, e.message)
    }
}

/// What one sequence did.
#[derive(Clone, Debug)]
pub struct SeqRun {
    /// Agent steps answered.
    pub steps: usize,
    /// Operations completed with every check holding.
    pub ops_done: usize,
    pub broken: Option<Broken>,
    /// Harness trouble (the guest could not be had): no verdict.
    pub error: Option<SeqError>,
    pub console_log: PathBuf,
    pub secs: f64,
}

/// The expectation, for people.
pub fn describe_expect(p: &Probe) -> String {
    let mut v = serde_json::to_value(&p.expect).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        if m.is_empty() {
            return "success".into();
        }
    }
    if let serde_json::Value::Object(m) = &mut v {
        let mut flat = serde_json::Map::new();
        for (k, val) in m.iter() {
            match val {
                serde_json::Value::Object(inner) => flat.extend(inner.clone()),
                _ => {
                    flat.insert(k.clone(), val.clone());
                }
            }
        }
        v = serde_json::Value::Object(flat);
    }
    v.to_string()
}

/// Where a sequence whose console log is `log` leaves its gcov counts
/// (a coverage twin's): `<log without .log>.counts/`.
pub fn counts_dir(log: &Path) -> PathBuf {
    log.with_extension("counts")
}

fn log_name(log: &Path) -> String {
    log.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs `ops` in a fresh guest; the console log goes to `log`; on a
/// coverage twin, its counts go to [`counts_dir`].
pub fn run_sequence(g: &Target, ops: &[Op], log: PathBuf, events: &dyn EventSink) -> SeqRun {
    let t0 = Instant::now();
    let mut run = SeqRun {
        steps: 0,
        ops_done: 0,
        broken: None,
        error: None,
        console_log: log.clone(),
        secs: 0.0,
    };
    let started = guest::start(
        &g.prepared,
        &g.machine,
        g.snapshots.as_deref(),
        Job::logged(log),
        events,
    );
    let mut vm = match started {
        Ok(vm) => vm,
        Err(f) => {
            run.error = Some(SeqError::Start(f));
            run.secs = t0.elapsed().as_secs_f64();
            return run;
        }
    };
    // A coverage twin's counts are this sequence's own, read back into
    // `<log>.counts/` (coverage::of_explore finds them there).
    let covered = !g.prepared.manifest.profiled.is_empty();
    if covered {
        if let Err(e) = guest::coverage::reset(&mut vm) {
            events::note(events, format!("{}: {e}", log_name(&run.console_log)));
        }
    }
    let mut state = State::new(g.model);
    // The prologue (op None), then each operation's probes, in one plan;
    // `group[i]` is the operation of the plan's step i.
    let groups: Vec<(Option<usize>, Vec<Probe>)> = std::iter::once((None, prologue()))
        .chain(
            ops.iter()
                .enumerate()
                .map(|(i, op)| (Some(i), state.apply(op))),
        )
        .collect();
    let mut group = Vec::new();
    let mut probes = Vec::new();
    let mut plan = Vec::new();
    for (index, ps) in groups {
        for p in ps {
            let key = p.prog.map(HandleKey::Prog);
            plan.push(Planned {
                gives: key.clone(),
                takes: key.map(|k| (k, Missing::Send)),
                ..Planned::new(p.step.clone(), STEP_TIMEOUT)
            });
            group.push(index);
            probes.push(p);
        }
    }
    let ended = run_steps(&mut vm, &plan, |a| {
        let p = &probes[a.index];
        let op_index = group[a.index];
        let broken = |inv: Invariant, seen: String, splats: Vec<Splat>| Broken {
            invariant: inv,
            op_index,
            op: op_index.map(|i| ops[i].to_string()),
            step: a.step.clone(),
            expected: describe_expect(p),
            seen,
            splats,
        };
        match &a.outcome {
            Err(f) => {
                match f.kind.blame() {
                    Blame::Host | Blame::Harness => {
                        run.error = Some(SeqError::Step(f.clone()));
                    }
                    Blame::Boot | Blame::Kernel => {
                        let splats = f.panic.as_deref().cloned().into_iter().collect();
                        run.broken = Some(broken(
                            Invariant::GuestAlive,
                            format!("{:?}: {}", f.kind, f.message),
                            splats,
                        ));
                    }
                }
                Flow::Stop
            }
            Ok(out) => {
                run.steps += 1;
                let mismatches = steps::check(&p.expect, &out.answer);
                let seen = || {
                    let mut s = answer_text(&out.answer);
                    for m in &mismatches {
                        s.push_str("; ");
                        s.push_str(m);
                    }
                    s
                };
                if !out.splats.is_empty() || !a.between.is_empty() {
                    let mut splats = out.splats.clone();
                    splats.extend(a.between.iter().cloned());
                    run.broken = Some(broken(Invariant::NoSplat, seen(), splats));
                    return Flow::Stop;
                }
                if !mismatches.is_empty() {
                    run.broken = Some(broken(p.invariant, seen(), Vec::new()));
                    return Flow::Stop;
                }
                Flow::Next
            }
        }
    });
    // Operations whose probes all held: every one before the operation
    // the plan stopped in (the prologue is not one).
    run.ops_done = match ended.at() {
        None => ops.len(),
        Some(i) => group[i].unwrap_or(0),
    };
    let alive = run
        .broken
        .as_ref()
        .is_none_or(|b| b.invariant != Invariant::GuestAlive);
    if covered && run.error.is_none() && alive {
        if let Err(e) = guest::coverage::collect(&mut vm, &counts_dir(&run.console_log)) {
            events::note(events, format!("{}: {e}", log_name(&run.console_log)));
        }
    }
    if run.broken.is_some() || run.error.is_some() {
        vm.kill();
    } else if let Err(f) = vm.shutdown() {
        run.error = Some(SeqError::Shutdown(f));
    }
    run.secs = t0.elapsed().as_secs_f64();
    run
}

/// An answer in one line: ok or the errno, the output, the data.
pub fn answer_text(a: &coexist_proto::Answer) -> String {
    let head = if a.ok {
        "ok".to_string()
    } else {
        format!(
            "failed {}{}",
            a.errno_name.clone().unwrap_or_default(),
            a.error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )
    };
    let mut s = head;
    if !a.output.is_empty() {
        s.push_str(&format!(", output {:?}", crate::text::shown(&a.output)));
    }
    if a.data.is_some() {
        s.push_str(&format!(", data {}", steps::data_text(a)));
    }
    s
}

/// The real system for the shrinker: each replay in a fresh guest.
pub struct VmSystem<'a> {
    /// The sequence being shrunk (for its events).
    pub index: u64,
    pub guest: &'a Target,
    pub log_dir: PathBuf,
    pub events: &'a dyn EventSink,
    pub runs: usize,
    pub steps: usize,
}

impl System for VmSystem<'_> {
    fn replay(&mut self, ops: &[Op]) -> Replay {
        self.runs += 1;
        let log = self.log_dir.join(format!("replay-{}.log", self.runs));
        let r = run_sequence(self.guest, ops, log, self.events);
        self.steps += r.steps;
        let failed = r
            .broken
            .and_then(|b| b.op_index.map(|i| (b.signature(), i)));
        self.events.event(&Event::Explore(ExploreEvent::ShrinkStep {
            index: self.index,
            replay: self.runs,
            len: ops.len(),
            failed: failed.is_some(),
        }));
        Replay { failed }
    }

    fn stopped(&self) -> bool {
        crate::teardown::stopping()
    }
}
