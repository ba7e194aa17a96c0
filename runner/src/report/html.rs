//! `index.html`: the run as one self-contained page (no network, no
//! external assets), for a laptop or a CI artifact: the run header, the
//! case x variant matrix coloured by verdict with the expected outcome
//! marked, a detail section per cell (steps with request, expectation,
//! answer and duration; splats with their text; the console around each
//! step; the VM failure), and a timeline per worker. The matrix and the
//! details work without JavaScript; a small script adds filters (suite,
//! variant, verdict; also from the URL: `#verdict=FAIL&variant=stock`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::grid::{incomplete_line, short_version, totals_line, Grid};
use super::{expected_text, shown, RunReport};
use crate::record::{CaseResult, Expected, StepRecord, Verdict};

/// Text for HTML: control characters escaped, then markup.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in shown(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.4em 0 .4em}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2em .45em;vertical-align:top;text-align:left}
th{background:#f3f3f3} .mono,pre{font-family:ui-monospace,monospace;font-size:12px}
pre{background:#f7f7f7;padding:.4em;overflow-x:auto;white-space:pre-wrap;margin:.2em 0}
.v-PASS{background:#d9f2d9} .v-FAIL{background:#f7c6c6} .v-ERROR{background:#f9d9a6}
.v-XFAIL{background:#e3dcf5} .v-XPASS{background:#f6e58d} .v-SKIP{background:#e8e8e8} .v-none{background:#fff;color:#999}
.unexpected{outline:2px solid #b00;font-weight:bold} .exp{display:block;font-size:11px;color:#555}
td.cell a{color:inherit;text-decoration:none;display:block}
.incomplete{background:#f7c6c6;padding:.4em;border:1px solid #b00}
.detail{border-top:2px solid #ccc;margin-top:1.2em;padding-top:.4em}
.bad{color:#b00} .filters select{margin-right:1em}
.timeline{position:relative;border:1px solid #ccc;background:#fafafa}
.lane{position:relative;height:18px;border-bottom:1px solid #eee}
table.steps{table-layout:fixed;width:100%} table.steps td{word-break:break-word}
table.steps col.n{width:5em} table.steps col.t{width:4.5em}
.job{position:absolute;top:2px;height:14px;border:1px solid #888;box-sizing:border-box;overflow:hidden}
"#;

const SCRIPT: &str = r#"
(function(){
  var sel = {suite: document.getElementById('f-suite'), variant: document.getElementById('f-variant'), verdict: document.getElementById('f-verdict')};
  function apply(){
    var want = {suite: sel.suite.value, variant: sel.variant.value, verdict: sel.verdict.value};
    document.querySelectorAll('td.cell').forEach(function(td){
      var ok = (!want.variant || td.dataset.variant === want.variant) &&
               (!want.verdict || td.dataset.verdict === want.verdict);
      td.classList.toggle('dim', !ok);
      td.style.opacity = ok ? '' : '0.15';
    });
    document.querySelectorAll('tr.case').forEach(function(tr){
      var any = Array.prototype.some.call(tr.querySelectorAll('td.cell'), function(td){ return td.style.opacity === ''; });
      var suiteOk = !want.suite || tr.dataset.suite === want.suite;
      tr.style.display = (suiteOk && any) ? '' : 'none';
    });
    var shown = document.querySelectorAll('tr.case:not([style*="none"])').length;
    document.getElementById('f-count').textContent = shown + ' case row(s) shown';
  }
  var h = new URLSearchParams(location.hash.slice(1));
  Object.keys(sel).forEach(function(k){ if (h.get(k)) sel[k].value = h.get(k); sel[k].addEventListener('change', apply); });
  document.getElementById('filters').style.display = '';
  apply();
})();
"#;

fn cell_id(r: &CaseResult) -> String {
    format!(
        "c-{}",
        r.id.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    )
}

fn expected_short(e: &Expected) -> String {
    match e {
        Expected::Pass => "expect pass".into(),
        Expected::Fail { errno, .. } => format!("expect {errno}"),
        Expected::Xfail { .. } => "expect xfail".into(),
        Expected::TestFails => "expect fail".into(),
        Expected::Skip => "expect skip".into(),
    }
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The console lines of step `id` (between its markers, with two lines of
/// context), from the VM's console log.
fn console_excerpt(log: &str, id: u64) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let begin = lines
        .iter()
        .position(|l| coexist_proto::parse_step_marker(l) == Some((id, "begin")))?;
    let end = lines[begin..]
        .iter()
        .position(|l| coexist_proto::parse_step_marker(l) == Some((id, "end")))
        .map(|e| begin + e)
        .unwrap_or(lines.len() - 1);
    let from = begin.saturating_sub(2);
    let to = (end + 3).min(lines.len());
    let mut out: Vec<&str> = lines[from..to].to_vec();
    if out.len() > 200 {
        out.truncate(200);
        out.push("[coexist: excerpt cut at 200 lines; see the whole console log]");
    }
    Some(out.join("\n"))
}

fn step_rows(s: &mut String, steps: &[StepRecord], console: Option<&str>) {
    s.push_str("<table class=steps><colgroup><col class=n><col><col><col><col class=t><col></colgroup><tr><th>#</th><th>request</th><th>expect</th><th>answer</th><th>time</th><th>mismatches</th></tr>");
    for st in steps {
        let a = &st.answer;
        let mut answer = if a.ok {
            "ok".to_string()
        } else {
            format!(
                "<span class=bad>refused {}</span> {}",
                esc(a.errno_name.as_deref().unwrap_or("")),
                esc(a.error.as_deref().unwrap_or(""))
            )
        };
        if !a.output.is_empty() {
            let _ = write!(answer, "<pre>{}</pre>", esc(&a.output));
        }
        if let Some(d) = &a.data {
            let _ = write!(answer, "<pre>{}</pre>", esc(&json(d)));
        }
        let _ = write!(
            s,
            "<tr><td>{}{}</td><td class=mono>{}</td><td class=mono>{}</td><td>{answer}</td><td>{:.2}s</td><td class=bad>{}</td></tr>",
            st.index,
            st.label.as_deref().map(|l| format!(" ({})", esc(l))).unwrap_or_default(),
            esc(&json(&st.request)),
            esc(&json(&st.expect)),
            st.host_s,
            st.mismatches.iter().map(|m| esc(m)).collect::<Vec<_>>().join("<br>")
        );
        for sp in &st.splats {
            let _ = write!(
                s,
                "<tr><td></td><td colspan=5><b class=bad>{} splat during step {}: {}</b><pre>{}</pre></td></tr>",
                esc(sp.kind.as_str()),
                st.index,
                esc(&sp.title),
                esc(&sp.text.join("\n"))
            );
        }
        let marker = if st.vm_step > 0 {
            st.vm_step
        } else {
            st.index as u64
        };
        if let Some(ex) = console.and_then(|c| console_excerpt(c, marker)) {
            let _ = write!(
                s,
                "<tr><td></td><td colspan=5><details><summary>console around step {}</summary><pre>{}</pre></details></td></tr>",
                st.index,
                esc(&ex)
            );
        }
    }
    s.push_str("</table>");
}

/// One result's section: expected and actual outcome, evidence, steps,
/// splats outside any step, the VM failure.
fn detail(s: &mut String, r: &CaseResult, results_dir: Option<&Path>) {
    let console = std::fs::read_to_string(&r.console_log).ok();
    let link = results_dir
        .and_then(|d| r.console_log.strip_prefix(d).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| r.console_log.display().to_string());
    let _ = write!(
        s,
        "<section class=detail id=\"{}\"><h3>{} on {} <span class=\"v-{}\">{}</span>{}</h3>",
        cell_id(r),
        esc(&format!("{}/{}", r.suite, r.case)),
        esc(&r.variant),
        r.decision.verdict.as_str(),
        r.decision.verdict.as_str(),
        if r.decision.as_expected {
            ""
        } else {
            " <b class=bad>unexpected</b>"
        }
    );
    let _ = write!(
        s,
        "<p>{}</p><p><b>expected:</b> {}<br><b>summary:</b> {}<br><b>time:</b> {:.2}s (boot to READY {}), {} of {} steps ran<br><b>console log:</b> <a href=\"{}\">{}</a></p>",
        esc(&r.description),
        esc(&expected_text(&r.expected)),
        esc(&r.decision.summary),
        r.total_s,
        r.boot_s.map(|b| format!("{b:.2}s")).unwrap_or_else(|| "-".into()),
        r.steps.len(),
        r.steps_total,
        esc(&link),
        esc(&link)
    );
    if !r.decision.evidence.is_empty() {
        s.push_str("<ul class=bad>");
        for e in &r.decision.evidence {
            let _ = write!(s, "<li>{}</li>", esc(e));
        }
        s.push_str("</ul>");
    }
    if !r.steps.is_empty() {
        step_rows(s, &r.steps, console.as_deref());
    }
    for sp in &r.unattributed_splats {
        let _ = write!(
            s,
            "<p><b class=bad>{} splat outside any step: {}</b></p><pre>{}</pre>",
            esc(sp.kind.as_str()),
            esc(&sp.title),
            esc(&sp.text.join("\n"))
        );
    }
    if let Some(f) = &r.failure {
        let _ = write!(
            s,
            "<p><b class=bad>VM failure {:?}</b>: {}</p><pre>{}</pre>",
            f.kind,
            esc(&f.message),
            esc(&f
                .panic
                .as_ref()
                .map(|p| p.text.join("\n"))
                .unwrap_or_else(|| f.last_console.join("\n")))
        );
    }
    s.push_str("</section>");
}

/// A lane per worker, a box per job where and as long as it ran (nothing
/// for a report without timings).
fn timeline(s: &mut String, r: &RunReport) {
    let end = r
        .results
        .iter()
        .map(|c| c.started_s + c.total_s)
        .fold(0.0, f64::max);
    if end <= 0.0 {
        return;
    }
    let mut lanes: BTreeMap<usize, Vec<&CaseResult>> = BTreeMap::new();
    for c in &r.results {
        lanes.entry(c.worker).or_default().push(c);
    }
    let _ = write!(
        s,
        "<h2>Timeline</h2><p>{} worker(s), {:.1} s; each box is a job, its width its time (hover for the case).</p><div class=timeline>",
        lanes.len(),
        end
    );
    for (w, jobs) in &lanes {
        let _ = write!(s, "<div class=lane title=\"worker {w}\">");
        for c in jobs {
            let _ = write!(
                s,
                "<a class=\"job v-{}\" href=\"#{}\" style=\"left:{:.3}%;width:{:.3}%\" title=\"{} {:.1}s\"></a>",
                c.decision.verdict.as_str(),
                cell_id(c),
                100.0 * c.started_s / end,
                (100.0 * c.total_s / end).max(0.2),
                esc(&c.id),
                c.total_s
            );
        }
        s.push_str("</div>");
    }
    s.push_str("</div>");
}

/// The page. `results_dir` makes console log links relative (they open
/// from a copied artifact too).
pub fn html(r: &RunReport, results_dir: Option<&Path>) -> String {
    let mut s = String::new();
    header(&mut s, r);
    variants(&mut s, r);
    matrix(&mut s, r);
    timeline(&mut s, r);
    details(&mut s, r, results_dir);
    script(&mut s);
    s
}

/// The document's head, and the run: id, host, accelerator, whether it
/// is complete, the totals.
fn header(s: &mut String, r: &RunReport) {
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>coexist {}</title><style>{STYLE}</style></head><body>",
        esc(&r.run_id)
    );
    let _ = write!(
        s,
        "<h1>coexist run {}</h1><p>started {} on {} ({}, {} CPUs), {}, accelerator {}, coexist {}{}</p>",
        esc(&r.run_id),
        esc(&r.started),
        esc(&r.host.hostname),
        esc(&r.host.kernel),
        r.host.cpus,
        esc(&r.host.qemu),
        esc(r.accel.as_deref().unwrap_or("none")),
        esc(&r.coexist_version),
        r.shard
            .map(|(i, n)| format!(", shard {i}/{n}"))
            .unwrap_or_default()
    );
    if let Some(l) = incomplete_line(r) {
        let _ = write!(s, "<p class=incomplete id=incomplete>{}</p>", esc(&l));
    }
    let totals = totals_line(&r.totals, |n| format!("<b>{n} unexpected</b>"));
    let _ = write!(s, "<p id=totals>{totals}</p>");
}

/// A row per variant: its kernel, patch series, fragments and build times.
fn variants(s: &mut String, r: &RunReport) {
    s.push_str("<h2>Variants</h2><table><tr><th>variant</th><th>kernel</th><th>key</th><th>series</th><th>fragments</th><th>kernel build</th><th>image</th></tr>");
    for v in &r.variants {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}{}{}</td><td class=mono>{}</td><td class=mono>{}{}</td><td>{}</td><td>{:.1}s{}</td><td>{:.1}s</td></tr>",
            esc(&v.name),
            esc(&v.kernel_version),
            match &v.prebuilt {
                Some(p) => format!("<br>prebuilt: {}", esc(&p.describe())),
                None => String::new(),
            },
            if v.profiled.is_empty() {
                String::new()
            } else {
                // The coverage stage writes the page there (docs/coverage.md).
                format!(
                    "<br>coverage twin (gcov: {}): <a href=\"coverage/{}/html/index.html\">annotated source</a>, <a href=\"coverage/{}/coverage.json\">coverage.json</a>",
                    esc(&v.profiled.join(" ")),
                    esc(&v.name),
                    esc(&v.name)
                )
            },
            esc(&v.kernel_key),
            esc(&v.series.join(" ")),
            if v.already_in_source.is_empty() {
                String::new()
            } else {
                format!("<br>already in the source: {}", esc(&v.already_in_source.join(" ")))
            },
            esc(&v.fragments.join(", ")),
            v.build_s,
            if v.kernel_cached { " (cached)" } else { "" },
            v.image_s
        );
    }
    s.push_str("</table>");
}

/// A `<select>` of the filters: "all", then `values`.
fn options(name: &str, id: &str, values: &[String]) -> String {
    let mut o = format!("<label>{name} <select id={id}><option value=\"\">all</option>");
    for v in values {
        let _ = write!(o, "<option>{}</option>", esc(v));
    }
    o.push_str("</select></label>");
    o
}

/// The filters (hidden until the script shows them) and the case x
/// variant matrix, a cell per result linking to its detail.
/// The case x variant matrix, its columns grouped by kernel source (a
/// header row per source, each variant with its kernel release).
fn matrix(s: &mut String, r: &RunReport) {
    let (grid, groups) = Grid::by_source(&r.results, &r.variants);
    let grid = &grid;
    let mut suites: Vec<String> = grid.rows.iter().map(|row| row.suite.to_string()).collect();
    suites.dedup();
    s.push_str("<h2>Matrix</h2>");
    let _ = write!(
        s,
        "<p id=filters class=filters style=\"display:none\">{}{}{}<span id=f-count></span></p>",
        options("suite", "f-suite", &suites),
        options("variant", "f-variant", &grid.variants),
        options(
            "verdict",
            "f-verdict",
            &["PASS", "FAIL", "ERROR", "XFAIL", "XPASS", "SKIP"].map(String::from)
        )
    );
    s.push_str("<table id=matrix>");
    if groups.len() > 1 || groups.iter().any(|g| !g.source.is_empty()) {
        s.push_str("<tr class=sources><th></th>");
        for g in &groups {
            let name = if g.source.is_empty() {
                "(other)"
            } else {
                &g.source
            };
            let _ = write!(
                s,
                "<th colspan={} class=source title=\"{}\">{}<br><small>{}</small></th>",
                g.columns.len(),
                esc(&g.origin),
                esc(name),
                esc(&g.origin)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("<tr><th>case</th>");
    for v in &grid.variants {
        let release = r
            .variants
            .iter()
            .find(|i| &i.name == v)
            .map(short_version)
            .unwrap_or("");
        let _ = write!(
            s,
            "<th>{}<br><small class=mono>{}</small></th>",
            esc(v),
            esc(release)
        );
    }
    s.push_str("</tr>");
    for row in &grid.rows {
        let _ = write!(
            s,
            "<tr class=case data-suite=\"{}\"><td class=mono>{}</td>",
            esc(row.suite),
            esc(&row.key)
        );
        for (v, c) in grid.variants.iter().zip(&row.cells) {
            match c {
                Some(c) => {
                    let verdict = c.decision.verdict.as_str();
                    let _ = write!(
                        s,
                        "<td class=\"cell v-{verdict}{}\" data-variant=\"{}\" data-verdict=\"{verdict}\" title=\"{}\"><a href=\"#{}\">{verdict}{}<span class=exp>{}</span></a></td>",
                        if c.decision.as_expected { "" } else { " unexpected" },
                        esc(v),
                        esc(&c.decision.summary),
                        cell_id(c),
                        if c.decision.as_expected { "" } else { "!" },
                        esc(&expected_short(&c.expected))
                    );
                }
                None => s.push_str("<td class=v-none>-</td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// A detail section per result: unexpected outcomes first, then the
/// rest, in job order.
fn details(s: &mut String, r: &RunReport, results_dir: Option<&Path>) {
    s.push_str("<h2>Cases</h2>");
    let mut order: Vec<&CaseResult> = r.results.iter().collect();
    order.sort_by_key(|c| (c.decision.as_expected, c.decision.verdict == Verdict::Pass));
    for c in order {
        detail(s, c, results_dir);
    }
}

/// The filters' script, and the end of the page.
fn script(s: &mut String) {
    let _ = write!(s, "<script>{SCRIPT}</script></body></html>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample;

    #[test]
    fn the_page_holds_every_cell_and_its_detail_escaped() {
        let mut r = sample();
        r.results[1].decision.summary = "<script>alert(1)</script> \u{1b}[2J".into();
        let h = html(&r, None);
        assert!(h.starts_with("<!DOCTYPE html>"));
        assert_eq!(h.matches("<td class=\"cell ").count(), r.results.len());
        for c in &r.results {
            assert!(h.contains(&format!("id=\"{}\"", cell_id(c))), "{}", c.id);
        }
        // The splat of the failing case, with its text, in its detail.
        assert!(h.contains("warning splat during step 2: WARNING: CPU: 0 PID: 1"));
        assert!(h.contains("WARNING: &lt;&amp;&gt; &quot;q&quot;"));
        // Guest text cannot add markup or drive a terminal.
        assert!(!h.contains("<script>alert"));
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt; \\u{1b}[2J"));
        // No network: nothing is loaded from elsewhere.
        for bad in ["src=", "href=\"http", "<link", "@import", "url("] {
            assert!(!h.contains(bad), "{bad}");
        }
    }

    #[test]
    fn console_excerpt_is_the_step_with_context() {
        let log = "a\nb\n[ 1.0] coexist: step 1 begin\nc\n[ 1.1] coexist: step 1 end\nd\ne\nf\n[ 2.0] coexist: step 2 begin\ng\n";
        assert_eq!(
            console_excerpt(log, 1).unwrap(),
            "a\nb\n[ 1.0] coexist: step 1 begin\nc\n[ 1.1] coexist: step 1 end\nd\ne"
        );
        // A step whose end never came (the VM died): to the end.
        assert_eq!(
            console_excerpt(log, 2).unwrap(),
            "e\nf\n[ 2.0] coexist: step 2 begin\ng"
        );
        assert_eq!(console_excerpt(log, 3), None);
    }
}
