//! `mutants`: seeds small bugs into the kernel code under test and counts
//! which of them the suites (and explore) notice.
//!
//! In: a [`MutantsRequest`] (a built-here variant, a scope, operators,
//! suites, an explore budget, a shard). Out: a [`MutantsReport`]
//! (`mutants.json`), written after every mutant, and its consoles and
//! build logs under the results directory.
//!
//! - `scope`: the area's list, the series' functions, `--function`.
//! - `sites`: functions and mutation sites, found with tree-sitter-c.
//! - `worker`: the build worker: apply, `make vmlinux`, restore, and
//!   whether the fixtures still fit the mutant kernel.
//! - `results`: `mutants.json`, the table, merging shards.
//!
//! Every guest comes from [`crate::guest`] through the suite matrix
//! ([`crate::run::matrix::run_until`]) and [`crate::explore`]: a mutant is
//! a [`Prepared`] whose kernel is the mutant's vmlinux.

pub mod results;
pub mod scope;
pub mod sites;
pub mod worker;

pub use results::{MutantsReport, Outcome};
pub use scope::ScopeKind;
pub use sites::{Mutant, Operator};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::build::{variant, Manifest, Variant};
use crate::cache::{self, KeyHasher};
use crate::events::Null;
use crate::events::{self, Event, EventSink, MutantsEvent};
use crate::guest::{self, Machine};
use crate::image::{prepare::prepare_built, Prepared};
use crate::record::{CaseResult, Host};
use crate::run::{self, matrix, CaseOptions, RunRequest};
use crate::teardown;
use crate::vm::snapshot::Snapshots;
use crate::vm::Blame;
use crate::workspace::Workspace;
use results::{Baseline, ExploreSetting, Killer, MutantResult};

#[derive(Clone, Debug)]
pub struct MutantsRequest {
    pub variant: String,
    pub scope: ScopeKind,
    /// `--function FILE:FUNC` (scope [`ScopeKind::Functions`]).
    pub functions: Vec<(String, String)>,
    /// Empty: every operator.
    pub operators: Vec<Operator>,
    /// Suite names (default `livepatch-bpf`), or suite files.
    pub suites: Vec<String>,
    /// Only the suites' cases whose name matches this glob.
    pub case_glob: Option<String>,
    /// Explore each mutant the suites did not kill for this long.
    pub explore: Option<Duration>,
    pub seed: u64,
    /// Guests at once.
    pub workers: usize,
    pub shard: Option<(usize, usize)>,
    pub machine: Machine,
    pub results_dir: Option<PathBuf>,
    /// Only the first N mutants (`bench mutants`).
    pub limit: Option<usize>,
    /// Only these mutant ids (of the scope; `--mutant`).
    pub ids: Vec<String>,
    /// Run the baseline's suites once more on the variant's coverage twin
    /// and say of each mutant whether any case reached its site.
    pub coverage: bool,
}

impl MutantsRequest {
    pub fn operators(&self) -> Vec<Operator> {
        if self.operators.is_empty() {
            Operator::ALL.to_vec()
        } else {
            self.operators.clone()
        }
    }
}

/// A checked request: the variant, its build plan, the scope and the
/// mutants this run (shard) takes. Nothing is built yet.
pub struct Planned {
    pub variant: Variant,
    pub plan: crate::build::Plan,
    pub scope: scope::Scope,
    pub mutants: Vec<Mutant>,
    pub suites: Vec<run::Plan>,
}

/// Checks the request and lists its mutants: the variant must be built
/// here (a prebuilt or local kernel has nothing to rebuild), the suites
/// must have cases for it, the scope must have sites.
pub fn plan(ws: &Workspace, req: &MutantsRequest, events: &dyn EventSink) -> Result<Planned> {
    if req.workers == 0 {
        bail!("-j 0: at least one guest at a time");
    }
    if req.scope == ScopeKind::Functions && req.functions.is_empty() {
        bail!("--scope functions needs --function FILE:FUNC");
    }
    let variants = ws.variants(None)?;
    let v = variant::select(&variants, std::slice::from_ref(&req.variant))?[0].clone();
    if !v.source.builds_here() {
        bail!(
            "variant '{}' is a {} kernel: mutants rebuilds the kernel with each mutant, and there is no \
             source build to redo (pick a variant built from a source, e.g. share-ipmodify)",
            v.name,
            v.source.name()
        );
    }
    let mut suites = Vec::new();
    for s in &req.suites {
        let p = run::plan(
            ws,
            &RunRequest {
                suite: s.clone(),
                variants: vec![v.name.clone()],
                case_glob: req.case_glob.clone(),
                shard: None,
                workers: req.workers,
                machine: req.machine,
                results_dir: None,
                kernel_tree: None,
                fresh_boot: false,
                coverage: false,
            },
        )
        .with_context(|| format!("--suite {s}"))?;
        let jobs: Vec<run::Job> = p
            .jobs
            .iter()
            .filter(|j| j.variant == v.name)
            .cloned()
            .collect();
        if jobs.is_empty() {
            bail!("--suite {s}: it has no case for variant '{}'", v.name);
        }
        suites.push(run::Plan { jobs, ..p });
    }
    let area = crate::build::area::Area::load(&ws.project.root)?.functions;
    let builder = ws.builder(crate::workspace::default_jobs(), events);
    let kplan = builder.prepare_source(&v)?;
    let ops = req.operators();
    let sc = scope::resolve(
        &kplan.tree_dir,
        &scope::ScopeRequest {
            kind: req.scope,
            functions: &req.functions,
            operators: &ops,
            series: v.series.as_ref(),
            area: &area,
        },
    )?;
    if sc.mutants.is_empty() {
        bail!(
            "the scope ({} function(s): {}) has no mutation site for operator(s) {}",
            sc.functions.len(),
            sc.functions
                .iter()
                .map(|f| format!("{}:{}", f.function.file, f.function.name))
                .collect::<Vec<_>>()
                .join(", "),
            ops.iter().map(|o| o.name()).collect::<Vec<_>>().join(", ")
        );
    }
    for id in &req.ids {
        if !sc.mutants.iter().any(|m| &m.id == id) {
            bail!("--mutant {id}: the scope has no such mutant (--list prints the scope's ids)");
        }
    }
    let chosen: Vec<Mutant> = if req.ids.is_empty() {
        sc.mutants.clone()
    } else {
        sc.mutants
            .iter()
            .filter(|m| req.ids.contains(&m.id))
            .cloned()
            .collect()
    };
    let mut mutants = match req.shard {
        Some((i, n)) => scope::shard(chosen, i, n),
        None => chosen,
    };
    if let Some(n) = req.limit {
        mutants.truncate(n);
    }
    Ok(Planned {
        variant: v,
        plan: kplan,
        scope: sc,
        mutants,
        suites,
    })
}

/// Forwards what a person wants to see of the inner runs (builds,
/// preparation, notes), not each case of each mutant.
struct Quiet<'a>(&'a dyn EventSink);

impl EventSink for Quiet<'_> {
    fn event(&self, e: &Event) {
        match e {
            Event::CaseStarted { .. }
            | Event::CaseFinished(_)
            | Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::Explore(_)
            | Event::Prepared { .. } => {}
            e => self.0.event(e),
        }
    }
}

/// How a suite run went for one guest.
struct SuiteRun {
    results: Vec<CaseResult>,
    stopped: Option<String>,
    /// The guest's READY snapshot (a mutant's is removed after it).
    snapshot: Option<PathBuf>,
}

fn run_suites(
    cache: &crate::cache::Cache,
    p: &Prepared,
    planned: &Planned,
    req: &MutantsRequest,
    dir: &Path,
    stop_at_first: bool,
    events: &dyn EventSink,
) -> Result<SuiteRun> {
    let snaps = Snapshots::new(cache);
    let host = Host::current();
    let job = guest::Job::logged(dir.join("snapshot-boot.log"));
    if let Err(e) = req
        .machine
        .prepare_snapshot(&snaps, (&p.variant, p), job, &host.qemu, events)
    {
        events::note(events, format!("no snapshot ({e}); its cases boot"));
    }
    let snaps = Arc::new(snaps);
    let opts = CaseOptions {
        machine: req.machine,
        results_dir: dir.to_path_buf(),
        snapshots: Some(snaps.clone()),
    };
    let prepared: BTreeMap<String, Prepared> = [(p.variant.clone(), p.clone())].into();
    let mut all = Vec::new();
    let mut stopped = None;
    let estimates = run::estimates::Estimates::default();
    for s in &planned.suites {
        let out = matrix::run_until(
            &s.jobs,
            &s.suites,
            &prepared,
            &opts,
            (req.workers, &estimates),
            (events, &Null),
            &|r: &CaseResult| stop_at_first && !r.decision.as_expected,
        )?;
        let killed = out.results.iter().any(|r| !r.decision.as_expected);
        all.extend(out.results);
        if out.stopped.is_some() {
            stopped = out.stopped;
            break;
        }
        if killed && stop_at_first {
            break;
        }
    }
    Ok(SuiteRun {
        results: all,
        stopped,
        snapshot: snaps.get(&p.variant).map(|s| s.dir),
    })
}

fn killer(r: &CaseResult) -> Killer {
    let step = r
        .steps
        .iter()
        .find(|s| !s.mismatches.is_empty() || !s.splats.is_empty())
        .map(|s| {
            format!(
                "step {} ({})",
                s.index,
                coexist_proto::StepKind::from(&s.request).name()
            )
        });
    let mut evidence: Vec<String> = r.decision.evidence.iter().take(6).cloned().collect();
    if evidence.is_empty() {
        evidence.push(r.decision.summary.clone());
    }
    Killer {
        by: r.id.clone(),
        verdict: r.decision.verdict.as_str().to_string(),
        step,
        evidence,
    }
}

/// A mutant's outcome from its unexpected cases.
fn judge(unexpected: &[&CaseResult]) -> Option<Outcome> {
    let first = unexpected.first()?;
    Some(
        match first.failure.as_ref().map(|f| (f.kind.blame(), &f.kind)) {
            Some((Blame::Host | Blame::Harness, _)) => Outcome::Error,
            Some((Blame::Boot, _)) => Outcome::Timeout,
            Some((_, crate::vm::FailureKind::StepTimeout | crate::vm::FailureKind::Stall)) => {
                Outcome::Timeout
            }
            _ => Outcome::Killed,
        },
    )
}

fn mutant_key(base: &Manifest, m: &Mutant) -> String {
    let mut h = KeyHasher::new("mutant-v1");
    base.key_parts(&mut h)
        .part("mutant", m.id.as_bytes())
        .part("replacement", m.replacement.as_bytes());
    h.finish()
}

/// Runs a planned request: the baseline, then each mutant. The report is
/// written to `dir` after every mutant; a signal stops the run with what
/// finished (`complete: false`).
pub fn run(
    ws: &Workspace,
    req: &MutantsRequest,
    planned: &Planned,
    (dir, run_id): (&Path, &str),
    events: &dyn EventSink,
) -> Result<MutantsReport> {
    let _graceful = teardown::graceful();
    // The worker's make runs in its own directory (`make -C`): a relative
    // `--results` would send a mutant's `modules_install` elsewhere.
    let dir = &std::path::absolute(dir)?;
    std::fs::create_dir_all(dir)?;
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let v = &planned.variant;
    let builder = ws.builder(crate::workspace::default_jobs(), events);
    // The source's package is checked before anything builds, as `suite` does.
    crate::build::kinds::check_all(std::iter::once(v))?;
    let (kernel, _) = builder.build(v)?;
    let worker = worker::Worker::open(
        &ws.cache,
        &planned.plan,
        &kernel,
        crate::workspace::default_jobs(),
        events,
    )?;
    let base = prepare_built(
        &ws.cache,
        &ws.project,
        (&v.name, v.source.name()),
        worker.base.clone(),
        events,
    )?;
    let mut report = MutantsReport {
        schema: results::SCHEMA.into(),
        run_id: run_id.to_string(),
        started,
        variant: v.name.clone(),
        kernel_key: worker.base.key.clone(),
        kernel_release: worker.base.kernel_release.clone(),
        scope: planned.scope.kind,
        functions: planned.scope.functions.clone(),
        skipped: planned.scope.skipped.clone(),
        operators: req.operators(),
        suites: req.suites.clone(),
        explore: req.explore.map(|d| ExploreSetting {
            budget_s: d.as_secs_f64(),
            seed: req.seed,
        }),
        shards: req
            .shard
            .map(|(i, n)| vec![format!("{i}/{n}")])
            .unwrap_or_default(),
        planned: planned.mutants.len(),
        baseline: None,
        complete: false,
        incomplete: Some("the baseline has not run yet".into()),
        mutants: Vec::new(),
    };
    for s in &planned.scope.skipped {
        events::note(
            events,
            format!("mutants: {} skipped: {}", s.function, s.why),
        );
    }
    // The baseline: the unmutated kernel of the worker, the same suites,
    // the same explore; anything unexpected refuses the run.
    let t0 = Instant::now();
    events::note(
        events,
        format!(
            "mutants: baseline: {} on the unmutated kernel {} first",
            req.suites.join(", "),
            worker.base.key
        ),
    );
    let b = run_suites(
        &ws.cache,
        &base,
        planned,
        req,
        &dir.join("baseline"),
        false,
        events,
    )?;
    if let Some(s) = b.stopped {
        report.incomplete = Some(format!("stopped during the baseline: {s}"));
        results::write(dir, &report)?;
        return Ok(report);
    }
    let bad: Vec<String> = b
        .results
        .iter()
        .filter(|r| !r.decision.as_expected)
        .map(|r| {
            format!(
                "{} is {} ({})",
                r.id,
                r.decision.verdict.as_str(),
                r.decision.summary
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!(BaselineNotClean(format!(
            "the unmutated kernel does not pass the suites as expected, so no mutant can be judged: {}",
            bad.join("; ")
        )));
    }
    let mut explore_sequences = None;
    if let Some(budget) = req.explore {
        let r = explore_on(
            ws,
            (req, planned),
            &base,
            budget,
            (&dir.join("baseline/explore"), run_id),
            events,
        )?;
        explore_sequences = Some(r.sequences);
        if let Some(f) = r.findings.first() {
            bail!(BaselineNotClean(format!(
                "explore (seed {}) finds {} on the unmutated kernel: {}",
                req.seed, f.invariant, f.seen
            )));
        }
    }
    let coverage = if req.coverage {
        Some(baseline_coverage(ws, (req, planned), dir, events)?)
    } else {
        None
    };
    report.baseline = Some(Baseline {
        cases: b.results.len(),
        as_expected: b.results.len(),
        explore_sequences,
        seconds: t0.elapsed().as_secs_f64(),
    });
    report.incomplete = Some(format!(
        "running: 0 of {} mutants finished",
        planned.mutants.len()
    ));
    results::write(dir, &report)?;
    events.event(&Event::Mutants(MutantsEvent::Started {
        about: format!(
            "mutants: {} mutant(s) of {} function(s) on {} ({}), suites {}{}; results in {}",
            planned.mutants.len(),
            planned.scope.functions.len(),
            v.name,
            worker.base.kernel_release,
            req.suites.join(", "),
            req.explore
                .map(|d| format!(
                    ", then explore {} s (seed {}) for survivors",
                    d.as_secs(),
                    req.seed
                ))
                .unwrap_or_default(),
            dir.display()
        ),
        total: planned.mutants.len(),
    }));
    let quiet = Quiet(events);
    // The mutants; whatever ends the loop (done, a signal, an error), the
    // report is written once more below with how it ended.
    let looped = (|| -> Result<()> {
        for (i, m) in planned.mutants.iter().enumerate() {
            if teardown::stopping() {
                break;
            }
            let phase = |what: &str| {
                events.event(&Event::Mutants(MutantsEvent::Phase {
                    index: i,
                    id: m.id.clone(),
                    what: what.to_string(),
                }))
            };
            let mdir = dir.join(&m.id);
            std::fs::create_dir_all(&mdir)?;
            phase("building");
            let tb = Instant::now();
            let built = match worker.build(
                m,
                (&mdir.join("build.log"), &mdir.join("modroot")),
                &worker.dir.join("mutant/vmlinux"),
            ) {
                Ok(b) => b,
                Err(e) if teardown::stopping() => {
                    events::note(events, format!("mutant {}: {e:#}", m.id));
                    break;
                }
                // A harness failure (not the compiler's): this mutant gets no
                // outcome, the run goes on.
                Err(e) => worker::Built::Failed(format!("{e:#}")),
            };
            let build_s = tb.elapsed().as_secs_f64();
            let mut r = MutantResult {
                mutant: m.clone(),
                outcome: Outcome::Survived,
                build_s,
                run_s: 0.0,
                cases_run: 0,
                killers: Vec::new(),
                killed_by_suite: false,
                unviable: None,
                rebuilt_fixtures: None,
                error: None,
                dir: m.id.clone(),
                context: std::fs::read_to_string(planned.plan.tree_dir.join(&m.file))
                    .map(|src| results::context(&src, m.line, 4))
                    .unwrap_or_default(),
                reach: coverage.as_ref().map(|c| {
                    let last = m.line + m.original.matches('\n').count();
                    crate::coverage::reach(c, &m.file, m.line as u32, last as u32)
                }),
            };
            let tr = Instant::now();
            match built {
                worker::Built::Unviable(line) => {
                    r.outcome = Outcome::Unviable;
                    r.unviable = Some(line);
                }
                worker::Built::Failed(why) => {
                    r.outcome = Outcome::Error;
                    r.error = Some(why);
                }
                worker::Built::Kernel {
                    vmlinux,
                    own_modules,
                } => {
                    let cx = Cx {
                        ws,
                        req,
                        planned,
                        base: &base,
                        worker: &worker,
                        run_id,
                        events: &quiet,
                    };
                    match cx.run_kernel(m, &mdir, &mut r, (vmlinux, own_modules), &phase) {
                        Ok(false) => {}
                        Ok(true) => break,
                        Err(_) if teardown::stopping() => break,
                        // The harness failed on this mutant: said, and the run
                        // goes on with the next one.
                        Err(e) => {
                            r.outcome = Outcome::Error;
                            r.error = Some(format!("{e:#}"));
                        }
                    }
                }
            }
            r.run_s = tr.elapsed().as_secs_f64();
            events.event(&Event::Mutants(MutantsEvent::Finished {
                index: i,
                id: m.id.clone(),
                line: format!(
                    "{:<9} {}  (build {:.0}s, run {:.0}s{})",
                    r.outcome.as_str(),
                    m.list_line(),
                    r.build_s,
                    r.run_s,
                    r.killers
                        .first()
                        .map(|k| format!(", by {}", k.by))
                        .unwrap_or_default()
                ),
            }));
            report.mutants.push(r);
            report.incomplete = Some(format!(
                "running: {} of {} mutants finished",
                report.mutants.len(),
                planned.mutants.len()
            ));
            results::write(dir, &report)?;
        }
        Ok(())
    })();
    report.complete = looped.is_ok()
        && teardown::interrupted().is_none()
        && report.mutants.len() == planned.mutants.len();
    report.incomplete = match (teardown::interrupted(), &looped) {
        (Some(sig), _) => Some(format!("interrupted by signal {sig}")),
        (None, Err(e)) => Some(format!("stopped by an error: {e:#}")),
        (None, Ok(())) if !report.complete => Some("stopped".into()),
        (None, Ok(())) => None,
    };
    results::write(dir, &report)?;
    match looped {
        Err(e) if teardown::interrupted().is_none() => Err(e),
        _ => Ok(report),
    }
}

/// What running one mutant's kernel needs.
struct Cx<'a> {
    ws: &'a Workspace,
    req: &'a MutantsRequest,
    planned: &'a Planned,
    base: &'a Prepared,
    worker: &'a worker::Worker,
    run_id: &'a str,
    events: &'a dyn EventSink,
}

/// What was made for one mutant alone, removed after it (on every way
/// out): its snapshot, and its own fixtures, image and modules.
#[derive(Default)]
struct Leftovers {
    paths: Vec<PathBuf>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = if p.is_dir() {
                cache::discard(p)
            } else {
                std::fs::remove_file(p).map_err(Into::into)
            };
        }
    }
}

impl Cx<'_> {
    /// Runs the suites (then explore) on a built mutant and decides it in
    /// `r`. Ok(true): the run was stopped.
    fn run_kernel(
        &self,
        m: &Mutant,
        mdir: &Path,
        r: &mut MutantResult,
        (vmlinux, own_modules): (PathBuf, Option<(String, PathBuf)>),
        phase: &dyn Fn(&str),
    ) -> Result<bool> {
        let (ws, req) = (self.ws, self.req);
        let key = mutant_key(&self.worker.base, m);
        let mut leftovers = Leftovers::default();
        let mp = match own_modules {
            None => Prepared {
                manifest: Manifest {
                    key,
                    vmlinux,
                    ..self.base.manifest.clone()
                },
                ..self.base.clone()
            },
            Some((why, modules_dir)) => {
                phase(&format!("{why}: its own modules and fixtures"));
                r.rebuilt_fixtures = Some(why);
                leftovers.paths.push(mdir.join("modroot"));
                // Built against the worker's build dir, which holds this
                // mutant's vmlinux until the next build.
                let v = &self.planned.variant;
                let p = prepare_built(
                    &ws.cache,
                    &ws.project,
                    (&v.name, v.source.name()),
                    Manifest {
                        key,
                        vmlinux,
                        modules_dir,
                        ..self.worker.base.clone()
                    },
                    self.events,
                )?;
                leftovers.paths.push(p.image.path.clone());
                leftovers
                    .paths
                    .push(ws.cache.dir("fixtures").join(&p.fixtures.key));
                p
            }
        };
        phase("running the suites");
        let s = run_suites(&ws.cache, &mp, self.planned, req, mdir, true, self.events)?;
        leftovers.paths.extend(s.snapshot.clone());
        if s.stopped.is_some() {
            return Ok(true);
        }
        r.cases_run = s.results.len();
        let unexpected: Vec<&CaseResult> = s
            .results
            .iter()
            .filter(|c| !c.decision.as_expected)
            .collect();
        r.killers = unexpected.iter().map(|c| killer(c)).collect();
        if let Some(o) = judge(&unexpected) {
            r.outcome = o;
            r.killed_by_suite = matches!(o, Outcome::Killed | Outcome::Timeout);
            if o == Outcome::Error {
                r.error = unexpected[0].failure.as_ref().map(|f| f.message.clone());
            }
        } else if let Some(budget) = req.explore {
            phase("exploring");
            let e = explore_on(
                ws,
                (req, self.planned),
                &mp,
                budget,
                (&mdir.join("explore"), self.run_id),
                self.events,
            )?;
            if !e.complete && teardown::stopping() {
                return Ok(true);
            }
            if let Some(f) = e.findings.first() {
                r.outcome = Outcome::Killed;
                r.killers.push(Killer {
                    by: format!("explore (finding {}, {} sequence(s))", f.id, e.sequences),
                    verdict: "FINDING".into(),
                    step: Some(f.invariant.to_string()),
                    evidence: vec![f.seen.clone()],
                });
            }
        }
        Ok(false)
    }
}

/// The baseline's suites once more, on the variant's coverage twin (one
/// more kernel build), each case's counts read back: what `reach` says of
/// each mutant. Written under `coverage/<variant>/` of `dir`.
fn baseline_coverage(
    ws: &Workspace,
    (req, planned): (&MutantsRequest, &Planned),
    dir: &Path,
    events: &dyn EventSink,
) -> Result<crate::coverage::CoverageReport> {
    let twin = ws.coverage_twin(&planned.variant)?;
    events::note(
        events,
        format!(
            "mutants: the baseline's suites on {}'s coverage twin, for what each case reaches",
            twin.name
        ),
    );
    let p = ws.prepare(&twin, events)?;
    let cdir = dir.join("baseline-coverage");
    let b = run_suites(&ws.cache, &p, planned, req, &cdir, false, events)?;
    if let Some(s) = b.stopped {
        bail!("stopped during the baseline's coverage run: {s}");
    }
    let jobs: Vec<crate::coverage::JobCounts> = b
        .results
        .iter()
        .map(|r| crate::coverage::JobCounts {
            job: crate::coverage::JobRef {
                id: r.id.clone(),
                kind: crate::coverage::JobKind::Case,
            },
            dir: run::case::gcda_path(&cdir, &r.suite, &r.case, &r.variant),
        })
        .collect();
    let (c, page) =
        crate::coverage::of_jobs(ws, (&twin.name, &p.manifest.key), &jobs, dir, events)?;
    events::note(events, format!("mutants: coverage: {}", page.display()));
    Ok(c)
}

/// The baseline refuses the run (exit 2).
#[derive(Debug)]
pub struct BaselineNotClean(pub String);

impl std::fmt::Display for BaselineNotClean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "baseline: {}", self.0)
    }
}

impl std::error::Error for BaselineNotClean {}

fn explore_on(
    ws: &Workspace,
    (req, planned): (&MutantsRequest, &Planned),
    p: &Prepared,
    budget: Duration,
    (dir, run_id): (&Path, &str),
    events: &dyn EventSink,
) -> Result<crate::explore::ExploreReport> {
    let ereq = crate::explore::ExploreRequest {
        variant: req.variant.clone(),
        seed: req.seed,
        budget: crate::explore::Budget::Time(budget),
        max_len: 12,
        workers: req.workers,
        machine: req.machine,
        results_dir: Some(dir.to_path_buf()),
        max_shrink_replays: 20,
        reruns: 1,
        shrinks_per_signature: 1,
        coverage: false,
        guided: false,
        corpus: Vec::new(),
        shard: None,
    };
    let r = crate::explore::explore_prepared(
        ws,
        &ereq,
        p.clone(),
        planned.variant.coexistence.into(),
        (dir, run_id),
        events,
    )?;
    crate::explore::write_json(dir, &r)?;
    Ok(r)
}
