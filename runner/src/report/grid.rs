//! The shapes the formats share, written once: the `suite/case` key of a
//! result, the variants in the order they first appear, the case x
//! variant [`Grid`] (the terminal table, the page's matrix, `report diff
//! --variants`), the results of each variant in the report's order
//! ([`by_variant`]: the KTAP subtests, the JUnit testsuites), and the
//! totals line ([`verdict_counts`], [`totals_line`], [`incomplete_line`]).

use crate::record::{CaseResult, RunReport, Totals, VariantInfo};

/// The row key of a result: `suite/case` (its id without `@variant`).
pub fn case_key(r: &CaseResult) -> String {
    format!("{}/{}", r.suite, r.case)
}

/// Variants in the order they first appear in the results.
pub fn variant_order(results: &[CaseResult]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in results {
        if !v.contains(&r.variant) {
            v.push(r.variant.clone());
        }
    }
    v
}

/// One case of the grid: its key, its suite, and its result on each
/// variant (`None`: not run there).
#[derive(Debug)]
pub struct Row<'a> {
    pub key: String,
    /// The suite of the first result with this key.
    pub suite: &'a str,
    /// One per [`Grid::variants`], in that order.
    pub cells: Vec<Option<&'a CaseResult>>,
}

/// Case rows x variant columns. Rows in the order their cases first
/// appear in the results, columns in [`variant_order`]; a (case, variant)
/// given twice holds the later result.
#[derive(Debug)]
pub struct Grid<'a> {
    pub variants: Vec<String>,
    pub rows: Vec<Row<'a>>,
}

impl<'a> Grid<'a> {
    pub fn of(results: &'a [CaseResult]) -> Grid<'a> {
        let variants = variant_order(results);
        let mut rows: Vec<Row<'a>> = Vec::new();
        for r in results {
            let key = case_key(r);
            let i = match rows.iter().position(|row| row.key == key) {
                Some(i) => i,
                None => {
                    rows.push(Row {
                        key,
                        suite: &r.suite,
                        cells: vec![None; variants.len()],
                    });
                    rows.len() - 1
                }
            };
            let v = variants
                .iter()
                .position(|v| *v == r.variant)
                .expect("every result's variant is a column");
            rows[i].cells[v] = Some(r);
        }
        Grid { variants, rows }
    }

    /// The column of `variant`, if any result has it.
    pub fn column(&self, variant: &str) -> Option<usize> {
        self.variants.iter().position(|v| v == variant)
    }

    /// The rows that have a result in column `i`, with it.
    pub fn column_cells(&self, i: usize) -> impl Iterator<Item = (&str, &'a CaseResult)> + '_ {
        self.rows
            .iter()
            .filter_map(move |row| row.cells[i].map(|c| (row.key.as_str(), c)))
    }
}

/// A run of adjacent columns whose variants are built from one kernel
/// source.
#[derive(Debug, PartialEq)]
pub struct SourceGroup {
    /// The source's name (`debian-6.12`), "" for variants the report does
    /// not describe.
    pub source: String,
    /// Its origin as the variants' kernel version gives it (`Debian
    /// linux-source-6.12 6.12.118-1~deb12u1`), if any.
    pub origin: String,
    pub columns: std::ops::Range<usize>,
}

/// The kernel release a variant's header shows: `6.12.118` of
/// `6.12.118 (Debian linux-source-6.12 6.12.118-1~deb12u1)`.
pub fn short_version(v: &VariantInfo) -> &str {
    v.kernel_version
        .split_whitespace()
        .next()
        .unwrap_or(&v.kernel_release)
}

impl<'a> Grid<'a> {
    /// [`Grid::of`] with the columns grouped by kernel source: the
    /// variants of one source side by side (in their order), sources in
    /// the order their first variant appears; variants `infos` does not
    /// describe last, in a group of their own.
    pub fn by_source(
        results: &'a [CaseResult],
        infos: &[VariantInfo],
    ) -> (Grid<'a>, Vec<SourceGroup>) {
        let mut g = Grid::of(results);
        let info = |v: &str| infos.iter().find(|i| i.name == v);
        // By name; a report from before names were recorded, by identity.
        let source_of = |v: &str| {
            info(v)
                .map(|i| {
                    if i.source_name.is_empty() {
                        i.source.clone()
                    } else {
                        i.source_name.clone()
                    }
                })
                .unwrap_or_default()
        };
        let mut sources: Vec<String> = Vec::new();
        for v in &g.variants {
            let s = source_of(v);
            if !sources.contains(&s) {
                sources.push(s);
            }
        }
        // Described sources first, in order; the undescribed ("") last.
        if let Some(i) = sources.iter().position(String::is_empty) {
            let e = sources.remove(i);
            sources.push(e);
        }
        let mut order: Vec<usize> = (0..g.variants.len()).collect();
        order.sort_by_key(|&i| sources.iter().position(|s| *s == source_of(&g.variants[i])));
        g.variants = order.iter().map(|&i| g.variants[i].clone()).collect();
        for row in &mut g.rows {
            row.cells = order.iter().map(|&i| row.cells[i]).collect();
        }
        let mut groups: Vec<SourceGroup> = Vec::new();
        for (i, v) in g.variants.iter().enumerate() {
            let s = source_of(v);
            match groups.last_mut() {
                Some(last) if last.source == s => last.columns.end = i + 1,
                _ => groups.push(SourceGroup {
                    origin: info(v)
                        .and_then(|i| {
                            let (_, o) = i.kernel_version.split_once(" (")?;
                            Some(o.trim_end_matches(')').to_string())
                        })
                        .unwrap_or_default(),
                    source: s,
                    columns: i..i + 1,
                }),
            }
        }
        (g, groups)
    }
}

/// Each variant (in [`variant_order`]) with its results in the report's
/// order, every one of them (a (case, variant) given twice is there
/// twice): a variant's subtest or testsuite, unlike a [`Grid`] column.
pub fn by_variant(results: &[CaseResult]) -> Vec<(String, Vec<&CaseResult>)> {
    variant_order(results)
        .into_iter()
        .map(|v| {
            let cases = results.iter().filter(|r| r.variant == v).collect();
            (v, cases)
        })
        .collect()
}

/// `1 pass, 1 fail, 1 error, 1 xfail, 0 xpass, 0 skip`: the verdict counts.
pub fn verdict_counts(t: &Totals) -> String {
    format!(
        "{} pass, {} fail, {} error, {} xfail, {} xpass, {} skip",
        t.pass, t.fail, t.error, t.xfail, t.xpass, t.skip
    )
}

/// The totals line: `4 results: <verdict counts>; ` and the unexpected
/// count the way the format marks it (`unexpected` is given the count).
pub fn totals_line(t: &Totals, unexpected: impl FnOnce(usize) -> String) -> String {
    format!(
        "{} results: {}; {}",
        t.cases,
        verdict_counts(t),
        unexpected(t.unexpected)
    )
}

/// For a report that is not complete: `INCOMPLETE: <why>; N of M job(s)
/// have results`.
pub fn incomplete_line(r: &RunReport) -> Option<String> {
    r.incomplete.as_ref().map(|why| {
        format!(
            "INCOMPLETE: {why}; {} of {} job(s) have results",
            r.results.len(),
            r.jobs
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Expected, Verdict};
    use crate::report::testdata::*;

    #[test]
    fn the_grid_has_a_row_per_case_and_a_column_per_variant() {
        let mut r = sample();
        // Only on v2, first seen after the others; then a/pass on v1 again.
        r.results
            .push(result("b/new", "v2", Verdict::Pass, true, Expected::Pass));
        let mut again = r.results[0].clone();
        again.total_s = 9.0;
        r.results.push(again);
        let g = Grid::of(&r.results);
        assert_eq!(g.variants, ["v1", "v2"]);
        let keys: Vec<&str> = g.rows.iter().map(|row| row.key.as_str()).collect();
        assert_eq!(keys, ["s/a/pass", "s/a/fail", "s/b/new"]);
        assert!(g.rows.iter().all(|row| row.suite == "s"));
        let id = |c: &Option<&CaseResult>| c.map(|c| c.id.clone());
        let cells: Vec<Vec<Option<String>>> = g
            .rows
            .iter()
            .map(|row| row.cells.iter().map(id).collect())
            .collect();
        assert_eq!(
            cells,
            [
                [Some("s/a/pass@v1".into()), Some("s/a/pass@v2".into())],
                [Some("s/a/fail@v1".into()), Some("s/a/fail@v2".into())],
                [None, Some("s/b/new@v2".into())],
            ]
        );
        // The later of two results for one cell.
        assert_eq!(g.rows[0].cells[0].unwrap().total_s, 9.0);
        assert_eq!(g.column("v2"), Some(1));
        assert_eq!(g.column("nope"), None);
        let v1: Vec<&str> = g.column_cells(0).map(|(k, _)| k).collect();
        assert_eq!(v1, ["s/a/pass", "s/a/fail"]);
        // By variant: every result, in the report's order.
        let bv = by_variant(&r.results);
        let ids: Vec<(&str, Vec<&str>)> = bv
            .iter()
            .map(|(v, cs)| (v.as_str(), cs.iter().map(|c| c.id.as_str()).collect()))
            .collect();
        assert_eq!(
            ids,
            [
                ("v1", vec!["s/a/pass@v1", "s/a/fail@v1", "s/a/pass@v1"]),
                ("v2", vec!["s/a/pass@v2", "s/a/fail@v2", "s/b/new@v2"]),
            ]
        );
        assert_eq!(Grid::of(&[]).rows.len(), 0);
    }

    #[test]
    fn columns_are_grouped_by_kernel_source() {
        let mut r = sample();
        r.results
            .push(result("a/pass", "v3", Verdict::Pass, true, Expected::Pass));
        r.results.push(result(
            "a/pass",
            "other",
            Verdict::Pass,
            true,
            Expected::Pass,
        ));
        let info = |name: &str, source: &str, version: &str| VariantInfo {
            name: name.into(),
            source_name: source.into(),
            kernel_version: version.into(),
            ..Default::default()
        };
        // v1 and v3 from one source, v2 from another; "other" undescribed.
        let infos = [
            info(
                "v1",
                "debian-6.1",
                "6.1.192 (Debian linux-source-6.1 6.1.192-3)",
            ),
            info(
                "v2",
                "debian-6.12",
                "6.12.118 (Debian linux-source-6.12 6.12.118-1~deb12u1)",
            ),
            info(
                "v3",
                "debian-6.1",
                "6.1.192 (Debian linux-source-6.1 6.1.192-3)",
            ),
        ];
        let (g, groups) = Grid::by_source(&r.results, &infos);
        assert_eq!(g.variants, ["v1", "v3", "v2", "other"]);
        // Cells follow their columns.
        for row in &g.rows {
            for (v, c) in g.variants.iter().zip(&row.cells) {
                if let Some(c) = c {
                    assert_eq!(&c.variant, v);
                }
            }
        }
        assert_eq!(g.rows[0].cells.iter().filter(|c| c.is_some()).count(), 4);
        let got: Vec<(&str, &str, std::ops::Range<usize>)> = groups
            .iter()
            .map(|x| (x.source.as_str(), x.origin.as_str(), x.columns.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("debian-6.1", "Debian linux-source-6.1 6.1.192-3", 0..2),
                (
                    "debian-6.12",
                    "Debian linux-source-6.12 6.12.118-1~deb12u1",
                    2..3
                ),
                ("", "", 3..4),
            ]
        );
        assert_eq!(short_version(&infos[1]), "6.12.118");
    }

    #[test]
    fn totals_lines() {
        let mut r = sample();
        assert_eq!(
            totals_line(&r.totals, |n| format!("{n} unexpected")),
            "4 results: 1 pass, 1 fail, 1 error, 1 xfail, 0 xpass, 0 skip; 2 unexpected"
        );
        assert_eq!(incomplete_line(&r), None);
        r.incomplete = Some("interrupted by signal 15".into());
        assert_eq!(
            incomplete_line(&r).as_deref(),
            Some("INCOMPLETE: interrupted by signal 15; 4 of 4 job(s) have results")
        );
    }
}
