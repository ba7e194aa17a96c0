//! coexist: builds kernel variants, boots them under QEMU and checks that
//! livepatch and BPF trampolines work together on them, in every order.
//!
//! Exit codes: 0 all as expected, 1 an unexpected outcome, 2 usage,
//! configuration or infrastructure error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use coexist::accel::{self, AccelChoice};
use coexist::cache::Cache;
use coexist::guest::{self, Prepared};
use coexist::kbuild::{self, Builder};
use coexist::variant::{self, Project, Variant};
use coexist::vm::{Vm, VmFailure};
use coexist::{bisect, cache, matrix, report, source, suite, ui};
use coexist_proto::Step;

#[derive(Parser)]
#[command(name = "coexist", version, about)]
struct Cli {
    /// Cache directory (default: $COEXIST_CACHE, $XDG_CACHE_HOME/coexist or ~/.cache/coexist).
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Project root holding kernel-config/, patches/, suites/ (default: found from the current directory).
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build and list kernel variants.
    #[command(subcommand)]
    Kernel(KernelCmd),
    /// Boot a variant, print READY with the kernel release, accelerator and
    /// time to READY, and shut it down.
    Boot {
        #[command(flatten)]
        vm: VmOpts,
    },
    /// An interactive shell in the guest through the agent channel: each
    /// line runs with busybox sh; a line starting with '{' is an agent step
    /// in JSON (e.g. {"step":"insmod","module":"livepatch-sample"}).
    Shell {
        #[command(flatten)]
        vm: VmOpts,
    },
    /// Run one command in a fresh guest and print its output.
    Run {
        #[command(flatten)]
        vm: VmOpts,
        /// Step timeout in seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        /// The command (after --).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Run suites: every (variant, case) in a fresh VM; reports in results/<run-id>/.
    Suite(SuiteOpts),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Work with reports.
    #[command(subcommand)]
    Report(ReportCmd),
    /// For `git bisect run`: build the checked-out commit of a kernel tree,
    /// boot it, run the named case(s); exit 0 good, 1 bad, 125 untestable,
    /// 128 harness error.
    BisectRun(BisectOpts),
    /// Drive a whole bisection: git bisect start/run/reset with bisect-run,
    /// then print the first commit where the outcome changes.
    Bisect {
        /// A commit where the outcome is the good one.
        #[arg(long)]
        good: String,
        /// A later commit where it is not.
        #[arg(long)]
        bad: String,
        #[command(flatten)]
        o: BisectOpts,
    },
}

#[derive(Args, Clone)]
struct BisectOpts {
    /// The kernel git tree (default: the current directory).
    #[arg(long, value_name = "PATH")]
    kernel_tree: Option<PathBuf>,
    /// The variant whose config fragments to build with (it must have no patch series).
    #[arg(long, default_value = "stock")]
    variant: String,
    /// The suite holding the case(s).
    #[arg(long, default_value = "livepatch-bpf")]
    suite: String,
    /// Case(s) to run (repeatable).
    #[arg(long = "case", required = true)]
    cases: Vec<String>,
    /// The good outcome: `pass`, or `refused:<step>:<ERRNO>` (e.g. refused:bpf:EBUSY).
    #[arg(long, default_value = "pass")]
    good_if: String,
    /// Append each step's verdict to this JSON-lines file.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Merge shard reports (report.json of each shard) into one report.
    Merge {
        /// report.json files (or their results directories).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.json, junit.xml, results.ktap.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
struct SuiteOpts {
    /// `all`, or a suite name (suites/<name>.yaml).
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
    #[arg(short, long)]
    jobs: Option<usize>,
    /// Run a stable 1/N slice of the job list (I/N, 1-based).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    #[command(flatten)]
    machine: MachineOpts,
    /// Results directory (default: results/<run-id> in the project).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    #[command(flatten)]
    src: SourceOpts,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Run the matrix and print boot-to-ready, per-case and whole-matrix
    /// times and the runner's CPU overhead over its QEMU processes.
    Suite(SuiteOpts),
    /// Boot a variant N times: QEMU start -> READY, guest uptime at READY.
    Boot {
        #[command(flatten)]
        vm: VmOpts,
        #[arg(short = 'n', long, default_value_t = 5)]
        count: usize,
    },
}

/// The guest machine.
#[derive(Args, Clone)]
struct MachineOpts {
    /// Accelerator: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    cpus: u32,
}

#[derive(Args, Clone)]
struct VmOpts {
    /// The variant to boot.
    #[arg(long)]
    variant: String,
    #[command(flatten)]
    machine: MachineOpts,
    /// Extra kernel command line.
    #[arg(long, default_value = "")]
    append: String,
    /// Replace the whole kernel command line.
    #[arg(long)]
    cmdline: Option<String>,
    /// Seconds from QEMU start to READY before the boot counts as failed.
    #[arg(long, default_value_t = 60.0)]
    boot_timeout: f64,
    #[command(flatten)]
    src: SourceOpts,
}

#[derive(Args, Clone)]
struct SourceOpts {
    /// Build this kernel git tree as checked out instead of the variant's
    /// source (nothing in the tree is modified but its build output dir,
    /// <tree>/.coexist-build-<config-key>).
    #[arg(long, value_name = "PATH")]
    kernel_tree: Option<PathBuf>,
}

#[derive(Subcommand)]
enum KernelCmd {
    /// Build variants (cached by content: a second build is a cache hit).
    Build {
        /// Variant to build (repeatable).
        #[arg(long = "variant", value_name = "NAME", required_unless_present = "all")]
        variants: Vec<String>,
        /// Build every declared variant.
        #[arg(long, conflicts_with = "variants")]
        all: bool,
        /// Parallel make jobs (default: the number of cores).
        #[arg(short, long)]
        jobs: Option<usize>,
        #[command(flatten)]
        src: SourceOpts,
    },
    /// List variants with their cache key, whether they are built, and artifact paths.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        src: SourceOpts,
    },
}

struct Ctx {
    project: Project,
    cache: Cache,
}

impl Ctx {
    fn new(cli: &Cli) -> Result<Ctx> {
        let project = Project::locate(cli.root.clone())?;
        let root = match &cli.cache_dir {
            Some(d) => d.clone(),
            None => Cache::default_root()?,
        };
        Ok(Ctx {
            project,
            cache: Cache::open(root)?,
        })
    }

    fn variants(&self, src: &SourceOpts) -> Result<Vec<Variant>> {
        if let Some(t) = &src.kernel_tree {
            if !t.is_dir() {
                bail!("--kernel-tree {}: no such directory", t.display());
            }
        }
        self.project.load_variants(src.kernel_tree.as_deref())
    }
}

fn jobs_default() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn kernel_build(
    ctx: &Ctx,
    names: &[String],
    all: bool,
    jobs: Option<usize>,
    src: &SourceOpts,
) -> Result<()> {
    let variants = ctx.variants(src)?;
    let chosen: Vec<&Variant> = if all {
        variants.iter().collect()
    } else {
        variant::select(&variants, names)?
    };
    let reporter = ui::BuildReporter::new();
    let builder = Builder {
        cache: &ctx.cache,
        jobs: jobs.unwrap_or_else(jobs_default).max(1),
        toolchain: source::toolchain_id(),
        observer: &reporter,
    };
    let t0 = Instant::now();
    let mut built = 0;
    for v in &chosen {
        let (_, cached) = builder.build(v)?;
        if !cached {
            built += 1;
        }
    }
    eprintln!(
        "{} variant(s): {} built, {} cached, in {}",
        chosen.len(),
        built,
        chosen.len() - built,
        ui::fmt_duration(t0.elapsed())
    );
    Ok(())
}

fn kernel_list(ctx: &Ctx, json: bool, src: &SourceOpts) -> Result<()> {
    let variants = ctx.variants(src)?;
    let builder = Builder {
        cache: &ctx.cache,
        jobs: 1,
        toolchain: source::toolchain_id(),
        observer: &NoObserver,
    };
    let mut rows = Vec::new();
    for v in &variants {
        let plan = match builder.plan(v) {
            Ok(p) => p,
            Err(e) if src.kernel_tree.is_some() => {
                rows.push(serde_json::json!({"variant": v.name, "error": format!("{e:#}")}));
                continue;
            }
            Err(e) => return Err(e),
        };
        let manifest = if plan.is_cached() {
            Some(kbuild::Manifest::load(&plan.entry_dir)?)
        } else {
            None
        };
        rows.push(serde_json::json!({
            "variant": v.name,
            "description": v.description,
            "key": plan.key,
            "cached": manifest.is_some(),
            "source": plan.source.describe,
            "series": v.series.as_ref().map(|s| s.name.clone()),
            "fragments": v.fragments.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            "entry": plan.entry_dir,
            "tree": plan.tree_dir,
            "build_dir": plan.build_dir,
            "manifest": manifest,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<16} {:<7} ARTIFACTS / SOURCE",
        "VARIANT", "KEY", "BUILT"
    );
    for r in &rows {
        if let Some(e) = r["error"].as_str() {
            println!("{:<24} {e}", r["variant"].as_str().unwrap_or(""));
            continue;
        }
        let cached = r["cached"].as_bool().unwrap_or(false);
        println!(
            "{:<24} {:<16} {:<7} {}",
            r["variant"].as_str().unwrap_or(""),
            r["key"].as_str().unwrap_or(""),
            if cached { "yes" } else { "no" },
            r["source"].as_str().unwrap_or(""),
        );
        if let Some(m) = r["manifest"].as_object() {
            for k in [
                "kernel_release",
                "bzimage",
                "vmlinux",
                "modules_dir",
                "build_dir",
            ] {
                println!("{:<49} {k}: {}", "", m[k].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

struct NoObserver;
impl kbuild::BuildObserver for NoObserver {
    fn event(&self, _: kbuild::BuildEvent) {}
}

fn note(s: &str) {
    eprintln!("{s}");
}

impl Ctx {
    fn builder<'a>(&'a self, observer: &'a dyn kbuild::BuildObserver) -> Builder<'a> {
        Builder {
            cache: &self.cache,
            jobs: jobs_default(),
            toolchain: source::toolchain_id(),
            observer,
        }
    }

    /// Builds (or finds) the variant's kernel and image.
    fn prepare(&self, o: &VmOpts) -> Result<Prepared> {
        let variants = self.variants(&o.src)?;
        let v = variant::select(&variants, std::slice::from_ref(&o.variant))?[0];
        let reporter = ui::BuildReporter::new();
        guest::prepare(
            &self.cache,
            &self.project,
            &self.builder(&reporter),
            v,
            &note,
        )
    }

    fn console_log(&self, variant: &str) -> PathBuf {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.cache.dir("logs").join(format!(
            "console-{variant}-{stamp}-{}.log",
            std::process::id()
        ))
    }

    fn boot(&self, o: &VmOpts, p: &Prepared) -> Result<Vm, VmFailure> {
        let mut cfg = p.vm_config(self.console_log(&o.variant));
        cfg.memory_mb = o.machine.memory;
        cfg.cpus = o.machine.cpus;
        cfg.append = o.append.clone();
        cfg.cmdline = o.cmdline.clone();
        cfg.boot_timeout = std::time::Duration::from_secs_f64(o.boot_timeout);
        accel::boot(o.machine.accel, cfg, &note)
    }
}

fn print_ready(variant: &str, vm: &Vm) {
    let r = vm.ready.as_ref().expect("booted");
    println!(
        "READY {variant}: kernel {} accel {} in {:.2} s from QEMU start (guest uptime {:.2} s)",
        r.kernel_release, r.accel, r.boot_s, r.guest_uptime_s
    );
    for w in &r.warnings {
        eprintln!("  agent warning: {w}");
    }
    for s in &vm.unattributed {
        eprintln!("  splat during boot ({}): {}", s.kind, s.title);
    }
}

fn cmd_boot(ctx: &Ctx, o: &VmOpts) -> Result<u8> {
    let p = ctx.prepare(o)?;
    let vm = ctx.boot(o, &p)?;
    print_ready(&o.variant, &vm);
    eprintln!("console log: {}", vm.console_log().display());
    vm.shutdown()?;
    Ok(0)
}

fn show_outcome(out: &coexist::vm::StepOutcome) {
    let a = &out.answer;
    print!("{}", a.output);
    if !a.output.is_empty() && !a.output.ends_with('\n') {
        println!();
    }
    if !a.ok {
        let errno = match (&a.errno_name, a.errno) {
            (Some(n), Some(e)) => format!(" [{n} ({e})]"),
            _ => String::new(),
        };
        eprintln!("error{errno}: {}", a.error.as_deref().unwrap_or("failed"));
    }
    for s in &out.splats {
        eprintln!("SPLAT ({}) during this step: {}", s.kind, s.title);
        for l in &s.text {
            eprintln!("  {l}");
        }
    }
}

fn cmd_run(ctx: &Ctx, o: &VmOpts, timeout: f64, argv: &[String]) -> Result<u8> {
    let p = ctx.prepare(o)?;
    let mut vm = ctx.boot(o, &p)?;
    let out = vm.run(
        Step::Exec {
            argv: argv.to_vec(),
        },
        std::time::Duration::from_secs_f64(timeout),
    )?;
    show_outcome(&out);
    vm.shutdown()?;
    Ok(out
        .answer
        .exit_code
        .unwrap_or(if out.answer.ok { 0 } else { 1 })
        .clamp(0, 255) as u8)
}

fn cmd_shell(ctx: &Ctx, o: &VmOpts) -> Result<u8> {
    use std::io::{BufRead, Write};
    let p = ctx.prepare(o)?;
    let mut vm = ctx.boot(o, &p)?;
    print_ready(&o.variant, &vm);
    eprintln!("console log: {}\nlines run with busybox sh; '{{...}}' is a JSON agent step; 'exit' or Ctrl-D powers off", vm.console_log().display());
    let stdin = std::io::stdin();
    loop {
        print!("guest# ");
        std::io::stdout().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "exit" || line == "quit" {
            break;
        }
        let step = if line.starts_with('{') {
            match serde_json::from_str::<Step>(line) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("not an agent step: {e}");
                    continue;
                }
            }
        } else {
            Step::Exec {
                argv: vec!["/bin/sh".into(), "-c".into(), line.into()],
            }
        };
        match vm.run(step, std::time::Duration::from_secs(300)) {
            Ok(out) => show_outcome(&out),
            Err(f) => return Err(f.into()),
        }
    }
    vm.shutdown()?;
    Ok(0)
}

fn cmd_bench_boot(ctx: &Ctx, o: &VmOpts, n: usize) -> Result<u8> {
    let p = ctx.prepare(o)?;
    let mut host = Vec::new();
    let mut guest = Vec::new();
    for i in 0..n.max(1) {
        let vm = ctx.boot(o, &p)?;
        let r = vm.ready.clone().expect("booted");
        println!(
            "boot {}/{}: READY {:.3} s after QEMU start, guest uptime {:.3} s, accel {}",
            i + 1,
            n,
            r.boot_s,
            r.guest_uptime_s,
            r.accel
        );
        host.push(r.boot_s);
        guest.push(r.guest_uptime_s);
        vm.shutdown()?;
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (hmin, hmed, hmax) = stats(&mut host);
    let (gmin, gmed, gmax) = stats(&mut guest);
    println!(
        "boot-to-ready ({} boots, {}): QEMU start -> READY min {hmin:.3} s, median {hmed:.3} s, max {hmax:.3} s; \
         guest uptime at READY min {gmin:.3} s, median {gmed:.3} s, max {gmax:.3} s",
        host.len(),
        accel::decided().map(|a| a.to_string()).unwrap_or_else(|| format!("{:?}", o.machine.accel).to_lowercase())
    );
    Ok(0)
}

fn load_suites(ctx: &Ctx, o: &SuiteOpts, variants: &[Variant]) -> Result<Vec<suite::Suite>> {
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let fx = suite::project_fixtures(&ctx.project.root);
    let files = suite::list_files(&ctx.project.root)?;
    let chosen: Vec<PathBuf> = if o.name == "all" {
        files
    } else {
        let want = ctx
            .project
            .root
            .join("suites")
            .join(format!("{}.yaml", o.name));
        if !files.contains(&want) {
            bail!(
                "unknown suite '{}' (suites: {})",
                o.name,
                files
                    .iter()
                    .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        vec![want]
    };
    chosen.iter().map(|f| suite::load(f, &names, &fx)).collect()
}

fn run_id() -> String {
    let t = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    format!(
        "{}-{}",
        t.trim_end_matches('Z').replace(':', ""),
        std::process::id()
    )
}

/// Runs suites; returns the report and where it was written.
fn run_suites(ctx: &Ctx, o: &SuiteOpts) -> Result<Option<(report::RunReport, PathBuf)>> {
    let variants = ctx.variants(&o.src)?;
    for v in &o.variants {
        variant::select(&variants, std::slice::from_ref(v))?;
    }
    let suites = load_suites(ctx, o, &variants)?;
    let glob = match &o.case {
        Some(g) => Some(glob::Pattern::new(g).map_err(|e| anyhow::anyhow!("--case {g}: {e}"))?),
        None => None,
    };
    let mut jobs = matrix::jobs(&suites, &o.variants, glob.as_ref());
    let shard = match &o.shard {
        Some(s) => Some(matrix::parse_shard(s)?),
        None => None,
    };
    if let Some((i, n)) = shard {
        jobs = matrix::shard(jobs, i, n);
    }
    if o.list {
        for j in &jobs {
            println!("{}", j.id);
        }
        eprintln!("{} job(s)", jobs.len());
        return Ok(None);
    }
    if jobs.is_empty() {
        bail!("no (case, variant) matches the filters");
    }
    let id = run_id();
    let dir = o
        .results
        .clone()
        .unwrap_or_else(|| ctx.project.root.join("results").join(&id));
    std::fs::create_dir_all(&dir)?;
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let t_prep = Instant::now();
    let reporter = ui::BuildReporter::new();
    let builder = ctx.builder(&reporter);
    let mut prepared = std::collections::BTreeMap::new();
    let mut infos = Vec::new();
    for name in jobs
        .iter()
        .map(|j| j.variant.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let v = variant::select(&variants, std::slice::from_ref(&name))?[0];
        let p = guest::prepare(&ctx.cache, &ctx.project, &builder, v, &note)?;
        infos.push(report::VariantInfo {
            name: name.clone(),
            kernel_key: p.manifest.key.clone(),
            kernel_release: p.manifest.kernel_release.clone(),
            source: p.manifest.source.clone(),
            series: p.manifest.series.clone(),
            fragments: p.manifest.fragments.clone(),
            fixtures_key: p.fixtures.key.clone(),
            image_key: p.image.key.clone(),
            build_s: p.build_s,
            kernel_cached: p.kernel_cached,
            image_s: p.image_s,
        });
        prepared.insert(name, p);
    }
    let prepare_s = t_prep.elapsed().as_secs_f64();
    let opts = matrix::RunOptions {
        jobs: o.jobs.unwrap_or_else(jobs_default).max(1),
        accel: o.machine.accel,
        results_dir: dir.clone(),
        memory_mb: o.machine.memory,
        cpus: o.machine.cpus,
    };
    let rep = ui::RunReporter::new();
    let cpu0 = cpu_times();
    let t_matrix = Instant::now();
    let results = matrix::run(&jobs, &suites, &prepared, &opts, &rep)?;
    let matrix_s = t_matrix.elapsed().as_secs_f64();
    let cpu1 = cpu_times();
    rep.finish();
    let report = report::RunReport {
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
            jobs: opts.jobs,
            runner_cpu_s: cpu1.0 - cpu0.0,
            qemu_cpu_s: cpu1.1 - cpu0.1,
        },
    };
    report::write_all(&dir, &report)?;
    Ok(Some((report, dir)))
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

fn cmd_suite(ctx: &Ctx, o: &SuiteOpts) -> Result<u8> {
    let Some((report, dir)) = run_suites(ctx, o)? else {
        return Ok(0);
    };
    println!("{}", report::table(&report));
    println!("reports: {}", dir.display());
    Ok(report.exit_code())
}

fn stats(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "min {:.2} s, median {:.2} s, max {:.2} s (n={})",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1],
        v.len()
    )
}

fn cmd_bench_suite(ctx: &Ctx, o: &SuiteOpts) -> Result<u8> {
    let Some((report, dir)) = run_suites(ctx, o)? else {
        return Ok(0);
    };
    let t = &report.timings;
    let mut boots: Vec<f64> = report.results.iter().filter_map(|r| r.boot_s).collect();
    let mut cases: Vec<f64> = report.results.iter().map(|r| r.total_s).collect();
    let fixed: f64 = report.results.iter().map(|r| r.fixed_s).sum();
    println!("accelerator: {}", report.accel.as_deref().unwrap_or("none"));
    println!("boot-to-ready: {}", stats(&mut boots));
    println!("per case (boot + steps + shutdown): {}", stats(&mut cases));
    println!(
        "whole matrix: {} cases with -j{} in {:.1} s; without the stress cases' fixed durations ({:.0} s over {} workers): {:.1} s",
        report.results.len(),
        t.jobs,
        t.matrix_s,
        fixed,
        t.jobs,
        t.matrix_s - fixed / t.jobs as f64
    );
    println!(
        "runner overhead: {:.2} s CPU in the runner vs {:.2} s CPU in its QEMU processes ({:.1} %)",
        t.runner_cpu_s,
        t.qemu_cpu_s,
        100.0 * t.runner_cpu_s / t.qemu_cpu_s.max(1e-9)
    );
    println!("prepare (kernels, fixtures, images): {:.1} s", t.prepare_s);
    println!(
        "unexpected outcomes: {} (reports: {})",
        report.totals.unexpected,
        dir.display()
    );
    Ok(report.exit_code())
}

fn cmd_report_merge(reports: &[PathBuf], out: &std::path::Path) -> Result<u8> {
    let mut parts = Vec::new();
    for p in reports {
        let f = if p.is_dir() {
            p.join("report.json")
        } else {
            p.clone()
        };
        let b = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
        let r: report::RunReport = serde_json::from_slice(&b)
            .with_context(|| format!("{}: not a coexist report", f.display()))?;
        parts.push(r);
    }
    let merged = report::merge(parts)?;
    report::write_all(out, &merged)?;
    println!("{}", report::table(&merged));
    println!("reports: {}", out.display());
    Ok(merged.exit_code())
}

fn bisect_tree(o: &BisectOpts) -> Result<PathBuf> {
    let t = match &o.kernel_tree {
        Some(t) => t.clone(),
        None => std::env::current_dir()?,
    };
    t.canonicalize()
        .with_context(|| format!("--kernel-tree {}: no such directory", t.display()))
}

/// bisect-run: every failure to judge the commit is an exit code, never a
/// plain error, so git bisect never mistakes a harness problem for "bad".
fn cmd_bisect_run(ctx: &Ctx, o: &BisectOpts) -> u8 {
    match bisect_run(ctx, o) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("coexist bisect-run: harness error: {e:#}");
            bisect::HARNESS
        }
    }
}

fn bisect_run(ctx: &Ctx, o: &BisectOpts) -> Result<u8> {
    let tree = bisect_tree(o)?;
    let expected = bisect::parse_good_if(&o.good_if)?;
    let variants = ctx.project.load_variants(Some(&tree))?;
    let v = variant::select(&variants, std::slice::from_ref(&o.variant))?[0];
    let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
    let fx = suite::project_fixtures(&ctx.project.root);
    let path = ctx
        .project
        .root
        .join("suites")
        .join(format!("{}.yaml", o.suite));
    let mut s = suite::load(&path, &names, &fx)?;
    let mut cases = Vec::new();
    for name in &o.cases {
        let mut c = s
            .file
            .cases
            .iter()
            .find(|c| &c.name == name)
            .cloned()
            .with_context(|| format!("suite '{}' has no case '{name}'", o.suite))?;
        c.expect = [("default".to_string(), expected.clone())]
            .into_iter()
            .collect();
        cases.push(c);
    }
    s.file.cases = cases;
    let commit = bisect::git(&tree, &["rev-parse", "HEAD"])?;
    let subject = bisect::git(&tree, &["log", "-1", "--format=%s"])?;
    let short = &commit[..12.min(commit.len())];
    eprintln!("bisect-run: {short} {subject}");
    let reporter = ui::BuildReporter::new();
    let builder = ctx.builder(&reporter);
    let mut step = bisect::StepLog {
        commit: commit.clone(),
        subject,
        kernel_key: None,
        build_s: 0.0,
        kernel_cached: false,
        exit: bisect::SKIP,
        verdict: String::new(),
        cases: Vec::new(),
    };
    let log = |step: &bisect::StepLog| -> Result<()> {
        eprintln!(
            "bisect-run: {short}: {} ({})",
            bisect::exit_word(step.exit),
            step.verdict
        );
        if let Some(l) = &o.log {
            bisect::append_log(l, step)?;
        }
        Ok(())
    };
    let p = match guest::prepare(&ctx.cache, &ctx.project, &builder, v, &note) {
        Ok(p) => p,
        Err(e) if e.downcast_ref::<kbuild::KernelDoesNotBuild>().is_some() => {
            step.verdict = format!(
                "untestable: {}",
                format!("{e:#}").lines().next().unwrap_or("")
            );
            log(&step)?;
            eprintln!("{e:#}");
            return Ok(bisect::SKIP);
        }
        Err(e) => return Err(e),
    };
    step.kernel_key = Some(p.manifest.key.clone());
    step.build_s = p.build_s;
    step.kernel_cached = p.kernel_cached;
    let dir = ctx
        .project
        .root
        .join("results")
        .join(format!("bisect-{short}-{}", std::process::id()));
    let opts = matrix::RunOptions {
        jobs: 1,
        accel: o.accel,
        results_dir: dir,
        memory_mb: 512,
        cpus: 2,
    };
    let mut codes = Vec::new();
    for c in &s.file.cases {
        let r = matrix::run_case(&p, &s, c, &opts, &note);
        let code = bisect::judge(&r);
        eprintln!(
            "  {}: {} ({}): {}",
            c.name,
            r.decision.verdict.as_str(),
            bisect::exit_word(code),
            r.decision.summary
        );
        step.cases.push(bisect::CaseVerdict {
            case: c.name.clone(),
            verdict: r.decision.verdict.as_str().into(),
            summary: r.decision.summary.clone(),
        });
        codes.push(code);
    }
    step.exit = bisect::combine(&codes);
    step.verdict = bisect::exit_word(step.exit).into();
    log(&step)?;
    Ok(step.exit)
}

fn cmd_bisect(ctx: &Ctx, good: &str, bad: &str, o: &BisectOpts) -> Result<u8> {
    let tree = bisect_tree(o)?;
    bisect::parse_good_if(&o.good_if)?;
    let status = bisect::git(&tree, &["status", "--porcelain", "--untracked-files=no"])?;
    if !status.is_empty() {
        bail!(
            "{}: the tree has local changes; git bisect needs a clean checkout",
            tree.display()
        );
    }
    let id = run_id();
    let dir = ctx
        .project
        .root
        .join("results")
        .join(format!("bisect-{id}"));
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("steps.jsonl");
    let exe = std::env::current_exe()?;
    bisect::git(&tree, &["bisect", "start", bad, good])?;
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C").arg(&tree).args(["bisect", "run"]).arg(&exe);
    cmd.arg("--root")
        .arg(&ctx.project.root)
        .arg("--cache-dir")
        .arg(&ctx.cache.root);
    cmd.arg("bisect-run").arg("--kernel-tree").arg(&tree);
    cmd.args([
        "--variant",
        &o.variant,
        "--suite",
        &o.suite,
        "--good-if",
        &o.good_if,
    ]);
    for c in &o.cases {
        cmd.args(["--case", c]);
    }
    cmd.arg("--log").arg(&log);
    cmd.args(["--accel", &format!("{:?}", o.accel).to_lowercase()]);
    let t0 = Instant::now();
    let out = cmd.stderr(std::process::Stdio::inherit()).output();
    let reset = bisect::git(&tree, &["bisect", "reset"]);
    let out = out.context("cannot run git bisect run")?;
    reset?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprint!("{stdout}");
    let steps = bisect::read_log(&log);
    println!(
        "\nbisect steps ({} in {}):",
        steps.len(),
        ui::fmt_duration(t0.elapsed())
    );
    for s in &steps {
        println!(
            "  {}  {:<13} build {:>7} {}  {}",
            &s.commit[..12.min(s.commit.len())],
            s.verdict,
            ui::fmt_duration(std::time::Duration::from_secs_f64(s.build_s)),
            if s.kernel_cached {
                "(cached)"
            } else {
                "(incremental)"
            },
            s.subject
        );
    }
    let first = bisect::first_bad(&stdout);
    let summary = serde_json::json!({
        "good": good, "bad": bad, "good_if": o.good_if, "cases": o.cases,
        "first_bad": first, "steps": steps,
        "first_bad_subject": first.as_ref().and_then(|c| bisect::git(&tree, &["log", "-1", "--format=%s", c]).ok()),
    });
    cache::write_atomic(
        &dir.join("bisect.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    match first {
        Some(c) => {
            let subject = bisect::git(&tree, &["log", "-1", "--format=%s", &c])?;
            println!("first commit where the outcome changes: {c} {subject}");
            println!("report: {}", dir.join("bisect.json").display());
            Ok(0)
        }
        None => bail!(
            "git bisect run found no first bad commit (exit {:?}); see {}",
            out.status.code(),
            log.display()
        ),
    }
}

fn run(cli: Cli) -> Result<u8> {
    if let Cmd::Report(ReportCmd::Merge { reports, out }) = &cli.cmd {
        return cmd_report_merge(reports, out);
    }
    if let Cmd::BisectRun(o) = &cli.cmd {
        return Ok(match Ctx::new(&cli) {
            Ok(ctx) => cmd_bisect_run(&ctx, o),
            Err(e) => {
                eprintln!("coexist bisect-run: harness error: {e:#}");
                bisect::HARNESS
            }
        });
    }
    let ctx = Ctx::new(&cli)?;
    match &cli.cmd {
        Cmd::BisectRun(_) => unreachable!(),
        Cmd::Bisect { good, bad, o } => return cmd_bisect(&ctx, good, bad, o),
        Cmd::Suite(o) => return cmd_suite(&ctx, o),
        Cmd::Bench(BenchCmd::Suite(o)) => return cmd_bench_suite(&ctx, o),
        Cmd::Report(_) => unreachable!(),
        Cmd::Boot { vm } => return cmd_boot(&ctx, vm),
        Cmd::Shell { vm } => return cmd_shell(&ctx, vm),
        Cmd::Run { vm, timeout, argv } => return cmd_run(&ctx, vm, *timeout, argv),
        Cmd::Bench(BenchCmd::Boot { vm, count }) => return cmd_bench_boot(&ctx, vm, *count),
        Cmd::Kernel(KernelCmd::Build {
            variants,
            all,
            jobs,
            src,
        }) => kernel_build(&ctx, variants, *all, *jobs, src)?,
        Cmd::Kernel(KernelCmd::List { json, src }) => kernel_list(&ctx, *json, src)?,
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
