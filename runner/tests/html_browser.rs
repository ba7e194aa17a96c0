//! index.html in a real browser: headless Chromium (Debian's `chromium`,
//! in .ci/packages) loads the page from disk, runs its script, and the test
//! reads the rendered DOM: the matrix has a cell per result, a failing
//! cell's detail shows its splat title, and the verdict filter from the URL
//! hides the other rows. A screenshot is left next to the report for a
//! person to look at: results/browser-test/index.png.

mod common;

use std::path::Path;
use std::process::Command;

use common::{coexist, root};

fn chromium(args: &[&str]) -> std::process::Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .args(args)
        .output()
        .expect("chromium (Debian package chromium, in .ci/packages)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_report_page_renders_in_a_browser() {
    // A recorded real run, with one cell turned into a FAIL with a splat.
    let mut r: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("runner/tests/data/reports/stock-vs-share-ipmodify.json"))
            .unwrap(),
    )
    .unwrap();
    let n = r["results"].as_array().unwrap().len();
    {
        let c = r["results"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["id"] == "livepatch-bpf/cmdline/unload-bpf-first@share-ipmodify")
            .unwrap();
        c["verdict"] = "FAIL".into();
        c["as_expected"] = false.into();
        let splat = serde_json::json!({
            "kind": "warning",
            "title": "WARNING: CPU: 1 PID: 77 at kernel/trace/ftrace.c:2176 ftrace_bug+0x2b4/0x2f0",
            "step": 4, "line": 310,
            "text": ["------------[ cut here ]------------", "WARNING: CPU: 1 PID: 77 at kernel/trace/ftrace.c:2176 ftrace_bug+0x2b4/0x2f0"]
        });
        c["steps"][3]["splats"] = serde_json::json!([splat]);
        c["summary"] = "step 4 (bpf_detach): warning splat during step 4".into();
    }
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("report.json"),
        serde_json::to_vec(&r).unwrap(),
    )
    .unwrap();
    let out_dir = root().join("results/browser-test");
    let _ = std::fs::remove_dir_all(&out_dir);
    // report merge of one report writes every format, index.html included.
    let out = coexist(&[
        "report",
        "merge",
        src.path().join("report.json").to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "one unexpected FAIL: {out:?}");
    let page = out_dir.join("index.html");
    assert!(page.is_file());
    let url = format!("file://{}", page.display());

    // The DOM after the page's script ran.
    let dom = String::from_utf8(chromium(&["--dump-dom", &url]).stdout).unwrap();
    assert_eq!(dom.matches("<td class=\"cell ").count(), n, "{dom}");
    assert!(dom.contains("class=\"cell v-FAIL unexpected\""), "{dom}");
    let detail = &dom[dom
        .find("id=\"c-livepatch-bpf-cmdline-unload-bpf-first-share-ipmodify\"")
        .expect("the failing cell's detail section")..];
    assert!(
        detail.contains(
            "warning splat during step 4: WARNING: CPU: 1 PID: 77 at kernel/trace/ftrace.c:2176"
        ),
        "{detail}"
    );
    // The script ran: the filters are shown and count the rows.
    assert!(dom.contains("2 case row(s) shown"), "{dom}");

    // A filter from the URL: only the row with the FAIL stays.
    let dom = String::from_utf8(chromium(&["--dump-dom", &format!("{url}#verdict=FAIL")]).stdout)
        .unwrap();
    assert!(dom.contains("1 case row(s) shown"), "{dom}");

    // A screenshot next to the report, for a person.
    let png = out_dir.join("index.png");
    chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1400,1600",
        &url,
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());
    assert!(Path::new(&png).is_file());
}
