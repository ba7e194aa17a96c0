//! One (case, variant) job: a fresh VM, the case's steps in order, each
//! checked by its family as it answers, then the verdict.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::verdict;
use crate::events::{self, EventSink};
use crate::guest::steps::Missing;
use crate::guest::{self, run_steps, Flow, HandleKey, Job, Machine, Planned};
use crate::image::Prepared;
use crate::record::{CaseResult, StepRecord};
use crate::steps;
use crate::suite::{Case, Suite};
use crate::vm::snapshot::Snapshots;

/// How each job's VM is made and where its console log goes.
#[derive(Clone)]
pub struct CaseOptions {
    pub machine: Machine,
    /// Console logs go to `<dir>/console/<variant>/<suite>__<case>.log`.
    pub results_dir: PathBuf,
    /// Restore jobs from these snapshots (None: boot every job).
    pub snapshots: Option<std::sync::Arc<Snapshots>>,
}

pub fn console_path(results_dir: &Path, suite: &str, case: &str, variant: &str) -> PathBuf {
    results_dir
        .join("console")
        .join(variant)
        .join(format!("{suite}__{}.log", case.replace('/', "__")))
}

/// Where a coverage twin's job leaves its gcov counts:
/// `<dir>/coverage/<variant>/gcda/<suite>__<case>/`.
pub fn gcda_path(results_dir: &Path, suite: &str, case: &str, variant: &str) -> PathBuf {
    results_dir
        .join("coverage")
        .join(variant)
        .join("gcda")
        .join(format!("{suite}__{}", case.replace('/', "__")))
}

/// Runs one case in a fresh VM (on a coverage twin, with its counters
/// zeroed before the first step and read back after the last).
pub fn run_case(
    p: &Prepared,
    suite: &Suite,
    case: &Case,
    opts: &CaseOptions,
    events: &dyn EventSink,
) -> CaseResult {
    let variant = p.variant.clone();
    // What the kernel cannot do by configuration decides the outcome too.
    let caps = crate::build::caps::Caps::of_file(&p.manifest.config)
        .unwrap_or(crate::build::caps::Caps::ALL);
    let expected = suite.expected_on(case, &variant, caps);
    let log = console_path(&opts.results_dir, &suite.file.suite, &case.name, &variant);
    let t0 = Instant::now();
    let mut records: Vec<StepRecord> = Vec::new();
    let mut failure = None;
    let mut unattributed = Vec::new();
    let mut boot_s = None;
    let mut used_accel = None;
    let mut restored = false;
    let snapshots = opts.snapshots.as_deref();
    if let Some(s) = snapshots {
        restored = s.get(&variant).is_some();
    }
    let job = Job {
        allow_splats: suite.file.allow_splats.clone(),
        ..Job::logged(log.clone())
    };
    match guest::start(p, &opts.machine, snapshots, job, events) {
        Err(f) => failure = Some(f),
        Ok(mut vm) => {
            boot_s = Some(vm.ready.boot_s);
            used_accel = Some(vm.ready.accel);
            // A restore that fell back to a fresh boot is a boot.
            restored &= vm.restored();
            let labels: Vec<Option<String>> = case.steps.iter().map(|s| s.label.clone()).collect();
            let plan: Vec<Planned> = case
                .steps
                .iter()
                .map(|s| Planned {
                    gives: s.label.clone().map(HandleKey::Label),
                    // The attach it names did not give a handle: it
                    // failed, and the case stopped there.
                    takes: s
                        .handle_ref
                        .clone()
                        .map(|r| (HandleKey::Label(r), Missing::Stop)),
                    ..Planned::new(
                        s.step.clone(),
                        Duration::from_secs_f64(s.timeout.unwrap_or(suite.file.timeout)),
                    )
                })
                .collect();
            let covered = !p.manifest.profiled.is_empty();
            if covered {
                if let Err(e) = guest::coverage::reset(&mut vm) {
                    events::note(events, format!("{variant}: {}: {e}", case.name));
                }
            }
            run_steps(&mut vm, &plan, |a| {
                let s = &case.steps[a.index];
                let index = a.index + 1;
                let eff = verdict::effective_expect(index, &s.expect, &expected, &labels);
                match a.outcome {
                    Ok(out) => {
                        let mismatches = steps::check(&eff, &out.answer);
                        let refused_as_expected = eff.errno.is_some()
                            && s.expect.errno.is_none()
                            && mismatches.is_empty();
                        let stop =
                            !mismatches.is_empty() || !out.splats.is_empty() || refused_as_expected;
                        records.push(StepRecord {
                            vm_step: out.id,
                            index,
                            label: s.label.clone(),
                            request: a.step,
                            expect: eff,
                            answer: out.answer,
                            splats: out.splats,
                            host_s: out.host_s,
                            mismatches,
                        });
                        if stop {
                            Flow::Stop
                        } else {
                            Flow::Next
                        }
                    }
                    Err(f) => {
                        failure = Some(f);
                        Flow::Stop
                    }
                }
            });
            if covered && failure.is_none() {
                let into = gcda_path(&opts.results_dir, &suite.file.suite, &case.name, &variant);
                if let Err(e) = guest::coverage::collect(&mut vm, &into) {
                    events::note(events, format!("{variant}: {}: {e}", case.name));
                }
            }
            unattributed = vm.unattributed().to_vec();
            if failure.is_none() {
                if let Err(f) = vm.shutdown() {
                    failure = Some(f);
                }
            }
        }
    }
    let decision = verdict::decide(
        &expected,
        &records,
        case.steps.len(),
        failure.as_ref(),
        &unattributed,
    );
    CaseResult {
        job: 0,
        worker: 0,
        started_s: 0.0,
        id: format!("{}/{}@{}", suite.file.suite, case.name, variant),
        suite: suite.file.suite.clone(),
        case: case.name.clone(),
        description: case.description.clone(),
        variant,
        expected,
        decision,
        steps: records,
        steps_total: case.steps.len(),
        failure,
        unattributed_splats: unattributed,
        console_log: log,
        accel: used_accel,
        boot_s,
        restored,
        total_s: t0.elapsed().as_secs_f64(),
        fixed_s: case.fixed_seconds,
    }
}
