//! Stage 4: suites x prepared variants -> case results -> a run report.
//!
//! In: a [`RunRequest`] (which suites, variants, cases, shard; workers;
//! the machine; where results go). Out: a [`RunReport`] with one
//! [`record::CaseResult`] per (case, variant) job, events for every case as it
//! starts and finishes, and each finished case's record to the caller's
//! [`RecordSink`]. The caller writes the reports (`crate::report`): this
//! stage imports nothing above it.
//!
//! - this module: planning the jobs ([`start`]) and running them
//!   ([`Started::execute`]).
//! - `matrix`: job lists, shards, the worker pool.
//! - `case`: one job in a fresh VM, step by step.
//! - `verdict`: a case's outcome against what the variant is meant to do.
//! - `bisect`: judging one commit for `git bisect run`, and driving it.
//! - `loop_bench`: `bench loop`, the developer's loop timed from outside.

pub mod bisect;
pub mod case;
pub mod estimates;
pub mod loop_bench;
pub mod matrix;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

pub use crate::guest::Machine;
pub use case::{run_case, CaseOptions};
pub use matrix::Job;

use crate::build::{variant, Variant};
use crate::cache::KeyHasher;
use crate::events::{self, Event, EventSink};
use crate::guest;
use crate::input;
use crate::record::{self, Host, PlanInfo, RecordSink, RunReport, VariantInfo};
use crate::steps::selftest::{self, SelftestsByVariant};
use crate::suite::{self, Suite};
use crate::teardown;
use crate::vm::snapshot::Snapshots;
use crate::workspace::Workspace;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// `all`, or a suite name (`suites/<name>.yaml`).
    pub suite: String,
    /// Only these variants (empty: every variant the suites name).
    pub variants: Vec<String>,
    /// Only cases whose name matches this glob.
    pub case_glob: Option<String>,
    /// A stable slice `I/N` of the job list.
    pub shard: Option<String>,
    /// VMs at once.
    pub workers: usize,
    pub machine: Machine,
    /// Default: `results/<run-id>` in the project.
    pub results_dir: Option<PathBuf>,
    /// Build this kernel tree instead of each variant's source.
    pub kernel_tree: Option<PathBuf>,
    /// Boot every job (no snapshots).
    pub fresh_boot: bool,
    /// Run the jobs' variants' coverage twins and read each job's gcov
    /// counts back (`Variant::coverage_twin`).
    pub coverage: bool,
}

/// The jobs of a request, checked, before anything is built.
pub struct Plan {
    pub variants: Vec<Variant>,
    pub suites: Vec<Suite>,
    /// This run's jobs (its shard's, when sharded).
    pub jobs: Vec<Job>,
    pub shard: Option<(usize, usize)>,
    /// The whole job list, which every shard of the run shares.
    pub info: PlanInfo,
}

/// Loads the suites the request names, checked against the variants.
pub fn load_suites(ws: &Workspace, name: &str, variants: &[Variant]) -> Result<Vec<Suite>> {
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let fx = crate::image::project_fixtures(&ws.project.root);
    let files = suite::list_files(&ws.project.root)?;
    let chosen: Vec<PathBuf> = if name == "all" {
        files
    } else if name.ends_with(".yaml") && Path::new(name).is_file() {
        // A suite file given by its path (an explore repro, say).
        vec![PathBuf::from(name)]
    } else {
        let want = ws.project.root.join("suites").join(format!("{name}.yaml"));
        if !files.contains(&want) {
            bail!(
                "unknown suite '{name}' (suites: {})",
                files
                    .iter()
                    .filter_map(|f| f.file_stem())
                    .map(|s| s.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        vec![want]
    };
    let suites = chosen
        .iter()
        .map(|f| suite::load(f, &names, &fx))
        .collect::<Result<Vec<_>>>()?;
    suite::check_unique_names(&suites)?;
    Ok(suites)
}

/// Checks the request and lists its jobs, without building anything.
pub fn plan(ws: &Workspace, req: &RunRequest) -> Result<Plan> {
    let variants = ws.variants(req.kernel_tree.as_deref())?;
    for v in &req.variants {
        variant::select(&variants, std::slice::from_ref(v))?;
    }
    let suites = load_suites(ws, &req.suite, &variants)?;
    let glob = match &req.case_glob {
        Some(g) => Some(glob::Pattern::new(g).map_err(|e| anyhow::anyhow!("--case {g}: {e}"))?),
        None => None,
    };
    let mut jobs = matrix::jobs(&suites, &req.variants, glob.as_ref());
    if jobs.is_empty() {
        bail!("{}", no_jobs(&suites, req, glob.as_ref()));
    }
    let mut variants = variants;
    if req.coverage {
        let used: BTreeSet<&str> = jobs.iter().map(|j| j.variant.as_str()).collect();
        for v in variants
            .iter_mut()
            .filter(|v| used.contains(v.name.as_str()))
        {
            *v = ws.coverage_twin(v)?;
        }
    }
    let info = plan_info(ws, &suites, &jobs)?;
    let shard = req.shard.as_deref().map(matrix::parse_shard).transpose()?;
    if let Some((i, n)) = shard {
        jobs = matrix::shard(jobs, i, n);
    }
    Ok(Plan {
        variants,
        suites,
        jobs,
        shard,
        info,
    })
}

/// Why the filters leave no job: the `--case` glob matches no case (the
/// nearest case names are listed), or the cases it leaves run on none of
/// the `--variant` filter's variants (the ones they run on are listed).
fn no_jobs(suites: &[Suite], req: &RunRequest, glob: Option<&glob::Pattern>) -> String {
    let names: Vec<&str> = suites.iter().map(|s| s.file.suite.as_str()).collect();
    let of_suites = match names.as_slice() {
        [one] => format!("the suite {one}"),
        many => format!("the suites {}", many.join(", ")),
    };
    let cases = || {
        suites
            .iter()
            .flat_map(|s| s.file.cases.iter().map(move |c| (s, c)))
    };
    let matched: Vec<_> = cases()
        .filter(|(_, c)| glob.is_none_or(|g| g.matches(&c.name)))
        .collect();
    if let (Some(g), true) = (&req.case_glob, matched.is_empty()) {
        let near = input::nearest(g, cases().map(|(_, c)| c.name.as_str()), 5);
        return format!(
            "--case '{g}' matches no case of {of_suites}; nearest: {}",
            near.join(", ")
        );
    }
    let mut runs_on: Vec<&str> = Vec::new();
    for (s, c) in &matched {
        for v in s.case_variants(c) {
            if !runs_on.contains(&v.as_str()) {
                runs_on.push(v);
            }
        }
    }
    let n = matched.len();
    let (which, they) = match n {
        1 => ("which runs", "it runs"),
        _ => ("which run", "they run"),
    };
    let what = match &req.case_glob {
        Some(g) => format!(
            "--case '{g}' matches {n} case{}, {which}",
            if n == 1 { "" } else { "s" }
        ),
        None => format!("the {n} case(s) of {of_suites} run"),
    };
    format!(
        "{what} on none of --variant {} ({they} on {})",
        req.variants.join(", "),
        runs_on.join(", ")
    )
}

/// What identifies the whole run across its shards: the job ids, the suite
/// files and the variants file.
fn plan_info(ws: &Workspace, suites: &[Suite], jobs: &[Job]) -> Result<PlanInfo> {
    let mut h = KeyHasher::new("plan-v1");
    for j in jobs {
        h.part("job", j.id.as_bytes());
    }
    for s in suites {
        h.part("suite", &std::fs::read(&s.path)?);
    }
    h.part("variants", &std::fs::read(ws.project.variants_file())?);
    Ok(PlanInfo {
        key: h.finish(),
        jobs: jobs.len(),
    })
}

/// The selftests the jobs run, by variant, for the selftest family's
/// checks (`steps::selftest::sources`).
fn selftests_by_variant(suites: &[Suite], jobs: &[Job]) -> SelftestsByVariant {
    let mut m: SelftestsByVariant = BTreeMap::new();
    for j in jobs {
        let s = &suites[j.suite];
        let case = &s.file.cases[j.case];
        for st in &case.steps {
            if let Some(rel) = selftest::source_path(&st.step) {
                m.entry(j.variant.clone())
                    .or_default()
                    .push(selftest::Wanted {
                        suite_file: s.path.clone(),
                        case: case.name.clone(),
                        test: selftest::test_name(&st.step).to_string(),
                        rel,
                    });
            }
        }
    }
    m
}

/// Creates the results directory and checks that it takes a file, before
/// anything is built.
fn writable_results_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the results directory {}", dir.display()))?;
    let probe = dir.join(".coexist-write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the results directory {} is not writable", dir.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

/// A run id: the start time and the runner's pid (and a count, for a
/// second run in the same process: `bench suite` runs two).
pub fn run_id() -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let id = format!(
        "{}-{}",
        t.trim_end_matches('Z').replace(':', ""),
        std::process::id()
    );
    if n == 0 {
        id
    } else {
        format!("{id}-{}", n + 1)
    }
}

/// (this process's CPU seconds, its waited-for children's CPU seconds).
fn cpu_times() -> (f64, f64) {
    use nix::sys::resource::{getrusage, UsageWho};
    let secs = |who| {
        getrusage(who)
            .map(|u| {
                let t =
                    |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
                t(u.user_time()) + t(u.system_time())
            })
            .unwrap_or(0.0)
    };
    (secs(UsageWho::RUSAGE_SELF), secs(UsageWho::RUSAGE_CHILDREN))
}

/// A checked run, before anything is built: its plan, its id and its
/// results directory (created, and known to take a file).
pub struct Started {
    plan: Plan,
    selftests: SelftestsByVariant,
    pub id: String,
    pub dir: PathBuf,
    started: String,
    req: RunRequest,
}

/// Starts a request: plans its jobs, checks that every selftest they run
/// is in its variant's source, and makes the results directory; nothing
/// is built yet. The caller then opens its record sinks (`results.jsonl`)
/// in [`Started::dir`] and calls [`Started::execute`].
pub fn start(ws: &Workspace, req: &RunRequest, events: &dyn EventSink) -> Result<Started> {
    // Filters that leave no job are refused by `plan`; an empty shard is
    // a complete (empty) part of its run.
    let plan = plan(ws, req)?;
    let selftests = selftests_by_variant(&plan.suites, &plan.jobs);
    selftest::sources::in_sources(ws, &selftests, &plan.variants, events)?;
    let id = run_id();
    let dir = req
        .results_dir
        .clone()
        .unwrap_or_else(|| ws.project.root.join("results").join(&id));
    writable_results_dir(&dir)?;
    Ok(Started {
        plan,
        selftests,
        id,
        dir,
        started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        req: req.clone(),
    })
}

impl Started {
    /// Prepares every variant the jobs need (kernel, fixtures, image),
    /// runs the jobs, and returns the run's report. Each finished case
    /// goes to `records` as it finishes. A run stopped by a signal or a
    /// runner panic still returns its report, from the cases that
    /// finished, marked incomplete.
    pub fn execute(
        self,
        ws: &Workspace,
        events: &dyn EventSink,
        records: &dyn RecordSink,
    ) -> Result<RunReport> {
        let _graceful = teardown::graceful();
        let Started {
            plan:
                Plan {
                    variants,
                    suites,
                    jobs,
                    shard,
                    info,
                },
            selftests,
            id,
            dir,
            started,
            req,
        } = self;
        let t_prep = Instant::now();
        let mut prepared = BTreeMap::new();
        let mut infos = Vec::new();
        let names: BTreeSet<String> = jobs.iter().map(|j| j.variant.clone()).collect();
        // A prebuilt kernel's package is resolved before any kernel builds.
        crate::build::kinds::check_all(variants.iter().filter(|v| names.contains(&v.name)))?;
        for name in names {
            let v = variant::select(&variants, std::slice::from_ref(&name))?[0];
            let p = ws
                .prepare(v, events)
                .map_err(|e| match teardown::interrupted() {
                    Some(sig) => {
                        anyhow::anyhow!("interrupted by signal {sig} while preparing {name}: {e:#}")
                    }
                    None => e,
                })?;
            selftest::sources::present(&selftests, &p)?;
            infos.push(VariantInfo::of(&p));
            prepared.insert(name, p);
        }
        // Read once: the QEMU version keys the snapshots and heads the report.
        let host = Host::current();
        let snapshots = if req.fresh_boot {
            None
        } else {
            let s = Snapshots::new(&ws.cache);
            for (name, p) in &prepared {
                // A snapshot costs a boot and a save, and pays off from the
                // second restore: not for the one job of a kernel built
                // just now (a developer's edit-build-test loop).
                if !p.kernel_cached && jobs.iter().filter(|j| &j.variant == name).count() <= 1 {
                    events::note(
                        events,
                        format!("{name}: one job on a kernel built now; it boots (no snapshot)"),
                    );
                    continue;
                }
                let job = guest::Job::logged(dir.join("snapshot-boot.log"));
                if let Err(e) = req
                    .machine
                    .prepare_snapshot(&s, (name, p), job, &host.qemu, events)
                {
                    events::note(
                        events,
                        format!("no snapshot for {name} ({e}); its jobs boot fresh"),
                    );
                }
                if let (Some(snap), Some(info)) =
                    (s.get(name), infos.iter_mut().find(|i| &i.name == name))
                {
                    info.snapshot = Some(snap.key.clone());
                }
            }
            Some(std::sync::Arc::new(s))
        };
        let prepare_s = t_prep.elapsed().as_secs_f64();
        let opts = CaseOptions {
            machine: req.machine,
            results_dir: dir.clone(),
            snapshots,
        };
        events.event(&Event::RunStarted {
            run_id: id.clone(),
            total: jobs.len(),
            results_dir: dir,
        });
        let cpu0 = cpu_times();
        let t_matrix = Instant::now();
        let estimates = estimates::load(&ws.cache);
        let matrix::Outcome { results, stopped } = matrix::run(
            &jobs,
            &suites,
            &prepared,
            &opts,
            (req.workers, &estimates),
            events,
            records,
        )?;
        if let Err(e) = estimates::record(&ws.cache, &results) {
            events::note(events, format!("job durations not recorded: {e:#}"));
        }
        let matrix_s = t_matrix.elapsed().as_secs_f64();
        let cpu1 = cpu_times();
        events.event(&Event::RunFinished {
            complete: stopped.is_none(),
        });
        Ok(RunReport {
            schema: record::SCHEMA.into(),
            run_id: id,
            started,
            coexist_version: env!("CARGO_PKG_VERSION").into(),
            host,
            accel: results.iter().find_map(|r| r.accel).map(|a| a.to_string()),
            shard,
            plan: info,
            jobs: jobs.len(),
            complete: stopped.is_none(),
            incomplete: stopped,
            suites: suites.iter().map(|s| s.file.suite.clone()).collect(),
            variants: infos,
            totals: record::totals(&results),
            results,
            timings: record::Timings {
                prepare_s,
                matrix_s,
                jobs: req.workers.max(1),
                runner_cpu_s: cpu1.0 - cpu0.0,
                qemu_cpu_s: cpu1.1 - cpu0.1,
            },
        })
    }
}
