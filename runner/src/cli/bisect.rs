//! `bisect-run` (the judge `git bisect run` calls) and `bisect`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use coexist::run::bisect::{self, BisectRequest};
use coexist::ui::{fmt_duration, Terminal};
use coexist::vm::AccelChoice;
use coexist::Workspace;

#[derive(Args, Clone)]
pub struct BisectOpts {
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

#[derive(Args, Clone)]
pub struct BisectCmd {
    /// A commit where the outcome is the good one.
    #[arg(long)]
    good: String,
    /// A later commit where it is not.
    #[arg(long)]
    bad: String,
    #[command(flatten)]
    o: BisectOpts,
}

impl BisectOpts {
    fn request(&self) -> anyhow::Result<BisectRequest> {
        Ok(BisectRequest {
            tree: bisect::resolve_tree(self.kernel_tree.as_deref())?,
            variant: self.variant.clone(),
            suite: self.suite.clone(),
            cases: self.cases.clone(),
            good_if: self.good_if.clone(),
            log: self.log.clone(),
            accel: self.accel,
        })
    }
}

/// Never an error: a failure to judge the commit is exit 128.
pub fn bisect_run(root: Option<PathBuf>, cache_dir: Option<PathBuf>, o: &BisectOpts) -> u8 {
    let term = Terminal::new();
    let r = Workspace::open(root, cache_dir).and_then(|ws| {
        ws.setup(&term)?;
        bisect::judge_commit(&ws, &o.request()?, &term)
    });
    match r {
        Ok(step) => step.exit,
        Err(e) => {
            eprintln!("coexist bisect-run: harness error: {e:#}");
            bisect::HARNESS
        }
    }
}

pub fn bisect(ws: &Workspace, b: &BisectCmd) -> anyhow::Result<u8> {
    let s = bisect::drive(ws, &b.good, &b.bad, &b.o.request()?)?;
    eprint!("{}", s.git_output);
    println!(
        "\nbisect steps ({} in {}):",
        s.steps.len(),
        fmt_duration(Duration::from_secs_f64(s.elapsed_s))
    );
    for st in &s.steps {
        println!(
            "  {}  {:<13} build {:>7} {}  {}",
            &st.commit[..12.min(st.commit.len())],
            st.verdict,
            fmt_duration(Duration::from_secs_f64(st.build_s)),
            if st.kernel_cached {
                "(cached)"
            } else {
                "(incremental)"
            },
            st.subject
        );
    }
    match (&s.first_bad, &s.first_bad_subject) {
        (Some(c), subject) => {
            println!(
                "first commit where the outcome changes: {c} {}",
                subject.as_deref().unwrap_or("")
            );
            println!("report: {}", s.dir.join("bisect.json").display());
            Ok(0)
        }
        (None, _) => anyhow::bail!(
            "git bisect run found no first bad commit (exit {:?}); see {}",
            s.git_exit,
            s.dir.join("steps.jsonl").display()
        ),
    }
}
