//! The Debian image variants track their line's newest ABI: what `kernel
//! list` pinned is the newest apt lists (found here independently, with
//! `apt-cache pkgnames` and `sort -V`).
//!
//! A prebuilt kernel on the real package: Debian's
//! linux-image-6.1.0-57-amd64-unsigned, fetched into the normal cache,
//! booted to READY under `--accel auto` with only the modules its agent
//! channel needs in the image, and `uname -r` run through the agent; its
//! fixtures, built against linux-headers-6.1.0-57-amd64 (vermagic, module
//! BTF, the livepatch sample from the declared source); and fentry, a
//! livepatch and fexit stacked on one function of a fixture module,
//! checked after every change of state.

use std::process::Command;
use std::time::Duration;

mod common;

use coexist_proto::Step;

const VARIANT: &str = "debian-6.1-image";

/// The newest `linux-image-<abi>-amd64-unsigned` apt lists whose ABI
/// matches `abi_re`, by `sort -V`.
fn newest_listed(line: &str, abi_re: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-cache pkgnames linux-image-{line} | grep -E '^linux-image-{abi_re}-amd64-unsigned$' \
             | sort -V | tail -n 1"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn the_debian_images_track_the_newest_abi_apt_knows() {
    let out = common::coexist(&["kernel", "list", "--json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (variant, line, abi_re) in [
        ("debian-6.1-image", "6.1", r"6\.1\.[0-9]+-[0-9]+"),
        ("debian-6.12-image", "6.12", r"6\.12\.[0-9]+\+deb[0-9]+"),
    ] {
        let want = newest_listed(line, abi_re);
        assert!(
            want.starts_with("linux-image-"),
            "apt lists no {line} image"
        );
        let row = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["variant"] == variant)
            .unwrap();
        let shown = row["prebuilt"].as_str().unwrap();
        assert!(
            shown.starts_with(&format!("Debian {want} ")),
            "{variant}: pinned {shown}, apt's newest is {want}"
        );
        assert!(
            shown.ends_with(&format!("(the newest ABI of the {line} line apt knows)")),
            "{shown}"
        );
    }
}

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
    // Fixtures: built against the headers, for this kernel.
    let names: Vec<String> = p
        .fixtures
        .modules
        .iter()
        .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The project's modules, and from the declared source: the livepatch
    // sample, 6.1's livepatch selftest modules and the ftrace-direct
    // samples, one .ko per source file.
    let mut want: Vec<String> = [
        "coexist_direct",
        "coexist_livepatch",
        "coexist_livepatch_multi",
        "coexist_target",
    ]
    .iter()
    .map(|n| format!("{n}.ko"))
    .collect();
    for (dir, prefix) in [
        ("samples/livepatch", "livepatch-sample"),
        ("lib/livepatch", "test_klp_"),
        ("samples/ftrace", "ftrace-direct"),
    ] {
        for e in std::fs::read_dir(m.source_dir.join(dir)).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".c").filter(|s| s.starts_with(prefix)) {
                want.push(format!("{}.ko", stem.replace('-', "_")));
            }
        }
    }
    want.sort();
    assert_eq!(names, want);
    assert!(names.len() >= 4 + 1 + 10 + 5, "{names:?}");
    let kernels = common::modinfo(
        "vermagic",
        &m.modules_dir.join("kernel/drivers/char/virtio_console.ko"),
    );
    assert!(
        kernels.starts_with(&format!("{} ", m.kernel_release)),
        "{kernels}"
    );
    for ko in &p.fixtures.modules {
        assert_eq!(common::modinfo("vermagic", ko), kernels, "{}", ko.display());
        // Module BTF: what fentry on a function of the module needs.
        let out = Command::new("readelf")
            .args(["-S", "--wide"])
            .arg(ko)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|w| w == ".BTF"),
            "{} has no .BTF",
            ko.display()
        );
    }
    let sample = p
        .fixtures
        .modules
        .iter()
        .find(|k| k.ends_with("livepatch_sample.ko"))
        .unwrap();
    assert_eq!(common::modinfo("livepatch", sample), "Y");
    assert!(!p.fixtures.bpf.is_empty());

    let cfg = p.vm_config(
        std::env::temp_dir().join(format!("coexist-prebuilt-test-{}.log", std::process::id())),
    );
    assert_eq!(cfg.kernel, m.bzimage, "a prebuilt kernel boots its bzImage");
    let mut vm = common::boot_distribution_kernel(&p, cfg.console_log.clone());
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

/// fentry, then the livepatch, then fexit on `coexist_target_value` (the
/// order that passes on stock 6.1; livepatch-then-fentry-then-fexit is the
/// known failure both 6.1 kernels share, in the suite), then both
/// programs detached: after each change, the value the function gives,
/// the programs' counters and the ftrace flags.
#[test]
fn debians_kernel_runs_fentry_livepatch_fexit_stacked_on_a_module_function() {
    let p = common::prepare(VARIANT);
    let d = tempfile::tempdir().unwrap();
    let mut vm = common::boot_distribution_kernel(&p, d.path().join("console.log"));
    common::fentry_livepatch_fexit_on_a_module_function(&mut vm);
    vm.shutdown().unwrap();
}
