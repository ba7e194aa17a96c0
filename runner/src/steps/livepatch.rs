//! livepatch_load, livepatch_disable, livepatch_unload, livepatch_state.
//! Expectation fields (livepatch_state): `present`, `enabled`,
//! `transition`. Fixtures: livepatch_load's module.

use coexist_proto::{Answer, Step};
use serde::{Deserialize, Serialize};

use super::data_of;
use crate::image::FixtureNames;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivepatchExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<bool>,
}

pub fn expect_fields(step: &Step) -> &'static [&'static str] {
    match step {
        Step::LivepatchState { .. } => &["present", "enabled", "transition"],
        _ => &[],
    }
}

pub fn check(e: &LivepatchExpect, a: &Answer, m: &mut Vec<String>) {
    let Some(s) = data_of!(a, LivepatchState) else {
        m.push("no livepatch state in the answer".into());
        return;
    };
    for (what, want, got) in [
        ("present in /sys/kernel/livepatch", e.present, s.present),
        ("enabled", e.enabled, s.enabled),
        ("in transition", e.transition, s.transition),
    ] {
        if let Some(w) = want {
            if w != got {
                let is = |b: bool| if b { "is" } else { "is not" };
                m.push(format!(
                    "the livepatch {} {what}, expected it {}",
                    is(got),
                    if w { "to be" } else { "not to be" }
                ));
            }
        }
    }
}

pub fn check_args(step: &Step) -> Result<(), (String, String)> {
    match step {
        Step::LivepatchLoad {
            timeout_ms: Some(t),
            ..
        }
        | Step::LivepatchDisable {
            timeout_ms: Some(t),
            ..
        } => super::check_range("timeout_ms", *t, false, super::MAX_MS),
        _ => Ok(()),
    }
}

pub fn check_fixtures(step: &Step, fx: &FixtureNames) -> Result<(), (String, String)> {
    match step {
        Step::LivepatchLoad { module, .. } => super::basic::check_module(module, fx),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, LivepatchState};

    #[test]
    fn state_against_expectations() {
        let a = Answer {
            ok: true,
            data: Some(AnswerData::LivepatchState(LivepatchState {
                present: true,
                enabled: true,
                transition: false,
            })),
            ..Default::default()
        };
        let mut m = Vec::new();
        let want = LivepatchExpect {
            present: Some(true),
            enabled: Some(true),
            transition: Some(false),
        };
        check(&want, &a, &mut m);
        assert!(m.is_empty(), "{m:?}");
        check(
            &LivepatchExpect {
                enabled: Some(false),
                ..Default::default()
            },
            &a,
            &mut m,
        );
        assert_eq!(m, ["the livepatch is enabled, expected it not to be"]);
        let mut m = Vec::new();
        check(&want, &Answer::default(), &mut m);
        assert_eq!(m, ["no livepatch state in the answer"]);
    }
}
