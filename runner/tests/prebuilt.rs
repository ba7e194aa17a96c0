//! A prebuilt kernel on the real package: Debian's
//! linux-image-6.1.0-57-amd64-unsigned, fetched into the normal cache,
//! booted to READY under `--accel auto` with only the modules its agent
//! channel needs in the image, and `uname -r` run through the agent.

use std::time::Duration;

mod common;

use coexist::vm::{accel, AccelChoice};
use coexist_proto::Step;

const VARIANT: &str = "debian-6.1-image";

#[test]
fn debians_kernel_boots_to_ready_and_runs_a_command() {
    let p = common::prepare(VARIANT);
    let m = &p.manifest;
    let info = m.prebuilt.as_ref().expect("a prebuilt manifest");
    assert_eq!(info.package, "linux-image-6.1.0-57-amd64-unsigned");
    // The release is the package's, read from its lib/modules/.
    assert!(
        info.package.contains(&m.kernel_release),
        "{} / {}",
        info.package,
        m.kernel_release
    );
    // vmlinux is the ELF out of vmlinuz, with the BTF bpftool reads.
    let elf = std::fs::read(&m.vmlinux).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    let out = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&m.vmlinux)
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("STRUCT 'ftrace_ops'"),
        "no struct ftrace_ops in the BTF of {}",
        m.vmlinux.display()
    );
    // No fixtures for a prebuilt kernel yet.
    assert!(p.fixtures.modules.is_empty() && p.fixtures.bpf.is_empty());

    let mut cfg = p.vm_config(
        std::env::temp_dir().join(format!("coexist-prebuilt-test-{}.log", std::process::id())),
    );
    assert_eq!(cfg.kernel, m.bzimage, "a prebuilt kernel boots its bzImage");
    // A distribution kernel under TCG: more room than the default.
    cfg.boot_timeout = Duration::from_secs(300);
    let mut vm = match accel::boot(AccelChoice::Auto, cfg, &common::Quiet) {
        Ok(vm) => vm,
        Err(f) => panic!("{f}"),
    };
    assert_eq!(vm.ready.kernel_release, m.kernel_release);
    // The modules the image lists loaded: no agent warning about them.
    assert!(
        !vm.ready.warnings.iter().any(|w| w.contains("module")),
        "{:?}",
        vm.ready.warnings
    );
    let out = vm
        .run(
            Step::Exec {
                argv: vec!["uname".into(), "-r".into()],
            },
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(out.answer.ok, "{:?}", out.answer);
    assert_eq!(out.answer.output.trim(), m.kernel_release);
    // The agent channel's modules are loaded as modules, not built in.
    let out = vm
        .run(
            Step::Read {
                path: "/proc/modules".into(),
            },
            Duration::from_secs(30),
        )
        .unwrap();
    for module in ["virtio_pci ", "virtio_console "] {
        assert!(
            out.answer.output.lines().any(|l| l.starts_with(module)),
            "{module}not in /proc/modules:\n{}",
            out.answer.output
        );
    }
    assert!(vm.unattributed().is_empty(), "{:?}", vm.unattributed());
    let log = vm.console_log().to_path_buf();
    vm.shutdown().unwrap();
    let _ = std::fs::remove_file(log);
}
