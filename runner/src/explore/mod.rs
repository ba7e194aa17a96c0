//! `explore`: model-based random sequences of livepatch, BPF trampoline
//! and DIRECT ftrace operations on two functions, each sequence in its own
//! guest restored from the variant's READY snapshot, checked after every
//! operation against a pure model; a failing sequence is shrunk to a
//! minimal one, rerun three times, and written as a finding with a ready
//! suite file that reproduces it.
//!
//! - `model`: the operations, the abstract state, the rule's predictions
//!   and the checks after each operation (pure; unit tested).
//! - `gen`: the seeded generator.
//! - `exec`: one sequence in one guest, every step checked.
//! - `shrink`: the shrinker, over any [`shrink::System`].
//! - `repro`: a finding as a suite file.
//!
//! This stage sits above `run` (it reuses its machine and run ids) and
//! below `report` and the CLI; it prints nothing (progress goes out as
//! events).

pub mod exec;
pub mod gen;
pub mod model;
pub mod repro;
pub mod shrink;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::build::variant;
use crate::events::{self, EventSink};
use crate::record::Host;
use crate::run::Machine;
use crate::teardown;
use crate::vm::snapshot::Snapshots;
use crate::vm::Splat;
use crate::workspace::Workspace;
use exec::{Broken, Target};
use model::{Invariant, Op, Refusal, Rule};
use shrink::Signature;

pub const SCHEMA: &str = "coexist-explore/1";

/// How long a run explores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    Time(Duration),
    Sequences(u64),
}

#[derive(Clone, Debug)]
pub struct ExploreRequest {
    pub variant: String,
    pub seed: u64,
    pub budget: Budget,
    pub max_len: usize,
    pub workers: usize,
    pub machine: Machine,
    /// Default: `results/<run-id>` in the project.
    pub results_dir: Option<PathBuf>,
    /// Most candidates a shrink replays.
    pub max_shrink_replays: usize,
    /// How many times the minimal sequence is rerun.
    pub reruns: usize,
    /// Failing sequences shrunk per signature; later ones only count.
    pub shrinks_per_signature: usize,
}

impl ExploreRequest {
    pub fn check(&self) -> Result<()> {
        if !(1..=64).contains(&self.max_len) {
            bail!("--max-len {}: from 1 to 64 operations", self.max_len);
        }
        if self.workers == 0 {
            bail!("-j 0: at least one VM at a time");
        }
        if let Budget::Sequences(0) = self.budget {
            bail!("--sequences 0: at least one sequence");
        }
        Ok(())
    }
}

/// One operation of a finding, for people and for replay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpRecord {
    pub text: String,
    pub op: Op,
}

/// A finding: one minimal sequence and how it fails, listed once with a
/// count of the sequences that led to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub id: usize,
    pub invariant: Invariant,
    /// The minimal sequence, calls excluded.
    pub sequence: Vec<OpRecord>,
    /// The minimal sequence as replayed (with any calls it kept).
    pub replayed: Vec<OpRecord>,
    /// The operation it broke at (1-based, in `replayed`), and that step.
    pub at_op: Option<usize>,
    pub step: serde_json::Value,
    pub expected: String,
    pub seen: String,
    pub splats: Vec<Splat>,
    /// The seed of the sequence that first found it (hex).
    pub seed: String,
    /// The other sequences that failed the same way (seeds, hex).
    pub also_seeds: Vec<String>,
    pub count: usize,
    /// The failing sequence before shrinking (its length in operations).
    pub original_len: usize,
    pub shrink_replays: usize,
    pub shrink_s: f64,
    /// No single operation can be removed (false: the replay cap was hit).
    pub minimal: bool,
    /// How often the minimal sequence failed the same way when rerun
    /// ("3/3" in explore.json).
    pub reproduced: Reproduced,
    /// The suite file that reproduces it, relative to the results dir.
    pub repro: String,
    pub console_log: PathBuf,
}

/// How often a finding's minimal sequence failed the same way when rerun:
/// `times` of `runs`, which a stop may have cut short. Written as
/// "3/3" or "1/3 (interrupted)".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Reproduced {
    pub times: usize,
    pub runs: usize,
    pub interrupted: bool,
}

impl std::fmt::Display for Reproduced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.times, self.runs)?;
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        Ok(())
    }
}

impl From<Reproduced> for String {
    fn from(r: Reproduced) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for Reproduced {
    type Error = String;
    fn try_from(s: String) -> Result<Reproduced, String> {
        let (head, interrupted) = match s.strip_suffix(" (interrupted)") {
            Some(h) => (h, true),
            None => (s.as_str(), false),
        };
        let parsed = head
            .split_once('/')
            .and_then(|(t, r)| Some((t.parse().ok()?, r.parse().ok()?)));
        match parsed {
            Some((times, runs)) => Ok(Reproduced {
                times,
                runs,
                interrupted,
            }),
            None => Err(format!("reproduced: expected 'N/M', got {s:?}")),
        }
    }
}

impl Finding {
    pub fn signature(&self) -> Signature {
        Signature {
            invariant: self.invariant,
            splat: self
                .splats
                .first()
                .map(|s| shrink::normalize_title(&s.title)),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExploreStats {
    pub sequences: u64,
    /// Sequences that failed (each led to a finding or added to its count).
    pub failing: u64,
    /// Sequences the harness could not run (no guest): no verdict.
    pub errors: u64,
    /// Agent steps answered while exploring (shrinking and reruns apart).
    pub steps: u64,
    pub ops: u64,
    pub shrink_steps: u64,
    pub shrink_s: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExploreReport {
    pub schema: String,
    pub run_id: String,
    pub started: String,
    pub variant: String,
    pub kernel_release: Option<String>,
    pub rule: Rule,
    /// The run's seed (decimal and hex).
    pub seed: u64,
    pub seed_hex: String,
    pub max_len: usize,
    pub jobs: usize,
    pub budget: String,
    pub accel: Option<String>,
    pub sequences: u64,
    pub steps: u64,
    pub ops: u64,
    pub failing_sequences: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub steps_per_s: f64,
    pub sequences_per_min: f64,
    pub median_shrink_s: Option<f64>,
    pub findings: Vec<Finding>,
    pub complete: bool,
    pub incomplete: Option<String>,
    /// The first failure of harness trouble, if any, for people.
    pub first_error: Option<String>,
    /// What was explored: completed operations by kind, function and
    /// result (`attach fexit target -> EBUSY`), and the states each
    /// function was in after them (`state target: livepatch enabled;
    /// fentry, fmod_ret(777)`), with counts.
    pub coverage: std::collections::BTreeMap<String, u64>,
    /// Failing sequences not shrunk (their signature was shrunk enough
    /// already), by signature.
    pub unshrunk: Vec<Unshrunk>,
}

impl ExploreReport {
    /// 1 when something was found, 0 when the budget ran out clean, 2
    /// when nothing was found but some sequences could not run (harness
    /// trouble: the budget was not spent exploring).
    pub fn exit_code(&self) -> u8 {
        if !self.findings.is_empty() {
            1
        } else if self.errors > 0 {
            2
        } else {
            0
        }
    }
}

/// Renumbers program ids in order of appearance (for comparing sequences).
pub fn canonical(ops: &[Op]) -> Vec<Op> {
    let mut map = std::collections::BTreeMap::new();
    let mut id_of = |id: u32| {
        let n = map.len() as u32 + 1;
        *map.entry(id).or_insert(n)
    };
    ops.iter()
        .map(|o| match *o {
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => Op::Attach {
                id: id_of(id),
                func,
                kind,
                fmod_ret,
            },
            Op::Detach { id } => Op::Detach { id: id_of(id) },
            other => other,
        })
        .collect()
}

fn records(ops: &[Op]) -> Vec<OpRecord> {
    ops.iter()
        .map(|o| OpRecord {
            text: o.to_string(),
            op: *o,
        })
        .collect()
}

struct Shared<'a> {
    req: &'a ExploreRequest,
    guest: Target,
    dir: PathBuf,
    events: &'a dyn EventSink,
    next: AtomicU64,
    done: AtomicU64,
    steps: AtomicU64,
    ops: AtomicU64,
    failing: AtomicU64,
    errors: AtomicU64,
    shrink_steps: AtomicU64,
    shrinking: AtomicUsize,
    stop: AtomicBool,
    findings: Mutex<Vec<Finding>>,
    shrink_times: Mutex<Vec<f64>>,
    first_error: Mutex<Option<String>>,
    coverage: Mutex<std::collections::BTreeMap<String, u64>>,
    shrinks_started: Mutex<std::collections::BTreeMap<Signature, usize>>,
    unshrunk: Mutex<std::collections::BTreeMap<Signature, Unshrunk>>,
    t0: Instant,
}

/// Failing sequences that were not shrunk because their signature had
/// been shrunk `shrinks_per_signature` times already.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unshrunk {
    pub invariant: Invariant,
    /// The splat title (normalized), if the signature has one.
    pub splat: Option<String>,
    pub count: usize,
    pub seeds: Vec<String>,
}

/// `state target: livepatch enabled; fentry, fmod_ret(777), fexit`: what
/// a function had after an operation (programs in attach order).
pub fn state_key(s: &model::State, f: model::Func) -> String {
    let st = s.func(f);
    let lp = match st.lp {
        model::Lp::Absent => "no livepatch",
        model::Lp::Enabled => "livepatch enabled",
        model::Lp::Disabled => "livepatch disabled",
    };
    let progs: Vec<String> = st
        .progs
        .iter()
        .map(|p| match p.kind {
            coexist_proto::BpfKind::FmodRet => format!("fmod_ret({})", p.fmod_ret),
            k => k.section().to_string(),
        })
        .collect();
    let direct = if matches!(s.direct, Some((d, _)) if d == f) {
        "; coexist_direct"
    } else {
        ""
    };
    format!(
        "state {}: {lp}; {}{direct}",
        f.short(),
        if progs.is_empty() {
            "no BPF".to_string()
        } else {
            progs.join(", ")
        }
    )
}

/// `attach fmod_ret(777) target -> EBUSY`: an operation's kind, function
/// and result in `s`.
pub fn coverage_key(s: &model::State, op: &Op) -> String {
    let what = match *op {
        Op::Attach {
            func,
            kind,
            fmod_ret,
            ..
        } => {
            let k = if kind == coexist_proto::BpfKind::FmodRet {
                format!("fmod_ret({fmod_ret})")
            } else {
                kind.section().to_string()
            };
            format!("attach {k} {}", func.short())
        }
        Op::Detach { id } => format!(
            "detach {}",
            s.attached(id).map(|f| f.short()).unwrap_or("?")
        ),
        Op::DirectUnload => "direct_unload".to_string(),
        other => other.to_string().replace('(', " ").replace(')', ""),
    };
    format!("{what} -> {}", s.predict(op).map_or("ok", Refusal::name))
}

impl Shared<'_> {
    fn budget_left(&self) -> bool {
        if teardown::stopping() || self.stop.load(Ordering::SeqCst) {
            return false;
        }
        match self.req.budget {
            Budget::Time(d) => self.t0.elapsed() < d,
            Budget::Sequences(n) => self.next.load(Ordering::SeqCst) < n,
        }
    }

    fn worker(&self) {
        while self.budget_left() {
            let index = self.next.fetch_add(1, Ordering::SeqCst);
            if let Budget::Sequences(n) = self.req.budget {
                if index >= n {
                    break;
                }
            }
            let seed = gen::sequence_seed(self.req.seed, index);
            let ops = gen::sequence(seed, self.guest.rule, self.req.max_len);
            let log = self
                .dir
                .join("console")
                .join(format!("seq-{index:05}-{seed:016x}.log"));
            let r = exec::run_sequence(&self.guest, &ops, log, self.events);
            if teardown::stopping() {
                break;
            }
            self.steps.fetch_add(r.steps as u64, Ordering::SeqCst);
            self.ops.fetch_add(r.ops_done as u64, Ordering::SeqCst);
            self.count_coverage(&ops[..r.ops_done.min(ops.len())]);
            if let Some(e) = &r.error {
                self.errors.fetch_add(1, Ordering::SeqCst);
                self.first_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert_with(|| format!("sequence {index} (seed {seed:#x}): {e}"));
                events::note(
                    self.events,
                    format!("explore: sequence {index} (seed {seed:#x}) could not run: {e}"),
                );
                self.done.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            self.done.fetch_add(1, Ordering::SeqCst);
            let Some(b) = r.broken else { continue };
            self.failing.fetch_add(1, Ordering::SeqCst);
            events::note(
                self.events,
                format!(
                    "explore: sequence {index} (seed {seed:#x}) broke {} at {}: {}",
                    b.invariant,
                    b.op.as_deref().unwrap_or("the prologue"),
                    b.seen
                ),
            );
            self.found(index, seed, &ops, b, r.console_log);
        }
    }

    /// A failing sequence: shrunk (unless its signature was shrunk
    /// enough already), rerun, and added to the findings.
    fn found(&self, index: u64, seed: u64, ops: &[Op], b: Broken, log: PathBuf) {
        let sig = b.signature();
        {
            let mut started = self
                .shrinks_started
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = started.entry(sig.clone()).or_default();
            if *n >= self.req.shrinks_per_signature {
                // Not shrunk: counted by signature only, never credited
                // to a minimal sequence it was not shown to shrink to.
                let mut u = self.unshrunk.lock().unwrap_or_else(|e| e.into_inner());
                let e = u.entry(sig.clone()).or_insert_with(|| Unshrunk {
                    invariant: sig.invariant,
                    splat: sig.splat.clone(),
                    count: 0,
                    seeds: Vec::new(),
                });
                e.count += 1;
                e.seeds.push(format!("{seed:#x}"));
                return;
            }
            *n += 1;
        }
        self.shrinking.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        let shrink_dir = self.dir.join("console").join(format!("shrink-{index:05}"));
        let mut sys = exec::VmSystem {
            guest: &self.guest,
            log_dir: shrink_dir.clone(),
            events: self.events,
            runs: 0,
            steps: 0,
        };
        let shrunk = match b.op_index {
            Some(at) => shrink::shrink(
                ops,
                &sig,
                at,
                self.guest.rule,
                &mut sys,
                self.req.max_shrink_replays,
            ),
            None => shrink::Shrunk {
                ops: Vec::new(),
                replays: 0,
                minimal: true,
            },
        };
        // Interrupted mid-shrink: every candidate kept did fail the same
        // way (a replay that could not run is never kept), so the sequence
        // so far stands, marked not minimal by the shrinker.
        // Rerun the minimal sequence; keep the evidence of the first rerun
        // that fails the same way (its step numbers match the repro).
        let mut reproduced = 0;
        let mut evidence = None;
        for k in 0..self.req.reruns {
            if teardown::stopping() {
                break;
            }
            let log = shrink_dir.join(format!("rerun-{}.log", k + 1));
            let r = exec::run_sequence(&self.guest, &shrunk.ops, log, self.events);
            sys.steps += r.steps;
            if let Some(rb) = r.broken {
                if rb.signature() == sig {
                    reproduced += 1;
                    if evidence.is_none() {
                        evidence = Some((rb, r.console_log));
                    }
                }
            }
        }
        let interrupted = teardown::stopping();
        let shrink_s = t.elapsed().as_secs_f64();
        self.shrinking.fetch_sub(1, Ordering::SeqCst);
        self.shrink_steps
            .fetch_add(sys.steps as u64, Ordering::SeqCst);
        self.shrink_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shrink_s);
        let (eb, elog) = evidence.unwrap_or((b, log));
        let canon = canonical(&shrunk.ops);
        let mut f = self.findings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = f.iter_mut().find(|x| {
            x.signature() == sig
                && canonical(&x.replayed.iter().map(|r| r.op).collect::<Vec<_>>()) == canon
        }) {
            x.count += 1;
            x.also_seeds.push(format!("{seed:#x}"));
            return;
        }
        let id = f.len() + 1;
        let repro_rel = format!("explore/repro-{id}.yaml");
        let header = [
            format!(
                "run seed {:#x}, sequence seed {seed:#x} (sequence {index})",
                self.req.seed
            ),
            format!(
                "broken invariant: {} at {}",
                sig.invariant,
                eb.op.as_deref().unwrap_or("the prologue")
            ),
            format!("expected: {}", eb.expected),
            format!("seen: {}", crate::text::shown(&eb.seen)),
        ];
        let text = repro::suite_text(
            id,
            &self.req.variant,
            self.guest.rule,
            &shrunk.ops,
            &header
                .iter()
                .flat_map(|h| h.lines().map(|l| l.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        );
        let path = self.dir.join(&repro_rel);
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err(e) = std::fs::write(&path, text) {
            events::note(
                self.events,
                format!("explore: cannot write {}: {e}", path.display()),
            );
        }
        events::note(
            self.events,
            format!(
                "explore: finding {id}: {} shrunk from {} to {} operation(s) in {shrink_s:.0} s ({} replays), reproduced {reproduced}/{}: {}",
                sig.invariant,
                ops.len(),
                shrunk.ops.len(),
                shrunk.replays,
                self.req.reruns,
                shrunk.ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            ),
        );
        f.push(Finding {
            id,
            invariant: sig.invariant,
            sequence: records(&model::without_calls(&shrunk.ops)),
            replayed: records(&shrunk.ops),
            at_op: eb.op_index.map(|i| i + 1),
            step: serde_json::to_value(&eb.step).unwrap_or_default(),
            expected: eb.expected,
            seen: eb.seen,
            splats: eb.splats,
            seed: format!("{seed:#x}"),
            also_seeds: Vec::new(),
            count: 1,
            original_len: ops.len(),
            shrink_replays: shrunk.replays,
            shrink_s,
            minimal: shrunk.minimal,
            reproduced: Reproduced {
                times: reproduced,
                runs: self.req.reruns,
                interrupted,
            },
            repro: repro_rel,
            console_log: elog,
        });
    }

    /// Counts each completed operation by kind, function and the result
    /// the model gave it (and the kernel showed).
    fn count_coverage(&self, ops: &[Op]) {
        let mut s = model::State::new(self.guest.rule);
        let mut c = self.coverage.lock().unwrap_or_else(|e| e.into_inner());
        for op in ops {
            *c.entry(coverage_key(&s, op)).or_default() += 1;
            s.apply(op);
            for f in model::FUNCS {
                *c.entry(state_key(&s, f)).or_default() += 1;
            }
        }
    }

    fn progress(&self) -> String {
        let el = self.t0.elapsed().as_secs_f64();
        let left = match self.req.budget {
            Budget::Time(d) => format!("{:.0} s left", (d.as_secs_f64() - el).max(0.0)),
            Budget::Sequences(n) => format!(
                "{} sequence(s) left",
                n.saturating_sub(self.next.load(Ordering::SeqCst))
            ),
        };
        let shrinking = self.shrinking.load(Ordering::SeqCst);
        format!(
            "explore: {} sequence(s) done, {:.1} steps/s, {} finding(s){}, {left}",
            self.done.load(Ordering::SeqCst),
            self.steps.load(Ordering::SeqCst) as f64 / el.max(1e-9),
            self.findings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
            if shrinking > 0 {
                format!(" ({shrinking} shrinking)")
            } else {
                String::new()
            }
        )
    }
}

/// The results directory of a request.
pub fn results_dir(ws: &Workspace, req: &ExploreRequest, run_id: &str) -> PathBuf {
    req.results_dir
        .clone()
        .unwrap_or_else(|| ws.project.root.join("results").join(run_id))
}

/// Explores: prepares the variant and its snapshot, runs sequences until
/// the budget is spent, shrinks and reruns what fails, writes the repro
/// files, and returns the report (also when interrupted: what was found).
pub fn explore(
    ws: &Workspace,
    req: &ExploreRequest,
    dir: &Path,
    run_id: &str,
    events: &dyn EventSink,
) -> Result<ExploreReport> {
    req.check()?;
    let _graceful = teardown::graceful();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let variants = ws.variants(None)?;
    let v = variant::select(&variants, std::slice::from_ref(&req.variant))?[0].clone();
    let rule: Rule = v.coexistence.into();
    std::fs::create_dir_all(dir)?;
    let p = ws.prepare(&v, events)?;
    let host = Host::current();
    let snaps = Snapshots::new(&ws.cache);
    let job = crate::guest::Job::logged(dir.join("snapshot-boot.log"));
    if let Err(e) =
        req.machine
            .prepare_snapshot(&snaps, (&req.variant, &p), job, &host.qemu, events)
    {
        events::note(
            events,
            format!(
                "no snapshot for {} ({e}); every sequence boots",
                req.variant
            ),
        );
    }
    let snapshot = snaps.get(&req.variant);
    let kernel_release = snapshot.as_ref().map(|s| s.kernel_release.clone());
    let accel = snapshot.as_ref().map(|s| s.accel.to_string());
    let guest = Target {
        prepared: Arc::new(p),
        snapshots: Some(Arc::new(snaps)),
        machine: req.machine,
        rule,
    };
    events::note(
        events,
        format!(
            "explore: {} ({} rule), seed {} ({:#x}), {}, max {} operations, {} VM(s) at once; results in {}",
            req.variant,
            match rule {
                Rule::Shared => "shared",
                Rule::Exclusive => "exclusive",
            },
            req.seed,
            req.seed,
            budget_text(req.budget),
            req.max_len,
            req.workers,
            dir.display()
        ),
    );
    let sh = Shared {
        req,
        guest,
        dir: dir.to_path_buf(),
        events,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        steps: AtomicU64::new(0),
        ops: AtomicU64::new(0),
        failing: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        shrink_steps: AtomicU64::new(0),
        shrinking: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        findings: Mutex::new(Vec::new()),
        shrink_times: Mutex::new(Vec::new()),
        first_error: Mutex::new(None),
        coverage: Mutex::new(Default::default()),
        shrinks_started: Mutex::new(Default::default()),
        unshrunk: Mutex::new(Default::default()),
        t0: Instant::now(),
    };
    let finished = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut last = Instant::now();
            while !finished.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(15) {
                    last = Instant::now();
                    events::note(events, sh.progress());
                }
            }
        });
        let workers: Vec<_> = (0..req.workers).map(|_| sc.spawn(|| sh.worker())).collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::SeqCst);
    });
    events::note(events, sh.progress());
    let duration_s = sh.t0.elapsed().as_secs_f64();
    let mut times = sh.shrink_times.into_inner().unwrap_or_default();
    times.sort_by(|a, b| a.total_cmp(b));
    let median_shrink_s = (!times.is_empty()).then(|| times[times.len() / 2]);
    let steps = sh.steps.load(Ordering::SeqCst);
    let sequences = sh.done.load(Ordering::SeqCst);
    let interrupted = teardown::interrupted();
    let mut findings = sh.findings.into_inner().unwrap_or_default();
    findings.sort_by_key(|f| f.id);
    Ok(ExploreReport {
        schema: SCHEMA.into(),
        run_id: run_id.to_string(),
        started,
        variant: req.variant.clone(),
        kernel_release,
        rule,
        seed: req.seed,
        seed_hex: format!("{:#x}", req.seed),
        max_len: req.max_len,
        jobs: req.workers,
        budget: budget_text(req.budget),
        accel,
        sequences,
        steps,
        ops: sh.ops.load(Ordering::SeqCst),
        failing_sequences: sh.failing.load(Ordering::SeqCst),
        errors: sh.errors.load(Ordering::SeqCst),
        duration_s,
        steps_per_s: steps as f64 / duration_s.max(1e-9),
        sequences_per_min: sequences as f64 * 60.0 / duration_s.max(1e-9),
        median_shrink_s,
        findings,
        complete: interrupted.is_none(),
        incomplete: interrupted.map(|s| format!("interrupted by signal {s}")),
        first_error: sh.first_error.into_inner().unwrap_or_default(),
        coverage: sh.coverage.into_inner().unwrap_or_default(),
        unshrunk: sh
            .unshrunk
            .into_inner()
            .unwrap_or_default()
            .into_values()
            .collect(),
    })
}

pub fn budget_text(b: Budget) -> String {
    match b {
        Budget::Time(d) => format!("{} s", d.as_secs_f64()),
        Budget::Sequences(n) => format!("{n} sequence(s)"),
    }
}

/// Writes `explore.json` in `dir`.
pub fn write_json(dir: &Path, r: &ExploreReport) -> Result<PathBuf> {
    let p = dir.join("explore.json");
    std::fs::write(&p, serde_json::to_vec_pretty(r)?)?;
    Ok(p)
}

/// The findings in a few lines, for the terminal.
pub fn summary(r: &ExploreReport) -> String {
    let mut s = format!(
        "explore {} ({:?} rule), seed {} ({}): {} sequence(s), {} steps in {:.0} s ({:.1} steps/s, {:.1} sequences/min), {} failing, {} harness error(s), {} finding(s)\n",
        r.variant,
        r.rule,
        r.seed,
        r.seed_hex,
        r.sequences,
        r.steps,
        r.duration_s,
        r.steps_per_s,
        r.sequences_per_min,
        r.failing_sequences,
        r.errors,
        r.findings.len()
    );
    for f in &r.findings {
        s.push_str(&format!(
            "  finding {} (x{}): {} after [{}]; reproduced {}; seed {}; {}\n",
            f.id,
            f.count,
            f.invariant,
            f.sequence
                .iter()
                .map(|o| o.text.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            f.reproduced,
            f.seed,
            f.repro
        ));
        s.push_str(&format!(
            "    expected {}\n    seen {}\n",
            f.expected,
            crate::text::shown(&f.seen)
        ));
        for sp in &f.splats {
            s.push_str(&format!("    {}\n", sp.line()));
        }
    }
    for u in &r.unshrunk {
        s.push_str(&format!(
            "  {} more failing sequence(s) broke {}{} (not shrunk: that signature was shrunk enough already)\n",
            u.count,
            u.invariant,
            u.splat
                .as_ref()
                .map(|t| format!(" with {t}"))
                .unwrap_or_default()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::model::Func;
    use super::*;

    #[test]
    fn reproduced_reads_back_as_written() {
        for (text, times, interrupted) in [("3/3", 3, false), ("1/3 (interrupted)", 1, true)] {
            let r = Reproduced::try_from(text.to_string()).unwrap();
            assert_eq!((r.times, r.runs, r.interrupted), (times, 3, interrupted));
            assert_eq!(r.to_string(), text);
            assert_eq!(serde_json::to_value(r).unwrap(), text);
        }
        assert!(Reproduced::try_from("three".to_string()).is_err());
    }
    use coexist_proto::BpfKind;

    #[test]
    fn canonical_renumbers_programs() {
        let f = Func::Cmdline;
        let a = [
            Op::Attach {
                id: 7,
                func: f,
                kind: BpfKind::Fentry,
                fmod_ret: 0,
            },
            Op::Detach { id: 7 },
        ];
        let b = [
            Op::Attach {
                id: 2,
                func: f,
                kind: BpfKind::Fentry,
                fmod_ret: 0,
            },
            Op::Detach { id: 2 },
        ];
        assert_eq!(canonical(&a), canonical(&b));
    }
}
