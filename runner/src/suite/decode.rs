//! Step decoding: a suite step's mapping (one step kind with its
//! arguments, and `as`, `expect`, `timeout`) -> a [`SuiteStep`], with the
//! agent's [`Step`] and the expectation its family parses
//! (`crate::steps::parse_expect`). Errors are placed inside the mapping.

use std::fmt;

use coexist_proto::Step;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::steps::{self, StepExpect};

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
                    if m.contains_key(&k) {
                        return Err(de::Error::custom(format!(
                            "'{}' is given twice",
                            k.as_str().unwrap_or("?")
                        )));
                    }
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
                // Step keys seen: one given twice would silently replace
                // the first.
                let mut seen: Vec<String> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if META_KEYS.contains(&key.as_str()) {
                        if seen.contains(&key) {
                            return Err(de::Error::custom(format!("'{key}' is given twice")));
                        }
                        seen.push(key.clone());
                    }
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
