//! `explore`, `bench explore`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use coexist::explore::{self, Budget, ExploreReport, ExploreRequest};
use coexist::report;
use coexist::run;
use coexist::teardown;
use coexist::ui::Terminal;
use coexist::workspace::Workspace;

use super::MachineOpts;

#[derive(Args, Clone)]
pub struct ExploreOpts {
    /// The variant to explore (its coexistence rule is the model's).
    #[arg(long, value_name = "NAME")]
    variant: String,
    /// The run's seed (default: from the clock; printed). Decimal or 0x hex.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Explore for this long: 90s, 5m, 1h (default 5m unless --sequences).
    #[arg(long, value_parser = parse_budget, conflicts_with = "sequences")]
    budget: Option<Duration>,
    /// Explore this many sequences instead of a time budget.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    sequences: Option<u64>,
    /// Most operations in a sequence (1 to 64).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_len: u64,
    /// VMs at once (default: the number of cores).
    #[arg(short, long, value_parser = super::count)]
    jobs: Option<usize>,
    /// Most candidates one shrink replays.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    max_shrink_replays: u64,
    /// Failing sequences shrunk per signature (invariant and splat
    /// title); later ones are only counted.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    shrinks_per_signature: u64,
    #[command(flatten)]
    machine: MachineOpts,
    /// Results directory (default: results/<run-id> in the project).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// Explore the variant's coverage twin (gcov on the area's files) and
    /// write coverage.json and an annotated source page (docs/coverage.md).
    #[arg(long)]
    coverage: bool,
    /// Coverage-guided: new sequences mutate those that reached new lines
    /// or branches of the area (implies --coverage; docs/explore.md).
    #[arg(long)]
    guided: bool,
    /// Start a guided run's corpus from this directory (a run's corpus/).
    #[arg(long, value_name = "DIR", requires = "guided")]
    corpus: Option<PathBuf>,
    /// Shard I of N: every N-th sequence of the seed, from the I-th (N
    /// shards of one seed explore disjoint sequences; `report merge`
    /// adds them up; --sequences counts this shard's).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
}

/// A seed when none is given: from the clock and the pid (printed and
/// recorded, so a run can be replayed).
pub(super) fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64 ^ ((std::process::id() as u64) << 32))
        .unwrap_or(1)
}

pub(super) fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a seed (a number, decimal or 0x hex)"))
}

pub(super) fn parse_budget(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration (90s, 5m, 1h): {e}"))?;
    if d.is_zero() || d > Duration::from_secs(7 * 86400) {
        return Err(format!("'{s}': a budget above 0 and at most a week"));
    }
    Ok(d)
}

impl ExploreOpts {
    fn request(&self) -> Result<ExploreRequest> {
        let seed = self.seed.unwrap_or_else(clock_seed);
        let budget = match (self.sequences, self.budget) {
            (Some(n), _) => Budget::Sequences(n),
            (None, Some(d)) => Budget::Time(d),
            (None, None) => Budget::Time(Duration::from_secs(300)),
        };
        Ok(ExploreRequest {
            variant: self.variant.clone(),
            seed,
            budget,
            max_len: self.max_len as usize,
            workers: self
                .jobs
                .unwrap_or_else(coexist::workspace::default_jobs)
                .max(1),
            machine: self.machine.machine(),
            results_dir: self.results.clone(),
            max_shrink_replays: self.max_shrink_replays as usize,
            reruns: 3,
            shrinks_per_signature: self.shrinks_per_signature as usize,
            coverage: self.coverage || self.guided,
            guided: self.guided,
            corpus: match &self.corpus {
                Some(d) => explore::guided::Corpus::load(d)?,
                None => Vec::new(),
            },
            shard: self
                .shard
                .as_deref()
                .map(|s| coexist::run::matrix::parse_shard(s).map(|(i, n)| (i as u64, n as u64)))
                .transpose()?,
        })
    }
}

/// Runs a request and writes explore.json and index.html.
fn run_and_write(ws: &Workspace, req: &ExploreRequest) -> Result<(ExploreReport, PathBuf)> {
    req.check()?;
    // An unknown variant, or coverage of a kernel not built here, is bad
    // input: said before any directory is made.
    let variants = ws.variants(None)?;
    let v = coexist::build::variant::select(&variants, std::slice::from_ref(&req.variant))?[0];
    if req.coverage {
        ws.coverage_twin(v)?;
    }
    let id = run::run_id();
    let dir = explore::results_dir(ws, req, &id);
    std::fs::create_dir_all(&dir)?;
    let term = Terminal::new();
    let r = explore::explore(ws, req, &dir, &id, &term)?;
    explore::write_json(&dir, &r)?;
    report::explore_html::write(&dir, &r)?;
    if req.coverage {
        let (c, page) = coexist::coverage::of_explore(ws, &r, &dir, &term)?;
        print!("{}", coexist::coverage::table(&c));
        println!("coverage: {}", page.display());
    }
    Ok((r, dir))
}

fn exit_code(r: &ExploreReport) -> u8 {
    match teardown::interrupted() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => r.exit_code(),
    }
}

pub fn explore(ws: &Workspace, o: &ExploreOpts) -> Result<u8> {
    let req = o.request()?;
    let (r, dir) = run_and_write(ws, &req)?;
    print!("{}", explore::summary(&r));
    if let Some(why) = &r.incomplete {
        eprintln!("the run is incomplete: {why}");
    }
    println!("reports: {}", dir.display());
    Ok(exit_code(&r))
}

#[derive(Args, Clone)]
pub struct BenchExploreOpts {
    #[command(flatten)]
    explore: ExploreOpts,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// With --guided: the seeds to run each way (default: --seed, or 1,2,3).
    #[arg(long, value_delimiter = ',', value_parser = parse_seed, requires = "guided")]
    seeds: Vec<u64>,
}

/// `bench explore --guided`: uniform and guided side by side, per seed:
/// the area's lines and branches reached over time, and when each finding
/// was first found.
fn bench_guided(ws: &Workspace, o: &BenchExploreOpts, req: &ExploreRequest) -> Result<u8> {
    req.check()?;
    let variants = ws.variants(None)?;
    coexist::build::variant::select(&variants, std::slice::from_ref(&req.variant))?;
    let seeds = match (&o.seeds[..], o.explore.seed) {
        ([], Some(s)) => vec![s],
        ([], None) => vec![1, 2, 3],
        (s, _) => s.to_vec(),
    };
    let root = match &o.explore.results {
        Some(d) => d.clone(),
        None => ws.project.root.join("results").join(run::run_id()),
    };
    let runs = explore::compare_guided(ws, req, &seeds, &root, &Terminal::new())?;
    let budget_s = runs.iter().map(|r| r.report.duration_s).fold(0.0, f64::max);
    let marks: Vec<f64> = (1..=5).map(|i| budget_s * i as f64 / 5.0).collect();
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|g| {
            let r = &g.report;
            let mut found: Vec<(String, f64)> = r
                .findings
                .iter()
                .map(|f| (format!("{} at {}", f.invariant, f.step["step"].as_str().unwrap_or("?")), f.found_s))
                .collect();
            found.sort_by(|a, b| a.1.total_cmp(&b.1));
            serde_json::json!({
                "seed": g.seed,
                "mode": if g.guided { "guided" } else { "uniform" },
                "sequences": r.sequences,
                "duration_s": r.duration_s,
                "corpus": r.corpus,
                "reached": explore::reached_by(r, f64::MAX),
                "over_time": marks.iter().map(|&t| {
                    let p = explore::reached_by(r, t);
                    serde_json::json!({"s": t.round(), "area_lines": p.area_lines, "area_branches": p.area_branches, "lines": p.lines, "branches": p.branches})
                }).collect::<Vec<_>>(),
                "first_found_s": found.iter().map(|(k, s)| serde_json::json!({"finding": k, "s": s})).collect::<Vec<_>>(),
                "results": g.dir,
            })
        })
        .collect();
    if o.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "bench explore --guided {} (-j {}, {}): lines/branches of the area's functions [and of the profiled files] reached at each fifth of the budget, and the first time each finding was found",
            req.variant,
            req.workers,
            explore::budget_text(req.budget)
        );
        for row in &rows {
            let over: Vec<String> = row["over_time"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}s {}/{} [{}/{}]",
                        p["s"], p["area_lines"], p["area_branches"], p["lines"], p["branches"]
                    )
                })
                .collect();
            let found: Vec<String> = row["first_found_s"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    format!(
                        "{} {:.0}s",
                        f["finding"].as_str().unwrap_or(""),
                        f["s"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!(
                "seed {:<4} {:<8} {:>4} seq, corpus {:>3}: {}; found: {}",
                row["seed"],
                row["mode"].as_str().unwrap_or(""),
                row["sequences"],
                row["corpus"],
                over.join("  "),
                if found.is_empty() {
                    "nothing".to_string()
                } else {
                    found.join(", ")
                }
            );
        }
        println!("results: {}", root.display());
    }
    Ok(match teardown::interrupted() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => 0,
    })
}

/// `bench explore`: an explore run's figures (sequences per minute, steps
/// per second, median shrink time).
pub fn bench(ws: &Workspace, o: &BenchExploreOpts) -> Result<u8> {
    let mut req = o.explore.request()?;
    if o.explore.budget.is_none() && o.explore.sequences.is_none() {
        req.budget = Budget::Time(Duration::from_secs(120));
    }
    if o.explore.guided {
        return bench_guided(ws, o, &req);
    }
    let (r, dir) = run_and_write(ws, &req)?;
    let figures = serde_json::json!({
        "variant": r.variant,
        "seed": r.seed,
        "jobs": r.jobs,
        "accel": r.accel,
        "budget": r.budget,
        "duration_s": r.duration_s,
        "sequences": r.sequences,
        "steps": r.steps,
        "sequences_per_min": r.sequences_per_min,
        "steps_per_s": r.steps_per_s,
        "median_shrink_s": r.median_shrink_s,
        "findings": r.findings.len(),
        "results": dir,
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "bench explore {} (-j {}, {}): {:.1} sequences/min, {:.1} steps/s, median shrink {}, {} finding(s); {}",
            r.variant,
            r.jobs,
            r.accel.as_deref().unwrap_or("?"),
            r.sequences_per_min,
            r.steps_per_s,
            r.median_shrink_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "n/a (nothing shrunk)".into()),
            r.findings.len(),
            dir.display()
        );
    }
    Ok(if teardown::interrupted().is_some() {
        exit_code(&r)
    } else {
        0
    })
}
