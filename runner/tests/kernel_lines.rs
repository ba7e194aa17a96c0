//! The second kernel line, 6.12, on real builds: the fixtures (and the
//! livepatch selftests' own modules, which 6.12 builds out of tree) build
//! against `stock-6.12`, and a real 6.12 guest runs fentry, a livepatch
//! and fexit stacked on one function (a program that calls the original
//! function joining a trampoline next to a livepatch: the modify path),
//! checked after every change of state.

mod common;

use coexist_proto::Step;

const VARIANT: &str = "stock-6.12";

#[test]
fn stock_6_12_fixtures_and_selftest_modules_build_for_its_kernel() {
    let p = common::prepare(VARIANT);
    let release = &p.manifest.kernel_release;
    assert!(release.starts_with("6.12."), "kernel release {release}");
    let names: Vec<String> = p
        .fixtures
        .modules
        .iter()
        .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "coexist_direct.ko",
        "coexist_livepatch.ko",
        "coexist_livepatch_multi.ko",
        "coexist_target.ko",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // Every fixture module is built for this kernel: its vermagic starts
    // with the 6.12 release (not 6.1's, whose build dir is next to it).
    for m in &p.fixtures.modules {
        let vermagic = common::modinfo("vermagic", m);
        assert!(
            vermagic.starts_with(&format!("{release} ")),
            "{}: vermagic '{vermagic}', kernel {release}",
            m.display()
        );
    }
    // The BPF objects: one per source file, each an ELF for BPF (EM_BPF).
    assert!(!p.fixtures.bpf.is_empty());
    for o in &p.fixtures.bpf {
        let b = std::fs::read(o).unwrap();
        assert_eq!(&b[..4], b"\x7fELF", "{}", o.display());
        assert_eq!(u16::from_le_bytes([b[18], b[19]]), 247, "{}", o.display());
    }
    // From 6.7 on the livepatch selftests' modules are not the kernel's:
    // every test_modules/*.c of 6.12's source is built, a livepatch where
    // the test loads it as one, and the helper program is linked static.
    let src = p
        .manifest
        .source_dir
        .join("tools/testing/selftests/livepatch/test_modules");
    let mut want: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".c")
                .map(|s| format!("livepatch/test_modules/{s}.ko"))
        })
        .collect();
    want.push("livepatch/test_klp-call_getpid".into());
    want.sort();
    let mut got: Vec<String> = p
        .fixtures
        .selftests
        .iter()
        .map(|(r, _)| r.clone())
        .collect();
    got.sort();
    assert_eq!(got, want);
    for (rel, f) in &p.fixtures.selftests {
        if rel.ends_with(".ko") {
            let vermagic = common::modinfo("vermagic", f);
            assert!(
                vermagic.starts_with(&format!("{release} ")),
                "{rel}: {vermagic}"
            );
        }
    }
    let lp = p
        .fixtures
        .selftests
        .iter()
        .find(|(r, _)| r.ends_with("/test_klp_livepatch.ko"))
        .unwrap();
    assert_eq!(common::modinfo("livepatch", &lp.1), "Y");
    let prog = &p
        .fixtures
        .selftests
        .iter()
        .find(|(r, _)| !r.ends_with(".ko"))
        .unwrap()
        .1;
    let b = std::fs::read(prog).unwrap();
    assert_eq!(&b[..4], b"\x7fELF");
    // Static: no program interpreter (PT_INTERP) among the program headers.
    let phoff = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let phentsize = u16::from_le_bytes([b[54], b[55]]) as usize;
    let phnum = u16::from_le_bytes([b[56], b[57]]) as usize;
    let interp = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
    });
    assert!(!interp, "{} is dynamically linked", prog.display());
}

use common::ok as run;

#[test]
fn stock_6_12_guest_runs_fentry_livepatch_fexit_stacked_on_one_function() {
    let p = common::prepare(VARIANT);
    let d = tempfile::tempdir().unwrap();
    let mut vm = coexist::guest::start(
        &p,
        &Default::default(),
        None,
        coexist::guest::Job::logged(d.path().join("console.log")),
        &common::Quiet,
    )
    .unwrap_or_else(|f| panic!("{f}"));
    let release = run(
        &mut vm,
        Step::Exec {
            argv: vec!["uname".into(), "-r".into()],
        },
    )
    .answer
    .output;
    assert!(release.starts_with("6.12."), "uname -r: {release}");

    common::fentry_livepatch_fexit_on_a_module_function(&mut vm);
    vm.shutdown().unwrap();
}
