//! What becomes of a failing sequence: set aside when its signature was
//! shrunk enough already, else shrunk, rerun, and either added to the
//! finding it matches (same signature, same minimal sequence) or written
//! as a new finding with its repro suite file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::exec::{self, Broken, Target};
use super::keys::canonical;
use super::model::{self, Op};
use super::report::{records, Finding, Reproduced, Unshrunk};
use super::shrink::{self, Signature};
use super::{repro, ExploreRequest};
use crate::events::{self, Event, EventSink, ExploreEvent};
use crate::teardown;

/// The run's findings, and what shrinking them cost.
pub struct Findings<'a> {
    pub req: &'a ExploreRequest,
    pub guest: &'a Target,
    /// The run's results directory.
    pub dir: PathBuf,
    pub events: &'a dyn EventSink,
    pub list: Mutex<Vec<Finding>>,
    /// Steps answered while shrinking and rerunning.
    pub shrink_steps: AtomicU64,
    /// Shrinks under way.
    pub shrinking: AtomicUsize,
    pub shrink_times: Mutex<Vec<f64>>,
    /// When the run started (a finding's `found_s`).
    pub t0: Instant,
    shrinks_started: Mutex<BTreeMap<Signature, usize>>,
    pub unshrunk: Mutex<BTreeMap<Signature, Unshrunk>>,
}

impl<'a> Findings<'a> {
    pub fn new(
        req: &'a ExploreRequest,
        guest: &'a Target,
        dir: PathBuf,
        events: &'a dyn EventSink,
    ) -> Findings<'a> {
        Findings {
            req,
            guest,
            dir,
            events,
            list: Mutex::new(Vec::new()),
            shrink_steps: AtomicU64::new(0),
            shrinking: AtomicUsize::new(0),
            shrink_times: Mutex::new(Vec::new()),
            t0: Instant::now(),
            shrinks_started: Mutex::new(BTreeMap::new()),
            unshrunk: Mutex::new(BTreeMap::new()),
        }
    }

    /// A failing sequence: shrunk (unless its signature was shrunk
    /// enough already), rerun, and added to the findings.
    pub fn found(&self, index: u64, seed: u64, ops: &[Op], b: Broken, log: PathBuf) {
        let found_s = self.t0.elapsed().as_secs_f64();
        let sig = b.signature();
        {
            let mut started = self
                .shrinks_started
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let n = started.entry(sig.clone()).or_default();
            if *n >= self.req.shrinks_per_signature {
                // Not shrunk: counted by signature only, never credited
                // to a minimal sequence it was not shown to shrink to.
                let mut u = self.unshrunk.lock().unwrap_or_else(|e| e.into_inner());
                let e = u.entry(sig.clone()).or_insert_with(|| Unshrunk {
                    invariant: sig.invariant,
                    splat: sig.splat.clone(),
                    count: 0,
                    seeds: Vec::new(),
                });
                e.count += 1;
                e.seeds.push(format!("{seed:#x}"));
                return;
            }
            *n += 1;
        }
        self.shrinking.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        let shrink_dir = self.dir.join("console").join(format!("shrink-{index:05}"));
        let mut sys = exec::VmSystem {
            index,
            guest: self.guest,
            log_dir: shrink_dir.clone(),
            events: self.events,
            runs: 0,
            steps: 0,
        };
        let shrunk = match b.op_index {
            Some(at) => shrink::shrink(
                ops,
                &sig,
                at,
                self.guest.model,
                &mut sys,
                self.req.max_shrink_replays,
            ),
            None => shrink::Shrunk {
                ops: Vec::new(),
                replays: 0,
                minimal: true,
            },
        };
        // Interrupted mid-shrink: every candidate kept did fail the same
        // way (a replay that could not run is never kept), so the sequence
        // so far stands, marked not minimal by the shrinker.
        // Rerun the minimal sequence; keep the evidence of the first rerun
        // that fails the same way (its step numbers match the repro).
        let mut reproduced = 0;
        let mut evidence = None;
        for k in 0..self.req.reruns {
            if teardown::stopping() {
                break;
            }
            let log = shrink_dir.join(format!("rerun-{}.log", k + 1));
            let r = exec::run_sequence(self.guest, &shrunk.ops, log, self.events);
            sys.steps += r.steps;
            let same = r.broken.as_ref().is_some_and(|rb| rb.signature() == sig);
            self.events.event(&Event::Explore(ExploreEvent::Rerun {
                index,
                run: k + 1,
                runs: self.req.reruns,
                same,
            }));
            if let (true, Some(rb)) = (same, r.broken) {
                reproduced += 1;
                if evidence.is_none() {
                    evidence = Some((rb, r.console_log));
                }
            }
        }
        let interrupted = teardown::stopping();
        let shrink_s = t.elapsed().as_secs_f64();
        self.shrinking.fetch_sub(1, Ordering::SeqCst);
        self.shrink_steps
            .fetch_add(sys.steps as u64, Ordering::SeqCst);
        self.shrink_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shrink_s);
        let (eb, elog) = evidence.unwrap_or((b, log));
        let canon = canonical(&shrunk.ops);
        let mut f = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = f.iter_mut().find(|x| {
            x.signature() == sig
                && canonical(&x.replayed.iter().map(|r| r.op).collect::<Vec<_>>()) == canon
        }) {
            x.count += 1;
            x.also_seeds.push(format!("{seed:#x}"));
            return;
        }
        let id = f.len() + 1;
        let repro_rel = format!("explore/repro-{id}.yaml");
        let header = [
            format!(
                "run seed {:#x}, sequence seed {seed:#x} (sequence {index})",
                self.req.seed
            ),
            format!(
                "broken invariant: {} at {}",
                sig.invariant,
                eb.op.as_deref().unwrap_or("the prologue")
            ),
            format!("expected: {}", eb.expected),
            format!("seen: {}", crate::text::shown(&eb.seen)),
        ];
        let text = repro::suite_text(
            id,
            &self.req.variant,
            self.guest.model,
            &shrunk.ops,
            &header
                .iter()
                .flat_map(|h| h.lines().map(|l| l.to_string()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
        );
        let path = self.dir.join(&repro_rel);
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err(e) = std::fs::write(&path, text) {
            events::note(
                self.events,
                format!("explore: cannot write {}: {e}", path.display()),
            );
        }
        self.events.event(&Event::Explore(ExploreEvent::Finding {
            id,
            text: format!(
                "explore: finding {id}: {} shrunk from {} to {} operation(s) in {shrink_s:.0} s ({} replays), reproduced {reproduced}/{}: {}",
                sig.invariant,
                ops.len(),
                shrunk.ops.len(),
                shrunk.replays,
                self.req.reruns,
                shrunk.ops.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
            ),
        }));
        f.push(Finding {
            id,
            invariant: sig.invariant,
            sequence: records(&model::without_calls(&shrunk.ops)),
            replayed: records(&shrunk.ops),
            at_op: eb.op_index.map(|i| i + 1),
            step: serde_json::to_value(&eb.step).unwrap_or_default(),
            expected: eb.expected,
            seen: eb.seen,
            splats: eb.splats,
            seed: format!("{seed:#x}"),
            also_seeds: Vec::new(),
            count: 1,
            found_s,
            original_len: ops.len(),
            shrink_replays: shrunk.replays,
            shrink_s,
            minimal: shrunk.minimal,
            reproduced: Reproduced {
                times: reproduced,
                runs: self.req.reruns,
                interrupted,
            },
            repro: repro_rel,
            console_log: elog,
            known: None,
        });
    }
}
