//! The checks on a parsed suite file, each error placed at its file, line
//! and column: one [`check_case`] per written case, one
//! [`check_expectations`] for the per-variant expected outcomes of cases
//! and selftests alike, the steps (arguments and fixture names by their
//! family, labels, handles, errnos) and variant lists.

use anyhow::{bail, Result};

use super::format::{Case, ExpectKey, Expectations, Expected, StepRef, SuiteFile};
use super::SuiteStep;
use crate::image::FixtureNames;
use crate::input;
use crate::steps;

/// Whose expectations are checked: a written case (`case 'x'`, on the
/// variants it runs on), or a selftest (`test 'x'`, on the suite's).
pub enum Runs<'a> {
    Case(&'a str),
    Selftest(&'a str),
}

impl Runs<'_> {
    fn who(&self) -> String {
        match self {
            Runs::Case(n) => format!("case '{n}'"),
            Runs::Selftest(n) => format!("test '{n}'"),
        }
    }
}

/// The per-variant expected outcomes: each names a variant it runs on (or
/// `default`), and fits what it is written for. `at` places a needle in
/// the case's (or test's) entry; `labels` are the case's step labels and
/// `n_steps` its step count (a refused step must be one of them).
pub fn check_expectations(
    expect: &Expectations,
    runs: Runs,
    runs_on: &[String],
    labels: &[(&str, &str)],
    n_steps: usize,
    at: &dyn Fn(&str) -> String,
) -> Result<()> {
    let who = runs.who();
    for (key, e) in expect {
        let v = key.as_str();
        if matches!(key, ExpectKey::Variant(name) if !runs_on.contains(name)) {
            bail!(
                "{}: {who} has an expectation for '{v}', which {} does not run on ({})",
                at(&format!("{v}:")),
                match runs {
                    Runs::Case(_) => "it",
                    Runs::Selftest(_) => "the suite",
                },
                runs_on.join(", ")
            );
        }
        match (e, &runs) {
            (Expected::Fail { step, .. }, Runs::Case(_)) => {
                let ok = match step {
                    StepRef::Index(i) => *i >= 1 && *i <= n_steps,
                    StepRef::Label(l) => labels.iter().any(|(x, _)| x == l),
                };
                if !ok {
                    let labels = match labels {
                        [] => "none in this case: give one with `as:`".to_string(),
                        l => l.iter().map(|(x, _)| *x).collect::<Vec<_>>().join(", "),
                    };
                    bail!(
                        "{}: {who}, expectation for '{v}': `step: {}` names no step of this case: \
                         a step is a label ({labels}) or a 1-based index (1 to {n_steps})",
                        at(&format!("{v}:")),
                        step.as_written()
                    );
                }
            }
            (Expected::Fail { .. }, Runs::Selftest(_)) => bail!(
                "{}: {who}, expectation for '{v}': a selftest fails as a whole; write `fail`",
                at(&format!("{v}:"))
            ),
            (Expected::Xfail { reason, reference }, _)
                if reason.trim().is_empty() || reference.trim().is_empty() =>
            {
                bail!(
                    "{}: {who}: an xfail needs a reason and an upstream reference",
                    at("xfail")
                )
            }
            (Expected::TestFails | Expected::Skip, Runs::Case(_)) => bail!(
                "{}: {who}, expectation for '{v}': `fail` alone and `skip` are for selftest cases; a case names the step that is refused: {{fail: {{step: <label>, errno: EBUSY}}}}",
                at(&format!("{v}:"))
            ),
            _ => {}
        }
    }
    Ok(())
}

/// One written case: its name, steps, duration, variants and expected
/// outcomes. `ci` is its index in the file (names are unique), `line`
/// the line its entry starts on.
pub fn check_case(
    file: &SuiteFile,
    ci: usize,
    variants: &[String],
    fx: &FixtureNames,
    at: &dyn Fn(usize, &str) -> String,
    line: usize,
) -> Result<()> {
    let case: &Case = &file.cases[ci];
    let at_case = |needle: &str| at(line, needle);
    let fail = |pos: String, m: String| anyhow::anyhow!("{pos}: {m}");
    input::check_case_name(&case.name).map_err(|m| fail(at_case(&case.name), m))?;
    if case.steps.is_empty() {
        bail!("{}: case '{}' has no steps", at_case(&case.name), case.name);
    }
    if !(case.fixed_seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&case.fixed_seconds)) {
        bail!(
            "{}: case '{}': fixed_seconds {} is out of range (0 to {MAX_SECONDS})",
            at_case("fixed_seconds"),
            case.name,
            case.fixed_seconds
        );
    }
    if file.cases[..ci].iter().any(|c| c.name == case.name) {
        bail!(
            "{}: case '{}' is declared twice",
            at_case(&case.name),
            case.name
        );
    }
    let case_vs = case.variants.as_deref().unwrap_or(&file.variants);
    if case.variants.is_some() {
        check_variant_list(case_vs, variants)
            .map_err(|(n, m)| fail(at_case(&n), format!("case '{}': {m}", case.name)))?;
    }
    let mut labels: Vec<(&str, &str)> = Vec::new();
    check_steps(&case.steps, &mut labels, fx, &at_case, &case.name, true)?;
    check_expectations(
        &case.expect,
        Runs::Case(&case.name),
        case_vs,
        &labels,
        case.steps.len(),
        &at_case,
    )
}

/// The longest timeout or duration a suite may ask for, in seconds.
pub const MAX_SECONDS: f64 = 3600.0;

/// A list of variants: not empty, each known, none twice. Err: (text to
/// point at, message).
pub fn check_variant_list(list: &[String], known: &[String]) -> Result<(), (String, String)> {
    if list.is_empty() {
        return Err((
            "variants".into(),
            format!("the variant list is empty (known: {})", known.join(", ")),
        ));
    }
    for (i, v) in list.iter().enumerate() {
        if !known.contains(v) {
            return Err((
                v.clone(),
                format!("unknown variant '{v}' (known: {})", known.join(", ")),
            ));
        }
        if list[..i].contains(v) {
            return Err((v.clone(), format!("variant '{v}' is listed twice")));
        }
    }
    Ok(())
}

pub fn check_steps<'a>(
    steps: &'a [SuiteStep],
    labels: &mut Vec<(&'a str, &'static str)>,
    fx: &FixtureNames,
    at: &dyn Fn(&str) -> String,
    case: &str,
    top: bool,
) -> Result<()> {
    for s in steps {
        if let Some(r) = &s.handle_ref {
            match labels.iter().find(|(l, _)| l == r) {
                None => bail!(
                    "{}: case '{case}': handle '{r}' names no earlier step (label it with `as: {r}`)",
                    at(&format!("handle: {r}"))
                ),
                Some((_, kind)) if !steps::bpf::gives_handle(kind) => bail!(
                    "{}: case '{case}': handle '{r}' names a '{kind}' step; a handle names a bpf_attach",
                    at(&format!("handle: {r}"))
                ),
                Some(_) => {}
            }
        }
        if let Some(t) = s.timeout {
            input::check_seconds("step timeout", t, 0.0, MAX_SECONDS)
                .map_err(|m| anyhow::anyhow!("{}: case '{case}': {m}", at("timeout:")))?;
        }
        steps::check_args(&s.step)
            .map_err(|(needle, m)| anyhow::anyhow!("{}: case '{case}': {m}", at(&needle)))?;
        steps::check_fixtures(&s.step, fx)
            .map_err(|(needle, m)| anyhow::anyhow!("{}: case '{case}': {m}", at(&needle)))?;
        if let Some(l) = &s.label {
            input::check_name("label", l)
                .map_err(|m| anyhow::anyhow!("{}: case '{case}': {m}", at(l)))?;
            if !top {
                bail!(
                    "{}: case '{case}': labels are for top-level steps",
                    at(&format!("as: {l}"))
                );
            }
            if labels.iter().any(|(x, _)| x == l) {
                bail!(
                    "{}: case '{case}': label '{l}' is used twice",
                    at(&format!("as: {l}"))
                );
            }
            labels.push((l, s.step.kind()));
        }
    }
    Ok(())
}
