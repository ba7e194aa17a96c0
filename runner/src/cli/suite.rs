//! `suite`, `bench suite`, `report merge`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use coexist::record::RunReport;
use coexist::report::bench::{Modes, SuiteFigures};
use coexist::report::{self, diff, stream::ResultsJsonl};
use coexist::run::{self, RunRequest};
use coexist::teardown;
use coexist::ui::Terminal;
use coexist::workspace::{default_jobs, Workspace};

use super::{MachineOpts, SourceOpts};

#[derive(Args, Clone)]
pub struct SuiteOpts {
    /// `all`, a suite name (suites/<name>.yaml), or the path of a suite
    /// file (an explore repro).
    #[arg(default_value = "all")]
    name: String,
    /// Only these variants (repeatable).
    #[arg(long = "variant", value_name = "NAME")]
    variants: Vec<String>,
    /// Only cases whose name matches this glob (e.g. 'cmdline/*').
    #[arg(long, value_name = "GLOB")]
    case: Option<String>,
    /// List the (case, variant) jobs and exit.
    #[arg(long)]
    list: bool,
    /// VMs at once (default: the number of cores).
    #[arg(short, long, value_parser = super::count)]
    jobs: Option<usize>,
    /// Run a stable 1/N slice of the job list (I/N, 1-based).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    #[command(flatten)]
    machine: MachineOpts,
    /// Results directory (default: results/<run-id> in the project).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// Boot every job instead of restoring a saved READY guest.
    #[arg(long)]
    fresh_boot: bool,
    /// Run each variant's coverage twin (gcov on the area's files) and
    /// write coverage.json and an annotated source page (docs/coverage.md).
    #[arg(long)]
    coverage: bool,
    #[command(flatten)]
    src: SourceOpts,
}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// Merge shard reports (report.json of each shard, mutants.json of
    /// each shard of a mutants run, or explore.json of each shard of an
    /// explore) into one report.
    Merge {
        /// report.json files (or their results directories).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.json, junit.xml, results.ktap.
        #[arg(long)]
        out: PathBuf,
        /// Merge an incomplete set (missing or interrupted shards) into a
        /// report marked incomplete instead of refusing it.
        #[arg(long)]
        allow_partial: bool,
        /// Explore shards: mark the findings that are known kernel bugs
        /// (kernel-config/known-findings.yaml); exit 1 only when a finding is
        /// not one.
        #[arg(long, value_name = "FILE")]
        known: Option<PathBuf>,
    },
    /// Add up the coverage of runs on one coverage twin (a suite run's and
    /// an explore run's coverage.json, or their results directories) and
    /// print the area's functions by suites, by explore and by both.
    Coverage {
        /// coverage.json files, or results directories holding one under
        /// coverage/<variant>/ (an explore run on a coverage twin without
        /// one, a bench run's, has it made from its sequences' counts).
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Also write the sum (coverage.json, coverage.info, html/) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A run in KCIDB form (KernelCI's reporting schema v5.3): a checkout
    /// per kernel source, a build per variant, a test per case and
    /// variant, an issue per known bug and an incident per xfail or xpass
    /// of it (docs/ci.md#kcidb-results-for-kernelci).
    Kcidb {
        /// The run (its results directory, or its report.json).
        run: PathBuf,
        /// The origin: the submitting system's name in KCIDB ids.
        #[arg(long, default_value = "coexist", value_parser = origin)]
        origin: String,
        /// Write the document here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// What changed from OLD to NEW (run dirs or report.json files): newly
    /// failing, fixed, still failing, new and removed cases, changed
    /// expectations, timing changes; or, with --variants A,B and one run,
    /// what variant B changes from A. Exit 1 when something regressed.
    Diff {
        /// OLD and NEW; one run with --variants.
        #[arg(required = true, num_args = 1..=2)]
        reports: Vec<PathBuf>,
        /// Compare two variants of one run: OLD,NEW (e.g. stock,share-ipmodify).
        #[arg(long, value_name = "A,B")]
        variants: Option<String>,
        /// Print JSON.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print Markdown (for a CI comment or job summary).
        #[arg(long)]
        markdown: bool,
    },
}

impl SuiteOpts {
    fn request(&self) -> RunRequest {
        RunRequest {
            suite: self.name.clone(),
            variants: self.variants.clone(),
            case_glob: self.case.clone(),
            shard: self.shard.clone(),
            workers: self.jobs.unwrap_or_else(default_jobs).max(1),
            machine: self.machine.machine(),
            results_dir: self.results.clone(),
            kernel_tree: self.src.kernel_tree.clone(),
            fresh_boot: self.fresh_boot,
            coverage: self.coverage,
        }
    }
}

/// `--list`, or the run; None after listing.
fn run_or_list(ws: &Workspace, o: &SuiteOpts) -> Result<Option<(RunReport, PathBuf)>> {
    let req = o.request();
    if o.list {
        let plan = run::plan(ws, &req)?;
        for j in &plan.jobs {
            println!("{}", j.id);
        }
        eprintln!("{} job(s)", plan.jobs.len());
        return Ok(None);
    }
    Ok(Some(run_and_report(ws, &req, &Terminal::new())?))
}

/// Runs a request and writes its reports: `results.jsonl` as cases
/// finish, the others at the end (also for a run stopped early, from
/// what finished). Returns the report and the results directory.
fn run_and_report(
    ws: &Workspace,
    req: &RunRequest,
    term: &Terminal,
) -> Result<(RunReport, PathBuf)> {
    let started = run::start(ws, req, term)?;
    let dir = started.dir.clone();
    let stream = ResultsJsonl::create(&dir)?;
    let report = started.execute(ws, term, &stream)?;
    report::write_all(&dir, &report)?;
    Ok((report, dir))
}

pub fn suite(ws: &Workspace, o: &SuiteOpts) -> Result<u8> {
    let Some((report, dir)) = run_or_list(ws, o)? else {
        return Ok(0);
    };
    println!("{}", report::table(&report));
    if o.coverage {
        for (c, page) in coexist::coverage::of_run(ws, &report, &dir, &Terminal::new())? {
            print!("{}", coexist::coverage::table(&c));
            println!("coverage: {}", page.display());
        }
    }
    println!("reports: {}", dir.display());
    Ok(exit_code(&report))
}

/// The report's exit code; 128 + the signal when one stopped the run.
fn exit_code(r: &RunReport) -> u8 {
    if let Some(why) = &r.incomplete {
        eprintln!("the run is incomplete: {why}");
    }
    match teardown::interrupted() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => r.exit_code(),
    }
}

/// `bench suite`: the matrix with fresh boots, then with snapshots, on
/// the same machine; the figures side by side (`--json` for scripts).
pub fn bench(ws: &Workspace, o: &BenchOpts) -> Result<u8> {
    if o.suite.list {
        return run_or_list(ws, &o.suite).map(|_| 0);
    }
    if o.suite.fresh_boot {
        anyhow::bail!(
            "--fresh-boot: bench suite runs the matrix both ways (fresh boots, then snapshots)"
        );
    }
    let mut fresh_req = o.suite.request();
    fresh_req.fresh_boot = true;
    let mut snap_req = o.suite.request();
    snap_req.fresh_boot = false;
    if let Some(r) = &o.suite.results {
        fresh_req.results_dir = Some(r.join("fresh"));
        snap_req.results_dir = Some(r.join("snapshot"));
    }
    let term = Terminal::new();
    let (fresh, fresh_dir) = run_and_report(ws, &fresh_req, &term)?;
    let (snap, snap_dir) = run_and_report(ws, &snap_req, &term)?;
    let modes = Modes::of(&fresh, &snap);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&modes)?);
    } else {
        println!("fresh boot:\n{}\n", SuiteFigures::of(&fresh).text());
        println!("snapshot:\n{}\n", SuiteFigures::of(&snap).text());
        println!("{}", modes.text());
        println!(
            "reports: {} (fresh), {} (snapshot)",
            fresh_dir.display(),
            snap_dir.display()
        );
    }
    Ok(exit_code(&fresh).max(exit_code(&snap)))
}

/// `bench coverage`: the request run on the variants, then on their
/// coverage twins (snapshots both times), and the twins' counts read.
pub fn bench_coverage(ws: &Workspace, o: &BenchOpts) -> Result<u8> {
    if o.suite.coverage || o.suite.fresh_boot {
        anyhow::bail!(
            "bench coverage runs the cases without and with --coverage, restoring snapshots"
        );
    }
    let plain_req = o.suite.request();
    let mut cov_req = o.suite.request();
    cov_req.coverage = true;
    if let Some(r) = &o.suite.results {
        cov_req.results_dir = Some(r.join("coverage"));
    }
    let plain_req = RunRequest {
        results_dir: o.suite.results.as_ref().map(|r| r.join("plain")),
        ..plain_req
    };
    let term = Terminal::new();
    let (plain, plain_dir) = run_and_report(ws, &plain_req, &term)?;
    let (cov, cov_dir) = run_and_report(ws, &cov_req, &term)?;
    let t = std::time::Instant::now();
    let reports = coexist::coverage::of_run(ws, &cov, &cov_dir, &term)?;
    let analysis_s = t.elapsed().as_secs_f64();
    let (a, b) = (SuiteFigures::of(&plain), SuiteFigures::of(&cov));
    let median = |f: &SuiteFigures| f.per_job.as_ref().map(|s| s.median);
    let figures = serde_json::json!({
        "plain": a,
        "coverage": b,
        "per_job_median_s": {"plain": median(&a), "coverage": median(&b)},
        "read_counts_s": analysis_s,
        "read_counts_per_job_s": analysis_s / (cov.results.len().max(1) as f64),
        "variants": cov.variants.iter().map(|v| serde_json::json!({"name": v.name, "twin_key": v.kernel_key, "twin_build_s": v.build_s, "twin_cached": v.kernel_cached})).collect::<Vec<_>>(),
        "lines_hit": reports.iter().map(|(r, _)| r.files.iter().map(|f| f.lines.hit).sum::<u32>()).collect::<Vec<_>>(),
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!("without coverage:\n{}\n", a.text());
        println!("with coverage (the twin):\n{}\n", b.text());
        println!(
            "per job, median: {:.2} s without, {:.2} s with coverage; reading the counts (gcov, genhtml): {:.1} s, {:.2} s per job",
            median(&a).unwrap_or(0.0),
            median(&b).unwrap_or(0.0),
            analysis_s,
            analysis_s / (cov.results.len().max(1) as f64)
        );
        println!(
            "reports: {} (plain), {} (coverage)",
            plain_dir.display(),
            cov_dir.display()
        );
    }
    Ok(exit_code(&plain).max(exit_code(&cov)))
}

#[derive(Args, Clone)]
pub struct BenchOpts {
    #[command(flatten)]
    suite: SuiteOpts,
    /// Print the figures of both modes as JSON.
    #[arg(long)]
    json: bool,
}

fn read_report(p: &Path) -> Result<RunReport> {
    let f = if p.is_dir() {
        p.join("report.json")
    } else {
        p.to_path_buf()
    };
    let b = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("{}: not a coexist report", f.display()))
}

/// `--origin`: a KCIDB origin.
fn origin(s: &str) -> Result<String, String> {
    coexist::report::kcidb::check_origin(s)
        .map(|()| s.to_string())
        .map_err(|e| format!("{e:#}"))
}

/// Shards that did not all finish merge only with `--allow-partial`.
fn refuse_incomplete(complete: bool, why: Option<&str>, allow_partial: bool) -> Result<()> {
    if !complete && !allow_partial {
        anyhow::bail!(
            "the shards are incomplete ({}); --allow-partial merges them into a report marked incomplete",
            why.unwrap_or("")
        );
    }
    Ok(())
}

/// A run's coverage.json: the file, or the one under a results
/// directory's `coverage/<variant>/`, made first for an explore run on a
/// coverage twin that has none.
fn coverage_file(p: &Path, ws: &dyn Fn() -> Result<Workspace>) -> Result<PathBuf> {
    if !p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let dir = p.join("coverage");
    let explore_json = p.join("explore.json");
    if !dir.is_dir() && explore_json.is_file() {
        let b = std::fs::read(&explore_json)?;
        let r: coexist::explore::ExploreReport = serde_json::from_slice(&b)
            .with_context(|| format!("{}: not an explore report", explore_json.display()))?;
        if r.profiled.is_empty() {
            anyhow::bail!("{}: an explore run without --coverage", p.display());
        }
        let (_, page) = coexist::coverage::of_explore(&ws()?, &r, p, &Terminal::new())?;
        eprintln!("coverage of {}: {}", p.display(), page.display());
    }
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{}: no coverage/ (was it run with --coverage?)",
                p.display()
            )
        })?
        .flatten()
        .map(|e| e.path().join("coverage.json"))
        .filter(|f| f.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("{}: no coverage/<variant>/coverage.json", dir.display()),
        many => anyhow::bail!(
            "{}: the coverage of {} variants; name one's coverage.json",
            dir.display(),
            many.len()
        ),
    }
}

pub fn report(cmd: &ReportCmd, (root, cache): (Option<PathBuf>, Option<PathBuf>)) -> Result<u8> {
    match cmd {
        ReportCmd::Coverage { runs, out } => {
            let ws = || Workspace::open(root.clone(), cache.clone());
            let parts = runs
                .iter()
                .map(|p| {
                    let f = coverage_file(p, &ws)?;
                    let b = std::fs::read(&f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    serde_json::from_slice(&b)
                        .with_context(|| format!("{}: not a coexist coverage.json", f.display()))
                })
                .collect::<Result<Vec<coexist::coverage::CoverageReport>>>()?;
            let merged = coexist::coverage::merge(parts)?;
            print!("{}", coexist::coverage::table(&merged));
            if let Some(out) = out {
                let page = coexist::coverage::write(out, &merged)?;
                println!("coverage: {}", page.display());
            }
            Ok(0)
        }
        ReportCmd::Kcidb { run, origin, out } => {
            let doc = coexist::report::kcidb::document(&read_report(run)?, origin)?;
            let text = serde_json::to_string_pretty(&doc)? + "\n";
            match out {
                Some(f) => coexist::cache::write_atomic(f, text.as_bytes())
                    .with_context(|| format!("cannot write {}", f.display()))?,
                None => print!("{text}"),
            }
            Ok(0)
        }
        ReportCmd::Diff {
            reports,
            variants,
            json,
            markdown,
        } => {
            let d = match (variants, reports.as_slice()) {
                (Some(v), [one]) => {
                    let (a, b) = v
                        .split_once(',')
                        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
                        .with_context(|| format!("--variants {v}: expected A,B"))?;
                    diff::variants(&read_report(one)?, a, b)?
                }
                (Some(_), _) => anyhow::bail!("--variants compares two variants of ONE run"),
                (None, [old, new]) => diff::runs(&read_report(old)?, &read_report(new)?),
                (None, _) => {
                    anyhow::bail!("report diff needs OLD and NEW (or one run with --variants)")
                }
            };
            // Two runs with --coverage: what they reached, too.
            let coverage = match (variants, reports.as_slice()) {
                (None, [old, new]) => {
                    let read = |p: &PathBuf| -> Option<coexist::coverage::CoverageReport> {
                        let f = coverage_file(p, &|| anyhow::bail!("not an explore run")).ok()?;
                        serde_json::from_slice(&std::fs::read(f).ok()?).ok()
                    };
                    read(old)
                        .zip(read(new))
                        .map(|(a, b)| coexist::coverage::diff(&a, &b))
                }
                _ => None,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else if *markdown {
                print!("{}", diff::markdown(&d));
                if let Some(c) = &coverage {
                    print!("\n```\n{c}```\n");
                }
            } else {
                print!("{}", diff::text(&d));
                if let Some(c) = &coverage {
                    print!("{c}");
                }
            }
            Ok(d.exit_code())
        }
        ReportCmd::Merge {
            reports,
            out,
            allow_partial,
            known,
        } => {
            // The known findings, read (and checked) before anything else.
            let known = match known {
                Some(f) => {
                    let variants: Option<Vec<String>> =
                        Workspace::open(root.clone(), cache.clone())
                            .ok()
                            .and_then(|ws| ws.project.load_variants(None).ok())
                            .map(|v| v.into_iter().map(|v| v.name).collect());
                    Some(coexist::explore::known::load(f, variants.as_deref())?)
                }
                None => None,
            };
            // Shards of a mutants run: their mutants.json files.
            let mutants_file = |p: &Path| {
                if p.is_dir() {
                    Some(p.join(coexist::mutants::results::FILE)).filter(|f| f.is_file())
                } else {
                    (p.file_name()
                        .is_some_and(|n| n == coexist::mutants::results::FILE))
                    .then(|| p.to_path_buf())
                }
            };
            // Shards of an explore: their results directories (explore.json).
            let explore_file = |p: &Path| {
                let f = if p.is_dir() {
                    p.join("explore.json")
                } else {
                    p.to_path_buf()
                };
                (f.file_name().is_some_and(|n| n == "explore.json") && f.is_file()).then_some(f)
            };
            if reports.iter().any(|p| explore_file(p).is_some()) {
                let parts = reports
                    .iter()
                    .map(|p| {
                        let f = explore_file(p).with_context(|| {
                            format!("{}: not an explore run (the others are)", p.display())
                        })?;
                        let b = std::fs::read(&f)?;
                        let r: coexist::explore::ExploreReport = serde_json::from_slice(&b)
                            .with_context(|| format!("{}: not an explore report", f.display()))?;
                        Ok((f.parent().unwrap_or(Path::new(".")).to_path_buf(), r))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut merged = coexist::explore::merge(&parts)?;
                refuse_incomplete(
                    merged.complete,
                    merged.incomplete.as_deref(),
                    *allow_partial,
                )?;
                if let Some(k) = &known {
                    coexist::explore::known::classify(&mut merged, k);
                }
                std::fs::create_dir_all(out)?;
                coexist::explore::write_json(out, &merged)?;
                report::explore_html::write(out, &merged)?;
                print!("{}", coexist::explore::summary(&merged));
                println!("reports: {}", out.display());
                if known.is_some() {
                    for f in &merged.findings {
                        match &f.known {
                            Some(k) => println!(
                                "finding {}: the known bug '{}' ({})",
                                f.id, k.name, k.reference
                            ),
                            None => println!("finding {}: NOT a known bug", f.id),
                        }
                    }
                }
                return Ok(merged.exit_code());
            }
            if known.is_some() {
                anyhow::bail!("--known: only explore shards have findings to mark");
            }
            if reports.iter().any(|p| mutants_file(p).is_some()) {
                let parts = reports
                    .iter()
                    .map(|p| {
                        let f = mutants_file(p).with_context(|| {
                            format!("{}: not a mutants report (the others are)", p.display())
                        })?;
                        Ok((
                            f.display().to_string(),
                            coexist::mutants::results::load(&f)?,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let merged = coexist::mutants::results::merge(&parts)?;
                refuse_incomplete(
                    merged.complete,
                    merged.incomplete.as_deref(),
                    *allow_partial,
                )?;
                std::fs::create_dir_all(out)?;
                coexist::mutants::results::write(out, &merged)?;
                report::mutants_html::write(out, &merged)?;
                print!("{}", merged.table());
                println!("reports: {}", out.display());
                return Ok(0);
            }
            let parts = reports
                .iter()
                .map(|p| read_report(p))
                .collect::<Result<Vec<_>>>()?;
            let merged = report::merge(parts, *allow_partial)?;
            report::write_all(out, &merged)?;
            println!("{}", report::table(&merged));
            println!("reports: {}", out.display());
            Ok(exit_code(&merged))
        }
    }
}
