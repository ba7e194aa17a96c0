//! `report diff`: what changed between two runs, or between two variants
//! of one run (what a patch changes). Per (case, variant): newly failing
//! (regressions), fixed, still failing, new and removed cases, changed
//! expected outcomes, and timing changes beyond noise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::grid::Grid;
use super::{expected_text, shown, RunReport};
use crate::record::CaseResult;

/// A timing change counts when the new time is at least this many times
/// the old one (or the old one that many times the new one)...
pub const SLOWER_RATIO: f64 = 1.5;
/// ...and differs by at least this many seconds.
pub const SLOWER_MIN_S: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// The expected outcome before, not now.
    Regression,
    /// Not the expected outcome before, the expected one now.
    Fixed,
    /// Not the expected outcome, before and now.
    StillFailing,
    /// What the suite expects changed (the verdicts may be the same).
    ExpectationChanged,
    /// Only in the new run.
    New,
    /// Only in the old run.
    Removed,
    Slower,
    Faster,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Regression => "REGRESSION",
            Change::Fixed => "fixed",
            Change::StillFailing => "still failing",
            Change::ExpectationChanged => "expectation changed",
            Change::New => "new",
            Change::Removed => "removed",
            Change::Slower => "slower",
            Change::Faster => "faster",
        }
    }
}

/// One side of a row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub verdict: String,
    pub as_expected: bool,
    pub expected: String,
    pub total_s: f64,
    pub summary: String,
}

impl Cell {
    fn of(r: &CaseResult) -> Cell {
        Cell {
            verdict: r.decision.verdict.as_str().into(),
            as_expected: r.decision.as_expected,
            expected: expected_text(&r.expected),
            total_s: r.total_s,
            summary: r.decision.summary.clone(),
        }
    }

    fn short(&self) -> String {
        format!(
            "{}{} {:.1}s",
            self.verdict,
            if self.as_expected { "" } else { "!" },
            self.total_s
        )
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    /// `suite/case@variant` (runs), or `suite/case` (variants).
    pub key: String,
    pub changes: Vec<Change>,
    pub old: Option<Cell>,
    pub new: Option<Cell>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diff {
    /// What is compared: run ids, or `run:variant`.
    pub old: String,
    pub new: String,
    /// Rows with at least one change, regressions first.
    pub rows: Vec<Row>,
    /// How many rows of each change.
    pub counts: BTreeMap<String, usize>,
    /// Cells compared (present on both sides).
    pub compared: usize,
    /// Variants of both runs whose kernel is another one: a new source
    /// release, a tracked Debian package that moved to a newer ABI, a
    /// changed series or configuration (two runs only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<KernelChange>,
}

/// A variant whose kernel differs between the two runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelChange {
    pub variant: String,
    /// "6.1.192 (Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3),
    /// key b06c88410bba1ab3".
    pub old: String,
    pub new: String,
}

/// The kernels that changed between two runs, by variant.
pub fn kernels(old: &RunReport, new: &RunReport) -> Vec<KernelChange> {
    let show = |v: &crate::record::VariantInfo| {
        let what = match &v.prebuilt {
            Some(p) if !v.kernel_version.contains(&p.package) => {
                format!("{} ({})", v.kernel_version, p.origin())
            }
            _ => v.kernel_version.clone(),
        };
        format!("{what}, key {}", v.kernel_key)
    };
    new.variants
        .iter()
        .filter_map(|n| {
            let o = old.variants.iter().find(|o| o.name == n.name)?;
            (o.kernel_key != n.kernel_key).then(|| KernelChange {
                variant: n.name.clone(),
                old: show(o),
                new: show(n),
            })
        })
        .collect()
}

impl Diff {
    pub fn regressions(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.changes.contains(&Change::Regression))
            .count()
    }

    /// 1 when something regressed, else 0.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.regressions() > 0)
    }
}

fn compare(
    old_label: String,
    new_label: String,
    old: BTreeMap<String, Cell>,
    new: BTreeMap<String, Cell>,
) -> Diff {
    let mut rows = Vec::new();
    let mut compared = 0;
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let (o, n) = (old.get(k), new.get(k));
        let mut changes = Vec::new();
        match (o, n) {
            (Some(o), Some(n)) => {
                compared += 1;
                match (o.as_expected, n.as_expected) {
                    (true, false) => changes.push(Change::Regression),
                    (false, true) => changes.push(Change::Fixed),
                    (false, false) => changes.push(Change::StillFailing),
                    (true, true) => {}
                }
                if o.expected != n.expected {
                    changes.push(Change::ExpectationChanged);
                }
                let (a, b) = (o.total_s, n.total_s);
                if b >= a * SLOWER_RATIO && b - a >= SLOWER_MIN_S {
                    changes.push(Change::Slower);
                } else if a >= b * SLOWER_RATIO && a - b >= SLOWER_MIN_S {
                    changes.push(Change::Faster);
                }
            }
            (None, Some(_)) => changes.push(Change::New),
            (Some(_), None) => changes.push(Change::Removed),
            (None, None) => {}
        }
        if !changes.is_empty() {
            rows.push(Row {
                key: k.clone(),
                changes,
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    }
    rows.sort_by(|a, b| a.changes[0].cmp(&b.changes[0]).then(a.key.cmp(&b.key)));
    let mut counts = BTreeMap::new();
    for r in &rows {
        for c in &r.changes {
            *counts.entry(c.as_str().to_string()).or_insert(0) += 1;
        }
    }
    Diff {
        old: old_label,
        new: new_label,
        rows,
        counts,
        compared,
        kernels: Vec::new(),
    }
}

/// Two runs (or merged shard reports), cell by cell.
pub fn runs(old: &RunReport, new: &RunReport) -> Diff {
    let cells = |r: &RunReport| -> BTreeMap<String, Cell> {
        r.results
            .iter()
            .map(|c| (c.id.clone(), Cell::of(c)))
            .collect()
    };
    Diff {
        kernels: kernels(old, new),
        ..compare(
            old.run_id.clone(),
            new.run_id.clone(),
            cells(old),
            cells(new),
        )
    }
}

/// Two variants of one run, case by case: what `new` changes from `old`.
pub fn variants(r: &RunReport, old: &str, new: &str) -> anyhow::Result<Diff> {
    let grid = Grid::of(&r.results);
    let cells = |v: &str| -> anyhow::Result<BTreeMap<String, Cell>> {
        let Some(i) = grid.column(v) else {
            anyhow::bail!(
                "--variants: run {} has no results for variant '{v}' (it has: {})",
                r.run_id,
                grid.variants.join(", ")
            );
        };
        Ok(grid
            .column_cells(i)
            .map(|(key, c)| (key.to_string(), Cell::of(c)))
            .collect())
    };
    Ok(compare(
        format!("{}:{old}", r.run_id),
        format!("{}:{new}", r.run_id),
        cells(old)?,
        cells(new)?,
    ))
}

fn side(c: &Option<Cell>) -> String {
    c.as_ref().map(Cell::short).unwrap_or_else(|| "-".into())
}

fn changes_text(r: &Row) -> String {
    r.changes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts_text(d: &Diff) -> String {
    if d.counts.is_empty() {
        return "no changes".into();
    }
    d.counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// For the terminal.
pub fn text(d: &Diff) -> String {
    let mut s = format!(
        "{} -> {}: {} cell(s) compared; {}\n",
        d.old,
        d.new,
        d.compared,
        counts_text(d)
    );
    for k in &d.kernels {
        let _ = writeln!(s, "kernel of {}: {} -> {}", k.variant, k.old, k.new);
    }
    if d.rows.is_empty() {
        return s;
    }
    let w = d.rows.iter().map(|r| r.key.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(s, "\n{:<w$}  {:<16} {:<16} CHANGE", "CASE", "OLD", "NEW");
    for r in &d.rows {
        let _ = writeln!(
            s,
            "{:<w$}  {:<16} {:<16} {}",
            r.key,
            side(&r.old),
            side(&r.new),
            changes_text(r)
        );
        if r.changes.contains(&Change::Regression) {
            if let Some(n) = &r.new {
                let _ = writeln!(s, "{:<w$}  now: {}", "", shown(&n.summary));
            }
        }
        if r.changes.contains(&Change::ExpectationChanged) {
            if let (Some(o), Some(n)) = (&r.old, &r.new) {
                let _ = writeln!(s, "{:<w$}  expected: {} -> {}", "", o.expected, n.expected);
            }
        }
    }
    s
}

fn md_escape(s: &str) -> String {
    shown(s).replace('|', "\\|").replace('\n', " ")
}

/// For a CI comment or job summary.
pub fn markdown(d: &Diff) -> String {
    let mut s = format!(
        "### coexist: `{}` -> `{}`\n\n{} cell(s) compared; {}.\n",
        d.old,
        d.new,
        d.compared,
        counts_text(d)
    );
    if !d.kernels.is_empty() {
        s.push_str("\n| variant | old kernel | new kernel |\n|---|---|---|\n");
        for k in &d.kernels {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} |",
                k.variant,
                md_escape(&k.old),
                md_escape(&k.new)
            );
        }
    }
    if d.regressions() > 0 {
        let _ = writeln!(s, "\n**{} regression(s).**", d.regressions());
    }
    if d.rows.is_empty() {
        return s;
    }
    s.push_str("\n| case | old | new | change | now |\n|---|---|---|---|---|\n");
    for r in &d.rows {
        let now = match (&r.new, r.changes.contains(&Change::Regression)) {
            (Some(n), true) => md_escape(&n.summary),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} |",
            r.key,
            side(&r.old),
            side(&r.new),
            changes_text(r),
            now
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Expected, Verdict};
    use crate::report::testdata::sample;

    fn find<'a>(d: &'a Diff, key: &str) -> &'a Row {
        d.rows
            .iter()
            .find(|r| r.key == key)
            .unwrap_or_else(|| panic!("no row {key}: {d:#?}"))
    }

    #[test]
    fn a_variant_whose_tracked_package_moved_is_a_kernel_change() {
        let mut old = sample();
        old.variants = vec![crate::record::VariantInfo {
            name: "v1".into(),
            kernel_key: "0000000000000001".into(),
            kernel_version: "6.1.192 (Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3)".into(),
            ..Default::default()
        }];
        let mut new = old.clone();
        assert!(runs(&old, &new).kernels.is_empty(), "the same kernels");
        let v = &mut new.variants[0];
        v.kernel_key = "0000000000000002".into();
        v.kernel_version = "6.1.200 (Debian linux-image-6.1.0-58-amd64-unsigned 6.1.200-1)".into();
        let d = runs(&old, &new);
        assert_eq!(d.kernels.len(), 1, "{d:#?}");
        assert_eq!(d.kernels[0].variant, new.variants[0].name);
        assert!(
            d.kernels[0].new.contains("6.1.0-58") && d.kernels[0].new.contains("0000000000000002")
        );
        assert!(text(&d).contains(&format!("kernel of {}: ", new.variants[0].name)));
        assert!(markdown(&d).contains("6.1.0-58"));
    }

    #[test]
    fn each_kind_of_change_between_two_runs() {
        let old = sample();
        let mut new = sample();
        new.run_id = "r2".into();
        // s/a/pass@v1: PASS -> FAIL (regression); s/a/fail@v1: FAIL -> PASS
        // (fixed); s/a/pass@v2: ERROR both times (still failing) and 3x
        // slower; s/a/fail@v2: removed; a new case.
        let fail = |c: &mut CaseResult| {
            c.decision.verdict = Verdict::Fail;
            c.decision.as_expected = false;
            c.decision.summary = "step 2 (trigger): output \"x\"".into();
        };
        fail(&mut new.results[0]);
        new.results[1].decision.verdict = Verdict::Pass;
        new.results[1].decision.as_expected = true;
        new.results[2].total_s = 6.0;
        let mut added = new.results[3].clone();
        added.id = "s/a/new@v2".into();
        new.results[3] = added;
        let d = runs(&old, &new);
        assert_eq!(find(&d, "s/a/pass@v1").changes, [Change::Regression]);
        assert_eq!(find(&d, "s/a/fail@v1").changes, [Change::Fixed]);
        assert_eq!(
            find(&d, "s/a/pass@v2").changes,
            [Change::StillFailing, Change::Slower]
        );
        assert_eq!(find(&d, "s/a/fail@v2").changes, [Change::Removed]);
        assert_eq!(find(&d, "s/a/new@v2").changes, [Change::New]);
        assert_eq!(
            d.rows[0].changes[0],
            Change::Regression,
            "regressions first"
        );
        assert_eq!(d.compared, 3);
        assert_eq!(d.exit_code(), 1);
        let t = text(&d);
        assert!(t.contains("1 REGRESSION"), "{t}");
        assert!(t.contains("now: step 2 (trigger)"), "{t}");
        let m = markdown(&d);
        assert!(m.contains("**1 regression(s).**"), "{m}");
        assert!(
            m.contains("| `s/a/pass@v1` | PASS 2.0s | FAIL! 2.0s | REGRESSION |"),
            "{m}"
        );
        // The same run against itself: nothing changed, exit 0.
        let same = runs(&old, &old);
        assert!(same
            .rows
            .iter()
            .all(|r| r.changes == [Change::StillFailing]));
        assert_eq!(same.exit_code(), 0);
    }

    #[test]
    fn timing_noise_is_not_a_change() {
        let old = sample();
        let mut new = sample();
        new.results[0].total_s = 2.0 * 1.4; // under the ratio
        new.results[3].total_s = 2.0 + 0.4; // under the seconds
        let d = runs(&old, &new);
        assert!(
            d.rows.iter().all(|r| !r.changes.contains(&Change::Slower)),
            "{d:#?}"
        );
        let mut faster = sample();
        faster.results[0].total_s = 1.0;
        assert_eq!(
            find(&runs(&old, &faster), "s/a/pass@v1").changes,
            [Change::Faster]
        );
    }

    #[test]
    fn two_variants_of_one_run_and_changed_expectations() {
        let mut r = sample();
        // v1: a/pass PASS, a/fail FAIL!; v2: a/pass ERROR!, a/fail XFAIL.
        r.results[1].expected = Expected::Pass;
        let d = variants(&r, "v1", "v2").unwrap();
        assert_eq!(d.old, "r1:v1");
        assert_eq!(find(&d, "s/a/pass").changes, [Change::Regression]);
        assert_eq!(
            find(&d, "s/a/fail").changes,
            [Change::Fixed, Change::ExpectationChanged]
        );
        assert!(
            text(&d).contains("expected: pass -> xfail: known bug"),
            "{}",
            text(&d)
        );
        let e = variants(&r, "v1", "nope").unwrap_err().to_string();
        assert!(
            e.contains("no results for variant 'nope' (it has: v1, v2)"),
            "{e}"
        );
    }
}
