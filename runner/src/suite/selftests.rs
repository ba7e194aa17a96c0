//! `kselftest:` and `ftracetest:` sections -> one case per test, each
//! with one `selftest` step. The rules (which collections, which test
//! names, the case a test becomes, the agent's timeout) are the selftest
//! family's (`crate::steps::selftest`); this walks the sections and
//! places each error in the file.

use std::path::Path;

use anyhow::{bail, Result};
use coexist_proto::Step;

use super::check::{self, check_expectations, Runs, MAX_SECONDS};
use super::format::{Case, SelftestDecl, SuiteFile};
use super::SuiteStep;
use crate::image::FixtureNames;
use crate::input::{self, find_from};
use crate::steps::selftest;
use crate::steps::StepExpect;

/// Adds one case per `kselftest:` and `ftracetest:` test, after checking
/// each (its place in the file is given on error).
pub fn expand_selftests(
    file: &mut SuiteFile,
    text: &str,
    path: &Path,
    variants: &[String],
    fx: &FixtureNames,
) -> Result<()> {
    use coexist_proto::SelftestRunner;
    let mut sections: Vec<(SelftestRunner, String, Vec<SelftestDecl>, usize)> = Vec::new();
    if let Some(k) = &file.kselftest {
        let line = input::line_of(text, "kselftest:");
        let at = |needle: &str| input::place(path, text, line, needle);
        let c = &k.collection;
        selftest::check_collection(c, fx)
            .map_err(|m| anyhow::anyhow!("{}: {m}", at("collection")))?;
        sections.push((SelftestRunner::Kselftest, c.clone(), k.tests.clone(), line));
    }
    if let Some(f) = &file.ftracetest {
        let line = input::line_of(text, "ftracetest:");
        selftest::check_ftracetest(fx)
            .map_err(|m| anyhow::anyhow!("{}:{line}: {m}", path.display()))?;
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
            let case_name = selftest::case_name(runner, &collection, name)
                .map_err(|m| anyhow::anyhow!("{}: {m}", at(name)))?;
            input::check_case_name(&case_name).map_err(|m| anyhow::anyhow!("{}: {m}", at(name)))?;
            if file.cases.iter().any(|c| c.name == case_name) {
                bail!("{}: test '{name}' is listed twice", at(name));
            }
            let timeout = t.timeout.unwrap_or(file.timeout);
            if let Some(x) = t.timeout {
                input::check_seconds("timeout", x, 0.0, MAX_SECONDS)
                    .map_err(|m| anyhow::anyhow!("{}: test '{name}': {m}", at(name)))?;
            }
            let test_vs = t.variants.as_deref().unwrap_or(&file.variants);
            if t.variants.is_some() {
                check::check_variant_list(test_vs, variants)
                    .map_err(|(n, m)| anyhow::anyhow!("{}: test '{name}': {m}", at(&n)))?;
            }
            check_expectations(&t.expect, Runs::Selftest(name), test_vs, &[], 1, &at)?;
            let step = Step::Selftest {
                runner,
                collection: collection.clone(),
                test: name.clone(),
                timeout_ms: selftest::agent_timeout_ms(timeout),
            };
            let expect = StepExpect {
                selftest: selftest::expect_for(&step, selftest::Outcome::Pass),
                ..Default::default()
            };
            file.cases.push(Case {
                name: case_name,
                description: if t.description.is_empty() {
                    format!("{} {collection}/{name}", runner.as_str())
                } else {
                    t.description.clone()
                },
                variants: t.variants.clone(),
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
