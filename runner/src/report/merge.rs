//! `report merge`: shard reports back into the report of the whole run.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

use crate::record::{self, CaseResult};
use crate::record::{RunReport, Timings, VariantInfo, SCHEMA};

/// Merges shard reports into one, as if the run had not been sharded:
/// results in the order of the whole job list. The parts must be shards of
/// one run (the same plan) and, unless `allow_partial`, all of them, each
/// complete; with `allow_partial` the merge says what is missing and is
/// marked incomplete.
pub fn merge(parts: Vec<RunReport>, allow_partial: bool) -> Result<RunReport> {
    anyhow::ensure!(!parts.is_empty(), "no reports to merge");
    for p in &parts {
        anyhow::ensure!(
            p.schema == SCHEMA,
            "{}: unknown report schema '{}' (this is {SCHEMA})",
            p.run_id,
            p.schema
        );
    }
    let plan = parts[0].plan.clone();
    if let Some(p) = parts.iter().find(|p| p.plan != plan) {
        bail!(
            "the reports are not of one run: run {} has plan {} ({} jobs), run {} has plan {} ({} jobs)",
            parts[0].run_id,
            plan.key,
            plan.jobs,
            p.run_id,
            p.plan.key,
            p.plan.jobs
        );
    }
    let n = parts[0].shard.map(|s| s.1).unwrap_or(1);
    let mut seen: BTreeSet<usize> = BTreeSet::new();
    for p in &parts {
        let (i, m) = p.shard.unwrap_or((1, 1));
        anyhow::ensure!(
            m == n,
            "run {}: shard {i}/{m}, but another report is a shard of {n}",
            p.run_id
        );
        anyhow::ensure!(seen.insert(i), "shard {i}/{n} is given twice");
    }
    let mut problems: Vec<String> = Vec::new();
    let missing: Vec<usize> = (1..=n).filter(|i| !seen.contains(i)).collect();
    if !missing.is_empty() {
        problems.push(format!("shards {missing:?} of {n} are missing"));
    }
    for p in &parts {
        if !p.complete {
            let (i, _) = p.shard.unwrap_or((1, 1));
            problems.push(format!(
                "shard {i}/{n} is incomplete ({})",
                p.incomplete.as_deref().unwrap_or("no reason given")
            ));
        }
    }
    if !problems.is_empty() && !allow_partial {
        bail!(
            "{}; merge the complete set, or pass --allow-partial for a report marked incomplete",
            problems.join("; ")
        );
    }
    let mut results: Vec<CaseResult> = parts.iter().flat_map(|p| p.results.clone()).collect();
    results.sort_by_key(|r| r.job);
    let first = parts
        .iter()
        .min_by_key(|p| p.shard.map(|s| s.0).unwrap_or(1))
        .expect("not empty")
        .clone();
    let mut variants: Vec<VariantInfo> = Vec::new();
    for p in &parts {
        for v in &p.variants {
            if !variants.iter().any(|x| x.name == v.name) {
                variants.push(v.clone());
            }
        }
    }
    Ok(RunReport {
        schema: SCHEMA.into(),
        run_id: first.run_id.clone(),
        started: first.started.clone(),
        coexist_version: first.coexist_version.clone(),
        host: first.host.clone(),
        accel: first.accel.clone(),
        shard: None,
        jobs: plan.jobs,
        plan,
        complete: problems.is_empty(),
        incomplete: (!problems.is_empty()).then(|| problems.join("; ")),
        suites: first.suites.clone(),
        variants,
        totals: record::totals(&results),
        results,
        timings: Timings {
            prepare_s: parts
                .iter()
                .map(|p| p.timings.prepare_s)
                .fold(0.0, f64::max),
            matrix_s: parts.iter().map(|p| p.timings.matrix_s).fold(0.0, f64::max),
            jobs: parts.iter().map(|p| p.timings.jobs).sum(),
            runner_cpu_s: parts.iter().map(|p| p.timings.runner_cpu_s).sum(),
            qemu_cpu_s: parts.iter().map(|p| p.timings.qemu_cpu_s).sum(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{table, testdata::*};

    #[test]
    fn merge_of_shards_equals_the_whole() {
        let whole = sample();
        let jobs = whole.results.clone();
        let n = 3;
        let parts: Vec<RunReport> = (1..=n)
            .map(|i| {
                let mut p = whole.clone();
                p.shard = Some((i, n));
                p.results = jobs
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| k % n == i - 1)
                    .map(|(_, r)| r.clone())
                    .collect();
                p.totals = record::totals(&p.results);
                p
            })
            .collect();
        // In any order.
        let mut shuffled = parts.clone();
        shuffled.reverse();
        let m = merge(shuffled, false).unwrap();
        assert_eq!(
            serde_json::to_value(&m.results).unwrap(),
            serde_json::to_value(&whole.results).unwrap()
        );
        assert_eq!(m.totals, whole.totals);
        assert_eq!(table(&m), table(&whole));
        assert!(m.complete);
        let e = merge(parts[..2].to_vec(), false).unwrap_err().to_string();
        assert!(e.contains("shards [3] of 3 are missing"), "{e}");
        // Asked for, a partial merge says what is missing.
        let p = merge(parts[..2].to_vec(), true).unwrap();
        assert!(!p.complete);
        assert_eq!(p.incomplete.as_deref(), Some("shards [3] of 3 are missing"));
        assert_eq!(p.exit_code(), 2);
        // A shard that stopped early is not a complete part.
        let mut cut = parts.clone();
        cut[1].complete = false;
        cut[1].incomplete = Some("interrupted by signal 2".into());
        let e = merge(cut, false).unwrap_err().to_string();
        assert!(
            e.contains("shard 2/3 is incomplete (interrupted by signal 2)"),
            "{e}"
        );
        // Shards of another run do not merge.
        let mut other = parts.clone();
        other[2].plan.key = "another".into();
        let e = merge(other, true).unwrap_err().to_string();
        assert!(e.contains("not of one run"), "{e}");
        let mut twice = parts.clone();
        twice[2].shard = Some((1, 3));
        assert!(merge(twice, true)
            .unwrap_err()
            .to_string()
            .contains("given twice"));
    }
}
