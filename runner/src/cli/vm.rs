//! `boot`, `shell`, `run`, `bench boot`: one variant, one guest at a time.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use coexist::build::variant;
use coexist::guest;
use coexist::image::Prepared;
use coexist::text::shown;
use coexist::ui::Terminal;
use coexist::vm::{self, StepOutcome, Vm, VmFailure};
use coexist::Workspace;
use coexist_proto::Step;

use super::{MachineOpts, SourceOpts};

#[derive(Args, Clone)]
pub struct VmOpts {
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
    #[arg(long, default_value_t = 60.0, value_parser = super::seconds)]
    boot_timeout: f64,
    #[command(flatten)]
    src: SourceOpts,
}

/// `shell`'s options.
#[derive(Args, Clone)]
pub struct ShellOpts {
    #[command(flatten)]
    vm: VmOpts,
    /// Boot the guest instead of restoring the variant's READY snapshot.
    #[arg(long)]
    fresh_boot: bool,
}

#[derive(Args, Clone)]
pub struct RunOpts {
    #[command(flatten)]
    vm: VmOpts,
    /// Boot the guest instead of restoring the variant's READY snapshot.
    #[arg(long)]
    fresh_boot: bool,
    /// Run it on the variant's coverage twin (gcov on the area's files)
    /// and write what it reached under DIR/coverage/<variant>/
    /// (docs/coverage.md).
    #[arg(long, value_name = "DIR")]
    coverage: Option<std::path::PathBuf>,
    /// Step timeout in seconds.
    #[arg(long, default_value_t = 60.0, value_parser = super::seconds)]
    timeout: f64,
    /// The command (after --).
    #[arg(last = true, required = true)]
    argv: Vec<String>,
}

#[derive(Args, Clone)]
pub struct BenchBootOpts {
    #[command(flatten)]
    vm: VmOpts,
    /// Boots (1 to 1024).
    #[arg(short = 'n', long, default_value_t = 5, value_parser = super::count)]
    count: usize,
}

/// Builds (or finds) the variant's kernel and image (its coverage
/// twin's, with `coverage`).
fn prepare(ws: &Workspace, o: &VmOpts, coverage: bool, term: &Terminal) -> Result<Prepared> {
    let variants = ws.variants(o.src.kernel_tree.as_deref())?;
    let v = variant::select(&variants, std::slice::from_ref(&o.variant))?[0];
    if coverage {
        return ws.prepare(&ws.coverage_twin(v)?, term);
    }
    ws.prepare(v, term)
}

/// The command's guest: its console log and command line.
fn job(ws: &Workspace, o: &VmOpts) -> guest::Job {
    guest::Job {
        append: o.append.clone(),
        cmdline: o.cmdline.clone(),
        boot_timeout: Some(Duration::from_secs_f64(o.boot_timeout)),
        ..guest::Job::logged(ws.console_log(&o.variant))
    }
}

fn boot_vm(ws: &Workspace, o: &VmOpts, p: &Prepared, term: &Terminal) -> Result<Vm, VmFailure> {
    guest::start(p, &o.machine.machine(), None, job(ws, o), term)
}

fn start_vm(
    ws: &Workspace,
    o: &VmOpts,
    p: &Prepared,
    fresh_boot: bool,
    term: &Terminal,
) -> Result<Vm, VmFailure> {
    guest::start_one(
        p,
        &o.machine.machine(),
        &ws.cache,
        job(ws, o),
        fresh_boot,
        term,
    )
}

/// How the guest got to READY, in one line.
fn how_ready(vm: &Vm) -> String {
    let r = &vm.ready;
    if vm.restored() {
        format!(
            "accel {} restored from the READY snapshot in {:.2} s",
            r.accel, r.boot_s
        )
    } else {
        format!(
            "accel {} in {:.2} s from QEMU start (guest uptime {:.2} s)",
            r.accel, r.boot_s, r.guest_uptime_s
        )
    }
}

fn print_ready(variant: &str, vm: &Vm) {
    let r = &vm.ready;
    println!(
        "READY {variant}: kernel {} {}",
        r.kernel_release,
        how_ready(vm)
    );
    for w in &r.warnings {
        eprintln!("  agent warning: {}", shown(w));
    }
    for s in vm.unattributed() {
        eprintln!("  splat during boot ({}): {}", s.kind, shown(&s.title));
    }
}

fn show_outcome(out: &StepOutcome) {
    let a = &out.answer;
    print!("{}", shown(&a.output));
    if !a.output.is_empty() && !a.output.ends_with('\n') {
        println!();
    }
    if !a.ok {
        let errno = match (&a.errno_name, a.errno) {
            (Some(n), Some(e)) => format!(" [{n} ({e})]"),
            _ => String::new(),
        };
        eprintln!(
            "error{errno}: {}",
            shown(a.error.as_deref().unwrap_or("failed"))
        );
    }
    for s in &out.splats {
        eprintln!("SPLAT ({}) during this step: {}", s.kind, shown(&s.title));
        for l in &s.text {
            eprintln!("  {}", shown(l));
        }
    }
}

pub fn boot(ws: &Workspace, o: &VmOpts) -> Result<u8> {
    let term = Terminal::new();
    let p = prepare(ws, o, false, &term)?;
    let vm = boot_vm(ws, o, &p, &term)?;
    print_ready(&o.variant, &vm);
    eprintln!("console log: {}", vm.console_log().display());
    vm.shutdown()?;
    Ok(0)
}

pub fn shell(ws: &Workspace, so: &ShellOpts) -> Result<u8> {
    let o = &so.vm;
    let term = Terminal::new();
    let p = prepare(ws, o, false, &term)?;
    let mut vm = start_vm(ws, o, &p, so.fresh_boot, &term)?;
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
        show_outcome(&vm.run(step, Duration::from_secs(300))?);
    }
    vm.shutdown()?;
    Ok(0)
}

pub fn run(ws: &Workspace, o: &RunOpts) -> Result<u8> {
    let term = Terminal::new();
    let p = prepare(ws, &o.vm, o.coverage.is_some(), &term)?;
    let mut vm = start_vm(ws, &o.vm, &p, o.fresh_boot, &term)?;
    eprintln!("guest: {}", how_ready(&vm));
    if o.coverage.is_some() {
        guest::coverage::reset(&mut vm).map_err(anyhow::Error::msg)?;
    }
    let out = vm.run(
        Step::Exec {
            argv: o.argv.clone(),
        },
        Duration::from_secs_f64(o.timeout),
    )?;
    show_outcome(&out);
    if let Some(dir) = &o.coverage {
        let counts = coexist::coverage::variant_dir(dir, &p.variant).join("gcda/run");
        let _ = std::fs::remove_dir_all(&counts);
        guest::coverage::collect(&mut vm, &counts).map_err(anyhow::Error::msg)?;
        let job = coexist::coverage::JobCounts {
            job: coexist::coverage::JobRef {
                id: format!("run/{}@{}", o.argv.join(" "), p.variant),
                kind: coexist::coverage::JobKind::Case,
            },
            dir: counts,
        };
        let (c, page) =
            coexist::coverage::of_jobs(ws, (&p.variant, &p.manifest.key), &[job], dir, &term)?;
        eprint!("{}", coexist::coverage::table(&c));
        eprintln!("coverage: {}", page.display());
    }
    vm.shutdown()?;
    Ok(out
        .answer
        .exit_code
        .unwrap_or(if out.answer.ok { 0 } else { 1 })
        .clamp(0, 255) as u8)
}

pub fn bench_boot(ws: &Workspace, o: &BenchBootOpts) -> Result<u8> {
    let term = Terminal::new();
    let p = prepare(ws, &o.vm, false, &term)?;
    let n = o.count.max(1);
    let mut host = Vec::new();
    let mut guest = Vec::new();
    for i in 0..n {
        let vm = boot_vm(ws, &o.vm, &p, &term)?;
        let r = vm.ready.clone();
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
        v.sort_by(|a, b| a.total_cmp(b));
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (hmin, hmed, hmax) = stats(&mut host);
    let (gmin, gmed, gmax) = stats(&mut guest);
    println!(
        "boot-to-ready ({} boots, {}): QEMU start -> READY min {hmin:.3} s, median {hmed:.3} s, max {hmax:.3} s; \
         guest uptime at READY min {gmin:.3} s, median {gmed:.3} s, max {gmax:.3} s",
        host.len(),
        vm::accel::decided()
            .map(|a| a.to_string())
            .unwrap_or_else(|| format!("{:?}", o.vm.machine.accel).to_lowercase())
    );
    Ok(0)
}

#[derive(Args, Clone)]
pub struct BenchLoopOpts {
    /// The variant (its kernel is built or found first).
    #[arg(long, default_value = "share-ipmodify")]
    variant: String,
    #[arg(long, default_value = "livepatch-bpf")]
    suite: String,
    /// One case of that suite.
    #[arg(long, default_value = "cmdline/livepatch-then-fexit")]
    case: String,
    /// Timed runs of each command, after one warm-up (1 to 1024).
    #[arg(short = 'n', long, default_value_t = 3, value_parser = super::count)]
    count: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

pub fn bench_loop(ws: &Workspace, o: &BenchLoopOpts) -> Result<u8> {
    let results = tempfile::tempdir()?;
    let req = coexist::run::loop_bench::LoopRequest {
        exe: std::env::current_exe()?,
        root: ws.project.root.clone(),
        cache: ws.cache.root.clone(),
        suite: o.suite.clone(),
        variant: o.variant.clone(),
        case: o.case.clone(),
        n: o.count,
        results: results.path().to_path_buf(),
    };
    let f = coexist::run::loop_bench::measure(&req)?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!("{}", f.text());
    }
    Ok(0)
}
