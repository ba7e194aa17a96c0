//! Helpers shared by the integration tests (each test file uses some).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coexist::build::variant;
use coexist::events::{Event, EventSink};
use coexist::image::Prepared;
use coexist::vm::{AccelChoice, StepOutcome, Vm};
use coexist::Workspace;
use coexist_proto::{AnswerData, BpfKind, BpfStats, FtraceState, Step};

/// The project root (the workspace).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs the coexist binary, echoing what it printed.
pub fn coexist(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_coexist"))
        .args(args)
        .output()
        .expect("run coexist");
    eprintln!(
        "$ coexist {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What a command printed, stdout then stderr.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Prints build phases, preparation and notes only.
pub struct Quiet;
impl EventSink for Quiet {
    fn event(&self, e: &Event) {
        match e {
            Event::BuildPhase { variant, what } => eprintln!("{variant}: {what}"),
            Event::Preparing { what } | Event::Note(what) => eprintln!("{what}"),
            Event::AccelDecided { reason, .. } => eprintln!("accel: {reason}"),
            _ => {}
        }
    }
}

/// Builds (or finds) a variant's kernel, fixtures and image in the normal cache.
pub fn prepare(name: &str) -> Prepared {
    let ws = Workspace::open(Some(root()), None).unwrap();
    let variants = ws.variants(None).unwrap();
    let v = variant::select(&variants, &[name.to_string()]).unwrap()[0];
    ws.prepare(v, &Quiet).unwrap()
}

/// Whether a process of group `pgid` is still running (the runner's own
/// check, which leaves out zombies waiting to be reaped).
pub fn group_alive(pgid: u32) -> bool {
    coexist::teardown::group_running(pgid as i32)
}

/// Waits up to 2 s for process group `pgid` to be gone.
pub fn assert_group_gone(pgid: u32) {
    for _ in 0..100 {
        if !group_alive(pgid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("process group {pgid} is still alive");
}

/// Children of `ppid` whose command name starts with `comm`.
pub fn children_of(ppid: u32, comm: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let comm_ok = stat.contains(&format!("({comm}"));
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let pp = after
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            comm_ok && pp == Some(ppid)
        })
        .collect()
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Runs a step in a test guest: no splat may come with it.
pub fn run(vm: &mut Vm, step: Step) -> StepOutcome {
    let s = format!("{step:?}");
    let out = vm
        .run(step, std::time::Duration::from_secs(60))
        .unwrap_or_else(|f| panic!("{s}: {f}"));
    assert!(out.splats.is_empty(), "{s}: splat: {:#?}", out.splats);
    out
}

/// Runs a step that must succeed, with no splat.
pub fn ok(vm: &mut Vm, step: Step) -> StepOutcome {
    let s = format!("{step:?}");
    let out = run(vm, step);
    assert!(out.answer.ok, "{s}: {:?}", out.answer);
    out
}

/// The handle a bpf_attach answered with.
pub fn handle(out: &StepOutcome) -> u32 {
    match &out.answer.data {
        Some(AnswerData::Attach(a)) => a.handle,
        other => panic!("no handle: {other:?}"),
    }
}

/// An attached program's counters.
pub fn stats(vm: &mut Vm, h: u32) -> BpfStats {
    match ok(vm, Step::BpfStats { handle: h }).answer.data {
        Some(AnswerData::Stats(s)) => s,
        other => panic!("no stats: {other:?}"),
    }
}

/// A function's entry in enabled_functions.
pub fn ftrace(vm: &mut Vm, function: &str) -> FtraceState {
    let step = Step::FtraceState {
        function: function.into(),
    };
    match ok(vm, step).answer.data {
        Some(AnswerData::Ftrace(s)) => s,
        other => panic!("no ftrace state: {other:?}"),
    }
}

/// The stacked order every kernel line must get right on a module
/// function (`coexist_target_value`): the target loaded, fentry, the
/// livepatch, then fexit (the step that bypasses the livepatch on stock
/// 6.1 when the livepatch comes first), then fexit and fentry detached;
/// after each change, the value the function gives, the programs'
/// counters and its `enabled_functions` entry.
pub fn fentry_livepatch_fexit_on_a_module_function(vm: &mut Vm) {
    const TARGET: &str = "coexist_target_value";
    let value = |vm: &mut Vm| {
        let step = Step::Trigger {
            target: TARGET.into(),
        };
        ok(vm, step).answer.output
    };
    let attach = |vm: &mut Vm, program: &str, kind: BpfKind| {
        let step = Step::BpfAttach {
            program: program.into(),
            kind,
            target: TARGET.into(),
            object: None,
            fmod_ret: 0,
        };
        handle(&ok(vm, step))
    };
    let flags = |vm: &mut Vm| {
        let f = ftrace(vm, TARGET);
        (f.flags.clone(), f.refs, f)
    };
    ok(
        vm,
        Step::Insmod {
            module: "coexist_target".into(),
            params: String::new(),
        },
    );
    assert_eq!(value(vm), "value=42\n");
    let fentry = attach(vm, "cx_fentry", BpfKind::Fentry);
    assert_eq!(value(vm), "value=42\n");
    assert_eq!(stats(vm, fentry).hits, 1);
    let (fl, refs, f) = flags(vm);
    assert_eq!((fl.as_str(), refs), ("RD", 1), "{f:?}");

    ok(
        vm,
        Step::LivepatchLoad {
            module: "coexist_livepatch".into(),
            timeout_ms: None,
        },
    );
    assert_eq!(value(vm), "value=1041\n");
    assert_eq!(stats(vm, fentry).hits, 2);
    let (fl, refs, f) = flags(vm);
    assert_eq!((fl.as_str(), refs), ("RID", 2), "{f:?}");

    let fexit = attach(vm, "cx_fexit", BpfKind::Fexit);
    assert_eq!(value(vm), "value=1041\n");
    assert_eq!(stats(vm, fentry).hits, 3);
    let s = stats(vm, fexit);
    assert_eq!((s.hits, s.ret), (1, 1041), "{s:?}");
    let (fl, refs, f) = flags(vm);
    assert_eq!((fl.as_str(), refs), ("RID", 2), "{f:?}");
    assert!(
        f.direct
            .as_deref()
            .unwrap_or("")
            .starts_with("bpf_trampoline_"),
        "{f:?}"
    );

    ok(
        vm,
        Step::BpfDetach {
            handle: Some(fexit),
        },
    );
    assert_eq!(value(vm), "value=1041\n");
    assert_eq!(stats(vm, fentry).hits, 4);
    let (fl, refs, f) = flags(vm);
    assert_eq!((fl.as_str(), refs), ("RID", 2), "{f:?}");
    ok(
        vm,
        Step::BpfDetach {
            handle: Some(fentry),
        },
    );
    assert_eq!(value(vm), "value=1041\n");
    let (fl, refs, f) = flags(vm);
    assert_eq!((fl.as_str(), refs), ("I", 1), "{f:?}");
    assert!(vm.unattributed().is_empty(), "{:#?}", vm.unattributed());
}

/// `modinfo -F <field> <ko>`, trimmed.
pub fn modinfo(field: &str, ko: &Path) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(ko)
        .output()
        .expect("modinfo");
    assert!(out.status.success(), "modinfo {}", ko.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Boots a distribution kernel (a prebuilt or local one) to READY under
/// `--accel auto`, with more room than the default boot timeout: Debian's
/// kernels take several seconds to READY under TCG.
pub fn boot_distribution_kernel(p: &Prepared, console_log: PathBuf) -> Vm {
    let job = coexist::guest::Job {
        boot_timeout: Some(std::time::Duration::from_secs(300)),
        ..coexist::guest::Job::logged(console_log)
    };
    coexist::guest::start(p, &Default::default(), None, job, &Quiet)
        .unwrap_or_else(|f| panic!("{f}"))
}

/// Boots prepared variant `p` under TCG (no snapshot), its console in
/// `console_log`: the one guest start every command uses.
pub fn boot_tcg(p: &Prepared, console_log: PathBuf) -> Vm {
    let machine = coexist::guest::Machine {
        accel: AccelChoice::Tcg,
        ..Default::default()
    };
    coexist::guest::start(
        p,
        &machine,
        None,
        coexist::guest::Job::logged(console_log),
        &Quiet,
    )
    .unwrap_or_else(|f| panic!("{f}"))
}
