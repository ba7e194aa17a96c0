//! `explore`: model-based random sequences of livepatch, BPF trampoline
//! and DIRECT ftrace operations on two functions, each sequence in its own
//! guest restored from the variant's READY snapshot, checked after every
//! operation against a pure model; a failing sequence is shrunk to a
//! minimal one, rerun three times, and written as a finding with a ready
//! suite file that reproduces it.
//!
//! - `model`: the operations, the abstract state, the rule's predictions
//!   and the checks after each operation (pure; unit tested).
//! - `probes`: an operation as the agent steps that check it.
//! - `gen`: the seeded generator.
//! - `exec`: one sequence in one guest, every step checked.
//! - `pool`: the workers, drawing sequences until the budget is spent.
//! - `findings`: a failing sequence set aside, or shrunk, rerun, matched
//!   to a finding or written as a new one.
//! - `shrink`: the shrinker, over any [`shrink::System`].
//! - `repro`: a finding as a suite file.
//! - `keys`: sequences up to program ids, and the coverage keys.
//! - `report`: `explore.json` and the terminal summary.
//!
//! Progress goes out as typed [`crate::events::ExploreEvent`]s.
//!
//! This stage sits above `run` (it reuses its machine and run ids) and
//! below `report` and the CLI; it prints nothing (progress goes out as
//! events).

pub mod exec;
pub mod findings;
pub mod gen;
pub mod guided;
pub mod keys;
pub mod known;
pub mod model;
pub mod pool;
pub mod probes;
pub mod report;
pub mod repro;
pub mod shrink;

pub use keys::{canonical, coverage_key, state_key};
pub use report::{
    merge, summary, write_json, ExploreReport, ExploreStats, Finding, OpRecord, ReachedAt,
    Reproduced, Unshrunk, SCHEMA,
};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::build::variant;
use crate::events::{self, Event, EventSink, ExploreEvent};
use crate::record::Host;
use crate::run::Machine;
use crate::teardown;
use crate::vm::snapshot::Snapshots;
use crate::workspace::Workspace;
use exec::Target;
use findings::Findings;
use model::Rule;
use pool::Pool;

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
    /// Explore the variant's coverage twin, reading each sequence's gcov
    /// counts back (`Variant::coverage_twin`).
    pub coverage: bool,
    /// Coverage-guided generation (`guided`); needs `coverage`.
    pub guided: bool,
    /// Corpus entries to start a guided run from (`--corpus DIR`).
    pub corpus: Vec<guided::Entry>,
    /// Shard I of N (1-based): this run draws the sequences of index
    /// `I-1`, `I-1+N`, ... of its seed, so N shards of one seed explore
    /// disjoint sequences (`report merge` adds them up).
    pub shard: Option<(u64, u64)>,
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
        if self.guided && !self.coverage {
            bail!("--guided needs the coverage twin's counts (--coverage)");
        }
        if let Some((i, n)) = self.shard {
            if i == 0 || i > n {
                bail!("--shard {i}/{n}: I is from 1 to N");
            }
        }
        Ok(())
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
    let variants = ws.variants(None)?;
    let mut v = variant::select(&variants, std::slice::from_ref(&req.variant))?[0].clone();
    if req.coverage {
        v = ws.coverage_twin(&v)?;
    }
    let rule: Rule = v.coexistence.into();
    std::fs::create_dir_all(dir)?;
    let p = ws.prepare(&v, events)?;
    explore_prepared(ws, req, p, rule, (dir, run_id), events)
}

/// Explores a prepared guest (`mutants` explores its mutant kernels so)
/// as [`explore`] does a variant: `req.variant` names it in the report.
pub fn explore_prepared(
    ws: &Workspace,
    req: &ExploreRequest,
    p: crate::image::Prepared,
    rule: Rule,
    (dir, run_id): (&Path, &str),
    events: &dyn EventSink,
) -> Result<ExploreReport> {
    req.check()?;
    let _graceful = teardown::graceful();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    std::fs::create_dir_all(dir)?;
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
    // What the kernel cannot do by configuration is left out of the
    // alphabet: a fact of the kernel, never a finding.
    let caps = model::Caps::of_file(&p.manifest.config)?;
    let kernel_key = p.manifest.key.clone();
    let profiled = p.manifest.profiled.clone();
    let area = if profiled.is_empty() {
        Vec::new()
    } else {
        crate::build::area::Area::load(&ws.project.root)?
            .functions
            .into_iter()
            .flat_map(|(_, alts)| alts)
            .collect()
    };
    let guest = Target {
        prepared: Arc::new(p),
        snapshots: Some(Arc::new(snaps)),
        machine: req.machine,
        model: model::Model { rule, caps },
        area,
    };
    events.event(&Event::Explore(ExploreEvent::Started {
        about: format!(
            "explore: {} ({} rule{}), seed {} ({:#x}), {}, max {} operations, {} VM(s) at once; results in {}",
            req.variant,
            match rule {
                Rule::Shared => "shared",
                Rule::Exclusive => "exclusive",
            },
            caps.missing()
                .iter()
                .map(|m| format!("; this kernel cannot do {m}"))
                .collect::<String>(),
            req.seed,
            req.seed,
            budget_text(req.budget),
            req.max_len,
            req.workers,
            dir.display()
        ),
    }));
    let sh = Pool::new(
        req,
        events,
        Findings::new(req, &guest, dir.to_path_buf(), events),
    );
    if !guest.prepared.manifest.profiled.is_empty() {
        std::fs::create_dir_all(dir.join("corpus"))?;
    }
    let finished = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut last = Instant::now();
            while !finished.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(15) {
                    last = Instant::now();
                    events.event(&sh.progress_event());
                }
            }
        });
        let workers: Vec<_> = (0..req.workers).map(|_| sc.spawn(|| sh.worker())).collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::SeqCst);
    });
    events.event(&sh.progress_event());
    let duration_s = sh.t0.elapsed().as_secs_f64();
    let mut times = sh.findings.shrink_times.into_inner().unwrap_or_default();
    times.sort_by(|a, b| a.total_cmp(b));
    let median_shrink_s = (!times.is_empty()).then(|| times[times.len() / 2]);
    let steps = sh.steps.load(Ordering::SeqCst);
    let sequences = sh.done.load(Ordering::SeqCst);
    let interrupted = teardown::interrupted();
    let mut findings = sh.findings.list.into_inner().unwrap_or_default();
    findings.sort_by_key(|f| f.id);
    Ok(ExploreReport {
        schema: SCHEMA.into(),
        run_id: run_id.to_string(),
        started,
        shard: req.shard,
        variant: req.variant.clone(),
        kernel_key: kernel_key.clone(),
        profiled: profiled.clone(),
        kernel_release,
        rule,
        caps,
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
        guided: req.guided,
        corpus: sh
            .corpus
            .lock()
            .map(|c| c.entries.len())
            .unwrap_or_default(),
        reached: sh.reached.into_inner().unwrap_or_default(),
        unshrunk: sh
            .findings
            .unshrunk
            .into_inner()
            .unwrap_or_default()
            .into_values()
            .collect(),
    })
}

/// One run of [`compare_guided`]: a seed, guided or not, its report and
/// results directory.
pub struct GuidedRun {
    pub seed: u64,
    pub guided: bool,
    pub report: ExploreReport,
    pub dir: PathBuf,
}

/// `bench explore --guided`: for each seed, the same request (budget,
/// variant, workers) run uniform and then guided, both on the coverage
/// twin; each run's explore.json goes under `root/<seed>-<mode>/`.
pub fn compare_guided(
    ws: &Workspace,
    req: &ExploreRequest,
    seeds: &[u64],
    root: &Path,
    events: &dyn EventSink,
) -> Result<Vec<GuidedRun>> {
    let mut out = Vec::new();
    for &seed in seeds {
        for guided in [false, true] {
            if teardown::stopping() {
                return Ok(out);
            }
            let r = ExploreRequest {
                seed,
                guided,
                shard: None,
                coverage: true,
                ..req.clone()
            };
            let dir = root.join(format!(
                "{seed}-{}",
                if guided { "guided" } else { "uniform" }
            ));
            std::fs::create_dir_all(&dir)?;
            let id = crate::run::run_id();
            let report = explore(ws, &r, &dir, &id, events)?;
            write_json(&dir, &report)?;
            out.push(GuidedRun {
                seed,
                guided,
                report,
                dir,
            });
        }
    }
    Ok(out)
}

/// What a run had reached `t` seconds in (zeros before its first
/// sequence).
pub fn reached_by(r: &ExploreReport, t: f64) -> ReachedAt {
    r.reached
        .iter()
        .take_while(|p| p.s <= t)
        .last()
        .cloned()
        .unwrap_or(ReachedAt {
            s: t,
            sequences: 0,
            lines: 0,
            branches: 0,
            area_lines: 0,
            area_branches: 0,
        })
}

pub fn budget_text(b: Budget) -> String {
    match b {
        Budget::Time(d) => format!("{} s", d.as_secs_f64()),
        Budget::Sequences(n) => format!("{n} sequence(s)"),
    }
}
