//! Coverage-guided generation (`explore --guided`): a corpus of the
//! sequences that reached new lines or branches of the area, and new
//! sequences made by mutating its entries (insert, drop or replace an
//! operation, splice two entries; one to [`MAX_STACK`] of them stacked),
//! each repaired so the model accepts it. An entry is chosen with a
//! weight that grows with the rare lines it reaches (a line reached by
//! `n` sequences adds `1/n`), so the search keeps returning to the
//! sequences at the edge of what the run has reached. The uniform
//! generator stays the fallback (an empty corpus, and one sequence in
//! [`UNIFORM_EVERY`], more while the corpus stops growing).
//!
//! In: the run's seed (each sequence's mutation is drawn from its own
//! seed), the model, what each finished sequence reached (`guest::gcov`).
//! Out: sequences; the corpus, written to `corpus/` of the results
//! directory and read back by `--corpus DIR`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::gen::{self, Rng};
use super::model::{Model, Op, State};
use crate::guest::gcov::Reached;

/// One sequence in this many is drawn uniformly even with a corpus...
pub const UNIFORM_EVERY: usize = 5;

/// ...and more as the corpus stops growing: one more in a hundred for
/// every [`STALE_STEP`] sequences in a row that reached nothing new, up
/// to [`UNIFORM_MAX_PERCENT`] in a hundred. A corpus that has reached
/// what its mutations reach leaves the rest to uniform drawing, which
/// reaches combinations far from every entry.
pub const STALE_STEP: u64 = 2;
pub const UNIFORM_MAX_PERCENT: u64 = 60;

/// At most this many mutations are stacked to make one sequence.
pub const MAX_STACK: usize = 3;

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
    /// How many sequences reached each line.
    hits: BTreeMap<(String, u32), u32>,
    /// The lines each entry reached when it ran (empty for an entry
    /// loaded by `--corpus`: it has not run in this run).
    entry_lines: Vec<Vec<(String, u32)>>,
    /// Sequences in a row that reached nothing new.
    stale: u64,
}

impl Corpus {
    /// A corpus that starts from `entries` (`--corpus`).
    pub fn new(entries: Vec<Entry>) -> Corpus {
        Corpus {
            entry_lines: vec![Vec::new(); entries.len()],
            entries,
            ..Corpus::default()
        }
    }

    /// Adds what a sequence reached; returns how many lines and branches
    /// were new (the sequence joins the corpus, by [`Corpus::push`], when
    /// any was).
    pub fn add(&mut self, r: &Reached) -> (usize, usize) {
        for l in &r.lines {
            *self.hits.entry(l.clone()).or_default() += 1;
        }
        let t = &mut self.reached;
        let before = (t.lines.len(), t.branches.len());
        t.lines.extend(r.lines.iter().cloned());
        t.branches.extend(r.branches.iter().cloned());
        t.area_lines.extend(r.area_lines.iter().cloned());
        t.area_branches.extend(r.area_branches.iter().cloned());
        let new = (t.lines.len() - before.0, t.branches.len() - before.1);
        self.stale = if new == (0, 0) { self.stale + 1 } else { 0 };
        new
    }

    /// In a hundred, how many sequences are drawn uniformly now: one in
    /// [`UNIFORM_EVERY`], more while the corpus is stale (see
    /// [`STALE_STEP`]).
    pub fn uniform_percent(&self) -> u64 {
        (100 / UNIFORM_EVERY as u64 + self.stale / STALE_STEP).min(UNIFORM_MAX_PERCENT)
    }

    /// Adds an entry, with the lines its sequence reached.
    pub fn push(&mut self, e: Entry, r: &Reached) {
        self.entries.push(e);
        self.entry_lines.push(r.lines.iter().cloned().collect());
    }

    /// Each entry's weight when one is chosen: 1, plus `1/n` for each line
    /// it reached that `n` sequences of the run reached.
    pub fn weights(&self) -> Vec<f64> {
        self.entry_lines
            .iter()
            .map(|lines| {
                1.0 + lines
                    .iter()
                    .map(|l| 1.0 / f64::from(self.hits.get(l).copied().unwrap_or(1).max(1)))
                    .sum::<f64>()
            })
            .collect()
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

/// An index in `0..weights.len()`, drawn with probability proportional
/// to its weight (uniform when the weights are missing or not positive).
fn pick(weights: &[f64], n: usize, rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().take(n).sum();
    if weights.len() != n || !total.is_finite() || total <= 0.0 {
        return rng.below(n);
    }
    let mut x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    n - 1
}

/// One mutation of `a` (before repair).
fn mutate(
    a: &[Op],
    corpus: &[Entry],
    weights: &[f64],
    model: Model,
    max_len: usize,
    rng: &mut Rng,
) -> (Vec<Op>, Mutation) {
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
            v.extend(any_op(&prefix, model, rng));
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
            let b = &corpus[pick(weights, corpus.len(), rng)].ops;
            let j = rng.below(b.len() + 1);
            a[..at.min(a.len())]
                .iter()
                .chain(b[j.min(b.len())..].iter())
                .copied()
                .collect()
        }
        Mutation::Uniform => unreachable!("chosen above"),
    };
    (raw, how)
}

/// The sequence of `seed` in a guided run: an entry of the corpus, chosen
/// by `weights` ([`Corpus::weights`]; uniform when they do not match),
/// changed by one to [`MAX_STACK`] mutations and repaired (the first
/// mutation is returned); with an empty corpus, `uniform_percent` in a
/// hundred sequences ([`Corpus::uniform_percent`]), or a mutation that
/// leaves nothing, the uniform generator's.
pub fn sequence(
    seed: u64,
    corpus: &[Entry],
    weights: &[f64],
    uniform_percent: u64,
    model: Model,
    max_len: usize,
) -> (Vec<Op>, Mutation) {
    let mut rng = Rng::new(seed);
    if corpus.is_empty() || (rng.below(100) as u64) < uniform_percent {
        return (gen::sequence(seed, model, max_len), Mutation::Uniform);
    }
    let mut ops = corpus[pick(weights, corpus.len(), &mut rng)].ops.clone();
    let mut first = None;
    for _ in 0..1 + rng.below(MAX_STACK) {
        let (raw, how) = mutate(&ops, corpus, weights, model, max_len, &mut rng);
        first.get_or_insert(how);
        ops = repair(&raw, model, max_len);
    }
    if ops.is_empty() {
        return (gen::sequence(seed, model, max_len), Mutation::Uniform);
    }
    (ops, first.unwrap_or(Mutation::Insert))
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
            let weights = [1.0, 1.0, 5.0, 1.0];
            let mut seen = BTreeSet::new();
            for i in 0..300 {
                let seed = gen::sequence_seed(5, i);
                let (ops, how) = sequence(seed, &corpus, &weights, 20, model, 12);
                assert_eq!(
                    (ops.clone(), how),
                    sequence(seed, &corpus, &weights, 20, model, 12)
                );
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
                sequence(seed, &[], &[], 20, model, 12),
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
        // A corpus that stops growing draws more uniformly, up to a cap.
        assert_eq!(c.uniform_percent(), 20);
        for _ in 0..10 {
            c.add(&r);
        }
        assert_eq!(c.uniform_percent(), 25);
        for _ in 0..1000 {
            c.add(&r);
        }
        assert_eq!(c.uniform_percent(), UNIFORM_MAX_PERCENT);
        r.lines.insert(("a.c".into(), 3));
        c.add(&r);
        assert_eq!(
            c.uniform_percent(),
            20,
            "something new: back to one in five"
        );
    }

    #[test]
    fn entries_that_reach_rare_lines_weigh_more_and_are_chosen_more() {
        let mut c = Corpus::new(vec![entry(vec![])]);
        let line = |n: u32| ("a.c".to_string(), n);
        let mut common = Reached::default();
        common.lines.insert(line(1));
        let mut rare = common.clone();
        rare.lines.insert(line(2));
        for _ in 0..9 {
            c.add(&common);
        }
        c.add(&rare);
        c.push(entry(vec![]), &common);
        c.push(entry(vec![]), &rare);
        let w = c.weights();
        // Loaded: 1. Common: 1 + 1/10. Rare: 1 + 1/10 + 1/1.
        assert_eq!(w.len(), 3);
        assert!((w[0] - 1.0).abs() < 1e-9 && (w[1] - 1.1).abs() < 1e-9);
        assert!((w[2] - 2.1).abs() < 1e-9, "{w:?}");
        let mut rng = Rng::new(1);
        let mut n = [0usize; 3];
        for _ in 0..4200 {
            n[pick(&w, 3, &mut rng)] += 1;
        }
        // Expected 1000, 1100, 2100.
        assert!(n[2] > 1800 && n[0] < 1200 && n[1] > 900, "{n:?}");
        // Weights that do not match the corpus: uniform.
        assert!(pick(&[], 3, &mut rng) < 3);
    }
}
