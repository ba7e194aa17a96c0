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

#[cfg(test)]
mod tests {
    use super::*;

    fn program(name: &str, section: &str) -> BpfProgram {
        BpfProgram {
            name: name.into(),
            section: section.into(),
        }
    }

    #[test]
    fn programs_are_read_with_their_sections() {
        let d = tempfile::tempdir().unwrap();
        let bpf = d.path().join("images/fixtures/bpf");
        std::fs::create_dir_all(&bpf).unwrap();
        std::fs::write(
            bpf.join("x.bpf.c"),
            "struct { int x; } stats SEC(\".maps\");\n\
             static __always_inline int helper(void *ctx)\n{ return 0; }\n\
             SEC(\"fentry\")\nint a(void *ctx)\n{ return helper(ctx); }\n\
             \n\
             SEC(\"fexit/f\")\nint b(void *ctx)\n{ return 0; }\n\
             char LICENSE[] SEC(\"license\") = \"GPL\";\n",
        )
        .unwrap();
        let fx = project_fixtures(d.path());
        assert_eq!(
            fx.bpf_programs,
            [program("a", "fentry"), program("b", "fexit/f")]
        );
    }

    #[test]
    fn the_project_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fx = project_fixtures(&root);
        for m in [
            "coexist_target",
            "coexist_livepatch",
            "coexist_livepatch_multi",
            "coexist_direct",
            "livepatch-sample",
        ] {
            assert!(fx.modules.iter().any(|x| x == m), "{m}: {:?}", fx.modules);
        }
        // Two programs of each trampoline kind, and the seq_file fexit.
        assert_eq!(
            fx.bpf_programs,
            [
                program("cx_fentry", "fentry"),
                program("cx_fentry2", "fentry"),
                program("cx_fexit", "fexit"),
                program("cx_fexit2", "fexit"),
                program("cx_fexit_seq", "fexit"),
                program("cx_fmod_ret", "fmod_ret"),
                program("cx_fmod_ret2", "fmod_ret"),
            ]
        );
        assert_eq!(
            fx.triggers,
            [
                "cmdline_proc_show",
                "coexist_target_value",
                "coexist_target_value2"
            ]
        );
    }
}
