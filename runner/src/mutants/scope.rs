//! What a mutants run mutates: the area's functions (declared in
//! `kernel-config/area.yaml`, `build::area`), the functions a variant's patch series
//! touches, or functions named on the command line; resolved against the
//! variant's prepared source tree.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::sites::{self, Function, Mutant, Operator};
use crate::build::area::is_c_name;
use crate::build::series::Series;

/// Which functions a run takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeKind {
    /// The area's list and the series' functions.
    Default,
    /// Only the functions the variant's patch series touches.
    Series,
    /// Only the area's list.
    Area,
    /// The functions named with --function.
    Functions,
}

/// Why a function is in scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Area,
    Series,
    Option,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InScope {
    #[serde(flatten)]
    pub function: Function,
    pub from: Vec<Origin>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub function: String,
    pub why: String,
}

/// A resolved scope: its functions, what was skipped, and the mutants.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scope {
    pub kind: ScopeKind,
    pub functions: Vec<InScope>,
    pub skipped: Vec<Skipped>,
    #[serde(skip)]
    pub mutants: Vec<Mutant>,
}

/// `FILE:FUNC` of `--function`.
pub fn parse_function(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once(':') {
        Some((f, n)) if !f.is_empty() && f.ends_with(".c") && is_c_name(n) => {
            Ok((f.to_string(), n.to_string()))
        }
        _ => Err(format!(
            "'{s}' is not FILE:FUNCTION (for example kernel/trace/ftrace.c:prepare_direct_functions_for_ipmodify)"
        )),
    }
}

/// Lines of the patched files that a series changes: file -> new-side
/// line numbers (a removed line counts at the line that follows it).
pub fn series_lines(series: &Series) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for p in &series.patches {
        let text = String::from_utf8_lossy(&p.contents);
        let mut file: Option<String> = None;
        let mut line = 0usize;
        let mut in_hunk = false;
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("+++ ") {
                let path = rest.split('\t').next().unwrap_or("").trim();
                // patch -p<strip>: drop that many leading components.
                let stripped: String = path
                    .split('/')
                    .skip(p.r.strip as usize)
                    .collect::<Vec<_>>()
                    .join("/");
                file = (path != "/dev/null").then_some(stripped);
                in_hunk = false;
            } else if l.starts_with("--- ") && !in_hunk {
                continue;
            } else if let Some(h) = l.strip_prefix("@@ ") {
                // @@ -a,b +c,d @@
                line = h
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix('+'))
                    .and_then(|w| w.split(',').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                in_hunk = true;
            } else if in_hunk {
                let Some(f) = &file else { continue };
                match l.as_bytes().first() {
                    Some(b'+') => {
                        out.entry(f.clone()).or_default().push(line);
                        line += 1;
                    }
                    Some(b'-') => out.entry(f.clone()).or_default().push(line),
                    Some(b' ') | None => line += 1,
                    Some(b'\\') => {}
                    _ => in_hunk = false,
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// A request's scope, resolved against the prepared tree `tree`.
pub struct ScopeRequest<'a> {
    pub kind: ScopeKind,
    pub functions: &'a [(String, String)],
    pub operators: &'a [Operator],
    pub series: Option<&'a Series>,
    pub area: &'a [(String, Vec<String>)],
}

struct Parsed {
    src: String,
    tree: tree_sitter::Tree,
    functions: BTreeMap<String, Function>,
}

pub fn resolve(tree: &Path, req: &ScopeRequest) -> Result<Scope> {
    let mut files: BTreeMap<String, Option<Parsed>> = BTreeMap::new();
    fn parsed<'f>(
        files: &'f mut BTreeMap<String, Option<Parsed>>,
        tree: &Path,
        file: &str,
    ) -> Result<Option<&'f Parsed>> {
        if !files.contains_key(file) {
            let p = tree.join(file);
            let entry = if p.is_file() {
                let src = std::fs::read_to_string(&p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                let t = sites::parse(&src)?;
                let functions = sites::functions(file, &src, &t);
                Some(Parsed {
                    src,
                    tree: t,
                    functions,
                })
            } else {
                None
            };
            files.insert(file.to_string(), entry);
        }
        Ok(files.get(file).and_then(|p| p.as_ref()))
    }
    let mut chosen: Vec<InScope> = Vec::new();
    let mut skipped = Vec::new();
    let take = |f: Function, from: Origin, chosen: &mut Vec<InScope>| match chosen
        .iter_mut()
        .find(|c| c.function.file == f.file && c.function.name == f.name)
    {
        Some(c) if !c.from.contains(&from) => c.from.push(from),
        Some(_) => {}
        None => chosen.push(InScope {
            function: f,
            from: vec![from],
        }),
    };
    if req.kind == ScopeKind::Functions {
        for (file, name) in req.functions {
            let Some(p) = parsed(&mut files, tree, file)? else {
                bail!(
                    "--function {file}:{name}: the variant's source has no file {file} (in {})",
                    tree.display()
                );
            };
            let Some(f) = p.functions.get(name) else {
                bail!("--function {file}:{name}: {file} defines no function {name}");
            };
            take(f.clone(), Origin::Option, &mut chosen);
        }
    }
    if matches!(req.kind, ScopeKind::Default | ScopeKind::Area) {
        for (file, alts) in req.area {
            let found = match parsed(&mut files, tree, file)? {
                None => None,
                Some(p) => alts.iter().find_map(|a| p.functions.get(a)).cloned(),
            };
            match found {
                Some(f) => take(f, Origin::Area, &mut chosen),
                None => skipped.push(Skipped {
                    file: file.clone(),
                    function: alts.join("|"),
                    why: format!("this source defines no {} in {file}", alts.join(" or ")),
                }),
            }
        }
    }
    if matches!(req.kind, ScopeKind::Default | ScopeKind::Series) {
        if let Some(s) = req.series {
            for (file, lines) in series_lines(s) {
                if !file.ends_with(".c") {
                    continue;
                }
                let Some(p) = parsed(&mut files, tree, &file)? else {
                    continue;
                };
                for f in p.functions.values() {
                    if lines
                        .iter()
                        .any(|l| (f.first_line..=f.last_line).contains(l))
                    {
                        take(f.clone(), Origin::Series, &mut chosen);
                    }
                }
            }
        }
    }
    let mut mutants = Vec::new();
    for c in &chosen {
        let p = parsed(&mut files, tree, &c.function.file)?.expect("parsed above");
        mutants.extend(sites::mutants(&p.src, &p.tree, &c.function, req.operators));
    }
    Ok(Scope {
        kind: req.kind,
        functions: chosen,
        skipped,
        mutants,
    })
}

/// The `i`-th of `n` stable slices of `mutants` (1-based), by id.
pub fn shard(mut mutants: Vec<Mutant>, i: usize, n: usize) -> Vec<Mutant> {
    mutants.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out: Vec<Mutant> = mutants
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % n == i - 1)
        .map(|(_, m)| m)
        .collect();
    out.sort_by(|a, b| (&a.file, a.start, &a.id).cmp(&(&b.file, b.start, &b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_option_syntax() {
        assert_eq!(
            parse_function("kernel/trace/ftrace.c:foo_bar").unwrap(),
            ("kernel/trace/ftrace.c".into(), "foo_bar".into())
        );
        for bad in ["foo", "kernel/x.h:f", ":f", "a.c:", "a.c:1f", "a.c:f-g"] {
            assert!(parse_function(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_cover_the_mutants_once() {
        let m = |id: &str| Mutant {
            id: id.into(),
            operator: Operator::IfTrue,
            file: "a.c".into(),
            function: "f".into(),
            line: 1,
            col: 1,
            start: 0,
            end: 0,
            original: String::new(),
            replacement: String::new(),
            diff: String::new(),
        };
        let all: Vec<Mutant> = (0..11).map(|k| m(&format!("m{k:02}"))).collect();
        let mut seen: Vec<String> = Vec::new();
        for i in 1..=3 {
            let s = shard(all.clone(), i, 3);
            assert!(s.len() == 3 || s.len() == 4);
            seen.extend(s.into_iter().map(|m| m.id));
        }
        seen.sort();
        assert_eq!(seen, all.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
    }
}
