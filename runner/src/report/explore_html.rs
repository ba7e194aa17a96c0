//! index.html of an explore run: its header and the Explore section (the
//! findings with their minimal sequence, evidence, splats and repro file).
//! Self-contained, no script.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::html::esc;
use crate::explore::ExploreReport;

/// The Explore section.
pub fn section(r: &ExploreReport) -> String {
    let mut s = String::new();
    s.push_str("<section id=\"explore\"><h2>Explore</h2>\n");
    s.push_str(&format!(
        "<p>variant <b>{}</b> ({}; {:?} rule{}), seed {} ({}), budget {}, max {} operations, -j {}, accel {}</p>\n",
        esc(&r.variant),
        esc(r.kernel_release.as_deref().unwrap_or("?")),
        r.rule,
        esc(&r
            .caps
            .missing()
            .iter()
            .map(|m| format!("; this kernel cannot do {m}"))
            .collect::<String>()),
        r.seed,
        esc(&r.seed_hex),
        esc(&r.budget),
        r.max_len,
        r.jobs,
        esc(r.accel.as_deref().unwrap_or("?"))
    ));
    s.push_str(&format!(
        "<p>{} sequence(s), {} operations, {} steps in {:.0} s ({:.1} steps/s, {:.1} sequences/min); {} failing sequence(s), {} harness error(s); median shrink {}</p>\n",
        r.sequences,
        r.ops,
        r.steps,
        r.duration_s,
        r.steps_per_s,
        r.sequences_per_min,
        r.failing_sequences,
        r.errors,
        r.median_shrink_s
            .map(|x| format!("{x:.1} s"))
            .unwrap_or_else(|| "n/a".into())
    ));
    if let Some(i) = &r.incomplete {
        s.push_str(&format!("<p class=\"bad\">incomplete: {}</p>\n", esc(i)));
    }
    if r.findings.is_empty() {
        s.push_str("<p class=\"ok\">No finding: every operation and check held.</p>\n");
    }
    for f in &r.findings {
        s.push_str(&format!(
            "<div class=\"finding\"><h3>Finding {} &times;{}: {}</h3>\n<ol>",
            f.id,
            f.count,
            esc(f.invariant.as_str())
        ));
        if let Some(k) = &f.known {
            s.push_str(&format!(
                "<p class=\"known\">Known kernel bug '{}': {} ({})</p>\n",
                esc(&k.name),
                esc(&k.reason),
                esc(&k.reference)
            ));
        }
        for o in &f.sequence {
            s.push_str(&format!("<li><code>{}</code></li>", esc(&o.text)));
        }
        s.push_str("</ol>\n<table>");
        let step = f.step.to_string();
        for (k, v) in [
            (
                "broke at operation",
                f.at_op
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "prologue".into()),
            ),
            ("step", step),
            ("expected", f.expected.clone()),
            ("seen", f.seen.clone()),
            ("reproduced", f.reproduced.to_string()),
            ("seed", f.seed.clone()),
            (
                "shrunk",
                format!(
                    "from {} operations, {} replays, {:.0} s{}",
                    f.original_len,
                    f.shrink_replays,
                    f.shrink_s,
                    if f.minimal {
                        ""
                    } else {
                        " (replay cap hit: not proven minimal)"
                    }
                ),
            ),
            ("repro", f.repro.clone()),
            ("console", f.console_log.display().to_string()),
        ] {
            s.push_str(&format!(
                "<tr><th>{k}</th><td><code>{}</code></td></tr>",
                esc(&v)
            ));
        }
        s.push_str("</table>\n");
        for sp in &f.splats {
            s.push_str(&format!(
                "<details><summary>{}</summary><pre>{}</pre></details>\n",
                esc(&sp.line()),
                esc(&sp.text.join("\n"))
            ));
        }
        if !f.also_seeds.is_empty() {
            s.push_str(&format!(
                "<p>also found by seeds {}</p>",
                esc(&f.also_seeds.join(", "))
            ));
        }
        s.push_str("</div>\n");
    }
    for u in &r.unshrunk {
        s.push_str(&format!(
            "<p>{} more failing sequence(s) broke <code>{}</code>{} (not shrunk: that signature was shrunk enough already; seeds {})</p>\n",
            u.count,
            esc(u.invariant.as_str()),
            u.splat
                .as_ref()
                .map(|t| format!(" with <code>{}</code>", esc(t)))
                .unwrap_or_default(),
            esc(&u.seeds.join(", "))
        ));
    }
    if !r.coverage.is_empty() {
        s.push_str("<details><summary>operations explored, by result</summary><table>");
        for (k, n) in &r.coverage {
            s.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{n}</td></tr>",
                esc(k)
            ));
        }
        s.push_str("</table></details>\n");
    }
    s.push_str("</section>\n");
    s
}

pub fn html(r: &ExploreReport) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>coexist explore {}</title>\
<style>body{{font-family:sans-serif;margin:1em}}code,pre{{font-size:90%}}th{{text-align:left;vertical-align:top;padding-right:1em}}\
.finding{{border:1px solid #c66;padding:.5em;margin:.5em 0}}.ok{{color:#080}}.bad{{color:#a00}}</style></head><body>\
<h1>coexist explore: {}</h1>\n{}</body></html>\n",
        esc(&r.run_id),
        esc(&r.run_id),
        section(r)
    )
}

/// Writes `index.html` in `dir`.
pub fn write(dir: &Path, r: &ExploreReport) -> Result<PathBuf> {
    let p = dir.join("index.html");
    std::fs::write(&p, html(r))?;
    Ok(p)
}
