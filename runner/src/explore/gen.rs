//! Seeded sequences: a small deterministic PRNG (SplitMix64), each
//! sequence's seed derived from the run's seed and its index, and the
//! generator, which picks uniformly among the operations the model
//! accepts in the current state (no operation, order or weight favours
//! any particular sequence).

use coexist_proto::BpfKind;

use super::model::{self, Func, Model, Op, State, FMOD_RET_VALUE, FUNCS};

/// SplitMix64: tiny, fast, and the same on every host.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// The seed of sequence `index` of a run with seed `run_seed`.
pub fn sequence_seed(run_seed: u64, index: u64) -> u64 {
    let mut r = Rng::new(run_seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64()
}

/// Every operation the model accepts in `s`; `next_id` is the id a new
/// attach gets.
pub fn candidates(s: &State, next_id: u32) -> Vec<Op> {
    let mut v = Vec::new();
    for func in FUNCS {
        v.push(Op::LivepatchLoad { func });
        v.push(Op::LivepatchDisable { func });
        v.push(Op::LivepatchUnload { func });
        for kind in BpfKind::ALL {
            let rets: &[i64] = if model::runs(kind) == model::Runs::Instead {
                &[0, FMOD_RET_VALUE]
            } else {
                &[0]
            };
            for &fmod_ret in rets {
                v.push(Op::Attach {
                    id: next_id,
                    func,
                    kind,
                    fmod_ret,
                });
            }
        }
        for p in &s.func(func).progs {
            v.push(Op::Detach { id: p.id });
        }
        v.push(Op::DirectLoad { func });
        v.push(Op::Call { func });
    }
    v.push(Op::DirectUnload);
    v.retain(|o| s.accepts(o));
    v
}

/// The sequence of `seed`: `len` operations (between half of `max_len`
/// and `max_len`), each accepted by the model in turn.
pub fn sequence(seed: u64, model: impl Into<Model>, max_len: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let max_len = max_len.max(1);
    let min_len = max_len.div_ceil(2);
    let len = min_len + rng.below(max_len - min_len + 1);
    let mut s = State::new(model);
    let mut ops = Vec::with_capacity(len);
    let mut next_id = 1;
    for _ in 0..len {
        let c = candidates(&s, next_id);
        let op = c[rng.below(c.len())];
        if let Op::Attach { .. } = op {
            next_id += 1;
        }
        s.apply(&op);
        ops.push(op);
    }
    ops
}

/// The functions an operation touches (for people reading a sequence).
pub fn funcs_of(op: &Op, s: &State) -> Vec<Func> {
    match *op {
        Op::LivepatchLoad { func }
        | Op::LivepatchDisable { func }
        | Op::LivepatchUnload { func }
        | Op::Attach { func, .. }
        | Op::DirectLoad { func }
        | Op::Call { func } => vec![func],
        Op::Detach { id } => s.attached(id).into_iter().collect(),
        Op::DirectUnload => s.direct.map(|(f, _)| f).into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Rule;
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_every_op_accepted() {
        for i in 0..200 {
            let seed = sequence_seed(42, i);
            let a = sequence(seed, Rule::Shared, 12);
            assert_eq!(a, sequence(seed, Rule::Shared, 12));
            assert!((6..=12).contains(&a.len()));
            assert!(State::new(Rule::Shared).accepts_all(&a));
            let b = sequence(seed, Rule::Exclusive, 12);
            assert!(State::new(Rule::Exclusive).accepts_all(&b));
        }
        assert_ne!(sequence_seed(1, 0), sequence_seed(2, 0));
        assert_ne!(sequence_seed(1, 0), sequence_seed(1, 1));
    }

    #[test]
    fn the_alphabet_is_covered() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..500 {
            for op in sequence(sequence_seed(7, i), Rule::Shared, 12) {
                let name = format!("{op}");
                seen.insert(name.split('(').next().unwrap().to_string());
                if let Op::Attach { kind, func, .. } = op {
                    seen.insert(format!("{}-{}", kind.section(), func.short()));
                }
            }
        }
        for k in [
            "livepatch_load",
            "livepatch_disable",
            "livepatch_unload",
            "attach",
            "detach",
            "direct_load",
            "direct_unload",
            "call",
            "fentry-cmdline",
            "fexit-cmdline",
            "fentry-target",
            "fexit-target",
            "fmod_ret-target",
        ] {
            assert!(seen.contains(k), "{k} never generated: {seen:?}");
        }
        assert!(!seen.contains("fmod_ret-cmdline"));
    }
}
