//! Stage: coverage. What lines and branches of the area under test a run
//! reached, and which jobs reached each line.
//!
//! In: a results directory whose jobs ran on a coverage twin
//! (`Variant::coverage_twin`): each job's gcov counts (a case's under
//! `coverage/<variant>/gcda/<job>/`, a sequence's beside its console log;
//! `guest::coverage` reads them back), the twin's [`Manifest`] (its build
//! directory holds the `.gcno` notes) and the area
//! (`kernel-config/area.yaml`). Out: a [`CoverageReport`]
//! (`coverage/<variant>/coverage.json`), per file and function: lines and
//! branches, how many were hit, per line the jobs that reached it; the
//! lcov tracefile and genhtml's annotated source (`html/index.html`); the
//! table of the area's functions by suites, by explore, and by both; what
//! changed between two runs ([`diff`]); whether a site was reached
//! ([`reach`], for mutants).
//!
//! One job's counts are read by gcov in `guest::gcov`, which explore's
//! guidance uses too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::area::Area;
use crate::build::manifest::Manifest;
use crate::events::{self, EventSink};
use crate::explore::ExploreReport;
use crate::guest::gcov;
use crate::record::RunReport;
use crate::run::case::gcda_path;
use crate::workspace::Workspace;

pub const SCHEMA: &str = "coexist-coverage/1";

/// What ran a job: a suite case or an explored sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    Case,
    Sequence,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// `suite/case@variant`, or `explore/<sequence>@variant`.
    pub id: String,
    pub kind: JobKind,
}

/// Of how many, how many were hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub hit: u32,
    pub total: u32,
}

impl Count {
    fn add(&mut self, hit: bool) {
        self.total += 1;
        self.hit += u32::from(hit);
    }

    pub fn show(&self) -> String {
        if self.total == 0 {
            return "-".into();
        }
        format!(
            "{}/{} {:.0}%",
            self.hit,
            self.total,
            100.0 * f64::from(self.hit) / f64::from(self.total)
        )
    }
}

/// One branch of a line: its count over every job, and how many jobs of
/// each kind took it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchCoverage {
    pub count: u64,
    pub cases: u32,
    pub sequences: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineCoverage {
    pub line: u32,
    /// Over every job.
    pub count: u64,
    /// The jobs that reached it (indices into [`CoverageReport::jobs`]).
    pub reached_by: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<BranchCoverage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCoverage {
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    /// One of the area's functions (`area.yaml`'s `functions:`).
    pub area: bool,
    pub lines: Count,
    pub branches: Count,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCoverage {
    /// Relative to the source tree: `kernel/bpf/trampoline.c`.
    pub file: String,
    pub lines: Count,
    pub branches: Count,
    pub functions: Vec<FunctionCoverage>,
    pub per_line: Vec<LineCoverage>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageReport {
    pub schema: String,
    pub variant: String,
    /// The coverage twin's kernel key.
    pub kernel_key: String,
    /// The twin's source tree: where each file's lines are.
    pub source_dir: PathBuf,
    pub profiled: Vec<String>,
    pub jobs: Vec<JobRef>,
    /// Jobs whose counts could not be read, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<(String, String)>,
    pub files: Vec<FileCoverage>,
}

/// A job whose counts are under `dir`.
pub struct JobCounts {
    pub job: JobRef,
    pub dir: PathBuf,
}

#[derive(Default)]
struct FileAcc {
    functions: BTreeMap<String, (u32, u32)>,
    lines: BTreeMap<u32, LineCoverage>,
}

/// The coverage of a suite run's coverage twins: for each variant of
/// `report` that is one, its jobs' counts read and added up, written under
/// [`variant_dir`]. Returns each report with its page.
pub fn of_run(
    ws: &Workspace,
    report: &RunReport,
    dir: &Path,
    events: &dyn EventSink,
) -> Result<Vec<(CoverageReport, PathBuf)>> {
    let mut out = Vec::new();
    for v in report.variants.iter().filter(|v| !v.profiled.is_empty()) {
        let jobs: Vec<JobCounts> = report
            .results
            .iter()
            .filter(|r| r.variant == v.name)
            .map(|r| JobCounts {
                job: JobRef {
                    id: r.id.clone(),
                    kind: JobKind::Case,
                },
                dir: gcda_path(dir, &r.suite, &r.case, &r.variant),
            })
            .collect();
        out.push(of_jobs(ws, (&v.name, &v.kernel_key), &jobs, dir, events)?);
    }
    Ok(out)
}

/// The coverage of `jobs` on coverage twin `(variant, kernel key)`: read
/// (gcov), added up, and written under [`variant_dir`] of `dir`.
pub fn of_jobs(
    ws: &Workspace,
    (variant, key): (&str, &str),
    jobs: &[JobCounts],
    dir: &Path,
    events: &dyn EventSink,
) -> Result<(CoverageReport, PathBuf)> {
    let area = Area::load(&ws.project.root)?;
    let m = Manifest::load(&ws.cache.dir("kernels").join(key))?;
    events::note(
        events,
        format!(
            "{variant}: reading the gcov counts of {} job(s)",
            jobs.len()
        ),
    );
    let r = analyse(&m, &area, jobs)?;
    let page = write(&variant_dir(dir, variant), &r)?;
    Ok((r, page))
}

/// The coverage of an explore run on a coverage twin: every sequence's
/// counts (`explore::exec::counts_dir`, shrink replays and reruns
/// included: they are explored sequences too), written under
/// [`variant_dir`].
pub fn of_explore(
    ws: &Workspace,
    report: &ExploreReport,
    dir: &Path,
    events: &dyn EventSink,
) -> Result<(CoverageReport, PathBuf)> {
    let mut dirs = Vec::new();
    counts_dirs(dir, &mut dirs)?;
    dirs.sort();
    let jobs: Vec<JobCounts> = dirs
        .into_iter()
        .map(|d| JobCounts {
            job: JobRef {
                id: format!(
                    "explore/{}@{}",
                    d.file_stem().unwrap_or_default().to_string_lossy(),
                    report.variant
                ),
                kind: JobKind::Sequence,
            },
            dir: d,
        })
        .collect();
    of_jobs(
        ws,
        (&report.variant, &report.kernel_key),
        &jobs,
        dir,
        events,
    )
}

/// The `*.counts` directories under `dir`.
fn counts_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let e = e?;
        if !e.file_type()?.is_dir() {
            continue;
        }
        let p = e.path();
        if p.extension().is_some_and(|x| x == "counts") {
            out.push(p);
        } else {
            counts_dirs(&p, out)?;
        }
    }
    Ok(())
}

/// Reads every job's counts (gcov) and adds them up per line.
pub fn analyse(m: &Manifest, area: &Area, jobs: &[JobCounts]) -> Result<CoverageReport> {
    if m.profiled.is_empty() {
        bail!(
            "{} ({}) is not a coverage twin: no file was compiled with profiling",
            m.variant,
            m.key
        );
    }
    let mut files: BTreeMap<String, FileAcc> = BTreeMap::new();
    let mut refs = Vec::new();
    let mut missing = Vec::new();
    for j in jobs {
        let counts = match gcov::job(&j.dir, &m.build_dir) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                missing.push((j.job.id.clone(), "no counts were read back".into()));
                continue;
            }
            Err(e) => {
                missing.push((j.job.id.clone(), format!("{e:#}")));
                continue;
            }
        };
        let idx = refs.len() as u32;
        refs.push(j.job.clone());
        for f in counts {
            let rel = gcov::source_relative(&f.file).to_string();
            if !gcov::profiled(&rel, &m.profiled) {
                continue;
            }
            let acc = files.entry(rel).or_default();
            for func in &f.functions {
                acc.functions
                    .entry(func.name.clone())
                    .or_insert((func.start_line, func.end_line));
            }
            for l in &f.lines {
                let e = acc
                    .lines
                    .entry(l.line_number)
                    .or_insert_with(|| LineCoverage {
                        line: l.line_number,
                        ..Default::default()
                    });
                e.count += l.count;
                if l.count > 0 && e.reached_by.last() != Some(&idx) {
                    e.reached_by.push(idx);
                }
                if e.branches.len() < l.branches.len() {
                    e.branches
                        .resize(l.branches.len(), BranchCoverage::default());
                }
                for (b, g) in e.branches.iter_mut().zip(&l.branches) {
                    b.count += g.count;
                    if g.count > 0 {
                        match j.job.kind {
                            JobKind::Case => b.cases += 1,
                            JobKind::Sequence => b.sequences += 1,
                        }
                    }
                }
            }
        }
    }
    let area_names: Vec<&str> = area
        .functions
        .iter()
        .flat_map(|(_, alts)| alts.iter().map(String::as_str))
        .collect();
    let mut report = CoverageReport {
        schema: SCHEMA.into(),
        variant: m.variant.clone(),
        kernel_key: m.key.clone(),
        source_dir: m.source_dir.clone(),
        profiled: m.profiled.clone(),
        jobs: refs,
        missing,
        files: Vec::new(),
    };
    for (file, acc) in files {
        let per_line: Vec<LineCoverage> = acc.lines.into_values().collect();
        let mut functions: Vec<FunctionCoverage> = acc
            .functions
            .into_iter()
            .map(|(name, (start_line, end_line))| FunctionCoverage {
                area: area_names.contains(&name.as_str()),
                name,
                start_line,
                end_line,
                lines: Count::default(),
                branches: Count::default(),
            })
            .collect();
        functions.sort_by_key(|f| f.start_line);
        report.files.push(FileCoverage {
            file,
            lines: Count::default(),
            branches: Count::default(),
            functions,
            per_line,
        });
    }
    recount(&mut report);
    Ok(report)
}

/// The hit/total figures of every file and function, from its lines.
fn recount(r: &mut CoverageReport) {
    for f in &mut r.files {
        let (mut lines, mut branches) = (Count::default(), Count::default());
        for l in &f.per_line {
            lines.add(l.count > 0);
            for b in &l.branches {
                branches.add(b.count > 0);
            }
        }
        f.lines = lines;
        f.branches = branches;
        for func in &mut f.functions {
            let (l, b) = function_counts(&f.per_line, func, |_, _| true);
            func.lines = l;
            func.branches = b;
        }
    }
}

/// A function's (lines, branches), counting a line or a branch as hit
/// when `hit(line, branch)` says so (`branch` None: the line itself).
fn function_counts(
    lines: &[LineCoverage],
    f: &FunctionCoverage,
    hit: impl Fn(&LineCoverage, Option<&BranchCoverage>) -> bool,
) -> (Count, Count) {
    let (mut lc, mut bc) = (Count::default(), Count::default());
    for l in lines
        .iter()
        .filter(|l| l.line >= f.start_line && l.line <= f.end_line)
    {
        lc.add(l.count > 0 && hit(l, None));
        for b in &l.branches {
            bc.add(b.count > 0 && hit(l, Some(b)));
        }
    }
    (lc, bc)
}

/// Adds up reports of the same coverage twin (a suite run's and an explore
/// run's): their jobs side by side, their counts summed.
pub fn merge(reports: Vec<CoverageReport>) -> Result<CoverageReport> {
    let mut it = reports.into_iter();
    let Some(mut out) = it.next() else {
        bail!("no coverage report to merge");
    };
    for r in it {
        if r.kernel_key != out.kernel_key {
            bail!(
                "coverage of different kernels: {} ({}) and {} ({}); each kernel's coverage stands alone",
                out.variant,
                out.kernel_key,
                r.variant,
                r.kernel_key
            );
        }
        let base = out.jobs.len() as u32;
        out.jobs.extend(r.jobs);
        out.missing.extend(r.missing);
        for f in r.files {
            let Some(of) = out.files.iter_mut().find(|o| o.file == f.file) else {
                let mut f = f;
                for l in &mut f.per_line {
                    l.reached_by.iter_mut().for_each(|i| *i += base);
                }
                out.files.push(f);
                continue;
            };
            for func in f.functions {
                if !of.functions.iter().any(|o| o.name == func.name) {
                    of.functions.push(func);
                }
            }
            of.functions.sort_by_key(|f| f.start_line);
            for l in f.per_line {
                match of.per_line.binary_search_by_key(&l.line, |o| o.line) {
                    Ok(i) => {
                        let o = &mut of.per_line[i];
                        o.count += l.count;
                        o.reached_by.extend(l.reached_by.iter().map(|i| i + base));
                        if o.branches.len() < l.branches.len() {
                            o.branches
                                .resize(l.branches.len(), BranchCoverage::default());
                        }
                        for (a, b) in o.branches.iter_mut().zip(&l.branches) {
                            a.count += b.count;
                            a.cases += b.cases;
                            a.sequences += b.sequences;
                        }
                    }
                    Err(i) => {
                        let mut l = l;
                        l.reached_by.iter_mut().for_each(|i| *i += base);
                        of.per_line.insert(i, l);
                    }
                }
            }
        }
    }
    out.files.sort_by(|a, b| a.file.cmp(&b.file));
    recount(&mut out);
    Ok(out)
}

/// The area's functions, one row each: lines and branches reached by the
/// suites' cases, by explored sequences, and by both.
pub fn table(r: &CoverageReport) -> String {
    let kinds = |k: JobKind| r.jobs.iter().any(|j| j.kind == k);
    let (cases, sequences) = (kinds(JobKind::Case), kinds(JobKind::Sequence));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "coverage of {} ({}): {} case(s), {} sequence(s)",
        r.variant,
        r.kernel_key,
        r.jobs.iter().filter(|j| j.kind == JobKind::Case).count(),
        r.jobs
            .iter()
            .filter(|j| j.kind == JobKind::Sequence)
            .count()
    );
    let _ = writeln!(
        s,
        "{:<52} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "function",
        "lines suites",
        "lines explore",
        "lines both",
        "br. suites",
        "br. explore",
        "br. both"
    );
    for f in &r.files {
        for func in f.functions.iter().filter(|f| f.area) {
            let by = |kind: Option<JobKind>| {
                function_counts(&f.per_line, func, |l, b| match (kind, b) {
                    (None, _) => true,
                    (Some(JobKind::Case), Some(b)) => b.cases > 0,
                    (Some(JobKind::Sequence), Some(b)) => b.sequences > 0,
                    (Some(k), None) => l
                        .reached_by
                        .iter()
                        .any(|&i| r.jobs.get(i as usize).is_some_and(|j| j.kind == k)),
                })
            };
            let (sl, sb) = by(Some(JobKind::Case));
            let (el, eb) = by(Some(JobKind::Sequence));
            let (al, ab) = by(None);
            let show = |c: Count, present: bool| if present { c.show() } else { "-".into() };
            let _ = writeln!(
                s,
                "{:<52} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
                format!(
                    "{}:{}",
                    f.file.rsplit('/').next().unwrap_or(&f.file),
                    func.name
                ),
                show(sl, cases),
                show(el, sequences),
                al.show(),
                show(sb, cases),
                show(eb, sequences),
                ab.show()
            );
        }
    }
    for (job, why) in &r.missing {
        let _ = writeln!(s, "no counts for {job}: {why}");
    }
    s
}

/// What changed from `old` to `new` (two runs' coverage, of any kernels):
/// per function of the area, lines and branches hit before and after, and
/// the lines newly reached and no longer reached, by file.
pub fn diff(old: &CoverageReport, new: &CoverageReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "coverage: {} ({}) -> {} ({})",
        old.variant, old.kernel_key, new.variant, new.kernel_key
    );
    let reached = |r: &CoverageReport| -> BTreeMap<(String, u32), ()> {
        r.files
            .iter()
            .flat_map(|f| {
                f.per_line
                    .iter()
                    .filter(|l| l.count > 0)
                    .map(move |l| ((f.file.clone(), l.line), ()))
            })
            .collect()
    };
    let (a, b) = (reached(old), reached(new));
    let gained: Vec<&(String, u32)> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    let lost: Vec<&(String, u32)> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    for f in &new.files {
        for func in f.functions.iter().filter(|f| f.area) {
            let before = old
                .files
                .iter()
                .find(|o| o.file == f.file)
                .and_then(|o| o.functions.iter().find(|g| g.name == func.name));
            let (bl, bb) = before.map_or(("-".into(), "-".into()), |g| {
                (g.lines.show(), g.branches.show())
            });
            if before.is_some_and(|g| g.lines == func.lines && g.branches == func.branches) {
                continue;
            }
            let _ = writeln!(
                s,
                "  {}:{}: lines {bl} -> {}, branches {bb} -> {}",
                f.file.rsplit('/').next().unwrap_or(&f.file),
                func.name,
                func.lines.show(),
                func.branches.show()
            );
        }
    }
    for (what, lines) in [("gained", &gained), ("lost", &lost)] {
        let mut by_file: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for (f, l) in lines.iter() {
            by_file.entry(f.as_str()).or_default().push(*l);
        }
        let _ = writeln!(s, "  lines {what}: {}", lines.len());
        for (f, ls) in by_file {
            let shown: Vec<String> = ls.iter().take(20).map(|l| l.to_string()).collect();
            let _ = writeln!(
                s,
                "    {f}: {}{}",
                shown.join(" "),
                if ls.len() > 20 { " ..." } else { "" }
            );
        }
    }
    s
}

/// Whether the jobs of a report reached a site (a mutant's lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// No job executed any of its lines: a missing test.
    NotReached,
    /// Reached by this many cases and sequences: if the site's mutant
    /// survived, nothing checks what it changed (a missing check).
    Reached { cases: u32, sequences: u32 },
    /// gcov has no executable line there (a declaration, a brace): the
    /// counts cannot say.
    NoCode,
}

impl Reach {
    pub fn show(&self) -> String {
        match self {
            Reach::NotReached => "not reached".into(),
            Reach::Reached { cases, sequences } => {
                let mut s = format!("reached by {cases} case(s)");
                if *sequences > 0 {
                    s.push_str(&format!(" and {sequences} sequence(s)"));
                }
                s.push_str(", none noticed");
                s
            }
            Reach::NoCode => "no line gcov counts".into(),
        }
    }
}

/// Whether `file`'s lines `first..=last` were reached, and by how many
/// cases and sequences (jobs that reached any of them).
pub fn reach(r: &CoverageReport, file: &str, first: u32, last: u32) -> Reach {
    let Some(f) = r.files.iter().find(|f| f.file == file) else {
        return Reach::NoCode;
    };
    let lines: Vec<&LineCoverage> = f
        .per_line
        .iter()
        .filter(|l| (first..=last).contains(&l.line))
        .collect();
    if lines.is_empty() {
        return Reach::NoCode;
    }
    let mut jobs: Vec<u32> = lines
        .iter()
        .flat_map(|l| l.reached_by.iter().copied())
        .collect();
    jobs.sort_unstable();
    jobs.dedup();
    if jobs.is_empty() {
        return Reach::NotReached;
    }
    let count = |k: JobKind| {
        jobs.iter()
            .filter(|&&i| r.jobs.get(i as usize).is_some_and(|j| j.kind == k))
            .count() as u32
    };
    Reach::Reached {
        cases: count(JobKind::Case),
        sequences: count(JobKind::Sequence),
    }
}

/// The lcov tracefile of `r` (what genhtml reads), with each file's path
/// in the twin's source tree.
pub fn lcov_info(r: &CoverageReport) -> String {
    let mut s = String::new();
    for f in &r.files {
        let _ = writeln!(s, "TN:\nSF:{}", r.source_dir.join(&f.file).display());
        for func in &f.functions {
            let _ = writeln!(s, "FN:{},{}", func.start_line, func.name);
        }
        let mut fnh = 0;
        for func in &f.functions {
            let count = f
                .per_line
                .iter()
                .find(|l| l.line == func.start_line)
                .map(|l| l.count)
                .unwrap_or(0);
            fnh += usize::from(count > 0);
            let _ = writeln!(s, "FNDA:{count},{}", func.name);
        }
        let _ = writeln!(s, "FNF:{}\nFNH:{fnh}", f.functions.len());
        for l in &f.per_line {
            for (i, b) in l.branches.iter().enumerate() {
                let taken = if l.count == 0 {
                    "-".to_string()
                } else {
                    b.count.to_string()
                };
                let _ = writeln!(s, "BRDA:{},0,{i},{taken}", l.line);
            }
        }
        let _ = writeln!(s, "BRF:{}\nBRH:{}", f.branches.total, f.branches.hit);
        for l in &f.per_line {
            let _ = writeln!(s, "DA:{},{}", l.line, l.count);
        }
        let _ = writeln!(s, "LF:{}\nLH:{}\nend_of_record", f.lines.total, f.lines.hit);
    }
    s
}

/// Where a results directory keeps a variant's coverage:
/// `coverage/<variant>/` (coverage.json, coverage.info, html/).
pub fn variant_dir(results_dir: &Path, variant: &str) -> PathBuf {
    results_dir.join("coverage").join(variant)
}

/// Writes `coverage.json`, `coverage.info` (lcov's tracefile) and
/// genhtml's annotated source (`html/`) into `cov`. Returns the page.
pub fn write(cov: &Path, r: &CoverageReport) -> Result<PathBuf> {
    std::fs::create_dir_all(cov).with_context(|| format!("cannot create {}", cov.display()))?;
    let json = cov.join("coverage.json");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let info = cov.join("coverage.info");
    std::fs::write(&info, lcov_info(r))?;
    let html = cov.join("html");
    let out = Command::new("genhtml")
        .args(["--quiet", "--branch-coverage", "--legend"])
        .arg("--title")
        .arg(format!(
            "{} ({}), coexist coverage",
            r.variant, r.kernel_key
        ))
        .arg("--prefix")
        .arg(&r.source_dir)
        .arg("--output-directory")
        .arg(&html)
        .arg(&info)
        .output()
        .context("cannot run genhtml (Debian package lcov)")?;
    if !out.status.success() {
        bail!(
            "genhtml failed on {}: {}",
            info.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(html.join("index.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(line: u32, count: u64, by: &[u32], br: &[(u64, u32, u32)]) -> LineCoverage {
        LineCoverage {
            line,
            count,
            reached_by: by.to_vec(),
            branches: br
                .iter()
                .map(|&(count, cases, sequences)| BranchCoverage {
                    count,
                    cases,
                    sequences,
                })
                .collect(),
        }
    }

    fn report(kind: JobKind, lines: Vec<LineCoverage>) -> CoverageReport {
        let mut r = CoverageReport {
            schema: SCHEMA.into(),
            variant: "v".into(),
            kernel_key: "k".into(),
            source_dir: PathBuf::from("/src"),
            profiled: vec!["kernel/bpf/trampoline.c".into()],
            jobs: vec![JobRef {
                id: "j".into(),
                kind,
            }],
            missing: vec![],
            files: vec![FileCoverage {
                file: "kernel/bpf/trampoline.c".into(),
                lines: Count::default(),
                branches: Count::default(),
                functions: vec![FunctionCoverage {
                    name: "f".into(),
                    start_line: 10,
                    end_line: 20,
                    area: true,
                    lines: Count::default(),
                    branches: Count::default(),
                }],
                per_line: lines,
            }],
        };
        recount(&mut r);
        r
    }

    #[test]
    fn suites_and_explore_add_up_and_the_table_says_which_reached_what() {
        let suites = report(
            JobKind::Case,
            vec![
                line(10, 1, &[0], &[(1, 1, 0), (0, 0, 0)]),
                line(12, 0, &[], &[]),
                line(14, 0, &[], &[]),
            ],
        );
        assert_eq!(
            suites.files[0].functions[0].lines,
            Count { hit: 1, total: 3 }
        );
        assert_eq!(
            suites.files[0].functions[0].branches,
            Count { hit: 1, total: 2 }
        );
        let explore = report(
            JobKind::Sequence,
            vec![
                line(10, 2, &[0], &[(0, 0, 0), (2, 0, 1)]),
                line(12, 2, &[0], &[]),
                line(30, 1, &[0], &[]),
            ],
        );
        let both = merge(vec![suites, explore]).unwrap();
        let f = &both.files[0];
        assert_eq!(f.functions[0].lines, Count { hit: 2, total: 3 });
        assert_eq!(f.functions[0].branches, Count { hit: 2, total: 2 });
        assert_eq!(f.per_line[0].reached_by, vec![0, 1]);
        assert_eq!(f.per_line[1].reached_by, vec![1]);
        assert_eq!(f.lines, Count { hit: 3, total: 4 });
        let t = table(&both);
        let row = t.lines().find(|l| l.starts_with("trampoline.c:f")).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        // lines: suites 1/3, explore 2/3, both 2/3; branches 1/2, 1/2, 2/2.
        assert_eq!(
            cols[1..].join(" "),
            "1/3 33% 2/3 67% 2/3 67% 1/2 50% 1/2 50% 2/2 100%"
        );
        let mut other = report(JobKind::Case, vec![]);
        other.kernel_key = "other".into();
        assert!(merge(vec![both, other]).is_err());
    }

    #[test]
    fn a_site_is_reached_not_reached_or_has_no_counted_line() {
        let r = report(
            JobKind::Case,
            vec![line(10, 1, &[0], &[]), line(12, 0, &[], &[])],
        );
        let f = "kernel/bpf/trampoline.c";
        assert_eq!(
            reach(&r, f, 10, 10),
            Reach::Reached {
                cases: 1,
                sequences: 0
            }
        );
        assert_eq!(reach(&r, f, 11, 12), Reach::NotReached);
        assert_eq!(reach(&r, f, 13, 13), Reach::NoCode);
        assert_eq!(reach(&r, "other.c", 10, 10), Reach::NoCode);
        assert_eq!(
            reach(&r, f, 10, 12).show(),
            "reached by 1 case(s), none noticed"
        );
    }

    #[test]
    fn a_diff_names_the_functions_that_changed_and_the_lines_gained_and_lost() {
        let old = report(
            JobKind::Case,
            vec![line(10, 1, &[0], &[]), line(12, 0, &[], &[])],
        );
        let new = report(
            JobKind::Case,
            vec![line(10, 0, &[], &[]), line(12, 3, &[0], &[])],
        );
        let d = diff(&old, &new);
        assert!(
            d.contains("lines gained: 1\n    kernel/bpf/trampoline.c: 12"),
            "{d}"
        );
        assert!(
            d.contains("lines lost: 1\n    kernel/bpf/trampoline.c: 10"),
            "{d}"
        );
        // The same hit count: f is not listed.
        assert!(!d.contains("trampoline.c:f:"), "{d}");
        let more = report(
            JobKind::Case,
            vec![line(10, 1, &[0], &[]), line(12, 1, &[0], &[])],
        );
        let d = diff(&old, &more);
        assert!(
            d.contains("trampoline.c:f: lines 1/2 50% -> 2/2 100%"),
            "{d}"
        );
    }

    #[test]
    fn the_lcov_tracefile_names_each_line_and_branch() {
        let r = report(
            JobKind::Case,
            vec![
                line(10, 3, &[0], &[(3, 1, 0), (0, 0, 0)]),
                line(12, 0, &[], &[(0, 0, 0)]),
            ],
        );
        let info = lcov_info(&r);
        for want in [
            "SF:/src/kernel/bpf/trampoline.c",
            "FN:10,f",
            "FNDA:3,f",
            "BRDA:10,0,0,3",
            "BRDA:10,0,1,0",
            "BRDA:12,0,0,-",
            "DA:10,3",
            "DA:12,0",
            "LF:2\nLH:1",
            "BRF:3\nBRH:1",
        ] {
            assert!(info.contains(want), "{want} in\n{info}");
        }
    }
}
