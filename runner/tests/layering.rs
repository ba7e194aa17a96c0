//! The library's modules form layers, and every import points down: a
//! stage uses what is below it, never what is above it, so there is no
//! import cycle between stage folders. This reads `crate::<module>` paths
//! in the library's production code (test-only items are skipped) and
//! checks each against the layer table below, which is the diagram in
//! docs/architecture.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only (and its
/// own folder); modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["events", "input", "text", "teardown"],
    &["build"],
    &["setup"],
    &["vm"],
    &["image"],
    &["workspace"],
    &["steps"],
    &["suite"],
    &["record"],
    &["guest"],
    &["run"],
    &["explore"],
    &["report", "ui"],
];

fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments and without the items marked `#[cfg(test)]`
/// (a `use` up to its `;`, anything else up to its closing brace).
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        if l.starts_with("#[cfg(test)]") {
            // Skip the attributed item.
            i += 1;
            let mut depth = 0i32;
            let mut opened = false;
            while i < lines.len() {
                let t = lines[i];
                if !opened && t.trim_end().ends_with(';') && !t.contains('{') {
                    i += 1;
                    break;
                }
                for c in t.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                i += 1;
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        if !l.starts_with("//") {
            out.push_str(lines[i]);
            out.push('\n');
        }
        i += 1;
    }
    out
}

/// (module, module it uses, file) for every `crate::<module>` path.
fn imports(src: &Path) -> Vec<(String, String, PathBuf)> {
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut v = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binary's own modules and the crate root are above every layer.
        if ["cli", "main", "lib"].contains(&top.as_str()) {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        for c in re.captures_iter(&code) {
            let used = c[1].to_string();
            if used != top {
                v.push((top.clone(), used, rel.to_path_buf()));
            }
        }
    }
    v
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = imports(&src);
    assert!(
        all.len() > 50,
        "{} imports found: the scan is broken",
        all.len()
    );
    let mut bad = BTreeSet::new();
    for (from, to, file) in &all {
        match (layer(from), layer(to)) {
            (None, _) => {
                bad.insert(format!("{from} ({}) is in no layer", file.display()));
            }
            (_, None) => {
                bad.insert(format!("{to} (used by {}) is in no layer", file.display()));
            }
            (Some(a), Some(b)) if b >= a => {
                bad.insert(format!(
                    "{} uses crate::{to}: {from} is on layer {a}, {to} on layer {b}",
                    file.display()
                ));
            }
            _ => {}
        }
    }
    assert!(bad.is_empty(), "imports that point up or sideways:\n{}", {
        let v: Vec<String> = bad.into_iter().collect();
        v.join("\n")
    });
}

#[test]
fn the_scan_sees_an_upward_import_and_skips_test_items() {
    let code = "use crate::vm::Vm;\n\
                // crate::report in a comment\n\
                #[cfg(test)]\n\
                use crate::report::x;\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::run::y;\n    fn f() { if true { } }\n}\n\
                fn g() -> crate::record::CaseResult { todo!() }\n";
    let kept = production_code(code);
    assert!(kept.contains("crate::vm::Vm"), "{kept}");
    assert!(kept.contains("crate::record::CaseResult"), "{kept}");
    assert!(!kept.contains("crate::report"), "{kept}");
    assert!(!kept.contains("crate::run"), "{kept}");
    // An upward use is one the layer table refuses.
    assert!(layer("record") > layer("vm"));
    assert!(layer("report") > layer("run"));
}
