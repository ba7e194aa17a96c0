//! The agent steps that check the model: an operation's own step with
//! the result the rule predicts ([`State::apply`]), then after every
//! operation each function called and its counters, its ftrace users and
//! its livepatch read back ([`State::checks`]). The rules are in `model`.

use coexist_proto::Step;

use super::model::{
    runs, Func, Invariant, Lp, Op, Refusal, Runs, State, CMDLINE_PATCHED, FUNCS, TARGET_ARG,
};
use crate::input::Errno;
use crate::steps::bpf::BpfExpect;
use crate::steps::ftrace::FtraceExpect;
use crate::steps::livepatch::LivepatchExpect;
use crate::steps::StepExpect;

/// One agent step with what it must show. `prog` names the program whose
/// handle the step takes (bpf_stats, bpf_detach) or gives (bpf_attach):
/// the executor fills in the agent's handle, the repro writer a label.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub invariant: Invariant,
    pub step: Step,
    pub prog: Option<u32>,
    pub expect: StepExpect,
}

fn probe(invariant: Invariant, step: Step, expect: StepExpect) -> Probe {
    Probe {
        invariant,
        step,
        prog: None,
        expect,
    }
}

/// The step's expectation: refused with `r`'s errno.
pub fn refused(r: Refusal) -> StepExpect {
    StepExpect {
        errno: Some(Errno::parse(r.name()).expect("every Refusal is a known errno")),
        ..Default::default()
    }
}

/// Steps that set the guest up before any operation: the target module.
pub fn prologue() -> Vec<Probe> {
    vec![probe(
        Invariant::Result,
        Step::Insmod {
            module: "coexist_target".into(),
            params: String::new(),
        },
        StepExpect::default(),
    )]
}

/// An operation's own step, and the program whose handle it gives or
/// takes (calls are not one step: see [`State::apply`]).
fn op_step(op: &Op) -> (Step, Option<u32>) {
    match *op {
        Op::LivepatchLoad { func } => (
            Step::LivepatchLoad {
                module: func.livepatch_module().into(),
                timeout_ms: None,
            },
            None,
        ),
        Op::LivepatchDisable { func } => (
            Step::LivepatchDisable {
                name: func.livepatch_name().into(),
                timeout_ms: None,
            },
            None,
        ),
        Op::LivepatchUnload { func } => (
            Step::LivepatchUnload {
                name: func.livepatch_name().into(),
            },
            None,
        ),
        Op::Attach {
            id,
            func,
            kind,
            fmod_ret,
        } => (
            Step::BpfAttach {
                program: func.program(kind).expect("accepted").into(),
                kind,
                target: func.name().into(),
                object: None,
                fmod_ret,
            },
            Some(id),
        ),
        Op::Detach { id } => (Step::BpfDetach { handle: None }, Some(id)),
        Op::DirectLoad { func } => (
            Step::Insmod {
                module: "coexist_direct".into(),
                params: format!("target={}", func.name()),
            },
            None,
        ),
        Op::DirectUnload => (
            Step::Rmmod {
                name: "coexist_direct".into(),
            },
            None,
        ),
        Op::Call { func } => (
            Step::Trigger {
                target: func.name().into(),
            },
            None,
        ),
    }
}

impl State {
    /// Applies `op` (which [`State::accepts`]) and returns the steps that
    /// check it: the operation itself, then the checks of every function.
    pub fn apply(&mut self, op: &Op) -> Vec<Probe> {
        let mut probes = Vec::new();
        if let Op::Call { func } = *op {
            probes.push(self.call_probe(func));
        } else {
            let expect = self.predict(op).map(refused).unwrap_or_default();
            let (step, prog) = op_step(op);
            probes.push(Probe {
                invariant: Invariant::Result,
                step,
                prog,
                expect,
            });
            self.transition(op);
        }
        probes.extend(self.checks());
        probes
    }

    /// The checks after every operation: each function is called and the
    /// call checked (output, every program's counters, the DIRECT user's
    /// counter), then its enabled_functions entry and its livepatch's state.
    pub fn checks(&mut self) -> Vec<Probe> {
        let mut probes = Vec::new();
        for f in FUNCS {
            probes.push(self.call_probe(f));
            probes.extend(self.counters(f));
            probes.push(self.ftrace_probe(f));
            if let Some(p) = self.livepatch_probe(f) {
                probes.push(p);
            }
        }
        probes
    }

    /// Calls `f` once: the trigger step, and the model's counters move.
    fn call_probe(&mut self, f: Func) -> Probe {
        let patched = self.func(f).lp == Lp::Enabled;
        let override_ret = self.call(f);
        let expect = match f {
            Func::Cmdline if patched => StepExpect {
                output: Some(CMDLINE_PATCHED.into()),
                ..Default::default()
            },
            Func::Cmdline => StepExpect {
                output_contains: Some("rdinit=/init".into()),
                output_not_contains: Some("live patched".into()),
                ..Default::default()
            },
            Func::Target => StepExpect {
                output: Some(format!("value={}\n", self.ret(f, override_ret))),
                ..Default::default()
            },
        };
        probe(
            Invariant::CallOutput,
            Step::Trigger {
                target: f.name().into(),
            },
            expect,
        )
    }

    /// The counters of every program on `f` and of the DIRECT user there.
    fn counters(&self, f: Func) -> Vec<Probe> {
        let st = self.func(f);
        let patched = st.lp == Lp::Enabled;
        let override_ret = st
            .progs
            .iter()
            .rev()
            .find(|p| runs(p.kind) == Runs::Instead && p.fmod_ret != 0)
            .map(|p| p.fmod_ret);
        let mut probes = Vec::new();
        for p in &st.progs {
            let mut b = BpfExpect {
                hits: Some(p.hits),
                ..Default::default()
            };
            let mut e = StepExpect::default();
            if p.hits > 0 {
                match f {
                    Func::Target => {
                        b.arg0 = Some(TARGET_ARG);
                        if runs(p.kind) == Runs::After {
                            b.ret = Some(self.ret(f, override_ret));
                        }
                    }
                    Func::Cmdline if runs(p.kind) == Runs::After => {
                        // cx_fexit_seq: what the running implementation
                        // wrote into the seq_file (95 bytes at most).
                        if patched {
                            b.seen = Some(CMDLINE_PATCHED.into());
                        } else {
                            e.output_not_contains = Some("live patched".into());
                        }
                    }
                    Func::Cmdline => {}
                }
            }
            e.bpf = Some(b);
            probes.push(Probe {
                invariant: Invariant::BpfCounters,
                step: Step::BpfStats { handle: 0 },
                prog: Some(p.id),
                expect: e,
            });
        }
        if let Some((d, hits)) = self.direct {
            if d == f {
                probes.push(probe(
                    Invariant::DirectHits,
                    Step::Read {
                        path: "/sys/module/coexist_direct/parameters/hits".into(),
                    },
                    StepExpect {
                        output: Some(format!("{hits}\n")),
                        ..Default::default()
                    },
                ));
            }
        }
        probes
    }

    fn ftrace_probe(&self, f: Func) -> Probe {
        let (refs, flags) = self.ftrace_users(f);
        let fe = if refs == 0 {
            FtraceExpect {
                present: Some(false),
                ..Default::default()
            }
        } else {
            FtraceExpect {
                present: Some(true),
                flags: Some(flags),
                refs: Some(refs),
            }
        };
        probe(
            Invariant::FtraceState,
            Step::FtraceState {
                function: f.name().into(),
            },
            StepExpect {
                ftrace: Some(fe),
                ..Default::default()
            },
        )
    }

    /// The livepatch's sysfs state, when its module is loaded: enabled
    /// and settled, or gone once disabled.
    fn livepatch_probe(&self, f: Func) -> Option<Probe> {
        let le = match self.func(f).lp {
            Lp::Absent => return None,
            Lp::Enabled => LivepatchExpect {
                present: Some(true),
                enabled: Some(true),
                transition: Some(false),
            },
            Lp::Disabled => LivepatchExpect {
                present: Some(false),
                ..Default::default()
            },
        };
        Some(probe(
            Invariant::LivepatchState,
            Step::LivepatchState {
                name: f.livepatch_name().into(),
            },
            StepExpect {
                livepatch: Some(le),
                ..Default::default()
            },
        ))
    }
}
