//! Shrinking a failing sequence: candidate subsequences are replayed on a
//! fresh system each (for the real thing, a VM restored from the READY
//! snapshot); a candidate is kept only where the model accepts every
//! operation of it and it fails the same way (same [`Signature`]).
//! Chunks are dropped first (halves, quarters, ...), then single
//! operations, until no single operation can be removed.

use serde::{Deserialize, Serialize};

use super::model::{Invariant, Model, Op, State};

/// How a sequence failed, for "the same way": the invariant and, for a
/// splat, its title without CPU, PID and offsets.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Signature {
    pub invariant: Invariant,
    pub splat: Option<String>,
}

/// A splat's title without what changes from run to run.
pub fn normalize_title(title: &str) -> String {
    let re_cpu = regex::Regex::new(r"CPU: \d+ PID: \d+ ").expect("regex");
    let re_off = regex::Regex::new(r"\+0x[0-9a-f]+/0x[0-9a-f]+").expect("regex");
    let re_pid = regex::Regex::new(r"\b(PID|pid)[: ]+\d+").expect("regex");
    let t = re_cpu.replace_all(title, "");
    let t = re_off.replace_all(&t, "");
    re_pid.replace_all(&t, "$1").trim().to_string()
}

/// One run of a candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// How it failed, if it did, and at which operation (index).
    pub failed: Option<(Signature, usize)>,
}

/// What the shrinker replays candidates on.
pub trait System {
    /// Runs `ops` from a fresh start.
    fn replay(&mut self, ops: &[Op]) -> Replay;
    /// Whether to stop shrinking now (the run was interrupted).
    fn stopped(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk {
    pub ops: Vec<Op>,
    /// Candidates replayed.
    pub replays: usize,
    /// No single operation can be removed (false: the replay cap was hit).
    pub minimal: bool,
}

/// Shrinks `ops`, which failed with `sig` at operation `at`. At most
/// `max_replays` candidates are replayed.
pub fn shrink(
    ops: &[Op],
    sig: &Signature,
    at: usize,
    model: impl Into<Model>,
    sys: &mut dyn System,
    max_replays: usize,
) -> Shrunk {
    let mut sh = Shrinker {
        sig,
        model: State::new(model),
        sys,
        replays: 0,
        max_replays,
        // Nothing after the failing operation ran.
        cur: ops[..(at + 1).min(ops.len())].to_vec(),
    };
    let minimal = sh.run();
    Shrunk {
        ops: sh.cur,
        replays: sh.replays,
        minimal,
    }
}

struct Shrinker<'a> {
    sig: &'a Signature,
    model: State,
    sys: &'a mut dyn System,
    replays: usize,
    max_replays: usize,
    cur: Vec<Op>,
}

enum Try {
    Kept,
    No,
    Out,
}

impl Shrinker<'_> {
    /// Replays `cand` if the model accepts it; keeps it if it fails the
    /// same way (cut after its failing operation).
    fn attempt(&mut self, mut cand: Vec<Op>) -> Try {
        if cand.is_empty() || !self.model.accepts_all(&cand) {
            return Try::No;
        }
        if self.replays >= self.max_replays || self.sys.stopped() {
            return Try::Out;
        }
        self.replays += 1;
        match self.sys.replay(&cand).failed {
            Some((s, at)) if &s == self.sig => {
                cand.truncate(at + 1);
                self.cur = cand;
                Try::Kept
            }
            _ => Try::No,
        }
    }

    /// Chunks, then single operations, then pairs (an attach with its
    /// detach, a load with its unload: neither goes alone), until no
    /// single operation and no pair can be removed. False when the
    /// replay cap or an interruption stopped it first.
    fn run(&mut self) -> bool {
        let mut n = (self.cur.len() / 2).max(1);
        loop {
            let mut removed = false;
            let mut i = 0;
            while i < self.cur.len() {
                let end = (i + n).min(self.cur.len());
                let mut cand = self.cur[..i].to_vec();
                cand.extend_from_slice(&self.cur[end..]);
                match self.attempt(cand) {
                    Try::Kept => removed = true,
                    Try::No => i += n,
                    Try::Out => return false,
                }
            }
            if n > 1 {
                n = (n / 2).max(1);
                continue;
            }
            if removed {
                continue;
            }
            // 1-minimal: try pairs.
            let mut pair_removed = false;
            'pairs: for i in 0..self.cur.len() {
                for j in i + 1..self.cur.len() {
                    let cand: Vec<Op> = self
                        .cur
                        .iter()
                        .enumerate()
                        .filter(|(k, _)| *k != i && *k != j)
                        .map(|(_, o)| *o)
                        .collect();
                    match self.attempt(cand) {
                        Try::Kept => {
                            pair_removed = true;
                            break 'pairs;
                        }
                        Try::No => {}
                        Try::Out => return false,
                    }
                }
            }
            if !pair_removed {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gen;
    use super::super::model::{Func, Lp, Rule};
    use super::*;
    use coexist_proto::BpfKind;

    /// A fake kernel with the stock bug injected: adding a program that
    /// calls the original function (fexit, fmod_ret) to a trampoline that
    /// has only fentry programs, on a function whose livepatch is enabled,
    /// bypasses the livepatch: the next call shows the unpatched output.
    struct Buggy {
        runs: usize,
    }

    impl System for Buggy {
        fn replay(&mut self, ops: &[Op]) -> Replay {
            self.runs += 1;
            let mut s = State::new(Rule::Shared);
            for (i, op) in ops.iter().enumerate() {
                if let Op::Attach { func, kind, .. } = *op {
                    let st = s.func(func);
                    if kind != BpfKind::Fentry
                        && st.lp == Lp::Enabled
                        && !st.progs.is_empty()
                        && st.progs.iter().all(|p| p.kind == BpfKind::Fentry)
                    {
                        return Replay {
                            failed: Some((
                                Signature {
                                    invariant: Invariant::CallOutput,
                                    splat: None,
                                },
                                i,
                            )),
                        };
                    }
                }
                s.apply(op);
            }
            Replay { failed: None }
        }
    }

    #[test]
    fn shrinks_injected_bug_to_its_three_operations() {
        let mut found = 0;
        let mut three = 0;
        for i in 0..400 {
            let ops = gen::sequence(gen::sequence_seed(99, i), Rule::Shared, 20);
            let mut sys = Buggy { runs: 0 };
            let Some((sig, at)) = sys.replay(&ops).failed else {
                continue;
            };
            found += 1;
            let r = shrink(&ops, &sig, at, Rule::Shared, &mut sys, 500);
            assert!(r.minimal);
            // Three operations (livepatch, fentry, fexit/fmod_ret) or a
            // longer minimal form the fake allows (e.g. fmod_ret attached
            // early, detached after the livepatch): never more than six.
            assert!(r.ops.len() <= 6, "{:?} -> {:?}", ops, r.ops);
            if r.ops.len() == 3 {
                three += 1;
                // The livepatch and fentry in either order (the fake's
                // bug needs only both there), then fexit or fmod_ret.
                assert!(r.ops[..2]
                    .iter()
                    .any(|o| matches!(o, Op::LivepatchLoad { .. })));
                assert!(r.ops[..2].iter().any(|o| matches!(
                    o,
                    Op::Attach {
                        kind: BpfKind::Fentry,
                        ..
                    }
                )));
                assert!(matches!(r.ops[2], Op::Attach { kind, .. } if kind != BpfKind::Fentry));
            }
            // Still fails the same way, and no single op can go.
            assert_eq!(sys.replay(&r.ops).failed.map(|f| f.0), Some(sig.clone()));
            for k in 0..r.ops.len() {
                let mut c = r.ops.clone();
                c.remove(k);
                let same = State::new(Rule::Shared).accepts_all(&c)
                    && sys.replay(&c).failed.map(|f| f.0) == Some(sig.clone());
                assert!(!same);
            }
        }
        assert!(found >= 5, "the injected bug was found {found} times");
        assert!(
            three * 2 >= found,
            "{three} of {found} shrunk to three operations"
        );
    }

    #[test]
    fn an_attach_and_its_detach_go_together() {
        let f = Func::Cmdline;
        let at = |id, kind| Op::Attach {
            id,
            func: f,
            kind,
            fmod_ret: 0,
        };
        // As found on stock (seed 103): no single operation can go, the
        // pair attach(p2)/detach(p2) can.
        let ops = [
            Op::LivepatchLoad { func: f },
            at(2, BpfKind::Fexit),
            Op::Detach { id: 2 },
            at(6, BpfKind::Fentry),
            at(7, BpfKind::Fexit),
        ];
        let mut sys = Buggy { runs: 0 };
        let (sig, at_op) = sys.replay(&ops).failed.unwrap();
        assert_eq!(at_op, 4);
        let r = shrink(&ops, &sig, at_op, Rule::Shared, &mut sys, 100);
        assert!(r.minimal);
        assert_eq!(
            r.ops,
            vec![ops[0], at(6, BpfKind::Fentry), at(7, BpfKind::Fexit)]
        );
    }

    #[test]
    fn candidates_the_model_rejects_are_never_replayed() {
        struct Strict;
        impl System for Strict {
            fn replay(&mut self, ops: &[Op]) -> Replay {
                assert!(State::new(Rule::Shared).accepts_all(ops), "{ops:?}");
                Replay {
                    failed: ops
                        .iter()
                        .position(|o| matches!(o, Op::DirectUnload))
                        .map(|i| {
                            (
                                Signature {
                                    invariant: Invariant::Result,
                                    splat: None,
                                },
                                i,
                            )
                        }),
                }
            }
        }
        let f = Func::Target;
        let ops = [
            Op::LivepatchLoad { func: f },
            Op::DirectLoad {
                func: Func::Cmdline,
            },
            Op::LivepatchDisable { func: f },
            Op::DirectUnload,
            Op::Call { func: f },
        ];
        let sig = Signature {
            invariant: Invariant::Result,
            splat: None,
        };
        let r = shrink(&ops, &sig, 3, Rule::Shared, &mut Strict, 100);
        assert_eq!(
            r.ops,
            vec![
                Op::DirectLoad {
                    func: Func::Cmdline
                },
                Op::DirectUnload
            ]
        );
        // The cap stops it.
        let r = shrink(&ops, &sig, 3, Rule::Shared, &mut Strict, 1);
        assert!(!r.minimal);
    }

    #[test]
    fn titles_lose_cpu_pid_and_offsets() {
        assert_eq!(
            normalize_title("WARNING: CPU: 1 PID: 123 at kernel/trace/ftrace.c:7660 ftrace_ops_list_func+0x1a/0x30"),
            "WARNING: at kernel/trace/ftrace.c:7660 ftrace_ops_list_func"
        );
    }
}
