//! Suite files (`suites/*.yaml`): which variants a suite runs on, its cases,
//! each case's agent steps with what each must show, and per-variant
//! expected outcomes. Errors point at file, line and column, before
//! anything boots.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use coexist_proto::Step;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::variant::yaml_error;

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
    pub cases: Vec<Case>,
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
    pub expect: BTreeMap<String, Expected>,
}

/// What a case is meant to do on a variant. In YAML: `pass`,
/// `{fail: {step: <label or index>, errno: EBUSY}}` or
/// `{xfail: {reason: ..., ref: <upstream reference>}}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Every step shows what it must; no splat.
    Pass,
    /// The named step (its `as` label, or 1-based index) is refused with
    /// this errno; the case stops there; no splat.
    Fail { step: StepRef, errno: String },
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
                f.write_str("`pass`, `{fail: {step, errno}}` or `{xfail: {reason, ref}}`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Expected, E> {
                match v {
                    "pass" => Ok(Expected::Pass),
                    other => Err(E::custom(format!(
                        "unknown expectation '{other}' (pass, {{fail: ...}}, {{xfail: ...}})"
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

/// What a step must show. Without `errno`, the step must succeed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepExpect {
    /// The step must fail with this errno name (e.g. EBUSY).
    pub errno: Option<String>,
    /// Output (what userspace saw, or the file read) must equal this.
    pub output: Option<String>,
    pub output_contains: Option<String>,
    pub output_not_contains: Option<String>,
    /// bpf_stats
    pub hits: Option<u64>,
    pub hits_min: Option<u64>,
    pub ret: Option<i64>,
    pub arg0: Option<u64>,
    pub seen: Option<String>,
    /// ftrace_state
    pub present: Option<bool>,
    pub flags: Option<String>,
    pub refs: Option<u64>,
    /// repeat / concurrently: how many inner steps may fail.
    pub failed: Option<u64>,
    /// concurrently: every thread ran at least this many iterations.
    pub min_iterations: Option<u64>,
    /// repeat / concurrently: inner steps may fail only with these errnos.
    pub errnos_allowed: Option<Vec<String>>,
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

/// Step kinds a suite may use, with the agent's field names.
pub const STEP_KINDS: &[&str] = &[
    "exec",
    "read",
    "write",
    "insmod",
    "rmmod",
    "sleep",
    "livepatch_load",
    "livepatch_disable",
    "livepatch_unload",
    "bpf_attach",
    "bpf_detach",
    "bpf_stats",
    "trigger",
    "ftrace_state",
    "repeat",
    "concurrently",
];

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
        if matches!(self.0, "bpf_stats" | "bpf_detach") {
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
                let mut step = None;
                let mut label = None;
                let mut expect = None;
                let mut timeout = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "as" => label = Some(map.next_value::<String>()?),
                        "expect" => expect = Some(map.next_value::<StepExpect>()?),
                        "timeout" => timeout = Some(map.next_value::<f64>()?),
                        k if STEP_KINDS.contains(&k) => {
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
                                STEP_KINDS.join(", "),
                                META_KEYS.join(", ")
                            )))
                        }
                    }
                }
                let Some((step, handle_ref)) = step else {
                    return Err(de::Error::custom(format!(
                        "the step names no kind (one of: {})",
                        STEP_KINDS.join(", ")
                    )));
                };
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

/// The 1-based (line, column) of the first `needle` at or after line `from`.
fn find_from(text: &str, from: usize, needle: &str) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
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
pub fn load(path: &Path, variants: &[String], fixtures: &Fixtures) -> Result<Suite> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    parse(&text, path, variants, fixtures)
}

/// Names the suite checks against.
#[derive(Clone, Debug, Default)]
pub struct Fixtures {
    pub modules: Vec<String>,
    pub bpf_programs: Vec<String>,
    pub triggers: Vec<String>,
}

pub fn parse(text: &str, path: &Path, variants: &[String], fx: &Fixtures) -> Result<Suite> {
    let file: SuiteFile = serde_yaml::from_str(text).map_err(|e| yaml_error(path, &e))?;
    let at = |from: usize, needle: &str| -> String {
        match find_from(text, from, needle) {
            Some((l, c)) => format!("{}:{l}:{c}", path.display()),
            None => format!("{}:{from}", path.display()),
        }
    };
    for v in &file.variants {
        if !variants.contains(v) {
            bail!(
                "{}: unknown variant '{v}' (known: {})",
                at(1, v),
                variants.join(", ")
            );
        }
    }
    if file.cases.is_empty() {
        bail!("{}: the suite has no cases", path.display());
    }
    for (ci, case) in file.cases.iter().enumerate() {
        let line = find_from(text, 1, &format!("name: {}", case.name))
            .map(|p| p.0)
            .unwrap_or(1);
        if file.cases[..ci].iter().any(|c| c.name == case.name) {
            bail!(
                "{}: case '{}' is declared twice",
                at(line, &case.name),
                case.name
            );
        }
        let case_vs = case.variants.as_deref().unwrap_or(&file.variants);
        for v in case_vs {
            if !variants.contains(v) {
                bail!(
                    "{}: case '{}': unknown variant '{v}'",
                    at(line, v),
                    case.name
                );
            }
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
        let mut labels: Vec<&str> = Vec::new();
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
                        StepRef::Label(l) => labels.contains(&l.as_str()),
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
                Expected::Pass => {}
            }
        }
    }
    Ok(Suite {
        file,
        path: path.to_path_buf(),
    })
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

fn check_steps<'a>(
    steps: &'a [SuiteStep],
    labels: &mut Vec<&'a str>,
    fx: &Fixtures,
    at: &dyn Fn(&str) -> String,
    case: &str,
    top: bool,
) -> Result<()> {
    for s in steps {
        if let Some(e) = &s.expect.errno {
            check_errno(e).map_err(|m| anyhow::anyhow!("{}: case '{case}': {m}", at(e)))?;
        }
        for e in s.expect.errnos_allowed.iter().flatten() {
            check_errno(e).map_err(|m| anyhow::anyhow!("{}: case '{case}': {m}", at(e)))?;
        }
        if let Some(r) = &s.handle_ref {
            if !labels.contains(&r.as_str()) {
                bail!(
                    "{}: case '{case}': handle '{r}' names no earlier step (label it with `as: {r}`)",
                    at(&format!("handle: {r}"))
                );
            }
        }
        check_step(&s.step, fx, at, case)?;
        if let Some(l) = &s.label {
            if !top {
                bail!(
                    "{}: case '{case}': labels are for top-level steps",
                    at(&format!("as: {l}"))
                );
            }
            if labels.contains(&l.as_str()) {
                bail!(
                    "{}: case '{case}': label '{l}' is used twice",
                    at(&format!("as: {l}"))
                );
            }
            labels.push(l);
        }
    }
    Ok(())
}

fn check_step(step: &Step, fx: &Fixtures, at: &dyn Fn(&str) -> String, case: &str) -> Result<()> {
    let module = |m: &str| -> Result<()> {
        let norm = m.replace('-', "_");
        if m.contains('/') || fx.modules.iter().any(|k| k.replace('-', "_") == norm) {
            Ok(())
        } else {
            bail!(
                "{}: case '{case}': unknown fixture module '{m}' (known: {})",
                at(m),
                fx.modules.join(", ")
            )
        }
    };
    match step {
        Step::Insmod { module: m, .. } | Step::LivepatchLoad { module: m, .. } => module(m)?,
        Step::BpfAttach { program, .. } if !fx.bpf_programs.contains(program) => {
            bail!(
                "{}: case '{case}': unknown BPF program '{program}' (known: {})",
                at(program),
                fx.bpf_programs.join(", ")
            );
        }
        Step::Trigger { target } if !fx.triggers.contains(target) => {
            bail!(
                "{}: case '{case}': unknown trigger target '{target}' (known: {})",
                at(target),
                fx.triggers.join(", ")
            );
        }
        Step::Repeat { steps, .. } => {
            for s in steps {
                check_step(s, fx, at, case)?;
            }
        }
        Step::Concurrently { lists, .. } => {
            for s in lists.iter().flatten() {
                check_step(s, fx, at, case)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The project's fixture names: modules (samples and own), BPF programs
/// (from the sources), trigger targets.
pub fn project_fixtures(root: &Path) -> Fixtures {
    let mut modules: Vec<String> = [
        "livepatch-sample",
        "livepatch-shadow-mod",
        "livepatch-callbacks-demo",
        "ftrace-direct",
        "ftrace-direct-too",
        "ftrace-direct-modify",
        "ftrace-direct-multi",
        "ftrace-direct-multi-modify",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(rd) = std::fs::read_dir(root.join("images/fixtures/modules")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".c") {
                modules.push(stem.to_string());
            }
        }
    }
    let mut bpf_programs = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("images/fixtures/bpf")) {
        for e in rd.flatten() {
            if let Ok(src) = std::fs::read_to_string(e.path()) {
                // `SEC("...")\nint name(`: the program names.
                let mut prev_sec = false;
                for l in src.lines() {
                    if prev_sec {
                        if let Some(rest) = l.trim().strip_prefix("int ") {
                            if let Some(name) = rest.split('(').next() {
                                bpf_programs.push(name.trim().to_string());
                            }
                        }
                    }
                    prev_sec = l.trim_start().starts_with("SEC(\"f");
                }
            }
        }
    }
    modules.sort();
    bpf_programs.sort();
    Fixtures {
        modules,
        bpf_programs,
        triggers: vec!["cmdline_proc_show".into(), "coexist_target_value".into()],
    }
}

/// Every suite in `suites/`, sorted by name.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("suites");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx() -> Fixtures {
        Fixtures {
            modules: vec!["livepatch-sample".into(), "coexist_target".into()],
            bpf_programs: vec!["cx_fentry".into(), "cx_fexit".into()],
            triggers: vec!["cmdline_proc_show".into()],
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
    fn the_project_suites_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fx = project_fixtures(&root);
        assert!(
            fx.bpf_programs.contains(&"cx_fexit_seq".to_string()),
            "{:?}",
            fx.bpf_programs
        );
        let vs: Vec<String> = crate::variant::Project { root: root.clone() }
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
