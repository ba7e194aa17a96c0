//! Helpers shared by the integration tests (each test file uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coexist::build::variant;
use coexist::events::{Event, EventSink};
use coexist::image::Prepared;
use coexist::Workspace;

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

/// Prints build phases, preparation and notes only.
pub struct Quiet;
impl EventSink for Quiet {
    fn event(&self, e: &Event) {
        match e {
            Event::BuildPhase { variant, what } => eprintln!("{variant}: {what}"),
            Event::Preparing { what } | Event::Note(what) => eprintln!("{what}"),
            Event::AccelDecided { reason, .. } => eprintln!("accel: {reason}"),
            _ => {}
        }
    }
}

/// Builds (or finds) a variant's kernel, fixtures and image in the normal cache.
pub fn prepare(name: &str) -> Prepared {
    let ws = Workspace::open(Some(root()), None).unwrap();
    let variants = ws.variants(None).unwrap();
    let v = variant::select(&variants, &[name.to_string()]).unwrap()[0];
    ws.prepare(v, &Quiet).unwrap()
}
