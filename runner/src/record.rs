//! The run record: what a run produces, below both the stage that makes
//! it (`crate::run`) and the ones that read it (`crate::report`,
//! `crate::ui`).
//!
//! A [`RunReport`] (`report.json`, schema [`SCHEMA`]) holds the run's
//! metadata ([`Host`], [`VariantInfo`], [`PlanInfo`], [`Timings`]), one
//! [`CaseResult`] per (case, variant) job with its [`StepRecord`]s and
//! [`Decision`], and the [`Totals`]. Finished cases also go, one by one
//! as they finish, to a [`RecordSink`] (`results.jsonl`).
//!
//! A record is made of the outputs of the stages below it: the agent's
//! `Step`/`Answer` (`coexist_proto`), the suite's [`Expected`] outcome,
//! the step family's `StepExpect`, the VM's `Splat`s and `VmFailure`.
//! Nothing here runs anything.

use std::path::PathBuf;

use coexist_proto::{Answer, Step};
use serde::{Deserialize, Serialize};

use crate::events::{CaseLine, Null};
use crate::image::Prepared;
use crate::steps::StepExpect;
pub use crate::suite::Expected;
use crate::vm::{Accel, Splat, VmFailure};

/// One executed step, as recorded in reports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based position in the case.
    pub index: usize,
    /// The step's id in its VM (its console markers say `coexist: step
    /// <id>`); a restored guest's hello comes first.
    #[serde(default)]
    pub vm_step: u64,
    pub label: Option<String>,
    pub request: Step,
    pub expect: StepExpect,
    pub answer: Answer,
    pub splats: Vec<Splat>,
    pub host_s: f64,
    /// What the step showed that it must not have (empty: as required).
    pub mismatches: Vec<String>,
}

pub use crate::events::Verdict;

/// The case's result on one variant.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Whether this is the outcome the suite expects on this variant.
    pub as_expected: bool,
    /// One line for people.
    pub summary: String,
    /// Evidence for unexpected outcomes: mismatches, splats, errors.
    pub evidence: Vec<String>,
}

/// A case's result on one variant: everything the reports need.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    /// The job's position in the whole (unsharded) job list.
    #[serde(default)]
    pub job: usize,
    /// The worker that ran it, and when it started (seconds after the
    /// matrix started): the run's timeline.
    #[serde(default)]
    pub worker: usize,
    #[serde(default)]
    pub started_s: f64,
    pub id: String,
    pub suite: String,
    pub case: String,
    pub description: String,
    pub variant: String,
    pub expected: Expected,
    #[serde(flatten)]
    pub decision: Decision,
    pub steps: Vec<StepRecord>,
    /// Steps the case has (fewer ran when it stopped early).
    pub steps_total: usize,
    pub failure: Option<VmFailure>,
    /// Splats outside any step (boot, between steps).
    pub unattributed_splats: Vec<Splat>,
    pub console_log: PathBuf,
    pub accel: Option<Accel>,
    /// QEMU start to READY (restored: QEMU start to the hello's answer).
    pub boot_s: Option<f64>,
    /// The guest was restored from a snapshot (else booted).
    #[serde(default)]
    pub restored: bool,
    /// Boot, steps and shutdown.
    pub total_s: f64,
    /// Time the case spends on purpose (stress durations).
    pub fixed_s: f64,
}

/// Counts of verdicts, and of outcomes that are not the expected ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Totals {
    pub cases: usize,
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    pub xfail: usize,
    pub xpass: usize,
    /// Selftests that skipped as expected.
    #[serde(default)]
    pub skip: usize,
    pub unexpected: usize,
}

pub fn totals(results: &[CaseResult]) -> Totals {
    let mut t = Totals {
        cases: results.len(),
        ..Default::default()
    };
    for r in results {
        match r.decision.verdict {
            Verdict::Pass => t.pass += 1,
            Verdict::Fail => t.fail += 1,
            Verdict::Error => t.error += 1,
            Verdict::Xfail => t.xfail += 1,
            Verdict::Xpass => t.xpass += 1,
            Verdict::Skip => t.skip += 1,
        }
        if !r.decision.as_expected {
            t.unexpected += 1;
        }
    }
    t
}

/// The report format. /2: answers carry typed data (`{"type": ...}`), and a
/// step's expectation holds its family's fields in `bpf`, `ftrace`, `stress`.
pub const SCHEMA: &str = "coexist-report/2";

/// A variant as it was used in the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VariantInfo {
    pub name: String,
    /// "6.1.192 (Debian linux-source-6.1 6.1.192-3)".
    #[serde(default)]
    pub kernel_version: String,
    /// Patches of the variant's series already in its source (skipped).
    #[serde(default)]
    pub already_in_source: Vec<String>,
    /// The snapshot its jobs were restored from (None: fresh boots).
    #[serde(default)]
    pub snapshot: Option<String>,
    pub kernel_key: String,
    pub kernel_release: String,
    /// The source's identity (tarball and hash, or tree and commit).
    pub source: String,
    /// The source's name in variants.yaml (`debian-6.12`), or `tree
    /// <path>`; reports group variants by it.
    #[serde(default)]
    pub source_name: String,
    pub series: Vec<String>,
    pub fragments: Vec<String>,
    pub fixtures_key: String,
    pub image_key: String,
    /// Time to get the kernel (a build, or the cache hit).
    pub build_s: f64,
    pub kernel_cached: bool,
    /// Fixtures and image (build or cache hit).
    pub image_s: f64,
    /// A prebuilt kernel's package, version and the options this project
    /// is about (None: a kernel built here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prebuilt: Option<crate::build::manifest::PrebuiltInfo>,
    /// A coverage twin's profiled files (`--coverage`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiled: Vec<String>,
    /// The compiler and linker that built the kernel (empty: not built
    /// here).
    #[serde(default)]
    pub toolchain: String,
    /// How long the kernel's own build took, when it was built (a cache
    /// hit keeps the figure of the build that made the entry).
    #[serde(default)]
    pub build_seconds: f64,
}

impl VariantInfo {
    pub fn of(p: &Prepared) -> VariantInfo {
        let m = &p.manifest;
        VariantInfo {
            name: p.variant.clone(),
            kernel_version: match &m.source_origin {
                Some(o) => format!("{} ({o})", m.kernel_version),
                None => m.kernel_version.clone(),
            },
            already_in_source: m.already_in_source.clone(),
            snapshot: None,
            kernel_key: p.manifest.key.clone(),
            kernel_release: p.manifest.kernel_release.clone(),
            source: p.manifest.source.clone(),
            source_name: p.source_name.clone(),
            series: p.manifest.series.clone(),
            fragments: p.manifest.fragments.clone(),
            fixtures_key: p.fixtures.key.clone(),
            image_key: p.image.key.clone(),
            build_s: p.build_s,
            kernel_cached: p.kernel_cached,
            image_s: p.image_s,
            prebuilt: m.prebuilt.clone(),
            profiled: m.profiled.clone(),
            toolchain: m.toolchain.clone(),
            build_seconds: m.build_seconds,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub kernel: String,
    pub cpus: usize,
    pub qemu: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Kernels, fixtures and images.
    pub prepare_s: f64,
    /// The matrix, wall clock.
    pub matrix_s: f64,
    pub jobs: usize,
    /// CPU seconds of the runner itself during the matrix.
    #[serde(default)]
    pub runner_cpu_s: f64,
    /// CPU seconds of its QEMU processes during the matrix.
    #[serde(default)]
    pub qemu_cpu_s: f64,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub schema: String,
    pub run_id: String,
    pub started: String,
    pub coexist_version: String,
    pub host: Host,
    /// The accelerator the VMs used ("kvm", "tcg"), or null if none booted.
    pub accel: Option<String>,
    pub shard: Option<(usize, usize)>,
    /// The job list this run (or shard) was cut from.
    pub plan: PlanInfo,
    /// Jobs this report is meant to hold (the shard's, when sharded).
    pub jobs: usize,
    /// Whether every one of them has its result here.
    pub complete: bool,
    /// Why not (a signal, a runner panic, missing shards).
    pub incomplete: Option<String>,
    pub suites: Vec<String>,
    pub variants: Vec<VariantInfo>,
    pub results: Vec<CaseResult>,
    pub totals: Totals,
    pub timings: Timings,
}

/// The whole job list before sharding: shards of one run share it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// A hash of the job ids, the suite files and the variants file.
    pub key: String,
    /// Jobs in the whole run (all shards).
    pub jobs: usize,
}

impl RunReport {
    /// 2: the run is incomplete, or the harness itself failed (QEMU did not
    /// start, the agent broke the protocol); 1: an outcome was not the
    /// expected one; 0: every outcome was.
    pub fn exit_code(&self) -> u8 {
        let infra = self
            .results
            .iter()
            .filter_map(|r| r.failure.as_ref())
            .any(|f| f.kind.is_infrastructure());
        if !self.complete || infra {
            2
        } else if self.totals.unexpected > 0 {
            1
        } else {
            0
        }
    }
}

impl Host {
    /// This machine, and the QEMU that boots the guests (run once per run:
    /// the QEMU version also keys the snapshots).
    pub fn current() -> Host {
        Host {
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .into(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            qemu: crate::process::first_line("qemu-system-x86_64", &["--version"]),
        }
    }
}

impl CaseResult {
    /// The line the event stream carries when this case finishes.
    pub fn line(&self) -> CaseLine {
        CaseLine {
            id: self.id.clone(),
            verdict: self.decision.verdict,
            as_expected: self.decision.as_expected,
            total_s: self.total_s,
            summary: self.decision.summary.clone(),
        }
    }
}

/// Something that keeps finished cases as they finish (`results.jsonl`).
/// Shared by a run's workers, so it takes `&self`.
pub trait RecordSink: Sync {
    fn case_finished(&self, r: &CaseResult);
}

impl RecordSink for Null {
    fn case_finished(&self, _: &CaseResult) {}
}
