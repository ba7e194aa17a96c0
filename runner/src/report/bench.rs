//! `bench suite` figures, computed from a run's report.

use serde::{Deserialize, Serialize};

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
}
