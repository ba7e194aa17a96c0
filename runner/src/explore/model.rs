//! The model: a pure, abstract state of what each target function has
//! (its livepatch, its BPF trampoline programs, the DIRECT ftrace user),
//! the operation alphabet, and for each operation the result the
//! variant's rule predicts and the checks that must hold after it.
//!
//! Nothing here touches a VM or names an agent step: these are the rules.
//! [`State::predict`] says what the rule does with an operation and
//! [`State::transition`] what it leaves; `probes` turns an operation into
//! the agent steps that check it. Unit tests drive both.
//!
//! What the kernel is meant to do (docs/explore.md has the reasoning):
//! - `Shared` (the post-series rule, Linux 6.0 `ftrace_ops->ops_func`): a
//!   livepatch and a BPF trampoline share a function in either order.
//! - `Exclusive` (the pre-series rule, `baseline`): the second of them on
//!   one function is refused with EBUSY.
//! - Both: a DIRECT ftrace user without `ops_func` (`coexist_direct`) and
//!   anything else on the same function (a livepatch, a BPF trampoline):
//!   the second is refused with EBUSY.
//! - A call shows the patched output iff the function's livepatch is
//!   enabled; fentry programs all run; fmod_ret programs run newest first
//!   and the first that returns non-zero skips the rest and the function
//!   (the caller sees its value); fexit programs all run and see the
//!   return value. Every program that runs counts one hit per call.
//! - `enabled_functions`: one user per enabled livepatch (`I`), one per BPF
//!   trampoline with at least one program (`R`, `D`), one for the DIRECT
//!   user (`R`, `D`).

use std::collections::BTreeMap;
use std::fmt;

use coexist_proto::BpfKind;
use serde::{Deserialize, Serialize};

use crate::build::Coexistence;

/// The rule a variant's kernel is meant to follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Livepatch and BPF trampoline share a function.
    Shared,
    /// The second of them on a function is refused with EBUSY.
    Exclusive,
}

impl From<Coexistence> for Rule {
    fn from(c: Coexistence) -> Rule {
        match c {
            Coexistence::Shared => Rule::Shared,
            Coexistence::Exclusive => Rule::Exclusive,
        }
    }
}

/// The target functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Func {
    #[serde(rename = "cmdline_proc_show")]
    Cmdline,
    #[serde(rename = "coexist_target_value")]
    Target,
}

pub const FUNCS: [Func; 2] = [Func::Cmdline, Func::Target];

/// What /proc/cmdline reads while livepatch-sample is enabled.
pub const CMDLINE_PATCHED: &str = "this has been live patched\n";
/// coexist_target_value(41) unpatched and patched.
pub const TARGET_PLAIN: i64 = 42;
pub const TARGET_PATCHED: i64 = 1041;
/// The argument the debugfs file passes to coexist_target_value.
pub const TARGET_ARG: u64 = 41;
/// The fmod_ret value the alphabet uses besides 0 (0: call the function).
pub const FMOD_RET_VALUE: i64 = 777;

impl Func {
    pub fn name(self) -> &'static str {
        match self {
            Func::Cmdline => "cmdline_proc_show",
            Func::Target => "coexist_target_value",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Func::Cmdline => "cmdline",
            Func::Target => "target",
        }
    }

    /// The livepatch module that patches it (for `livepatch_load`).
    pub fn livepatch_module(self) -> &'static str {
        match self {
            Func::Cmdline => "livepatch-sample",
            Func::Target => "coexist_livepatch",
        }
    }

    /// The patch's name in /sys/kernel/livepatch (and the module's name).
    pub fn livepatch_name(self) -> &'static str {
        match self {
            Func::Cmdline => "livepatch_sample",
            Func::Target => "coexist_livepatch",
        }
    }

    /// The fixture program of this kind for this function; None where the
    /// kernel does not allow the kind (fmod_ret needs a function on the
    /// error-injection list: coexist_target_value is, cmdline_proc_show
    /// is not).
    pub fn program(self, kind: BpfKind) -> Option<&'static str> {
        match (self, kind) {
            (_, BpfKind::Fentry) => Some("cx_fentry"),
            (Func::Cmdline, BpfKind::Fexit) => Some("cx_fexit_seq"),
            (Func::Target, BpfKind::Fexit) => Some("cx_fexit"),
            (Func::Cmdline, BpfKind::FmodRet) => None,
            (Func::Target, BpfKind::FmodRet) => Some("cx_fmod_ret"),
        }
    }
}

/// When a program of a kind runs, against the traced function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// Before it, every one (fentry).
    Before,
    /// In its place, newest first; the first non-zero return skips the
    /// rest and the function (fmod_ret).
    Instead,
    /// After it, seeing its return value, every one (fexit).
    After,
}

/// When programs of `kind` run. No wildcard: a new attach kind is a
/// compile error here until the model knows when it runs, and the calls,
/// counters, generator and keys follow from that.
pub fn runs(kind: BpfKind) -> Runs {
    match kind {
        BpfKind::Fentry => Runs::Before,
        BpfKind::FmodRet => Runs::Instead,
        BpfKind::Fexit => Runs::After,
    }
}

/// One operation of the alphabet. BPF programs are named by the id their
/// attach carries (unique in a sequence), so a detach still names the
/// same program after shrinking drops other operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// insmod of the function's livepatch module, which enables it.
    LivepatchLoad { func: Func },
    /// Disable the function's livepatch (the module stays loaded; on 6.1 a
    /// disabled patch cannot be enabled again: unload and load it).
    LivepatchDisable { func: Func },
    /// rmmod of the function's livepatch module.
    LivepatchUnload { func: Func },
    /// Attach a BPF program of this kind; `fmod_ret` is what an fmod_ret
    /// program returns (0: call the function).
    Attach {
        id: u32,
        func: Func,
        kind: BpfKind,
        #[serde(default)]
        fmod_ret: i64,
    },
    /// Detach the program attached by `Attach { id }`.
    Detach { id: u32 },
    /// insmod coexist_direct (a DIRECT ftrace_ops without ops_func) on the function.
    DirectLoad { func: Func },
    /// rmmod coexist_direct.
    DirectUnload,
    /// Call the function (checks after every operation call both anyway).
    Call { func: Func },
}

fn kind_name(k: BpfKind) -> &'static str {
    k.section()
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::LivepatchLoad { func } => write!(f, "livepatch_load({})", func.short()),
            Op::LivepatchDisable { func } => write!(f, "livepatch_disable({})", func.short()),
            Op::LivepatchUnload { func } => write!(f, "livepatch_unload({})", func.short()),
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => {
                write!(f, "attach(p{id}: {} {}", kind_name(*kind), func.short())?;
                if runs(*kind) == Runs::Instead {
                    write!(f, " ret={fmod_ret}")?;
                }
                write!(f, ")")
            }
            Op::Detach { id } => write!(f, "detach(p{id})"),
            Op::DirectLoad { func } => write!(f, "direct_load({})", func.short()),
            Op::DirectUnload => write!(f, "direct_unload"),
            Op::Call { func } => write!(f, "call({})", func.short()),
        }
    }
}

/// A livepatch's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Lp {
    /// Module not loaded.
    #[default]
    Absent,
    /// Loaded and enabled (transition done).
    Enabled,
    /// Loaded, disabled (its sysfs directory is gone).
    Disabled,
}

/// An attached BPF program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Prog {
    pub id: u32,
    pub kind: BpfKind,
    pub fmod_ret: i64,
    pub hits: u64,
}

/// What one function has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FuncState {
    pub lp: Lp,
    /// In attach order (oldest first).
    pub progs: Vec<Prog>,
}

/// The most programs a generated sequence keeps on one function.
pub const MAX_PROGS_PER_FUNC: usize = 4;

pub use crate::build::caps::Caps;

/// The rule the kernel is meant to follow and what it can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    pub rule: Rule,
    pub caps: Caps,
}

impl From<Rule> for Model {
    fn from(rule: Rule) -> Model {
        Model {
            rule,
            caps: Caps::ALL,
        }
    }
}

/// The abstract state of the guest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct State {
    pub rule: Rule,
    pub caps: Caps,
    pub funcs: BTreeMap<Func, FuncState>,
    /// Where coexist_direct sits, if loaded, and its hit counter.
    pub direct: Option<(Func, u64)>,
    /// Program ids used so far (attached or not): an id is attached once.
    pub used_ids: Vec<u32>,
}

/// Which invariant a check step guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// The operation's result (success, or the errno the rule gives).
    Result,
    /// What userspace sees when the function runs.
    CallOutput,
    /// A BPF program's counters (hits by exactly one per call; what it saw).
    BpfCounters,
    /// The DIRECT user's hit counter.
    DirectHits,
    /// The function's enabled_functions entry (users and flags).
    FtraceState,
    /// The livepatch's sysfs state (settled, enabled as modelled).
    LivepatchState,
    /// No kernel report (WARNING, BUG, lockdep, ...).
    NoSplat,
    /// The guest stays up and answers (no panic, hang or crash).
    GuestAlive,
}

impl Invariant {
    pub fn as_str(self) -> &'static str {
        match self {
            Invariant::Result => "result",
            Invariant::CallOutput => "call_output",
            Invariant::BpfCounters => "bpf_counters",
            Invariant::DirectHits => "direct_hits",
            Invariant::FtraceState => "ftrace_state",
            Invariant::LivepatchState => "livepatch_state",
            Invariant::NoSplat => "no_splat",
            Invariant::GuestAlive => "guest_alive",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the kernel refuses an operation the model predicts it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// EBUSY: the function already has a user it cannot share with.
    Busy,
    /// EAGAIN: rmmod of a module an enabled patch holds.
    Again,
}

impl Refusal {
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Busy => "EBUSY",
            Refusal::Again => "EAGAIN",
        }
    }
}

impl State {
    pub fn new(model: impl Into<Model>) -> State {
        let Model { rule, caps } = model.into();
        State {
            rule,
            caps,
            funcs: FUNCS.iter().map(|f| (*f, FuncState::default())).collect(),
            direct: None,
            used_ids: Vec::new(),
        }
    }

    pub fn func(&self, f: Func) -> &FuncState {
        &self.funcs[&f]
    }

    pub(super) fn func_mut(&mut self, f: Func) -> &mut FuncState {
        self.funcs.get_mut(&f).expect("every function has a state")
    }

    pub fn direct_on(&self, f: Func) -> bool {
        matches!(self.direct, Some((d, _)) if d == f)
    }

    /// Where program `id` is attached.
    pub fn attached(&self, id: u32) -> Option<Func> {
        self.funcs
            .iter()
            .find(|(_, s)| s.progs.iter().any(|p| p.id == id))
            .map(|(f, _)| *f)
    }

    /// Whether `op` may run in this state (the preconditions the
    /// generator keeps and the shrinker checks candidates against).
    pub fn accepts(&self, op: &Op) -> bool {
        match *op {
            Op::LivepatchLoad { func } => self.func(func).lp == Lp::Absent,
            Op::LivepatchDisable { func } => self.func(func).lp == Lp::Enabled,
            Op::LivepatchUnload { func } => self.func(func).lp != Lp::Absent,
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => {
                func.program(kind).is_some()
                    && (kind != BpfKind::FmodRet || self.caps.fmod_ret)
                    && !self.used_ids.contains(&id)
                    && self.func(func).progs.len() < MAX_PROGS_PER_FUNC
                    && (runs(kind) == Runs::Instead || fmod_ret == 0)
            }
            Op::Detach { id } => self.attached(id).is_some(),
            Op::DirectLoad { .. } => self.direct.is_none(),
            Op::DirectUnload => self.direct.is_some(),
            Op::Call { .. } => true,
        }
    }

    /// Whether every operation of `ops` is accepted in turn from here.
    pub fn accepts_all(&self, ops: &[Op]) -> bool {
        let mut s = self.clone();
        for op in ops {
            if !s.accepts(op) {
                return false;
            }
            s.apply(op);
        }
        true
    }

    /// The errno the rule gives `op` here, or None for success.
    pub fn predict(&self, op: &Op) -> Option<Refusal> {
        match *op {
            // A DIRECT user without ops_func refuses a livepatch under
            // both rules; the exclusive rule also refuses it next to BPF.
            Op::LivepatchLoad { func } => (self.direct_on(func)
                || (self.rule == Rule::Exclusive && !self.func(func).progs.is_empty()))
            .then_some(Refusal::Busy),
            Op::LivepatchDisable { .. } => None,
            // rmmod (O_NONBLOCK) of a module an enabled patch holds.
            Op::LivepatchUnload { func } => {
                (self.func(func).lp == Lp::Enabled).then_some(Refusal::Again)
            }
            // Two DIRECT users never share; the exclusive rule also
            // refuses BPF next to an enabled livepatch.
            Op::Attach { func, .. } => (self.direct_on(func)
                || (self.rule == Rule::Exclusive && self.func(func).lp == Lp::Enabled))
                .then_some(Refusal::Busy),
            Op::Detach { .. } => None,
            Op::DirectLoad { func } => {
                let s = self.func(func);
                (s.lp == Lp::Enabled || !s.progs.is_empty()).then_some(Refusal::Busy)
            }
            Op::DirectUnload => None,
            Op::Call { .. } => None,
        }
    }

    /// Applies `op` (which [`State::accepts`]) to the state: what the
    /// kernel is meant to be left with. Returns the refusal the rule
    /// predicts (then nothing changes but the ids used). A call moves the
    /// counters of what runs ([`State::call`]).
    pub fn transition(&mut self, op: &Op) -> Option<Refusal> {
        let errno = self.predict(op);
        match *op {
            Op::LivepatchLoad { func } => {
                if errno.is_none() {
                    self.func_mut(func).lp = Lp::Enabled;
                }
            }
            Op::LivepatchDisable { func } => self.func_mut(func).lp = Lp::Disabled,
            Op::LivepatchUnload { func } => {
                if errno.is_none() {
                    self.func_mut(func).lp = Lp::Absent;
                }
            }
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => {
                self.used_ids.push(id);
                if errno.is_none() {
                    self.func_mut(func).progs.push(Prog {
                        id,
                        kind,
                        fmod_ret,
                        hits: 0,
                    });
                }
            }
            Op::Detach { id } => {
                if let Some(f) = self.attached(id) {
                    self.func_mut(f).progs.retain(|p| p.id != id);
                }
            }
            Op::DirectLoad { func } => {
                if errno.is_none() {
                    self.direct = Some((func, 0));
                }
            }
            Op::DirectUnload => self.direct = None,
            Op::Call { func } => {
                self.call(func);
            }
        }
        errno
    }

    /// Calls `f` once: every program that runs counts a hit (fentry all;
    /// fmod_ret newest first, and the first non-zero return skips the rest
    /// and the function; fexit all), and the DIRECT user there counts one.
    /// Returns the fmod_ret value the caller sees instead, if any.
    pub fn call(&mut self, f: Func) -> Option<i64> {
        let mut override_ret = None;
        let direct_here = self.direct_on(f);
        let st = self.func_mut(f);
        for p in st.progs.iter_mut().filter(|p| runs(p.kind) == Runs::Before) {
            p.hits += 1;
        }
        for p in st
            .progs
            .iter_mut()
            .rev()
            .filter(|p| runs(p.kind) == Runs::Instead)
        {
            p.hits += 1;
            if p.fmod_ret != 0 {
                override_ret = Some(p.fmod_ret);
                break;
            }
        }
        for p in st.progs.iter_mut().filter(|p| runs(p.kind) == Runs::After) {
            p.hits += 1;
        }
        if direct_here {
            if let Some((_, h)) = &mut self.direct {
                *h += 1;
            }
        }
        override_ret
    }

    /// What coexist_target_value returns to its caller now.
    pub fn ret(&self, f: Func, override_ret: Option<i64>) -> i64 {
        override_ret.unwrap_or(if self.func(f).lp == Lp::Enabled {
            TARGET_PATCHED
        } else {
            TARGET_PLAIN
        })
    }

    /// The users ftrace must list on `f`, as (refs, flags).
    pub fn ftrace_users(&self, f: Func) -> (u64, String) {
        let st = self.func(f);
        let lp = st.lp == Lp::Enabled;
        let direct = !st.progs.is_empty() || self.direct_on(f);
        let refs = lp as u64 + !st.progs.is_empty() as u64 + self.direct_on(f) as u64;
        let mut flags = String::new();
        if direct {
            flags.push('R');
        }
        if lp {
            flags.push('I');
        }
        if direct {
            flags.push('D');
        }
        (refs, flags)
    }
}

/// The ops of a sequence without its calls (a finding lists these).
pub fn without_calls(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .filter(|o| !matches!(o, Op::Call { .. }))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::probes::{refused, Probe};
    use coexist_proto::Step;

    #[test]
    fn every_refusal_is_an_errno_expectations_know() {
        for r in [Refusal::Busy, Refusal::Again] {
            assert_eq!(refused(r).errno.unwrap().as_str(), r.name());
        }
    }

    fn lp(func: Func) -> Op {
        Op::LivepatchLoad { func }
    }
    fn att(id: u32, func: Func, kind: BpfKind) -> Op {
        Op::Attach {
            id,
            func,
            kind,
            fmod_ret: 0,
        }
    }
    fn op_errno(s: &mut State, op: Op) -> Option<String> {
        assert!(s.accepts(&op), "{op} accepted in {s:?}");
        let p = s.apply(&op);
        p[0].expect.errno.as_ref().map(|e| e.as_str().to_string())
    }
    /// The counters a probe list expects of program `id`.
    fn bpf_expect(c: &[&Probe], id: u32) -> crate::steps::bpf::BpfExpect {
        c.iter()
            .find(|x| x.prog == Some(id))
            .unwrap()
            .expect
            .bpf
            .clone()
            .unwrap()
    }

    fn find(p: &[Probe], inv: Invariant, f: Func) -> Vec<&Probe> {
        p.iter()
            .filter(|x| x.invariant == inv)
            .filter(|x| match &x.step {
                Step::Trigger { target } => target == f.name(),
                Step::FtraceState { function } => function == f.name(),
                Step::LivepatchState { name } => name == f.livepatch_name(),
                _ => true,
            })
            .collect()
    }

    #[test]
    fn shared_rule_lets_both_orders_share_a_function() {
        for f in FUNCS {
            let mut s = State::new(Rule::Shared);
            assert_eq!(op_errno(&mut s, lp(f)), None);
            assert_eq!(op_errno(&mut s, att(1, f, BpfKind::Fentry)), None);
            let p = s.apply(&att(2, f, BpfKind::Fexit));
            assert_eq!(p[0].expect.errno, None);
            let ft = find(&p, Invariant::FtraceState, f);
            assert_eq!(
                ft[0].expect.ftrace.as_ref().unwrap().flags.as_deref(),
                Some("RID")
            );
            assert_eq!(ft[0].expect.ftrace.as_ref().unwrap().refs, Some(2));
            let mut s = State::new(Rule::Shared);
            assert_eq!(op_errno(&mut s, att(1, f, BpfKind::Fexit)), None);
            assert_eq!(op_errno(&mut s, lp(f)), None);
        }
    }

    #[test]
    fn exclusive_rule_refuses_the_second_with_ebusy() {
        for f in FUNCS {
            let mut s = State::new(Rule::Exclusive);
            assert_eq!(op_errno(&mut s, lp(f)), None);
            assert_eq!(
                op_errno(&mut s, att(1, f, BpfKind::Fentry)).as_deref(),
                Some("EBUSY")
            );
            // The refused program is not attached: nothing to detach.
            assert!(!s.accepts(&Op::Detach { id: 1 }));
            // The other function is free.
            let other = if f == Func::Cmdline {
                Func::Target
            } else {
                Func::Cmdline
            };
            assert_eq!(op_errno(&mut s, att(2, other, BpfKind::Fentry)), None);
            // Disabled (module still loaded): BPF may attach.
            assert_eq!(op_errno(&mut s, Op::LivepatchDisable { func: f }), None);
            assert_eq!(op_errno(&mut s, att(3, f, BpfKind::Fexit)), None);
            let mut s = State::new(Rule::Exclusive);
            assert_eq!(op_errno(&mut s, att(1, f, BpfKind::Fexit)), None);
            assert_eq!(op_errno(&mut s, lp(f)).as_deref(), Some("EBUSY"));
            assert_eq!(s.func(f).lp, Lp::Absent, "a refused load leaves no module");
            assert_eq!(op_errno(&mut s, Op::Detach { id: 1 }), None);
            assert_eq!(op_errno(&mut s, lp(f)), None);
        }
    }

    #[test]
    fn the_direct_user_excludes_everything_under_both_rules() {
        for rule in [Rule::Shared, Rule::Exclusive] {
            let f = Func::Target;
            let mut s = State::new(rule);
            assert_eq!(op_errno(&mut s, Op::DirectLoad { func: f }), None);
            assert_eq!(op_errno(&mut s, lp(f)).as_deref(), Some("EBUSY"));
            assert_eq!(
                op_errno(&mut s, att(1, f, BpfKind::Fentry)).as_deref(),
                Some("EBUSY")
            );
            assert_eq!(
                op_errno(&mut s, att(2, Func::Cmdline, BpfKind::Fentry)),
                None
            );
            let p = s.apply(&Op::Call { func: f });
            let hits = p
                .iter()
                .rfind(|x| x.invariant == Invariant::DirectHits)
                .unwrap();
            // One call in the checks after each of the four operations
            // before, then the Call op's own and its checks': six.
            assert_eq!(hits.expect.output.as_deref(), Some("6\n"));
            assert_eq!(op_errno(&mut s, Op::DirectUnload), None);
            assert_eq!(op_errno(&mut s, lp(f)), None);
            assert_eq!(
                op_errno(&mut s, Op::DirectLoad { func: f }).as_deref(),
                Some("EBUSY")
            );
            let mut s = State::new(rule);
            assert_eq!(op_errno(&mut s, att(1, f, BpfKind::Fentry)), None);
            assert_eq!(
                op_errno(&mut s, Op::DirectLoad { func: f }).as_deref(),
                Some("EBUSY")
            );
            assert!(s.direct.is_none());
        }
    }

    #[test]
    fn livepatch_lifecycle() {
        let f = Func::Cmdline;
        let mut s = State::new(Rule::Shared);
        assert!(!s.accepts(&Op::LivepatchDisable { func: f }));
        assert!(!s.accepts(&Op::LivepatchUnload { func: f }));
        s.apply(&lp(f));
        assert!(!s.accepts(&lp(f)), "loaded: no second load");
        assert_eq!(
            op_errno(&mut s, Op::LivepatchUnload { func: f }).as_deref(),
            Some("EAGAIN")
        );
        assert_eq!(s.func(f).lp, Lp::Enabled);
        let p = s.apply(&Op::LivepatchDisable { func: f });
        let st = find(&p, Invariant::LivepatchState, f);
        assert_eq!(
            st[0].expect.livepatch.as_ref().unwrap().present,
            Some(false)
        );
        let out = find(&p, Invariant::CallOutput, f);
        assert_eq!(
            out[0].expect.output_not_contains.as_deref(),
            Some("live patched")
        );
        assert!(!s.accepts(&lp(f)), "disabled but loaded: unload first");
        assert_eq!(op_errno(&mut s, Op::LivepatchUnload { func: f }), None);
        assert!(s.accepts(&lp(f)));
    }

    #[test]
    fn calls_show_the_patch_and_move_every_counter_by_one() {
        let f = Func::Target;
        let mut s = State::new(Rule::Shared);
        s.apply(&lp(f));
        s.apply(&att(1, f, BpfKind::Fentry));
        let p = s.apply(&att(2, f, BpfKind::Fexit));
        let out = find(&p, Invariant::CallOutput, f);
        assert_eq!(out[0].expect.output.as_deref(), Some("value=1041\n"));
        let c: Vec<_> = find(&p, Invariant::BpfCounters, f);
        let b1 = c.iter().find(|x| x.prog == Some(1)).unwrap();
        let b2 = c.iter().find(|x| x.prog == Some(2)).unwrap();
        // p1: the check after its attach, and after p2's.
        assert_eq!(b1.expect.bpf.as_ref().unwrap().hits, Some(2));
        assert_eq!(b2.expect.bpf.as_ref().unwrap().hits, Some(1));
        assert_eq!(b2.expect.bpf.as_ref().unwrap().ret, Some(1041));
        assert_eq!(b2.expect.bpf.as_ref().unwrap().arg0, Some(41));
        // Detached: no longer checked; the other moves on.
        let p = s.apply(&Op::Detach { id: 1 });
        let c = find(&p, Invariant::BpfCounters, f);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].expect.bpf.as_ref().unwrap().hits, Some(2));
        let p = s.apply(&Op::LivepatchDisable { func: f });
        let out = find(&p, Invariant::CallOutput, f);
        assert_eq!(out[0].expect.output.as_deref(), Some("value=42\n"));
    }

    #[test]
    fn fmod_ret_runs_newest_first_and_the_first_non_zero_wins() {
        let f = Func::Target;
        let mut s = State::new(Rule::Shared);
        s.apply(&lp(f));
        s.apply(&Op::Attach {
            id: 1,
            func: f,
            kind: BpfKind::FmodRet,
            fmod_ret: FMOD_RET_VALUE,
        });
        s.apply(&att(2, f, BpfKind::Fexit));
        let p = s.apply(&Op::Attach {
            id: 3,
            func: f,
            kind: BpfKind::FmodRet,
            fmod_ret: 0,
        });
        let out = find(&p, Invariant::CallOutput, f);
        assert_eq!(out[0].expect.output.as_deref(), Some("value=777\n"));
        let c = find(&p, Invariant::BpfCounters, f);
        let hits = |id| bpf_expect(&c, id);
        assert_eq!(hits(1).hits, Some(3));
        assert_eq!(hits(2).ret, Some(777));
        assert_eq!(hits(3).hits, Some(1));
        // A non-zero program attached last skips the older ones.
        let p = s.apply(&Op::Attach {
            id: 4,
            func: f,
            kind: BpfKind::FmodRet,
            fmod_ret: FMOD_RET_VALUE,
        });
        let c = find(&p, Invariant::BpfCounters, f);
        let h = |id| bpf_expect(&c, id).hits;
        assert_eq!((h(1), h(3), h(4)), (Some(3), Some(1), Some(1)));
        // fmod_ret is not allowed on cmdline_proc_show (not error-injectable).
        assert!(!s.accepts(&att(9, Func::Cmdline, BpfKind::FmodRet)));
    }

    #[test]
    fn ftrace_users_follow_the_state() {
        let f = Func::Cmdline;
        let mut s = State::new(Rule::Shared);
        assert_eq!(s.ftrace_users(f), (0, String::new()));
        s.apply(&lp(f));
        assert_eq!(s.ftrace_users(f), (1, "I".into()));
        s.apply(&att(1, f, BpfKind::Fentry));
        s.apply(&att(2, f, BpfKind::Fexit));
        assert_eq!(s.ftrace_users(f), (2, "RID".into()));
        s.apply(&Op::LivepatchDisable { func: f });
        assert_eq!(s.ftrace_users(f), (1, "RD".into()));
        s.apply(&Op::Detach { id: 1 });
        s.apply(&Op::Detach { id: 2 });
        assert_eq!(s.ftrace_users(f), (0, String::new()));
        s.apply(&Op::DirectLoad { func: f });
        assert_eq!(s.ftrace_users(f), (1, "RD".into()));
    }

    #[test]
    fn a_kernel_without_error_injection_gets_no_fmod_ret() {
        let none = Model {
            rule: Rule::Shared,
            caps: Caps::of_config("# CONFIG_FUNCTION_ERROR_INJECTION is not set\n"),
        };
        assert_eq!(none.caps, Caps { fmod_ret: false });
        assert_eq!(
            Caps::of_config("CONFIG_FUNCTION_ERROR_INJECTION=y\n"),
            Caps::ALL
        );
        let s = State::new(none);
        assert!(!s.accepts(&att(9, Func::Target, BpfKind::FmodRet)));
        assert!(s.accepts(&att(9, Func::Target, BpfKind::Fexit)));
        assert!(State::new(Rule::Shared).accepts(&att(9, Func::Target, BpfKind::FmodRet)));
        // The generator never draws one for such a kernel.
        for i in 0..200 {
            let ops = super::super::gen::sequence(i, none, 12);
            assert!(
                !ops.iter().any(|o| matches!(
                    o,
                    Op::Attach {
                        kind: BpfKind::FmodRet,
                        ..
                    }
                )),
                "{ops:?}"
            );
        }
    }

    #[test]
    fn accepts_all_checks_a_whole_sequence() {
        let s = State::new(Rule::Shared);
        let f = Func::Cmdline;
        assert!(s.accepts_all(&[lp(f), att(1, f, BpfKind::Fentry), Op::Detach { id: 1 }]));
        assert!(!s.accepts_all(&[Op::Detach { id: 1 }]));
        assert!(!s.accepts_all(&[att(1, f, BpfKind::Fentry), att(1, f, BpfKind::Fexit)]));
        assert!(!s.accepts_all(&[lp(f), lp(f)]));
    }
}
