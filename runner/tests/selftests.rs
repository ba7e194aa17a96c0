//! The kernel's own selftests in a real guest: the image carries the
//! variant's tools/testing/selftests and the host's GNU tools, the agent
//! runs a test through the kernel's runner, the runner's parser reads the
//! result; a test stopped at its timeout gives its output so far and
//! leaves nothing running.

use std::time::Duration;

mod common;

use coexist::steps::selftest::{self, Observed, Outcome, SelftestExpect};
use coexist::vm::Vm;
use coexist_proto::{SelftestRunner, Step};

fn boot(name: &str, dir: &std::path::Path) -> Vm {
    let p = common::prepare(name);
    common::boot_tcg(&p, dir.join(format!("{name}.console.log")))
}

/// Runs one step; a VM failure fails the test.
fn step(vm: &mut Vm, s: Step, secs: u64) -> coexist::vm::StepOutcome {
    vm.run(s, Duration::from_secs(secs))
        .unwrap_or_else(|f| panic!("{f}"))
}

fn selftest(runner: SelftestRunner, collection: &str, test: &str, timeout_ms: u64) -> Step {
    Step::Selftest {
        runner,
        collection: collection.into(),
        test: test.into(),
        timeout_ms,
    }
}

#[test]
fn a_livepatch_selftest_runs_in_the_guest_and_its_ktap_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = boot("share-ipmodify", dir.path());
    let out = step(
        &mut vm,
        selftest(
            SelftestRunner::Kselftest,
            "livepatch",
            "test-livepatch.sh",
            120_000,
        ),
        130,
    );
    let a = &out.answer;
    assert!(a.ok, "{a:?}");
    assert!(out.splats.is_empty(), "{:#?}", out.splats);
    // The runner's KTAP, with the test's own lines as diagnostics: the
    // tools it calls (modprobe, modinfo, dmesg, comm, sysctl) worked.
    assert!(
        a.output.contains("# TEST: basic function patching ... ok"),
        "{}",
        a.output
    );
    assert_eq!(
        selftest::observe(SelftestRunner::Kselftest, &a.output),
        Observed::Pass,
        "{}",
        a.output
    );
    let mut m = Vec::new();
    selftest::check(
        &SelftestExpect {
            runner: SelftestRunner::Kselftest,
            outcome: Outcome::Pass,
        },
        a,
        &mut m,
    );
    assert!(m.is_empty(), "{m:?}");

    // The same test where the variant must skip is a mismatch.
    selftest::check(
        &SelftestExpect {
            runner: SelftestRunner::Kselftest,
            outcome: Outcome::Skip,
        },
        a,
        &mut m,
    );
    assert!(
        m[0].contains("the selftest passed (this variant must skip)"),
        "{m:?}"
    );

    // A test that does not finish in time: stopped by the agent, with the
    // output so far; nothing of it is left running.
    let out = step(
        &mut vm,
        selftest(
            SelftestRunner::Kselftest,
            "livepatch",
            "test-callbacks.sh",
            3_000,
        ),
        30,
    );
    let a = &out.answer;
    assert!(!a.ok, "{a:?}");
    assert_eq!(a.errno_name.as_deref(), Some("ETIMEDOUT"), "{a:?}");
    assert!(
        a.output
            .contains("# selftests: livepatch: test-callbacks.sh"),
        "{}",
        a.output
    );
    assert!(matches!(
        selftest::observe(SelftestRunner::Kselftest, &a.output),
        Observed::NoResult(_)
    ));
    let ps = step(
        &mut vm,
        Step::Exec {
            argv: vec!["/bin/busybox".into(), "ps".into()],
        },
        30,
    );
    for gone in ["test-callbacks", "runner.sh", "modprobe"] {
        assert!(!ps.answer.output.contains(gone), "{}", ps.answer.output);
    }
    // A test the image does not have is refused, naming the file.
    let out = step(
        &mut vm,
        selftest(
            SelftestRunner::Ftracetest,
            "ftrace",
            "test.d/nope.tc",
            5_000,
        ),
        30,
    );
    assert_eq!(out.answer.errno_name.as_deref(), Some("ENOENT"));
    assert!(
        out.answer
            .error
            .as_deref()
            .unwrap_or("")
            .contains("/selftests/ftrace/test.d/nope.tc"),
        "{:?}",
        out.answer
    );
    vm.shutdown().unwrap_or_else(|f| panic!("{f}"));
}
