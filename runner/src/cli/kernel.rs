//! `kernel build`, `kernel list`.

use std::time::Instant;

use anyhow::Result;
use clap::Subcommand;

use coexist::build::{list, variant, Variant};
use coexist::events::Null;
use coexist::ui::{fmt_duration, Terminal};
use coexist::workspace::{default_jobs, Workspace};

use super::SourceOpts;

#[derive(Subcommand)]
pub enum KernelCmd {
    /// Build variants (cached by content: a second build is a cache hit).
    Build {
        /// Variant to build (repeatable).
        #[arg(long = "variant", value_name = "NAME", required_unless_present = "all")]
        variants: Vec<String>,
        /// Build every declared variant.
        #[arg(long, conflicts_with = "variants")]
        all: bool,
        /// Parallel make jobs (default: the number of cores).
        #[arg(short, long, value_parser = super::count)]
        jobs: Option<usize>,
        /// Build each variant's coverage twin instead (gcov on the area's
        /// files; docs/coverage.md).
        #[arg(long)]
        coverage: bool,
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

pub fn run(ws: &Workspace, cmd: &KernelCmd) -> Result<u8> {
    match cmd {
        KernelCmd::Build {
            variants,
            all,
            jobs,
            coverage,
            src,
        } => build(ws, (variants, *all), *jobs, *coverage, src),
        KernelCmd::List { json, src } => list(ws, *json, src),
    }
}

fn build(
    ws: &Workspace,
    (names, all): (&[String], bool),
    jobs: Option<usize>,
    coverage: bool,
    src: &SourceOpts,
) -> Result<u8> {
    let mut variants = ws.variants(src.kernel_tree.as_deref())?;
    if coverage {
        for v in variants
            .iter_mut()
            .filter(|v| all || names.contains(&v.name))
        {
            *v = ws.coverage_twin(v)?;
        }
    }
    let chosen: Vec<&Variant> = if all {
        variants.iter().collect()
    } else {
        variant::select(&variants, names)?
    };
    // Every prebuilt package is resolved before anything builds.
    coexist::build::kinds::check_all(chosen.iter().copied())?;
    let term = Terminal::new();
    let builder = ws.builder(jobs.unwrap_or_else(default_jobs), &term);
    let t0 = Instant::now();
    let mut built = 0;
    for v in &chosen {
        if !builder.build(v)?.1 {
            built += 1;
        }
    }
    eprintln!(
        "{} variant(s): {} built, {} cached, in {}",
        chosen.len(),
        built,
        chosen.len() - built,
        fmt_duration(t0.elapsed())
    );
    Ok(0)
}

fn list(ws: &Workspace, json: bool, src: &SourceOpts) -> Result<u8> {
    let variants = ws.variants(src.kernel_tree.as_deref())?;
    let builder = ws.builder(1, &Null);
    let rows = list::rows(&builder, &variants, src.kernel_tree.is_some())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!(
        "{:<24} {:<16} {:<7} ARTIFACTS / SOURCE",
        "VARIANT", "KEY", "BUILT"
    );
    for r in &rows {
        if let Some(e) = &r.error {
            println!("{:<24} {e}", r.variant);
            continue;
        }
        println!(
            "{:<24} {:<16} {:<7} {}",
            r.variant,
            r.key.as_deref().unwrap_or(""),
            if r.cached { "yes" } else { "no" },
            match &r.prebuilt {
                Some(p) => format!("prebuilt: {p}"),
                None => r.source.clone().unwrap_or_default(),
            },
        );
        if let Some(m) = &r.manifest {
            for (k, v) in [
                ("kernel_release", m.kernel_release.clone()),
                ("bzimage", m.bzimage.display().to_string()),
                ("vmlinux", m.vmlinux.display().to_string()),
                ("modules_dir", m.modules_dir.display().to_string()),
                ("build_dir", m.build_dir.display().to_string()),
            ]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            {
                println!("{:<49} {k}: {v}", "");
            }
        }
    }
    Ok(0)
}
