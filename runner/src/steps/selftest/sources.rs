//! The selftest family's checks on the kernel source, before anything
//! boots: every selftest a run's jobs name is in its variant's source
//! (or a patch of the variant's series adds it), checked before anything
//! builds ([`in_sources`]; a tarball is listed once into the cache), and
//! again in the tree as built ([`present`]). Errors carry the test's place
//! in its suite file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coexist_proto::Step;

use crate::build::kinds::SelftestTree;
use crate::build::{source, variant, Variant};
use crate::events::{self, EventSink};
use crate::image::Prepared;
use crate::workspace::Workspace;

/// One selftest a job runs.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The suite file that names it.
    pub suite_file: PathBuf,
    pub case: String,
    /// The test as the suite names it.
    pub test: String,
    /// Its path in the kernel tree.
    pub rel: String,
}

/// The selftests a run's jobs run, by variant.
pub type SelftestsByVariant = BTreeMap<String, Vec<Wanted>>;

/// Where a selftest step's test is in the kernel tree (None: not a
/// selftest step).
pub fn source_path(step: &Step) -> Option<String> {
    match step {
        Step::Selftest {
            collection, test, ..
        } => Some(format!("tools/testing/selftests/{collection}/{test}")),
        _ => None,
    }
}

/// The test a selftest step runs ("" for other steps).
pub fn test_name(step: &Step) -> &str {
    match step {
        Step::Selftest { test, .. } => test,
        _ => "",
    }
}

/// `file:line:column` of a test's name in its suite file.
fn test_position(suite_file: &Path, test: &str) -> String {
    let text = std::fs::read_to_string(suite_file).unwrap_or_default();
    crate::input::place(suite_file, &text, 1, test)
}

/// Before anything builds: every selftest a job runs is in its variant's
/// source, or a patch of the variant's series touches it. A tarball is
/// listed once (`<cache>/sources/<id>.selftests`) unless it is unpacked
/// already.
pub fn in_sources(
    ws: &Workspace,
    wanted: &SelftestsByVariant,
    variants: &[Variant],
    events: &dyn EventSink,
) -> Result<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    ws.setup(events)?;
    for (name, tests) in wanted {
        let v = variant::select(variants, std::slice::from_ref(name))?[0];
        let touched: Vec<String> = v
            .series
            .iter()
            .flat_map(|s| &s.patches)
            .flat_map(|p| {
                crate::build::series::touched_files(
                    &String::from_utf8_lossy(&p.contents),
                    p.r.strip,
                )
            })
            .collect();
        let listing = source_listing(ws, v, events)?;
        for Wanted {
            suite_file: s,
            case,
            test,
            rel,
        } in tests
        {
            let there = match &listing {
                Listing::Dir(d) => d.join(rel).is_file(),
                Listing::Paths(p) => p.contains(rel),
            };
            if !there && !touched.contains(rel) {
                bail!(
                    "{}: {test} of case '{case}' is not in the source of variant '{name}' (no {rel})",
                    test_position(s, test)
                );
            }
        }
    }
    Ok(())
}

enum Listing {
    /// A tree on disk.
    Dir(PathBuf),
    /// The selftest paths of a tarball, without its top directory.
    Paths(BTreeSet<String>),
}

fn source_listing(ws: &Workspace, v: &Variant, events: &dyn EventSink) -> Result<Listing> {
    // A distribution's kernel has the selftests of the source it declares
    // (none without one).
    let decl = match v.source.selftest_tree() {
        SelftestTree::Dir(t) => return Ok(Listing::Dir(t.to_path_buf())),
        SelftestTree::None => return Ok(Listing::Paths(BTreeSet::new())),
        SelftestTree::Declared(d) => d,
    };
    let id = ws.sources.tarball(&ws.cache, decl, events)?;
    let unpacked = source::unpacked_dir(&ws.cache, &id);
    if unpacked.is_dir() {
        return Ok(Listing::Dir(unpacked));
    }
    let note = |m: &str| events::note(events, m.to_string());
    Ok(Listing::Paths(source::tarball_selftests(
        &ws.cache, decl, &id, &note,
    )?))
}

/// Every selftest a job runs on this variant is in its source as built
/// (the image has the variant's tools/testing/selftests, after its
/// series): checked before anything boots, with the place in the suite
/// file.
pub fn present(wanted: &SelftestsByVariant, p: &Prepared) -> Result<()> {
    for Wanted {
        suite_file: s,
        case,
        test,
        rel,
    } in wanted.get(&p.variant).into_iter().flatten()
    {
        let file = p.manifest.source_dir.join(rel);
        if !file.is_file() {
            bail!(
                "{}: {test} of case '{case}' is not in the source of variant '{}' ({} does not exist)",
                test_position(s, test),
                p.variant,
                file.display()
            );
        }
    }
    Ok(())
}
