//! `mutants`, `bench mutants`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use coexist::mutants::{self, results, MutantsReport, MutantsRequest, Operator, ScopeKind};
use coexist::report;
use coexist::run;
use coexist::teardown;
use coexist::ui::Terminal;
use coexist::workspace::Workspace;

use super::MachineOpts;

#[derive(Args, Clone)]
pub struct MutantsOpts {
    /// The variant whose kernel is mutated (built from a source).
    #[arg(long, value_name = "NAME")]
    variant: String,
    /// Which functions: default (the area's list in kernel-config/area.yaml
    /// and the functions the variant's series touches), series, area.
    #[arg(long, value_enum, default_value_t = ScopeKind::Default, conflicts_with = "function")]
    scope: ScopeKind,
    /// Only this function, FILE:FUNC (repeatable), e.g.
    /// kernel/bpf/trampoline.c:bpf_tramp_ftrace_ops_func.
    #[arg(long, value_name = "FILE:FUNC", value_parser = mutants::scope::parse_function)]
    function: Vec<(String, String)>,
    /// Only this mutant of the scope, by id (repeatable): a survivor run
    /// again, with --explore, say.
    #[arg(long, value_name = "ID")]
    mutant: Vec<String>,
    /// Only these operators (repeatable; default: all).
    #[arg(long, value_enum, value_name = "NAME")]
    operator: Vec<Operator>,
    /// Suites each mutant runs (repeatable; default livepatch-bpf).
    #[arg(long, value_name = "NAME")]
    suite: Vec<String>,
    /// Only the suites' cases whose name matches this glob (e.g. '*fexit*').
    #[arg(long, value_name = "GLOB")]
    case: Option<String>,
    /// Explore each mutant the suites did not kill for this long (90s, 2m).
    #[arg(long, value_parser = super::explore::parse_budget, value_name = "DURATION")]
    explore: Option<Duration>,
    /// The explore seed (default: from the clock; recorded).
    #[arg(long, value_parser = super::explore::parse_seed)]
    seed: Option<u64>,
    /// Guests at once (default: the number of cores); one build at a time.
    #[arg(short, long, value_parser = super::count)]
    jobs: Option<usize>,
    /// A stable slice I/N of the mutants (1-based), for CI jobs.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Print the mutants (id, operator, file:line:col, diff) and exit;
    /// nothing is built.
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    machine: MachineOpts,
    /// Results directory (default: results/<run-id> in the project).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// Run the baseline's suites once more on the variant's coverage twin
    /// and mark each survivor "not reached" or "reached by N cases"
    /// (docs/coverage.md).
    #[arg(long)]
    coverage: bool,
}

impl MutantsOpts {
    fn request(&self, limit: Option<usize>) -> Result<MutantsRequest> {
        let shard = self
            .shard
            .as_deref()
            .map(run::matrix::parse_shard)
            .transpose()?;
        Ok(MutantsRequest {
            variant: self.variant.clone(),
            scope: if self.function.is_empty() {
                self.scope
            } else {
                ScopeKind::Functions
            },
            functions: self.function.clone(),
            operators: self.operator.clone(),
            suites: if self.suite.is_empty() {
                vec!["livepatch-bpf".into()]
            } else {
                self.suite.clone()
            },
            case_glob: self.case.clone(),
            explore: self.explore,
            seed: self.seed.unwrap_or_else(super::explore::clock_seed),
            workers: self
                .jobs
                .unwrap_or_else(coexist::workspace::default_jobs)
                .max(1),
            shard,
            machine: self.machine.machine(),
            results_dir: self.results.clone(),
            limit,
            ids: self.mutant.clone(),
            coverage: self.coverage,
        })
    }
}

fn run_and_write(
    ws: &Workspace,
    o: &MutantsOpts,
    limit: Option<usize>,
) -> Result<Option<(MutantsReport, PathBuf)>> {
    let req = o.request(limit)?;
    let term = Terminal::new();
    let planned = mutants::plan(ws, &req, &term)?;
    if o.list {
        for m in &planned.mutants {
            println!("{}", m.list_line());
        }
        for s in &planned.scope.skipped {
            eprintln!("skipped {}: {}", s.function, s.why);
        }
        let mut ops: Vec<&str> = planned.mutants.iter().map(|m| m.operator.name()).collect();
        ops.sort();
        ops.dedup();
        eprintln!(
            "{} mutant(s) of {} operator(s) in {} function(s)",
            planned.mutants.len(),
            ops.len(),
            planned.scope.functions.len()
        );
        return Ok(None);
    }
    let id = run::run_id();
    let dir = req
        .results_dir
        .clone()
        .unwrap_or_else(|| ws.project.root.join("results").join(&id));
    std::fs::create_dir_all(&dir)?;
    let r = mutants::run(ws, &req, &planned, (&dir, &id), &term)?;
    report::mutants_html::write(&dir, &r)?;
    Ok(Some((r, dir)))
}

fn exit_code(r: &MutantsReport) -> u8 {
    match teardown::interrupted() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None if r
            .mutants
            .iter()
            .any(|m| m.outcome == mutants::Outcome::Survived) =>
        {
            1
        }
        None => 0,
    }
}

pub fn mutants(ws: &Workspace, o: &MutantsOpts) -> Result<u8> {
    let Some((r, dir)) = run_and_write(ws, o, None)? else {
        return Ok(0);
    };
    print!("{}", r.table());
    println!("reports: {}", dir.display());
    Ok(exit_code(&r))
}

#[derive(Args, Clone)]
pub struct BenchMutantsOpts {
    #[command(flatten)]
    mutants: MutantsOpts,
    /// How many mutants to build and run (the first of the scope).
    #[arg(long, default_value_t = 5, value_parser = super::count)]
    count: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// `bench mutants`: the first N mutants of a scope built and run; the
/// median build time and run time per mutant.
pub fn bench(ws: &Workspace, o: &BenchMutantsOpts) -> Result<u8> {
    let Some((r, dir)) = run_and_write(ws, &o.mutants, Some(o.count))? else {
        return Ok(0);
    };
    let built: Vec<&results::MutantResult> = r
        .mutants
        .iter()
        .filter(|m| m.outcome != mutants::Outcome::Unviable)
        .collect();
    let figures = serde_json::json!({
        "variant": r.variant,
        "kernel": r.kernel_key,
        "mutants": r.mutants.len(),
        "median_build_s": median(r.mutants.iter().map(|m| m.build_s).collect()),
        "median_run_s": median(built.iter().map(|m| m.run_s).collect()),
        "target_build_s": 45,
        "outcomes": r.mutants.iter().map(|m| (m.mutant.id.clone(), m.outcome.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
        "results": dir,
    });
    if o.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        let f = |k: &str| {
            figures[k]
                .as_f64()
                .map(|x| format!("{x:.1} s"))
                .unwrap_or_else(|| "n/a".into())
        };
        println!(
            "bench mutants {} ({} mutant(s)): median build {} (target < 45 s), median run {}; {}",
            r.variant,
            r.mutants.len(),
            f("median_build_s"),
            f("median_run_s"),
            dir.display()
        );
    }
    Ok(match teardown::interrupted() {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => 0,
    })
}
