//! ftrace_state: what `enabled_functions` says about a function.
//! Expectation fields: `present`, `flags` ("R", "I", "D" as printed, e.g.
//! "RID"), `refs`.

use coexist_proto::{Answer, Step};
use serde::{Deserialize, Serialize};

use super::data_of;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtraceExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<u64>,
}

pub fn expect_fields(step: &Step) -> &'static [&'static str] {
    match step {
        Step::FtraceState { .. } => &["present", "flags", "refs"],
        _ => &[],
    }
}

pub fn check(e: &FtraceExpect, a: &Answer, m: &mut Vec<String>) {
    let Some(f) = data_of!(a, Ftrace) else {
        m.push("no ftrace state in the answer".into());
        return;
    };
    if let Some(p) = e.present {
        if f.present != p {
            m.push(format!(
                "{} is {} enabled_functions, expected {}",
                f.function,
                if f.present { "in" } else { "absent from" },
                if p { "present" } else { "absent" }
            ));
        }
    }
    if let Some(fl) = &e.flags {
        if f.present && &f.flags != fl {
            m.push(format!(
                "ftrace flags '{}', expected '{fl}' ({})",
                f.flags, f.raw
            ));
        } else if !f.present {
            m.push(format!(
                "ftrace flags: {} is not in enabled_functions, expected '{fl}'",
                f.function
            ));
        }
    }
    if let Some(r) = e.refs {
        if f.present && f.refs != r {
            m.push(format!(
                "ftrace ref count {}, expected {r} ({})",
                f.refs, f.raw
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, FtraceState};

    fn answer(st: FtraceState) -> Answer {
        Answer {
            ok: true,
            data: Some(AnswerData::Ftrace(st)),
            ..Default::default()
        }
    }

    #[test]
    fn flags_refs_and_presence() {
        let st = FtraceState {
            present: true,
            function: "f".into(),
            refs: 1,
            flags: "I".into(),
            raw: "f (1)   I  ".into(),
            ..Default::default()
        };
        let mut m = Vec::new();
        check(
            &FtraceExpect {
                flags: Some("RID".into()),
                refs: Some(2),
                ..Default::default()
            },
            &answer(st.clone()),
            &mut m,
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("flags 'I', expected 'RID'"), "{m:?}");
        let mut m = Vec::new();
        check(
            &FtraceExpect {
                present: Some(false),
                ..Default::default()
            },
            &answer(st),
            &mut m,
        );
        assert_eq!(m, ["f is in enabled_functions, expected absent"]);
        let mut m = Vec::new();
        let absent = FtraceState {
            function: "g".into(),
            ..Default::default()
        };
        check(
            &FtraceExpect {
                flags: Some("D".into()),
                ..Default::default()
            },
            &answer(absent),
            &mut m,
        );
        assert!(m[0].contains("g is not in enabled_functions"), "{m:?}");
    }
}
