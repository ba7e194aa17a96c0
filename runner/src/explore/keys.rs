//! Keys over the model: a sequence up to program ids ([`canonical`]), and
//! the coverage of a run (operations by kind, function and predicted
//! result; the state each function was left in).

use super::model::{self, Op, Refusal};

/// Renumbers program ids in order of appearance (for comparing sequences).
pub fn canonical(ops: &[Op]) -> Vec<Op> {
    let mut map = std::collections::BTreeMap::new();
    let mut id_of = |id: u32| {
        let n = map.len() as u32 + 1;
        *map.entry(id).or_insert(n)
    };
    ops.iter()
        .map(|o| match *o {
            Op::Attach {
                id,
                func,
                kind,
                fmod_ret,
            } => Op::Attach {
                id: id_of(id),
                func,
                kind,
                fmod_ret,
            },
            Op::Detach { id } => Op::Detach { id: id_of(id) },
            other => other,
        })
        .collect()
}

/// `state target: livepatch enabled; fentry, fmod_ret(777), fexit`: what
/// a function had after an operation (programs in attach order).
pub fn state_key(s: &model::State, f: model::Func) -> String {
    let st = s.func(f);
    let lp = match st.lp {
        model::Lp::Absent => "no livepatch",
        model::Lp::Enabled => "livepatch enabled",
        model::Lp::Disabled => "livepatch disabled",
    };
    let progs: Vec<String> = st
        .progs
        .iter()
        .map(|p| match p.kind {
            coexist_proto::BpfKind::FmodRet => format!("fmod_ret({})", p.fmod_ret),
            k => k.section().to_string(),
        })
        .collect();
    let direct = if matches!(s.direct, Some((d, _)) if d == f) {
        "; coexist_direct"
    } else {
        ""
    };
    format!(
        "state {}: {lp}; {}{direct}",
        f.short(),
        if progs.is_empty() {
            "no BPF".to_string()
        } else {
            progs.join(", ")
        }
    )
}

/// `attach fmod_ret(777) target -> EBUSY`: an operation's kind, function
/// and result in `s`.
pub fn coverage_key(s: &model::State, op: &Op) -> String {
    let what = match *op {
        Op::Attach {
            func,
            kind,
            fmod_ret,
            ..
        } => {
            let k = if model::runs(kind) == model::Runs::Instead {
                format!("fmod_ret({fmod_ret})")
            } else {
                kind.section().to_string()
            };
            format!("attach {k} {}", func.short())
        }
        Op::Detach { id } => format!(
            "detach {}",
            s.attached(id).map(|f| f.short()).unwrap_or("?")
        ),
        Op::DirectUnload => "direct_unload".to_string(),
        other => other.to_string().replace('(', " ").replace(')', ""),
    };
    format!("{what} -> {}", s.predict(op).map_or("ok", Refusal::name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::model::Func;
    use coexist_proto::BpfKind;

    #[test]
    fn canonical_renumbers_programs() {
        let f = Func::Cmdline;
        let a = [
            Op::Attach {
                id: 7,
                func: f,
                kind: BpfKind::Fentry,
                fmod_ret: 0,
            },
            Op::Detach { id: 7 },
        ];
        let b = [
            Op::Attach {
                id: 2,
                func: f,
                kind: BpfKind::Fentry,
                fmod_ret: 0,
            },
            Op::Detach { id: 2 },
        ];
        assert_eq!(canonical(&a), canonical(&b));
    }
}
