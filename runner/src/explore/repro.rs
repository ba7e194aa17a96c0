//! A finding as a ready suite file: the prologue and every probe of the
//! minimal sequence, each step with the model's expectation, so
//! `coexist suite <file> --variant V` runs it as-is and stops (FAIL) at
//! the step that broke the invariant.

use coexist_proto::Step;

use super::model::{Model, Op, Rule, State};
use super::probes::{prologue, Probe};

fn label(id: u32) -> String {
    format!("p{id}")
}

/// The step's arguments as a one-line flow mapping (JSON is YAML).
fn args(step: &Step, prog: Option<u32>) -> String {
    let mut v = serde_json::to_value(step).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("step");
        // Defaults left out.
        m.retain(|_, x| !x.is_null());
        if matches!(step, Step::BpfAttach { .. }) && m.get("fmod_ret") == Some(&0.into()) {
            m.remove("fmod_ret");
        }
        if matches!(step, Step::Insmod { .. }) && m.get("params") == Some(&"".into()) {
            m.remove("params");
        }
        if let (Some(id), Step::BpfStats { .. } | Step::BpfDetach { .. }) = (prog, step) {
            m.insert("handle".into(), label(id).into());
        }
    }
    v.to_string()
}

/// The expectation as one flat flow mapping (the suite's form), or None.
fn expect(p: &Probe) -> Option<String> {
    let v = serde_json::to_value(&p.expect).ok()?;
    let serde_json::Value::Object(m) = v else {
        return None;
    };
    let mut flat = serde_json::Map::new();
    for (k, val) in m {
        match val {
            serde_json::Value::Object(inner) => flat.extend(inner),
            other => {
                flat.insert(k, other);
            }
        }
    }
    (!flat.is_empty()).then(|| serde_json::Value::Object(flat).to_string())
}

fn push_probe(out: &mut String, p: &Probe) {
    out.push_str(&format!(
        "      - {}: {}\n",
        p.step.kind(),
        args(&p.step, p.prog)
    ));
    if let (Some(id), Step::BpfAttach { .. }) = (p.prog, &p.step) {
        out.push_str(&format!("        as: {}\n", label(id)));
    }
    if let Some(e) = expect(p) {
        out.push_str(&format!("        expect: {e}\n"));
    }
}

/// The suite file of finding `n`.
pub fn suite_text(n: usize, variant: &str, model: Model, ops: &[Op], header: &[String]) -> String {
    let name = format!("explore-repro-{n}");
    let mut out = String::new();
    out.push_str(&format!(
        "# A finding of `coexist explore` on {variant}, as a suite: every step\n\
         # with what the model requires of it ({} rule).\n",
        match model.rule {
            Rule::Shared => "shared",
            Rule::Exclusive => "exclusive",
        }
    ));
    for h in header {
        out.push_str(&format!("# {h}\n"));
    }
    out.push_str(&format!(
        "# Run it as-is: cargo run -- suite <this file> --variant {variant}\n"
    ));
    out.push_str(&format!("suite: {name}\n"));
    out.push_str(&format!(
        "description: \"explore finding {n}: minimal sequence, every operation checked\"\n"
    ));
    out.push_str(&format!("variants: [{variant}]\ntimeout: 60\ncases:\n"));
    let seq: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
    out.push_str(&format!("  - name: explore/repro-{n}\n"));
    out.push_str(&format!(
        "    description: {}\n",
        serde_json::Value::String(seq.join(", "))
    ));
    out.push_str("    steps:\n");
    for p in prologue() {
        push_probe(&mut out, &p);
    }
    let mut s = State::new(model);
    for (i, op) in ops.iter().enumerate() {
        out.push_str(&format!("      # op {}: {op}\n", i + 1));
        for p in s.apply(op) {
            push_probe(&mut out, &p);
        }
    }
    out.push_str("    expect:\n      default: pass\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::Func;
    use super::*;
    use coexist_proto::BpfKind;

    #[test]
    fn the_repro_is_a_suite_the_loader_accepts() {
        let f = Func::Target;
        let ops = [
            Op::LivepatchLoad { func: f },
            Op::Attach {
                id: 3,
                func: f,
                kind: BpfKind::Fentry,
                fmod_ret: 0,
            },
            Op::Attach {
                id: 4,
                func: f,
                kind: BpfKind::FmodRet,
                fmod_ret: 777,
            },
            Op::Detach { id: 3 },
            Op::DirectLoad {
                func: Func::Cmdline,
            },
        ];
        let text = suite_text(1, "stock", Rule::Shared.into(), &ops, &["seed 0x1".into()]);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("explore-repro-1.yaml");
        std::fs::write(&p, &text).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let fx = crate::image::project_fixtures(root);
        let names: Vec<String> = ["stock", "baseline"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let suite = crate::suite::load(&p, &names, &fx).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        let case = &suite.file.cases[0];
        assert!(text.contains("as: p3"), "{text}");
        assert!(text.contains(r#"bpf_detach: {"handle":"p3"}"#), "{text}");
        assert!(text.contains(r#""output":"value=777\n""#), "{text}");
        // prologue + 5 ops with their checks
        assert!(case.steps.len() > 20);
    }
}
