//! The suite file format: what `suites/*.yaml` says, as parsed. The
//! checks on it are in `check`, the step mappings are decoded in
//! `decode`, and `kselftest:`/`ftracetest:` sections become cases in
//! `selftests`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::decode::SuiteStep;
use crate::input::{self, Errno};

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

/// One selftest: its name, or `{test, description, variants, expect,
/// timeout}`. Without `expect`, the test must pass on every variant;
/// `variants` narrows the suite's (a test that only some kernel lines
/// have).
#[derive(Clone, Debug)]
pub struct SelftestDecl {
    pub test: String,
    pub description: String,
    pub variants: Option<Vec<String>>,
    pub expect: Expectations,
    pub timeout: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SelftestFull {
    test: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    variants: Option<Vec<String>>,
    #[serde(default, deserialize_with = "input::unique_map")]
    expect: Expectations,
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
                    "a test (`test-livepatch.sh`) or `{test, description, variants, expect, timeout}`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SelftestDecl, E> {
                Ok(SelftestDecl {
                    test: v.to_string(),
                    description: String::new(),
                    variants: None,
                    expect: Expectations::new(),
                    timeout: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SelftestDecl, A::Error> {
                let f = SelftestFull::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(SelftestDecl {
                    test: f.test,
                    description: f.description,
                    variants: f.variants,
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
    pub expect: Expectations,
}

/// The expected outcome per variant of a case or selftest.
pub type Expectations = BTreeMap<ExpectKey, Expected>;

/// A key of [`Expectations`]: a variant's name, or `default` (every
/// variant the map does not name; "default" is no variant's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectKey {
    Default,
    Variant(String),
}

impl ExpectKey {
    pub fn as_str(&self) -> &str {
        match self {
            ExpectKey::Default => "default",
            ExpectKey::Variant(v) => v,
        }
    }
}

/// In the order of their names, as the file's keys sort.
impl Ord for ExpectKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for ExpectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ExpectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ExpectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "default" => ExpectKey::Default,
            _ => ExpectKey::Variant(s),
        })
    }
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
    Fail { step: StepRef, errno: Errno },
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

impl Expected {
    /// What a selftest must report on a variant with this expectation (an
    /// xfail is checked for a pass).
    pub fn selftest_outcome(&self) -> crate::steps::selftest::Outcome {
        use crate::steps::selftest::Outcome;
        match self {
            Expected::TestFails => Outcome::Fail,
            Expected::Skip => Outcome::Skip,
            _ => Outcome::Pass,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailSpec {
    step: StepRef,
    errno: Errno,
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

/// The step an expected failure names: its `as:` label, or its 1-based
/// index. Any other scalar (`-1`, `1.5`) is kept as written, as a label:
/// no step has it, so the check (`check::check_expectations`) refuses it
/// and says which labels and indexes the case has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StepRef {
    Index(usize),
    Label(String),
}

impl StepRef {
    /// As written in the suite: `3`, `bpf`.
    pub fn as_written(&self) -> String {
        match self {
            StepRef::Index(i) => i.to_string(),
            StepRef::Label(l) => l.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for StepRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StepRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a step: its `as:` label, or its 1-based index")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StepRef, E> {
                Ok(match usize::try_from(v) {
                    Ok(i) => StepRef::Index(i),
                    Err(_) => StepRef::Label(v.to_string()),
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StepRef, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Ok(StepRef::Label(v.to_string())),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StepRef, E> {
                Ok(StepRef::Label(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<StepRef, E> {
                Ok(StepRef::Label(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StepRef, E> {
                Ok(StepRef::Label(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl fmt::Display for StepRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepRef::Index(i) => write!(f, "step {i}"),
            StepRef::Label(l) => write!(f, "step '{l}'"),
        }
    }
}
