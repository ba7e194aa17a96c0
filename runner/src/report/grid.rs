//! The shapes the formats share, written once: the `suite/case` key of a
//! result, the variants in the order they first appear, the case x
//! variant [`Grid`] (the terminal table, the page's matrix, `report diff
//! --variants`), the results of each variant in the report's order
//! ([`by_variant`]: the KTAP subtests, the JUnit testsuites), and the
//! totals line ([`verdict_counts`], [`totals_line`], [`incomplete_line`]).

use crate::record::{CaseResult, RunReport, Totals};

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
