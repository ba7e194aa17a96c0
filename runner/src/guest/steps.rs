//! The one step loop: a plan of agent steps sent in order to one guest,
//! each answer handed to the caller's judge, which says whether to go on.
//! Suite cases and explore sequences both run here; they differ only in
//! how they judge an answer.
//!
//! The loop keeps the handle table: a step that gives a handle (an
//! attach) keeps it under its [`HandleKey`]; a later step that names that
//! key gets the handle put in its place before it is sent.

use std::collections::BTreeMap;
use std::time::Duration;

use coexist_proto::{Answer, Step};

use crate::steps::bpf::{self, Handle};
use crate::vm::{Splat, StepOutcome, Vm, VmFailure};

/// How a step names the handle of an earlier one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandleKey {
    /// A suite step's label.
    Label(String),
    /// An explore program's id.
    Prog(u32),
}

/// What a step does when the handle it names was never given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The loop stops before sending it (a suite: the attach it names
    /// failed, and the case stopped there).
    Stop,
    /// It is sent as written (explore: the step is the attach itself).
    Send,
}

/// One step of a plan.
#[derive(Clone, Debug)]
pub struct Planned {
    pub step: Step,
    pub timeout: Duration,
    /// Keep the handle this step's answer gives under this key.
    pub gives: Option<HandleKey>,
    /// Put the handle kept under this key into the step before it is sent.
    pub takes: Option<(HandleKey, Missing)>,
}

impl Planned {
    pub fn new(step: Step, timeout: Duration) -> Planned {
        Planned {
            step,
            timeout,
            gives: None,
            takes: None,
        }
    }
}

/// One step's result, for the judge.
#[derive(Debug)]
pub struct Answered {
    /// The step's index in the plan (from 0).
    pub index: usize,
    /// The step as sent (its handle resolved).
    pub step: Step,
    /// The answer, or how the guest failed (the loop then stops).
    pub outcome: Result<StepOutcome, VmFailure>,
    /// Splats the console showed outside any step since the previous
    /// answer (or since the guest was READY).
    pub between: Vec<Splat>,
}

/// What the judge says after an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Next,
    Stop,
}

/// How a plan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every step was sent and the judge let each go on.
    Completed,
    /// The judge stopped at this step.
    Stopped(usize),
    /// The guest failed at this step.
    Failed(usize),
    /// This step names a handle that was never given; it was not sent.
    NoHandle(usize),
}

impl Ended {
    /// The step the plan stopped at, if it stopped.
    pub fn at(&self) -> Option<usize> {
        match *self {
            Ended::Completed => None,
            Ended::Stopped(i) | Ended::Failed(i) | Ended::NoHandle(i) => Some(i),
        }
    }
}

/// The handles a plan's steps gave, by key.
#[derive(Debug, Default)]
pub struct HandleTable(BTreeMap<HandleKey, Handle>);

impl HandleTable {
    /// Keeps the handle `p`'s answer gave, if `p` keeps one and it gave one.
    pub fn keep(&mut self, p: &Planned, a: &Answer) {
        if let (Some(key), Some(h)) = (&p.gives, bpf::handle_of(a)) {
            self.0.insert(key.clone(), h);
        }
    }

    /// `p`'s step with the handle it names put in; None: it names one that
    /// was never given and must not be sent without it.
    pub fn resolve(&self, p: &Planned) -> Option<Step> {
        let mut step = p.step.clone();
        if let Some((key, missing)) = &p.takes {
            match self.0.get(key) {
                Some(h) => bpf::set_handle(&mut step, *h),
                None if *missing == Missing::Stop => return None,
                None => {}
            }
        }
        Some(step)
    }
}

/// Runs `plan` in `vm`, in order, calling `judge` with every answer.
pub fn run_steps(vm: &mut Vm, plan: &[Planned], mut judge: impl FnMut(Answered) -> Flow) -> Ended {
    let mut handles = HandleTable::default();
    let mut seen = vm.unattributed().len();
    for (index, p) in plan.iter().enumerate() {
        let Some(step) = handles.resolve(p) else {
            return Ended::NoHandle(index);
        };
        let outcome = vm.run(step.clone(), p.timeout);
        let between = vm.unattributed()[seen..].to_vec();
        seen = vm.unattributed().len();
        let failed = outcome.is_err();
        if let Ok(out) = &outcome {
            handles.keep(p, &out.answer);
        }
        let flow = judge(Answered {
            index,
            step,
            outcome,
            between,
        });
        if failed {
            return Ended::Failed(index);
        }
        if flow == Flow::Stop {
            return Ended::Stopped(index);
        }
    }
    Ended::Completed
}

#[cfg(test)]
mod tests {
    use super::*;
    use coexist_proto::{AnswerData, AttachData};

    fn attach(handle: u32) -> Answer {
        Answer {
            ok: true,
            data: Some(AnswerData::Attach(AttachData { handle })),
            ..Default::default()
        }
    }

    #[test]
    fn handles_flow_from_the_step_that_gave_them_by_key() {
        let t = Duration::from_secs(1);
        let label = |l: &str| HandleKey::Label(l.to_string());
        let mut hs = HandleTable::default();
        let a = Planned {
            gives: Some(label("a")),
            ..Planned::new(Step::BpfDetach { handle: None }, t)
        };
        let unlabelled = Planned::new(Step::BpfDetach { handle: None }, t);
        let failed = Planned {
            gives: Some(label("failed")),
            ..unlabelled.clone()
        };
        hs.keep(&a, &attach(4));
        hs.keep(&unlabelled, &attach(5));
        hs.keep(&failed, &Answer::default());
        let stats = |key: HandleKey, missing| Planned {
            takes: Some((key, missing)),
            ..Planned::new(Step::BpfStats { handle: 0 }, t)
        };
        assert_eq!(
            hs.resolve(&stats(label("a"), Missing::Stop)),
            Some(Step::BpfStats { handle: 4 })
        );
        // A suite step naming an attach that gave nothing is not sent.
        assert_eq!(hs.resolve(&stats(label("failed"), Missing::Stop)), None);
        // An explore step is sent as written.
        assert_eq!(
            hs.resolve(&stats(HandleKey::Prog(1), Missing::Send)),
            Some(Step::BpfStats { handle: 0 })
        );
        hs.keep(
            &Planned {
                gives: Some(HandleKey::Prog(1)),
                ..unlabelled
            },
            &attach(9),
        );
        assert_eq!(
            hs.resolve(&stats(HandleKey::Prog(1), Missing::Send)),
            Some(Step::BpfStats { handle: 9 })
        );
    }
}
