//! A local kernel (`local: {image, modules, headers}`) on a real kernel:
//! Debian's 6.1 as if it were the user's own, the files of the
//! `debian-6.1-image` variant's cache entry (fetched first if need be)
//! and the installed linux-headers-6.1.0-57-amd64. A scratch project
//! declares it; `kernel list` plans it from there (its key, its release,
//! a new key for an image one byte longer); the library prepares it
//! (the entry holds only what is derived, the manifest points at the
//! user's files, fixtures build against the headers) and boots it to
//! READY under `--accel auto`, and `uname -r` runs through the agent.

use std::path::Path;
use std::time::Duration;

mod common;

use coexist::build::variant::{self, Source};
use coexist::Workspace;
use coexist_proto::Step;

const RELEASE: &str = "6.1.0-57-amd64";

/// The `kernel list --json` row of `variant` in the project at `root`.
fn listed(root: &Path, variant: &str) -> serde_json::Value {
    let out = common::coexist(&["kernel", "list", "--json", "--root", root.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no row for {variant}"))
}

#[test]
fn a_local_kernel_boots_to_ready_and_runs_a_command() {
    // Debian's kernel, unpacked in the cache: the user's own here.
    let ws = Workspace::open(Some(common::root()), None).unwrap();
    let all = ws.variants(None).unwrap();
    let debian = variant::select(&all, &["debian-6.1-image".to_string()]).unwrap()[0];
    let (deb, _) = ws.builder(1, &common::Quiet).build(debian).unwrap();
    assert_eq!(deb.kernel_release, RELEASE);
    let headers = format!("/usr/src/linux-headers-{RELEASE}");

    // A scratch project that declares it, and the same image one byte
    // longer (a header still naming the release) as a second variant.
    let project = tempfile::tempdir().unwrap();
    let changed = project.path().join(format!("vmlinuz-{RELEASE}"));
    let mut bytes = std::fs::read(&deb.bzimage).unwrap();
    bytes.push(0);
    std::fs::write(&changed, bytes).unwrap();
    let yaml = format!(
        "sources: []\nvariants:\n  - name: mine\n    local:\n      image: {}\n      \
         modules: {}\n      headers: {headers}\n  - name: mine-changed\n    local: \
         {{image: vmlinuz-{RELEASE}, modules: {}, headers: {headers}}}\n",
        deb.bzimage.display(),
        deb.modules_dir.display(),
        deb.modules_dir.display(),
    );
    let vfile = project.path().join("kernel-config/variants.yaml");
    std::fs::create_dir_all(vfile.parent().unwrap()).unwrap();
    std::fs::write(&vfile, &yaml).unwrap();
    // Setup reads the project's package list.
    common::copy_dir(&common::root().join(".ci"), &project.path().join(".ci"));

    // Planned from the CLI, before anything is made: its key and release;
    // the changed image (a path relative to the project) is another key.
    let row = listed(project.path(), "mine");
    let key = row["key"].as_str().unwrap().to_string();
    assert_eq!(key.len(), 16, "{row}");
    assert_eq!(
        row["prebuilt"],
        format!("local {}, kernel {RELEASE}", deb.bzimage.display()),
        "{row}"
    );
    let other = listed(project.path(), "mine-changed");
    assert_ne!(other["key"], row["key"], "{other}");
    assert_eq!(
        other["prebuilt"],
        format!("local {}, kernel {RELEASE}", changed.display()),
        "{other}"
    );

    // Prepared with the project's fixtures and image recipe.
    let local = variant::parse_variants(&yaml, &vfile, project.path(), None).unwrap();
    let v = &local[0];
    assert!(matches!(v.source, Source::Local(_)), "{:?}", v.source);
    let p = ws.prepare(v, &common::Quiet).unwrap();
    let m = &p.manifest;
    assert_eq!(m.key, key, "the key kernel list showed");
    assert_eq!(m.kernel_release, RELEASE);
    assert_eq!(m.bzimage, deb.bzimage, "the user's image, not a copy");
    assert_eq!(m.modules_dir, deb.modules_dir);
    assert_eq!(m.build_dir, Path::new(&headers));
    let entry = m.vmlinux.parent().unwrap();
    assert!(
        entry.ends_with(format!("local/{key}")),
        "{}",
        entry.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(entry)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["System.map", "config", "manifest.json", "vmlinux"]);
    // vmlinux is the ELF in the image (with the BTF the BPF objects use).
    assert_eq!(
        std::fs::read(&m.vmlinux).unwrap(),
        std::fs::read(&deb.vmlinux).unwrap()
    );
    // The config the headers hold: the options the reports show.
    let info = m.prebuilt.as_ref().expect("local info");
    assert_eq!(info.local_image.as_deref(), Some(deb.bzimage.as_path()));
    assert!(
        info.describe().starts_with(&format!(
            "local {}; LIVEPATCH=y DYNAMIC_FTRACE_WITH_DIRECT_CALLS=y",
            deb.bzimage.display()
        )),
        "{}",
        info.describe()
    );
    // Fixtures built against the headers: the project's modules, for this kernel.
    let mods: Vec<String> = p
        .fixtures
        .modules
        .iter()
        .map(|k| k.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(mods.contains(&"coexist_target.ko".to_string()), "{mods:?}");

    let cfg = p.vm_config(
        std::env::temp_dir().join(format!("coexist-local-test-{}.log", std::process::id())),
    );
    assert_eq!(cfg.kernel, deb.bzimage, "a local kernel boots its image");
    let mut vm = common::boot_distribution_kernel(&p, cfg.console_log.clone());
    assert_eq!(vm.ready.kernel_release, RELEASE);
    let out = vm
        .run(
            Step::Exec {
                argv: vec!["uname".into(), "-r".into()],
            },
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(out.answer.ok, "{:?}", out.answer);
    assert_eq!(out.answer.output.trim(), RELEASE);
    assert!(vm.unattributed().is_empty(), "{:?}", vm.unattributed());
    let log = vm.console_log().to_path_buf();
    vm.shutdown().unwrap();
    let _ = std::fs::remove_file(log);
}
