//! bpf_attach, bpf_detach, bpf_stats. Expectation fields (bpf_stats):
//! `hits`, `hits_min`, `ret` (fexit's view of the return value), `arg0`,
//! `seen` (what a seq_file show function wrote, cx_fexit_seq). Fixtures:
//! bpf_attach's program, one of the inventory's programs in a section it
//! attaches ([`attaches`]). Handles ([`Handle`]): a suite names an
//! attachment by the label of the step that gave it ([`gives_handle`]);
//! the step loop (`guest::steps`) puts the handle the agent gave in its
//! place ([`takes_handle`]).

use coexist_proto::{Answer, BpfKind, Step};
use serde::{Deserialize, Serialize};

use super::data_of;
use crate::image::FixtureNames;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpfExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits_min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg0: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

pub fn expect_fields(step: &Step) -> &'static [&'static str] {
    match step {
        Step::BpfStats { .. } => &["hits", "hits_min", "ret", "arg0", "seen"],
        _ => &[],
    }
}

pub fn check(e: &BpfExpect, a: &Answer, m: &mut Vec<String>) {
    let Some(s) = data_of!(a, Stats) else {
        m.push("no BPF counters in the answer".into());
        return;
    };
    if let Some(h) = e.hits {
        if s.hits != h {
            m.push(format!("BPF program ran {} time(s), expected {h}", s.hits));
        }
    }
    if let Some(h) = e.hits_min {
        if s.hits < h {
            m.push(format!(
                "BPF program ran {} time(s), expected at least {h}",
                s.hits
            ));
        }
    }
    if let Some(r) = e.ret {
        if s.ret != r {
            m.push(format!("fexit saw return value {}, expected {r}", s.ret));
        }
    }
    if let Some(x) = e.arg0 {
        if s.arg0 != x {
            m.push(format!("first argument {}, expected {x}", s.arg0));
        }
    }
    if let Some(x) = &e.seen {
        if &s.seen != x {
            m.push(format!(
                "fexit saw the function produce {:?}, expected {:?}",
                s.seen, x
            ));
        }
    }
}

/// Whether `bpf_attach` attaches a program of this ELF section: a BPF
/// trampoline kind (fentry, fexit, fmod_ret).
pub fn attaches(section: &str) -> bool {
    BpfKind::of_section(section).is_some()
}

pub fn check_fixtures(step: &Step, fx: &FixtureNames) -> Result<(), (String, String)> {
    let known = || -> Vec<&str> {
        fx.bpf_programs
            .iter()
            .filter(|p| attaches(&p.section))
            .map(|p| p.name.as_str())
            .collect()
    };
    match step {
        Step::BpfAttach { program, .. } if !known().contains(&program.as_str()) => Err((
            program.clone(),
            format!(
                "unknown BPF program '{program}' (known: {})",
                known().join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// An attachment, as the agent numbers them in one guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(pub u32);

/// Step kinds that answer with a handle a later step may name by label.
pub fn gives_handle(kind: &str) -> bool {
    kind == "bpf_attach"
}

/// Step kinds whose `handle` a suite may give as a label.
pub fn takes_handle(kind: &str) -> bool {
    matches!(kind, "bpf_stats" | "bpf_detach")
}

/// The handle an attach answered with.
pub fn handle_of(a: &Answer) -> Option<Handle> {
    data_of!(a, Attach).map(|d| Handle(d.handle))
}

/// Puts a resolved handle into a step that names one.
pub fn set_handle(step: &mut Step, h: Handle) {
    match step {
        Step::BpfStats { handle } => *handle = h.0,
        Step::BpfDetach { handle } => *handle = Some(h.0),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, AttachData, BpfStats};

    fn stats(s: BpfStats) -> Answer {
        Answer {
            ok: true,
            data: Some(AnswerData::Stats(s)),
            ..Default::default()
        }
    }

    #[test]
    fn counters_against_expectations() {
        let a = stats(BpfStats {
            hits: 2,
            arg0: 7,
            ret: -16,
            seen: "x".into(),
        });
        let mut m = Vec::new();
        check(
            &BpfExpect {
                hits_min: Some(1),
                ret: Some(-16),
                arg0: Some(7),
                seen: Some("x".into()),
                ..Default::default()
            },
            &a,
            &mut m,
        );
        assert!(m.is_empty(), "{m:?}");
        check(
            &BpfExpect {
                hits: Some(1),
                hits_min: Some(3),
                ret: Some(0),
                seen: Some("y".into()),
                ..Default::default()
            },
            &a,
            &mut m,
        );
        assert_eq!(m.len(), 4, "{m:?}");
        let mut m = Vec::new();
        check(&BpfExpect::default(), &Answer::default(), &mut m);
        assert_eq!(m, ["no BPF counters in the answer"]);
    }

    #[test]
    fn handles_flow_from_attach_to_stats_and_detach() {
        let a = Answer {
            ok: true,
            data: Some(AnswerData::Attach(AttachData { handle: 4 })),
            ..Default::default()
        };
        assert_eq!(handle_of(&a), Some(Handle(4)));
        assert_eq!(handle_of(&stats(BpfStats::default())), None);
        let mut s = Step::BpfStats { handle: 0 };
        set_handle(&mut s, Handle(4));
        assert_eq!(s, Step::BpfStats { handle: 4 });
        let mut d = Step::BpfDetach { handle: None };
        set_handle(&mut d, Handle(4));
        assert_eq!(d, Step::BpfDetach { handle: Some(4) });
        assert!(takes_handle("bpf_stats") && takes_handle("bpf_detach"));
        assert!(!takes_handle("bpf_attach"));
        assert!(gives_handle("bpf_attach") && !gives_handle("bpf_stats"));
    }

    #[test]
    fn attach_takes_the_trampoline_sections_only() {
        for s in ["fentry", "fexit", "fmod_ret", "fentry/cmdline_proc_show"] {
            assert!(attaches(s), "{s}");
        }
        for s in [".maps", "license", "kprobe/x", "fentryx", "tp_btf/x"] {
            assert!(!attaches(s), "{s}");
        }
    }
}
