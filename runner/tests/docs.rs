//! docs/architecture.md stays true: every repository path it names in
//! backticks or links exists, and its source tree lists exactly the Rust
//! files of the runner's crates, the protocol and the agent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const TOP: &[&str] = &[
    "runner/",
    "images/",
    "docs/",
    ".ci/",
    ".github/",
    "kernel-config/",
    "suites/",
    "patches/",
];

/// Repository paths named in backticks, and the targets of relative links.
fn named_paths(doc: &str) -> BTreeSet<String> {
    let tick = regex::Regex::new(r"`([^`\s]+)`").unwrap();
    let link = regex::Regex::new(r"\]\(([a-z0-9_-]+\.md)(?:#[^)]*)?\)").unwrap();
    let mut v: BTreeSet<String> = tick
        .captures_iter(doc)
        .map(|c| c[1].to_string())
        .filter(|p| TOP.iter().any(|t| p.starts_with(t)))
        .filter(|p| !p.contains('<') && !p.contains('*'))
        .collect();
    v.extend(link.captures_iter(doc).map(|c| format!("docs/{}", &c[1])));
    v
}

/// The files of the source-tree blocks: a root line (`runner/src/`) then
/// `├── name` entries, four columns a level.
fn tree_files(doc: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut in_block = false;
    let mut stack: Vec<String> = Vec::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            stack.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if !line.starts_with(' ') && first.ends_with('/') && first.contains("/src/") {
            stack = vec![first.trim_end_matches('/').to_string()];
            continue;
        }
        if stack.is_empty() {
            continue;
        }
        let Some(at) = line.find("── ") else {
            continue;
        };
        let depth = line[..at].chars().count() / 4 + 1;
        let name = line[at + "── ".len()..].split_whitespace().next().unwrap();
        stack.truncate(depth);
        let path = format!("{}/{}", stack.join("/"), name.trim_end_matches('/'));
        if name.ends_with('/') {
            stack.push(name.trim_end_matches('/').to_string());
        } else {
            files.insert(path);
        }
    }
    files
}

fn rust_files(dir: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.insert(
                p.strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).unwrap()
}

#[test]
fn every_path_architecture_md_names_exists() {
    let named = named_paths(&architecture());
    assert!(
        named.len() > 20,
        "{} paths found: the scan is broken",
        named.len()
    );
    let missing: Vec<_> = named
        .iter()
        .filter(|p| !root().join(p.trim_end_matches('/')).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn the_source_tree_lists_every_rust_file_and_no_other() {
    let listed = tree_files(&architecture());
    let mut real = BTreeSet::new();
    for d in [
        "runner/src",
        "runner/core/src",
        "runner/vm/src",
        "images/proto/src",
        "images/agent/src",
    ] {
        rust_files(&root().join(d), &mut real);
    }
    let unlisted: Vec<_> = real.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&real).collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "docs/architecture.md's source tree: not listed {unlisted:?}; listed but not there {gone:?}"
    );
}

#[test]
fn the_tree_reader_follows_the_levels() {
    let doc = "```\nrunner/src/\n├── lib.rs        x\n├── build/        y\n│   ├── mod.rs    z\n│   └── sub/\n│       └── a.rs\n└── main.rs\n```\n";
    let got: Vec<String> = tree_files(doc).into_iter().collect();
    assert_eq!(
        got,
        [
            "runner/src/build/mod.rs",
            "runner/src/build/sub/a.rs",
            "runner/src/lib.rs",
            "runner/src/main.rs"
        ]
    );
    let named = named_paths("see `runner/src/x.rs`, `results/<id>/`, [e](explore.md#top)");
    assert_eq!(
        named.into_iter().collect::<Vec<_>>(),
        ["docs/explore.md", "runner/src/x.rs"]
    );
}
