//! `mutants.json` (schema `coexist-mutants/1`, documented in
//! docs/mutants.md), the terminal table, and merging shards.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::scope::{InScope, ScopeKind, Skipped};
use super::sites::{Mutant, Operator};

pub const SCHEMA: &str = "coexist-mutants/1";
pub const FILE: &str = "mutants.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An unexpected verdict or an explore finding.
    Killed,
    /// A hang, or a kernel that never reached READY: killed, listed apart.
    Timeout,
    /// Nothing noticed it.
    Survived,
    /// It does not compile.
    Unviable,
    /// The harness or the host failed (not the mutant's doing): no outcome.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Killed => "killed",
            Outcome::Timeout => "timeout",
            Outcome::Survived => "survived",
            Outcome::Unviable => "unviable",
            Outcome::Error => "error",
        }
    }
}

/// A case (or explore) that noticed a mutant, with its evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Killer {
    /// `suite/case@variant`, or `explore`.
    pub by: String,
    pub verdict: String,
    /// The first failing step: its index and kind.
    pub step: Option<String>,
    /// Expected and seen values, splat titles, errors.
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MutantResult {
    #[serde(flatten)]
    pub mutant: Mutant,
    pub outcome: Outcome,
    /// Seconds building it (apply, make vmlinux, restore).
    pub build_s: f64,
    /// Seconds running it (suites, then explore).
    pub run_s: f64,
    /// Which of the suites' cases ran on it (they stop at the first kill).
    pub cases_run: usize,
    pub killers: Vec<Killer>,
    /// Killed by the suites (false: by explore, or not killed).
    pub killed_by_suite: bool,
    /// The compiler's first error line (unviable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unviable: Option<String>,
    /// Why its modules and fixtures were rebuilt (its BTF, release or
    /// symbol versions differ from the base's), if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt_fixtures: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where its consoles and build log are, relative to the results dir.
    pub dir: String,
    /// The source around the site, unmutated: (line number, text).
    #[serde(default)]
    pub context: Vec<(usize, String)>,
    /// With `--coverage`: whether the baseline's cases reached the site
    /// (its lines on the coverage twin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<crate::coverage::Reach>,
}

/// Lines `line - n ..= line + n` of `src`, numbered.
pub fn context(src: &str, line: usize, n: usize) -> Vec<(usize, String)> {
    src.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_string()))
        .filter(|(k, _)| *k + n >= line && *k <= line + n)
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExploreSetting {
    pub budget_s: f64,
    pub seed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    pub cases: usize,
    pub as_expected: usize,
    pub explore_sequences: Option<u64>,
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MutantsReport {
    pub schema: String,
    pub run_id: String,
    pub started: String,
    pub variant: String,
    /// The base kernel every mutant is built from (the worker's).
    pub kernel_key: String,
    pub kernel_release: String,
    pub scope: ScopeKind,
    pub functions: Vec<InScope>,
    pub skipped: Vec<Skipped>,
    pub operators: Vec<Operator>,
    pub suites: Vec<String>,
    pub explore: Option<ExploreSetting>,
    /// `I/N` when sharded; merged reports list every shard.
    pub shards: Vec<String>,
    /// Mutants this run (or shard) was to run.
    pub planned: usize,
    pub baseline: Option<Baseline>,
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    pub mutants: Vec<MutantResult>,
}

/// One row of the table: a function, or the total.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Row {
    pub file: String,
    pub function: String,
    pub mutants: usize,
    pub killed: usize,
    pub timeout: usize,
    pub survived: usize,
    pub unviable: usize,
    pub error: usize,
    /// Killed by the suites alone (timeouts included).
    pub killed_by_suite: usize,
}

impl Row {
    fn add(&mut self, m: &MutantResult) {
        self.mutants += 1;
        match m.outcome {
            Outcome::Killed => self.killed += 1,
            Outcome::Timeout => self.timeout += 1,
            Outcome::Survived => self.survived += 1,
            Outcome::Unviable => self.unviable += 1,
            Outcome::Error => self.error += 1,
        }
        if m.killed_by_suite {
            self.killed_by_suite += 1;
        }
    }

    /// killed / (killed + survived), timeouts counted as killed.
    pub fn score(&self) -> Option<f64> {
        let k = self.killed + self.timeout;
        let d = k + self.survived;
        (d > 0).then(|| k as f64 / d as f64)
    }

    /// The suites' score alone: what explore killed counts as survived.
    pub fn suite_score(&self) -> Option<f64> {
        let d = self.killed + self.timeout + self.survived;
        (d > 0).then(|| self.killed_by_suite as f64 / d as f64)
    }
}

impl MutantsReport {
    /// Per function (in scope order), then the total.
    pub fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .functions
            .iter()
            .map(|f| Row {
                file: f.function.file.clone(),
                function: f.function.name.clone(),
                ..Row::default()
            })
            .collect();
        let mut total = Row {
            function: "total".into(),
            ..Row::default()
        };
        for m in &self.mutants {
            if let Some(r) = rows
                .iter_mut()
                .find(|r| r.file == m.mutant.file && r.function == m.mutant.function)
            {
                r.add(m);
            }
            total.add(m);
        }
        rows.retain(|r| r.mutants > 0);
        rows.push(total);
        rows
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let pct = |s: Option<f64>| {
            s.map(|s| format!("{:.0}%", s * 100.0))
                .unwrap_or("-".into())
        };
        let mut out = format!(
            "{:<44} {:>7} {:>6} {:>8} {:>8} {:>8} {:>5} {:>6} {:>6}\n",
            "function",
            "mutants",
            "killed",
            "timeout",
            "survived",
            "unviable",
            "error",
            "suite",
            "score"
        );
        for r in self.rows() {
            out.push_str(&format!(
                "{:<44} {:>7} {:>6} {:>8} {:>8} {:>8} {:>5} {:>6} {:>6}\n",
                r.function,
                r.mutants,
                r.killed,
                r.timeout,
                r.survived,
                r.unviable,
                r.error,
                pct(r.suite_score()),
                pct(r.score()),
            ));
        }
        out.push_str("score: (killed + timeout) / (killed + timeout + survived); suite: the same, counting only what the suites killed\n");
        let survivors: Vec<&MutantResult> = self
            .mutants
            .iter()
            .filter(|m| m.outcome == Outcome::Survived)
            .collect();
        if !survivors.is_empty() {
            out.push_str(&format!("{} survivor(s):\n", survivors.len()));
            for m in survivors {
                match &m.reach {
                    Some(r) => {
                        out.push_str(&format!("  {}  [{}]\n", m.mutant.list_line(), r.show()))
                    }
                    None => out.push_str(&format!("  {}\n", m.mutant.list_line())),
                }
            }
        }
        if !self.complete {
            out.push_str(&format!(
                "incomplete: {} of {} mutants ran ({})\n",
                self.mutants.len(),
                self.planned,
                self.incomplete.as_deref().unwrap_or("stopped")
            ));
        }
        out
    }
}

pub fn write(dir: &Path, r: &MutantsReport) -> Result<()> {
    crate::cache::write_atomic(&dir.join(FILE), &serde_json::to_vec_pretty(r)?)
}

pub fn load(path: &Path) -> Result<MutantsReport> {
    let b = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let r: MutantsReport = serde_json::from_slice(&b)
        .with_context(|| format!("{} is not a mutants report", path.display()))?;
    if r.schema != SCHEMA {
        bail!(
            "{}: schema {} (this runner reads {SCHEMA})",
            path.display(),
            r.schema
        );
    }
    Ok(r)
}

/// Merges the shards of one run (the same variant, scope, operators,
/// suites and explore setting); a mutant in two of them is refused.
pub fn merge(parts: &[(String, MutantsReport)]) -> Result<MutantsReport> {
    let Some((_, first)) = parts.first() else {
        bail!("nothing to merge");
    };
    let mut out = first.clone();
    out.mutants.clear();
    out.shards.clear();
    out.planned = 0;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut incomplete = Vec::new();
    for (name, p) in parts {
        let same = p.variant == first.variant
            && p.kernel_key == first.kernel_key
            && p.scope == first.scope
            && p.operators == first.operators
            && p.suites == first.suites
            && p.explore.as_ref().map(|e| (e.budget_s, e.seed))
                == first.explore.as_ref().map(|e| (e.budget_s, e.seed));
        if !same {
            bail!(
                "{name} is not a shard of the same run as {} (variant, kernel, scope, operators, suites and explore must match)",
                parts[0].0
            );
        }
        for m in &p.mutants {
            if let Some(other) = seen.insert(m.mutant.id.clone(), name.clone()) {
                bail!("mutant {} is in both {other} and {name}", m.mutant.id);
            }
            out.mutants.push(m.clone());
        }
        for f in &p.functions {
            if !out
                .functions
                .iter()
                .any(|g| g.function.file == f.function.file && g.function.name == f.function.name)
            {
                out.functions.push(f.clone());
            }
        }
        out.shards.extend(p.shards.iter().cloned());
        out.planned += p.planned;
        if !p.complete {
            incomplete.push(format!(
                "{name}: {}",
                p.incomplete.as_deref().unwrap_or("incomplete")
            ));
        }
    }
    out.mutants.sort_by(|a, b| {
        (&a.mutant.file, a.mutant.start, &a.mutant.id).cmp(&(
            &b.mutant.file,
            b.mutant.start,
            &b.mutant.id,
        ))
    });
    out.complete = incomplete.is_empty();
    out.incomplete = (!incomplete.is_empty()).then(|| incomplete.join("; "));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutants::sites::Function;

    fn result(id: &str, function: &str, outcome: Outcome, by_suite: bool) -> MutantResult {
        MutantResult {
            mutant: Mutant {
                id: id.into(),
                operator: Operator::IfTrue,
                file: "k.c".into(),
                function: function.into(),
                line: 1,
                col: 1,
                start: id.len(),
                end: id.len() + 1,
                original: "(c)".into(),
                replacement: "(1)".into(),
                diff: "-if (c) +if (1)".into(),
            },
            outcome,
            build_s: 1.0,
            run_s: 1.0,
            cases_run: 1,
            killers: Vec::new(),
            killed_by_suite: by_suite,
            reach: None,
            unviable: None,
            rebuilt_fixtures: None,
            error: None,
            dir: id.into(),
            context: Vec::new(),
        }
    }

    fn report(shard: &str, mutants: Vec<MutantResult>) -> MutantsReport {
        let f = |name: &str| InScope {
            function: Function {
                file: "k.c".into(),
                name: name.into(),
                first_line: 1,
                last_line: 9,
                start: 0,
                end: 0,
            },
            from: vec![crate::mutants::scope::Origin::Area],
        };
        MutantsReport {
            schema: SCHEMA.into(),
            run_id: "r".into(),
            started: "t".into(),
            variant: "share-ipmodify".into(),
            kernel_key: "k".into(),
            kernel_release: "6.1.192".into(),
            scope: ScopeKind::Default,
            functions: vec![f("f"), f("g")],
            skipped: Vec::new(),
            operators: Operator::ALL.to_vec(),
            suites: vec!["livepatch-bpf".into()],
            explore: Some(ExploreSetting {
                budget_s: 120.0,
                seed: 7,
            }),
            shards: vec![shard.into()],
            planned: mutants.len(),
            baseline: None,
            complete: true,
            incomplete: None,
            mutants,
        }
    }

    #[test]
    fn rows_score_timeouts_as_killed_and_explore_kills_apart() {
        let r = report(
            "1/1",
            vec![
                result("m1", "f", Outcome::Killed, true),
                result("m2", "f", Outcome::Killed, false),
                result("m3", "f", Outcome::Timeout, true),
                result("m4", "f", Outcome::Survived, false),
                result("m5", "g", Outcome::Unviable, false),
                result("m6", "g", Outcome::Error, false),
            ],
        );
        let rows = r.rows();
        assert_eq!(rows.len(), 3, "f, g and the total");
        assert_eq!(rows[0].score(), Some(0.75));
        assert_eq!(rows[0].suite_score(), Some(0.5));
        // Unviable and error mutants are not in the score.
        assert_eq!(rows[1].score(), None);
        assert_eq!(rows[2].mutants, 6);
        assert!(r.table().contains("1 survivor(s)"));
    }

    #[test]
    fn shards_merge_once_and_other_runs_are_refused() {
        let a = report("1/2", vec![result("m1", "f", Outcome::Killed, true)]);
        let mut b = report("2/2", vec![result("m2", "g", Outcome::Survived, false)]);
        b.complete = false;
        b.incomplete = Some("interrupted by signal 2".into());
        let m = merge(&[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        assert_eq!(m.mutants.len(), 2);
        assert_eq!(m.shards, ["1/2", "2/2"]);
        assert_eq!(m.planned, 2);
        assert!(!m.complete);
        assert!(m.incomplete.unwrap().contains("b: interrupted by signal 2"));
        let twice = merge(&[("a".into(), a.clone()), ("a2".into(), a.clone())]).unwrap_err();
        assert!(twice.to_string().contains("mutant m1 is in both a and a2"));
        let mut other = b.clone();
        other.explore = None;
        let e = merge(&[("a".into(), a), ("other".into(), other)]).unwrap_err();
        assert!(e.to_string().contains("not a shard of the same run"));
    }
}
