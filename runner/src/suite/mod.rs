//! Suites: `suites/*.yaml` -> checked [`Suite`]s.
//!
//! In: a suite file, the names of the declared variants, and the fixture
//! names the project has ([`FixtureNames`]). Out: a [`Suite`]: which
//! variants it runs on, its cases, each case's agent steps with what each
//! must show ([`crate::steps::StepExpect`], parsed by the step's family),
//! and per-variant expected outcomes ([`Expected`]). Every error points at
//! file, line and column, before anything builds or boots.
//!
//! - this module: the file format and its checks; a `kselftest:` or
//!   `ftracetest:` section becomes one case per test, each with one
//!   `selftest` step (`crate::steps::selftest`).
//! - `names`: the fixture and selftest names suites may use, read from
//!   the project.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coexist_proto::Step;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::input::{self, find_from};
use crate::steps::{self, StepExpect};

use crate::image::FixtureNames;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    pub suite: String,
    #[serde(default)]
    pub description: String,
    /// Variants every case runs on (a case may narrow them).
    pub variants: Vec<String>,
    /// Regexes of splat titles that do not fail a case.
    #[serde(default)]
    pub allow_splats: Vec<String>,
    /// Default per-step timeout in seconds.
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    #[serde(default)]
    pub cases: Vec<Case>,
    /// Kernel selftests run by the kselftest runner: one case per test
    /// (`kselftest/<collection>/<test>`), added after `cases`.
    #[serde(default)]
    pub kselftest: Option<KselftestSection>,
    /// ftracetest test cases: one case per test
    /// (`ftracetest/<path under test.d>`), added after `cases`.
    #[serde(default)]
    pub ftracetest: Option<FtracetestSection>,
}

/// `kselftest: {collection: livepatch, tests: [...]}`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KselftestSection {
    /// A directory of `tools/testing/selftests` the image has.
    pub collection: String,
    pub tests: Vec<SelftestDecl>,
}

/// `ftracetest: {tests: [test.d/direct/ftrace-direct.tc, ...]}`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtracetestSection {
    pub tests: Vec<SelftestDecl>,
}

/// One selftest: its name, or `{test, description, expect, timeout}`.
/// Without `expect`, the test must pass on every variant.
#[derive(Clone, Debug)]
pub struct SelftestDecl {
    pub test: String,
    pub description: String,
    pub expect: BTreeMap<String, Expected>,
    pub timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelftestFull {
    test: String,
    #[serde(default)]
    description: String,
    #[serde(default, deserialize_with = "input::unique_map")]
    expect: BTreeMap<String, Expected>,
    #[serde(default)]
    timeout: Option<f64>,
}

impl<'de> Deserialize<'de> for SelftestDecl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SelftestDecl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a test (`test-livepatch.sh`) or `{test, description, expect, timeout}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SelftestDecl, E> {
                Ok(SelftestDecl {
                    test: v.to_string(),
                    description: String::new(),
                    expect: BTreeMap::new(),
                    timeout: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SelftestDecl, A::Error> {
                let f = SelftestFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SelftestDecl {
                    test: f.test,
                    description: f.description,
                    expect: f.expect,
                    timeout: f.timeout,
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn default_timeout() -> f64 {
    60.0
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Narrows the suite's variants for this case.
    #[serde(default)]
    pub variants: Option<Vec<String>>,
    /// Time the case spends on purpose (stress durations), excluded from
    /// the matrix speed figure.
    #[serde(default)]
    pub fixed_seconds: f64,
    pub steps: Vec<SuiteStep>,
    /// Expected outcome per variant; `default` covers the others.
    #[serde(deserialize_with = "input::unique_map")]
    pub expect: BTreeMap<String, Expected>,
}

/// What a case is meant to do on a variant. In YAML: `pass`,
/// `{fail: {step: <label or index>, errno: EBUSY}}` or
/// `{xfail: {reason: ..., ref: <upstream reference>}}`; a selftest case
/// also takes `fail` (the test reports a failure) and `skip`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Every step shows what it must; no splat.
    Pass,
    /// The named step (its `as` label, or 1-based index) is refused with
    /// this errno; the case stops there; no splat.
    Fail { step: StepRef, errno: String },
    /// A selftest case: the test reports a failure; no splat.
    #[serde(rename = "fail")]
    TestFails,
    /// A selftest case: the test reports that it skipped; no splat.
    Skip,
    /// A known kernel bug: still run, still shown.
    Xfail {
        reason: String,
        #[serde(rename = "ref")]
        reference: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailSpec {
    step: StepRef,
    errno: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct XfailSpec {
    reason: String,
    #[serde(rename = "ref")]
    reference: String,
}

impl<'de> Deserialize<'de> for Expected {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Expected;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("`pass`, `{fail: {step, errno}}` or `{xfail: {reason, ref}}` (selftests: also `fail`, `skip`)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expected, E> {
                match v {
                    "pass" => Ok(Expected::Pass),
                    "fail" => Ok(Expected::TestFails),
                    "skip" => Ok(Expected::Skip),
                    other => Err(E::custom(format!(
                        "unknown expectation '{other}' (pass, {{fail: ...}}, {{xfail: ...}}; selftests: also fail, skip)"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Expected, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("empty expectation"));
                };
                let e = match key.as_str() {
                    "fail" => {
                        let f: FailSpec = map.next_value()?;
                        Expected::Fail {
                            step: f.step,
                            errno: f.errno,
                        }
                    }
                    "xfail" => {
                        let x: XfailSpec = map.next_value()?;
                        Expected::Xfail {
                            reason: x.reason,
                            reference: x.reference,
                        }
                    }
                    other => {
                        return Err(de::Error::custom(format!(
                            "unknown expectation '{other}' (pass, fail, xfail)"
                        )))
                    }
                };
                if let Some(k) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one expectation per variant ('{k}' is a second)"
                    )));
                }
                Ok(e)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StepRef {
    Index(usize),
    Label(String),
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepRef::Index(i) => write!(f, "step {i}"),
            StepRef::Label(l) => write!(f, "step '{l}'"),
        }
    }
}

/// One step of a case: the agent step, its label, what it must show.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteStep {
    pub step: Step,
    /// Label (`as:`) for later references (`handle: <label>`, expected failures).
    pub label: Option<String>,
    /// For bpf_stats / bpf_detach: the label of the bpf_attach whose handle to use.
    pub handle_ref: Option<String>,
    pub expect: StepExpect,
    pub timeout: Option<f64>,
}

const META_KEYS: &[&str] = &["as", "expect", "timeout"];

/// Deserializes a step's arguments into the agent's [`Step`] for `kind`.
struct StepArgs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for StepArgs<'_> {
    type Value = (Step, Option<String>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let mut obj = match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => serde_yaml::Mapping::new(),
            other => {
                return Err(de::Error::custom(format!(
                    "the arguments of '{}' must be a mapping, not {}",
                    self.0,
                    kind_of(&other)
                )))
            }
        };
        // A handle given as a label is resolved when the case runs.
        let mut handle_ref = None;
        if steps::bpf::takes_handle(self.0) {
            if let Some(serde_yaml::Value::String(l)) = obj.get("handle") {
                handle_ref = Some(l.clone());
                obj.insert("handle".into(), serde_yaml::Value::Number(0.into()));
            }
        }
        obj.insert("step".into(), serde_yaml::Value::String(self.0.to_string()));
        let step: Step = serde_yaml::from_value(serde_yaml::Value::Mapping(obj))
            .map_err(|e| de::Error::custom(format!("'{}': {e}", self.0)))?;
        Ok((step, handle_ref))
    }
}

/// Parses `expect:` for a known step, inside its mapping (so errors point
/// into it).
struct ExpectSeed<'a>(&'a Step);

impl<'de> DeserializeSeed<'de> for ExpectSeed<'_> {
    type Value = StepExpect;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'a>(&'a Step);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = StepExpect;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of expectations (e.g. `{output: ..., errno: EBUSY}`)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StepExpect, A::Error> {
                let mut m = serde_yaml::Mapping::new();
                while let Some(k) = map.next_key::<serde_yaml::Value>()? {
                    let v = map.next_value::<serde_yaml::Value>()?;
                    let mut one = serde_yaml::Mapping::new();
                    one.insert(k.clone(), v.clone());
                    // Checked a field at a time, so the error is placed at it.
                    steps::parse_expect(self.0, serde_yaml::Value::Mapping(one))
                        .map_err(de::Error::custom)?;
                    m.insert(k, v);
                }
                steps::parse_expect(self.0, serde_yaml::Value::Mapping(m))
                    .map_err(de::Error::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<StepExpect, E> {
                Ok(StepExpect::default())
            }
        }
        d.deserialize_any(V(self.0))
    }
}

fn kind_of(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "null",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

impl<'de> Deserialize<'de> for SuiteStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SuiteStep;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a step: a mapping with one step kind (e.g. `trigger: {target: cmdline_proc_show}`) and optional `as`, `expect`, `timeout`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SuiteStep, A::Error> {
                let kinds = steps::suite_kinds();
                let mut step: Option<(Step, Option<String>)> = None;
                let mut label = None;
                let mut expect: Option<StepExpect> = None;
                // `expect` before the kind: parsed once the kind is known.
                let mut expect_early: Option<serde_yaml::Value> = None;
                let mut timeout = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "as" => label = Some(map.next_value::<String>()?),
                        "expect" => match &step {
                            Some((s, _)) => expect = Some(map.next_value_seed(ExpectSeed(s))?),
                            None => expect_early = Some(map.next_value()?),
                        },
                        "timeout" => timeout = Some(map.next_value::<f64>()?),
                        k if kinds.contains(&k) => {
                            if step.is_some() {
                                return Err(de::Error::custom(format!(
                                    "a step has one kind; '{k}' is a second one (start a new list item with '-')"
                                )));
                            }
                            step = Some(map.next_value_seed(StepArgs(k))?);
                        }
                        k => {
                            return Err(de::Error::custom(format!(
                                "unknown step '{k}' (steps: {}; step keys: {})",
                                kinds.join(", "),
                                META_KEYS.join(", ")
                            )))
                        }
                    }
                }
                let Some((step, handle_ref)) = step else {
                    return Err(de::Error::custom(format!(
                        "the step names no kind (one of: {})",
                        kinds.join(", ")
                    )));
                };
                if let Some(v) = expect_early {
                    expect = Some(steps::parse_expect(&step, v).map_err(de::Error::custom)?);
                }
                Ok(SuiteStep {
                    step,
                    label,
                    handle_ref,
                    expect: expect.unwrap_or_default(),
                    timeout,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A loaded, checked suite.
#[derive(Clone, Debug)]
pub struct Suite {
    pub file: SuiteFile,
    pub path: PathBuf,
}

impl Suite {
    pub fn expected(&self, case: &Case, variant: &str) -> Expected {
        case.expect
            .get(variant)
            .or_else(|| case.expect.get("default"))
            .cloned()
            .unwrap_or(Expected::Pass)
    }

    pub fn case_variants<'a>(&'a self, case: &'a Case) -> &'a [String] {
        case.variants.as_deref().unwrap_or(&self.file.variants)
    }
}

/// Parses and checks a suite file. `variants` and `fixtures` are the names
/// that exist (modules and BPF programs), for the checks.
pub fn load(path: &Path, variants: &[String], fixtures: &FixtureNames) -> Result<Suite> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    parse(&text, path, variants, fixtures)
}

pub fn parse(text: &str, path: &Path, variants: &[String], fx: &FixtureNames) -> Result<Suite> {
    let file: SuiteFile =
        serde_yaml::from_str(text).map_err(|e| input::yaml_error_in(text, path, &e))?;
    let at = |from: usize, needle: &str| input::place(path, text, from, needle);
    let fail = |pos: String, m: String| anyhow::anyhow!("{pos}: {m}");
    input::check_name("suite", &file.suite).map_err(|m| fail(at(1, "suite:"), m))?;
    check_variant_list(&file.variants, variants).map_err(|(n, m)| fail(at(1, &n), m))?;
    input::check_seconds("timeout", file.timeout, 0.0, MAX_SECONDS)
        .map_err(|m| fail(at(1, "timeout:"), m))?;
    for a in &file.allow_splats {
        regex::Regex::new(a)
            .map_err(|e| fail(at(1, a), format!("allow_splats: not a regex: {e}")))?;
    }
    if file.cases.is_empty() && file.kselftest.is_none() && file.ftracetest.is_none() {
        bail!("{}: the suite has no cases", at(1, "cases"));
    }
    let mut from = 1;
    for (ci, case) in file.cases.iter().enumerate() {
        let line = find_from(text, from, &format!("name: {}", case.name))
            .map(|p| p.0)
            .unwrap_or(from);
        from = line + 1;
        input::check_case_name(&case.name).map_err(|m| fail(at(line, &case.name), m))?;
        if case.steps.is_empty() {
            bail!(
                "{}: case '{}' has no steps",
                at(line, &case.name),
                case.name
            );
        }
        if !(case.fixed_seconds.is_finite() && (0.0..=MAX_SECONDS).contains(&case.fixed_seconds)) {
            bail!(
                "{}: case '{}': fixed_seconds {} is out of range (0 to {MAX_SECONDS})",
                at(line, "fixed_seconds"),
                case.name,
                case.fixed_seconds
            );
        }
        if file.cases[..ci].iter().any(|c| c.name == case.name) {
            bail!(
                "{}: case '{}' is declared twice",
                at(line, &case.name),
                case.name
            );
        }
        let case_vs = case.variants.as_deref().unwrap_or(&file.variants);
        if case.variants.is_some() {
            check_variant_list(case_vs, variants)
                .map_err(|(n, m)| fail(at(line, &n), format!("case '{}': {m}", case.name)))?;
        }
        for k in case.expect.keys() {
            if k != "default" && !case_vs.contains(k) {
                bail!(
                    "{}: case '{}' has an expectation for '{k}', which it does not run on ({})",
                    at(line, &format!("{k}:")),
                    case.name,
                    case_vs.join(", ")
                );
            }
        }
        let mut labels: Vec<(&str, &str)> = Vec::new();
        check_steps(
            &case.steps,
            &mut labels,
            fx,
            &|needle| at(line, needle),
            &case.name,
            true,
        )?;
        for (v, e) in &case.expect {
            match e {
                Expected::Fail { step, errno } => {
                    let ok = match step {
                        StepRef::Index(i) => *i >= 1 && *i <= case.steps.len(),
                        StepRef::Label(l) => labels.iter().any(|(x, _)| x == l),
                    };
                    if !ok {
                        bail!(
                            "{}: case '{}', expectation for '{v}': no {step} in this case",
                            at(line, &format!("{v}:")),
                            case.name
                        );
                    }
                    check_errno(errno).map_err(|m| anyhow::anyhow!("{}: {m}", at(line, errno)))?;
                }
                Expected::Xfail { reason, reference } => {
                    if reason.trim().is_empty() || reference.trim().is_empty() {
                        bail!(
                            "{}: case '{}': an xfail needs a reason and an upstream reference",
                            at(line, "xfail"),
                            case.name
                        );
                    }
                }
                Expected::TestFails | Expected::Skip => bail!(
                    "{}: case '{}', expectation for '{v}': `fail` alone and `skip` are for selftest cases; a case names the step that is refused: {{fail: {{step: <label>, errno: EBUSY}}}}",
                    at(line, &format!("{v}:")),
                    case.name
                ),
                Expected::Pass => {}
            }
        }
    }
    let mut file = file;
    expand_selftests(&mut file, text, path, fx)?;
    if file.cases.is_empty() {
        bail!(
            "{}: the suite has no cases (and no kselftest or ftracetest tests)",
            at(1, "cases")
        );
    }
    Ok(Suite {
        file,
        path: path.to_path_buf(),
    })
}

/// The time a selftest's agent gets before it stops the test itself,
/// inside the host's step timeout, so the output so far comes back.
pub fn agent_timeout_ms(step_timeout_s: f64) -> u64 {
    let margin = (step_timeout_s * 0.1).clamp(1.0, 10.0);
    ((step_timeout_s - margin).max(0.5) * 1000.0) as u64
}

/// Adds one case per `kselftest:` and `ftracetest:` test, after checking
/// each (its place in the file is given on error).
fn expand_selftests(
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
            for (v, e) in &t.expect {
                if v != "default" && !file.variants.contains(v) {
                    bail!(
                        "{}: test '{name}' has an expectation for '{v}', which the suite does not run on ({})",
                        at(&format!("{v}:")),
                        file.variants.join(", ")
                    );
                }
                match e {
                    Expected::Fail { .. } => bail!(
                        "{}: test '{name}', expectation for '{v}': a selftest fails as a whole; write `fail`",
                        at(&format!("{v}:"))
                    ),
                    Expected::Xfail { reason, reference }
                        if reason.trim().is_empty() || reference.trim().is_empty() =>
                    {
                        bail!(
                            "{}: test '{name}': an xfail needs a reason and an upstream reference",
                            at("xfail")
                        )
                    }
                    _ => {}
                }
            }
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

/// Errno names the expectations may use.
pub const ERRNOS: &[&str] = &[
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "E2BIG",
    "EBADF",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "EBUSY",
    "EEXIST",
    "ENODEV",
    "EINVAL",
    "ENOSPC",
    "ERANGE",
    "EDEADLK",
    "ENOSYS",
    "ELOOP",
    "ENODATA",
    "ETIMEDOUT",
    "EOPNOTSUPP",
    "ENOTSUPP",
    "ENOEXEC",
    "ENOTTY",
];

fn check_errno(e: &str) -> Result<(), String> {
    if ERRNOS.contains(&e) {
        Ok(())
    } else {
        Err(format!(
            "unknown errno name '{e}' (known: {})",
            ERRNOS.join(", ")
        ))
    }
}

/// The longest timeout or duration a suite may ask for, in seconds.
pub const MAX_SECONDS: f64 = 3600.0;

/// A list of variants: not empty, each known, none twice. Err: (text to
/// point at, message).
fn check_variant_list(list: &[String], known: &[String]) -> Result<(), (String, String)> {
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

fn check_steps<'a>(
    steps: &'a [SuiteStep],
    labels: &mut Vec<(&'a str, &'static str)>,
    fx: &FixtureNames,
    at: &dyn Fn(&str) -> String,
    case: &str,
    top: bool,
) -> Result<()> {
    for s in steps {
        for e in steps::errnos_named(&s.expect) {
            check_errno(e).map_err(|m| anyhow::anyhow!("{}: case '{case}': {m}", at(e)))?;
        }
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

/// Every suite in `suites/`, sorted by name.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("suites");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    if let Some(y) = v.iter().find(|p| p.extension().is_some_and(|x| x == "yml")) {
        bail!(
            "{}: suites are read from *.yaml files only; rename it to {}",
            y.display(),
            y.with_extension("yaml").display()
        );
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx() -> FixtureNames {
        FixtureNames {
            modules: vec!["livepatch-sample".into(), "coexist_target".into()],
            bpf_programs: [
                ("cx_fentry", "fentry"),
                ("cx_fexit", "fexit"),
                ("cx_map", ".maps"),
            ]
            .iter()
            .map(|(n, s)| crate::image::BpfProgram {
                name: n.to_string(),
                section: s.to_string(),
            })
            .collect(),
            triggers: vec!["cmdline_proc_show".into()],
            selftests: vec!["livepatch".into(), "ftrace".into()],
        }
    }

    fn vars() -> Vec<String> {
        vec!["baseline".into(), "share-ipmodify".into()]
    }

    const GOOD: &str = "\
suite: t
variants: [baseline, share-ipmodify]
cases:
  - name: lp-then-fentry
    steps:
      - livepatch_load: {module: livepatch-sample}
      - bpf_attach: {program: cx_fentry, kind: fentry, target: cmdline_proc_show}
        as: fentry
      - trigger: {target: cmdline_proc_show}
        expect: {output: \"this has been live patched\\n\"}
      - bpf_stats: {handle: fentry}
        expect: {hits: 1}
    expect:
      default: pass
      baseline: {fail: {step: fentry, errno: EBUSY}}
";

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            parse(text, Path::new("s.yaml"), &vars(), &fx()).unwrap_err()
        )
    }

    #[test]
    fn parses_a_complete_case() {
        let s = parse(GOOD, Path::new("s.yaml"), &vars(), &fx()).unwrap();
        let c = &s.file.cases[0];
        assert_eq!(c.steps.len(), 4);
        assert_eq!(c.steps[1].label.as_deref(), Some("fentry"));
        assert_eq!(c.steps[3].handle_ref.as_deref(), Some("fentry"));
        assert_eq!(
            c.steps[2].expect.output.as_deref(),
            Some("this has been live patched\n")
        );
        assert_eq!(s.expected(c, "share-ipmodify"), Expected::Pass);
        assert_eq!(
            s.expected(c, "baseline"),
            Expected::Fail {
                step: StepRef::Label("fentry".into()),
                errno: "EBUSY".into()
            }
        );
    }

    #[test]
    fn unknown_step_has_its_position() {
        let t = GOOD.replace("      - trigger:", "      - trigr:");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:9:9: "), "{e}");
        assert!(e.contains("unknown step 'trigr'"), "{e}");
    }

    #[test]
    fn wrong_type_has_its_position() {
        let t = GOOD.replace("expect: {hits: 1}", "expect: {hits: many}");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:12:"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
        let t = GOOD.replace("kind: fentry,", "kind: kprobe,");
        let e = err(&t);
        assert!(e.starts_with("s.yaml:7:"), "{e}");
        assert!(e.contains("kprobe"), "{e}");
    }

    #[test]
    fn expectation_that_does_not_apply_to_the_kind_is_placed() {
        let t = GOOD.replace(
            "expect: {output: \"this has been live patched\\n\"}",
            "expect: {output_contains: x, hits: 1}",
        );
        let e = err(&t);
        assert!(e.starts_with("s.yaml:10:"), "{e}");
        assert!(
            e.contains("expectation 'hits' does not apply to a 'trigger' step"),
            "{e}"
        );
    }

    #[test]
    fn unknown_variant_fixture_and_label_are_placed() {
        let e = err(&GOOD.replace(
            "variants: [baseline, share-ipmodify]",
            "variants: [baseline, nope]",
        ));
        assert!(e.starts_with("s.yaml:2:"), "{e}");
        assert!(e.contains("unknown variant 'nope'"), "{e}");
        let e = err(&GOOD.replace("{module: livepatch-sample}", "{module: livepatch-nope}"));
        assert!(e.starts_with("s.yaml:6:"), "{e}");
        assert!(e.contains("unknown fixture module 'livepatch-nope'"), "{e}");
        let e = err(&GOOD.replace("{handle: fentry}", "{handle: fexit}"));
        assert!(e.starts_with("s.yaml:11:"), "{e}");
        let e = err(&GOOD.replace("program: cx_fentry,", "program: cx_nope,"));
        assert!(e.contains("unknown BPF program 'cx_nope'"), "{e}");
        // A program that is not in a section bpf_attach attaches is not one
        // it may name; the names it may are listed.
        let e = err(&GOOD.replace("program: cx_fentry,", "program: cx_map,"));
        assert!(
            e.contains("unknown BPF program 'cx_map' (known: cx_fentry, cx_fexit)"),
            "{e}"
        );
        let e = err(&GOOD.replace("errno: EBUSY", "errno: EBUZY"));
        assert!(e.contains("unknown errno name 'EBUZY'"), "{e}");
        let e = err(&GOOD.replace("step: fentry, errno", "step: 9, errno"));
        assert!(e.contains("no step 9"), "{e}");
    }

    #[test]
    fn xfail_needs_reason_and_reference() {
        let t = GOOD.replace(
            "baseline: {fail: {step: fentry, errno: EBUSY}}",
            "baseline: {xfail: {reason: \"\", ref: \"\"}}",
        );
        assert!(err(&t).contains("needs a reason and an upstream reference"));
        let t = GOOD.replace(
            "baseline: {fail: {step: fentry, errno: EBUSY}}",
            "baseline: {xfail: {reason: x}}",
        );
        assert!(err(&t).contains("missing field `ref`"), "{}", err(&t));
    }

    #[test]
    fn selftest_sections_become_cases() {
        let t = "\
suite: st
variants: [baseline, share-ipmodify]
timeout: 100
kselftest:
  collection: livepatch
  tests:
    - test-livepatch.sh
    - test: test-callbacks.sh
      timeout: 400
      expect:
        baseline: skip
        share-ipmodify: {xfail: {reason: known, ref: https://lore.kernel.org/x}}
ftracetest:
  tests:
    - test: test.d/direct/ftrace-direct.tc
      expect: {baseline: fail}
";
        let s = parse(t, Path::new("s.yaml"), &vars(), &fx()).unwrap();
        let names: Vec<&str> = s.file.cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "kselftest/livepatch/test-livepatch.sh",
                "kselftest/livepatch/test-callbacks.sh",
                "ftracetest/direct/ftrace-direct.tc"
            ]
        );
        let c = &s.file.cases[1];
        assert_eq!(c.steps[0].timeout, Some(400.0));
        match &c.steps[0].step {
            Step::Selftest {
                runner,
                collection,
                test,
                timeout_ms,
            } => {
                assert_eq!(*runner, coexist_proto::SelftestRunner::Kselftest);
                assert_eq!(
                    (collection.as_str(), test.as_str()),
                    ("livepatch", "test-callbacks.sh")
                );
                // The agent stops the test before the host gives up on the step.
                assert_eq!(*timeout_ms, 390_000);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.expected(c, "baseline"), Expected::Skip);
        assert_eq!(s.expected(&s.file.cases[0], "baseline"), Expected::Pass);
        assert_eq!(
            s.expected(&s.file.cases[2], "baseline"),
            Expected::TestFails
        );
        assert_eq!(s.file.cases[0].steps[0].timeout, Some(100.0));
        assert_eq!(agent_timeout_ms(5.0), 4000);
        // Expectations round-trip through a report.
        for e in [Expected::Skip, Expected::TestFails] {
            let j = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Expected>(&j).unwrap(), e, "{j}");
        }
    }

    #[test]
    fn the_project_suites_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fx = crate::image::project_fixtures(&root);
        let seq = crate::image::BpfProgram {
            name: "cx_fexit_seq".into(),
            section: "fexit".into(),
        };
        assert!(fx.bpf_programs.contains(&seq), "{:?}", fx.bpf_programs);
        let vs: Vec<String> = crate::build::variant::Project { root: root.clone() }
            .load_variants(None)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let files = list_files(&root).unwrap();
        assert!(!files.is_empty());
        for f in files {
            load(&f, &vs, &fx).unwrap();
        }
    }
}
