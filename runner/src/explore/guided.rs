//! Coverage-guided generation (`explore --guided`): a corpus of the
//! sequences that reached new lines or branches of the area, and new
//! sequences made by mutating its entries (insert, drop or replace an
//! operation, splice two entries), each repaired so the model accepts it.
//! The uniform generator stays the fallback (an empty corpus, and one
//! sequence in [`UNIFORM_EVERY`]).
//!
//! In: the run's seed (each sequence's mutation is drawn from its own
//! seed), the model, what each finished sequence reached (`guest::gcov`).
//! Out: sequences; the corpus, written to `corpus/` of the results
//! directory and read back by `--corpus DIR`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::gen::{self, Rng};
use super::model::{Model, Op, State};
use crate::guest::gcov::Reached;

/// One sequence in this many is drawn uniformly even with a corpus.
pub const UNIFORM_EVERY: usize = 5;

/// How a corpus entry was changed into a new sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutation {
    Uniform,
    Insert,
    Drop,
    Replace,
    Splice,
}

/// A corpus entry as written to `corpus/<n>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub ops: Vec<Op>,
    /// New lines and branches it reached when it joined.
    pub new_lines: usize,
    pub new_branches: usize,
    /// The sequence that made it (index, seed hex); `--corpus`: loaded.
    pub from: String,
}

/// The corpus, and everything its run has reached so far.
#[derive(Default)]
pub struct Corpus {
    pub entries: Vec<Entry>,
    /// What the run has reached: everything it reached, so far.
    pub reached: Reached,
}

impl Corpus {
    /// Adds what a sequence reached; returns how many lines and branches
    /// were new (the sequence joins the corpus when any was).
    pub fn add(&mut self, r: &Reached) -> (usize, usize) {
        let t = &mut self.reached;
        let before = (t.lines.len(), t.branches.len());
        t.lines.extend(r.lines.iter().cloned());
        t.branches.extend(r.branches.iter().cloned());
        t.area_lines.extend(r.area_lines.iter().cloned());
        t.area_branches.extend(r.area_branches.iter().cloned());
        (t.lines.len() - before.0, t.branches.len() - before.1)
    }

    /// Loads the entries of a corpus directory (`--corpus DIR`).
    pub fn load(dir: &Path) -> Result<Vec<Entry>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("--corpus {}: cannot read it", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("--corpus {}: no corpus entry (*.json) in it", dir.display());
        }
        files
            .iter()
            .map(|f| {
                let b = std::fs::read(f)?;
                serde_json::from_slice(&b)
                    .with_context(|| format!("--corpus: {} is not a corpus entry", f.display()))
            })
            .collect()
    }
}

/// `ops` made acceptable to the model: attach ids renumbered from 1 in
/// order, a detach of an id never attached (or already detached) dropped,
/// every operation the model refuses in the state so far dropped; at most
/// `max_len` operations.
pub fn repair(ops: &[Op], model: Model, max_len: usize) -> Vec<Op> {
    let mut s = State::new(model);
    let mut out = Vec::new();
    let mut ids: Vec<(u32, u32)> = Vec::new();
    let mut next = 1;
    for op in ops {
        if out.len() >= max_len {
            break;
        }
        let op = match *op {
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => {
                let o = Op::Attach {
                    id: next,
                    func,
                    kind,
                    fmod_ret,
                };
                if !s.accepts(&o) {
                    continue;
                }
                ids.retain(|(old, _)| *old != id);
                ids.push((id, next));
                next += 1;
                o
            }
            Op::Detach { id } => match ids.iter().find(|(old, _)| *old == id) {
                Some(&(_, new)) => Op::Detach { id: new },
                None => continue,
            },
            other => other,
        };
        if !s.accepts(&op) {
            continue;
        }
        s.apply(&op);
        out.push(op);
    }
    out
}

/// An operation the model accepts after `prefix` (drawn uniformly), if any.
fn any_op(prefix: &[Op], model: Model, rng: &mut Rng) -> Option<Op> {
    let mut s = State::new(model);
    let mut next = 1;
    for op in prefix {
        if let Op::Attach { .. } = op {
            next += 1;
        }
        s.apply(op);
    }
    let c = gen::candidates(&s, next);
    (!c.is_empty()).then(|| c[rng.below(c.len())])
}

/// The sequence of `seed` in a guided run: a mutation of a corpus entry
/// (repaired), or, with an empty corpus, one sequence in
/// [`UNIFORM_EVERY`], or a mutation that leaves nothing, the uniform
/// generator's.
pub fn sequence(seed: u64, corpus: &[Entry], model: Model, max_len: usize) -> (Vec<Op>, Mutation) {
    let mut rng = Rng::new(seed);
    if corpus.is_empty() || rng.below(UNIFORM_EVERY) == 0 {
        return (gen::sequence(seed, model, max_len), Mutation::Uniform);
    }
    let a = &corpus[rng.below(corpus.len())].ops;
    let how = match rng.below(4) {
        0 => Mutation::Insert,
        1 if a.len() > 1 => Mutation::Drop,
        2 if !a.is_empty() => Mutation::Replace,
        3 if corpus.len() > 1 => Mutation::Splice,
        _ => Mutation::Insert,
    };
    let at = rng.below(a.len() + 1);
    let raw: Vec<Op> = match how {
        Mutation::Insert | Mutation::Replace => {
            let prefix = repair(&a[..at.min(a.len())], model, max_len);
            let rest = if how == Mutation::Replace {
                a.get(at + 1..).unwrap_or(&[])
            } else {
                &a[at.min(a.len())..]
            };
            let mut v = prefix.clone();
            v.extend(any_op(&prefix, model, &mut rng));
            v.extend_from_slice(rest);
            v
        }
        Mutation::Drop => {
            let i = at.min(a.len() - 1);
            a.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, o)| *o)
                .collect()
        }
        Mutation::Splice => {
            let b = &corpus[rng.below(corpus.len())].ops;
            let j = rng.below(b.len() + 1);
            a[..at.min(a.len())]
                .iter()
                .chain(b[j.min(b.len())..].iter())
                .copied()
                .collect()
        }
        Mutation::Uniform => unreachable!("chosen above"),
    };
    let ops = repair(&raw, model, max_len);
    if ops.is_empty() {
        return (gen::sequence(seed, model, max_len), Mutation::Uniform);
    }
    (ops, how)
}

#[cfg(test)]
mod tests {
    use super::super::model::Rule;
    use super::*;
    use std::collections::BTreeSet;

    fn entry(ops: Vec<Op>) -> Entry {
        Entry {
            ops,
            new_lines: 1,
            new_branches: 0,
            from: "t".into(),
        }
    }

    #[test]
    fn repair_keeps_what_the_model_accepts_and_renumbers_attachments() {
        let model: Model = Rule::Shared.into();
        let raw = gen::sequence(gen::sequence_seed(3, 1), model, 12);
        assert_eq!(repair(&raw, model, 12), raw, "an accepted sequence stays");
        // A detach of an id never attached goes; ids start at 1 again.
        let mut odd = vec![Op::Detach { id: 9 }];
        odd.extend(raw.iter().copied());
        assert_eq!(repair(&odd, model, 12), raw);
        assert!(repair(&raw, model, 3).len() <= 3);
    }

    #[test]
    fn guided_sequences_are_accepted_reproducible_and_use_every_mutation() {
        for rule in [Rule::Shared, Rule::Exclusive] {
            let model: Model = rule.into();
            let corpus: Vec<Entry> = (0..4)
                .map(|i| entry(gen::sequence(gen::sequence_seed(11, i), model, 12)))
                .collect();
            let mut seen = BTreeSet::new();
            for i in 0..300 {
                let seed = gen::sequence_seed(5, i);
                let (ops, how) = sequence(seed, &corpus, model, 12);
                assert_eq!((ops.clone(), how), sequence(seed, &corpus, model, 12));
                assert!(!ops.is_empty() && ops.len() <= 12);
                assert!(
                    State::new(model).accepts_all(&ops),
                    "{rule:?} {how:?} {ops:?}"
                );
                seen.insert(format!("{how:?}"));
            }
            assert_eq!(seen.len(), 5, "{seen:?}");
            // An empty corpus: the uniform generator.
            let seed = gen::sequence_seed(5, 0);
            assert_eq!(
                sequence(seed, &[], model, 12),
                (gen::sequence(seed, model, 12), Mutation::Uniform)
            );
        }
    }

    #[test]
    fn the_corpus_counts_what_is_new() {
        let mut c = Corpus::default();
        let mut r = Reached::default();
        r.lines.insert(("a.c".into(), 1));
        r.branches.insert(("a.c".into(), 1, 0));
        assert_eq!(c.add(&r), (1, 1));
        assert_eq!(c.add(&r), (0, 0));
        r.lines.insert(("a.c".into(), 2));
        assert_eq!(c.add(&r), (1, 0));
    }
}
