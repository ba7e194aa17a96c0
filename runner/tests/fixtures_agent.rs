//! Fixtures and agent steps on real kernels: livepatch + BPF trampoline on
//! share-ipmodify and baseline, the ftrace state the kernel prints, fmod_ret
//! on the target module, the DIRECT user without ops_func, the livepatch of
//! several functions, and every BPF program of the fixture source attached
//! at once, each with its own counter.

use std::path::Path;

mod common;

use coexist::vm::Vm;
use coexist_proto::{AnswerData, BpfKind, LivepatchState, Step};

fn boot(name: &str, dir: &Path) -> Vm {
    let p = common::prepare(name);
    common::boot_tcg(&p, dir.join(format!("{name}.console.log")))
}

use common::{ftrace, handle, ok, run, stats};

fn attach(program: &str, kind: BpfKind, target: &str, fmod_ret: i64) -> Step {
    Step::BpfAttach {
        program: program.into(),
        kind,
        target: target.into(),
        object: None,
        fmod_ret,
    }
}

fn livepatch_state(vm: &mut Vm) -> LivepatchState {
    livepatch_state_of(vm, "livepatch_sample")
}

fn livepatch_state_of(vm: &mut Vm, name: &str) -> LivepatchState {
    let step = Step::LivepatchState { name: name.into() };
    match ok(vm, step).answer.data {
        Some(AnswerData::LivepatchState(s)) => s,
        other => panic!("no livepatch state: {other:?}"),
    }
}

fn trigger(vm: &mut Vm, t: &str) -> String {
    ok(vm, Step::Trigger { target: t.into() }).answer.output
}

#[test]
fn share_ipmodify_livepatch_then_fexit_and_fmod_ret_on_the_target() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot("share-ipmodify", d.path());
    assert!(!trigger(&mut vm, "cmdline_proc_show").contains("live patched"));
    assert_eq!(livepatch_state(&mut vm), LivepatchState::default());
    ok(
        &mut vm,
        Step::LivepatchLoad {
            module: "livepatch-sample".into(),
            timeout_ms: None,
        },
    );
    assert_eq!(
        livepatch_state(&mut vm),
        LivepatchState {
            present: true,
            enabled: true,
            transition: false
        }
    );
    let a = ok(
        &mut vm,
        attach("cx_fexit_seq", BpfKind::Fexit, "cmdline_proc_show", 0),
    );
    let h = handle(&a);
    assert_eq!(stats(&mut vm, h).hits, 0);
    assert_eq!(
        trigger(&mut vm, "cmdline_proc_show"),
        "this has been live patched\n"
    );
    let s = stats(&mut vm, h);
    assert_eq!(s.hits, 1);
    // What fexit saw is what the livepatched function produced.
    assert_eq!(s.seen, "this has been live patched\n");
    let f = ftrace(&mut vm, "cmdline_proc_show");
    assert!(f.present);
    assert!(f.flags.contains('I') && f.flags.contains('D'), "{f:?}");
    assert!(
        f.direct
            .as_deref()
            .unwrap_or("")
            .starts_with("bpf_trampoline_"),
        "{f:?}"
    );

    // fmod_ret on the target module's function changes what userspace sees.
    ok(
        &mut vm,
        Step::Insmod {
            module: "coexist_target".into(),
            params: String::new(),
        },
    );
    assert_eq!(trigger(&mut vm, "coexist_target_value"), "value=42\n");
    let m = ok(
        &mut vm,
        attach("cx_fmod_ret", BpfKind::FmodRet, "coexist_target_value", 777),
    );
    assert_eq!(trigger(&mut vm, "coexist_target_value"), "value=777\n");
    let s = stats(&mut vm, handle(&m));
    assert_eq!(s.hits, 1);
    assert_eq!(s.arg0, 41);
    ok(
        &mut vm,
        Step::BpfDetach {
            handle: Some(handle(&m)),
        },
    );
    assert_eq!(trigger(&mut vm, "coexist_target_value"), "value=42\n");
    assert!(vm.unattributed().is_empty(), "{:#?}", vm.unattributed());
    vm.shutdown().unwrap();
}

#[test]
fn baseline_refuses_bpf_next_to_a_livepatch_with_ebusy() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot("baseline", d.path());
    ok(
        &mut vm,
        Step::LivepatchLoad {
            module: "livepatch-sample".into(),
            timeout_ms: None,
        },
    );
    let a = run(
        &mut vm,
        attach("cx_fexit_seq", BpfKind::Fexit, "cmdline_proc_show", 0),
    );
    assert!(!a.answer.ok);
    assert_eq!(
        a.answer.errno_name.as_deref(),
        Some("EBUSY"),
        "{:?}",
        a.answer
    );
    let f = ftrace(&mut vm, "cmdline_proc_show");
    assert_eq!(f.flags, "I", "{f:?}");
    assert_eq!(f.refs, 1);
    assert!(f.direct.is_none());
    // The livepatch is untouched.
    assert_eq!(
        trigger(&mut vm, "cmdline_proc_show"),
        "this has been live patched\n"
    );
    vm.shutdown().unwrap();
}

#[test]
fn direct_user_without_ops_func_is_refused_next_to_a_livepatch() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot("share-ipmodify", d.path());
    ok(
        &mut vm,
        Step::Insmod {
            module: "coexist_direct".into(),
            params: String::new(),
        },
    );
    let f = ftrace(&mut vm, "cmdline_proc_show");
    assert!(
        f.flags.contains('D')
            && f.direct
                .as_deref()
                .unwrap_or("")
                .contains("coexist_direct_tramp"),
        "{f:?}"
    );
    trigger(&mut vm, "cmdline_proc_show");
    let hits = ok(
        &mut vm,
        Step::Read {
            path: "/sys/module/coexist_direct/parameters/hits".into(),
        },
    );
    assert_eq!(hits.answer.output.trim(), "1");
    // Livepatch after the direct user: EBUSY.
    let lp = run(
        &mut vm,
        Step::LivepatchLoad {
            module: "livepatch-sample".into(),
            timeout_ms: None,
        },
    );
    assert_eq!(
        lp.answer.errno_name.as_deref(),
        Some("EBUSY"),
        "{:?}",
        lp.answer
    );
    // BPF next to the direct user: EBUSY.
    let b = run(
        &mut vm,
        attach("cx_fentry", BpfKind::Fentry, "cmdline_proc_show", 0),
    );
    assert_eq!(
        b.answer.errno_name.as_deref(),
        Some("EBUSY"),
        "{:?}",
        b.answer
    );
    vm.shutdown().unwrap();
}

fn insmod(vm: &mut Vm, module: &str) {
    ok(
        vm,
        Step::Insmod {
            module: module.into(),
            params: String::new(),
        },
    );
}

/// What the three functions of coexist_livepatch_multi give userspace.
fn three_outputs(vm: &mut Vm) -> [String; 3] {
    [
        trigger(vm, "cmdline_proc_show"),
        trigger(vm, "coexist_target_value"),
        trigger(vm, "coexist_target_value2"),
    ]
}

fn assert_unpatched(o: &[String; 3]) {
    assert!(o[0].contains("rdinit=/init"), "{o:?}");
    assert!(!o[0].contains("coexist_livepatch_multi"), "{o:?}");
    assert_eq!(o[1..], ["value=42\n", "value2=53\n"]);
}

const MULTI_PATCHED: [&str; 3] = ["coexist_livepatch_multi\n", "value=3041\n", "value2=4051\n"];

#[test]
fn share_ipmodify_multi_function_livepatch_and_every_bpf_program() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot("share-ipmodify", d.path());
    insmod(&mut vm, "coexist_target");
    assert_unpatched(&three_outputs(&mut vm));

    // One livepatch, two objects (vmlinux and coexist_target), three functions.
    let lp = ok(
        &mut vm,
        Step::LivepatchLoad {
            module: "coexist_livepatch_multi".into(),
            timeout_ms: None,
        },
    );
    match &lp.answer.data {
        Some(AnswerData::Livepatch(l)) => {
            assert_eq!(l.name.as_deref(), Some("coexist_livepatch_multi"))
        }
        other => panic!("no livepatch data: {other:?}"),
    }
    assert_eq!(
        livepatch_state_of(&mut vm, "coexist_livepatch_multi"),
        LivepatchState {
            present: true,
            enabled: true,
            transition: false
        }
    );
    assert_eq!(three_outputs(&mut vm), MULTI_PATCHED);
    // klp registers one IPMODIFY ops per function.
    for f in [
        "cmdline_proc_show",
        "coexist_target_value",
        "coexist_target_value2",
    ] {
        let s = ftrace(&mut vm, f);
        assert_eq!((s.flags.as_str(), s.refs), ("I", 1), "{s:?}");
    }

    // Every trampoline program of the fixture source (two of each kind and
    // cx_fexit_seq) attaches next to the livepatch, each on its own copy of
    // the object: one call of each function runs each program once, and
    // each program's counter says so.
    let fx = coexist::image::project_fixtures(&common::root());
    let mut handles = Vec::new();
    for p in &fx.bpf_programs {
        let Some(kind) = BpfKind::of_section(&p.section) else {
            continue;
        };
        // cx_fexit_seq reads a seq_file: it goes on a show function.
        let target = if p.name == "cx_fexit_seq" {
            "cmdline_proc_show"
        } else {
            "coexist_target_value2"
        };
        let a = ok(&mut vm, attach(&p.name, kind, target, 0));
        assert_eq!(stats(&mut vm, handle(&a)).hits, 0, "{}", p.name);
        handles.push((p.name.clone(), kind, handle(&a)));
    }
    for k in ["cx_fentry2", "cx_fexit2", "cx_fmod_ret2"] {
        assert!(handles.iter().any(|(n, _, _)| n == k), "{k}: {handles:?}");
    }
    assert_eq!(three_outputs(&mut vm), MULTI_PATCHED);
    for (name, kind, h) in &handles {
        let s = stats(&mut vm, *h);
        assert_eq!(s.hits, 1, "{name}: {s:?}");
        if name == "cx_fexit_seq" {
            assert_eq!(s.seen, "coexist_livepatch_multi\n", "{name}");
        } else {
            assert_eq!(s.arg0, 51, "{name}: {s:?}");
            if *kind == BpfKind::Fexit {
                assert_eq!(s.ret, 4051, "{name}: {s:?}");
            }
        }
    }
    let f = ftrace(&mut vm, "coexist_target_value2");
    assert_eq!((f.flags.as_str(), f.refs), ("RID", 2), "{f:?}");

    // Two fmod_ret programs stacked: the second one's own value shows.
    let m2 = ok(
        &mut vm,
        attach(
            "cx_fmod_ret2",
            BpfKind::FmodRet,
            "coexist_target_value",
            777,
        ),
    );
    let m1 = ok(
        &mut vm,
        attach("cx_fmod_ret", BpfKind::FmodRet, "coexist_target_value", 0),
    );
    assert_eq!(trigger(&mut vm, "coexist_target_value"), "value=777\n");
    assert_eq!(stats(&mut vm, handle(&m1)).hits, 1);
    assert_eq!(stats(&mut vm, handle(&m2)).hits, 1);
    ok(
        &mut vm,
        Step::BpfDetach {
            handle: Some(handle(&m2)),
        },
    );
    assert_eq!(trigger(&mut vm, "coexist_target_value"), "value=3041\n");
    assert_eq!(stats(&mut vm, handle(&m1)).hits, 2);

    // Disabled: every function is itself again, every program still runs.
    ok(
        &mut vm,
        Step::LivepatchDisable {
            name: "coexist_livepatch_multi".into(),
            timeout_ms: None,
        },
    );
    assert_unpatched(&three_outputs(&mut vm));
    for (name, kind, h) in &handles {
        let s = stats(&mut vm, *h);
        assert_eq!(s.hits, 2, "{name}: {s:?}");
        if *kind == BpfKind::Fexit && name != "cx_fexit_seq" {
            assert_eq!(s.ret, 53, "{name}: {s:?}");
        }
    }
    assert!(!ftrace(&mut vm, "cmdline_proc_show").flags.contains('I'));
    assert!(vm.unattributed().is_empty(), "{:#?}", vm.unattributed());
    vm.shutdown().unwrap();
}

#[test]
fn baseline_refuses_the_whole_multi_function_livepatch() {
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot("baseline", d.path());
    insmod(&mut vm, "coexist_target");
    // A BPF trampoline on the patch's last function.
    let a = ok(
        &mut vm,
        attach("cx_fexit2", BpfKind::Fexit, "coexist_target_value2", 0),
    );
    let lp = run(
        &mut vm,
        Step::LivepatchLoad {
            module: "coexist_livepatch_multi".into(),
            timeout_ms: None,
        },
    );
    assert_eq!(
        lp.answer.errno_name.as_deref(),
        Some("EBUSY"),
        "{:?}",
        lp.answer
    );
    assert!(!livepatch_state_of(&mut vm, "coexist_livepatch_multi").present);
    // The functions patched before the refusal are unpatched again.
    assert_unpatched(&three_outputs(&mut vm));
    assert!(!ftrace(&mut vm, "cmdline_proc_show").present);
    assert!(!ftrace(&mut vm, "coexist_target_value").present);
    let f = ftrace(&mut vm, "coexist_target_value2");
    assert_eq!((f.flags.as_str(), f.refs), ("RD", 1), "{f:?}");
    let s = stats(&mut vm, handle(&a));
    assert_eq!((s.hits, s.ret), (1, 53), "{s:?}");
    vm.shutdown().unwrap();
}
