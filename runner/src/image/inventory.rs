//! The fixture inventory: what the image stage puts in a guest, read from
//! the project's sources before anything builds. Kernel sample modules
//! and the modules of `images/fixtures/modules/`, every BPF program of
//! `images/fixtures/bpf/` with its ELF section, the trigger targets the
//! agent knows (`coexist_proto::TRIGGER_TARGETS`), and the selftest
//! directories the default image recipe has. Each step family decides
//! which of these names its steps may use (`crate::steps`).

use std::path::Path;

/// A program of a BPF fixture and the section it is in (`fentry`,
/// `fexit`, `fmod_ret`, ...): which steps may use it is the BPF step
/// family's rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfProgram {
    pub name: String,
    pub section: String,
}

/// What the guest has, by name.
#[derive(Clone, Debug, Default)]
pub struct FixtureNames {
    pub modules: Vec<String>,
    pub bpf_programs: Vec<BpfProgram>,
    pub triggers: Vec<String>,
    /// `tools/testing/selftests` directories in the image (the default
    /// recipe's `selftests`).
    pub selftests: Vec<String>,
}

/// The project's fixture names: modules (samples and own), BPF programs
/// (from the sources), trigger targets.
pub fn project_fixtures(root: &Path) -> FixtureNames {
    let mut modules: Vec<String> = [
        "livepatch-sample",
        "livepatch-shadow-mod",
        "livepatch-callbacks-demo",
        "ftrace-direct",
        "ftrace-direct-too",
        "ftrace-direct-modify",
        "ftrace-direct-multi",
        "ftrace-direct-multi-modify",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(rd) = std::fs::read_dir(root.join("images/fixtures/modules")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = n.strip_suffix(".c") {
                modules.push(stem.to_string());
            }
        }
    }
    let mut bpf_programs = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("images/fixtures/bpf")) {
        for e in rd.flatten() {
            if let Ok(src) = std::fs::read_to_string(e.path()) {
                // `SEC("<section>")\nint name(`: the programs.
                let mut section: Option<&str> = None;
                for l in src.lines() {
                    if let (Some(sec), Some(rest)) = (section, l.trim().strip_prefix("int ")) {
                        if let Some(name) = rest.split('(').next() {
                            bpf_programs.push(BpfProgram {
                                name: name.trim().to_string(),
                                section: sec.to_string(),
                            });
                        }
                    }
                    section = l
                        .trim_start()
                        .strip_prefix("SEC(\"")
                        .and_then(|r| r.strip_suffix("\")"));
                }
            }
        }
    }
    modules.sort();
    bpf_programs.sort();
    let recipe = root
        .join("images")
        .join(format!("{}.yaml", super::prepare::DEFAULT_RECIPE));
    let selftests = std::fs::read_to_string(recipe)
        .ok()
        .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
        .and_then(|v| {
            v.get("selftests")?.as_sequence().map(|s| {
                s.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    FixtureNames {
        modules,
        bpf_programs,
        triggers: coexist_proto::TRIGGER_TARGETS
            .iter()
            .map(|(t, _)| t.to_string())
            .collect(),
        selftests,
    }
}
