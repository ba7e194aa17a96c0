//! `kselftest:` and `ftracetest:` sections -> one case per test, each
//! with one `selftest` step (`crate::steps::selftest`), checked with
//! their place in the file.

use std::path::Path;

use anyhow::{bail, Result};
use coexist_proto::Step;

use super::check::{check_expectations, Runs, MAX_SECONDS};
use super::format::{Case, SelftestDecl, SuiteFile};
use super::SuiteStep;
use crate::image::FixtureNames;
use crate::input::{self, find_from};
use crate::steps::{self, StepExpect};

/// The time a selftest's agent gets before it stops the test itself,
/// inside the host's step timeout, so the output so far comes back.
pub fn agent_timeout_ms(step_timeout_s: f64) -> u64 {
    let margin = (step_timeout_s * 0.1).clamp(1.0, 10.0);
    ((step_timeout_s - margin).max(0.5) * 1000.0) as u64
}

/// Adds one case per `kselftest:` and `ftracetest:` test, after checking
/// each (its place in the file is given on error).
pub fn expand_selftests(
    file: &mut SuiteFile,
    text: &str,
    path: &Path,
    fx: &FixtureNames,
) -> Result<()> {
    use coexist_proto::SelftestRunner;
    let mut sections: Vec<(SelftestRunner, String, Vec<SelftestDecl>, usize)> = Vec::new();
    if let Some(k) = &file.kselftest {
        let line = input::line_of(text, "kselftest:");
        let at = |needle: &str| input::place(path, text, line, needle);
        let c = &k.collection;
        if !crate::image::initramfs::is_selftest_dir(c) {
            bail!(
                "{}: kselftest collection '{c}' is not a directory name of tools/testing/selftests",
                at("collection")
            );
        }
        if !fx.selftests.contains(c) {
            bail!(
                "{}: kselftest collection '{c}' is not in the image (images/{}.yaml `selftests`: {})",
                at("collection"),
                crate::image::prepare::DEFAULT_RECIPE,
                fx.selftests.join(", ")
            );
        }
        sections.push((SelftestRunner::Kselftest, c.clone(), k.tests.clone(), line));
    }
    if let Some(f) = &file.ftracetest {
        let line = input::line_of(text, "ftracetest:");
        if !fx.selftests.iter().any(|s| s == "ftrace") {
            bail!(
                "{}:{line}: ftracetest needs 'ftrace' in the image (images/{}.yaml `selftests`: {})",
                path.display(),
                crate::image::prepare::DEFAULT_RECIPE,
                fx.selftests.join(", ")
            );
        }
        sections.push((
            SelftestRunner::Ftracetest,
            "ftrace".into(),
            f.tests.clone(),
            line,
        ));
    }
    for (runner, collection, tests, line) in sections {
        let at = |needle: &str| input::place(path, text, line, needle);
        if tests.is_empty() {
            bail!("{}: {} lists no tests", at("tests"), runner.as_str());
        }
        let mut cursor = line;
        for t in &tests {
            let name = &t.test;
            // Positions inside this test's entry.
            let tline = find_from(text, cursor, name).map(|p| p.0).unwrap_or(cursor);
            cursor = tline + 1;
            let at = |needle: &str| input::place(path, text, tline, needle);
            let parts_ok = !name.is_empty()
                && name
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != "..");
            let case_name = match runner {
                SelftestRunner::Kselftest if parts_ok && !name.contains('/') => {
                    format!("kselftest/{collection}/{name}")
                }
                SelftestRunner::Ftracetest if parts_ok && name.ends_with(".tc") => {
                    match name.strip_prefix("test.d/") {
                        Some(rest) => format!("ftracetest/{rest}"),
                        None => bail!(
                            "{}: ftracetest test '{name}' must be a path under test.d/ (test.d/direct/ftrace-direct.tc)",
                            at(name)
                        ),
                    }
                }
                SelftestRunner::Kselftest => bail!(
                    "{}: kselftest test '{name}' must be a file name in tools/testing/selftests/{collection}",
                    at(name)
                ),
                SelftestRunner::Ftracetest => bail!(
                    "{}: ftracetest test '{name}' must be a .tc file under test.d/",
                    at(name)
                ),
            };
            input::check_case_name(&case_name).map_err(|m| anyhow::anyhow!("{}: {m}", at(name)))?;
            if file.cases.iter().any(|c| c.name == case_name) {
                bail!("{}: test '{name}' is listed twice", at(name));
            }
            let timeout = t.timeout.unwrap_or(file.timeout);
            if let Some(x) = t.timeout {
                input::check_seconds("timeout", x, 0.0, MAX_SECONDS)
                    .map_err(|m| anyhow::anyhow!("{}: test '{name}': {m}", at(name)))?;
            }
            check_expectations(&t.expect, Runs::Selftest(name), &file.variants, &[], 1, &at)?;
            let step = Step::Selftest {
                runner,
                collection: collection.clone(),
                test: name.clone(),
                timeout_ms: agent_timeout_ms(timeout),
            };
            let expect = StepExpect {
                selftest: steps::selftest::expect_for(&step, steps::selftest::Outcome::Pass),
                ..Default::default()
            };
            file.cases.push(Case {
                name: case_name,
                description: if t.description.is_empty() {
                    format!("{} {collection}/{name}", runner.as_str())
                } else {
                    t.description.clone()
                },
                variants: None,
                fixed_seconds: 0.0,
                steps: vec![SuiteStep {
                    step,
                    label: None,
                    handle_ref: None,
                    expect,
                    timeout: Some(timeout),
                }],
                expect: t.expect.clone(),
            });
        }
    }
    Ok(())
}
