//! Known kernel bugs among explore's findings (`report merge --known
//! kernel-config/known-findings.yaml`): the explore side of a suite's xfail. A
//! finding that matches an entry is shown with the entry's reason and
//! upstream reference and does not fail the merge; any other finding does.
//!
//! In: the known-findings file and the findings of an explore report.
//! Out: each finding's [`KnownRef`], or none.
//!
//! An entry matches a finding of one of its `variants` when its `splat`
//! regex matches a splat title of the finding, or its `seen` regex what the
//! finding saw, and (if given) the finding's invariant is one of
//! `invariants`. It needs `splat` or `seen`: a signature of the bug, not a
//! whole variant.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub use super::report::KnownRef;
use super::report::{ExploreReport, Finding};
use crate::input;

/// The file of known findings in a project.
pub const FILE: &str = "kernel-config/known-findings.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDecl {
    known: Vec<EntryDecl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryDecl {
    name: String,
    variants: Vec<String>,
    #[serde(default)]
    invariants: Vec<String>,
    #[serde(default)]
    splat: Option<String>,
    #[serde(default)]
    seen: Option<String>,
    reason: String,
    #[serde(rename = "ref")]
    reference: String,
}

/// One entry of the file, its patterns compiled.
pub struct Known {
    pub r: KnownRef,
    pub variants: Vec<String>,
    pub invariants: Vec<String>,
    splat: Option<regex::Regex>,
    seen: Option<regex::Regex>,
}

impl Known {
    pub fn matches(&self, variant: &str, f: &Finding) -> bool {
        self.variants.iter().any(|v| v == variant)
            && (self.invariants.is_empty()
                || self.invariants.iter().any(|i| i == f.invariant.as_str()))
            && (self.splat.is_some() || self.seen.is_some())
            && self
                .splat
                .as_ref()
                .is_none_or(|re| f.splats.iter().any(|s| re.is_match(&s.title)))
            && self.seen.as_ref().is_none_or(|re| re.is_match(&f.seen))
    }
}

/// Reads a known-findings file; `variants` (when given) are the names
/// an entry may use. Every error names the file, line and column.
pub fn load(path: &Path, variants: Option<&[String]>) -> Result<Vec<Known>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text, path, variants)
}

pub fn parse(text: &str, path: &Path, variants: Option<&[String]>) -> Result<Vec<Known>> {
    let f: FileDecl = serde_yaml::from_str(text).map_err(|e| input::yaml_error(path, &e))?;
    let invariants = [
        "result",
        "call_output",
        "bpf_counters",
        "direct_hits",
        "ftrace_state",
        "livepatch_state",
        "no_splat",
        "guest_alive",
    ];
    let mut out: Vec<Known> = Vec::new();
    let mut from = 1;
    for e in f.known {
        let here = input::place(path, text, from, &format!("name: {}", e.name));
        if let Some((l, _)) = input::find_from(text, from, &format!("name: {}", e.name)) {
            from = l;
        }
        if out.iter().any(|k| k.r.name == e.name) {
            bail!("{here}: known finding '{}' is declared twice", e.name);
        }
        let at = |needle: &str| input::place(path, text, from, needle);
        if e.variants.is_empty() {
            bail!(
                "{}: known finding '{}' names no variant",
                at("variants"),
                e.name
            );
        }
        if let Some(known) = variants {
            for v in &e.variants {
                if !known.contains(v) {
                    bail!(
                        "{}: known finding '{}': unknown variant '{v}' (known: {})",
                        at(v),
                        e.name,
                        known.join(", ")
                    );
                }
            }
        }
        for i in &e.invariants {
            if !invariants.contains(&i.as_str()) {
                bail!(
                    "{}: known finding '{}': unknown invariant '{i}' (known: {})",
                    at(i),
                    e.name,
                    invariants.join(", ")
                );
            }
        }
        if e.splat.is_none() && e.seen.is_none() {
            bail!(
                "{here}: known finding '{}' needs 'splat:' or 'seen:' (a regex of the bug's \
                 splat title or of what it saw), not only variants",
                e.name
            );
        }
        let re = |key: &str, p: &Option<String>| -> Result<Option<regex::Regex>> {
            p.as_ref()
                .map(|p| {
                    regex::Regex::new(p).map_err(|err| {
                        anyhow::anyhow!(
                            "{}: known finding '{}': {key} is not a regex: {err}",
                            at(&format!("{key}:")),
                            e.name
                        )
                    })
                })
                .transpose()
        };
        if e.reason.trim().is_empty() || e.reference.trim().is_empty() {
            bail!(
                "{here}: known finding '{}' needs a reason and an upstream reference ('ref:')",
                e.name
            );
        }
        out.push(Known {
            splat: re("splat", &e.splat)?,
            seen: re("seen", &e.seen)?,
            r: KnownRef {
                name: e.name,
                reason: e.reason,
                reference: e.reference,
            },
            variants: e.variants,
            invariants: e.invariants,
        });
    }
    Ok(out)
}

/// Marks each finding of `r` with the known bug it is, if any (its exit
/// code then counts only the others: `ExploreReport::exit_code`).
pub fn classify(r: &mut ExploreReport, known: &[Known]) {
    let variant = r.variant.clone();
    for f in &mut r.findings {
        f.known = known
            .iter()
            .find(|k| k.matches(&variant, f))
            .map(|k| k.r.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_TEXT: &str = "known:\n  - name: modify-path\n    variants: [stock]\n    \
        splat: 'ftrace\\.c:\\d+ arch_ftrace_ops_list_func'\n    reason: the bug\n    \
        ref: upstream abc\n";

    fn finding(title: &str) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": 1, "invariant": "no_splat", "sequence": [], "replayed": [],
            "at_op": 3, "step": {}, "expected": "e", "seen": "s",
            "splats": [{"kind": "warning", "title": title, "step": 3, "line": 1, "text": []}],
            "seed": "0x1", "also_seeds": [], "count": 1, "original_len": 3,
            "shrink_replays": 1, "shrink_s": 1.0, "minimal": true, "reproduced": "3/3",
            "repro": "r.yaml", "console_log": "c.log"
        }))
        .unwrap()
    }

    #[test]
    fn a_finding_is_known_by_variant_and_signature() {
        let k = parse(FILE_TEXT, Path::new("k.yaml"), None).unwrap();
        let warn = finding("WARNING: CPU: 0 PID: 1 at kernel/trace/ftrace.c:7660 arch_ftrace_ops_list_func+0xe4/0x131");
        assert!(k[0].matches("stock", &warn));
        assert!(!k[0].matches("share-ipmodify", &warn), "another variant");
        assert!(!k[0].matches("stock", &finding("BUG: kernel NULL pointer dereference")));
    }

    #[test]
    fn bad_entries_are_errors_at_their_place() {
        let vars = vec!["stock".to_string()];
        for (text, want) in [
            (
                FILE_TEXT.replace("[stock]", "[stok]"),
                "k.yaml:3:16: known finding 'modify-path': unknown variant 'stok'",
            ),
            (
                FILE_TEXT.replace(
                    "    splat: 'ftrace\\.c:\\d+ arch_ftrace_ops_list_func'\n",
                    "",
                ),
                "k.yaml:2:5: known finding 'modify-path' needs 'splat:' or 'seen:'",
            ),
            (
                FILE_TEXT.replace("ftrace\\.c", "ftrace(c"),
                "k.yaml:4:5: known finding 'modify-path': splat is not a regex",
            ),
            (
                FILE_TEXT.replace("upstream abc", "''"),
                "k.yaml:2:5: known finding 'modify-path' needs a reason and an upstream reference",
            ),
            (
                FILE_TEXT.replace("variants", "variant"),
                "k.yaml:3:5: known[0]: unknown field `variant`",
            ),
            (
                format!("{FILE_TEXT}    invariants: [no_spat]\n"),
                "k.yaml:7:18: known finding 'modify-path': unknown invariant 'no_spat'",
            ),
        ] {
            let e = parse(&text, Path::new("k.yaml"), Some(&vars))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.starts_with(want), "want {want}\ngot  {e}");
        }
    }
}
