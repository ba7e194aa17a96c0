//! The modules a modular kernel's guest must load before its agent can
//! greet the host (a distribution kernel has `virtio_pci` and
//! `virtio_console` as modules): the closure of a set of module names over
//! the kernel's `modules.dep`, in load order, dependencies first.
//!
//! In: the text of `modules.dep` (as depmod writes it) and module names.
//! Out: paths relative to `/lib/modules/<release>/`, each after every
//! module it depends on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The modules the agent's channel needs: the virtio PCI transport and
/// the virtio console (its port is a virtio-serial port).
pub const AGENT_CHANNEL_MODULES: &[&str] = &["virtio_pci", "virtio_console"];

/// What a modular kernel's image carries of its modules tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preload {
    /// The modules to load, in order, relative to `/lib/modules/<release>/`
    /// (what the image's `coexist_proto::PRELOAD_MODULES` file lists).
    pub order: Vec<String>,
    /// The wanted names that are built in (`modules.builtin`): no loading.
    pub builtin: Vec<String>,
    /// Files to copy: (path relative to the modules dir, host file): the
    /// modules of `order` and depmod's `modules.*` indexes.
    pub files: Vec<(String, PathBuf)>,
}

/// The modules `names` need from a kernel's modules dir (with depmod's
/// output): built-in names left out, the rest in load order.
pub fn preload(modules_dir: &Path, names: &[&str]) -> Result<Preload> {
    let read = |f: &str| {
        let p = modules_dir.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let dep = ModulesDep::parse(&read("modules.dep")?, "modules.dep")?;
    let builtin_text = read("modules.builtin").unwrap_or_default();
    let builtin_names: Vec<String> = builtin_text.lines().map(module_name).collect();
    let (builtin, load): (Vec<&str>, Vec<&str>) = names
        .iter()
        .partition(|n| builtin_names.contains(&n.replace('-', "_")));
    let order = dep.load_order(&load)?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut indexes: Vec<String> = std::fs::read_dir(modules_dir)
        .with_context(|| format!("cannot read {}", modules_dir.display()))?
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("modules."))
        .collect();
    indexes.sort();
    for rel in indexes.iter().chain(&order) {
        files.push((rel.clone(), modules_dir.join(rel)));
    }
    Ok(Preload {
        order,
        builtin: builtin.into_iter().map(String::from).collect(),
        files,
    })
}

/// `modules.dep`: each module's path and the paths it depends on.
#[derive(Debug, Default)]
pub struct ModulesDep {
    /// Module name (`virtio_pci`) -> (path, its dependencies' paths).
    by_name: BTreeMap<String, (String, Vec<String>)>,
}

/// A module's name as the kernel knows it: the file name without `.ko`
/// (and a compression suffix), `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    /// Parses `modules.dep`. `what` names the file in errors; lines
    /// starting with `#` are skipped (depmod writes none; recorded
    /// excerpts have a header).
    pub fn parse(text: &str, what: &str) -> Result<ModulesDep> {
        let mut by_name = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                bail!(
                    "{what}:{}: not `module.ko: dependencies...`: '{line}'",
                    i + 1
                );
            };
            if !path.contains(".ko") {
                bail!("{what}:{}: '{path}' is not a module path", i + 1);
            }
            let deps: Vec<String> = deps.split_whitespace().map(String::from).collect();
            by_name.insert(module_name(path), (path.to_string(), deps));
        }
        Ok(ModulesDep { by_name })
    }

    /// Where a module is (relative to `/lib/modules/<release>/`).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&name.replace('-', "_"))
            .map(|(p, _)| p.as_str())
    }

    /// The modules `names` need, themselves included, each after its
    /// dependencies and each once. A name `modules.dep` does not have is
    /// an error that says so (it may be built in: then it needs no
    /// loading, and the caller leaves it out).
    pub fn load_order(&self, names: &[&str]) -> Result<Vec<String>> {
        let mut order: Vec<String> = Vec::new();
        let mut visiting: Vec<String> = Vec::new();
        for n in names {
            let Some(path) = self.path_of(n) else {
                bail!("module '{n}' is not in modules.dep");
            };
            self.visit(path, &mut visiting, &mut order)?;
        }
        Ok(order)
    }

    fn visit(&self, path: &str, visiting: &mut Vec<String>, order: &mut Vec<String>) -> Result<()> {
        if order.iter().any(|p| p == path) {
            return Ok(());
        }
        if visiting.iter().any(|p| p == path) {
            bail!(
                "modules.dep has a dependency cycle: {} -> {path}",
                visiting.join(" -> ")
            );
        }
        let name = module_name(path);
        let Some((_, deps)) = self.by_name.get(&name) else {
            bail!("'{path}' is a dependency but has no line of its own in modules.dep");
        };
        visiting.push(path.to_string());
        for d in deps {
            self.visit(d, visiting, order)?;
        }
        visiting.pop();
        order.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = include_str!("../../tests/data/modules/debian-6.1.0-57-amd64.modules.dep");

    #[test]
    fn the_agent_channel_of_debians_kernel_loads_in_dependency_order() {
        let dep = ModulesDep::parse(DEBIAN, "modules.dep").unwrap();
        let order = dep.load_order(&["virtio_pci", "virtio-console"]).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        // Every module once, each after all of its dependencies.
        for (i, p) in order.iter().enumerate() {
            assert_eq!(order.iter().filter(|q| *q == p).count(), 1, "{p}");
            for d in &dep.by_name[&module_name(p)].1 {
                let j = order.iter().position(|q| q == d).unwrap();
                assert!(j < i, "{d} after {p}: {order:?}");
            }
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "virtio",
                "virtio_console",
                "virtio_pci",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_ring"
            ]
        );
        assert_eq!(names.last().unwrap(), "virtio_console");
        assert_eq!(
            dep.path_of("virtio_console"),
            Some("kernel/drivers/char/virtio_console.ko")
        );
    }

    #[test]
    fn preload_from_a_modules_dir_skips_built_in_names() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| std::fs::write(d.path().join(f), s).unwrap();
        w(
            "modules.dep",
            "kernel/v/virtio.ko:\nkernel/v/virtio_ring.ko:\n\
             kernel/v/virtio_pci.ko: kernel/v/virtio_ring.ko kernel/v/virtio.ko\n\
             kernel/c/virtio_console.ko: kernel/v/virtio_ring.ko kernel/v/virtio.ko\n",
        );
        w("modules.builtin", "kernel/c/virtio_console.ko\n");
        w("modules.alias", "");
        std::fs::create_dir(d.path().join("kernel")).unwrap();
        let p = preload(d.path(), AGENT_CHANNEL_MODULES).unwrap();
        assert_eq!(
            p.order,
            [
                "kernel/v/virtio_ring.ko",
                "kernel/v/virtio.ko",
                "kernel/v/virtio_pci.ko"
            ]
        );
        assert_eq!(p.builtin, ["virtio_console"]);
        let rels: Vec<&str> = p.files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            rels,
            [
                "modules.alias",
                "modules.builtin",
                "modules.dep",
                "kernel/v/virtio_ring.ko",
                "kernel/v/virtio.ko",
                "kernel/v/virtio_pci.ko"
            ]
        );
        assert_eq!(p.files[3].1, d.path().join("kernel/v/virtio_ring.ko"));
        // Every name built in: nothing to load.
        w(
            "modules.builtin",
            "kernel/c/virtio_console.ko\nkernel/v/virtio_pci.ko\n",
        );
        assert!(preload(d.path(), AGENT_CHANNEL_MODULES)
            .unwrap()
            .order
            .is_empty());
        // Neither built in nor a module: an error that says which.
        w("modules.builtin", "");
        let e = preload(d.path(), &["virtio_blk"]).unwrap_err();
        assert_eq!(format!("{e}"), "module 'virtio_blk' is not in modules.dep");
    }

    #[test]
    fn names_paths_and_bad_input() {
        assert_eq!(module_name("kernel/a/ftrace-direct.ko"), "ftrace_direct");
        assert_eq!(module_name("kernel/a/b.ko.xz"), "b");
        let e = ModulesDep::parse("a.ko: b.ko\nnonsense\n", "m.dep").unwrap_err();
        assert_eq!(
            format!("{e}"),
            "m.dep:2: not `module.ko: dependencies...`: 'nonsense'"
        );
        let dep = ModulesDep::parse("a.ko: b.ko\nb.ko: a.ko\nc.ko: d.ko\n", "m").unwrap();
        let e = format!("{}", dep.load_order(&["a"]).unwrap_err());
        assert!(e.contains("cycle: a.ko -> b.ko -> a.ko"), "{e}");
        let e = format!("{}", dep.load_order(&["c"]).unwrap_err());
        assert!(e.contains("'d.ko' is a dependency but has no line"), "{e}");
        let e = format!("{}", dep.load_order(&["zz"]).unwrap_err());
        assert_eq!(e, "module 'zz' is not in modules.dep");
    }
}
