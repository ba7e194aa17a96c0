//! One home per step kind. The agent's steps ([`coexist_proto::Step`]) fall
//! into families; each family module owns, for its kinds:
//! - the expectation fields a suite may give beyond the common ones
//!   (`errno`, `output`, `output_contains`, `output_not_contains`),
//! - the check of the agent's answer (its typed
//!   [`coexist_proto::AnswerData`]) against them,
//! - the fixture names its steps refer to, checked when a suite loads,
//! - anything else the runner does for them (BPF handles).
//!
//! In: a [`Step`], the [`StepExpect`] parsed for it, an [`Answer`].
//! Out: mismatches, as sentences for people (empty: as required).
//!
//! The agent side has the same families in `images/agent/src/steps/`.

pub mod basic;
pub mod bpf;
pub mod ftrace;
pub mod livepatch;
pub mod selftest;
pub mod stress;

use coexist_proto::{Answer, Step, StepKind};
use serde::{Deserialize, Serialize};

use crate::image::FixtureNames;
use crate::input::Errno;
use crate::text::clip;

/// The families, one module each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Basic,
    Livepatch,
    Bpf,
    Ftrace,
    Stress,
    Selftest,
}

impl Family {
    /// The family of a step. Exhaustive: a new kind of [`Step`] does not
    /// compile until it has a family.
    pub fn of(step: &Step) -> Family {
        match step {
            Step::Exec { .. }
            | Step::Read { .. }
            | Step::Write { .. }
            | Step::Insmod { .. }
            | Step::Rmmod { .. }
            | Step::Sleep { .. }
            | Step::Poweroff
            | Step::Hello { .. }
            | Step::Trigger { .. }
            | Step::ReadFiles { .. } => Family::Basic,
            Step::LivepatchLoad { .. }
            | Step::LivepatchDisable { .. }
            | Step::LivepatchUnload { .. }
            | Step::LivepatchState { .. } => Family::Livepatch,
            Step::BpfAttach { .. } | Step::BpfDetach { .. } | Step::BpfStats { .. } => Family::Bpf,
            Step::FtraceState { .. } => Family::Ftrace,
            Step::Repeat { .. } | Step::Concurrently { .. } => Family::Stress,
            Step::Selftest { .. } => Family::Selftest,
        }
    }
}

/// The runner's own step kinds: `poweroff` ends every fresh-boot case,
/// `hello` starts every guest restored from a snapshot, `selftest`
/// is the one step of each case a suite's `kselftest:`/`ftracetest:`
/// section gives, and `read_files` reads a coverage twin's counts back.
pub const RUNNER_KINDS: [StepKind; 4] = [
    StepKind::Poweroff,
    StepKind::Hello,
    StepKind::Selftest,
    StepKind::ReadFiles,
];

/// Step kinds a suite may use: every kind the agent knows but the
/// runner's own.
pub fn suite_kinds() -> Vec<&'static str> {
    StepKind::all()
        .filter(|k| !RUNNER_KINDS.contains(k))
        .map(StepKind::name)
        .collect()
}

/// Expectation fields every step kind takes.
pub const COMMON_FIELDS: &[&str] = &["errno", "output", "output_contains", "output_not_contains"];

/// What a step must show. Without `errno`, the step must succeed. In a
/// suite it is one flat mapping; the family parts hold the fields of
/// their kinds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepExpect {
    /// The step must fail with this errno name (e.g. EBUSY).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<Errno>,
    /// Output (what userspace saw, or the file read) must equal this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_not_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub livepatch: Option<livepatch::LivepatchExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf: Option<bpf::BpfExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ftrace: Option<ftrace::FtraceExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stress: Option<stress::StressExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selftest: Option<selftest::SelftestExpect>,
}

/// The expectation fields `step` takes beyond [`COMMON_FIELDS`].
pub fn extra_fields(step: &Step) -> &'static [&'static str] {
    match Family::of(step) {
        Family::Basic => &[],
        Family::Livepatch => livepatch::expect_fields(step),
        Family::Bpf => bpf::expect_fields(step),
        Family::Ftrace => ftrace::expect_fields(step),
        Family::Stress => stress::expect_fields(step),
        Family::Selftest => selftest::expect_fields(step),
    }
}

/// Parses a step's `expect:` mapping for its kind: the common fields, and
/// its family's. A field that does not apply to the kind is an error
/// naming the fields that do.
pub fn parse_expect(step: &Step, v: serde_yaml::Value) -> Result<StepExpect, String> {
    let map = match v {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        _ => return Err("`expect` must be a mapping".into()),
    };
    let extra = extra_fields(step);
    let mut common = serde_yaml::Mapping::new();
    let mut family = serde_yaml::Mapping::new();
    for (k, val) in map {
        let name = k.as_str().unwrap_or("").to_string();
        if COMMON_FIELDS.contains(&name.as_str()) {
            common.insert(k, val);
        } else if extra.contains(&name.as_str()) {
            family.insert(k, val);
        } else {
            let mut allowed: Vec<&str> = COMMON_FIELDS.to_vec();
            allowed.extend(extra);
            return Err(format!(
                "expectation '{name}' does not apply to a '{}' step (it takes: {})",
                step.kind(),
                allowed.join(", ")
            ));
        }
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Common {
        errno: Option<Errno>,
        output: Option<String>,
        output_contains: Option<String>,
        output_not_contains: Option<String>,
    }
    let c: Common = serde_yaml::from_value(serde_yaml::Value::Mapping(common))
        .map_err(|e| format!("expect: {e}"))?;
    let mut e = StepExpect {
        errno: c.errno,
        output: c.output,
        output_contains: c.output_contains,
        output_not_contains: c.output_not_contains,
        ..Default::default()
    };
    if !family.is_empty() {
        let fam = serde_yaml::Value::Mapping(family);
        let err = |x: serde_yaml::Error| format!("expect: {x}");
        match Family::of(step) {
            Family::Livepatch => e.livepatch = Some(serde_yaml::from_value(fam).map_err(err)?),
            Family::Bpf => e.bpf = Some(serde_yaml::from_value(fam).map_err(err)?),
            Family::Ftrace => e.ftrace = Some(serde_yaml::from_value(fam).map_err(err)?),
            Family::Stress => e.stress = Some(serde_yaml::from_value(fam).map_err(err)?),
            Family::Basic | Family::Selftest => unreachable!("no extra fields"),
        }
    }
    Ok(e)
}

fn describe_failure(a: &Answer) -> String {
    match (&a.errno_name, &a.error) {
        (Some(n), Some(e)) => format!("{n}: {e}"),
        (Some(n), None) => n.clone(),
        (None, Some(e)) => e.clone(),
        (None, None) => "failed".into(),
    }
}

/// The answer's data as one line of JSON, for evidence.
pub fn data_text(a: &Answer) -> String {
    a.data
        .as_ref()
        .and_then(|d| serde_json::to_string(d).ok())
        .unwrap_or_else(|| "no data".into())
}

/// The most of a step's output a mismatch quotes.
const MAX_QUOTED_OUTPUT: usize = 600;

/// Checks one answer against what its step must show.
pub fn check(e: &StepExpect, a: &Answer) -> Vec<String> {
    let mut m = Vec::new();
    match &e.errno {
        Some(want) => {
            if a.ok {
                m.push(format!(
                    "expected the kernel to refuse with {want}, but the step succeeded"
                ));
            } else if a.errno_name.as_deref() != Some(want.as_str()) {
                m.push(format!("expected {want}, got {}", describe_failure(a)));
            }
            return m;
        }
        None => {
            if !a.ok {
                m.push(format!("the step failed: {}", describe_failure(a)));
                return m;
            }
        }
    }
    // The output as a mismatch quotes it: a line of evidence, so its head
    // and tail only (the whole output is in the step's record).
    let quoted = || clip(&a.output, MAX_QUOTED_OUTPUT);
    if let Some(o) = &e.output {
        if &a.output != o {
            m.push(format!("output {:?}, expected {:?}", quoted(), o));
        }
    }
    if let Some(o) = &e.output_contains {
        if !a.output.contains(o.as_str()) {
            m.push(format!("output {:?} does not contain {:?}", quoted(), o));
        }
    }
    if let Some(o) = &e.output_not_contains {
        if a.output.contains(o.as_str()) {
            m.push(format!("output {:?} contains {:?}", quoted(), o));
        }
    }
    if let Some(l) = &e.livepatch {
        livepatch::check(l, a, &mut m);
    }
    if let Some(b) = &e.bpf {
        bpf::check(b, a, &mut m);
    }
    if let Some(f) = &e.ftrace {
        ftrace::check(f, a, &mut m);
    }
    if let Some(s) = &e.stress {
        stress::check(s, a, &mut m);
    }
    if let Some(s) = &e.selftest {
        selftest::check(s, a, &mut m);
    }
    m
}

/// Step arguments out of range or empty (a huge repeat count, a zero
/// duration, an empty argv). Err: (the text to point at, the message).
pub fn check_args(step: &Step) -> Result<(), (String, String)> {
    match Family::of(step) {
        Family::Basic => basic::check_args(step),
        Family::Livepatch => livepatch::check_args(step),
        Family::Bpf | Family::Ftrace | Family::Selftest => Ok(()),
        Family::Stress => {
            stress::check_args(step)?;
            stress::inner_steps(step)
                .into_iter()
                .try_for_each(check_args)
        }
    }
}

/// A count or a number of milliseconds in `1..=max` (`0..=max` with `zero`).
pub fn check_range(what: &str, v: u64, zero: bool, max: u64) -> Result<(), (String, String)> {
    let min = if zero { 0 } else { 1 };
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err((
            format!("{what}: {v}"),
            format!("{what} {v} is out of range ({min} to {max})"),
        ))
    }
}

/// The longest a step may sleep, wait or run, in milliseconds.
pub const MAX_MS: u64 = 600_000;

/// Checks the fixture names a step refers to (modules, BPF programs,
/// trigger targets). Err: (the text to point at in the file, the message).
pub fn check_fixtures(step: &Step, fx: &FixtureNames) -> Result<(), (String, String)> {
    match Family::of(step) {
        Family::Basic => basic::check_fixtures(step, fx),
        Family::Livepatch => livepatch::check_fixtures(step, fx),
        Family::Bpf => bpf::check_fixtures(step, fx),
        Family::Ftrace | Family::Selftest => Ok(()),
        Family::Stress => stress::inner_steps(step)
            .into_iter()
            .try_for_each(|s| check_fixtures(s, fx)),
    }
}

/// The answer's data, if it is of the given variant.
macro_rules! data_of {
    ($a:expr, $variant:ident) => {
        match &$a.data {
            Some(coexist_proto::AnswerData::$variant(d)) => Some(d),
            _ => None,
        }
    };
}
pub(crate) use data_of;

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, BpfKind, BpfStats};

    fn y(s: &str) -> serde_yaml::Value {
        serde_yaml::from_str(s).unwrap()
    }

    fn stats() -> Step {
        Step::BpfStats { handle: 1 }
    }

    #[test]
    fn every_kind_has_a_family_and_suites_use_all_but_poweroff() {
        let kinds = suite_kinds();
        assert!(
            !kinds.contains(&"poweroff")
                && !kinds.contains(&"hello")
                && !kinds.contains(&"selftest")
        );
        assert_eq!(kinds.len() + RUNNER_KINDS.len(), Step::kinds().len());
        assert_eq!(
            Family::of(&Step::BpfAttach {
                program: "p".into(),
                kind: BpfKind::Fentry,
                target: "t".into(),
                object: None,
                fmod_ret: 0
            }),
            Family::Bpf
        );
    }

    #[test]
    fn family_fields_parse_for_their_kind_only() {
        let e = parse_expect(&stats(), y("{hits: 2, output_contains: x}")).unwrap();
        assert_eq!(e.bpf.as_ref().unwrap().hits, Some(2));
        assert_eq!(e.output_contains.as_deref(), Some("x"));
        let trig = Step::Trigger {
            target: "cmdline_proc_show".into(),
        };
        let err = parse_expect(&trig, y("{hits: 2}")).unwrap_err();
        assert!(
            err.contains("'hits' does not apply to a 'trigger' step")
                && err.contains("errno, output"),
            "{err}"
        );
        let err = parse_expect(&stats(), y("{hits: many}")).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        assert_eq!(
            parse_expect(&trig, serde_yaml::Value::Null).unwrap(),
            StepExpect::default()
        );
    }

    #[test]
    fn common_check_errno_and_output() {
        let ok = Answer {
            ok: true,
            output: "this has been live patched\n".into(),
            ..Default::default()
        };
        let refused = Answer {
            ok: false,
            errno: Some(16),
            errno_name: Some("EBUSY".into()),
            error: Some("attach".into()),
            ..Default::default()
        };
        let want_ebusy = StepExpect {
            errno: Some(Errno::parse("EBUSY").unwrap()),
            ..Default::default()
        };
        assert!(check(&want_ebusy, &refused).is_empty());
        assert!(check(&want_ebusy, &ok)[0].contains("but the step succeeded"));
        assert!(check(&StepExpect::default(), &refused)[0].contains("the step failed: EBUSY"));
        let out = StepExpect {
            output_contains: Some("live patched".into()),
            output_not_contains: Some("original".into()),
            ..Default::default()
        };
        assert!(check(&out, &ok).is_empty());
        let exact = StepExpect {
            output: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(check(&exact, &ok).len(), 1);
        // A family part is checked too.
        let hits = parse_expect(&stats(), y("{hits: 1}")).unwrap();
        let a = Answer {
            ok: true,
            data: Some(AnswerData::Stats(BpfStats {
                hits: 3,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(check(&hits, &a), ["BPF program ran 3 time(s), expected 1"]);
    }
}
