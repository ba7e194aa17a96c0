//! The terminal summary: case rows x variant columns, then the
//! unexpected outcomes with their evidence and the known failures.

use std::fmt::Write as _;

use super::grid::{incomplete_line, short_version, totals_line, Grid};
use super::{expected_text, shown, RunReport};
use crate::record::{CaseResult, Expected, Verdict};

fn cell(r: &CaseResult) -> String {
    let mark = if r.decision.as_expected { "" } else { "!" };
    let extra = match (&r.expected, r.decision.verdict) {
        (Expected::Fail { errno, .. }, Verdict::Pass) => format!("({errno})"),
        _ => String::new(),
    };
    format!(
        "{}{extra}{mark} {:.1}s",
        r.decision.verdict.as_str(),
        r.total_s
    )
}

/// The terminal summary: case rows x variant columns (grouped by kernel
/// source, each with its kernel release), then the unexpected outcomes
/// with their evidence.
pub fn table(report: &RunReport) -> String {
    let (grid, groups) = Grid::by_source(&report.results, &report.variants);
    let variants = &grid.variants;
    let release = |v: &str| {
        report
            .variants
            .iter()
            .find(|i| i.name == v)
            .map(short_version)
            .unwrap_or("")
            .to_string()
    };
    let w0 = grid
        .rows
        .iter()
        .map(|r| r.key.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let cells: Vec<Vec<String>> = grid
        .rows
        .iter()
        .map(|row| {
            row.cells
                .iter()
                .map(|c| c.map(cell).unwrap_or_else(|| "-".into()))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            cells
                .iter()
                .map(|c| c[i].len())
                .max()
                .unwrap_or(0)
                .max(v.len())
                .max(release(v).len())
        })
        .collect();
    let mut s = String::new();
    for v in &report.variants {
        let _ = writeln!(s, "{:<24} {}", v.name, v.kernel_version);
        if let Some(p) = &v.prebuilt {
            let _ = writeln!(s, "{:<24} prebuilt: {}", "", p.describe());
        }
        if !v.already_in_source.is_empty() {
            let _ = writeln!(
                s,
                "{:<24} already in this source, skipped: {}",
                "",
                v.already_in_source.join(", ")
            );
        }
    }
    if !report.variants.is_empty() {
        s.push('\n');
    }
    // One line naming each source over its columns, when there are two.
    if groups.len() > 1 {
        let _ = write!(s, "{:<w0$}", "");
        for g in &groups {
            let span: usize = widths[g.columns.clone()]
                .iter()
                .map(|w| w + 2)
                .sum::<usize>()
                - 2;
            let name = if g.source.is_empty() {
                "(other)"
            } else {
                &g.source
            };
            let label = format!("{name} {}", "-".repeat(span.saturating_sub(name.len() + 1)));
            let _ = write!(s, "  {label:<span$}");
        }
        s.push('\n');
    }
    let _ = write!(s, "{:<w0$}", "CASE");
    for (v, w) in variants.iter().zip(&widths) {
        let _ = write!(s, "  {v:<w$}");
    }
    s.push('\n');
    if variants.iter().any(|v| !release(v).is_empty()) {
        let _ = write!(s, "{:<w0$}", "");
        for (v, w) in variants.iter().zip(&widths) {
            let _ = write!(s, "  {:<w$}", release(v));
        }
        s.push('\n');
    }
    for (row, cs) in grid.rows.iter().zip(&cells) {
        let _ = write!(s, "{:<w0$}", row.key);
        for (c, w) in cs.iter().zip(&widths) {
            let _ = write!(s, "  {c:<w$}");
        }
        s.push('\n');
    }
    if let Some(l) = incomplete_line(report) {
        let _ = writeln!(s, "\n{l}");
    }
    let totals = totals_line(&report.totals, |n| format!("{n} unexpected ('!')"));
    let _ = writeln!(s, "\n{totals}");
    let unexpected: Vec<&CaseResult> = report
        .results
        .iter()
        .filter(|r| !r.decision.as_expected)
        .collect();
    if !unexpected.is_empty() {
        s.push_str("\nUnexpected outcomes:\n");
        for r in unexpected {
            let _ = writeln!(
                s,
                "  {} on {}: {} (expected {})",
                r.case,
                r.variant,
                r.decision.verdict.as_str(),
                expected_text(&r.expected)
            );
            let _ = writeln!(s, "    {}", shown(&r.decision.summary));
            for e in r.decision.evidence.iter().take(8) {
                let _ = writeln!(s, "    - {}", shown(e));
            }
            let _ = writeln!(s, "    console: {}", r.console_log.display());
        }
    }
    let xf: Vec<&CaseResult> = report
        .results
        .iter()
        .filter(|r| r.decision.verdict == Verdict::Xfail)
        .collect();
    if !xf.is_empty() {
        s.push_str("\nKnown failures (xfail):\n");
        for r in xf {
            let _ = writeln!(
                s,
                "  {} on {}: {}",
                r.case,
                r.variant,
                shown(&r.decision.summary)
            );
            // The reports hold the splats that explain a known failure;
            // the table names them too.
            for t in splat_titles(r) {
                let _ = writeln!(s, "    - {t}");
            }
        }
    }
    s
}

/// Every splat of a case, one line each: `kind during step N: title`.
pub fn splat_titles(r: &CaseResult) -> Vec<String> {
    let steps = r.steps.iter().flat_map(|st| st.splats.iter());
    let panic = r.failure.iter().filter_map(|f| f.panic.as_deref());
    steps
        .chain(r.unattributed_splats.iter())
        .chain(panic)
        .map(|sp| shown(&sp.line()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::*;

    #[test]
    fn table_marks_unexpected_and_lists_evidence() {
        let t = table(&sample());
        assert!(t.lines().next().unwrap().starts_with("CASE"));
        assert!(
            t.contains("s/a/fail") && t.contains("FAIL! 2.0s") && t.contains("XFAIL 2.0s"),
            "{t}"
        );
        assert!(t.contains("Unexpected outcomes:"));
        assert!(t.contains("step 2 (trigger): output"));
        assert!(t.contains("Known failures (xfail):"));
    }

    #[test]
    fn a_prebuilt_variant_shows_its_package_and_options() {
        let mut r = sample();
        r.variants.push(crate::record::VariantInfo {
            name: "debian-6.1-image".into(),
            kernel_version: "6.1.192 (Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3)".into(),
            prebuilt: Some(crate::build::manifest::PrebuiltInfo {
                package: "linux-image-6.1.0-57-amd64-unsigned".into(),
                version: "6.1.192-3".into(),
                livepatch: Some("y".into()),
                dynamic_ftrace_with_direct_calls: Some("y".into()),
                dynamic_ftrace_with_args: Some("y".into()),
                dynamic_ftrace_with_regs: Some("y".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let t = table(&r);
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap(),
            "debian-6.1-image         6.1.192 (Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3)"
        );
        assert_eq!(
            lines.next().unwrap(),
            "                         prebuilt: Debian linux-image-6.1.0-57-amd64-unsigned \
             6.1.192-3; LIVEPATCH=y DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y \
             DYNAMIC_FTRACE_WITH_ARGS=y DYNAMIC_FTRACE_WITH_REGS=y"
        );
        let h = crate::report::html::html(&r, None);
        assert!(
            h.contains(
                "<br>prebuilt: Debian linux-image-6.1.0-57-amd64-unsigned 6.1.192-3; LIVEPATCH=y"
            ),
            "{h}"
        );
    }

    #[test]
    fn known_failures_name_their_splats() {
        let mut r = sample();
        // The xfail case (a/fail on v2) hit a WARNING during step 2.
        let warn = r.results[1].steps[0].splats[0].clone();
        r.results[3].steps[0].splats.push(warn);
        let t = table(&r);
        let xf = &t[t.find("Known failures (xfail):").unwrap()..];
        assert!(
            xf.contains("    - warning splat during step 2: WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:2000 x"),
            "{xf}"
        );
    }
}
