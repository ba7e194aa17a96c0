//! `report merge`: shard reports back into the report of the whole run.

use anyhow::Result;

use super::{RunReport, Timings, VariantInfo, SCHEMA};
use crate::run::{matrix, CaseResult};

/// Merges shard reports into one, as if the run had not been sharded:
/// results in the order of the full job list (shard slices interleave).
pub fn merge(mut parts: Vec<RunReport>) -> Result<RunReport> {
    anyhow::ensure!(!parts.is_empty(), "no reports to merge");
    for p in &parts {
        anyhow::ensure!(
            p.schema == SCHEMA,
            "{}: unknown report schema '{}'",
            p.run_id,
            p.schema
        );
    }
    parts.sort_by_key(|p| p.shard.map(|s| s.0).unwrap_or(0));
    let n = parts.len();
    // Shard I of N holds jobs I-1, I-1+N, ...: all N shards must be here.
    let shards: Vec<Option<(usize, usize)>> = parts.iter().map(|p| p.shard).collect();
    let complete = shards
        .iter()
        .enumerate()
        .all(|(k, s)| *s == Some((k + 1, n)));
    anyhow::ensure!(
        n == 1 || complete,
        "the reports are not shards 1..{n} of {n} of one run: {shards:?}"
    );
    let mut results = Vec::new();
    // Shard I holds jobs I-1, I-1+N, ...: take them round-robin.
    let mut iters: Vec<std::vec::IntoIter<CaseResult>> = parts
        .iter()
        .map(|p| p.results.clone().into_iter())
        .collect();
    'outer: loop {
        let mut any = false;
        for it in iters.iter_mut() {
            match it.next() {
                Some(r) => {
                    results.push(r);
                    any = true;
                }
                None => continue,
            }
        }
        if !any {
            break 'outer;
        }
    }
    let first = parts[0].clone();
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
        suites: first.suites.clone(),
        variants,
        totals: matrix::totals(&results),
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
                p.totals = crate::run::matrix::totals(&p.results);
                p
            })
            .collect();
        // In any order.
        let mut shuffled = parts.clone();
        shuffled.reverse();
        let m = merge(shuffled).unwrap();
        assert_eq!(
            serde_json::to_value(&m.results).unwrap(),
            serde_json::to_value(&whole.results).unwrap()
        );
        assert_eq!(m.totals, whole.totals);
        assert_eq!(table(&m), table(&whole));
        assert!(
            merge(parts[..2].to_vec()).is_err(),
            "an incomplete set of shards must not merge"
        );
    }
}
