//! Helpers shared by the integration tests (each test file uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coexist::cache::Cache;
use coexist::guest::{self, Prepared};
use coexist::kbuild::{BuildEvent, BuildObserver, Builder};
use coexist::variant::{self, Project};

/// The project root (the workspace).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs the coexist binary, echoing what it printed.
pub fn coexist(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args(args)
        .output()
        .expect("run coexist");
    eprintln!(
        "$ coexist {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Prints build phases only.
pub struct Quiet;
impl BuildObserver for Quiet {
    fn event(&self, e: BuildEvent) {
        if let BuildEvent::Phase { variant, what } = e {
            eprintln!("{variant}: {what}");
        }
    }
}

/// Builds (or finds) a variant's kernel, fixtures and image in the normal cache.
pub fn prepare(name: &str) -> Prepared {
    let project = Project::locate(Some(root())).unwrap();
    let cache = Cache::open(Cache::default_root().unwrap()).unwrap();
    let variants = project.load_variants(None).unwrap();
    let v = variant::select(&variants, &[name.to_string()]).unwrap()[0];
    let builder = Builder {
        cache: &cache,
        jobs: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        toolchain: coexist::source::toolchain_id(),
        observer: &Quiet,
    };
    guest::prepare(&cache, &project, &builder, v, &|s| eprintln!("{s}")).unwrap()
}
