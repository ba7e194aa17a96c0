//! `bench suite` figures, computed from a run's report.

use serde::{Deserialize, Serialize};

use super::grid::verdict_counts;
use super::RunReport;

/// min, median, max of a sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut v: Vec<f64>) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        Some(Spread {
            n: v.len(),
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        })
    }
}

fn spread_text(s: &Option<Spread>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) => format!(
            "min {:.2} s, median {:.2} s, max {:.2} s (n={})",
            s.min, s.median, s.max, s.n
        ),
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SuiteFigures {
    pub accel: Option<String>,
    pub boot_to_ready: Option<Spread>,
    /// Boot, steps and shutdown, per job.
    pub per_job: Option<Spread>,
    pub jobs: usize,
    pub workers: usize,
    pub matrix_s: f64,
    /// Time the cases spend on purpose (stress durations), summed.
    pub fixed_s: f64,
    /// The matrix without the fixed durations spread over the workers.
    pub matrix_without_fixed_s: f64,
    pub runner_cpu_s: f64,
    pub qemu_cpu_s: f64,
    pub prepare_s: f64,
    pub unexpected: usize,
    /// Verdict counts.
    pub totals: crate::record::Totals,
    /// Jobs whose guest was restored from a snapshot.
    pub restored: usize,
}

impl SuiteFigures {
    pub fn of(r: &RunReport) -> SuiteFigures {
        let t = &r.timings;
        let fixed: f64 = r.results.iter().map(|c| c.fixed_s).sum();
        let workers = t.jobs.max(1);
        SuiteFigures {
            accel: r.accel.clone(),
            boot_to_ready: Spread::of(r.results.iter().filter_map(|c| c.boot_s).collect()),
            per_job: Spread::of(r.results.iter().map(|c| c.total_s).collect()),
            jobs: r.results.len(),
            workers,
            matrix_s: t.matrix_s,
            fixed_s: fixed,
            matrix_without_fixed_s: t.matrix_s - fixed / workers as f64,
            runner_cpu_s: t.runner_cpu_s,
            qemu_cpu_s: t.qemu_cpu_s,
            prepare_s: t.prepare_s,
            unexpected: r.totals.unexpected,
            totals: r.totals.clone(),
            restored: r.results.iter().filter(|c| c.restored).count(),
        }
    }

    pub fn text(&self) -> String {
        format!(
            "accelerator: {}\n\
             boot-to-ready: {}\n\
             per case (boot + steps + shutdown): {}\n\
             whole matrix: {} cases with -j{} in {:.1} s; without the stress cases' fixed durations ({:.0} s over {} workers): {:.1} s\n\
             runner overhead: {:.2} s CPU in the runner vs {:.2} s CPU in its QEMU processes ({:.1} %)\n\
             prepare (kernels, fixtures, images): {:.1} s\n\
             unexpected outcomes: {}",
            self.accel.as_deref().unwrap_or("none"),
            spread_text(&self.boot_to_ready),
            spread_text(&self.per_job),
            self.jobs,
            self.workers,
            self.matrix_s,
            self.fixed_s,
            self.workers,
            self.matrix_without_fixed_s,
            self.runner_cpu_s,
            self.qemu_cpu_s,
            100.0 * self.runner_cpu_s / self.qemu_cpu_s.max(1e-9),
            self.prepare_s,
            self.unexpected
        )
    }
}

/// `bench suite`: both modes of one matrix, run one after the other on the
/// same machine, and how they compare.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Modes {
    pub fresh: SuiteFigures,
    pub snapshot: SuiteFigures,
    /// snapshot / fresh: per-job median, matrix without fixed durations.
    pub per_job_ratio: Option<f64>,
    pub matrix_ratio: f64,
    /// (case, variant) cells whose verdict differs between the modes.
    pub differing: Vec<String>,
}

impl Modes {
    pub fn of(fresh: &RunReport, snapshot: &RunReport) -> Modes {
        let (f, s) = (SuiteFigures::of(fresh), SuiteFigures::of(snapshot));
        let per_job_ratio = match (&f.per_job, &s.per_job) {
            (Some(a), Some(b)) if a.median > 0.0 => Some(b.median / a.median),
            _ => None,
        };
        let matrix_ratio = s.matrix_without_fixed_s / f.matrix_without_fixed_s.max(1e-9);
        let verdicts = |r: &RunReport| -> std::collections::BTreeMap<String, String> {
            r.results
                .iter()
                .map(|c| (c.id.clone(), c.decision.verdict.as_str().to_string()))
                .collect()
        };
        let (vf, vs) = (verdicts(fresh), verdicts(snapshot));
        let differing = vf
            .keys()
            .chain(vs.keys())
            .filter(|k| vf.get(*k) != vs.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        Modes {
            fresh: f,
            snapshot: s,
            per_job_ratio,
            matrix_ratio,
            differing,
        }
    }

    pub fn text(&self) -> String {
        let sp = |s: &Option<Spread>| {
            s.as_ref()
                .map(|s| format!("{:.2} s", s.median))
                .unwrap_or_else(|| "n/a".into())
        };
        let t = |f: &SuiteFigures| verdict_counts(&f.totals);
        format!(
            "{:<44} {:>16} {:>16} {:>8}\n\
             {:<44} {:>16} {:>16}\n\
             {:<44} {:>16} {:>16} {:>8}\n\
             {:<44} {:>14.1} s {:>14.1} s\n\
             {:<44} {:>14.1} s {:>14.1} s {:>8.2}\n\
             {:<44} {:>16} {:>16}\n\
             verdicts: fresh {}; snapshot {}; {}",
            "",
            "fresh boot",
            "snapshot",
            "ratio",
            "boot (or restore) to READY, median",
            sp(&self.fresh.boot_to_ready),
            sp(&self.snapshot.boot_to_ready),
            "per job (start, steps, shutdown), median",
            sp(&self.fresh.per_job),
            sp(&self.snapshot.per_job),
            self.per_job_ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "n/a".into()),
            "matrix",
            self.fresh.matrix_s,
            self.snapshot.matrix_s,
            "matrix without the fixed durations",
            self.fresh.matrix_without_fixed_s,
            self.snapshot.matrix_without_fixed_s,
            self.matrix_ratio,
            "jobs restored from a snapshot",
            self.fresh.restored,
            self.snapshot.restored,
            t(&self.fresh),
            t(&self.snapshot),
            if self.differing.is_empty() {
                "the same for every (case, variant)".to_string()
            } else {
                format!("DIFFERENT for {}", self.differing.join(", "))
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample;

    #[test]
    fn figures_of_a_report() {
        let mut r = sample();
        r.timings.matrix_s = 10.0;
        r.timings.jobs = 2;
        r.results[0].fixed_s = 4.0;
        let f = SuiteFigures::of(&r);
        assert_eq!(f.jobs, 4);
        assert_eq!(f.per_job.as_ref().unwrap().median, 2.0);
        assert_eq!(f.matrix_without_fixed_s, 8.0);
        assert_eq!(f.unexpected, 2);
        assert!(f
            .text()
            .contains("whole matrix: 4 cases with -j2 in 10.0 s"));
        assert_eq!(Spread::of(vec![]), None);
        assert_eq!(Spread::of(vec![3.0, 1.0, 2.0]).unwrap().median, 2.0);
    }

    #[test]
    fn two_modes_side_by_side() {
        let fresh = sample();
        let mut snap = sample();
        for c in &mut snap.results {
            c.total_s = 0.5;
            c.restored = true;
        }
        snap.timings.matrix_s = 2.0;
        let mut fresh = fresh;
        fresh.timings.matrix_s = 8.0;
        let m = Modes::of(&fresh, &snap);
        assert_eq!(m.per_job_ratio, Some(0.25));
        assert_eq!(m.matrix_ratio, 0.25);
        assert!(m.differing.is_empty());
        assert_eq!(m.snapshot.restored, 4);
        assert!(
            m.text().contains("the same for every (case, variant)"),
            "{}",
            m.text()
        );
        snap.results[0].decision.verdict = crate::record::Verdict::Fail;
        let m = Modes::of(&fresh, &snap);
        assert_eq!(m.differing, ["s/a/pass@v1"]);
        assert!(m.text().contains("DIFFERENT for s/a/pass@v1"));
    }
}
