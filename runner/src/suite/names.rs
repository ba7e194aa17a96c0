//! The fixture names a suite may use, read from the project: kernel
//! sample modules and the modules of `images/fixtures/modules/`, the BPF
//! programs of `images/fixtures/bpf/`, the trigger targets the agent
//! knows, and the selftest directories the default image recipe has.

use std::path::Path;

/// Names the suite checks against.
#[derive(Clone, Debug, Default)]
pub struct FixtureNames {
    pub modules: Vec<String>,
    pub bpf_programs: Vec<String>,
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
                // `SEC("...")\nint name(`: the program names.
                let mut prev_sec = false;
                for l in src.lines() {
                    if prev_sec {
                        if let Some(rest) = l.trim().strip_prefix("int ") {
                            if let Some(name) = rest.split('(').next() {
                                bpf_programs.push(name.trim().to_string());
                            }
                        }
                    }
                    prev_sec = l.trim_start().starts_with("SEC(\"f");
                }
            }
        }
    }
    modules.sort();
    bpf_programs.sort();
    let recipe = root
        .join("images")
        .join(format!("{}.yaml", crate::image::prepare::DEFAULT_RECIPE));
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
        triggers: vec!["cmdline_proc_show".into(), "coexist_target_value".into()],
        selftests,
    }
}
