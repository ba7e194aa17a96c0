//! Stage 4: suites x prepared variants -> case results -> a run report.
//!
//! In: a [`RunRequest`] (which suites, variants, cases, shard; workers;
//! the machine; where results go). Out: a [`crate::report::RunReport`] with
//! one [`CaseResult`] per (case, variant) job, written to the results
//! directory, and events for every case as it starts and finishes.
//!
//! - this module: planning the jobs and running a whole request.
//! - `matrix`: job lists, shards, the worker pool.
//! - `case`: one job in a fresh VM, step by step.
//! - `verdict`: a case's outcome against what the variant is meant to do.
//! - `bisect`: judging one commit for `git bisect run`, and driving it.

pub mod bisect;
pub mod case;
pub mod matrix;
pub mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};

pub use case::{run_case, CaseOptions, CaseResult};
pub use matrix::{Job, Totals};
pub use verdict::{Decision, StepRecord, Verdict};

use crate::build::{variant, Variant};
use crate::events::{Event, EventSink, Fanout};
use crate::report::{self, stream::ResultsJsonl, RunReport};
use crate::suite::{self, Suite};
use crate::vm::AccelChoice;
use crate::workspace::Workspace;

/// The guest machine every job gets.
#[derive(Clone, Copy, Debug)]
pub struct Machine {
    pub accel: AccelChoice,
    pub memory_mb: u32,
    pub cpus: u32,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            accel: AccelChoice::Auto,
            memory_mb: 512,
            cpus: 2,
        }
    }
}

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
}

/// The jobs of a request, checked, before anything is built.
pub struct Plan {
    pub variants: Vec<Variant>,
    pub suites: Vec<Suite>,
    pub jobs: Vec<Job>,
    pub shard: Option<(usize, usize)>,
}

/// Loads the suites the request names, checked against the variants.
pub fn load_suites(ws: &Workspace, name: &str, variants: &[Variant]) -> Result<Vec<Suite>> {
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let fx = suite::project_fixtures(&ws.project.root);
    let files = suite::list_files(&ws.project.root)?;
    let chosen: Vec<PathBuf> = if name == "all" {
        files
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
    chosen.iter().map(|f| suite::load(f, &names, &fx)).collect()
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
    let shard = req.shard.as_deref().map(matrix::parse_shard).transpose()?;
    if let Some((i, n)) = shard {
        jobs = matrix::shard(jobs, i, n);
    }
    Ok(Plan {
        variants,
        suites,
        jobs,
        shard,
    })
}

/// A run id: the start time and the runner's pid.
pub fn run_id() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    format!(
        "{}-{}",
        t.trim_end_matches('Z').replace(':', ""),
        std::process::id()
    )
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

/// Runs a request: prepares every variant it needs (kernel, fixtures,
/// image), runs the jobs, writes the reports. Returns the report and the
/// results directory. Each finished case is also appended to
/// `results.jsonl` as it finishes.
pub fn run_suites(
    ws: &Workspace,
    req: &RunRequest,
    events: &dyn EventSink,
) -> Result<(RunReport, PathBuf)> {
    let Plan {
        variants,
        suites,
        jobs,
        shard,
    } = plan(ws, req)?;
    if jobs.is_empty() {
        bail!("no (case, variant) matches the filters");
    }
    let id = run_id();
    let dir = req
        .results_dir
        .clone()
        .unwrap_or_else(|| ws.project.root.join("results").join(&id));
    std::fs::create_dir_all(&dir)?;
    let stream = ResultsJsonl::create(&dir)?;
    let events = Fanout(vec![events, &stream]);
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let t_prep = Instant::now();
    let mut prepared = BTreeMap::new();
    let mut infos = Vec::new();
    for name in jobs
        .iter()
        .map(|j| j.variant.clone())
        .collect::<BTreeSet<_>>()
    {
        let v = variant::select(&variants, std::slice::from_ref(&name))?[0];
        let p = ws.prepare(v, &events)?;
        infos.push(report::VariantInfo::of(&p));
        prepared.insert(name, p);
    }
    let prepare_s = t_prep.elapsed().as_secs_f64();
    let opts = CaseOptions {
        accel: req.machine.accel,
        results_dir: dir.clone(),
        memory_mb: req.machine.memory_mb,
        cpus: req.machine.cpus,
    };
    events.event(&Event::RunStarted {
        run_id: id.clone(),
        total: jobs.len(),
        results_dir: dir.clone(),
    });
    let cpu0 = cpu_times();
    let t_matrix = Instant::now();
    let results = matrix::run(&jobs, &suites, &prepared, &opts, req.workers, &events)?;
    let matrix_s = t_matrix.elapsed().as_secs_f64();
    let cpu1 = cpu_times();
    events.event(&Event::RunFinished { complete: true });
    let report = RunReport {
        schema: report::SCHEMA.into(),
        run_id: id,
        started,
        coexist_version: env!("CARGO_PKG_VERSION").into(),
        host: report::host(),
        accel: results.iter().find_map(|r| r.accel).map(|a| a.to_string()),
        shard,
        suites: suites.iter().map(|s| s.file.suite.clone()).collect(),
        variants: infos,
        totals: matrix::totals(&results),
        results,
        timings: report::Timings {
            prepare_s,
            matrix_s,
            jobs: req.workers.max(1),
            runner_cpu_s: cpu1.0 - cpu0.0,
            qemu_cpu_s: cpu1.1 - cpu0.1,
        },
    };
    report::write_all(&dir, &report)?;
    Ok((report, dir))
}
