//! The command line: parsing and dispatch only. Each subcommand group has
//! a file that turns its arguments into a library request, calls the
//! library, and prints the result; the work happens in the library.
//!
//! Exit codes: 0 all as expected, 1 an unexpected outcome, 2 usage,
//! configuration or infrastructure error (bisect-run: 0/1/125/128).

mod bisect;
mod explore;
mod kernel;
mod mutants;
mod suite;
mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use coexist::run::Machine;
use coexist::vm::AccelChoice;
use coexist::Workspace;

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
    /// Install every Debian package the project needs that is missing, in
    /// one apt transaction that removes and downgrades nothing (every other
    /// command does this first).
    Setup {
        /// Consent to a transaction in which apt removes packages (for
        /// example a newer qemu-utils that qemu-system-x86 conflicts
        /// with); a downgrade is still refused.
        #[arg(long)]
        allow_remove: bool,
    },
    /// Build and list kernel variants.
    #[command(subcommand)]
    Kernel(kernel::KernelCmd),
    /// Boot a variant, print READY with the kernel release, accelerator and
    /// time to READY, and shut it down.
    Boot {
        #[command(flatten)]
        vm: vm::VmOpts,
    },
    /// An interactive shell in the guest through the agent channel: each
    /// line runs with busybox sh; a line starting with '{' is an agent step
    /// in JSON (e.g. {"step":"insmod","module":"livepatch-sample"}).
    /// The guest is restored from the variant's READY snapshot
    /// (--fresh-boot: booted).
    Shell(vm::ShellOpts),
    /// Run one command in a guest of its own (restored from the variant's
    /// READY snapshot; --fresh-boot: booted) and print its output.
    Run(vm::RunOpts),
    /// Run suites: every (variant, case) in a fresh VM; reports in results/<run-id>/.
    Suite(suite::SuiteOpts),
    /// Model-based random sequences of livepatch, BPF trampoline and
    /// DIRECT ftrace operations, each in a restored guest, checked after
    /// every step; failures shrunk to a minimal reproducer (a suite file).
    /// Exit 1 when something was found, 0 when the budget ran out clean.
    Explore(explore::ExploreOpts),
    /// Seed small bugs (mutants) into the kernel code under test, build
    /// each, run the suites (and explore) on it, and count which are
    /// caught; mutants.json, a table and index.html in results/<run-id>/.
    /// Exit 1 when a mutant survived.
    Mutants(mutants::MutantsOpts),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Work with reports.
    #[command(subcommand)]
    Report(suite::ReportCmd),
    /// For `git bisect run`: build the checked-out commit of a kernel tree,
    /// boot it, run the named case(s); exit 0 good, 1 bad, 125 untestable,
    /// 128 harness error.
    BisectRun(bisect::BisectOpts),
    /// Drive a whole bisection: git bisect start/run/reset with bisect-run,
    /// then print the first commit where the outcome changes.
    Bisect(bisect::BisectCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Run the matrix with fresh boots, then restoring snapshots, and print
    /// both modes' figures side by side (boot or restore to READY, per job,
    /// whole matrix, verdicts); --json for scripts.
    Suite(suite::BenchOpts),
    /// Boot a variant N times: QEMU start -> READY, guest uptime at READY.
    Boot(vm::BenchBootOpts),
    /// The developer's loop, whole commands timed: one case with the
    /// default --accel auto and with --accel tcg, and `run -- true`;
    /// medians and the targets (--json for scripts).
    Loop(vm::BenchLoopOpts),
    /// An explore run's figures: sequences per minute, steps per second,
    /// median shrink time (default budget 2m; --json for scripts).
    Explore(explore::BenchExploreOpts),
    /// The first N mutants of a scope built and run: median build and run
    /// time per mutant (--json for scripts).
    Mutants(mutants::BenchMutantsOpts),
    /// The same cases on the variant and on its coverage twin: per job
    /// with and without coverage, and reading the counts (--json).
    Coverage(suite::BenchOpts),
}

/// The guest machine.
#[derive(Args, Clone)]
pub struct MachineOpts {
    /// Accelerator: auto probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Guest memory in MiB (128 to 65536).
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..=65536))]
    memory: u32,
    /// Guest CPUs (1 to 64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    cpus: u32,
}

/// A count of parallel jobs or repetitions: 1 to 1024.
pub fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a count from 1 to 1024")),
    }
}

/// Seconds: a finite number above 0, at most a day.
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86400.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds above 0 and at most 86400"
        )),
    }
}

impl MachineOpts {
    pub fn machine(&self) -> Machine {
        Machine {
            accel: self.accel,
            memory_mb: self.memory,
            cpus: self.cpus,
        }
    }
}

#[derive(Args, Clone)]
pub struct SourceOpts {
    /// Build this kernel git tree as checked out instead of the variant's
    /// source (nothing in the tree is modified but its build output dir,
    /// <tree>/.coexist-build-<config-key>).
    #[arg(long, value_name = "PATH")]
    kernel_tree: Option<PathBuf>,
}

fn dispatch(cli: Cli) -> Result<u8> {
    if let Cmd::Report(r) = &cli.cmd {
        return suite::report(r, (cli.root.clone(), cli.cache_dir.clone()));
    }
    if let Cmd::BisectRun(o) = &cli.cmd {
        // Every failure is an exit code git bisect understands.
        return Ok(bisect::bisect_run(
            cli.root.clone(),
            cli.cache_dir.clone(),
            o,
        ));
    }
    let ws = Workspace::open(cli.root, cli.cache_dir)?;
    // Before anything is keyed: the toolchain is part of every key.
    let removals = match cli.cmd {
        Cmd::Setup { allow_remove: true } => coexist::setup::Removals::Allow,
        _ => coexist::setup::Removals::Refuse,
    };
    ws.setup_with(&coexist::ui::Terminal::new(), removals)?;
    match cli.cmd {
        Cmd::Setup { .. } => {
            eprintln!("setup: every package the project needs is installed");
            match coexist::vm::accel::remembered(&ws.cache.dir("accel")) {
                Some(r) => eprintln!("accel: remembered for this host: {}", r.describe()),
                None => eprintln!(
                    "accel: nothing remembered for this host as it is now (the next boot with --accel auto probes KVM)"
                ),
            }
            Ok(0)
        }
        Cmd::Kernel(k) => kernel::run(&ws, &k),
        Cmd::Boot { vm } => vm::boot(&ws, &vm),
        Cmd::Shell(o) => vm::shell(&ws, &o),
        Cmd::Run(o) => vm::run(&ws, &o),
        Cmd::Suite(o) => suite::suite(&ws, &o),
        Cmd::Explore(o) => explore::explore(&ws, &o),
        Cmd::Mutants(o) => mutants::mutants(&ws, &o),
        Cmd::Bench(BenchCmd::Explore(o)) => explore::bench(&ws, &o),
        Cmd::Bench(BenchCmd::Mutants(o)) => mutants::bench(&ws, &o),
        Cmd::Bench(BenchCmd::Coverage(o)) => suite::bench_coverage(&ws, &o),
        Cmd::Bench(BenchCmd::Suite(o)) => suite::bench(&ws, &o),
        Cmd::Bench(BenchCmd::Boot(o)) => vm::bench_boot(&ws, &o),
        Cmd::Bench(BenchCmd::Loop(o)) => vm::bench_loop(&ws, &o),
        Cmd::Bisect(b) => bisect::bisect(&ws, &b),
        Cmd::Report(_) | Cmd::BisectRun(_) => unreachable!("dispatched above"),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            // A build stopped by a signal fails as soon as its make exits,
            // which may be before the signal thread exits: say the signal.
            match coexist::teardown::interrupted() {
                Some(sig) => ExitCode::from((128 + sig) as u8),
                None => ExitCode::from(2),
            }
        }
    }
}
