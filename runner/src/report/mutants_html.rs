//! index.html of a mutants run: its header, the table per function, each
//! survivor with its diff and the source around it, each killed mutant
//! with what caught it. Self-contained, no script.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::html::esc;
use crate::mutants::results::{MutantResult, MutantsReport, Outcome};

fn pct(s: Option<f64>) -> String {
    s.map(|s| format!("{:.0}%", s * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn source(m: &MutantResult) -> String {
    let mut s = String::from("<pre>");
    for (n, l) in &m.context {
        if *n == m.mutant.line {
            let _ = writeln!(s, "<b>{n:>5} - {}</b>", esc(l));
            // The line as the mutant has it (a change over several lines:
            // its one-line diff).
            let at = l
                .char_indices()
                .nth(m.mutant.col.saturating_sub(1))
                .map(|(i, _)| i)
                .unwrap_or(l.len());
            let new = match l[at..].strip_prefix(m.mutant.original.as_str()) {
                Some(rest) if !m.mutant.original.contains('\n') => {
                    format!("{}{}{rest}", &l[..at], m.mutant.replacement)
                }
                _ => m
                    .mutant
                    .diff
                    .split_once(" +")
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default(),
            };
            let _ = writeln!(s, "<b class=\"bad\">{n:>5} + {}</b>", esc(&new));
        } else {
            let _ = writeln!(s, "{n:>5}   {}", esc(l));
        }
    }
    s.push_str("</pre>");
    s
}

/// The Mutants section.
pub fn section(r: &MutantsReport) -> String {
    let mut s = String::new();
    s.push_str("<section id=\"mutants\"><h2>Mutants</h2>\n");
    let _ = writeln!(
        s,
        "<p>variant <b>{}</b> ({}, kernel {}), scope {}, operators {}, suites {}{}{}</p>",
        esc(&r.variant),
        esc(&r.kernel_release),
        esc(&r.kernel_key),
        format!("{:?}", r.scope).to_lowercase(),
        esc(&r
            .operators
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(", ")),
        esc(&r.suites.join(", ")),
        r.explore
            .as_ref()
            .map(|e| format!(
                ", explore {:.0} s (seed {}) for the suites' survivors",
                e.budget_s, e.seed
            ))
            .unwrap_or_default(),
        if r.shards.is_empty() {
            String::new()
        } else {
            format!(", shards {}", esc(&r.shards.join(" ")))
        }
    );
    if !r.complete {
        let _ = writeln!(
            s,
            "<p class=\"incomplete\">incomplete: {} of {} mutants ran ({})</p>",
            r.mutants.len(),
            r.planned,
            esc(r.incomplete.as_deref().unwrap_or("stopped"))
        );
    }
    s.push_str("<table><tr><th>function</th><th>mutants</th><th>killed</th><th>timeout</th><th>survived</th><th>unviable</th><th>error</th><th>suite score</th><th>score</th></tr>\n");
    for row in r.rows() {
        let _ = writeln!(
            s,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><b>{}</b></td></tr>",
            esc(&row.function),
            row.mutants,
            row.killed,
            row.timeout,
            row.survived,
            row.unviable,
            row.error,
            pct(row.suite_score()),
            pct(row.score())
        );
    }
    s.push_str("</table>\n<p>score: (killed + timeout) / (killed + timeout + survived); suite score: the same, counting only what the suites killed.</p>\n");
    let of = |o: Outcome| r.mutants.iter().filter(move |m| m.outcome == o);
    let _ = writeln!(s, "<h3>Survivors ({})</h3>", of(Outcome::Survived).count());
    for m in of(Outcome::Survived) {
        let _ = writeln!(
            s,
            "<div class=\"detail\" id=\"{id}\"><b class=\"mono\">{id}</b> {op} <span class=\"mono\">{file}:{line}:{col}</span> in <b>{func}</b> ({cases} case(s) ran{reach})\n{src}</div>",
            id = esc(&m.mutant.id),
            op = esc(m.mutant.operator.name()),
            file = esc(&m.mutant.file),
            line = m.mutant.line,
            col = m.mutant.col,
            func = esc(&m.mutant.function),
            cases = m.cases_run,
            reach = m
                .reach
                .map(|r| format!("; {}", esc(&r.show())))
                .unwrap_or_default(),
            src = source(m)
        );
    }
    for (title, o) in [
        ("Killed", Outcome::Killed),
        ("Timeout", Outcome::Timeout),
        ("Unviable", Outcome::Unviable),
        ("Error", Outcome::Error),
    ] {
        let _ = writeln!(s, "<h3>{title} ({})</h3>", of(o).count());
        if of(o).count() == 0 {
            continue;
        }
        s.push_str(
            "<table><tr><th>mutant</th><th>site</th><th>change</th><th>caught by / why</th></tr>\n",
        );
        for m in of(o) {
            let why = match o {
                Outcome::Unviable => esc(m.unviable.as_deref().unwrap_or("")),
                Outcome::Error => esc(m.error.as_deref().unwrap_or("")),
                _ => m
                    .killers
                    .iter()
                    .map(|k| {
                        format!(
                            "<b>{}</b> {} {}<br><span class=\"mono\">{}</span>",
                            esc(&k.by),
                            esc(&k.verdict),
                            esc(k.step.as_deref().unwrap_or("")),
                            esc(&k.evidence.join(" | "))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            let _ = writeln!(
                s,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}:{} {}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                esc(&m.mutant.id),
                esc(&m.mutant.file),
                m.mutant.line,
                esc(&m.mutant.function),
                esc(&m.mutant.diff),
                why
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</section>\n");
    s
}

/// Writes `<dir>/index.html`.
pub fn write(dir: &Path, r: &MutantsReport) -> Result<()> {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mutants {}</title><style>{}</style></head><body><h1>coexist mutants: {}</h1><p>run {} started {}</p>\n{}</body></html>\n",
        esc(&r.variant),
        super::html::STYLE,
        esc(&r.variant),
        esc(&r.run_id),
        esc(&r.started),
        section(r)
    );
    crate::cache::write_atomic(&dir.join("index.html"), page.as_bytes())
}
