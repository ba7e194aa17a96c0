//! coexist: builds kernel variants, boots them under QEMU and checks that
//! livepatch and BPF trampolines work together on them, in every order.
//!
//! Exit codes: 0 all as expected, 1 an unexpected outcome, 2 usage,
//! configuration or infrastructure error.

mod cache;
mod kbuild;
mod kconfig;
mod series;
mod source;
mod ui;
mod variant;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::cache::Cache;
use crate::kbuild::Builder;
use crate::variant::{Project, Variant};

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
}

#[derive(Args)]
struct SourceOpts {
    /// Build this kernel git tree as checked out instead of the variant's
    /// source (the tree is never modified; its build dir lives in the cache).
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
        let plan = builder.plan(v)?;
        let was_cached = plan.is_cached();
        builder.build(v)?;
        if !was_cached {
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
        let plan = builder.plan(v)?;
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

fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(&cli)?;
    match &cli.cmd {
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
