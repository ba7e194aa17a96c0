//! Fixtures and agent steps on real kernels: livepatch + BPF trampoline on
//! share-ipmodify and baseline, the ftrace state the kernel prints, fmod_ret
//! on the target module, and the DIRECT user without ops_func.

use std::path::Path;
use std::time::Duration;

mod common;

use coexist::vm::{accel, AccelChoice, StepOutcome, Vm};
use coexist_proto::{AnswerData, BpfKind, BpfStats, FtraceState, LivepatchState, Step};

fn boot(name: &str, dir: &Path) -> Vm {
    let p = common::prepare(name);
    let c = p.vm_config(dir.join(format!("{name}.console.log")));
    accel::boot(AccelChoice::Tcg, c, &common::Quiet).unwrap_or_else(|f| panic!("{f}"))
}

fn run(vm: &mut Vm, step: Step) -> StepOutcome {
    let out = vm
        .run(step, Duration::from_secs(60))
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(out.splats.is_empty(), "splat: {:#?}", out.splats);
    out
}

fn ok(vm: &mut Vm, step: Step) -> StepOutcome {
    let s = format!("{step:?}");
    let out = run(vm, step);
    assert!(out.answer.ok, "{s}: {:?}", out.answer);
    out
}

fn attach(program: &str, kind: BpfKind, target: &str, fmod_ret: i64) -> Step {
    Step::BpfAttach {
        program: program.into(),
        kind,
        target: target.into(),
        object: None,
        fmod_ret,
    }
}

fn handle(out: &StepOutcome) -> u32 {
    match &out.answer.data {
        Some(AnswerData::Attach(a)) => a.handle,
        other => panic!("no handle: {other:?}"),
    }
}

fn stats(vm: &mut Vm, h: u32) -> BpfStats {
    match ok(vm, Step::BpfStats { handle: h }).answer.data {
        Some(AnswerData::Stats(s)) => s,
        other => panic!("no stats: {other:?}"),
    }
}

fn ftrace(vm: &mut Vm, f: &str) -> FtraceState {
    match ok(vm, Step::FtraceState { function: f.into() }).answer.data {
        Some(AnswerData::Ftrace(s)) => s,
        other => panic!("no ftrace state: {other:?}"),
    }
}

fn livepatch_state(vm: &mut Vm) -> LivepatchState {
    let step = Step::LivepatchState {
        name: "livepatch_sample".into(),
    };
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
