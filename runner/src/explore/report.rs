//! What `explore` writes: `explore.json` ([`ExploreReport`], its
//! findings and coverage) and the summary for the terminal.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::model::{Caps, Invariant, Op, Rule};
use super::shrink::{self, Signature};
use crate::vm::Splat;

pub const SCHEMA: &str = "coexist-explore/1";

/// One operation of a finding, for people and for replay.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpRecord {
    pub text: String,
    pub op: Op,
}

/// A finding: one minimal sequence and how it fails, listed once with a
/// count of the sequences that led to it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub id: usize,
    pub invariant: Invariant,
    /// The minimal sequence, calls excluded.
    pub sequence: Vec<OpRecord>,
    /// The minimal sequence as replayed (with any calls it kept).
    pub replayed: Vec<OpRecord>,
    /// The operation it broke at (1-based, in `replayed`), and that step.
    pub at_op: Option<usize>,
    pub step: serde_json::Value,
    pub expected: String,
    pub seen: String,
    pub splats: Vec<Splat>,
    /// The seed of the sequence that first found it (hex).
    pub seed: String,
    /// The other sequences that failed the same way (seeds, hex).
    pub also_seeds: Vec<String>,
    pub count: usize,
    /// Seconds into the run when its first failing sequence finished.
    #[serde(default)]
    pub found_s: f64,
    /// The failing sequence before shrinking (its length in operations).
    pub original_len: usize,
    pub shrink_replays: usize,
    pub shrink_s: f64,
    /// No single operation can be removed (false: the replay cap was hit).
    pub minimal: bool,
    /// How often the minimal sequence failed the same way when rerun
    /// ("3/3" in explore.json).
    pub reproduced: Reproduced,
    /// The suite file that reproduces it, relative to the results dir.
    pub repro: String,
    pub console_log: PathBuf,
    /// The known kernel bug it is (`report merge --known`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<KnownRef>,
}

/// A known bug, as a finding carries it (`report merge --known`; the
/// entries: `explore::known`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRef {
    pub name: String,
    pub reason: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

/// How often a finding's minimal sequence failed the same way when rerun:
/// `times` of `runs`, which a stop may have cut short. Written as
/// "3/3" or "1/3 (interrupted)".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Reproduced {
    pub times: usize,
    pub runs: usize,
    pub interrupted: bool,
}

impl std::fmt::Display for Reproduced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.times, self.runs)?;
        if self.interrupted {
            write!(f, " (interrupted)")?;
        }
        Ok(())
    }
}

impl From<Reproduced> for String {
    fn from(r: Reproduced) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for Reproduced {
    type Error = String;
    fn try_from(s: String) -> Result<Reproduced, String> {
        let (head, interrupted) = match s.strip_suffix(" (interrupted)") {
            Some(h) => (h, true),
            None => (s.as_str(), false),
        };
        let parsed = head
            .split_once('/')
            .and_then(|(t, r)| Some((t.parse().ok()?, r.parse().ok()?)));
        match parsed {
            Some((times, runs)) => Ok(Reproduced {
                times,
                runs,
                interrupted,
            }),
            None => Err(format!("reproduced: expected 'N/M', got {s:?}")),
        }
    }
}

impl Finding {
    pub fn signature(&self) -> Signature {
        Signature {
            invariant: self.invariant,
            splat: self
                .splats
                .first()
                .map(|s| shrink::normalize_title(&s.title)),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExploreStats {
    pub sequences: u64,
    /// Sequences that failed (each led to a finding or added to its count).
    pub failing: u64,
    /// Sequences the harness could not run (no guest): no verdict.
    pub errors: u64,
    /// Agent steps answered while exploring (shrinking and reruns apart).
    pub steps: u64,
    pub ops: u64,
    pub shrink_steps: u64,
    pub shrink_s: Vec<f64>,
}

fn all_caps() -> Caps {
    Caps::ALL
}

/// The lines and branches reached after `sequences` sequences, `s`
/// seconds into the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReachedAt {
    pub s: f64,
    pub sequences: u64,
    /// Of the profiled files.
    pub lines: usize,
    pub branches: usize,
    /// Of the area's functions (`area.yaml`'s `functions:`) in them.
    #[serde(default)]
    pub area_lines: usize,
    #[serde(default)]
    pub area_branches: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExploreReport {
    pub schema: String,
    pub run_id: String,
    pub started: String,
    /// Shard I of N (`--shard`); merged shards: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(u64, u64)>,
    pub variant: String,
    /// The kernel explored (a mutant's, a coverage twin's: its own key).
    #[serde(default)]
    pub kernel_key: String,
    /// A coverage twin's profiled files (`--coverage`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiled: Vec<String>,
    pub kernel_release: Option<String>,
    pub rule: Rule,
    /// What the kernel can do by configuration (the alphabet follows it).
    #[serde(default = "all_caps")]
    pub caps: Caps,
    /// The run's seed (decimal and hex).
    pub seed: u64,
    pub seed_hex: String,
    pub max_len: usize,
    pub jobs: usize,
    pub budget: String,
    pub accel: Option<String>,
    pub sequences: u64,
    pub steps: u64,
    pub ops: u64,
    pub failing_sequences: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub steps_per_s: f64,
    pub sequences_per_min: f64,
    pub median_shrink_s: Option<f64>,
    pub findings: Vec<Finding>,
    pub complete: bool,
    pub incomplete: Option<String>,
    /// The first failure of harness trouble, if any, for people.
    pub first_error: Option<String>,
    /// What was explored: completed operations by kind, function and
    /// result (`attach fexit target -> EBUSY`), and the states each
    /// function was in after them (`state target: livepatch enabled;
    /// fentry, fmod_ret(777)`), with counts.
    pub coverage: std::collections::BTreeMap<String, u64>,
    /// Coverage-guided generation (`--guided`).
    #[serde(default)]
    pub guided: bool,
    /// Sequences that reached new lines or branches of the area (a
    /// coverage twin's run): the corpus, in `corpus/`.
    #[serde(default)]
    pub corpus: usize,
    /// Lines and branches of the area reached so far, after each sequence
    /// (a coverage twin's run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reached: Vec<ReachedAt>,
    /// Failing sequences not shrunk (their signature was shrunk enough
    /// already), by signature.
    pub unshrunk: Vec<Unshrunk>,
}

impl ExploreReport {
    /// 1 when something was found that is not a known bug (`known`, set by
    /// `report merge --known`), 0 when the budget ran out clean, 2 when
    /// nothing else was found but some sequences could not run (harness
    /// trouble: the budget was not spent exploring).
    pub fn exit_code(&self) -> u8 {
        if self.findings.iter().any(|f| f.known.is_none()) {
            1
        } else if self.errors > 0 {
            2
        } else {
            0
        }
    }
}

pub fn records(ops: &[Op]) -> Vec<OpRecord> {
    ops.iter()
        .map(|o| OpRecord {
            text: o.to_string(),
            op: *o,
        })
        .collect()
}

/// Failing sequences that were not shrunk because their signature had
/// been shrunk `shrinks_per_signature` times already.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unshrunk {
    pub invariant: Invariant,
    /// The splat title (normalized), if the signature has one.
    pub splat: Option<String>,
    pub count: usize,
    pub seeds: Vec<String>,
}

/// Writes `explore.json` in `dir`.
pub fn write_json(dir: &Path, r: &ExploreReport) -> Result<PathBuf> {
    let p = dir.join("explore.json");
    std::fs::write(&p, serde_json::to_vec_pretty(r)?)?;
    Ok(p)
}

/// The findings in a few lines, for the terminal.
pub fn summary(r: &ExploreReport) -> String {
    let mut s = format!(
        "explore {} ({:?} rule{}), seed {} ({}): {} sequence(s), {} steps in {:.0} s ({:.1} steps/s, {:.1} sequences/min), {} failing, {} harness error(s), {} finding(s)\n",
        r.variant,
        r.rule,
        r.caps
            .missing()
            .iter()
            .map(|m| format!("; cannot do {m}"))
            .collect::<String>(),
        r.seed,
        r.seed_hex,
        r.sequences,
        r.steps,
        r.duration_s,
        r.steps_per_s,
        r.sequences_per_min,
        r.failing_sequences,
        r.errors,
        r.findings.len()
    );
    for f in &r.findings {
        s.push_str(&format!(
            "  finding {} (x{}): {} after [{}]; reproduced {}; seed {}; {}\n",
            f.id,
            f.count,
            f.invariant,
            f.sequence
                .iter()
                .map(|o| o.text.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            f.reproduced,
            f.seed,
            f.repro
        ));
        s.push_str(&format!(
            "    expected {}\n    seen {}\n",
            f.expected,
            crate::text::shown(&f.seen)
        ));
        for sp in &f.splats {
            s.push_str(&format!("    {}\n", sp.line()));
        }
    }
    for u in &r.unshrunk {
        s.push_str(&format!(
            "  {} more failing sequence(s) broke {}{} (not shrunk: that signature was shrunk enough already)\n",
            u.count,
            u.invariant,
            u.splat
                .as_ref()
                .map(|t| format!(" with {t}"))
                .unwrap_or_default()
        ));
    }
    s
}

/// Shards of one explore (the same variant, kernel and model; their seeds
/// or seed ranges apart) as one report: counts summed, findings listed
/// once per minimal sequence (up to program ids) and invariant with their
/// counts and seeds added up, each finding's repro path made absolute
/// (it stays in its shard's directory). `parts`: (results directory,
/// its report).
pub fn merge(parts: &[(PathBuf, ExploreReport)]) -> Result<ExploreReport> {
    let Some((first_dir, first)) = parts.first() else {
        anyhow::bail!("nothing to merge");
    };
    let mut out = first.clone();
    out.shard = None;
    out.findings.clear();
    out.unshrunk.clear();
    out.coverage.clear();
    out.reached.clear();
    (
        out.sequences,
        out.steps,
        out.ops,
        out.failing_sequences,
        out.errors,
    ) = (0, 0, 0, 0, 0);
    out.duration_s = 0.0;
    out.corpus = 0;
    let mut incomplete = Vec::new();
    let mut shrinks = Vec::new();
    for (dir, r) in parts {
        let same = r.variant == first.variant
            && r.kernel_key == first.kernel_key
            && r.rule == first.rule
            && r.caps == first.caps
            && r.max_len == first.max_len;
        if !same {
            anyhow::bail!(
                "{} ({}, {:?} rule, kernel {}, max {}) and {} ({}, {:?} rule, kernel {}, max {}) are not shards of one explore",
                first_dir.display(),
                first.variant,
                first.rule,
                first.kernel_key,
                first.max_len,
                dir.display(),
                r.variant,
                r.rule,
                r.kernel_key,
                r.max_len
            );
        }
        out.sequences += r.sequences;
        out.steps += r.steps;
        out.ops += r.ops;
        out.failing_sequences += r.failing_sequences;
        out.errors += r.errors;
        out.duration_s += r.duration_s;
        out.corpus += r.corpus;
        out.jobs = out.jobs.max(r.jobs);
        shrinks.extend(r.median_shrink_s);
        if !r.complete {
            incomplete.push(format!(
                "{}: {}",
                dir.display(),
                r.incomplete.as_deref().unwrap_or("incomplete")
            ));
        }
        if out.first_error.is_none() {
            out.first_error.clone_from(&r.first_error);
        }
        for (k, n) in &r.coverage {
            *out.coverage.entry(k.clone()).or_default() += n;
        }
        for u in &r.unshrunk {
            match out
                .unshrunk
                .iter_mut()
                .find(|o| o.invariant == u.invariant && o.splat == u.splat)
            {
                Some(o) => {
                    o.count += u.count;
                    o.seeds.extend(u.seeds.iter().cloned());
                }
                None => out.unshrunk.push(u.clone()),
            }
        }
        for f in &r.findings {
            let ops: Vec<_> = f.sequence.iter().map(|o| o.op).collect();
            let same_finding = |o: &Finding| {
                o.invariant == f.invariant
                    && super::keys::canonical(&o.sequence.iter().map(|x| x.op).collect::<Vec<_>>())
                        == super::keys::canonical(&ops)
            };
            match out.findings.iter_mut().find(|o| same_finding(o)) {
                Some(o) => {
                    o.count += f.count;
                    o.also_seeds.push(f.seed.clone());
                    o.also_seeds.extend(f.also_seeds.iter().cloned());
                }
                None => {
                    let mut f = f.clone();
                    f.id = out.findings.len() + 1;
                    f.repro = dir.join(&f.repro).display().to_string();
                    out.findings.push(f);
                }
            }
        }
    }
    shrinks.sort_by(|a, b| a.total_cmp(b));
    out.median_shrink_s = (!shrinks.is_empty()).then(|| shrinks[shrinks.len() / 2]);
    out.steps_per_s = out.steps as f64 / out.duration_s.max(1e-9);
    out.sequences_per_min = out.sequences as f64 * 60.0 / out.duration_s.max(1e-9);
    out.seed_hex = parts
        .iter()
        .map(|(_, r)| r.seed_hex.clone())
        .collect::<Vec<_>>()
        .join(",");
    out.complete = incomplete.is_empty();
    out.incomplete = (!incomplete.is_empty()).then(|| incomplete.join("; "));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduced_reads_back_as_written() {
        for (text, times, interrupted) in [("3/3", 3, false), ("1/3 (interrupted)", 1, true)] {
            let r = Reproduced::try_from(text.to_string()).unwrap();
            assert_eq!((r.times, r.runs, r.interrupted), (times, 3, interrupted));
            assert_eq!(r.to_string(), text);
            assert_eq!(serde_json::to_value(r).unwrap(), text);
        }
        assert!(Reproduced::try_from("three".to_string()).is_err());
    }

    fn report(seed: u64, sequences: u64, findings: Vec<Finding>) -> ExploreReport {
        serde_json::from_value(serde_json::json!({
            "schema": SCHEMA, "run_id": "r", "started": "t", "variant": "stock",
            "kernel_key": "k", "kernel_release": null, "rule": "shared",
            "seed": seed, "seed_hex": format!("{seed:#x}"), "max_len": 12, "jobs": 2,
            "budget": "60 s", "accel": "tcg", "sequences": sequences, "steps": sequences * 70,
            "ops": sequences * 9, "failing_sequences": findings.len(), "errors": 0,
            "duration_s": 60.0, "steps_per_s": 1.0, "sequences_per_min": 1.0,
            "median_shrink_s": null, "findings": findings, "complete": true,
            "incomplete": null, "first_error": null,
            "coverage": {"attach fexit target -> ok": sequences}, "unshrunk": []
        }))
        .unwrap()
    }

    fn finding(seed: &str, ids: (u32, u32)) -> Finding {
        use crate::explore::model::Func;
        use coexist_proto::BpfKind;
        let attach = |id, kind| Op::Attach {
            id,
            func: Func::Target,
            kind,
            fmod_ret: 0,
        };
        let ops = [
            Op::LivepatchLoad { func: Func::Target },
            attach(ids.0, BpfKind::Fentry),
            attach(ids.1, BpfKind::Fexit),
        ];
        let rec: Vec<OpRecord> = ops
            .iter()
            .map(|op| OpRecord {
                text: op.to_string(),
                op: *op,
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": 1, "invariant": "call_output", "sequence": rec, "replayed": rec,
            "at_op": 3, "step": {}, "expected": "e", "seen": "s", "splats": [], "seed": seed,
            "also_seeds": [], "count": 2, "original_len": 9, "shrink_replays": 10,
            "shrink_s": 5.0, "minimal": true, "reproduced": "3/3",
            "repro": "explore/repro-1.yaml", "console_log": "c.log"
        }))
        .unwrap()
    }

    #[test]
    fn shards_merge_into_one_report_with_each_finding_once() {
        let a = report(1, 100, vec![finding("0x1", (1, 2))]);
        // The same minimal sequence up to program ids: the same finding.
        let b = report(2, 50, vec![finding("0x2", (3, 5))]);
        let m = merge(&[
            (PathBuf::from("/r/a"), a.clone()),
            (PathBuf::from("/r/b"), b),
        ])
        .unwrap();
        assert_eq!(m.sequences, 150);
        assert_eq!(m.duration_s, 120.0);
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].count, 4);
        assert_eq!(m.findings[0].also_seeds, vec!["0x2".to_string()]);
        assert_eq!(m.findings[0].repro, "/r/a/explore/repro-1.yaml");
        assert_eq!(m.coverage["attach fexit target -> ok"], 150);
        assert_eq!(m.seed_hex, "0x1,0x2");
        assert!(m.complete);
        let mut other = a.clone();
        other.kernel_key = "other".into();
        let e = merge(&[(PathBuf::from("/r/a"), a), (PathBuf::from("/r/c"), other)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("are not shards of one explore"), "{e}");
    }
}
